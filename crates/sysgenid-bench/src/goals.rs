//! The goals of issue 13 ("Restore to readjusted, fast at any scale"), judged on this run.

use crate::fanout::Point;
use crate::report::{Goal, Report, fmt_ratio, median};
use crate::stats::fmt_ns;
use crate::watcher::{Kind, Mode};

/// The largest fan-out the goals speak of.
const N: usize = 10_000;

fn point(report: &Report, kind: Kind, mode: Mode) -> Option<&Point> {
    report
        .fanout
        .iter()
        .find(|p| p.n == N && p.kind == kind && p.mode == mode && !p.all_acked.is_empty())
}

/// A figure with the fan-out floor's, where the run took it.
fn with_floor(figure: String, floor: Option<String>) -> String {
    match floor {
        Some(floor) => format!("{figure} (the fan-out floor: {floor})"),
        None => figure,
    }
}

fn goal(figure: &str, goal: &str, measured: Option<(String, bool)>) -> Goal {
    Goal {
        figure: figure.to_owned(),
        goal: goal.to_owned(),
        measured: measured
            .as_ref()
            .map_or_else(|| "not measured".to_owned(), |(m, _)| m.clone()),
        met: measured.map(|(_, met)| met),
    }
}

/// Every goal, with this run's figure when it measured it.
pub fn of(report: &Report) -> Vec<Goal> {
    let dev_read = point(report, Kind::Device, Mode::Read);
    let dev_epoll = point(report, Kind::Device, Mode::Epoll);
    let efd_read = point(report, Kind::Eventfd, Mode::Read);
    let floor_read = point(report, Kind::Floor, Mode::Read);
    let floor_epoll = point(report, Kind::Floor, Mode::Epoll);
    let acked = |p: &Point| median(&p.all_acked);
    let read_ratio = dev_read.zip(efd_read).map(|(d, e)| {
        let r = acked(d) / acked(e);
        let floor = floor_read.map(|f| fmt_ratio(acked(f) / acked(e)));
        (with_floor(fmt_ratio(r), floor), r <= 3.0)
    });
    let epoll = dev_epoll.map(|d| {
        let floor = floor_epoll.map(|f| fmt_ns(acked(f)));
        (with_floor(fmt_ns(acked(d)), floor), acked(d) <= 250e6)
    });
    let cpu_text = |r: &Point, e: &Point| {
        let (r, e) = (median(&r.cpu_per_watcher), median(&e.cpu_per_watcher));
        (
            format!("{} in read, {} in epoll", fmt_ns(r), fmt_ns(e)),
            r.max(e),
        )
    };
    let cpu = dev_read.zip(dev_epoll).map(|(r, e)| {
        let (text, worst) = cpu_text(r, e);
        let floor = floor_read.zip(floor_epoll).map(|(r, e)| cpu_text(r, e).0);
        (with_floor(text, floor), worst <= 10_000.0)
    });
    let trigger = dev_read.map(|d| {
        let ns = median(&d.trigger);
        (fmt_ns(ns), ns <= 5e6)
    });
    vec![
        goal(
            "10,000 tracked watchers blocked in read: trigger → all acknowledged → WAIT_WATCHERS \
             returns, against one eventfd per watcher",
            "≤ 3×",
            read_ratio,
        ),
        goal("the same with watchers in epoll", "≤ 250 ms", epoll),
        goal(
            "daemon CPU per watcher in that fan-out (median of rounds; the floor: its serving thread)",
            "≤ 10 µs",
            cpu,
        ),
        goal(
            "nonblocking read of the device, unpinned: p90 against its own same-vCPU median, \
             mean of runs",
            "≤ 2×",
            read_p90_ratio(report),
        ),
        goal(
            "trigger with state on tmpfs, nobody blocked, against a minimal FUSE ioctl (our floor)",
            "≤ 4×",
            trigger_ratio(report),
        ),
        goal(
            "trigger call with 10,000 blocked readers (median)",
            "≤ 5 ms",
            trigger,
        ),
    ]
}

fn read_p90_ratio(report: &Report) -> Option<(String, bool)> {
    let runs: Vec<Option<f64>> = report
        .placements
        .iter()
        .filter(|p| p.id == "dev.read" || p.id == "dev.read.again")
        .map(|p| p.p90_over_same())
        .collect();
    let ratios: Vec<f64> = runs.iter().flatten().copied().collect();
    if ratios.is_empty() {
        return None;
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    let each: Vec<String> = runs
        .iter()
        .map(|r| r.map_or("— (too few same-vCPU calls)".to_owned(), fmt_ratio))
        .collect();
    Some((
        format!(
            "{} (mean of the {} of {} runs with a same-vCPU median: {})",
            fmt_ratio(mean),
            ratios.len(),
            runs.len(),
            each.join(", ")
        ),
        mean <= 2.0,
    ))
}

fn trigger_ratio(report: &Report) -> Option<(String, bool)> {
    let trigger = report.row("dev.trigger.tmpfs")?.summary.median;
    let floor = report.row("floor.ioctl")?.summary.median;
    let fuser = report.row("fuser.ioctl").map(|r| r.summary.median);
    let r = trigger / floor;
    let text = match fuser {
        Some(f) => format!(
            "{} ({} the fuser floor)",
            fmt_ratio(r),
            fmt_ratio(trigger / f)
        ),
        None => fmt_ratio(r),
    };
    Some((text, r <= 4.0))
}
