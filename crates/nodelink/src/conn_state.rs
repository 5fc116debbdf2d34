//! The state one connection shares between the reader task and the application's tasks.
//!
//! The reader pushes received packets; the application pops them. The receive side is
//! bounded by the connection's budget: each packet costs its payload length plus
//! [`PACKET_COST`], so even a flood of empty packets is bounded. The send side tracks the
//! bytes the peer has not yet credited back, when the peer speaks the flow-control
//! extension.
//!
//! Slots are recycled through the table's pool for lightweight exchanges, so nothing here
//! is allocated per request once the link is warm.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::frame::Packet;
use crate::sync::lock_std;
use crate::table::Slot;
use crate::waiters::{Waiters, Wake};

/// Per-packet overhead charged against budgets and credit, on top of the payload length.
pub(crate) const PACKET_COST: usize = 64;

/// A small payload that has to wait behind others is copied out of the read buffer, so
/// it does not keep a whole read-buffer block alive (the budget counts payload bytes).
const COPY_WAITING_BELOW: usize = 1024;

/// What a packet costs against a budget.
pub(crate) fn cost_of(payload_len: usize) -> usize {
    payload_len + PACKET_COST
}

/// Why the receive side of a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RxClosed {
    /// `close` or `close_recv` by the application.
    Local,
    /// The application fell behind a peer that does not do flow control.
    Overflow,
    /// The link went away; the link's end reason says why.
    Link,
}

/// How the receive budget applies to the next packet.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Budget {
    /// Strict NEO peer: overflowing the budget closes the receive side.
    Strict(usize),
    /// Peer honours credit: overflowing it is a protocol violation (same outcome).
    Credit(usize),
    /// Peer speaks the extension but has not yet learned our window: accept.
    Lenient,
}

/// Outcome of delivering a packet to a connection.
pub(crate) enum Push {
    Queued(Wake),
    /// Receive side closed: answer "connection closed".
    Closed,
    /// Over budget: the receive side is now closed; `dropped` packets were discarded.
    Overflow {
        dropped: Dropped,
        wake: Wake,
    },
}

/// What a close discarded from the receive queue.
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct Dropped {
    /// Discarded packets that were requests (not answers): worth a "connection closed".
    pub(crate) requests: usize,
    /// Total cost discarded, to give back to the link-wide counter.
    pub(crate) cost: usize,
    /// Cost consumed but not yet credited back; with `cost`, what the peer is owed so its
    /// sender never waits on a connection that will not read again.
    pub(crate) uncredited: usize,
}

/// A FIFO of packets that keeps its first element inline, so a connection that holds at
/// most one unread packet (the common case, and every idle connection) owns no heap buffer.
#[derive(Default)]
struct PacketQueue {
    head: Option<Packet>,
    /// Everything after `head`; invariant: empty or absent when `head` is `None`. Boxed
    /// so an idle connection pays one word for it.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Packet>>>,
}

impl PacketQueue {
    fn push_back(&mut self, packet: Packet) {
        if self.head.is_none() {
            self.head = Some(packet);
        } else {
            self.rest
                .get_or_insert_with(Default::default)
                .push_back(packet);
        }
    }

    fn pop_front(&mut self) -> Option<Packet> {
        let head = self.head.take()?;
        self.head = self.rest.as_mut().and_then(|rest| rest.pop_front());
        Some(head)
    }

    /// Empties the queue, keeping the allocation of a busy connection for reuse.
    fn drain(&mut self) -> impl Iterator<Item = Packet> + '_ {
        let head = self.head.take();
        let rest = self.rest.as_mut().map(|rest| rest.drain(..));
        head.into_iter().chain(rest.into_iter().flatten())
    }
}

#[derive(Default)]
struct Rx {
    queue: PacketQueue,
    /// Cost of the packets in `queue`.
    queued: usize,
    /// Cost consumed by the application and not yet credited back to the peer.
    consumed: usize,
    closed: Option<RxClosed>,
    /// Whether this connection already reported the link's I/O error once.
    link_error_reported: bool,
    /// A receiver was woken for queued data and has not taken it yet; counted once in the
    /// link's `ready` counter (see [`ConnRef::push`]).
    woken: bool,
    waiters: Waiters,
}

#[derive(Default)]
struct Tx {
    closed: bool,
    /// Cost sent and not yet credited by the peer.
    outstanding: u64,
    waiters: Waiters,
}

pub(crate) struct ConnState {
    id: AtomicU32,
    rx: Mutex<Rx>,
    tx: Mutex<Tx>,
}

/// A shared handle to a connection's state.
#[derive(Clone)]
pub(crate) struct ConnRef(pub(crate) Arc<ConnState>);

/// Result of popping a packet: the packet plus, when due, the credit to return to the peer.
pub(crate) struct Popped {
    pub(crate) packet: Packet,
    pub(crate) cost: usize,
    pub(crate) credit: Option<u32>,
}

/// Why a receive found nothing to return.
pub(crate) struct RxEnd {
    pub(crate) reason: RxClosed,
    /// True the first time a connection reports a link failure (the I/O error is shown
    /// once, later calls say "link is down").
    pub(crate) first_link_report: bool,
}

impl Slot for ConnRef {
    fn fresh(id: u32) -> Self {
        ConnRef(Arc::new(ConnState {
            id: AtomicU32::new(id),
            rx: Mutex::new(Rx::default()),
            tx: Mutex::new(Tx::default()),
        }))
    }

    fn recycle(&self, id: u32) {
        self.0.id.store(id, Ordering::Relaxed);
        let mut rx = lock_std(&self.0.rx);
        rx.queue.drain().for_each(drop);
        rx.queued = 0;
        rx.consumed = 0;
        rx.closed = None;
        rx.link_error_reported = false;
        drop(rx);
        let mut tx = lock_std(&self.0.tx);
        tx.closed = false;
        tx.outstanding = 0;
    }

    fn is_unique(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn id(&self) -> u32 {
        self.0.id.load(Ordering::Relaxed)
    }

    fn has_queued(&self) -> bool {
        lock_std(&self.0.rx).queue.head.is_some()
    }
}

impl ConnRef {
    /// Queues a packet from the reader. `ready` counts connections whose receiver was woken
    /// for data it has not taken yet: a sign that this side is about to send more, which
    /// the writer uses to batch.
    pub(crate) fn push(&self, packet: Packet, budget: Budget, ready: &AtomicUsize) -> Push {
        let cost = cost_of(packet.payload.len());
        let mut rx = lock_std(&self.0.rx);
        if rx.closed.is_some() {
            return Push::Closed;
        }
        let over = match budget {
            Budget::Strict(limit) => rx.queued > 0 && rx.queued + cost > limit,
            Budget::Credit(limit) => {
                let held = rx.queued + rx.consumed;
                held > 0 && held + cost > limit
            }
            Budget::Lenient => false,
        };
        if over {
            // `dropped` covers the queued packets only: the caller accounts for this one.
            clear_woken(&mut rx, ready);
            let mut dropped = drain(&mut rx);
            dropped.requests += usize::from(!packet.is_answer());
            rx.closed = Some(RxClosed::Overflow);
            return Push::Overflow {
                dropped,
                wake: rx.waiters.take(),
            };
        }
        let mut packet = packet;
        if rx.queue.head.is_some() && packet.payload.len() < COPY_WAITING_BELOW {
            packet.payload = bytes::Bytes::copy_from_slice(&packet.payload);
        }
        rx.queued += cost;
        rx.queue.push_back(packet);
        if !rx.woken && !rx.waiters.is_empty() {
            rx.woken = true;
            ready.fetch_add(1, Ordering::Relaxed);
        }
        Push::Queued(rx.waiters.take())
    }

    /// Takes the next packet, or registers the task to be woken.
    ///
    /// `credit_every` is `Some(n)` when the peer takes credit: once `n` bytes of cost were
    /// consumed, they are returned in [`Popped::credit`] for the caller to send.
    pub(crate) fn poll_pop(
        &self,
        cx: &mut Context<'_>,
        credit_every: Option<usize>,
        ready: &AtomicUsize,
    ) -> Poll<Result<Popped, RxEnd>> {
        let mut rx = lock_std(&self.0.rx);
        if let Some(packet) = rx.queue.pop_front() {
            clear_woken(&mut rx, ready);
            let cost = cost_of(packet.payload.len());
            rx.queued -= cost;
            rx.consumed += cost;
            let credit = match credit_every {
                Some(n) if rx.consumed >= n => {
                    let c = rx.consumed.min(u32::MAX as usize);
                    rx.consumed -= c;
                    Some(c as u32)
                }
                _ => None,
            };
            return Poll::Ready(Ok(Popped {
                packet,
                cost,
                credit,
            }));
        }
        if let Some(reason) = rx.closed {
            let first_link_report = reason == RxClosed::Link && !rx.link_error_reported;
            if first_link_report {
                rx.link_error_reported = true;
            }
            return Poll::Ready(Err(RxEnd {
                reason,
                first_link_report,
            }));
        }
        rx.waiters.register(cx.waker());
        Poll::Pending
    }

    /// Takes the packet that opened an incoming connection (recv1), if it is queued.
    pub(crate) fn pop_now(&self, ready: &AtomicUsize) -> Option<(Packet, usize)> {
        let mut rx = lock_std(&self.0.rx);
        clear_woken(&mut rx, ready);
        let packet = rx.queue.pop_front()?;
        let cost = cost_of(packet.payload.len());
        rx.queued -= cost;
        Some((packet, cost))
    }

    /// Takes the cost consumed and not yet credited back (when both sides agree on the
    /// extension after data already flowed).
    pub(crate) fn take_consumed(&self) -> usize {
        std::mem::take(&mut lock_std(&self.0.rx).consumed)
    }

    /// Closes the receive side (idempotent: the first reason wins). Queued packets are
    /// discarded and reported so the caller can answer "connection closed" and release
    /// their cost.
    pub(crate) fn close_rx(&self, reason: RxClosed, ready: &AtomicUsize) -> (Dropped, Wake) {
        let mut rx = lock_std(&self.0.rx);
        clear_woken(&mut rx, ready);
        if rx.closed.is_some() {
            return (Dropped::default(), Wake::default());
        }
        rx.closed = Some(reason);
        let dropped = drain(&mut rx);
        (dropped, rx.waiters.take())
    }

    /// Reserves `cost` of send credit. `window` is `None` when the peer does not take
    /// credit (no limit). Registers the task when it must wait for credit.
    pub(crate) fn poll_reserve(
        &self,
        cx: &mut Context<'_>,
        cost: usize,
        window: Option<u64>,
    ) -> Poll<Result<(), ()>> {
        let mut tx = lock_std(&self.0.tx);
        if tx.closed {
            return Poll::Ready(Err(()));
        }
        let cost = cost as u64;
        let fits = match window {
            None => true,
            Some(w) => tx.outstanding == 0 || tx.outstanding + cost <= w,
        };
        if fits {
            tx.outstanding += cost;
            Poll::Ready(Ok(()))
        } else {
            tx.waiters.register(cx.waker());
            Poll::Pending
        }
    }

    /// Credit returned by the peer.
    pub(crate) fn add_credit(&self, bytes: u32) -> Wake {
        let mut tx = lock_std(&self.0.tx);
        tx.outstanding = tx.outstanding.saturating_sub(u64::from(bytes));
        tx.waiters.take()
    }

    /// Wakes senders waiting for credit (the peer's flow-control mode changed).
    pub(crate) fn wake_senders(&self) -> Wake {
        lock_std(&self.0.tx).waiters.take()
    }

    /// Closes the send side; blocked senders wake up and fail.
    pub(crate) fn close_tx(&self) -> Wake {
        let mut tx = lock_std(&self.0.tx);
        tx.closed = true;
        tx.waiters.take()
    }
}

fn clear_woken(rx: &mut Rx, ready: &AtomicUsize) {
    if std::mem::take(&mut rx.woken) {
        ready.fetch_sub(1, Ordering::Relaxed);
    }
}

fn drain(rx: &mut Rx) -> Dropped {
    let mut dropped = Dropped {
        uncredited: std::mem::take(&mut rx.consumed),
        ..Dropped::default()
    };
    for p in rx.queue.drain() {
        dropped.cost += cost_of(p.payload.len());
        dropped.requests += usize::from(!p.is_answer());
    }
    rx.queued = 0;
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::task::Waker;

    fn pkt(len: usize) -> Packet {
        Packet {
            conn_id: 1,
            code: 1,
            payload: Bytes::from(vec![0u8; len]),
        }
    }

    static READY: AtomicUsize = AtomicUsize::new(0);

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn strict_budget_closes_on_overflow_but_admits_one_big_packet() {
        let c = ConnRef::fresh(1);
        let budget = Budget::Strict(1000);
        assert!(matches!(c.push(pkt(5000), budget, &READY), Push::Queued(_)));
        match c.push(pkt(1), budget, &READY) {
            Push::Overflow { dropped, .. } => {
                assert_eq!(dropped.requests, 2);
                assert_eq!(dropped.cost, cost_of(5000)); // the refused packet is the caller's
            }
            _ => panic!("expected overflow"),
        }
        assert!(matches!(c.push(pkt(1), budget, &READY), Push::Closed));
        match c.poll_pop(&mut cx(), None, &READY) {
            Poll::Ready(Err(e)) => assert_eq!(e.reason, RxClosed::Overflow),
            _ => panic!("expected overflow error"),
        }
    }

    #[test]
    fn credit_is_returned_after_consumption() {
        let c = ConnRef::fresh(1);
        for _ in 0..4 {
            assert!(matches!(
                c.push(pkt(100), Budget::Credit(1000), &READY),
                Push::Queued(_)
            ));
        }
        let mut credits = 0;
        for _ in 0..4 {
            let Poll::Ready(Ok(p)) = c.poll_pop(&mut cx(), Some(300), &READY) else {
                panic!()
            };
            credits += p.credit.unwrap_or(0);
        }
        assert_eq!(credits as usize, 2 * cost_of(100) + 2 * cost_of(100));
    }

    #[test]
    fn sender_waits_for_credit() {
        let c = ConnRef::fresh(1);
        let w = Some(300);
        assert!(c.poll_reserve(&mut cx(), 200, w).is_ready());
        assert!(c.poll_reserve(&mut cx(), 200, w).is_pending());
        c.add_credit(200).wake();
        assert!(c.poll_reserve(&mut cx(), 200, w).is_ready());
        c.close_tx().wake();
        assert!(matches!(
            c.poll_reserve(&mut cx(), 1, w),
            Poll::Ready(Err(()))
        ));
    }

    #[test]
    fn packet_queue_is_fifo_and_inline_for_one_packet() {
        let mut q = PacketQueue::default();
        q.push_back(pkt(1));
        assert!(q.rest.is_none());
        for len in 2..6 {
            q.push_back(pkt(len));
        }
        let lens: Vec<usize> = std::iter::from_fn(|| q.pop_front())
            .map(|p| p.payload.len())
            .collect();
        assert_eq!(lens, vec![1, 2, 3, 4, 5]);
        q.push_back(pkt(7));
        q.push_back(pkt(8));
        assert_eq!(q.drain().count(), 2);
        assert!(q.pop_front().is_none());
    }

    #[test]
    fn idle_connection_state_stays_small() {
        // An idle connection's whole state is one allocation of this size (plus the
        // table entry); the idle-connection benchmark budget is 256 bytes per end.
        assert!(
            std::mem::size_of::<ConnState>() <= 192,
            "{}",
            std::mem::size_of::<ConnState>()
        );
    }

    #[test]
    fn link_error_is_reported_once() {
        let c = ConnRef::fresh(1);
        let _ = c.close_rx(RxClosed::Link, &READY);
        let Poll::Ready(Err(first)) = c.poll_pop(&mut cx(), None, &READY) else {
            panic!()
        };
        let Poll::Ready(Err(second)) = c.poll_pop(&mut cx(), None, &READY) else {
            panic!()
        };
        assert!(first.first_link_report);
        assert!(!second.first_link_report);
    }
}
