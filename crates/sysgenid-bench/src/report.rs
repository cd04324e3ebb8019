//! The results: a Markdown table for people, a JSON document for tools.

use serde_json::{Value, json};

use crate::stats::{Summary, fmt_ns};

/// The header line of the table.
pub const HEADER: &str = "operation | median | p90 | p99 | mean | ratio to baseline";

/// One measured operation.
#[derive(Debug, Clone)]
pub struct Row {
    /// Section title.
    pub section: &'static str,
    /// Stable identifier (JSON key, ratio reference).
    pub id: &'static str,
    /// Short name used when other rows give their ratio to this one.
    pub short: String,
    /// What was measured.
    pub label: String,
    /// The figures, ns per operation.
    pub summary: Summary,
    /// Rows this one is compared with, by id.
    pub vs: Vec<&'static str>,
}

/// Everything one run produced.
#[derive(Debug, Default)]
pub struct Report {
    /// Machine and run facts, in print order.
    pub facts: Vec<(&'static str, String)>,
    /// Measured rows, in print order.
    pub rows: Vec<Row>,
    /// Notes printed under the table.
    pub notes: Vec<String>,
}

impl Report {
    /// Adds a row summarising `samples`.
    pub fn add(
        &mut self,
        section: &'static str,
        id: &'static str,
        short: impl Into<String>,
        label: impl Into<String>,
        samples: &mut [f64],
        vs: &[&'static str],
    ) {
        self.rows.push(Row {
            section,
            id,
            short: short.into(),
            label: label.into(),
            summary: Summary::of(samples),
            vs: vs.to_vec(),
        });
    }

    fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }

    /// `(short name, id, ratio of medians)` for each baseline of `row` that was measured.
    fn ratios<'a>(&'a self, row: &Row) -> Vec<(&'a str, &'static str, f64)> {
        row.vs
            .iter()
            .filter_map(|id| self.row(id))
            .map(|base| {
                (
                    base.short.as_str(),
                    base.id,
                    row.summary.median / base.summary.median,
                )
            })
            .collect()
    }

    fn is_baseline(&self, row: &Row) -> bool {
        row.vs.is_empty() && self.rows.iter().any(|r| r.vs.contains(&row.id))
    }

    fn ratio_cell(&self, row: &Row) -> String {
        if self.is_baseline(row) {
            return "1 (baseline)".to_owned();
        }
        let parts: Vec<String> = self
            .ratios(row)
            .into_iter()
            .map(|(short, _, r)| format!("{} {short}", fmt_ratio(r)))
            .collect();
        if parts.is_empty() {
            "—".to_owned()
        } else {
            parts.join("; ")
        }
    }

    /// The facts, the table and the notes, as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.facts {
            out.push_str(&format!("{key}: {value}\n"));
        }
        out.push('\n');
        out.push_str(HEADER);
        out.push_str("\n--- | ---: | ---: | ---: | ---: | ---\n");
        let mut section = "";
        for row in &self.rows {
            if row.section != section {
                section = row.section;
                out.push_str(&format!("**{section}** | | | | |\n"));
            }
            let s = &row.summary;
            out.push_str(&format!(
                "{} | {} | {} | {} | {} | {}\n",
                row.label,
                fmt_ns(s.median),
                fmt_ns(s.p90),
                fmt_ns(s.p99),
                fmt_ns(s.mean),
                self.ratio_cell(row)
            ));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        out
    }

    /// The same content as JSON, durations in nanoseconds.
    pub fn to_json(&self) -> Value {
        let facts: serde_json::Map<String, Value> = self
            .facts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
            .collect();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let s = &row.summary;
                let ratios: serde_json::Map<String, Value> = self
                    .ratios(row)
                    .into_iter()
                    .map(|(_, id, r)| (id.to_owned(), json!(r)))
                    .collect();
                json!({
                    "section": row.section,
                    "id": row.id,
                    "operation": row.label,
                    "samples": s.n,
                    "median_ns": s.median,
                    "p90_ns": s.p90,
                    "p99_ns": s.p99,
                    "mean_ns": s.mean,
                    "baseline": self.is_baseline(row),
                    "ratio_of_medians_to": ratios,
                })
            })
            .collect();
        json!({ "facts": facts, "rows": rows, "notes": self.notes })
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_baselines() {
        let mut report = Report::default();
        report.add(
            "s",
            "base",
            "base",
            "the baseline",
            &mut [100.0, 100.0],
            &[],
        );
        report.add(
            "s",
            "x",
            "x",
            "the subject",
            &mut [2500.0],
            &["base", "missing"],
        );
        let text = report.to_markdown();
        assert!(text.contains(HEADER));
        assert!(text.contains("the baseline | 100 ns | 100 ns | 100 ns | 100 ns | 1 (baseline)"));
        assert!(
            text.contains("the subject | 2.50 µs | 2.50 µs | 2.50 µs | 2.50 µs | 25.0× base\n")
        );
        let json = report.to_json();
        assert_eq!(json["rows"][1]["ratio_of_medians_to"]["base"], 25.0);
        assert_eq!(json["rows"][0]["baseline"], true);
    }
}
