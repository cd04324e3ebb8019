//! The results: a Markdown table for people, a JSON document for tools.

use serde_json::{Value, json};

use crate::fanout::Point;
use crate::stats::{Summary, fmt_ns};
use crate::vcpu::Placement;

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
    /// The distribution, at percentiles 0.25, 0.75, ... 99.75 (for plots).
    pub quantiles: Vec<f64>,
}

/// Points of the distribution kept for plots.
const QUANTILES: usize = 200;

fn quantiles(sorted: &[f64]) -> Vec<f64> {
    (0..QUANTILES)
        .map(|k| {
            let at = (k as f64 + 0.5) / QUANTILES as f64 * sorted.len() as f64;
            sorted[(at as usize).min(sorted.len() - 1)]
        })
        .collect()
}

/// One line of the goals table.
#[derive(Debug, Clone)]
pub struct Goal {
    /// The figure.
    pub figure: String,
    /// The goal, as the issue states it.
    pub goal: String,
    /// What this run measured.
    pub measured: String,
    /// Whether this run meets it (`None` when not measured).
    pub met: Option<bool>,
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
    /// Same- and cross-vCPU placement of per-call rows.
    pub placements: Vec<Placement>,
    /// The fan-out points.
    pub fanout: Vec<Point>,
    /// The goals against this run.
    pub goals: Vec<Goal>,
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
        let summary = Summary::of(samples);
        self.rows.push(Row {
            section,
            id,
            short: short.into(),
            label: label.into(),
            summary,
            vs: vs.to_vec(),
            quantiles: quantiles(samples),
        });
    }

    /// The row with this id.
    pub fn row(&self, id: &str) -> Option<&Row> {
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
        out.push_str(&self.rows_markdown());
        out.push_str(&self.placement_markdown());
        out.push_str(&self.fanout_markdown());
        out.push_str(&self.goals_markdown());
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
        json!({
            "facts": facts,
            "rows": rows,
            "placements": self.placements.iter().map(placement_json).collect::<Vec<_>>(),
            "fanout": self.fanout.iter().map(point_json).collect::<Vec<_>>(),
            "goals": self.goals.iter().map(|g| json!({
                "figure": g.figure, "goal": g.goal, "measured": g.measured, "met": g.met,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

impl Report {
    fn rows_markdown(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let mut out = format!("{HEADER}\n--- | ---: | ---: | ---: | ---: | ---\n");
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
        out
    }

    fn placement_markdown(&self) -> String {
        if self.placements.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\n**6. vCPU placement of per-call rows** (caller against serving thread; a median \
             needs 20 calls and 1% of the row)\n\n\
             operation | calls | same vCPU (calls) | same-vCPU median | cross-vCPU median | p90 (all) \
             | p90 / same-vCPU median\n--- | ---: | ---: | ---: | ---: | ---: | ---:\n",
        );
        for p in &self.placements {
            out.push_str(&p.markdown_row());
            out.push('\n');
        }
        out
    }

    fn fanout_markdown(&self) -> String {
        if self.fanout.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\n**7. fan-out: N tracked watchers, one trigger, all acknowledged** (medians; \
             p90 in brackets)\n\nN | watchers wait in | what | rounds | trigger call | \
             trigger → all acknowledged | ratio to eventfd | server CPU per watcher | server \
             waiting for a CPU, per watcher | server sleeps per watcher | watchers' CPU per \
             watcher | CPU bound (ratio to eventfd) | machine idle\n---: | --- | --- | ---: | \
             ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---:\n",
        );
        for p in &self.fanout {
            let proxy = self.fanout.iter().find(|q| {
                q.n == p.n && q.mode == p.mode && q.kind == crate::watcher::Kind::Eventfd
            });
            let ratio = match proxy {
                _ if p.kind == crate::watcher::Kind::Eventfd => "1 (baseline)".to_owned(),
                Some(q) => fmt_ratio(median(&p.all_acked) / median(&q.all_acked)),
                None => "—".to_owned(),
            };
            let cpu = if p.cpu_per_watcher.is_empty() {
                "—".to_owned()
            } else {
                fmt_ns(median(&p.cpu_per_watcher))
            };
            let (runnable, sleeps) = if p.sleeps_per_watcher.is_empty() {
                ("—".to_owned(), "—".to_owned())
            } else {
                (
                    fmt_ns(median(&p.runnable_per_watcher)),
                    format!("{:.2}", median(&p.sleeps_per_watcher)),
                )
            };
            let bound = match proxy {
                Some(q) => format!(
                    "{} ({})",
                    fmt_ns(p.cpu_bound_ns()),
                    fmt_ratio(p.cpu_bound_ns() / median(&q.all_acked))
                ),
                None => fmt_ns(p.cpu_bound_ns()),
            };
            let idle = p
                .idle
                .idle_share()
                .map_or_else(|| "—".to_owned(), |share| format!("{:.0}%", share * 100.0));
            out.push_str(&format!(
                "{} | {} | {} | {} | {} ({}) | {} ({}) | {} | {} | {runnable} | {sleeps} | {} | {bound} | {idle}\n",
                p.n,
                p.mode.name(),
                p.kind.name(),
                p.all_acked.len(),
                fmt_ns(median(&p.trigger)),
                fmt_ns(p90(&p.trigger)),
                fmt_ns(median(&p.all_acked)),
                fmt_ns(p90(&p.all_acked)),
                ratio,
                cpu,
                fmt_ns(median(&p.watchers_cpu_per_watcher)),
            ));
        }
        out.push_str(&self.closing_markdown());
        out
    }

    fn closing_markdown(&self) -> String {
        let rows: Vec<String> = self
            .fanout
            .iter()
            .filter_map(|p| {
                let c = p.closing?;
                Some(format!(
                    "{} | {} | {} | {}\n",
                    p.n,
                    p.mode.name(),
                    fmt_ns(c.wall_ns),
                    fmt_ns(c.cpu_per_file_ns)
                ))
            })
            .collect();
        if rows.is_empty() {
            return String::new();
        }
        format!(
            "\nThen every watcher process ends (device rows): from the first told to end until \
             the daemon shows no tracked file (status polled every 10 ms), and the daemon's CPU \
             over that span per file.\n\nN | watchers waited in | all files released | daemon \
             CPU per file\n---: | --- | ---: | ---:\n{}",
            rows.concat()
        )
    }

    fn goals_markdown(&self) -> String {
        if self.goals.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\n**Goals of issue 13 against this run**\n\nfigure | goal | this run | met\n\
             --- | --- | --- | ---\n",
        );
        for g in &self.goals {
            let met = match g.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "not measured",
            };
            out.push_str(&format!(
                "{} | {} | {} | {met}\n",
                g.figure, g.goal, g.measured
            ));
        }
        out
    }
}

/// Median of unsorted samples (0 when there are none).
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    Summary::of(&mut samples.to_vec()).median
}

fn p90(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    Summary::of(&mut samples.to_vec()).p90
}

fn placement_json(p: &Placement) -> Value {
    json!({
        "id": p.id,
        "operation": p.label,
        "calls": p.calls,
        "same_vcpu_calls": p.same_calls,
        "same_vcpu_share": p.same_share,
        "same_vcpu_median_ns": p.same.map(|s| s.median),
        "cross_vcpu_median_ns": p.cross.map(|s| s.median),
        "p90_ns": p.p90,
        "p90_over_same_vcpu_median": p.p90_over_same(),
    })
}

fn point_json(p: &Point) -> Value {
    json!({
        "n": p.n,
        "kind": p.kind.name(),
        "mode": p.mode.name(),
        "rounds": p.all_acked.len(),
        "trigger_median_ns": median(&p.trigger),
        "all_acked_median_ns": median(&p.all_acked),
        "all_acked_p90_ns": p90(&p.all_acked),
        "cpu_per_watcher_median_ns": (!p.cpu_per_watcher.is_empty())
            .then(|| median(&p.cpu_per_watcher)),
        "server_runnable_per_watcher_median_ns": (!p.runnable_per_watcher.is_empty())
            .then(|| median(&p.runnable_per_watcher)),
        "server_sleeps_per_watcher_median": (!p.sleeps_per_watcher.is_empty())
            .then(|| median(&p.sleeps_per_watcher)),
        "watchers_cpu_per_watcher_median_ns": median(&p.watchers_cpu_per_watcher),
        "cpu_bound_ns": p.cpu_bound_ns(),
        "machine_idle_share": p.idle.idle_share(),
        "closing_wall_ns": p.closing.map(|c| c.wall_ns),
        "closing_daemon_cpu_per_file_ns": p.closing.map(|c| c.cpu_per_file_ns),
    })
}

/// A ratio with two or three significant digits and a `×`.
pub fn fmt_ratio(r: f64) -> String {
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
