//! The floor for the fan-out over FUSE: a minimal server with the device's wait-and-ack protocol.
//!
//! One thread of this process serves one file with the round trips a tracked watcher of the
//! device makes, and nothing else: a `read(2)` returns the 4-byte counter at once if the file
//! has not read it yet and is held otherwise; a 4-byte `write(2)` of the current counter is an
//! acknowledgement; `poll(2)` says readable while the file has a value to read. The trigger
//! ioctl adds one to the counter, answers itself, then answers every held read and sends
//! `FUSE_NOTIFY_POLL` for every poll handle. The wait ioctl returns once `expected`
//! acknowledgements of the current counter have come. No persist, no page, no capability
//! check, no sessions: what a fan-out costs over FUSE with one serving thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::io::Errno;
use sysgenid_abi::{SYSGENID_TRIGGER_GEN_UPDATE, SYSGENID_WAIT_WATCHERS};
use sysgenid_fuse::wire::{self, FUSE_POLL_SCHEDULE_NOTIFY, FUSE_ROOT_ID};
use sysgenid_fuse::{
    Channel, InitWants, Mount, MountMethod, MountOptions, Operation, Received, RequestBuffer,
    negotiate, parse, reply,
};

const PAGE: u64 = 4096;
/// `POLLIN | POLLRDNORM`.
const READABLE: u32 = 0x41;

/// A mounted fan-out floor server.
#[derive(Debug)]
pub struct FanoutFloor {
    mount: Mount,
    server: JoinHandle<()>,
    file: PathBuf,
    /// Reads held now.
    held: Arc<AtomicUsize>,
    /// The serving thread's id, once it runs.
    tid: Arc<AtomicU32>,
    _dir: tempfile::TempDir,
}

impl FanoutFloor {
    /// Mounts the file in a new temporary directory and starts its serving thread; the wait
    /// ioctl returns once `expected` files have acknowledged the current counter.
    pub fn start(expected: usize) -> FanoutFloor {
        let dir = tempfile::Builder::new()
            .prefix("sysgenid-bench-fanout-floor-")
            .tempdir()
            .expect("temp dir");
        let file = dir.path().join("floor");
        std::fs::write(&file, b"").expect("mount target");
        let options = MountOptions {
            fsname: "sysgenid-bench-fanout-floor".to_owned(),
            method: MountMethod::Syscall,
            ..MountOptions::default()
        };
        let (mount, channel) = sysgenid_fuse::mount(&file, &options).expect("mount the floor");
        let held = Arc::new(AtomicUsize::new(0));
        let tid = Arc::new(AtomicU32::new(0));
        let mut state = State::new(expected, Arc::clone(&held));
        let server_tid = Arc::clone(&tid);
        let server = std::thread::Builder::new()
            .name("fanout-floor".to_owned())
            .spawn(move || {
                let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
                server_tid.store(me, Ordering::SeqCst);
                state.serve(&channel);
            })
            .expect("spawn the fan-out floor server");
        FanoutFloor {
            mount,
            server,
            file,
            held,
            tid,
            _dir: dir,
        }
    }

    /// The mounted file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// How many reads the server holds now.
    pub fn held_reads(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// CPU time of the serving thread so far, in nanoseconds.
    pub fn cpu_ns(&self) -> f64 {
        let tid = self.tid.load(Ordering::SeqCst);
        std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Unmounts and waits for the serving thread to end.
    pub fn stop(self) {
        self.mount
            .unmount(false)
            .expect("unmount the fan-out floor");
        self.server.join().expect("fan-out floor thread");
    }
}

/// Everything the server knows.
struct State {
    counter: u32,
    /// The counter each open file last read, by file handle.
    seen: HashMap<u64, u32>,
    next_fh: u64,
    /// Held reads: request id and file handle.
    reads: Vec<(u64, u64)>,
    /// Poll handles to notify at the next trigger, by file handle.
    polls: HashMap<u64, u64>,
    acks: usize,
    expected: usize,
    waiter: Option<u64>,
    held: Arc<AtomicUsize>,
}

impl State {
    fn new(expected: usize, held: Arc<AtomicUsize>) -> State {
        State {
            counter: 1,
            seen: HashMap::new(),
            next_fh: 1,
            reads: Vec::new(),
            polls: HashMap::new(),
            acks: 0,
            expected,
            waiter: None,
            held,
        }
    }

    /// Answers requests until the file system is unmounted.
    fn serve(&mut self, channel: &Channel) {
        let mut buf = RequestBuffer::default();
        loop {
            let msg = match channel.receive(&mut buf).expect("receive a request") {
                Received::Message(msg) => msg,
                Received::Unmounted => return,
            };
            let req = parse(msg).expect("the kernel sent a valid request");
            for answer in self.answer(req.header.unique, req.op) {
                // After an unmount the kernel may refuse a late reply; that is fine.
                let _ = channel.send(&answer);
            }
            self.held.store(self.reads.len(), Ordering::SeqCst);
        }
    }

    /// The messages that answer one request, in order.
    fn answer(&mut self, unique: u64, op: Operation<'_>) -> Vec<Vec<u8>> {
        let one = match op {
            Operation::Init(kernel) => {
                let agreed = negotiate(&kernel, &InitWants::default()).expect("negotiate");
                reply::init(unique, &agreed)
            }
            Operation::Getattr { .. } => reply::attr(unique, &attr(), Duration::from_secs(3600)),
            Operation::Open { .. } => {
                let fh = self.next_fh;
                self.next_fh += 1;
                self.seen.insert(fh, self.counter);
                reply::open(unique, fh, wire::FOPEN_DIRECT_IO | wire::FOPEN_NONSEEKABLE)
            }
            Operation::Read { fh, flags, .. } => {
                return self.read(unique, fh, flags).into_iter().collect();
            }
            Operation::Write { data, .. } => {
                if data == self.counter.to_ne_bytes() {
                    self.acks += 1;
                }
                let mut out = vec![reply::write(unique, data.len() as u32)];
                out.extend(self.release_waiter());
                return out;
            }
            Operation::Poll { fh, kh, flags, .. } => {
                if flags & FUSE_POLL_SCHEDULE_NOTIFY != 0 {
                    self.polls.insert(fh, kh);
                }
                reply::poll(unique, if self.has_news(fh) { READABLE } else { 0 })
            }
            Operation::Ioctl { cmd, .. } => return self.ioctl(unique, cmd),
            Operation::Release { fh, .. } => {
                self.seen.remove(&fh);
                self.polls.remove(&fh);
                reply::empty(unique)
            }
            Operation::Flush { .. } => reply::empty(unique),
            Operation::Interrupt { unique: target } => return self.interrupt(target),
            Operation::Forget { .. } | Operation::BatchForget { .. } => return Vec::new(),
            _ => reply::error(unique, Errno::NOSYS.raw_os_error()),
        };
        vec![one]
    }

    fn has_news(&self, fh: u64) -> bool {
        self.seen.get(&fh).is_some_and(|&seen| seen < self.counter)
    }

    /// The counter if the file has not read it, `EAGAIN` for a nonblocking file, else nothing
    /// (the read is held).
    fn read(&mut self, unique: u64, fh: u64, flags: u32) -> Option<Vec<u8>> {
        if self.has_news(fh) {
            self.seen.insert(fh, self.counter);
            return Some(reply::data(unique, &self.counter.to_ne_bytes()));
        }
        if flags & rustix::fs::OFlags::NONBLOCK.bits() != 0 {
            return Some(reply::error(unique, Errno::AGAIN.raw_os_error()));
        }
        self.reads.push((unique, fh));
        None
    }

    fn ioctl(&mut self, unique: u64, cmd: u32) -> Vec<Vec<u8>> {
        match cmd {
            SYSGENID_TRIGGER_GEN_UPDATE => {
                self.counter += 1;
                self.acks = 0;
                let mut out = vec![reply::ioctl(unique, 0, &[])];
                let value = self.counter.to_ne_bytes();
                for (read, fh) in std::mem::take(&mut self.reads) {
                    self.seen.insert(fh, self.counter);
                    out.push(reply::data(read, &value));
                }
                out.extend(self.polls.drain().map(|(_, kh)| reply::notify_poll(kh)));
                out
            }
            SYSGENID_WAIT_WATCHERS => {
                self.waiter = Some(unique);
                self.release_waiter().into_iter().collect()
            }
            _ => vec![reply::error(unique, Errno::NOTTY.raw_os_error())],
        }
    }

    /// `EINTR` for a held read or wait that a signal interrupted (an exiting watcher's thread
    /// cannot end until its read is answered).
    fn interrupt(&mut self, target: u64) -> Vec<Vec<u8>> {
        let eintr = || reply::error(target, Errno::INTR.raw_os_error());
        if let Some(i) = self.reads.iter().position(|&(read, _)| read == target) {
            self.reads.swap_remove(i);
            return vec![eintr()];
        }
        if self.waiter == Some(target) {
            self.waiter = None;
            return vec![eintr()];
        }
        Vec::new()
    }

    /// The answer to a held wait, once every expected file has acknowledged.
    fn release_waiter(&mut self) -> Option<Vec<u8>> {
        if self.acks < self.expected {
            return None;
        }
        self.waiter.take().map(|w| reply::ioctl(w, 0, &[]))
    }
}

fn attr() -> wire::Attr {
    wire::Attr {
        ino: FUSE_ROOT_ID,
        size: PAGE,
        blocks: 8,
        mode: 0o100_666,
        nlink: 1,
        blksize: PAGE as u32,
        ..Default::default()
    }
}
