//! HTTP/2 with the `h2` crate (hyper's HTTP/2 layer), cleartext, over one TCP connection per
//! client.
//!
//! A message travels in a request body and its answer in the response body, both framed as
//! `u32 BE length | bytes` (a message may be split across DATA frames, or several may share
//! one). The server sends the response headers (200) as soon as a request arrives, answers
//! every complete message with the echo rule and ends the response when the request body
//! ends; it releases flow-control capacity as it consumes data.
//!
//! HTTP/2's natural use is a stream per request, so `rtt_conn` and `rtt_ask1` both open a
//! stream (request) per round trip; `bulk` and `idle` use long-lived bidirectional streams
//! whose request body stays open.
//!
//! # Configuration (both ends)
//!
//! * initial stream window [`STREAM_WINDOW`] = 1 MiB (default 64 KiB), connection window
//!   [`CONNECTION_WINDOW`] = 16 MiB (default 64 KiB), in both directions;
//! * server `max_concurrent_streams` = [`MAX_STREAMS`] (128 Ki, unlimited by default but
//!   stated explicitly), and the client starts with the same limit instead of assuming 100
//!   until the server's SETTINGS arrive;
//! * default frame size (16 KiB), default HPACK table, default per-stream send buffer
//!   (~400 KiB);
//! * `TCP_NODELAY` on both ends.
//!
//! Sends of single messages (and the server's answers) are handed to h2 directly, which
//! buffers them and writes them as soon as flow control allows, as an HTTP client posting a
//! body would; the `bulk` sender reserves capacity and waits for it (`reserve_capacity` /
//! `poll_capacity`), so its memory stays bounded by the windows.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::{Buf, Bytes, BytesMut};
use futures::future::poll_fn;
use h2::client::{ResponseFuture, SendRequest};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{answer_len, IdleConns, Server, ServerMode, Times};

/// Initial flow-control window of every stream, both directions.
pub const STREAM_WINDOW: u32 = 1 << 20;
/// Flow-control window of the whole connection, both directions.
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// Concurrent streams the server allows (and the client assumes before SETTINGS arrive).
pub const MAX_STREAMS: u32 = 128 << 10;

/// Binds `bind` and serves every connection as an HTTP/2 echo server, every request by a
/// task of its own ([`ServerMode::Hold`]: the first message answered by a short-lived task,
/// then the stream's handles parked without a task).
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

/// A stream's two halves, as parked by the `Hold` mode and by [`Client::idle`].
type Held = (SendStream<Bytes>, RecvStream);

async fn serve_connection(stream: TcpStream, mode: ServerMode) {
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_STREAMS)
        .handshake::<_, Bytes>(stream);
    let Ok(mut conn) = handshake.await else {
        return;
    };
    // Streams parked by the `Hold` mode, dropped with the connection.
    let held: Arc<StdMutex<Vec<Held>>> = Arc::default();
    while let Some(Ok((request, respond))) = conn.accept().await {
        if mode == ServerMode::Hold {
            let held = held.clone();
            tokio::spawn(async move {
                if let Ok(pair) = answer_one(request, respond).await {
                    held.lock().expect("not poisoned").push(pair);
                }
            });
        } else {
            tokio::spawn(async move {
                let _ = serve_request(request, respond).await;
            });
        }
    }
}

/// Answers the first message of a request and returns the stream's halves.
async fn answer_one(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Result<Held> {
    let mut tx = respond.send_response(Response::new(()), false)?;
    let mut reader = MsgReader::new(request.into_body());
    let msg = reader.expect().await?;
    tx.send_data(answer(&msg), false)?;
    Ok((tx, reader.into_body()))
}

/// The framed answer to `msg` (echo rule).
fn answer(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    put_answer(&mut out, msg);
    out.freeze()
}

/// Appends the framed answer to `msg` (echo rule) to `out`.
fn put_answer(out: &mut BytesMut, msg: &[u8]) {
    if answer_len(msg.len()) == msg.len() {
        put_frame(out, msg);
    } else {
        put_frame(out, &(msg.len() as u64).to_be_bytes());
    }
}

/// Answers every framed message of the request body on the response body.
async fn serve_request(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Result<()> {
    let mut body = request.into_body();
    let mut tx = respond.send_response(Response::new(()), false)?;
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
        buf.extend_from_slice(&chunk);
        while let Some(msg) = take_msg(&mut buf) {
            put_answer(&mut out, &msg);
        }
        // Answer everything this chunk completed in one DATA frame, ending the response
        // with it when the request body just ended.
        let end = body.is_end_stream();
        if !out.is_empty() || end {
            tx.send_data(out.split().freeze(), end)?;
        }
        if end {
            return Ok(());
        }
    }
    tx.send_data(Bytes::new(), true)?;
    Ok(())
}

/// Appends `u32 BE length | msg` to `out`.
fn put_frame(out: &mut BytesMut, msg: &[u8]) {
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
}

/// `u32 BE length | msg` as one buffer.
fn frame(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + msg.len());
    put_frame(&mut out, msg);
    out.freeze()
}

/// Takes one complete framed message off the front of `buf`.
fn take_msg(buf: &mut BytesMut) -> Option<BytesMut> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    if buf.len() < 4 + len {
        return None;
    }
    buf.advance(4);
    Some(buf.split_to(len))
}

/// Reads framed messages off a response body, releasing flow-control capacity as it goes.
struct MsgReader {
    body: RecvStream,
    buf: BytesMut,
}

impl MsgReader {
    fn new(body: RecvStream) -> Self {
        MsgReader {
            body,
            buf: BytesMut::new(),
        }
    }

    /// The next message, or `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<BytesMut>> {
        loop {
            if let Some(msg) = take_msg(&mut self.buf) {
                return Ok(Some(msg));
            }
            let Some(chunk) = self.body.data().await else {
                return Ok(None);
            };
            let chunk = chunk?;
            self.body.flow_control().release_capacity(chunk.len())?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The body, without the read buffer.
    fn into_body(self) -> RecvStream {
        self.body
    }

    /// The next message; the body must not end before it.
    async fn expect(&mut self) -> Result<BytesMut> {
        self.next().await?.context("response ended early")
    }

    /// Waits for the end of the body (so the stream closes cleanly, without a reset).
    async fn finish(&mut self) -> Result<()> {
        if self.next().await?.is_some() {
            bail!("unexpected extra answer");
        }
        Ok(())
    }
}

/// Sends `data` on a stream whose sender keeps `more` further bytes coming, waiting for
/// flow-control capacity instead of letting h2 buffer without bound.
async fn send_flow_controlled(
    tx: &mut SendStream<Bytes>,
    mut data: Bytes,
    more: usize,
    end: bool,
) -> Result<()> {
    while !data.is_empty() {
        let mut capacity = tx.capacity();
        if capacity == 0 {
            let wanted = (data.len() + more).min(i32::MAX as usize);
            tx.reserve_capacity(wanted);
            while capacity == 0 {
                capacity = poll_fn(|cx| tx.poll_capacity(cx))
                    .await
                    .context("stream closed")??;
            }
        }
        let chunk = data.split_to(capacity.min(data.len()));
        tx.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

fn request() -> Request<()> {
    Request::post("http://nodelink-bench/echo")
        .body(())
        .expect("static request is valid")
}

/// A connected client: one TCP connection, one HTTP/2 session.
pub struct Client {
    send: SendRequest<Bytes>,
}

/// Connects one socket and performs the HTTP/2 handshake; the connection is driven by a
/// task that ends once the client and every stream it opened are gone.
pub async fn connect(addr: SocketAddr) -> Result<Client> {
    let socket = TcpStream::connect(addr).await.context("connect")?;
    socket.set_nodelay(true)?;
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_max_send_streams(MAX_STREAMS as usize)
        .handshake::<_, Bytes>(socket)
        .await
        .context("h2 handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Client { send })
}

/// Opens a stream: request headers sent, request body left open.
async fn open(send: &SendRequest<Bytes>) -> Result<(SendStream<Bytes>, ResponseFuture)> {
    let mut send = send.clone().ready().await?;
    let (response, tx) = send.send_request(request(), false)?;
    Ok((tx, response))
}

/// Waits for the response headers and returns a reader of the response body.
async fn response_body(response: ResponseFuture) -> Result<MsgReader> {
    let response = response.await?;
    if !response.status().is_success() {
        bail!("status {}", response.status());
    }
    Ok(MsgReader::new(response.into_body()))
}

/// One request carrying one framed message; returns the answer.
async fn ask_new_stream(send: &SendRequest<Bytes>, frame: &Bytes) -> Result<BytesMut> {
    let (mut tx, response) = open(send).await?;
    tx.send_data(frame.clone(), true)?;
    let mut body = response_body(response).await?;
    let answer = body.expect().await?;
    body.finish().await?;
    Ok(answer)
}

/// Checks an answer against the echo rule.
fn check_answer(payload: &[u8], answer: &[u8]) -> Result<()> {
    let ok = if answer_len(payload.len()) == payload.len() {
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
    /// Serial round trips, a new stream (request) per round trip: HTTP/2's natural use.
    pub async fn rtt_conn(&self, payload: Bytes, n: usize) -> Result<Times> {
        let frame = frame(&payload);
        let mut times = Vec::with_capacity(n);
        let mut answer = BytesMut::new();
        for _ in 0..n {
            let t = Instant::now();
            answer = ask_new_stream(&self.send, &frame).await?;
            times.push(t.elapsed());
        }
        if n > 0 {
            check_answer(&payload, &answer)?;
        }
        Ok(times)
    }

    /// The same as [`Self::rtt_conn`]: every request is a new stream anyway.
    pub async fn rtt_ask1(&self, payload: Bytes, n: usize) -> Result<Times> {
        self.rtt_conn(payload, n).await
    }

    /// `workers` tasks each doing `per_worker` requests; total elapsed.
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
            let send = self.send.clone();
            let frame = frame.clone();
            tasks.spawn(async move {
                for _ in 0..per_worker {
                    ask_new_stream(&send, &frame).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(start.elapsed())
    }

    /// One stream whose request body carries `count` messages of `msg_size` (sent as flow
    /// control allows) while the answers are read from the response body.
    pub async fn bulk(&self, msg_size: usize, count: usize) -> Result<Duration> {
        let msg = frame(&vec![0x5a; msg_size]);
        let start = Instant::now();
        let (mut tx, response) = open(&self.send).await?;
        let writer = tokio::spawn(async move {
            for i in 0..count {
                let more = (count - 1 - i) * msg.len();
                send_flow_controlled(&mut tx, msg.clone(), more, i + 1 == count).await?;
            }
            if count == 0 {
                tx.send_data(Bytes::new(), true)?;
            }
            anyhow::Ok(())
        });
        let mut body = response_body(response).await?;
        for _ in 0..count {
            body.expect().await?;
        }
        let elapsed = start.elapsed();
        writer.await??;
        body.finish().await?;
        Ok(elapsed)
    }

    /// `conns` streams at once, each a request whose body carries `msgs` messages of `size`
    /// sent one at a time (waiting for each answer on the response body); per-stream time
    /// until its last answer, from the common start.
    pub async fn fairness(&self, conns: usize, size: usize, msgs: usize) -> Result<Times> {
        let frame = frame(&vec![0x33; size]);
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..conns {
            let send = self.send.clone();
            let frame = frame.clone();
            tasks.spawn(async move {
                let (mut tx, response) = open(&send).await?;
                // The last message ends the request body, and the server's last answer the
                // response body.
                if msgs == 0 {
                    tx.send_data(Bytes::new(), true)?;
                    response_body(response).await?.finish().await?;
                    return Ok(start.elapsed());
                }
                tx.send_data(frame.clone(), msgs == 1)?;
                let mut body = response_body(response).await?;
                for i in 1..=msgs {
                    body.expect().await?;
                    if i < msgs {
                        tx.send_data(frame.clone(), i + 1 == msgs)?;
                    }
                }
                let done = start.elapsed();
                body.finish().await?;
                anyhow::Ok(done)
            });
        }
        let mut times = Vec::with_capacity(conns);
        while let Some(r) = tasks.join_next().await {
            times.push(r??);
        }
        Ok(times)
    }

    /// `conns` streams (request bodies left open), each having exchanged a 1-byte message,
    /// kept open until the returned value is dropped.
    pub async fn idle(&self, conns: usize) -> Result<IdleConns> {
        let one = frame(&[1]);
        let mut open_streams = Vec::with_capacity(conns);
        for _ in 0..conns {
            let (mut tx, response) = open(&self.send).await?;
            tx.send_data(one.clone(), false)?;
            let mut body = response_body(response).await?;
            body.expect().await?;
            open_streams.push((tx, body.into_body()));
        }
        Ok(IdleConns(Box::new(open_streams)))
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
            assert_eq!(client.rtt_conn(big, 2).await.unwrap().len(), 2);
            let huge = Bytes::from(vec![7; 3 << 20]);
            assert_eq!(client.rtt_conn(huge, 2).await.unwrap().len(), 2);
            client.concurrent(payload, 4, 5).await.unwrap();
            client.bulk(100 << 10, 3).await.unwrap();
            client.bulk(1000, 3).await.unwrap();
            client.bulk(3 << 20, 3).await.unwrap();
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
