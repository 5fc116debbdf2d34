//! `nodelink-bench kcp`: nodelink-kcp against the real kcp-go (and tokio_kcp), on loopback.
//!
//! ```text
//! nodelink-bench kcp [--quick] [--json] [--runs N] [--scenarios a,b,..] [--go-peer PATH]
//! ```
//!
//! Topology, the same for every implementation: the **server always runs in its own
//! process** (kcp-go's `kcp-go-peer echo-server`, or this binary's hidden
//! `kcp --serve IMPL`), the **client** runs in this process for the Rust implementations
//! and as a `kcp-go-peer client`/`rtt` child for kcp-go. CPU time is client + server
//! process CPU (user + system) over the transfer only (after the connection is set up and
//! the payload generated): `/proc/<pid>/stat` for servers and this process, `getrusage`
//! inside the Go client. This process's figure includes its (idle) tokio runtime and the
//! harness's counting global allocator, which slightly disfavours the Rust clients.
//!
//! The Go peer is `target/kcp-go-peer`, built by `scripts/install-kcp-deps.sh` (it needs
//! the `rtt` subcommand and the `cpu_s` field); Go implementations are skipped when it is
//! missing. Ratios are to `kcp_go` (to `tokio_kcp` in `kcp_tokio_kcp`, to plain UDP in
//! `kcp_oneway`, see `kcp_oneway.rs`).

use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nodelink_kcp::crypt::CipherKind;
use nodelink_kcp::{Config as KcpConfig, KcpListener, KcpStream, Mode};
use nodelink_testkit::{Impairment, UdpRelay};

use crate::kcp_oneway;
use crate::report;
use crate::scenarios::{medians, Figure};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Arguments of the `kcp` subcommand.
#[derive(clap::Args)]
pub struct KcpArgs {
    /// Small sizes, one run (a smoke test).
    #[arg(long)]
    quick: bool,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
    /// Repeat every measurement N times and report the median (default 3, 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Comma-separated scenario ids (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// The kcp-go peer binary (default: `$KCP_GO_PEER` or `target/kcp-go-peer`).
    #[arg(long)]
    go_peer: Option<PathBuf>,
    /// Internal: run an echo server of this implementation and print `listening on ADDR`.
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// Internal: the server's settings.
    #[arg(long, hide = true, value_enum, default_value_t = Setting::AesFec)]
    setting: Setting,
}

/// Session settings shared by both ends of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Setting {
    /// kcptun defaults: `aes`, FEC 10/3.
    AesFec,
    /// `none` cipher (nonce + CRC header), no FEC.
    None,
    /// No crypto header at all, no FEC: plain KCP segments (tokio_kcp's wire format).
    Null,
}

impl Setting {
    fn name(self) -> &'static str {
        match self {
            Setting::AesFec => "aes-fec",
            Setting::None => "none",
            Setting::Null => "null",
        }
    }

    /// kcptun's windows: client 128/512, server 1024/1024.
    fn windows(server: bool) -> (u16, u16) {
        if server {
            (1024, 1024)
        } else {
            (128, 512)
        }
    }

    pub(crate) fn config(self, server: bool) -> KcpConfig {
        let (snd, rcv) = Setting::windows(server);
        let base = KcpConfig::default()
            .with_mode(Mode::Fast)
            .with_mtu(1350)
            .with_window(snd, rcv);
        match self {
            Setting::AesFec => base.with_crypt(CipherKind::Aes).with_fec(10, 3),
            Setting::None => base.with_crypt(CipherKind::None).with_fec(0, 0),
            Setting::Null => base.with_crypt(CipherKind::Null).with_fec(0, 0),
        }
    }

    /// kcp-go-peer flags (kcp-go 5.6.1 has no `null` cipher).
    fn go_flags(self, server: bool) -> Vec<String> {
        let (crypt, ds, ps) = match self {
            Setting::AesFec => ("aes", 10, 3),
            Setting::None | Setting::Null => ("none", 0, 0),
        };
        let (snd, rcv) = Setting::windows(server);
        [
            "--crypt".to_string(),
            crypt.to_string(),
            "--ds".to_string(),
            ds.to_string(),
            "--ps".to_string(),
            ps.to_string(),
            "--mode".to_string(),
            "fast".to_string(),
            "--mtu".to_string(),
            "1350".to_string(),
            "--sndwnd".to_string(),
            snd.to_string(),
            "--rcvwnd".to_string(),
            rcv.to_string(),
        ]
        .into()
    }

    /// tokio_kcp with kcptun's `fast` preset, stream mode, flush on write (as kcp-go's
    /// `SetWriteDelay(false)`), ACKs at the next interval (as `acknodelay` off).
    fn tokio_config(server: bool) -> tokio_kcp::KcpConfig {
        tokio_kcp::KcpConfig {
            mtu: 1350,
            nodelay: tokio_kcp::KcpNoDelayConfig {
                nodelay: false,
                interval: 30,
                resend: 2,
                nc: true,
            },
            wnd_size: Setting::windows(server),
            flush_write: true,
            flush_acks_input: false,
            stream: true,
            ..tokio_kcp::KcpConfig::default()
        }
    }
}

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    EchoAesFec,
    EchoNone,
    Rtt,
    TokioKcp,
    Loss5,
    OneWay,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::EchoAesFec,
        Scenario::EchoNone,
        Scenario::Rtt,
        Scenario::TokioKcp,
        Scenario::Loss5,
        Scenario::OneWay,
    ];

    fn id(self) -> &'static str {
        match self {
            Scenario::EchoAesFec => "kcp_echo_aes_fec",
            Scenario::EchoNone => "kcp_echo_none",
            Scenario::Rtt => "kcp_rtt",
            Scenario::TokioKcp => "kcp_tokio_kcp",
            Scenario::Loss5 => "kcp_loss_5pct",
            Scenario::OneWay => "kcp_oneway",
        }
    }

    fn baseline(self) -> &'static str {
        match self {
            Scenario::TokioKcp => "tokio_kcp",
            Scenario::OneWay => "raw_udp",
            _ => "kcp_go",
        }
    }

    fn impls(self) -> &'static [&'static str] {
        match self {
            Scenario::EchoAesFec | Scenario::EchoNone => &[
                "kcp_go",
                "nodelink_kcp",
                "nodelink_kcp_vs_go",
                "kcp_go_vs_nodelink",
            ],
            Scenario::Rtt | Scenario::Loss5 => &["kcp_go", "nodelink_kcp"],
            Scenario::TokioKcp => &["tokio_kcp", "nodelink_kcp"],
            Scenario::OneWay => &["raw_udp", "nodelink_kcp"],
        }
    }
}

/// Work per scenario.
#[derive(Clone, Copy)]
struct Sizes {
    bytes: usize,
    rtt: usize,
    loss_rtt: usize,
}

/// Runs the `kcp` subcommand (the benchmark, or a hidden server).
pub async fn run(args: &KcpArgs) -> Result<()> {
    if let Some(imp) = &args.serve {
        return serve(imp, args.setting).await;
    }
    let sizes = if args.quick {
        Sizes {
            bytes: 2_000_000,
            rtt: 200,
            loss_rtt: 200,
        }
    } else {
        Sizes {
            bytes: 16_000_000,
            rtt: 1000,
            loss_rtt: 500,
        }
    };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let go = go_peer(args);
    if go.is_none() {
        eprintln!("kcp-go-peer not found: kcp-go figures skipped (scripts/install-kcp-deps.sh)");
    }
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios
            .iter()
            .map(|s| {
                Scenario::ALL
                    .into_iter()
                    .find(|c| c.id() == s)
                    .with_context(|| format!("unknown scenario {s:?}"))
            })
            .collect::<Result<_>>()?
    };
    let started = Instant::now();
    let mut figures = Vec::new();
    for scenario in scenarios {
        let mut all = Vec::new();
        for _ in 0..runs {
            // Interleave implementations run by run, so noise spreads evenly.
            for &imp in scenario.impls() {
                if imp.contains("go") && go.is_none() {
                    continue;
                }
                let t = Instant::now();
                let figs = measure(scenario, imp, sizes, go.as_ref())
                    .await
                    .with_context(|| format!("{} / {imp}", scenario.id()))?;
                eprintln!(
                    "  {:<24} {:<20} {:>6.2}s",
                    scenario.id(),
                    imp,
                    t.elapsed().as_secs_f64()
                );
                all.extend(figs);
            }
        }
        figures.extend(medians(&all));
    }
    if args.json {
        print!("{}", report::json_lines_against(&figures, baseline_of));
    } else {
        print!("{}", report::table_against(&figures, baseline_of));
        println!("(total {:.1}s)", started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn go_peer(args: &KcpArgs) -> Option<PathBuf> {
    let path = args
        .go_peer
        .clone()
        .or_else(|| std::env::var_os("KCP_GO_PEER").map(PathBuf::from))
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kcp-go-peer")
        });
    path.is_file().then_some(path)
}

async fn measure(
    scenario: Scenario,
    imp: &'static str,
    sizes: Sizes,
    go: Option<&PathBuf>,
) -> Result<Vec<Figure>> {
    let id = scenario.id();
    let fig = |metric, value| Figure {
        scenario: id.to_string(),
        imp,
        metric,
        value,
    };
    match scenario {
        // Four times the echo size: both go several times faster one way.
        Scenario::OneWay => kcp_oneway::measure(id, imp, sizes.bytes * 4).await,
        Scenario::EchoAesFec | Scenario::EchoNone | Scenario::TokioKcp => {
            let setting = match scenario {
                Scenario::EchoAesFec => Setting::AesFec,
                Scenario::EchoNone => Setting::None,
                _ => Setting::Null,
            };
            let go_server = imp == "kcp_go" || imp == "nodelink_kcp_vs_go";
            let server = match (go_server, go) {
                (true, Some(go)) => Server::go(go, setting).await?,
                (true, None) => bail!("no kcp-go peer"),
                (false, _) => {
                    Server::rust(
                        if imp == "tokio_kcp" {
                            "tokio_kcp"
                        } else {
                            "nodelink_kcp"
                        },
                        setting,
                    )
                    .await?
                }
            };
            let n = sizes.bytes;
            let (secs, client_cpu) = match imp {
                "kcp_go" | "kcp_go_vs_nodelink" => {
                    let go = go.context("no kcp-go peer")?;
                    let mut cmd = go_cmd(go, "client", server.addr.as_str(), setting);
                    cmd.args(["--bytes", &n.to_string(), "--timeout", "300"]);
                    let out = run_json(cmd).await?;
                    ensure!(out["ok"] == true, "kcp-go client: echo mismatch: {out}");
                    (num(&out, "seconds")?, num(&out, "cpu_s")?)
                }
                "tokio_kcp" => {
                    let addr = server.addr.parse()?;
                    let s = tokio_kcp::KcpStream::connect(&Setting::tokio_config(false), addr)
                        .await
                        .map_err(io::Error::from)?;
                    throughput(s, n).await?
                }
                _ => {
                    let s = KcpStream::connect(server.addr.as_str(), setting.config(false)).await?;
                    throughput(s, n).await?
                }
            };
            let server_cpu = server.cpu()?;
            server.stop().await;
            let mb = n as f64 / 1e6;
            Ok(vec![
                fig("mb_per_s", mb / secs),
                fig("cpu_s_per_mb", (client_cpu + server_cpu) / mb),
            ])
        }
        Scenario::Rtt | Scenario::Loss5 => {
            let setting = Setting::AesFec;
            let server = match imp {
                "kcp_go" => Server::go(go.context("no kcp-go peer")?, setting).await?,
                _ => Server::rust("nodelink_kcp", setting).await?,
            };
            let mut out = Vec::new();
            let drops: &[f64] = if scenario == Scenario::Rtt {
                &[0.0]
            } else {
                &[0.0, 0.05]
            };
            for &drop in drops {
                // The loss scenario goes through the relay both loss-free and with loss.
                let relay = if scenario == Scenario::Loss5 {
                    let imp = Impairment {
                        drop,
                        seed: 42,
                        ..Impairment::NONE
                    };
                    Some(UdpRelay::start(server.addr.parse()?, imp).await?)
                } else {
                    None
                };
                let target = relay
                    .as_ref()
                    .map_or_else(|| server.addr.clone(), |r| r.local_addr().to_string());
                let count = if scenario == Scenario::Rtt {
                    sizes.rtt
                } else {
                    sizes.loss_rtt
                };
                let (p50, p99) = if imp == "kcp_go" {
                    let go = go.context("no kcp-go peer")?;
                    let mut cmd = go_cmd(go, "rtt", &target, setting);
                    cmd.args(["--count", &count.to_string(), "--timeout", "300"]);
                    let o = run_json(cmd).await?;
                    (num(&o, "p50_us")?, num(&o, "p99_us")?)
                } else {
                    let s = KcpStream::connect(target.as_str(), setting.config(false)).await?;
                    rtt(s, count).await?
                };
                if drop == 0.0 && scenario == Scenario::Loss5 {
                    out.push(fig("p99_us_no_loss", p99));
                } else {
                    out.push(fig("p50_us", p50));
                    out.push(fig("p99_us", p99));
                }
            }
            server.stop().await;
            Ok(out)
        }
    }
}

/// Echoes `n` pseudo-random bytes, checks them; returns (seconds, this process's CPU s).
async fn throughput<S>(stream: S, n: usize) -> Result<(f64, f64)>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let data = Arc::new(pattern(n));
    let (mut rd, mut wr) = tokio::io::split(stream);
    let cpu0 = proc_cpu("self")?;
    let t = Instant::now();
    let to_send = Arc::clone(&data);
    let writer = tokio::spawn(async move {
        for chunk in to_send.chunks(65536) {
            wr.write_all(chunk).await?;
        }
        wr.flush().await?;
        Ok::<_, io::Error>(wr)
    });
    let mut got = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(300), rd.read_exact(&mut got))
        .await
        .context("echo timed out")??;
    let secs = t.elapsed().as_secs_f64();
    let _wr = writer.await??;
    ensure!(got == *data, "echo mismatch");
    let cpu = proc_cpu("self")? - cpu0;
    Ok((secs, cpu))
}

/// Serial 64-byte round trips after 10 warm-up ones: (p50 µs, p99 µs).
async fn rtt<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, count: usize) -> Result<(f64, f64)> {
    let msg = pattern(64);
    let mut buf = [0u8; 64];
    let mut times = Vec::with_capacity(count);
    for i in 0..count + 10 {
        let t = Instant::now();
        s.write_all(&msg).await?;
        tokio::time::timeout(Duration::from_secs(60), s.read_exact(&mut buf))
            .await
            .context("round trip timed out")??;
        ensure!(buf[..] == msg[..], "echo mismatch");
        if i >= 10 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((p * times.len() as f64) as usize).min(times.len() - 1)];
    Ok((pct(0.50), pct(0.99)))
}

fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

/// An echo server (or a one-way sink) in a child process.
pub(crate) struct Server {
    child: Child,
    pid: u32,
    pub(crate) addr: String,
    cpu0: f64,
}

impl Server {
    async fn go(go: &PathBuf, setting: Setting) -> Result<Server> {
        let mut cmd = Command::new(go);
        cmd.args(["echo-server", "--listen", "127.0.0.1:0"])
            .args(setting.go_flags(true));
        Server::spawn(cmd).await
    }

    pub(crate) async fn rust(imp: &str, setting: Setting) -> Result<Server> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["kcp", "--serve", imp, "--setting", setting.name()]);
        Server::spawn(cmd).await
    }

    async fn spawn(mut cmd: Command) -> Result<Server> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("server exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected server output {line:?}"))?
            .to_string();
        let cpu0 = proc_cpu(&pid.to_string())?;
        Ok(Server {
            child,
            pid,
            addr,
            cpu0,
        })
    }

    /// CPU seconds the server used since it started listening.
    pub(crate) fn cpu(&self) -> Result<f64> {
        Ok(proc_cpu(&self.pid.to_string())? - self.cpu0)
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// User + system CPU seconds of a process (`self` or a pid), from `/proc/<pid>/stat`
/// (clock ticks of 1/100 s, Linux's `USER_HZ`).
pub(crate) fn proc_cpu(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
    let ticks: u64 = fields.get(11).context("short stat")?.parse::<u64>()?
        + fields.get(12).context("short stat")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

fn go_cmd(go: &PathBuf, sub: &str, addr: &str, setting: Setting) -> Command {
    let mut cmd = Command::new(go);
    cmd.args([sub, addr]).args(setting.go_flags(false));
    cmd
}

async fn run_json(mut cmd: Command) -> Result<serde_json::Value> {
    let out = cmd.stdin(Stdio::null()).output().await?;
    ensure!(
        out.status.success(),
        "kcp-go-peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let line = text.lines().last().context("no output")?;
    Ok(serde_json::from_str(line)?)
}

fn num(v: &serde_json::Value, key: &str) -> Result<f64> {
    v[key]
        .as_f64()
        .with_context(|| format!("no {key} in kcp-go-peer output {v}"))
}

/// The hidden server: echoes every stream (or sinks one-way traffic) until killed.
async fn serve(imp: &str, setting: Setting) -> Result<()> {
    match imp {
        "sink_udp" | "sink_kcp" => kcp_oneway::serve(imp, setting).await,
        "nodelink_kcp" => {
            let mut l = KcpListener::bind("127.0.0.1:0", setting.config(true)).await?;
            println!("listening on {}", l.local_addr());
            loop {
                let (s, _) = l.accept().await?;
                tokio::spawn(echo(s));
            }
        }
        "tokio_kcp" => {
            let mut l = tokio_kcp::KcpListener::bind(Setting::tokio_config(true), "127.0.0.1:0")
                .await
                .map_err(io::Error::from)?;
            println!("listening on {}", l.local_addr()?);
            loop {
                let (s, _) = l.accept().await.map_err(io::Error::from)?;
                tokio::spawn(echo(s));
            }
        }
        _ => bail!("unknown KCP server implementation {imp:?}"),
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if s.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The implementation a KCP figure is compared with: its scenario's baseline.
fn baseline_of(f: &Figure) -> &'static str {
    Scenario::ALL
        .into_iter()
        .find(|s| s.id() == f.scenario)
        .map_or("kcp_go", Scenario::baseline)
}
