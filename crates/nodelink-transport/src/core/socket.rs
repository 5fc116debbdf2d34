//! One accepted socket's protocol, without I/O: which lightweight connections are open in
//! each direction, and the teardown by reference counts (docs/protocols/transport.md,
//! "Frames" and "Closing").
//!
//! A [`SocketCore`] is fed with the frames the peer sent, the application's opens and
//! closes, and the current time. It answers with control frames to send (drained with
//! [`SocketCore::write_transmit`]), events for the application ([`SocketCore::poll_event`])
//! and a timer ([`SocketCore::next_timer`]). It never touches a socket or a clock, so the
//! teardown rules can be driven through any schedule, deterministically (the property
//! tests in `sim_tests.rs` do).
//!
//! Data frames the application sends do not pass through here: the driver writes them
//! straight to the socket, and only the frames whose order against them matters (closing a
//! connection) are produced under the same lock as the socket's write queue.
//!
//! ```text
//!   Open --our close leaves nothing open: CloseSocket--> Closing
//!   Open --the peer's CloseConnection empties the socket after our own close
//!          (closes that crossed): CloseSocket--> Closing
//!   Closing --CreatedNewConnection--> Open
//!   Open/Closing --CloseSocket agreed, CloseEndPoint, timeout, loss--> Finished
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::wire::{Frame, FIRST_LCID};

/// The limits a socket core enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SocketLimits {
    /// Most connections the peer may have open at once.
    pub(crate) max_incoming: usize,
    /// How long a ProbeSocket or our CloseSocket may wait for its answer (`None`: no
    /// probes, and an unanswered close waits for the peer's next move).
    pub(crate) answer_timeout: Option<Duration>,
}

/// Where the socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// In use; connections may be opened.
    Open,
    /// We sent CloseSocket and wait for the peer's; a new connection must wait too.
    Closing,
    /// Over: the driver forgets the socket.
    Finished,
}

/// How a socket ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The CloseSocket exchange completed with nothing open: nothing was lost.
    Agreed,
    /// We gave up on an unanswered CloseSocket; nothing was open, nothing is lost.
    Abandoned,
    /// Our endpoint is closing (we sent CloseEndPoint).
    Closed,
    /// The peer's endpoint closed (CloseEndPoint): its connections are closed; ours are
    /// lost if we had any ([`SocketCore::outgoing`]).
    PeerEndPointClosed,
    /// The socket failed, or the peer ended it while we still had connections to it: the
    /// application hears that the peer is lost (with this reason) if `report`.
    Lost { reason: String, report: bool },
}

/// What the application learns from the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SocketEvent {
    /// The peer opened connection `lcid`.
    Opened(u32),
    /// A message on the peer's connection `lcid`.
    Received(u32, Bytes),
    /// The peer's connection `lcid` is closed.
    Closed(u32),
    /// A close in progress was cancelled by a new connection from the peer: connects
    /// waiting for the close to resolve may use the socket again.
    Resumed,
    /// The socket is over; the last event.
    Finished(End),
}

/// The peer broke the protocol; the socket must be dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Violation(pub(crate) String);

/// Why a connection cannot be opened on this socket now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenRefused {
    /// Closing or finished: wait for the socket to resolve, then retry.
    NotOpen,
    /// Every lcid was used on this socket (they are never reused).
    Exhausted,
}

/// One socket's connection bookkeeping and teardown.
#[derive(Debug)]
pub(crate) struct SocketCore {
    limits: SocketLimits,
    phase: Phase,
    /// Our open connections on this socket.
    outgoing: u32,
    /// The peer's open connections.
    incoming: BTreeSet<u32>,
    /// The last lcid the peer announced (0 if none yet).
    last_incoming: u32,
    /// The lcid our next connection gets.
    next_lcid: u32,
    /// Our close left the peer's connections open; the CloseSocket we could not send then
    /// is owed once they are gone (see the module's diagram: closes that crossed).
    close_owed: bool,
    /// The close in progress (or owed) was asked for by our application closing its last
    /// connection, not re-armed by the peer: see [`Self::needs_room`].
    app_close: bool,
    closing_deadline: Option<Instant>,
    probe_deadline: Option<Instant>,
    transmit: Vec<Frame>,
    events: VecDeque<SocketEvent>,
}

impl SocketCore {
    pub(crate) fn new(limits: SocketLimits) -> Self {
        SocketCore {
            limits,
            phase: Phase::Open,
            outgoing: 0,
            incoming: BTreeSet::new(),
            last_incoming: 0,
            next_lcid: FIRST_LCID,
            close_owed: false,
            app_close: false,
            closing_deadline: None,
            probe_deadline: None,
            transmit: Vec::new(),
            events: VecDeque::new(),
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the driver must wait for room in the application's event queue before
    /// handling `frame`. Data and new connections wait: that is the backpressure on the
    /// peer. One exception: a new connection while a close that our application asked for
    /// is in progress. It resumes the socket, and a connect of ours may be waiting for
    /// exactly that while the application, busy in that connect, empties no queue (waiting
    /// would deadlock both until the connect times out). Only the application's close
    /// earns the exception, so it posts at most one event past the queue's capacity per
    /// close of ours: a peer repeating "open, close" re-arms the close itself, and those
    /// closes wait for room like everything else.
    pub(crate) fn needs_room(&self, frame: &Frame) -> bool {
        match frame {
            Frame::Data { .. } => true,
            Frame::CreatedNewConnection(_) => !(self.phase == Phase::Closing && self.app_close),
            _ => false,
        }
    }

    /// Our open connections.
    pub(crate) fn outgoing(&self) -> u32 {
        self.outgoing
    }

    /// The peer's open connections.
    pub(crate) fn incoming(&self) -> usize {
        self.incoming.len()
    }

    /// The last lcid we announced, 0 if none: what a peer's CloseSocket must name for the
    /// close to be agreed.
    fn last_sent(&self) -> u32 {
        if self.next_lcid == FIRST_LCID {
            0
        } else {
            self.next_lcid - 1
        }
    }

    fn unused(&self) -> bool {
        self.outgoing == 0 && self.incoming.is_empty()
    }

    /// Opens a connection of ours: returns its lcid and queues CreatedNewConnection.
    pub(crate) fn open(&mut self) -> Result<u32, OpenRefused> {
        if self.phase != Phase::Open {
            return Err(OpenRefused::NotOpen);
        }
        let lcid = self.next_lcid;
        if lcid == u32::MAX {
            return Err(OpenRefused::Exhausted);
        }
        self.next_lcid += 1;
        self.outgoing += 1;
        self.close_owed = false;
        self.app_close = false;
        self.transmit.push(Frame::CreatedNewConnection(lcid));
        Ok(lcid)
    }

    /// Closes our connection `lcid` (the caller closes each one once): queues
    /// CloseConnection, and CloseSocket if that left nothing open.
    pub(crate) fn close(&mut self, lcid: u32, now: Instant) {
        if self.phase == Phase::Finished {
            return;
        }
        self.transmit.push(Frame::CloseConnection(lcid));
        self.outgoing = self.outgoing.saturating_sub(1);
        if self.outgoing == 0 {
            self.app_close = true;
            if !self.incoming.is_empty() {
                self.close_owed = true;
            }
        }
        self.begin_close(now);
    }

    /// Starts the CloseSocket exchange if the socket is open and unused.
    fn begin_close(&mut self, now: Instant) {
        if self.phase != Phase::Open || !self.unused() {
            return;
        }
        self.close_owed = false;
        self.transmit.push(Frame::CloseSocket(self.last_incoming));
        self.phase = Phase::Closing;
        self.closing_deadline = self.limits.answer_timeout.map(|t| now + t);
    }

    /// Our endpoint is closing: queues CloseEndPoint and finishes.
    pub(crate) fn close_endpoint(&mut self) {
        if self.phase == Phase::Finished {
            return;
        }
        self.transmit.push(Frame::CloseEndPoint);
        self.finish(End::Closed);
    }

    /// A new request from the same peer arrived: the socket may be stale. Queues a
    /// ProbeSocket unless one is outstanding (or probes are off); returns whether it did.
    pub(crate) fn probe(&mut self, now: Instant) -> bool {
        let Some(timeout) = self.limits.answer_timeout else {
            return false;
        };
        if self.phase == Phase::Finished || self.probe_deadline.is_some() {
            return false;
        }
        self.transmit.push(Frame::ProbeSocket);
        self.probe_deadline = Some(now + timeout);
        true
    }

    /// The socket broke (read or write failed, the peer vanished).
    pub(crate) fn fail(&mut self, reason: impl Into<String>) {
        if self.phase == Phase::Finished {
            return;
        }
        // A socket in Closing had nothing open: nothing is lost.
        let report = self.phase == Phase::Open;
        self.finish(End::Lost {
            reason: reason.into(),
            report,
        });
    }

    /// When [`Self::on_timer`] must be called next.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        match (self.probe_deadline, self.closing_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires the deadlines that are due at `now`.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        if self.phase == Phase::Finished {
            return;
        }
        if self.probe_deadline.is_some_and(|d| d <= now) {
            self.fail("no answer to ProbeSocket");
        } else if self.closing_deadline.is_some_and(|d| d <= now) {
            // Only Closing has this deadline, and Closing has nothing open.
            self.finish(End::Abandoned);
        }
    }

    /// Applies one frame from the peer. A violation leaves the core as it was; the driver
    /// drops the socket (and calls [`Self::fail`]).
    pub(crate) fn on_frame(&mut self, frame: Frame, now: Instant) -> Result<(), Violation> {
        if self.phase == Phase::Finished {
            return Ok(());
        }
        match frame {
            Frame::Data { lcid, payload } => {
                // A compliant peer sends only on connections it announced and has not
                // closed (and it never sends CloseSocket while it has any open).
                if !self.incoming.contains(&lcid) {
                    return Err(Violation(format!(
                        "data for connection {lcid}, which is not open"
                    )));
                }
                self.events.push_back(SocketEvent::Received(lcid, payload));
            }
            Frame::CreatedNewConnection(lcid) => {
                if lcid < FIRST_LCID {
                    return Err(Violation(format!(
                        "CreatedNewConnection with reserved id {lcid}"
                    )));
                }
                if self.incoming.contains(&lcid) {
                    return Err(Violation(format!(
                        "CreatedNewConnection for open connection {lcid}"
                    )));
                }
                if self.incoming.len() >= self.limits.max_incoming {
                    return Err(Violation(format!(
                        "more than {} incoming connections on one socket",
                        self.limits.max_incoming
                    )));
                }
                if self.phase == Phase::Closing {
                    // The peer had not seen our CloseSocket: the close is cancelled, and
                    // owed again once this connection is gone.
                    self.phase = Phase::Open;
                    self.closing_deadline = None;
                    self.close_owed = true;
                    self.app_close = false;
                    self.events.push_back(SocketEvent::Resumed);
                }
                self.incoming.insert(lcid);
                self.last_incoming = lcid;
                self.events.push_back(SocketEvent::Opened(lcid));
            }
            Frame::CloseConnection(lcid) => {
                if !self.incoming.remove(&lcid) {
                    return Err(Violation(format!(
                        "CloseConnection for unknown connection {lcid}"
                    )));
                }
                self.events.push_back(SocketEvent::Closed(lcid));
                // A CloseConnection starts no teardown by itself (the peer does that when
                // it closes its last connection), except when our own close came first and
                // is still owed: then the two closes crossed and nobody else will.
                if self.close_owed {
                    self.begin_close(now);
                }
            }
            Frame::CloseSocket(last_received) => self.on_close_socket(last_received, now),
            Frame::CloseEndPoint => {
                self.close_all_incoming();
                self.finish(End::PeerEndPointClosed);
            }
            Frame::ProbeSocket => self.transmit.push(Frame::ProbeSocketAck),
            Frame::ProbeSocketAck => self.probe_deadline = None,
        }
        Ok(())
    }

    fn on_close_socket(&mut self, last_received: u32, now: Instant) {
        match self.phase {
            Phase::Open => {
                // The peer has nothing open any more, whatever it announced.
                self.close_all_incoming();
                if self.outgoing > 0 || last_received != self.last_sent() {
                    // We still use the socket, or the peer has not seen our latest
                    // connection: its close is stale and ignored. If that left nothing
                    // open and our own close is owed, it goes now.
                    if self.close_owed {
                        self.begin_close(now);
                    }
                    return;
                }
                self.transmit.push(Frame::CloseSocket(self.last_incoming));
                self.finish(End::Agreed);
            }
            Phase::Closing => {
                if last_received != self.last_sent() {
                    return;
                }
                // Closing means nothing was open when we asked; a connection of ours
                // opened since would have moved us back to Open first.
                self.finish(End::Agreed);
            }
            Phase::Finished => {}
        }
    }

    fn close_all_incoming(&mut self) {
        for lcid in std::mem::take(&mut self.incoming) {
            self.events.push_back(SocketEvent::Closed(lcid));
        }
    }

    fn finish(&mut self, end: End) {
        self.phase = Phase::Finished;
        self.closing_deadline = None;
        self.probe_deadline = None;
        self.events.push_back(SocketEvent::Finished(end));
    }

    /// Appends the control frames to send to `out`.
    pub(crate) fn write_transmit(&mut self, out: &mut BytesMut) {
        for f in self.transmit.drain(..) {
            f.encode(out);
        }
    }

    /// Whether control frames wait to be sent.
    pub(crate) fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The next event for the application.
    pub(crate) fn poll_event(&mut self) -> Option<SocketEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> SocketCore {
        SocketCore::new(SocketLimits {
            max_incoming: 2,
            answer_timeout: Some(Duration::from_secs(1)),
        })
    }

    fn sent(c: &mut SocketCore) -> Vec<u8> {
        let mut b = BytesMut::new();
        c.write_transmit(&mut b);
        b.to_vec()
    }

    fn frames(fs: &[Frame]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for f in fs {
            f.encode(&mut b);
        }
        b.to_vec()
    }

    fn events(c: &mut SocketCore) -> Vec<SocketEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    #[test]
    fn our_last_close_starts_the_exchange_and_a_matching_answer_ends_it() {
        let now = Instant::now();
        let mut c = core();
        assert_eq!(c.open(), Ok(1024));
        c.close(1024, now);
        assert_eq!(
            sent(&mut c),
            frames(&[
                Frame::CreatedNewConnection(1024),
                Frame::CloseConnection(1024),
                Frame::CloseSocket(0),
            ])
        );
        assert_eq!(c.phase(), Phase::Closing);
        assert_eq!(c.open(), Err(OpenRefused::NotOpen));
        // A CloseSocket that has not seen our connection is stale.
        c.on_frame(Frame::CloseSocket(0), now).unwrap();
        assert_eq!(c.phase(), Phase::Closing);
        c.on_frame(Frame::CloseSocket(1024), now).unwrap();
        assert_eq!(events(&mut c), [SocketEvent::Finished(End::Agreed)]);
    }

    #[test]
    fn a_new_connection_from_the_peer_cancels_our_close() {
        let now = Instant::now();
        let mut c = core();
        c.open().unwrap();
        c.close(1024, now);
        sent(&mut c);
        c.on_frame(Frame::CreatedNewConnection(1024), now).unwrap();
        assert_eq!(
            events(&mut c),
            [SocketEvent::Resumed, SocketEvent::Opened(1024)]
        );
        assert_eq!(c.phase(), Phase::Open);
        assert_eq!(c.next_timer(), None);
        // Its close leaves nothing open: the close we started is still owed.
        c.on_frame(Frame::CloseConnection(1024), now).unwrap();
        assert_eq!(sent(&mut c), frames(&[Frame::CloseSocket(1024)]));
        assert_eq!(c.phase(), Phase::Closing);
    }

    #[test]
    fn a_stale_close_socket_that_empties_the_socket_sends_the_owed_close() {
        let now = Instant::now();
        let mut c = core();
        c.on_frame(Frame::CreatedNewConnection(1024), now).unwrap();
        c.open().unwrap();
        c.close(1024, now);
        sent(&mut c);
        // The peer asks to close without having seen our connection (it names 0, we sent
        // 1024): stale, but it closes the peer's connection, and our close was owed.
        c.on_frame(Frame::CloseSocket(0), now).unwrap();
        assert_eq!(sent(&mut c), frames(&[Frame::CloseSocket(1024)]));
        assert_eq!(c.phase(), Phase::Closing);
    }

    #[test]
    fn the_peers_close_socket_is_answered_when_nothing_of_ours_is_open() {
        let now = Instant::now();
        let mut c = core();
        c.on_frame(Frame::CreatedNewConnection(1030), now).unwrap();
        c.on_frame(Frame::CloseConnection(1030), now).unwrap();
        // A CloseConnection alone starts nothing.
        assert_eq!(sent(&mut c), Vec::<u8>::new());
        c.on_frame(Frame::CloseSocket(0), now).unwrap();
        assert_eq!(sent(&mut c), frames(&[Frame::CloseSocket(1030)]));
        assert_eq!(
            events(&mut c),
            [
                SocketEvent::Opened(1030),
                SocketEvent::Closed(1030),
                SocketEvent::Finished(End::Agreed)
            ]
        );
    }

    #[test]
    fn deadlines_end_the_socket() {
        let now = Instant::now();
        let mut c = core();
        c.open().unwrap();
        c.close(1024, now);
        assert_eq!(c.next_timer(), Some(now + Duration::from_secs(1)));
        c.on_timer(now + Duration::from_millis(999));
        assert_eq!(c.phase(), Phase::Closing);
        c.on_timer(now + Duration::from_secs(1));
        assert_eq!(events(&mut c), [SocketEvent::Finished(End::Abandoned)]);

        let mut c = core();
        c.open().unwrap();
        assert!(c.probe(now));
        assert!(!c.probe(now), "one probe at a time");
        c.on_frame(Frame::ProbeSocketAck, now).unwrap();
        assert_eq!(c.next_timer(), None);
        assert!(c.probe(now));
        c.on_timer(now + Duration::from_secs(1));
        assert_eq!(
            events(&mut c),
            [SocketEvent::Finished(End::Lost {
                reason: "no answer to ProbeSocket".into(),
                report: true
            })]
        );
    }

    #[test]
    fn violations_are_refused_and_change_nothing() {
        let now = Instant::now();
        let mut c = core();
        let bad = [
            Frame::Data {
                lcid: 1024,
                payload: Bytes::new(),
            },
            Frame::CreatedNewConnection(5),
            Frame::CloseConnection(2000),
        ];
        for f in bad {
            assert!(c.on_frame(f, now).is_err());
        }
        c.on_frame(Frame::CreatedNewConnection(1024), now).unwrap();
        assert!(c.on_frame(Frame::CreatedNewConnection(1024), now).is_err());
        c.on_frame(Frame::CreatedNewConnection(1025), now).unwrap();
        let over = c.on_frame(Frame::CreatedNewConnection(1026), now);
        assert!(over.unwrap_err().0.contains("more than 2"));
        assert_eq!(c.phase(), Phase::Open);
    }

    #[test]
    fn the_peers_endpoint_closing_closes_its_connections() {
        let now = Instant::now();
        let mut c = core();
        c.open().unwrap();
        c.on_frame(Frame::CreatedNewConnection(1024), now).unwrap();
        c.on_frame(Frame::CloseEndPoint, now).unwrap();
        assert_eq!(
            events(&mut c),
            [
                SocketEvent::Opened(1024),
                SocketEvent::Closed(1024),
                SocketEvent::Finished(End::PeerEndPointClosed)
            ]
        );
        assert_eq!(c.outgoing(), 1, "ours are lost: the driver reports it");
    }

    #[test]
    fn a_new_connection_while_closing_does_not_wait_for_room() {
        let mut c = core();
        let data = Frame::Data {
            lcid: FIRST_LCID,
            payload: Bytes::new(),
        };
        let created = Frame::CreatedNewConnection(FIRST_LCID + 7);
        assert!(c.needs_room(&data) && c.needs_room(&created));
        assert!(!c.needs_room(&Frame::CloseSocket(0)));
        // Our one connection closes: the socket is unused and starts closing.
        let lcid = c.open().unwrap();
        c.close(lcid, Instant::now());
        assert_eq!(c.phase(), Phase::Closing);
        assert!(
            !c.needs_room(&created),
            "it resumes the socket a connect may wait for"
        );
        assert!(c.needs_room(&data));
    }

    /// A peer that answers our close with "open, close" over and over re-arms the close
    /// itself: only the first new connection skips the wait for room, so the queue is
    /// never filled past its capacity by more than one event per close of ours.
    #[test]
    fn a_peer_cycling_connections_during_our_close_waits_for_room() {
        let now = Instant::now();
        let mut c = core();
        let lcid = c.open().unwrap();
        c.close(lcid, now);
        assert_eq!(c.phase(), Phase::Closing);
        let mut skipped = 0;
        for n in 0..10 {
            let created = Frame::CreatedNewConnection(FIRST_LCID + n);
            if !c.needs_room(&created) {
                skipped += 1;
            }
            c.on_frame(created, now).unwrap();
            c.on_frame(Frame::CloseConnection(FIRST_LCID + n), now)
                .unwrap();
            assert_eq!(c.phase(), Phase::Closing, "the owed close went out again");
        }
        assert_eq!(skipped, 1);
        // A new close of ours earns the exception again, also when it was owed until the
        // peer's last connection went.
        c.on_frame(Frame::CreatedNewConnection(FIRST_LCID + 20), now)
            .unwrap();
        let lcid = c.open().unwrap();
        c.close(lcid, now);
        assert_eq!(
            c.phase(),
            Phase::Open,
            "the peer's connection is still open"
        );
        c.on_frame(Frame::CloseConnection(FIRST_LCID + 20), now)
            .unwrap();
        assert_eq!(c.phase(), Phase::Closing);
        assert!(!c.needs_room(&Frame::CreatedNewConnection(FIRST_LCID + 21)));
    }
}
