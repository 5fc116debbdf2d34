//! `kcp_oneway`: one-way bulk, KCP against the machine's limit (plain UDP datagrams of the
//! same size, in the same run).
//!
//! Both receivers run in their own process (the hidden `kcp --serve sink_udp|sink_kcp`);
//! the senders run in this process.
//!
//! * `raw_udp` (the baseline): one thread with a blocking socket sends datagrams of [`DATAGRAM`] bytes as fast as
//!   the socket takes them, then an end marker until the receiver answers with what it got
//!   and the time from its first to its last data datagram. Throughput is what arrived
//!   over that time: the most a single sender and receiver move through the kernel here,
//!   losses included (a receiver that cannot keep up drops datagrams in its socket buffer).
//! * `nodelink_kcp`: a KCP session with the `none` cipher and no FEC sends the payload,
//!   prefixed with its length; the receiver reads all of it and answers one byte.
//!   Throughput is payload over the time until that byte arrived.
//!
//! Both sockets get 4 MiB buffers each way (kcptun's default), so neither is starved by
//! the system's default.

use std::io;
use std::net::UdpSocket as StdUdpSocket;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nodelink_kcp::{KcpListener, KcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kcp::{proc_cpu, Server, Setting};
use crate::scenarios::Figure;

/// Payload bytes of one raw datagram: a KCP datagram's size at MTU 1350.
pub const DATAGRAM: usize = 1350;
/// The end marker: shorter than any data datagram.
const END: &[u8] = b"end";
/// Socket buffers on both sides (kcptun's `-sockbuf` default).
const SOCKBUF: usize = 4 << 20;

/// Measures one implementation sending `bytes` one way; `mb_per_s` and `cpu_s_per_mb`.
pub async fn measure(id: &str, imp: &'static str, bytes: usize) -> Result<Vec<Figure>> {
    let setting = Setting::None;
    let server = Server::rust(
        if imp == "raw_udp" {
            "sink_udp"
        } else {
            "sink_kcp"
        },
        setting,
    )
    .await?;
    let cpu0 = proc_cpu("self")?;
    let (mb, secs) = if imp == "raw_udp" {
        udp_send(&server.addr, bytes).await?
    } else {
        let stream = KcpStream::connect(server.addr.as_str(), setting.config(false)).await?;
        (bytes as f64 / 1e6, kcp_send(stream, bytes).await?)
    };
    let cpu = proc_cpu("self")? - cpu0 + server.cpu()?;
    server.stop().await;
    let fig = |metric, value| Figure {
        scenario: id.to_string(),
        imp,
        metric,
        value,
    };
    Ok(vec![
        fig("mb_per_s", mb / secs),
        fig("cpu_s_per_mb", cpu / mb),
    ])
}

/// The hidden receivers: `sink_udp` or `sink_kcp`, until killed.
pub async fn serve(imp: &str, setting: Setting) -> Result<()> {
    if imp == "sink_udp" {
        let sock = udp_socket("127.0.0.1:0")?;
        println!("listening on {}", sock.local_addr()?);
        return tokio::task::spawn_blocking(move || udp_sink(sock)).await?;
    }
    let mut listener = KcpListener::bind("127.0.0.1:0", setting.config(true)).await?;
    println!("listening on {}", listener.local_addr());
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(kcp_sink(stream));
    }
}

/// A blocking UDP socket: the raw path uses one plain thread per side, the fastest a
/// single sender and receiver go (no runtime in between).
fn udp_socket(addr: &str) -> io::Result<StdUdpSocket> {
    let sock = StdUdpSocket::bind(addr)?;
    let s = socket2::SockRef::from(&sock);
    s.set_send_buffer_size(SOCKBUF)?;
    s.set_recv_buffer_size(SOCKBUF)?;
    Ok(sock)
}

/// Sends `bytes` in datagrams, then the end marker until the receiver answers; returns
/// (MB received, seconds the receiver saw them arrive over).
async fn udp_send(addr: &str, bytes: usize) -> Result<(f64, f64)> {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || udp_send_blocking(&addr, bytes)).await?
}

fn udp_send_blocking(addr: &str, bytes: usize) -> Result<(f64, f64)> {
    let sock = udp_socket("127.0.0.1:0")?;
    sock.connect(addr)?;
    let datagram = vec![0x5a_u8; DATAGRAM];
    for _ in 0..bytes.div_ceil(DATAGRAM) {
        match sock.send(&datagram) {
            Ok(_) => {}
            // A full buffer loses the datagram, as on any path: the receiver counts.
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {}
            Err(e) => return Err(e.into()),
        }
    }
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut answer = [0u8; 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ensure!(Instant::now() < deadline, "the UDP sink never answered");
        sock.send(END)?;
        match sock.recv(&mut answer) {
            Ok(16) => break,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.into()),
        }
    }
    let received = u64::from_le_bytes(answer[..8].try_into()?);
    let nanos = u64::from_le_bytes(answer[8..].try_into()?);
    ensure!(received > 0 && nanos > 0, "no datagram arrived");
    Ok((received as f64 / 1e6, nanos as f64 / 1e9))
}

/// Counts data datagrams per sender run; answers an end marker with (bytes, nanoseconds
/// from the first to the last data datagram) and starts counting afresh.
fn udp_sink(sock: StdUdpSocket) -> Result<()> {
    let mut buf = vec![0u8; 65536];
    let mut received = 0u64;
    let mut span: Option<(Instant, Instant)> = None;
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        if n == END.len() {
            let nanos = span.map_or(0, |(first, last)| (last - first).as_nanos() as u64);
            let mut answer = [0u8; 16];
            answer[..8].copy_from_slice(&received.to_le_bytes());
            answer[8..].copy_from_slice(&nanos.to_le_bytes());
            sock.send_to(&answer, from)?;
            if received > 0 {
                received = 0;
                span = None;
            }
            continue;
        }
        received += n as u64;
        let now = Instant::now();
        span = Some(span.map_or((now, now), |(first, _)| (first, now)));
    }
}

/// Sends the length and `bytes` of payload, waits for the receiver's byte; returns seconds.
async fn kcp_send(mut stream: KcpStream, bytes: usize) -> Result<f64> {
    let chunk = vec![0xa5_u8; 65536];
    let t = Instant::now();
    stream.write_u64_le(bytes as u64).await?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n]).await?;
        left -= n;
    }
    let done = tokio::time::timeout(Duration::from_secs(300), stream.read_u8())
        .await
        .context("the KCP sink never answered")??;
    ensure!(done == 1, "bad answer from the KCP sink");
    Ok(t.elapsed().as_secs_f64())
}

/// Reads a length and that many bytes, answers one byte.
async fn kcp_sink(mut stream: KcpStream) -> io::Result<()> {
    let mut left = stream.read_u64_le().await?;
    let mut buf = vec![0u8; 65536];
    while left > 0 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        left = left.saturating_sub(n as u64);
    }
    stream.write_u8(1).await?;
    // Dropping the stream keeps sending the answer until it is acknowledged (the linger).
    Ok(())
}
