//! Black-box tests of `nodelink nt echo` and `nodelink nt ping`: they run the binary as
//! child processes on loopback only (IPv4, and IPv6 when the machine has ::1). Every wait
//! is bounded and every child is killed when its guard is dropped. One test speaks the
//! wire protocol by hand to the echo server, as a network-transport-tcp peer would.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::{assert_one_line_error, bin, Guard, Run};

/// Upper bound for any one step (a command to finish, a line to appear).
const LIMIT: Duration = Duration::from_secs(60);

/// A running `nodelink nt echo` and the endpoint address it printed.
struct Echo {
    guard: Guard,
    address: String,
}

/// Starts `nodelink nt echo --listen <listen>` and waits for its first line.
fn echo(listen: &str) -> Echo {
    echo_with(listen, &[])
}

/// Same, with more arguments.
fn echo_with(listen: &str, more: &[&str]) -> Echo {
    let mut cmd = bin();
    cmd.args(["nt", "echo", "--listen", listen]).args(more);
    let (guard, address) = Guard::start(cmd, "ADDRESS ", LIMIT);
    Echo { guard, address }
}

/// Splits `host:port:id` at the last two colons.
fn split_address(a: &str) -> (String, u16, u32) {
    let (rest, id) = a.rsplit_once(':').expect("host:port:id");
    let (host, port) = rest.rsplit_once(':').expect("host:port:id");
    (
        host.to_string(),
        port.parse().expect("port"),
        id.parse().expect("id"),
    )
}

/// Runs `nodelink <args>` to completion (at most [`LIMIT`]).
fn run(args: &[&str]) -> Run {
    common::run_nodelink(args, LIMIT)
}

fn assert_ping_ok(r: &Run, count: u64) {
    assert!(r.status.success(), "{}", r.describe());
    let summary = format!("{count} pings, {count} echoes, 0 errors");
    assert!(r.stdout.contains(&summary), "{}", r.describe());
    for word in ["min", "avg", "p50", "p99", "max"] {
        assert!(r.stdout.contains(word), "{word} missing: {}", r.describe());
    }
}

fn has_ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn address_line_format() {
    let e = echo("127.0.0.1:0");
    let (host, port, id) = split_address(&e.address);
    assert_eq!(host, "127.0.0.1");
    assert_ne!(port, 0);
    assert_eq!(id, 0);
    assert_eq!(e.address, format!("127.0.0.1:{port}:0"));
    // Something listens there.
    TcpStream::connect(("127.0.0.1", port)).expect("the echo server listens");
    if has_ipv6_loopback() {
        let e6 = echo("[::1]:0");
        let (host, port, id) = split_address(&e6.address);
        // IPv6 hosts are printed in brackets, as --listen takes them.
        assert_eq!((host.as_str(), id), ("[::1]", 0));
        assert_eq!(e6.address, format!("[::1]:{port}:0"));
    }
}

#[test]
fn echo_and_ping_ipv4() {
    let e = echo("127.0.0.1:0");
    assert_ping_ok(&run(&["nt", "ping", &e.address, "--count", "200"]), 200);
    assert_ping_ok(
        &run(&[
            "nt", "ping", &e.address, "--count", "20", "--size", "100000",
        ]),
        20,
    );
    assert_ping_ok(
        &run(&["nt", "ping", &e.address, "--size", "0", "-c", "3"]),
        3,
    );
    // Default count, and an explicit --listen.
    assert_ping_ok(
        &run(&["nt", "ping", &e.address, "--listen", "127.0.0.1:0"]),
        10,
    );
}

#[test]
fn ping_json_is_one_object() {
    let e = echo("127.0.0.1:0");
    let r = run(&["nt", "ping", &e.address, "--count", "7", "--json"]);
    assert!(r.status.success(), "{}", r.describe());
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.describe());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON on stdout");
    assert_eq!(v["command"], "nt ping", "{v}");
    assert_eq!(v["address"], e.address.as_str(), "{v}");
    assert_eq!(v["pings"], 7, "{v}");
    assert_eq!(v["echoes"], 7, "{v}");
    let rtt = &v["rtt_us"];
    assert_eq!(rtt["samples"], 7, "{v}");
    let (min, p50, max) = (
        rtt["min"].as_f64(),
        rtt["p50"].as_f64(),
        rtt["max"].as_f64(),
    );
    let (min, p50, max) = (min.unwrap(), p50.unwrap(), max.unwrap());
    assert!(0.0 < min && min <= p50 && p50 <= max, "{v}");
}

#[test]
fn echo_and_ping_ipv6() {
    if !has_ipv6_loopback() {
        println!("note: no IPv6 loopback on this machine; echo_and_ping_ipv6 skipped");
        return;
    }
    let e = echo("[::1]:0");
    // Without --listen the pinger binds the address that routes to the target: ::1.
    let r = run(&["nt", "ping", &e.address, "--count", "50"]);
    assert_ping_ok(&r, 50);
    assert!(r.stdout.contains(" from [::1]:"), "{}", r.describe());
    // The bare form of the same address is accepted too.
    let (_, port, _) = split_address(&e.address);
    assert_ping_ok(
        &run(&["nt", "ping", &format!("::1:{port}:0"), "-c", "2"]),
        2,
    );
    assert_ping_ok(
        &run(&[
            "nt", "ping", &e.address, "-c", "5", "--listen", "[::1]:0", "-s", "3000",
        ]),
        5,
    );
}

#[test]
fn ping_against_nothing_listening_fails_cleanly() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = run(&["nt", "ping", &format!("127.0.0.1:{port}:0"), "-c", "3"]);
    assert_one_line_error(&r);
    assert!(r.stderr.contains("cannot connect"), "{}", r.describe());
}

#[test]
fn ping_to_an_unknown_endpoint_and_bad_arguments() {
    let e = echo("127.0.0.1:0");
    let (host, port, _) = split_address(&e.address);
    let r = run(&["nt", "ping", &format!("{host}:{port}:9"), "-c", "1"]);
    assert_one_line_error(&r);
    for bad in ["not-an-address", "127.0.0.1:1", "127.0.0.1:x:0"] {
        let r = run(&["nt", "ping", bad]);
        assert_one_line_error(&r);
    }
    let r = run(&["nt", "echo", "--listen", "nohostport"]);
    assert_one_line_error(&r);
    let r = run(&["nt", "ping", &e.address, "--count", "0"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.describe());
}

/// A hand-written network-transport-tcp client: request, CreatedNewConnection, data; the
/// echo server must connect back over the same socket and echo, then close it when we
/// close ours. The bytes are the spec's layouts.
#[test]
fn echo_speaks_the_wire_protocol() {
    let e = echo("127.0.0.1:0");
    let (_, port, _) = split_address(&e.address);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Our advertised address: a listener nobody dials (the echo reuses our socket).
    let mine = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("127.0.0.1:{}:0", mine.local_addr().unwrap().port());
    let words = |w: &[u32]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
    let mut req = words(&[0, 8 + origin.len() as u32, 0, origin.len() as u32]);
    req.extend_from_slice(origin.as_bytes());
    s.write_all(&req).unwrap();
    let read_u32 = |s: &mut TcpStream| {
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        u32::from_be_bytes(b)
    };
    assert_eq!(read_u32(&mut s), 0, "Accepted");
    let mut msg = words(&[0, 1024, 1024, 5]);
    msg.extend_from_slice(b"hello");
    s.write_all(&msg).unwrap();
    // The reverse connection: CreatedNewConnection(1024), then the echo.
    assert_eq!((read_u32(&mut s), read_u32(&mut s)), (0, 1024));
    assert_eq!((read_u32(&mut s), read_u32(&mut s)), (1024, 5));
    let mut echoed = [0u8; 5];
    s.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello");
    // We close our connection: the echo server closes the reverse one.
    s.write_all(&words(&[1, 1024])).unwrap();
    assert_eq!((read_u32(&mut s), read_u32(&mut s)), (1, 1024));
    // Its local close left nothing open on the socket: it starts the teardown with
    // CloseSocket(the last lcid we announced), and our matching reply ends it.
    assert_eq!((read_u32(&mut s), read_u32(&mut s)), (2, 1024));
    s.write_all(&words(&[2, 1024])).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(e);
}

fn stops_cleanly_on(signal: &str) {
    let mut e = echo("127.0.0.1:0");
    assert_ping_ok(&run(&["nt", "ping", &e.address, "-c", "2"]), 2);
    e.guard.signal(signal);
    let status = e.guard.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "stderr: {}", e.guard.stderr());
    assert!(!e.guard.stderr().contains("panicked"));
}

#[test]
fn echo_exits_0_on_sigint() {
    stops_cleanly_on("-INT");
}

#[test]
fn echo_exits_0_on_sigterm() {
    stops_cleanly_on("-TERM");
}

/// `nt ping` against a hand-written network-transport-tcp echo server. After the ping's
/// CloseConnection, the echo server still has its reverse connection open; a
/// CloseEndPoint arriving then would make a real (0.8.6) echo server post
/// EventConnectionLost and stop. So ping must wait until the reverse connection is
/// closed, and only then close its endpoint.
#[test]
fn ping_waits_for_the_reverse_close_before_closing_its_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let words = |w: &[u32]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        let read_u32 = |s: &mut TcpStream| {
            let mut b = [0u8; 4];
            s.read_exact(&mut b).map(|()| u32::from_be_bytes(b))
        };
        // The request: version 0, length, endpoint 0, the ping's address.
        assert_eq!(read_u32(&mut s).unwrap(), 0);
        let len = read_u32(&mut s).unwrap() as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        s.write_all(&words(&[0])).unwrap();
        let mut pings = 0;
        loop {
            match read_u32(&mut s).unwrap() {
                0 => {
                    assert_eq!(read_u32(&mut s).unwrap(), 1024);
                    s.write_all(&words(&[0, 1024])).unwrap();
                }
                1024 => {
                    let n = read_u32(&mut s).unwrap();
                    let mut data = vec![0u8; n as usize];
                    s.read_exact(&mut data).unwrap();
                    let mut echo = words(&[1024, n]);
                    echo.extend_from_slice(&data);
                    s.write_all(&echo).unwrap();
                    pings += 1;
                }
                1 => {
                    assert_eq!(read_u32(&mut s).unwrap(), 1024);
                    break;
                }
                other => panic!("unexpected control word {other}"),
            }
        }
        // Our reverse connection is still open: nothing may arrive now. A read that
        // times out is the expected outcome; CloseEndPoint (3) is the bug.
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let early = read_u32(&mut s);
        assert!(
            early.is_err(),
            "the ping sent {early:?} while the reverse connection was open"
        );
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // Close the reverse connection and start the teardown, as the echo server does.
        s.write_all(&words(&[1, 1024, 2, 1024])).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        pings
    });
    let r = run(&[
        "nt",
        "ping",
        &format!("127.0.0.1:{port}:0"),
        "--count",
        "3",
        "--size",
        "16",
    ]);
    assert_eq!(peer.join().expect("the fake echo server"), 3);
    assert_ping_ok(&r, 3);
    assert!(!r.stderr.contains("WARN"), "{}", r.describe());
}

/// Pinging one's own address would find no echo server, only itself: refused up front.
#[test]
fn ping_refuses_to_ping_itself() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let own = format!("127.0.0.1:{port}");
    let r = run(&[
        "nt",
        "ping",
        &format!("{own}:0"),
        "--listen",
        &own,
        "-c",
        "3",
    ]);
    assert_one_line_error(&r);
    assert!(
        r.stderr.contains("refusing to ping itself"),
        "{}",
        r.describe()
    );
    assert!(!r.stdout.contains("echoes"), "{}", r.describe());
}

/// A peer that accepts the connection and reads the pings but never echoes (written from
/// the spec: it answers the request with Accepted, then only reads) makes ping fail,
/// naming the target.
#[test]
fn ping_without_an_echo_fails_clearly() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut head = [0u8; 8];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes(head[4..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        s.write_all(&0u32.to_be_bytes()).unwrap(); // Accepted
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    let target = format!("127.0.0.1:{port}:0");
    let r = run(&["nt", "ping", &target, "-c", "2", "--timeout", "1"]);
    assert_one_line_error(&r);
    assert!(
        r.stderr.contains(&format!("no echo from {target}")),
        "{}",
        r.describe()
    );
    peer.join().unwrap();
}

/// `--max-message` bounds what each side accepts: the echo server drops a sender of a
/// larger message and says so in its log, naming the sender; ping refuses a `--size` whose
/// echo it could not receive.
#[test]
fn max_message_is_enforced_and_logged() {
    let e = echo_with("127.0.0.1:0", &["--max-message", "1000"]);
    assert_ping_ok(
        &run(&["nt", "ping", &e.address, "-c", "2", "-s", "1000"]),
        2,
    );
    let r = run(&["nt", "ping", &e.address, "-c", "1", "-s", "1001"]);
    assert_one_line_error(&r);
    let from = r
        .stdout
        .split(" from ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .expect("the ping's first line names its address");
    let log = e.guard.wait_stderr("message over the size limit", LIMIT);
    let line = log
        .lines()
        .find(|l| l.contains("message over the size limit"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&format!("peer={from}:")), "{line}");
    assert!(line.contains("1001") && line.contains("1000"), "{line}");

    let r = run(&[
        "nt",
        "ping",
        &e.address,
        "-s",
        "2000",
        "--max-message",
        "1000",
    ]);
    assert_one_line_error(&r);
    assert!(r.stderr.contains("--max-message"), "{}", r.describe());
}

/// At info level (`-v`) the echo server reports each peer event; at the default level a
/// healthy exchange writes nothing.
#[test]
fn echo_reports_peer_events_at_info() {
    let quiet = echo("127.0.0.1:0");
    assert_ping_ok(&run(&["nt", "ping", &quiet.address, "-c", "2"]), 2);
    let mut e = echo_with("127.0.0.1:0", &["-v"]);
    assert_ping_ok(&run(&["nt", "ping", &e.address, "-c", "2"]), 2);
    // The reverse connection closes last.
    let log = e.guard.wait_stderr("outgoing connection closed", LIMIT);
    for event in [
        "incoming connection opened",
        "outgoing connection opened",
        "incoming connection closed",
        "outgoing connection closed",
    ] {
        let line = log.lines().find(|l| l.contains(event));
        assert!(
            line.is_some_and(|l| l.contains("INFO") && l.contains("peer=")),
            "{event}: {log}"
        );
    }
    assert!(quiet.guard.stderr().is_empty(), "{}", quiet.guard.stderr());
    // Stopping, it sums up what it saw.
    e.guard.signal("-TERM");
    assert_eq!(e.guard.wait(LIMIT).code(), Some(0));
    let log = e.guard.wait_stderr("echo endpoint stopping", LIMIT);
    let line = log
        .lines()
        .find(|l| l.contains("echo endpoint stopping"))
        .unwrap();
    assert!(line.contains("messages_in=2"), "{line}");
}

/// An error event (here: the echo server drops us for an over-limit message) prints as a
/// sentence naming the peer, not as Rust debug output.
#[test]
fn ping_errors_have_no_debug_formatting() {
    let e = echo_with("127.0.0.1:0", &["--max-message", "100"]);
    let r = run(&["nt", "ping", &e.address, "-c", "1", "-s", "200"]);
    assert_one_line_error(&r);
    assert!(
        r.stderr
            .contains(&format!("connection to {} lost", e.address)),
        "{}",
        r.describe()
    );
    for leak in ["EndPointAddress(", "ConnectionLost(", "Some(", "kind:"] {
        assert!(!r.stderr.contains(leak), "{}", r.describe());
    }
}

/// A busy port: the error names the address once, then the cause.
#[test]
fn busy_port_error_is_said_once() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let r = run(&["nt", "echo", "--listen", &addr]);
    assert_one_line_error(&r);
    assert_eq!(
        r.stderr.matches("cannot listen on").count(),
        1,
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains(&addr), "{}", r.describe());
}

/// A raw peer that sends and never reads its echoes (they come back on its own socket)
/// ends its connection's echo with a WARN naming it; another peer is echoed meanwhile and
/// after.
#[test]
fn a_peer_that_never_reads_its_echoes_does_not_stop_the_others() {
    let e = echo_with("127.0.0.1:0", &["--max-memory", "48M"]);
    let (host, port, id) = split_address(&e.address);
    let mut raw = TcpStream::connect((host.as_str(), port)).unwrap();
    let origin = b"127.0.0.1:1:0";
    // Connection request (protocol version 0): endpoint id, our address.
    let mut request = Vec::new();
    for w in [0u32, 8 + origin.len() as u32, id, origin.len() as u32] {
        request.extend_from_slice(&w.to_be_bytes());
    }
    request.extend_from_slice(origin);
    raw.write_all(&request).unwrap();
    let mut answer = [0u8; 4];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [0; 4], "accepted");
    // CreatedNewConnection 1024, then 64 KiB messages on it, never reading.
    raw.write_all(&[0, 0, 0, 0, 0, 0, 4, 0]).unwrap();
    let mut message = Vec::new();
    for w in [1024u32, 64 << 10] {
        message.extend_from_slice(&w.to_be_bytes());
    }
    message.resize(8 + (64 << 10), 0xa5);
    let flood = thread::spawn(move || {
        let mut sent = 0usize;
        // 64 MiB: more than the echoes' budget and every buffer on the way.
        while sent < 1024 && raw.write_all(&message).is_ok() {
            sent += 1;
        }
        (sent, raw)
    });
    let log = e.guard.wait_stderr("does not take its echoes", LIMIT);
    let line = log
        .lines()
        .find(|l| l.contains("does not take its echoes"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("127.0.0.1:1:0"),
        "{line}"
    );
    assert_ping_ok(&run(&["nt", "ping", &e.address, "-c", "5"]), 5);
    let (sent, _raw) = flood.join().unwrap();
    assert_eq!(sent, 1024, "the server kept reading the flooding peer");
    assert_ping_ok(&run(&["nt", "ping", &e.address, "-c", "5"]), 5);
}
