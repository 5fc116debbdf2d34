//! What an endpoint knows about one remote endpoint, and the socket to it.
//!
//! There is at most one record (and so one socket) per remote address. Its life:
//!
//! ```text
//!   Init{Us}  --Accepted------------------------------> Valid
//!   Init{Us}  --Crossed; their request taken over--> Init{Them} --> Valid
//!   Init{Them} --we answered Accepted------------------> Valid
//!   Valid --local close leaves nothing open: send CloseSocket--> Closing
//!   Valid --peer's CloseConnection leaves nothing open after our own close: same--> Closing
//!   Closing --CreatedNewConnection from the peer--> Valid
//!   Closing/Valid --CloseSocket agreement, CloseEndPoint, socket loss--> (removed)
//!   Closing --no answer to our CloseSocket within the connect timeout--> (removed)
//! ```
//!
//! Every change that someone may be waiting for ("resolution": leaving Init or Closing,
//! removal) is announced on the record's watch channel, to which waiters subscribe while
//! holding the endpoint lock, so no change is missed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::ErrorKind;
use crate::wire::{Frame, FIRST_LCID};
use crate::writer::SocketWriter;

/// Who asked for the socket being set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Us,
    Them,
}

/// What waiters learn when a record changes.
#[derive(Debug, Clone)]
pub(crate) enum Resolution {
    Pending,
    Changed,
    /// The outgoing setup failed; connects that waited for it fail the same way.
    Failed(ErrorKind, String),
}

pub(crate) enum RemoteState {
    Init { origin: Origin, crossed: bool },
    Valid(Socket),
    Closing(Socket),
}

impl RemoteState {
    /// Valid -> Closing; any other state is left alone.
    pub(crate) fn start_closing(&mut self) {
        if let RemoteState::Valid(_) = self {
            if let RemoteState::Valid(s) = std::mem::replace(self, PLACEHOLDER) {
                *self = RemoteState::Closing(s);
            }
        }
    }

    /// Closing -> Valid; returns whether a close was cancelled.
    pub(crate) fn cancel_closing(&mut self) -> bool {
        if let RemoteState::Closing(_) = self {
            if let RemoteState::Closing(s) = std::mem::replace(self, PLACEHOLDER) {
                *self = RemoteState::Valid(s);
                return true;
            }
        }
        false
    }
}

/// Briefly stands in for a state being moved between variants.
const PLACEHOLDER: RemoteState = RemoteState::Init {
    origin: Origin::Us,
    crossed: false,
};

pub(crate) struct Remote {
    /// Distinguishes this record from earlier and later ones for the same address.
    pub(crate) key: u64,
    /// Our heavyweight id for the remote endpoint (high half of incoming connection ids).
    pub(crate) hid: u32,
    pub(crate) state: RemoteState,
    pub(crate) changed: watch::Sender<Resolution>,
}

impl Remote {
    pub(crate) fn new(key: u64, hid: u32, state: RemoteState) -> Self {
        Remote {
            key,
            hid,
            state,
            changed: watch::channel(Resolution::Pending).0,
        }
    }

    pub(crate) fn announce(&self, r: Resolution) {
        self.changed.send_replace(r);
    }

    /// Starts the CloseSocket exchange on a Valid socket with nothing open in either
    /// direction: queues `CloseSocket(last incoming lcid)`, enters Closing and arms the
    /// deadline after which an unanswered close is given up (`timeout`, the connect
    /// timeout). Returns the writer and the mark to flush, or `None` if the socket is not
    /// Valid and unused or can no longer write.
    pub(crate) fn begin_close(
        &mut self,
        timeout: Option<Duration>,
    ) -> Option<(Arc<SocketWriter>, u64)> {
        let RemoteState::Valid(sock) = &mut self.state else {
            return None;
        };
        if !sock.unused() {
            return None;
        }
        let last = sock.last_incoming;
        let writer = sock.writer.clone();
        sock.close_when_unused = false;
        let mark = writer
            .enqueue(|b| Frame::CloseSocket(last).encode(b))
            .ok()?;
        self.state.start_closing();
        if let Some(t) = timeout {
            *crate::sync::lock(&writer.closing_deadline) = Some(tokio::time::Instant::now() + t);
            writer.deadline_wake.notify_one();
        }
        Some((writer, mark))
    }
}

/// Reference counts of one accepted socket.
pub(crate) struct Socket {
    pub(crate) writer: Arc<SocketWriter>,
    /// Our open lightweight connections on this socket.
    pub(crate) outgoing: u32,
    /// The peer's open lightweight connections.
    pub(crate) incoming: HashSet<u32>,
    /// The last lcid the peer announced (0 if none yet).
    pub(crate) last_incoming: u32,
    /// The lcid our next connection gets.
    pub(crate) next_lcid: u32,
    /// We closed our last outgoing connection while the peer still had connections open:
    /// the teardown we could not start then is owed once the peer's last one closes.
    /// Without this, two ends that close their last connections at the same moment each
    /// see the other's CloseConnection arrive after their own close, neither sends
    /// CloseSocket, and an unused socket stays open (docs/protocols/transport.md).
    pub(crate) close_when_unused: bool,
}

impl Socket {
    pub(crate) fn new(writer: Arc<SocketWriter>) -> Self {
        Socket {
            writer,
            outgoing: 0,
            incoming: HashSet::new(),
            last_incoming: 0,
            next_lcid: FIRST_LCID,
            close_when_unused: false,
        }
    }

    /// The last lcid we announced, 0 if none: what a peer's CloseSocket must name for the
    /// close to be agreed.
    pub(crate) fn last_sent(&self) -> u32 {
        if self.next_lcid == FIRST_LCID {
            0
        } else {
            self.next_lcid - 1
        }
    }

    pub(crate) fn unused(&self) -> bool {
        self.outgoing == 0 && self.incoming.is_empty()
    }
}
