//! `nodelink ping`: round trips to a node, with latency percentiles and throughput.
//!
//! * `--size 0` (the default) sends NEO's Ping (code 2, empty) and expects Pong (0x8002),
//!   so it works against any NEO node.
//! * `--size N` sends code [`ECHO_CODE`] (0x0100) with N pseudo-random bytes (from a fixed
//!   seed, so runs of one build send the same bytes) and expects the same bytes back with
//!   code 0x8100, which
//!   is what `nodelink serve` does.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use nodelink::{Config, Conn, ErrorMessage, Link, Message, Ping, Pong, ANSWER_BIT};
use tokio::task::JoinSet;

use crate::cli::{PingArgs, PingMode};
use crate::kcp_args::{self, Side};
use crate::out::say;
use crate::stats::{per_second, Summary};
use crate::tls_args;

/// Request code of payload-carrying pings; the answer is `ECHO_CODE | 0x8000` (0x8100).
pub const ECHO_CODE: u16 = 0x0100;

/// Seed of the pseudo-random payloads (each worker adds its index).
const PAYLOAD_SEED: u64 = 0x6e6f_6465_6c69_6e6b; // "nodelink"

/// How long one request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Progress bars appear from this many requests on.
const PROGRESS_FROM: u64 = 1000;

/// `size` pseudo-random bytes from `seed` (rand's seeded `StdRng`): the same seed gives the
/// same bytes.
pub fn payload(size: usize, seed: u64) -> Bytes {
    let mut out = vec![0u8; size];
    StdRng::seed_from_u64(seed).fill_bytes(&mut out);
    Bytes::from(out)
}

/// What one request sends.
#[derive(Clone)]
pub enum Probe {
    /// NEO's Ping, expecting Pong.
    Ping,
    /// [`ECHO_CODE`] with this payload, expecting it echoed.
    Echo(Bytes),
}

impl Probe {
    /// The probe for `size` payload bytes; `seed` picks the bytes.
    pub fn new(size: usize, seed: u64) -> Probe {
        if size == 0 {
            Probe::Ping
        } else {
            Probe::Echo(payload(size, seed))
        }
    }

    /// One round trip in lightweight mode.
    pub async fn ask1(&self, link: &Link) -> anyhow::Result<()> {
        match self {
            Probe::Ping => {
                let _: Pong = link.ask1(&Ping).await?;
                Ok(())
            }
            Probe::Echo(sent) => {
                let answer = link.ask1_packet(ECHO_CODE, sent.clone()).await?;
                check_echo(sent, answer.code, &answer.payload)
            }
        }
    }

    /// One round trip on a full connection.
    pub async fn on_conn(&self, conn: &Conn) -> anyhow::Result<()> {
        match self {
            Probe::Ping => {
                let _: Pong = conn.ask(&Ping).await?;
                Ok(())
            }
            Probe::Echo(sent) => {
                conn.send_packet(ECHO_CODE, sent.clone()).await?;
                let answer = conn.recv().await?;
                if answer.code == ErrorMessage::CODE {
                    let e = ErrorMessage::decode(answer.payload)
                        .map_err(|e| anyhow!("undecodable Error answer: {e}"))?;
                    bail!("conn {}: the peer answered with an error: {e}", conn.id());
                }
                check_echo(sent, answer.code, &answer.payload)
                    .with_context(|| format!("conn {}", conn.id()))
            }
        }
    }
}

/// Checks that an echo answer has the right code and exactly the payload sent.
fn check_echo(sent: &Bytes, code: u16, got: &Bytes) -> anyhow::Result<()> {
    let want = ECHO_CODE | ANSWER_BIT;
    if code != want {
        bail!("answer has code {code:#06x}, expected {want:#06x}");
    }
    if got != sent {
        let at = sent
            .iter()
            .zip(got.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(sent.len().min(got.len()));
        bail!(
            "echoed payload differs from the request: sent {} bytes, got {} bytes, first difference at byte {at}",
            sent.len(),
            got.len()
        );
    }
    Ok(())
}

/// What one worker did.
#[derive(Default)]
struct WorkerReport {
    samples: Vec<Duration>,
    errors: u64,
    first_error: Option<anyhow::Error>,
}

impl WorkerReport {
    fn fail(&mut self, e: anyhow::Error, count: u64) {
        self.errors += count;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

/// Whether `e` means the link is unusable, so further requests would fail as well.
fn link_gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<nodelink::Error>()
        .is_some_and(|e| e.is_link_gone())
}

/// Runs `share` requests one after another, timing each.
async fn worker(
    link: Link,
    mode: PingMode,
    probe: Probe,
    share: u64,
    bar: ProgressBar,
) -> WorkerReport {
    let mut report = WorkerReport {
        samples: Vec::with_capacity(share as usize),
        ..WorkerReport::default()
    };
    let mut conn: Option<Conn> = None;
    for done in 0..share {
        if mode == PingMode::Conn && conn.is_none() {
            match link.open() {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    report.fail(anyhow!(e).context("cannot open a connection"), share - done);
                    break;
                }
            }
        }
        let start = Instant::now();
        let round_trip = async {
            match &conn {
                Some(c) => probe.on_conn(c).await,
                None => probe.ask1(&link).await,
            }
        };
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, round_trip).await {
            Ok(r) => r,
            Err(_) => {
                // A late answer would be taken for the next one: start a fresh connection.
                let on = conn
                    .take()
                    .map_or(String::new(), |c| format!(" on conn {}", c.id()));
                Err(anyhow!("no answer{on} within {REQUEST_TIMEOUT:?}"))
            }
        };
        let elapsed = start.elapsed();
        bar.inc(1);
        match result {
            Ok(()) => report.samples.push(elapsed),
            Err(e) if link_gone(&e) => {
                report.fail(e, share - done);
                break;
            }
            Err(e) => report.fail(e, 1),
        }
    }
    report
}

fn progress_bar(count: u64) -> ProgressBar {
    if count < PROGRESS_FROM {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(count);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} requests, {per_sec} ({eta})")
    {
        bar.set_style(style);
    }
    bar
}

/// Runs `nodelink ping`.
pub async fn run(args: PingArgs) -> anyhow::Result<()> {
    if args.json {
        crate::out::use_json();
    }
    if args.size > nodelink::MAX_PAYLOAD_LEN {
        bail!(
            "--size {}: a packet carries at most {} payload bytes",
            args.size,
            nodelink::MAX_PAYLOAD_LEN
        );
    }
    let dialect: nodelink::Dialect = args.dialect.into();
    if dialect == nodelink::Dialect::NeoPy && args.mode == PingMode::Conn {
        bail!(
            "--mode conn needs multi-message connections, which the neo-py dialect does not \
             have (one request, at most one answer): use --mode ask1"
        );
    }
    let tls = args.tls.settings()?;
    let kcp = args.kcp.session(Side::Client)?;
    let config = Config::default()
        .with_version(args.protocol_version)
        .with_dialect(dialect);
    let link = match kcp {
        Some(session) => kcp_args::connect(&args.addr, session, config).await?,
        None => tls_args::connect(&args.addr, config, tls.as_ref()).await?,
    };
    // ping only asks: a connection the node opens towards us is refused at once rather
    // than left waiting in the accept backlog (which would pause the link once full).
    link.close_accept();

    let what = if args.size == 0 {
        "Ping/Pong (code 2)".to_string()
    } else {
        format!(
            "{} payload bytes (code {ECHO_CODE:#06x}, echoed)",
            args.size
        )
    };
    say!(
        "ping {}: {} requests, {what}, mode {}, concurrency {}",
        args.addr,
        args.count,
        args.mode.name(),
        args.concurrency
    );

    let bar = progress_bar(args.count);
    let workers = u64::from(args.concurrency);
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for w in 0..workers {
        let share = args.count / workers + u64::from(w < args.count % workers);
        if share == 0 {
            continue;
        }
        let probe = Probe::new(args.size, PAYLOAD_SEED.wrapping_add(w));
        tasks.spawn(worker(link.clone(), args.mode, probe, share, bar.clone()));
    }
    let mut samples = Vec::with_capacity(args.count as usize);
    let mut errors = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let mut report = joined.map_err(|e| anyhow!("a worker failed: {e}"))?;
        samples.append(&mut report.samples);
        errors += report.errors;
        if first_error.is_none() {
            first_error = report.first_error;
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    link.close().await;

    let ok = samples.len() as u64;
    let summary = Summary::of(&mut samples);
    crate::out::json(&serde_json::json!({
        "command": "ping",
        "addr": args.addr,
        "mode": args.mode.name(),
        "dialect": if matches!(args.dialect, crate::cli::DialectArg::NeoPy) { "neo-py" } else { "neo-go" },
        "size": args.size,
        "concurrency": args.concurrency,
        "requests": args.count,
        "answers": ok,
        "errors": errors,
        "elapsed_s": elapsed.as_secs_f64(),
        "requests_per_s": per_second(ok, elapsed),
        "rtt_us": summary.map(|s| s.to_json()),
    }))?;
    if let Some(s) = summary {
        say!(
            "rtt: p50 {:.1} µs, p99 {:.1} µs, mean {:.1} µs, max {:.1} µs",
            s.p50_us,
            s.p99_us,
            s.mean_us,
            s.max_us
        );
        say!(
            "throughput: {:.0} req/s ({ok} answers in {:.3} s)",
            per_second(ok, elapsed),
            elapsed.as_secs_f64()
        );
    }
    say!("{} requests, {errors} errors", args.count);
    match first_error {
        Some(e) if errors > 0 => Err(e.context(format!(
            "{errors} of {} requests failed; the first failure",
            args.count
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_deterministic() {
        assert_eq!(payload(0, 1).len(), 0);
        assert_eq!(payload(13, 1).len(), 13);
        assert_eq!(payload(1000, 7), payload(1000, 7));
        assert_ne!(payload(1000, 7), payload(1000, 8));
        assert_eq!(payload(1000, 7)[..10], payload(10, 7)[..]);
    }

    #[test]
    fn echo_check() {
        let p = payload(100, 1);
        assert!(check_echo(&p, 0x8100, &p).is_ok());
        let e = check_echo(&p, 0x8000, &p).unwrap_err().to_string();
        assert!(e.contains("0x8000"), "{e}");
        let mut other = p.to_vec();
        other[42] ^= 1;
        let e = check_echo(&p, 0x8100, &Bytes::from(other))
            .unwrap_err()
            .to_string();
        assert!(e.contains("byte 42"), "{e}");
        let e = check_echo(&p, 0x8100, &p.slice(..50))
            .unwrap_err()
            .to_string();
        assert!(e.contains("got 50 bytes"), "{e}");
    }
}
