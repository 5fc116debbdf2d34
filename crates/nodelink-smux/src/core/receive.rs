//! The receiving half of the state machine: decoding and applying frames from the peer,
//! buffering stream data, and the backpressure and reset policy for readers that fall
//! behind.

use bytes::BytesMut;
use nodelink_driver::peer_warn;
use tokio::time::Instant;

use super::{
    wake_reader, wake_writer, Control, Handle, SessionCore, StreamEntry, PEER_WARNINGS,
    REFUSAL_QUEUE_LIMIT,
};
use crate::error::{Error, ErrorKind};
use crate::frame::{upd_fields, Cmd, FrameDecoder, Header};

/// Received payloads are appended to a stream's last buffered chunk while it stays within
/// this size, so a stream's buffer holds at most about two chunks per this many bytes.
const COALESCE_LIMIT: usize = 4096;

impl SessionCore {
    /// Takes bytes read from the connection at `now`: applies every complete frame at the
    /// front of `input` and returns how many bytes it used (the rest is an incomplete frame
    /// the driver keeps for the next call). A frame that breaks the protocol kills the
    /// session (logged, [`Protocol`](ErrorKind::Protocol)); nothing more is used after it.
    ///
    /// Only call this while [`may_read`](Self::may_read) says so: that is what bounds the
    /// memory unread data holds.
    pub(crate) fn handle_input(&mut self, input: &[u8], now: Instant) -> usize {
        if self.death.is_some() {
            return input.len();
        }
        self.last_rx = now;
        let decoder = FrameDecoder::new(self.version);
        let mut used = 0;
        loop {
            // Frames are handled in place: the state copies out only the payloads it keeps,
            // so no slice of the driver's buffer outlives this call.
            let failure = match decoder.peek(&input[used..]) {
                Ok(Some((header, payload))) => {
                    let applied = self.on_frame(header, payload, now);
                    used += header.frame_len();
                    match applied {
                        Ok(()) => continue,
                        Err(e) => e,
                    }
                }
                Ok(None) => return used,
                Err(e) => e,
            };
            peer_warn!(
                PEER_WARNINGS,
                error = &failure as &dyn std::error::Error,
                "smux peer broke the protocol; closing the session"
            );
            self.die(failure);
            return input.len();
        }
    }

    /// Applies one received frame. An error is fatal for the session.
    /// `payload` is borrowed from the reader's buffer: whatever is kept must be copied.
    pub(crate) fn on_frame(
        &mut self,
        header: Header,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), Error> {
        let sid = header.sid;
        match header.cmd {
            Cmd::Nop => {}
            Cmd::Syn => self.on_syn(sid)?,
            Cmd::Fin => {
                if let Some(entry) = self.streams.get_mut(&sid) {
                    entry.peer_fin = true;
                    wake_reader(sid, entry, &mut self.outbox);
                    wake_writer(sid, entry, &mut self.outbox);
                    self.maybe_remove(sid);
                }
            }
            Cmd::Psh => self.on_data(sid, payload),
            Cmd::Upd => {
                let Some((consumed, window)) = upd_fields(payload) else {
                    return Err(Error::protocol("malformed UPD frame"));
                };
                if let Some(entry) = self.streams.get_mut(&sid) {
                    entry.peer_consumed = consumed;
                    entry.peer_window = window;
                    if (entry.num_written.wrapping_sub(consumed) as i32) < 0 {
                        self.reset_stream(sid, "peer acknowledged more data than was sent");
                    } else {
                        if let Some(give_up) = self.fin_stalls.get_mut(&sid) {
                            // The peer still grants window after its FIN: the wait goes on.
                            *give_up = now + self.stall_timeout;
                        }
                        self.schedule(sid);
                    }
                }
            }
        }
        Ok(())
    }

    fn on_syn(&mut self, sid: u32) -> Result<(), Error> {
        let ours = if self.client { 1 } else { 0 };
        if sid == 0 || sid % 2 == ours {
            return Err(Error::protocol(format!(
                "peer opened stream {sid}, an id reserved for this side"
            )));
        }
        if self.streams.contains_key(&sid) {
            tracing::debug!(sid, "duplicate SYN ignored");
            return Ok(());
        }
        if self.accept_queue.len() >= self.backlog || self.closing {
            self.stats.syns_refused += 1;
            if self.closing {
                tracing::debug!(sid, "session closing: stream refused");
            } else {
                peer_warn!(
                    PEER_WARNINGS,
                    sid,
                    backlog = self.backlog,
                    "accept backlog full: stream refused"
                );
            }
            if self.refusals < REFUSAL_QUEUE_LIMIT {
                self.refusals += 1;
                self.push_control(Control::Refuse(sid));
            }
            return Ok(());
        }
        self.streams.insert(sid, StreamEntry::new(Handle::Pending));
        self.accept_queue.push_back(sid);
        self.outbox.incoming = true;
        tracing::debug!(sid, "smux stream opened by peer");
        Ok(())
    }

    fn on_data(&mut self, sid: u32, payload: &[u8]) {
        let n = payload.len();
        if n == 0 {
            return;
        }
        let accepted = match self.streams.get_mut(&sid) {
            Some(e) if e.handle != Handle::Dropped && e.reset.is_none() && !e.peer_fin => {
                // Small payloads join the last chunk so that the buffer bounds, which
                // count payload bytes, also bound the memory: a chunk of its own per
                // one-byte frame would cost far more than the byte it holds.
                match e.recv.back_mut() {
                    Some(back) if back.len() + n <= COALESCE_LIMIT => {
                        back.extend_from_slice(payload);
                    }
                    _ => e.recv.push_back(BytesMut::from(payload)),
                }
                let before = e.recv_len;
                e.recv_len += n;
                wake_reader(sid, e, &mut self.outbox);
                Some((before, e.recv_len))
            }
            _ => None,
        };
        let Some((before, stream_len)) = accepted else {
            self.stats.frames_discarded += 1;
            self.stats.bytes_discarded += n as u64;
            return;
        };
        self.buffered += n;
        self.recv_len_changed(before, stream_len);
        // In v2 the peer must stay within the window we granted; overrunning it is a
        // protocol violation confined to this stream. (In v1 the reader applies
        // backpressure instead, see `relieve`.)
        if self.version >= 2 && stream_len > self.stream_limit {
            self.reset_stream(sid, "peer overran the stream window");
        }
    }

    /// Whether the driver may read the connection now. While a buffer bound is exceeded
    /// it must not (backpressure, as Go smux does); it waits for [`Event::Resume`]
    /// (buffered data was consumed or dropped, or the pause's verdict let reading resume)
    /// and asks again.
    ///
    /// [`Event::Resume`]: super::Event::Resume
    pub(crate) fn may_read(&mut self, now: Instant) -> bool {
        self.death.is_none() && self.relieve(now).is_none()
    }

    /// Bytes this session holds: received and unread, and queued to send.
    pub(crate) fn held(&self) -> usize {
        self.buffered + self.queued
    }

    /// Bytes received and not yet read by the streams: the part of [`held`](Self::held)
    /// that pausing the reader stops from growing (queued sends drain either way, and in
    /// protocol version 2 they wait for window updates that only reading brings in).
    pub(crate) fn received(&self) -> usize {
        self.buffered
    }

    /// The server's memory budget is exceeded and this session holds more than its floor
    /// (`over`), or no longer. The driver asks before each read. Held back, the session
    /// pauses as when its own bound is exceeded: its keepalive timeout is suspended, and
    /// once the pause has lasted `stall_timeout` its stalled stream holding the most
    /// unread data is reset, so a stream nobody reads cannot keep the others waiting for
    /// the rest of the server.
    pub(crate) fn set_over_budget(&mut self, over: bool, now: Instant) {
        if over != self.over_budget {
            self.over_budget = over;
            self.relieve(now);
        }
    }

    /// While a buffer bound is exceeded, reading is paused. Once the pause has lasted
    /// `stall_timeout`, streams that consumed nothing during it count as stalled: a stalled
    /// stream over its own bound is reset, and if the session bound is still exceeded the
    /// stalled stream holding the most data is reset, until reading can resume. Returns when
    /// to judge again, or `None` when reading may go on.
    pub(super) fn relieve(&mut self, now: Instant) -> Option<Instant> {
        let stall = self.stall_timeout;
        let deadline = self.relieve_inner(now, stall);
        if deadline != self.pause_deadline {
            if deadline.is_some() {
                self.outbox.rearm = true;
            }
            if deadline.is_none() && self.paused {
                // Reading resumes: the peer's silence is measured from now on, since
                // nothing was read while paused.
                self.last_rx = self.last_rx.max(now);
            }
            self.pause_deadline = deadline;
        }
        self.paused = deadline.is_some();
        deadline
    }

    fn relieve_inner(&mut self, now: Instant, stall: std::time::Duration) -> Option<Instant> {
        loop {
            debug_assert_eq!(
                self.over_limit,
                self.streams
                    .values()
                    .filter(|e| e.recv_len > self.stream_limit)
                    .count(),
                "over-limit stream count out of step"
            );
            debug_assert_eq!(
                self.queued,
                self.streams.values().map(|e| e.send.len()).sum::<usize>(),
                "queued byte count out of step"
            );
            if self.over_limit == 0 && self.buffered <= self.receive_limit && !self.over_budget {
                self.pause_started = None;
                return None;
            }
            let start = *self.pause_started.get_or_insert(now);
            if now < start + stall {
                return Some(start + stall);
            }
            let mut victim = self
                .streams
                .iter()
                .find(|(_, e)| e.recv_len > self.stream_limit && e.stalled_since(start))
                .map(|(&sid, _)| sid);
            if victim.is_none() && (self.buffered > self.receive_limit || self.over_budget) {
                victim = self
                    .streams
                    .iter()
                    .filter(|(_, e)| e.stalled_since(start))
                    .max_by_key(|(_, e)| e.recv_len)
                    .map(|(&sid, _)| sid);
            }
            match victim {
                Some(sid) => {
                    self.reset_stream(sid, "reader stalled while its buffer was full");
                    if self.over_limit == 0 && self.buffered <= self.receive_limit {
                        // Only the shared budget held us back: one stream per verdict.
                        // The reset gave memory back; whether the session is still over
                        // its share is the driver's to judge afresh (the budget counts
                        // every session), and a new pause starts if it is.
                        self.over_budget = false;
                    }
                }
                None => {
                    // Every stream involved is consuming, only slowly: keep waiting, and
                    // judge progress afresh over the next period.
                    self.pause_started = Some(now);
                    return Some(now + stall);
                }
            }
        }
    }

    /// Ends a stream locally: buffered data both ways is dropped, the peer gets a FIN, the
    /// application gets a [`StreamReset`](ErrorKind::StreamReset) error.
    pub(crate) fn reset_stream(&mut self, sid: u32, reason: &str) {
        if self.streams.get(&sid).is_none_or(|e| e.reset.is_some()) {
            return;
        }
        self.stats.streams_reset += 1;
        peer_warn!(PEER_WARNINGS, sid, reason, "smux stream reset");
        self.discard_stream(sid, reason);
    }

    /// What a reset does, without counting or logging it as one (a stream refused while
    /// the session closes).
    pub(super) fn discard_stream(&mut self, sid: u32, reason: &str) {
        let Some(entry) = self.streams.get_mut(&sid) else {
            return;
        };
        if entry.reset.is_some() {
            return;
        }
        let unread = std::mem::take(&mut entry.recv_len);
        entry.recv.clear();
        self.queued -= entry.send.len();
        entry.send.clear();
        entry.reset = Some(Error::new(ErrorKind::StreamReset, reason));
        wake_reader(sid, entry, &mut self.outbox);
        wake_writer(sid, entry, &mut self.outbox);
        let send_fin = !entry.fin_sent;
        entry.fin_sent = true;
        let pending = entry.handle == Handle::Pending;
        self.buffered -= unread;
        self.recv_len_changed(unread, 0);
        if send_fin {
            self.push_control(Control::Fin(sid));
        }
        self.fin_stalls.remove(&sid);
        if self.paused && unread > 0 {
            // The freed room may let reading resume before the pause's verdict is due.
            self.outbox.resume = true;
        }
        if pending {
            self.accept_queue.retain(|&s| s != sid);
            self.streams.remove(&sid);
        } else {
            self.maybe_remove(sid);
        }
    }
}
