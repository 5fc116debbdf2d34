//! [`Role`]: which side of a protocol this end is.

/// Which side of a protocol this end is: the one that dialled ([`Role::Client`]) or the
/// one that accepted ([`Role::Server`]). Every nodelink protocol that starts over an
/// existing stream takes it (`Link::handshake(stream, role, config)`,
/// `nodelink_smux::Session::start(io, role, config)`); it decides what differs between
/// the two sides, such as the parity of the ids each side allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// The side that dialled.
    #[default]
    Client,
    /// The side that accepted.
    Server,
}

impl Role {
    /// The other side.
    pub fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}
