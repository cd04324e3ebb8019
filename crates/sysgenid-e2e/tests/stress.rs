//! The thread that reads `/dev/fuse` never waits on the kernel: processes that map the device
//! and touch a fresh page, writers of writable mappings, triggers, blocked readers and pollers
//! all run at once, under a watchdog that fails the test at the first worker that stops making
//! progress (and then aborts the FUSE connection, so nothing stays hung).
//!
//! `SYSGENID_STRESS_SECS` sets how long the workers run (default 8 s); docs/performance.md has
//! a longer run.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sysgenid_e2e::{Daemon, DevFile, read_lines, workspace_binary};

/// A worker that made no progress for this long is stuck.
const STALL: Duration = Duration::from_secs(5);

struct Worker {
    mode: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    rounds: u64,
    last_progress: Instant,
    done: bool,
}

fn spawn(mode: &'static str, device: &std::path::Path, secs: u64) -> Worker {
    let mut child = Command::new(workspace_binary("sysgenid-stress"))
        .arg(mode)
        .arg(device)
        .arg(secs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a stress worker");
    let lines = read_lines(child.stdout.take().expect("piped"));
    Worker {
        mode,
        child,
        lines,
        rounds: 0,
        last_progress: Instant::now(),
        done: false,
    }
}

impl Worker {
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            match line.split_once(' ') {
                Some(("progress", n)) => {
                    self.rounds = n.parse().expect("a count");
                    self.last_progress = Instant::now();
                }
                Some(("done", _)) => self.done = true,
                _ => panic!("{}: unexpected line {line:?}", self.mode),
            }
        }
    }
}

/// Ends every request of the device's FUSE connection, so stuck processes can exit. The
/// connection is found in the mount table: a `stat` of a hung mount would hang too.
fn abort_connection(device: &std::path::Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let device = device.to_string_lossy();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) == Some(&device.as_ref())
            && let Some((_, minor)) = fields.get(2).and_then(|d| d.split_once(':'))
        {
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
        }
    }
}

fn stress_secs() -> u64 {
    std::env::var("SYSGENID_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

#[test]
fn mappers_writers_triggers_readers_and_pollers_at_once_never_stall() {
    let daemon = Daemon::start();
    let secs = stress_secs();
    let modes = [
        "map",
        "map",
        "map-write",
        "trigger",
        "trigger",
        "read",
        "read",
        "poll",
        "poll",
    ];
    let mut workers: Vec<Worker> = modes
        .iter()
        .map(|mode| spawn(mode, &daemon.device, secs))
        .collect();
    let finishes_by_itself = |w: &Worker| w.mode != "read";
    while !workers
        .iter()
        .filter(|w| finishes_by_itself(w))
        .all(|w| w.done)
    {
        std::thread::sleep(Duration::from_millis(100));
        workers.iter_mut().for_each(Worker::drain);
        if let Some(stuck) = workers
            .iter()
            .find(|w| !w.done && w.last_progress.elapsed() > STALL)
        {
            abort_connection(&daemon.device);
            panic!(
                "{} stalled after {} rounds (every worker: {:?}); daemon log:\n{}",
                stuck.mode,
                stuck.rounds,
                workers_summary(&workers),
                daemon.log()
            );
        }
    }
    // Blocked readers finish at their next bump once their time is up.
    let release = DevFile::rw(&daemon.device);
    let started = Instant::now();
    while !workers.iter().all(|w| w.done) {
        release.trigger(0).expect("a last trigger");
        std::thread::sleep(Duration::from_millis(50));
        workers.iter_mut().for_each(Worker::drain);
        assert!(started.elapsed() < STALL, "readers did not finish");
    }
    for w in &mut workers {
        let status = w.child.wait().expect("wait for a worker");
        assert!(status.success(), "{} failed: {status}", w.mode);
        assert!(w.rounds > 0, "{} never completed a round", w.mode);
    }
    eprintln!("rounds per worker: {:?}", workers_summary(&workers));
    let status = daemon.status();
    assert_eq!(status["serving"], true, "{status}");
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn workers_summary(workers: &[Worker]) -> Vec<(&'static str, u64)> {
    workers.iter().map(|w| (w.mode, w.rounds)).collect()
}
