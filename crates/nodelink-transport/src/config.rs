//! Transport parameters and their defaults.
//!
//! Every parameter of network-transport-tcp 0.8.6 is here under a Rust name. Where the
//! original defaults to "unlimited" we pick a bound instead: the original's unlimited
//! defaults are exactly how a hostile or silent peer exhausts its memory or parks its
//! threads forever.

use std::time::Duration;

/// Parameters of a [`Transport`](crate::Transport). `Default` gives the safe defaults
/// documented on each field; change one with its `with_*` setter
/// (docs/CONVENTIONS.md, "Configuration"):
///
/// ```
/// use std::time::Duration;
/// let config = nodelink_transport::Config::default()
///     .with_connect_timeout(Some(Duration::from_secs(2)))
///     .with_max_receive_length(1 << 20);
/// assert_eq!(config.max_receive_length, 1 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Listen backlog. Default 4096: a burst of thousands of parallel connects, or of
    /// silent sockets reopened all at once, must not overflow it, or a good client's
    /// dropped SYN costs it a second (the kernel caps it at `somaxconn`, which is what the
    /// original's SOMAXCONN aims at).
    pub backlog: u32,
    /// `SO_REUSEADDR` on the listening and the outgoing sockets. Default true, as the
    /// original: a restarted node can rebind its port while old sockets sit in TIME_WAIT.
    pub reuse_address: bool,
    /// `TCP_NODELAY`. Default true, as the original: frames are small and latency bound.
    pub no_delay: bool,
    /// `SO_KEEPALIVE`. Default false, as the original.
    pub keep_alive: bool,
    /// `TCP_USER_TIMEOUT` (Linux only, ignored elsewhere). Default none, as the original.
    pub user_timeout: Option<Duration>,
    /// Bounds an outgoing connect (TCP connect, handshake and any wait for a crossed or
    /// closing socket), an incoming handshake, a probe of a possibly stale socket, the
    /// wait for a crossed request, and how long a socket stays Closing when the peer never
    /// answers our `CloseSocket` (then it is dropped quietly). Default 10 s: generous for
    /// any live peer, short enough that a dead one is noticed; the original has none and
    /// can hang forever in each of those places. `None` restores unbounded waits.
    pub connect_timeout: Option<Duration>,
    /// Longest endpoint address accepted in a connection request (and longest host name
    /// in a `HostMismatch` answer). Default 1024 bytes: real addresses are tens of bytes,
    /// and the original's unlimited default lets a client make us buffer anything.
    pub max_address_length: usize,
    /// Largest data frame payload accepted; a longer one drops the socket (connection
    /// lost). Default 64 MiB: large messages work, while one announced length cannot make
    /// us allocate gigabytes. The original is unlimited.
    pub max_receive_length: u32,
    /// Events an endpoint buffers for [`EndPoint::receive`](crate::EndPoint::receive).
    /// Default 1024. When it is full, the tasks reading the sockets wait for room before
    /// reading on, so a slow consumer slows its peers down (TCP flow control) instead of
    /// growing memory (a self-connection's `send` waits too). Teardown frames do not
    /// wait, so the queue may exceed this by the `ConnectionClosed`/`ConnectionLost`
    /// events of connections already delivered — bounded by
    /// `max_incoming_connections_per_socket` per socket. The original's queue is unbounded.
    pub event_queue_capacity: usize,
    /// Payload bytes of the `Received` events an endpoint buffers. Default 64 MiB. The
    /// event count alone does not bound memory (1024 events of 64 MiB each would be
    /// 64 GiB), so the socket readers also wait while this many bytes are queued; one
    /// frame may overshoot it, so the worst case is this plus `max_receive_length`.
    pub event_queue_bytes: usize,
    /// Check that the host in an incoming request's address is the socket's peer (its
    /// numeric address, or a name that resolves to it); answer `HostMismatch` otherwise.
    /// Default false, as the original: NAT and multi-homed hosts make it fail.
    pub check_peer_host: bool,
    /// Most incoming lightweight connections one peer may hold open on its socket; one
    /// more `CreatedNewConnection` drops the socket as a protocol violation. Default
    /// 65 536: far above what real applications open, yet it caps the memory one peer can
    /// pin by announcing connections it never closes (the original has no bound).
    pub max_incoming_connections_per_socket: usize,
    /// Bytes the sockets of this transport may hold together in messages they are still
    /// receiving. Default 1 GiB. Each socket is bounded by `max_receive_length`, but
    /// peers open as many sockets as they like: past this budget, a socket holding more
    /// than its floor (its share, and at most 256 KiB) of an unfinished message stops
    /// reading, and is dropped (logged) if it is still held back after 10 s; meanwhile a
    /// socket with part of a message from a peer that then says nothing for 3 s is
    /// dropped first. Keep it well above `max_receive_length` (a warning at bind says when it is
    /// not): a message larger than the budget arrives only while the other sockets hold
    /// almost nothing. Messages already received are bounded by the event queue of each
    /// endpoint, which peers cannot multiply.
    pub max_memory: usize,
    /// Most incoming sockets kept at once, handshakes included (default `None`: derived
    /// from the open-file limit when the transport is bound, see
    /// [`default_max_sockets`](crate::default_max_sockets)). At the limit, a new socket
    /// ends the one whose peer has been quiet longest, if that peer said nothing for
    /// 500 ms since it connected or since its handshake, or nothing at all for 30 s; with
    /// none such, the new socket waits for one (later ones wait in the listen backlog),
    /// and is closed after the connect timeout. Both are logged.
    pub max_sockets: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backlog: 4096,
            reuse_address: true,
            no_delay: true,
            keep_alive: false,
            user_timeout: None,
            connect_timeout: Some(Duration::from_secs(10)),
            max_address_length: 1024,
            max_receive_length: 64 << 20,
            event_queue_capacity: 1024,
            event_queue_bytes: 64 << 20,
            check_peer_host: false,
            max_incoming_connections_per_socket: 65_536,
            max_memory: 1 << 30,
            max_sockets: None,
        }
    }
}

impl Config {
    /// Sets [`Config::backlog`].
    pub fn with_backlog(mut self, value: u32) -> Self {
        self.backlog = value;
        self
    }

    /// Sets [`Config::reuse_address`].
    pub fn with_reuse_address(mut self, value: bool) -> Self {
        self.reuse_address = value;
        self
    }

    /// Sets [`Config::no_delay`].
    pub fn with_no_delay(mut self, value: bool) -> Self {
        self.no_delay = value;
        self
    }

    /// Sets [`Config::keep_alive`].
    pub fn with_keep_alive(mut self, value: bool) -> Self {
        self.keep_alive = value;
        self
    }

    /// Sets [`Config::user_timeout`].
    pub fn with_user_timeout(mut self, value: Option<Duration>) -> Self {
        self.user_timeout = value;
        self
    }

    /// Sets [`Config::connect_timeout`].
    pub fn with_connect_timeout(mut self, value: Option<Duration>) -> Self {
        self.connect_timeout = value;
        self
    }

    /// Sets [`Config::max_address_length`].
    pub fn with_max_address_length(mut self, value: usize) -> Self {
        self.max_address_length = value;
        self
    }

    /// Sets [`Config::max_receive_length`].
    pub fn with_max_receive_length(mut self, value: u32) -> Self {
        self.max_receive_length = value;
        self
    }

    /// Sets [`Config::event_queue_capacity`].
    pub fn with_event_queue_capacity(mut self, value: usize) -> Self {
        self.event_queue_capacity = value;
        self
    }

    /// Sets [`Config::max_sockets`].
    pub fn with_max_sockets(mut self, value: impl Into<Option<usize>>) -> Self {
        self.max_sockets = value.into();
        self
    }

    /// Sets [`Config::max_memory`].
    pub fn with_max_memory(mut self, value: usize) -> Self {
        self.max_memory = value;
        self
    }

    /// Sets [`Config::event_queue_bytes`].
    pub fn with_event_queue_bytes(mut self, value: usize) -> Self {
        self.event_queue_bytes = value;
        self
    }

    /// Sets [`Config::check_peer_host`].
    pub fn with_check_peer_host(mut self, value: bool) -> Self {
        self.check_peer_host = value;
        self
    }

    /// Sets [`Config::max_incoming_connections_per_socket`].
    pub fn with_max_incoming_connections_per_socket(mut self, value: usize) -> Self {
        self.max_incoming_connections_per_socket = value;
        self
    }
}

/// Per-call options of [`EndPoint::connect_with`](crate::EndPoint::connect_with).
#[derive(Debug, Clone, Default)]
pub struct ConnectHints {
    /// Overrides [`Config::connect_timeout`] for this connect.
    pub connect_timeout: Option<Duration>,
}

impl Config {
    /// The limits every socket's core enforces.
    pub(crate) fn socket_limits(&self) -> crate::core::socket::SocketLimits {
        crate::core::socket::SocketLimits {
            max_incoming: self.max_incoming_connections_per_socket,
            answer_timeout: self.connect_timeout,
        }
    }
}
