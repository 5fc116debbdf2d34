//! [`Stream`]: one multiplexed byte stream, as tokio `AsyncRead` + `AsyncWrite`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::shared::{LifeGuard, Shared};
use crate::state::Inner;

/// One stream of a [`Session`](crate::Session).
///
/// - Reading returns buffered data, then `Ok(0)` (EOF) once the peer's FIN has arrived.
/// - Writing buffers a bounded amount and returns; the session writer sends it as PSH
///   frames (in v2 as the peer's window allows). `poll_flush` waits until everything
///   written so far has been handed to the connection.
/// - `poll_shutdown` sends a FIN after the pending data (a half close: reading goes on)
///   and resolves once the FIN is out.
/// - Dropping the stream without shutting it down also sends a FIN after pending data;
///   data received afterwards is discarded.
/// - In v2, once the peer has sent its FIN, data still waiting for window is given up
///   after [`Config::stall_timeout`](crate::Config::stall_timeout) without a window
///   update (a Go peer's FIN is a full close; Go's own writer gives up at once), and the
///   stream is reset. Dropping such a stream gives the data up at once.
/// - A reset stream (see the crate documentation) fails reads and writes with
///   `ConnectionReset`, carrying an [`Error`](crate::Error) of kind
///   [`StreamReset`](crate::ErrorKind::StreamReset).
pub struct Stream {
    sid: u32,
    shared: Arc<Shared>,
    /// Armed while writes wait for a window the peer may never open (see above).
    fin_stall: Option<Pin<Box<Sleep>>>,
    // Held so the session outlives its last stream even if every Session clone is gone.
    _guard: Arc<LifeGuard>,
}

impl Stream {
    pub(crate) fn new(sid: u32, shared: Arc<Shared>, guard: Arc<LifeGuard>) -> Stream {
        Stream {
            sid,
            shared,
            fin_stall: None,
            _guard: guard,
        }
    }

    /// Runs a write-side operation; if it must wait for window after the peer's FIN, arms
    /// the give-up timer and resets the stream when it fires.
    fn poll_write_side<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&mut Inner, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let mut inner = self.shared.lock();
        let polled = op(&mut inner, cx);
        if polled.is_ready() || !inner.blocked_after_fin(self.sid) {
            self.fin_stall = None;
            return polled;
        }
        let timeout = inner.stall_timeout;
        let timer = self
            .fin_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.fin_stall = None;
        inner.reset_stream(
            self.sid,
            "peer closed the stream without opening its window",
        );
        op(&mut inner, cx)
    }

    /// The stream id (odd when opened by the client, even when opened by the server).
    pub fn id(&self) -> u32 {
        self.sid
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.sid).finish()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.shared.lock().poll_read(self.sid, cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let sid = this.sid;
        this.poll_write_side(cx, |inner, cx| inner.poll_write(sid, cx, data))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let sid = this.sid;
        this.poll_write_side(cx, |inner, cx| inner.poll_flush(sid, cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let sid = this.sid;
        this.poll_write_side(cx, |inner, cx| inner.poll_shutdown(sid, cx))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.lock().handle_dropped(self.sid);
    }
}
