//! Black-box tests of `nodelink tunnel client|server`: flags and their errors, the first
//! stdout line, stream logs and `--quiet`, the JSON file overriding the command line, the
//! SNMP log, kcptun interop through the binary, and shutdown on SIGTERM. Children run on
//! loopback and are killed on drop; every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Guard, Run};

/// Upper bound for any one step.
const LIMIT: Duration = Duration::from_secs(30);

/// The binary, also without a `KCPTUN_KEY` from the environment (the key must come from
/// the test's flags).
fn bin() -> Command {
    let mut cmd = common::bin();
    cmd.env_remove("KCPTUN_KEY");
    cmd
}

/// A running child, killed on drop, with its first stdout line's address.
struct Proc {
    guard: Guard,
    addr: SocketAddr,
}

impl Proc {
    /// Starts `cmd` and waits for `listening on ADDR`.
    fn start(cmd: Command) -> Proc {
        let (guard, addr) = Guard::start(cmd, "listening on ", LIMIT);
        let addr: SocketAddr = addr.parse().expect("an address in the first line");
        assert_ne!(addr.port(), 0);
        Proc { guard, addr }
    }

    fn stderr(&self) -> String {
        self.guard.stderr()
    }

    /// Waits until stderr contains `what`.
    fn wait_log(&self, what: &str) {
        let deadline = Instant::now() + LIMIT;
        while !self.stderr().contains(what) {
            assert!(
                Instant::now() < deadline,
                "{what:?} never logged; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then expects exit code 0 within the limit.
    fn terminate(mut self) -> String {
        self.guard.signal("-TERM");
        let status = self.guard.wait(LIMIT);
        assert!(
            status.success(),
            "exit {status}; stderr:\n{}",
            self.stderr()
        );
        // The stderr reader ends at end of file; give it a moment to drain.
        thread::sleep(Duration::from_millis(50));
        self.stderr()
    }
}

/// Runs a command that must end by itself, within the limit.
fn run(cmd: Command) -> Run {
    common::run(cmd, LIMIT)
}

/// A TCP echo service on a thread, for as long as the test runs.
fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            thread::spawn(move || {
                let mut back = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut back);
                let _ = back.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// One message through the tunnel entry, echoed back.
fn round_trip(entry: SocketAddr, msg: &[u8]) {
    let mut conn = TcpStream::connect(entry).unwrap();
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    conn.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

fn server(target: SocketAddr, extra: &[&str]) -> Proc {
    let mut cmd = bin();
    cmd.args(["tunnel", "server", "--listen", "127.0.0.1:0", "--target"])
        .arg(target.to_string())
        .args(extra);
    Proc::start(cmd)
}

fn client(remote: SocketAddr, extra: &[&str]) -> Proc {
    let mut cmd = bin();
    cmd.args(["tunnel", "client", "--listen", "127.0.0.1:0", "--remote"])
        .arg(remote.to_string())
        .args(extra);
    Proc::start(cmd)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("nodelink-tunnel-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn client_and_server_forward_log_streams_and_stop_on_sigterm() {
    let target = echo();
    let srv = server(target, &[]);
    let cli = client(srv.addr, &[]);
    assert_eq!(cli.addr.ip().to_string(), "127.0.0.1");
    round_trip(cli.addr, b"through the tunnel");
    cli.wait_log("stream closed");
    srv.wait_log("stream closed");
    let srv_addr = srv.addr;
    let cli_log = cli.terminate();
    let srv_log = srv.terminate();
    for log in [&cli_log, &srv_log] {
        assert!(log.contains("stream opened in: "), "{log}");
        assert!(log.contains("SIGTERM received, shutting down"), "{log}");
    }
    assert!(
        cli_log.contains(&format!("out: {}(3)", srv_addr)),
        "{cli_log}"
    );
    assert!(srv_log.contains(&format!("out: {target}")), "{srv_log}");
}

#[test]
fn both_ends_export_metrics() {
    use std::io::{Read, Write};
    let target = echo();
    let srv = server(target, &["--metrics", "127.0.0.1:0"]);
    let cli = client(srv.addr, &["--metrics", "127.0.0.1:0"]);
    round_trip(cli.addr, b"counted");
    cli.wait_log("stream closed");
    for (end, sessions) in [(&srv, "accepted"), (&cli, "dialled")] {
        let line = end.guard.next_line(LIMIT);
        let at = line
            .strip_prefix("metrics on http://")
            .and_then(|u| u.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("unexpected second line {line:?}"));
        let mut s = std::net::TcpStream::connect(at).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        assert!(
            text.contains("nodelink_tunnel_sessions_opened_total 1\n"),
            "{sessions}: {text}"
        );
        assert!(
            text.contains("nodelink_tunnel_streams_forwarded_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE nodelink_kcp_bytes_sent counter"),
            "{text}"
        );
    }
}

#[test]
fn quiet_suppresses_stream_logs() {
    let target = echo();
    let srv = server(target, &["--quiet"]);
    let cli = client(srv.addr, &["--quiet"]);
    round_trip(cli.addr, b"quiet please");
    let cli_log = cli.terminate();
    let srv_log = srv.terminate();
    for log in [cli_log, srv_log] {
        assert!(!log.contains("stream opened"), "{log}");
        assert!(log.contains("listening on"), "{log}");
    }
}

#[test]
fn json_file_overrides_the_command_line() {
    let dir = temp_dir("json");
    let target = echo();
    let srv = server(
        target,
        &["--crypt", "salsa20", "--smuxver", "2", "--key", "k1"],
    );
    let file = dir.join("client.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"remoteaddr": "{}", "crypt": "salsa20", "smuxver": 2, "key": "k1", "quiet": true}}"#,
            srv.addr
        ),
    )
    .unwrap();
    // The command line says otherwise (and points nowhere useful): the file wins.
    let mut cmd = bin();
    cmd.args(["tunnel", "client", "-l", "127.0.0.1:0", "-r", "127.0.0.1:9"])
        .args(["--crypt", "aes", "--smuxver", "1", "--key", "wrong", "-c"])
        .arg(&file);
    let cli = Proc::start(cmd);
    round_trip(cli.addr, b"configured by file");
    let log = cli.terminate();
    assert!(!log.contains("stream opened"), "quiet from the file: {log}");
    srv.terminate();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kcptun_aliases_and_env_key() {
    let target = echo();
    let mut cmd = bin();
    cmd.env("KCPTUN_KEY", "from the environment")
        .args(["tunnel", "server", "-l", "127.0.0.1:0", "--targetaddr"])
        .arg(target.to_string());
    let srv = Proc::start(cmd);
    let mut cmd = bin();
    cmd.args([
        "tunnel",
        "client",
        "--localaddr",
        "127.0.0.1:0",
        "--remoteaddr",
    ])
    .arg(srv.addr.to_string())
    .args(["--key", "from the environment", "--ds", "4", "--ps", "2"]);
    let cli = Proc::start(cmd);
    round_trip(cli.addr, b"aliases");
    cli.terminate();
    srv.terminate();
}

#[test]
fn snmp_log_is_written_with_the_go_layout() {
    let dir = temp_dir("snmp");
    let target = echo();
    let srv = server(target, &["--quiet"]);
    let pattern = format!("{}/snmp-20060102.log", dir.display());
    let cli = client(
        srv.addr,
        &["--quiet", "--snmplog", &pattern, "--snmpperiod", "1"],
    );
    round_trip(cli.addr, b"counted");
    let deadline = Instant::now() + LIMIT;
    let file = loop {
        let found = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| rows(p) >= 2);
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no SNMP rows in {}",
            dir.display()
        );
        thread::sleep(Duration::from_millis(100));
    };
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    let date = name
        .strip_prefix("snmp-")
        .and_then(|n| n.strip_suffix(".log"))
        .unwrap();
    assert!(
        date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "Unix,BytesSent,BytesReceived,MaxConn,ActiveOpens,PassiveOpens,CurrEstab,InErrs,\
         InCsumErrors,KCPInErrors,InPkts,OutPkts,InSegs,OutSegs,InBytes,OutBytes,RetransSegs,\
         FastRetransSegs,EarlyRetransSegs,LostSegs,RepeatSegs,FECParityShards,FECErrs,\
         FECRecovered,FECShortShards"
    );
    for row in lines {
        assert_eq!(row.split(',').count(), 25, "{row}");
        assert!(row.split(',').all(|v| v.parse::<u64>().is_ok()), "{row}");
    }
    cli.terminate();
    srv.terminate();
    std::fs::remove_dir_all(&dir).unwrap();
}

fn rows(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn bad_flags_are_one_line_errors_with_exit_code_1() {
    let dir = temp_dir("bad");
    let bad_json = dir.join("bad.json");
    std::fs::write(&bad_json, r#"{"mtu": "large"}"#).unwrap();
    let bad_json = bad_json.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["client", "-r", "127.0.0.1:1", "--smuxver", "3"],
            "--smuxver 3: unsupported smux version",
        ),
        (
            vec!["server", "--crypt", "bogus"],
            "--crypt bogus: unknown cipher",
        ),
        (
            vec!["server", "--datashard", "10", "--parityshard", "0"],
            "--datashard 10 --parityshard 0: FEC needs both",
        ),
        (
            vec!["server", "--mode", "turbo"],
            "--mode turbo: unknown mode",
        ),
        (
            vec!["server", "--mtu", "9000"],
            "--mtu 9000: must be between",
        ),
        (
            vec!["server", "--keepalive", "0"],
            "--keepalive 0: must be between 1 and 30",
        ),
        (
            vec!["client", "-r", "127.0.0.1:1", "--conn", "0"],
            "--conn 0: must be between",
        ),
        (
            vec!["server", "--rcvwnd", "70000"],
            "--rcvwnd 70000: must be between 0 and 65535",
        ),
        (
            vec!["server", "--datashard", "-1"],
            "--datashard -1: must be between 0 and 255",
        ),
        (
            vec!["server", "--nodelay", "2"],
            "--nodelay 2: must be between 0 and 1",
        ),
        (vec!["client"], "--remote is required"),
        (
            vec!["client", "-r", "127.0.0.1:1", "-c", "/nonexistent/x.json"],
            "configuration file /nonexistent/x.json: ",
        ),
        (
            vec!["client", "-r", "127.0.0.1:1", "-c", bad_json],
            "\"mtu\": expected an integer",
        ),
        (
            vec!["server", "-l", "256.0.0.1:5"],
            "cannot listen on 256.0.0.1:5",
        ),
    ];
    for (args, want) in cases {
        let mut cmd = bin();
        cmd.arg("tunnel")
            .args(&args)
            .args(["--listen", "127.0.0.1:0"]);
        if args.contains(&"-l") {
            // The case sets its own listen address.
            cmd = bin();
            cmd.arg("tunnel").args(&args);
        }
        let out = run(cmd);
        let stderr = &out.stderr;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("nodelink: error: ") && stderr.contains(want),
            "{args:?}: want {want:?}, got {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The binary with kcptun-server at the other end (the full matrix runs in
/// nodelink-tunnel's tests; this checks the CLI's flags reach the wire the same way).
#[test]
fn binary_client_with_kcptun_server() {
    let kcptun = which("kcptun-server");
    let target = echo();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let flags = [
        "--crypt",
        "xor",
        "--datashard",
        "5",
        "--parityshard",
        "2",
        "--mode",
        "fast2",
        "--smuxver",
        "2",
    ];
    let mut child = Command::new(kcptun)
        .args([
            "--listen",
            &port.to_string(),
            "--target",
            &target.to_string(),
            "--quiet",
        ])
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut child);
    let deadline = Instant::now() + LIMIT;
    while !port_bound("udp", port.port()) {
        assert!(Instant::now() < deadline, "kcptun-server did not bind");
        thread::sleep(Duration::from_millis(20));
    }
    let cli = client(port, &flags);
    round_trip(cli.addr, &[7u8; 100_000]);
    cli.terminate();
}

fn which(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not on PATH: run scripts/install-kcp-deps.sh (it apt-installs kcptun)"
            )
        })
}

/// Whether a socket of `proto` (`udp`, or `tcp` in the listening state) is bound to
/// `port`, from `/proc/net/{proto}` and `/proc/net/{proto}6`. Watching the kernel's table
/// never disturbs the child (a probe bind could steal its port).
fn port_bound(proto: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    [proto.to_string(), format!("{proto}6")].iter().any(|file| {
        std::fs::read_to_string(format!("/proc/net/{file}")).is_ok_and(|table| {
            table.lines().skip(1).any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&want) && (proto == "udp" || cols[3] == "0A")
            })
        })
    })
}
