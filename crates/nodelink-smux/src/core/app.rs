//! The application-facing half of the state machine: what a stream's reads, writes,
//! flushes and shutdowns do to its buffers, and what dropping a stream does.
//!
//! Each operation returns `Poll::Pending` when it must wait; the stream is then marked
//! blocked and the core emits one `Readable` or `Writable` event for it when the wait is
//! over (data, a FIN, window, room in the send buffer, a reset or the session's death).

use std::task::Poll;

use bytes::Buf;
use tokio::time::Instant;

use super::{Control, Handle, SessionCore, StreamEntry};
use crate::error::{Error, ErrorKind};

impl SessionCore {
    fn entry(&mut self, sid: u32) -> Result<&mut StreamEntry, Error> {
        self.streams
            .get_mut(&sid)
            .ok_or_else(|| Error::new(ErrorKind::StreamClosed, "stream no longer exists"))
    }

    /// Bytes of `sid` ready to be read without waiting.
    pub(crate) fn unread(&self, sid: u32) -> usize {
        self.streams.get(&sid).map_or(0, |e| e.recv_len)
    }

    /// Reads buffered data of `sid` into `buf` at `now`. `Ready(Ok(0))` with a non-empty
    /// `buf` is the end of the stream (the peer's FIN); `Pending` waits for `Readable`.
    pub(crate) fn read(
        &mut self,
        sid: u32,
        buf: &mut [u8],
        now: Instant,
    ) -> Poll<Result<usize, Error>> {
        let version = self.version;
        let half_window = self.stream_window / 2;
        let death = self.death.clone();
        let entry = self.entry(sid)?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !entry.recv.is_empty() {
            let mut n = 0;
            while n < buf.len() {
                let Some(chunk) = entry.recv.front_mut() else {
                    break;
                };
                let k = chunk.len().min(buf.len() - n);
                buf[n..n + k].copy_from_slice(&chunk[..k]);
                chunk.advance(k);
                if chunk.is_empty() {
                    entry.recv.pop_front();
                }
                n += k;
            }
            let before = entry.recv_len;
            entry.recv_len -= n;
            let after = entry.recv_len;
            entry.last_progress = Some(now);
            let mut want_upd = false;
            if version >= 2 {
                // Go smux's rule: report consumption on the first read and whenever half
                // the advertised window has been consumed since the last report.
                let first = entry.num_read == 0;
                entry.num_read = entry.num_read.wrapping_add(n as u32);
                entry.incr = entry.incr.wrapping_add(n as u32);
                if entry.incr >= half_window || first {
                    entry.incr = 0;
                    if !entry.upd_queued && death.is_none() {
                        entry.upd_queued = true;
                        want_upd = true;
                    }
                }
            }
            self.buffered -= n;
            self.recv_len_changed(before, after);
            if want_upd {
                self.push_control(Control::Upd(sid));
            }
            if self.paused {
                self.outbox.resume = true;
            }
            return Poll::Ready(Ok(n));
        }
        if let Some(err) = &entry.reset {
            return Poll::Ready(Err(err.clone()));
        }
        if entry.peer_fin {
            return Poll::Ready(Ok(0));
        }
        if let Some(err) = death {
            return Poll::Ready(Err(err));
        }
        entry.read_blocked = true;
        Poll::Pending
    }

    /// Queues up to the stream's send-buffer room of `data` for sending; `Pending` (wait
    /// for `Writable`) when the buffer is full.
    pub(crate) fn write(
        &mut self,
        sid: u32,
        data: &[u8],
        now: Instant,
    ) -> Poll<Result<usize, Error>> {
        let send_limit = self.send_limit;
        let closing = self.closing;
        let death = self.death.clone();
        let entry = self.entry(sid)?;
        if let Some(err) = &entry.reset {
            return Poll::Ready(Err(err.clone()));
        }
        if let Some(err) = death {
            return Poll::Ready(Err(err));
        }
        if entry.fin_requested {
            let err = if closing {
                Error::new(ErrorKind::SessionClosed, "the session is closing")
            } else {
                Error::new(ErrorKind::StreamClosed, "write after shutdown")
            };
            return Poll::Ready(Err(err));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let space = send_limit.saturating_sub(entry.send.len());
        if space == 0 {
            entry.write_blocked = true;
            return self.wait_for_window(sid, now);
        }
        let n = space.min(data.len());
        entry.send.extend_from_slice(&data[..n]);
        self.queued += n;
        self.schedule(sid);
        self.fin_stalls.remove(&sid);
        Poll::Ready(Ok(n))
    }

    /// Resolves once everything written to `sid` so far has been handed to the driver.
    pub(crate) fn flush(&mut self, sid: u32, now: Instant) -> Poll<Result<(), Error>> {
        let death = self.death.clone();
        let entry = self.entry(sid)?;
        if let Some(err) = &entry.reset {
            return Poll::Ready(Err(err.clone()));
        }
        if entry.send.is_empty() {
            self.fin_stalls.remove(&sid);
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = death {
            return Poll::Ready(Err(err));
        }
        entry.write_blocked = true;
        self.wait_for_window(sid, now)
    }

    /// Queues the stream's FIN after its pending data (a half close); resolves once the FIN
    /// has been handed to the driver.
    pub(crate) fn shutdown(&mut self, sid: u32, now: Instant) -> Poll<Result<(), Error>> {
        let death = self.death.clone();
        let entry = self.entry(sid)?;
        if let Some(err) = &entry.reset {
            // Data that was still queued is lost: the caller must not take this for a
            // clean close.
            return Poll::Ready(Err(err.clone()));
        }
        if entry.fin_sent {
            self.fin_stalls.remove(&sid);
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = death {
            return Poll::Ready(Err(err));
        }
        entry.write_blocked = true;
        if !entry.fin_requested {
            entry.fin_requested = true;
            self.schedule(sid);
        }
        self.wait_for_window(sid, now)
    }

    /// A write-side operation of `sid` must wait. If it waits for a window the peer may
    /// never open (see [`blocked_after_fin`](Self::blocked_after_fin)), the stream gives
    /// up after `stall_timeout` without one (see `timers`).
    fn wait_for_window<T>(&mut self, sid: u32, now: Instant) -> Poll<Result<T, Error>> {
        if !self.blocked_after_fin(sid) {
            self.fin_stalls.remove(&sid);
        } else if !self.fin_stalls.contains_key(&sid) {
            self.fin_stalls.insert(sid, now + self.stall_timeout);
            self.outbox.rearm = true;
        }
        Poll::Pending
    }

    /// The application dropped its [`Stream`](crate::Stream): unread data is discarded,
    /// data already written still goes out, followed by a FIN.
    pub(crate) fn drop_stream(&mut self, sid: u32) {
        let Some(entry) = self.streams.get_mut(&sid) else {
            return;
        };
        entry.handle = Handle::Dropped;
        entry.read_blocked = false;
        entry.write_blocked = false;
        let unread = std::mem::take(&mut entry.recv_len);
        entry.recv.clear();
        entry.fin_requested = true;
        self.buffered -= unread;
        self.recv_len_changed(unread, 0);
        self.fin_stalls.remove(&sid);
        if self.paused {
            self.outbox.resume = true;
        }
        if self.death.is_some() {
            if let Some(entry) = self.streams.remove(&sid) {
                self.queued -= entry.send.len();
            }
            return;
        }
        if self.blocked_after_fin(sid) {
            // Nobody is left to wait for a window that will likely never open.
            self.reset_stream(sid, "dropped with data the peer will not take");
            return;
        }
        self.schedule(sid);
        self.maybe_remove(sid);
    }
}
