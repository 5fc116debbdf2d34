//! The limit on incoming sockets, and which socket makes room at it.
//!
//! Each incoming socket holds a descriptor, and peers open as many as they like: without a
//! limit, a thousand idle ones under the usual open-file limit of 1024 leave nothing for
//! the next client (accepting fails, and every new client is refused). A transport keeps
//! at most [`Config::max_sockets`](crate::Config::max_sockets) incoming sockets,
//! handshakes included. When one more arrives at the limit, the socket whose peer has been
//! quiet longest is ended to make room, if its peer said nothing for [`QUIET_NEW`] since it
//! connected or since its handshake (a silent or idle socket, as attackers hold them), or
//! nothing at all for [`QUIET_ANY`]; a socket whose peer speaks is never ended for a
//! newcomer. With none to end yet, the newcomer waits for one (and the accept loop with
//! it, so later clients wait in the kernel's backlog), up to the connect timeout, then is
//! closed. Both are logged within the warning budget, naming the peer.
//!
//! Each socket's reader stamps when it last heard from its peer ([`Activity::heard`]): one
//! atomic store per read. The scan for the quietest socket looks at every socket, only at
//! the limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use nodelink_driver::lock;

/// A socket whose peer said nothing for this long since it connected, or since its
/// handshake, may be ended for a newcomer at the limit.
pub(crate) const QUIET_NEW: Duration = Duration::from_millis(500);

/// Any socket whose peer said nothing for this long may be ended for a newcomer at the
/// limit.
pub(crate) const QUIET_ANY: Duration = Duration::from_secs(30);

/// When a socket last heard from its peer, and whether it did after its handshake.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last bytes from the peer.
    last_heard_ms: AtomicU64,
    /// The handshake is done.
    joined: AtomicBool,
    /// The peer sent something after its handshake.
    spoke: AtomicBool,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        Activity {
            epoch,
            last_heard_ms: AtomicU64::new(ms_since(epoch, Instant::now())),
            joined: AtomicBool::new(false),
            spoke: AtomicBool::new(false),
        }
    }

    /// Bytes came from the peer.
    pub(crate) fn heard(&self) {
        let now = ms_since(self.epoch, Instant::now());
        self.last_heard_ms.store(now, Ordering::Relaxed);
        if self.joined.load(Ordering::Relaxed) {
            self.spoke.store(true, Ordering::Relaxed);
        }
    }

    /// The handshake is done: the quiet time counts afresh.
    pub(crate) fn joined(&self) {
        self.last_heard_ms
            .store(ms_since(self.epoch, Instant::now()), Ordering::Relaxed);
        self.joined.store(true, Ordering::Relaxed);
    }

    fn quiet(&self, now: Instant) -> Duration {
        Duration::from_millis(
            ms_since(self.epoch, now).saturating_sub(self.last_heard_ms.load(Ordering::Relaxed)),
        )
    }

    /// Whether this socket may be ended for a newcomer, and how long its peer was quiet.
    fn may_end(&self, now: Instant) -> Option<Duration> {
        let quiet = self.quiet(now);
        let new = !self.spoke.load(Ordering::Relaxed);
        (quiet >= QUIET_ANY || (new && quiet >= QUIET_NEW)).then_some(quiet)
    }
}

fn ms_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

struct Entry {
    peer: SocketAddr,
    activity: Arc<Activity>,
    stop: CancellationToken,
}

/// The incoming sockets of a transport.
pub(crate) struct LiveSockets {
    max: usize,
    epoch: Instant,
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

/// One socket's place among the live ones; leaves when dropped.
pub(crate) struct Registered {
    live: Arc<LiveSockets>,
    id: u64,
    /// Stamped by the socket's reader.
    pub(crate) activity: Arc<Activity>,
    /// Cancelled when the socket is ended to make room.
    pub(crate) stop: CancellationToken,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.live.entries).remove(&self.id);
    }
}

/// What [`LiveSockets::admit`] decided for a newcomer.
pub(crate) enum Admission {
    /// Under the limit.
    Admitted(Registered),
    /// At the limit; the socket from `peer`, quiet for `quiet`, was ended for it.
    MadeRoom {
        registered: Registered,
        peer: SocketAddr,
        quiet: Duration,
    },
    /// At the limit, and every socket's peer spoke recently.
    Refused,
}

impl LiveSockets {
    pub(crate) fn new(max: usize) -> Arc<LiveSockets> {
        Arc::new(LiveSockets {
            max: max.max(1),
            epoch: Instant::now(),
            next: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Sockets live now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Admits a newcomer from `peer`, ending the quietest idle socket at the limit.
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Admission {
        let mut entries = lock(&self.entries);
        let mut ended = None;
        if entries.len() >= self.max {
            let now = Instant::now();
            let victim = entries
                .iter()
                .filter(|(_, e)| !e.stop.is_cancelled())
                .filter_map(|(&id, e)| e.activity.may_end(now).map(|q| (id, q)))
                .max_by_key(|&(_, quiet)| quiet);
            let Some((id, quiet)) = victim else {
                return Admission::Refused;
            };
            let e = entries.remove(&id).expect("found above");
            e.stop.cancel();
            ended = Some((e.peer, quiet));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new(self.epoch));
        let stop = CancellationToken::new();
        entries.insert(
            id,
            Entry {
                peer,
                activity: activity.clone(),
                stop: stop.clone(),
            },
        );
        drop(entries);
        let registered = Registered {
            live: self.clone(),
            id,
            activity,
            stop,
        };
        match ended {
            None => Admission::Admitted(registered),
            Some((peer, quiet)) => Admission::MadeRoom {
                registered,
                peer,
                quiet,
            },
        }
    }
}

/// The limit of a transport bound now without [`Config::max_sockets`]: the process's
/// open-file limit less 64 descriptors kept for everything else (listening sockets,
/// sockets we dial, files), at least 16.
///
/// [`Config::max_sockets`]: crate::Config::max_sockets
pub fn default_max_sockets() -> usize {
    nodelink_driver::open_file_limit()
        .saturating_sub(64)
        .max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_quietest_idle_socket_makes_room_and_a_speaking_one_never() {
        let live = LiveSockets::new(2);
        let Admission::Admitted(talker) = live.admit(peer(1)) else {
            panic!("under the limit")
        };
        let Admission::Admitted(idle) = live.admit(peer(2)) else {
            panic!("under the limit")
        };
        talker.activity.joined();
        idle.activity.joined();
        tokio::time::advance(Duration::from_millis(100)).await;
        talker.activity.heard();
        assert!(
            matches!(live.admit(peer(3)), Admission::Refused),
            "nobody was quiet long enough"
        );
        tokio::time::advance(QUIET_NEW).await;
        let Admission::MadeRoom {
            registered: newcomer,
            peer: ended,
            ..
        } = live.admit(peer(4))
        else {
            panic!("the idle socket makes room")
        };
        assert_eq!(ended, peer(2));
        assert!(idle.stop.is_cancelled() && !talker.stop.is_cancelled());
        drop(idle);
        assert_eq!(live.len(), 2);
        newcomer.activity.joined();
        newcomer.activity.heard();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            matches!(live.admit(peer(5)), Admission::Refused),
            "both peers spoke since their handshakes, and recently"
        );
        tokio::time::advance(QUIET_ANY).await;
        let Admission::MadeRoom { peer: ended, .. } = live.admit(peer(6)) else {
            panic!("quiet for QUIET_ANY: even a socket that spoke makes room")
        };
        assert_eq!(ended, peer(1));
    }
}
