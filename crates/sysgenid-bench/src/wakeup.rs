//! Wakeup latency between two threads of this process: A blocks, B fires.
//!
//! Each round: A announces the round and blocks; B waits until the kernel shows A asleep in
//! the expected place (and any extra check holds), then takes a timestamp and fires. A takes a
//! timestamp as soon as its call returns, re-arms (reads, acks), and reports. Both timestamps
//! are `Instant` (CLOCK_MONOTONIC) on the same machine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long B waits for A to block before giving up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What `/proc` says about a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// The state letter of `/proc/<tid>/stat` (`S` when asleep).
    pub state: char,
    /// The kernel function it sleeps in (`/proc/<tid>/wchan`).
    pub wchan: String,
}

impl TaskState {
    fn read(tid: i32) -> TaskState {
        let base = format!("/proc/self/task/{tid}");
        let stat = std::fs::read_to_string(format!("{base}/stat")).unwrap_or_default();
        // The state follows the command name, which ends at the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .unwrap_or('?');
        let wchan = std::fs::read_to_string(format!("{base}/wchan")).unwrap_or_default();
        TaskState { state, wchan }
    }

    /// Asleep in a function whose name contains `part`.
    pub fn sleeps_in(&self, part: &str) -> bool {
        self.state == 'S' && self.wchan.contains(part)
    }
}

/// Samples of one wakeup benchmark, in nanoseconds.
#[derive(Debug, Default)]
pub struct WakeupSamples {
    /// From just before B's call to A's return.
    pub wake: Vec<f64>,
    /// B's call itself.
    pub fire: Vec<f64>,
}

/// Runs `warmup + iters` rounds. `wait` runs on thread A: it blocks, records the instant
/// its call returned, re-arms, and returns that instant. `ready` and `fire` run on this thread.
pub fn measure(
    warmup: usize,
    iters: usize,
    wait: impl FnMut() -> Instant + Send,
    mut ready: impl FnMut(&TaskState) -> bool,
    mut fire: impl FnMut(),
) -> WakeupSamples {
    let total = warmup + iters;
    let round = AtomicUsize::new(0);
    let mut out = WakeupSamples {
        wake: Vec::with_capacity(iters),
        fire: Vec::with_capacity(iters),
    };
    std::thread::scope(|s| {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (woke_tx, woke_rx) = mpsc::channel();
        let round = &round;
        let mut wait = wait;
        s.spawn(move || {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            for i in 1..=total {
                round.store(i, Ordering::SeqCst);
                if woke_tx.send(wait()).is_err() {
                    return;
                }
            }
        });
        let tid = tid_rx.recv().expect("waiter thread started");
        for i in 1..=total {
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if round.load(Ordering::SeqCst) == i && ready(&TaskState::read(tid)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the waiter did not block in round {i}: {:?}",
                    TaskState::read(tid)
                );
                std::thread::yield_now();
            }
            let start = Instant::now();
            fire();
            let fired = start.elapsed();
            let woke = woke_rx.recv().expect("waiter thread alive");
            let latency = woke
                .checked_duration_since(start)
                .unwrap_or_else(|| panic!("round {i}: the waiter returned before it was woken"));
            if i > warmup {
                out.wake.push(latency.as_nanos() as f64);
                out.fire.push(fired.as_nanos() as f64);
            }
        }
    });
    out
}
