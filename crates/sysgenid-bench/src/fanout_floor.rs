//! The floor for the fan-out over FUSE: a minimal server with the device's wait-and-ack protocol.
//!
//! Serving threads of this process (one, or one per CPU on clones of the connection or on one
//! shared descriptor) serve one
//! file with the round trips a tracked watcher of the
//! device makes, and nothing else: a `read(2)` returns the 4-byte counter at once if the file
//! has not read it yet and is held otherwise; a 4-byte `write(2)` of the current counter is an
//! acknowledgement; `poll(2)` says readable while the file has a value to read. The trigger
//! ioctl adds one to the counter, answers itself, then answers every held read and sends
//! `FUSE_NOTIFY_POLL` for every poll handle. The wait ioctl returns once `expected`
//! acknowledgements of the current counter have come. No persist, no page, no capability
//! check, no sessions: what a fan-out costs over FUSE itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::io::Errno;
use sysgenid_abi::{SYSGENID_TRIGGER_GEN_UPDATE, SYSGENID_WAIT_WATCHERS};
use sysgenid_fuse::wire::{self, FUSE_POLL_SCHEDULE_NOTIFY, FUSE_ROOT_ID};
use sysgenid_fuse::{
    Channel, InitWants, Mount, Operation, Received, RequestBuffer, negotiate, parse, reply,
};

use crate::fanout::Usage;
use crate::fuse_floor::mount_file;

const PAGE: u64 = 4096;
/// `POLLIN | POLLRDNORM`.
const READABLE: u32 = 0x41;

/// A mounted fan-out floor server.
#[derive(Debug)]
pub struct FanoutFloor {
    mount: Mount,
    file: PathBuf,
    servers: Vec<JoinHandle<()>>,
    /// Reads held now.
    held: Arc<AtomicUsize>,
    /// The serving threads' ids, once they run.
    tids: Arc<Vec<AtomicU32>>,
    _dir: tempfile::TempDir,
}

impl FanoutFloor {
    /// Mounts the file in a new temporary directory and starts `threads` serving threads, each
    /// on its own clone of the connection if `clones`, else all reading the one descriptor; the
    /// wait ioctl returns once `expected` files have acknowledged the current counter.
    pub fn start(expected: usize, threads: usize, clones: bool) -> FanoutFloor {
        let (dir, file, mount, first) = mount_file("sysgenid-bench-fanout-floor");
        let mut channels = vec![first];
        while clones && channels.len() < threads {
            let clone = channels[0].clone_connection().expect("FUSE_DEV_IOC_CLONE");
            channels.push(clone);
        }
        let channels = Arc::new(channels);
        let held = Arc::new(AtomicUsize::new(0));
        let tids: Arc<Vec<AtomicU32>> = Arc::new((0..threads).map(|_| AtomicU32::new(0)).collect());
        let state = Arc::new(Mutex::new(State::new(expected, Arc::clone(&held))));
        let servers = (0..threads)
            .map(|me| {
                let (channels, state, tids) =
                    (Arc::clone(&channels), Arc::clone(&state), Arc::clone(&tids));
                std::thread::Builder::new()
                    .name(format!("fanout-floor-{me}"))
                    .spawn(move || {
                        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
                        tids[me].store(tid, Ordering::SeqCst);
                        serve(&channels, me.min(channels.len() - 1), &state);
                    })
                    .expect("spawn a fan-out floor server")
            })
            .collect();
        FanoutFloor {
            mount,
            servers,
            file,
            held,
            tids,
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

    /// CPU time and sleeps of the serving threads so far.
    pub fn usage(&self) -> Usage {
        Usage::of_tasks(self.tids.iter().map(|tid| {
            let tid = tid.load(Ordering::SeqCst);
            PathBuf::from(format!("/proc/self/task/{tid}"))
        }))
    }

    /// Unmounts and waits for the serving threads to end.
    pub fn stop(self) {
        self.mount
            .unmount(false)
            .expect("unmount the fan-out floor");
        for server in self.servers {
            server.join().expect("fan-out floor thread");
        }
    }
}

/// Answers requests from descriptor `me` of `channels` until the file system is unmounted.
/// The state is locked while a request is answered; replies are sent after, each through the
/// descriptor its request came from.
fn serve(channels: &[Channel], me: usize, state: &Mutex<State>) {
    let mut buf = RequestBuffer::default();
    loop {
        let msg = match channels[me].receive(&mut buf).expect("receive a request") {
            Received::Message(msg) => msg,
            Received::Unmounted => return,
        };
        let req = parse(msg).expect("the kernel sent a valid request");
        let answers = {
            let mut state = state.lock().expect("floor state");
            let answers = state.answer(req.header.unique, me, req.op);
            state.held.store(state.reads.len(), Ordering::SeqCst);
            answers
        };
        for (channel, answer) in answers {
            // After an unmount the kernel may refuse a late reply; that is fine.
            let _ = channels[channel].send(&answer);
        }
    }
}

/// A request, by its id and the descriptor it was read from (its reply goes back there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Asked {
    unique: u64,
    channel: usize,
}

/// Messages to send, each with the descriptor to send it through.
type Out = Vec<(usize, Vec<u8>)>;

/// Everything the server knows.
struct State {
    counter: u32,
    /// The counter each open file last read, by file handle.
    seen: HashMap<u64, u32>,
    next_fh: u64,
    /// Held reads, with their file handles.
    reads: Vec<(Asked, u64)>,
    /// Poll handles to notify at the next trigger, by file handle.
    polls: HashMap<u64, u64>,
    acks: usize,
    expected: usize,
    waiter: Option<Asked>,
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

    /// The messages that answer one request, read from descriptor `channel`, in order.
    fn answer(&mut self, unique: u64, channel: usize, op: Operation<'_>) -> Out {
        let from = Asked { unique, channel };
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
                reply::open(
                    unique,
                    fh,
                    wire::FOPEN_DIRECT_IO
                        | wire::FOPEN_NONSEEKABLE
                        | wire::FOPEN_PARALLEL_DIRECT_WRITES,
                )
            }
            Operation::Read { fh, flags, .. } => return self.read(from, fh, flags),
            Operation::Write { data, .. } => {
                if data == self.counter.to_ne_bytes() {
                    self.acks += 1;
                }
                let mut out = vec![(channel, reply::write(unique, data.len() as u32))];
                out.extend(self.release_waiter());
                return out;
            }
            Operation::Poll { fh, kh, flags, .. } => {
                if flags & FUSE_POLL_SCHEDULE_NOTIFY != 0 {
                    self.polls.insert(fh, kh);
                }
                reply::poll(unique, if self.has_news(fh) { READABLE } else { 0 })
            }
            Operation::Ioctl { cmd, .. } => return self.ioctl(from, cmd),
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
        vec![(channel, one)]
    }

    fn has_news(&self, fh: u64) -> bool {
        self.seen.get(&fh).is_some_and(|&seen| seen < self.counter)
    }

    /// The counter if the file has not read it, `EAGAIN` for a nonblocking file, else nothing
    /// (the read is held).
    fn read(&mut self, from: Asked, fh: u64, flags: u32) -> Out {
        if self.has_news(fh) {
            self.seen.insert(fh, self.counter);
            return vec![(
                from.channel,
                reply::data(from.unique, &self.counter.to_ne_bytes()),
            )];
        }
        if flags & rustix::fs::OFlags::NONBLOCK.bits() != 0 {
            let eagain = reply::error(from.unique, Errno::AGAIN.raw_os_error());
            return vec![(from.channel, eagain)];
        }
        self.reads.push((from, fh));
        Vec::new()
    }

    fn ioctl(&mut self, from: Asked, cmd: u32) -> Out {
        match cmd {
            SYSGENID_TRIGGER_GEN_UPDATE => {
                self.counter += 1;
                self.acks = 0;
                let mut out = vec![(from.channel, reply::ioctl(from.unique, 0, &[]))];
                let value = self.counter.to_ne_bytes();
                for (read, fh) in std::mem::take(&mut self.reads) {
                    self.seen.insert(fh, self.counter);
                    out.push((read.channel, reply::data(read.unique, &value)));
                }
                let notify = self.polls.drain().map(|(_, kh)| reply::notify_poll(kh));
                out.extend(notify.map(|message| (from.channel, message)));
                out
            }
            SYSGENID_WAIT_WATCHERS => {
                self.waiter = Some(from);
                self.release_waiter().into_iter().collect()
            }
            _ => vec![(
                from.channel,
                reply::error(from.unique, Errno::NOTTY.raw_os_error()),
            )],
        }
    }

    /// `EINTR` for a held read or wait that a signal interrupted (an exiting watcher's thread
    /// cannot end until its read is answered).
    fn interrupt(&mut self, target: u64) -> Out {
        let eintr = |from: Asked| {
            (
                from.channel,
                reply::error(target, Errno::INTR.raw_os_error()),
            )
        };
        if let Some(i) = self
            .reads
            .iter()
            .position(|(read, _)| read.unique == target)
        {
            let (read, _) = self.reads.swap_remove(i);
            return vec![eintr(read)];
        }
        match self.waiter {
            Some(waiter) if waiter.unique == target => {
                self.waiter = None;
                vec![eintr(waiter)]
            }
            _ => Vec::new(),
        }
    }

    /// The answer to a held wait, once every expected file has acknowledged.
    fn release_waiter(&mut self) -> Option<(usize, Vec<u8>)> {
        if self.acks < self.expected {
            return None;
        }
        let waiter = self.waiter.take()?;
        Some((waiter.channel, reply::ioctl(waiter.unique, 0, &[])))
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
