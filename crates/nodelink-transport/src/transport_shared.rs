//! A transport's state, shared by its handles, its accept loop and the handshakes of
//! incoming sockets: configuration, the advertised address and the table of endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::config::Config;
use crate::endpoint_shared::{EndPointShared, Owner};
use crate::event::{Event, EventErrorKind};
use nodelink_driver::lock;
use nodelink_driver::{MemoryBudget, WarnLimiter};

pub(crate) struct TransportShared {
    pub(crate) config: Arc<Config>,
    /// Advertised `(host, port)`; `None` when unaddressable.
    pub(crate) advertised: Option<(String, u16)>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) state: Mutex<TState>,
    pub(crate) accept_task: Mutex<Option<JoinHandle<()>>>,
    /// Makes the accept loop fail as if `accept` had returned a fatal error (tests only).
    pub(crate) break_accept: Arc<tokio::sync::Notify>,
    /// The budget of peer-caused warnings, shared by the transport's endpoints.
    pub(crate) warn_limit: Arc<WarnLimiter>,
    /// The incoming sockets, at most [`Config::max_sockets`] (`limit.rs`).
    pub(crate) live: Arc<crate::limit::LiveSockets>,
    /// What the sockets hold of messages still arriving ([`Config::max_memory`]).
    pub(crate) memory: Arc<MemoryBudget>,
    /// Incoming handshakes that failed ([`TransportStats`](crate::TransportStats)).
    pub(crate) handshakes_failed: AtomicU64,
}

pub(crate) struct TState {
    pub(crate) closed: bool,
    pub(crate) next_id: u32,
    pub(crate) endpoints: HashMap<u32, Arc<EndPointShared>>,
}

impl TransportShared {
    pub(crate) fn endpoint(&self, id: u32) -> Option<Arc<EndPointShared>> {
        lock(&self.state).endpoints.get(&id).cloned()
    }

    /// Whether endpoint `id` was opened on this transport at some point (it may be
    /// closed now): ids are given out in order.
    pub(crate) fn was_opened(&self, id: u32) -> bool {
        id < lock(&self.state).next_id
    }

    pub(crate) fn fail_all(&self, message: &str) {
        let eps: Vec<_> = lock(&self.state).endpoints.values().cloned().collect();
        for ep in eps {
            let _st = ep.lock();
            ep.events.push(Event::Error {
                kind: EventErrorKind::TransportFailed,
                message: message.to_owned(),
            });
        }
    }
}

impl Drop for TransportShared {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.accept_task).take() {
            t.abort();
        }
    }
}

impl Owner for TransportShared {
    fn forget_endpoint(&self, id: u32) {
        lock(&self.state).endpoints.remove(&id);
    }
}
