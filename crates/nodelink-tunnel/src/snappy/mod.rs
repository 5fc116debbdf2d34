//! Snappy framed compression (being written).
