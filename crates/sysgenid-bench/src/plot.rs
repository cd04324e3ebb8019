//! SVG plots of a run (`--plots DIR`): the fan-out curve and the per-call distributions.

use std::path::Path;

use plotters::prelude::*;

use crate::fanout::Point;
use crate::report::Report;
use crate::stats::Summary;
use crate::watcher::{Kind, Mode};

type Error = Box<dyn std::error::Error>;

const SIZE: (u32, u32) = (900, 560);
const COLOURS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

/// Writes `fanout.svg` and `per-call.svg` into `dir`.
pub fn write(dir: &Path, report: &Report, points: &[Point]) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    if !points.is_empty() {
        fanout(&dir.join("fanout.svg"), points)?;
    }
    per_call(&dir.join("per-call.svg"), report)?;
    Ok(())
}

/// `(N, median ms)` of each point of one series.
fn series(points: &[Point], kind: Kind, mode: Mode) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|p| p.kind == kind && p.mode == mode && !p.all_acked.is_empty())
        .map(|p| {
            let median = Summary::of(&mut p.all_acked.clone()).median;
            (p.n as f64, median / 1e6)
        })
        .collect()
}

/// The lines of the fan-out plot.
const FANOUT_LINES: [(Kind, Mode, &str); 8] = [
    (Kind::Device, Mode::Read, "device, watchers blocked in read"),
    (Kind::Device, Mode::Epoll, "device, watchers in epoll"),
    (
        Kind::Device,
        Mode::Poll,
        "device, watchers in poll, then read",
    ),
    (
        Kind::Device,
        Mode::Client,
        "device, Rust Watcher (poll, then page)",
    ),
    (
        Kind::Floor,
        Mode::Read,
        "fan-out floor (minimal FUSE server), read",
    ),
    (
        Kind::Floor,
        Mode::Epoll,
        "fan-out floor (minimal FUSE server), epoll",
    ),
    (Kind::Eventfd, Mode::Read, "eventfd proxy, blocked in read"),
    (Kind::Eventfd, Mode::Epoll, "eventfd proxy, in epoll"),
];

fn fanout(path: &Path, points: &[Point]) -> Result<(), Error> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let all: Vec<f64> = FANOUT_LINES
        .iter()
        .flat_map(|&(k, m, _)| series(points, k, m))
        .map(|(_, ms)| ms)
        .collect();
    let top = all.iter().copied().fold(1.0, f64::max) * 2.0;
    let bottom = all.iter().copied().fold(top, f64::min) / 2.0;
    let max_n = points.iter().map(|p| p.n).max().unwrap_or(1) as f64 * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Fan-out: trigger → all acknowledged (median)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((0.7f64..max_n).log_scale(), (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("tracked watchers N")
        .y_desc("ms")
        .draw()?;
    for (i, &(kind, mode, label)) in FANOUT_LINES.iter().enumerate() {
        let data = series(points, kind, mode);
        let colour = COLOURS[i];
        chart
            .draw_series(LineSeries::new(data.clone(), colour.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart.draw_series(data.into_iter().map(|p| Circle::new(p, 4, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The panels of per-call distributions: title and row ids.
const PER_CALL: [(&str, &[&str]); 3] = [
    ("read(2)", &["dev.read", "floor.read", "fuser.read"]),
    ("write(2)", &["dev.ack", "floor.write", "fuser.write"]),
    (
        "ioctl(2)",
        &["floor.ioctl", "fuser.ioctl", "dev.trigger.tmpfs"],
    ),
];

fn per_call(path: &Path, report: &Report) -> Result<(), Error> {
    let root = SVGBackend::new(path, (1350, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Per-call distributions (CDF, p0.25 to p99.75, log time)",
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((1, PER_CALL.len()));
    for (area, (title, ids)) in panels.iter().zip(PER_CALL) {
        let rows: Vec<_> = ids.iter().filter_map(|id| report.row(id)).collect();
        cdf_panel(area, title, &rows)?;
    }
    root.present()?;
    Ok(())
}

fn cdf_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    rows: &[&crate::report::Row],
) -> Result<(), Error>
where
    DB::ErrorType: 'static,
{
    let ends = |pick: fn(&[f64]) -> Option<&f64>| {
        rows.iter()
            .filter_map(move |r| pick(&r.quantiles))
            .map(|ns| ns / 1e3)
    };
    // Whole decades, so that a log axis over a narrow range still gets readable labels.
    let lo = decade_below(ends(|q| q.first()).fold(f64::MAX, f64::min).min(1e3));
    let hi = decade_above(ends(|q| q.last()).fold(lo * 2.0, f64::max)).max(lo * 100.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(45)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|us| format!("{us:.0}"))
        .x_desc("µs per call")
        .y_desc("percentile")
        .draw()?;
    for (i, row) in rows.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let n = row.quantiles.len() as f64;
        let data: Vec<(f64, f64)> = row
            .quantiles
            .iter()
            .enumerate()
            .map(|(k, ns)| (ns / 1e3, (k as f64 + 0.5) * 100.0 / n))
            .collect();
        chart
            .draw_series(LineSeries::new(data, colour.stroke_width(2)))?
            .label(format!("{} ({})", row.id, row.short))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn decade_below(x: f64) -> f64 {
    10f64.powf(x.max(1e-3).log10().floor())
}

fn decade_above(x: f64) -> f64 {
    10f64.powf(x.max(1e-3).log10().ceil())
}
