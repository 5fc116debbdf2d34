//! Outgoing connects: find or build the socket to a remote endpoint, then announce a new
//! lightweight connection on it.
//!
//! The first connect to an address creates its record (`Init{Us}`) and spawns the one
//! task that will own the socket: it dials, performs the handshake and, once accepted,
//! becomes the socket's reader. Every connect (the first included) then waits on the
//! record for it to resolve. A cancelled connect therefore never leaves a half-built
//! record behind, and all waits are bounded by the connect timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::address::EndPointAddress;
use crate::connection::{Connection, Kind};
use crate::core::socket::OpenRefused;
use crate::endpoint_shared::EndPointShared;
use crate::error::{Error, ErrorKind};
use crate::net::{dial, DialError};
use crate::remote::{Origin, RemoteState, Resolution, Socket};
use crate::wire::{ConnectionRequest, HandshakeResponse};
use crate::writer::SocketWriter;

enum Step {
    Wait(watch::Receiver<Resolution>),
    Done(Connection, Arc<SocketWriter>, u64),
}

pub(crate) async fn connect(
    ep: &Arc<EndPointShared>,
    to: &EndPointAddress,
    timeout: Option<Duration>,
) -> Result<Connection, Error> {
    if *to == ep.address {
        let lcid = crate::selfconn::open(ep)?;
        return Ok(Connection::new(ep.clone(), lcid, Kind::Local));
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let step = {
            let mut st = ep.lock();
            if st.closed {
                return Err(Error::new(ErrorKind::ConnectFailed, "endpoint closed"));
            }
            match st.remotes.get_mut(to) {
                None => {
                    let Some((host, port, target)) = to.parse() else {
                        return Err(Error::new(
                            ErrorKind::ConnectFailed,
                            format!("invalid address {to}"),
                        ));
                    };
                    let key = st.insert_remote(
                        to.clone(),
                        RemoteState::Init {
                            origin: Origin::Us,
                            crossed: false,
                        },
                    );
                    let rx = st.remotes[to].changed.subscribe();
                    let setup = Setup {
                        ep: ep.clone(),
                        to: to.clone(),
                        key,
                        host,
                        port,
                        target,
                        deadline,
                    };
                    tokio::spawn(setup.run());
                    Step::Wait(rx)
                }
                Some(rec) => match &mut rec.state {
                    RemoteState::Open(sock) => match sock.with_core(|core| core.open()) {
                        Some((Ok(lcid), mark)) => {
                            let writer = sock.writer.clone();
                            let kind = Kind::Remote {
                                address: to.clone(),
                                key: rec.key,
                                writer: writer.clone(),
                            };
                            Step::Done(Connection::new(ep.clone(), lcid, kind), writer, mark)
                        }
                        // Closing: wait until the close is cancelled or completed. (`None`:
                        // the socket is failing; its reader will remove the record.)
                        Some((Err(OpenRefused::NotOpen), _)) | None => {
                            Step::Wait(rec.changed.subscribe())
                        }
                        Some((Err(OpenRefused::Exhausted), _)) => {
                            // Ids are never reused on a socket; this one has used them all.
                            return Err(Error::new(
                                ErrorKind::ConnectInsufficientResources,
                                format!("connection ids to {to} exhausted on this socket"),
                            ));
                        }
                    },
                    RemoteState::Init { .. } => Step::Wait(rec.changed.subscribe()),
                },
            }
        };
        match step {
            Step::Done(conn, writer, mark) => {
                // If this future is dropped here, dropping `conn` closes the connection.
                return match writer.flush(mark).await {
                    Ok(()) => {
                        tracing::info!(
                            peer = %to,
                            endpoint = %ep.address,
                            lcid = conn.0.lcid,
                            "outgoing connection opened"
                        );
                        Ok(conn)
                    }
                    Err(e) => Err(Error::with_source(
                        ErrorKind::ConnectFailed,
                        "connection lost during connect",
                        e,
                    )),
                };
            }
            Step::Wait(mut rx) => {
                let changed = rx.changed();
                let woke = match deadline {
                    Some(d) => tokio::time::timeout_at(d, changed).await.is_ok(),
                    None => {
                        let _ = changed.await;
                        true
                    }
                };
                if !woke {
                    return Err(Error::new(
                        ErrorKind::ConnectTimeout,
                        format!("connect to {to} timed out"),
                    ));
                }
                if let Resolution::Failed(kind, msg) = &*rx.borrow() {
                    return Err(Error::new(*kind, msg.clone()));
                }
            }
        }
    }
}

/// The task that owns an outgoing socket from dial to close.
struct Setup {
    ep: Arc<EndPointShared>,
    to: EndPointAddress,
    key: u64,
    host: String,
    port: u16,
    target: u32,
    deadline: Option<Instant>,
}

enum Outcome {
    Accepted(TcpStream, BytesMut),
    Crossed,
    Fail(ErrorKind, String),
}

impl Setup {
    async fn run(self) {
        let outcome = match self.deadline {
            Some(d) => match tokio::time::timeout_at(d, self.handshake()).await {
                Ok(o) => o,
                Err(_) => Outcome::Fail(
                    ErrorKind::ConnectTimeout,
                    format!("connect to {} timed out", self.to),
                ),
            },
            None => self.handshake().await,
        };
        match outcome {
            Outcome::Accepted(stream, leftover) => self.accepted(stream, leftover).await,
            Outcome::Crossed => self.crossed().await,
            Outcome::Fail(kind, msg) => self.fail(kind, msg),
        }
    }

    async fn handshake(&self) -> Outcome {
        let config = &self.ep.config;
        let mut stream = match dial(&self.host, self.port, config).await {
            Ok(s) => s,
            Err(DialError::Socket(e)) => {
                return Outcome::Fail(
                    ErrorKind::ConnectInsufficientResources,
                    format!("socket: {e}"),
                )
            }
            Err(DialError::Unreachable(m)) => return Outcome::Fail(ErrorKind::ConnectNotFound, m),
        };
        let origin = if self.ep.addressable {
            Some(self.ep.address.clone())
        } else {
            None
        };
        let mut out = BytesMut::new();
        ConnectionRequest::new(self.target, origin).encode(&mut out);
        if let Err(e) = stream.write_all(&out).await {
            return Outcome::Fail(
                ErrorKind::ConnectFailed,
                format!("sending the connection request: {e}"),
            );
        }
        let mut buf = BytesMut::with_capacity(64);
        let response = loop {
            match HandshakeResponse::decode(&mut buf, config.max_address_length) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    return Outcome::Fail(
                        ErrorKind::ConnectFailed,
                        format!("bad handshake response: {e}"),
                    )
                }
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => {
                    return Outcome::Fail(
                        ErrorKind::ConnectFailed,
                        "peer closed during the handshake".into(),
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    return Outcome::Fail(ErrorKind::ConnectFailed, format!("handshake: {e}"))
                }
            }
        };
        match response {
            HandshakeResponse::Accepted => Outcome::Accepted(stream, buf),
            HandshakeResponse::Crossed => Outcome::Crossed,
            HandshakeResponse::InvalidEndPoint => Outcome::Fail(
                ErrorKind::ConnectNotFound,
                format!("no endpoint {} at {}", self.target, self.to),
            ),
            HandshakeResponse::HostMismatch {
                claimed,
                numeric,
                resolved,
            } => Outcome::Fail(
                ErrorKind::ConnectFailed,
                format!(
                    "host mismatch: we claimed {}, the peer sees {} ({})",
                    String::from_utf8_lossy(&claimed),
                    String::from_utf8_lossy(&numeric),
                    String::from_utf8_lossy(&resolved)
                ),
            ),
            HandshakeResponse::UnsupportedVersion(v) => Outcome::Fail(
                ErrorKind::ConnectFailed,
                format!("peer wants protocol version {v}, we speak 0"),
            ),
        }
    }

    fn fail(&self, kind: ErrorKind, msg: String) {
        tracing::debug!(peer = %self.to, %msg, "connect failed");
        let mut st = self.ep.lock();
        let still_ours = st.remote_mut(&self.to, self.key).is_some_and(|r| {
            matches!(
                r.state,
                RemoteState::Init {
                    origin: Origin::Us,
                    ..
                }
            )
        });
        if still_ours {
            st.remove_remote(&self.to, self.key, Resolution::Failed(kind, msg));
        }
    }

    async fn accepted(self, stream: TcpStream, leftover: BytesMut) {
        let (read, write) = stream.into_split();
        let writer = SocketWriter::new(write);
        {
            let mut st = self.ep.lock();
            let Some(rec) = st.remote_mut(&self.to, self.key) else {
                return;
            };
            if !matches!(rec.state, RemoteState::Init { .. }) {
                return;
            }
            rec.state =
                RemoteState::Open(Socket::new(writer.clone(), self.ep.config.socket_limits()));
            rec.announce(Resolution::Changed);
        }
        crate::reader::run(self.ep, self.to, self.key, read, leftover, writer).await;
    }

    /// Our request lost the tie-break: the peer's request to us will become the socket.
    /// Wait (bounded) for the inbound side to take the record over.
    async fn crossed(self) {
        tracing::debug!(peer = %self.to, "our request was answered Crossed; waiting for theirs");
        let mut rx = {
            let mut st = self.ep.lock();
            let Some(rec) = st.remote_mut(&self.to, self.key) else {
                return;
            };
            let RemoteState::Init {
                origin: Origin::Us,
                crossed,
            } = &mut rec.state
            else {
                return;
            };
            *crossed = true;
            let rx = rec.changed.subscribe();
            rec.announce(Resolution::Pending);
            rx
        };
        let wait = self
            .ep
            .config
            .connect_timeout
            .unwrap_or(Duration::from_secs(3600 * 24 * 365));
        let until = Instant::now() + wait;
        loop {
            {
                let mut st = self.ep.lock();
                match st.remote_mut(&self.to, self.key) {
                    Some(rec)
                        if matches!(
                            rec.state,
                            RemoteState::Init {
                                origin: Origin::Us,
                                ..
                            }
                        ) => {}
                    _ => return,
                }
            }
            if tokio::time::timeout_at(until, rx.changed()).await.is_err() {
                self.fail(
                    ErrorKind::ConnectTimeout,
                    format!("crossed connect to {} was never completed", self.to),
                );
                return;
            }
        }
    }
}
