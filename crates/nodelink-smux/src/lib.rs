//! smux v1/v2 (being written).
