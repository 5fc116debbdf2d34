//! The driver's side of a peer record (the record itself and its life are in
//! `core/peers.rs`): the socket's writer once it is open, and the channel on which
//! connects and handshakes wait for the record to change.
//!
//! Once open, the protocol on the socket (connections each way, the CloseSocket exchange,
//! probes) is decided by its core; [`Remote::pump`] carries what the core produced to the
//! socket's write queue and the endpoint's event queue.
//!
//! Every change that someone may be waiting for ("resolution": leaving setup, a close
//! resolving, removal) is announced on the record's watch channel, to which waiters
//! subscribe while holding the endpoint lock, so no change is missed.

use std::sync::Arc;

use tokio::sync::watch;

use crate::address::EndPointAddress;
use crate::core::peers::{Peer, PeerState};
use crate::core::socket::{End, Phase, SocketCore, SocketEvent};
use crate::error::ErrorKind;
use crate::event::{ConnectionId, Event, EventErrorKind, Reliability};
use crate::queue::EventQueue;
use crate::stats::Counters;
use crate::writer::SocketWriter;
use nodelink_driver::{peer_warn, WarnLimiter};

/// What waiters learn when a record changes.
#[derive(Debug, Clone)]
pub(crate) enum Resolution {
    Pending,
    Changed,
    /// The outgoing setup failed, or the socket was lost; connects that waited for it
    /// fail the same way.
    Failed(ErrorKind, String),
}

/// What the driver keeps with a record.
pub(crate) struct PeerIo {
    /// The socket's one writer, once the record is open.
    pub(crate) writer: Option<Arc<SocketWriter>>,
    pub(crate) changed: watch::Sender<Resolution>,
}

impl PeerIo {
    pub(crate) fn new() -> Self {
        PeerIo {
            writer: None,
            changed: watch::channel(Resolution::Pending).0,
        }
    }
}

/// A record as the driver holds it.
pub(crate) type Remote = Peer<PeerIo>;

/// An open record's core and writer.
pub(crate) struct Socket<'a> {
    pub(crate) core: &'a mut SocketCore,
    pub(crate) writer: &'a Arc<SocketWriter>,
}

impl Socket<'_> {
    /// Whether a connect must wait for this socket's close to resolve.
    pub(crate) fn closing(&self) -> bool {
        self.core.phase() == Phase::Closing
    }

    /// Runs `f` on the core and queues the frames it produced, under the writer's queue lock:
    /// if the socket can no longer write, `f` does not run (the core stays as it was) and
    /// `None` is returned. Otherwise returns `f`'s result and the mark to flush.
    pub(crate) fn with_core<T>(
        &mut self,
        f: impl FnOnce(&mut SocketCore) -> T,
    ) -> Option<(T, u64)> {
        let core = &mut *self.core;
        let mut result = None;
        let mark = self
            .writer
            .enqueue(|b| {
                result = Some(f(core));
                core.write_transmit(b);
            })
            .ok()?;
        Some((result?, mark))
    }

    /// Queues the core's control frames; returns the mark to flush, if any were queued.
    pub(crate) fn transmit(&mut self) -> Option<u64> {
        if !self.core.has_transmit() {
            return None;
        }
        let core = &mut *self.core;
        self.writer
            .enqueue(|b| {
                core.write_transmit(b);
            })
            .ok()
    }
}

/// Where [`Remote::pump`] delivers: the endpoint's event queue, address and warning budget.
pub(crate) struct Sink<'a> {
    pub(crate) events: &'a EventQueue,
    pub(crate) us: &'a EndPointAddress,
    pub(crate) warn_limit: &'a WarnLimiter,
    pub(crate) counters: &'a Counters,
}

/// What [`Remote::pump`] leaves for the caller.
pub(crate) struct Pumped {
    /// Control frames were queued up to this mark.
    pub(crate) mark: Option<u64>,
    /// The socket finished: the caller must forget the record (with this resolution)
    /// and end the socket.
    pub(crate) finished: Option<(End, Resolution)>,
}

impl Remote {
    pub(crate) fn announce(&self, r: Resolution) {
        self.io.changed.send_replace(r);
    }

    /// The open socket: its core and writer.
    pub(crate) fn socket(&mut self) -> Option<Socket<'_>> {
        let writer = self.io.writer.as_ref()?;
        let core = match &mut self.state {
            PeerState::Open(core) => core,
            _ => return None,
        };
        Some(Socket { core, writer })
    }

    /// Carries out what the socket's core produced: frames to the write queue, events to
    /// `events` (as the application sees them: connection ids with our heavyweight id for
    /// this peer), one log line per event an operator cares about.
    pub(crate) fn pump(&mut self, to: &Sink<'_>, peer: &EndPointAddress) -> Pumped {
        let hid = self.hid;
        let Some(mut sock) = self.socket() else {
            return Pumped {
                mark: None,
                finished: None,
            };
        };
        let (events, us) = (to.events, to.us);
        let cid = |lcid| ConnectionId::new(hid, lcid);
        let mark = sock.transmit();
        if sock.core.phase() == Phase::Finished {
            // Before any event of this batch: whoever sees them must see sends fail.
            sock.writer.kill();
        }
        let mut finished = None;
        let mut resumed = false;
        while let Some(ev) = sock.core.poll_event() {
            match ev {
                SocketEvent::Opened(lcid) => {
                    tracing::info!(%peer, endpoint = %us, id = %cid(lcid), "incoming connection opened");
                    events.push(Event::ConnectionOpened {
                        id: cid(lcid),
                        reliability: Reliability::ReliableOrdered,
                        address: peer.clone(),
                    });
                }
                SocketEvent::Received(lcid, payload) => {
                    Counters::add(&to.counters.messages_in, 1);
                    Counters::add(&to.counters.bytes_in, payload.len() as u64);
                    events.push(Event::Received {
                        id: cid(lcid),
                        data: vec![payload],
                    })
                }
                SocketEvent::Closed(lcid) => {
                    tracing::info!(%peer, endpoint = %us, id = %cid(lcid), "incoming connection closed");
                    events.push(Event::ConnectionClosed { id: cid(lcid) });
                }
                SocketEvent::Resumed => resumed = true,
                SocketEvent::Finished(end) => {
                    let resolution = report_end(&end, to, peer, sock.core.outgoing());
                    finished = Some((end, resolution));
                }
            }
        }
        if resumed {
            self.announce(Resolution::Changed);
        }
        Pumped { mark, finished }
    }
}

/// Logs how a socket ended and posts ConnectionLost where the application must hear it;
/// returns what connects waiting on the socket learn.
fn report_end(end: &End, to: &Sink<'_>, peer: &EndPointAddress, outgoing: u32) -> Resolution {
    let (events, us) = (to.events, to.us);
    match end {
        End::Agreed => {
            tracing::info!(
                %peer,
                endpoint = %us,
                "socket closed: nothing open either way (CloseSocket exchange)"
            );
            Resolution::Changed
        }
        End::Abandoned => {
            peer_warn!(
                to.warn_limit,
                %peer,
                endpoint = %us,
                "no answer to our CloseSocket within the connect timeout: socket dropped"
            );
            Resolution::Changed
        }
        End::Closed => Resolution::Failed(ErrorKind::ConnectFailed, "endpoint closed".into()),
        End::PeerEndPointClosed => {
            tracing::info!(%peer, endpoint = %us, outgoing, "the peer closed its endpoint");
            if outgoing > 0 {
                events.push(Event::Error {
                    kind: EventErrorKind::ConnectionLost(peer.clone()),
                    message: format!("connection to {peer} lost: the peer closed its endpoint"),
                });
            }
            Resolution::Changed
        }
        End::Lost { reason, report } => {
            if !*report {
                // Nothing was in use: the socket was closing anyway, and losing it ends that
                // close. A connect waiting for the close to end dials a new socket rather
                // than failing (the original fails it, a spurious error for its caller).
                tracing::debug!(%peer, endpoint = %us, %reason, "socket lost while closing");
                return Resolution::Changed;
            } else {
                Counters::add(&to.counters.sockets_lost, 1);
                tracing::info!(%peer, endpoint = %us, %reason, "connection lost");
                events.push(Event::Error {
                    kind: EventErrorKind::ConnectionLost(peer.clone()),
                    message: format!("connection to {peer} lost: {reason}"),
                });
            }
            // Connects waiting on this socket fail, as the original's Failed state makes
            // them.
            Resolution::Failed(
                ErrorKind::ConnectFailed,
                format!("connection lost: {reason}"),
            )
        }
    }
}
