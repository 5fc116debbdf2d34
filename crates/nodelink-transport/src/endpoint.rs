//! The public [`EndPoint`] handle: connect, receive, close. Its state lives in
//! `endpoint_shared.rs`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::address::EndPointAddress;
use crate::config::ConnectHints;
use crate::connection::Connection;
use crate::endpoint_shared::EndPointShared;
use crate::error::{Error, ErrorKind};
use crate::event::Event;
use crate::stats::EndPointStats;

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

    /// Counters and gauges of this endpoint (sockets, connections each way, messages,
    /// losses, protocol violations).
    pub fn stats(&self) -> EndPointStats {
        self.shared.stats()
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
