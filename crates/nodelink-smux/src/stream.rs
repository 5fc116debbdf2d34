//! [`Stream`]: one multiplexed byte stream, as tokio `AsyncRead` + `AsyncWrite`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::shared::{LifeGuard, Shared, Side};

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
///   stream is reset, whether or not a write is still waiting by then. Dropping such a
///   stream gives the data up at once.
/// - A reset stream (see the crate documentation) fails reads and writes with
///   `ConnectionReset`, carrying an [`Error`](crate::Error) of kind
///   [`StreamReset`](crate::ErrorKind::StreamReset).
pub struct Stream {
    sid: u32,
    shared: Arc<Shared>,
    // Held so the session outlives its last stream even if every Session clone is gone.
    _guard: Arc<LifeGuard>,
}

impl Stream {
    pub(crate) fn new(sid: u32, shared: Arc<Shared>, guard: Arc<LifeGuard>) -> Stream {
        Stream {
            sid,
            shared,
            _guard: guard,
        }
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
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let sid = self.sid;
        self.shared.poll_stream(sid, Side::Read, cx, |core, now| {
            // Only the bytes about to be copied are initialised (at least one, so an empty
            // stream still reports its end, reset or wait).
            let want = core.unread(sid).clamp(1, buf.remaining());
            let dst = &mut buf.initialize_unfilled_to(want)[..want];
            core.read(sid, dst, now).map(|read| match read {
                Ok(n) => {
                    buf.advance(n);
                    Ok(())
                }
                Err(e) => Err(e.into()),
            })
        })
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let sid = self.sid;
        self.shared
            .poll_stream(sid, Side::Write, cx, |core, now| core.write(sid, data, now))
            .map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let sid = self.sid;
        self.shared
            .poll_stream(sid, Side::Write, cx, |core, now| core.flush(sid, now))
            .map_err(io::Error::from)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let sid = self.sid;
        self.shared
            .poll_stream(sid, Side::Write, cx, |core, now| core.shutdown(sid, now))
            .map_err(io::Error::from)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.drop_stream(self.sid);
    }
}
