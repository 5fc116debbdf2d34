//! Outgoing connects: find or build the socket to a remote endpoint, then announce a new
//! lightweight connection on it.
//!
//! What a connect does is decided by the endpoint's table of peers (`core/peers.rs`).
//! The first connect to an address makes its record (dialing) and spawns the one task
//! that will own the socket: it dials, sends the request and reads the answer
//! (`core/handshake.rs`) and, once accepted, becomes the socket's reader. Every connect
//! (the first included) then waits on the record for it to resolve. A cancelled connect therefore never leaves a half-built
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
use crate::core::handshake::{read_answer, write_request, Answer, Refusal};
use crate::core::peers::{Connect, Dialed};
use crate::core::socket::OpenRefused;
use crate::endpoint_shared::EndPointShared;
use crate::error::{Error, ErrorKind};
use crate::net::{dial, DialError};
use crate::remote::{PeerIo, Resolution};
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
    // An address that is not host:port:id can still be reached over a socket its
    // endpoint opened to us (it names an endpoint that cannot be connected to).
    let parsed = to.parse();
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let step = {
            let mut st = ep.lock();
            let decision = st.peers.connect(to, parsed.is_some(), PeerIo::new);
            match decision {
                Connect::Closed => {
                    return Err(Error::new(ErrorKind::ConnectFailed, "endpoint closed"))
                }
                Connect::Undialable => {
                    return Err(Error::new(
                        ErrorKind::ConnectFailed,
                        format!("invalid address {to}"),
                    ))
                }
                _ => {}
            }
            let Some(rec) = st.peers.get_mut_any(to) else {
                // Not reached: every other decision leaves a record. Never spin on it.
                return Err(Error::new(
                    ErrorKind::ConnectFailed,
                    "no record of the peer",
                ));
            };
            let rx = rec.io.changed.subscribe();
            match decision {
                Connect::Dial(key) => {
                    let Some((host, port, target)) = parsed.clone() else {
                        // Not reached: only a dialable address is dialed.
                        st.peers.dial_failed(to, key);
                        return Err(Error::new(
                            ErrorKind::ConnectFailed,
                            format!("invalid address {to}"),
                        ));
                    };
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
                Connect::Open => {
                    let key = rec.key;
                    let opened = rec.socket().and_then(|mut s| {
                        let writer = s.writer.clone();
                        Some((s.with_core(|core| core.open())?, writer))
                    });
                    match opened {
                        Some(((Ok(lcid), mark), writer)) => {
                            let kind = Kind::Remote {
                                address: to.clone(),
                                key,
                                writer: writer.clone(),
                            };
                            Step::Done(Connection::new(ep.clone(), lcid, kind), writer, mark)
                        }
                        Some(((Err(OpenRefused::Exhausted), _), _)) => {
                            // Ids are never reused on a socket; this one has used them all.
                            return Err(Error::new(
                                ErrorKind::ConnectInsufficientResources,
                                format!("connection ids to {to} exhausted on this socket"),
                            ));
                        }
                        // Closing: wait until the close is cancelled or completed. (`None`:
                        // the socket is failing; its reader will remove the record.)
                        Some(((Err(OpenRefused::NotOpen), _), _)) | None => Step::Wait(rx),
                    }
                }
                Connect::Wait | Connect::Closed | Connect::Undialable => Step::Wait(rx),
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
    Fail(Refusal),
}

impl Setup {
    async fn run(self) {
        let outcome = match self.deadline {
            Some(d) => match tokio::time::timeout_at(d, self.handshake()).await {
                Ok(o) => o,
                Err(_) => Outcome::Fail(Refusal::new(
                    ErrorKind::ConnectTimeout,
                    format!("connect to {} timed out", self.to),
                )),
            },
            None => self.handshake().await,
        };
        match outcome {
            Outcome::Accepted(stream, leftover) => self.accepted(stream, leftover).await,
            Outcome::Crossed => self.crossed().await,
            Outcome::Fail(refusal) => self.fail(refusal),
        }
    }

    /// Dials, sends our request and reads the answer (its meaning: `core/handshake.rs`).
    async fn handshake(&self) -> Outcome {
        let config = &self.ep.config;
        let fail = |kind, message: String| Outcome::Fail(Refusal::new(kind, message));
        let mut stream = match dial(&self.host, self.port, config).await {
            Ok(s) => s,
            Err(DialError::Socket(e)) => {
                return fail(
                    ErrorKind::ConnectInsufficientResources,
                    format!("socket: {e}"),
                )
            }
            Err(DialError::Unreachable(m)) => return fail(ErrorKind::ConnectNotFound, m),
        };
        let origin = self.ep.addressable.then_some(&self.ep.address);
        let mut out = BytesMut::new();
        write_request(self.target, origin, &mut out);
        if let Err(e) = stream.write_all(&out).await {
            return fail(
                ErrorKind::ConnectFailed,
                format!("sending the connection request: {e}"),
            );
        }
        let mut buf = BytesMut::with_capacity(64);
        loop {
            match read_answer(&mut buf, config.max_address_length, &self.to, self.target) {
                Ok(Some(Answer::Accepted)) => return Outcome::Accepted(stream, buf),
                Ok(Some(Answer::Crossed)) => return Outcome::Crossed,
                Ok(None) => {}
                Err(refusal) => return Outcome::Fail(refusal),
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => {
                    return fail(
                        ErrorKind::ConnectFailed,
                        "peer closed during the handshake".into(),
                    )
                }
                Ok(_) => {}
                Err(e) => return fail(ErrorKind::ConnectFailed, format!("handshake: {e}")),
            }
        }
    }

    fn fail(&self, refusal: Refusal) {
        tracing::debug!(peer = %self.to, msg = %refusal.message, "connect failed");
        let mut st = self.ep.lock();
        if let Some(rec) = st.peers.dial_failed(&self.to, self.key) {
            rec.announce(Resolution::Failed(refusal.kind, refusal.message));
        }
    }

    async fn accepted(self, stream: TcpStream, leftover: BytesMut) {
        let (read, write) = stream.into_split();
        let writer = SocketWriter::new(write);
        {
            let mut st = self.ep.lock();
            if st.peers.answered(&self.to, self.key, Answer::Accepted) != Dialed::Open {
                return;
            }
            let Some(rec) = st.peers.get_mut(&self.to, self.key) else {
                return;
            };
            rec.io.writer = Some(writer.clone());
            rec.announce(Resolution::Changed);
        }
        crate::reader::run(self.ep, self.to, self.key, read, leftover, writer, None).await;
    }

    /// Our request lost the tie-break: the peer's request to us will become the socket.
    /// Wait (bounded) for the inbound side to take the record over.
    async fn crossed(self) {
        tracing::debug!(peer = %self.to, "our request was answered Crossed; waiting for theirs");
        let mut rx = {
            let mut st = self.ep.lock();
            if st.peers.answered(&self.to, self.key, Answer::Crossed) != Dialed::AwaitTheirs {
                return;
            }
            let Some(rec) = st.peers.get_mut(&self.to, self.key) else {
                return;
            };
            let rx = rec.io.changed.subscribe();
            rec.announce(Resolution::Pending);
            rx
        };
        let wait = self
            .ep
            .config
            .connect_timeout
            .unwrap_or(Duration::from_secs(3600 * 24 * 365));
        let until = Instant::now() + wait;
        while self.ep.lock().peers.dialing(&self.to, self.key) {
            if tokio::time::timeout_at(until, rx.changed()).await.is_err() {
                self.fail(Refusal::new(
                    ErrorKind::ConnectTimeout,
                    format!("crossed connect to {} was never completed", self.to),
                ));
                return;
            }
        }
    }
}
