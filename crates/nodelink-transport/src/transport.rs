//! The transport: a listening socket (or none), its accept loop, and the endpoints.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::net::TcpListener;

use crate::address::EndPointAddress;
use crate::config::Config;
use crate::endpoint::EndPoint;
use crate::endpoint_shared::{EndPointShared, Owner};
use crate::error::{Error, ErrorKind};
use crate::limit::Admission;
use crate::stats::TransportStats;
use crate::transport_shared::{TState, TransportShared};
use nodelink_driver::lock;
use nodelink_driver::peer_warn;
use nodelink_driver::WarnLimiter;

/// A network-transport-tcp transport. Cheap to clone (clones share it).
#[derive(Clone)]
pub struct Transport {
    shared: Arc<TransportShared>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}

impl Transport {
    /// Listens on `host:port` (port 0 picks a free port). Endpoint addresses are
    /// `host:realport:id` with `host` as given.
    pub async fn bind(host: &str, port: u16, config: Config) -> Result<Transport, Error> {
        let host_owned = host.to_owned();
        Self::bind_with_external(host, port, move |p| (host_owned.clone(), p), config).await
    }

    /// Listens on `bind_host:port` but advertises the `(host, port)` that `external`
    /// returns for the real port (behind NAT or port forwarding).
    pub async fn bind_with_external(
        bind_host: &str,
        port: u16,
        external: impl Fn(u16) -> (String, u16) + Send + Sync + 'static,
        config: Config,
    ) -> Result<Transport, Error> {
        let listener = listen(bind_host, port, &config).await?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::with_source(ErrorKind::Bind, "local address", e))?;
        let advertised = external(local_addr.port());
        let shared = Arc::new(TransportShared {
            memory: socket_budget(&config),
            live: crate::limit::LiveSockets::new(
                config
                    .max_sockets
                    .unwrap_or_else(crate::limit::default_max_sockets),
            ),
            config: Arc::new(config),
            advertised: Some(advertised),
            local_addr: Some(local_addr),
            state: Mutex::new(TState {
                closed: false,
                next_id: 0,
                endpoints: HashMap::new(),
            }),
            accept_task: Mutex::new(None),
            break_accept: Arc::new(tokio::sync::Notify::new()),
            warn_limit: Arc::new(WarnLimiter::new()),
            handshakes_failed: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(
            Arc::downgrade(&shared),
            listener,
            shared.break_accept.clone(),
        ));
        *lock(&shared.accept_task) = Some(task);
        Ok(Transport { shared })
    }

    /// A transport without a listening socket: its endpoints have random UUID addresses
    /// and can only connect out (peers answer over the socket that connection opened).
    pub fn unaddressable(config: Config) -> Transport {
        Transport {
            shared: Arc::new(TransportShared {
                memory: socket_budget(&config),
                live: crate::limit::LiveSockets::new(1),
                config: Arc::new(config),
                advertised: None,
                local_addr: None,
                state: Mutex::new(TState {
                    closed: false,
                    next_id: 0,
                    endpoints: HashMap::new(),
                }),
                accept_task: Mutex::new(None),
                break_accept: Arc::new(tokio::sync::Notify::new()),
                warn_limit: Arc::new(WarnLimiter::new()),
                handshakes_failed: AtomicU64::new(0),
            }),
        }
    }

    /// The listening socket's address, if any.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.local_addr
    }

    /// Test hook, built with the `testing` feature: makes the accept loop fail exactly as a
    /// fatal `accept` error would, so every endpoint gets
    /// `Event::Error { kind: TransportFailed, .. }` and no further connection is accepted.
    #[cfg(any(test, feature = "testing"))]
    pub fn break_accept_loop_for_tests(&self) {
        self.shared.break_accept.notify_one();
    }

    /// Counters and gauges of the transport as a whole (each endpoint has its own
    /// [`EndPoint::stats`]).
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            endpoints: lock(&self.shared.state).endpoints.len() as u64,
            handshakes_failed: self.shared.handshakes_failed.load(Ordering::Relaxed),
            memory_held: self.shared.memory.used() as u64,
            sockets_in: self.shared.live.len() as u64,
        }
    }

    /// A new endpoint; ids count up from 0.
    pub async fn open_endpoint(&self) -> Result<EndPoint, Error> {
        let mut st = lock(&self.shared.state);
        if st.closed {
            return Err(Error::new(ErrorKind::NewEndPointFailed, "transport closed"));
        }
        let id = st.next_id;
        st.next_id = st.next_id.checked_add(1).ok_or_else(|| {
            Error::new(
                ErrorKind::NewEndPointInsufficientResources,
                "endpoint ids exhausted",
            )
        })?;
        let address = match &self.shared.advertised {
            Some((host, port)) => EndPointAddress::new(host, *port, id),
            None => EndPointAddress::unaddressable(),
        };
        let ep = Arc::new(EndPointShared::new(
            Arc::downgrade(&self.shared) as Weak<dyn Owner>,
            self.shared.config.clone(),
            self.shared.warn_limit.clone(),
            self.shared.memory.clone(),
            id,
            address,
            self.shared.advertised.is_some(),
        ));
        st.endpoints.insert(id, ep.clone());
        Ok(EndPoint::from_shared(ep))
    }

    /// closeTransport: stops listening and closes every endpoint.
    pub async fn close(&self) {
        let eps: Vec<_> = {
            let mut st = lock(&self.shared.state);
            st.closed = true;
            st.endpoints.drain().map(|(_, e)| e).collect()
        };
        if let Some(t) = lock(&self.shared.accept_task).take() {
            t.abort();
        }
        futures_util::future::join_all(eps.iter().map(|e| e.close())).await;
    }
}

async fn listen(host: &str, port: u16, config: &Config) -> Result<TcpListener, Error> {
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::with_source(ErrorKind::Bind, format!("cannot resolve {host}"), e))?
        .next()
        .ok_or_else(|| Error::new(ErrorKind::Bind, format!("{host} resolves to no address")))?;
    let bind_err = |e: std::io::Error| {
        Error::with_source(ErrorKind::Bind, format!("cannot listen on {addr}"), e)
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(bind_err)?;
    if config.reuse_address {
        socket.set_reuse_address(true).map_err(bind_err)?;
    }
    socket.set_nonblocking(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket
        .listen(i32::try_from(config.backlog).unwrap_or(i32::MAX))
        .map_err(bind_err)?;
    TcpListener::from_std(socket.into()).map_err(bind_err)
}

/// Accepts until the transport goes away. Errors that concern one connection or a
/// passing shortage (descriptors, memory) are retried after a pause; anything else ends
/// the loop and every endpoint gets `TransportFailed`.
async fn accept_loop(
    transport: Weak<TransportShared>,
    listener: TcpListener,
    brk: Arc<tokio::sync::Notify>,
) {
    let broken = brk.notified();
    tokio::pin!(broken);
    loop {
        let accepted = tokio::select! {
            r = nodelink_driver::accept(&listener) => r,
            _ = &mut broken => Err(std::io::Error::other("accept loop broken on purpose (test hook)")),
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(t) = transport.upgrade() else { return };
                let Some(registered) = admit(&t, peer).await else {
                    continue;
                };
                crate::net::configure(&stream, &t.config);
                tokio::spawn(crate::inbound::serve(t, stream, peer, registered));
            }
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, "accept loop failed");
                if let Some(t) = transport.upgrade() {
                    t.fail_all(&format!("accept failed: {e}"));
                }
                return;
            }
        }
    }
}

/// How often a newcomer at the socket limit looks again for room.
const ROOM_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Finds room for a new socket from `peer` (`limit.rs`). At the limit with no socket to
/// end yet, the newcomer waits (up to the connect timeout, 10 s without one), and the
/// accept loop with it: later clients wait in the kernel's backlog meanwhile. `None`:
/// no room came, the newcomer is closed.
async fn admit(t: &TransportShared, peer: SocketAddr) -> Option<crate::limit::Registered> {
    let patience = t
        .config
        .connect_timeout
        .unwrap_or(std::time::Duration::from_secs(10));
    let started = tokio::time::Instant::now();
    loop {
        match t.live.admit(peer) {
            Admission::Admitted(r) => return Some(r),
            Admission::MadeRoom {
                registered,
                peer: ended,
                quiet,
            } => {
                peer_warn!(
                    t.warn_limit,
                    peer = %ended,
                    quiet_ms = quiet.as_millis() as u64,
                    max_sockets = t.live.max(),
                    "at the socket limit (max_sockets): ended the socket whose peer was \
                     quiet longest, to make room for a new one (raise max_sockets or the \
                     open-file limit if this is normal load)"
                );
                return Some(registered);
            }
            Admission::Refused if started.elapsed() >= patience => {
                peer_warn!(
                    t.warn_limit,
                    %peer,
                    max_sockets = t.live.max(),
                    waited = ?patience,
                    "at the socket limit (max_sockets), every peer spoke recently: new \
                     socket closed after waiting for room"
                );
                return None;
            }
            Admission::Refused => tokio::time::sleep(ROOM_RECHECK).await,
        }
    }
}

/// The budget the sockets of a transport share (see [`Config::max_memory`]).
fn socket_budget(config: &Config) -> Arc<nodelink_driver::MemoryBudget> {
    if config.max_memory < config.max_receive_length as usize {
        tracing::warn!(
            max_memory = config.max_memory,
            max_receive_length = config.max_receive_length,
            "the memory budget for messages still arriving (max_memory) is smaller than the \
             largest message accepted (max_receive_length): a message larger than the \
             budget is received only while other sockets hold nearly nothing, and may be \
             dropped after 10 s held back"
        );
    }
    Arc::new(nodelink_driver::MemoryBudget::new(
        "sockets",
        config.max_memory,
    ))
}
