//! `nodelink tour`: a server and a client in one process, showing what a link does and how
//! fast, with no setup at all; then the other layers (`tour_layers.rs`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use nodelink::{Config, Dialect, Link, LinkStats, Ping, Pong};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::TourArgs;
use crate::out::say;
use crate::ping::{payload, Probe, ECHO_CODE};
use crate::serve::serve_link;
use crate::stats::{grouped, per_second, Summary};

/// Serial lightweight round trips.
const SERIAL: usize = 10_000;
/// Concurrent lightweight workers, and the requests each one makes.
const WORKERS: usize = 64;
const PER_WORKER: usize = 500;
/// The bulk transfer: this many messages of `CHUNK` bytes on one connection.
const CHUNKS: usize = 64;
const CHUNK: usize = 1 << 20;
/// Message code of the bulk transfer's data packets.
const DATA_CODE: u16 = 0x0200;

/// Runs the tour.
pub async fn run(args: TourArgs) -> anyhow::Result<()> {
    if args.json {
        crate::out::use_json();
    }
    let started = Instant::now();
    let dialect: Dialect = args.dialect.into();
    say!(
        "nodelink tour: a server and a client in this process, talking over TCP on loopback \
         (dialect {dialect})."
    );
    say!("");

    // 1. A server, and a client that dials it.
    let config = Config::default().with_dialect(dialect);
    let mut listener = nodelink::bind("127.0.0.1:0", config.clone())
        .await
        .context("cannot start the server")?;
    let addr = listener.local_addr();
    say!("1. Link");
    say!("   server listening on {addr} (an echo server, as `nodelink serve`)");
    let (client, server) =
        tokio::try_join!(nodelink::connect(addr, config.clone()), listener.accept())
            .context("cannot set up the link")?;
    drop(listener);
    let local = client
        .local_addr()
        .map_or_else(|| "?".to_string(), |a| a.to_string());
    say!(
        "   client {local} dialed it; both sides sent version {} in the handshake",
        config.version
    );
    let stop = CancellationToken::new();
    let server_task = tokio::spawn(serve_link(server.clone(), stop.clone()));

    let outcome = demos(&client, &server).await;

    // Last: the counters, and a clean close of both sides.
    client.close().await;
    stop.cancel();
    let _ = server_task.await;
    outcome?;
    say!("");
    say!("7. Counters (Link::stats) after closing");
    print_stats(&client.stats(), &server.stats())?;
    if !args.link_only {
        crate::tour_tls::tls().await?;
        let data = crate::tour_layers::bulk_data();
        crate::tour_layers::kcp(&data).await?;
        crate::tour_layers::transport().await?;
        crate::tour_layers::tunnel(&data).await?;
    }
    say!("");
    say!(
        "Tour finished in {:.2} s. Run `nodelink serve --listen 127.0.0.1:5551` and \
         `nodelink ping 127.0.0.1:5551` to try it between processes.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Everything the tour shows between setting the link up and closing it.
async fn demos(client: &Link, server: &Link) -> anyhow::Result<()> {
    let full = client.dialect() == Dialect::NeoGo;
    if full {
        full_connection(client).await?;
        say!(
            "   flow-control extension: client sees {:?}, server sees {:?} (both nodelink, \
             agreed at link start)",
            client.peer_flow_control(),
            server.peer_flow_control()
        );
    } else {
        say!("");
        say!("2. (no full connections in the neo-py dialect: one request, at most one answer)");
    }
    serial_ask1(client).await?;
    concurrent_ask1(client).await?;
    if full {
        transfer(client, server).await?;
    } else {
        say!("");
        say!("5. (no bulk transfer on one connection in the neo-py dialect)");
        say!("");
        say!("6. Closing: the client closes the link, the server sees it go and closes its side");
    }
    Ok(())
}

/// A few exchanges on one full connection.
async fn full_connection(client: &Link) -> anyhow::Result<()> {
    say!("");
    say!("2. A full connection: several exchanges on one connection id");
    let conn = client.open().context("cannot open a connection")?;
    let id = conn.id();

    let t = Instant::now();
    let _: Pong = conn.ask(&Ping).await.context("Ping on a full connection")?;
    say!(
        "   conn {id}: Ping (code 0x0002) -> Pong (0x8002)                    {:>7.1} µs",
        micros(t.elapsed())
    );

    let hello = Bytes::from_static(b"hello, nodelink");
    let t = Instant::now();
    conn.send_packet(ECHO_CODE, hello.clone()).await?;
    let answer = conn.recv().await?;
    let took = t.elapsed();
    if answer.code != ECHO_CODE | nodelink::ANSWER_BIT || answer.payload != hello {
        bail!(
            "unexpected echo: code {:#06x}, {:?}",
            answer.code,
            answer.payload
        );
    }
    say!(
        "   conn {id}: {ECHO_CODE:#06x} {:?} -> {:#06x} {:?}  {:>7.1} µs",
        String::from_utf8_lossy(&hello),
        answer.code,
        String::from_utf8_lossy(&answer.payload),
        micros(took)
    );

    let big = payload(64 << 10, 1);
    let probe = Probe::Echo(big);
    let t = Instant::now();
    probe.on_conn(&conn).await.context("64 KiB echo")?;
    say!(
        "   conn {id}: {ECHO_CODE:#06x} with 64 KiB of random bytes -> echoed intact   {:>7.1} µs",
        micros(t.elapsed())
    );
    conn.close();
    say!("   conn {id} closed; the server kept no state for it (stateless echo)");
    Ok(())
}

/// Serial lightweight round trips: latency.
async fn serial_ask1(client: &Link) -> anyhow::Result<()> {
    say!("");
    say!(
        "3. {} serial lightweight round trips (Link::ask1, Ping/Pong)",
        grouped(SERIAL as f64)
    );
    let mut samples = Vec::with_capacity(SERIAL);
    let start = Instant::now();
    crate::out::progress("serial round trips", async {
        for _ in 0..SERIAL {
            let t = Instant::now();
            let _: Pong = client.ask1(&Ping).await.context("serial ask1")?;
            samples.push(t.elapsed());
        }
        Ok::<_, anyhow::Error>(())
    })
    .await?;
    let elapsed = start.elapsed();
    if let Some(s) = Summary::of(&mut samples) {
        crate::out::json(&serde_json::json!({
            "step": "link_serial_ask1",
            "requests": SERIAL,
            "requests_per_s": per_second(SERIAL as u64, elapsed),
            "rtt_us": s.to_json(),
        }))?;
        say!(
            "   p50 {:.1} µs, p99 {:.1} µs, mean {:.1} µs  ->  {} req/s",
            s.p50_us,
            s.p99_us,
            s.mean_us,
            grouped(per_second(SERIAL as u64, elapsed))
        );
    }
    Ok(())
}

/// Many workers sharing one link: throughput.
async fn concurrent_ask1(client: &Link) -> anyhow::Result<()> {
    say!("");
    say!(
        "4. {WORKERS} concurrent workers, {} lightweight round trips each, on the same link",
        grouped(PER_WORKER as f64)
    );
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for _ in 0..WORKERS {
        let link = client.clone();
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(PER_WORKER);
            for _ in 0..PER_WORKER {
                let t = Instant::now();
                let _: Pong = link.ask1(&Ping).await?;
                samples.push(t.elapsed());
            }
            Ok::<_, nodelink::Error>(samples)
        });
    }
    let mut samples = Vec::with_capacity(WORKERS * PER_WORKER);
    crate::out::progress("concurrent round trips", async {
        while let Some(joined) = tasks.join_next().await {
            let mut s = joined
                .context("a worker failed")?
                .context("concurrent ask1")?;
            samples.append(&mut s);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await?;
    let elapsed = start.elapsed();
    let total = samples.len() as u64;
    if let Some(s) = Summary::of(&mut samples) {
        crate::out::json(&serde_json::json!({
            "step": "link_concurrent_ask1",
            "workers": WORKERS,
            "requests": total,
            "requests_per_s": per_second(total, elapsed),
            "rtt_us": s.to_json(),
        }))?;
        say!(
            "   {} requests in {:.2} s  ->  {} req/s (p50 {:.1} µs, p99 {:.1} µs with {WORKERS} in flight)",
            grouped(total as f64),
            elapsed.as_secs_f64(),
            grouped(per_second(total, elapsed)),
            s.p50_us,
            s.p99_us
        );
    }
    Ok(())
}

/// A bulk transfer on one connection, under per-connection flow control.
async fn transfer(client: &Link, server: &Link) -> anyhow::Result<()> {
    say!("");
    say!(
        "5. Bulk transfer: {} MiB on one connection in {CHUNKS} messages of 1 MiB",
        (CHUNKS * CHUNK) >> 20
    );
    let chunk = payload(CHUNK, 2);
    let start = Instant::now();
    // The server opens the connection (an even id) and streams; the client accepts it.
    // Credit flows back as the client reads, so at most one window (4 MiB) is in flight.
    let conn = server.open().context("server: cannot open a connection")?;
    let id = conn.id();
    let sent = chunk.clone();
    let sender = tokio::spawn(async move {
        for _ in 0..CHUNKS {
            conn.send_packet(DATA_CODE, sent.clone()).await?;
        }
        Ok::<_, nodelink::Error>(conn)
    });
    let incoming = client.accept().await.context("client: accept")?;
    let mut received = 0usize;
    crate::out::progress("bulk transfer", async {
        for i in 0..CHUNKS {
            let p = incoming.recv().await.context("client: recv")?;
            if p.code != DATA_CODE || p.payload.len() != CHUNK {
                bail!(
                    "message {i}: code {:#06x}, {} bytes",
                    p.code,
                    p.payload.len()
                );
            }
            if i == 0 && p.payload != chunk {
                bail!("message 0 arrived corrupted");
            }
            received += p.payload.len();
        }
        Ok(())
    })
    .await?;
    let elapsed = start.elapsed();
    let conn = sender.await.context("the sender failed")??;
    drop(conn);
    drop(incoming);
    crate::out::json(&serde_json::json!({
        "step": "link_bulk_transfer",
        "bytes": received,
        "seconds": elapsed.as_secs_f64(),
        "mib_per_s": (received >> 20) as f64 / elapsed.as_secs_f64().max(1e-9),
    }))?;
    say!(
        "   server conn {id} -> client: {} MiB in {:.3} s  ->  {} MiB/s",
        received >> 20,
        elapsed.as_secs_f64(),
        grouped(per_second((received >> 20) as u64, elapsed))
    );
    say!("");
    say!("6. Closing: the client closes the link, the server sees it go and closes its side");
    Ok(())
}

/// Prints both sides' counters side by side.
fn print_stats(client: &LinkStats, server: &LinkStats) -> anyhow::Result<()> {
    let (c, s) = (client, server);
    crate::out::json(&serde_json::json!({
        "step": "link_counters",
        "client": { "packets_in": c.packets_in, "packets_out": c.packets_out,
                    "bytes_in": c.bytes_in, "bytes_out": c.bytes_out,
                    "protocol_errors": c.protocol_errors },
        "server": { "packets_in": s.packets_in, "packets_out": s.packets_out,
                    "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
                    "protocol_errors": s.protocol_errors },
    }))?;
    let rows = [
        ("packets in", c.packets_in, s.packets_in),
        ("packets out", c.packets_out, s.packets_out),
        ("bytes in", c.bytes_in, s.bytes_in),
        ("bytes out", c.bytes_out, s.bytes_out),
        ("conns opened", c.conns_opened, s.conns_opened),
        ("conns accepted", c.conns_accepted, s.conns_accepted),
        ("conns refused", c.conns_refused, s.conns_refused),
        ("conns closed", c.conns_closed, s.conns_closed),
        ("recv overflows", c.recv_overflows, s.recv_overflows),
        ("replies dropped", c.replies_dropped, s.replies_dropped),
        ("control dropped", c.control_dropped, s.control_dropped),
        ("packets dropped", c.packets_dropped, s.packets_dropped),
        ("accept waits", c.accept_waits, s.accept_waits),
        ("protocol errors", c.protocol_errors, s.protocol_errors),
    ];
    say!("   {:<16} {:>15} {:>15}", "", "client", "server");
    for (name, on_client, on_server) in rows {
        say!(
            "   {:<16} {:>15} {:>15}",
            name,
            grouped(on_client as f64),
            grouped(on_server as f64)
        );
    }
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
