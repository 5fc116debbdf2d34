//! Agreeing on the flow-control extension: an I/O-free state machine.
//!
//! The rule (`docs/protocols/link.md`, "Extensions"): a side never sends a packet its peer
//! did not ask for.
//!
//! * The **dialing** side (role [`Client`](Role::Client)) with the extension enabled offers
//!   it: HELLO is the first packet it sends. It then waits for the verdict while routing
//!   everything else as usual:
//!   - HELLO back on its own control id: the peer agreed ([`PeerMode::Credit`]);
//!   - anything on the acceptor's control id: the peer declined. NEO/go answers the offer
//!     with "connection closed" on that id, a nodelink acceptor without the extension does
//!     the same; the packet is absorbed, never shown to the application;
//!   - nothing within the handshake timeout: treated as declined. A HELLO that arrives
//!     later still switches the extension on, so a slow nodelink peer is not left waiting
//!     for credit that would never come.
//! * The **accepting** side never sends an extension frame first. The peer's first packet
//!   decides: a HELLO on the acceptor's control id is answered with our HELLO (extension
//!   on); anything else means a strict NEO peer, and from then on every packet, including
//!   one on a control id, is routed by NEO's rules. An acceptor with the extension disabled
//!   declines an offer the way NEO/go does ("connection closed" on the same id).
//! * In the NEO/py dialect nothing is offered, and nothing is ever sent in reply: NEO/py
//!   closes the connection on any code it does not know.
//!
//! The machine takes packets (id, code, payload) and the expiry of the start-up timer, and
//! returns what to do: route the packet, send a reply, apply credit. The caller compares
//! [`Negotiation::mode`] before and after each input to learn of a change. It owns no I/O
//! and no clock, so its tests run without a runtime.

use crate::control::{self, Control};
use crate::role::Role;

/// What the peer does about the extension, as far as we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerMode {
    /// Not decided yet: our senders stay within the protocol minimum window (which every
    /// nodelink receiver accepts) and nothing is credited back.
    Pending,
    /// A strict NEO peer, or one without the extension: no credit in either direction.
    Neo,
    /// Both sides agreed: the peer's per-connection window is `window` bytes of cost.
    Credit {
        /// The peer's announced window.
        window: u32,
    },
}

/// Why the extension is off (it matters for a HELLO that arrives late).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Off {
    /// The peer declined, or is a strict NEO peer: stays off.
    Final,
    /// We stopped waiting for an answer to our offer: a late HELLO still counts.
    TimedOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    On { window: u32 },
    Off(Off),
}

/// What to send in reply to a packet, on the peer's control id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Our HELLO announcing `window`: we accept the peer's offer.
    Hello {
        /// Our per-connection receive window.
        window: u32,
    },
    /// NEO's "connection closed" Error on the acceptor's control id: we decline.
    Decline,
}

/// What the caller does with one received packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict<'a> {
    /// Not the extension's business: route it by the dialect's rules.
    Route,
    /// Consumed by the negotiation; the reply, if any, is to be sent.
    Consumed(Option<Reply>),
    /// A CREDIT frame: `(conn id, bytes)` pairs to apply (iterate with
    /// [`control::credits`]).
    Credit(&'a [u8]),
    /// BYE: the peer closes the link on purpose (extension agreed only).
    Bye,
    /// PING: the peer probes an idle link; answer PONG (extension agreed only).
    Ping,
    /// PONG: the answer to our PING.
    Pong,
    /// A frame on a control id that means nothing here (malformed, unexpected): dropped
    /// and counted, never answered.
    Dropped,
}

/// The extension's negotiation for one link.
#[derive(Debug)]
pub(crate) struct Negotiation {
    role: Role,
    /// Whether we take part at all (config and dialect).
    enabled: bool,
    /// Whether an acceptor without the extension answers an offer with a decline (NEO/go
    /// rules); never in the NEO/py dialect.
    decline: bool,
    /// Our per-connection receive window, announced in HELLO.
    window: u32,
    state: State,
    /// The acceptor has seen the peer's first packet.
    first_seen: bool,
}

impl Negotiation {
    /// A negotiation for a link whose handshake just finished. Returns the machine and, for
    /// an offering dialer, the HELLO to send before anything else.
    pub(crate) fn start(
        role: Role,
        enabled: bool,
        decline: bool,
        window: u32,
    ) -> (Negotiation, Option<Reply>) {
        let state = if enabled {
            State::Pending
        } else {
            State::Off(Off::Final)
        };
        let n = Negotiation {
            role,
            enabled,
            decline: decline && !enabled,
            window,
            state,
            // Only an acceptor waits for a first packet; a dialer without the extension
            // has nothing to learn.
            first_seen: role == Role::Client,
        };
        let offer = (enabled && role == Role::Client).then_some(Reply::Hello { window });
        (n, offer)
    }

    /// The peer's mode as senders and receivers should apply it.
    pub(crate) fn mode(&self) -> PeerMode {
        match self.state {
            State::Pending => PeerMode::Pending,
            State::On { window } => PeerMode::Credit { window },
            State::Off(_) => PeerMode::Neo,
        }
    }

    /// Whether the start-up timer should run (we still wait for the peer to tell).
    pub(crate) fn waiting(&self) -> bool {
        self.state == State::Pending
    }

    /// The start-up timer expired: stop waiting. Returns whether the mode changed.
    pub(crate) fn on_timeout(&mut self) -> bool {
        if self.state != State::Pending {
            return false;
        }
        self.state = State::Off(match self.role {
            Role::Client => Off::TimedOut,
            Role::Server => Off::Final,
        });
        true
    }

    /// Whether a packet on `conn_id` is ordinary traffic, whatever it holds: the acceptor
    /// has seen the peer's first packet, and the id is neither control id. [`Self::on_packet`]
    /// routes such a packet too, changing nothing; this is the reader's short cut.
    #[inline]
    pub(crate) fn is_plain(&self, conn_id: u32) -> bool {
        self.first_seen
            && conn_id != control::control_id_of(self.role)
            && conn_id != control::control_id_of(self.role.peer())
    }

    /// Looks at one received packet.
    pub(crate) fn on_packet<'a>(
        &mut self,
        conn_id: u32,
        code: u16,
        payload: &'a [u8],
    ) -> Verdict<'a> {
        let ours = control::control_id_of(self.role);
        let theirs = control::control_id_of(self.role.peer());
        match self.role {
            Role::Server => self.acceptor_packet(conn_id, code, payload, ours),
            Role::Client => self.dialer_packet(conn_id, code, payload, ours, theirs),
        }
    }

    fn acceptor_packet<'a>(
        &mut self,
        conn_id: u32,
        code: u16,
        payload: &'a [u8],
        ours: u32,
    ) -> Verdict<'a> {
        let first = !std::mem::replace(&mut self.first_seen, true);
        let frame = (conn_id == ours && code == control::CONTROL_CODE)
            .then(|| control::decode(payload))
            .flatten();
        if first {
            if let (true, Some(&Control::Hello { window })) = (self.enabled, frame.as_ref()) {
                self.state = State::On { window };
                return Verdict::Consumed(Some(Reply::Hello {
                    window: self.window,
                }));
            }
            self.state = State::Off(Off::Final);
            if matches!(frame, Some(Control::Hello { .. })) {
                return Verdict::Consumed(self.decline.then_some(Reply::Decline));
            }
            // A strict NEO peer: this packet is ordinary traffic.
            return Verdict::Route;
        }
        match (self.state, frame) {
            (State::On { .. }, Some(Control::Credit(body))) => Verdict::Credit(body),
            (State::On { .. }, Some(Control::Bye)) => Verdict::Bye,
            (State::On { .. }, Some(Control::Ping)) => Verdict::Ping,
            (State::On { .. }, Some(Control::Pong)) => Verdict::Pong,
            (State::On { .. }, _) if conn_id == ours => Verdict::Dropped,
            // Off (a strict peer): NEO's rules apply to every id.
            _ => Verdict::Route,
        }
    }

    fn dialer_packet<'a>(
        &mut self,
        conn_id: u32,
        code: u16,
        payload: &'a [u8],
        ours: u32,
        theirs: u32,
    ) -> Verdict<'a> {
        if !self.enabled {
            return Verdict::Route;
        }
        if conn_id == theirs {
            // NEO/go's (or a nodelink acceptor's) "connection closed" for our offer, or a
            // stray packet on that id: absorbed either way.
            if matches!(self.state, State::Pending | State::Off(Off::TimedOut)) {
                self.state = State::Off(Off::Final);
                return Verdict::Consumed(None);
            }
            return Verdict::Dropped;
        }
        if conn_id != ours {
            return Verdict::Route;
        }
        let frame = if code == control::CONTROL_CODE {
            control::decode(payload)
        } else {
            None
        };
        match (self.state, frame) {
            (State::Pending | State::Off(Off::TimedOut), Some(Control::Hello { window })) => {
                self.state = State::On { window };
                Verdict::Consumed(None)
            }
            (State::On { .. }, Some(Control::Credit(body))) => Verdict::Credit(body),
            (State::On { .. }, Some(Control::Bye)) => Verdict::Bye,
            (State::On { .. }, Some(Control::Ping)) => Verdict::Ping,
            (State::On { .. }, Some(Control::Pong)) => Verdict::Pong,
            _ => Verdict::Dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    const CLIENT_CTL: u32 = 0xFFFF_FFFF;
    const SERVER_CTL: u32 = 0xFFFF_FFFE;

    fn hello(window: u32) -> Vec<u8> {
        let mut b = BytesMut::new();
        control::encode_hello(window, &mut b);
        b.to_vec()
    }

    fn credit(entries: &[(u32, u32)]) -> Vec<u8> {
        let mut b = BytesMut::new();
        control::encode_credits(entries, &mut b);
        b.to_vec()
    }

    #[test]
    fn the_readers_short_cut_agrees_with_on_packet() {
        let h = hello(5000);
        for role in [Role::Client, Role::Server] {
            for enabled in [true, false] {
                for opener in [None, Some(1u32), Some(CLIENT_CTL), Some(SERVER_CTL)] {
                    let (mut n, _) = Negotiation::start(role, enabled, true, 1000);
                    if let Some(id) = opener {
                        let _ = n.on_packet(id, control::CONTROL_CODE, &h);
                    }
                    for id in [0u32, 1, 2, 7, 0xFFFF_FFFD, CLIENT_CTL, SERVER_CTL] {
                        if !n.is_plain(id) {
                            continue;
                        }
                        assert!(id != CLIENT_CTL && id != SERVER_CTL);
                        let (mode, first_seen) = (n.mode(), n.first_seen);
                        for code in [5, control::CONTROL_CODE] {
                            assert_eq!(n.on_packet(id, code, &h), Verdict::Route);
                            assert_eq!((n.mode(), n.first_seen), (mode, first_seen));
                        }
                    }
                }
            }
        }
        // An acceptor's first packet is never plain: it decides the mode.
        let (n, _) = Negotiation::start(Role::Server, true, true, 1000);
        assert!(!n.is_plain(1));
    }

    #[test]
    fn dialer_offers_and_agrees_on_hello_back() {
        let (mut n, offer) = Negotiation::start(Role::Client, true, true, 1000);
        assert_eq!(offer, Some(Reply::Hello { window: 1000 }));
        assert_eq!(n.mode(), PeerMode::Pending);
        // Ordinary traffic does not decide anything.
        assert_eq!(n.on_packet(2, 5, b""), Verdict::Route);
        assert!(n.waiting());
        let h = hello(70_000);
        assert_eq!(
            n.on_packet(CLIENT_CTL, control::CONTROL_CODE, &h),
            Verdict::Consumed(None)
        );
        assert_eq!(n.mode(), PeerMode::Credit { window: 70_000 });
        let c = credit(&[(1, 64)]);
        assert!(matches!(
            n.on_packet(CLIENT_CTL, control::CONTROL_CODE, &c),
            Verdict::Credit(_)
        ));
    }

    #[test]
    fn dialer_absorbs_neo_go_decline() {
        let (mut n, _) = Negotiation::start(Role::Client, true, true, 1000);
        // NEO/go: Error "connection closed" on the acceptor's control id.
        assert_eq!(
            n.on_packet(SERVER_CTL, 0x8000, b"...connection closed"),
            Verdict::Consumed(None)
        );
        assert_eq!(n.mode(), PeerMode::Neo);
        // A HELLO after a decline does not switch it back on.
        let h = hello(70_000);
        assert_eq!(
            n.on_packet(CLIENT_CTL, control::CONTROL_CODE, &h),
            Verdict::Dropped
        );
        assert_eq!(n.mode(), PeerMode::Neo);
    }

    #[test]
    fn dialer_timeout_then_late_hello_switches_on() {
        let (mut n, _) = Negotiation::start(Role::Client, true, true, 1000);
        assert!(n.on_timeout());
        assert_eq!(n.mode(), PeerMode::Neo);
        assert!(!n.waiting());
        let h = hello(80_000);
        assert_eq!(
            n.on_packet(CLIENT_CTL, control::CONTROL_CODE, &h),
            Verdict::Consumed(None)
        );
        assert_eq!(n.mode(), PeerMode::Credit { window: 80_000 });
    }

    #[test]
    fn acceptor_answers_an_offer_and_never_speaks_first() {
        let (mut n, offer) = Negotiation::start(Role::Server, true, true, 4096);
        assert_eq!(offer, None);
        let h = hello(65_536);
        assert_eq!(
            n.on_packet(SERVER_CTL, control::CONTROL_CODE, &h),
            Verdict::Consumed(Some(Reply::Hello { window: 4096 }))
        );
        assert_eq!(n.mode(), PeerMode::Credit { window: 65_536 });
        // A second HELLO is not answered again.
        assert_eq!(
            n.on_packet(SERVER_CTL, control::CONTROL_CODE, &h),
            Verdict::Dropped
        );
    }

    #[test]
    fn acceptor_with_a_strict_peer_routes_everything_by_neo_rules() {
        let (mut n, _) = Negotiation::start(Role::Server, true, true, 4096);
        assert_eq!(n.on_packet(1, 2, b""), Verdict::Route);
        assert_eq!(n.mode(), PeerMode::Neo);
        // A HELLO now is just a packet on an unknown id of our parity.
        let h = hello(65_536);
        assert_eq!(
            n.on_packet(SERVER_CTL, control::CONTROL_CODE, &h),
            Verdict::Route
        );
    }

    #[test]
    fn acceptor_without_the_extension_declines_like_neo_go_or_stays_silent() {
        let h = hello(65_536);
        let (mut n, _) = Negotiation::start(Role::Server, false, true, 4096);
        assert_eq!(
            n.on_packet(SERVER_CTL, control::CONTROL_CODE, &h),
            Verdict::Consumed(Some(Reply::Decline))
        );
        // NEO/py rules: never a reply.
        let (mut n, _) = Negotiation::start(Role::Server, false, false, 4096);
        assert_eq!(
            n.on_packet(SERVER_CTL, control::CONTROL_CODE, &h),
            Verdict::Consumed(None)
        );
        assert_eq!(n.mode(), PeerMode::Neo);
    }

    #[test]
    fn silent_peer_times_out_to_neo() {
        let (mut n, _) = Negotiation::start(Role::Server, true, true, 4096);
        assert!(n.waiting());
        assert!(n.on_timeout());
        assert!(!n.on_timeout());
        assert_eq!(n.mode(), PeerMode::Neo);
    }
}
