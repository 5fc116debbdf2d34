//! The crate's error type.

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the KCP layers. Datagram-level problems (bad checksum,
/// wrong conv, malformed segments) are errors of `input` calls, which the session layer
/// counts and drops; they never take a session down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A datagram or segment is malformed (too short, bad length, unknown command).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A segment carries another session's conversation id.
    #[error("conversation id mismatch: got {got:#x}, expected {expected:#x}")]
    WrongConv {
        /// The conv in the packet.
        got: u32,
        /// This session's conv.
        expected: u32,
    },
    /// The datagram failed its checksum or authentication (wrong key, corruption).
    #[error("checksum or authentication failed")]
    Checksum,
    /// A message is too large to be sent in message mode (more fragments than allowed).
    #[error("message of {len} bytes is too large (at most {max} in message mode)")]
    MessageTooLarge {
        /// Attempted length.
        len: usize,
        /// Largest message that fits.
        max: usize,
    },
    /// An invalid setting (MTU out of range, window of zero, unknown cipher, FEC shards).
    #[error("invalid setting: {0}")]
    Config(String),
    /// The peer stopped acknowledging: the session is dead.
    #[error("dead link: the peer stopped acknowledging")]
    DeadLink,
    /// A buffer given to `recv` is too small for the next message (message mode).
    #[error("buffer of {got} bytes is too small for the next message of {need} bytes")]
    BufferTooSmall {
        /// Size of the buffer given.
        got: usize,
        /// Size of the next message.
        need: usize,
    },
}
