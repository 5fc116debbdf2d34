//! The bounded event queue of one endpoint.
//!
//! Producers push synchronously while they hold the endpoint's state lock, so events are
//! queued in exactly the order of the state changes that caused them (a `ConnectionLost`
//! always precedes the `ConnectionOpened` of a reconnection). Backpressure is applied
//! separately: a socket reader calls [`EventQueue::wait_room`] before handling a frame
//! that opens a connection or carries data, so a full queue stops reading the sockets;
//! the queue can overshoot its capacity only by the events of frames being handled and
//! by the closing events of connections that were already announced.
//!
//! Room means fewer than `capacity` events *and* fewer than `max_bytes` payload bytes
//! queued: a count alone would let a thousand maximum-length frames in.
//!
//! Closing the queue keeps what is queued, then yields `EndPointClosed` once; every later
//! receive fails at once instead of waiting.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::event::Event;
use nodelink_driver::lock;

pub(crate) struct EventQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Bound on the payload bytes of queued `Received` events.
    max_bytes: usize,
    /// Consumers waiting for an event.
    readable: Notify,
    /// Producers waiting for room.
    room: Notify,
}

struct Inner {
    items: VecDeque<Event>,
    /// Payload bytes of the queued `Received` events.
    bytes: usize,
    closed: bool,
    end_delivered: bool,
}

/// What [`EventQueue::pop`] found.
pub(crate) enum Popped {
    Event(Event),
    /// `EndPointClosed` was delivered before: nothing will ever come again.
    Finished,
}

impl EventQueue {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        EventQueue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                bytes: 0,
                closed: false,
                end_delivered: false,
            }),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            readable: Notify::new(),
            room: Notify::new(),
        }
    }

    /// Queues `ev` regardless of capacity (see the module docs); dropped once closed.
    pub(crate) fn push(&self, ev: Event) {
        let mut g = lock(&self.inner);
        if g.closed {
            return;
        }
        g.bytes += payload_len(&ev);
        g.items.push_back(ev);
        drop(g);
        self.readable.notify_one();
    }

    /// Closes the queue: `EndPointClosed` follows what is already queued.
    pub(crate) fn close(&self) {
        lock(&self.inner).closed = true;
        self.readable.notify_waiters();
        self.readable.notify_one();
        self.room.notify_waiters();
    }

    /// Waits until the queue is below capacity (or closed).
    pub(crate) async fn wait_room(&self) {
        if self.has_room() {
            return;
        }
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                if self.has_room() {
                    return;
                }
            }
            notified.await;
        }
    }

    fn has_room(&self) -> bool {
        let g = lock(&self.inner);
        g.closed || self.below_bounds(&g)
    }

    fn below_bounds(&self, g: &Inner) -> bool {
        g.items.len() < self.capacity && g.bytes < self.max_bytes
    }

    /// The next event, waiting for one.
    pub(crate) async fn pop(&self) -> Popped {
        // Fast path: no waiter registration when an event is already there.
        if let Some(p) = self.try_pop() {
            return p;
        }
        loop {
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.try_pop() {
                return p;
            }
            notified.await;
        }
    }

    fn try_pop(&self) -> Option<Popped> {
        let mut g = lock(&self.inner);
        let was_full = !self.below_bounds(&g);
        if let Some(ev) = g.items.pop_front() {
            g.bytes -= payload_len(&ev);
            let has_more = !g.items.is_empty() || g.closed;
            // Producers wait only while the queue is full: wake them when it stops being.
            let freed = was_full && self.below_bounds(&g);
            drop(g);
            if freed {
                self.room.notify_waiters();
            }
            if has_more {
                // Other receivers may be waiting on the same queue.
                self.readable.notify_one();
            }
            return Some(Popped::Event(ev));
        }
        if g.closed {
            if g.end_delivered {
                return Some(Popped::Finished);
            }
            g.end_delivered = true;
            drop(g);
            self.readable.notify_waiters();
            return Some(Popped::Event(Event::EndPointClosed));
        }
        None
    }
}

/// The payload bytes an event holds (what the byte bound counts).
fn payload_len(ev: &Event) -> usize {
    match ev {
        Event::Received { data, .. } => data.iter().map(|c| c.len()).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drains_then_closed_then_finished() {
        let q = EventQueue::new(1, 1 << 20);
        q.push(Event::EndPointClosed);
        q.push(Event::EndPointClosed);
        q.close();
        q.push(Event::ConnectionClosed {
            id: crate::ConnectionId(1),
        });
        assert!(matches!(
            q.pop().await,
            Popped::Event(Event::EndPointClosed)
        ));
        assert!(matches!(
            q.pop().await,
            Popped::Event(Event::EndPointClosed)
        ));
        assert!(matches!(
            q.pop().await,
            Popped::Event(Event::EndPointClosed)
        ));
        assert!(matches!(q.pop().await, Popped::Finished));
        assert!(matches!(q.pop().await, Popped::Finished));
    }

    #[tokio::test]
    async fn queued_bytes_bound_the_room_too() {
        let received = |n: usize| Event::Received {
            id: crate::ConnectionId(1),
            data: vec![bytes::Bytes::from(vec![0u8; n])],
        };
        let q = std::sync::Arc::new(EventQueue::new(1024, 100));
        q.push(received(60));
        assert!(q.has_room());
        q.push(received(60));
        // Two events, far below the count bound, but 120 bytes: readers must wait.
        assert!(!q.has_room());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.wait_room().await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        assert!(matches!(
            q.pop().await,
            Popped::Event(Event::Received { .. })
        ));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("a pop that frees bytes wakes the reader")
            .unwrap();
    }
}
