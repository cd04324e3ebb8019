//! `sysgenid-stress MODE DEVICE SECONDS`: one stress worker, looping one kind of call on the
//! device until the time is up and printing `progress N` after each round, so a watchdog sees
//! a stall as soon as it happens.
//!
//! Modes:
//! - `map`: open read-only, map the page, load its first word (a first touch: the kernel fills
//!   the page from the daemon), unmap, close;
//! - `map-write`: open read-write, map writable and shared, store into the page, `msync` (the
//!   daemon refuses the writeback and stores the true page again), unmap, close;
//! - `trigger`: `TRIGGER_GEN_UPDATE` on one file;
//! - `read`: a blocking read of one tracked file, then its acknowledgement;
//! - `poll`: `poll(2)` with a short timeout, then a nonblocking read and acknowledgement.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, MsyncFlags, ProtFlags};
use sysgenid_abi::{Ioctl, PAGE_SIZE};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, device, seconds] = args.as_slice() else {
        eprintln!("usage: sysgenid-stress map|map-write|trigger|read|poll DEVICE SECONDS");
        std::process::exit(2);
    };
    let until = Instant::now() + Duration::from_secs(seconds.parse().expect("SECONDS"));
    let round: fn(&str, &mut Option<OwnedFd>) -> rustix::io::Result<()> = match mode.as_str() {
        "map" => |device, _| map_and_touch(device),
        "map-write" => |device, _| map_write_and_sync(device),
        "trigger" => trigger,
        "read" => read_and_ack,
        "poll" => poll_read_and_ack,
        other => panic!("unknown mode {other}"),
    };
    let mut file = None;
    let mut done = 0u64;
    let mut out = std::io::stdout();
    while Instant::now() < until {
        if let Err(e) = round(device, &mut file) {
            panic!("{mode}: {e}");
        }
        done += 1;
        let _ = writeln!(out, "progress {done}");
    }
    let _ = writeln!(out, "done {done}");
}

fn open(device: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(device, flags | OFlags::CLOEXEC, Mode::empty())
}

fn map_and_touch(device: &str) -> rustix::io::Result<()> {
    let fd = open(device, OFlags::RDONLY)?;
    // SAFETY: a fresh shared read-only mapping of one page of the device at an address the
    // kernel picks; it is read once with a volatile load and unmapped before anything else.
    unsafe {
        let page = rustix::mm::mmap(
            std::ptr::null_mut(),
            PAGE_SIZE,
            ProtFlags::READ,
            MapFlags::SHARED,
            &fd,
            0,
        )?;
        std::ptr::read_volatile(page.cast::<u32>());
        rustix::mm::munmap(page, PAGE_SIZE)?;
    }
    Ok(())
}

fn map_write_and_sync(device: &str) -> rustix::io::Result<()> {
    let fd = open(device, OFlags::RDWR)?;
    // SAFETY: a fresh shared writable mapping of one page of the device at an address the
    // kernel picks; this process alone writes it, through this pointer, before unmapping it.
    unsafe {
        let page = rustix::mm::mmap(
            std::ptr::null_mut(),
            PAGE_SIZE,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &fd,
            0,
        )?;
        std::ptr::write_volatile(page.cast::<u32>(), 0xdead_beef);
        // The daemon refuses the writeback with EACCES, which msync reports.
        let _ = rustix::mm::msync(page, PAGE_SIZE, MsyncFlags::SYNC);
        rustix::mm::munmap(page, PAGE_SIZE)?;
    }
    map_and_touch(device)
}

fn file_of<'f>(
    file: &'f mut Option<OwnedFd>,
    device: &str,
    flags: OFlags,
) -> rustix::io::Result<&'f OwnedFd> {
    if file.is_none() {
        *file = Some(open(device, flags)?);
    }
    Ok(file.as_ref().expect("just opened"))
}

fn trigger(device: &str, file: &mut Option<OwnedFd>) -> rustix::io::Result<()> {
    let fd = file_of(file, device, OFlags::RDWR)?;
    let code = libc_ioctl(fd, Ioctl::TriggerGenUpdate.cmd());
    if code < 0 {
        return Err(rustix::io::Errno::from_raw_os_error(-code));
    }
    Ok(())
}

fn libc_ioctl(fd: &OwnedFd, cmd: u32) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain ioctl with an integer argument of 0 on an fd we own; it writes no memory.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(cmd), 0 as libc::c_ulong) };
    if rc < 0 {
        -std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        rc
    }
}

fn ack(fd: &OwnedFd, generation: [u8; 4]) -> rustix::io::Result<()> {
    match rustix::io::write(fd, &generation) {
        // A bump between the read and the ack: the next round reads the newer value.
        Ok(_) | Err(rustix::io::Errno::INVAL) => Ok(()),
        Err(e) => Err(e),
    }
}

fn read_and_ack(device: &str, file: &mut Option<OwnedFd>) -> rustix::io::Result<()> {
    let fd = file_of(file, device, OFlags::RDWR)?;
    let mut generation = [0u8; 4];
    rustix::io::read(fd, &mut generation)?;
    ack(fd, generation)
}

fn poll_read_and_ack(device: &str, file: &mut Option<OwnedFd>) -> rustix::io::Result<()> {
    let fd = file_of(file, device, OFlags::RDWR | OFlags::NONBLOCK)?;
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    rustix::event::poll(&mut fds, Some(&timeout))?;
    let mut generation = [0u8; 4];
    match rustix::io::read(fd, &mut generation) {
        Ok(_) => ack(fd, generation),
        Err(rustix::io::Errno::AGAIN) => Ok(()),
        Err(e) => Err(e),
    }
}
