//! Black-box tests of the `nodelink` binary: they run it as a child process, on loopback
//! only. Every wait is bounded and every child is killed when its guard is dropped.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::{bin, Guard, Run};

/// Upper bound for any one step (a command to finish, a line to appear).
const LIMIT: Duration = Duration::from_secs(60);

/// A running `nodelink serve` and the address it printed.
struct Server {
    guard: Guard,
    addr: SocketAddr,
}

/// Starts `nodelink serve --listen 127.0.0.1:0 <extra>` and waits for its first line.
fn serve(extra: &[&str]) -> Server {
    let mut cmd = bin();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
    let (guard, addr) = Guard::start(cmd, "listening on ", LIMIT);
    let addr: SocketAddr = addr.parse().expect("address in the first line");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    Server { guard, addr }
}

/// Runs `nodelink <args>` to completion (at most [`LIMIT`]).
fn run(args: &[&str]) -> Run {
    common::run_nodelink(args, LIMIT)
}

/// Checks the one-line error format and exit code 1, without a backtrace.
fn assert_one_line_error(r: &Run) {
    common::assert_one_line_error(r);
    assert!(!r.stderr.contains("backtrace"), "{}", r.describe());
}

fn assert_ping_ok(r: &Run, count: u64) {
    assert!(r.status.success(), "{}", r.describe());
    let summary = format!("{count} requests, 0 errors");
    assert!(r.stdout.contains(&summary), "{}", r.describe());
    for word in ["p50", "p99", "mean", "req/s"] {
        assert!(r.stdout.contains(word), "{word} missing: {}", r.describe());
    }
}

#[test]
fn serve_answers_ping_in_every_mode() {
    let server = serve(&[]);
    let addr = server.addr.to_string();
    for mode in ["ask1", "conn"] {
        for size in ["0", "1000"] {
            for concurrency in ["1", "4"] {
                let r = run(&[
                    "ping",
                    &addr,
                    "--count",
                    "50",
                    "--mode",
                    mode,
                    "--size",
                    size,
                    "--concurrency",
                    concurrency,
                ]);
                assert_ping_ok(&r, 50);
            }
        }
    }
    // More workers than requests, and the default count.
    assert_ping_ok(
        &run(&["ping", &addr, "--count", "3", "--concurrency", "8"]),
        3,
    );
    assert_ping_ok(&run(&["ping", &addr]), 10);
}

#[test]
fn ping_to_a_closed_port_fails_cleanly() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = run(&["ping", &format!("127.0.0.1:{port}"), "--count", "3"]);
    assert_one_line_error(&r);
    assert!(r.stderr.contains("refused"), "{}", r.describe());
}

#[test]
fn ping_with_another_version_fails_with_a_mismatch() {
    let server = serve(&[]);
    let r = run(&["ping", &server.addr.to_string(), "--protocol-version", "5"]);
    assert_one_line_error(&r);
    assert!(r.stderr.contains("version mismatch"), "{}", r.describe());
}

#[test]
fn ping_json_is_one_object() {
    let server = serve(&[]);
    let addr = server.addr.to_string();
    let r = run(&[
        "ping",
        &addr,
        "--count",
        "9",
        "--concurrency",
        "2",
        "--size",
        "16",
        "--json",
    ]);
    assert!(r.status.success(), "{}", r.describe());
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.describe());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON on stdout");
    assert_eq!(v["command"], "ping", "{v}");
    assert_eq!(v["addr"], addr.as_str(), "{v}");
    assert_eq!(v["mode"], "ask1", "{v}");
    assert_eq!(v["requests"], 9, "{v}");
    assert_eq!(v["answers"], 9, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["rtt_us"]["samples"], 9, "{v}");
    let (p50, p99) = (v["rtt_us"]["p50"].as_f64(), v["rtt_us"]["p99"].as_f64());
    assert!(0.0 < p50.unwrap() && p50 <= p99, "{v}");
}

/// Sends `request` to the metrics endpoint and returns the whole response.
fn http(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    // The server may close a request it refuses before reading all of it.
    let _ = s.write_all(request);
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
}

#[test]
fn serve_exports_prometheus_metrics() {
    let mut cmd = bin();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let (server, addr) = Guard::start(cmd, "listening on ", LIMIT);
    let second = server.next_line(LIMIT);
    let url = second
        .strip_prefix("metrics on http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected second line {second:?}"))
        .to_string();
    let r = run(&["ping", &addr, "--count", "3"]);
    assert!(r.status.success(), "{}", r.describe());

    let response = http(&url, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.contains("application/openmetrics-text"),
        "{response}"
    );
    for line in [
        "# TYPE nodelink_links_accepted counter",
        "nodelink_links_accepted_total 1\n",
        "# TYPE nodelink_links gauge",
        "# TYPE process_resident_memory_bytes gauge",
        "process_open_fds ",
    ] {
        assert!(response.contains(line), "{line:?} missing: {response}");
    }
    // Anything else is a 404; a head that never ends is cut off, and scraping goes on.
    assert!(http(&url, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    let endless = vec![b'a'; 20_000];
    assert_eq!(http(&url, &endless), "");
    assert!(http(&url, b"GET /metrics HTTP/1.0\r\n\r\n").contains("nodelink_links "));
}

#[test]
fn version_prints_the_tools_version_on_every_command() {
    // clap names the subcommand: "nodelink 0.1.0", "nodelink-serve 0.1.0".
    let version = format!(" {}", env!("CARGO_PKG_VERSION"));
    for args in [
        &["--version"][..],
        &["serve", "--version"],
        &["ping", "--version"],
    ] {
        let r = run(args);
        assert!(r.status.success(), "{args:?}: {}", r.describe());
        let out = r.stdout.trim();
        assert!(out.starts_with("nodelink"), "{args:?}: {}", r.describe());
        assert!(out.ends_with(&version), "{args:?}: {}", r.describe());
    }
}

#[test]
fn threads_sets_the_runtime_and_refuses_zero() {
    let server = serve(&["--threads", "1"]);
    let r = run(&[
        "--threads",
        "3",
        "ping",
        &server.addr.to_string(),
        "--count",
        "5",
    ]);
    assert!(r.status.success(), "{}", r.describe());
    let r = run(&["ping", &server.addr.to_string(), "--threads", "0"]);
    assert!(!r.status.success(), "{}", r.describe());
    assert!(r.stderr.contains("--threads"), "{}", r.describe());
}

#[test]
fn bad_addresses_and_arguments() {
    for bad in ["not-an-address", "127.0.0.1:99999"] {
        let r = run(&["serve", "--listen", bad]);
        assert_one_line_error(&r);
        assert!(r.stderr.contains(bad), "{}", r.describe());
        let r = run(&["ping", bad]);
        assert_one_line_error(&r);
    }
    // Usage errors are clap's: exit code 2.
    let r = run(&["serve"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.describe());
    let r = run(&["ping", "127.0.0.1:1", "--mode", "carrier-pigeon"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.describe());
    let r = run(&["ping", "127.0.0.1:1", "--tls-ca", "ca.pem"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.describe());
    let r = run(&["ping", "127.0.0.1:1", "--concurrency", "0"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.describe());
}

/// Opens a raw NEO-style link: TCP plus the version handshake.
fn raw_link(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&[0, 0, 0, 6]).unwrap();
    let mut version = [0u8; 4];
    s.read_exact(&mut version).unwrap();
    assert_eq!(version, [0, 0, 0, 6]);
    s
}

/// Reads the next packet, whatever it is, as raw bytes. A strict NEO client sees every
/// packet: nothing is skipped.
fn next_packet(s: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 10];
    s.read_exact(&mut header).unwrap();
    let len = u32::from_be_bytes([header[6], header[7], header[8], header[9]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    let mut packet = header.to_vec();
    packet.extend_from_slice(&payload);
    packet
}

/// Checks that the server sends nothing for a second (no unsolicited packet).
fn assert_silent_for_a_second(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the server spoke first: {other:?} {byte:?}"),
    }
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
}

#[test]
fn serve_sends_a_strict_neo_client_nothing_it_did_not_ask_for() {
    for dialect in ["neo-go", "neo-py"] {
        let server = serve(&["--dialect", dialect]);
        let mut s = raw_link(server.addr);
        assert_silent_for_a_second(&mut s);
        // NEO/go clients use odd ids, NEO/py ones count 0, 1, 2: either way the answers
        // come back on the same ids.
        let ids = if dialect == "neo-go" {
            [1, 3, 5]
        } else {
            [0, 1, 2]
        };
        for id in ids {
            s.write_all(&packet(id, 2, b"")).unwrap();
            assert_eq!(next_packet(&mut s), packet(id, 0x8002, b""), "{dialect}");
        }
    }
}

#[test]
fn serve_answers_a_pipelined_burst_of_2000_requests_without_refusing() {
    // A NEO client pipelining requests on 2000 new connection ids at once: more than the
    // accept backlog (1024). Every one is answered; nothing is refused.
    for (dialect, first, step) in [("neo-go", 1u32, 2u32), ("neo-py", 0, 1)] {
        let server = serve(&["--dialect", dialect]);
        let mut s = raw_link(server.addr);
        let ids: Vec<u32> = (0..2000).map(|i| first + step * i).collect();
        let burst: Vec<u8> = ids
            .iter()
            .flat_map(|&id| packet(id, 0x0100, &id.to_be_bytes()))
            .collect();
        let mut writer = s.try_clone().unwrap();
        let send = thread::spawn(move || writer.write_all(&burst).unwrap());
        let mut pending: std::collections::HashSet<u32> = ids.iter().copied().collect();
        while !pending.is_empty() {
            let p = next_packet(&mut s);
            let id = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            assert_eq!(
                p,
                packet(id, 0x8100, &id.to_be_bytes()),
                "{dialect}: not an echo"
            );
            assert!(pending.remove(&id), "{dialect}: second answer on {id}");
        }
        send.join().unwrap();
    }
}

#[test]
fn ping_and_serve_work_in_both_dialects() {
    for dialect in ["neo-go", "neo-py"] {
        let server = serve(&["--dialect", dialect]);
        let addr = server.addr.to_string();
        for size in ["0", "1000"] {
            let r = run(&[
                "ping",
                &addr,
                "--dialect",
                dialect,
                "--count",
                "200",
                "--size",
                size,
                "--concurrency",
                "4",
            ]);
            assert_ping_ok(&r, 200);
        }
    }
    let r = run(&[
        "ping",
        "127.0.0.1:1",
        "--dialect",
        "neo-py",
        "--mode",
        "conn",
    ]);
    assert_one_line_error(&r);
    assert!(r.stderr.contains("--mode ask1"), "{}", r.describe());
}

/// A raw server that behaves as NEO/py 1.12: it expects requests numbered 0, 1, 2, ...,
/// answers each with Pong on the same id, and closes the link on anything else (so a
/// flow-control offer, or an id out of sequence, ends the ping with an error).
fn raw_neo_py_server(requests: u32) -> (SocketAddr, thread::JoinHandle<Result<(), String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&[0, 0, 0, 6]).unwrap();
        let mut version = [0u8; 4];
        s.read_exact(&mut version).unwrap();
        for want in 0..requests {
            let p = next_packet(&mut s);
            let id = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            if p[4..6] != [0, 2] || id != want {
                return Err(format!("NEO/py would close the link on {p:02x?}"));
            }
            s.write_all(&packet(id, 0x8002, b"")).unwrap();
        }
        // Like NEO/py, keep the link until the client closes it.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        if !rest.is_empty() {
            return Err(format!(
                "unexpected bytes after the last request: {rest:02x?}"
            ));
        }
        Ok(())
    });
    (addr, server)
}

#[test]
fn ping_in_the_neo_py_dialect_talks_to_a_neo_py_server() {
    let (addr, server) = raw_neo_py_server(50);
    let r = run(&[
        "ping",
        &addr.to_string(),
        "--dialect",
        "neo-py",
        "--count",
        "50",
    ]);
    assert_ping_ok(&r, 50);
    server.join().unwrap().unwrap();
}

#[test]
fn protocol_violations_are_logged_at_the_default_level() {
    let mut server = serve(&[]);
    let mut s = raw_link(server.addr);
    let local = s.local_addr().unwrap().to_string();
    // A header announcing more than 64 MiB: fatal for the link, and said so.
    s.write_all(&[0, 0, 0, 1, 0, 2, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    server.guard.signal("-TERM");
    server.guard.wait(Duration::from_secs(20));
    let stderr = server.guard.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains("protocol violation"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(line.contains(&local), "peer address missing: {line}");
    assert!(line.contains("packet too big"), "cause missing: {line}");
}

#[test]
fn log_level_flags_select_what_is_logged() {
    // Default (warn): serve's INFO "serving" line is not shown; -v and --log-level show it.
    for (flags, shown) in [
        (&[][..], false),
        (&["-v"][..], true),
        (&["--log-level", "info"][..], true),
        (&["--log-level", "error"][..], false),
    ] {
        let mut server = serve(flags);
        server.guard.signal("-TERM");
        server.guard.wait(Duration::from_secs(20));
        let stderr = server.guard.stderr();
        assert_eq!(stderr.contains("serving"), shown, "{flags:?}: {stderr}");
    }
}

fn packet(conn: u32, code: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = conn.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[test]
fn serve_answers_a_raw_neo_client() {
    let server = serve(&[]);
    let mut s = raw_link(server.addr);
    s.write_all(&[0, 0, 0, 1, 0, 2, 0, 0, 0, 0]).unwrap();
    assert_eq!(next_packet(&mut s), [0, 0, 0, 1, 0x80, 0x02, 0, 0, 0, 0]);

    // A second request on the same connection (a full-connection client) is answered too.
    s.write_all(&packet(1, 0x0123, b"again")).unwrap();
    assert_eq!(next_packet(&mut s), packet(1, 0x8123, b"again"));

    // Answers are never answered: the packet on conn 3 gets nothing, conn 5 its echo.
    s.write_all(&packet(3, 0x8002, b"")).unwrap();
    s.write_all(&packet(5, 0x0042, b"x")).unwrap();
    assert_eq!(next_packet(&mut s), packet(5, 0x8042, b"x"));
}

/// Sends `signal` to the server while a link is open; it must exit 0 and close the link.
fn stops_cleanly_on(signal: &str) {
    let mut server = serve(&[]);
    let mut s = raw_link(server.addr);
    s.write_all(&packet(1, 2, b"")).unwrap();
    assert_eq!(next_packet(&mut s), packet(1, 0x8002, b""));
    server.guard.signal(signal);
    let status = server.guard.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "stderr: {}", server.guard.stderr());
    assert!(!server.guard.stderr().contains("panicked"));
    // The server closed our link: we read to the end of the stream.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
}

#[test]
fn serve_exits_0_on_sigint() {
    stops_cleanly_on("-INT");
}

#[test]
fn serve_exits_0_on_sigterm() {
    stops_cleanly_on("-TERM");
}

#[test]
fn tour_runs_and_reports_figures() {
    let r = run(&["tour"]);
    assert!(r.status.success(), "{}", r.describe());
    for word in ["req/s", "MiB/s", "p50", "p99", "packets in"] {
        assert!(r.stdout.contains(word), "{word} missing: {}", r.describe());
    }
    // Every layer takes part, each with a figure.
    for line in [
        "8. Link over TLS",
        "mutual certificates checked",
        "serial round trips inside TLS",
        "9. KCP",
        "MiB sent and echoed back in",
        "drops 5% of the datagrams each way",
        "MiB echoed intact in",
        "10. Endpoint transport",
        "pings of 64 bytes",
        "dialled each other at once: the tie-break kept 1 TCP connection",
        "11. Tunnel",
        "MiB through the tunnel and back in",
        "1 stream forwarded",
    ] {
        assert!(r.stdout.contains(line), "{line} missing: {}", r.describe());
    }
    assert!(r.stderr.is_empty(), "{}", r.describe());
    // --json: one object per step, nothing else on stdout.
    let r = run(&["tour", "--json"]);
    assert!(r.status.success(), "{}", r.describe());
    let steps: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let names: Vec<&str> = steps.iter().filter_map(|v| v["step"].as_str()).collect();
    for step in [
        "link_serial_ask1",
        "link_concurrent_ask1",
        "link_bulk_transfer",
        "link_counters",
        "link_tls",
        "kcp_echo",
        "kcp_lossy_echo",
        "transport_pings",
        "transport_crossed_connects",
        "tunnel_echo",
    ] {
        assert!(names.contains(&step), "{step} missing: {names:?}");
    }
    let lossy = steps
        .iter()
        .find(|v| v["step"] == "kcp_lossy_echo")
        .unwrap();
    assert!(
        lossy["datagrams_dropped"].as_u64().unwrap() > 0,
        "the relay lost nothing: {lossy}"
    );
    let r = run(&["tour", "--dialect", "neo-py", "--link-only"]);
    assert!(r.status.success(), "{}", r.describe());
    for word in ["neo-py", "req/s", "p50", "packets in"] {
        assert!(r.stdout.contains(word), "{word} missing: {}", r.describe());
    }
    assert!(!r.stdout.contains("8. Link over TLS"), "{}", r.describe());
    assert!(!r.stdout.contains("9. KCP"), "{}", r.describe());
    assert!(r.stderr.is_empty(), "{}", r.describe());
}

/// Writes a CA and one node certificate (for 127.0.0.1, usable by both sides) as PEM files.
/// Dials `addr` over TLS without a client certificate (trusting the CA in `dir`), sends
/// NEO's version word and returns the server's, or the error that ended the exchange.
fn anonymous_tls_version(addr: &str, dir: &Path) -> std::io::Result<[u8; 4]> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(&[0, 0, 0, 6])?;
    let mut version = [0u8; 4];
    tls.read_exact(&mut version)?;
    Ok(version)
}

/// As NEO, a TLS server requires client certificates unless told otherwise.
#[test]
fn tls_serve_requires_client_certificates_by_default() {
    let dir = tempfile::tempdir().unwrap();
    write_tls_files(dir.path(), "cluster CA");
    let flags = tls_flags(dir.path());
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = serve(&args);
    let addr = server.addr.to_string();
    let refused = anonymous_tls_version(&addr, dir.path());
    assert!(
        refused.is_err(),
        "an anonymous client was served: {refused:?}"
    );
    // A client with a certificate is still served.
    let mut ping = vec!["ping", &addr, "--count", "2"];
    ping.extend(args.iter().copied());
    assert_ping_ok(&run(&ping), 2);

    let mut lenient = args.clone();
    lenient.push("--tls-allow-anonymous-clients");
    let server = serve(&lenient);
    let version = anonymous_tls_version(&server.addr.to_string(), dir.path());
    assert_eq!(version.unwrap(), [0, 0, 0, 6]);
}

fn write_tls_files(dir: &Path, ca_name: &str) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let mut node =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    node.distinguished_name.push(DnType::CommonName, "node");
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_key = KeyPair::generate().unwrap();
    let node_cert = node.signed_by(&node_key, &ca_cert, &ca_key).unwrap();

    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("node.pem"), node_cert.pem()).unwrap();
    std::fs::write(dir.join("node.key"), node_key.serialize_pem()).unwrap();
}

fn tls_flags(dir: &Path) -> Vec<String> {
    let f = |name: &str| dir.join(name).to_string_lossy().into_owned();
    vec![
        "--tls-ca".into(),
        f("ca.pem"),
        "--tls-cert".into(),
        f("node.pem"),
        "--tls-key".into(),
        f("node.key"),
    ]
}

#[test]
fn tls_serve_and_ping() {
    let dir = tempfile::tempdir().unwrap();
    write_tls_files(dir.path(), "cluster CA");
    let flags = tls_flags(dir.path());
    let mut serve_args: Vec<&str> = flags.iter().map(String::as_str).collect();
    serve_args.push("--tls-require-client-cert");
    let server = serve(&serve_args);
    let addr = server.addr.to_string();
    for (mode, size) in [("ask1", "0"), ("conn", "1000")] {
        let mut args = vec![
            "ping", &addr, "--count", "20", "--mode", mode, "--size", size,
        ];
        args.extend(flags.iter().map(String::as_str));
        assert_ping_ok(&run(&args), 20);
    }

    // Without TLS, the server is unreachable; with another cluster's CA too.
    let r = run(&["ping", &addr, "--count", "1"]);
    assert_one_line_error(&r);
    let other = tempfile::tempdir().unwrap();
    write_tls_files(other.path(), "another CA");
    let mut args = vec!["ping", &addr, "--count", "1"];
    let other_flags = tls_flags(other.path());
    args.extend(other_flags.iter().map(String::as_str));
    assert_one_line_error(&run(&args));
}

#[test]
fn tls_file_problems_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_tls_files(dir.path(), "cluster CA");
    let missing = dir
        .path()
        .join("missing.pem")
        .to_string_lossy()
        .into_owned();
    let mut flags = tls_flags(dir.path());
    flags[1] = missing.clone();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend(flags.iter().map(String::as_str));
    let r = run(&args);
    assert_one_line_error(&r);
    assert!(r.stderr.contains("missing.pem"), "{}", r.describe());

    // A file that is not PEM.
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate").unwrap();
    let mut flags = tls_flags(dir.path());
    flags[3] = dir
        .path()
        .join("garbage.pem")
        .to_string_lossy()
        .into_owned();
    let mut args = vec!["ping", "127.0.0.1:1"];
    args.extend(flags.iter().map(String::as_str));
    let r = run(&args);
    assert_one_line_error(&r);
}

/// A raw NEO-style server that answers every request with its payload's first byte
/// flipped; it serves one link.
fn corrupting_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut version = [0u8; 4];
        s.read_exact(&mut version).unwrap();
        s.write_all(&[0, 0, 0, 6]).unwrap();
        loop {
            let mut header = [0u8; 10];
            if s.read_exact(&mut header).is_err() {
                return;
            }
            let conn = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let code = u16::from_be_bytes([header[4], header[5]]);
            let len = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
            let mut payload = vec![0u8; len as usize];
            if s.read_exact(&mut payload).is_err() {
                return;
            }
            if code & 0x8000 != 0 || conn >= 0xffff_fffe {
                continue;
            }
            if let Some(b) = payload.first_mut() {
                *b ^= 0xff;
            }
            if s.write_all(&packet(conn, code | 0x8000, &payload)).is_err() {
                return;
            }
        }
    });
    addr
}

#[test]
fn ping_detects_a_corrupted_echo() {
    for mode in ["ask1", "conn"] {
        let addr = corrupting_server().to_string();
        let r = run(&[
            "ping", &addr, "--count", "3", "--size", "100", "--mode", mode,
        ]);
        assert_one_line_error(&r);
        assert!(r.stderr.contains("differs"), "{}", r.describe());
        assert!(
            r.stdout.contains("3 requests, 3 errors"),
            "{}",
            r.describe()
        );
    }
}
