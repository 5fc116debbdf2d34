//! Serving requests: [`Handlers`] maps request types to async functions and serves them on
//! a link, or on every link of a listener, until told to stop.
//!
//! A server that answers several request types in lightweight mode (`recv1` + `reply`)
//! always writes the same loop: take a request, find its type by code, decode it, run the
//! handler in its own task, send the answer or the handler's Error, answer unknown codes
//! with NEO's Error, and on shutdown stop taking requests while letting the ones under way
//! finish. `Handlers` is that loop, written once:
//!
//! * each handler is an `async fn(R) -> Result<R::Answer, ErrorMessage>` for a request type
//!   `R: Ask`; the pairing and NEO's answer-bit rule are checked at compile time;
//! * an `Err(ErrorMessage)` goes back as NEO's Error (the asker sees
//!   [`ErrorKind::Peer`](crate::ErrorKind::Peer) with that message);
//! * a code nobody handles, or a payload that does not decode, is answered with a
//!   `PROTOCOL_ERROR` Error naming the problem;
//! * a handler that panics loses its request while unwinding, and a lost request is
//!   answered "connection closed" (see [`Request`]): the asker fails at once with
//!   [`ErrorKind::ClosedByPeer`](crate::ErrorKind::ClosedByPeer), and the server logs the
//!   panic and keeps serving;
//! * on `stop`, the link stops accepting (new requests are refused with NEO's "connection
//!   refused", which askers see as [`ErrorKind::Refused`](crate::ErrorKind::Refused)), the
//!   handlers under way get [`nodelink_driver::SHUTDOWN_GRACE`] to finish, and the call
//!   returns.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, Result};
use crate::frame::is_answer;
use crate::handle::Link;
use crate::message::{check_pair, Ask, ErrorCode, ErrorMessage};
use crate::net::LinkListener;
use crate::request::Request;

type Reply = Pin<Box<dyn Future<Output = ()> + Send>>;
type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

/// Request handlers by message code, and the loops that serve them (see the module docs
/// of `serve.rs`, above).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> nodelink::Result<()> {
/// use nodelink::{Config, ErrorCode, ErrorMessage, Handlers, Link, Ping, Pong, Role};
/// use tokio_util::sync::CancellationToken;
///
/// let handlers = Handlers::new().on(|_: Ping| async { Ok::<_, ErrorMessage>(Pong) });
///
/// let (a, b) = tokio::io::duplex(64 << 10);
/// let (client, server) = tokio::try_join!(
///     Link::handshake(a, Role::Client, Config::default()),
///     Link::handshake(b, Role::Server, Config::default()),
/// )?;
/// let stop = CancellationToken::new();
/// let serving = tokio::spawn({
///     let stop = stop.clone();
///     async move { handlers.serve(&server, &stop).await }
/// });
/// let _pong: Pong = client.call(&Ping).await?;
/// stop.cancel();
/// serving.await.unwrap()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Handlers {
    by_code: Arc<HashMap<u16, Handler>>,
    max_in_flight: usize,
}

impl Default for Handlers {
    fn default() -> Handlers {
        Handlers {
            by_code: Arc::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Requests of one link handled at once by default ([`Handlers::with_max_in_flight`]).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut codes: Vec<_> = self.by_code.keys().copied().collect();
        codes.sort_unstable();
        f.debug_struct("Handlers").field("codes", &codes).finish()
    }
}

impl Handlers {
    /// No handlers yet: every request would be answered "unexpected message".
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Most requests of one link handled at once (default [`DEFAULT_MAX_IN_FLIGHT`]). At
    /// the limit the serve loop takes no more requests until one is answered, so a peer
    /// that floods requests at slow handlers meets the link's own bounds (its accept
    /// backlog, then TCP) instead of growing the number of tasks without end.
    pub fn with_max_in_flight(mut self, requests: usize) -> Handlers {
        self.max_in_flight = requests.max(1);
        self
    }

    /// Handles requests of type `R` with `handler`, whose `Ok` is the answer and whose
    /// `Err` goes back as NEO's Error.
    ///
    /// # Panics
    ///
    /// If a handler for `R::CODE` was already added (a programming error, caught on the
    /// first run).
    pub fn on<R, F, Fut>(mut self, handler: F) -> Handlers
    where
        R: Ask + Send + 'static,
        R::Answer: Send + Sync,
        F: Fn(R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R::Answer, ErrorMessage>> + Send + 'static,
    {
        const { check_pair::<R>() };
        let handler = Arc::new(handler);
        let serve: Handler = Arc::new(move |request: Request| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let req = match request.decode::<R>() {
                    Ok(req) => req,
                    Err(e) => {
                        let text = match e.decode_error() {
                            Some(d) => format!("malformed request {:#06x}: {d}", R::CODE),
                            None => format!("malformed request {:#06x}", R::CODE),
                        };
                        let error = ErrorMessage::new(ErrorCode::PROTOCOL_ERROR, text);
                        let _ = request.reply(&error).await;
                        return;
                    }
                };
                let _ = match handler(req).await {
                    Ok(answer) => request.reply(&answer).await,
                    Err(error) => request.reply(&error).await,
                };
            })
        });
        let by_code = Arc::make_mut(&mut self.by_code);
        assert!(
            by_code.insert(R::CODE, serve).is_none(),
            "Handlers::on: a handler for code {:#06x} was already added",
            R::CODE
        );
        self
    }

    /// Answers one request: runs its handler, or answers an unknown code with a
    /// `PROTOCOL_ERROR` Error. A packet that is itself an answer gets no reply (two peers
    /// would otherwise bounce errors forever).
    pub async fn dispatch(&self, request: Request) {
        let code = request.code();
        match self.by_code.get(&code) {
            Some(handler) => handler(request).await,
            None if is_answer(code) => {
                tracing::debug!(code, "unsolicited answer dropped");
            }
            None => {
                let text = format!("unexpected message: code {code:#06x}");
                let error = ErrorMessage::new(ErrorCode::PROTOCOL_ERROR, text);
                let _ = request.reply(&error).await;
            }
        }
    }

    /// Serves the lightweight requests of `link`, each in its own task, until `stop` is
    /// cancelled or the link ends; then refuses new requests, gives the ones under way
    /// [`SHUTDOWN_GRACE`](nodelink_driver::SHUTDOWN_GRACE) to be answered, and returns. The
    /// link stays open (close it to flush the last answers and tell the peer).
    ///
    /// Returns `Ok` when stopped (or when accepting was closed), and the error that ended
    /// the link otherwise.
    pub async fn serve(&self, link: &Link, stop: &CancellationToken) -> Result<()> {
        let mut running = JoinSet::new();
        let end = loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break Ok(()),
                Some(done) = running.join_next(), if !running.is_empty() => report(done),
                next = link.recv1(), if running.len() < self.max_in_flight => match next {
                    Ok(request) => {
                        let this = self.clone();
                        running.spawn(async move { this.dispatch(request).await });
                    }
                    Err(e) if e.kind() == ErrorKind::NotListening => break Ok(()),
                    Err(e) => break Err(e),
                },
            }
        };
        link.close_accept();
        let drain = async {
            while let Some(done) = running.join_next().await {
                report(done);
            }
        };
        if tokio::time::timeout(nodelink_driver::SHUTDOWN_GRACE, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                link = ?link,
                unanswered = running.len(),
                "handlers still running after the shutdown grace: abandoned (their askers get \
                 \"connection closed\", or see the link end if it closes first)"
            );
            running.abort_all();
        }
        end
    }

    /// Serves every link `listener` accepts (each with [`Handlers::serve`]) until `stop`
    /// is cancelled; then stops accepting, lets every link drain within the grace, closes
    /// the links and returns. Returns the error that ended the listener, if one did.
    pub async fn serve_listener<L: LinkListener>(
        &self,
        mut listener: L,
        stop: &CancellationToken,
    ) -> Result<()> {
        let links = tokio_util::task::TaskTracker::new();
        // The links stop with the caller's token, or when the listener fails.
        let stop_links = stop.child_token();
        let end = loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(link) => {
                        let this = self.clone();
                        let stop = stop_links.clone();
                        links.spawn(async move {
                            if let Err(e) = this.serve(&link, &stop).await {
                                tracing::debug!(
                                    error = &e as &dyn std::error::Error,
                                    "link ended"
                                );
                            }
                            link.close().await;
                        });
                    }
                    Err(e) => break Err(e),
                },
            }
        };
        drop(listener);
        stop_links.cancel();
        links.close();
        links.wait().await;
        end
    }
}

/// Logs a handler task that did not end normally.
fn report(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                "request handler panicked: its asker got \"connection closed\""
            );
        }
    }
}
