//! An endpoint's state, shared by its handles and by the tasks of its sockets: an
//! address, a queue of events, and one record (and socket) per remote endpoint.
//!
//! All of an endpoint's bookkeeping — its remote records, their reference counts, its
//! lcid counters — sits behind one synchronous lock that is never held across an await.
//! Frames that a state change requires are queued on the socket's writer and events are
//! queued on the event queue *under* that lock, so both follow the order of the state
//! changes; the bytes are written after the lock is released.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::address::EndPointAddress;
use crate::config::Config;
use crate::core::peers::Peers;
use crate::error::{Error, ErrorKind};
use crate::event::Event;
use crate::queue::{EventQueue, Popped};
use crate::remote::{PeerIo, Remote, Resolution};
use crate::stats::{Counters, EndPointStats};
use crate::wire::FIRST_LCID;
use crate::writer::SocketWriter;
use nodelink_driver::lock;
use nodelink_driver::{MemoryBudget, WarnLimiter};

/// What holds the endpoints: told when one closes, so it forgets it. (A trait, so that
/// the endpoint's state does not depend on the transport that owns it.)
pub(crate) trait Owner: Send + Sync {
    fn forget_endpoint(&self, id: u32);
}

/// How long closing an endpoint waits for its last frames to reach each peer before it
/// cuts the socket: a peer that does not read must not make `close` hang.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(2);

pub(crate) struct EndPointShared {
    /// Who keeps the table of endpoints (the transport), told when this one closes.
    pub(crate) owner: Weak<dyn Owner>,
    pub(crate) config: Arc<Config>,
    /// The transport's budget of peer-caused warnings.
    pub(crate) warn_limit: Arc<WarnLimiter>,
    /// The transport's memory budget for messages still arriving (`reader.rs`).
    pub(crate) memory: Arc<MemoryBudget>,
    pub(crate) id: u32,
    pub(crate) address: EndPointAddress,
    /// Whether peers can connect to `address` (false: a UUID naming an endpoint without a
    /// listening socket, which sends an empty origin in its requests).
    pub(crate) addressable: bool,
    pub(crate) state: Mutex<EpState>,
    pub(crate) events: EventQueue,
    /// Counters for [`EndPointStats`](crate::EndPointStats), outside the lock.
    pub(crate) counters: Counters,
}

pub(crate) struct EpState {
    pub(crate) next_self_lcid: u32,
    /// One record per remote endpoint (the protocol of records: `core/peers.rs`).
    pub(crate) peers: Peers<PeerIo>,
}

impl EpState {
    /// Removes the record for `address` if it is still the one with `key`, announcing `r`.
    pub(crate) fn remove_remote(
        &mut self,
        address: &EndPointAddress,
        key: u64,
        r: Resolution,
    ) -> Option<Remote> {
        let rec = self.peers.remove(address, key)?;
        rec.announce(r);
        Some(rec)
    }
}

impl EndPointShared {
    pub(crate) fn new(
        owner: Weak<dyn Owner>,
        config: Arc<Config>,
        warn_limit: Arc<WarnLimiter>,
        memory: Arc<MemoryBudget>,
        id: u32,
        address: EndPointAddress,
        addressable: bool,
    ) -> Self {
        let capacity = config.event_queue_capacity;
        let max_bytes = config.event_queue_bytes;
        let peers = Peers::new(address.clone(), config.socket_limits());
        EndPointShared {
            owner,
            config,
            warn_limit,
            memory,
            id,
            address,
            addressable,
            state: Mutex::new(EpState {
                next_self_lcid: FIRST_LCID,
                peers,
            }),
            events: EventQueue::new(capacity, max_bytes),
            counters: Counters::default(),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, EpState> {
        lock(&self.state)
    }

    /// closeEndPoint: tell every peer, cut every socket, end the event stream.
    pub(crate) async fn close(&self) {
        let writers: Vec<Arc<SocketWriter>> = {
            let mut st = self.lock();
            if st.peers.is_closed() {
                return;
            }
            let mut writers = Vec::new();
            for (_, mut rec) in st.peers.close() {
                if let Some(mut s) = rec.socket() {
                    let _ = s.transmit();
                    s.writer.kill();
                    writers.push(s.writer.clone());
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
        if let Some(owner) = self.owner.upgrade() {
            owner.forget_endpoint(self.id);
        }
        let closing = writers.into_iter().map(|w| async move {
            let _ = tokio::time::timeout(CLOSE_LINGER, w.shutdown()).await;
            w.abandon().await;
        });
        futures_util::future::join_all(closing).await;
    }

    /// Counters and gauges of this endpoint now.
    pub(crate) fn stats(&self) -> EndPointStats {
        let mut stats = EndPointStats::default();
        {
            let st = self.lock();
            for core in st.peers.iter().filter_map(|(_, rec)| rec.core()) {
                stats.sockets += 1;
                stats.connections_in += core.incoming() as u64;
                stats.connections_out += u64::from(core.outgoing());
            }
        }
        self.counters.fill(&mut stats);
        stats
    }

    pub(crate) async fn receive(&self) -> Result<Event, Error> {
        match self.events.pop().await {
            Popped::Event(ev) => Ok(ev),
            Popped::Finished => Err(Error::new(ErrorKind::EndPointClosed, "endpoint closed")),
        }
    }
}
