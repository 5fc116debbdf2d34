//! Real interop with kcp-go 5.6.1 (the Go peer built by `scripts/install-kcp-deps.sh`).
//!
//! * Rust client → Go `echo-server`: 4 MB of seeded pseudo-random bytes, echo read
//!   concurrently and verified byte for byte, no checksum errors on our side.
//! * Go `client` → Rust `KcpListener` echo server: 4,000,000 bytes, the Go side verifies
//!   and reports JSON.
//!
//! Matrix: ciphers none, aes, aes-128, aes-192, salsa20, tea, xor (Debian's kcp-go lacks
//! `null` and `aes-128-gcm`), each without FEC and with FEC 10/3; plus message mode both
//! ways. Cases run concurrently (a few at a time) to keep the file well under a minute.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nodelink_kcp::crypt::CipherKind;
use nodelink_kcp::{Config, KcpListener, KcpStream};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

const CIPHERS: [&str; 7] = ["none", "aes", "aes-128", "aes-192", "salsa20", "tea", "xor"];
const FECS: [(usize, usize); 2] = [(0, 0), (10, 3)];
const WINDOW: u16 = 1024;
const CASE_TIMEOUT: Duration = Duration::from_secs(50);
/// Cases in flight at once (the machine may have 2 vCPUs).
const PARALLEL: usize = 4;

fn peer_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kcp-go-peer");
    assert!(
        p.exists(),
        "the kcp-go peer {} is missing: run scripts/install-kcp-deps.sh first",
        p.display()
    );
    p
}

fn go_flags(crypt: &str, ds: usize, ps: usize) -> Vec<String> {
    [
        "--crypt",
        crypt,
        "--ds",
        &ds.to_string(),
        "--ps",
        &ps.to_string(),
        "--mode",
        "fast",
        "--mtu",
        "1350",
        "--sndwnd",
        &WINDOW.to_string(),
        "--rcvwnd",
        &WINDOW.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn rust_cfg(crypt: &str, ds: usize, ps: usize) -> Config {
    Config::default()
        .with_crypt(crypt.parse::<CipherKind>().expect("cipher name"))
        .with_fec(ds, ps)
        .with_window(WINDOW, WINDOW)
}

/// Pseudo-random bytes from a seed.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    nodelink_testkit::seeded_bytes(seed, len)
}

/// Starts the Go echo server and returns it with its address.
async fn go_echo_server(extra: &[String]) -> (Child, String) {
    let mut child = Command::new(peer_bin())
        .arg("echo-server")
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kcp-go-peer");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("read the Go peer's first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the Go peer: {line:?}"))
        .to_owned();
    (child, addr)
}

async fn rust_client_case(crypt: &'static str, ds: usize, ps: usize) {
    let (_server, addr) = go_echo_server(&go_flags(crypt, ds, ps)).await;
    let stream = KcpStream::connect(&addr, rust_cfg(crypt, ds, ps))
        .await
        .expect("connect");
    let data = Arc::new(payload(4 << 20, 42));
    let (mut rd, mut wr) = tokio::io::split(stream);
    let to_send = Arc::clone(&data);
    let writer = tokio::spawn(async move {
        for chunk in to_send.chunks(65_536) {
            wr.write_all(chunk).await.expect("write");
        }
        wr
    });
    let mut got = vec![0u8; data.len()];
    rd.read_exact(&mut got).await.expect("read the echo");
    let wr = writer.await.expect("writer task");
    let stream = rd.unsplit(wr);
    assert!(got == *data, "{crypt} {ds}/{ps}: echo differs");
    let stats = stream.stats();
    assert_eq!(stats.in_csum_errors, 0, "{crypt} {ds}/{ps}: {stats:?}");
    assert_eq!(stats.bytes_received, data.len() as u64);
}

/// Our echo server: every accepted stream echoes until it fails.
async fn rust_echo_server(cfg: Config, message: bool) -> String {
    let mut listener = KcpListener::bind("127.0.0.1:0", cfg).await.expect("bind");
    let addr = listener.local_addr().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if message {
                    while let Ok(m) = s.recv_message().await {
                        if s.send_message(&m).await.is_err() {
                            break;
                        }
                    }
                } else {
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn go_client(addr: &str, flags: &[String], bytes: usize) -> serde_json::Value {
    let out = Command::new(peer_bin())
        .arg("client")
        .arg(addr)
        .args(flags)
        .args(["--bytes", &bytes.to_string(), "--timeout", "45"])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the Go client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success(),
        "Go client failed ({}): {line} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

async fn go_client_case(crypt: &'static str, ds: usize, ps: usize) {
    let addr = rust_echo_server(rust_cfg(crypt, ds, ps), false).await;
    let v = go_client(&addr, &go_flags(crypt, ds, ps), 4_000_000).await;
    assert_eq!(
        v["ok"],
        serde_json::Value::Bool(true),
        "{crypt} {ds}/{ps}: {v}"
    );
    assert_eq!(v["bytes"], 4_000_000, "{v}");
}

/// Runs every case of the matrix through `f`, a few at a time, failing with the names of
/// the failed cases.
async fn run_matrix<F, Fut>(f: F)
where
    F: Fn(&'static str, usize, usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = Vec::new();
    for crypt in CIPHERS {
        for (ds, ps) in FECS {
            let fut = f(crypt, ds, ps);
            let sem = Arc::clone(&sem);
            tasks.push((
                format!("{crypt} {ds}/{ps}"),
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await.expect("semaphore");
                    tokio::time::timeout(CASE_TIMEOUT, fut)
                        .await
                        .expect("case timed out");
                }),
            ));
        }
    }
    let mut failed = Vec::new();
    for (name, t) in tasks {
        if let Err(e) = t.await {
            eprintln!("case {name} failed: {e}");
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_to_go_echo_server() {
    run_matrix(rust_client_case).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_to_rust_listener() {
    run_matrix(go_client_case).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_mode_both_ways() {
    let (crypt, ds, ps) = ("aes", 10, 3);
    let mut flags = go_flags(crypt, ds, ps);
    flags.push("--message".into());
    let cfg = rust_cfg(crypt, ds, ps).with_stream(false);

    // Rust client → Go echo server: messages of 1..=mss bytes come back one for one.
    let (_server, addr) = go_echo_server(&flags).await;
    let mut s = KcpStream::connect(&addr, cfg.clone())
        .await
        .expect("connect");
    let mss = s.mss();
    assert_eq!(mss, 1298);
    let data = payload(300_000, 7);
    let mut sizes = Vec::new();
    let (mut off, mut x) = (0usize, 12345u64);
    while off < data.len() {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let n = (1 + (x >> 33) as usize % mss).min(data.len() - off);
        sizes.push((off, n));
        off += n;
    }
    // ~460 messages: fewer segments than either window, so writing all of them before
    // reading cannot deadlock.
    let run = async {
        for &(o, n) in &sizes {
            s.send_message(&data[o..o + n]).await.expect("send");
        }
        for (i, &(o, n)) in sizes.iter().enumerate() {
            let m = s.recv_message().await.expect("recv");
            assert_eq!(m, &data[o..o + n], "message {i}");
        }
    };
    tokio::time::timeout(CASE_TIMEOUT, run)
        .await
        .expect("message mode timed out");
    assert_eq!(s.stats().in_csum_errors, 0);

    // Go client → Rust message echo server.
    let addr = rust_echo_server(cfg, true).await;
    let v = go_client(&addr, &flags, 1_000_000).await;
    assert_eq!(v["ok"], serde_json::Value::Bool(true), "{v}");
}

/// One socket of ours (kcp-go's `ServeConn` + `NewConn` on one `PacketConn`, in effect):
/// it dials kcp-go's echo server and, at the same time, serves kcp-go's client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_socket_dials_and_serves_kcp_go() {
    let (crypt, ds, ps) = ("aes", 10, 3);
    let (_server, go_addr) = go_echo_server(&go_flags(crypt, ds, ps)).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut ours = KcpListener::from_socket(sock, rust_cfg(crypt, ds, ps)).expect("listener");
    let our_addr = ours.local_addr().to_string();
    let mut out = ours.connect(&go_addr).await.expect("dial kcp-go");
    let serving = tokio::spawn(async move {
        let (mut s, _) = ours.accept().await.expect("kcp-go's client");
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let flags = go_flags(crypt, ds, ps);
    let go_client = go_client(&our_addr, &flags, 1_000_000);
    let dialled = async {
        let data = payload(1 << 20, 7);
        out.write_all(&data).await.expect("write");
        let mut got = vec![0u8; data.len()];
        out.read_exact(&mut got).await.expect("read the echo");
        assert!(got == data, "echo from kcp-go differs");
    };
    let (v, ()) = tokio::join!(go_client, dialled);
    assert_eq!(v["ok"], serde_json::Value::Bool(true), "{v}");
    assert_eq!(v["bytes"], 1_000_000, "{v}");
    serving.abort();
}
