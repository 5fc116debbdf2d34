//! Test harness shared by the tunnel's integration tests: kcptun child processes (killed
//! by a guard, even when a test fails), our tunnel ends run in process, a TCP echo target,
//! and parallel verified streams. Loopback only; every wait is bounded.

#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodelink_tunnel::{Client, Config, Server, StatsHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bound on one whole scenario (8 streams of 8 MB echoed).
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(240);
/// Bound on a process or listener becoming ready.
pub const READY_LIMIT: Duration = Duration::from_secs(20);

/// The four flag sets of the interop matrix (kcptun's flag names; both binaries and our
/// configuration accept them).
pub const MATRIX: [(&str, &[&str]); 4] = [
    ("defaults", &[]),
    (
        "salsa20_smux2_nocomp_fast3",
        &[
            "--crypt",
            "salsa20",
            "--smuxver",
            "2",
            "--nocomp",
            "--mode",
            "fast3",
        ],
    ),
    (
        "none_nofec_normal",
        &[
            "--crypt",
            "none",
            "--datashard",
            "0",
            "--parityshard",
            "0",
            "--mode",
            "normal",
        ],
    ),
    (
        "xor_fec5_2_fast2_smux2",
        &[
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
        ],
    ),
];

/// Applies kcptun-style flags to a configuration (only the flags the matrix uses).
pub fn apply_flags(cfg: &mut Config, flags: &[&str]) {
    let mut it = flags.iter();
    while let Some(&flag) = it.next() {
        let mut value = || *it.next().expect("flag value");
        match flag {
            "--nocomp" => cfg.nocomp = true,
            "--crypt" => cfg.crypt = nodelink_tunnel::config::parse_crypt(value()).unwrap(),
            "--mode" => cfg.mode = value().parse().unwrap(),
            "--smuxver" => cfg.smuxver = value().parse().unwrap(),
            "--datashard" => cfg.datashard = value().parse().unwrap(),
            "--parityshard" => cfg.parityshard = value().parse().unwrap(),
            other => panic!("flag {other} not handled by the harness"),
        }
    }
}

/// The path of a kcptun binary, or a failure telling how to install it. Interop tests must
/// not pass silently when the peer is missing.
pub fn kcptun_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} is not on PATH: the kcptun interop tests need Debian's kcptun package; \
         run scripts/install-kcp-deps.sh (it apt-installs kcptun)"
    );
}

/// A free loopback port for TCP (bound and released; the child binds it right after).
pub fn free_tcp_addr() -> SocketAddr {
    StdTcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A free loopback port for UDP.
pub fn free_udp_addr() -> SocketAddr {
    StdUdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A kcptun child process, killed and reaped on drop (also when the test panics).
pub struct Kcptun {
    child: Child,
    name: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Kcptun {
    /// Starts `binary` with `args`, collecting its stderr log.
    pub fn spawn(binary: &str, args: &[String]) -> Kcptun {
        let path = kcptun_binary(binary);
        let mut child = Command::new(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Kcptun {
            child,
            name: binary.into(),
            log,
        }
    }

    /// The log so far, for failure messages.
    pub fn log(&self) -> String {
        let lines = self.log.lock().unwrap();
        let start = lines.len().saturating_sub(40);
        lines[start..].join("\n")
    }

    /// Fails if the process already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); log:\n{}",
                self.name,
                self.log()
            );
        }
    }
}

impl Drop for Kcptun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts kcptun-server on a free UDP port forwarding to `target`; waits until it bound.
pub fn kcptun_server(target: SocketAddr, flags: &[&str]) -> (Kcptun, SocketAddr) {
    let addr = free_udp_addr();
    let mut args: Vec<String> = vec![
        "--listen".into(),
        addr.to_string(),
        "--target".into(),
        target.to_string(),
        "--quiet".into(),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    let mut proc = Kcptun::spawn("kcptun-server", &args);
    let deadline = Instant::now() + READY_LIMIT;
    // kcptun logs before it binds: watch the kernel's socket table instead.
    while !port_bound("udp", addr.port()) {
        proc.assert_running();
        assert!(
            Instant::now() < deadline,
            "kcptun-server did not bind {addr}; log:\n{}",
            proc.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, addr)
}

/// Starts kcptun-client on a free TCP port towards `remote`; waits until it accepts.
pub fn kcptun_client(remote: SocketAddr, flags: &[&str]) -> (Kcptun, SocketAddr) {
    let addr = free_tcp_addr();
    let mut args: Vec<String> = vec![
        "--localaddr".into(),
        addr.to_string(),
        "--remoteaddr".into(),
        remote.to_string(),
        "--quiet".into(),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    let mut proc = Kcptun::spawn("kcptun-client", &args);
    let deadline = Instant::now() + READY_LIMIT;
    // Watch the kernel's socket table (a probe connection would open a session on the
    // server, and a probe bind could steal the port from the child).
    while !port_bound("tcp", addr.port()) {
        proc.assert_running();
        assert!(
            Instant::now() < deadline,
            "kcptun-client did not listen on {addr}; log:\n{}",
            proc.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, addr)
}

/// Whether a socket of `proto` (`udp`, or `tcp` in the listening state) is bound to
/// `port`, from `/proc/net/{proto}` and `/proc/net/{proto}6`.
pub fn port_bound(proto: &str, port: u16) -> bool {
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

/// One of our ends running in this process; cancelled and awaited by [`Ours::stop`], and
/// cancelled on drop.
pub struct Ours {
    pub addr: SocketAddr,
    pub counters: StatsHandle,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), nodelink_tunnel::Error>>>,
}

impl Ours {
    /// Stops the end and checks it shut down cleanly.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("tunnel end did not stop within 20 s")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Our server on a free UDP port, forwarding to `target`.
pub async fn our_server(target: SocketAddr, flags: &[&str]) -> Ours {
    our_server_tuned(target, flags, |s| s).await
}

/// Our server as [`our_server`], passed through `tune` (builder settings) before it runs.
pub async fn our_server_tuned(
    target: SocketAddr,
    flags: &[&str],
    tune: impl FnOnce(Server) -> Server,
) -> Ours {
    let mut cfg = Config::server()
        .with_listen("127.0.0.1:0")
        .with_target(target.to_string())
        .with_quiet(true);
    apply_flags(&mut cfg, flags);
    let server = tune(Server::bind(cfg).await.unwrap());
    let addr = server.local_addr();
    let counters = server.stats_handle();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    Ours {
        addr,
        counters,
        stop,
        task: Some(task),
    }
}

/// Our client on a free TCP port, towards `remote`.
pub async fn our_client(remote: SocketAddr, flags: &[&str]) -> Ours {
    let mut cfg = Config::default()
        .with_listen("127.0.0.1:0")
        .with_target(remote.to_string())
        .with_quiet(true);
    apply_flags(&mut cfg, flags);
    let client = Client::bind(cfg).await.unwrap();
    let addr = client.local_addr();
    let counters = client.stats_handle();
    let stop = CancellationToken::new();
    let task = tokio::spawn(client.run(stop.clone()));
    Ours {
        addr,
        counters,
        stop,
        task: Some(task),
    }
}

/// A TCP echo target: every connection gets its bytes back, and its end of stream is
/// passed on as a write shutdown (half-close). Stops when dropped.
pub struct Echo {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn echo_target() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.into_split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    Echo { addr, task }
}

/// Deterministic pseudo-random bytes, cheap enough for hundreds of MB.
pub use nodelink_testkit::SeededRng as Pattern;

/// Sends `size` pattern bytes on one connection to `entry`, reads them back and compares
/// them byte for byte, then closes its write side and expects the end of stream. The
/// write side stays open until every byte came back: kcptun ends a stream in both
/// directions as soon as one direction ends.
pub async fn echo_stream(entry: SocketAddr, size: usize, seed: u64) -> Result<(), String> {
    const CHUNK: usize = 64 * 1024;
    let conn = TcpStream::connect(entry)
        .await
        .map_err(|e| format!("connect {entry}: {e}"))?;
    let (mut r, mut w) = conn.into_split();
    let writer = tokio::spawn(async move {
        let mut pattern = Pattern::new(seed);
        let mut buf = vec![0u8; CHUNK];
        let mut left = size;
        while left > 0 {
            let n = left.min(CHUNK);
            pattern.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).await?;
            left -= n;
        }
        Ok::<_, std::io::Error>(w)
    });
    let mut pattern = Pattern::new(seed);
    let mut want = vec![0u8; CHUNK];
    let mut got = vec![0u8; CHUNK];
    let mut done = 0usize;
    while done < size {
        let n = (size - done).min(CHUNK);
        r.read_exact(&mut got[..n])
            .await
            .map_err(|e| format!("stream {seed}: read after {done} of {size} bytes: {e}"))?;
        pattern.fill(&mut want[..n]);
        if got[..n] != want[..n] {
            let at = (0..n).find(|&i| got[i] != want[i]).unwrap();
            return Err(format!("stream {seed}: byte {} differs", done + at));
        }
        done += n;
    }
    let mut w = writer
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("stream {seed}: write: {e}"))?;
    w.shutdown()
        .await
        .map_err(|e| format!("stream {seed}: shutdown: {e}"))?;
    match r.read(&mut got).await {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!(
            "stream {seed}: {n} unexpected bytes after the echo"
        )),
        // kcptun closes the whole connection: a reset also ends the stream.
        Err(_) => Ok(()),
    }
}

/// Runs `streams` parallel [`echo_stream`]s of `size` bytes each through `entry`, within
/// [`SCENARIO_LIMIT`]. Returns how long it took, or every failure.
pub async fn echo_streams(
    entry: SocketAddr,
    streams: usize,
    size: usize,
) -> Result<Duration, String> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|i| tokio::spawn(echo_stream(entry, size, i as u64 + 1)))
        .collect();
    let all = async {
        let mut errors = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        errors
    };
    let errors = tokio::time::timeout(SCENARIO_LIMIT, all)
        .await
        .unwrap_or_else(|_| vec![format!("not done within {SCENARIO_LIMIT:?}")]);
    if errors.is_empty() {
        Ok(started.elapsed())
    } else {
        Err(format!("streams failed: {errors:?}"))
    }
}

/// 8 streams of 8 MB each, as the issue asks.
pub const STREAMS: usize = 8;
/// Bytes per stream.
pub const STREAM_BYTES: usize = 8 << 20;
