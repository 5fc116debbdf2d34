//! Endpoints: an address, a queue of events, and one socket per remote endpoint.
//!
//! All of an endpoint's bookkeeping — its remote records, their reference counts, its
//! lcid counters — sits behind one synchronous lock that is never held across an await.
//! Frames that a state change requires are queued on the socket's writer and events are
//! queued on the event queue *under* that lock, so both follow the order of the state
//! changes; the bytes are written after the lock is released.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::address::EndPointAddress;
use crate::config::{ConnectHints, TransportConfig};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind};
use crate::event::Event;
use crate::queue::{EventQueue, Popped};
use crate::ratelimit::WarnLimiter;
use crate::remote::{Remote, RemoteState, Resolution};
use crate::sync::lock;
use crate::transport::TransportShared;
use crate::wire::FIRST_LCID;
use crate::writer::SocketWriter;

/// How long closing an endpoint waits for its last frames to reach each peer before it
/// cuts the socket: a peer that does not read must not make `close` hang.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(2);

pub(crate) struct EndPointShared {
    pub(crate) transport: Weak<TransportShared>,
    pub(crate) config: Arc<TransportConfig>,
    /// The transport's budget of peer-caused warnings.
    pub(crate) warn_limit: Arc<WarnLimiter>,
    pub(crate) id: u32,
    pub(crate) address: EndPointAddress,
    pub(crate) state: Mutex<EpState>,
    pub(crate) events: EventQueue,
}

pub(crate) struct EpState {
    pub(crate) closed: bool,
    next_hid: u32,
    next_key: u64,
    pub(crate) next_self_lcid: u32,
    pub(crate) remotes: HashMap<EndPointAddress, Remote>,
}

impl EpState {
    /// Creates (and stores) a record for `address`; returns its key.
    pub(crate) fn insert_remote(&mut self, address: EndPointAddress, state: RemoteState) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        let hid = self.next_hid;
        // Heavyweight ids are 32 bits on the wire of connection ids; 0 is reserved for
        // self-connections, so wrap to 1.
        self.next_hid = self.next_hid.checked_add(1).unwrap_or(1);
        self.remotes.insert(address, Remote::new(key, hid, state));
        key
    }

    /// The record for `address` if it is still the one with `key`.
    pub(crate) fn remote_mut(
        &mut self,
        address: &EndPointAddress,
        key: u64,
    ) -> Option<&mut Remote> {
        self.remotes.get_mut(address).filter(|r| r.key == key)
    }

    /// Removes the record for `address` if it is still the one with `key`, announcing `r`.
    pub(crate) fn remove_remote(
        &mut self,
        address: &EndPointAddress,
        key: u64,
        r: Resolution,
    ) -> Option<Remote> {
        if self.remotes.get(address).is_some_and(|x| x.key == key) {
            let rec = self.remotes.remove(address)?;
            rec.announce(r);
            Some(rec)
        } else {
            None
        }
    }
}

impl EndPointShared {
    pub(crate) fn new(
        transport: Weak<TransportShared>,
        config: Arc<TransportConfig>,
        warn_limit: Arc<WarnLimiter>,
        id: u32,
        address: EndPointAddress,
    ) -> Self {
        let capacity = config.event_queue_capacity;
        let max_bytes = config.event_queue_bytes;
        EndPointShared {
            transport,
            config,
            warn_limit,
            id,
            address,
            state: Mutex::new(EpState {
                closed: false,
                next_hid: 1,
                next_key: 0,
                next_self_lcid: FIRST_LCID,
                remotes: HashMap::new(),
            }),
            events: EventQueue::new(capacity, max_bytes),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, EpState> {
        lock(&self.state)
    }

    /// closeEndPoint: tell every peer, cut every socket, end the event stream.
    pub(crate) async fn close(&self) {
        let writers: Vec<Arc<SocketWriter>> = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            let mut writers = Vec::new();
            for (_, mut rec) in st.remotes.drain() {
                match &mut rec.state {
                    RemoteState::Open(s) => {
                        s.core.close_endpoint();
                        let _ = s.transmit();
                        s.writer.kill();
                        writers.push(s.writer.clone());
                    }
                    RemoteState::Init { .. } => {}
                }
                rec.announce(Resolution::Failed(
                    ErrorKind::ConnectFailed,
                    "endpoint closed".into(),
                ));
            }
            self.events.close();
            tracing::info!(endpoint = %self.address, peers = writers.len(), "endpoint closed");
            writers
        };
        if let Some(t) = self.transport.upgrade() {
            t.forget_endpoint(self.id);
        }
        let closing = writers.into_iter().map(|w| async move {
            let _ = tokio::time::timeout(CLOSE_LINGER, w.shutdown()).await;
            w.abandon().await;
        });
        futures_util::future::join_all(closing).await;
    }

    pub(crate) async fn receive(&self) -> Result<Event, Error> {
        match self.events.pop().await {
            Popped::Event(ev) => Ok(ev),
            Popped::Finished => Err(Error::new(ErrorKind::EndPointClosed, "endpoint closed")),
        }
    }
}

type Pending = Pin<Box<dyn Future<Output = Option<Event>> + Send>>;

/// One endpoint of a [`Transport`](crate::Transport).
///
/// Cheap to clone: clones share the endpoint (and its single event queue; each event goes
/// to one receiver). Also a [`Stream`](futures_core::Stream) of events, which yields
/// `EndPointClosed` last and then ends.
pub struct EndPoint {
    shared: Arc<EndPointShared>,
    /// The receive in progress when used as a stream (per clone).
    pending: Mutex<Option<Pending>>,
}

impl Clone for EndPoint {
    fn clone(&self) -> Self {
        EndPoint {
            shared: self.shared.clone(),
            pending: Mutex::new(None),
        }
    }
}

impl fmt::Debug for EndPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndPoint")
            .field("address", &self.shared.address)
            .finish()
    }
}

impl EndPoint {
    pub(crate) fn from_shared(shared: Arc<EndPointShared>) -> Self {
        EndPoint {
            shared,
            pending: Mutex::new(None),
        }
    }

    /// This endpoint's address, to give to peers.
    pub fn address(&self) -> &EndPointAddress {
        &self.shared.address
    }

    /// Opens a lightweight connection to `to`, reusing the socket to that endpoint if
    /// there is one. Bounded by the transport's connect timeout.
    pub async fn connect(&self, to: &EndPointAddress) -> Result<Connection, Error> {
        self.connect_with(to, ConnectHints::default()).await
    }

    /// [`connect`](Self::connect) with per-call hints.
    pub async fn connect_with(
        &self,
        to: &EndPointAddress,
        hints: ConnectHints,
    ) -> Result<Connection, Error> {
        let timeout = hints.connect_timeout.or(self.shared.config.connect_timeout);
        crate::connect::connect(&self.shared, to, timeout).await
    }

    /// The next event. After `EndPointClosed` has been returned, every call fails at once
    /// with [`ErrorKind::EndPointClosed`].
    pub async fn receive(&self) -> Result<Event, Error> {
        self.shared.receive().await
    }

    /// Closes the endpoint: each peer gets `CloseEndPoint`, sockets are closed, the event
    /// stream ends with `EndPointClosed`. Idempotent.
    pub async fn close(&self) {
        self.shared.close().await
    }

    /// Multicast is not offered by this transport.
    pub fn new_multicast_group(&self) -> Result<(), Error> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "multicast is not supported by the TCP transport",
        ))
    }
}

impl futures_core::Stream for EndPoint {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        let pending = this.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        let fut = pending.get_or_insert_with(|| {
            let shared = this.shared.clone();
            Box::pin(async move { shared.receive().await.ok() })
        });
        match fut.as_mut().poll(cx) {
            Poll::Ready(ev) => {
                *pending = None;
                Poll::Ready(ev)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
