//! Link settings and their defaults.

use std::time::Duration;

/// NEO's current protocol version word (NEO/go 2020, NEO/py 1.12).
pub const DEFAULT_VERSION: u32 = 6;

/// Which NEO implementation's rules the link follows. Both share the handshake, the packet
/// header and the Error message; they differ in how connection ids are numbered and how an
/// incoming packet finds its connection (see `docs/protocols/link.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// NEO/go's `neonet` (the default): ids by role (the dialer odd from 1, the acceptor even
    /// from 0, +2 each), routing by id, many messages per connection, automatic
    /// "connection closed" / "connection refused" replies. nodelink peers may agree on the
    /// flow-control extension on top of it.
    #[default]
    NeoGo,
    /// NEO/py 1.12: both sides number their requests 0, 1, 2, ... (+1, wrapping); a packet
    /// with the answer bit goes to our pending request with that id, anything else is a new
    /// request from the peer, even when its id equals one of ours. One request, at most one
    /// answer: no multi-message connections, no automatic replies, no extensions ever.
    NeoPy,
}

impl Dialect {
    /// The name used on the command line (`neo-go`, `neo-py`).
    pub fn name(self) -> &'static str {
        match self {
            Dialect::NeoGo => "neo-go",
            Dialect::NeoPy => "neo-py",
        }
    }

    /// Largest payload accepted from the peer. NEO/go bounds the whole packet (header
    /// included) by 64 MiB; NEO/py 1.12 bounds the payload alone by 64 MiB, so it may send
    /// up to 10 bytes more.
    pub fn max_recv_payload(self) -> usize {
        match self {
            Dialect::NeoGo => crate::frame::MAX_PAYLOAD_LEN,
            Dialect::NeoPy => crate::frame::MAX_PACKET_SIZE,
        }
    }
}

impl std::str::FromStr for Dialect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "neo-go" => Ok(Dialect::NeoGo),
            "neo-py" => Ok(Dialect::NeoPy),
            other => Err(format!(
                "unknown dialect {other:?} (expected neo-go or neo-py)"
            )),
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings of a link. Start from [`Config::default()`] and change what you need:
///
/// ```
/// use std::time::Duration;
/// let config = nodelink::Config::default()
///     .with_handshake_timeout(Duration::from_secs(3))
///     .with_conn_recv_budget(1 << 20);
/// assert_eq!(config.version, 6);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// NEO/go's or NEO/py's rules (default [`Dialect::NeoGo`]).
    pub dialect: Dialect,
    /// Version word exchanged in the handshake (default 6, NEO's).
    pub version: u32,
    /// How long the version handshake (and TLS, if any) may take (default 10 s). The
    /// original had no bound, so a silent peer held a socket forever.
    pub handshake_timeout: Duration,
    /// How long to remember a closed peer-initiated connection so that late packets get
    /// "connection closed" instead of opening a new connection (default 60 s, as NEO).
    pub keep_closed: Duration,
    /// Most closed-connection records kept at once; the oldest are forgotten first
    /// (default 65 536), so a peer opening and abandoning connections cannot grow memory.
    pub max_keep_closed: usize,
    /// Bytes of payload one connection may hold unread (default 4 MiB). With a nodelink peer
    /// this is the flow-control window; with a strict NEO peer a connection that exceeds it
    /// has its receive side closed (see the crate docs, "Flow control").
    pub conn_recv_budget: usize,
    /// Bytes of payload all connections of the link may hold unread together (default
    /// 64 MiB). Past it the link stops reading from the socket until the application
    /// catches up, which bounds memory even against a hostile peer.
    pub link_recv_limit: usize,
    /// Incoming connections waiting for `accept` (default 1024). When it is full the link
    /// stops reading from the peer until the application accepts (NEO/go never refuses while
    /// it is accepting); "connection refused" is only sent once accept is closed or the link
    /// is going down.
    pub accept_backlog: usize,
    /// Most connections open at once on the link, both directions (default 1 048 576).
    pub max_connections: usize,
    /// Bytes queued for sending, or taken out and still being written, before senders wait
    /// (default 4 MiB): what a peer that stops reading can make a link hold.
    pub send_buffer: usize,
    /// Take part in the flow-control extension (default true; never used in the
    /// [`Dialect::NeoPy`] dialect). A dialing side offers it right after the handshake (NEO/go
    /// declines with "connection closed", which is absorbed); an accepting side uses it only
    /// with a peer that offered, so a strict NEO peer never sees an extension frame.
    pub flow_control: bool,
    /// How long `Link::close` keeps trying to send what was already queued (default 1 s).
    pub close_linger: Duration,
    /// Size of each read from the socket (default 64 KiB).
    pub read_buffer: usize,
    /// Default deadline of [`Link::ask1`](crate::Link::ask1),
    /// [`Conn::ask`](crate::Conn::ask) and the typed `call`s, from the call's start to the
    /// answer (default `None`: no deadline, as NEO). A call past it fails with
    /// [`ErrorKind::DeadlineExceeded`](crate::ErrorKind::DeadlineExceeded) and its request
    /// is abandoned; the `*_within` variants set a deadline per call. It changes nothing on
    /// the wire, so it is safe with strict peers.
    pub ask_timeout: Option<Duration>,
    /// End the link when the peer has sent no packet for this long (default `None`, as
    /// NEO), with [`ErrorKind::DeadPeer`](crate::ErrorKind::DeadPeer): a peer that
    /// vanished (a crashed host, a NAT that forgot the mapping, a KCP peer without
    /// keepalive) is noticed even on a link that has nothing to send. A nodelink peer that
    /// agreed on the flow-control extension is probed halfway (PING, answered PONG), so a
    /// healthy idle link stays up and only one side needs the setting. A strict NEO peer
    /// is not probed (it would close the link on an unknown packet): there, set it only
    /// where the peer is known to speak regularly. Also taken for dead: a nodelink peer
    /// older than PING (it drops it unanswered), and a peer whose own application stopped
    /// reading for longer than the timeout (its reader is paused, so it reads no PING).
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive on dialled and accepted sockets: the kernel probes a connection idle
    /// for this long and drops it when probes go unanswered, so a peer that vanished is
    /// noticed even by a link that never sends (default 60 s; `None` turns it off). Probes
    /// go every tenth of that (at least a second), and five unanswered ones drop the
    /// connection: a dead peer is noticed within 1.5 times this. Linux takes 1 to 32767
    /// whole seconds; other values are brought within that range. It lives below the link
    /// protocol: nothing a NEO peer can see changes.
    pub tcp_keepalive: Option<Duration>,
    /// Listeners only: most links a listener keeps at once, handshakes included (default
    /// `None`: derived from the open-file limit when the listener is bound, see
    /// [`default_max_links`](crate::default_max_links)). At the limit the listener stops
    /// accepting, so new clients wait in the kernel's backlog (and get a timely refusal
    /// from it when that fills) instead of the process running out of descriptors; a WARN
    /// says so once per episode. A link leaves the count when it ends.
    pub max_links: Option<usize>,
    /// Listeners only: bytes all links of one listener may hold together (default 1 GiB):
    /// payload received and not yet read by the application, plus bytes queued to send
    /// and not yet taken by the socket. Past it, links holding more than their share
    /// (`max_memory / links`, and at most 256 KiB) stop reading from their peers until
    /// their applications and peers catch up, and every link queues at most its share to
    /// send (at least 256 KiB); the others keep reading, so the total stays within about
    /// 256 KiB per link of the budget. Each link is still bounded by
    /// [`Config::link_recv_limit`] and [`Config::send_buffer`] as well.
    pub max_memory: usize,
    /// The budget shared by the links of one listener (set by the listener).
    pub(crate) budget: Option<std::sync::Arc<crate::budget::MemoryBudget>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dialect: Dialect::NeoGo,
            version: DEFAULT_VERSION,
            handshake_timeout: Duration::from_secs(10),
            keep_closed: Duration::from_secs(60),
            max_keep_closed: 65_536,
            conn_recv_budget: 4 << 20,
            link_recv_limit: 64 << 20,
            accept_backlog: 1024,
            max_connections: 1 << 20,
            send_buffer: 4 << 20,
            flow_control: true,
            close_linger: Duration::from_secs(1),
            read_buffer: 64 << 10,
            ask_timeout: None,
            idle_timeout: None,
            tcp_keepalive: Some(Duration::from_secs(60)),
            max_links: None,
            max_memory: 1 << 30,
            budget: None,
        }
    }
}

/// The link limit of a listener bound now without [`Config::max_links`]: the process's
/// open-file limit, less 64 descriptors kept for everything else and one for each
/// handshake that may be under way (a second handle on its socket, through which the
/// listener sees whether its client spoke), at least 16. Each TCP or TLS link holds one
/// descriptor; KCP links hold none but are bounded the same way. Servers commonly raise
/// the soft limit to the hard one at start (the `nodelink` command does).
pub fn default_max_links() -> usize {
    nodelink_driver::open_file_limit()
        .saturating_sub(64 + crate::accept::MAX_PENDING_HANDSHAKES)
        .max(16)
}

/// The smallest receive budget allowed; the flow-control extension relies on every window
/// being at least this large.
pub const MIN_RECV_BUDGET: usize = 64 << 10;

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $field:ident: $ty:ty;)*) => {
        impl Config {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`Config::dialect`].
    with_dialect: dialect: Dialect;
    /// Sets [`Config::version`].
    with_version: version: u32;
    /// Sets [`Config::handshake_timeout`].
    with_handshake_timeout: handshake_timeout: Duration;
    /// Sets [`Config::keep_closed`].
    with_keep_closed: keep_closed: Duration;
    /// Sets [`Config::max_keep_closed`].
    with_max_keep_closed: max_keep_closed: usize;
    /// Sets [`Config::link_recv_limit`].
    with_link_recv_limit: link_recv_limit: usize;
    /// Sets [`Config::accept_backlog`].
    with_accept_backlog: accept_backlog: usize;
    /// Sets [`Config::max_connections`].
    with_max_connections: max_connections: usize;
    /// Sets [`Config::send_buffer`].
    with_send_buffer: send_buffer: usize;
    /// Sets [`Config::flow_control`].
    with_flow_control: flow_control: bool;
    /// Sets [`Config::close_linger`].
    with_close_linger: close_linger: Duration;
    /// Sets [`Config::read_buffer`].
    with_read_buffer: read_buffer: usize;
}

impl Config {
    /// Sets [`Config::conn_recv_budget`] (raised to [`MIN_RECV_BUDGET`] if smaller).
    pub fn with_conn_recv_budget(mut self, value: usize) -> Self {
        self.conn_recv_budget = value.max(MIN_RECV_BUDGET);
        self
    }

    /// Sets [`Config::ask_timeout`]: a `Duration`, or `None` for no deadline.
    pub fn with_ask_timeout(mut self, value: impl Into<Option<Duration>>) -> Self {
        self.ask_timeout = value.into();
        self
    }

    /// Sets [`Config::tcp_keepalive`]: a `Duration`, or `None` for none.
    pub fn with_tcp_keepalive(mut self, value: impl Into<Option<Duration>>) -> Self {
        self.tcp_keepalive = value.into();
        self
    }

    /// Sets [`Config::idle_timeout`]: a `Duration`, or `None` for none.
    pub fn with_idle_timeout(mut self, value: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = value.into();
        self
    }

    /// Sets [`Config::max_memory`].
    pub fn with_max_memory(mut self, bytes: usize) -> Self {
        self.max_memory = bytes;
        self
    }

    /// Sets [`Config::max_links`].
    pub fn with_max_links(mut self, value: impl Into<Option<usize>>) -> Self {
        self.max_links = value.into();
        self
    }

    /// Whether this link takes part in the flow-control extension at all.
    pub(crate) fn extension_enabled(&self) -> bool {
        self.flow_control && self.dialect == Dialect::NeoGo
    }

    /// The budget actually used: never below [`MIN_RECV_BUDGET`] nor above `u32::MAX`.
    pub(crate) fn effective_budget(&self) -> usize {
        self.conn_recv_budget
            .clamp(MIN_RECV_BUDGET, u32::MAX as usize)
    }
}
