//! The serialized, cancellation-safe write side of one socket.
//!
//! Every frame — data, control, probe and probe ack alike — is appended to one queue
//! under a short synchronous lock ([`SocketWriter::enqueue`]), so frames produced while
//! holding the endpoint's state lock go out in state order. Whoever wants its bytes on the
//! wire then calls [`SocketWriter::flush`], which takes the socket's write half and writes
//! until its own bytes are out (writing any earlier ones first).
//!
//! Cancellation: the bytes being written live next to the write half, behind its lock, and
//! are advanced only by what the socket accepted. If a flushing future is dropped half way,
//! a guard spawns a task that finishes the job, and any later flush also writes the rest
//! first. A frame is therefore never cut short on the wire.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;

use nodelink_driver::lock;

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The lightweight connection was closed by us.
    ConnectionClosed,
    /// The socket is closing or broken.
    SocketDead,
}

pub(crate) struct SocketWriter {
    queue: Mutex<Queue>,
    io: Arc<tokio::sync::Mutex<Io>>,
    /// Cancels the socket: its reader exits and blocked writes give up.
    pub(crate) cancel: CancellationToken,
    /// Wakes the reader so it notices a new deadline of the socket's core.
    pub(crate) deadline_wake: tokio::sync::Notify,
}

struct Queue {
    buf: BytesMut,
    /// Total bytes ever queued; a flush waits until `Io::written` reaches its mark.
    queued: u64,
    dead: bool,
}

struct Io {
    half: Option<OwnedWriteHalf>,
    inflight: BytesMut,
    written: u64,
}

impl SocketWriter {
    pub(crate) fn new(half: OwnedWriteHalf) -> Arc<Self> {
        Self::with_cancel(half, CancellationToken::new())
    }

    /// Same, cancelled with `cancel` (a socket that may be ended from outside).
    pub(crate) fn with_cancel(half: OwnedWriteHalf, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(SocketWriter {
            queue: Mutex::new(Queue {
                buf: BytesMut::new(),
                queued: 0,
                dead: false,
            }),
            io: Arc::new(tokio::sync::Mutex::new(Io {
                half: Some(half),
                inflight: BytesMut::new(),
                written: 0,
            })),
            cancel,
            deadline_wake: tokio::sync::Notify::new(),
        })
    }

    /// Appends what `encode` writes; returns the mark to pass to [`flush`](Self::flush).
    pub(crate) fn enqueue(&self, encode: impl FnOnce(&mut BytesMut)) -> Result<u64, Refused> {
        let mut q = lock(&self.queue);
        if q.dead {
            return Err(Refused::SocketDead);
        }
        let before = q.buf.len();
        encode(&mut q.buf);
        q.queued += (q.buf.len() - before) as u64;
        Ok(q.queued)
    }

    /// Like [`enqueue`](Self::enqueue), but first checks `alive` under the queue lock, so
    /// a connection closed concurrently never gets a frame after its `CloseConnection`.
    pub(crate) fn enqueue_if(
        &self,
        alive: &std::sync::atomic::AtomicBool,
        encode: impl FnOnce(&mut BytesMut),
    ) -> Result<u64, Refused> {
        let mut q = lock(&self.queue);
        if !alive.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Refused::ConnectionClosed);
        }
        if q.dead {
            return Err(Refused::SocketDead);
        }
        let before = q.buf.len();
        encode(&mut q.buf);
        q.queued += (q.buf.len() - before) as u64;
        Ok(q.queued)
    }

    /// Clears `alive` under the queue lock and queues `encode` (the `CloseConnection`)
    /// if the socket still lives. Returns whether `alive` was set.
    pub(crate) fn close_connection(
        &self,
        alive: &std::sync::atomic::AtomicBool,
        encode: impl FnOnce(&mut BytesMut),
    ) -> bool {
        let mut q = lock(&self.queue);
        if !alive.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return false;
        }
        if !q.dead {
            let before = q.buf.len();
            encode(&mut q.buf);
            q.queued += (q.buf.len() - before) as u64;
        }
        true
    }

    /// Refuses every later frame (what is queued still goes out).
    pub(crate) fn kill(&self) {
        lock(&self.queue).dead = true;
    }

    /// The current end of the queue.
    pub(crate) fn mark(&self) -> u64 {
        lock(&self.queue).queued
    }

    /// Writes until everything up to `mark` is on the wire.
    pub(crate) async fn flush(self: &Arc<Self>, mark: u64) -> io::Result<()> {
        let io = self.io.clone().lock_owned().await;
        if io.written >= mark {
            return Ok(());
        }
        let mut guard = FlushGuard {
            writer: self.clone(),
            io: Some(io),
        };
        let r = guard.run(mark).await;
        guard.io = None;
        if r.is_err() {
            self.kill();
            self.cancel.cancel();
        }
        r
    }

    /// Writes what is queued, then shuts the write half down (FIN) and drops it.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.kill();
        let mark = self.mark();
        let _ = self.flush(mark).await;
        let mut io = self.io.lock().await;
        if let Some(mut half) = io.half.take() {
            let _ = tokio::select! {
                r = half.shutdown() => r,
                _ = self.cancel.cancelled() => Ok(()),
            };
        }
    }

    /// Drops the write half at once, whatever is pending (used after cancellation).
    pub(crate) async fn abandon(self: &Arc<Self>) {
        self.kill();
        self.cancel.cancel();
        let mut io = self.io.lock().await;
        io.half = None;
    }
}

struct FlushGuard {
    writer: Arc<SocketWriter>,
    io: Option<tokio::sync::OwnedMutexGuard<Io>>,
}

impl FlushGuard {
    async fn run(&mut self, mark: u64) -> io::Result<()> {
        let writer = self.writer.clone();
        let io: &mut Io = self
            .io
            .as_mut()
            .expect("guard holds the lock while running");
        while io.written < mark {
            if io.inflight.is_empty() {
                let mut q = lock(&writer.queue);
                std::mem::swap(&mut io.inflight, &mut q.buf);
            }
            if io.inflight.is_empty() {
                // Marks are never ahead of the queue; nothing left means already written.
                return Ok(());
            }
            let Io { half, inflight, .. } = io;
            let Some(half) = half.as_mut() else {
                return Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed"));
            };
            let n = tokio::select! {
                r = half.write(inflight) => r?,
                _ = writer.cancel.cancelled() => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "socket cancelled"))
                }
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket accepts no more bytes",
                ));
            }
            io.inflight.advance(n);
            io.written += n as u64;
        }
        Ok(())
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else { return };
        if io.inflight.is_empty() {
            return;
        }
        // Cancelled in the middle of a frame: finish it in the background.
        drop(io);
        let writer = self.writer.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let mark = writer.mark();
                let _ = writer.flush(mark).await;
            });
        }
    }
}
