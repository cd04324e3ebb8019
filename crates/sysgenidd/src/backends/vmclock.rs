//! The vmclock backend: watches `vm_generation_counter` in the page of `/dev/vmclock0`.
//!
//! The page follows `struct vmclock_abi` of Linux's `include/uapi/linux/vmclock-abi.h`. Its
//! fields are read one aligned little-endian word at a time at fixed offsets; the structure is
//! never cast from the mapped bytes. The non-constant fields are guarded by a seqlock
//! (`seq_count`, odd while the hypervisor writes): a read takes the sequence, reads the fields,
//! fences, and takes the sequence again, retrying up to [`MAX_RETRIES`] times before it gives
//! up with [`Torn`] instead of guessing.
//!
//! Flag bit 8 says the counter exists (Linux 7.0, and a hypervisor that fills it in); without
//! it the backend stays inactive. Flag bit 9 says the hypervisor notifies on every update, and
//! the driver then wakes `poll(2)` with `POLLIN`; without it the page is polled on a timer.
//!
//! Restores while the daemon is down: with a state directory, the last counter seen is kept
//! in `<state-dir>/vmclock.record`. A start that finds a different counter reports one
//! restore. That catches a restore of a snapshot taken while the daemon was stopped, when the
//! state directory (normally `/run`, in guest memory) is part of the snapshot. It cannot catch
//! a restore when there is no record (the first run, a wiped state directory, a snapshot taken
//! before any run), and several restores while down count as one.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};

use super::{BackendError, BackendKind, Options, record};
use crate::inbox::Inbox;

/// Where the Linux driver puts the device.
pub const DEFAULT_PATH: &str = "/dev/vmclock0";
/// How often the page is read when the hypervisor does not notify.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
/// How long a wait for a notification lasts before the page is read anyway.
pub const NOTIFY_BACKSTOP: Duration = Duration::from_secs(1);
/// Seqlock attempts before a read is reported as torn.
pub const MAX_RETRIES: u32 = 1000;
/// Wakeups in a row without a new sequence before notifications are distrusted.
const SPURIOUS_LIMIT: u32 = 3;

/// `VMCLOCK_MAGIC`, "VCLK" little-endian.
pub const MAGIC: u32 = 0x4b4c_4356;
/// The only layout version.
pub const VERSION: u16 = 1;
/// The bytes of `struct vmclock_abi` up to and including `vm_generation_counter`.
pub const ABI_LEN: usize = 112;
/// `VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT`.
pub const FLAG_VM_GEN_COUNTER_PRESENT: u64 = 1 << 8;
/// `VMCLOCK_FLAG_NOTIFICATION_PRESENT`.
pub const FLAG_NOTIFICATION_PRESENT: u64 = 1 << 9;

/// Byte offsets of the fields used here.
pub mod offset {
    /// `__le32 magic`.
    pub const MAGIC: usize = 0;
    /// `__le32 size`.
    pub const SIZE: usize = 4;
    /// `__le16 version`, followed by `counter_id` and `time_type`.
    pub const VERSION: usize = 8;
    /// `__le32 seq_count`.
    pub const SEQ_COUNT: usize = 12;
    /// `__le64 disruption_marker`.
    pub const DISRUPTION_MARKER: usize = 16;
    /// `__le64 flags`.
    pub const FLAGS: usize = 24;
    /// `__le64 vm_generation_counter`.
    pub const VM_GENERATION_COUNTER: usize = 104;
}

/// The reason given when the counter is missing.
pub const NO_COUNTER: &str = "this vmclock has no vm_generation_counter (needs Linux 7.0 and a \
                              hypervisor that provides it)";

/// A read-only shared mapping of a vmclock page.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is only read, through atomic loads, so sharing it between threads is fine.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` read-only and shared. `len` must be at least
    /// [`ABI_LEN`] and every byte must be backed.
    pub fn new(file: &File, len: usize) -> io::Result<Mapping> {
        if len < ABI_LEN {
            return Err(io::Error::other(format!(
                "{len} bytes is shorter than the vmclock structure"
            )));
        }
        // SAFETY: a fresh read-only mapping of an open file at an address the kernel picks; the
        // caller vouches that `len` bytes are backed, and we only ever load from it.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                file.as_fd(),
                0,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("null mapping"))?;
        Ok(Mapping { ptr, len })
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        assert!(at.is_multiple_of(4) && at + 4 <= ABI_LEN && ABI_LEN <= self.len);
        // SAFETY: `at` is in bounds and 4-aligned within a page-aligned mapping that lives as
        // long as `self`; every access we make is an atomic load, which is allowed on read-only
        // memory, and the writer (the hypervisor, or a test) writes whole aligned words.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(at).cast::<u32>()) }
    }

    /// The little-endian `u32` at `at`.
    pub fn u32_at(&self, at: usize, order: Ordering) -> u32 {
        u32::from_le(self.word(at).load(order))
    }

    /// The little-endian `u64` at `at`, as two `u32` loads (low half first).
    pub fn u64_at(&self, at: usize) -> u64 {
        let low = self.u32_at(at, Ordering::Relaxed);
        let high = self.u32_at(at + 4, Ordering::Relaxed);
        u64::from(high) << 32 | u64::from(low)
    }

    /// The constant header fields.
    pub fn header(&self) -> Header {
        Header {
            magic: self.u32_at(offset::MAGIC, Ordering::Relaxed),
            size: self.u32_at(offset::SIZE, Ordering::Relaxed),
            version: (self.u32_at(offset::VERSION, Ordering::Relaxed) & 0xffff) as u16,
        }
    }

    /// The seqlock-protected fields, read consistently with at most `max_attempts` tries.
    pub fn read(&self, max_attempts: u32) -> Result<VmclockReading, Torn> {
        for _ in 0..max_attempts {
            let seq = self.u32_at(offset::SEQ_COUNT, Ordering::Acquire);
            if seq & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let flags = self.u64_at(offset::FLAGS);
            let disruption_marker = self.u64_at(offset::DISRUPTION_MARKER);
            let counter = self.u64_at(offset::VM_GENERATION_COUNTER);
            fence(Ordering::Acquire);
            if self.u32_at(offset::SEQ_COUNT, Ordering::Relaxed) == seq {
                return Ok(VmclockReading {
                    seq,
                    flags,
                    disruption_marker,
                    counter,
                });
            }
            std::hint::spin_loop();
        }
        Err(Torn {
            attempts: max_attempts,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range and nothing borrows it past `self`.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The constant fields at the start of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `magic`.
    pub magic: u32,
    /// `size`: bytes of the region holding the structure.
    pub size: u32,
    /// `version`.
    pub version: u16,
}

impl Header {
    /// Whether this is a page we understand, and why not.
    pub fn check(&self) -> Result<(), BackendError> {
        if self.magic != MAGIC {
            return Err(BackendError::NotVmclock { magic: self.magic });
        }
        if self.version != VERSION {
            return Err(BackendError::VmclockVersion {
                version: self.version,
            });
        }
        if (self.size as usize) < ABI_LEN {
            return Err(BackendError::VmclockTooSmall { size: self.size });
        }
        Ok(())
    }
}

/// A consistent reading of the seqlock-protected fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmclockReading {
    /// The even `seq_count` the fields were read under.
    pub seq: u32,
    /// `flags`.
    pub flags: u64,
    /// `disruption_marker`.
    pub disruption_marker: u64,
    /// `vm_generation_counter`.
    pub counter: u64,
}

impl VmclockReading {
    /// Whether the counter is present.
    pub fn has_counter(&self) -> bool {
        self.flags & FLAG_VM_GEN_COUNTER_PRESENT != 0
    }

    /// Whether the hypervisor notifies.
    pub fn notifies(&self) -> bool {
        self.flags & FLAG_NOTIFICATION_PRESENT != 0
    }
}

/// The writer kept the seqlock busy or changing through every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "torn: the vmclock seq_count was odd or changed during each of {attempts} reads; no value read"
)]
pub struct Torn {
    /// How many reads were tried.
    pub attempts: u32,
}

/// An open vmclock page with a counter, read again on each notification or interval.
#[derive(Debug)]
pub struct VmclockPage {
    file: File,
    map: Mapping,
    notify: bool,
    interval: Duration,
    last: VmclockReading,
    spurious: u32,
}

impl VmclockPage {
    /// Opens and maps `path`, checks the header and the flags, and reads the counter. An error
    /// is the reason the backend cannot run.
    pub fn open(path: &Path, interval: Duration) -> Result<VmclockPage, BackendError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| BackendError::OpenVmclock {
                path: path.to_owned(),
                source,
            })?;
        let meta = file
            .metadata()
            .map_err(|source| BackendError::StatVmclock {
                path: path.to_owned(),
                source,
            })?;
        let page = rustix::param::page_size();
        let len = if meta.file_type().is_char_device() {
            page.max(ABI_LEN)
        } else {
            // A regular file (tests): map only what it holds, so no access can fault.
            let have = usize::try_from(meta.len()).unwrap_or(usize::MAX);
            if have < ABI_LEN {
                return Err(BackendError::ShortVmclock {
                    path: path.to_owned(),
                    have,
                });
            }
            have.min(page)
        };
        let map = Mapping::new(&file, len).map_err(|source| BackendError::MapVmclock {
            path: path.to_owned(),
            source,
        })?;
        map.header().check()?;
        let last = map.read(MAX_RETRIES)?;
        if !last.has_counter() {
            return Err(BackendError::NoCounter);
        }
        Ok(VmclockPage {
            notify: last.notifies(),
            file,
            map,
            interval,
            last,
            spurious: 0,
        })
    }

    /// The counter as last read.
    pub fn counter(&self) -> u64 {
        self.last.counter
    }

    /// Whether it waits for notifications (else it reads the page on a timer).
    pub fn notified(&self) -> bool {
        self.notify
    }

    /// Waits for a notification or one interval, then reads the page again. Returns the new
    /// counter if it changed.
    pub fn step(&mut self) -> Result<Option<u64>, Torn> {
        let woken = self.notify && self.wait_for_notification();
        if !self.notify {
            std::thread::sleep(self.interval);
        }
        let now = self.map.read(MAX_RETRIES)?;
        if woken {
            if now.seq == self.last.seq {
                self.spurious += 1;
                if self.spurious >= SPURIOUS_LIMIT {
                    tracing::warn!(
                        interval = ?self.interval,
                        "vmclock wakes poll without updates: reading the page on a timer instead"
                    );
                    self.notify = false;
                }
            } else {
                self.spurious = 0;
            }
        }
        let previous = self.last;
        self.last = now;
        Ok((now.has_counter() && now.counter != previous.counter).then_some(now.counter))
    }

    /// Polls the fd; true if it said `POLLIN` (then the driver's per-file sequence is updated by
    /// reading, or poll would stay ready). Falls back to the timer on `POLLHUP` or an error.
    fn wait_for_notification(&mut self) -> bool {
        let mut fds = [PollFd::new(&self.file, PollFlags::IN)];
        let timeout = Timespec::try_from(NOTIFY_BACKSTOP).ok();
        match poll(&mut fds, timeout.as_ref()) {
            Ok(0) => false,
            Ok(_) => {
                let revents = fds[0].revents();
                if revents.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                    tracing::warn!(
                        ?revents,
                        "vmclock does not support poll: reading the page on a timer instead"
                    );
                    self.notify = false;
                    return false;
                }
                let mut buf = [0u8; ABI_LEN];
                if let Err(e) = self.file.read_at(&mut buf, 0) {
                    tracing::debug!(error = %e, "reading vmclock after a wakeup");
                }
                true
            }
            Err(rustix::io::Errno::INTR) => false,
            Err(e) => {
                tracing::warn!(error = %e, "poll on vmclock failed: reading the page on a timer");
                self.notify = false;
                false
            }
        }
    }
}

/// Opens the page, compares the counter with the record, and starts the thread that reports
/// each change of the counter.
pub fn start(inbox: &Inbox, options: &Options) -> Result<(), BackendError> {
    let path = &options.vmclock_path;
    if !path.exists() {
        return Err(BackendError::NoVmclock(path.clone()));
    }
    let mut page = VmclockPage::open(path, options.vmclock_interval)?;
    let counter = page.counter();
    tracing::info!(
        counter,
        notified = page.notified(),
        "vmclock vm_generation_counter at start"
    );
    let recorder = record::resume(
        inbox,
        BackendKind::Vmclock,
        options.state_dir.as_deref(),
        counter.into(),
    );
    let inbox = inbox.clone();
    super::spawn(BackendKind::Vmclock, move || {
        let mut torn = false;
        loop {
            match page.step() {
                Ok(Some(value)) => {
                    torn = false;
                    recorder.report(&inbox, value.into());
                }
                Ok(None) => torn = false,
                Err(e) => {
                    if !torn {
                        tracing::warn!(error = %e, "vmclock read failed; trying again");
                    }
                    torn = true;
                    std::thread::sleep(DEFAULT_INTERVAL);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// A writable shared mapping of a page file, playing the hypervisor.
    struct Writer {
        ptr: NonNull<u8>,
    }

    // SAFETY: only aligned atomic stores reach the mapping.
    unsafe impl Send for Writer {}

    const PAGE: usize = 4096;

    impl Writer {
        fn new(file: &File) -> Writer {
            // SAFETY: a fresh shared writable mapping of a file that is PAGE bytes long.
            let ptr = unsafe {
                mmap(
                    std::ptr::null_mut(),
                    PAGE,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED,
                    file.as_fd(),
                    0,
                )
            }
            .unwrap();
            Writer {
                ptr: NonNull::new(ptr.cast()).unwrap(),
            }
        }

        fn put32(&self, at: usize, v: u32, order: Ordering) {
            assert!(at.is_multiple_of(4) && at + 4 <= PAGE);
            // SAFETY: in bounds and aligned; every access to the page is atomic.
            unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(at).cast::<u32>()) }
                .store(v.to_le(), order);
        }

        fn put64(&self, at: usize, v: u64) {
            self.put32(at, v as u32, Ordering::Relaxed);
            self.put32(at + 4, (v >> 32) as u32, Ordering::Relaxed);
        }

        fn header(&self, flags: u64) {
            self.put32(offset::MAGIC, MAGIC, Ordering::Relaxed);
            self.put32(offset::SIZE, PAGE as u32, Ordering::Relaxed);
            self.put32(offset::VERSION, u32::from(VERSION), Ordering::Relaxed);
            self.put64(offset::FLAGS, flags);
        }

        fn seq(&self, v: u32) {
            self.put32(offset::SEQ_COUNT, v, Ordering::Release);
        }
    }

    impl Drop for Writer {
        fn drop(&mut self) {
            // SAFETY: our own mapping, no longer used.
            let _ = unsafe { munmap(self.ptr.as_ptr().cast(), PAGE) };
        }
    }

    fn page_file() -> (tempfile::NamedTempFile, Writer) {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(PAGE as u64).unwrap();
        let writer = Writer::new(file.as_file());
        (file, writer)
    }

    /// The value published for step `n`: both halves equal, so a torn read shows.
    fn whole(n: u32) -> u64 {
        u64::from(n) << 32 | u64::from(n)
    }

    fn is_whole(v: u64) -> bool {
        (v >> 32) as u32 == v as u32
    }

    /// Writes `whole(n)` for n = 1, 2, ... under the seqlock, pausing between the halves.
    fn spawn_writer(
        writer: Writer,
        stop: Arc<AtomicBool>,
        honest: bool,
    ) -> std::thread::JoinHandle<u32> {
        std::thread::spawn(move || {
            let mut seq = 0u32;
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if honest {
                    seq += 1;
                    writer.put32(offset::SEQ_COUNT, seq, Ordering::Relaxed);
                    fence(Ordering::Release);
                }
                writer.put32(offset::VM_GENERATION_COUNTER, n, Ordering::Relaxed);
                for _ in 0..200 {
                    std::hint::spin_loop();
                }
                writer.put32(offset::VM_GENERATION_COUNTER + 4, n, Ordering::Relaxed);
                if honest {
                    seq += 1;
                    writer.seq(seq);
                }
                std::thread::yield_now();
            }
            n
        })
    }

    fn open_map(file: &tempfile::NamedTempFile) -> Mapping {
        Mapping::new(file.as_file(), PAGE).unwrap()
    }

    #[test]
    fn seqlock_reads_are_never_torn() {
        let (file, writer) = page_file();
        writer.header(FLAG_VM_GEN_COUNTER_PRESENT);
        let map = open_map(&file);
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn_writer(writer, Arc::clone(&stop), true);
        let (mut good, mut torn_errors, mut previous) = (0u32, 0u32, 0u64);
        // Until enough reads and writes interleaved, however slow a loaded machine is.
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while (good <= 100 || previous as u32 <= 200) && std::time::Instant::now() < until {
            match map.read(MAX_RETRIES) {
                Ok(s) => {
                    assert!(is_whole(s.counter), "torn value {:#x}", s.counter);
                    assert!(s.counter >= previous, "went back");
                    assert_eq!(s.seq % 2, 0);
                    previous = s.counter;
                    good += 1;
                }
                Err(_) => torn_errors += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        let written = handle.join().unwrap();
        assert!(
            good > 100,
            "only {good} reads succeeded ({torn_errors} gave up)"
        );
        assert!(written > 100, "the writer only wrote {written} values");
        assert!(previous > 0, "never saw a written value");
    }

    #[test]
    fn the_same_writer_tears_a_read_that_ignores_the_seqlock() {
        // Proves the test above can fail: without the seqlock, halves of different values mix.
        let (file, writer) = page_file();
        writer.header(FLAG_VM_GEN_COUNTER_PRESENT);
        let map = open_map(&file);
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn_writer(writer, Arc::clone(&stop), true);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let mut torn = 0u32;
        while torn == 0 && std::time::Instant::now() < until {
            if !is_whole(map.u64_at(offset::VM_GENERATION_COUNTER)) {
                torn += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        assert!(
            torn > 0,
            "no torn read in 10 s: the writer does not exercise the seqlock"
        );
    }

    #[test]
    fn a_writer_stuck_odd_gives_torn_not_a_value() {
        let (file, writer) = page_file();
        writer.header(FLAG_VM_GEN_COUNTER_PRESENT);
        writer.put64(offset::VM_GENERATION_COUNTER, whole(4));
        writer.seq(7);
        let map = open_map(&file);
        assert_eq!(map.read(MAX_RETRIES), Err(Torn { attempts: 1000 }));
        assert!(
            map.read(MAX_RETRIES)
                .unwrap_err()
                .to_string()
                .starts_with("torn")
        );
        writer.seq(8);
        assert_eq!(map.read(MAX_RETRIES).unwrap().counter, whole(4));
    }

    #[test]
    fn fields_are_read_at_their_offsets() {
        let (file, writer) = page_file();
        writer.header(FLAG_VM_GEN_COUNTER_PRESENT | FLAG_NOTIFICATION_PRESENT | 1);
        writer.put64(offset::DISRUPTION_MARKER, 0x1122_3344_5566_7788);
        writer.put64(offset::VM_GENERATION_COUNTER, 0x0102_0304_0506_0708);
        writer.seq(2);
        let map = open_map(&file);
        assert_eq!(
            map.header(),
            Header {
                magic: MAGIC,
                size: PAGE as u32,
                version: 1
            }
        );
        assert!(map.header().check().is_ok());
        let s = map.read(MAX_RETRIES).unwrap();
        assert_eq!(s.counter, 0x0102_0304_0506_0708);
        assert_eq!(s.disruption_marker, 0x1122_3344_5566_7788);
        assert_eq!(s.flags, 0x301);
        assert!(s.has_counter() && s.notifies());
        // The raw bytes are little-endian at the documented offsets.
        let mut raw = [0u8; ABI_LEN];
        file.as_file().read_exact_at(&mut raw, 0).unwrap();
        assert_eq!(&raw[0..4], b"VCLK");
        assert_eq!(raw[104], 0x08);
        assert_eq!(raw[111], 0x01);
    }

    #[test]
    fn bad_headers_are_refused_with_reasons() {
        let ok = Header {
            magic: MAGIC,
            size: 4096,
            version: 1,
        };
        assert!(
            Header { magic: 0, ..ok }
                .check()
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        assert!(
            Header { version: 2, ..ok }
                .check()
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        assert!(
            Header { size: 64, ..ok }
                .check()
                .unwrap_err()
                .to_string()
                .contains("too small")
        );
    }

    #[test]
    fn without_the_counter_flag_the_backend_is_inactive() {
        let (file, writer) = page_file();
        writer.header(FLAG_NOTIFICATION_PRESENT);
        writer.seq(2);
        let err = VmclockPage::open(file.path(), DEFAULT_INTERVAL).unwrap_err();
        assert!(matches!(err, BackendError::NoCounter), "{err:?}");
        assert_eq!(err.to_string(), NO_COUNTER);
    }

    #[test]
    fn short_or_missing_files_are_refused() {
        let short = tempfile::NamedTempFile::new().unwrap();
        short.as_file().set_len(50).unwrap();
        assert!(
            VmclockPage::open(short.path(), DEFAULT_INTERVAL)
                .unwrap_err()
                .to_string()
                .contains("holds 50")
        );
        let err = VmclockPage::open(Path::new("/nonexistent/vmclock0"), DEFAULT_INTERVAL)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot open /nonexistent/vmclock0"),
            "{err}"
        );
    }

    #[test]
    fn timer_mode_reports_each_change_once() {
        let (file, writer) = page_file();
        writer.header(FLAG_VM_GEN_COUNTER_PRESENT);
        writer.put64(offset::VM_GENERATION_COUNTER, 10);
        writer.seq(2);
        let mut w = VmclockPage::open(file.path(), Duration::from_millis(5)).unwrap();
        assert!(!w.notified());
        assert_eq!(w.counter(), 10);
        assert_eq!(w.step(), Ok(None));
        writer.seq(3);
        writer.put64(offset::VM_GENERATION_COUNTER, 11);
        writer.seq(4);
        assert_eq!(w.step(), Ok(Some(11)));
        assert_eq!(w.step(), Ok(None));
        // Other fields changing under the seqlock are not restores.
        writer.seq(5);
        writer.put64(offset::DISRUPTION_MARKER, 99);
        writer.seq(6);
        assert_eq!(w.step(), Ok(None));
        writer.seq(7);
        assert_eq!(
            w.step(),
            Err(Torn {
                attempts: MAX_RETRIES
            })
        );
        writer.seq(8);
        assert_eq!(w.step(), Ok(None));
    }

    #[test]
    fn notification_mode_falls_back_when_poll_never_blocks() {
        // A regular file is always ready for reading, as a broken notifier would be.
        let (file, writer) = page_file();
        writer.header(FLAG_VM_GEN_COUNTER_PRESENT | FLAG_NOTIFICATION_PRESENT);
        writer.put64(offset::VM_GENERATION_COUNTER, 1);
        writer.seq(2);
        let mut w = VmclockPage::open(file.path(), Duration::from_millis(5)).unwrap();
        assert!(w.notified());
        writer.seq(3);
        writer.put64(offset::VM_GENERATION_COUNTER, 2);
        writer.seq(4);
        assert_eq!(w.step(), Ok(Some(2)));
        for _ in 0..SPURIOUS_LIMIT {
            assert_eq!(w.step(), Ok(None));
        }
        assert!(!w.notified());
        writer.seq(5);
        writer.put64(offset::VM_GENERATION_COUNTER, 3);
        writer.seq(6);
        assert_eq!(w.step(), Ok(Some(3)));
    }
}
