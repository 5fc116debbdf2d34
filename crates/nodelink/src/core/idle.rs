//! The idle timeout: when the peer has sent no packet for [`Config::idle_timeout`]
//! (`crate::Config`), the link is taken for dead and ended (`ErrorKind::DeadPeer`).
//!
//! A peer that agreed on the flow-control extension is probed first: halfway through the
//! timeout we send PING (`control.rs`), which a live nodelink peer answers with PONG at
//! once, so an idle but healthy link is never cut and only one side needs the setting.
//! A strict NEO peer gets no probe (it would close the link on an unknown packet): with it
//! the timeout only suits links on which the peer speaks regularly.
//!
//! Only complete packets count as activity, so a peer that trickles a byte now and then
//! cannot keep a link alive. Time spent with the reader paused by us (the application is
//! behind) does not count either.

use std::time::Duration;

use tokio::time::Instant;

/// What the timer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdleEvent {
    /// Nothing to do.
    None,
    /// Send PING (the peer agreed on the extension).
    Probe,
    /// Silent for the whole timeout: end the link.
    Expired(Duration),
}

/// The idle timeout's state (inert when no timeout is configured).
#[derive(Debug)]
pub(crate) struct Idle {
    timeout: Option<Duration>,
    /// When the last packet arrived (or the link started, or the reader resumed).
    last_rx: Instant,
    /// A PING went out for the silence that began at `last_rx`.
    probed: bool,
}

impl Idle {
    pub(crate) fn new(timeout: Option<Duration>, now: Instant) -> Idle {
        Idle {
            timeout,
            last_rx: now,
            probed: false,
        }
    }

    /// A packet arrived (or the reader resumed after a pause of ours).
    #[inline]
    pub(crate) fn activity(&mut self, now: Instant) {
        self.last_rx = now;
        self.probed = false;
    }

    /// When the peer last sent a complete packet (or the link started, or our reader
    /// resumed after a pause).
    pub(crate) fn last_rx(&self) -> Instant {
        self.last_rx
    }

    /// When the timer should fire next; `probe` says whether the peer can be probed.
    pub(crate) fn deadline(&self, probe: bool) -> Option<Instant> {
        let timeout = self.timeout?;
        // A timeout too long to represent never fires.
        if probe && !self.probed {
            self.last_rx.checked_add(timeout / 2)
        } else {
            self.last_rx.checked_add(timeout)
        }
    }

    /// The timer fired (or may have) at `now`.
    pub(crate) fn on_timer(&mut self, now: Instant, probe: bool) -> IdleEvent {
        let Some(timeout) = self.timeout else {
            return IdleEvent::None;
        };
        let passed = now.saturating_duration_since(self.last_rx);
        if passed >= timeout {
            IdleEvent::Expired(timeout)
        } else if probe && !self.probed && passed >= timeout / 2 {
            self.probed = true;
            IdleEvent::Probe
        } else {
            IdleEvent::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn a_probed_peer_that_answers_stays_and_a_silent_one_expires() {
        let start = Instant::now();
        let mut idle = Idle::new(Some(T), start);
        assert_eq!(idle.deadline(true), Some(start + T / 2));
        assert_eq!(idle.on_timer(start + T / 4, true), IdleEvent::None);
        assert_eq!(idle.on_timer(start + T / 2, true), IdleEvent::Probe);
        // One probe per silence; then the full timeout.
        assert_eq!(idle.deadline(true), Some(start + T));
        assert_eq!(idle.on_timer(start + T / 2, true), IdleEvent::None);
        // The PONG is activity: a new silence starts.
        idle.activity(start + T / 2);
        assert_eq!(idle.deadline(true), Some(start + T));
        assert_eq!(idle.on_timer(start + T, true), IdleEvent::Probe);
        assert_eq!(
            idle.on_timer(start + T / 2 + T, true),
            IdleEvent::Expired(T)
        );
    }

    #[test]
    fn a_strict_peer_is_never_probed_and_no_timeout_is_inert() {
        let start = Instant::now();
        let mut idle = Idle::new(Some(T), start);
        assert_eq!(idle.deadline(false), Some(start + T));
        assert_eq!(idle.on_timer(start + T / 2, false), IdleEvent::None);
        assert_eq!(idle.on_timer(start + T, false), IdleEvent::Expired(T));
        let mut off = Idle::new(None, start);
        assert_eq!(off.deadline(true), None);
        assert_eq!(
            off.on_timer(start + Duration::from_secs(1 << 20), true),
            IdleEvent::None
        );
    }
}
