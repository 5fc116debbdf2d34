//! rust-yamux (the `yamux` crate, as used by libp2p): many streams over one TCP connection,
//! each stream carrying the raw-TCP framing (`u32 BE length | bytes`).
//!
//! Every [`Client`] owns one TCP connection with a yamux [`Connection`] in client mode. The
//! connection lives in a driver task that polls it for inbound frames and opens outbound
//! streams on request (yamux's own API: `poll_new_outbound` / `poll_next_inbound` must be
//! polled by whoever owns the connection); scenario tasks ask for a stream over a channel and
//! get it back through a oneshot. The server runs one yamux connection per accepted socket and
//! serves every inbound stream with [`serve_stream`] in a task of its own.
//!
//! # Configuration (both ends)
//!
//! * `max_num_streams` = [`MAX_STREAMS`] (131 072) instead of 512, so the idle scenario can
//!   keep 100 000 streams open and the fairness scenario 1 000.
//! * `max_connection_receive_window` = `MAX_STREAMS × 256 KiB + 1 GiB`: yamux requires at least
//!   the default stream window (256 KiB) per allowed stream; the extra 1 GiB is the same
//!   head-room for window auto-tuning that the default configuration (1 GiB for 512 streams)
//!   leaves. It is a bound on credit, not memory allocated up front.
//! * Everything else is the default: 256 KiB initial stream window (auto-tuned upwards from
//!   the measured RTT), 16 KiB split send size, read after close on.
//!
//! yamux itself limits a side to 256 outbound streams that the peer has not acknowledged yet
//! (the peer acknowledges a stream with its first frame on it, here the echo); stream opening
//! waits when that backlog is full, which matters for `fairness` with many streams.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::{Bytes, BytesMut};
use futures::future::poll_fn;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use yamux::{Config, Connection, Mode};

use super::raw_tcp::{answer_one, read_msg, serve_stream};
use super::{answer_len, IdleConns, Server, ServerMode, Times};

/// Streams a yamux connection may hold at once (both ends).
pub const MAX_STREAMS: usize = 128 << 10;

/// The yamux configuration used by both ends (see the module documentation).
pub fn config() -> Config {
    let mut cfg = Config::default();
    // Raise the receive-window bound first: `set_max_num_streams` asserts against it.
    cfg.set_max_connection_receive_window(Some(
        MAX_STREAMS * yamux::DEFAULT_CREDIT as usize + (1 << 30),
    ));
    cfg.set_max_num_streams(MAX_STREAMS);
    cfg
}

/// A yamux stream seen through tokio's I/O traits.
type YStream = Compat<yamux::Stream>;

/// Binds `bind`; every accepted connection becomes a yamux server whose inbound streams are
/// served with the echo rule, each by a task of its own ([`ServerMode::Hold`]: the first
/// message answered by a short-lived task, then the stream parked without a task).
pub async fn start_server(bind: SocketAddr, mode: ServerMode) -> Result<Server> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_connection(stream, mode));
        }
    });
    Ok(Server { addr, task })
}

async fn serve_connection(stream: TcpStream, mode: ServerMode) {
    let mut conn = Connection::new(stream.compat(), config(), Mode::Server);
    // Streams parked by the `Hold` mode, dropped with the connection.
    let held: Arc<StdMutex<Vec<YStream>>> = Arc::default();
    while let Some(Ok(stream)) = poll_fn(|cx| conn.poll_next_inbound(cx)).await {
        let mut stream = stream.compat();
        if mode == ServerMode::Hold {
            // Answered off the driver task: reading may need frames only it can deliver.
            let held = held.clone();
            tokio::spawn(async move {
                if answer_one(&mut stream).await.is_ok() {
                    held.lock().expect("not poisoned").push(stream);
                }
            });
        } else {
            tokio::spawn(serve_stream(stream));
        }
    }
}

/// A request to open an outbound stream, answered by the driver task.
type OpenRequest = oneshot::Sender<yamux::Result<yamux::Stream>>;

/// Handle for opening streams on the client's connection. The driver task closes the
/// connection once every handle (the client's, those of running scenarios and of
/// [`IdleConns`]) is gone.
#[derive(Clone)]
struct Opener(mpsc::UnboundedSender<OpenRequest>);

impl Opener {
    async fn open(&self) -> Result<YStream> {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).ok().context("yamux connection gone")?;
        let stream = rx.await.context("yamux connection gone")??;
        Ok(stream.compat())
    }
}

/// Owns the client's yamux connection: opens requested streams and keeps reading frames.
async fn drive(
    mut conn: Connection<Compat<TcpStream>>,
    mut requests: mpsc::UnboundedReceiver<OpenRequest>,
) {
    let mut pending: Option<OpenRequest> = None;
    let mut closing = false;
    poll_fn(|cx| {
        use std::task::Poll;
        if !closing {
            loop {
                if pending.is_none() {
                    match requests.poll_recv(cx) {
                        Poll::Ready(Some(req)) => pending = Some(req),
                        Poll::Ready(None) => {
                            closing = true;
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                let Some(req) = pending.take() else { break };
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(res) => {
                        let _ = req.send(res);
                    }
                    // Too many unacknowledged streams: yamux wakes us on the next ACK.
                    Poll::Pending => {
                        pending = Some(req);
                        break;
                    }
                }
            }
        }
        if closing {
            return conn.poll_close(cx).map(|_| ());
        }
        loop {
            match conn.poll_next_inbound(cx) {
                // The server never opens streams; dropping one resets it.
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// A connected client: one TCP connection, one yamux session.
pub struct Client {
    opener: Opener,
}

/// Connects one socket and starts the yamux session on it.
pub async fn connect(addr: SocketAddr) -> Result<Client> {
    let socket = TcpStream::connect(addr).await.context("connect")?;
    socket.set_nodelay(true)?;
    let conn = Connection::new(socket.compat(), config(), Mode::Client);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(conn, rx));
    Ok(Client { opener: Opener(tx) })
}

/// `u32 BE length | payload`, ready to be written in one go (one yamux frame when small).
fn frame(payload: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(4 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.freeze()
}

/// One round trip on a fresh stream: open, send, read the answer, close.
async fn ask_new_stream(opener: &Opener, frame: &[u8], answer: &mut BytesMut) -> Result<()> {
    let mut s = opener.open().await?;
    s.write_all(frame).await?;
    read_msg(&mut s, answer).await?;
    s.shutdown().await?;
    Ok(())
}

/// Checks the last answer of `n` round trips against the echo rule.
fn check_echo(payload: &[u8], answer: &[u8], n: usize) -> Result<()> {
    let ok = n == 0
        || if answer_len(payload.len()) == payload.len() {
            answer == payload
        } else {
            answer == (payload.len() as u64).to_be_bytes()
        };
    if !ok {
        bail!("answer differs from the echo rule");
    }
    Ok(())
}

impl Client {
    /// Serial round trips on one stream.
    pub async fn rtt_conn(&self, payload: Bytes, n: usize) -> Result<Times> {
        let mut s = self.opener.open().await?;
        let frame = frame(&payload);
        let mut answer = BytesMut::new();
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            s.write_all(&frame).await?;
            read_msg(&mut s, &mut answer).await?;
            times.push(t.elapsed());
        }
        s.shutdown().await?;
        check_echo(&payload, &answer, n)?;
        Ok(times)
    }

    /// Serial round trips, each on a new stream (open, write, read the echo, close).
    pub async fn rtt_ask1(&self, payload: Bytes, n: usize) -> Result<Times> {
        let frame = frame(&payload);
        let mut answer = BytesMut::new();
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            ask_new_stream(&self.opener, &frame, &mut answer).await?;
            times.push(t.elapsed());
        }
        check_echo(&payload, &answer, n)?;
        Ok(times)
    }

    /// `workers` tasks each doing `per_worker` new-stream round trips; total elapsed.
    pub async fn concurrent(
        &self,
        payload: Bytes,
        workers: usize,
        per_worker: usize,
    ) -> Result<Duration> {
        let frame = frame(&payload);
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let opener = self.opener.clone();
            let frame = frame.clone();
            tasks.spawn(async move {
                let mut answer = BytesMut::new();
                for _ in 0..per_worker {
                    ask_new_stream(&opener, &frame, &mut answer).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(start.elapsed())
    }

    /// One stream: `count` messages of `msg_size` written while the acks are read.
    pub async fn bulk(&self, msg_size: usize, count: usize) -> Result<Duration> {
        let s = self.opener.open().await?;
        let (mut r, mut w) = tokio::io::split(s);
        let msg = frame(&vec![0x5a; msg_size]);
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            for _ in 0..count {
                w.write_all(&msg).await?;
            }
            anyhow::Ok(w)
        });
        let mut ack = BytesMut::new();
        for _ in 0..count {
            read_msg(&mut r, &mut ack).await?;
        }
        let elapsed = start.elapsed();
        let mut w = writer.await??;
        w.shutdown().await?;
        Ok(elapsed)
    }

    /// `conns` streams at once, each sending `msgs` messages of `size` one at a time (waiting
    /// for each answer); per-stream time until its last answer, from the common start. Each
    /// stream is opened by its own task, all spawned at the start (yamux's limit of 256
    /// unacknowledged outbound streams rules out opening them all before sending).
    pub async fn fairness(&self, conns: usize, size: usize, msgs: usize) -> Result<Times> {
        let frame = frame(&vec![0x33; size]);
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..conns {
            let opener = self.opener.clone();
            let frame = frame.clone();
            tasks.spawn(async move {
                let mut s = opener.open().await?;
                let mut answer = BytesMut::new();
                for _ in 0..msgs {
                    s.write_all(&frame).await?;
                    read_msg(&mut s, &mut answer).await?;
                }
                let done = start.elapsed();
                s.shutdown().await?;
                anyhow::Ok(done)
            });
        }
        let mut times = Vec::with_capacity(conns);
        while let Some(r) = tasks.join_next().await {
            times.push(r??);
        }
        Ok(times)
    }

    /// `conns` streams, each having exchanged a 1-byte message, kept open.
    pub async fn idle(&self, conns: usize) -> Result<IdleConns> {
        let mut open = Vec::with_capacity(conns);
        let mut answer = BytesMut::new();
        let one = frame(&[1]);
        for _ in 0..conns {
            let mut s = self.opener.open().await?;
            s.write_all(&one).await?;
            read_msg(&mut s, &mut answer).await?;
            open.push(s);
        }
        // The opener clone keeps the session up even if the client goes first.
        Ok(IdleConns(Box::new((open, self.opener.clone()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_scenario_runs() {
        tokio::time::timeout(Duration::from_secs(30), async {
            let bind = "127.0.0.1:0".parse().unwrap();
            let server = start_server(bind, ServerMode::PerConnection).await.unwrap();
            let client = connect(server.addr).await.unwrap();
            let payload = Bytes::from_static(b"hello");
            assert_eq!(client.rtt_conn(payload.clone(), 5).await.unwrap().len(), 5);
            assert_eq!(client.rtt_ask1(payload.clone(), 5).await.unwrap().len(), 5);
            let big = Bytes::from(vec![7; super::super::ECHO_LIMIT + 1]);
            assert_eq!(client.rtt_conn(big.clone(), 2).await.unwrap().len(), 2);
            assert_eq!(client.rtt_ask1(big, 2).await.unwrap().len(), 2);
            client.concurrent(payload, 4, 5).await.unwrap();
            client.bulk(100 << 10, 3).await.unwrap();
            client.bulk(1000, 3).await.unwrap();
            assert_eq!(client.fairness(10, 100, 3).await.unwrap().len(), 10);
            let idle = client.idle(10).await.unwrap();
            drop(client);
            drop(idle);

            let hold = start_server(bind, ServerMode::Hold).await.unwrap();
            let client = connect(hold.addr).await.unwrap();
            let idle = client.idle(10).await.unwrap();
            drop(idle);
        })
        .await
        .expect("timed out");
    }
}
