//! `--metrics ADDR`: a server's counters at `http://ADDR/metrics`, read while it runs, in the
//! OpenMetrics text format that Prometheus scrapes (encoded by `prometheus-client`: each
//! scrape takes a fresh snapshot of the command's counters through a collector).
//!
//! One GET endpoint needs no web framework: this is a small HTTP/1.1 responder written for
//! hostile clients like every other listener of the tool: a request head of at most 8 KiB
//! read within 5 s, at most 32 scrapes at once, `Connection: close`. Anything but
//! `GET /metrics` gets a 404. Besides the command's own figures, every server exports the
//! usual process metrics (resident memory, open descriptors, CPU seconds).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Whether a figure only grows or goes up and down.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One exported figure.
pub struct Metric {
    /// Prometheus name, such as `nodelink_links`.
    pub name: String,
    /// One line of explanation.
    pub help: String,
    pub kind: Kind,
    pub value: f64,
}

impl Metric {
    pub fn counter(name: impl Into<String>, help: impl Into<String>, value: u64) -> Metric {
        Metric {
            name: name.into(),
            help: help.into(),
            kind: Kind::Counter,
            value: value as f64,
        }
    }

    pub fn gauge(name: impl Into<String>, help: impl Into<String>, value: f64) -> Metric {
        Metric {
            name: name.into(),
            help: help.into(),
            kind: Kind::Gauge,
            value,
        }
    }
}

/// What a command exports: called on every scrape.
pub type Collect = Arc<dyn Fn() -> Vec<Metric> + Send + Sync>;

const MAX_HEAD: usize = 8 << 10;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_SCRAPES: usize = 32;

/// Binds `addr`, prints `metrics on http://ADDR/metrics` and serves scrapes until `stop`.
pub async fn start(
    addr: &str,
    collect: Collect,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let local = listener.local_addr()?;
    crate::out::line(format_args!("metrics on http://{local}/metrics"))?;
    let scrapes = Arc::new(Semaphore::new(MAX_SCRAPES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = Arc::clone(&scrapes).try_acquire_owned() else {
                continue; // too many scrapes at once: this one is dropped
            };
            let collect = Arc::clone(&collect);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(HEAD_TIMEOUT, answer(stream, &collect)).await;
                drop(permit);
            });
        }
    });
    Ok(local)
}

async fn answer(mut stream: TcpStream, collect: &Collect) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let wanted = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
    let (status, body) = if wanted {
        ("200 OK", render(collect()))
    } else {
        (
            "404 Not Found",
            "only GET /metrics is served here\n".to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; \
         charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The OpenMetrics text of `metrics` and the process metrics.
fn render(metrics: Vec<Metric>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Snapshot(metrics)));
    registry.register_collector(Box::new(Snapshot(process())));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out = "# the metrics could not be encoded\n".into();
    }
    out
}

/// One scrape's figures, as a `prometheus-client` collector.
#[derive(Debug)]
struct Snapshot(Vec<Metric>);

impl std::fmt::Debug for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.value)
    }
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        for m in &self.0 {
            match m.kind {
                Kind::Counter => {
                    // OpenMetrics names the family without `_total` and adds it to the sample.
                    let name = m.name.strip_suffix("_total").unwrap_or(&m.name);
                    let value = m.value.max(0.0);
                    // Whole counts print as integers; fractional ones (CPU seconds) keep
                    // their fraction.
                    if value.fract() == 0.0 && value < 9.0e15 {
                        encode_counter(&mut encoder, name, &m.help, value as u64)?;
                    } else {
                        encode_counter(&mut encoder, name, &m.help, value)?;
                    }
                }
                Kind::Gauge => {
                    let gauge = ConstGauge::new(m.value);
                    let e =
                        encoder.encode_descriptor(&m.name, &m.help, None, gauge.metric_type())?;
                    gauge.encode(e)?;
                }
            }
        }
        Ok(())
    }
}

/// Encodes one counter family with its single sample.
fn encode_counter<N>(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    prometheus_client::metrics::counter::ConstCounter<N>: prometheus_client::encoding::EncodeMetric,
{
    use prometheus_client::encoding::EncodeMetric;
    let counter = prometheus_client::metrics::counter::ConstCounter::new(value);
    let e = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(e)
}

/// The usual process metrics, from /proc.
fn process() -> Vec<Metric> {
    let mut v = Vec::new();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let rss_kib = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok());
        if let Some(kib) = rss_kib {
            v.push(Metric::gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                kib * 1024.0,
            ));
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        v.push(Metric::gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as f64,
        ));
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            v.push(Metric {
                name: "process_cpu_seconds_total".into(),
                help: "Total user and system CPU time spent in seconds.".into(),
                kind: Kind::Counter,
                value: (user + system) / 100.0,
            });
        }
    }
    v
}

/// KCP's process-wide counters (kcp-go's SNMP names) as metrics.
pub fn kcp_snmp() -> Vec<Metric> {
    nodelink_kcp::snmp()
        .fields()
        .into_iter()
        .map(|(name, value)| {
            let metric = format!("nodelink_kcp_{}", snake(name));
            match name {
                // Sessions open now, and the most open at once: levels, not counts.
                "CurrEstab" | "MaxConn" => Metric::gauge(
                    metric,
                    format!("KCP's {name} (kcp-go's SNMP), all sessions of the process."),
                    value as f64,
                ),
                _ => Metric::counter(
                    metric,
                    format!("KCP's {name} counter (kcp-go's SNMP), all sessions of the process."),
                    value,
                ),
            }
        })
        .collect()
}

/// `InCsumErrors` → `in_csum_errors`.
fn snake(camel: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = camel.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        let prev_lower = i > 0 && chars[i - 1].is_lowercase();
        if c.is_uppercase() && i > 0 && (prev_lower || next_lower) {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_names_become_snake_case() {
        assert_eq!(snake("InCsumErrors"), "in_csum_errors");
        assert_eq!(snake("BytesSent"), "bytes_sent");
        assert_eq!(snake("FECRecovered"), "fec_recovered");
        assert_eq!(snake("KCPInErrors"), "kcp_in_errors");
    }

    #[test]
    fn render_writes_help_type_and_value() {
        let text = render(vec![
            Metric::counter("nodelink_x_total", "Things.", 7),
            Metric::gauge("nodelink_y", "Now.", 2.0),
        ]);
        for line in [
            "# HELP nodelink_x Things.\n# TYPE nodelink_x counter\nnodelink_x_total 7\n",
            "# TYPE nodelink_y gauge\nnodelink_y 2.0\n",
            "# TYPE process_resident_memory_bytes gauge\n",
        ] {
            assert!(text.contains(line), "{line:?} missing: {text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn fractional_counters_keep_their_fraction() {
        let cpu = Metric {
            name: "process_cpu_seconds_total".into(),
            help: "CPU.".into(),
            kind: Kind::Counter,
            value: 0.37,
        };
        let text = render(vec![cpu]);
        assert!(
            text.contains("\nprocess_cpu_seconds_total 0.37\n"),
            "{text}"
        );
    }

    #[test]
    fn kcp_session_levels_are_gauges() {
        let metrics = kcp_snmp();
        let kind = |n: &str| {
            metrics
                .iter()
                .find(|m| m.name == n)
                .map(|m| m.kind)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        assert!(matches!(kind("nodelink_kcp_curr_estab"), Kind::Gauge));
        assert!(matches!(kind("nodelink_kcp_max_conn"), Kind::Gauge));
        assert!(matches!(kind("nodelink_kcp_in_pkts"), Kind::Counter));
    }
}
