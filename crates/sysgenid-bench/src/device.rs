//! The device served by a real `sysgenidd` (started through the e2e harness).

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use sysgenid_e2e::{Daemon, DaemonOptions, DevFile};

use crate::baselines::time_loads;
use crate::facts;
use crate::vcpu::{Placed, ServerThread, time_each_placed, time_each_spaced};
use crate::wakeup::{self, TaskState, WakeupSamples};

/// A running daemon and the file system its state directory is on.
#[derive(Debug)]
pub struct Served {
    /// The daemon (dropped first: it unmounts before the directory goes).
    pub daemon: Daemon,
    /// File system type of the state directory, such as `tmpfs` or `ext4`.
    pub fs: String,
    /// The directory holding the daemon's directory.
    pub parent_dir: String,
    /// The serving process's thread that reads `/dev/fuse`.
    pub server: ServerThread,
    _dir: Option<tempfile::TempDir>,
}

impl Served {
    /// Starts a daemon in a new directory under `parent`, or in the harness's default temporary
    /// directory when `parent` is `None`.
    pub fn start(parent: Option<&Path>) -> Served {
        let (daemon, dir) = match parent {
            Some(parent) => {
                let dir = tempfile::Builder::new()
                    .prefix("sysgenid-bench-")
                    .tempdir_in(parent)
                    .expect("temp dir for the daemon");
                let options = DaemonOptions {
                    dir: Some(dir.path().to_owned()),
                    ..DaemonOptions::default()
                };
                (Daemon::start_with(options), Some(dir))
            }
            None => (Daemon::start(), None),
        };
        let fs = facts::fs_type(&daemon.state_dir);
        let parent_dir = daemon
            .dir
            .parent()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string();
        let server = {
            let file = DevFile::rw_nonblock(&daemon.device);
            let mut buf = [0u8; 4];
            ServerThread::find(daemon.serving_pid(), || {
                let _ = rustix::io::read(&file, &mut buf);
            })
        };
        Served {
            daemon,
            fs,
            parent_dir,
            server,
            _dir: dir,
        }
    }

    /// `<fs> <parent dir>`, for labels.
    pub fn place(&self) -> String {
        format!("{} {}", self.fs, self.parent_dir)
    }

    fn generation(&self) -> u32 {
        u32::try_from(self.daemon.generation()).expect("generation fits in u32")
    }
}

/// `read(2)` of 4 bytes on an up-to-date `O_NONBLOCK` file: `EAGAIN`, a round trip to the daemon.
pub fn nonblocking_reads(served: &Served, warmup: usize, iters: usize) -> Placed {
    let file = DevFile::rw_nonblock(&served.daemon.device);
    let mut buf = [0u8; 4];
    let mut wrong = 0usize;
    let samples = time_each_placed(warmup, iters, &served.server, || {
        if rustix::io::read(&file, &mut buf) != Err(Errno::AGAIN) {
            wrong += 1;
        }
    });
    assert_eq!(
        wrong, 0,
        "a nonblocking read of an up-to-date file did not give EAGAIN"
    );
    samples
}

/// `write(2)` of the current generation on an up-to-date file: returns 4.
pub fn acks(served: &Served, warmup: usize, iters: usize) -> Placed {
    let file = DevFile::rw(&served.daemon.device);
    let current = served.generation().to_ne_bytes();
    let mut wrong = 0usize;
    let samples = time_each_placed(warmup, iters, &served.server, || {
        if rustix::io::write(&file, &current) != Ok(4) {
            wrong += 1;
        }
    });
    assert_eq!(wrong, 0, "an ack did not return 4");
    samples
}

/// `TRIGGER_GEN_UPDATE(0)` with nobody blocked: persist (write, fsync, rename), publish, reply.
pub fn triggers(served: &Served, warmup: usize, iters: usize) -> Placed {
    timed_triggers(served, |op| {
        time_each_placed(warmup, iters, &served.server, op)
    })
}

/// The same trigger, each call after `gap` of sleep: one bump on an idle machine.
pub fn spaced_triggers(served: &Served, gap: Duration, iters: usize) -> Placed {
    timed_triggers(served, |op| {
        time_each_spaced(gap, iters, &served.server, op)
    })
}

fn timed_triggers(served: &Served, time: impl FnOnce(&mut dyn FnMut()) -> Placed) -> Placed {
    let file = DevFile::rw(&served.daemon.device);
    let mut wrong = 0usize;
    let samples = time(&mut || {
        if file.trigger(0) != Ok(0) {
            wrong += 1;
        }
    });
    assert_eq!(wrong, 0, "a trigger did not return 0");
    samples
}

/// A's read is held by the daemon (its wchan says so and the daemon counts it as pending).
fn read_is_pending(served: &Served, task: &TaskState) -> bool {
    task.sleeps_in("request_wait_answer") && served.daemon.count("pending_reads") >= 1
}

/// A blocked in `read(2)`, B calls `TRIGGER_GEN_UPDATE`; A then acks and blocks again.
pub fn read_wakeups(served: &Served, warmup: usize, iters: usize) -> WakeupSamples {
    let waiter = DevFile::rw(&served.daemon.device);
    let trigger = DevFile::rw(&served.daemon.device);
    let wait = || {
        let generation = waiter.read().expect("blocking read");
        let woke = Instant::now();
        assert_eq!(waiter.ack(generation), Ok(4), "ack after wakeup");
        woke
    };
    let ready = |task: &TaskState| read_is_pending(served, task);
    let fire = || assert_eq!(trigger.trigger(0), Ok(0), "trigger");
    wakeup::measure(warmup, iters, wait, ready, fire)
}

/// A blocked in `poll(2)`, B calls `TRIGGER_GEN_UPDATE`; A then reads, acks and polls again.
pub fn poll_wakeups(served: &Served, warmup: usize, iters: usize) -> WakeupSamples {
    let waiter = DevFile::rw(&served.daemon.device);
    let trigger = DevFile::rw(&served.daemon.device);
    let wait = || {
        let mut fds = [PollFd::new(&waiter, PollFlags::IN | PollFlags::RDNORM)];
        rustix::event::poll(&mut fds, None).expect("poll");
        let woke = Instant::now();
        let generation = waiter.read().expect("read after poll");
        assert_eq!(waiter.ack(generation), Ok(4), "ack after wakeup");
        woke
    };
    // The FUSE POLL request (which registers) is answered before the kernel sleeps in poll.
    let ready = |task: &TaskState| task.sleeps_in("poll");
    let fire = || assert_eq!(trigger.trigger(0), Ok(0), "trigger");
    wakeup::measure(warmup, iters, wait, ready, fire)
}

/// A read-only shared mapping of one page.
#[derive(Debug)]
pub struct PageMap {
    ptr: *mut std::ffi::c_void,
}

impl PageMap {
    /// Maps the page of the daemon's page file.
    pub fn page_file(served: &Served) -> PageMap {
        let file = std::fs::File::open(served.daemon.page_file()).expect("open the page file");
        PageMap::new(&file).expect("mmap the page file")
    }

    /// The generation the page shows now.
    pub fn generation(&self) -> u32 {
        // SAFETY: the mapping is one whole page, page-aligned, and lives as long as `self`.
        unsafe { self.generation_ptr().read_volatile() }
    }

    fn new(fd: impl AsFd) -> rustix::io::Result<PageMap> {
        // SAFETY: a new read-only shared mapping at an address the kernel picks; nothing else
        // in this process refers to that range.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                sysgenid_abi::PAGE_SIZE,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        Ok(PageMap { ptr })
    }

    fn generation_ptr(&self) -> *const u32 {
        self.ptr
            .cast::<u8>()
            .wrapping_add(sysgenid_abi::GENERATION_OFFSET)
            .cast::<u32>()
    }

    /// Volatile loads of the generation word, in ns per load.
    fn time_loads(&self, warmup: usize, batches: usize, per: usize) -> Vec<f64> {
        // SAFETY: the mapping is one whole page, page-aligned, and lives as long as `self`.
        unsafe { time_loads(self.generation_ptr(), warmup, batches, per) }
    }
}

impl Drop for PageMap {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `PageMap::new` and no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr, sysgenid_abi::PAGE_SIZE) };
    }
}

/// Volatile loads from the mmapped page file, `<state-dir>/generation`.
pub fn page_file_loads(served: &Served, warmup: usize, batches: usize, per: usize) -> Vec<f64> {
    PageMap::page_file(served).time_loads(warmup, batches, per)
}

/// Volatile loads from a mapping of the device itself, if the daemon allows it (Linux 6.6+).
pub fn device_map_loads(
    served: &Served,
    warmup: usize,
    batches: usize,
    per: usize,
) -> Result<Vec<f64>, Errno> {
    let file = DevFile::open(&served.daemon.device, rustix::fs::OFlags::RDONLY)?;
    let map = PageMap::new(&file)?;
    Ok(map.time_loads(warmup, batches, per))
}
