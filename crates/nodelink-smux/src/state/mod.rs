//! The session's shared state machine: streams, their buffers and windows, the accept queue
//! and the queues the writer drains. Everything here runs under the session mutex and does
//! no I/O; the tasks in `session.rs` feed it frames and take batches of bytes from it.
//!
//! Scheduling: control frames (NOP, SYN, UPD, out-of-band FIN) always go first in a batch,
//! then data frames are taken round-robin, one frame per stream per turn, so one busy
//! writer cannot starve the others and a window update never waits behind bulk data.
//!
//! `receive` holds what frames from the peer do (and the slow-reader policy), `app` what
//! the application's reads, writes and drops do; this module holds the shared types, the
//! scheduling and the batch building.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;

mod app;
mod receive;

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
    read_waker: Option<Waker>,
    num_read: u32,
    incr: u32,
    upd_queued: bool,
    send: BytesMut,
    write_waker: Option<Waker>,
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
            read_waker: None,
            num_read: 0,
            incr: 0,
            upd_queued: false,
            send: BytesMut::new(),
            write_waker: None,
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

    fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

pub(crate) struct Inner {
    version: u8,
    client: bool,
    max_frame: usize,
    stream_window: u32,
    stream_limit: usize,
    receive_limit: usize,
    send_limit: usize,
    backlog: usize,
    pub(crate) stall_timeout: Duration,
    streams: HashMap<u32, StreamEntry>,
    next_id: u64,
    accept_queue: VecDeque<u32>,
    control: VecDeque<Control>,
    refusals: usize,
    nop_pending: bool,
    ready: VecDeque<u32>,
    buffered: usize,
    /// Streams whose unread data exceeds `stream_limit`, kept current so the reader's
    /// check before every read does not have to look at each stream.
    over_limit: usize,
    death: Option<Error>,
    pub(crate) last_rx: Instant,
    pub(crate) stats: SessionStats,
    /// The reader has stopped reading the connection because a buffer bound is exceeded.
    pub(crate) paused: bool,
    pause_started: Option<Instant>,
    writer: Arc<Notify>,
    acceptors: Arc<Notify>,
    progress: Arc<Notify>,
}

impl Inner {
    pub(crate) fn new(
        config: &Config,
        client: bool,
        writer: Arc<Notify>,
        acceptors: Arc<Notify>,
        progress: Arc<Notify>,
    ) -> Inner {
        let stream_limit = if config.version >= 2 {
            // A Go v2 sender may use its initial 256 KiB guess before our first UPD.
            config.max_stream_buffer.max(INITIAL_PEER_WINDOW as usize)
        } else {
            config.max_stream_buffer
        };
        Inner {
            version: config.version,
            client,
            max_frame: config.max_frame_size,
            stream_window: u32::try_from(config.max_stream_buffer).unwrap_or(i32::MAX as u32),
            stream_limit,
            receive_limit: config.max_receive_buffer,
            send_limit: (2 * config.max_frame_size).max(64 * 1024),
            backlog: config.accept_backlog,
            stall_timeout: config.stall_timeout,
            streams: HashMap::new(),
            next_id: if client { 1 } else { 0 },
            accept_queue: VecDeque::new(),
            control: VecDeque::new(),
            refusals: 0,
            nop_pending: false,
            ready: VecDeque::new(),
            buffered: 0,
            over_limit: 0,
            death: None,
            last_rx: Instant::now(),
            stats: SessionStats::default(),
            paused: false,
            pause_started: None,
            writer,
            acceptors,
            progress,
        }
    }

    pub(crate) fn death(&self) -> Option<&Error> {
        self.death.as_ref()
    }

    pub(crate) fn num_streams(&self) -> usize {
        if self.death.is_some() {
            0
        } else {
            self.streams.len()
        }
    }

    /// Marks the session dead (the first reason wins) and wakes everyone waiting on it.
    pub(crate) fn die(&mut self, err: Error) {
        if self.death.is_some() {
            return;
        }
        tracing::debug!(error = %err, "smux session closing");
        self.death = Some(err);
        for entry in self.streams.values_mut() {
            entry.wake_all();
        }
        self.acceptors.notify_waiters();
        self.writer.notify_one();
    }

    pub(crate) fn queue_nop(&mut self) {
        self.nop_pending = true;
        self.writer.notify_one();
    }

    fn push_control(&mut self, control: Control) {
        self.control.push_back(control);
        self.writer.notify_one();
    }

    /// Allocates the next local stream id and queues its SYN.
    pub(crate) fn open_local(&mut self) -> Result<u32, Error> {
        if let Some(err) = &self.death {
            return Err(closed_error(err));
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

    /// Hands the oldest peer-opened stream to an acceptor.
    pub(crate) fn pop_accept(&mut self) -> Result<Option<u32>, Error> {
        if let Some(err) = &self.death {
            return Err(closed_error(err));
        }
        while let Some(sid) = self.accept_queue.pop_front() {
            if let Some(entry) = self.streams.get_mut(&sid) {
                entry.handle = Handle::Alive;
                return Ok(Some(sid));
            }
        }
        Ok(None)
    }

    /// v2 only: data waits for window, but the peer has sent its FIN. A Go peer's FIN is a
    /// full close, after which no window update will ever come (Go's writer gives up at
    /// this point); a peer of this crate may still read and update the window.
    pub(crate) fn blocked_after_fin(&self, sid: u32) -> bool {
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
        self.writer.notify_one();
    }

    fn maybe_remove(&mut self, sid: u32) {
        if let Some(entry) = self.streams.get(&sid) {
            if entry.handle == Handle::Dropped && (entry.fin_sent || entry.reset.is_some()) {
                let unread = entry.recv_len;
                self.buffered -= unread;
                self.recv_len_changed(unread, 0);
                self.streams.remove(&sid);
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

    /// Appends the next frames to send to `out`: control first, then data round-robin.
    pub(crate) fn fill_batch(&mut self, out: &mut BytesMut) {
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
                entry.num_written = entry.num_written.wrapping_add(n as u32);
                if let Some(w) = entry.write_waker.take() {
                    w.wake();
                }
            }
            if entry.send.is_empty() && entry.fin_requested && !entry.fin_sent {
                entry.fin_sent = true;
                Frame::fin(version, sid).encode(out);
                if let Some(w) = entry.write_waker.take() {
                    w.wake();
                }
                self.maybe_remove(sid);
            } else {
                self.schedule(sid);
            }
        }
    }
}

/// The error `open_stream`/`accept_stream` report on a dead session: always of kind
/// [`SessionClosed`](ErrorKind::SessionClosed), with the original reason in the detail.
pub(crate) fn closed_error(cause: &Error) -> Error {
    if cause.kind() == ErrorKind::SessionClosed {
        cause.clone()
    } else {
        Error::new(ErrorKind::SessionClosed, cause.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Waker};

    use tokio::io::ReadBuf;

    use super::*;
    use crate::frame::{FrameDecoder, Header};

    fn server(config: &Config) -> Inner {
        let notify = || Arc::new(Notify::new());
        Inner::new(config, false, notify(), notify(), notify())
    }

    fn feed(inner: &mut Inner, cmd: Cmd, sid: u32, payload: &[u8]) {
        let header = Header {
            version: inner.version,
            cmd,
            len: payload.len(),
            sid,
        };
        inner.on_frame(header, payload).unwrap();
    }

    /// The FINs of one batch, by stream id.
    fn batch_fins(inner: &mut Inner) -> Vec<u32> {
        let mut out = BytesMut::new();
        inner.fill_batch(&mut out);
        let mut dec = FrameDecoder::new(inner.version);
        let mut fins = Vec::new();
        while let Some(frame) = dec.decode(&mut out).unwrap() {
            if frame.cmd == Cmd::Fin {
                fins.push(frame.sid);
            }
        }
        fins
    }

    #[test]
    fn only_refusals_count_against_the_refusal_cap() {
        let config = Config {
            accept_backlog: 1,
            ..Config::default()
        };
        let mut inner = server(&config);
        feed(&mut inner, Cmd::Syn, 1, &[]);
        feed(&mut inner, Cmd::Syn, 3, &[]);
        assert_eq!(inner.refusals, 1);
        // A reset's FIN is not a refusal: queuing and sending it leaves the count alone.
        inner.reset_stream(1, "test");
        assert_eq!(inner.refusals, 1);
        // The reset stream left the accept queue: the next SYN fills it again.
        feed(&mut inner, Cmd::Syn, 5, &[]);
        let refused: Vec<u32> = (0..REFUSAL_QUEUE_LIMIT as u32 + 10)
            .map(|i| 7 + 2 * i)
            .collect();
        for &sid in &refused {
            feed(&mut inner, Cmd::Syn, sid, &[]);
        }
        assert_eq!(inner.refusals, REFUSAL_QUEUE_LIMIT);
        let fins = batch_fins(&mut inner);
        // The first refusal, the reset, then refusals up to the cap.
        assert_eq!(fins.len(), 1 + REFUSAL_QUEUE_LIMIT);
        assert_eq!(&fins[..2], &[3, 1]);
        assert_eq!(inner.refusals, 0);
        assert_eq!(inner.stats.syns_refused, 1 + refused.len() as u64);
    }

    #[test]
    fn over_limit_count_follows_every_change() {
        let config = Config {
            max_stream_buffer: 16,
            max_receive_buffer: 1024,
            ..Config::default()
        };
        let mut inner = server(&config);
        let now = Instant::now();
        let stall = Duration::from_secs(5);
        for sid in [1, 3, 5] {
            feed(&mut inner, Cmd::Syn, sid, &[]);
            assert_eq!(inner.pop_accept().unwrap(), Some(sid));
        }
        // Exactly at the bound is not over it.
        feed(&mut inner, Cmd::Psh, 1, &[0; 16]);
        assert_eq!(inner.over_limit, 0);
        assert_eq!(inner.relieve(now, stall), None);
        feed(&mut inner, Cmd::Psh, 1, &[0; 4]);
        feed(&mut inner, Cmd::Psh, 3, &[0; 30]);
        feed(&mut inner, Cmd::Psh, 5, &[0; 40]);
        assert_eq!(inner.over_limit, 3);
        assert!(inner.relieve(now, stall).is_some());

        // Reading below the bound, a reset and a drop each take one stream off.
        let mut cx = Context::from_waker(Waker::noop());
        let mut space = [0u8; 8];
        let mut buf = ReadBuf::new(&mut space);
        assert!(inner.poll_read(1, &mut cx, &mut buf).is_ready());
        assert_eq!(inner.over_limit, 2);
        inner.reset_stream(3, "test");
        assert_eq!(inner.over_limit, 1);
        assert!(inner.relieve(now, stall).is_some());
        inner.handle_dropped(5);
        assert_eq!(inner.over_limit, 0);
        assert_eq!(inner.relieve(now, stall), None);
        assert_eq!(inner.buffered, 12);
    }
}
