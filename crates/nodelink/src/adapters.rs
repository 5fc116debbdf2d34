//! Views of connections and links for the futures and tower ecosystems.
//!
//! * [`Conn::packets`] and [`Conn::packet_sink`]: a connection's incoming packets as a
//!   `futures` `Stream`, and sending as a `Sink`, so that combinators (`forward`, `map`,
//!   `select`, `timeout`, framed pipelines) work on a connection as on any channel.
//! * [`AskService`] (feature `tower`): the lightweight request/answer of [`Link::call`] as
//!   a `tower::Service`, so timeouts, retries, rate and concurrency limits, load shedding
//!   and the rest of tower's middleware wrap a link unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

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
    /// sink's backpressure). Closing the sink does not close the connection. After a
    /// failed send, every later use of the sink returns that error again.
    pub fn packet_sink(self: &Arc<Self>) -> PacketSink {
        Box::pin(ConnSink {
            conn: Arc::clone(self),
            pending: None,
            failed: None,
        })
    }
}

type SendFuture = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// The sink behind [`Conn::packet_sink`]: at most one send in flight, and the error that
/// ended it kept (futures' `sink::unfold` panics when used after an error, which a caller
/// that retries or logs and goes on would hit).
struct ConnSink {
    conn: Arc<Conn>,
    pending: Option<SendFuture>,
    failed: Option<Error>,
}

impl ConnSink {
    /// Drives the send in flight to its end.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(e) = &self.failed {
            return Poll::Ready(Err(e.clone()));
        }
        if let Some(send) = self.pending.as_mut() {
            let r = ready!(send.as_mut().poll(cx));
            self.pending = None;
            if let Err(e) = r {
                self.failed = Some(e.clone());
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Sink<(u16, Bytes)> for ConnSink {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_pending(cx)
    }

    fn start_send(self: Pin<&mut Self>, (code, payload): (u16, Bytes)) -> Result<()> {
        let this = self.get_mut();
        if let Some(e) = &this.failed {
            return Err(e.clone());
        }
        // The Sink contract has a poll_ready returning Ready(Ok) first, so nothing is in
        // flight; a caller that skipped it gets its sends in order all the same.
        let before = this.pending.take();
        let conn = Arc::clone(&this.conn);
        this.pending = Some(Box::pin(async move {
            if let Some(send) = before {
                send.await?;
            }
            conn.send_packet(code, payload).await
        }));
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_pending(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_pending(cx)
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
