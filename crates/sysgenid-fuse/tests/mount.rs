//! Real-mount tests: mount a regular file, serve it from a thread, use it from child processes.
//!
//! They need root (CI runs as root) and fail with a clear message otherwise. Client programs
//! used: `dd`, `sh`, `perl` (ioctl with a 64-bit argument, a read interrupted by a signal) and
//! `/usr/bin/python3` (shared mmap).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use sysgenid_fuse::wire::{self, FUSE_ROOT_ID};
use sysgenid_fuse::{
    Channel, InitWants, MountError, MountMethod, MountOptions, MountState, Negotiated, Operation,
    Received, RequestBuffer, Sent, mount, mount_state, negotiate, parse, reply,
};

const TIMEOUT: Duration = Duration::from_secs(20);
const IOCTL_CMD: u32 = 0xE403; // _IO(0xE4, 3)
const IOCTL_ARG: u64 = 0x1_0000_0005;
const PAGE: usize = 4096;
/// A READ of this size is held until interrupted.
const HELD_READ_SIZE: u32 = 7;

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test mounts FUSE with mount(2) and must run as root (CI runs as root)"
    );
}

/// A temporary directory holding the mount target; unmounts lazily and cleans up on drop.
struct Scratch {
    dir: PathBuf,
    file: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sysgenid-fuse-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sysgenid");
        std::fs::write(&file, b"").unwrap();
        Self { dir, file }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.file, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn options() -> MountOptions {
    MountOptions {
        method: MountMethod::Syscall,
        ..MountOptions::default()
    }
}

fn file_attr() -> wire::Attr {
    wire::Attr {
        ino: FUSE_ROOT_ID,
        size: PAGE as u64,
        blocks: 8,
        mode: 0o100_644,
        nlink: 1,
        blksize: PAGE as u32,
        ..Default::default()
    }
}

fn page(prefix: &[u8]) -> Vec<u8> {
    let mut page = vec![0; PAGE];
    page[..prefix.len()].copy_from_slice(prefix);
    page
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Init(Negotiated),
    Read { size: u32, lock_owner: Option<u64> },
    HeldRead { unique: u64 },
    Interrupt { unique: u64, answered: bool },
    Setattr { size: Option<u64> },
    Write(Vec<u8>),
    Ioctl { cmd: u32, arg: u64, flags: u32 },
    PollRegistered { kh: u64 },
    Release { pid: u32 },
    Unknown(u32),
}

/// A tiny single-file server.
fn serve(channel: Arc<Channel>, events: mpsc::Sender<Event>, ready: Arc<AtomicBool>) {
    let mut buf = RequestBuffer::default();
    let mut held: Option<u64> = None;
    let pollin = PollFlags::IN.bits().into();
    loop {
        let msg = match channel.receive(&mut buf).expect("receive") {
            Received::Message(msg) => msg,
            Received::Unmounted => return,
        };
        let req = parse(msg).expect("kernel sent a valid request");
        let unique = req.header.unique;
        let note = |e: Event| {
            let _ = events.send(e);
        };
        let answer = match req.op {
            Operation::Init(kernel) => {
                let agreed = negotiate(&kernel, &InitWants::default()).expect("negotiate");
                note(Event::Init(agreed));
                Some(reply::init(unique, &agreed))
            }
            Operation::Getattr { .. } => Some(reply::attr(unique, &file_attr(), TIMEOUT)),
            Operation::Setattr { size, .. } => {
                note(Event::Setattr { size });
                Some(reply::attr(unique, &file_attr(), TIMEOUT))
            }
            Operation::Lookup { .. } => Some(reply::error(unique, Errno::NOENT.raw_os_error())),
            Operation::Open { .. } => Some(reply::open(
                unique,
                1,
                wire::FOPEN_DIRECT_IO | wire::FOPEN_NONSEEKABLE,
            )),
            Operation::Read {
                size, lock_owner, ..
            } => {
                note(Event::Read { size, lock_owner });
                if size == HELD_READ_SIZE {
                    held = Some(unique);
                    note(Event::HeldRead { unique });
                    None
                } else if lock_owner.is_none() {
                    Some(reply::data(unique, &page(b"gen1")))
                } else {
                    Some(reply::data(unique, b"gen1"))
                }
            }
            Operation::Write { data, .. } => {
                note(Event::Write(data.to_vec()));
                Some(reply::write(unique, data.len() as u32))
            }
            Operation::Flush { .. } | Operation::Destroy => Some(reply::empty(unique)),
            Operation::Release { .. } => {
                note(Event::Release {
                    pid: req.header.pid,
                });
                Some(reply::empty(unique))
            }
            Operation::Poll { kh, flags, .. } => {
                if ready.load(Ordering::SeqCst) {
                    Some(reply::poll(unique, pollin))
                } else {
                    if flags & wire::FUSE_POLL_SCHEDULE_NOTIFY != 0 {
                        note(Event::PollRegistered { kh });
                    }
                    Some(reply::poll(unique, 0))
                }
            }
            Operation::Ioctl {
                cmd, arg, flags, ..
            } => {
                note(Event::Ioctl { cmd, arg, flags });
                if cmd == IOCTL_CMD {
                    let result = (arg >> 32) * 1000 + (arg & 0xFFFF_FFFF);
                    Some(reply::ioctl(unique, result as i32, &[]))
                } else {
                    // e.g. TCGETS from an isatty() check
                    Some(reply::error(unique, Errno::NOTTY.raw_os_error()))
                }
            }
            Operation::Interrupt { unique: target } => {
                let answered = held == Some(target);
                note(Event::Interrupt {
                    unique: target,
                    answered,
                });
                if answered {
                    held = None;
                    Some(reply::error(target, Errno::INTR.raw_os_error()))
                } else {
                    Some(reply::error(unique, Errno::AGAIN.raw_os_error()))
                }
            }
            Operation::Statfs => Some(reply::statfs(
                unique,
                &wire::Kstatfs {
                    bsize: PAGE as u32,
                    namelen: 255,
                    ..Default::default()
                },
            )),
            Operation::Forget { .. } | Operation::BatchForget { .. } => None,
            Operation::Unknown { opcode } => {
                note(Event::Unknown(opcode));
                Some(reply::error(unique, Errno::NOSYS.raw_os_error()))
            }
            other => panic!("unexpected request {other:?}"),
        };
        if let Some(answer) = answer {
            let sent = channel.send(&answer).expect("send reply");
            assert_ne!(sent, Sent::Unmounted);
        }
    }
}

/// Events seen so far, and a way to wait for the next one of interest.
struct Events {
    rx: mpsc::Receiver<Event>,
    log: Vec<Event>,
}

impl Events {
    fn until<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        loop {
            let event = self
                .rx
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|_| panic!("no {what} after {:?}; saw {:?}", TIMEOUT, self.log));
            let picked = pick(&event);
            self.log.push(event);
            if let Some(value) = picked {
                return value;
            }
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn client");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn serves_a_file_through_a_real_mount() {
    require_root();
    let scratch = Scratch::new("serve");
    let file = scratch.file.clone();
    let (mnt, channel) = mount(&file, &options()).expect("mount");
    assert_eq!(mnt.method(), MountMethod::Syscall);
    let channel = Arc::new(channel);
    let (tx, rx) = mpsc::channel();
    let ready = Arc::new(AtomicBool::new(false));
    let server = thread::spawn({
        let channel = Arc::clone(&channel);
        let ready = Arc::clone(&ready);
        move || serve(channel, tx, ready)
    });
    let mut events = Events {
        rx,
        log: Vec::new(),
    };

    // INIT and size.
    let agreed = events.until("INIT", |e| match e {
        Event::Init(n) => Some(*n),
        _ => None,
    });
    assert!(!agreed.has(wire::FUSE_ATOMIC_O_TRUNC));
    assert_eq!(
        agreed.direct_io_allow_mmap,
        agreed.kernel_minor >= 39,
        "{agreed:?}"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), PAGE as u64);
    assert_eq!(
        mount_state(&file).unwrap(),
        MountState::Live {
            fstype: "fuse.sysgenid".into()
        }
    );

    // read(2) from a child: 4 bytes, with a lock owner.
    let out = run(Command::new("dd").args([
        &format!("if={}", file.display()),
        "bs=4096",
        "count=1",
        "status=none",
    ]));
    assert_eq!(out, "gen1");
    let (size, lock_owner) = events.until("READ", |e| match e {
        Event::Read { size, lock_owner } => Some((*size, *lock_owner)),
        _ => None,
    });
    assert_eq!(size, 4096);
    assert!(lock_owner.is_some(), "read(2) carries a lock owner");

    // `echo x > file`: O_TRUNC arrives as SETATTR size 0, then the WRITE.
    run(Command::new("sh")
        .args(["-c", "echo x > \"$1\"", "sh"])
        .arg(&file));
    let data = events.until("WRITE", |e| match e {
        Event::Write(d) => Some(d.clone()),
        _ => None,
    });
    assert_eq!(data, b"x\n");
    assert!(
        events.log.contains(&Event::Setattr { size: Some(0) }),
        "{:?}",
        events.log
    );

    // ioctl with a 64-bit integer argument from a child.
    let out = run(Command::new("perl")
        .args([
            "-e",
            "open(my $f, '<', $ARGV[0]) or die \"open: $!\"; \
             my $r = ioctl($f, 0xE403, 0x100000005); \
             defined $r or die \"ioctl: $!\"; print $r",
        ])
        .arg(&file));
    assert_eq!(out, "1005");
    let (arg, flags) = events.until("IOCTL 0xE403", |e| match e {
        Event::Ioctl { cmd, arg, flags } if *cmd == IOCTL_CMD => Some((*arg, *flags)),
        _ => None,
    });
    assert_eq!((arg, flags), (IOCTL_ARG, 0));

    // poll(2) in another thread, woken by a notification sent from this thread.
    let poller = thread::spawn({
        let file = file.clone();
        move || {
            let f = File::open(&file).unwrap();
            let mut fds = [PollFd::new(&f, PollFlags::IN)];
            let timeout = Timespec {
                tv_sec: TIMEOUT.as_secs() as i64,
                tv_nsec: 0,
            };
            let n = rustix::event::poll(&mut fds, Some(&timeout)).unwrap();
            (n, fds[0].revents())
        }
    });
    let kh = events.until("POLL with SCHEDULE_NOTIFY", |e| match e {
        Event::PollRegistered { kh } => Some(*kh),
        _ => None,
    });
    thread::sleep(Duration::from_millis(200));
    assert!(!poller.is_finished(), "poll returned before the wakeup");
    ready.store(true, Ordering::SeqCst);
    assert_eq!(
        channel.send(&reply::notify_poll(kh)).unwrap(),
        Sent::Delivered
    );
    let (n, revents) = poller.join().unwrap();
    assert_eq!(n, 1);
    assert!(revents.contains(PollFlags::IN), "{revents:?}");

    // A read blocked in the daemon, interrupted by a signal: INTERRUPT, answered with EINTR.
    let out = run(Command::new("perl")
        .args([
            "-e",
            "$SIG{ALRM} = sub {}; open(my $f, '<', $ARGV[0]) or die \"open: $!\"; \
             alarm 1; my $n = sysread($f, my $b, 7); \
             print defined $n ? \"read $n\" : ($!{EINTR} ? 'EINTR' : \"error $!\")",
        ])
        .arg(&file));
    let held = events.until("held READ", |e| match e {
        Event::HeldRead { unique } => Some(*unique),
        _ => None,
    });
    let interrupted = events.until("INTERRUPT", |e| match e {
        Event::Interrupt { unique, answered } => Some((*unique, *answered)),
        _ => None,
    });
    assert_eq!(interrupted, (held, true));
    assert_eq!(out, "EINTR");

    // An opcode the server does not know (FSYNC) is answered with ENOSYS, which the kernel
    // turns into success for fsync.
    File::open(&file).unwrap().sync_all().unwrap();
    events.until("FSYNC", |e| {
        (*e == Event::Unknown(wire::FUSE_FSYNC)).then_some(())
    });

    // A shared mapping sees FUSE_NOTIFY_STORE updates (needs FUSE_DIRECT_IO_ALLOW_MMAP).
    if agreed.direct_io_allow_mmap {
        let mut py = Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import mmap, sys\n\
                 f = open(sys.argv[1], 'rb')\n\
                 m = mmap.mmap(f.fileno(), 4096, mmap.MAP_SHARED, mmap.PROT_READ)\n\
                 print(m[:4].decode(), flush=True)\n\
                 sys.stdin.readline()\n\
                 print(m[:4].decode(), flush=True)\n",
            ])
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "gen1");
        let fill = events.until("page fill READ", |e| match e {
            Event::Read {
                size,
                lock_owner: None,
            } => Some(*size),
            _ => None,
        });
        assert_eq!(fill, PAGE as u32);
        let store = reply::notify_store(FUSE_ROOT_ID, 0, &page(b"gen2"));
        assert_eq!(channel.send(&store).unwrap(), Sent::Delivered);
        writeln!(py.stdin.as_mut().unwrap()).unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), "gen2");
        assert!(py.wait().unwrap().success());
    }

    // Unmount ends the server loop.
    mnt.unmount(false).expect("unmount");
    server.join().expect("server thread");
    assert_eq!(mount_state(&file).unwrap(), MountState::NotMounted);
    while let Ok(e) = events.rx.try_recv() {
        events.log.push(e);
    }
    assert!(
        events.log.contains(&Event::Release { pid: 0 }),
        "RELEASE arrives with pid 0: {:?}",
        events.log
    );
    // After unmount the kernel drops notifications silently and refuses replies with ENOENT.
    assert_eq!(
        channel.send(&reply::notify_poll(kh)).unwrap(),
        Sent::Delivered
    );
    assert_eq!(channel.send(&reply::empty(2)).unwrap(), Sent::NotFound);
}

/// Answers INIT on `channel`, then returns.
fn answer_init(channel: &Channel) {
    let mut buf = RequestBuffer::default();
    let Received::Message(msg) = channel.receive(&mut buf).unwrap() else {
        panic!("unmounted before INIT")
    };
    let req = parse(msg).unwrap();
    let Operation::Init(kernel) = req.op else {
        panic!("first request is not INIT: {req:?}")
    };
    let agreed = negotiate(&kernel, &InitWants::default()).unwrap();
    let sent = channel
        .send(&reply::init(req.header.unique, &agreed))
        .unwrap();
    assert_eq!(sent, Sent::Delivered);
}

#[test]
fn detects_a_stale_mount() {
    require_root();
    let scratch = Scratch::new("stale");
    let file = scratch.file.clone();
    let (mnt, channel) = mount(&file, &options()).expect("mount");
    answer_init(&channel);
    drop(channel);
    assert_eq!(
        mount_state(&file).unwrap(),
        MountState::Stale {
            fstype: "fuse.sysgenid".into()
        }
    );
    let err = mount(&file, &options()).unwrap_err();
    assert!(matches!(err, MountError::StaleTarget { .. }), "{err:?}");
    mnt.unmount(false).expect("unmount a stale mount");
    assert_eq!(mount_state(&file).unwrap(), MountState::NotMounted);
}

#[test]
fn lazy_unmount_while_open() {
    require_root();
    let scratch = Scratch::new("detach");
    let file = scratch.file.clone();
    let (mnt, channel) = mount(&file, &options()).expect("mount");
    let channel = Arc::new(channel);
    let (tx, rx) = mpsc::channel();
    let server = thread::spawn({
        let channel = Arc::clone(&channel);
        move || serve(channel, tx, Arc::new(AtomicBool::new(false)))
    });
    let open = File::open(&file).unwrap();
    let err = mnt.unmount(false).unwrap_err();
    assert!(err.to_string().contains("busy"), "{err}");
    mnt.unmount(true).expect("lazy unmount");
    assert_eq!(mount_state(&file).unwrap(), MountState::NotMounted);
    drop(open);
    server
        .join()
        .expect("server ends once the last user is gone");
    drop(rx);
}

fn fusermount_available() -> bool {
    Command::new(sysgenid_fuse::FUSERMOUNT)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn mounts_through_fusermount3() {
    assert!(
        fusermount_available(),
        "fusermount3 is missing: apt-get install fuse3"
    );
    let scratch = Scratch::new("fusermount");
    let file = scratch.file.clone();
    let options = MountOptions {
        method: MountMethod::Fusermount,
        ..MountOptions::default()
    };
    let (mnt, channel) = mount(&file, &options).expect("mount via fusermount3");
    assert_eq!(mnt.method(), MountMethod::Fusermount);
    let channel = Arc::new(channel);
    let (tx, rx) = mpsc::channel();
    let server = thread::spawn({
        let channel = Arc::clone(&channel);
        move || serve(channel, tx, Arc::new(AtomicBool::new(false)))
    });
    let mut got = [0u8; 16];
    let n = File::open(&file).unwrap().read(&mut got).unwrap();
    assert_eq!(&got[..n], b"gen1");
    assert_eq!(
        mount_state(&file).unwrap(),
        MountState::Live {
            fstype: "fuse.sysgenid".into()
        }
    );
    mnt.unmount(false).expect("fusermount3 -u");
    server.join().unwrap();
    drop(rx);
    assert_eq!(mount_state(&file).unwrap(), MountState::NotMounted);
}
