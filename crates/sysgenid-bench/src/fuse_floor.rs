//! The floor for anything served over FUSE: a one-file server that answers at once.
//!
//! One thread of this process answers INIT, GETATTR, OPEN (`FOPEN_DIRECT_IO |
//! FOPEN_NONSEEKABLE`), READ (4 bytes), WRITE, IOCTL (result 0) and RELEASE, FORGET without
//! a reply, and `ENOSYS` to everything else. It keeps no state and does no other work, so each
//! call costs the kernel's FUSE round trip plus two context switches.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::io::Errno;
use sysgenid_fuse::wire::{self, FUSE_ROOT_ID};
use sysgenid_fuse::{
    Channel, InitWants, Mount, MountMethod, MountOptions, Operation, Received, RequestBuffer,
    negotiate, parse, reply,
};

use crate::vcpu::{Placed, ServerThread, time_each_placed, time_each_spaced};

const PAGE: u64 = 4096;
/// What a floor read returns and a floor write sends.
pub const DATA: &[u8; 4] = b"gen1";

/// A mounted floor server.
#[derive(Debug)]
pub struct Floor {
    mount: Mount,
    server: JoinHandle<()>,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Floor {
    /// Mounts the floor file in a new temporary directory and starts its server thread.
    pub fn start() -> Floor {
        let (dir, file, mount, channel) = mount_file("sysgenid-bench-floor");
        let channel = Arc::new(channel);
        let server = std::thread::Builder::new()
            .name("fuse-floor".to_owned())
            .spawn(move || serve(&channel))
            .expect("spawn the floor server");
        Floor {
            mount,
            server,
            file,
            _dir: dir,
        }
    }

    /// The mounted file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Unmounts and waits for the server thread to end.
    pub fn stop(self) {
        self.mount.unmount(false).expect("unmount the floor");
        self.server.join().expect("floor server thread");
    }
}

/// A file named `floor` in a new temporary directory (prefix `name`), mounted as a FUSE file
/// system called `name` with `mount(2)`, and its channel.
pub fn mount_file(name: &str) -> (tempfile::TempDir, PathBuf, Mount, Channel) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir()
        .expect("temp dir");
    let file = dir.path().join("floor");
    std::fs::write(&file, b"").expect("mount target");
    let options = MountOptions {
        fsname: name.to_owned(),
        method: MountMethod::Syscall,
        ..MountOptions::default()
    };
    let (mount, channel) = sysgenid_fuse::mount(&file, &options).expect("mount a floor");
    (dir, file, mount, channel)
}

fn attr() -> wire::Attr {
    wire::Attr {
        ino: FUSE_ROOT_ID,
        size: PAGE,
        blocks: 8,
        mode: 0o100_600,
        nlink: 1,
        blksize: PAGE as u32,
        ..Default::default()
    }
}

/// Answers requests until the file system is unmounted.
fn serve(channel: &Channel) {
    let mut buf = RequestBuffer::default();
    loop {
        let msg = match channel.receive(&mut buf).expect("receive a request") {
            Received::Message(msg) => msg,
            Received::Unmounted => return,
        };
        let req = parse(msg).expect("the kernel sent a valid request");
        let unique = req.header.unique;
        let answer = match req.op {
            Operation::Init(kernel) => {
                let agreed = negotiate(&kernel, &InitWants::default()).expect("negotiate");
                reply::init(unique, &agreed)
            }
            Operation::Getattr { .. } => reply::attr(unique, &attr(), Duration::from_secs(3600)),
            Operation::Open { .. } => {
                reply::open(unique, 1, wire::FOPEN_DIRECT_IO | wire::FOPEN_NONSEEKABLE)
            }
            Operation::Read { size, .. } => {
                reply::data(unique, &DATA[..DATA.len().min(size as usize)])
            }
            Operation::Write { data, .. } => reply::write(unique, data.len() as u32),
            Operation::Ioctl { .. } => reply::ioctl(unique, 0, &[]),
            Operation::Release { .. } => reply::empty(unique),
            Operation::Forget { .. } | Operation::BatchForget { .. } => continue,
            _ => reply::error(unique, Errno::NOSYS.raw_os_error()),
        };
        // After an unmount the kernel may refuse a late reply; that is fine.
        let _ = channel.send(&answer);
    }
}

fn open(file: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .expect("open the floor file")
}

/// The thread serving `file`, a floor file of this process.
pub fn server_thread(file: &Path) -> ServerThread {
    let f = open(file);
    let mut buf = [0u8; 4];
    ServerThread::find(std::process::id(), || {
        let _ = rustix::io::read(&f, &mut buf);
    })
}

/// `read(2)` of 4 bytes per call on a floor file.
pub fn reads(file: &Path, server: &ServerThread, warmup: usize, iters: usize) -> Placed {
    let file = open(file);
    let mut buf = [0u8; 4];
    let mut wrong = 0usize;
    let placed = time_each_placed(warmup, iters, server, || {
        if rustix::io::read(&file, &mut buf) != Ok(4) {
            wrong += 1;
        }
    });
    assert_eq!(wrong, 0, "a floor read did not return 4 bytes");
    placed
}

/// `write(2)` of 4 bytes per call on a floor file.
pub fn writes(file: &Path, server: &ServerThread, warmup: usize, iters: usize) -> Placed {
    let file = open(file);
    let mut wrong = 0usize;
    let placed = time_each_placed(warmup, iters, server, || {
        if rustix::io::write(&file, DATA) != Ok(4) {
            wrong += 1;
        }
    });
    assert_eq!(wrong, 0, "a floor write did not return 4");
    placed
}

/// `ioctl(2)` with an integer argument (the trigger's command number), answered with 0.
pub fn ioctls(file: &Path, server: &ServerThread, warmup: usize, iters: usize) -> Placed {
    timed_ioctls(file, |op| time_each_placed(warmup, iters, server, op))
}

/// The same ioctl, each call after `gap` of sleep.
pub fn spaced_ioctls(file: &Path, server: &ServerThread, gap: Duration, iters: usize) -> Placed {
    timed_ioctls(file, |op| time_each_spaced(gap, iters, server, op))
}

fn timed_ioctls(file: &Path, time: impl FnOnce(&mut dyn FnMut()) -> Placed) -> Placed {
    let file = open(file);
    let fd = file.as_raw_fd();
    let cmd = sysgenid_abi::SYSGENID_TRIGGER_GEN_UPDATE;
    let mut wrong = 0usize;
    let placed = time(&mut || {
        if sysgenid_e2e::raw_ioctl(fd, cmd, 0) != Ok(0) {
            wrong += 1;
        }
    });
    assert_eq!(wrong, 0, "a floor ioctl did not return 0");
    placed
}
