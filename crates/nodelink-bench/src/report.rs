//! The table and the JSON lines, shared by every benchmark: each figure with its ratio to
//! the same figure (scenario and metric) of a baseline implementation in the same run —
//! raw TCP for the link benchmarks, kcp-go or kcptun for the KCP and tunnel ones.

use crate::scenarios::Figure;

/// A figure with its ratio to the baseline's figure of the same scenario and metric.
pub struct Row<'a> {
    /// The figure.
    pub figure: &'a Figure,
    /// `value / baseline value`, when the baseline has that figure.
    pub ratio: Option<f64>,
}

/// Pairs every figure with its ratio to the implementation `baseline` names for it.
pub fn rows_against<'a>(
    figures: &'a [Figure],
    baseline: impl Fn(&Figure) -> &'static str,
) -> Vec<Row<'a>> {
    figures
        .iter()
        .map(|f| {
            let base = baseline(f);
            let ratio = figures
                .iter()
                .find(|b| b.imp == base && b.scenario == f.scenario && b.metric == f.metric)
                .filter(|b| b.value != 0.0)
                .map(|b| f.value / b.value);
            Row { figure: f, ratio }
        })
        .collect()
}

/// The human-readable table, ratios to raw TCP.
pub fn table(figures: &[Figure]) -> String {
    table_against(figures, |_| "raw_tcp")
}

/// The human-readable table, ratios to `baseline`'s figures.
pub fn table_against(figures: &[Figure], baseline: impl Fn(&Figure) -> &'static str) -> String {
    let mut out = format!(
        "{:<24} {:<16} {:<22} {:>14} {:>10}\n",
        "scenario", "impl", "metric", "value", "ratio"
    );
    for row in rows_against(figures, baseline) {
        let f = row.figure;
        let ratio = row
            .ratio
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
        // CPU seconds per MB are small numbers: more decimals.
        let value = if f.metric == "cpu_s_per_mb" {
            format!("{:>14.4}", f.value)
        } else {
            format!("{:>14.1}", f.value)
        };
        out += &format!(
            "{:<24} {:<16} {:<22} {value} {ratio:>10}\n",
            f.scenario, f.imp, f.metric
        );
    }
    out
}

/// One JSON object per line, as outside tooling expects; ratios to raw TCP.
pub fn json_lines(figures: &[Figure]) -> String {
    json_lines_against(figures, |_| "raw_tcp")
}

/// One JSON object per line; `ratio_to_raw` holds the ratio to `baseline`'s figure (the
/// field keeps its name in every benchmark so tooling reads them all alike).
pub fn json_lines_against(
    figures: &[Figure],
    baseline: impl Fn(&Figure) -> &'static str,
) -> String {
    let mut out = String::new();
    for row in rows_against(figures, baseline) {
        let f = row.figure;
        let line = serde_json::json!({
            "scenario": f.scenario,
            "impl": f.imp,
            "metric": f.metric,
            "value": f.value,
            "ratio_to_raw": row.ratio,
        });
        out += &line.to_string();
        out.push('\n');
    }
    out
}
