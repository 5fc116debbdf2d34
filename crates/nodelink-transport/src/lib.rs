//! Endpoint transport wire-compatible with network-transport-tcp (being written).
