//! Decoding errors of the wire codecs.

/// Why bytes from the peer were rejected. Each of these closes the socket they came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A control word in 6..=1023, which protocol version 0 does not define.
    #[error("invalid control code {0}")]
    InvalidControl(u32),
    /// A length prefix beyond the configured limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// What the length was for.
        what: &'static str,
        /// The announced length.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// A connection request whose inner lengths do not add up.
    #[error("inconsistent connection request: handshake length {handshake} but address length {address}")]
    BadRequestLength {
        /// The request's handshake length.
        handshake: u32,
        /// The request's address length.
        address: u32,
    },
    /// An endpoint address that does not parse as `host:port:id`.
    #[error("malformed endpoint address")]
    BadAddress,
    /// A handshake response word that protocol version 0 does not define.
    #[error("unknown handshake response {0:#x}")]
    UnknownResponse(u32),
    /// A lightweight connection id below [`FIRST_LCID`](super::FIRST_LCID).
    #[error("lightweight connection id {0} is in the reserved range")]
    ReservedLcid(u32),
}
