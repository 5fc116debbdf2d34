//! Black-box tests of `nodelink kcp serve|bench` and `serve|ping --kcp`, on loopback, and
//! interop with the real kcp-go peer (`target/kcp-go-peer`, built by
//! `scripts/install-kcp-deps.sh`). Every wait is bounded; children are killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for any one step (a command to finish, a line to appear).
const LIMIT: Duration = Duration::from_secs(90);

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodelink"));
    cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
    cmd
}

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

/// Collects a child's output stream on a thread, which ends at end of file.
fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

/// A running server, killed on drop, and the address it printed first.
struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `cmd`, which must print `listening on ADDR` first.
    fn start(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let stderr = collect(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            stderr,
        };
        let first = match rx.recv_timeout(LIMIT) {
            Ok(line) => line,
            Err(e) => panic!("no first line ({e}); stderr: {}", server.stderr()),
        };
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "{addr}"
        );
        server.addr = addr.to_string();
        server
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and expects exit code 0.
    #[cfg(unix)]
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0), "stderr: {}", self.stderr());
                return;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion, within [`LIMIT`].
fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command did not finish within {LIMIT:?}: {cmd:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    // Let the reader threads drain what is left.
    thread::sleep(Duration::from_millis(50));
    let out = stdout.lock().unwrap().clone().into_bytes();
    let err = stderr.lock().unwrap().clone().into_bytes();
    Output {
        status,
        stdout: out,
        stderr: err,
    }
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("echo verified: {size} bytes in ")),
        "{}",
        describe(&o)
    );
    assert!(stdout.contains("MB/s both ways"), "{}", describe(&o));
    assert!(
        stdout.contains(&format!("BytesSent={size} BytesReceived={size}"))
            || stdout.contains(&format!("BytesReceived={size} BytesSent={size}")),
        "{}",
        describe(&o)
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
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.starts_with("nodelink: error: "), "{}", describe(&o));
    assert_eq!(stderr.lines().count(), 1, "{}", describe(&o));
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
        assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("20 requests, 0 errors"), "{}", describe(&o));
    }
    #[cfg(unix)]
    server.terminate();
}

#[test]
fn bad_kcp_flags_are_one_line_errors() {
    let cases: &[&[&str]] = &[
        &["kcp", "bench", "127.0.0.1:1", "--crypt", "rot13"],
        &["kcp", "bench", "127.0.0.1:1", "--mode", "turbo"],
        &["kcp", "bench", "127.0.0.1:1", "--mtu", "9000"],
        &["kcp", "bench", "127.0.0.1:1", "--sndwnd", "0"],
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
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", describe(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.starts_with("nodelink: error: "),
            "{args:?}: {}",
            describe(&o)
        );
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {}", describe(&o));
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
        assert_eq!(o.status.code(), Some(0), "{flags:?}: {}", describe(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("\"ok\":true"),
            "{flags:?}: {}",
            describe(&o)
        );
    }
}
