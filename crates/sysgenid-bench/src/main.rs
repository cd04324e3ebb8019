//! `sysgenid-bench`: measures the device's per-call costs against baselines in the same run.
//!
//! Run as root (it mounts FUSE) from a release build: `target/release/sysgenid-bench
//! [--quick] [--json]`. It finds `sysgenidd` next to its own executable unless
//! `SYSGENID_BIN_DIR` says otherwise. Figures are printed, never asserted.

mod baselines;
mod device;
mod facts;
mod fuse_floor;
mod report;
mod stats;
mod wakeup;

use std::time::Instant;

use device::Served;
use report::Report;
use wakeup::WakeupSamples;

const USAGE: &str = "usage: sysgenid-bench [--quick] [--json]

Measures, in one run, the device served by a real sysgenidd against eventfd and a minimal
FUSE server, and prints median, p90, p99 and mean per operation with ratios of medians.
Needs root. --quick takes about a tenth of the iterations; --json prints JSON instead.";

const S1: &str = "1. nonblocking read, up to date (EAGAIN), per call";
const S2: &str = "2. ack write, per call";
const S3: &str = "3. trigger-to-wakeup (two threads) and trigger call latency";
const S4: &str = "4. inline probe, per 4-byte volatile load";
const S5: &str = "5. poll(2) wakeup (two threads)";

/// Printed under the table.
const NOTES: &[&str] = &[
    "Ratios are of medians measured in this run; p90/p99 are per-call unless marked per load.",
    "Per-call figures time each call with its own Instant::now() pair (the timer overhead above \
     is included).",
    "The minimal FUSE server answers every request at once from a thread of this process: it is \
     the floor for anything served over FUSE.",
    "Wakeups: threads A and B of this process. B fires only once /proc shows A asleep in the call \
     (for a device read, also once the daemon counts it pending); latency runs from just before \
     B's call to A's return (CLOCK_MONOTONIC). A then reads/acks and blocks again.",
    "A trigger persists the counter before replying, on the daemon's persist thread: one in-place \
     write of the state file, then fdatasync unless it is on tmpfs; the page store of a bump is \
     written by a second worker thread before the reply goes out.",
    "Probe rows: batches of volatile loads timed together and divided; percentiles are over \
     batches.",
];

/// Iteration counts.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// eventfd calls.
    syscall: usize,
    /// FUSE round trips.
    fuse: usize,
    /// Wakeup rounds and trigger calls with the state on tmpfs.
    wake: usize,
    /// Wakeup rounds and trigger calls with the state on the default temporary directory.
    slow: usize,
    /// Probe batches, and loads per batch.
    probe_batches: usize,
    probe_per: usize,
    /// Whether this is the quick plan.
    quick: bool,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        let full = Plan {
            syscall: 200_000,
            fuse: 50_000,
            wake: 8_000,
            slow: 2_000,
            probe_batches: 20_000,
            probe_per: 4_096,
            quick: false,
        };
        if !quick {
            return full;
        }
        Plan {
            syscall: full.syscall / 10,
            fuse: full.fuse / 10,
            wake: full.wake / 10,
            slow: full.slow / 10,
            probe_batches: full.probe_batches / 10,
            quick: true,
            ..full
        }
    }
}

/// Untimed calls before the timed ones.
fn warmup(iters: usize) -> usize {
    (iters / 10).max(20)
}

fn progress(what: &str) {
    eprintln!("sysgenid-bench: {what}");
}

/// Lets the harness find `sysgenidd` next to this executable (`target/release`), since its
/// default lookup (the parent of a test's `deps` directory) does not fit a binary.
fn point_harness_at_our_binaries() {
    if std::env::var_os("SYSGENID_BIN_DIR").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("executable directory").to_owned();
    // SAFETY: this runs first in `main`, before any other thread exists, so nothing can read
    // the environment concurrently.
    unsafe { std::env::set_var("SYSGENID_BIN_DIR", dir) };
}

fn main() {
    point_harness_at_our_binaries();
    let (mut quick, mut json) = (false, false);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("sysgenid-bench: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("sysgenid-bench: run as root: it mounts FUSE file systems with mount(2)");
        std::process::exit(1);
    }
    let started = Instant::now();
    let plan = Plan::new(quick);
    let mut report = Report::default();
    run(plan, &mut report);
    report.facts.insert(0, ("command", facts::command_line()));
    report.facts.insert(0, ("cpus", facts::cpus().to_string()));
    report.facts.insert(0, ("cpu", facts::cpu_model()));
    report.facts.insert(0, ("kernel", facts::kernel()));
    report.facts.insert(0, ("date", facts::date_utc()));
    report.facts.push((
        "run time",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    ));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).expect("JSON")
        );
    } else {
        print!("# sysgenid-bench\n\n{}", report.to_markdown());
    }
}

fn run(plan: Plan, report: &mut Report) {
    describe_plan(plan, report);
    let mut calls = CallBaselines::measure(plan);
    let mut floor = FloorSamples::measure(plan, report);

    let fast = start_daemon_a(report);
    add_per_call_rows(plan, &fast, &mut calls, &mut floor, report);

    progress("eventfd wakeups");
    let (n, w) = (plan.wake, warmup(plan.wake));
    let mut efd_wake = baselines::eventfd_read_wakeup(w, n);
    let efd_poll = baselines::eventfd_poll_wakeup(w, n);

    progress(&format!(
        "daemon A ({}): triggers and wakeups",
        fast.place()
    ));
    let mut fast_triggers = TriggerSamples::measure(&fast, w, n);
    let dev_poll = device::poll_wakeups(&fast, w, n);

    progress(&format!("daemon A ({}): page probe", fast.place()));
    let (b, w) = (plan.probe_batches, warmup(plan.probe_batches));
    let mut page = device::page_file_loads(&fast, w, b, plan.probe_per);
    let devmap = device::device_map_loads(&fast, w, b, plan.probe_per);
    drop(fast);

    let mut slow_triggers = measure_daemon_b(plan, report);

    add_wakeup_rows(
        &mut efd_wake,
        &mut fast_triggers,
        &mut slow_triggers,
        report,
    );
    add_trigger_rows(
        &mut efd_wake,
        &mut floor.ioctl,
        &mut fast_triggers,
        &mut slow_triggers,
        report,
    );
    let fast_place = &fast_triggers.place;
    add_load_rows(&mut calls.mem, &mut page, devmap, fast_place, report);
    add_poll_rows(efd_poll, dev_poll, fast_place, report);
    report.notes.extend(NOTES.iter().map(|n| (*n).to_owned()));
}

/// The facts saying how much this run measures and what timing itself costs.
fn describe_plan(plan: Plan, report: &mut Report) {
    report.facts.push((
        "mode",
        format!(
            "{} (per-call ops: {} eventfd, {} FUSE; wakeups and triggers: {} on tmpfs, {} on the \
             default temp dir; probe: {} batches of {} loads; warm-up 10% untimed)",
            if plan.quick { "quick" } else { "full" },
            plan.syscall,
            plan.fuse,
            plan.wake,
            plan.slow,
            plan.probe_batches,
            plan.probe_per
        ),
    ));
    let overhead = stats::timer_overhead(plan.syscall);
    report.facts.push((
        "timer overhead",
        format!(
            "{} median per Instant::now() pair (included in every per-call figure)",
            stats::fmt_ns(overhead.median)
        ),
    ));
}

/// Per-call samples of the baselines that need no FUSE.
struct CallBaselines {
    efd_read: Vec<f64>,
    efd_write: Vec<f64>,
    mem: Vec<f64>,
}

impl CallBaselines {
    fn measure(plan: Plan) -> CallBaselines {
        progress("baselines: eventfd read and write, memory loads");
        let (n, w) = (plan.syscall, warmup(plan.syscall));
        CallBaselines {
            efd_read: baselines::eventfd_read_eagain(w, n),
            efd_write: baselines::eventfd_write(w, n),
            mem: baselines::memory_loads(
                warmup(plan.probe_batches),
                plan.probe_batches,
                plan.probe_per,
            ),
        }
    }
}

/// Per-call samples of the minimal FUSE server.
struct FloorSamples {
    read: Vec<f64>,
    write: Vec<f64>,
    ioctl: Vec<f64>,
}

impl FloorSamples {
    fn measure(plan: Plan, report: &mut Report) -> FloorSamples {
        progress("minimal FUSE server: read, write, ioctl");
        let floor = fuse_floor::Floor::start();
        let (n, w) = (plan.fuse, warmup(plan.fuse));
        let samples = FloorSamples {
            read: floor.reads(w, n),
            write: floor.writes(w, n),
            ioctl: floor.ioctls(w, n),
        };
        floor.stop();
        report.facts.push((
            "FUSE floor",
            format!(
                "a thread of this process, mounted on a file under {} ({})",
                std::env::temp_dir().display(),
                facts::fs_type(&std::env::temp_dir())
            ),
        ));
        samples
    }
}

/// Trigger calls and read wakeups against one daemon, and where its state lives.
struct TriggerSamples {
    place: String,
    trigger: Vec<f64>,
    wake: Vec<f64>,
    fire: Vec<f64>,
}

impl TriggerSamples {
    fn measure(served: &Served, warmup: usize, iters: usize) -> TriggerSamples {
        let trigger = device::triggers(served, warmup, iters);
        let WakeupSamples { wake, fire } = device::read_wakeups(served, warmup, iters);
        TriggerSamples {
            place: served.place(),
            trigger,
            wake,
            fire,
        }
    }
}

/// Daemon A, with its state on tmpfs when there is one.
fn start_daemon_a(report: &mut Report) -> Served {
    let tmpfs = facts::tmpfs_dir();
    let fast = Served::start(tmpfs.as_deref());
    report.facts.push((
        "daemon A state dir",
        format!(
            "{} on {}{}",
            fast.daemon.state_dir.display(),
            fast.fs,
            if tmpfs.is_none() {
                " (no tmpfs found at /run or /dev/shm)"
            } else {
                ""
            }
        ),
    ));
    fast
}

/// Daemon B, with its state in the harness's default temporary directory: its triggers and
/// read wakeups.
fn measure_daemon_b(plan: Plan, report: &mut Report) -> TriggerSamples {
    let slow = Served::start(None);
    report.facts.push((
        "daemon B state dir",
        format!(
            "{} on {} (the harness default)",
            slow.daemon.state_dir.display(),
            slow.fs
        ),
    ));
    progress(&format!(
        "daemon B ({}): triggers and wakeups",
        slow.place()
    ));
    let (n, w) = (plan.slow, warmup(plan.slow));
    TriggerSamples::measure(&slow, w, n)
}

/// Measures daemon A's nonblocking reads and acks, then adds sections 1 and 2.
fn add_per_call_rows(
    plan: Plan,
    fast: &Served,
    calls: &mut CallBaselines,
    floor: &mut FloorSamples,
    report: &mut Report,
) {
    progress(&format!("daemon A ({}): read, ack", fast.place()));
    let (n, w) = (plan.fuse, warmup(plan.fuse));
    let mut dev_read = device::nonblocking_reads(fast, w, n);
    let mut dev_ack = device::acks(fast, w, n);

    report.add(
        S1,
        "efd.read",
        "eventfd",
        "eventfd read(2), O_NONBLOCK, counter 0 → EAGAIN",
        &mut calls.efd_read,
        &[],
    );
    report.add(
        S1,
        "floor.read",
        "FUSE floor",
        "minimal FUSE read(2), 4 bytes (floor for FUSE)",
        &mut floor.read,
        &["efd.read"],
    );
    report.add(
        S1,
        "dev.read",
        "device",
        "device read(2), O_NONBLOCK, up to date → EAGAIN",
        &mut dev_read,
        &["efd.read", "floor.read"],
    );
    report.add(
        S2,
        "efd.write",
        "eventfd",
        "eventfd write(2) of 1",
        &mut calls.efd_write,
        &[],
    );
    report.add(
        S2,
        "floor.write",
        "FUSE floor",
        "minimal FUSE write(2), 4 bytes (floor for FUSE)",
        &mut floor.write,
        &["efd.write"],
    );
    report.add(
        S2,
        "dev.ack",
        "device",
        "device write(2) of the current generation → 4",
        &mut dev_ack,
        &["efd.write", "floor.write"],
    );
}

/// Section 3, first part: a blocked reader woken by eventfd and by triggers.
fn add_wakeup_rows(
    efd: &mut WakeupSamples,
    fast: &mut TriggerSamples,
    slow: &mut TriggerSamples,
    report: &mut Report,
) {
    report.add(
        S3,
        "efd.wake",
        "eventfd",
        "eventfd: A blocked in read(2), B writes 1 → A returns",
        &mut efd.wake,
        &[],
    );
    report.add(
        S3,
        "dev.wake.tmpfs",
        "device",
        format!(
            "device: A blocked in read(2), B triggers → A returns (state on {})",
            fast.place
        ),
        &mut fast.wake,
        &["efd.wake"],
    );
    report.add(
        S3,
        "dev.wake.default",
        "device",
        format!(
            "device: A blocked in read(2), B triggers → A returns (state on {})",
            slow.place
        ),
        &mut slow.wake,
        &["efd.wake"],
    );
}

/// Section 3, second part: the calls that wake (eventfd write, trigger) and a trigger alone.
fn add_trigger_rows(
    efd: &mut WakeupSamples,
    floor_ioctl: &mut [f64],
    fast: &mut TriggerSamples,
    slow: &mut TriggerSamples,
    report: &mut Report,
) {
    report.add(
        S3,
        "efd.fire",
        "eventfd write",
        "eventfd write(2) of 1 waking a blocked reader (B's call)",
        &mut efd.fire,
        &[],
    );
    report.add(
        S3,
        "floor.ioctl",
        "FUSE floor ioctl",
        "minimal FUSE ioctl(2), answered 0 (floor for FUSE)",
        floor_ioctl,
        &["efd.fire"],
    );
    for (daemon, trigger_id, fire_id) in [
        (fast, "dev.trigger.tmpfs", "dev.fire.tmpfs"),
        (slow, "dev.trigger.default", "dev.fire.default"),
    ] {
        report.add(
            S3,
            trigger_id,
            "trigger",
            format!(
                "TRIGGER_GEN_UPDATE, nobody blocked (state on {})",
                daemon.place
            ),
            &mut daemon.trigger,
            &["efd.fire", "floor.ioctl"],
        );
        report.add(
            S3,
            fire_id,
            "trigger",
            format!(
                "TRIGGER_GEN_UPDATE waking a blocked reader (B's call; state on {})",
                daemon.place
            ),
            &mut daemon.fire,
            &["efd.fire", "floor.ioctl"],
        );
    }
}

/// Section 4: loads from memory, the page file and the device mapping.
fn add_load_rows(
    mem: &mut [f64],
    page: &mut [f64],
    devmap: Result<Vec<f64>, rustix::io::Errno>,
    fast_place: &str,
    report: &mut Report,
) {
    report.add(
        S4,
        "mem.load",
        "memory load",
        "volatile load from process memory (heap word)",
        mem,
        &[],
    );
    report.add(
        S4,
        "page.load",
        "page file",
        format!("volatile load from the mmapped page file <state-dir>/generation ({fast_place})"),
        page,
        &["mem.load"],
    );
    match devmap {
        Ok(mut samples) => report.add(
            S4,
            "devmap.load",
            "device mmap",
            "volatile load from an mmap of the device itself (FUSE page cache)",
            &mut samples,
            &["mem.load"],
        ),
        Err(e) => report
            .notes
            .push(format!("device mmap not measured: mmap failed with {e}")),
    }
}

/// Section 5: a blocked poll(2) woken by eventfd and by a trigger.
fn add_poll_rows(efd: WakeupSamples, dev: WakeupSamples, fast_place: &str, report: &mut Report) {
    let (mut efd_poll, mut dev_poll) = (efd.wake, dev.wake);
    report.add(
        S5,
        "efd.poll",
        "eventfd",
        "eventfd: A blocked in poll(2), B writes 1 → A returns",
        &mut efd_poll,
        &[],
    );
    report.add(
        S5,
        "dev.poll",
        "device",
        format!("device: A blocked in poll(2), B triggers → A returns (state on {fast_place})"),
        &mut dev_poll,
        &["efd.poll"],
    );
}
