//! `sysgenid-bench`: measures the device's per-call costs against baselines in the same run.
//!
//! Run as root (it mounts FUSE) from a release build: `target/release/sysgenid-bench
//! [--quick | --smoke] [--fanout-only] [--fanout N,..] [--json] [--plots DIR]`. It finds `sysgenidd` next to
//! its own executable unless `SYSGENID_BIN_DIR` says otherwise. Figures are printed, never
//! asserted. The same executable, run as `sysgenid-bench --watcher ...`, is a fan-out watcher.

mod baselines;
mod device;
mod facts;
mod fanout;
mod fanout_floor;
mod fuse_floor;
mod fuser_floor;
mod goals;
mod plot;
mod report;
mod shared;
mod stats;
mod vcpu;
mod wakeup;
mod watcher;

use std::time::{Duration, Instant};

use std::path::PathBuf;

use device::Served;
use report::Report;
use vcpu::{Placed, Placement};
use wakeup::WakeupSamples;
use watcher::{Kind, Mode};

const USAGE: &str =
    "usage: sysgenid-bench [--quick | --smoke] [--fanout-only] [--fanout N,..] [--json] [--plots DIR]

Measures, in one run, the device served by a real sysgenidd against eventfd and two minimal
FUSE servers (our own and one on fuser), and prints median, p90, p99 and mean per operation with
ratios of medians, the vCPU placement of per-call rows and the fan-out to N tracked watchers.
Needs root. --quick takes about a tenth of the iterations; --smoke a few, with N = 1 and 100
only (for CI: it checks that the benchmark runs); --fanout-only measures only the fan-out;
--fanout N,.. takes the fan-out at these N only (for example 10000), in read and epoll only;
--json prints JSON instead; --plots DIR writes fanout.svg and per-call.svg into DIR.";

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
    "A trigger persists the counter before replying: one in-place write of the state file, on the \
     serving thread where the state directory is in memory (tmpfs), else on the persist thread \
     with fdatasync; the device page store of a bump is written by the page-store thread, which \
     then sends the trigger's reply and the wakeups. The page-store thread runs on the CPU the \
     serving thread handed it the store on, once that thread sleeps.",
    "Spaced rows: each call comes after 1 ms of sleep, untimed, so every vCPU may have gone idle: \
     the cost of one trigger on a quiet machine, as a restore's, against the floor's ioctl timed \
     the same way. Back-to-back rows measure a loop, whose placement the scheduler settles from \
     call to call.",
    "Probe rows: batches of volatile loads timed together and divided; percentiles are over \
     batches.",
    "The second floor is the same one-file server on the fuser crate (one thread, mounted on a \
     directory); its rows are timed exactly like the first floor's.",
    "Placement (section 6): after each timed call, sched_getcpu() gives the caller's vCPU and \
     field 39 of /proc/<pid>/task/<tid>/stat the vCPU the serving thread last ran on (it has just \
     sent the reply). That /proc read lies outside the timed span, but spaces the calls a few \
     µs further apart. A trigger is placed by the thread that reads /dev/fuse, not its workers.",
    "Fan-out (section 7): up to 100 watcher processes (N/100 tracked files each), one thread per \
     file blocked in read(2), or one thread in epoll_wait(2) reading each ready file; each \
     watcher reads the new generation and acks it with write(2). Device only: 'poll' is one \
     thread per file in poll(2), then read and ack; 'client' is one thread per file in the Rust \
     client's Watcher::next_change (poll, then the page file) and Watcher::ack. The benchmark calls \
     TRIGGER_GEN_UPDATE, then at once WAIT_WATCHERS on another file: 'trigger → all \
     acknowledged' runs from before the trigger to the wait's return. The proxy writes 1 to N \
     eventfds; each watcher reads its eventfd and decrements a shared counter, the last one \
     writing a done eventfd the benchmark blocks on. Daemon CPU is the growth of the serving \
     process's threads' schedstat run time over trigger → wait returns, divided by N. Rounds \
     start once every watcher is asleep again (and for device reads once the daemon holds N). \
     The FUSE floor rows run the same watchers against a minimal FUSE server with the device's \
     read, ack, poll, trigger and wait and nothing else, on one serving thread or on one per \
     CPU (clones of the connection); their CPU is that of the serving threads. Machine idle is \
     idle over all ticks of /proc/stat across the timed spans.",
    "Figures taken on a shared or loaded machine are provisional.",
];

/// How much to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    Full,
    Quick,
    Smoke,
}

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
    /// Spaced calls (one per [`SPACING`]) of the floor ioctl and of each daemon's trigger.
    spaced: usize,
    /// Probe batches, and loads per batch.
    probe_batches: usize,
    probe_per: usize,
    /// Runs of the nonblocking device read for its placement (p90 against same-vCPU median).
    placement_runs: usize,
    /// Fan-out sizes.
    fanout: &'static [usize],
    /// Full, quick or smoke.
    size: Size,
    /// Only the fan-out.
    fanout_only: bool,
    /// The fan-out sizes were chosen on the command line: read and epoll only.
    fanout_chosen: bool,
}

impl Plan {
    fn new(args: &Args) -> Plan {
        let (size, fanout_only) = (args.size, args.fanout_only);
        let full = Plan {
            syscall: 200_000,
            fuse: 50_000,
            wake: 8_000,
            slow: 2_000,
            spaced: 1_000,
            probe_batches: 20_000,
            probe_per: 4_096,
            placement_runs: 5,
            fanout: &[1, 100, 1_000, 10_000],
            size,
            fanout_only,
            fanout_chosen: false,
        };
        if let Some(sizes) = &args.fanout {
            let sizes: &'static [usize] = Box::leak(sizes.clone().into_boxed_slice());
            return Plan {
                fanout: sizes,
                fanout_chosen: true,
                ..Plan::new(&Args {
                    fanout: None,
                    ..args.clone()
                })
            };
        }
        let divisor = match size {
            Size::Full => return full,
            Size::Quick => 10,
            Size::Smoke => 100,
        };
        Plan {
            syscall: full.syscall / divisor,
            fuse: full.fuse / divisor,
            wake: full.wake / divisor,
            slow: full.slow / divisor,
            spaced: full.spaced / divisor,
            probe_batches: full.probe_batches / divisor,
            placement_runs: if size == Size::Smoke { 1 } else { 5 },
            fanout: if size == Size::Smoke {
                &[1, 100]
            } else {
                full.fanout
            },
            ..full
        }
    }

    /// Timed fan-out rounds for `n` watchers (one more, untimed, comes first).
    fn fanout_rounds(self, n: usize) -> usize {
        let full = match n {
            0..=1 => 200,
            2..=100 => 40,
            101..=1_000 => 15,
            _ => 5,
        };
        match self.size {
            Size::Full => full,
            Size::Quick => (full / 4).max(3),
            Size::Smoke => 3,
        }
    }
}

/// The sleep before each spaced call: long enough for every vCPU to go idle.
const SPACING: Duration = Duration::from_millis(1);

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

/// The command line.
#[derive(Clone)]
struct Args {
    size: Size,
    fanout_only: bool,
    fanout: Option<Vec<usize>>,
    json: bool,
    plots: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Args {
    let mut parsed = Args {
        size: Size::Full,
        fanout_only: false,
        fanout: None,
        json: false,
        plots: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => parsed.size = Size::Quick,
            "--smoke" => parsed.size = Size::Smoke,
            "--fanout-only" => parsed.fanout_only = true,
            "--fanout" => match args.next().map(|list| parse_sizes(list)) {
                Some(Some(sizes)) => parsed.fanout = Some(sizes),
                _ => usage_error("--fanout needs sizes such as 100,10000"),
            },
            "--json" => parsed.json = true,
            "--plots" => match args.next() {
                Some(dir) => parsed.plots = Some(PathBuf::from(dir)),
                None => usage_error("--plots needs a directory"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => usage_error(&format!("unknown argument {other:?}")),
        }
    }
    parsed
}

/// `N,N,..`, each at least 1.
fn parse_sizes(list: &str) -> Option<Vec<usize>> {
    list.split(',')
        .map(|n| n.trim().parse().ok().filter(|&n| n > 0))
        .collect()
}

fn usage_error(what: &str) -> ! {
    eprintln!("sysgenid-bench: {what}\n{USAGE}");
    std::process::exit(2);
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--watcher") {
        watcher::main(&argv[1..]);
    }
    point_harness_at_our_binaries();
    let args = parse_args(&argv);
    if !rustix::process::geteuid().is_root() {
        eprintln!("sysgenid-bench: run as root: it mounts FUSE file systems with mount(2)");
        std::process::exit(1);
    }
    let started = Instant::now();
    let plan = Plan::new(&args);
    let mut report = Report::default();
    run(plan, &mut report);
    report
        .facts
        .insert(0, ("fuse wake_here", facts::fuse_wake_here()));
    report.facts.insert(0, ("command", facts::command_line()));
    report.facts.insert(0, ("cpus", facts::cpus().to_string()));
    report.facts.insert(0, ("cpu", facts::cpu_model()));
    report.facts.insert(0, ("kernel", facts::kernel()));
    report.facts.insert(0, ("date", facts::date_utc()));
    report.facts.push((
        "run time",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    ));
    if let Some(dir) = &args.plots {
        plot::write(dir, &report, &report.fanout).expect("write the plots");
        progress(&format!("plots written to {}", dir.display()));
    }
    if args.json {
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
    if !plan.fanout_only {
        run_per_call(plan, report);
    }
    report.fanout = measure_fanout(plan, report);
    report.goals = goals::of(report);
    report.notes.extend(NOTES.iter().map(|n| (*n).to_owned()));
}

fn run_per_call(plan: Plan, report: &mut Report) {
    let mut calls = CallBaselines::measure(plan);
    let mut floor = FloorSamples::measure(plan, report);

    let fast = start_daemon_a(report);
    add_per_call_rows(plan, &fast, &mut calls, &mut floor, report);
    add_read_placement_runs(plan, &fast, report);

    progress("eventfd wakeups");
    let (n, w) = (plan.wake, warmup(plan.wake));
    let mut efd_wake = baselines::eventfd_read_wakeup(w, n);
    let efd_poll = baselines::eventfd_poll_wakeup(w, n);

    progress(&format!(
        "daemon A ({}): triggers and wakeups",
        fast.place()
    ));
    let mut fast_triggers = TriggerSamples::measure(&fast, w, n, plan.spaced);
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
        &mut floor,
        &mut fast_triggers,
        &mut slow_triggers,
        report,
    );
    add_spaced_trigger_rows(&mut floor, &mut fast_triggers, &mut slow_triggers, report);
    let fast_place = &fast_triggers.place;
    add_load_rows(&mut calls.mem, &mut page, devmap, fast_place, report);
    add_poll_rows(efd_poll, dev_poll, fast_place, report);
}

/// The fan-out at each size: eventfd proxy and device, watchers in read then in epoll, then the
/// device alone with watchers in poll and in the Rust client, against a daemon of its own with
/// its state on tmpfs.
fn measure_fanout(plan: Plan, report: &mut Report) -> Vec<fanout::Point> {
    let largest = plan.fanout.iter().copied().max().unwrap_or(1) as u64;
    fanout::raise_open_files(largest + 4_096);
    let served = Served::start(facts::tmpfs_dir().as_deref());
    report.facts.push((
        "fan-out daemon state dir",
        format!("{} on {}", served.daemon.state_dir.display(), served.fs),
    ));
    let mut points = Vec::new();
    for &n in plan.fanout {
        let rounds = plan.fanout_rounds(n);
        for mode in [Mode::Read, Mode::Epoll] {
            progress(&format!(
                "fan-out: {n} watchers in {}, eventfd proxy",
                mode.name()
            ));
            points.push(fanout::eventfd_point(mode, n, 1, rounds));
            progress(&format!("fan-out: {n} watchers in {}, device", mode.name()));
            points.push(fanout::device_point(&served, mode, n, 1, rounds));
            for kind in [Kind::Floor, Kind::FloorPerCpu, Kind::FloorShared] {
                progress(&format!(
                    "fan-out: {n} watchers in {}, {}",
                    mode.name(),
                    kind.name()
                ));
                points.push(fanout::floor_point(kind, mode, n, 1, rounds));
            }
        }
        if plan.fanout_chosen {
            continue;
        }
        // Two more ways to wait, device only: poll then read, and the Rust `Watcher`.
        for mode in [Mode::Poll, Mode::Client] {
            progress(&format!("fan-out: {n} watchers in {}, device", mode.name()));
            points.push(fanout::device_point(&served, mode, n, 1, rounds));
        }
    }
    points
}

/// The facts saying how much this run measures and what timing itself costs.
fn describe_plan(plan: Plan, report: &mut Report) {
    report.facts.push((
        "mode",
        format!(
            "{} (per-call ops: {} eventfd, {} FUSE; wakeups and triggers: {} on tmpfs, {} on the \
             default temp dir; probe: {} batches of {} loads; warm-up 10% untimed; fan-out N = \
             {:?}, rounds {:?} after one untimed){}",
            match plan.size {
                Size::Full => "full",
                Size::Quick => "quick",
                Size::Smoke => "smoke",
            },
            plan.syscall,
            plan.fuse,
            plan.wake,
            plan.slow,
            plan.probe_batches,
            plan.probe_per,
            plan.fanout,
            plan.fanout
                .iter()
                .map(|&n| plan.fanout_rounds(n))
                .collect::<Vec<_>>(),
            if plan.fanout_only {
                "; fan-out only"
            } else {
                ""
            }
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

/// Per-call samples of the two minimal FUSE servers.
struct FloorSamples {
    read: Placed,
    write: Placed,
    ioctl: Placed,
    spaced_ioctl: Placed,
    fuser_read: Placed,
    fuser_write: Placed,
    fuser_ioctl: Placed,
}

impl FloorSamples {
    fn measure(plan: Plan, report: &mut Report) -> FloorSamples {
        let (n, w) = (plan.fuse, warmup(plan.fuse));
        progress("minimal FUSE server: read, write, ioctl");
        let floor = fuse_floor::Floor::start();
        let server = fuse_floor::server_thread(floor.file());
        let (read, write, ioctl) = (
            fuse_floor::reads(floor.file(), &server, w, n),
            fuse_floor::writes(floor.file(), &server, w, n),
            fuse_floor::ioctls(floor.file(), &server, w, n),
        );
        let spaced_ioctl = fuse_floor::spaced_ioctls(floor.file(), &server, SPACING, plan.spaced);
        floor.stop();
        progress("minimal fuser server: read, write, ioctl");
        let fuser = fuser_floor::FuserFloor::start();
        let server = fuse_floor::server_thread(fuser.file());
        let samples = FloorSamples {
            read,
            write,
            ioctl,
            spaced_ioctl,
            fuser_read: fuse_floor::reads(fuser.file(), &server, w, n),
            fuser_write: fuse_floor::writes(fuser.file(), &server, w, n),
            fuser_ioctl: fuse_floor::ioctls(fuser.file(), &server, w, n),
        };
        fuser.stop();
        let tmp = std::env::temp_dir();
        report.facts.push((
            "FUSE floors",
            format!(
                "our own (sysgenid-fuse, mounted on a file) and one on fuser 0.18 (mounted on a \
                 directory), each one thread of this process, under {} ({})",
                tmp.display(),
                facts::fs_type(&tmp)
            ),
        ));
        samples
    }
}

/// Trigger calls and read wakeups against one daemon, and where its state lives.
struct TriggerSamples {
    place: String,
    trigger: Placed,
    spaced: Placed,
    wake: Vec<f64>,
    fire: Vec<f64>,
}

impl TriggerSamples {
    fn measure(served: &Served, warmup: usize, iters: usize, spaced: usize) -> TriggerSamples {
        let trigger = device::triggers(served, warmup, iters);
        let spaced = device::spaced_triggers(served, SPACING, spaced);
        let WakeupSamples { wake, fire } = device::read_wakeups(served, warmup, iters);
        TriggerSamples {
            place: served.place(),
            trigger,
            spaced,
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
    TriggerSamples::measure(&slow, w, n, plan.spaced)
}

/// Adds a per-call row and its placement.
fn add_placed(
    report: &mut Report,
    (section, id, short): (&'static str, &'static str, &str),
    label: &str,
    placed: &mut Placed,
    vs: &[&'static str],
) {
    report
        .placements
        .push(Placement::of(id, label.to_owned(), placed));
    report.add(section, id, short, label, &mut placed.samples, vs);
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
    let floor_read = "minimal FUSE read(2), 4 bytes (floor for FUSE)";
    add_placed(
        report,
        (S1, "floor.read", "FUSE floor"),
        floor_read,
        &mut floor.read,
        &["efd.read"],
    );
    let fuser_read = "minimal fuser read(2), 4 bytes (second floor)";
    add_placed(
        report,
        (S1, "fuser.read", "fuser floor"),
        fuser_read,
        &mut floor.fuser_read,
        &["efd.read"],
    );
    let read = "device read(2), O_NONBLOCK, up to date → EAGAIN";
    let vs = &["efd.read", "floor.read", "fuser.read"];
    add_placed(report, (S1, "dev.read", "device"), read, &mut dev_read, vs);
    report.add(
        S2,
        "efd.write",
        "eventfd",
        "eventfd write(2) of 1",
        &mut calls.efd_write,
        &[],
    );
    let floor_write = "minimal FUSE write(2), 4 bytes (floor for FUSE)";
    add_placed(
        report,
        (S2, "floor.write", "FUSE floor"),
        floor_write,
        &mut floor.write,
        &["efd.write"],
    );
    let fuser_write = "minimal fuser write(2), 4 bytes (second floor)";
    add_placed(
        report,
        (S2, "fuser.write", "fuser floor"),
        fuser_write,
        &mut floor.fuser_write,
        &["efd.write"],
    );
    let ack = "device write(2) of the current generation → 4";
    let vs = &["efd.write", "floor.write", "fuser.write"];
    add_placed(report, (S2, "dev.ack", "device"), ack, &mut dev_ack, vs);
}

/// More runs of the nonblocking device read, for the mean of p90 against the same-vCPU median.
fn add_read_placement_runs(plan: Plan, fast: &Served, report: &mut Report) {
    let (n, w) = (plan.fuse, warmup(plan.fuse));
    for run in 2..=plan.placement_runs {
        progress(&format!("daemon A: nonblocking read, placement run {run}"));
        let placed = device::nonblocking_reads(fast, w, n);
        let label = format!("device read(2), O_NONBLOCK → EAGAIN, run {run}");
        report
            .placements
            .push(Placement::of("dev.read.again", label, &placed));
    }
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
    floor: &mut FloorSamples,
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
    let floor_ioctl = "minimal FUSE ioctl(2), answered 0 (floor for FUSE)";
    let id = (S3, "floor.ioctl", "FUSE floor ioctl");
    add_placed(report, id, floor_ioctl, &mut floor.ioctl, &["efd.fire"]);
    let fuser_ioctl = "minimal fuser ioctl(2), answered 0 (second floor)";
    let id = (S3, "fuser.ioctl", "fuser floor ioctl");
    add_placed(
        report,
        id,
        fuser_ioctl,
        &mut floor.fuser_ioctl,
        &["efd.fire"],
    );
    for (daemon, trigger_id, fire_id) in [
        (fast, "dev.trigger.tmpfs", "dev.fire.tmpfs"),
        (slow, "dev.trigger.default", "dev.fire.default"),
    ] {
        let label = format!(
            "TRIGGER_GEN_UPDATE, nobody blocked (state on {})",
            daemon.place
        );
        let vs = &["efd.fire", "floor.ioctl", "fuser.ioctl"];
        add_placed(
            report,
            (S3, trigger_id, "trigger"),
            &label,
            &mut daemon.trigger,
            vs,
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
            &["efd.fire", "floor.ioctl", "fuser.ioctl"],
        );
    }
}

/// Section 3, spaced calls: the floor's ioctl and each daemon's trigger, one per [`SPACING`].
fn add_spaced_trigger_rows(
    floor: &mut FloorSamples,
    fast: &mut TriggerSamples,
    slow: &mut TriggerSamples,
    report: &mut Report,
) {
    let gap = format!("one call per {} ms of sleep", SPACING.as_millis());
    let label = format!("minimal FUSE ioctl(2), answered 0, {gap}");
    let id = (S3, "floor.ioctl.spaced", "FUSE floor ioctl, spaced");
    add_placed(report, id, &label, &mut floor.spaced_ioctl, &[]);
    for (daemon, id) in [
        (fast, "dev.trigger.tmpfs.spaced"),
        (slow, "dev.trigger.default.spaced"),
    ] {
        let label = format!(
            "TRIGGER_GEN_UPDATE, nobody blocked, {gap} (state on {})",
            daemon.place
        );
        let vs = &["floor.ioctl.spaced"];
        add_placed(
            report,
            (S3, id, "trigger, spaced"),
            &label,
            &mut daemon.spaced,
            vs,
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
