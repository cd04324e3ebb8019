//! Where a FUSE file cannot behave like the reference driver's character device: each row of
//! the table in docs/abi.md, tested for what it really does.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use rustix::mm::{MapFlags, ProtFlags};
use sysgenid_e2e::{Daemon, DevFile, Errno, Identity, Probe};

#[test]
fn the_device_is_a_regular_file_of_one_page() {
    let daemon = Daemon::start();
    let meta = std::fs::metadata(&daemon.device).unwrap();
    assert!(meta.file_type().is_file(), "S_IFREG");
    assert!(!meta.file_type().is_char_device());
    assert_eq!(meta.len(), 4096);
    let group_exists = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("sysgenid:"));
    let want = if group_exists { 0o664 } else { 0o644 };
    assert_eq!(meta.mode() & 0o7777, want);
    assert_eq!(meta.uid(), 0);
}

#[test]
fn a_zero_byte_write_returns_0_without_reaching_the_daemon() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    f.trigger(0).unwrap();
    assert_eq!(f.write_bytes(&[]), Ok(0), "the driver would say ENOBUFS");
    assert_eq!(f.read(), Ok(1), "still outdated: nothing was acknowledged");
}

/// Maps `len` bytes of the device at page `offset` with `prot` and `flags`.
fn map(
    f: &DevFile,
    len: usize,
    offset: u64,
    prot: ProtFlags,
    flags: MapFlags,
) -> Result<usize, Errno> {
    // SAFETY: a fresh mapping at an address the kernel picks; it is unmapped at once and never
    // touched here.
    let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, flags, f, offset) }?;
    // SAFETY: unmapping exactly the mapping just made.
    unsafe { rustix::mm::munmap(ptr, len) }?;
    Ok(ptr as usize)
}

#[test]
fn mmap_size_offset_and_write_checks_are_the_kernels() {
    let daemon = Daemon::start();
    let ro = DevFile::open(&daemon.device, rustix::fs::OFlags::RDONLY).unwrap();
    let rw = DevFile::rw(&daemon.device);
    let (read, shared, private) = (ProtFlags::READ, MapFlags::SHARED, MapFlags::PRIVATE);
    let write = ProtFlags::READ | ProtFlags::WRITE;
    // The driver refuses more than one page or a nonzero offset with EINVAL; the kernel's
    // generic checks allow both (touching past the file's end faults instead).
    assert!(map(&ro, 8192, 0, read, shared).is_ok());
    assert!(map(&ro, 4096, 4096, read, shared).is_ok());
    // The driver refuses every writable mapping with EPERM; here the file mode decides.
    assert_eq!(map(&ro, 4096, 0, write, shared), Err(Errno::ACCESS));
    assert!(
        map(&rw, 4096, 0, write, shared).is_ok(),
        "a writer may: see docs/security.md"
    );
    assert!(
        map(&ro, 4096, 0, write, private).is_ok(),
        "private copies are harmless"
    );
}

#[test]
fn sa_restart_cannot_restart_a_blocked_call() {
    // A handler installed with SA_RESTART still sees EINTR: FUSE answers the interrupted
    // request with EINTR and cannot restart it. (signals.rs covers reads and waits in depth.)
    let daemon = Daemon::start();
    let mut probe = Probe::spawn(
        Identity::Root,
        &[
            "sigaction-usr1-restart",
            "open",
            daemon.device_str(),
            "rw",
            "ready",
            "read",
            "4",
        ],
    );
    probe.expect("sigaction-usr1-restart ok 0");
    probe.expect("open ok");
    probe.expect("ready ok");
    sysgenid_e2e::eventually("the read is pending", || daemon.count("pending_reads") == 1);
    probe.signal(rustix::process::Signal::USR1);
    probe.expect("read err EINTR");
}

#[test]
fn fionbio_and_fionread_are_answered_by_the_vfs() {
    let daemon = Daemon::start();
    let f = DevFile::rw(&daemon.device);
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO reads an int through the pointer, which stays valid for the call.
    let rc = unsafe { libc::ioctl(f.raw_fd(), libc::FIONBIO, &on) };
    assert_eq!(rc, 0);
    assert_eq!(
        f.read(),
        Err(Errno::AGAIN),
        "FIONBIO made the file nonblocking"
    );
    let mut avail: libc::c_int = -1;
    // SAFETY: FIONREAD writes an int through the pointer, which stays valid for the call.
    let rc = unsafe { libc::ioctl(f.raw_fd(), libc::FIONREAD, &mut avail) };
    assert_eq!(rc, 0, "the driver would say EINVAL");
    assert_eq!(
        avail, 4096,
        "the VFS answers with the file size minus the position"
    );
}

#[test]
fn sized_ioctl_numbers_copy_their_argument_before_the_daemon_sees_them() {
    let daemon = Daemon::start();
    let f = DevFile::rw(&daemon.device);
    // _IOW(0xE4, 3, u32): the kernel copies 4 bytes from the argument as a pointer first.
    assert_eq!(f.ioctl(0x4004_E403, 5), Err(Errno::FAULT));
    let value: u32 = 5;
    let pointer = &value as *const u32 as u64;
    assert_eq!(
        f.ioctl(0x4004_E403, pointer),
        Err(Errno::INVAL),
        "then the daemon refuses it"
    );
    assert_eq!(daemon.generation(), 0);
}
