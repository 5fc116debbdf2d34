//! The accept loop every listener shares (TCP, TLS and KCP): handshakes run concurrently
//! and are bounded, links are bounded by [`Config::max_links`], and at the limit a waiting
//! client may replace a link that looks abandoned (`evict.rs`).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use nodelink_driver::peer_warn;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::error::Result;
use crate::handle::Link;
use crate::warnings::PEER_WARNINGS;

/// Handshakes in progress at once on a listener. A new connection past it evicts the
/// oldest handshake whose client had sent nothing when it was accepted (or the oldest of
/// all when every one had), so silent sockets (a slowloris) cannot keep a good client
/// waiting: a real client sends its first bytes at once and finishes in a round trip,
/// while silent ones push each other out.
pub(crate) const MAX_PENDING_HANDSHAKES: usize = 256;

/// Where a listener's incoming streams come from (see [`Handshakes::poll_next`]).
pub(crate) trait AcceptStream {
    /// The stream type.
    type Stream;
    /// The next stream; an error means the source is broken for good.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<Self::Stream>>;

    /// Whether the peer already sent something on `stream` (it is not a silent socket).
    fn has_data(stream: &Self::Stream) -> bool;

    /// A second handle on `stream`'s socket, through which the listener can see whether
    /// bytes came while the handshake holds the stream (`None`: judged at accept only).
    fn second_handle(_stream: &Self::Stream) -> Option<socket2::Socket> {
        None
    }
}

/// Streams one call of [`Handshakes::poll_next`] accepts before it yields.
const ACCEPT_BURST: usize = 16;

/// The accept loop every listener shares: handshakes of incoming streams run concurrently
/// (at most [`MAX_PENDING_HANDSHAKES`] at once; past it the oldest is evicted), so a slow
/// or silent client never delays the others; failed handshakes are logged (within the
/// warning budget), counted and skipped. At most [`Config::max_links`] links (handshakes included)
/// are held at once: each takes a permit before its stream is accepted and gives it back
/// when its link ends. At the limit one more stream is accepted and waits for a place,
/// and the link most likely abandoned may be ended to make one (`evict.rs`).
pub(crate) struct Handshakes {
    pending: JoinSet<Result<Link>>,
    /// The handshakes under way, oldest first (finished ones are pruned as we go), and
    /// whether their clients had sent something when they were accepted.
    order: std::collections::VecDeque<(tokio::task::AbortHandle, Spoke)>,
    /// The link limit's permits.
    permits: tokio_util::sync::PollSemaphore,
    max_links: usize,
    /// A permit taken for the next stream, kept while the source has none to give.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The limit was reached and said so; cleared when a permit comes back.
    at_limit: bool,
    /// The links handed out, for making room at the limit.
    live: crate::evict::LiveLinks,
    /// A stream accepted at the limit, its handshake not started until a place is free,
    /// and whether its client had sent something when it was accepted.
    waiting: Option<(Handshake, Spoke)>,
    /// When to look again for a link to end for the waiting stream.
    recheck: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: u64,
    /// The source failed; the error is returned once the handshakes under way are
    /// delivered.
    failure: Option<crate::Error>,
    /// The source failed and that error was returned: a listener's stream has ended.
    pub(crate) ended: bool,
}

impl Handshakes {
    pub(crate) fn new(config: &Config) -> Handshakes {
        let max_links = config
            .max_links
            .unwrap_or_else(crate::config::default_max_links)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Handshakes {
            pending: JoinSet::new(),
            order: std::collections::VecDeque::new(),
            permits: tokio_util::sync::PollSemaphore::new(Arc::new(tokio::sync::Semaphore::new(
                max_links,
            ))),
            max_links,
            permit: None,
            at_limit: false,
            live: crate::evict::LiveLinks::default(),
            waiting: None,
            recheck: None,
            failed: 0,
            failure: None,
            ended: false,
        }
    }

    /// Evicts a handshake under way if [`MAX_PENDING_HANDSHAKES`] are: the oldest whose
    /// client has sent nothing so far (a silent socket; bytes in its socket not read yet
    /// count, see [`Spoke`]), or the oldest of all if every client has. A good client sends
    /// its first bytes at once, so a flood of silent sockets pushes out its own kind first,
    /// however fast it arrives.
    fn make_room(&mut self) {
        self.order.retain(|(h, _)| !h.is_finished());
        if self.order.len() < MAX_PENDING_HANDSHAKES {
            return;
        }
        let silent = self
            .order
            .iter()
            .position(|(_, spoke)| !spoke.now())
            .unwrap_or(0);
        if let Some((victim, _)) = self.order.remove(silent) {
            victim.abort();
            self.failed += 1;
            peer_warn!(
                PEER_WARNINGS,
                pending = MAX_PENDING_HANDSHAKES,
                "too many handshakes under way (silent clients?): the oldest silent one was \
                 dropped"
            );
        }
    }

    /// Links held now (handshakes included): a gauge.
    pub(crate) fn links(&self) -> usize {
        // Not counting the place taken ahead for the next stream.
        self.max_links - self.permits.available_permits() - usize::from(self.permit.is_some())
    }

    /// Handshakes that failed so far.
    pub(crate) fn failed(&self) -> u64 {
        self.failed
    }

    /// Handshakes in progress.
    pub(crate) fn in_progress(&self) -> usize {
        self.pending.len()
    }

    /// Polls for the next handshaked link: streams come from `source`, and `start` turns
    /// one into a handshake. Handshakes already under way are kept between polls, so a
    /// dropped `accept` future loses nothing.
    pub(crate) fn poll_next<A, S, SF>(
        &mut self,
        source: &mut A,
        mut start: S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Link>>
    where
        A: AcceptStream,
        S: FnMut(A::Stream, Heard) -> SF,
        SF: std::future::Future<Output = Result<Link>> + Send + 'static,
    {
        // Streams accepted in this call: past ACCEPT_BURST the call yields, so that the
        // handshakes just started get to run (and finish, for real clients) before a
        // flood of new sockets decides which of them to evict.
        let mut accepted = 0;
        loop {
            if !self.pending.is_empty() {
                if let Poll::Ready(Some(done)) = self.pending.poll_join_next(cx) {
                    // Its entry goes, closing its second handle on the socket at once.
                    self.order.retain(|(h, _)| !h.is_finished());
                    match done {
                        Ok(Ok(link)) => {
                            self.live.add(&link);
                            return Poll::Ready(Ok(link));
                        }
                        Ok(Err(e)) => {
                            self.failed += 1;
                            peer_warn!(
                                PEER_WARNINGS,
                                error = &e as &dyn std::error::Error,
                                "incoming link failed its handshake"
                            );
                        }
                        // Evicted (counted and logged then).
                        Err(e) if e.is_cancelled() => {}
                        Err(e) => {
                            self.failed += 1;
                            tracing::warn!(
                                error = &e as &dyn std::error::Error,
                                "handshake task failed"
                            );
                        }
                    }
                    continue;
                }
            }
            if let Some(e) = &self.failure {
                if self.waiting.take().is_some() {
                    // It never got a place.
                    self.failed += 1;
                }
                // The source is gone: deliver what is under way, then its error (again on
                // every later call).
                if !self.pending.is_empty() {
                    return Poll::Pending;
                }
                self.ended = true;
                return Poll::Ready(Err(e.clone()));
            }
            if self.permit.is_none() {
                match self.permits.poll_acquire(cx) {
                    Poll::Ready(Some(permit)) => {
                        if let Some((handshake, spoke)) = self.waiting.take() {
                            // The stream that waited for a place gets this one (still at
                            // the limit: nothing to say).
                            self.recheck = None;
                            self.spawn(handshake, spoke, permit);
                            continue;
                        }
                        if std::mem::take(&mut self.at_limit) {
                            tracing::info!(
                                max_links = self.max_links,
                                "below the link limit again: accepting"
                            );
                        }
                        self.permit = Some(permit);
                    }
                    // The semaphore is never closed.
                    Poll::Ready(None) => return Poll::Pending,
                    Poll::Pending => {
                        if !std::mem::replace(&mut self.at_limit, true) {
                            // Within the warning budget: making room ends an episode, and
                            // the next client may start another at once.
                            peer_warn!(
                                PEER_WARNINGS,
                                max_links = self.max_links,
                                "link limit reached: new connections wait until a link ends \
                                 or one whose peer is quiet can be ended for them (raise \
                                 max_links or the open-file limit if this is normal load)"
                            );
                        }
                        return self.poll_at_limit(source, &mut start, cx);
                    }
                }
            }
            if accepted == ACCEPT_BURST {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match source.poll_accept(cx) {
                Poll::Ready(Ok(stream)) => {
                    accepted += 1;
                    let spoke = Spoke::of::<A>(&stream);
                    let handshake = Box::pin(start(stream, Arc::clone(&spoke.heard)));
                    match self.permit.take() {
                        Some(permit) => self.spawn(handshake, spoke, permit),
                        // Not reached (a place is taken before accepting); kept safe.
                        None => self.waiting = Some((handshake, spoke)),
                    }
                }
                Poll::Ready(Err(e)) => self.failure = Some(e),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// At the link limit: accepts one stream to wait for a place, and ends a link that
    /// looks abandoned to make one (`evict.rs`), now or when one qualifies.
    fn poll_at_limit<A, S, SF>(
        &mut self,
        source: &mut A,
        start: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Link>>
    where
        A: AcceptStream,
        S: FnMut(A::Stream, Heard) -> SF,
        SF: std::future::Future<Output = Result<Link>> + Send + 'static,
    {
        if self.waiting.is_none() {
            match source.poll_accept(cx) {
                Poll::Ready(Ok(stream)) => {
                    let spoke = Spoke::of::<A>(&stream);
                    self.waiting = Some((Box::pin(start(stream, Arc::clone(&spoke.heard))), spoke));
                    self.recheck = None;
                }
                Poll::Ready(Err(e)) => {
                    self.failure = Some(e);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if let Some(recheck) = &mut self.recheck {
            if std::future::Future::poll(recheck.as_mut(), cx).is_pending() {
                return Poll::Pending;
            }
        }
        let now = tokio::time::Instant::now();
        let when = match self.live.end_idlest(now) {
            // Its place comes back when its tasks are done, and the semaphore wakes us;
            // until then (a second at most) no other link is ended for the same client.
            Ok(()) => now + EVICTION_GRACE,
            Err(when) => when,
        };
        let mut again = Box::pin(tokio::time::sleep_until(when));
        // Registers the wake-up.
        let _ = std::future::Future::poll(again.as_mut(), cx);
        self.recheck = Some(again);
        Poll::Pending
    }

    /// Runs `handshake` in its own task, holding `permit` for as long as its link lives.
    fn spawn(
        &mut self,
        handshake: Handshake,
        spoke: Spoke,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        self.make_room();
        let handle = self.pending.spawn(async move {
            let link = handshake.await?;
            // The place is given back once the link's tasks are done, that is once its
            // socket is closed (also if it ended already).
            let tasks = link.inner().tasks.clone();
            tokio::spawn(async move {
                tasks.wait().await;
                drop(permit);
            });
            Ok(link)
        });
        self.order.push_back((handle, spoke));
    }
}

/// Whether a handshake's client has sent something: set at accept if its first bytes were
/// in, and by the stream's reader when they come (where the listener's start function
/// passes it on; TCP does). Eviction spares handshakes whose client spoke.
pub(crate) type Heard = Arc<std::sync::atomic::AtomicBool>;

/// After ending a link for a waiting client, how long its place may take to come back
/// before another link may be ended for the same client.
const EVICTION_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a handshake's client has sent something, for the eviction's choice.
pub(crate) struct Spoke {
    /// Set at accept when the first bytes were in, by the stream's reader when they come,
    /// or by a look through `peek`.
    heard: Heard,
    /// A second handle on the socket (TCP): bytes that came but were not read yet count.
    /// Dropped (closed) with the handshake's entry.
    peek: Option<socket2::Socket>,
}

impl Spoke {
    fn of<A: AcceptStream>(stream: &A::Stream) -> Spoke {
        Spoke {
            heard: Arc::new(AtomicBool::new(A::has_data(stream))),
            peek: A::second_handle(stream),
        }
    }

    /// Whether the client has spoken by now.
    fn now(&self) -> bool {
        if self.heard.load(Ordering::Relaxed) {
            return true;
        }
        let mut byte = [std::mem::MaybeUninit::new(0u8)];
        // Non-blocking (the flag is the socket's): nothing yet is WouldBlock.
        let came = self
            .peek
            .as_ref()
            .is_some_and(|p| p.peek(&mut byte).is_ok_and(|n| n > 0));
        if came {
            self.heard.store(true, Ordering::Relaxed);
        }
        came
    }
}

/// A handshake, not started until polled.
type Handshake = Pin<Box<dyn std::future::Future<Output = Result<Link>> + Send>>;
