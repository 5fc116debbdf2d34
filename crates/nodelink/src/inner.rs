//! The state a link's tasks share, and the one door to the protocol core.
//!
//! Tasks and state (see also `docs/ARCHITECTURE.md`):
//! * [`LinkInner::shared`] holds the I/O-free [`LinkCore`] plus the wakers of parked tasks
//!   (per connection in the core's slots, acceptors and the reader here), behind one
//!   mutex. Every protocol decision is taken there; [`LinkInner::with_core`] runs one
//!   operation, then wakes whoever the core names and queues the packets it produced,
//!   after the lock is released;
//! * the send queue ([`TxQueue`], its own mutex) is only bytes: the application's framed
//!   messages and the core's transmits. Lock order: the send queue, then the core; never
//!   the other way round (the core's output is dispatched after its lock is dropped);
//! * the reader task owns the read half and the read buffer, the writer task the final
//!   flush; both are thin loops around the core and the queue (`reader.rs`, `writer.rs`).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::task::Waker;

use smallvec::SmallVec;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control;
use crate::core::{LinkCore, OpenError, Reply, RxClosed, Transmit, Wakeup};
use crate::error::{Cause, Error, Place, CONN_CLOSED_TEXT, CONN_REFUSED_TEXT};
use crate::message::{ErrorCode, ErrorMessage, Message};
use crate::role::Role;
use crate::stats::{Counters, LinkStats};
use crate::txqueue::{SendFail, TxQueue};
use crate::waiters::{Waiters, Wake};

/// How the link ended; the first reason wins.
#[derive(Clone, Debug)]
pub(crate) enum LinkEnd {
    Closed,
    Failed(Arc<io::Error>),
}

/// Tasks parked on one connection (the driver's data in the core's slot).
#[derive(Default, Debug)]
pub(crate) struct Parked {
    pub(crate) rx: Waiters,
    pub(crate) tx: Waiters,
}

impl crate::core::Ext for Parked {
    fn idle(&self) -> bool {
        self.rx.is_empty() && self.tx.is_empty()
    }
}

/// What the core's mutex guards.
pub(crate) struct Shared {
    pub(crate) core: LinkCore<Parked>,
    pub(crate) acceptors: Waiters,
    /// The reader, parked while the core holds a packet back.
    pub(crate) reader: Option<Waker>,
}

/// What one core operation left to do once the lock is released. Nearly always a waker
/// or two and no transmit, so both lists start inline: most operations allocate nothing.
#[derive(Default)]
pub(crate) struct Output {
    wakes: SmallVec<[Wake; 2]>,
    transmits: SmallVec<[Transmit; 1]>,
}

impl Shared {
    /// Turns the core's wakeups into wakers to call and moves its transmits out.
    fn collect(&mut self, out: &mut Output) {
        if self.core.has_transmits() {
            self.core.take_transmits(&mut out.transmits);
        }
        let mut list = self.core.take_wakeups();
        for w in list.drain(..) {
            match w {
                Wakeup::Readable(key) => {
                    if let Some(p) = self.core.ext(key) {
                        push_wake(&mut out.wakes, &mut p.rx);
                    }
                }
                Wakeup::Writable(key) => {
                    if let Some(p) = self.core.ext(key) {
                        push_wake(&mut out.wakes, &mut p.tx);
                    }
                }
                Wakeup::AllWritable => {
                    for p in self.core.exts() {
                        push_wake(&mut out.wakes, &mut p.tx);
                    }
                }
                Wakeup::Released(mut p) => {
                    push_wake(&mut out.wakes, &mut p.rx);
                    push_wake(&mut out.wakes, &mut p.tx);
                }
                Wakeup::Acceptors => push_wake(&mut out.wakes, &mut self.acceptors),
                Wakeup::Reader => {
                    if let Some(w) = self.reader.take() {
                        out.wakes.push(Wake::one(w));
                    }
                }
            }
        }
        self.core.recycle_wakeups(list);
    }
}

#[inline]
fn push_wake(wakes: &mut SmallVec<[Wake; 2]>, waiters: &mut Waiters) {
    if !waiters.is_empty() {
        wakes.push(waiters.take());
    }
}

pub(crate) struct LinkInner {
    pub(crate) role: Role,
    pub(crate) config: Config,
    /// `"<local> - <remote>"`, the prefix of every error and log line.
    pub(crate) name: Arc<str>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) remote_addr: Option<SocketAddr>,
    /// The core's and the send queue's mutexes are `parking_lot`'s, not the standard
    /// library's (whose poisoning `nodelink_driver::lock` ignores elsewhere): they are
    /// taken about five times per lightweight request, and theirs have no poison flag to
    /// check and a shorter uncontended path (`docs/PERFORMANCE.md`,
    /// "The lightweight request path, fourth round").
    pub(crate) shared: Mutex<Shared>,
    pub(crate) tx: Mutex<TxQueue>,
    pub(crate) writer_kick: Notify,
    /// The writer task was kicked for queued data and has not looked at the queue since:
    /// further kicks would only make it look again (`LinkInner::kick_writer`). An atomic,
    /// not a field of the send queue: a kick takes no lock.
    pub(crate) kicked: AtomicBool,
    /// Counters of the send side (the core counts the rest).
    pub(crate) stats: Counters,
    /// The core's `ready` hint, readable without its lock (batching of requests).
    pub(crate) ready: AtomicUsize,
    /// The accept backlog's length, readable without the lock (batching of answers).
    pub(crate) backlog_len: AtomicUsize,
    pub(crate) end: OnceLock<LinkEnd>,
    /// The application closed the link (even if it had failed before): later operations
    /// report "link is closed", as NEO does.
    pub(crate) closed_by_user: AtomicBool,
    pub(crate) stop_reading: CancellationToken,
    pub(crate) stop_writing: CancellationToken,
    /// The link was closed on purpose: what the writer still does is bounded by the
    /// linger.
    pub(crate) closing: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// This link's place in its listener's memory budget (accepted links only): the send
    /// queue reports what it holds and is capped by it.
    pub(crate) budget: Option<Arc<crate::budget::Member>>,
}

impl Drop for LinkInner {
    fn drop(&mut self) {
        if let Some(member) = &self.budget {
            member.leave(self.shared.lock().core.memory_reported());
        }
    }
}

impl LinkInner {
    /// Runs one operation on the core, then wakes the tasks it names and queues the packets
    /// it produced, outside the lock.
    pub(crate) fn with_core<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        let mut s = self.shared.lock();
        let r = f(&mut s);
        self.publish_hints(&mut s);
        // Most operations (a receive, a send's bookkeeping) wake nobody and send nothing.
        if !s.core.has_output() {
            return r;
        }
        let mut out = Output::default();
        s.collect(&mut out);
        drop(s);
        self.dispatch(&mut out);
        r
    }

    /// [`Self::with_core`] that leaves the output in `out` (the reader reuses its buffers).
    pub(crate) fn with_core_into<R>(
        &self,
        out: &mut Output,
        f: impl FnOnce(&mut Shared) -> R,
    ) -> R {
        let mut s = self.shared.lock();
        let r = f(&mut s);
        if s.core.has_output() {
            s.collect(out);
        }
        self.publish_hints(&mut s);
        r
    }

    /// The core's hints that other tasks read without its lock.
    fn publish_hints(&self, s: &mut Shared) {
        self.ready.store(s.core.ready(), Ordering::Relaxed);
        self.backlog_len
            .store(s.core.backlog_len(), Ordering::Relaxed);
        s.core.report_memory();
    }

    /// Wakes and sends what a core operation produced.
    pub(crate) fn dispatch(&self, out: &mut Output) {
        for w in out.wakes.drain(..) {
            w.wake();
        }
        if out.transmits.is_empty() {
            return;
        }
        for t in out.transmits.drain(..) {
            match t {
                Transmit::Closed(id) => self.reply_error(id, CONN_CLOSED_TEXT),
                Transmit::Refused(id) => self.reply_error(id, CONN_REFUSED_TEXT),
                Transmit::Negotiation(Reply::Hello { window }) => {
                    let peer_control_id = control::control_id_of(self.role.peer());
                    self.enqueue_nowait(peer_control_id, control::CONTROL_CODE, |b| {
                        control::encode_hello(window, b)
                    });
                }
                // NEO/go's answer to an unknown id of its parity, on the id the offer came on.
                Transmit::Negotiation(Reply::Decline) => {
                    self.reply_error(control::control_id_of(self.role), CONN_CLOSED_TEXT)
                }
                Transmit::Credit { id, bytes } => self.owe_credit(id, bytes, true),
                Transmit::Ping => {
                    let peer_control_id = control::control_id_of(self.role.peer());
                    self.enqueue_nowait(
                        peer_control_id,
                        control::CONTROL_CODE,
                        control::encode_ping,
                    );
                }
                Transmit::Pong => {
                    let peer_control_id = control::control_id_of(self.role.peer());
                    self.enqueue_nowait(
                        peer_control_id,
                        control::CONTROL_CODE,
                        control::encode_pong,
                    );
                }
            }
        }
    }

    fn reply_error(&self, id: u32, text: &str) {
        self.enqueue_nowait(id, ErrorMessage::CODE, |b| {
            ErrorMessage::encode_parts(ErrorCode::PROTOCOL_ERROR, text, b)
        });
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> LinkStats {
        let core = self.shared.lock().core.stats();
        let tx_queued = self.tx.lock().held();
        self.stats.snapshot(&core, tx_queued)
    }

    /// The application closes the link.
    pub(crate) fn close(&self) {
        self.closed_by_user.store(true, Ordering::Release);
        if self.end.get().is_none() && self.with_core(|s| s.core.says_bye()) {
            // The peer agreed on the extension: tell it this is a close, not a loss
            // (`control.rs`, BYE). Queued last, flushed with the rest within the linger.
            let peer_control_id = control::control_id_of(self.role.peer());
            self.enqueue_nowait_capped(
                peer_control_id,
                control::CONTROL_CODE,
                control::encode_bye,
                false,
            );
        }
        self.shutdown(LinkEnd::Closed);
    }

    /// Ends the link (first reason wins): wakes every waiter, fails every connection, stops
    /// the reader; the writer flushes what is queued when the link was closed on purpose.
    pub(crate) fn shutdown(&self, end: LinkEnd) {
        if self.end.set(end.clone()).is_err() {
            return;
        }
        match &end {
            LinkEnd::Closed => tracing::debug!(link = %self.name, "link closed"),
            LinkEnd::Failed(e) => {
                tracing::info!(link = %self.name, error = &**e as &dyn std::error::Error, "link down")
            }
        }
        self.stop_reading.cancel();
        let wake = self.tx.lock().mark_down();
        wake.wake();
        match end {
            LinkEnd::Failed(_) => self.stop_writing.cancel(),
            LinkEnd::Closed => {
                self.closing.cancel();
                self.writer_kick.notify_one();
            }
        }
        self.with_core(|s| s.core.shutdown());
    }

    /// The error kind for operations on an ended link; `first` selects the one-time report
    /// of the underlying I/O error.
    pub(crate) fn end_kind(&self, first: bool) -> Cause {
        if self.closed_by_user.load(Ordering::Acquire) {
            return Cause::LinkClosed;
        }
        match self.end.get() {
            None | Some(LinkEnd::Closed) => Cause::LinkClosed,
            Some(LinkEnd::Failed(e)) if first => Cause::Io(e.clone()),
            Some(LinkEnd::Failed(e)) => Cause::LinkDown(e.clone()),
        }
    }

    /// Runs `exchange`, failing with [`Cause::Deadline`] if `deadline` passes first (the
    /// exchange is dropped, which abandons its request).
    pub(crate) async fn bounded<T>(
        &self,
        deadline: Option<std::time::Duration>,
        id: u32,
        op: &'static str,
        exchange: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match deadline {
            None => exchange.await,
            Some(d) => match tokio::time::timeout(d, exchange).await {
                Ok(r) => r,
                Err(_) => Err(self.conn_error(Cause::Deadline(d), id, op)),
            },
        }
    }

    pub(crate) fn link_error(&self, kind: Cause, op: &'static str) -> Error {
        Error::new(kind, Place::link(&self.name), op)
    }

    pub(crate) fn conn_error(&self, kind: Cause, id: u32, op: &'static str) -> Error {
        Error::new(kind, Place::conn(&self.name, id), op)
    }

    pub(crate) fn open_error(&self, e: OpenError, op: &'static str) -> Error {
        let kind = match e {
            OpenError::Down => self.end_kind(false),
            OpenError::TooMany => Cause::TooManyConnections,
        };
        self.link_error(kind, op)
    }

    pub(crate) fn send_error(&self, f: SendFail, id: Option<u32>, op: &'static str) -> Error {
        let kind = match f {
            SendFail::Open(e) => return self.open_error(e, op),
            SendFail::Link => self.end_kind(false),
            SendFail::Conn => Cause::ConnectionClosed,
            SendFail::Io(e) => Cause::Io(e),
            SendFail::TooBig(len) => Cause::PacketTooBig {
                len,
                limit: crate::frame::MAX_PAYLOAD_LEN,
            },
        };
        match id {
            Some(id) => self.conn_error(kind, id, op),
            None => self.link_error(kind, op),
        }
    }

    pub(crate) fn recv_end_error(
        &self,
        reason: RxClosed,
        first_link_report: bool,
        id: u32,
        op: &'static str,
    ) -> Error {
        let kind = match reason {
            RxClosed::Local => Cause::ConnectionClosed,
            RxClosed::Overflow => Cause::RecvBudgetExceeded,
            RxClosed::Link => self.end_kind(first_link_report),
        };
        self.conn_error(kind, id, op)
    }
}
