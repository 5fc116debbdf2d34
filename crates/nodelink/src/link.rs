//! The link: one byte stream carrying many connections.
//!
//! Tasks and state (see also `docs/ARCHITECTURE.md`):
//! * the **reader task** owns the read half and the read buffer; it is the only code that
//!   parses packets and routes them into connection queues;
//! * the **writer task** owns nothing permanently: it writes what callers hand it (bytes
//!   queued by the reader, the rest of a cancelled write) and performs the final flush;
//! * application tasks hold [`Link`] and [`Conn`](crate::Conn) handles and write to the
//!   socket directly when it is free;
//! * [`LinkInner`] is the state they share: the connection table, the send queue, the
//!   counters and how the link ended.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Dialect, MIN_RECV_BUDGET};
use crate::conn::Conn;
use crate::conn_state::{ConnRef, RxClosed, RxEnd};
use crate::control;
use crate::error::{Error, ErrorKind, Place, Result};
use crate::frame::Packet;
use crate::handshake::exchange_versions;
use crate::message::{ErrorCode, ErrorMessage, Message};
use crate::negotiate::Negotiation;
use crate::request::Request;
use crate::stats::{Counters, LinkStats};
use crate::sync::lock_std;
use crate::table::{AcceptPoll, ConnTable, IdState, Limits, Numbering, OpenError, Slot};
use crate::writer::{Body, BoxWrite, SendFail, TxQueue};

pub(crate) type BoxRead = std::pin::Pin<Box<dyn AsyncRead + Send>>;

/// Which end of the link this side is: it decides the parity of the connection ids we
/// allocate (client odd from 1, server even from 0, like HTTP/2 streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that dialed.
    Client,
    /// The side that accepted.
    Server,
}

impl Role {
    pub(crate) fn first_id(self) -> u32 {
        match self {
            Role::Client => 1,
            Role::Server => 0,
        }
    }

    pub(crate) fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}

/// Whether the peer takes part in nodelink's flow-control extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerFlowControl {
    /// The peer has not sent anything yet.
    Unknown,
    /// The peer is a strict NEO node (or has the extension turned off).
    Off,
    /// The peer honours per-connection credit.
    On,
}

/// How the link ended; the first reason wins.
#[derive(Clone, Debug)]
pub(crate) enum LinkEnd {
    Closed,
    Failed(Arc<io::Error>),
}

// The peer's flow-control mode as published by the reader task (the negotiation's
// `PeerMode`, in an atomic that senders and receivers read without a lock).
pub(crate) const MODE_PENDING: u8 = 0;
pub(crate) const MODE_NEO: u8 = 1;
pub(crate) const MODE_CREDIT: u8 = 2;

pub(crate) struct LinkInner {
    pub(crate) role: Role,
    pub(crate) config: Config,
    /// `"<local> - <remote>"`, the prefix of every error and log line.
    pub(crate) name: Arc<str>,
    local_addr: Option<SocketAddr>,
    remote_addr: Option<SocketAddr>,
    pub(crate) table: ConnTable<ConnRef>,
    pub(crate) tx: Mutex<TxQueue>,
    pub(crate) writer_kick: Notify,
    pub(crate) stats: Counters,
    /// Id on which the peer sends us control frames.
    pub(crate) control_id: u32,
    /// Id on which we send the peer control frames.
    pub(crate) peer_control_id: u32,
    /// One of the `MODE_*` values; written by the reader task only.
    pub(crate) peer_mode: AtomicU8,
    /// The peer's per-connection window, valid once `peer_mode` is `MODE_CREDIT`.
    pub(crate) peer_window: AtomicU64,
    /// Cost of everything queued in connection receive queues.
    pub(crate) rx_total: AtomicUsize,
    /// Connections whose receiver was woken for data it has not taken yet: this side is
    /// about to send, so a request can leave its write to the writer and be batched.
    pub(crate) ready: AtomicUsize,
    pub(crate) rx_room: Notify,
    end: OnceLock<LinkEnd>,
    /// The application closed the link (even if it had failed before): later operations
    /// report "link is closed", as NEO does.
    closed_by_user: AtomicBool,
    pub(crate) stop_reading: CancellationToken,
    pub(crate) stop_writing: CancellationToken,
    tasks: TaskTracker,
}

/// A handle to a link. Cheap to clone; the link closes when the last handle (including
/// every [`Conn`](crate::Conn) and [`Request`]) is dropped, or on [`Link::close`].
///
/// ```no_run
/// # async fn demo() -> nodelink::Result<()> {
/// use nodelink::{Config, Ping, Pong};
/// let link = nodelink::dial("127.0.0.1:5551", Config::default()).await?;
/// let _pong: Pong = link.ask1(&Ping).await?;
/// link.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Link {
    handle: Arc<Handle>,
}

struct Handle {
    inner: Arc<LinkInner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.close();
    }
}

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
        let numbering = match config.dialect {
            Dialect::NeoGo => Numbering::ByParity {
                first: role.first_id(),
            },
            Dialect::NeoPy => Numbering::ByAnswerBit,
        };
        // The control id the peer would send extension frames on is never a connection of
        // ours (NEO/py has no extension, and every id is usable).
        let reserved = (config.dialect == Dialect::NeoGo).then(|| control::control_id_of(role));
        let (negotiation, offer) = Negotiation::start(
            role,
            config.extension_enabled(),
            config.dialect == Dialect::NeoGo,
            config.effective_budget() as u32,
        );
        let limits = Limits {
            max_conns: config.max_connections,
            backlog: config.accept_backlog,
            keep_closed: config.keep_closed,
            max_keep_closed: config.max_keep_closed,
            pool_max: 1024,
        };
        let inner = Arc::new(LinkInner {
            role,
            table: ConnTable::new(numbering, reserved, limits),
            tx: Mutex::new(TxQueue::new(write, control::control_id_of(role.peer()))),
            writer_kick: Notify::new(),
            stats: Counters::default(),
            control_id: control::control_id_of(role),
            peer_control_id: control::control_id_of(role.peer()),
            peer_mode: AtomicU8::new(if config.extension_enabled() {
                MODE_PENDING
            } else {
                MODE_NEO
            }),
            peer_window: AtomicU64::new(0),
            rx_total: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            rx_room: Notify::new(),
            end: OnceLock::new(),
            closed_by_user: AtomicBool::new(false),
            stop_reading: CancellationToken::new(),
            stop_writing: CancellationToken::new(),
            tasks: TaskTracker::new(),
            name,
            local_addr,
            remote_addr,
            config,
        });
        if let Some(offer) = offer {
            inner.send_negotiation(offer);
        }
        inner
            .tasks
            .spawn(inner.clone().reader_task(read, negotiation));
        inner.tasks.spawn(inner.clone().writer_task());
        inner.tasks.close();
        tracing::debug!(link = %inner.name, ?role, "link up");
        Link {
            handle: Arc::new(Handle { inner }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<LinkInner> {
        &self.handle.inner
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
        self.inner().stats.snapshot()
    }

    /// Whether the peer takes part in the flow-control extension.
    pub fn peer_flow_control(&self) -> PeerFlowControl {
        match self.inner().peer_mode.load(Ordering::Acquire) {
            MODE_PENDING => PeerFlowControl::Unknown,
            MODE_CREDIT => PeerFlowControl::On,
            _ => PeerFlowControl::Off,
        }
    }

    /// The dialect this link speaks.
    pub fn dialect(&self) -> Dialect {
        self.inner().config.dialect
    }

    /// Opens a new connection. Nothing is sent until the first message.
    ///
    /// Fails with [`ErrorKind::Unsupported`] in the NEO/py dialect, which has no
    /// multi-message connections: use [`Link::ask1`], [`Link::send1`] and [`Link::recv1`].
    pub fn new_conn(&self) -> Result<Conn> {
        let inner = self.inner();
        inner.full_conns_supported("newconn")?;
        let slot = inner
            .table
            .open_local(Instant::now())
            .map_err(|e| inner.open_error(e, "newconn"))?;
        Counters::add(&inner.stats.conns_opened, 1);
        Ok(Conn::new(self.clone(), slot, false))
    }

    /// Waits for the peer to open a connection; its first message is already queued.
    ///
    /// Fails with [`ErrorKind::Unsupported`] in the NEO/py dialect: every incoming packet
    /// there is one request, taken with [`Link::recv1`].
    pub async fn accept(&self) -> Result<Conn> {
        self.inner().full_conns_supported("accept")?;
        let slot = self.accept_slot("accept").await?;
        Ok(Conn::new(self.clone(), slot, true))
    }

    async fn accept_slot(&self, op: &'static str) -> Result<ConnRef> {
        let inner = self.inner();
        poll_fn(|cx| match inner.table.poll_accept(cx.waker()) {
            AcceptPoll::Ready(slot) => Poll::Ready(Ok(slot)),
            AcceptPoll::Pending => Poll::Pending,
            AcceptPoll::NotListening => {
                Poll::Ready(Err(inner.link_error(ErrorKind::NotListening, op)))
            }
            AcceptPoll::Down => Poll::Ready(Err(inner.link_error(inner.end_kind(false), op))),
        })
        .await
    }

    /// Stops accepting incoming connections: blocked and later accepts fail with
    /// "not listening", queued connections and new ones are answered "connection refused".
    pub fn close_accept(&self) {
        let inner = self.inner();
        let (queued, wake) = inner.table.close_accept();
        wake.wake();
        for slot in queued {
            let (dropped, wake) = slot.close_rx(RxClosed::Local, &inner.ready);
            wake.wake();
            inner.release_rx(dropped.cost);
            Counters::add(&inner.stats.conns_refused, 1);
            if dropped.requests > 0 {
                inner.reply_refused(slot.id());
            }
            inner.credit_back(slot.id(), dropped.cost + dropped.uncredited);
        }
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
            .table
            .alloc_unregistered(Instant::now())
            .map_err(|e| inner.open_error(e, "send1"))?;
        Counters::add(&inner.stats.conns_opened, 1);
        let encode = |b: &mut BytesMut| msg.encode(b);
        inner
            .send_frame(None, id, M::CODE, Body::Encode(encode))
            .await
            .map_err(|f| inner.send_error(f, Some(id), "send1"))
    }

    /// Sends one request on a fresh connection and waits for its answer (or an Error
    /// message, returned as [`ErrorKind::Peer`]). The connection state is recycled.
    pub async fn ask1<Req: Message, Resp: Message>(&self, req: &Req) -> Result<Resp> {
        let encode = |b: &mut BytesMut| req.encode(b);
        let packet = self.ask1_with(Req::CODE, Body::Encode(encode)).await?;
        let id = packet.conn_id;
        packet
            .decode::<Resp>()
            .map_err(|e| self.inner().conn_error(ErrorKind::Decode(e), id, "ask1"))
    }

    /// [`Link::ask1`] with a raw payload; returns the raw answer packet.
    pub async fn ask1_packet(&self, code: u16, payload: Bytes) -> Result<Packet> {
        self.ask1_with(code, Body::Bytes::<fn(&mut BytesMut)>(&payload))
            .await
    }

    async fn ask1_with<F: Fn(&mut BytesMut)>(
        &self,
        code: u16,
        body: Body<'_, F>,
    ) -> Result<Packet> {
        let inner = self.inner();
        let slot = inner
            .table
            .open_local(Instant::now())
            .map_err(|e| inner.open_error(e, "ask1"))?;
        Counters::add(&inner.stats.conns_opened, 1);
        let light = LightConn {
            inner,
            slot: Some(slot),
            keep: false,
        };
        let slot = light.slot();
        let id = slot.id();
        inner
            .send_request(slot, id, code, body)
            .await
            .map_err(|f| inner.send_error(f, Some(id), "ask1"))?;
        let packet = inner.recv_on(slot, id, "ask1").await?;
        if packet.code == ErrorMessage::CODE {
            let kind = match ErrorMessage::decode(packet.payload) {
                Ok(m) => ErrorKind::Peer(m),
                Err(e) => ErrorKind::Decode(e),
            };
            return Err(inner.conn_error(kind, id, "ask1"));
        }
        Ok(packet)
    }

    /// Accepts a connection together with its first message, for one-request-one-reply
    /// exchanges. Further packets on that connection are answered "connection closed".
    pub async fn recv1(&self) -> Result<Request> {
        self.recv1_with(true).await
    }

    /// Like [`Link::recv1`], but keeps no record of the connection afterwards, so a later
    /// packet on the same id is accepted as a new request. This suits stateless servers
    /// that must answer full-connection clients (many requests on one id, even pipelined:
    /// they are served in order) and lightweight clients alike, without holding any state
    /// per connection. Answers are sent without flow-control credit (there is no
    /// connection state to hold it), so a full-connection client that pipelines more than
    /// its receive budget of answers without reading them overflows its own budget.
    pub async fn recv1_stateless(&self) -> Result<Request> {
        self.recv1_with(false).await
    }

    async fn recv1_with(&self, keep: bool) -> Result<Request> {
        let inner = self.inner();
        loop {
            let slot = self.accept_slot("recv1").await?;
            let first = slot.pop_now(&inner.ready);
            if keep {
                // Anything else queued on this id gets "connection closed"; the closed
                // record takes over from the slot.
                drop(LightConn {
                    inner,
                    slot: Some(slot),
                    keep,
                });
            } else if let Some(wake) = inner.table.finish_stateless(slot) {
                // Pipelined requests are waiting on this id: they are served next, in order.
                wake.wake();
            }
            if let Some((packet, cost)) = first {
                inner.release_rx(cost);
                // A stateless server may be talking to a full connection that sends many
                // requests on this id: it needs its credit back, or it stalls once it has
                // sent a window's worth. (After recv1 the id is closed, so no credit.)
                let credit = if !keep && inner.credit_every().is_some() {
                    cost as u32
                } else {
                    0
                };
                return Ok(Request::new(self.clone(), packet, credit));
            }
            // The link went down between accept and pop; the next accept reports it.
        }
    }
}

/// A lightweight connection's state while one exchange uses it. Dropping it (including by
/// cancellation) closes the connection and recycles the state.
struct LightConn<'a> {
    inner: &'a LinkInner,
    slot: Option<ConnRef>,
    keep: bool,
}

impl LightConn<'_> {
    fn slot(&self) -> &ConnRef {
        self.slot.as_ref().expect("slot present until drop")
    }
}

impl Drop for LightConn<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let (dropped, wake) = slot.close_rx(RxClosed::Local, &self.inner.ready);
        wake.wake();
        slot.close_tx().wake();
        self.inner.release_rx(dropped.cost);
        if dropped.requests > 0 {
            self.inner.reply_closed(slot.id());
        }
        // Only what was discarded unread: the answer a lightweight exchange consumed was
        // sent without credit (a `Request` reply), so returning it would be wasted traffic.
        self.inner.credit_back(slot.id(), dropped.cost);
        self.inner.table.retire(slot, self.keep, Instant::now());
    }
}

impl LinkInner {
    /// Returns `bytes` of connection `id`'s window to the peer, when it takes credit.
    pub(crate) fn credit_back(&self, id: u32, bytes: usize) {
        if bytes > 0 && self.credit_every().is_some() {
            self.owe_credit(id, bytes.min(u32::MAX as usize) as u32, true);
        }
    }

    /// The application closes the link.
    pub(crate) fn close(&self) {
        self.closed_by_user.store(true, Ordering::Release);
        self.shutdown(LinkEnd::Closed);
    }

    /// Ends the link (first reason wins): wakes every waiter, fails every connection, stops
    /// the reader; the writer flushes what is queued when the link was closed on purpose.
    pub(crate) fn shutdown(&self, end: LinkEnd) {
        if self.end.set(end.clone()).is_err() {
            return;
        }
        match &end {
            LinkEnd::Closed => tracing::debug!(link = %self.name, "link closed"),
            LinkEnd::Failed(e) => tracing::debug!(link = %self.name, error = %e, "link down"),
        }
        self.stop_reading.cancel();
        let wake = {
            let mut q = lock_std(&self.tx);
            q_mark_down(&mut q)
        };
        wake.wake();
        match end {
            LinkEnd::Failed(_) => self.stop_writing.cancel(),
            LinkEnd::Closed => self.writer_kick.notify_one(),
        }
        if let Some((slots, wake)) = self.table.shutdown() {
            wake.wake();
            for slot in slots {
                let (dropped, wake) = slot.close_rx(RxClosed::Link, &self.ready);
                wake.wake();
                slot.close_tx().wake();
                self.release_rx(dropped.cost);
            }
        }
        self.rx_room.notify_waiters();
    }

    /// The error kind for operations on an ended link; `first` selects the one-time report
    /// of the underlying I/O error.
    pub(crate) fn end_kind(&self, first: bool) -> ErrorKind {
        if self.closed_by_user.load(Ordering::Acquire) {
            return ErrorKind::LinkClosed;
        }
        match self.end.get() {
            None | Some(LinkEnd::Closed) => ErrorKind::LinkClosed,
            Some(LinkEnd::Failed(e)) if first => ErrorKind::Io(e.clone()),
            Some(LinkEnd::Failed(e)) => ErrorKind::LinkDown(e.clone()),
        }
    }

    pub(crate) fn link_error(&self, kind: ErrorKind, op: &'static str) -> Error {
        Error::new(kind, Place::link(&self.name), op)
    }

    pub(crate) fn conn_error(&self, kind: ErrorKind, id: u32, op: &'static str) -> Error {
        Error::new(kind, Place::conn(&self.name, id), op)
    }

    pub(crate) fn open_error(&self, e: OpenError, op: &'static str) -> Error {
        let kind = match e {
            OpenError::Down => self.end_kind(false),
            OpenError::TooMany => ErrorKind::TooManyConnections,
        };
        self.link_error(kind, op)
    }

    pub(crate) fn send_error(&self, f: SendFail, id: Option<u32>, op: &'static str) -> Error {
        let kind = match f {
            SendFail::Link => self.end_kind(false),
            SendFail::Conn => ErrorKind::ConnectionClosed,
            SendFail::Io(e) => ErrorKind::Io(e),
            SendFail::TooBig(len) => ErrorKind::PacketTooBig {
                len,
                limit: crate::frame::MAX_PAYLOAD_LEN,
            },
        };
        match id {
            Some(id) => self.conn_error(kind, id, op),
            None => self.link_error(kind, op),
        }
    }

    pub(crate) fn recv_end_error(&self, end: RxEnd, id: u32, op: &'static str) -> Error {
        let kind = match end.reason {
            RxClosed::Local => ErrorKind::ConnectionClosed,
            RxClosed::Overflow => ErrorKind::RecvBudgetExceeded,
            RxClosed::Link => self.end_kind(end.first_link_report),
        };
        self.conn_error(kind, id, op)
    }

    /// The peer's window when it takes credit, else no limit. Until the negotiation has
    /// decided, a side that takes part in the extension stays within the protocol minimum
    /// window, which every nodelink receiver accepts.
    pub(crate) fn peer_window(&self) -> Option<u64> {
        match self.peer_mode.load(Ordering::Acquire) {
            MODE_CREDIT => Some(self.peer_window.load(Ordering::Relaxed)),
            MODE_PENDING => Some(MIN_RECV_BUDGET as u64),
            _ => None,
        }
    }

    /// How often to return credit, when the peer takes it.
    pub(crate) fn credit_every(&self) -> Option<usize> {
        match self.peer_mode.load(Ordering::Relaxed) {
            MODE_CREDIT => Some((self.config.effective_budget() / 4).max(MIN_RECV_BUDGET / 4)),
            _ => None,
        }
    }

    /// Full connections exist in the NEO/go dialect only.
    fn full_conns_supported(&self, op: &'static str) -> Result<()> {
        match self.config.dialect {
            Dialect::NeoGo => Ok(()),
            Dialect::NeoPy => Err(self.link_error(
                ErrorKind::Unsupported(
                    "the neo-py dialect has no multi-message connections \
                     (one request, at most one answer): use ask1, send1 and recv1",
                ),
                op,
            )),
        }
    }

    /// Queues a frame of the extension's negotiation (our HELLO, or a decline).
    pub(crate) fn send_negotiation(&self, frame: crate::negotiate::Reply) {
        match frame {
            crate::negotiate::Reply::Hello { window } => {
                self.enqueue_nowait(self.peer_control_id, control::CONTROL_CODE, |b| {
                    control::encode_hello(window, b)
                });
            }
            // NEO/go's answer to an unknown id of its parity, on the id the offer came on.
            crate::negotiate::Reply::Decline => {
                self.reply_error(self.control_id, "connection closed")
            }
        }
    }

    /// Queues a CREDIT frame returning `bytes` of connection `id`'s window to the peer.
    pub(crate) fn send_credit(&self, id: u32, bytes: u32, kick: bool) {
        self.owe_credit(id, bytes, kick);
    }

    /// Receives the next packet of a connection, returning credit to the peer when due.
    pub(crate) async fn recv_on(
        &self,
        slot: &ConnRef,
        id: u32,
        op: &'static str,
    ) -> Result<Packet> {
        let credit_every = self.credit_every();
        let popped = poll_fn(|cx| slot.poll_pop(cx, credit_every, &self.ready))
            .await
            .map_err(|end| self.recv_end_error(end, id, op))?;
        self.release_rx(popped.cost);
        if let Some(credit) = popped.credit {
            self.send_credit(id, credit, true);
        }
        Ok(popped.packet)
    }

    /// Gives queued-packet cost back to the link-wide budget, waking the reader if it was
    /// waiting for room.
    pub(crate) fn release_rx(&self, cost: usize) {
        if cost == 0 {
            return;
        }
        let before = self.rx_total.fetch_sub(cost, Ordering::AcqRel);
        let limit = self.config.link_recv_limit;
        if before > limit && before - cost <= limit {
            self.rx_room.notify_one();
        }
    }

    /// Queues NEO's "connection closed" reply for `id`.
    pub(crate) fn reply_closed(&self, id: u32) {
        self.reply_error(id, "connection closed");
    }

    /// Queues NEO's "connection refused" reply for `id`.
    pub(crate) fn reply_refused(&self, id: u32) {
        self.reply_error(id, "connection refused");
    }

    fn reply_error(&self, id: u32, text: &str) {
        if self.config.dialect == Dialect::NeoPy {
            // NEO/py never gets an automatic reply: it has no closed or refused
            // connections, and an Error answer for a request it never made would be an
            // answer to nothing.
            return;
        }
        self.enqueue_nowait(id, ErrorMessage::CODE, |b| {
            ErrorMessage::encode_parts(ErrorCode::PROTOCOL_ERROR, text, b)
        });
    }

    /// What an id maps to now (tests and diagnostics).
    pub(crate) fn id_state(&self, id: u32) -> IdState {
        self.table.id_state(id, Instant::now())
    }
}

fn q_mark_down(q: &mut TxQueue) -> crate::waiters::Wake {
    q.mark_down()
}

fn link_name(local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Arc<str> {
    let show = |a: Option<SocketAddr>| a.map_or_else(|| "?".to_string(), |a| a.to_string());
    Arc::from(format!("{} - {}", show(local), show(remote)))
}

/// Test and diagnostic helpers.
#[doc(hidden)]
impl Link {
    /// Whether `id` is open, kept closed, or free in the connection table.
    pub fn debug_id_state(&self, id: u32) -> &'static str {
        match self.inner().id_state(id) {
            IdState::Open => "open",
            IdState::KeptClosed => "kept-closed",
            IdState::Free => "free",
        }
    }

    /// Open connections and closed records in the table.
    pub fn debug_table_counts(&self) -> (usize, usize) {
        self.inner().table.counts()
    }

    /// Cost currently queued in connection receive queues.
    pub fn debug_rx_queued(&self) -> usize {
        self.inner().rx_total.load(Ordering::Relaxed)
    }
}
