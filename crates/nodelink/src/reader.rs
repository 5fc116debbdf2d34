//! The receiving half of a link: one task reads the stream into a large buffer, cuts every
//! complete packet out of it (zero-copy), and routes each to its connection.
//!
//! Routing never waits on a connection: a connection that is not read fills its own
//! budget, not the link. The only wait is the link-wide receive limit, which bounds memory
//! when the application as a whole stops reading.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::conn_state::{cost_of, Budget, Push};
use crate::control::{self, Control};
use crate::frame::{decode_packet, Packet, HEADER_LEN};
use crate::link::{BoxRead, LinkEnd, LinkInner, RX_CREDIT, RX_NEO, TX_CREDIT, TX_NEO, TX_PENDING};
use crate::stats::Counters;
use crate::table::Route;

/// Below this much free room the read buffer is topped up before the next read.
const MIN_READ_ROOM: usize = 4 << 10;

impl LinkInner {
    pub(crate) async fn reader_task(self: Arc<Self>, mut io: BoxRead) {
        let mut buf = BytesMut::with_capacity(self.config.read_buffer);
        let mut first = true;
        // Until the peer's first packet, our senders stay within the start-up window; a
        // peer that never speaks must not keep them there for ever.
        let hello_deadline = Instant::now() + self.config.handshake_timeout;
        let mut waiting_for_hello = self.config.flow_control;
        let err = loop {
            match self.drain_buffer(&mut buf, &mut first).await {
                Ok(true) => {}
                Ok(false) => return, // stopped
                Err(e) => break e,
            }
            if buf.capacity() - buf.len() < MIN_READ_ROOM {
                buf.reserve(self.config.read_buffer);
            }
            waiting_for_hello &= first;
            tokio::select! {
                biased;
                _ = self.stop_reading.cancelled() => return,
                _ = tokio::time::sleep_until(hello_deadline), if waiting_for_hello => {
                    waiting_for_hello = false;
                    self.give_up_waiting_for_hello();
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
    async fn drain_buffer(&self, buf: &mut BytesMut, first: &mut bool) -> io::Result<bool> {
        loop {
            match decode_packet(buf) {
                Ok(Some(packet)) => {
                    // Control frames (credit) never wait for room: waiting for them could
                    // be what keeps the application from freeing it.
                    let control =
                        packet.conn_id == self.control_id || packet.conn_id == self.peer_control_id;
                    if !control && !self.wait_for_room().await {
                        return Ok(false);
                    }
                    self.route(packet, first);
                }
                Ok(None) => return Ok(true),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
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

    /// Delivers one packet (the routing rules of the NEO link protocol, section 6).
    pub(crate) fn route(&self, packet: Packet, first: &mut bool) {
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
        if std::mem::take(first) {
            self.learn_peer_mode(&packet);
        }
        if packet.conn_id == self.control_id {
            self.on_control(&packet);
            return;
        }
        if packet.conn_id == self.peer_control_id {
            // Only a NEO peer answering our HELLO ("connection closed") uses this id: it
            // is never a connection, and never answered.
            Counters::add(&self.stats.control_dropped, 1);
            return;
        }
        let id = packet.conn_id;
        let answer = packet.is_answer();
        let cost = cost_of(packet.payload.len());
        // Count the cost before the packet becomes visible to a receiver, so the
        // receiver's release can never run ahead of it.
        self.rx_total.fetch_add(cost, Ordering::AcqRel);
        let budget = self.rx_budget();
        let mut packet = Some(packet);
        let route = self.table.route(id, Instant::now(), |slot, new| {
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
        };
        if !queued {
            self.release_rx(cost);
            // The peer's sender counted this packet against its window: give it back, or
            // a sender on a connection we no longer read would wait forever.
            self.credit_back(id, cost);
        }
    }

    /// Wakes every sender that may wait for credit: the peer's flow-control mode changed.
    fn wake_all_senders(&self) {
        for slot in self.table.open_slots() {
            slot.wake_senders().wake();
        }
    }

    /// No packet from the peer within the handshake timeout: treat it as a peer without
    /// flow control, so a silent NEO peer cannot cap our senders at the start-up window.
    fn give_up_waiting_for_hello(&self) {
        if self
            .peer_tx_mode
            .compare_exchange(TX_PENDING, TX_NEO, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.wake_all_senders();
        }
    }

    /// The peer's first packet tells whether it speaks the flow-control extension.
    fn learn_peer_mode(&self, packet: &Packet) {
        let hello = self.config.flow_control
            && packet.conn_id == self.control_id
            && packet.code == control::CONTROL_CODE
            && matches!(
                control::decode(&packet.payload),
                Some(Control::Hello { .. })
            );
        if let (true, Some(Control::Hello { window })) = (hello, control::decode(&packet.payload)) {
            let window = (window as usize).max(crate::config::MIN_RECV_BUDGET);
            self.peer_window.store(window as u64, Ordering::Relaxed);
            self.peer_tx_mode.store(TX_CREDIT, Ordering::Release);
            self.peer_rx_mode.store(RX_CREDIT, Ordering::Relaxed);
        } else {
            self.peer_tx_mode.store(TX_NEO, Ordering::Release);
            self.peer_rx_mode.store(RX_NEO, Ordering::Relaxed);
        }
        self.wake_all_senders();
        debug_assert_ne!(self.peer_tx_mode.load(Ordering::Relaxed), TX_PENDING);
    }

    fn on_control(&self, packet: &Packet) {
        let usable = self.config.flow_control
            && packet.code == control::CONTROL_CODE
            && self.peer_tx_mode.load(Ordering::Relaxed) == TX_CREDIT;
        let frame = if usable {
            control::decode(&packet.payload)
        } else {
            None
        };
        match frame {
            Some(Control::Hello { .. }) => {} // handled as the first packet
            Some(Control::Credit(body)) => {
                for (id, bytes) in control::credits(body) {
                    if let Some(slot) = self.table.get(id) {
                        slot.add_credit(bytes).wake();
                    }
                }
            }
            None => {
                // NEO/go answers our HELLO with "connection closed" on this id; that and
                // anything malformed is ignored (never answered: it could ping-pong).
                Counters::add(&self.stats.control_dropped, 1);
            }
        }
    }

    /// How the receive budget applies, given what we know about the peer.
    fn rx_budget(&self) -> Budget {
        let budget = self.config.effective_budget();
        if !self.config.flow_control {
            return Budget::Strict(budget);
        }
        match self.peer_rx_mode.load(Ordering::Relaxed) {
            RX_CREDIT => Budget::Credit(budget),
            RX_NEO => Budget::Strict(budget),
            _ => Budget::Strict(budget),
        }
    }
}
