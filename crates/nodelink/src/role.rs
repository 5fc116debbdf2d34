//! Which end of a link this side is, and what it knows of the peer's extensions.

/// Which end of the link this side is (shared by every nodelink crate): it decides the
/// parity of the connection ids we allocate under NEO/go rules (client odd from 1, server
/// even from 0, like HTTP/2 streams), and which side may offer the flow-control extension
/// (the client).
pub use nodelink_driver::Role;

/// The first connection id `role` allocates.
pub(crate) fn first_id(role: Role) -> u32 {
    match role {
        Role::Client => 1,
        Role::Server => 0,
    }
}

/// Whether the peer takes part in nodelink's flow-control extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerFlowControl {
    /// Not decided yet (our offer is unanswered, or the peer has not sent anything).
    Unknown,
    /// The peer is a strict NEO node (or has the extension turned off).
    Off,
    /// The peer honours per-connection credit.
    On,
}
