//! Interop with Go smux (Debian's golang-github-xtaci-smux-dev, as Debian's kcptun uses it)
//! through `target/smux-go-peer`, built by `scripts/install-kcp-deps.sh` (the test fails,
//! saying so, when it is missing). Both directions, v1 and v2, parallel streams verified byte for byte.

mod common;

use nodelink_smux::Role;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;
use nodelink_smux::{Config, Session, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STREAMS: u64 = 8;
const BYTES: usize = 2 << 20;

fn go_peer() -> Command {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("target/smux-go-peer");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-kcp-deps.sh to build the smux Go peer",
        path.display()
    );
    Command::new(path)
}

/// Kills the child when the test ends, however it ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rust_config(version: u8) -> Config {
    Config::default().with_version(version)
}

/// Writes `data`, reads the same length back and checks it, then closes the stream. Go v2
/// stops writing once it has our FIN, so the FIN goes only after the whole echo is in.
async fn echo_then_close(stream: Stream, data: Vec<u8>) {
    let (mut r, mut w) = tokio::io::split(stream);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for piece in sent.chunks(30_000) {
            w.write_all(piece).await.unwrap();
        }
        w
    });
    let mut got = vec![0u8; data.len()];
    within(r.read_exact(&mut got)).await.unwrap();
    assert!(got == data, "echo from Go differs");
    let mut w = within(writer).await.unwrap();
    within(w.shutdown()).await.unwrap();
}

async fn rust_client_go_server(version: u8) {
    let mut child = go_peer()
        .args(["echo-server", "--ver", &version.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting smux-go-peer");
    let stdout = child.stdout.take().unwrap();
    let _reap = Reap(child);
    let mut lines = BufReader::new(stdout);
    let addr = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_string()
    });
    let addr = within(addr).await.unwrap();
    let tcp = within(TcpStream::connect(&addr)).await.unwrap();
    let client = Session::start(tcp, Role::Client, rust_config(version)).unwrap();
    let mut tasks = Vec::new();
    for n in 0..STREAMS {
        let stream = within(client.open()).await.unwrap();
        tasks.push(tokio::spawn(echo_then_close(stream, payload(n, BYTES))));
    }
    for t in tasks {
        within(t).await.unwrap();
    }
    assert!(!client.is_closed());
    client.close().await;
}

async fn go_client_rust_server(version: u8) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let child = go_peer()
        .args(["client", "--connect", &addr.to_string()])
        .args(["--ver", &version.to_string()])
        .args([
            "--streams",
            &STREAMS.to_string(),
            "--bytes",
            &BYTES.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting smux-go-peer");
    let reap = Reap(child);
    let (tcp, _) = within(listener.accept()).await.unwrap();
    let server = Session::start(tcp, Role::Server, rust_config(version)).unwrap();
    let echo = spawn_echo_server(server.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let mut reap = reap;
        let mut out = String::new();
        reap.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = reap.0.wait().unwrap();
        (status, out)
    });
    let (status, out) = within(outcome).await.unwrap();
    assert!(status.success(), "Go client failed: {status} {out}");
    assert_eq!(out.trim(), "ok");
    // Go closed its session: ours follows.
    within(server.closed()).await;
    within(echo).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_rust_client_with_go_server() {
    rust_client_go_server(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_rust_client_with_go_server() {
    rust_client_go_server(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_go_client_with_rust_server() {
    go_client_rust_server(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_go_client_with_rust_server() {
    go_client_rust_server(2).await;
}
