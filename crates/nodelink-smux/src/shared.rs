//! What a session's tasks and handles share: the protocol core and the wakers of blocked
//! streams under one mutex, the signals that wake the tasks, and the guard whose last drop
//! closes the session.
//!
//! Every call into the core goes through [`Shared::with`], which afterwards turns the
//! core's [`Event`]s into wake-ups while still holding the lock, so no event is lost
//! between a task's check and its wait.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use nodelink_driver::Holding;

use crate::core::{Event, SessionCore};
use crate::error::Error;

/// The wakers of one stream's blocked reader and writer.
#[derive(Default)]
struct Wakers {
    read: Option<Waker>,
    write: Option<Waker>,
}

pub(crate) struct Locked {
    pub(crate) core: SessionCore,
    wakers: HashMap<u32, Wakers>,
    /// Tasks waiting for a peer-opened stream (one entry per task).
    acceptors: Vec<Waker>,
}

pub(crate) struct Shared {
    locked: Mutex<Locked>,
    /// Wakes the writer task: there is something to send.
    pub(crate) writer: Notify,
    /// Wakes the reader task: reading may resume.
    pub(crate) resume: Notify,
    /// Wakes the timer task: the core's next deadline may have moved earlier.
    pub(crate) rearm: Notify,
    /// Cancelled when the session fails or closes.
    pub(crate) dead: CancellationToken,
    /// Cancelled when every task released the connection.
    pub(crate) finished: CancellationToken,
    /// This session's part of a server's memory budget, if it shares one.
    pub(crate) holding: Option<Holding>,
}

/// Which of a stream's wakers an operation waits with.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Read,
    Write,
}

impl Shared {
    pub(crate) fn new(core: SessionCore, holding: Option<Holding>) -> Shared {
        Shared {
            locked: Mutex::new(Locked {
                core,
                wakers: HashMap::new(),
                acceptors: Vec::new(),
            }),
            writer: Notify::new(),
            resume: Notify::new(),
            rearm: Notify::new(),
            dead: CancellationToken::new(),
            finished: CancellationToken::new(),
            holding,
        }
    }

    /// Locks the state. A poisoned lock means a panic elsewhere already broke an invariant;
    /// carrying on with the data is still memory-safe, so the poison is ignored.
    fn lock(&self) -> MutexGuard<'_, Locked> {
        nodelink_driver::lock(&self.locked)
    }

    /// Runs `op` on the core, then delivers the events it caused.
    pub(crate) fn with<R>(&self, op: impl FnOnce(&mut SessionCore) -> R) -> R {
        let mut locked = self.lock();
        let result = op(&mut locked.core);
        self.dispatch(&mut locked);
        result
    }

    /// Runs a stream operation with the current time; if it must wait, `cx`'s waker is
    /// kept until the core says the stream can make progress on that `side`.
    pub(crate) fn poll_stream<T>(
        &self,
        sid: u32,
        side: Side,
        cx: &mut Context<'_>,
        op: impl FnOnce(&mut SessionCore, Instant) -> Poll<T>,
    ) -> Poll<T> {
        let mut locked = self.lock();
        let polled = op(&mut locked.core, Instant::now());
        if polled.is_pending() {
            let wakers = locked.wakers.entry(sid).or_default();
            let slot = match side {
                Side::Read => &mut wakers.read,
                Side::Write => &mut wakers.write,
            };
            match slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        self.dispatch(&mut locked);
        polled
    }

    /// The next peer-opened stream's id; `Pending` keeps `cx`'s waker until one arrives or
    /// the session dies.
    pub(crate) fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<u32, Error>> {
        let mut locked = self.lock();
        let accepted = locked.core.accept();
        let polled = match accepted {
            Ok(Some(sid)) => Poll::Ready(Ok(sid)),
            Err(e) => Poll::Ready(Err(e)),
            Ok(None) => {
                if !locked.acceptors.iter().any(|w| w.will_wake(cx.waker())) {
                    locked.acceptors.push(cx.waker().clone());
                }
                Poll::Pending
            }
        };
        self.dispatch(&mut locked);
        polled
    }

    /// The stream's handle is gone: its wakers go too.
    pub(crate) fn drop_stream(&self, sid: u32) {
        let mut locked = self.lock();
        locked.wakers.remove(&sid);
        locked.core.drop_stream(sid);
        self.dispatch(&mut locked);
    }

    fn dispatch(&self, locked: &mut Locked) {
        if let Some(holding) = &self.holding {
            if holding.set(locked.core.held()) {
                // Room was made (read, sent or dropped): a reader the budget held back
                // looks again.
                self.resume.notify_one();
            }
        }
        while let Some(event) = locked.core.poll_event() {
            match event {
                // Marked dead before the lock is released: a task woken by the failure (a
                // stream reader ending its TCP connection, say) must already see
                // `is_closed`, or a caller it races with could pick this session again.
                Event::Closed => self.dead.cancel(),
                Event::Transmit => self.writer.notify_one(),
                Event::Incoming => locked.acceptors.drain(..).for_each(Waker::wake),
                Event::Resume => self.resume.notify_one(),
                Event::Rearm => self.rearm.notify_one(),
                Event::Readable(sid) => {
                    if let Some(w) = locked.wakers.get_mut(&sid).and_then(|w| w.read.take()) {
                        w.wake();
                    }
                }
                Event::Writable(sid) => {
                    if let Some(w) = locked.wakers.get_mut(&sid).and_then(|w| w.write.take()) {
                        w.wake();
                    }
                }
            }
        }
    }

    pub(crate) fn kill(&self, err: Error) {
        self.with(|core| core.die(err));
    }
}

/// Keeps the session alive while any [`Session`](crate::Session) clone or
/// [`Stream`](crate::Stream) exists; the last one to go closes it.
pub(crate) struct LifeGuard {
    pub(crate) shared: std::sync::Arc<Shared>,
}

impl Drop for LifeGuard {
    /// Nobody can use the session any more: it closes gracefully in the background.
    fn drop(&mut self) {
        self.shared.with(|core| core.close(Instant::now()));
    }
}
