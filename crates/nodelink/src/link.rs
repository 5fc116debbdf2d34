//! The link: one byte stream carrying many connections. This file is the public face
//! ([`Link`]); the protocol lives in the I/O-free core (`core/`), the shared state and
//! the door to the core in `inner.rs`, the tasks that move bytes in `reader.rs` and
//! `writer.rs`.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Dialect};
use crate::conn::Conn;
use crate::control;
#[cfg(any(test, feature = "testing"))]
use crate::core::IdState;
use crate::core::{AcceptPoll, ConnKey, LinkCore, PeerMode, Recv};
use crate::error::{Cause, Error, Place, Result};
use crate::exchange::Exchange;
use crate::frame::Packet;
use crate::handle::Link;
use crate::handshake::exchange_versions;
use crate::inner::{LinkInner, Output, Shared};
use crate::message::{check_answer, check_pair, Ask, Message};
use crate::request::Request;
use crate::role::{PeerFlowControl, Role};
use crate::stats::{Counters, LinkStats};
use crate::txqueue::{Body, BoxWrite, TxQueue};

pub(crate) type BoxRead = std::pin::Pin<Box<dyn LinkRead>>;

/// The read half of a link's stream.
pub(crate) trait LinkRead: AsyncRead + Send {
    /// The TCP socket beneath, when the link runs on plain TCP: a reader that holds back
    /// watches it for errors (`reader.rs`).
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        None
    }
}

impl LinkRead for tokio::net::tcp::OwnedReadHalf {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self.as_ref())
    }
}

impl<T: AsyncRead + Send> LinkRead for tokio::io::ReadHalf<T> {}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.inner().name)
            .finish()
    }
}

impl Link {
    /// Performs the version handshake over any byte stream and starts the link.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> nodelink::Result<()> {
    /// use nodelink::{Config, Link, Ping, Pong, Role};
    /// let (a, b) = tokio::io::duplex(64 << 10);
    /// let (client, server) = tokio::try_join!(
    ///     Link::handshake(a, Role::Client, Config::default()),
    ///     Link::handshake(b, Role::Server, Config::default()),
    /// )?;
    /// tokio::spawn(async move {
    ///     while let Ok(req) = server.recv1().await {
    ///         let _ = req.reply(&Pong).await;
    ///     }
    /// });
    /// let _pong: Pong = client.ask1(&Ping).await?;
    /// # Ok(()) }
    /// ```
    pub async fn handshake<S>(stream: S, role: Role, config: Config) -> Result<Link>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        Self::handshake_halves(Box::pin(r), Box::pin(w), role, config, None, None).await
    }

    pub(crate) async fn handshake_halves(
        mut read: BoxRead,
        mut write: BoxWrite,
        role: Role,
        config: Config,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    ) -> Result<Link> {
        let name = link_name(local, remote);
        let exchange = exchange_versions(&mut read, &mut write, config.version);
        let outcome = match tokio::time::timeout(config.handshake_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(crate::HandshakeError::Timeout(config.handshake_timeout)),
        };
        if let Err(e) = outcome {
            return Err(Error::new(e.into(), Place::link(&name), "handshake"));
        }
        Ok(Self::start(read, write, role, config, name, local, remote))
    }

    /// Starts the link tasks over a stream whose handshake is done.
    fn start(
        read: BoxRead,
        write: BoxWrite,
        role: Role,
        config: Config,
        name: Arc<str>,
        local_addr: Option<SocketAddr>,
        remote_addr: Option<SocketAddr>,
    ) -> Link {
        let core = LinkCore::new(role, &config, name.clone(), Instant::now());
        let budget = core.budget_member().cloned();
        let inner = Arc::new(LinkInner {
            budget,
            role,
            shared: Mutex::new(Shared {
                core,
                acceptors: Default::default(),
                reader: None,
            }),
            tx: Mutex::new(TxQueue::new(write, control::control_id_of(role.peer()))),
            writer_kick: Notify::new(),
            kicked: AtomicBool::new(false),
            stats: Counters::default(),
            ready: AtomicUsize::new(0),
            backlog_len: AtomicUsize::new(0),
            end: OnceLock::new(),
            closed_by_user: AtomicBool::new(false),
            stop_reading: CancellationToken::new(),
            stop_writing: CancellationToken::new(),
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
            name,
            local_addr,
            remote_addr,
            config,
        });
        // An offering dialer's HELLO goes out before anything else.
        let mut out = Output::default();
        inner.with_core_into(&mut out, |_| ());
        inner.dispatch(&mut out);
        inner.tasks.spawn(inner.clone().reader_task(read));
        inner.tasks.spawn(inner.clone().writer_task());
        inner.tasks.close();
        tracing::debug!(link = %inner.name, ?role, dialect = %inner.config.dialect, "link up");
        Link::from_inner(inner)
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.inner().role
    }

    /// Local address of the underlying stream, when it has one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner().local_addr
    }

    /// Remote address of the underlying stream, when it has one.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner().remote_addr
    }

    /// A snapshot of the link's counters.
    pub fn stats(&self) -> LinkStats {
        self.inner().stats()
    }

    /// Whether the peer takes part in the flow-control extension.
    pub fn peer_flow_control(&self) -> PeerFlowControl {
        match self.inner().shared.lock().core.mode() {
            PeerMode::Pending => PeerFlowControl::Unknown,
            PeerMode::Credit { .. } => PeerFlowControl::On,
            PeerMode::Neo => PeerFlowControl::Off,
        }
    }

    /// The dialect this link speaks.
    pub fn dialect(&self) -> Dialect {
        self.inner().config.dialect
    }

    /// Opens a new connection. Nothing is sent until the first message.
    ///
    /// Fails with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) in the NEO/py dialect, which has no
    /// multi-message connections: use [`Link::ask1`], [`Link::send1`] and [`Link::recv1`].
    pub fn open(&self) -> Result<Conn> {
        let inner = self.inner();
        inner.full_conns_supported("newconn")?;
        let (key, id) = inner
            .with_core(|s| s.core.open(Instant::now()))
            .map_err(|e| inner.open_error(e, "newconn"))?;
        Ok(Conn::new(self.clone(), key, id))
    }

    /// Waits for the peer to open a connection; its first message is already queued.
    ///
    /// Fails with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) in the NEO/py dialect: every incoming packet
    /// there is one request, taken with [`Link::recv1`].
    ///
    /// Incoming connections wait in a backlog of [`Config::accept_backlog`]; when it is
    /// full the link stops reading until they are accepted. An application that never
    /// accepts should call [`Link::close_accept`], so that the peer's new connections are
    /// refused instead.
    pub async fn accept(&self) -> Result<Conn> {
        let inner = self.inner();
        inner.full_conns_supported("accept")?;
        let (key, id) = poll_fn(|cx| {
            inner.with_core(|s| match s.core.accept() {
                AcceptPoll::Ready(conn) => Poll::Ready(Ok(conn)),
                AcceptPoll::Pending => {
                    s.acceptors.register(cx.waker());
                    Poll::Pending
                }
                AcceptPoll::NotListening => {
                    Poll::Ready(Err(inner.link_error(Cause::NotListening, "accept")))
                }
                AcceptPoll::Down => {
                    Poll::Ready(Err(inner.link_error(inner.end_kind(false), "accept")))
                }
            })
        })
        .await?;
        Ok(Conn::new(self.clone(), key, id))
    }

    /// Stops accepting incoming connections: blocked and later accepts fail with
    /// "not listening", queued connections and new ones are answered "connection refused"
    /// (under NEO/py rules they are dropped: NEO/py gets no automatic replies).
    pub fn close_accept(&self) {
        self.inner().with_core(|s| s.core.close_accept());
    }

    /// Closes the link: every blocked operation on it and its connections fails, what was
    /// already queued is sent (for at most [`Config::close_linger`]), then the stream is
    /// shut down. Safe to call more than once.
    pub async fn close(&self) {
        self.inner().close();
        self.inner().tasks.wait().await;
    }

    /// Waits until the link has ended (closed, or failed) and its tasks have finished.
    pub async fn closed(&self) {
        self.inner().tasks.wait().await;
    }

    /// Whether the link has ended.
    pub fn is_closed(&self) -> bool {
        self.inner().end.get().is_some()
    }

    // ---- lightweight mode ----

    /// Sends one message on a fresh connection that is released right away.
    pub async fn send1<M: Message>(&self, msg: &M) -> Result<()> {
        let inner = self.inner();
        let id = inner
            .with_core(|s| s.core.open_unregistered(Instant::now()))
            .map_err(|e| inner.open_error(e, "send1"))?;
        let encode = |b: &mut BytesMut| msg.encode(b);
        inner
            .send_frame(None, id, M::CODE, Body::Encode(encode))
            .await
            .map_err(|f| inner.send_error(f, Some(id), "send1"))
    }

    /// Sends one request on a fresh connection and waits for its answer. An Error answer
    /// comes back with the kind it means: [`Refused`](crate::ErrorKind::Refused) and
    /// [`ClosedByPeer`](crate::ErrorKind::ClosedByPeer) for the link's own replies,
    /// [`Peer`](crate::ErrorKind::Peer) for the application's. Bounded by
    /// [`Config::ask_timeout`] if set ([`DeadlineExceeded`](crate::ErrorKind::DeadlineExceeded)).
    /// The connection state is recycled, also when the call is cancelled.
    ///
    /// For requests that declare their answer type, [`Link::call`] checks the pairing at
    /// compile time.
    pub async fn ask1<Req: Message, Resp: Message>(&self, req: &Req) -> Result<Resp> {
        const { check_answer::<Resp>() };
        self.ask1_bounded(req, self.inner().config.ask_timeout)
            .await
    }

    /// [`Link::ask1`] with its own deadline, whatever [`Config::ask_timeout`] says.
    pub async fn ask1_within<Req: Message, Resp: Message>(
        &self,
        req: &Req,
        deadline: std::time::Duration,
    ) -> Result<Resp> {
        const { check_answer::<Resp>() };
        self.ask1_bounded(req, Some(deadline)).await
    }

    /// Sends a request whose answer type is declared by [`Ask`] and waits for that answer,
    /// as [`Link::ask1`] does. Asking for another type does not compile, and neither does a
    /// pair whose codes break NEO's rule (the request without the answer bit, the answer
    /// with it).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> nodelink::Result<()> {
    /// use nodelink::{Config, Link, Ping, Pong, Role};
    /// let (a, b) = tokio::io::duplex(64 << 10);
    /// let (client, server) = tokio::try_join!(
    ///     Link::handshake(a, Role::Client, Config::default()),
    ///     Link::handshake(b, Role::Server, Config::default()),
    /// )?;
    /// tokio::spawn(async move {
    ///     while let Ok(request) = server.recv1().await {
    ///         let _ = request.reply(&Pong).await;
    ///     }
    /// });
    /// let pong: Pong = client.call(&Ping).await?; // Ping's answer is Pong
    /// # let _ = pong; Ok(()) }
    /// ```
    pub fn call<'a, R: Ask>(
        &'a self,
        req: &'a R,
    ) -> impl std::future::Future<Output = Result<R::Answer>> + 'a {
        // Outside the future, so that the check runs wherever `call` is instantiated.
        const { check_pair::<R>() };
        self.ask1_bounded(req, self.inner().config.ask_timeout)
    }

    /// [`Link::call`] with its own deadline.
    pub fn call_within<'a, R: Ask>(
        &'a self,
        req: &'a R,
        deadline: std::time::Duration,
    ) -> impl std::future::Future<Output = Result<R::Answer>> + 'a {
        const { check_pair::<R>() };
        self.ask1_bounded(req, Some(deadline))
    }

    async fn ask1_bounded<Req: Message, Resp: Message>(
        &self,
        req: &Req,
        deadline: Option<std::time::Duration>,
    ) -> Result<Resp> {
        let encode = |b: &mut BytesMut| req.encode(b);
        let packet = self
            .ask1_with(Req::CODE, Body::Encode(encode), deadline)
            .await?;
        let id = packet.conn_id;
        packet
            .decode::<Resp>()
            .map_err(|e| self.inner().conn_error(Cause::Decode(e), id, "ask1"))
    }

    /// [`Link::ask1`] with a raw payload; returns the raw answer packet.
    pub fn ask1_packet(
        &self,
        code: u16,
        payload: Bytes,
    ) -> impl std::future::Future<Output = Result<Packet>> + Send + '_ {
        let deadline = self.inner().config.ask_timeout;
        self.ask1_with(code, Body::<fn(&mut BytesMut)>::Owned(payload), deadline)
    }

    /// One exchange: the future itself, without an `async` wrapper (the hottest path).
    fn ask1_with<'a, F: Fn(&mut BytesMut) + Unpin>(
        &'a self,
        code: u16,
        body: Body<'a, F>,
        deadline: Option<std::time::Duration>,
    ) -> Exchange<'a, F> {
        Exchange::new(self.inner(), code, body, deadline)
    }

    /// Accepts a connection together with its first message, for one-request-one-reply
    /// exchanges. Further packets on that connection are answered "connection closed".
    pub fn recv1(&self) -> impl Future<Output = Result<Request>> + Send + '_ {
        self.recv1_with(true)
    }

    /// Like [`Link::recv1`], but keeps no record of the connection afterwards, so a later
    /// packet on the same id is accepted as a new request. This suits stateless servers
    /// that must answer full-connection clients (many requests on one id, even pipelined:
    /// they are served in order) and lightweight clients alike, without holding any state
    /// per connection. Answers are sent without flow-control credit (there is no
    /// connection state to hold it), so a full-connection client that pipelines more than
    /// its receive budget of answers without reading them overflows its own budget.
    pub fn recv1_stateless(&self) -> impl Future<Output = Result<Request>> + Send + '_ {
        self.recv1_with(false)
    }

    /// The future of both: a plain `poll_fn`, no `async` wrapper (a hot path).
    fn recv1_with(&self, keep: bool) -> impl Future<Output = Result<Request>> + Send + '_ {
        let inner = self.inner();
        poll_fn(move |cx| {
            let taken = inner.with_core(|s| match s.core.accept_request(keep, Instant::now()) {
                AcceptPoll::Ready(taken) => Poll::Ready(Ok(taken)),
                AcceptPoll::Pending => {
                    s.acceptors.register(cx.waker());
                    Poll::Pending
                }
                AcceptPoll::NotListening => {
                    Poll::Ready(Err(inner.link_error(Cause::NotListening, "recv1")))
                }
                AcceptPoll::Down => {
                    Poll::Ready(Err(inner.link_error(inner.end_kind(false), "recv1")))
                }
            });
            taken.map_ok(|t| Request::new(self.clone(), t.packet, t.credit))
        })
    }
}

impl LinkInner {
    /// Full connections exist in the NEO/go dialect only.
    pub(crate) fn full_conns_supported(&self, op: &'static str) -> Result<()> {
        match self.config.dialect {
            Dialect::NeoGo => Ok(()),
            Dialect::NeoPy => Err(self.link_error(
                Cause::Unsupported(
                    "the neo-py dialect has no multi-message connections \
                     (one request, at most one answer): use ask1, send1 and recv1",
                ),
                op,
            )),
        }
    }

    /// Receives the next packet of a connection; credit due to the peer goes out with it.
    pub(crate) async fn recv_on(&self, key: ConnKey, id: u32, op: &'static str) -> Result<Packet> {
        poll_fn(|cx| {
            self.with_core(|s| match s.core.recv(key) {
                Recv::Packet(packet) => Poll::Ready(Ok(packet)),
                Recv::Empty => {
                    if let Some(parked) = s.core.ext(key) {
                        parked.rx.register(cx.waker());
                    }
                    Poll::Pending
                }
                Recv::Ended {
                    reason,
                    first_link_report,
                } => Poll::Ready(Err(self.recv_end_error(reason, first_link_report, id, op))),
            })
        })
        .await
    }

    /// Queues a CREDIT frame returning `bytes` of connection `id`'s window to the peer.
    pub(crate) fn send_credit(&self, id: u32, bytes: u32, kick: bool) {
        self.owe_credit(id, bytes, kick);
    }

    /// What an id maps to now (tests and diagnostics).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn id_state(&self, id: u32) -> IdState {
        self.shared.lock().core.id_state(id, Instant::now())
    }
}

pub(crate) fn link_name(local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Arc<str> {
    let show = |a: Option<SocketAddr>| a.map_or_else(|| "?".to_string(), |a| a.to_string());
    Arc::from(format!("{} - {}", show(local), show(remote)))
}

/// What the connection table says of one id; for tests of id reuse, built with the
/// `testing` feature (the crate's own tests turn it on).
#[cfg(any(test, feature = "testing"))]
impl Link {
    /// Whether `id` is open, kept closed, or free in the connection table.
    pub fn id_state_for_tests(&self, id: u32) -> &'static str {
        match self.inner().id_state(id) {
            IdState::Open => "open",
            IdState::KeptClosed => "kept-closed",
            IdState::Free => "free",
        }
    }
}
