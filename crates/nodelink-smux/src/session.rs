//! [`Session`]: the public handle, and the three tasks that drive a session — a reader that
//! decodes frames into the shared state, a writer that drains it into the connection, and
//! a keepalive timer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::frame::{FrameDecoder, HEADER_LEN, MAX_PAYLOAD_LEN};
use crate::shared::{LifeGuard, Shared};
use crate::state::{Inner, SessionStats, BATCH_LIMIT};
use crate::stream::Stream;

/// How long closing waits for the connection's own shutdown (a FIN on TCP, say).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Room the reader keeps free in its buffer before each read.
const READ_CHUNK: usize = 64 * 1024;

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
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    guard: Arc<LifeGuard>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts the client side of a session over `io`; it opens odd stream ids 3, 5, 7, …
    /// Must be called inside a tokio runtime (the session spawns its tasks there).
    pub fn client<T>(io: T, config: Config) -> Result<Session, Error>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Session::start(io, config, true)
    }

    /// Starts the server side of a session over `io`; it opens even stream ids 2, 4, …
    pub fn server<T>(io: T, config: Config) -> Result<Session, Error>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Session::start(io, config, false)
    }

    fn start<T>(io: T, config: Config, client: bool) -> Result<Session, Error>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::new(ErrorKind::NoRuntime, e.to_string()))?;
        let writer = Arc::new(Notify::new());
        let acceptors = Arc::new(Notify::new());
        let progress = Arc::new(Notify::new());
        let inner = Inner::new(
            &config,
            client,
            writer.clone(),
            acceptors.clone(),
            progress.clone(),
        );
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            writer,
            acceptors,
            progress,
            dead: CancellationToken::new(),
            finished: CancellationToken::new(),
        });
        let (rd, wr) = tokio::io::split(io);
        let tasks = Arc::new(TaskGuard(shared.finished.clone()));
        runtime.spawn(read_loop(shared.clone(), rd, config.clone(), tasks.clone()));
        runtime.spawn(write_loop(shared.clone(), wr, tasks.clone()));
        if !config.keep_alive_disabled {
            runtime.spawn(keepalive_loop(shared.clone(), config, tasks));
        }
        let guard = Arc::new(LifeGuard {
            shared: shared.clone(),
        });
        Ok(Session { shared, guard })
    }

    /// Opens a stream: allocates the next id and queues its SYN. Data written to the stream
    /// follows the SYN on the wire.
    pub async fn open_stream(&self) -> Result<Stream, Error> {
        let sid = self.shared.lock().open_local()?;
        Ok(Stream::new(sid, self.shared.clone(), self.guard.clone()))
    }

    /// Waits for the next stream opened by the peer. Fails with
    /// [`SessionClosed`](ErrorKind::SessionClosed) once the session is dead.
    pub async fn accept_stream(&self) -> Result<Stream, Error> {
        loop {
            let notified = self.shared.acceptors.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(sid) = self.shared.lock().pop_accept()? {
                return Ok(Stream::new(sid, self.shared.clone(), self.guard.clone()));
            }
            tokio::select! {
                _ = notified => {}
                _ = self.shared.dead.cancelled() => {}
            }
        }
    }

    /// Closes the session: every stream fails, the tasks stop and the connection is shut
    /// down and dropped. Returns once the connection has been released. Pending data and
    /// FINs are not sent (as in Go smux, closing the session is abrupt).
    pub async fn close(&self) {
        self.shared
            .kill(Error::new(ErrorKind::SessionClosed, "closed locally"));
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
        self.shared.lock().death().cloned()
    }

    /// Streams currently known to the session (0 once it is closed).
    pub fn num_streams(&self) -> usize {
        self.shared.lock().num_streams()
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        self.shared.lock().stats
    }
}

async fn read_loop<R: AsyncRead>(
    shared: Arc<Shared>,
    mut rd: ReadHalf<R>,
    config: Config,
    _tasks: Arc<TaskGuard>,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK + HEADER_LEN + MAX_PAYLOAD_LEN);
    let decoder = FrameDecoder::new(config.version);
    loop {
        // Backpressure: do not take more from the connection while a buffer bound is
        // exceeded, except that a stalled stream gets reset after `stall_timeout`.
        loop {
            let wait = shared.lock().relieve(Instant::now(), config.stall_timeout);
            let Some(deadline) = wait else {
                break;
            };
            tokio::select! {
                _ = shared.progress.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
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
        let failure = {
            let mut inner = shared.lock();
            inner.last_rx = Instant::now();
            loop {
                // Frames are handled in place: the state copies out only the payloads it
                // keeps, so no slice of `buf` outlives this loop and the buffer is reused
                // rather than reallocated (a kept slice would pin the whole allocation).
                match decoder.peek(&buf) {
                    Ok(Some((header, payload))) => {
                        let applied = inner.on_frame(header, payload);
                        buf.advance(header.frame_len());
                        if let Err(e) = applied {
                            break Some(e);
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            }
        };
        if let Some(err) = failure {
            tracing::warn!(error = %err, "smux peer broke the protocol; closing the session");
            shared.kill(err);
            return;
        }
    }
}

async fn write_loop<W: AsyncWrite>(
    shared: Arc<Shared>,
    mut wr: WriteHalf<W>,
    _tasks: Arc<TaskGuard>,
) {
    let mut out = BytesMut::with_capacity(BATCH_LIMIT + HEADER_LEN + MAX_PAYLOAD_LEN);
    let mut unflushed = false;
    loop {
        {
            let mut inner = shared.lock();
            if inner.death().is_some() {
                break;
            }
            inner.fill_batch(&mut out);
        }
        if out.is_empty() {
            if unflushed {
                unflushed = false;
                if let Err(e) = wr.flush().await {
                    shared.kill(Error::io("flushing the connection", e));
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = shared.writer.notified() => {}
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
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, wr.shutdown()).await;
}

async fn keepalive_loop(shared: Arc<Shared>, config: Config, _tasks: Arc<TaskGuard>) {
    let interval = config.keep_alive_interval;
    let timeout = config.keep_alive_timeout;
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = shared.lock().last_rx + timeout;
        tokio::select! {
            _ = shared.dead.cancelled() => return,
            _ = ping.tick() => shared.lock().queue_nop(),
            _ = tokio::time::sleep_until(deadline) => {
                let mut inner = shared.lock();
                if inner.paused {
                    // The reader is holding back on purpose; the peer is not silent.
                    inner.last_rx = Instant::now();
                    continue;
                }
                let idle = Instant::now().saturating_duration_since(inner.last_rx);
                drop(inner);
                if idle >= timeout {
                    tracing::warn!(?timeout, "smux keepalive timeout: nothing received");
                    shared.kill(Error::new(
                        ErrorKind::Timeout,
                        format!("no frame received for {timeout:?}"),
                    ));
                    return;
                }
            }
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
        let err = Session::client(a, config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    }

    #[test]
    fn outside_a_runtime_is_an_error() {
        let (a, _b) = tokio::io::duplex(1024);
        let err = Session::client(a, Config::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoRuntime);
    }

    #[tokio::test]
    async fn close_reports_its_reason() {
        let (a, _b) = tokio::io::duplex(1024);
        let s = Session::client(a, Config::default()).unwrap();
        s.close().await;
        assert!(s.is_closed());
        assert_eq!(s.close_reason().unwrap().kind(), ErrorKind::SessionClosed);
    }
}
