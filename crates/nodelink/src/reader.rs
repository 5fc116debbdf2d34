//! The receiving half of a link: one task reads the stream into a large buffer, cuts every
//! complete packet out of it (zero-copy), and routes each to its connection.
//!
//! Routing never waits on a connection: a connection that is not read fills its own
//! budget, not the link. The only wait is the link-wide receive limit, which bounds memory
//! when the application as a whole stops reading.

use std::future::poll_fn;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::conn_state::{cost_of, Budget, Push};
use crate::control;
use crate::frame::{decode_packet_with_limit, Packet, HEADER_LEN};
use crate::link::{BoxRead, LinkEnd, LinkInner, MODE_CREDIT, MODE_NEO, MODE_PENDING};
use crate::negotiate::{Negotiation, PeerMode, Verdict};
use crate::stats::Counters;
use crate::table::Route;
use crate::table::Slot;

/// Below this much free room the read buffer is topped up before the next read.
const MIN_READ_ROOM: usize = 4 << 10;

impl LinkInner {
    pub(crate) async fn reader_task(self: Arc<Self>, mut io: BoxRead, mut neg: Negotiation) {
        let mut buf = BytesMut::with_capacity(self.config.read_buffer);
        // Until the negotiation of the extension has decided, our senders stay within the
        // start-up window; a peer that never tells must not keep them there for ever.
        let deadline = Instant::now() + self.config.handshake_timeout;
        let err = loop {
            match self.drain_buffer(&mut buf, &mut neg).await {
                Ok(true) => {}
                Ok(false) => return, // stopped
                Err(e) => break e,
            }
            if buf.capacity() - buf.len() < MIN_READ_ROOM {
                buf.reserve(self.config.read_buffer);
            }
            tokio::select! {
                biased;
                _ = self.stop_reading.cancelled() => return,
                _ = tokio::time::sleep_until(deadline), if neg.waiting() => {
                    let before = neg.mode();
                    neg.on_timeout();
                    tracing::debug!(link = %self.name, "no flow-control verdict from the peer in time: none used");
                    self.publish_mode(before, neg.mode());
                }
                r = io.read_buf(&mut buf) => match r {
                    Ok(0) => break io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the link"),
                    Ok(_) => {}
                    Err(e) => break e,
                },
            }
        };
        self.shutdown(LinkEnd::Failed(Arc::new(err)));
    }

    /// Routes every complete packet in `buf`. Returns `Ok(false)` if the link is stopping.
    async fn drain_buffer(&self, buf: &mut BytesMut, neg: &mut Negotiation) -> io::Result<bool> {
        let limit = self.config.dialect.max_recv_payload();
        loop {
            let packet = match decode_packet_with_limit(buf, limit) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(true),
                Err(e) => {
                    // Link-fatal: the byte stream cannot be trusted any more.
                    Counters::add(&self.stats.protocol_errors, 1);
                    tracing::warn!(link = %self.name, error = %e, "protocol violation by the peer; closing the link");
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            self.count_in(&packet);
            let before = neg.mode();
            let verdict = neg.on_packet(packet.conn_id, packet.code, &packet.payload);
            // Publish a new mode before the packet is routed: the acceptor learns that its
            // peer is a strict NEO node from that very packet.
            self.publish_mode(before, neg.mode());
            match verdict {
                Verdict::Route => {}
                Verdict::Consumed(Some(reply)) => {
                    self.send_negotiation(reply);
                    continue;
                }
                Verdict::Consumed(None) => {
                    if !matches!(neg.mode(), PeerMode::Credit { .. }) {
                        // NEO/go's "connection closed" for our offer, absorbed.
                        Counters::add(&self.stats.control_dropped, 1);
                    }
                    continue;
                }
                Verdict::Credit(body) => {
                    for (id, bytes) in control::credits(body) {
                        if let Some(slot) = self.table.get(id) {
                            slot.add_credit(bytes).wake();
                        }
                    }
                    continue;
                }
                Verdict::Dropped => {
                    Counters::add(&self.stats.control_dropped, 1);
                    continue;
                }
            }
            // Control frames never wait for room (above): waiting for them could be what
            // keeps the application from freeing it. Data waits for the link-wide limit,
            // then, if it opens a connection, for room in the accept backlog.
            if !self.wait_for_room().await {
                return Ok(false);
            }
            let mut packet = packet;
            while let Some(back) = self.route(packet) {
                packet = back;
                if !self.wait_for_backlog().await {
                    return Ok(false);
                }
            }
        }
    }

    /// Makes a new peer mode visible to senders and receivers.
    fn publish_mode(&self, before: PeerMode, now: PeerMode) {
        if before == now {
            return;
        }
        let mode = match now {
            PeerMode::Pending => MODE_PENDING,
            PeerMode::Neo => MODE_NEO,
            PeerMode::Credit { window } => {
                let window = (window as usize).max(crate::config::MIN_RECV_BUDGET);
                self.peer_window.store(window as u64, Ordering::Relaxed);
                MODE_CREDIT
            }
        };
        self.peer_mode.store(mode, Ordering::Release);
        tracing::debug!(link = %self.name, mode = ?now, "peer flow-control mode");
        for slot in self.table.open_slots() {
            slot.wake_senders().wake();
            if mode == MODE_CREDIT {
                // What the application consumed before both sides agreed was not credited:
                // the peer counted it, so give it back now or its sender may wait forever.
                let consumed = slot.take_consumed();
                self.credit_back(slot.id(), consumed);
            }
        }
    }

    /// Waits until the accept backlog has room (or accepting ended). False if stopping.
    async fn wait_for_backlog(&self) -> bool {
        Counters::add(&self.stats.accept_waits, 1);
        tracing::debug!(link = %self.name, "accept backlog full: reading paused until the application accepts");
        tokio::select! {
            biased;
            _ = self.stop_reading.cancelled() => false,
            _ = poll_fn(|cx| self.table.poll_backlog_room(cx.waker())) => true,
        }
    }

    /// Waits while the connections' queues together exceed the link-wide limit.
    async fn wait_for_room(&self) -> bool {
        let limit = self.config.link_recv_limit;
        loop {
            if self.rx_total.load(Ordering::Acquire) <= limit {
                return true;
            }
            let room = self.rx_room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.rx_total.load(Ordering::Acquire) <= limit {
                return true;
            }
            tokio::select! {
                biased;
                _ = self.stop_reading.cancelled() => return false,
                _ = room => {}
            }
        }
    }

    fn count_in(&self, packet: &Packet) {
        Counters::add(&self.stats.packets_in, 1);
        Counters::add(
            &self.stats.bytes_in,
            (HEADER_LEN + packet.payload.len()) as u64,
        );
        tracing::trace!(
            link = %self.name,
            conn = packet.conn_id,
            code = packet.code,
            len = packet.payload.len(),
            "recv"
        );
    }

    /// Delivers one packet by the dialect's routing rules (`docs/protocols/link.md`,
    /// "Routing"). Gives the packet back when it opens a connection and the accept backlog
    /// is full: the caller waits for room and routes it again.
    fn route(&self, packet: Packet) -> Option<Packet> {
        let id = packet.conn_id;
        let answer = packet.is_answer();
        let cost = cost_of(packet.payload.len());
        // Count the cost before the packet becomes visible to a receiver, so the
        // receiver's release can never run ahead of it.
        self.rx_total.fetch_add(cost, Ordering::AcqRel);
        let budget = self.rx_budget();
        let mut packet = Some(packet);
        let route = self.table.route(id, answer, Instant::now(), |slot, new| {
            let p = packet.take().expect("delivered once");
            // A fresh queue always admits its first packet.
            slot.push(p, if new { Budget::Lenient } else { budget }, &self.ready)
        });
        let queued = match route {
            Route::Delivered(Push::Queued(wake)) => {
                wake.wake();
                true
            }
            Route::Delivered(Push::Closed) => {
                if !answer {
                    self.reply_closed(id);
                }
                false
            }
            Route::Delivered(Push::Overflow { dropped, wake }) => {
                wake.wake();
                self.release_rx(dropped.cost);
                Counters::add(&self.stats.recv_overflows, 1);
                tracing::warn!(
                    link = %self.name,
                    conn = id,
                    "receive budget exceeded; closing the connection's receive side"
                );
                if dropped.requests > 0 {
                    self.reply_closed(id);
                }
                self.credit_back(id, dropped.cost + dropped.uncredited);
                false
            }
            Route::Accepted(push, wake) => {
                if let Push::Queued(w) = push {
                    w.wake();
                }
                Counters::add(&self.stats.conns_accepted, 1);
                wake.wake();
                true
            }
            Route::Closed => {
                if !answer {
                    self.reply_closed(id);
                }
                false
            }
            Route::Refused => {
                Counters::add(&self.stats.conns_refused, 1);
                if !answer {
                    self.reply_refused(id);
                }
                false
            }
            Route::Dropped => {
                Counters::add(&self.stats.packets_dropped, 1);
                false
            }
            Route::Full => {
                // Not taken: undo the count without waking anyone, and hand it back.
                self.rx_total.fetch_sub(cost, Ordering::AcqRel);
                return packet;
            }
        };
        if !queued {
            self.release_rx(cost);
            // The peer's sender counted this packet against its window: give it back, or
            // a sender on a connection we no longer read would wait forever.
            self.credit_back(id, cost);
        }
        None
    }

    /// How the receive budget applies, given what we know about the peer.
    fn rx_budget(&self) -> Budget {
        let budget = self.config.effective_budget();
        match self.peer_mode.load(Ordering::Relaxed) {
            MODE_CREDIT => Budget::Credit(budget),
            _ => Budget::Strict(budget),
        }
    }
}
