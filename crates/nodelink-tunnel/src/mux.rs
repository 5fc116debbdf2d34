//! What both ends share: building an smux session over a KCP session (with or without
//! snappy), the I/O of copying a TCP connection to and from an smux stream (the copy's
//! decisions and the closing rule of the smux version are in `core/forward.rs`), and the
//! stream logs.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use nodelink_kcp::KcpStream;
use nodelink_smux::{Config as SmuxConfig, MemoryBudget, Session};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::config::{Role, SmuxSettings};
pub(crate) use crate::core::forward::Closing;
use crate::core::forward::{Direction, Pipe, Settle, Want};
use crate::snappy::SnappyStream;
use crate::Error;

/// Copy buffer per direction. smux cuts writes into frames of at most 32 KiB; a buffer of
/// that size lets one read become one full frame (one snappy chunk), which both compresses
/// better and costs fewer headers than kcptun's 4 KiB copies.
const COPY_BUF: usize = 32 * 1024;

// How long the remaining direction of an ending connection may take to write out what it
// had read and push its FIN before it is abandoned: the drivers' one grace.
use nodelink_driver::SHUTDOWN_GRACE;

/// smux settings with kcptun's values; everything else keeps smux's defaults.
pub(crate) fn smux_config(s: &SmuxSettings) -> SmuxConfig {
    SmuxConfig::default()
        .with_version(s.version)
        .with_keep_alive_interval(s.keep_alive_interval)
        .with_max_receive_buffer(s.max_receive_buffer)
        .with_max_stream_buffer(s.max_stream_buffer)
}

/// Runs smux over `kcp`, through snappy framing unless `nocomp` (kcptun's layering: KCP
/// stream, then snappy, then smux), sharing `budget` with the server's other sessions.
pub(crate) fn open_session(
    kcp: KcpStream,
    nocomp: bool,
    settings: &SmuxSettings,
    role: Role,
    budget: Option<&Arc<MemoryBudget>>,
) -> Result<Session, Error> {
    let mut cfg = smux_config(settings);
    if let Some(budget) = budget {
        cfg = cfg.with_memory_budget(Arc::clone(budget));
    }
    let session = if nocomp {
        Session::start(kcp, role, cfg)?
    } else {
        Session::start(SnappyStream::new(kcp), role, cfg)?
    };
    Ok(session)
}

/// Copies both ways between `a` and `b` and returns the bytes copied `(a to b, b to a)`.
///
/// An end of stream read from one side is passed on as a write shutdown of the other
/// (a FIN on the smux stream, a TCP write shutdown), after everything read before it has
/// been written. Then, with [`Closing::Full`], the other direction stops reading, writes
/// out what it had already read, shuts its destination down and the copy returns; with
/// [`Closing::Half`] it goes on until its own end of stream. An error in either direction
/// ends both the same way. Once the connection is ending, the remaining direction gets
/// [`SHUTDOWN_GRACE`] to finish; after that it is abandoned (the caller drops both sides).
/// The decisions are the core's (`core/forward.rs`); this function only does the I/O.
pub(crate) async fn pipe<A, B>(a: &mut A, b: &mut B, closing: Closing) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut pipe = Pipe::new(closing, COPY_BUF);
    let mut grace: Option<Pin<Box<Sleep>>> = None;
    std::future::poll_fn(|cx| loop {
        drive(&mut pipe.there, cx, &mut *a, &mut *b);
        drive(&mut pipe.back, cx, &mut *b, &mut *a);
        match pipe.settle() {
            Settle::Finished => return Poll::Ready(()),
            Settle::Running => return Poll::Pending,
            Settle::Stopped => {
                grace.get_or_insert_with(|| Box::pin(tokio::time::sleep(SHUTDOWN_GRACE)));
            }
            Settle::Grace => {
                let grace =
                    grace.get_or_insert_with(|| Box::pin(tokio::time::sleep(SHUTDOWN_GRACE)));
                return grace.as_mut().poll(cx);
            }
        }
    })
    .await;
    pipe.outcome()
}

/// Does what `dir` wants until an operation would wait (its waker is then registered) or
/// the direction is finished.
fn drive<R, W>(dir: &mut Direction, cx: &mut Context<'_>, src: &mut R, dst: &mut W)
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    loop {
        match dir.want() {
            Want::Done => return,
            Want::Write => match Pin::new(&mut *dst).poll_write(cx, dir.unwritten()) {
                Poll::Pending => return,
                Poll::Ready(Ok(n)) => dir.wrote(n),
                Poll::Ready(Err(e)) => dir.fail(e),
            },
            Want::Shutdown => match Pin::new(&mut *dst).poll_shutdown(cx) {
                Poll::Pending => return,
                Poll::Ready(r) => dir.shut(r),
            },
            Want::Read => {
                let mut read = ReadBuf::new(dir.read_space());
                match Pin::new(&mut *src).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        dir.read(n);
                    }
                    Poll::Ready(Err(e)) => dir.fail(e),
                    Poll::Pending if dir.needs_flush() => {
                        // Idle source: what was written must not sit in a buffer.
                        match Pin::new(&mut *dst).poll_flush(cx) {
                            Poll::Pending => return,
                            Poll::Ready(Ok(())) => {
                                dir.flushed();
                                return;
                            }
                            Poll::Ready(Err(e)) => dir.fail(e),
                        }
                    }
                    Poll::Pending => return,
                }
            }
        }
    }
}

/// The two ends of a forwarded stream, for the "stream opened/closed" logs:
/// `in: <where the data came from> out: <where it goes>(stream id)`.
pub(crate) struct Route {
    pub(crate) inbound: String,
    pub(crate) outbound: String,
    pub(crate) quiet: bool,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in: {} out: {}", self.inbound, self.outbound)
    }
}

impl Route {
    pub(crate) fn opened(&self) {
        if !self.quiet {
            tracing::info!("stream opened {self}");
        }
    }

    pub(crate) fn closed(&self, result: &io::Result<(u64, u64)>) {
        if self.quiet {
            return;
        }
        match result {
            Ok((up, down)) => {
                tracing::info!("stream closed {self} ({up} bytes in, {down} bytes back)")
            }
            Err(e) => {
                tracing::info!(error = e as &dyn std::error::Error, "stream closed {self}")
            }
        }
    }
}
