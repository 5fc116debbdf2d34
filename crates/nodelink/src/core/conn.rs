//! One connection's protocol state: its receive queue and budget, the credit it owes and is
//! owed. Plain data, no locks, no wakers: the [`LinkCore`](super::LinkCore) owns it.
//!
//! Each packet costs its payload length plus [`PACKET_COST`] against budgets and credit, so
//! even a flood of empty packets is bounded (`docs/protocols/link.md`, "Receive budgets").

use std::collections::VecDeque;

use crate::frame::Packet;

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
    /// The link went away; the driver's record of how it ended says why.
    Link,
}

/// How the receive budget applies to the next packet.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Budget {
    /// Strict NEO peer: overflowing the budget closes the receive side.
    Strict(usize),
    /// Peer honours credit: overflowing it is a protocol violation (same outcome).
    Credit(usize),
    /// The first packet of a new connection is always admitted.
    Lenient,
}

/// Outcome of delivering a packet to a connection.
#[derive(Debug)]
pub(crate) enum Push {
    /// Queued; `wake` says a receiver waits for it.
    Queued { wake: bool },
    /// Receive side closed: answer "connection closed".
    Closed,
    /// Over budget: the receive side is now closed; `dropped` packets were discarded.
    Overflow(Dropped),
}

/// What a close discarded from the receive queue.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
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
pub(crate) struct PacketQueue {
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

    fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Empties the queue, keeping the allocation of a busy connection for reuse.
    fn drain(&mut self) -> impl Iterator<Item = Packet> + '_ {
        let head = self.head.take();
        let rest = self.rest.as_mut().map(|rest| rest.drain(..));
        head.into_iter().chain(rest.into_iter().flatten())
    }
}

/// The state of one connection.
#[derive(Default)]
pub(crate) struct ConnState {
    /// The id on the wire.
    pub(crate) id: u32,
    /// Opened by the peer: closing it leaves a "closed" record (NEO/go rules).
    pub(crate) incoming: bool,
    /// Listed in the id map (NEO/py requests of the peer's never are).
    pub(crate) registered: bool,
    queue: PacketQueue,
    /// Cost of the packets in `queue`.
    queued: usize,
    /// Cost consumed by the application and not yet credited back to the peer.
    consumed: usize,
    rx_closed: Option<RxClosed>,
    /// Whether this connection already reported the link's failure once.
    link_error_reported: bool,
    /// A receive found the queue empty: a receiver waits (the driver parked it).
    receiver_waiting: bool,
    /// That receiver was told about data it has not taken yet (counted in the core's
    /// `ready`, a hint that this side is about to send).
    woken: bool,
    tx_closed: bool,
    /// Cost sent and not yet credited by the peer.
    outstanding: u64,
}

/// Result of popping a packet.
pub(crate) enum Pop {
    /// The next packet, its cost, and the credit now due to the peer, if any.
    Packet {
        packet: Packet,
        cost: usize,
        credit: Option<u32>,
    },
    /// Nothing queued: the caller parks its receiver.
    Empty,
    /// The receive side is closed; `first_link_report` is true the first time a
    /// connection reports a link failure (the cause is shown once).
    Ended {
        reason: RxClosed,
        first_link_report: bool,
    },
}

impl ConnState {
    /// Makes the state ready for connection `id`, keeping the queue's allocation.
    pub(crate) fn reset(&mut self, id: u32, incoming: bool, registered: bool) {
        // Field by field, in place: every field is named, so a new one cannot be forgotten
        // here, and nothing is built and dropped (this runs for every lightweight request).
        let ConnState {
            id: old_id,
            incoming: old_incoming,
            registered: old_registered,
            queue,
            queued,
            consumed,
            rx_closed,
            link_error_reported,
            receiver_waiting,
            woken,
            tx_closed,
            outstanding,
        } = self;
        if !queue.is_empty() {
            queue.drain().for_each(drop);
        }
        *old_id = id;
        *old_incoming = incoming;
        *old_registered = registered;
        *queued = 0;
        *consumed = 0;
        *rx_closed = None;
        *link_error_reported = false;
        *receiver_waiting = false;
        *woken = false;
        *tx_closed = false;
        *outstanding = 0;
    }

    /// The code of the first queued packet (tests).
    #[cfg(test)]
    pub(crate) fn first_code(&self) -> Option<u16> {
        self.queue.head.as_ref().map(|p| p.code)
    }

    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Queues a received packet, enforcing the budget. `ready` counts receivers told about
    /// data they have not taken.
    pub(crate) fn push(&mut self, packet: Packet, budget: Budget, ready: &mut usize) -> Push {
        let cost = cost_of(packet.payload.len());
        if self.rx_closed.is_some() {
            return Push::Closed;
        }
        let mut packet = packet;
        // With nothing held (an exchange's answer, a request's first packet), every budget
        // admits the packet and nothing waits before it.
        if self.queued + self.consumed > 0 {
            let over = match budget {
                Budget::Strict(limit) => self.queued > 0 && self.queued + cost > limit,
                Budget::Credit(limit) => self.queued + self.consumed + cost > limit,
                Budget::Lenient => false,
            };
            if over {
                // `dropped` covers the queued packets only: the caller accounts for this one.
                self.clear_woken(ready);
                let mut dropped = self.drain();
                dropped.requests += usize::from(!packet.is_answer());
                self.rx_closed = Some(RxClosed::Overflow);
                return Push::Overflow(dropped);
            }
            if !self.queue.is_empty() && packet.payload.len() < COPY_WAITING_BELOW {
                packet.payload = bytes::Bytes::copy_from_slice(&packet.payload);
            }
        }
        self.queued += cost;
        self.queue.push_back(packet);
        let wake = self.receiver_waiting && !self.woken;
        if wake {
            self.woken = true;
            *ready += 1;
        }
        Push::Queued { wake }
    }

    /// Takes the next packet. `credit_every` is `Some(n)` when the peer takes credit: once
    /// `n` bytes of cost were consumed, they are returned for the caller to send.
    pub(crate) fn pop(&mut self, credit_every: Option<usize>, ready: &mut usize) -> Pop {
        if let Some(packet) = self.queue.pop_front() {
            self.clear_woken(ready);
            self.receiver_waiting = false;
            let cost = cost_of(packet.payload.len());
            self.queued -= cost;
            self.consumed += cost;
            let credit = match credit_every {
                Some(n) if self.consumed >= n => {
                    let c = self.consumed.min(u32::MAX as usize);
                    self.consumed -= c;
                    Some(c as u32)
                }
                _ => None,
            };
            return Pop::Packet {
                packet,
                cost,
                credit,
            };
        }
        if let Some(reason) = self.rx_closed {
            let first_link_report = reason == RxClosed::Link && !self.link_error_reported;
            if first_link_report {
                self.link_error_reported = true;
            }
            return Pop::Ended {
                reason,
                first_link_report,
            };
        }
        self.receiver_waiting = true;
        Pop::Empty
    }

    /// A receiver waits from now on (it registered before asking): the next packet wakes
    /// it.
    pub(crate) fn await_packet(&mut self) {
        self.receiver_waiting = true;
    }

    /// Takes the only queued packet of an open receive side, if that is what the queue
    /// holds (a lightweight exchange's answer). The exchange ends with it: the caller
    /// settles its credit (the connection consumed nothing before it).
    pub(crate) fn take_only(&mut self, ready: &mut usize) -> Option<(Packet, usize)> {
        if self.rx_closed.is_some() || self.queue.rest.as_ref().is_some_and(|r| !r.is_empty()) {
            return None;
        }
        let packet = self.queue.head.take()?;
        self.clear_woken(ready);
        self.receiver_waiting = false;
        let cost = cost_of(packet.payload.len());
        self.queued -= cost;
        Some((packet, cost))
    }

    /// Takes the first packet without credit bookkeeping (recv1: the request is answered
    /// by a reply, not credited on consumption).
    pub(crate) fn pop_first(&mut self, ready: &mut usize) -> Option<(Packet, usize)> {
        self.clear_woken(ready);
        let packet = self.queue.pop_front()?;
        let cost = cost_of(packet.payload.len());
        self.queued -= cost;
        Some((packet, cost))
    }

    /// Closes the receive side (the first reason wins). Queued packets are discarded and
    /// reported so the caller can answer "connection closed" and release their cost.
    pub(crate) fn close_rx(&mut self, reason: RxClosed, ready: &mut usize) -> Option<Dropped> {
        self.clear_woken(ready);
        match self.rx_closed {
            // What arrived before the link ended was kept for reading; the application
            // now gives it up, so its cost goes back (the reason stays the link's end).
            Some(RxClosed::Link) if !self.queue.is_empty() => Some(self.drain()),
            Some(_) => None,
            None => {
                self.rx_closed = Some(reason);
                Some(self.drain())
            }
        }
    }

    /// The connection's slot is freed: what is still queued is dropped (its cost was
    /// accounted for by the caller) and a pending wake-up no longer counts as ready.
    pub(crate) fn discard(&mut self, ready: &mut usize) {
        self.clear_woken(ready);
        if !self.queue.is_empty() {
            self.queue.drain().for_each(drop);
        }
        self.queued = 0;
    }

    /// The link ended: nothing more arrives, but what already arrived stays readable (an
    /// answer that came just before the peer closed is still the answer); `pop` reports
    /// the end once the queue is empty.
    pub(crate) fn end_by_link(&mut self) {
        self.rx_closed.get_or_insert(RxClosed::Link);
    }

    /// Cost of the packets waiting to be read.
    pub(crate) fn queued_cost(&self) -> usize {
        self.queued
    }

    pub(crate) fn close_tx(&mut self) {
        self.tx_closed = true;
    }

    pub(crate) fn tx_closed(&self) -> bool {
        self.tx_closed
    }

    /// Reserves `cost` of send credit; `window` is `None` when the peer does not take
    /// credit. Any size goes when nothing is outstanding, so one message larger than the
    /// window still goes through.
    pub(crate) fn reserve(&mut self, cost: usize, window: Option<u64>) -> bool {
        let cost = cost as u64;
        let fits = match window {
            None => true,
            Some(w) => self.outstanding == 0 || self.outstanding + cost <= w,
        };
        if fits {
            self.outstanding += cost;
        }
        fits
    }

    /// Credit returned by the peer.
    pub(crate) fn add_credit(&mut self, bytes: u32) {
        self.outstanding = self.outstanding.saturating_sub(u64::from(bytes));
    }

    /// Takes the cost consumed and not yet credited back.
    pub(crate) fn take_consumed(&mut self) -> usize {
        std::mem::take(&mut self.consumed)
    }

    fn clear_woken(&mut self, ready: &mut usize) {
        if std::mem::take(&mut self.woken) {
            *ready -= 1;
        }
    }

    fn drain(&mut self) -> Dropped {
        let mut dropped = Dropped {
            uncredited: std::mem::take(&mut self.consumed),
            ..Dropped::default()
        };
        self.queued = 0;
        if self.queue.is_empty() {
            return dropped;
        }
        for p in self.queue.drain() {
            dropped.cost += cost_of(p.payload.len());
            dropped.requests += usize::from(!p.is_answer());
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pkt(len: usize) -> Packet {
        Packet {
            conn_id: 1,
            code: 1,
            payload: Bytes::from(vec![0u8; len]),
        }
    }

    #[test]
    fn strict_budget_closes_on_overflow_but_admits_one_big_packet() {
        let mut ready = 0;
        let mut c = ConnState::default();
        let budget = Budget::Strict(1000);
        assert!(matches!(
            c.push(pkt(5000), budget, &mut ready),
            Push::Queued { .. }
        ));
        match c.push(pkt(1), budget, &mut ready) {
            Push::Overflow(dropped) => {
                assert_eq!(dropped.requests, 2);
                assert_eq!(dropped.cost, cost_of(5000)); // the refused packet is the caller's
            }
            other => panic!("expected overflow, got {other:?}"),
        }
        assert!(matches!(c.push(pkt(1), budget, &mut ready), Push::Closed));
        assert!(matches!(
            c.pop(None, &mut ready),
            Pop::Ended {
                reason: RxClosed::Overflow,
                ..
            }
        ));
    }

    #[test]
    fn credit_is_returned_after_consumption() {
        let mut ready = 0;
        let mut c = ConnState::default();
        for _ in 0..4 {
            assert!(matches!(
                c.push(pkt(100), Budget::Credit(1000), &mut ready),
                Push::Queued { .. }
            ));
        }
        let mut credits = 0;
        for _ in 0..4 {
            let Pop::Packet { credit, .. } = c.pop(Some(300), &mut ready) else {
                panic!()
            };
            credits += credit.unwrap_or(0);
        }
        assert_eq!(credits as usize, 4 * cost_of(100));
    }

    #[test]
    fn sender_waits_for_credit() {
        let mut c = ConnState::default();
        let w = Some(300);
        assert!(c.reserve(200, w));
        assert!(!c.reserve(200, w));
        c.add_credit(200);
        assert!(c.reserve(200, w));
    }

    #[test]
    fn a_parked_receiver_is_woken_once_and_counted_ready_until_it_pops() {
        let mut ready = 0;
        let mut c = ConnState::default();
        assert!(matches!(c.pop(None, &mut ready), Pop::Empty));
        assert!(matches!(
            c.push(pkt(1), Budget::Lenient, &mut ready),
            Push::Queued { wake: true }
        ));
        assert!(matches!(
            c.push(pkt(1), Budget::Lenient, &mut ready),
            Push::Queued { wake: false }
        ));
        assert_eq!(ready, 1);
        assert!(matches!(c.pop(None, &mut ready), Pop::Packet { .. }));
        assert_eq!(ready, 0);
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
    fn link_error_is_reported_once() {
        let mut ready = 0;
        let mut c = ConnState::default();
        let _ = c.close_rx(RxClosed::Link, &mut ready);
        let Pop::Ended {
            first_link_report: first,
            ..
        } = c.pop(None, &mut ready)
        else {
            panic!()
        };
        let Pop::Ended {
            first_link_report: second,
            ..
        } = c.pop(None, &mut ready)
        else {
            panic!()
        };
        assert!(first && !second);
    }

    #[test]
    fn idle_connection_state_stays_small() {
        // The idle-connection benchmark budget is 256 bytes per end, table entry included.
        assert!(
            std::mem::size_of::<ConnState>() <= 136,
            "{}",
            std::mem::size_of::<ConnState>()
        );
    }
}
