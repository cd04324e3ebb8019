//! The fan-out: N tracked watchers in helper processes, one trigger, every one acknowledged.
//!
//! Watchers run in up to 100 processes (N/100 files each; fewer processes when N < 100), see
//! [`crate::watcher`]. A device round: the benchmark calls `TRIGGER_GEN_UPDATE` on an untracked
//! file, then acks the new generation (from the page file) on another and at once calls
//! `WAIT_WATCHERS` on it (an outdated file may not wait), and times the trigger call and trigger →
//! `WAIT_WATCHERS` returns. The daemon's CPU time over the same span (the sum of `schedstat` run
//! times of every thread of the serving process) is divided by N, and so is the watcher processes'
//! CPU time over that span (their process CPU clocks). An eventfd round: the
//! benchmark writes 1 to each of the N eventfds, then blocks reading a `done` eventfd that the
//! last watcher to acknowledge writes. Between rounds the benchmark waits until every watcher
//! has acknowledged and sleeps again (and, for device reads, until the daemon holds N reads).

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, eventfd};
use rustix::io::FdFlags;
use sysgenid_e2e::DevFile;

use crate::device::{PageMap, Served};
use crate::fanout_floor::FanoutFloor;
use crate::shared::Shared;
use crate::watcher::{Kind, Mode};

/// Most watcher processes in one fan-out.
const MAX_PROCESSES: usize = 100;
/// How long a round may take before the benchmark gives up.
const ROUND_LIMIT: Duration = Duration::from_secs(120);
/// `WAIT_WATCHERS` timeout, in milliseconds.
const WAIT_MS: u64 = 120_000;

/// The figures of one fan-out configuration, in nanoseconds per round.
#[derive(Debug, Clone)]
pub struct Point {
    /// Device, eventfd or the fan-out floor.
    pub kind: Kind,
    /// Blocked in read or in epoll.
    pub mode: Mode,
    /// Watchers.
    pub n: usize,
    /// The trigger call (device) or the N eventfd writes (proxy).
    pub trigger: Vec<f64>,
    /// Trigger → every watcher acknowledged and the wait returned.
    pub all_acked: Vec<f64>,
    /// Server CPU time per watcher over trigger → wait returns (device and floor).
    pub cpu_per_watcher: Vec<f64>,
    /// The server's sleeps (voluntary context switches of its threads) per watcher over the
    /// same span (device and floor).
    pub sleeps_per_watcher: Vec<f64>,
    /// The server's time ready to run but waiting for a CPU, per watcher, over the same span.
    pub runnable_per_watcher: Vec<f64>,
    /// The watcher processes' CPU time per watcher over the same span (every row).
    pub watchers_cpu_per_watcher: Vec<f64>,
    /// The machine's CPU ticks over the timed spans of every round, idle and in all.
    pub idle: Jiffies,
    /// Device only: the watchers' exit until the daemon has released every file.
    pub closing: Option<Closing>,
}

/// The end of a device row: every watcher process ends, with its files and, in read mode, a
/// blocked read on each (interrupted, then released).
#[derive(Debug, Clone, Copy)]
pub struct Closing {
    /// From the first watcher told to end until the daemon's status shows no tracked file
    /// (polled every 10 ms).
    pub wall_ns: f64,
    /// The serving process's CPU time over that span, divided by N.
    pub cpu_per_file_ns: f64,
}

/// Running watcher processes and what the benchmark keeps of them.
struct Watchers {
    children: Vec<(Child, ChildStdin)>,
    /// The proxy's eventfds, taken from the watchers with `pidfd_getfd`.
    eventfds: Vec<OwnedFd>,
    shared: Shared,
    done: OwnedFd,
    n: usize,
}

/// How many files each watcher process opens.
fn split(n: usize) -> Vec<usize> {
    let processes = n.clamp(1, MAX_PROCESSES);
    (0..processes)
        .map(|i| n / processes + usize::from(i < n % processes))
        .collect()
}

fn set_inherited(fd: &OwnedFd, inherited: bool) {
    let flags = if inherited {
        FdFlags::empty()
    } else {
        FdFlags::CLOEXEC
    };
    rustix::io::fcntl_setfd(fd, flags).expect("fcntl F_SETFD");
}

impl Watchers {
    fn spawn(kind: Kind, mode: Mode, n: usize, device: &Path, state_dir: &Path) -> Watchers {
        let shared_fd = Shared::create();
        let shared = Shared::map(&shared_fd);
        let done = eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd");
        let exe = std::env::current_exe().expect("current exe");
        // Only the watchers inherit these two; nothing else spawns meanwhile.
        set_inherited(&shared_fd, true);
        set_inherited(&done, true);
        let mut children = Vec::new();
        for count in split(n) {
            let mut child = Command::new(&exe)
                .arg("--watcher")
                .args([kind.name(), mode.name()])
                .arg(count.to_string())
                .arg(shared_fd.as_raw_fd().to_string())
                .arg(done.as_raw_fd().to_string())
                .arg(device)
                .arg(state_dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a watcher process");
            let stdin = child.stdin.take().expect("stdin");
            children.push((child, stdin));
        }
        set_inherited(&shared_fd, false);
        set_inherited(&done, false);
        let mut watchers = Watchers {
            children,
            eventfds: Vec::new(),
            shared,
            done,
            n,
        };
        watchers.collect_ready(kind);
        watchers
    }

    /// Reads each watcher's `ready` line; for the proxy, takes a copy of each of its eventfds.
    fn collect_ready(&mut self, kind: Kind) {
        for (child, _) in &mut self.children {
            let stdout = child.stdout.take().expect("stdout");
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("watcher ready line");
            let fds = line
                .strip_prefix("ready")
                .unwrap_or_else(|| panic!("watcher said {line:?}"));
            if kind != Kind::Eventfd {
                continue;
            }
            let pid = rustix::process::Pid::from_child(child);
            let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                .expect("pidfd_open");
            for fd in fds.split_whitespace() {
                let fd = fd.parse().expect("fd number");
                let ours = rustix::process::pidfd_getfd(
                    &pidfd,
                    fd,
                    rustix::process::PidfdGetfdFlags::empty(),
                )
                .expect("pidfd_getfd");
                self.eventfds.push(ours);
            }
        }
    }

    /// The CPU time of every watcher process so far, in nanoseconds.
    fn cpu_ns(&self) -> f64 {
        self.children
            .iter()
            .map(|(child, _)| process_clock_ns(child.id()))
            .sum()
    }

    /// Waits until every watcher acknowledged and sleeps again: `rearmed` reaches N, then
    /// [`Watchers::wait_asleep`].
    fn wait_rearmed(&self, mode: Mode, deadline: Instant) {
        while self.shared.rearmed().load(Ordering::SeqCst) < self.n as u32 {
            assert!(Instant::now() < deadline, "watchers did not acknowledge");
            std::thread::sleep(Duration::from_micros(200));
        }
        self.wait_asleep(mode, deadline);
    }

    /// Waits until no thread of a watcher process runs, and in epoll mode none waits for the
    /// daemon's answer to a poll.
    fn wait_asleep(&self, mode: Mode, deadline: Instant) {
        while self
            .children
            .iter()
            .any(|(child, _)| !all_asleep(child.id(), mode))
        {
            assert!(Instant::now() < deadline, "watchers did not wait again");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn stop(self) {
        assert_eq!(
            self.shared.errors().load(Ordering::SeqCst),
            0,
            "a watcher saw a generation that did not grow"
        );
        drop(self.eventfds);
        for (mut child, stdin) in self.children {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// Whether every thread of `pid` sleeps: none in state `R`, and unless in read mode, none in a
/// FUSE request (an epoll thread re-polling its files).
fn all_asleep(pid: u32, mode: Mode) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state == Some('R') {
            return false;
        }
        mode == Mode::Read
            || !std::fs::read_to_string(task.path().join("wchan"))
                .unwrap_or_default()
                .contains("request_wait_answer")
    })
}

/// The CPU time and the sleeps (voluntary context switches) of some threads so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Run time, in nanoseconds (`schedstat`).
    pub cpu_ns: f64,
    /// Time ready to run but waiting for a CPU, in nanoseconds (`schedstat`).
    pub runnable_ns: f64,
    /// Times a thread gave up its CPU to wait (`voluntary_ctxt_switches` in `status`).
    pub sleeps: f64,
}

impl Usage {
    /// Of the threads whose `/proc` directories are `tasks`.
    pub fn of_tasks(tasks: impl IntoIterator<Item = PathBuf>) -> Usage {
        tasks.into_iter().fold(Usage::default(), |sum, task| {
            let schedstat = std::fs::read_to_string(task.join("schedstat")).unwrap_or_default();
            let mut fields = schedstat
                .split_whitespace()
                .map(|f| f.parse::<f64>().unwrap_or(0.0));
            let (cpu_ns, runnable_ns) =
                (fields.next().unwrap_or(0.0), fields.next().unwrap_or(0.0));
            let sleeps = std::fs::read_to_string(task.join("status"))
                .ok()
                .and_then(|s| {
                    let line = s
                        .lines()
                        .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
                    line.split_whitespace().nth(1)?.parse::<f64>().ok()
                })
                .unwrap_or(0.0);
            Usage {
                cpu_ns: sum.cpu_ns + cpu_ns,
                runnable_ns: sum.runnable_ns + runnable_ns,
                sleeps: sum.sleeps + sleeps,
            }
        })
    }

    /// Of every thread of process `pid`.
    pub fn of_process(pid: u32) -> Usage {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Usage::default();
        };
        Usage::of_tasks(tasks.flatten().map(|task| task.path()))
    }
}

/// The CPU time of the whole process `pid` so far (every thread, living or ended), in
/// nanoseconds: its process CPU clock, exact where `/proc/<pid>/stat` counts clock ticks.
fn process_clock_ns(pid: u32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the clock id; the call only writes it.
    let found = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    assert_eq!(found, 0, "clock_getcpuclockid({pid})");
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the call only writes it.
    let read = unsafe { libc::clock_gettime(clock, &mut now) };
    assert_eq!(read, 0, "clock_gettime of the CPU clock of {pid}");
    now.tv_sec as f64 * 1e9 + now.tv_nsec as f64
}

/// Runs `warmup + rounds` device rounds with `n` watchers waiting in `mode`.
pub fn device_point(served: &Served, mode: Mode, n: usize, warmup: usize, rounds: usize) -> Point {
    let device = &served.daemon.device;
    let trigger = DevFile::rw(device);
    let waiter = DevFile::rw(device);
    let page = PageMap::page_file(served);
    let state_dir = &served.daemon.state_dir;
    let watchers = Watchers::spawn(Kind::Device, mode, n, device, state_dir);
    let serving = served.daemon.serving_pid();
    let mut point = Point::new(Kind::Device, mode, n);
    let held = || served.daemon.count("pending_reads") as usize;
    wait_armed(&watchers, mode, true, held);
    for round in 0..warmup + rounds {
        let timed = Round::time(
            &watchers,
            || Usage::of_process(serving),
            || {
                assert_eq!(trigger.trigger(0), Ok(0), "trigger");
            },
            || {
                // A file that has not acked the new generation may not wait (EINTR): ack it first.
                assert_eq!(
                    waiter.ack(page.generation()),
                    Ok(4),
                    "ack of the waiting file"
                );
                assert_eq!(waiter.wait_watchers(WAIT_MS), Ok(0), "WAIT_WATCHERS");
            },
        );
        if round >= warmup {
            point.push(&timed);
        }
        wait_armed(&watchers, mode, false, held);
    }
    let (cpu_before, start) = (Usage::of_process(serving).cpu_ns, Instant::now());
    watchers.stop();
    wait_closed(served);
    point.closing = Some(Closing {
        wall_ns: start.elapsed().as_nanos() as f64,
        cpu_per_file_ns: (Usage::of_process(serving).cpu_ns - cpu_before) / n as f64,
    });
    point
}

/// Runs `warmup + rounds` rounds of the fan-out floor (a minimal FUSE server with the device's
/// protocol, [`FanoutFloor`]) with `n` watchers waiting in `mode`; `kind` says whether it
/// serves on one thread, on one per CPU each with its own clone of the connection, or on one
/// per CPU all reading the same descriptor.
pub fn floor_point(kind: Kind, mode: Mode, n: usize, warmup: usize, rounds: usize) -> Point {
    let (threads, clones) = match kind {
        Kind::FloorPerCpu => (crate::facts::cpus(), true),
        Kind::FloorShared => (crate::facts::cpus(), false),
        _ => (1, false),
    };
    let floor = FanoutFloor::start(n, threads, clones);
    let trigger = DevFile::rw(floor.file());
    let waiter = DevFile::rw(floor.file());
    let watchers = Watchers::spawn(kind, mode, n, floor.file(), Path::new(""));
    let mut point = Point::new(kind, mode, n);
    let held = || floor.held_reads();
    wait_armed(&watchers, mode, true, held);
    for round in 0..warmup + rounds {
        let timed = Round::time(
            &watchers,
            || floor.usage(),
            || {
                assert_eq!(trigger.trigger(0), Ok(0), "floor trigger");
            },
            || {
                assert_eq!(waiter.wait_watchers(WAIT_MS), Ok(0), "floor wait");
            },
        );
        if round >= warmup {
            point.push(&timed);
        }
        wait_armed(&watchers, mode, false, held);
    }
    watchers.stop();
    drop((trigger, waiter));
    floor.stop();
    point
}

/// The figures of one timed round.
struct Round {
    trigger_ns: f64,
    all_acked_ns: f64,
    cpu_per_watcher_ns: f64,
    sleeps_per_watcher: f64,
    runnable_per_watcher_ns: f64,
    watchers_cpu_per_watcher_ns: f64,
    idle: Jiffies,
}

impl Round {
    /// Times `trigger`, then `wait` (which returns once every watcher acknowledged), with the
    /// server's CPU time and sleeps from `usage`, the watchers' CPU time and the machine's idle
    /// time over the same span.
    fn time(
        watchers: &Watchers,
        usage: impl Fn() -> Usage,
        trigger: impl FnOnce(),
        wait: impl FnOnce(),
    ) -> Round {
        watchers.shared.rearmed().store(0, Ordering::SeqCst);
        let usage0 = usage();
        let watchers_cpu0 = watchers.cpu_ns();
        let jiffies0 = Jiffies::now();
        let t0 = Instant::now();
        trigger();
        let t1 = Instant::now();
        wait();
        let t2 = Instant::now();
        let idle = Jiffies::now().since(jiffies0);
        let usage1 = usage();
        Round {
            trigger_ns: (t1 - t0).as_nanos() as f64,
            all_acked_ns: (t2 - t0).as_nanos() as f64,
            cpu_per_watcher_ns: (usage1.cpu_ns - usage0.cpu_ns) / watchers.n as f64,
            sleeps_per_watcher: (usage1.sleeps - usage0.sleeps) / watchers.n as f64,
            runnable_per_watcher_ns: (usage1.runnable_ns - usage0.runnable_ns) / watchers.n as f64,
            watchers_cpu_per_watcher_ns: (watchers.cpu_ns() - watchers_cpu0) / watchers.n as f64,
            idle,
        }
    }
}

/// The machine's CPU time so far, idle and in all, in clock ticks (the `cpu` line of
/// `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Jiffies {
    /// Idle and waiting for I/O.
    pub idle: u64,
    /// Every state.
    pub total: u64,
}

impl Jiffies {
    fn now() -> Jiffies {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        Jiffies {
            idle: fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0),
            total: fields.iter().take(8).sum(),
        }
    }

    fn plus(self, more: Jiffies) -> Jiffies {
        Jiffies {
            idle: self.idle + more.idle,
            total: self.total + more.total,
        }
    }

    fn since(self, earlier: Jiffies) -> Jiffies {
        Jiffies {
            idle: self.idle.saturating_sub(earlier.idle),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// The idle share of these ticks, if there are enough of them to say (half a second of
    /// one CPU at 100 ticks a second).
    pub fn idle_share(self) -> Option<f64> {
        (self.total >= 50).then(|| self.idle as f64 / self.total as f64)
    }
}

/// Watchers are waiting again, and in read mode the server holds N reads (`held`).
fn wait_armed(watchers: &Watchers, mode: Mode, first: bool, held: impl Fn() -> usize) {
    let deadline = Instant::now() + ROUND_LIMIT;
    if first {
        watchers.wait_asleep(mode, deadline);
    } else {
        watchers.wait_rearmed(mode, deadline);
    }
    if mode == Mode::Read {
        while held() < watchers.n {
            assert!(Instant::now() < deadline, "reads did not reach the server");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Waits until the daemon has seen the watchers' files closed.
fn wait_closed(served: &Served) {
    let deadline = Instant::now() + ROUND_LIMIT;
    while served.daemon.count("tracked") > 0 {
        assert!(Instant::now() < deadline, "watcher files were not released");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `warmup + rounds` rounds of the eventfd proxy with `n` watchers waiting in `mode`.
pub fn eventfd_point(mode: Mode, n: usize, warmup: usize, rounds: usize) -> Point {
    let watchers = Watchers::spawn(Kind::Eventfd, mode, n, Path::new(""), Path::new(""));
    let mut point = Point::new(Kind::Eventfd, mode, n);
    let one = 1u64.to_ne_bytes();
    let mut buf = [0u8; 8];
    watchers.wait_asleep(mode, Instant::now() + ROUND_LIMIT);
    for round in 0..warmup + rounds {
        watchers.shared.rearmed().store(0, Ordering::SeqCst);
        watchers
            .shared
            .acks_left()
            .store(n as u32, Ordering::SeqCst);
        let watchers_cpu0 = watchers.cpu_ns();
        let jiffies0 = Jiffies::now();
        let t0 = Instant::now();
        for fd in &watchers.eventfds {
            rustix::io::write(fd, &one).expect("eventfd write");
        }
        let t1 = Instant::now();
        rustix::io::read(watchers.done.as_fd(), &mut buf).expect("read done");
        let t2 = Instant::now();
        let idle = Jiffies::now().since(jiffies0);
        let watchers_cpu = (watchers.cpu_ns() - watchers_cpu0) / n as f64;
        if round >= warmup {
            point.watchers_cpu_per_watcher.push(watchers_cpu);
            point.trigger.push((t1 - t0).as_nanos() as f64);
            point.all_acked.push((t2 - t0).as_nanos() as f64);
            point.idle = point.idle.plus(idle);
        }
        watchers.wait_rearmed(mode, Instant::now() + ROUND_LIMIT);
    }
    watchers.stop();
    point
}

impl Point {
    fn new(kind: Kind, mode: Mode, n: usize) -> Point {
        Point {
            kind,
            mode,
            n,
            trigger: Vec::new(),
            all_acked: Vec::new(),
            cpu_per_watcher: Vec::new(),
            sleeps_per_watcher: Vec::new(),
            runnable_per_watcher: Vec::new(),
            watchers_cpu_per_watcher: Vec::new(),
            idle: Jiffies::default(),
            closing: None,
        }
    }

    /// The shortest the trigger → all acknowledged span could be with the CPU time it took:
    /// the server's and the watchers' CPU per watcher (medians of rounds), times N, shared out
    /// over the CPUs this benchmark may run on (its affinity). The proxy's server is the
    /// benchmark's own writes, which are not counted: its bound is the watchers' alone.
    pub fn cpu_bound_ns(&self) -> f64 {
        let server = if self.cpu_per_watcher.is_empty() {
            0.0
        } else {
            crate::report::median(&self.cpu_per_watcher)
        };
        let watchers = crate::report::median(&self.watchers_cpu_per_watcher);
        (server + watchers) * self.n as f64 / crate::facts::cpus() as f64
    }

    fn push(&mut self, round: &Round) {
        self.trigger.push(round.trigger_ns);
        self.all_acked.push(round.all_acked_ns);
        self.cpu_per_watcher.push(round.cpu_per_watcher_ns);
        self.sleeps_per_watcher.push(round.sleeps_per_watcher);
        self.runnable_per_watcher
            .push(round.runnable_per_watcher_ns);
        self.watchers_cpu_per_watcher
            .push(round.watchers_cpu_per_watcher_ns);
        self.idle = self.idle.plus(round.idle);
    }
}

/// Lets this process and its watchers open `files` descriptors and more.
pub fn raise_open_files(files: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_some_and(|c| c >= files) {
        return;
    }
    let limit = Rlimit {
        current: Some(files),
        maximum: Some(now.maximum.map_or(files, |m| m.max(files))),
    };
    setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE (needs root)");
}
