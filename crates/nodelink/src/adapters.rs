//! Views of connections and links for the futures and tower ecosystems.
//!
//! * [`Conn::packets`] and [`Conn::packet_sink`]: a connection's incoming packets as a
//!   `futures` `Stream`, and sending as a `Sink`, so that combinators (`forward`, `map`,
//!   `select`, `timeout`, framed pipelines) work on a connection as on any channel.
//! * [`AskService`] (feature `tower`): the lightweight request/answer of [`Link::call`] as
//!   a `tower::Service`, so timeouts, retries, rate and concurrency limits, load shedding
//!   and the rest of tower's middleware wrap a link unchanged.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::Sink;

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::frame::Packet;

/// A connection's incoming packets ([`Conn::packets`]); boxed so that it can be named
/// and used without pinning.
pub type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet>> + Send + 'static>>;

/// Sending on a connection ([`Conn::packet_sink`]): `(code, payload)` pairs.
pub type PacketSink = Pin<Box<dyn Sink<(u16, Bytes), Error = Error> + Send + 'static>>;

impl Conn {
    /// The packets arriving on this connection, as a `Stream`: each [`Conn::recv`] in
    /// turn. The first error (the connection or the link closed, a budget exceeded) is
    /// yielded once, and the stream ends after it. The stream shares the connection, so
    /// [`packet_sink`](Conn::packet_sink) or [`send`](Conn::send) can go on beside it.
    pub fn packets(self: &Arc<Self>) -> PacketStream {
        Box::pin(futures_util::stream::unfold(
            Some(Arc::clone(self)),
            |conn| async move {
                let conn = conn?;
                match conn.recv().await {
                    Ok(packet) => Some((Ok(packet), Some(conn))),
                    Err(e) => Some((Err(e), None)),
                }
            },
        ))
    }

    /// Sending on this connection as a `Sink` of `(code, payload)` pairs: each item is one
    /// [`Conn::send_packet`], waiting for room in the link's send queue (that wait is the
    /// sink's backpressure). Closing the sink does not close the connection.
    pub fn packet_sink(self: &Arc<Self>) -> PacketSink {
        Box::pin(futures_util::sink::unfold(
            Arc::clone(self),
            |conn, (code, payload): (u16, Bytes)| async move {
                conn.send_packet(code, payload).await?;
                Ok(conn)
            },
        ))
    }
}

#[cfg(feature = "tower")]
pub use service::AskService;

#[cfg(feature = "tower")]
mod service {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use crate::error::{Error, Result};
    use crate::handle::Link;
    use crate::message::Ask;

    /// [`Link::call`] as a `tower::Service`: a request type `R` implementing [`Ask`] goes
    /// out as a lightweight request, and its typed answer comes back. Cheap to clone (it
    /// holds the link's handle); clones share the link.
    ///
    /// It is always ready: the link queues requests itself, and a closed link fails each
    /// call with its error. Put tower's `ConcurrencyLimit`, `RateLimit`, `Timeout` or
    /// `Retry` around it for those policies; [`with_deadline`](AskService::with_deadline)
    /// is the link's own per-call deadline, which also abandons the request on the link
    /// (a tower `Timeout` only stops waiting, and the answer is dropped when it comes).
    #[derive(Clone, Debug)]
    pub struct AskService {
        link: Link,
        deadline: Option<Duration>,
    }

    impl AskService {
        /// A service sending its requests over `link`, with the link's
        /// [`ask_timeout`](crate::Config::ask_timeout).
        pub fn new(link: Link) -> AskService {
            AskService {
                link,
                deadline: None,
            }
        }

        /// Every call of this service fails with
        /// [`ErrorKind::DeadlineExceeded`](crate::ErrorKind::DeadlineExceeded) past
        /// `deadline` ([`Link::call_within`]).
        pub fn with_deadline(mut self, deadline: Duration) -> AskService {
            self.deadline = Some(deadline);
            self
        }

        /// The link the requests go over.
        pub fn link(&self) -> &Link {
            &self.link
        }
    }

    impl<R> tower_service::Service<R> for AskService
    where
        R: Ask + Send + Sync + 'static,
        R::Answer: Send + 'static,
    {
        type Response = R::Answer;
        type Error = Error;
        type Future = Pin<Box<dyn Future<Output = Result<R::Answer>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: R) -> Self::Future {
            let link = self.link.clone();
            let deadline = self.deadline;
            Box::pin(async move {
                match deadline {
                    Some(d) => link.call_within(&request, d).await,
                    None => link.call(&request).await,
                }
            })
        }
    }
}
