//! The peer's side of the core: packets read from the stream, routed to their connection
//! (or opening one, or answered automatically) under the receive budgets, and the expiry
//! of the core's timer (see `mod.rs` for the whole picture).

use super::*;

impl<W: Ext> LinkCore<W> {
    /// Handles every complete packet in `buf` (bytes read from the stream). The whole
    /// packets at its front are cut off as one block; a partial packet stays, with room
    /// reserved for its rest. A framing violation is fatal for the link.
    pub(crate) fn handle_input(
        &mut self,
        buf: &mut BytesMut,
        now: Instant,
    ) -> Result<Input, FrameError> {
        if self.down {
            return Ok(Input::Drained);
        }
        self.ids.expire(now);
        if let Some(packet) = self.pending.take() {
            self.blocked = None;
            // The pause was ours, not the peer's silence.
            self.idle.activity(now);
            if !self.deliver(packet) {
                return Ok(Input::Blocked);
            }
        }
        loop {
            // Packets of an earlier block that a pause left unrouted come first.
            let mut block = std::mem::take(&mut self.unrouted);
            if block.is_empty() {
                let scan = frame::scan(buf, self.dialect.max_recv_payload());
                if scan.whole == 0 {
                    if let Some(e) = scan.error {
                        self.stats.protocol_errors += 1;
                        return Err(e);
                    }
                    // Room for the rest of a partial packet (its length was validated),
                    // so the next read can take it in one system call.
                    buf.reserve(scan.missing);
                    return Ok(Input::Drained);
                }
                // An invalid header after these packets is found by the next scan, once
                // they are routed.
                block = buf.split_to(scan.whole).freeze();
            }
            if let Some(input) = self.route_block(block, now) {
                return Ok(input);
            }
        }
    }

    /// Routes the packets of `block` in order. Returns why the reader must stop (a pause,
    /// which keeps the rest of the block for the next call, or the peer's BYE), or `None`
    /// when the block is done.
    fn route_block(&mut self, mut block: Bytes, now: Instant) -> Option<Input> {
        while let Some(packet) = frame::next_whole(&mut block) {
            self.stats.packets_in += 1;
            self.idle.activity(now);
            self.stats.bytes_in += (HEADER_LEN + packet.payload.len()) as u64;
            tracing::trace!(
                link = %self.name,
                conn = packet.conn_id,
                code = packet.code,
                len = packet.payload.len(),
                "recv"
            );
            if self.neg.is_plain(packet.conn_id) {
                if !self.deliver(packet) {
                    self.unrouted = block;
                    return Some(Input::Blocked);
                }
                continue;
            }
            let before = self.neg.mode();
            let verdict = self
                .neg
                .on_packet(packet.conn_id, packet.code, &packet.payload);
            match verdict {
                Verdict::Route => {
                    // A new mode applies before the packet is routed: the acceptor learns
                    // that its peer is a strict NEO node from that very packet.
                    self.mode_changed(before);
                    if !self.deliver(packet) {
                        self.unrouted = block;
                        return Some(Input::Blocked);
                    }
                }
                Verdict::Consumed(reply) => {
                    if let Some(reply) = reply {
                        self.transmits.push(Transmit::Negotiation(reply));
                    } else if !matches!(self.neg.mode(), PeerMode::Credit { .. }) {
                        // NEO/go's "connection closed" for our offer, absorbed.
                        self.stats.control_dropped += 1;
                    }
                    self.mode_changed(before);
                }
                Verdict::Credit(body) => {
                    for (id, bytes) in control::credits(body) {
                        self.add_credit(id, bytes);
                    }
                }
                Verdict::Bye => return Some(Input::PeerClosed),
                Verdict::Ping => self.transmits.push(Transmit::Pong),
                // Its arrival was the activity that matters.
                Verdict::Pong => {}
                Verdict::Dropped => self.stats.control_dropped += 1,
            }
        }
        None
    }

    /// The timer of [`Self::poll_timeout`] expired (or may have). Returns
    /// [`IdleEvent::Expired`] when the idle timeout passed: the driver ends the link.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> IdleEvent {
        if self.neg.waiting() && now >= self.neg_deadline {
            let before = self.neg.mode();
            self.neg.on_timeout();
            tracing::debug!(link = %self.name, "no flow-control verdict from the peer in time: none used");
            self.mode_changed(before);
        }
        if self.down {
            return IdleEvent::None;
        }
        match self.idle.on_timer(now, self.probes_allowed()) {
            IdleEvent::Probe => {
                self.transmits.push(Transmit::Ping);
                IdleEvent::None
            }
            other => other,
        }
    }

    /// Delivers a packet, or keeps it and returns false when the reader must wait.
    fn deliver(&mut self, packet: Packet) -> bool {
        if self.over_rx_limit() {
            self.pending = Some(packet);
            self.blocked = Some(Blocked::Room);
            return false;
        }
        match self.route(packet) {
            None => true,
            Some(packet) => {
                self.pending = Some(packet);
                self.blocked = Some(Blocked::Backlog);
                self.stats.accept_waits += 1;
                tracing::debug!(link = %self.name, "accept backlog full: reading paused until the application accepts");
                false
            }
        }
    }

    /// Routes one packet by the dialect's rules. Gives it back when it would open a
    /// connection and the accept backlog is full.
    fn route(&mut self, packet: Packet) -> Option<Packet> {
        let id = packet.conn_id;
        let answer = packet.is_answer();
        let cost = cost_of(packet.payload.len());
        let target = match self.ids.our_parity() {
            Some(parity) => match self.ids.get(id) {
                Some(Entry::Open(index)) => Target::Existing(index),
                Some(Entry::Pending) => Target::Pending,
                Some(Entry::Closed { .. }) => Target::Closed,
                None if id % 2 == parity => Target::Closed,
                None if !self.accepting || self.open >= self.max_conns => Target::Refused,
                None => Target::New { registered: true },
            },
            None => match self.ids.get(id) {
                Some(Entry::Open(index)) if answer => Target::Existing(index),
                _ if answer || !self.accepting => Target::Dropped,
                // NEO/py: a request of the peer's is never registered under its id (that id
                // may be one of our pending requests); it waits in the backlog for recv1.
                _ => Target::New { registered: false },
            },
        };
        let queued = match target {
            Target::Existing(index) => self.push_existing(index, packet),
            Target::Pending => match self.promote(id) {
                Some(index) => self.push_existing(index, packet),
                // Not in the backlog: cannot happen (the entry leaves the map with it);
                // answered as for a closed id rather than trusted.
                None => {
                    if !answer {
                        self.reply(Transmit::Closed(id));
                    }
                    false
                }
            },
            Target::New { registered } => {
                if self.backlog.len() >= self.backlog_limit {
                    return Some(packet);
                }
                // No slot yet: most new connections are requests that recv1 takes whole.
                if registered {
                    self.ids.insert_pending(id);
                    self.open += 1;
                }
                self.backlog
                    .push_back(Incoming::First { packet, registered });
                self.stats.conns_accepted += 1;
                self.wakeups.push(Wakeup::Acceptors);
                true
            }
            Target::Closed => {
                if !answer {
                    self.reply(Transmit::Closed(id));
                }
                false
            }
            Target::Refused => {
                self.stats.conns_refused += 1;
                if !answer {
                    self.reply(Transmit::Refused(id));
                }
                false
            }
            Target::Dropped => {
                self.stats.packets_dropped += 1;
                false
            }
        };
        if queued {
            self.rx_total += cost;
        } else {
            // The peer's sender counted this packet against its window: give it back, or
            // a sender on a connection we no longer read would wait forever.
            self.credit_back(id, cost);
        }
        None
    }

    /// Delivers to an open connection; false when the packet was not queued.
    fn push_existing(&mut self, index: u32, packet: Packet) -> bool {
        let budget = self.rx_budget();
        let id = packet.conn_id;
        let answer = packet.is_answer();
        let slot = &mut self.slots[index as usize];
        let key = ConnKey {
            index,
            gen: slot.gen,
        };
        match slot.conn.push(packet, budget, &mut self.ready) {
            Push::Queued { wake } => {
                if wake {
                    self.wakeups.push(Wakeup::Readable(key));
                }
                true
            }
            Push::Closed => {
                if !answer {
                    self.reply(Transmit::Closed(id));
                }
                false
            }
            Push::Overflow(dropped) => {
                self.wakeups.push(Wakeup::Readable(key));
                self.release_rx(dropped.cost);
                self.stats.recv_overflows += 1;
                tracing::warn!(
                    link = %self.name,
                    conn = id,
                    "receive budget exceeded; closing the connection's receive side"
                );
                if dropped.requests > 0 {
                    self.reply(Transmit::Closed(id));
                }
                self.credit_back(id, dropped.cost + dropped.uncredited);
                false
            }
        }
    }
}
