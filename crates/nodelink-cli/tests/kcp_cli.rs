//! Black-box tests of `nodelink kcp serve|bench` and `serve|ping --kcp`, on loopback, and
//! interop with the real kcp-go peer (`target/kcp-go-peer`, built by
//! `scripts/install-kcp-deps.sh`). Every wait is bounded; children are killed on drop.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{bin, Guard, Run};

/// Upper bound for any one step (a command to finish, a line to appear).
const LIMIT: Duration = Duration::from_secs(90);

/// The kcp-go peer, or a failure telling how to build it.
fn go_peer() -> Command {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kcp-go-peer");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-kcp-deps.sh to build the kcp-go peer",
        path.display()
    );
    Command::new(path)
}

/// A running server, killed on drop, and the address it printed first.
struct Server {
    guard: Guard,
    addr: String,
}

impl Server {
    /// Starts `cmd`, which must print `listening on ADDR` first.
    fn start(cmd: Command) -> Server {
        let (guard, addr) = Guard::start(cmd, "listening on ", LIMIT);
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "{addr}"
        );
        Server { guard, addr }
    }

    /// Sends SIGTERM and expects exit code 0.
    #[cfg(unix)]
    fn terminate(mut self) {
        self.guard.signal("-TERM");
        let status = self.guard.wait(LIMIT);
        assert_eq!(status.code(), Some(0), "stderr: {}", self.guard.stderr());
    }
}

/// Runs `cmd` to completion, within [`LIMIT`].
fn run(cmd: Command) -> Run {
    common::run(cmd, LIMIT)
}

fn kcp_serve(flags: &[&str]) -> Server {
    let mut cmd = bin();
    cmd.args(["kcp", "serve", "--listen", "127.0.0.1:0"])
        .args(flags);
    Server::start(cmd)
}

/// Runs `nodelink kcp bench` against `addr` and checks its report.
fn bench_ok(addr: &str, size: usize, flags: &[&str]) {
    let mut cmd = bin();
    cmd.args(["kcp", "bench", addr, "--size", &size.to_string()])
        .args(flags);
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(0), "{}", o.describe());
    let stdout = &o.stdout;
    assert!(
        stdout.contains(&format!("echo verified: {size} bytes in ")),
        "{}",
        o.describe()
    );
    assert!(stdout.contains("MB/s both ways"), "{}", o.describe());
    assert!(
        stdout.contains(&format!("BytesSent={size} BytesReceived={size}"))
            || stdout.contains(&format!("BytesReceived={size} BytesSent={size}")),
        "{}",
        o.describe()
    );
}

#[test]
fn kcp_bench_with_kcptun_defaults() {
    let server = kcp_serve(&[]);
    bench_ok(&server.addr, 1_000_000, &[]);
    #[cfg(unix)]
    server.terminate();
}

#[test]
fn kcp_bench_without_crypto_or_fec() {
    let flags = [
        "--crypt", "none", "--ds", "0", "--ps", "0", "--mode", "normal",
    ];
    let server = kcp_serve(&flags);
    bench_ok(&server.addr, 1_000_000, &flags);
}

#[test]
fn kcp_bench_json_is_one_object_with_the_counters() {
    let server = kcp_serve(&["--mode", "fast3"]);
    let mut cmd = bin();
    cmd.args([
        "kcp",
        "bench",
        &server.addr,
        "--size",
        "300000",
        "--mode",
        "fast3",
    ])
    .arg("--json");
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(0), "{}", o.describe());
    assert_eq!(o.stdout.lines().count(), 1, "{}", o.describe());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["command"], "kcp bench", "{v}");
    assert_eq!(v["remote"], server.addr.as_str(), "{v}");
    assert_eq!(v["bytes"], 300_000, "{v}");
    assert_eq!(v["counters"]["BytesSent"], 300_000, "{v}");
    assert_eq!(v["counters"]["BytesReceived"], 300_000, "{v}");
    assert!(v["down_mb_per_s"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn kcp_bench_and_serve_in_manual_mode() {
    let flags = [
        "--mode",
        "manual",
        "--nodelay",
        "1",
        "--interval",
        "10",
        "--resend",
        "2",
        "--nc",
        "1",
    ];
    let server = kcp_serve(&flags);
    bench_ok(&server.addr, 300_000, &flags);
    let mut cmd = bin();
    cmd.args(["kcp", "bench", &server.addr, "--size", "1000"])
        .args(flags);
    let o = run(cmd);
    assert!(
        o.stdout
            .contains("mode manual (nodelay 1, interval 10 ms, resend 2, nc 1)"),
        "{}",
        o.describe()
    );
    // Manual parameters without --mode manual are refused, not ignored.
    let mut cmd = bin();
    cmd.args(["kcp", "bench", &server.addr, "--interval", "10"]);
    let o = run(cmd);
    common::assert_one_line_error(&o);
    assert!(o.stderr.contains("--mode manual"), "{}", o.describe());
}

#[test]
fn kcp_bench_salsa20_fast3() {
    let flags = ["--crypt", "salsa20", "--mode", "fast3"];
    let server = kcp_serve(&flags);
    bench_ok(&server.addr, 1_000_000, &flags);
}

#[test]
fn kcp_bench_with_the_wrong_key_fails_cleanly() {
    let server = kcp_serve(&[]);
    let mut cmd = bin();
    cmd.args(["kcp", "bench", &server.addr, "--size", "10000"])
        .args(["--key", "wrong", "--timeout", "2"]);
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(1), "{}", o.describe());
    let stderr = &o.stderr;
    assert!(stderr.starts_with("nodelink: error: "), "{}", o.describe());
    assert_eq!(stderr.lines().count(), 1, "{}", o.describe());
}

#[test]
fn serve_and_ping_over_kcp() {
    let mut cmd = bin();
    cmd.args([
        "serve",
        "--kcp",
        "--listen",
        "127.0.0.1:0",
        "--kcp-mode",
        "fast2",
    ]);
    let server = Server::start(cmd);
    for extra in [
        &["--mode", "ask1"][..],
        &["--mode", "conn", "--size", "5000"],
    ] {
        let mut cmd = bin();
        cmd.args([
            "ping",
            "--kcp",
            &server.addr,
            "-c",
            "20",
            "--kcp-mode",
            "fast2",
        ])
        .args(extra);
        let o = run(cmd);
        assert_eq!(o.status.code(), Some(0), "{}", o.describe());
        let stdout = &o.stdout;
        assert!(stdout.contains("20 requests, 0 errors"), "{}", o.describe());
    }
    #[cfg(unix)]
    server.terminate();
}

/// kcptun's tuning flags reach the sessions of every KCP command: `kcp serve|bench` with
/// kcptun's names, `serve|ping --kcp` with the `--kcp-` ones.
#[test]
fn tuning_flags_on_every_kcp_command() {
    let flags = [
        "--mode",
        "manual",
        "--interval",
        "20",
        "--nodelay",
        "1",
        "--mtu",
        "1200",
        "--dscp",
        "46",
        "--sockbuf",
        "1048576",
        "--sndwnd",
        "256",
        "--rcvwnd",
        "256",
    ];
    let server = kcp_serve(&[&flags[..], &["--max-memory", "64M"]].concat());
    let mut cmd = bin();
    cmd.args(["kcp", "bench", &server.addr, "--size", "200000"])
        .args(flags);
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(0), "{}", o.describe());
    assert!(
        o.stdout.contains(
            "mode manual (nodelay 1, interval 20 ms, resend 0, nc 0), mtu 1200, sndwnd 256, \
             rcvwnd 256, dscp 46, sockbuf 1048576"
        ),
        "{}",
        o.describe()
    );
    assert!(
        o.stdout.contains("echo verified: 200000 bytes"),
        "{}",
        o.describe()
    );

    let link = [
        "--kcp-mode",
        "manual",
        "--kcp-interval",
        "20",
        "--kcp-dscp",
        "46",
        "--kcp-sockbuf",
        "1048576",
        "--kcp-mtu",
        "1200",
    ];
    let mut cmd = bin();
    cmd.args(["serve", "--kcp", "--listen", "127.0.0.1:0"])
        .args(link);
    let server = Server::start(cmd);
    let mut cmd = bin();
    cmd.args(["ping", "--kcp", &server.addr, "-c", "5"])
        .args(link);
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(0), "{}", o.describe());
    assert!(
        o.stdout.contains("5 requests, 0 errors"),
        "{}",
        o.describe()
    );
}

#[test]
fn bad_kcp_flags_are_one_line_errors() {
    let cases: &[&[&str]] = &[
        &["kcp", "bench", "127.0.0.1:1", "--crypt", "rot13"],
        &["kcp", "bench", "127.0.0.1:1", "--mode", "turbo"],
        &["kcp", "bench", "127.0.0.1:1", "--mtu", "9000"],
        &["kcp", "bench", "127.0.0.1:1", "--sndwnd", "0"],
        &["kcp", "bench", "127.0.0.1:1", "--dscp", "64"],
        &["kcp", "bench", "127.0.0.1:1", "--mtu", "-1"],
        &["kcp", "serve", "--listen", "127.0.0.1:0", "--nc", "2"],
        &[
            "ping",
            "--kcp",
            "127.0.0.1:1",
            "--kcp-mode",
            "manual",
            "--kcp-interval",
            "5",
        ],
        &["kcp", "bench", "127.0.0.1:1", "--timeout=-1"],
        &["kcp", "bench", "not-an-address"],
        &["kcp", "serve", "--listen", "127.0.0.1:99999"],
        &[
            "serve",
            "--kcp",
            "--listen",
            "127.0.0.1:0",
            "--kcp-crypt",
            "rot13",
        ],
        &[
            "ping",
            "--kcp",
            "127.0.0.1:1",
            "--kcp-ds",
            "200",
            "--kcp-ps",
            "100",
        ],
    ];
    for args in cases {
        let mut cmd = bin();
        cmd.args(*args);
        let o = run(cmd);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", o.describe());
        let stderr = &o.stderr;
        assert!(
            stderr.starts_with("nodelink: error: "),
            "{args:?}: {}",
            o.describe()
        );
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {}", o.describe());
    }
}

#[test]
fn our_bench_against_the_kcp_go_echo_server() {
    for flags in [
        &[][..],
        &[
            "--crypt", "none", "--ds", "0", "--ps", "0", "--mode", "normal",
        ],
        &["--crypt", "salsa20", "--mode", "fast3"],
    ] {
        let mut cmd = go_peer();
        cmd.args(["echo-server", "--listen", "127.0.0.1:0"])
            .args(flags);
        let server = Server::start(cmd);
        bench_ok(&server.addr, 1_000_000, flags);
    }
}

#[test]
fn the_kcp_go_client_against_our_serve() {
    for flags in [
        &[][..],
        &[
            "--crypt", "none", "--ds", "0", "--ps", "0", "--mode", "normal",
        ],
        &["--crypt", "salsa20", "--mode", "fast3"],
    ] {
        let server = kcp_serve(flags);
        let mut cmd = go_peer();
        cmd.args([
            "client",
            &server.addr,
            "--bytes",
            "1000000",
            "--timeout",
            "60",
        ])
        .args(flags);
        let o = run(cmd);
        assert_eq!(o.status.code(), Some(0), "{flags:?}: {}", o.describe());
        let stdout = &o.stdout;
        assert!(
            stdout.contains("\"ok\":true"),
            "{flags:?}: {}",
            o.describe()
        );
    }
}

/// A client that sends and never reads its echo has its session dropped once it took
/// nothing for 10 s, with a WARN naming it; another client is echoed meanwhile.
#[test]
fn a_client_that_never_reads_its_echo_is_dropped_and_named() {
    let server = kcp_serve(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The command's defaults: AES with kcptun's default key, FEC 10/3, stream mode.
    let config = nodelink_kcp::Config::default()
        .with_crypt(nodelink_kcp::CipherKind::Aes)
        .with_key("it's a secrect")
        .with_fec(10, 3)
        .with_stream(true);
    let (local, writer) = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut client = nodelink_kcp::KcpStream::connect(server.addr.as_str(), config)
            .await
            .unwrap();
        let local = client.local_addr();
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&vec![0x17; 32 << 20]).await;
            client
        });
        (local, writer)
    });
    bench_ok(&server.addr, 100_000, &[]);
    let log = server.guard.wait_stderr("never reads its echo", LIMIT);
    let line = log
        .lines()
        .find(|l| l.contains("never reads its echo"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains(&format!("127.0.0.1:{}", local.port())),
        "{line}"
    );
    bench_ok(&server.addr, 100_000, &[]);
    writer.abort();
}
