//! The watcher helper process of the fan-out: this executable run as `sysgenid-bench --watcher`.
//!
//! A watcher opens its files, says `ready <fd> <fd> ...` on stdout, then waits for changes until
//! its stdin closes. On each change it takes the new value and acknowledges it: on the device,
//! `read(2)` of the generation then `write(2)` of it (4 bytes); on an eventfd (the proxy),
//! `read(2)` of the counter then a decrement of the shared `acks_left`, the last one writing the
//! shared `done` eventfd; on the fan-out floor (a minimal FUSE server), as on the device. After each acknowledgement it adds one to the shared `rearmed` count and
//! waits again. In `read` mode one thread per file blocks in `read(2)`; in `epoll` mode one thread
//! waits in `epoll_wait(2)` on all its files and reads each ready one. Two more modes, device
//! only, show the client's page lever: in `poll` mode one thread per file waits in `poll(2)`,
//! then reads and acks; in `client` mode one thread per file runs the Rust client's
//! `Watcher::next_change` (poll, then the value from the mapped page file) and `Watcher::ack`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rustix::event::epoll;
use rustix::event::{EventfdFlags, PollFd, PollFlags, eventfd};
use rustix::fs::OFlags;
use sysgenid_e2e::DevFile;

use crate::shared::Shared;

/// Stack of each reader thread: they only block in `read(2)`.
const READER_STACK: usize = 64 * 1024;

/// What a watcher waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Tracked files of the device.
    Device,
    /// Eventfds, the in-kernel proxy.
    Eventfd,
    /// The minimal FUSE server with the device's protocol ([`crate::fanout_floor`]).
    Floor,
    /// The same with one serving thread per CPU, on clones of the connection.
    FloorPerCpu,
    /// The same with one serving thread per CPU, all reading one descriptor.
    FloorShared,
}

/// How a watcher waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One thread per file, blocked in `read(2)`.
    Read,
    /// One thread in `epoll_wait(2)` on all files.
    Epoll,
    /// One thread per file in `poll(2)`, then `read(2)` (device only).
    Poll,
    /// One thread per file in the Rust client's `Watcher::next_change` (device only).
    Client,
}

impl Kind {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Eventfd => "eventfd",
            Kind::Floor => "FUSE floor",
            Kind::FloorPerCpu => "FUSE floor, a thread per CPU",
            Kind::FloorShared => "FUSE floor, a thread per CPU on one descriptor",
        }
    }
}

impl Mode {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Epoll => "epoll",
            Mode::Poll => "poll",
            Mode::Client => "client",
        }
    }
}

/// Everything a watcher process is told on its command line.
#[derive(Debug)]
struct Args {
    kind: Kind,
    mode: Mode,
    count: usize,
    shared_fd: RawFd,
    done_fd: RawFd,
    device: PathBuf,
    state_dir: PathBuf,
}

fn parse(args: &[String]) -> Args {
    let get = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let kind = match get(0) {
        "device" => Kind::Device,
        "eventfd" => Kind::Eventfd,
        "FUSE floor" => Kind::Floor,
        "FUSE floor, a thread per CPU" => Kind::FloorPerCpu,
        "FUSE floor, a thread per CPU on one descriptor" => Kind::FloorShared,
        other => panic!("watcher: unknown kind {other:?}"),
    };
    let mode = match get(1) {
        "read" => Mode::Read,
        "epoll" => Mode::Epoll,
        "poll" => Mode::Poll,
        "client" => Mode::Client,
        other => panic!("watcher: unknown mode {other:?}"),
    };
    Args {
        kind,
        mode,
        count: get(2).parse().expect("watcher: count"),
        shared_fd: get(3).parse().expect("watcher: shared fd"),
        done_fd: get(4).parse().expect("watcher: done fd"),
        device: PathBuf::from(get(5)),
        state_dir: PathBuf::from(get(6)),
    }
}

/// One watched file.
enum Watched {
    Device(DevFile),
    Eventfd(OwnedFd),
    Client(Box<sysgenid::Watcher>),
}

impl Watched {
    fn open(args: &Args) -> Watched {
        match args.kind {
            Kind::Device if args.mode == Mode::Client => {
                let paths = sysgenid::Paths::new(&args.device, &args.state_dir);
                let options = sysgenid::WatcherOptions::new().tracking(true);
                let watcher = sysgenid::Watcher::open_with(&paths, options).expect("open");
                Watched::Client(Box::new(watcher))
            }
            Kind::Device => {
                let file = DevFile::open(&args.device, OFlags::RDWR).expect("open the device");
                assert_eq!(file.track(true), Ok(0), "SET_WATCHER_TRACKING");
                Watched::Device(file)
            }
            // The floor takes the device's reads and acks, and tracks every file.
            Kind::Floor | Kind::FloorPerCpu | Kind::FloorShared => {
                Watched::Device(DevFile::open(&args.device, OFlags::RDWR).expect("open the floor"))
            }
            Kind::Eventfd => {
                let flags = match args.mode {
                    Mode::Epoll => EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
                    _ => EventfdFlags::CLOEXEC,
                };
                Watched::Eventfd(eventfd(0, flags).expect("eventfd"))
            }
        }
    }

    fn raw(&self) -> RawFd {
        match self {
            Watched::Device(file) => file.raw_fd(),
            Watched::Eventfd(fd) => fd.as_raw_fd(),
            Watched::Client(watcher) => watcher.as_raw_fd(),
        }
    }

    /// Waits in `poll(2)` until the file is readable.
    fn wait_pollin(&self) {
        // SAFETY: the descriptor belongs to `self`, which outlives this call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.raw()) };
        let mut fds = [PollFd::new(&fd, PollFlags::IN | PollFlags::RDNORM)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
    }

    /// Takes the change and acknowledges it.
    fn take_and_ack(&mut self, last: &mut u32, ctx: &Context) {
        match self {
            Watched::Client(watcher) => {
                let change = watcher.next_change().expect("next change");
                if change.generation <= *last {
                    ctx.shared.errors().fetch_add(1, Ordering::SeqCst);
                }
                *last = change.generation;
                watcher.ack(change.generation).expect("ack");
            }
            Watched::Device(file) => {
                let generation = file.read().expect("read the generation");
                if generation <= *last {
                    ctx.shared.errors().fetch_add(1, Ordering::SeqCst);
                }
                *last = generation;
                assert_eq!(file.ack(generation), Ok(4), "ack");
            }
            Watched::Eventfd(fd) => {
                let mut buf = [0u8; 8];
                rustix::io::read(fd, &mut buf).expect("read the eventfd");
                if ctx.shared.acks_left().fetch_sub(1, Ordering::SeqCst) == 1 {
                    rustix::io::write(ctx.done(), &1u64.to_ne_bytes()).expect("write done");
                }
            }
        }
        ctx.shared.rearmed().fetch_add(1, Ordering::SeqCst);
    }
}

/// What every waiting thread shares.
struct Context {
    shared: Shared,
    done_fd: RawFd,
}

impl Context {
    fn done(&self) -> BorrowedFd<'_> {
        // SAFETY: the done eventfd was inherited open and stays open until the process exits.
        unsafe { BorrowedFd::borrow_raw(self.done_fd) }
    }
}

/// Runs a watcher process to its end (when stdin closes).
pub fn main(args: &[String]) -> ! {
    let args = parse(args);
    // SAFETY: the parent passed this descriptor open (not close-on-exec) for this process alone.
    let shared_fd = unsafe { OwnedFd::from_raw_fd(args.shared_fd) };
    let ctx = Arc::new(Context {
        shared: Shared::map(&shared_fd),
        done_fd: args.done_fd,
    });
    let files: Vec<Watched> = (0..args.count).map(|_| Watched::open(&args)).collect();
    let fds: Vec<String> = files.iter().map(|f| f.raw().to_string()).collect();
    match args.mode {
        Mode::Epoll => spawn_epoll(files, &ctx),
        mode => spawn_readers(files, mode, &ctx),
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", fds.join(" ")).expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    std::process::exit(0);
}

/// One thread per file: in `poll` mode it waits in `poll(2)` first; in `read` and `client` modes
/// the read or `next_change` waits.
fn spawn_readers(files: Vec<Watched>, mode: Mode, ctx: &Arc<Context>) {
    for mut file in files {
        let ctx = Arc::clone(ctx);
        std::thread::Builder::new()
            .stack_size(READER_STACK)
            .spawn(move || {
                let mut last = 0;
                loop {
                    if mode == Mode::Poll {
                        file.wait_pollin();
                    }
                    file.take_and_ack(&mut last, &ctx);
                }
            })
            .expect("spawn a reader thread");
    }
}

fn spawn_epoll(files: Vec<Watched>, ctx: &Arc<Context>) {
    let ctx = Arc::clone(ctx);
    std::thread::spawn(move || {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create");
        for (i, file) in files.iter().enumerate() {
            // SAFETY: `file` stays open for the life of this thread, which owns `files`.
            let fd = unsafe { BorrowedFd::borrow_raw(file.raw()) };
            epoll::add(
                &ep,
                fd,
                epoll::EventData::new_u64(i as u64),
                epoll::EventFlags::IN,
            )
            .expect("epoll_ctl add");
        }
        let mut files = files;
        let mut last = vec![0u32; files.len()];
        let mut events = Vec::with_capacity(files.len().clamp(1, 1024));
        loop {
            events.clear();
            match epoll::wait(
                ep.as_fd(),
                rustix::buffer::spare_capacity(&mut events),
                None,
            ) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => panic!("epoll_wait: {e}"),
            }
            for event in &events {
                let data = event.data;
                let i = data.u64() as usize;
                files[i].take_and_ack(&mut last[i], &ctx);
            }
        }
    });
}
