//! Where a per-call row ran: the caller's vCPU against the serving thread's, call by call.
//!
//! After each timed call the benchmark asks `sched_getcpu()` where the caller is now (where it
//! returned) and reads field 39 (`processor`, the CPU it last ran on) of the serving thread's
//! `/proc/<pid>/task/<tid>/stat`. Right after a reply the serving thread has just run, to send
//! it, and is asleep again in its next read of `/dev/fuse`, so that is the CPU that served the
//! call. Limits: the read of `/proc` happens outside the timed span but between calls, so calls
//! are a few microseconds further apart than in a tight loop; a serving thread that migrates
//! between receiving the request and replying is counted where it replied; and a call served by
//! another thread (a worker) is placed by the serving thread alone.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::stats::{Summary, fmt_ns};

/// The thread that reads `/dev/fuse` for a server, found by which thread's CPU time grows.
#[derive(Debug)]
pub struct ServerThread {
    /// `/proc/<pid>/task/<tid>/stat`, kept open and read again with `pread`.
    stat: File,
}

fn task_runtime_ns(pid: u32, tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn tasks(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl ServerThread {
    /// Runs `call` 500 times and picks the thread of `pid` (other than the caller) whose CPU
    /// time grew the most.
    pub fn find(pid: u32, mut call: impl FnMut()) -> ServerThread {
        let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let candidates: Vec<u32> = tasks(pid).into_iter().filter(|&t| t != me).collect();
        let before: Vec<u64> = candidates
            .iter()
            .map(|&t| task_runtime_ns(pid, t))
            .collect();
        for _ in 0..500 {
            call();
        }
        let tid = candidates
            .iter()
            .zip(before)
            .max_by_key(|&(&t, b)| task_runtime_ns(pid, t).saturating_sub(b))
            .map(|(&t, _)| t)
            .expect("the server has a thread");
        let stat = File::open(format!("/proc/{pid}/task/{tid}/stat")).expect("open task stat");
        ServerThread { stat }
    }

    /// The CPU the thread last ran on (field 39 of its `stat`).
    pub fn cpu(&self) -> Option<usize> {
        let mut buf = [0u8; 1024];
        let n = self.stat.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        // Fields after the command name, which ends at the last ')', start with field 3.
        let (_, rest) = text.rsplit_once(')')?;
        rest.split_whitespace().nth(39 - 3)?.parse().ok()
    }
}

/// Per-call samples with, for each, whether the caller and the server were on the same vCPU.
#[derive(Debug, Default, Clone)]
pub struct Placed {
    /// Nanoseconds per call.
    pub samples: Vec<f64>,
    /// Same vCPU for the call at the same index (`None` when `/proc` could not say).
    pub same: Vec<Option<bool>>,
}

/// Times each call of `op` and places it, after `warmup` untimed calls.
pub fn time_each_placed(
    warmup: usize,
    iters: usize,
    server: &ServerThread,
    mut op: impl FnMut(),
) -> Placed {
    for _ in 0..warmup {
        op();
    }
    time_placed(iters, server, None, op)
}

/// Times each call of `op` and places it, each after `gap` of sleep (untimed): a call that
/// comes alone, on a machine idle since the last one, as a restore's single trigger does.
pub fn time_each_spaced(
    gap: Duration,
    iters: usize,
    server: &ServerThread,
    op: impl FnMut(),
) -> Placed {
    time_placed(iters, server, Some(gap), op)
}

fn time_placed(
    iters: usize,
    server: &ServerThread,
    gap: Option<Duration>,
    mut op: impl FnMut(),
) -> Placed {
    let mut placed = Placed {
        samples: Vec::with_capacity(iters),
        same: Vec::with_capacity(iters),
    };
    for _ in 0..iters {
        if let Some(gap) = gap {
            std::thread::sleep(gap);
        }
        let start = Instant::now();
        op();
        let took = start.elapsed().as_nanos() as f64;
        let caller = rustix::thread::sched_getcpu();
        placed.samples.push(took);
        placed.same.push(server.cpu().map(|cpu| cpu == caller));
    }
    placed
}

/// Fewest calls of one kind (same or cross vCPU) whose median is given, whatever the row's
/// size: below that, a handful of stray calls would stand for a mode that did not happen.
pub const MIN_CALLS: usize = 20;

/// Calls of one kind needed for its median: [`MIN_CALLS`], and at least 1% of the row.
fn enough(kind: usize, calls: usize) -> bool {
    kind >= MIN_CALLS.max(calls / 100)
}

/// Same-vCPU share and the two medians of one row.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Row id.
    pub id: &'static str,
    /// What was measured.
    pub label: String,
    /// Calls placed.
    pub calls: usize,
    /// Calls with caller and server on the same vCPU.
    pub same_calls: usize,
    /// Share of placed calls with caller and server on the same vCPU.
    pub same_share: f64,
    /// Median of the same-vCPU calls (see [`enough`]).
    pub same: Option<Summary>,
    /// Median of the cross-vCPU calls (see [`enough`]).
    pub cross: Option<Summary>,
    /// p90 of all calls.
    pub p90: f64,
}

impl Placement {
    /// Splits `placed` into same- and cross-vCPU calls.
    pub fn of(id: &'static str, label: impl Into<String>, placed: &Placed) -> Placement {
        let mut same = Vec::new();
        let mut cross = Vec::new();
        for (&ns, place) in placed.samples.iter().zip(&placed.same) {
            match place {
                Some(true) => same.push(ns),
                Some(false) => cross.push(ns),
                None => {}
            }
        }
        let calls = same.len() + cross.len();
        let mut all = placed.samples.clone();
        Placement {
            id,
            label: label.into(),
            calls,
            same_calls: same.len(),
            same_share: same.len() as f64 / calls.max(1) as f64,
            same: enough(same.len(), calls).then(|| Summary::of(&mut same)),
            cross: enough(cross.len(), calls).then(|| Summary::of(&mut cross)),
            p90: Summary::of(&mut all).p90,
        }
    }

    /// p90 of all calls against the same-vCPU median.
    pub fn p90_over_same(&self) -> Option<f64> {
        self.same.map(|s| self.p90 / s.median)
    }

    /// A Markdown table row.
    pub fn markdown_row(&self) -> String {
        let median = |s: Option<Summary>| s.map_or("—".to_owned(), |s| fmt_ns(s.median));
        format!(
            "{} | {} | {:.1}% ({}) | {} | {} | {} | {}",
            self.label,
            self.calls,
            self.same_share * 100.0,
            self.same_calls,
            median(self.same),
            median(self.cross),
            fmt_ns(self.p90),
            self.p90_over_same()
                .map_or("—".to_owned(), |r| format!("{r:.2}×"))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_calls_and_gives_no_median_for_a_stray_few() {
        let mut placed = Placed::default();
        for i in 0..1000 {
            let same = i % 100 == 0;
            placed.samples.push(if same { 8_000.0 } else { 45_000.0 });
            placed.same.push(Some(same));
        }
        placed.samples.push(1.0);
        placed.same.push(None);
        let p = Placement::of("x", "x", &placed);
        assert_eq!((p.calls, p.same_calls), (1000, 10));
        assert!((p.same_share - 0.01).abs() < 1e-9);
        assert!(p.same.is_none(), "10 calls are too few for a median");
        assert_eq!(p.cross.map(|s| s.median), Some(45_000.0));
        assert_eq!(p.p90_over_same(), None);
    }
}
