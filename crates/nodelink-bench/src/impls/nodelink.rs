//! nodelink over TCP (and over an in-memory duplex pipe, to show the cost without sockets).
//!
//! Messages are single packets: requests with [`REQUEST_CODE`], answers with
//! [`ANSWER_CODE`]. Lightweight scenarios use `ask1` / `recv1`; the others use full
//! connections, served by one task per accepted connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use nodelink::{Config, Conn, Link, Role};
use tokio::task::JoinHandle;

use super::{answer_len, IdleConns, Server, ServerMode, Times, ANSWER_CODE, REQUEST_CODE};

/// Listens on `bind` and serves every link in `mode`.
pub async fn start_server(bind: SocketAddr, mode: ServerMode) -> Result<Server> {
    let mut listener = nodelink::bind(bind, Config::default()).await?;
    let addr = listener.local_addr();
    let task = tokio::spawn(async move {
        let mut links = tokio::task::JoinSet::new();
        while let Ok(link) = listener.accept().await {
            links.spawn(serve_link(link, mode));
        }
    });
    Ok(Server { addr, task })
}

/// Serves one link until it ends.
pub async fn serve_link(link: Link, mode: ServerMode) {
    match mode {
        ServerMode::Lightweight => {
            while let Ok(req) = link.recv1().await {
                if req.packet().is_answer() {
                    continue;
                }
                let answer = answer_for(req.payload());
                let _ = req.reply_packet(ANSWER_CODE, answer).await;
            }
        }
        ServerMode::PerConnection => {
            while let Ok(conn) = link.accept().await {
                tokio::spawn(serve_conn(conn));
            }
        }
        ServerMode::Hold => {
            // Accepted connections already hold their first message: answer it and keep
            // the connection, with no task left behind.
            let mut held = Vec::new();
            while let Ok(conn) = link.accept().await {
                if let Ok(p) = conn.recv().await {
                    let _ = conn.send_packet(ANSWER_CODE, answer_for(&p.payload)).await;
                }
                held.push(conn);
            }
        }
    }
}

async fn serve_conn(conn: Conn) {
    while let Ok(p) = conn.recv().await {
        if p.is_answer() {
            continue;
        }
        if conn
            .send_packet(ANSWER_CODE, answer_for(&p.payload))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn answer_for(payload: &Bytes) -> Bytes {
    if answer_len(payload.len()) == payload.len() {
        payload.clone() // zero-copy echo
    } else {
        Bytes::copy_from_slice(&(payload.len() as u64).to_be_bytes())
    }
}

/// A client link.
pub struct Client {
    link: Link,
    /// Keeps the in-memory server alive for the duplex variant.
    _server: Option<JoinHandle<()>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(s) = &self._server {
            s.abort();
        }
    }
}

/// Dials a server over TCP.
pub async fn connect(addr: SocketAddr) -> Result<Client> {
    Ok(Client {
        link: nodelink::connect(addr, Config::default()).await?,
        _server: None,
    })
}

/// A client and a server joined by an in-memory pipe.
pub async fn duplex(mode: ServerMode) -> Result<Client> {
    let (a, b) = tokio::io::duplex(256 << 10);
    let (client, server) = tokio::try_join!(
        Link::handshake(a, Role::Client, Config::default()),
        Link::handshake(b, Role::Server, Config::default()),
    )?;
    Ok(Client {
        link: client,
        _server: Some(tokio::spawn(serve_link(server, mode))),
    })
}

impl Client {
    /// Serial round trips on one full connection.
    pub async fn rtt_conn(&self, payload: Bytes, n: usize) -> Result<Times> {
        let conn = self.link.open()?;
        let mut times = Vec::with_capacity(n);
        let mut last = None;
        for _ in 0..n {
            let t = Instant::now();
            conn.send_packet(REQUEST_CODE, payload.clone()).await?;
            last = Some(conn.recv().await?);
            times.push(t.elapsed());
        }
        if let Some(p) = last {
            if p.payload != payload {
                bail!("echo differs");
            }
        }
        Ok(times)
    }

    /// Serial lightweight round trips (`ask1`).
    pub async fn rtt_ask1(&self, payload: Bytes, n: usize) -> Result<Times> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let answer = self.link.ask1_packet(REQUEST_CODE, payload.clone()).await?;
            times.push(t.elapsed());
            if answer.payload.len() != payload.len() {
                bail!("echo differs");
            }
        }
        Ok(times)
    }

    /// `workers` tasks doing `ask1` in a loop.
    pub async fn concurrent(
        &self,
        payload: Bytes,
        workers: usize,
        per_worker: usize,
    ) -> Result<Duration> {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let link = self.link.clone();
            let payload = payload.clone();
            tasks.spawn(async move {
                for _ in 0..per_worker {
                    link.ask1_packet(REQUEST_CODE, payload.clone()).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(start.elapsed())
    }

    /// One connection streaming `count` messages of `msg_size`.
    pub async fn bulk(&self, msg_size: usize, count: usize) -> Result<Duration> {
        let conn = std::sync::Arc::new(self.link.open()?);
        let msg = Bytes::from(vec![0x5a; msg_size]);
        let start = Instant::now();
        let sender = {
            let conn = conn.clone();
            tokio::spawn(async move {
                for _ in 0..count {
                    conn.send_packet(REQUEST_CODE, msg.clone()).await?;
                }
                anyhow::Ok(())
            })
        };
        for _ in 0..count {
            conn.recv().await?;
        }
        let elapsed = start.elapsed();
        sender.await??;
        Ok(elapsed)
    }

    /// `conns` connections at once, each sending `msgs` messages one after the other.
    pub async fn fairness(&self, conns: usize, size: usize, msgs: usize) -> Result<Times> {
        let msg = Bytes::from(vec![0x33; size]);
        let opened: Vec<Conn> = (0..conns)
            .map(|_| self.link.open())
            .collect::<Result<_, _>>()?;
        // Every task waits at the gate, so all connections start together.
        let (gate, open_gate) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for conn in opened {
            let msg = msg.clone();
            let mut gate = open_gate.clone();
            tasks.spawn(async move {
                let _ = gate.wait_for(|open| *open).await;
                for _ in 0..msgs {
                    conn.send_packet(REQUEST_CODE, msg.clone()).await?;
                    conn.recv().await?;
                }
                anyhow::Ok(Instant::now())
            });
        }
        tokio::task::yield_now().await;
        let start = Instant::now();
        gate.send_replace(true);
        let mut times = Vec::with_capacity(conns);
        while let Some(r) = tasks.join_next().await {
            times.push(r?? - start);
        }
        Ok(times)
    }

    /// `conns` connections kept open after one exchange each.
    pub async fn idle(&self, conns: usize) -> Result<IdleConns> {
        let mut open = Vec::with_capacity(conns);
        let one = Bytes::from_static(&[1]);
        for _ in 0..conns {
            let conn = self.link.open()?;
            conn.send_packet(REQUEST_CODE, one.clone()).await?;
            conn.recv().await?;
            open.push(conn);
        }
        Ok(IdleConns(Box::new(open)))
    }
}
