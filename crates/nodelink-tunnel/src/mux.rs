//! What both ends share: building an smux session over a KCP session (with or without
//! snappy), copying a TCP connection to and from an smux stream with the closing rule of
//! the smux version ([`Closing`]), and the stream logs.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use nodelink_kcp::KcpStream;
use nodelink_smux::{Config as SmuxConfig, Session};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::config::SmuxSettings;
use crate::snappy::SnappyStream;
use crate::Error;

/// Copy buffer per direction. smux cuts writes into frames of at most 32 KiB; a buffer of
/// that size lets one read become one full frame (one snappy chunk), which both compresses
/// better and costs fewer headers than kcptun's 4 KiB copies.
const COPY_BUF: usize = 32 * 1024;

/// How long the remaining direction of an ending connection may take to write out what it
/// had read and push its FIN before it is abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// smux settings with kcptun's values; everything else keeps smux's defaults.
pub(crate) fn smux_config(s: &SmuxSettings) -> SmuxConfig {
    SmuxConfig::default()
        .with_version(s.version)
        .with_keep_alive_interval(s.keep_alive_interval)
        .with_max_receive_buffer(s.max_receive_buffer)
        .with_max_stream_buffer(s.max_stream_buffer)
}

/// Which smux end to run.
#[derive(Clone, Copy)]
pub(crate) enum End {
    Client,
    Server,
}

/// Runs smux over `kcp`, through snappy framing unless `nocomp` (kcptun's layering: KCP
/// stream, then snappy, then smux).
pub(crate) fn open_session(
    kcp: KcpStream,
    nocomp: bool,
    settings: &SmuxSettings,
    end: End,
) -> Result<Session, Error> {
    let cfg = smux_config(settings);
    let session = match (nocomp, end) {
        (true, End::Client) => Session::client(kcp, cfg)?,
        (true, End::Server) => Session::server(kcp, cfg)?,
        (false, End::Client) => Session::client(SnappyStream::new(kcp), cfg)?,
        (false, End::Server) => Session::server(SnappyStream::new(kcp), cfg)?,
    };
    Ok(session)
}

/// How a forwarded connection ends once one of its two directions has ended.
///
/// smux has no reset frame, so a FIN from the peer means either "I am done sending" (a
/// half close) or "I dropped this stream" (Go's `Stream.Close`, which discards whatever
/// arrives afterwards): the two cannot be told apart on the wire. What the difference
/// costs depends on the version:
///
/// - **v1** has no flow control: if the FIN meant "dropped", carrying the other direction
///   on would push everything the far end still writes (a whole download the user
///   cancelled) over the shared KCP session into the void. So the first direction to
///   end ends the connection, as kcptun does.
/// - **v2** bounds the waste by the peer's window (and our smux resets a stream whose
///   writes get no window update for its stall timeout after the peer's FIN), so a
///   half close is honoured both ways.
///
/// The rule is the same at both ends of the tunnel and for both sources of an end: a FIN
/// on the smux stream and an end of stream from the TCP side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closing {
    /// The first direction to end ends both (smux v1).
    Full,
    /// Each direction ends on its own (smux v2).
    Half,
}

impl Closing {
    /// The rule for smux `version`.
    pub(crate) fn for_smux(version: u8) -> Closing {
        if version >= 2 {
            Closing::Half
        } else {
            Closing::Full
        }
    }
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
pub(crate) async fn pipe<A, B>(a: &mut A, b: &mut B, closing: Closing) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Half::new();
    let mut b_to_a = Half::new();
    let mut grace: Option<Pin<Box<Sleep>>> = None;
    std::future::poll_fn(|cx| {
        // A direction that ends may stop the other one, which then needs another poll to
        // drain; each direction stops at most once, so this settles quickly.
        loop {
            let ab_ended = a_to_b.poll_copy(cx, &mut *a, &mut *b);
            let ba_ended = b_to_a.poll_copy(cx, &mut *b, &mut *a);
            let ending = a_to_b.failed()
                || b_to_a.failed()
                || (closing == Closing::Full && (ab_ended || ba_ended));
            if ab_ended && ba_ended {
                return Poll::Ready(());
            }
            if !ending {
                return Poll::Pending;
            }
            let grace = grace.get_or_insert_with(|| Box::pin(tokio::time::sleep(SHUTDOWN_GRACE)));
            if !(a_to_b.stop() || b_to_a.stop()) {
                // Both already stopping: only time can end it now.
                return grace.as_mut().poll(cx);
            }
        }
    })
    .await;
    match a_to_b.error.take().or_else(|| b_to_a.error.take()) {
        Some(e) => Err(e),
        None => Ok((a_to_b.copied, b_to_a.copied)),
    }
}

/// Where one direction of a [`pipe`] stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and writing.
    Copying,
    /// No more reading: write out the buffer, then shut the destination down.
    Draining,
    /// Shutting the destination down.
    ShuttingDown,
    /// Finished (cleanly or not).
    Done,
}

/// One direction of a [`pipe`]: a buffer and where it stands.
struct Half {
    buf: Box<[u8]>,
    /// The bytes `buf[start..end]` were read and are not yet written.
    start: usize,
    end: usize,
    copied: u64,
    /// Something was written since the last flush.
    unflushed: bool,
    phase: Phase,
    /// The first error of this direction.
    error: Option<io::Error>,
}

impl Half {
    fn new() -> Half {
        Half {
            buf: vec![0u8; COPY_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            copied: 0,
            unflushed: false,
            phase: Phase::Copying,
            error: None,
        }
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Asks this direction to stop reading (it drains and shuts down); `true` if that
    /// changed anything.
    fn stop(&mut self) -> bool {
        let copying = self.phase == Phase::Copying;
        if copying {
            self.phase = Phase::Draining;
        }
        copying
    }

    /// Drives the direction as far as it goes without waiting; `true` once it is done.
    fn poll_copy<R, W>(&mut self, cx: &mut Context<'_>, src: &mut R, dst: &mut W) -> bool
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        match self.advance(cx, src, dst) {
            Poll::Pending => false,
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(e)) => {
                if self.phase == Phase::ShuttingDown || self.phase == Phase::Done {
                    self.phase = Phase::Done;
                    self.error.get_or_insert(e);
                    return true;
                }
                // The source or the destination broke: still tell the destination that
                // nothing more comes (the peer learns at once instead of by a timeout).
                self.error = Some(e);
                self.phase = Phase::ShuttingDown;
                self.start = 0;
                self.end = 0;
                match self.advance(cx, src, dst) {
                    Poll::Pending => false,
                    Poll::Ready(_) => {
                        self.phase = Phase::Done;
                        true
                    }
                }
            }
        }
    }

    fn advance<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            match self.phase {
                Phase::Done => return Poll::Ready(Ok(())),
                Phase::ShuttingDown => {
                    let shut = ready!(Pin::new(&mut *dst).poll_shutdown(cx));
                    self.phase = Phase::Done;
                    return Poll::Ready(shut);
                }
                Phase::Copying | Phase::Draining => {}
            }
            while self.start < self.end {
                let n =
                    ready!(Pin::new(&mut *dst).poll_write(cx, &self.buf[self.start..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                self.copied += n as u64;
                self.unflushed = true;
            }
            self.start = 0;
            self.end = 0;
            if self.phase == Phase::Draining {
                self.phase = Phase::ShuttingDown;
                continue;
            }
            let mut read = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *src).poll_read(cx, &mut read) {
                Poll::Pending => {
                    // Idle source: make sure what was written does not sit in a buffer.
                    if self.unflushed {
                        ready!(Pin::new(&mut *dst).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        self.phase = Phase::ShuttingDown;
                    } else {
                        self.end = n;
                    }
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
