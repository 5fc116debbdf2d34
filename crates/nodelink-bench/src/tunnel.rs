//! `nodelink-bench tunnel`: `nodelink tunnel` against Debian's kcptun, same flags, same run.
//!
//! ```text
//! nodelink-bench tunnel [--quick] [--json] [--runs N] [--settings a,b] [--nodelink PATH]
//! ```
//!
//! Topology, identical for both implementations: the tunnel **client and server each run
//! as their own child process** (`nodelink tunnel client|server` or `kcptun-client` /
//! `kcptun-server`), on loopback, with the same kcptun flags. The TCP target and the TCP
//! clients that drive the load run in this process. Scenarios:
//!
//! * `up_1`: one TCP connection uploads the payload (64 MB; 8 MB with `--quick`) through
//!   the tunnel to the target, which acknowledges once it has it all (client to server:
//!   kcptun's client window, 128 packets, is the limit);
//! * `up_8`: eight connections upload an eighth each, in parallel;
//! * `down_1`, `down_8`: the same payload the other way, target to TCP client (the
//!   server's window, 1024 packets);
//! * `rtt`: one connection, 64-byte messages echoed one after another; p50 and p99.
//!
//! Flag sets (`--settings`): `defaults` (kcptun's), `plain` (no cipher, no FEC, no
//! compression), `fast3` (kcptun's fastest documented tuning: `--mode fast3 --acknodelay
//! --sndwnd 1024 --rcvwnd 1024`), and `impaired` (kcptun's defaults through
//! `nodelink_testkit::UdpRelay` between the tunnel client and server: 10 ms each way, so a
//! 20 ms round trip, and 1 % of datagrams dropped each way, seeded; a quarter of the bulk
//! size, since both tunnels move far less over such a path).
//!
//! The payload is pseudo-random (snappy cannot shrink it), so compression costs CPU and
//! saves nothing, as for already-compressed traffic. Throughput is payload MB (10^6 bytes)
//! per second from the first byte written to the last acknowledgement, after one warm-up
//! round trip has set the KCP session up. CPU is the user + system time of the two tunnel
//! processes over the same span (`/proc/<pid>/stat`), per MB of payload. Ratios are to
//! kcptun in the same run.
//!
//! `nodelink` is found next to this binary (`cargo build --release -p nodelink-cli`) or
//! given with `--nodelink`; kcptun's binaries on PATH (`scripts/install-kcp-deps.sh`).
//! Without them the kcptun figures are skipped with a warning.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use nodelink_testkit::{Impairment, UdpRelay};

use crate::report;
use crate::scenarios::{medians, Figure};

/// Options of `nodelink-bench tunnel`.
#[derive(clap::Args)]
pub struct TunnelArgs {
    /// Small sizes, one run (a smoke test).
    #[arg(long)]
    quick: bool,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
    /// Repeat every measurement N times and report the median (default 3, 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Comma-separated flag sets: defaults (kcptun's), plain (no cipher, no FEC, no
    /// compression), fast3 (kcptun's fast tuning), impaired (defaults over a 20 ms, 1 %
    /// loss path) [default: all; defaults only with --quick].
    #[arg(long, value_delimiter = ',')]
    settings: Vec<String>,
    /// The `nodelink` binary [default: next to this one].
    #[arg(long)]
    nodelink: Option<PathBuf>,
}

/// A flag set, passed unchanged to both implementations, and the path between the tunnel
/// client and server.
struct Setting {
    name: &'static str,
    flags: &'static [&'static str],
    path: Option<Impairment>,
}

const SETTINGS: [Setting; 4] = [
    Setting {
        name: "defaults",
        flags: &[],
        path: None,
    },
    Setting {
        name: "plain",
        flags: &[
            "--crypt",
            "none",
            "--datashard",
            "0",
            "--parityshard",
            "0",
            "--nocomp",
        ],
        path: None,
    },
    Setting {
        name: "fast3",
        flags: &[
            "--mode",
            "fast3",
            "--acknodelay",
            "--sndwnd",
            "1024",
            "--rcvwnd",
            "1024",
        ],
        path: None,
    },
    Setting {
        name: "impaired",
        flags: &[],
        path: Some(Impairment {
            drop: 0.01,
            delay: Duration::from_millis(10),
            seed: 7,
            ..Impairment::NONE
        }),
    },
];

const IMPLS: [&str; 2] = ["nodelink", "kcptun"];
const RTT_MSG: usize = 64;
const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy)]
struct Sizes {
    bulk: usize,
    rtt: usize,
}

/// Runs the tunnel benchmark.
pub async fn run(args: &TunnelArgs) -> Result<()> {
    let sizes = if args.quick {
        Sizes {
            bulk: 8_000_000,
            rtt: 200,
        }
    } else {
        Sizes {
            bulk: 64_000_000,
            rtt: 2000,
        }
    };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let nodelink = nodelink_binary(args.nodelink.as_deref())?;
    let kcptun = which("kcptun-client").zip(which("kcptun-server"));
    if kcptun.is_none() {
        eprintln!("kcptun-client/kcptun-server not on PATH: kcptun figures skipped (scripts/install-kcp-deps.sh)");
    }
    let wanted: Vec<String> = if !args.settings.is_empty() {
        args.settings.clone()
    } else if args.quick {
        vec!["defaults".into()]
    } else {
        SETTINGS.iter().map(|s| s.name.to_string()).collect()
    };
    let target = Target::start().await?;
    let started = Instant::now();
    let mut figures = Vec::new();
    for name in &wanted {
        let setting = SETTINGS.iter().find(|s| s.name == name).with_context(|| {
            format!("unknown setting {name:?} (defaults, plain, fast3, impaired)")
        })?;
        let sizes = if setting.path.is_some() {
            Sizes {
                bulk: sizes.bulk / 4,
                ..sizes
            }
        } else {
            sizes
        };
        let mut all = Vec::new();
        for _ in 0..runs {
            // Interleave implementations run by run, so noise spreads evenly.
            for imp in IMPLS {
                let bins = match imp {
                    "nodelink" => (nodelink.clone(), nodelink.clone()),
                    _ => match &kcptun {
                        Some(k) => k.clone(),
                        None => continue,
                    },
                };
                let t = Instant::now();
                let figs = measure(setting, imp, &bins, sizes, &target)
                    .await
                    .with_context(|| format!("{name} / {imp}"))?;
                eprintln!("  {name:<10} {imp:<10} {:>6.2}s", t.elapsed().as_secs_f64());
                all.extend(figs);
            }
        }
        figures.extend(medians(&all));
    }
    if args.json {
        print!("{}", report::json_lines_against(&figures, |_| "kcptun"));
    } else {
        print!("{}", report::table_against(&figures, |_| "kcptun"));
        println!("(total {:.1}s)", started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn nodelink_binary(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this binary")?
            .join("nodelink"),
    };
    ensure!(
        path.is_file(),
        "{} not found: build it with `cargo build --release -p nodelink-cli` or pass --nodelink",
        path.display()
    );
    Ok(path)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// One implementation's client and server processes, killed on drop, and the relay
/// between them on an impaired path.
struct Pair {
    client: Child,
    server: Child,
    entry: SocketAddr,
    _relay: Option<UdpRelay>,
}

impl Pair {
    async fn start(
        imp: &str,
        bins: &(PathBuf, PathBuf),
        setting: &Setting,
        target: SocketAddr,
    ) -> Result<Pair> {
        let flags = setting.flags;
        // The client dials the relay when there is one, the server otherwise.
        let towards = |server: SocketAddr| async move {
            match setting.path {
                Some(imp) => {
                    let relay = UdpRelay::start(server, imp).await?;
                    Ok::<_, anyhow::Error>((relay.local_addr(), Some(relay)))
                }
                None => Ok((server, None)),
            }
        };
        if imp == "nodelink" {
            let mut server = Command::new(&bins.1);
            server
                .args(["tunnel", "server", "--quiet", "-l", "127.0.0.1:0", "-t"])
                .arg(target.to_string())
                .args(flags);
            let (server, server_addr) = spawn_listening(server).await?;
            let (remote, relay) = towards(server_addr).await?;
            let mut client = Command::new(&bins.0);
            client
                .args(["tunnel", "client", "--quiet", "-l", "127.0.0.1:0", "-r"])
                .arg(remote.to_string())
                .args(flags);
            let (client, entry) = spawn_listening(client).await?;
            return Ok(Pair {
                client,
                server,
                entry,
                _relay: relay,
            });
        }
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let mut server = Command::new(&bins.1);
        server
            .args(["--quiet", "--listen", &udp.to_string(), "--target"])
            .arg(target.to_string())
            .args(flags);
        let server = spawn_quiet(server)?;
        wait_bound(udp, "udp").await?;
        let (remote, relay) = towards(udp).await?;
        let entry = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut client = Command::new(&bins.0);
        client
            .args(["--quiet", "--localaddr", &entry.to_string(), "--remoteaddr"])
            .arg(remote.to_string())
            .args(flags);
        let client = spawn_quiet(client)?;
        wait_bound(entry, "tcp").await?;
        Ok(Pair {
            client,
            server,
            entry,
            _relay: relay,
        })
    }

    fn cpu(&self) -> Result<f64> {
        let pid = |c: &Child| c.id().context("tunnel process already reaped");
        Ok(proc_cpu(pid(&self.client)?)? + proc_cpu(pid(&self.server)?)?)
    }
}

fn spawn_quiet(mut cmd: Command) -> Result<Child> {
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// Starts a `nodelink tunnel` process and reads its `listening on ADDR` line.
async fn spawn_listening(mut cmd: Command) -> Result<(Child, SocketAddr)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut line = String::new();
    tokio::time::timeout(WAIT, out.read_line(&mut line))
        .await
        .context("no `listening on` line")??;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .parse()?;
    // Keep draining stdout so the child never blocks on it.
    tokio::spawn(async move { tokio::io::copy(&mut out, &mut tokio::io::sink()).await });
    Ok((child, addr))
}

/// Waits until the child bound `addr` (`proto` `udp` or `tcp`).
async fn wait_bound(addr: SocketAddr, proto: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !port_bound(proto, addr.port()) {
        if Instant::now() > deadline {
            bail!("nothing bound {addr} within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
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

/// User + system CPU seconds of a process.
fn proc_cpu(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks: u64 = fields.get(11).context("short stat")?.parse::<u64>()?
        + fields.get(12).context("short stat")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// The TCP service behind the tunnel: `U` + u64 length uploads (acknowledged with one byte
/// once all arrived), `D` + u64 length downloads, `E` echoes.
struct Target {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target {
    async fn start() -> Result<Target> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve_target(conn));
            }
        });
        Ok(Target { addr, task })
    }
}

async fn serve_target(mut conn: TcpStream) -> std::io::Result<()> {
    let _ = conn.set_nodelay(true);
    let kind = conn.read_u8().await?;
    if kind == b'D' {
        let len = conn.read_u64_le().await? as usize;
        let data = payload(1 << 20);
        let mut left = len;
        while left > 0 {
            let n = left.min(data.len());
            conn.write_all(&data[..n]).await?;
            left -= n;
        }
    } else if kind == b'U' {
        let mut left = conn.read_u64_le().await?;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            left = left.saturating_sub(n as u64);
        }
        conn.write_u8(1).await?;
    } else {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n]).await?;
        }
    }
    // Hold the connection until the client closes it (kcptun closes both ways on EOF).
    let _ = conn.read(&mut [0u8; 1]).await;
    Ok(())
}

/// Pseudo-random bytes, incompressible for snappy.
fn payload(len: usize) -> Vec<u8> {
    nodelink_testkit::seeded_bytes(0x9E37_79B9, len)
}

async fn measure(
    setting: &Setting,
    imp: &'static str,
    bins: &(PathBuf, PathBuf),
    sizes: Sizes,
    target: &Target,
) -> Result<Vec<Figure>> {
    let pair = Pair::start(imp, bins, setting, target.addr).await?;
    // Warm-up: the first connection sets the KCP session up.
    let mut warm = TcpStream::connect(pair.entry).await?;
    warm.set_nodelay(true)?;
    warm.write_all(b"Ewarm").await?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(WAIT, warm.read_exact(&mut buf))
        .await
        .context("warm-up echo timed out")??;
    drop(warm);

    let mut figures = Vec::new();
    let mut fig = |scenario: &str, metric: &'static str, value: f64| {
        figures.push(Figure {
            scenario: format!("{}_{scenario}", setting.name),
            imp,
            metric,
            value,
        });
    };
    let data = Arc::new(payload(1 << 20));
    let entry = pair.entry;
    for (scenario, down, streams) in [
        ("up_1", false, 1usize),
        ("up_8", false, 8),
        ("down_1", true, 1),
        ("down_8", true, 8),
    ] {
        let cpu0 = pair.cpu()?;
        let t0 = Instant::now();
        let per = sizes.bulk / streams;
        let tasks: Vec<_> = (0..streams)
            .map(|_| {
                let data = Arc::clone(&data);
                tokio::spawn(async move {
                    if down {
                        download(entry, per).await
                    } else {
                        upload(entry, per, data).await
                    }
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(300), t)
                .await
                .context("transfer timed out")???;
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = pair.cpu()? - cpu0;
        let mb = (per * streams) as f64 / 1e6;
        fig(scenario, "mb_per_s", mb / secs);
        fig(scenario, "cpu_s_per_mb", cpu / mb);
    }
    let (p50, p99) = rtt(pair.entry, sizes.rtt).await?;
    fig("rtt", "p50_us", p50);
    fig("rtt", "p99_us", p99);
    Ok(figures)
}

async fn upload(entry: SocketAddr, len: usize, data: Arc<Vec<u8>>) -> Result<()> {
    let mut conn = TcpStream::connect(entry).await?;
    conn.write_u8(b'U').await?;
    conn.write_u64_le(len as u64).await?;
    let mut left = len;
    while left > 0 {
        let n = left.min(data.len());
        conn.write_all(&data[..n]).await?;
        left -= n;
    }
    let ack = conn.read_u8().await?;
    ensure!(ack == 1, "bad acknowledgement");
    Ok(())
}

async fn download(entry: SocketAddr, len: usize) -> Result<()> {
    let mut conn = TcpStream::connect(entry).await?;
    conn.write_u8(b'D').await?;
    conn.write_u64_le(len as u64).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = conn.read(&mut buf).await?;
        ensure!(n > 0, "download ended after {} of {len} bytes", len - left);
        left = left.saturating_sub(n);
    }
    Ok(())
}

async fn rtt(entry: SocketAddr, count: usize) -> Result<(f64, f64)> {
    let mut conn = TcpStream::connect(entry).await?;
    conn.set_nodelay(true)?;
    conn.write_u8(b'E').await?;
    let msg = payload(RTT_MSG);
    let mut back = vec![0u8; RTT_MSG];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        conn.write_all(&msg).await?;
        tokio::time::timeout(WAIT, conn.read_exact(&mut back))
            .await
            .context("echo timed out")??;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        ensure!(back == msg, "echo differs");
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.50), at(0.99)))
}
