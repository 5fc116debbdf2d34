//! The link layer's budget of peer-caused warnings: a peer that reconnects in a loop with
//! a bad handshake, or breaks the framing on purpose, writes a bounded number of lines
//! (`nodelink_driver::peer_warn!`). One budget for the process: a link does not know the
//! server it belongs to.

use nodelink_driver::WarnLimiter;

pub(crate) static PEER_WARNINGS: WarnLimiter = WarnLimiter::new();
