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
    let r = run(&["ping", &server.addr.to_string(), "--version", "5"]);
    assert_one_line_error(&r);
    assert!(r.stderr.contains("version mismatch"), "{}", r.describe());
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

/// Reads the next packet that is not on nodelink's control id 0xFFFFFFFF, as raw bytes.
fn next_packet(s: &mut TcpStream) -> Vec<u8> {
    loop {
        let mut header = [0u8; 10];
        s.read_exact(&mut header).unwrap();
        let len = u32::from_be_bytes([header[6], header[7], header[8], header[9]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        if header[..4] == [0xff; 4] {
            continue;
        }
        let mut packet = header.to_vec();
        packet.extend_from_slice(&payload);
        return packet;
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
    assert!(r.stderr.is_empty(), "{}", r.describe());
}

/// Writes a CA and one node certificate (for 127.0.0.1, usable by both sides) as PEM files.
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
