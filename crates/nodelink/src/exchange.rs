//! One lightweight exchange of ours (`ask1`): a request on a fresh connection, its answer,
//! and the connection gone again (`docs/protocols/link.md`, "Dialects").
//!
//! It is a hand-written future rather than an `async fn` because it is the hottest path of
//! the link and most of an `async fn`'s cost there is bookkeeping: nested futures copied
//! into each other, a lock of the core per step. Here the whole exchange takes two locks of
//! the core and three of the send queue (queue the request, take the batch, hand the
//! socket back):
//!
//! 1. *send*: under the send queue's lock, the request is encoded, then the core opens the
//!    connection, reserves the request's credit and registers this task as the receiver
//!    (one core lock); the queue is then written at once if the socket is free
//!    ([`LinkInner::write_now`]), or left to the writer task when other answers were just
//!    delivered on this side (their tasks are about to send too: one system call for all);
//! 2. *receive*: woken by the answer, one core lock takes it and releases the connection.
//!
//! Dropping the future (cancellation) ends the exchange the same way, and so does running
//! out of time (at once, before the caller even sees the error): anything queued on its id
//! later is answered "connection closed", and the state is recycled.
//!
//! The future is what `ask1_packet` returns, with no `async fn` around it: it keeps the
//! deadline itself (a timer made at the first poll, only when there is a deadline) and
//! turns a peer's Error answer into an error.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use crate::core::{cost_of, ConnKey, Recv};
use crate::error::{Cause, Error, Result};
use crate::frame::Packet;
use crate::inner::LinkInner;
use crate::message::{peer_cause, ErrorMessage, Message};
use crate::txqueue::{Body, SendFail};
use crate::writer::Admit;

const OP: &str = "ask1";

/// `ask1` in progress; see the module documentation.
pub(crate) struct Exchange<'a, F> {
    inner: &'a LinkInner,
    code: u16,
    body: Body<'a, F>,
    /// The connection, once the request is queued on it.
    conn: Option<(ConnKey, u32)>,
    /// The answer (or the end) was taken, and the connection released with it.
    finished: bool,
    /// How long the exchange may take, from its first poll.
    deadline: Option<Duration>,
    /// The deadline's timer, made at the first poll.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a, F: Fn(&mut BytesMut) + Unpin> Exchange<'a, F> {
    pub(crate) fn new(
        inner: &'a LinkInner,
        code: u16,
        body: Body<'a, F>,
        deadline: Option<Duration>,
    ) -> Self {
        Exchange {
            inner,
            code,
            body,
            conn: None,
            finished: false,
            deadline,
            timer: None,
        }
    }

    /// The error for an exchange that ran out of time.
    fn deadline_error(&self, d: Duration) -> Error {
        match self.conn {
            Some((_, id)) => self.inner.conn_error(Cause::Deadline(d), id, OP),
            None => self.inner.link_error(Cause::Deadline(d), OP),
        }
    }

    /// Queues the request on a new connection and writes it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let inner = self.inner;
        let mut opened = None;
        let queued = inner.poll_enqueue_as(cx, self.code, &self.body, |cx, payload_len| {
            // Lock order: the send queue, then the core. Opening produces no output (no
            // wake-up, no transmit), so nothing waits to be dispatched after the lock.
            let mut s = inner.shared.lock();
            match s.core.open_light(cost_of(payload_len), Instant::now) {
                Ok((key, id)) => {
                    if let Some(parked) = s.core.ext(key) {
                        parked.rx.register(cx.waker());
                    }
                    opened = Some((key, id));
                    Admit::Go(id)
                }
                Err(e) => Admit::Fail(SendFail::Open(e)),
            }
        });
        match queued {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(SendFail::Open(e))) => {
                return Poll::Ready(Err(inner.open_error(e, OP)));
            }
            Poll::Ready(Err(f)) => return Poll::Ready(Err(inner.send_error(f, None, OP))),
            Poll::Ready(Ok(())) => {}
        }
        self.conn = opened;
        let id = opened.map(|(_, id)| id);
        if inner.ready.load(Ordering::Relaxed) == 0 {
            inner
                .write_now(cx)
                .map_err(|f| inner.send_error(f, id, OP))?;
        } else {
            inner.kick_writer();
        }
        Poll::Ready(Ok(()))
    }
}

impl<F: Fn(&mut BytesMut) + Unpin> Future for Exchange<'_, F> {
    type Output = Result<Packet>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Packet>> {
        let this = self.get_mut();
        match this.deadline {
            None => this.poll_exchange(cx),
            Some(d) => this.poll_within(d, cx),
        }
    }
}

impl<F: Fn(&mut BytesMut) + Unpin> Exchange<'_, F> {
    /// The exchange under its deadline, which runs from the first poll as for
    /// `tokio::time::timeout` (the timer is made before the request is sent); the order is
    /// also its: the exchange first, then the timer.
    #[inline(never)]
    fn poll_within(&mut self, d: Duration, cx: &mut Context<'_>) -> Poll<Result<Packet>> {
        if self.timer.is_none() {
            self.timer = Some(Box::pin(tokio::time::sleep(d)));
        }
        if let Poll::Ready(r) = self.poll_exchange(cx) {
            return Poll::Ready(r);
        }
        let Some(timer) = self.timer.as_mut() else {
            return Poll::Pending;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Out of time: the exchange ends now, not when the future is dropped, so the id
        // does not stay open meanwhile; a late answer is answered "connection closed".
        let e = self.deadline_error(d);
        if let (Some((key, _)), false) = (self.conn, self.finished) {
            self.inner.with_core(|s| s.core.finish_light(key, None));
        }
        self.finished = true;
        Poll::Ready(Err(e))
    }

    /// The exchange without its deadline.
    fn poll_exchange(&mut self, cx: &mut Context<'_>) -> Poll<Result<Packet>> {
        let this = self;
        if this.finished {
            // Polled again after its end: it never sends a second request.
            let e = match this.conn {
                Some((_, id)) => this.inner.conn_error(Cause::ConnectionClosed, id, OP),
                None => this.inner.link_error(Cause::ConnectionClosed, OP),
            };
            return Poll::Ready(Err(e));
        }
        let Some((key, id)) = this.conn else {
            if let Err(e) = std::task::ready!(this.poll_send(cx)) {
                this.finished = true;
                return Poll::Ready(Err(e));
            }
            // This task was registered as the receiver before the request left: the answer
            // (or the link's end) wakes it.
            return Poll::Pending;
        };
        let inner = this.inner;
        let taken = inner.with_core(|s| {
            let r = s.core.take_light(key);
            if matches!(r, Recv::Empty) {
                if let Some(parked) = s.core.ext(key) {
                    parked.rx.register(cx.waker());
                }
            }
            r
        });
        match taken {
            Recv::Empty => Poll::Pending,
            Recv::Packet(packet) => {
                this.finished = true;
                if packet.code == ErrorMessage::CODE {
                    let id = packet.conn_id;
                    return Poll::Ready(Err(inner.conn_error(peer_cause(packet.payload), id, OP)));
                }
                Poll::Ready(Ok(packet))
            }
            Recv::Ended {
                reason,
                first_link_report,
            } => {
                this.finished = true;
                Poll::Ready(Err(inner.recv_end_error(reason, first_link_report, id, OP)))
            }
        }
    }
}

impl<F> Drop for Exchange<'_, F> {
    fn drop(&mut self) {
        if let (Some((key, _)), false) = (self.conn, self.finished) {
            self.inner.with_core(|s| s.core.finish_light(key, None));
        }
    }
}
