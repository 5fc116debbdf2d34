//! `nodelink nt echo` and `nodelink nt ping`: the endpoint transport compatible with
//! Haskell's network-transport-tcp (protocol version 0), from the command line.
//!
//! * `nt echo --listen HOST:PORT` binds a transport, creates endpoint 0 and prints
//!   `ADDRESS host:port:0` as its first stdout line. It then behaves like the conformance
//!   suite's echo server: every `ConnectionOpened` makes it connect back to the sender's
//!   address, every `Received` on that incoming connection is sent back on the reverse
//!   connection, and `ConnectionClosed` closes the reverse connection. It stops on Ctrl-C
//!   or SIGTERM, closing the transport (peers see `CloseEndPoint`).
//! * `nt ping ADDRESS` binds its own transport (by default on the local address that routes
//!   to the target, port 0), connects, sends `--count` pings of `--size` bytes over that one
//!   connection and waits for each echo on the reverse connection the echo server opens,
//!   then prints round-trip statistics.
//!
//! The echo server's dispatch is in `nt_echo.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use nodelink_transport::{
    Config, Connection, ConnectionId, EndPoint, EndPointAddress, Event, EventErrorKind, Transport,
};

use crate::out::say;
use crate::shutdown::{Signals, SHUTDOWN_GRACE};
use crate::stats::Summary;

/// `--max-message` by default: the transport's own default, 64 MiB.
const DEFAULT_MAX_MESSAGE: u32 = 64 << 20;

/// The `nt` subcommands.
#[derive(Debug, Subcommand)]
pub enum NtCommand {
    /// Run the conformance suite's echo server: connect back to every sender and echo each
    /// message on that reverse connection. Prints `ADDRESS host:port:0` first. Stops on
    /// Ctrl-C or SIGTERM.
    Echo(EchoArgs),
    /// Send pings over one connection to an echo endpoint, wait for each echo on the
    /// reverse connection, and print round-trip statistics.
    Ping(NtPingArgs),
}

/// Arguments of `nodelink nt echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Host and port to listen on, such as 127.0.0.1:10080 or [::1]:0 (port 0 picks a free
    /// port). The host is also the one advertised in endpoint addresses.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (printed as the second line).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// What the process may spend on what peers send, as RSS (default 1G). Two fifths of
    /// it are for the bytes held, in thirds: the messages still arriving on all sockets
    /// together (past it, sockets holding more than 256 KiB of one stop being read, and
    /// are dropped after 10 s); the echoes not yet taken by their peers (past it, the
    /// echo of a connection holding more than its share ends); and, when this flag is
    /// given, the event queue's byte bound (default 64M). The rest is what holding the
    /// bytes costs. Suffixes k, M, G.
    #[arg(long, value_name = "BYTES", value_parser = crate::cli::parse_bytes)]
    pub max_memory: Option<usize>,
    /// Seconds that outbound connects, inbound handshakes and probes may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Largest message accepted from a peer, in bytes. A peer that sends a larger one is
    /// disconnected (logged as a warning naming it).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_MESSAGE)]
    pub max_message: u32,
}

/// Arguments of `nodelink nt ping`.
#[derive(Debug, Args)]
pub struct NtPingArgs {
    /// Endpoint address of the echo server, `host:port:id` (as `nt echo` prints it).
    #[arg(value_name = "ADDRESS")]
    pub address: String,
    /// Number of pings.
    #[arg(long, short = 'c', value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Payload bytes per ping (the first 8 carry the ping's sequence number).
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 8)]
    pub size: usize,
    /// Host and port of this side's transport (default: the local address that routes to
    /// the target, port 0). The echo server connects back to it.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Seconds that the connect (and each echo) may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Largest message accepted from a peer, in bytes; the echoes too, so `--size` may not
    /// exceed it.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_MESSAGE)]
    pub max_message: u32,
    /// Print the result as one JSON object on stdout instead of text lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `nt` subcommand.
pub async fn run(command: NtCommand) -> anyhow::Result<()> {
    match command {
        NtCommand::Echo(args) => echo(args).await,
        NtCommand::Ping(args) => ping(args).await,
    }
}

/// Splits `HOST:PORT`, accepting `[v6]:port` and a bare `v6:port` (last colon).
fn split_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| anyhow!("{text:?}: expected [HOST]:PORT"))?;
        (host, port)
    } else {
        text.rsplit_once(':')
            .ok_or_else(|| anyhow!("{text:?}: expected HOST:PORT"))?
    };
    if host.is_empty() {
        bail!("{text:?}: the host is empty");
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| anyhow!("{text:?}: {port:?} is not a port number"))?;
    Ok((host.to_string(), port))
}

fn seconds(what: &str, secs: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| anyhow!("{what} {secs}: not a valid duration"))
}

fn config(connect_timeout: Duration, max_message: u32) -> Config {
    Config::default()
        .with_connect_timeout(Some(connect_timeout))
        .with_max_receive_length(max_message)
}

/// Closes the transport, giving up after [`SHUTDOWN_GRACE`].
async fn close_transport(transport: &Transport) {
    if tokio::time::timeout(SHUTDOWN_GRACE, transport.close())
        .await
        .is_err()
    {
        tracing::warn!("the transport did not close within {SHUTDOWN_GRACE:?}");
    }
}

// ---------------------------------------------------------------------------------------
// echo

/// Runs the echo server until a signal arrives or the endpoint fails.
async fn echo(args: EchoArgs) -> anyhow::Result<()> {
    let (host, port) = split_host_port(&args.listen).context("--listen")?;
    let timeout = seconds("--connect-timeout", args.connect_timeout)?;
    // Handlers go in before the address is printed: whoever reads it may signal at once.
    let mut signals = Signals::install()?;
    // The transport's error names the address and the cause.
    // A third each: messages still arriving, the event queue, echoes not yet taken.
    let held = crate::cli::held_budget(args.max_memory);
    let mut cfg = config(timeout, args.max_message).with_max_memory(held / 3);
    if args.max_memory.is_some() {
        cfg = cfg.with_event_queue_bytes(held / 3);
    }
    let echo_budget = held / 3;
    let transport = Transport::bind(&host, port, cfg).await?;
    let endpoint = transport
        .open_endpoint()
        .await
        .context("cannot create the endpoint")?;
    say!("ADDRESS {}", endpoint.address());
    tracing::info!(address = %endpoint.address(), "echo endpoint up");
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let _metrics_guard = metrics_stop.clone().drop_guard();
    if let Some(at) = &args.metrics {
        let (t, ep) = (transport.clone(), endpoint.clone());
        let collect: crate::metrics::Collect = std::sync::Arc::new(move || {
            use crate::metrics::Metric;
            let (s, ts) = (ep.stats(), t.stats());
            vec![
                Metric::gauge(
                    "nodelink_nt_sockets",
                    "Sockets open to remote endpoints.",
                    s.sockets as f64,
                ),
                Metric::gauge(
                    "nodelink_nt_connections_in",
                    "Connections remote endpoints have open to us.",
                    s.connections_in as f64,
                ),
                Metric::gauge(
                    "nodelink_nt_connections_out",
                    "Our connections open to remote endpoints.",
                    s.connections_out as f64,
                ),
                Metric::counter(
                    "nodelink_nt_messages_in_total",
                    "Messages received.",
                    s.messages_in,
                ),
                Metric::counter(
                    "nodelink_nt_bytes_in_total",
                    "Payload bytes received.",
                    s.bytes_in,
                ),
                Metric::counter(
                    "nodelink_nt_sockets_lost_total",
                    "Sockets lost without a goodbye.",
                    s.sockets_lost,
                ),
                Metric::counter(
                    "nodelink_nt_protocol_violations_total",
                    "Frames that broke the protocol.",
                    s.protocol_violations,
                ),
                Metric::counter(
                    "nodelink_nt_handshakes_failed_total",
                    "Incoming handshakes that failed.",
                    ts.handshakes_failed,
                ),
                Metric::gauge(
                    "nodelink_nt_memory_held_bytes",
                    "Bytes of messages still arriving that the sockets hold (against \
                     two fifteenths of --max-memory).",
                    ts.memory_held as f64,
                ),
            ]
        });
        crate::metrics::start(at, collect, metrics_stop.clone()).await?;
    }

    let outcome = tokio::select! {
        signal = signals.recv() => {
            tracing::info!("{signal} received, shutting down");
            Ok(())
        }
        r = crate::nt_echo::echo_loop(&endpoint, echo_budget) => r,
    };
    let s = endpoint.stats();
    tracing::info!(
        messages_in = s.messages_in,
        bytes_in = s.bytes_in,
        sockets_lost = s.sockets_lost,
        protocol_violations = s.protocol_violations,
        handshakes_failed = transport.stats().handshakes_failed,
        "echo endpoint stopping"
    );
    close_transport(&transport).await;
    outcome
}

// ---------------------------------------------------------------------------------------
// ping

/// The local IP address the OS would use to reach `host:port`: an advertised address the
/// target can connect back to (loopback for loopback targets, v6 for v6 targets).
fn route_to(host: &str, port: u16) -> anyhow::Result<IpAddr> {
    let target = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))?;
    let unspecified: IpAddr = if target.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    // Connecting a UDP socket sends nothing; it only asks the routing table.
    let probe = UdpSocket::bind((unspecified, 0)).context("cannot pick a local address")?;
    probe
        .connect(target)
        .with_context(|| format!("no route to {target}"))?;
    Ok(probe
        .local_addr()
        .context("cannot pick a local address")?
        .ip())
}

/// The payload of ping number `seq`: its number (big-endian) then a fixed filler, cut to
/// `size` bytes.
fn ping_payload(seq: u64, size: usize) -> Bytes {
    let mut out = Vec::with_capacity(size.max(8));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend((8..size).map(|i| (i % 251) as u8));
    out.truncate(size);
    Bytes::from(out)
}

/// Whether a connection opened by `from` is the echo server's reverse connection to us.
///
/// By address: the target itself, or the same port and endpoint id under another host name
/// (the server may advertise `127.0.0.1` where we dialled `localhost`), but never our own
/// endpoint (a ping that reached itself must not take its own connection for an echo).
fn is_echo_server(from: &EndPointAddress, target: &EndPointAddress, us: &EndPointAddress) -> bool {
    if from == us {
        return false;
    }
    if from == target {
        return true;
    }
    match (from.parse(), target.parse()) {
        (Some((_, port, id)), Some((_, tport, tid))) => (port, id) == (tport, tid),
        _ => false,
    }
}

/// Waits for the next echo: data on the reverse connection, which is the connection the
/// echo server opens to us (noted in `reverse` when it appears).
async fn next_echo(
    endpoint: &EndPoint,
    target: &EndPointAddress,
    reverse: &mut Option<ConnectionId>,
) -> anyhow::Result<Bytes> {
    loop {
        match endpoint.receive().await.context("the endpoint failed")? {
            Event::ConnectionOpened { id, address, .. } => {
                if reverse.is_none() && is_echo_server(&address, target, endpoint.address()) {
                    tracing::debug!(%id, from = %address, "reverse connection opened");
                    *reverse = Some(id);
                } else {
                    tracing::debug!(%id, from = %address, "connection from another endpoint");
                }
            }
            Event::Received { id, data } if Some(id) == *reverse => {
                let mut all = Vec::with_capacity(data.iter().map(Bytes::len).sum());
                for chunk in &data {
                    all.extend_from_slice(chunk);
                }
                return Ok(Bytes::from(all));
            }
            Event::Received { id, .. } => tracing::debug!(%id, "data on another connection"),
            Event::ConnectionClosed { id } if Some(id) == *reverse => {
                // An echo server closing its whole endpoint closes the reverse connection,
                // then (in the same step, so the event is already queued) loses ours.
                let next = tokio::time::timeout(Duration::from_millis(50), endpoint.receive());
                if let Ok(Ok(Event::Error {
                    kind: EventErrorKind::ConnectionLost(_),
                    message,
                })) = next.await
                {
                    bail!("{message}");
                }
                bail!("the echo server {target} closed the reverse connection")
            }
            Event::ConnectionClosed { .. } => {}
            Event::Error { message, .. } => bail!("{message}"),
            Event::EndPointClosed => bail!("the endpoint closed"),
        }
    }
}

/// Connects and runs the pings; returns the round-trip times.
pub(crate) async fn ping_over(
    endpoint: &EndPoint,
    target: &EndPointAddress,
    count: u64,
    size: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let conn: Connection = tokio::time::timeout(timeout, endpoint.connect(target))
        .await
        .map_err(|_| anyhow!("no connection within {timeout:?}"))?
        .with_context(|| format!("cannot connect to {target}"))?;
    let mut reverse = None;
    let mut samples = Vec::with_capacity(count as usize);
    for seq in 0..count {
        let payload = ping_payload(seq, size);
        let start = Instant::now();
        conn.send(std::slice::from_ref(&payload))
            .await
            .with_context(|| format!("ping {}: cannot send", seq + 1))?;
        let echo = tokio::time::timeout(timeout, next_echo(endpoint, target, &mut reverse))
            .await
            .map_err(|_| {
                anyhow!(
                    "ping {}: no echo from {target} within {timeout:?} (is it an echo server?)",
                    seq + 1
                )
            })?
            .with_context(|| format!("ping {}", seq + 1))?;
        if echo != payload {
            bail!(
                "ping {}: the echo differs (sent {} bytes, got {} bytes)",
                seq + 1,
                payload.len(),
                echo.len()
            );
        }
        samples.push(start.elapsed());
    }
    conn.close().await;
    if let Some(reverse) = reverse {
        await_reverse_close(endpoint, reverse, timeout).await;
    }
    Ok(samples)
}

/// Waits (bounded) until the echo server has closed its reverse connection, as the
/// conformance suite's ping client does. Closing the endpoint earlier would reach a
/// network-transport-tcp echo server while it still has that connection open, and it
/// would see the connection as lost (an error event ends the suite's echo server).
async fn await_reverse_close(endpoint: &EndPoint, reverse: ConnectionId, timeout: Duration) {
    let wait = async {
        loop {
            match endpoint.receive().await {
                Ok(Event::ConnectionClosed { id }) if id == reverse => return true,
                Ok(Event::Error { .. } | Event::EndPointClosed) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("the reverse connection ended with an error"),
        Err(_) => tracing::warn!(
            "the echo server did not close its reverse connection within {timeout:?}"
        ),
    }
}

/// Runs `nodelink nt ping`.
async fn ping(args: NtPingArgs) -> anyhow::Result<()> {
    if args.json {
        crate::out::use_json();
    }
    let timeout = seconds("--timeout", args.timeout)?;
    let target: EndPointAddress = args
        .address
        .parse()
        .map_err(|_| anyhow!("{:?}: not an endpoint address", args.address))?;
    let Some((host, port, _)) = target.parse() else {
        bail!(
            "{:?}: not an endpoint address (expected host:port:id)",
            args.address
        );
    };
    let (local_host, local_port) = match &args.listen {
        Some(listen) => split_host_port(listen).context("--listen")?,
        None => (route_to(&host, port)?.to_string(), 0),
    };
    if args.size > args.max_message as usize {
        bail!(
            "--size {} exceeds --max-message {}: the echo could not be received",
            args.size,
            args.max_message
        );
    }
    let transport =
        Transport::bind(&local_host, local_port, config(timeout, args.max_message)).await?;
    let result = async {
        let endpoint = transport
            .open_endpoint()
            .await
            .context("cannot create the endpoint")?;
        if *endpoint.address() == target {
            bail!("{target} is this ping's own address: refusing to ping itself");
        }
        say!(
            "nt ping {target} from {}: {} pings of {} bytes over one connection",
            endpoint.address(),
            args.count,
            args.size
        );
        let started = Instant::now();
        let samples = ping_over(&endpoint, &target, args.count, args.size, timeout).await?;
        Ok::<_, anyhow::Error>((samples, started.elapsed()))
    }
    .await;
    close_transport(&transport).await;
    let (mut samples, elapsed) = result?;

    let summary = Summary::of(&mut samples);
    crate::out::json(&serde_json::json!({
        "command": "nt ping",
        "address": target.to_string(),
        "size": args.size,
        "pings": args.count,
        "echoes": samples.len(),
        "elapsed_s": elapsed.as_secs_f64(),
        "rtt_us": summary.map(|s| {
            let mut figures = s.to_json();
            figures["min"] = (samples[0].as_secs_f64() * 1e6).into();
            figures
        }),
    }))?;
    if let Some(s) = summary {
        // Summary::of sorted the samples: the first is the smallest.
        say!(
            "rtt: min {:.1} µs, avg {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            samples[0].as_secs_f64() * 1e6,
            s.mean_us,
            s.p50_us,
            s.p99_us,
            s.max_us
        );
    }
    say!(
        "{} pings, {} echoes, 0 errors in {:.3} s",
        args.count,
        samples.len(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("127.0.0.1:80").unwrap(),
            ("127.0.0.1".into(), 80)
        );
        assert_eq!(split_host_port("[::1]:0").unwrap(), ("::1".into(), 0));
        assert_eq!(split_host_port("::1:7").unwrap(), ("::1".into(), 7));
        assert!(split_host_port("nohost").is_err());
        assert!(split_host_port(":80").is_err());
        assert!(split_host_port("h:99999").is_err());
        assert!(split_host_port("[::1]80").is_err());
    }

    #[test]
    fn payloads_carry_their_number() {
        assert_eq!(ping_payload(7, 8)[..], 7u64.to_be_bytes());
        assert_eq!(ping_payload(7, 3).len(), 3);
        assert_eq!(ping_payload(7, 0).len(), 0);
        let p = ping_payload(1, 300);
        assert_eq!(p.len(), 300);
        assert_eq!(p[8], 8);
        assert_ne!(ping_payload(1, 100), ping_payload(2, 100));
    }

    #[test]
    fn the_echo_server_is_known_by_its_address() {
        let a = |s: &str| s.parse::<EndPointAddress>().unwrap();
        let (us, target) = (a("127.0.0.1:5000:0"), a("127.0.0.1:6000:0"));
        assert!(is_echo_server(&target, &target, &us));
        // The same server advertising another name for its host.
        assert!(is_echo_server(&a("localhost:6000:0"), &target, &us));
        // Ourselves, another port, another endpoint id, an unaddressable peer: no.
        assert!(!is_echo_server(&us, &us, &us));
        assert!(!is_echo_server(&us, &target, &us));
        assert!(!is_echo_server(&a("127.0.0.1:6001:0"), &target, &us));
        assert!(!is_echo_server(&a("127.0.0.1:6000:1"), &target, &us));
        assert!(!is_echo_server(&a("3f2a-uuid"), &target, &us));
    }

    #[test]
    fn routes_to_loopback() {
        assert_eq!(
            route_to("127.0.0.1", 9).unwrap(),
            IpAddr::from(Ipv4Addr::LOCALHOST)
        );
    }
}
