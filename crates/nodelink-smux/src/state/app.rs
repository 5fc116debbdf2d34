//! The application-facing half of the state machine: what `Stream`'s `AsyncRead` and
//! `AsyncWrite` calls do to a stream's buffers, and what dropping a stream does.

use std::io;
use std::task::{Context, Poll};

use bytes::Buf;
use tokio::io::ReadBuf;
use tokio::time::Instant;

use super::{Control, Handle, Inner, StreamEntry};
use crate::error::{Error, ErrorKind};

impl Inner {
    fn entry(&mut self, sid: u32) -> io::Result<&mut StreamEntry> {
        self.streams
            .get_mut(&sid)
            .ok_or_else(|| Error::new(ErrorKind::StreamClosed, "stream no longer exists").into())
    }

    pub(crate) fn poll_read(
        &mut self,
        sid: u32,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let version = self.version;
        let half_window = self.stream_window / 2;
        let death = self.death.clone();
        let entry = self.entry(sid)?;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if !entry.recv.is_empty() {
            let mut n = 0;
            while buf.remaining() > 0 {
                let Some(chunk) = entry.recv.front_mut() else {
                    break;
                };
                let k = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..k]);
                chunk.advance(k);
                if chunk.is_empty() {
                    entry.recv.pop_front();
                }
                n += k;
            }
            let before = entry.recv_len;
            entry.recv_len -= n;
            let after = entry.recv_len;
            entry.last_progress = Some(Instant::now());
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
                self.progress.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = &entry.reset {
            return Poll::Ready(Err(err.clone().into()));
        }
        if entry.peer_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = death {
            return Poll::Ready(Err(err.into()));
        }
        entry.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) fn poll_write(
        &mut self,
        sid: u32,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let send_limit = self.send_limit;
        let death = self.death.clone();
        let entry = self.entry(sid)?;
        if let Some(err) = &entry.reset {
            return Poll::Ready(Err(err.clone().into()));
        }
        if let Some(err) = death {
            return Poll::Ready(Err(err.into()));
        }
        if entry.fin_requested {
            let err = Error::new(ErrorKind::StreamClosed, "write after shutdown");
            return Poll::Ready(Err(err.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let space = send_limit.saturating_sub(entry.send.len());
        if space == 0 {
            entry.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = space.min(data.len());
        entry.send.extend_from_slice(&data[..n]);
        self.schedule(sid);
        Poll::Ready(Ok(n))
    }

    pub(crate) fn poll_flush(&mut self, sid: u32, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let death = self.death.clone();
        let entry = self.entry(sid)?;
        if let Some(err) = &entry.reset {
            return Poll::Ready(Err(err.clone().into()));
        }
        if entry.send.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = death {
            return Poll::Ready(Err(err.into()));
        }
        entry.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) fn poll_shutdown(&mut self, sid: u32, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let death = self.death.clone();
        let entry = self.entry(sid)?;
        if entry.reset.is_some() || entry.fin_sent {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = death {
            return Poll::Ready(Err(err.into()));
        }
        entry.write_waker = Some(cx.waker().clone());
        if !entry.fin_requested {
            entry.fin_requested = true;
            self.schedule(sid);
        }
        Poll::Pending
    }

    /// The application dropped its [`Stream`](crate::Stream): unread data is discarded,
    /// data already written still goes out, followed by a FIN.
    pub(crate) fn handle_dropped(&mut self, sid: u32) {
        let Some(entry) = self.streams.get_mut(&sid) else {
            return;
        };
        entry.handle = Handle::Dropped;
        entry.read_waker = None;
        entry.write_waker = None;
        let unread = std::mem::take(&mut entry.recv_len);
        entry.recv.clear();
        entry.fin_requested = true;
        self.buffered -= unread;
        self.recv_len_changed(unread, 0);
        if self.paused {
            self.progress.notify_one();
        }
        if self.death.is_some() {
            self.streams.remove(&sid);
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
