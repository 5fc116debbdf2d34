//! The dispatch of `nodelink nt echo` (and of the tour's echo endpoint): every incoming
//! connection is echoed by a task of its own, which connects back to the sender and sends
//! each message there, fed through a small bounded channel.
//!
//! One task receives every event of the endpoint, so it must never wait for one peer: a
//! peer that sends and never reads its echoes (they come back on the same socket, one per
//! pair of endpoints) would otherwise stop every other peer's echoes with it. Messages
//! waiting for their echo count against a budget shared by all connections (nodelink-
//! driver's `MemoryBudget`, a third of what `--max-memory` gives the libraries). A message
//! that finds its connection's queue full, or that arrives while the budget is exceeded
//! and its connection already has more than its floor waiting (a connection with nothing
//! waiting always gets its message queued, however large), ends that connection's echo
//! instead of waiting: its
//! worker and queued messages are dropped, its reverse connection closes, later messages
//! on it are dropped (counted), and a WARN within the warning budget names the peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail};
use bytes::Bytes;
use nodelink_driver::{peer_warn, Holding, MemoryBudget, WarnLimiter};
use nodelink_transport::{ConnectionId, EndPoint, EndPointAddress, Event, EventErrorKind};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

/// Messages queued per incoming connection while its reverse connection is being opened
/// or its peer reads slowly (their bytes are bounded by the budget): more than a burst
/// filling the transport's event queue (1024 events by default).
const PER_CONNECTION_QUEUE: usize = 4096;

/// One incoming connection being echoed.
struct Incoming {
    from: EndPointAddress,
    queue: mpsc::Sender<Vec<Bytes>>,
    /// Bytes queued for the worker and not yet sent.
    queued: Arc<Queued>,
    worker: AbortHandle,
}

/// What one connection's echo holds, published to the shared budget.
struct Queued {
    bytes: AtomicUsize,
    holding: Holding,
}

impl Queued {
    fn add(&self, n: usize) -> usize {
        let now = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        self.holding.set(now);
        now
    }

    fn sub(&self, n: usize) {
        let now = self.bytes.fetch_sub(n, Ordering::Relaxed) - n;
        self.holding.set(now);
    }
}

/// Dispatches events to per-connection workers until the endpoint closes or fails; the
/// messages waiting for their echo may hold `budget` bytes together.
pub(crate) async fn echo_loop(endpoint: &EndPoint, budget: usize) -> anyhow::Result<()> {
    let budget = Arc::new(MemoryBudget::new("echoed connections", budget));
    let warn_limit = WarnLimiter::new();
    let mut incoming: HashMap<ConnectionId, Incoming> = HashMap::new();
    // Connections whose echo ended because their peer did not keep up, and their peers.
    let mut abandoned: HashMap<ConnectionId, EndPointAddress> = HashMap::new();
    let mut dropped = 0u64;
    let mut workers = JoinSet::new();
    loop {
        let event = tokio::select! {
            event = endpoint.receive() => event,
            Some(_) = workers.join_next(), if !workers.is_empty() => continue,
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => return Err(anyhow!(e).context("the endpoint failed")),
        };
        match event {
            Event::ConnectionOpened { id, address, .. } => {
                tracing::debug!(%id, from = %address, "echoing a new connection");
                let (queue, rx) = mpsc::channel(PER_CONNECTION_QUEUE);
                let queued = Arc::new(Queued {
                    bytes: AtomicUsize::new(0),
                    holding: budget.join(1),
                });
                let worker = workers.spawn(echo_worker(
                    endpoint.clone(),
                    id,
                    address.clone(),
                    rx,
                    queued.clone(),
                ));
                abandoned.remove(&id);
                incoming.insert(
                    id,
                    Incoming {
                        from: address,
                        queue,
                        queued,
                        worker,
                    },
                );
            }
            Event::Received { id, data } => {
                let Some(conn) = incoming.get(&id) else {
                    if abandoned.contains_key(&id) {
                        dropped += 1;
                    } else {
                        tracing::debug!(%id, "data on an unknown connection");
                    }
                    continue;
                };
                let len: usize = data.iter().map(Bytes::len).sum();
                let now = conn.queued.add(len);
                // Judged by what waited before this message: a connection whose echoes
                // are all taken gets this one queued whatever its size (the transport
                // bounds it), so a large message is echoed even past the budget.
                let refused = if conn.queued.holding.over_judging(now, now - len) {
                    Some("the echoes' memory budget is exceeded and this connection holds more than its share")
                } else {
                    match conn.queue.try_send(data) {
                        Ok(()) => None,
                        Err(mpsc::error::TrySendError::Full(_)) => Some("its echo queue is full"),
                        // The worker is gone: it failed to connect back (and said so).
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            conn.queued.sub(len);
                            continue;
                        }
                    }
                };
                if let Some(why) = refused {
                    let conn = incoming.remove(&id).expect("looked up above");
                    conn.worker.abort();
                    dropped += 1;
                    peer_warn!(
                        warn_limit,
                        peer = %conn.from,
                        connection = %id,
                        queued = now,
                        messages_dropped = dropped,
                        "peer does not take its echoes ({why}): the echo of this connection \
                         ends, its later messages are dropped"
                    );
                    abandoned.insert(id, conn.from);
                }
            }
            Event::ConnectionClosed { id } => {
                abandoned.remove(&id);
                // Dropping the queue lets the worker finish what is queued, then close.
                if incoming.remove(&id).is_some() {
                    tracing::debug!(%id, "echo of a closed connection ends");
                }
            }
            Event::Error {
                kind: EventErrorKind::ConnectionLost(address),
                message,
            } => {
                tracing::debug!(peer = %address, %message, "echoes to a lost peer end");
                // Every connection from that endpoint is gone, with no ConnectionClosed.
                incoming.retain(|_, c| c.from != address);
                abandoned.retain(|_, from| *from != address);
            }
            Event::Error { kind, message } => {
                bail!("{kind}: {message}");
            }
            Event::EndPointClosed => return Ok(()),
        }
    }
}

/// Connects back to `to` and echoes every queued message there; closes the reverse
/// connection when the queue ends (the incoming connection closed or was lost).
async fn echo_worker(
    endpoint: EndPoint,
    id: ConnectionId,
    to: EndPointAddress,
    mut queue: mpsc::Receiver<Vec<Bytes>>,
    queued: Arc<Queued>,
) {
    let reverse = match endpoint.connect(&to).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%id, peer = %to, error = &e as &dyn std::error::Error, "cannot connect back");
            return;
        }
    };
    while let Some(data) = queue.recv().await {
        let len: usize = data.iter().map(Bytes::len).sum();
        let sent = reverse.send(&data).await;
        queued.sub(len);
        if let Err(e) = sent {
            tracing::warn!(%id, peer = %to, error = &e as &dyn std::error::Error, "cannot echo");
            break;
        }
    }
    reverse.close().await;
}
