//! The session's deadlines, all decided here and only waited for by the driver:
//! - keepalive: a NOP every `keep_alive_interval`; the session dies when no frame arrived
//!   for `keep_alive_timeout` while it was reading (the silence is not counted while
//!   reading is paused for backpressure: a paused reader is not a silent peer);
//! - the pause's verdict (`receive::relieve`): `stall_timeout` after reading paused;
//! - v2 writes waiting after the peer's FIN for a window that may never open: they give up
//!   (the stream is reset) `stall_timeout` after they started waiting;
//! - a graceful close: the session dies when the linger has run out with data unsent.

use tokio::time::Instant;

use super::SessionCore;
use crate::error::{Error, ErrorKind};

impl SessionCore {
    /// When [`handle_timeout`](Self::handle_timeout) is next due; `None` when nothing is
    /// timed (or the session is dead).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.death.is_some() {
            return None;
        }
        let keepalive = self.keepalive.as_ref().map(|k| {
            if self.paused {
                k.next_ping
            } else {
                k.next_ping.min(self.last_rx + k.timeout)
            }
        });
        [
            keepalive,
            self.pause_deadline,
            self.fin_stalls.values().min().copied(),
            self.close_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Acts on every deadline that has come by `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.death.is_some() {
            return;
        }
        if self.close_deadline.is_some_and(|t| t <= now) {
            let unsent: usize = self.streams.values().map(|e| e.send.len()).sum();
            tracing::warn!(
                unsent,
                "smux linger over: closing with data unsent (dropped)"
            );
            self.die(Error::new(
                ErrorKind::SessionClosed,
                format!("closed locally; {unsent} bytes not sent within the linger"),
            ));
            return;
        }
        if let Some(k) = &mut self.keepalive {
            if now >= k.next_ping {
                self.nop_pending = true;
                self.outbox.transmit = true;
                // A late tick is not made up for: the next NOP is an interval from now.
                k.next_ping = now + k.interval;
            }
            let timeout = k.timeout;
            if self.paused {
                // The reader holds back on purpose; the peer is not silent.
                self.last_rx = self.last_rx.max(now);
            } else if now >= self.last_rx + timeout {
                self.die(Error::new(
                    ErrorKind::Timeout,
                    format!("no frame received for {timeout:?}"),
                ));
                return;
            }
        }
        if self.pause_deadline.is_some_and(|t| t <= now) && self.relieve(now).is_none() {
            self.outbox.resume = true;
        }
        let due: Vec<u32> = self
            .fin_stalls
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(&sid, _)| sid)
            .collect();
        for sid in due {
            self.fin_stalls.remove(&sid);
            if self.blocked_after_fin(sid) {
                self.reset_stream(sid, "peer closed the stream without opening its window");
            }
        }
    }
}
