//! A request received in lightweight mode: one message in, at most one answer out.

use std::future::{poll_fn, Future};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use crate::error::{Cause, Result};
use crate::frame::Packet;
use crate::handle::Link;
use crate::message::Message;
use crate::txqueue::Body;

/// A request accepted with [`Link::recv1`]. Answer it with [`Request::reply`]. Every
/// request ends: one released without an answer (dropped, [`close`](Request::close)d, or
/// lost to a panicking handler while it unwinds) is answered with NEO's "connection
/// closed" Error in the neo-go dialect, so the asker's `ask1` fails at once instead of
/// waiting forever (the neo-py dialect sends no automatic replies; NEO/py does not expect
/// them). No per-connection state is held meanwhile.
#[derive(Debug)]
pub struct Request {
    link: Link,
    packet: Packet,
    /// Flow-control credit owed to the peer for this packet (stateless mode only); sent
    /// together with the reply, or on drop.
    credit: u32,
    /// An answer went out (or was attempted): nothing more to say on drop.
    answered: bool,
}

impl Request {
    pub(crate) fn new(link: Link, packet: Packet, credit: u32) -> Request {
        Request {
            link,
            packet,
            credit,
            answered: false,
        }
    }

    /// The connection id the request arrived on.
    pub fn conn_id(&self) -> u32 {
        self.packet.conn_id
    }

    /// The message code.
    pub fn code(&self) -> u16 {
        self.packet.code
    }

    /// The raw payload.
    pub fn payload(&self) -> &Bytes {
        &self.packet.payload
    }

    /// The whole packet.
    pub fn packet(&self) -> &Packet {
        &self.packet
    }

    /// The link the request arrived on.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Decodes the request as message type `M`.
    pub fn decode<M: Message>(&self) -> Result<M> {
        self.packet.decode::<M>().map_err(|e| {
            self.link
                .inner()
                .conn_error(Cause::Decode(e), self.conn_id(), "recv1")
        })
    }

    /// Sends the answer and releases the request.
    pub fn reply<'a, M: Message>(self, msg: &'a M) -> impl Future<Output = Result<()>> + 'a {
        let encode = move |b: &mut BytesMut| msg.encode(b);
        self.answer_with(move |req, cx| req.poll_answer(cx, M::CODE, &Body::Encode(encode)))
    }

    /// Sends a raw answer and releases the request.
    pub fn reply_packet(self, code: u16, payload: Bytes) -> impl Future<Output = Result<()>> {
        self.answer_with(move |req, cx| {
            req.poll_answer(cx, code, &Body::Bytes::<fn(&mut BytesMut)>(&payload))
        })
    }

    /// One future that owns the request and its answer (no nested future to move on this
    /// hot path).
    fn answer_with<'a>(
        mut self,
        mut poll: impl FnMut(&mut Request, &mut Context<'_>) -> Poll<Result<()>> + 'a,
    ) -> impl Future<Output = Result<()>> + 'a {
        poll_fn(move |cx| poll(&mut self, cx))
    }

    fn poll_answer<F: Fn(&mut BytesMut)>(
        &mut self,
        cx: &mut Context<'_>,
        code: u16,
        body: &Body<'_, F>,
    ) -> Poll<Result<()>> {
        let inner = self.link.inner();
        let id = self.conn_id();
        if !self.answered {
            self.answered = true;
            if self.credit > 0 {
                // Queued without waking the writer: the reply's own write carries it.
                inner.send_credit(id, std::mem::take(&mut self.credit), false);
            }
        }
        inner
            .poll_answer(cx, id, code, body)
            .map_err(|f| inner.send_error(f, Some(id), "reply"))
    }

    /// Releases the request without an answer of the application's: the asker gets
    /// "connection closed" (neo-go dialect), as when the request is dropped.
    pub fn close(self) {}
}

impl Drop for Request {
    fn drop(&mut self) {
        let inner = self.link.inner();
        let id = self.conn_id();
        if self.credit > 0 {
            inner.send_credit(id, self.credit, true);
        }
        if !self.answered {
            let is_answer = self.packet.is_answer();
            inner.with_core(|s| s.core.request_unanswered(id, is_answer));
        }
    }
}
