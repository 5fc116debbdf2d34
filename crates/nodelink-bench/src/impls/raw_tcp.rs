//! The baseline: plain tokio TCP with a `u32 BE length | bytes` framing and nothing else.
//!
//! Raw TCP has no streams, so the stream-oriented scenarios map onto it as the physical
//! limit they are compared with: a round trip on one socket (`rtt_*`), a pipelined
//! request/response loop with `workers` requests in flight on one socket (`concurrent`),
//! and `conns` messages pipelined on one socket (`fairness`). `idle` opens real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use super::{answer_len, IdleConns, Server, ServerMode, Times};

/// Binds `bind` and serves every connection with the echo rule.
pub async fn start_server(bind: SocketAddr, mode: ServerMode) -> Result<Server> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            if mode == ServerMode::Hold {
                let held = held.clone();
                tokio::spawn(async move {
                    let _ = answer_one(&mut stream).await;
                    held.lock().expect("not poisoned").push(stream);
                });
            } else {
                tokio::spawn(serve_stream(stream));
            }
        }
    });
    Ok(Server { addr, task })
}

/// Serves one byte stream: read framed messages, answer each (echo or 8-byte ack).
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let (r, w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(64 << 10, r);
    let mut w = BufWriter::with_capacity(64 << 10, w);
    let mut buf = BytesMut::new();
    loop {
        let Ok(len) = r.read_u32().await else { return };
        buf.resize(len as usize, 0);
        if r.read_exact(&mut buf).await.is_err() {
            return;
        }
        let res = if answer_len(buf.len()) == buf.len() {
            write_msg(&mut w, &buf).await
        } else {
            write_msg(&mut w, &(len as u64).to_be_bytes()).await
        };
        // Flush only when no further request is already buffered: pipelined requests are
        // answered in one write, a lone request right away.
        if res.is_err() || (r.buffer().is_empty() && w.flush().await.is_err()) {
            return;
        }
    }
}

/// Reads one framed message and answers it (the `Hold` mode's only exchange).
pub async fn answer_one<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    read_msg(stream, &mut buf).await?;
    if answer_len(buf.len()) == buf.len() {
        write_msg(stream, &buf).await?;
    } else {
        write_msg(stream, &(buf.len() as u64).to_be_bytes()).await?;
    }
    stream.flush().await
}

/// Writes one framed message (not flushed).
pub async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> std::io::Result<()> {
    w.write_u32(msg.len() as u32).await?;
    w.write_all(msg).await
}

/// Reads one framed message into `buf`.
pub async fn read_msg<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> std::io::Result<()> {
    let len = r.read_u32().await? as usize;
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(())
}

/// Most sockets the idle scenario opens.
pub const MAX_IDLE_SOCKETS: usize = 2_000;

/// A connected client.
pub struct Client {
    addr: SocketAddr,
    stream: Mutex<Option<TcpStream>>,
}

/// Connects one socket.
pub async fn connect(addr: SocketAddr) -> Result<Client> {
    let stream = dial(addr).await?;
    Ok(Client {
        addr,
        stream: Mutex::new(Some(stream)),
    })
}

async fn dial(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr).await.context("connect")?;
    s.set_nodelay(true)?;
    Ok(s)
}

impl Client {
    /// Serial round trips on the one socket.
    pub async fn rtt_conn(&self, payload: Bytes, n: usize) -> Result<Times> {
        let mut guard = self.stream.lock().await;
        let stream = guard.as_mut().context("socket gone")?;
        let mut frame = BytesMut::with_capacity(4 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        let mut answer = BytesMut::new();
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            stream.write_all(&frame).await?;
            read_msg(stream, &mut answer).await?;
            times.push(t.elapsed());
        }
        if answer[..] != payload[..] {
            bail!("echo differs");
        }
        Ok(times)
    }

    /// Raw TCP has no lightweight streams: the same as [`Self::rtt_conn`].
    pub async fn rtt_ask1(&self, payload: Bytes, n: usize) -> Result<Times> {
        self.rtt_conn(payload, n).await
    }

    /// A pipelined loop with `workers` requests in flight on one socket.
    pub async fn concurrent(
        &self,
        payload: Bytes,
        workers: usize,
        per_worker: usize,
    ) -> Result<Duration> {
        let total = workers * per_worker;
        let stream = dial(self.addr).await?;
        let (r, w) = stream.into_split();
        let window = Arc::new(tokio::sync::Semaphore::new(workers));
        let start = Instant::now();
        let writer = {
            let window = window.clone();
            tokio::spawn(async move {
                let mut w = BufWriter::new(w);
                for _ in 0..total {
                    // Keep `workers` in flight; write whatever is allowed in one go.
                    let permit = match window.try_acquire() {
                        Ok(p) => p,
                        Err(_) => {
                            w.flush().await?;
                            window.acquire().await.expect("semaphore open")
                        }
                    };
                    permit.forget();
                    write_msg(&mut w, &payload).await?;
                }
                w.flush().await?;
                anyhow::Ok(w)
            })
        };
        let mut r = BufReader::new(r);
        let mut answer = BytesMut::new();
        for _ in 0..total {
            read_msg(&mut r, &mut answer).await?;
            window.add_permits(1);
        }
        let elapsed = start.elapsed();
        writer.await??;
        Ok(elapsed)
    }

    /// `count` messages of `msg_size` on one socket, acknowledged by the server.
    pub async fn bulk(&self, msg_size: usize, count: usize) -> Result<Duration> {
        let stream = dial(self.addr).await?;
        let (mut r, mut w) = stream.into_split();
        let msg = Bytes::from(vec![0x5a; msg_size]);
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            for _ in 0..count {
                w.write_u32(msg.len() as u32).await?;
                w.write_all(&msg).await?;
            }
            anyhow::Ok(w)
        });
        let mut ack = BytesMut::new();
        for _ in 0..count {
            read_msg(&mut r, &mut ack).await?;
        }
        let elapsed = start.elapsed();
        writer.await??;
        Ok(elapsed)
    }

    /// `conns * msgs` messages of `size` pipelined on one socket, attributed round-robin to
    /// `conns` notional connections; per-connection completion times.
    pub async fn fairness(&self, conns: usize, size: usize, msgs: usize) -> Result<Times> {
        let stream = dial(self.addr).await?;
        let (r, w) = stream.into_split();
        let msg = Bytes::from(vec![0x33; size]);
        let start = Instant::now();
        let total = conns * msgs;
        let writer = tokio::spawn(async move {
            let mut w = BufWriter::new(w);
            for _ in 0..total {
                write_msg(&mut w, &msg).await?;
            }
            w.flush().await?;
            anyhow::Ok(w)
        });
        let mut r = BufReader::new(r);
        let mut answer = BytesMut::new();
        // The last `conns` answers complete the notional connections.
        let mut times = Vec::with_capacity(conns);
        for i in 0..total {
            read_msg(&mut r, &mut answer).await?;
            if i >= total - conns {
                times.push(start.elapsed());
            }
        }
        writer.await??;
        Ok(times)
    }

    /// Real sockets, each having exchanged one message: at most [`MAX_IDLE_SOCKETS`] (both
    /// ends live in one process and each socket is a file descriptor). The figure is per
    /// socket either way; a socket's real cost is kernel memory, which no heap counter sees.
    pub async fn idle(&self, conns: usize) -> Result<IdleConns> {
        let conns = conns.min(MAX_IDLE_SOCKETS);
        let mut open = Vec::with_capacity(conns);
        let mut answer = BytesMut::new();
        for _ in 0..conns {
            let mut s = dial(self.addr).await?;
            write_msg(&mut s, &[1]).await?;
            read_msg(&mut s, &mut answer).await?;
            open.push(s);
        }
        Ok(IdleConns(Box::new(open)))
    }
}
