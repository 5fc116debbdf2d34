//! [`Session`]: the public handle, and the three tasks that drive a session's core
//! (`core/`): a reader that moves bytes from the connection into it, a writer that moves
//! its frames to the connection, and a timer that hands it the time when its next deadline
//! comes. The protocol's decisions are all in the core; these tasks only move bytes and
//! wait.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

use crate::config::Config;
use crate::core::{SessionCore, SessionStats, BATCH_LIMIT};
use crate::error::{Error, ErrorKind};
use crate::frame::{HEADER_LEN, MAX_PAYLOAD_LEN};
use crate::shared::{LifeGuard, Shared};
use crate::stream::Stream;
use nodelink_driver::Holding;
use nodelink_driver::Role;

/// How long closing waits for the connection's own shutdown (a FIN on TCP, say).
const CONNECTION_SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// Room the reader keeps free in its buffer before each read.
const READ_CHUNK: usize = 64 * 1024;
/// A session sharing a memory budget publishes what it holds when that moved by at least
/// this much (or fell to nothing).
const BUDGET_REPORT_STEP: usize = 32 * 1024;

/// Cancels `finished` when the last task holding it ends, i.e. when the connection has been
/// released.
struct TaskGuard(CancellationToken);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// One smux session over a byte stream. Cheap to clone; the session stays up while a clone
/// or one of its streams exists, until [`close`](Session::close), a connection error, a
/// protocol error or a keepalive timeout.
pub struct Session {
    shared: Arc<Shared>,
    guard: Arc<LifeGuard>,
    /// This handle's `Stream` of accepted streams has yielded its final error.
    incoming_ended: bool,
}

impl Clone for Session {
    /// Another handle to the same session (with its own `Stream` of accepted streams).
    fn clone(&self) -> Session {
        Session {
            shared: self.shared.clone(),
            guard: self.guard.clone(),
            incoming_ended: false,
        }
    }
}

impl futures_core::Stream for Session {
    type Item = Result<Stream, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.incoming_ended {
            return Poll::Ready(None);
        }
        let polled = self.poll_accept(cx);
        if let Poll::Ready(Err(_)) = &polled {
            self.incoming_ended = true;
        }
        polled.map(Some)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session over `io` on the `role` side: the client opens odd stream ids
    /// 3, 5, 7, …, the server even ones 2, 4, … (smux has no handshake: the first frame is
    /// a stream's). Must be called inside a tokio runtime (the session spawns its tasks
    /// there).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] for an invalid configuration, [`ErrorKind::NoRuntime`]
    /// outside a tokio runtime.
    pub fn start<T>(io: T, role: Role, config: Config) -> Result<Session, Error>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::new(ErrorKind::NoRuntime, e.to_string()))?;
        let holding = config
            .memory_budget
            .as_ref()
            .map(|b| b.join(BUDGET_REPORT_STEP));
        let shared = Arc::new(Shared::new(
            SessionCore::new(&config, role == Role::Client, Instant::now()),
            holding,
        ));
        let (rd, wr) = tokio::io::split(io);
        let tasks = Arc::new(TaskGuard(shared.finished.clone()));
        runtime.spawn(
            read_loop(shared.clone(), rd, tasks.clone())
                .instrument(tracing::Span::current())
                .with_current_subscriber(),
        );
        runtime.spawn(
            write_loop(shared.clone(), wr, tasks.clone())
                .instrument(tracing::Span::current())
                .with_current_subscriber(),
        );
        runtime.spawn(
            timer_loop(shared.clone(), tasks)
                .instrument(tracing::Span::current())
                .with_current_subscriber(),
        );
        let guard = Arc::new(LifeGuard {
            shared: shared.clone(),
        });
        Ok(Session {
            shared,
            guard,
            incoming_ended: false,
        })
    }

    /// Opens a stream: allocates the next id and queues its SYN. Data written to the stream
    /// follows the SYN on the wire.
    pub async fn open(&self) -> Result<Stream, Error> {
        let sid = self.shared.with(|core| core.open())?;
        Ok(Stream::new(sid, self.shared.clone(), self.guard.clone()))
    }

    /// Waits for the next stream opened by the peer. Fails with
    /// [`SessionClosed`](ErrorKind::SessionClosed) once the session is closing, or dead
    /// (streams the peer opened before it died are handed out first).
    ///
    /// A session is also a [`Stream`](futures_core::Stream) of the streams the peer opens,
    /// which yields the error that ended the session once and then ends.
    pub async fn accept(&self) -> Result<Stream, Error> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// The polling form of [`accept`](Session::accept).
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<Stream, Error>> {
        self.shared
            .poll_accept(cx)
            .map_ok(|sid| Stream::new(sid, self.shared.clone(), self.guard.clone()))
    }

    /// Closes the session gracefully and returns once the connection has been released:
    /// no stream is opened or accepted any more, every stream sends the data it has
    /// queued and then its FIN, and the connection is shut down; whatever is still unsent
    /// after [`Config::linger`] is dropped. Streams can still read what arrives meanwhile.
    /// Idempotent. (Go smux's `Close` is abrupt; a Go peer sees FINs, then the end of the
    /// connection.)
    pub async fn close(&self) {
        self.shared.with(|core| core.close(Instant::now()));
        self.shared.finished.cancelled().await;
    }

    /// Whether the session is dead.
    pub fn is_closed(&self) -> bool {
        self.shared.dead.is_cancelled()
    }

    /// Resolves when the session dies, for whatever reason.
    pub async fn closed(&self) {
        self.shared.dead.cancelled().await;
    }

    /// Why the session died: [`Timeout`](ErrorKind::Timeout), [`Io`](ErrorKind::Io),
    /// [`Protocol`](ErrorKind::Protocol) or [`SessionClosed`](ErrorKind::SessionClosed);
    /// `None` while it is alive.
    pub fn close_reason(&self) -> Option<Error> {
        self.shared.with(|core| core.death().cloned())
    }

    /// Streams currently known to the session (0 once it is closed).
    pub fn num_streams(&self) -> usize {
        self.shared.with(|core| core.num_streams())
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        self.shared.with(|core| core.stats())
    }
}

/// Moves bytes from the connection into the core, pausing whenever the core says a buffer
/// bound is exceeded (it says when to look again with `Event::Resume`), or the memory
/// budget the session shares holds it back (it looks again when the budget is released or
/// its own holding falls).
async fn read_loop<R: AsyncRead>(shared: Arc<Shared>, mut rd: ReadHalf<R>, _tasks: Arc<TaskGuard>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK + HEADER_LEN + MAX_PAYLOAD_LEN);
    loop {
        loop {
            let resumed = shared.resume.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            // Created (so registered) now, before the check below.
            let released = shared.holding.as_ref().map(|h| h.budget().released());
            let released = async {
                match released {
                    Some(released) => released.await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(released);
            if shared.with(|core| may_read(core, shared.holding.as_ref())) {
                break;
            }
            tokio::select! {
                _ = resumed => {}
                () = released => {}
                _ = shared.dead.cancelled() => return,
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            _ = shared.dead.cancelled() => return,
            r = rd.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => {
                shared.kill(Error::new(
                    ErrorKind::SessionClosed,
                    "connection closed by the peer",
                ));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                shared.kill(Error::io("reading the connection", e));
                return;
            }
        }
        // The core copies out only the payloads it keeps, so the buffer is reused rather
        // than reallocated (a kept slice would pin the whole allocation).
        let used = shared.with(|core| core.handle_input(&buf, Instant::now()));
        buf.advance(used);
        if shared.dead.is_cancelled() {
            return;
        }
    }
}

/// Whether the reader may read now: the core's own bounds, and the budget it shares.
fn may_read(core: &mut SessionCore, holding: Option<&Holding>) -> bool {
    let now = Instant::now();
    if let Some(h) = holding {
        let held = core.held();
        // The total counts everything the session holds; it is held back only for what
        // it received (holding back for queued sends would keep window updates unread).
        let over = h.over_judging(held, core.received());
        if over {
            // Published exactly before the reader waits: the release it waits for is
            // signalled when the published total falls under the limit.
            h.publish(held);
        }
        let budget = h.budget();
        if over && budget.first_exceeded() {
            tracing::warn!(
                limit = budget.limit(),
                used = budget.used(),
                share = budget.share(),
                sessions = budget.members(),
                exceeded_unsaid = budget.unsaid_excesses(),
                "memory budget reached: smux sessions holding more than their share \
                 (unread and unsent data; at most 256 KiB) stop reading their connections \
                 until their streams catch up; a stream that reads nothing meanwhile is \
                 reset after the stall timeout"
            );
        }
        core.set_over_budget(over, now);
    }
    core.may_read(now)
}

/// Moves the core's frames to the connection in batches, flushing when it runs dry.
async fn write_loop<W: AsyncWrite>(
    shared: Arc<Shared>,
    mut wr: WriteHalf<W>,
    _tasks: Arc<TaskGuard>,
) {
    let mut out = BytesMut::with_capacity(BATCH_LIMIT + HEADER_LEN + MAX_PAYLOAD_LEN);
    let mut unflushed = false;
    loop {
        let wanted = shared.writer.notified();
        tokio::pin!(wanted);
        wanted.as_mut().enable();
        let done = shared.with(|core| {
            core.write_transmit(&mut out);
            core.close_done()
        });
        if shared.dead.is_cancelled() {
            break;
        }
        if out.is_empty() {
            if unflushed {
                unflushed = false;
                let flushed = tokio::select! {
                    r = wr.flush() => r,
                    _ = shared.dead.cancelled() => break,
                };
                if let Err(e) = flushed {
                    shared.kill(Error::io("flushing the connection", e));
                    break;
                }
                continue;
            }
            if done {
                // A graceful close has sent everything: the connection goes now.
                shared.kill(Error::new(ErrorKind::SessionClosed, "closed locally"));
                break;
            }
            tokio::select! {
                _ = wanted => {}
                _ = shared.dead.cancelled() => break,
            }
            continue;
        }
        let written = tokio::select! {
            r = wr.write_all(&out) => r,
            _ = shared.dead.cancelled() => break,
        };
        if let Err(e) = written {
            shared.kill(Error::io("writing the connection", e));
            break;
        }
        out.clear();
        unflushed = true;
    }
    let _ = tokio::time::timeout(CONNECTION_SHUTDOWN_WAIT, wr.shutdown()).await;
}

/// Sleeps until the core's next deadline (keepalive, stall verdicts) and hands it the time.
async fn timer_loop(shared: Arc<Shared>, _tasks: Arc<TaskGuard>) {
    loop {
        let rearmed = shared.rearm.notified();
        tokio::pin!(rearmed);
        rearmed.as_mut().enable();
        let deadline = shared.with(|core| {
            core.handle_timeout(Instant::now());
            core.poll_timeout()
        });
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.dead.cancelled() => return,
            _ = rearmed => {}
            _ = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_config_is_refused() {
        let (a, _b) = tokio::io::duplex(1024);
        let config = Config {
            version: 3,
            ..Config::default()
        };
        let err = Session::start(a, Role::Client, config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    }

    #[test]
    fn outside_a_runtime_is_an_error() {
        let (a, _b) = tokio::io::duplex(1024);
        let err = Session::start(a, Role::Client, Config::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoRuntime);
    }

    #[tokio::test]
    async fn a_session_is_a_stream_of_accepted_streams_that_ends_after_its_error() {
        use futures_core::Stream as _;
        use tokio::io::AsyncWriteExt;

        async fn next(s: &mut Session) -> Option<Result<Stream, Error>> {
            std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
        }
        let (a, b) = tokio::io::duplex(1 << 16);
        let client = Session::start(a, Role::Client, Config::default()).unwrap();
        let mut server = Session::start(b, Role::Server, Config::default()).unwrap();
        let mut opened = Vec::new();
        for _ in 0..2 {
            let mut s = client.open().await.unwrap();
            s.write_all(b"x").await.unwrap();
            opened.push(s.id());
        }
        let mut accepted = Vec::new();
        for _ in 0..2 {
            accepted.push(next(&mut server).await.unwrap().unwrap().id());
        }
        assert_eq!(accepted, opened);
        client.close().await;
        let err = next(&mut server).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionClosed);
        assert!(next(&mut server).await.is_none());
    }

    #[tokio::test]
    async fn close_sends_what_is_queued_then_fins_then_ends_the_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (a, b) = tokio::io::duplex(1 << 20);
        let client = Session::start(a, Role::Client, Config::default()).unwrap();
        let server = Session::start(b, Role::Server, Config::default()).unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                let mut s = server.accept().await.unwrap();
                let mut data = Vec::new();
                s.read_to_end(&mut data).await.unwrap();
                got.push(data);
            }
            got
        });
        let mut streams = Vec::new();
        for i in 0..3u8 {
            let mut s = client.open().await.unwrap();
            // Queued, not necessarily sent, when close starts.
            s.write_all(&vec![i; 60_000]).await.unwrap();
            streams.push(s);
        }
        client.close().await;
        assert!(client.is_closed());
        assert_eq!(client.close_reason().unwrap().detail(), "closed locally");
        assert!(client.open().await.is_err());
        let got = reader.await.unwrap();
        for (i, data) in got.iter().enumerate() {
            assert_eq!(data, &vec![i as u8; 60_000]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn close_gives_up_after_the_linger() {
        use tokio::io::AsyncWriteExt;

        // v2 and a peer that never reads: the window stops the data, the linger ends it.
        let config = Config::default()
            .with_version(2)
            .with_linger(Duration::from_secs(2));
        let (a, _b) = tokio::io::duplex(1 << 20);
        let client = Session::start(a, Role::Client, config).unwrap();
        let mut s = client.open().await.unwrap();
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            let _ = s.write_all(&[0; 400_000]).await;
        });
        tokio::task::yield_now().await;
        client.close().await;
        let reason = client.close_reason().unwrap();
        assert_eq!(reason.kind(), ErrorKind::SessionClosed);
        assert!(reason.detail().contains("not sent"), "{reason}");
        assert!(started.elapsed() >= Duration::from_secs(2));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn close_reports_its_reason() {
        let (a, _b) = tokio::io::duplex(1024);
        let s = Session::start(a, Role::Client, Config::default()).unwrap();
        s.close().await;
        assert!(s.is_closed());
        assert_eq!(s.close_reason().unwrap().kind(), ErrorKind::SessionClosed);
    }
}
