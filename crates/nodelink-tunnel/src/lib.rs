//! kcptun-compatible tunnel (being written).

pub mod snappy;
