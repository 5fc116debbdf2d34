//! Making room at the link limit: a new client may replace a link that looks abandoned.
//!
//! A listener holds at most [`Config::max_links`](crate::Config::max_links) links, so that
//! the process never runs out of file descriptors. Without more, a peer that opens that
//! many links and then sends nothing locks every other client out for as long as it likes
//! (links have no idle timeout unless one is configured, and strict NEO peers are never
//! probed). So when a client arrives at the limit, the listener ends the link most likely
//! abandoned, as web servers close idle keep-alive connections when they run short:
//!
//! * a link whose peer has sent nothing since the handshake for [`QUIET_NEW`] (a real
//!   client speaks at once: NEO's first request follows the handshake), the longest quiet
//!   first;
//! * otherwise a link whose peer has been quiet for [`QUIET_ANY`].
//!
//! Links we hold back (our reader paused: the application or the memory budget is behind)
//! are never ended for a newcomer; if none qualifies, the newcomer
//! waits for a place as before (and the listener looks again when one may qualify). Each
//! ending is logged within the warning budget, naming the peer.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::inner::{LinkEnd, LinkInner};
use crate::warnings::PEER_WARNINGS;
use crate::Link;

/// A link whose peer sent nothing after the handshake for this long may be replaced.
pub(crate) const QUIET_NEW: Duration = Duration::from_millis(500);

/// Any link whose peer sent nothing for this long may be replaced.
pub(crate) const QUIET_ANY: Duration = Duration::from_secs(30);

/// The links a listener handed out (weakly: a link that ended is forgotten).
#[derive(Default)]
pub(crate) struct LiveLinks {
    links: Vec<Weak<LinkInner>>,
}

impl LiveLinks {
    /// Remembers a link handed to the application.
    pub(crate) fn add(&mut self, link: &Link) {
        if self.links.len() == self.links.capacity() {
            // Forget the links that ended before the vector grows.
            self.prune();
        }
        self.links.push(Arc::downgrade(link.inner()));
    }

    fn prune(&mut self) {
        self.links
            .retain(|l| l.upgrade().is_some_and(|l| l.end.get().is_none()));
    }

    /// Ends the link most likely abandoned (see the module's doc), if one qualifies. Its
    /// place comes back when its tasks are done. If none qualifies, says when one may
    /// (if the peers stay quiet until then).
    pub(crate) fn end_idlest(&mut self, now: Instant) -> Result<(), Instant> {
        self.prune();
        // (never spoke, quiet for), the largest wins.
        let mut best: Option<((bool, Duration), Arc<LinkInner>)> = None;
        let mut next = now + QUIET_NEW;
        for link in self.links.iter().filter_map(Weak::upgrade) {
            let (since, spoke, held_back) = {
                let s = link.shared.lock();
                let (since, spoke) = s.core.quiet();
                (since, spoke, s.core.reader_blocked())
            };
            if held_back {
                // Quiet because we stopped reading it (its application or the memory
                // budget is behind): in use.
                continue;
            }
            let quiet = now.saturating_duration_since(since);
            let needed = if spoke { QUIET_ANY } else { QUIET_NEW };
            if quiet < needed {
                next = next.min(since + needed);
                continue;
            }
            let key = (!spoke, quiet);
            if best.as_ref().is_none_or(|(k, _)| key > *k) {
                best = Some((key, link));
            }
        }
        let Some(((never_spoke, quiet), link)) = best else {
            return Err(next);
        };
        let peer = &link.name;
        nodelink_driver::peer_warn!(
            PEER_WARNINGS,
            peer = %peer,
            quiet_s = quiet.as_secs(),
            never_spoke,
            "link limit reached and a client is waiting: ended the link whose peer was quiet \
             longest (raise max_links or the open-file limit if this is normal load)"
        );
        link.shutdown(LinkEnd::Failed(Arc::new(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!(
                "ended by the listener to make room for a new client: the peer had been \
                 quiet for {}s at the link limit",
                quiet.as_secs()
            ),
        ))));
        Ok(())
    }
}
