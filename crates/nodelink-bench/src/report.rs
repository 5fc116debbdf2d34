//! The table and the JSON lines.

use crate::scenarios::Figure;

/// A figure with its ratio to the raw TCP figure of the same scenario and metric.
pub struct Row<'a> {
    /// The figure.
    pub figure: &'a Figure,
    /// `value / raw_tcp value`, when raw TCP has that figure.
    pub ratio: Option<f64>,
}

/// Pairs every figure with its ratio to raw TCP.
pub fn rows(figures: &[Figure]) -> Vec<Row<'_>> {
    figures
        .iter()
        .map(|f| {
            let raw = figures
                .iter()
                .find(|r| r.imp == "raw_tcp" && r.scenario == f.scenario && r.metric == f.metric);
            let ratio = raw.filter(|r| r.value != 0.0).map(|r| f.value / r.value);
            Row { figure: f, ratio }
        })
        .collect()
}

/// The human-readable table.
pub fn table(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<24} {:<16} {:<22} {:>14} {:>12}\n",
        "scenario", "impl", "metric", "value", "ratio_to_raw"
    );
    for row in rows(figures) {
        let f = row.figure;
        let ratio = row
            .ratio
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
        out += &format!(
            "{:<24} {:<16} {:<22} {:>14.1} {:>12}\n",
            f.scenario, f.imp, f.metric, f.value, ratio
        );
    }
    out
}

/// One JSON object per line, as outside tooling expects.
pub fn json_lines(figures: &[Figure]) -> String {
    let mut out = String::new();
    for row in rows(figures) {
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
