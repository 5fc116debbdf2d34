//! The smux protocol as a state machine without I/O (`docs/protocols/smux.md`): streams,
//! their buffers and windows, the accept queue, the slow-reader policy, keepalive
//! bookkeeping and the frames waiting to be sent.
//!
//! [`SessionCore`] owns no socket, no task and no clock. Its driver (`session.rs`,
//! `stream.rs`) feeds it:
//! - bytes read from the connection ([`SessionCore::handle_input`]),
//! - the application's operations (open, accept, read, write, flush, shutdown, drop),
//! - the current time, with every call that needs it, and [`SessionCore::handle_timeout`]
//!   when the deadline it asked for ([`SessionCore::poll_timeout`]) has come;
//!
//! and takes from it:
//! - bytes to write ([`SessionCore::write_transmit`]),
//! - [`Event`]s saying who can make progress now ([`SessionCore::poll_event`]): a stream's
//!   blocked reader or writer, the acceptors, the connection reader, the writer, the timer.
//!
//! Application operations return [`Poll`](std::task::Poll): `Pending` means "wait for this
//! stream's `Readable`/`Writable` event", which the core emits exactly once per wait.
//!
//! Scheduling: control frames (NOP, SYN, UPD, out-of-band FIN) always go first in a batch,
//! then data frames are taken round-robin, one frame per stream per turn, so one busy
//! writer cannot starve the others and a window update never waits behind bulk data.
//!
//! `receive` holds what frames from the peer do (and the slow-reader policy), `app` what
//! the application's reads, writes and drops do, `timers` the keepalive and give-up
//! deadlines; this module holds the shared types, the events, the scheduling and the batch
//! building.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::time::Instant;

mod app;
mod receive;
mod timers;

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::frame::{encode_header, Cmd, Frame};

/// The window Go smux assumes for a peer's stream before the first UPD arrives.
pub(crate) const INITIAL_PEER_WINDOW: u32 = 262_144;
/// Bytes of frames the writer gathers before writing them out in one call.
pub(crate) const BATCH_LIMIT: usize = 64 * 1024;
/// Out-of-band FINs (refused SYNs) queued at most; past it a hostile peer that floods SYNs
/// without reading our replies gets no FIN at all, rather than unbounded memory.
const REFUSAL_QUEUE_LIMIT: usize = 4096;

/// The budget of warnings smux peers cause, shared by every session of the process (a
/// session does not know the server it belongs to): a flood of misbehaving sessions writes
/// a bounded number of lines.
static PEER_WARNINGS: nodelink_driver::WarnLimiter = nodelink_driver::WarnLimiter::new();

/// Counters of one session, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Streams reset because their unread data outgrew a buffer bound.
    pub streams_reset: u64,
    /// SYNs refused because the accept backlog was full.
    pub syns_refused: u64,
    /// PSH frames dropped: unknown, closed, reset or already finished streams.
    pub frames_discarded: u64,
    /// Payload bytes in those dropped frames.
    pub bytes_discarded: u64,
}

/// Who can make progress now; the driver wakes the matching task or waker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The session died ([`SessionCore::death`] says why).
    Closed,
    /// There are frames to send.
    Transmit,
    /// A peer-opened stream waits in the accept queue (or the session died).
    Incoming,
    /// Reading the connection may resume: ask [`SessionCore::may_read`] again.
    Resume,
    /// [`SessionCore::poll_timeout`] may have moved earlier.
    Rearm,
    /// A read of this stream that returned `Pending` can now make progress.
    Readable(u32),
    /// A write, flush or shutdown of this stream that returned `Pending` can now make
    /// progress.
    Writable(u32),
}

/// Session-wide events, each pending at most once, plus per-stream ones in order.
#[derive(Default)]
struct Outbox {
    closed: bool,
    transmit: bool,
    incoming: bool,
    resume: bool,
    rearm: bool,
    streams: VecDeque<Event>,
}

/// Who holds the application side of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handle {
    /// Opened by the peer, waiting in the accept queue.
    Pending,
    /// A [`Stream`](crate::Stream) exists.
    Alive,
    /// The [`Stream`](crate::Stream) was dropped.
    Dropped,
}

#[derive(Debug, Clone, Copy)]
enum Control {
    Syn(u32),
    /// The FIN of a stream this side closed or reset.
    Fin(u32),
    /// The FIN answering a SYN refused for a full backlog; counted in `refusals`.
    Refuse(u32),
    Upd(u32),
}

pub(crate) struct StreamEntry {
    handle: Handle,
    recv: VecDeque<BytesMut>,
    recv_len: usize,
    peer_fin: bool,
    reset: Option<Error>,
    /// A read returned `Pending`: the next change a reader cares about emits `Readable`.
    read_blocked: bool,
    num_read: u32,
    incr: u32,
    upd_queued: bool,
    send: BytesMut,
    /// A write, flush or shutdown returned `Pending`: progress emits `Writable`.
    write_blocked: bool,
    fin_requested: bool,
    fin_sent: bool,
    num_written: u32,
    peer_consumed: u32,
    peer_window: u32,
    in_ready: bool,
    /// When the reader last consumed data.
    last_progress: Option<Instant>,
}

impl StreamEntry {
    fn new(handle: Handle) -> StreamEntry {
        StreamEntry {
            handle,
            recv: VecDeque::new(),
            recv_len: 0,
            peer_fin: false,
            reset: None,
            read_blocked: false,
            num_read: 0,
            incr: 0,
            upd_queued: false,
            send: BytesMut::new(),
            write_blocked: false,
            fin_requested: false,
            fin_sent: false,
            num_written: 0,
            peer_consumed: 0,
            peer_window: INITIAL_PEER_WINDOW,
            in_ready: false,
            last_progress: None,
        }
    }

    /// Holds unread data and has consumed none of it since `since`.
    fn stalled_since(&self, since: Instant) -> bool {
        self.recv_len > 0 && self.last_progress.is_none_or(|t| t < since)
    }
}

/// Emits `Readable` for a blocked reader of `entry`.
fn wake_reader(sid: u32, entry: &mut StreamEntry, out: &mut Outbox) {
    if std::mem::take(&mut entry.read_blocked) {
        out.streams.push_back(Event::Readable(sid));
    }
}

/// Emits `Writable` for a blocked writer of `entry`.
fn wake_writer(sid: u32, entry: &mut StreamEntry, out: &mut Outbox) {
    if std::mem::take(&mut entry.write_blocked) {
        out.streams.push_back(Event::Writable(sid));
    }
}

/// Keepalive bookkeeping: when to send the next NOP, when silence becomes fatal.
struct KeepAlive {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
}

/// One smux session's protocol state (see the module documentation).
pub(crate) struct SessionCore {
    version: u8,
    client: bool,
    max_frame: usize,
    stream_window: u32,
    stream_limit: usize,
    receive_limit: usize,
    send_limit: usize,
    backlog: usize,
    stall_timeout: Duration,
    linger: Duration,
    /// Closing gracefully.
    closing: bool,
    /// Until when queued data and FINs may still be sent (`None`: a linger too long to
    /// count, i.e. no limit).
    close_deadline: Option<Instant>,
    streams: HashMap<u32, StreamEntry>,
    next_id: u64,
    accept_queue: VecDeque<u32>,
    control: VecDeque<Control>,
    refusals: usize,
    nop_pending: bool,
    ready: VecDeque<u32>,
    buffered: usize,
    /// Bytes the streams' send buffers hold, waiting for the connection.
    queued: usize,
    /// The server's memory budget holds this session back (see [`SessionCore::set_over_budget`]).
    over_budget: bool,
    /// Streams whose unread data exceeds `stream_limit`, kept current so the reader's
    /// check before every read does not have to look at each stream.
    over_limit: usize,
    death: Option<Error>,
    /// When bytes last arrived (or reading last resumed after a pause).
    last_rx: Instant,
    keepalive: Option<KeepAlive>,
    /// v2 streams whose writes wait for window after the peer's FIN, and when they give
    /// up (see `timers`).
    fin_stalls: BTreeMap<u32, Instant>,
    stats: SessionStats,
    /// Reading the connection is paused because a buffer bound is exceeded.
    paused: bool,
    pause_started: Option<Instant>,
    /// When the pause's verdict is due (see `receive::relieve`).
    pause_deadline: Option<Instant>,
    outbox: Outbox,
}

impl SessionCore {
    /// A session that has just started at `now`; `client` opens odd stream ids.
    /// `config` must have passed [`Config::validate`].
    pub(crate) fn new(config: &Config, client: bool, now: Instant) -> SessionCore {
        let stream_limit = if config.version >= 2 {
            // A Go v2 sender may use its initial 256 KiB guess before our first UPD.
            config.max_stream_buffer.max(INITIAL_PEER_WINDOW as usize)
        } else {
            config.max_stream_buffer
        };
        let keepalive = (!config.keep_alive_disabled).then(|| KeepAlive {
            interval: config.keep_alive_interval,
            timeout: config.keep_alive_timeout,
            next_ping: now + config.keep_alive_interval,
        });
        SessionCore {
            version: config.version,
            client,
            max_frame: config.max_frame_size,
            stream_window: u32::try_from(config.max_stream_buffer).unwrap_or(i32::MAX as u32),
            stream_limit,
            receive_limit: config.max_receive_buffer,
            send_limit: (2 * config.max_frame_size).max(64 * 1024),
            backlog: config.accept_backlog,
            stall_timeout: config.stall_timeout,
            linger: config.linger,
            closing: false,
            close_deadline: None,
            streams: HashMap::new(),
            next_id: if client { 1 } else { 0 },
            accept_queue: VecDeque::new(),
            control: VecDeque::new(),
            refusals: 0,
            nop_pending: false,
            ready: VecDeque::new(),
            buffered: 0,
            queued: 0,
            over_budget: false,
            over_limit: 0,
            death: None,
            last_rx: now,
            keepalive,
            fin_stalls: BTreeMap::new(),
            stats: SessionStats::default(),
            paused: false,
            pause_started: None,
            pause_deadline: None,
            outbox: Outbox::default(),
        }
    }

    /// Why the session died, or `None` while it is alive.
    pub(crate) fn death(&self) -> Option<&Error> {
        self.death.as_ref()
    }

    /// Streams currently known to the session (0 once it is dead).
    pub(crate) fn num_streams(&self) -> usize {
        if self.death.is_some() {
            0
        } else {
            self.streams.len()
        }
    }

    /// The session's counters.
    pub(crate) fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The next thing that happened, for the driver to act on.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        let out = &mut self.outbox;
        if std::mem::take(&mut out.closed) {
            return Some(Event::Closed);
        }
        if std::mem::take(&mut out.transmit) {
            return Some(Event::Transmit);
        }
        if std::mem::take(&mut out.incoming) {
            return Some(Event::Incoming);
        }
        if std::mem::take(&mut out.resume) {
            return Some(Event::Resume);
        }
        if std::mem::take(&mut out.rearm) {
            return Some(Event::Rearm);
        }
        out.streams.pop_front()
    }

    /// Marks the session dead (the first reason wins) and wakes everyone waiting on it.
    pub(crate) fn die(&mut self, err: Error) {
        if self.death.is_some() {
            return;
        }
        // Our own graceful close, or a protocol error already warned about: DEBUG.
        let said = (self.closing && err.kind() == ErrorKind::SessionClosed)
            || err.kind() == ErrorKind::Protocol;
        if said {
            tracing::debug!(
                error = &err as &dyn std::error::Error,
                "smux session closed"
            );
        } else {
            tracing::info!(error = &err as &dyn std::error::Error, "smux session ended");
        }
        self.death = Some(err);
        for (&sid, entry) in self.streams.iter_mut() {
            wake_reader(sid, entry, &mut self.outbox);
            wake_writer(sid, entry, &mut self.outbox);
        }
        let out = &mut self.outbox;
        out.closed = true;
        out.incoming = true;
        out.transmit = true;
        out.resume = true;
        out.rearm = true;
    }

    fn push_control(&mut self, control: Control) {
        self.control.push_back(control);
        self.outbox.transmit = true;
    }

    /// Starts a graceful close at `now`: no stream is opened or accepted any more, streams
    /// waiting in the accept queue are refused, every other stream sends what it has
    /// queued and then its FIN. The driver closes the connection once
    /// [`close_done`](Self::close_done) says everything is out; the session dies anyway
    /// when the linger runs out (see `timers`).
    pub(crate) fn close(&mut self, now: Instant) {
        if self.death.is_some() || self.closing {
            return;
        }
        self.closing = true;
        self.close_deadline = now.checked_add(self.linger);
        for sid in std::mem::take(&mut self.accept_queue) {
            // Refused, as a SYN arriving now would be: not a reset of a stream in use.
            self.discard_stream(sid, "session closing before the stream was accepted");
        }
        let sids: Vec<u32> = self.streams.keys().copied().collect();
        for sid in sids {
            if let Some(entry) = self.streams.get_mut(&sid) {
                entry.fin_requested = true;
            }
            self.schedule(sid);
        }
        tracing::debug!("smux session closing gracefully");
        let out = &mut self.outbox;
        out.transmit = true;
        out.rearm = true;
        out.incoming = true;
    }

    /// Closing, and every queued frame has been handed to the driver: once it has written
    /// them, it may close the connection.
    pub(crate) fn close_done(&self) -> bool {
        self.closing
            && self.death.is_none()
            && self.control.is_empty()
            && !self.nop_pending
            && self.ready.is_empty()
            && self
                .streams
                .values()
                .all(|e| e.reset.is_some() || (e.send.is_empty() && e.fin_sent))
    }

    /// Allocates the next local stream id and queues its SYN.
    pub(crate) fn open(&mut self) -> Result<u32, Error> {
        if let Some(err) = &self.death {
            return Err(closed_error(err));
        }
        if self.closing {
            return Err(Error::new(
                ErrorKind::SessionClosed,
                "the session is closing",
            ));
        }
        let id = self.next_id + 2;
        let Ok(sid) = u32::try_from(id) else {
            return Err(Error::new(
                ErrorKind::StreamIdsExhausted,
                "all stream ids of this side are used; start a new session",
            ));
        };
        self.next_id = id;
        self.streams.insert(sid, StreamEntry::new(Handle::Alive));
        self.push_control(Control::Syn(sid));
        tracing::debug!(sid, "smux stream opened");
        Ok(sid)
    }

    /// Hands the oldest peer-opened stream to an acceptor; `None` when there is none yet
    /// (wait for [`Event::Incoming`]). Streams the peer opened before the session died
    /// are still handed out (their data and FIN can still be read), then the death is
    /// reported.
    pub(crate) fn accept(&mut self) -> Result<Option<u32>, Error> {
        if self.closing && self.death.is_none() {
            return Err(Error::new(
                ErrorKind::SessionClosed,
                "the session is closing",
            ));
        }
        while let Some(sid) = self.accept_queue.pop_front() {
            if let Some(entry) = self.streams.get_mut(&sid) {
                entry.handle = Handle::Alive;
                return Ok(Some(sid));
            }
        }
        match &self.death {
            Some(err) => Err(closed_error(err)),
            None => Ok(None),
        }
    }

    /// v2 only: data waits for window, but the peer has sent its FIN. A Go peer's FIN is a
    /// full close, after which no window update will ever come (Go's writer gives up at
    /// this point); a peer of this crate may still read and update the window.
    fn blocked_after_fin(&self, sid: u32) -> bool {
        self.streams.get(&sid).is_some_and(|e| {
            self.version >= 2
                && e.peer_fin
                && e.reset.is_none()
                && !e.send.is_empty()
                && self.window(e) <= 0
        })
    }

    fn window(&self, entry: &StreamEntry) -> i64 {
        if self.version < 2 {
            return i64::MAX;
        }
        let inflight = entry.num_written.wrapping_sub(entry.peer_consumed) as i32;
        i64::from(entry.peer_window) - i64::from(inflight)
    }

    fn sendable(&self, entry: &StreamEntry) -> bool {
        if entry.reset.is_some() {
            return false;
        }
        if entry.send.is_empty() {
            entry.fin_requested && !entry.fin_sent
        } else {
            self.window(entry) > 0
        }
    }

    fn schedule(&mut self, sid: u32) {
        let Some(entry) = self.streams.get(&sid) else {
            return;
        };
        if entry.in_ready || !self.sendable(entry) {
            return;
        }
        if let Some(entry) = self.streams.get_mut(&sid) {
            entry.in_ready = true;
        }
        self.ready.push_back(sid);
        self.outbox.transmit = true;
    }

    fn maybe_remove(&mut self, sid: u32) {
        if let Some(entry) = self.streams.get(&sid) {
            if entry.handle == Handle::Dropped && (entry.fin_sent || entry.reset.is_some()) {
                let unread = entry.recv_len;
                self.buffered -= unread;
                self.recv_len_changed(unread, 0);
                self.streams.remove(&sid);
                self.fin_stalls.remove(&sid);
                tracing::debug!(sid, "smux stream closed");
            }
        }
    }

    /// Keeps `over_limit` in step with a change of one stream's unread byte count; every
    /// change of a `recv_len` (and every removal of a stream) must come through here.
    fn recv_len_changed(&mut self, before: usize, after: usize) {
        let limit = self.stream_limit;
        match (before > limit, after > limit) {
            (false, true) => self.over_limit += 1,
            (true, false) => self.over_limit -= 1,
            _ => {}
        }
    }

    /// Appends the next frames to send to `out` (up to about [`BATCH_LIMIT`] bytes):
    /// control first, then data round-robin. Nothing once the session is dead.
    pub(crate) fn write_transmit(&mut self, out: &mut BytesMut) {
        if self.death.is_some() {
            return;
        }
        let version = self.version;
        if std::mem::take(&mut self.nop_pending) {
            Frame::nop(version).encode(out);
        }
        while let Some(control) = self.control.pop_front() {
            match control {
                Control::Syn(sid) => Frame::syn(version, sid).encode(out),
                Control::Fin(sid) => Frame::fin(version, sid).encode(out),
                Control::Refuse(sid) => {
                    debug_assert!(self.refusals > 0, "refusal FIN not counted");
                    self.refusals = self.refusals.saturating_sub(1);
                    Frame::fin(version, sid).encode(out);
                }
                Control::Upd(sid) => {
                    if let Some(entry) = self.streams.get_mut(&sid) {
                        entry.upd_queued = false;
                        Frame::upd(version, sid, entry.num_read, self.stream_window).encode(out);
                    }
                }
            }
        }
        while out.len() < BATCH_LIMIT {
            let Some(sid) = self.ready.pop_front() else {
                break;
            };
            let Some(entry) = self.streams.get(&sid) else {
                continue;
            };
            let window = self.window(entry);
            let max_frame = self.max_frame;
            let Some(entry) = self.streams.get_mut(&sid) else {
                continue;
            };
            entry.in_ready = false;
            if entry.reset.is_some() {
                continue;
            }
            if !entry.send.is_empty() && window > 0 {
                let n = entry.send.len().min(max_frame).min(window as usize);
                encode_header(out, version, Cmd::Psh, n as u16, sid);
                out.extend_from_slice(&entry.send[..n]);
                entry.send.advance(n);
                self.queued -= n;
                entry.num_written = entry.num_written.wrapping_add(n as u32);
                wake_writer(sid, entry, &mut self.outbox);
            }
            if entry.send.is_empty() && entry.fin_requested && !entry.fin_sent {
                entry.fin_sent = true;
                Frame::fin(version, sid).encode(out);
                wake_writer(sid, entry, &mut self.outbox);
                self.maybe_remove(sid);
            } else {
                self.schedule(sid);
            }
        }
    }
}

/// The error `open`/`accept` report on a dead session: always of kind
/// [`SessionClosed`](ErrorKind::SessionClosed), with the original reason in the detail.
pub(crate) fn closed_error(cause: &Error) -> Error {
    if cause.kind() == ErrorKind::SessionClosed {
        cause.clone()
    } else {
        cause.rekind(ErrorKind::SessionClosed, cause.to_string())
    }
}
