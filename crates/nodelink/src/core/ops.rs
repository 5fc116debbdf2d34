//! The application's side of the core: opening, sending credit, receiving, closing and
//! accepting connections, and the link's shutdown (see `mod.rs` for the whole picture).

use super::*;

impl<W: Ext> LinkCore<W> {
    /// Opens a connection of ours (a full connection, or one lightweight exchange).
    pub(crate) fn open(&mut self, now: Instant) -> Result<(ConnKey, u32), OpenError> {
        self.ids.expire(now);
        self.open_id()
    }

    fn open_id(&mut self) -> Result<(ConnKey, u32), OpenError> {
        if self.down {
            return Err(OpenError::Down);
        }
        if self.open >= self.max_conns {
            return Err(OpenError::TooMany);
        }
        let key = self.alloc_slot(0, false, true);
        let Some(id) = self.ids.alloc_open(key.index) else {
            self.free_slot(key.index);
            return Err(OpenError::TooMany);
        };
        self.slots[key.index as usize].conn.id = id;
        self.open += 1;
        self.stats.conns_opened += 1;
        Ok((key, id))
    }

    /// Opens a lightweight exchange whose request costs `cost`: the connection is open,
    /// the request's send credit reserved (a fresh connection owes nothing, so it always
    /// fits) and its receiver counted as waiting, so the answer wakes it. One call instead
    /// of three for the driver's `ask1`. `clock` is read only when closed records may
    /// have expired.
    pub(crate) fn open_light(
        &mut self,
        cost: usize,
        clock: impl FnOnce() -> Instant,
    ) -> Result<(ConnKey, u32), OpenError> {
        if self.ids.closed_records() > 0 {
            self.ids.expire(clock());
        }
        let window = self.peer_window();
        let (key, id) = self.open_id()?;
        let conn = &mut self.slots[key.index as usize].conn;
        let reserved = conn.reserve(cost, window);
        debug_assert!(reserved, "a fresh connection has all its credit");
        conn.await_packet();
        Ok((key, id))
    }

    /// The answer of a lightweight exchange, if it came (or how the exchange ended); the
    /// exchange is then over and its connection released, in the same call.
    pub(crate) fn take_light(&mut self, key: ConnKey) -> Recv {
        // The usual case: the answer came, alone. It is taken and the connection released
        // in one step, with the credit `recv` would return for it: a peer that answered
        // from a full connection counted it against its window, and gets it back as for
        // any packet consumed (only an answer of at least `credit_every` bytes is worth a
        // CREDIT frame; below, nothing is owed yet).
        if let Some(slot) = self
            .slots
            .get_mut(key.index as usize)
            .filter(|s| s.live && s.gen == key.gen)
        {
            if let Some((packet, cost)) = slot.conn.take_only(&mut self.ready) {
                if cost >= self.credit_at {
                    let id = slot.conn.id;
                    let bytes = cost.min(u32::MAX as usize) as u32;
                    self.transmits.push(Transmit::Credit { id, bytes });
                }
                self.release_rx(cost);
                self.release(key, None);
                return Recv::Packet(packet);
            }
        }
        let r = self.recv(key);
        if !matches!(r, Recv::Empty) {
            self.finish_light(key, None);
        }
        r
    }

    /// Allocates an id for a fire-and-forget `send1`, keeping no state for it: a later
    /// packet on it is answered as for any unknown id.
    pub(crate) fn open_unregistered(&mut self, now: Instant) -> Result<u32, OpenError> {
        self.ids.expire(now);
        if self.down {
            return Err(OpenError::Down);
        }
        let id = self.ids.alloc().ok_or(OpenError::TooMany)?;
        self.stats.conns_opened += 1;
        Ok(id)
    }

    /// Reserves send credit for a packet of `cost` on `key`.
    pub(crate) fn reserve(&mut self, key: ConnKey, cost: usize) -> Reserve {
        let window = self.peer_window();
        let Some(slot) = self.slot(key) else {
            return Reserve::Closed;
        };
        if slot.conn.tx_closed() {
            Reserve::Closed
        } else if slot.conn.reserve(cost, window) {
            Reserve::Ok
        } else {
            Reserve::Wait
        }
    }

    /// Takes the next packet of `key`; credit due to the peer becomes a transmit.
    pub(crate) fn recv(&mut self, key: ConnKey) -> Recv {
        let credit_every = self.credit_every();
        let Some(slot) = self.slots.get_mut(key.index as usize) else {
            return gone();
        };
        if !slot.live || slot.gen != key.gen {
            return gone();
        }
        let id = slot.conn.id;
        match slot.conn.pop(credit_every, &mut self.ready) {
            Pop::Packet {
                packet,
                cost,
                credit,
            } => {
                self.release_rx(cost);
                if let Some(bytes) = credit {
                    self.transmits.push(Transmit::Credit { id, bytes });
                }
                Recv::Packet(packet)
            }
            Pop::Empty => Recv::Empty,
            Pop::Ended {
                reason,
                first_link_report,
            } => Recv::Ended {
                reason,
                first_link_report,
            },
        }
    }

    /// Closes the receive side of `key`: queued and later packets are answered
    /// "connection closed".
    pub(crate) fn close_recv(&mut self, key: ConnKey) {
        let Some((id, dropped)) = self.close_rx_of(key) else {
            return;
        };
        self.wakeups.push(Wakeup::Readable(key));
        if let Some(d) = dropped {
            self.release_rx(d.cost);
            if d.requests > 0 {
                self.reply(Transmit::Closed(id));
            }
            self.credit_back(id, d.cost + d.uncredited);
        }
    }

    /// Closes a full connection in both directions and releases it. A connection the peer
    /// opened leaves a "closed" record (NEO/go rules).
    pub(crate) fn close(&mut self, key: ConnKey, now: Instant) {
        if self.slot(key).is_none() {
            return;
        }
        self.close_recv(key);
        let slot = &mut self.slots[key.index as usize];
        let keep = slot.conn.incoming;
        self.stats.conns_closed += 1;
        self.release(key, keep.then_some(now));
    }

    /// A request taken with recv1 was released without an answer (dropped, closed, or its
    /// handler panicked): answer it "connection closed" on its id, so the asker fails at
    /// once instead of waiting for an answer that never comes (NEO/go dialect; NEO/py
    /// gets no automatic replies, docs/protocols/link.md). A peer that sent it with send1
    /// expects nothing and drops the answer, as it drops any answer on a closed id.
    /// An answer that arrived as a "request" (NEO/go routes an answer on an unknown id of
    /// the peer's parity to accept) is never answered: Errors would bounce between peers.
    pub(crate) fn request_unanswered(&mut self, id: u32, is_answer: bool) {
        self.stats.requests_unanswered += 1;
        if !is_answer {
            self.reply(Transmit::Closed(id));
        }
    }

    /// Ends a lightweight exchange (ask1, or recv1 keeping a closed record from the time in
    /// `keep`): anything still queued is answered "connection closed", and the slot
    /// released.
    pub(crate) fn finish_light(&mut self, key: ConnKey, keep: Option<Instant>) {
        let Some((id, dropped)) = self.close_rx_of(key) else {
            return;
        };
        if let Some(d) = dropped {
            self.release_rx(d.cost);
            if d.requests > 0 {
                self.reply(Transmit::Closed(id));
            }
            // Only what was discarded unread: the answer an exchange consumed was sent
            // without credit (a reply), so returning it would be wasted traffic.
            self.credit_back(id, d.cost);
        }
        self.release(key, keep);
    }

    /// Takes the next incoming connection.
    pub(crate) fn accept(&mut self) -> AcceptPoll<(ConnKey, u32)> {
        if let Some(entry) = self.pop_backlog() {
            let key = self.slot_of(entry);
            let id = self.slots[key.index as usize].conn.id;
            return AcceptPoll::Ready((key, id));
        }
        self.accept_end()
    }

    /// recv1: takes the next incoming connection's first packet, and ends that connection
    /// at once. With `keep`, the id keeps a closed record (later packets on it are answered
    /// "connection closed"); without, the id is forgotten, and packets that already
    /// followed the first one are served next, in order (stateless servers).
    pub(crate) fn accept_request(&mut self, keep: bool, now: Instant) -> AcceptPoll<Taken> {
        while let Some(entry) = self.pop_backlog() {
            let first = match entry {
                Incoming::Slot(key) => {
                    let slot = &mut self.slots[key.index as usize];
                    let first = slot.conn.pop_first(&mut self.ready);
                    if keep {
                        self.finish_light(key, Some(now));
                    } else {
                        self.finish_stateless(key);
                    }
                    first
                }
                // Nothing else came on its id: the connection ends with its only packet
                // taken, and never had a slot.
                Incoming::First { packet, registered } => {
                    if registered {
                        self.ids.close_pending(packet.conn_id, keep.then_some(now));
                        self.open -= 1;
                    }
                    let cost = cost_of(packet.payload.len());
                    Some((packet, cost))
                }
            };
            if let Some((packet, cost)) = first {
                self.release_rx(cost);
                // A stateless server may be talking to a full connection that sends many
                // requests on one id: it needs its credit back, or it stalls once it sent a
                // window's worth. It goes out with the reply.
                let credit = if !keep && matches!(self.mode(), PeerMode::Credit { .. }) {
                    cost as u32
                } else {
                    0
                };
                return AcceptPoll::Ready(Taken { packet, credit });
            }
            // The link went down between queueing and now; the next round reports it.
        }
        self.accept_end()
    }

    /// Stops accepting: queued connections are refused, acceptors and a waiting reader
    /// are told.
    pub(crate) fn close_accept(&mut self) {
        self.accepting = false;
        while let Some(entry) = self.backlog.pop_front() {
            self.stats.conns_refused += 1;
            let key = match entry {
                Incoming::Slot(key) => key,
                Incoming::First { packet, registered } => {
                    let id = packet.conn_id;
                    let cost = cost_of(packet.payload.len());
                    self.release_rx(cost);
                    if !packet.is_answer() {
                        self.reply(Transmit::Refused(id));
                    }
                    self.credit_back(id, cost);
                    if registered {
                        self.ids.close_pending(id, None);
                        self.open -= 1;
                    }
                    continue;
                }
            };
            let slot = &mut self.slots[key.index as usize];
            let id = slot.conn.id;
            let dropped = slot.conn.close_rx(RxClosed::Local, &mut self.ready);
            if let Some(d) = dropped {
                self.release_rx(d.cost);
                if d.requests > 0 {
                    self.reply(Transmit::Refused(id));
                }
                self.credit_back(id, d.cost + d.uncredited);
            }
            self.release(key, None);
        }
        self.wakeups.push(Wakeup::Acceptors);
        self.unblock_reader();
    }

    /// The link ended: every connection's receive and send side closes, the id map is
    /// forgotten, every parked task is told. Packets already received stay readable on
    /// their connection (only the accept backlog is dropped): like a stream's data before
    /// its end, what the peer sent before closing is delivered.
    pub(crate) fn shutdown(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        self.accepting = false;
        self.pending = None;
        self.unrouted = Bytes::new();
        self.ids.clear();
        self.open = 0;
        while let Some(entry) = self.backlog.pop_front() {
            if let Incoming::Slot(key) = entry {
                self.free_slot(key.index);
            }
        }
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if !slot.live {
                continue;
            }
            slot.conn.end_by_link();
            slot.conn.close_tx();
            slot.conn.registered = false;
            let key = ConnKey {
                index: index as u32,
                gen: slot.gen,
            };
            self.wakeups.push(Wakeup::Readable(key));
            self.wakeups.push(Wakeup::Writable(key));
        }
        self.rx_total = self
            .slots
            .iter()
            .filter(|s| s.live)
            .map(|s| s.conn.queued_cost())
            .sum();
        self.transmits.clear();
        self.wakeups.push(Wakeup::Acceptors);
        self.wakeups.push(Wakeup::Reader);
    }
}
