//! An endpoint's table of peers, without I/O: at most one record, and so at most one
//! socket, per remote endpoint, and the tie-break when two endpoints connect to each
//! other at once (docs/protocols/transport.md, "Crossed requests and probes").
//!
//! A record's life:
//!
//! ```text
//!   Dialing{crossed: false} --answered Accepted---------------------------> Open
//!   Dialing{crossed: false} --answered Crossed--> Dialing{crossed: true}
//!   Dialing{crossed: true}  --their request arrives: taken over--> Answering --> Open
//!   Answering               --our Accepted went out-----------------------> Open
//!   Dialing   --the dial or handshake failed, or the crossed wait ran out--> (removed)
//!   Answering --our Accepted could not be sent (or the handshake timed out)--> (removed)
//!   Open --the socket's core finishes (teardown agreed, CloseEndPoint, loss)--> (removed)
//! ```
//!
//! When a peer's request arrives while our own request to it is unanswered, the endpoint
//! with the smaller address keeps its own request: it answers Crossed, and the other one,
//! having been answered Crossed, takes the peer's request over as the socket. A request
//! from a peer we already have a healthy socket to means the old socket may be stale (the
//! peer restarted): we answer Crossed and probe the old socket, which the socket's core
//! drops if no acknowledgement comes in time.
//!
//! Each record carries a `key` that no later record for the same address reuses, so that
//! a task holding an old key cannot touch its successor, and driver-side state `Io` (the
//! socket's writer, the channel its waiters listen on) that the table only stores.

use std::collections::HashMap;

use super::handshake::Answer;
use super::socket::{Phase, SocketCore, SocketLimits};
use crate::address::EndPointAddress;

/// Where a record stands.
pub(crate) enum PeerState {
    /// Our request to the peer is out; `crossed` once it was answered Crossed.
    Dialing { crossed: bool },
    /// The peer's request to us is being answered Accepted.
    Answering,
    /// The socket is the heavyweight connection; its protocol is decided by its core.
    Open(SocketCore),
}

/// One remote endpoint.
pub(crate) struct Peer<Io> {
    /// Distinguishes this record from earlier and later ones for the same address.
    pub(crate) key: u64,
    /// Our heavyweight id for the peer (the high half of its connections' ids).
    pub(crate) hid: u32,
    pub(crate) state: PeerState,
    /// What the driver keeps with the record.
    pub(crate) io: Io,
}

impl<Io> Peer<Io> {
    /// The socket's core, once open.
    pub(crate) fn core(&self) -> Option<&SocketCore> {
        match &self.state {
            PeerState::Open(core) => Some(core),
            _ => None,
        }
    }

    /// The socket's core, once open.
    pub(crate) fn core_mut(&mut self) -> Option<&mut SocketCore> {
        match &mut self.state {
            PeerState::Open(core) => Some(core),
            _ => None,
        }
    }
}

/// What a connect does next ([`Peers::connect`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Connect {
    /// The endpoint is closed.
    Closed,
    /// No socket to the peer exists and its address cannot be dialed (it names an
    /// endpoint that cannot be connected to, which only its own requests can reach).
    Undialable,
    /// A new record `key` was made: dial the peer and send our request.
    Dial(u64),
    /// A socket is being set up: wait for the record to change.
    Wait,
    /// A socket is open: open a connection on it (its core may still refuse, while it
    /// closes).
    Open,
}

/// What a dialing side does after the answer ([`Peers::answered`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dialed {
    /// The record is open: this socket is the connection.
    Open,
    /// Wait (bounded) for the peer's request to take the record over.
    AwaitTheirs,
    /// The record is no longer ours to complete: close this socket.
    Gone,
}

/// How to answer a peer's request ([`Peers::request`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Answer Accepted; record `key` becomes the socket once the answer is out.
    Accept(u64),
    /// Answer Crossed.
    Crossed,
    /// Answer Crossed, and probe the open socket to the peer (the socket core's `probe`:
    /// it sends a ProbeSocket unless one is outstanding), which may be stale.
    CrossedProbe,
    /// Close the socket without an answer: a request from the same peer is already being
    /// answered.
    Drop,
    /// Answer InvalidEndPoint: the endpoint is closed.
    Invalid,
    /// Answer InvalidEndPoint: the request claims to come from this very endpoint. Nothing
    /// legitimate does (an endpoint reaches itself without the network), and accepting
    /// would let one request start a loop: an application that answers each new
    /// connection by connecting back (the echo server) would connect to itself, forever.
    OwnAddress,
    /// Decide later: wait for the record to change (bounded by the handshake's timeout).
    Wait,
}

/// The records of one endpoint.
pub(crate) struct Peers<Io> {
    us: EndPointAddress,
    limits: SocketLimits,
    closed: bool,
    next_hid: u32,
    next_key: u64,
    map: HashMap<EndPointAddress, Peer<Io>>,
}

impl<Io> Peers<Io> {
    /// The table of endpoint `us`, whose sockets get `limits`.
    pub(crate) fn new(us: EndPointAddress, limits: SocketLimits) -> Self {
        Peers {
            us,
            limits,
            closed: false,
            next_hid: 1,
            next_key: 0,
            map: HashMap::new(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The record for `address`, whichever it is.
    pub(crate) fn get_mut_any(&mut self, address: &EndPointAddress) -> Option<&mut Peer<Io>> {
        self.map.get_mut(address)
    }

    /// The record for `address` if it is still the one with `key`.
    pub(crate) fn get_mut(&mut self, address: &EndPointAddress, key: u64) -> Option<&mut Peer<Io>> {
        self.map.get_mut(address).filter(|r| r.key == key)
    }

    /// Every record.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&EndPointAddress, &Peer<Io>)> {
        self.map.iter()
    }

    fn insert(&mut self, address: EndPointAddress, state: PeerState, io: Io) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        let hid = self.next_hid;
        // Heavyweight ids are 32 bits in connection ids; 0 is reserved for
        // self-connections, so wrap to 1.
        self.next_hid = self.next_hid.checked_add(1).unwrap_or(1);
        self.map.insert(
            address,
            Peer {
                key,
                hid,
                state,
                io,
            },
        );
        key
    }

    /// A connect to `to` (never ourselves: self-connections need no socket), which can
    /// be dialed if `dialable`. `io` makes the driver's state for a new record.
    pub(crate) fn connect(
        &mut self,
        to: &EndPointAddress,
        dialable: bool,
        io: impl FnOnce() -> Io,
    ) -> Connect {
        if self.closed {
            return Connect::Closed;
        }
        match self.map.get(to).map(|r| &r.state) {
            None if !dialable => Connect::Undialable,
            None => {
                Connect::Dial(self.insert(to.clone(), PeerState::Dialing { crossed: false }, io()))
            }
            Some(PeerState::Dialing { .. } | PeerState::Answering) => Connect::Wait,
            Some(PeerState::Open(_)) => Connect::Open,
        }
    }

    /// Our request for record `key` of `to` was answered.
    pub(crate) fn answered(&mut self, to: &EndPointAddress, key: u64, answer: Answer) -> Dialed {
        let limits = self.limits;
        let Some(rec) = self.get_mut(to, key) else {
            return Dialed::Gone;
        };
        let PeerState::Dialing { crossed } = &mut rec.state else {
            return Dialed::Gone;
        };
        match answer {
            Answer::Accepted => {
                rec.state = PeerState::Open(SocketCore::new(limits));
                Dialed::Open
            }
            Answer::Crossed => {
                *crossed = true;
                Dialed::AwaitTheirs
            }
        }
    }

    /// Whether record `key` of `to` is still waiting for our request (or its crossing) to
    /// resolve.
    pub(crate) fn dialing(&self, to: &EndPointAddress, key: u64) -> bool {
        self.map
            .get(to)
            .is_some_and(|r| r.key == key && matches!(r.state, PeerState::Dialing { .. }))
    }

    /// Our request for record `key` of `to` failed (or its crossing was never completed):
    /// removes the record if it is still waiting for it.
    pub(crate) fn dial_failed(&mut self, to: &EndPointAddress, key: u64) -> Option<Peer<Io>> {
        if self.dialing(to, key) {
            self.map.remove(to)
        } else {
            None
        }
    }

    /// A peer `from` asks for a socket. `io` makes the driver's state for a new record.
    pub(crate) fn request(&mut self, from: &EndPointAddress, io: impl FnOnce() -> Io) -> Claim {
        if self.closed {
            return Claim::Invalid;
        }
        if *from == self.us {
            return Claim::OwnAddress;
        }
        let us_first = self.us < *from;
        let Some(rec) = self.map.get_mut(from) else {
            return Claim::Accept(self.insert(from.clone(), PeerState::Answering, io()));
        };
        match &mut rec.state {
            // Ours is the smaller address: our request wins.
            PeerState::Dialing { .. } if us_first => Claim::Crossed,
            // Ours was answered Crossed: theirs becomes the socket.
            PeerState::Dialing { crossed: true } => {
                rec.state = PeerState::Answering;
                Claim::Accept(rec.key)
            }
            // Ours is unanswered and will win at the peer: its answer decides.
            PeerState::Dialing { crossed: false } => Claim::Wait,
            PeerState::Answering => Claim::Drop,
            PeerState::Open(core) if core.phase() == Phase::Closing => Claim::Wait,
            PeerState::Open(_) => Claim::CrossedProbe,
        }
    }

    /// Our Accepted for record `key` of `from` went out: the socket is open. False if the
    /// record is gone (the endpoint closed meanwhile): drop the socket.
    pub(crate) fn accepted(&mut self, from: &EndPointAddress, key: u64) -> bool {
        let limits = self.limits;
        match self.get_mut(from, key) {
            Some(rec) if matches!(rec.state, PeerState::Answering) => {
                rec.state = PeerState::Open(SocketCore::new(limits));
                true
            }
            _ => false,
        }
    }

    /// Our Accepted for record `key` of `from` could not be sent (or the handshake was
    /// given up while sending it): removes the record if it is still waiting for that.
    pub(crate) fn answer_failed(&mut self, from: &EndPointAddress, key: u64) -> Option<Peer<Io>> {
        match self.map.get(from) {
            Some(r) if r.key == key && matches!(r.state, PeerState::Answering) => {
                self.map.remove(from)
            }
            _ => None,
        }
    }

    /// Removes record `key` of `address` (its socket finished).
    pub(crate) fn remove(&mut self, address: &EndPointAddress, key: u64) -> Option<Peer<Io>> {
        if self.map.get(address).is_some_and(|r| r.key == key) {
            self.map.remove(address)
        } else {
            None
        }
    }

    /// The endpoint closes: every open socket's core says CloseEndPoint; every record is
    /// handed back for the driver to finish.
    pub(crate) fn close(&mut self) -> Vec<(EndPointAddress, Peer<Io>)> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        let mut all: Vec<_> = self.map.drain().collect();
        for (_, rec) in &mut all {
            if let Some(core) = rec.core_mut() {
                core.close_endpoint();
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    fn addr(port: u16) -> EndPointAddress {
        EndPointAddress::new("127.0.0.1", port, 0)
    }

    fn peers(port: u16) -> Peers<()> {
        Peers::new(
            addr(port),
            SocketLimits {
                max_incoming: 10,
                answer_timeout: Some(Duration::from_secs(1)),
            },
        )
    }

    #[test]
    fn the_smaller_address_keeps_its_request() {
        let (mut small, mut big) = (peers(1), peers(2));
        let Connect::Dial(ks) = small.connect(&addr(2), true, || ()) else {
            panic!("no dial")
        };
        let Connect::Dial(kb) = big.connect(&addr(1), true, || ()) else {
            panic!("no dial")
        };
        // The big side's request reaches the small side: crossed, no probe.
        assert_eq!(small.request(&addr(2), || ()), Claim::Crossed);
        // The small side's request reaches the big side before that answer: wait.
        assert_eq!(big.request(&addr(1), || ()), Claim::Wait);
        assert_eq!(
            big.answered(&addr(1), kb, Answer::Crossed),
            Dialed::AwaitTheirs
        );
        // Now the waiting request takes the big side's record over.
        assert_eq!(big.request(&addr(1), || ()), Claim::Accept(kb));
        assert!(big.accepted(&addr(1), kb));
        assert_eq!(small.answered(&addr(2), ks, Answer::Accepted), Dialed::Open);
        assert_eq!(small.connect(&addr(2), true, || ()), Connect::Open);
        assert_eq!(big.connect(&addr(1), true, || ()), Connect::Open);
    }

    #[test]
    fn a_request_over_an_open_socket_probes_it() {
        let mut p = peers(1);
        let now = Instant::now();
        let Claim::Accept(k) = p.request(&addr(2), || ()) else {
            panic!("not accepted")
        };
        // A second request while the first is being answered is dropped.
        assert_eq!(p.request(&addr(2), || ()), Claim::Drop);
        assert!(p.accepted(&addr(2), k));
        assert_eq!(p.request(&addr(2), || ()), Claim::CrossedProbe);
        // The core sends one probe at a time.
        let core = p.get_mut(&addr(2), k).unwrap().core_mut().unwrap();
        assert!(core.probe(now));
        assert!(!core.probe(now));
    }

    #[test]
    fn old_keys_cannot_touch_new_records() {
        let mut p = peers(1);
        let Connect::Dial(old) = p.connect(&addr(2), true, || ()) else {
            panic!("no dial")
        };
        assert!(p.dial_failed(&addr(2), old).is_some());
        let Connect::Dial(new) = p.connect(&addr(2), true, || ()) else {
            panic!("no dial")
        };
        assert_ne!(old, new);
        assert_eq!(p.answered(&addr(2), old, Answer::Accepted), Dialed::Gone);
        assert!(p.dial_failed(&addr(2), old).is_none());
        assert!(p.remove(&addr(2), old).is_none());
        assert!(p.dialing(&addr(2), new));
    }

    #[test]
    fn a_closed_table_refuses_everything() {
        let mut p = peers(1);
        let Claim::Accept(k) = p.request(&addr(2), || ()) else {
            panic!("not accepted")
        };
        assert!(p.accepted(&addr(2), k));
        let closed = p.close();
        assert_eq!(closed.len(), 1);
        assert!(
            closed[0].1.core().unwrap().has_transmit(),
            "CloseEndPoint queued"
        );
        assert_eq!(p.connect(&addr(2), true, || ()), Connect::Closed);
        assert_eq!(p.request(&addr(3), || ()), Claim::Invalid);
        assert!(p.close().is_empty());
    }

    #[test]
    fn a_request_claiming_our_own_address_is_refused_and_leaves_no_record() {
        let mut p = peers(1);
        assert_eq!(p.request(&addr(1), || ()), Claim::OwnAddress);
        assert_eq!(p.request(&addr(1), || ()), Claim::OwnAddress);
        // Other peers are served as before.
        assert!(matches!(p.request(&addr(2), || ()), Claim::Accept(_)));
    }

    #[test]
    fn an_undialable_peer_is_reached_over_its_own_socket() {
        let mut p = peers(1);
        let uuid = EndPointAddress::from_bytes("6c0e4f2a-unaddressable");
        assert_eq!(p.connect(&uuid, false, || ()), Connect::Undialable);
        assert!(p.iter().next().is_none());
        let Claim::Accept(k) = p.request(&uuid, || ()) else {
            panic!("not accepted")
        };
        assert!(p.accepted(&uuid, k));
        assert_eq!(p.connect(&uuid, false, || ()), Connect::Open);
    }
}
