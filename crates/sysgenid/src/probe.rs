//! The fast probe: the generation from a shared read-only page, with no syscall per read.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};
use sysgenid_abi::{GENERATION_OFFSET, GENERATION_SIZE, GenerationId, PAGE_HEAD_WORDS, PAGE_SIZE};

use crate::error::{Call, Error, Result};
use crate::paths::Paths;
use crate::trust::{self, Distrust};

/// `statfs(2)` magic of FUSE file systems, which is how our daemon serves the device.
const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;

/// Which file a [`Probe`] maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSource {
    /// The page file `<state-dir>/generation`: survives daemon restarts; preferred.
    PageFile(PathBuf),
    /// The device itself, where no page file exists (such as a kernel driver).
    Device(PathBuf),
}

/// A read-only shared mapping of the counter page: [`Probe::generation`] is one atomic 4-byte
/// load, with no syscall.
///
/// [`Probe::open`] maps the page file `<state-dir>/generation`, or the device (`O_RDONLY`,
/// `PROT_READ`, `MAP_SHARED`) where no page file exists. [`crate::generation`] keeps one global
/// probe per process, mapped on first use.
///
/// Only what root or this process's own user controls is believed: the page file must be a
/// regular file of exactly one page, reached without following a link, in a directory, both
/// owned by root or by this process's effective uid and writable by no one else; a device
/// served by FUSE must be mounted by one of them. Anything else is [`Error::Untrusted`], with
/// no fall back to the device.
///
/// # What the counter tells
///
/// The counter says "this system was restored from a snapshot (or cloned) since you last
/// looked", not "this system is unique": two clones restored from one snapshot both see N+1.
/// Renew anything that must be unique (random seeds, UUIDs, keys, leases) when it changes.
/// [`Probe::generation_with_id`] tells the clones apart: each bump draws a random 128-bit ID
/// (`sysgenidd` only; a page without one gives `None`).
///
/// It is only as fresh as the bump: between the moment a restored system resumes and the moment
/// the bump lands (a hardware backend noticing, or an overseer's trigger), readers still see
/// the old value. See the crate documentation for the retry pattern and the overseer workflow
/// that closes that window.
///
/// # Daemon restarts
///
/// The page file is never replaced: it keeps the last value while no daemon runs and the next
/// daemon updates it in place, so a page-file probe keeps working across restarts. A mapping of
/// the *device* keeps showing its resident page after the daemon is gone, but a fault after the
/// kernel drops that page raises `SIGBUS`; prefer the page file.
///
/// ```
/// use std::io::Write;
///
/// // A page file made by hand: 4096 bytes, the generation in the first 4.
/// let dir = tempfile::tempdir()?;
/// let mut page = vec![0u8; 4096];
/// page[..4].copy_from_slice(&7u32.to_ne_bytes());
/// std::fs::File::create(dir.path().join("generation"))?.write_all(&page)?;
///
/// let paths = sysgenid::Paths::new(dir.path().join("no-device"), dir.path());
/// let probe = sysgenid::Probe::open(&paths)?;
/// assert_eq!(probe.generation(), 7);
/// assert!(matches!(probe.source(), sysgenid::ProbeSource::PageFile(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Probe {
    /// The start of the mapped page, `PAGE_SIZE` bytes.
    page: NonNull<u8>,
    source: ProbeSource,
}

// SAFETY: the mapping is read-only, private to this value, and unmapped only on drop; reads
// are atomic loads, so sharing it between threads is sound.
unsafe impl Send for Probe {}
// SAFETY: as above: `&Probe` only allows atomic loads from the read-only page.
unsafe impl Sync for Probe {}

static GLOBAL: OnceLock<Probe> = OnceLock::new();

impl Probe {
    /// Maps the page file of `paths`, or the device where no page file exists.
    pub fn open(paths: &Paths) -> Result<Probe> {
        match open_page_file(&paths.page_file())? {
            Some(probe) => Ok(probe),
            None => Probe::device(paths.device()),
        }
    }

    /// Maps the page file at `path`.
    pub fn page_file(path: &Path) -> Result<Probe> {
        open_page_file(path)?.ok_or_else(|| Error::Unexpected {
            path: path.to_owned(),
            what: "no such page file; is sysgenidd running, and is SYSGENID_STATE_DIR its \
                   state directory?"
                .to_owned(),
        })
    }

    /// Maps the device at `path` (`O_RDONLY`, `PROT_READ`, `MAP_SHARED`).
    ///
    /// Prefer the page file: a device mapping can fault (`SIGBUS`) after a daemon restart.
    pub fn device(path: &Path) -> Result<Probe> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::from_errno(Call::Open { write: false }, e, path))?;
        check_served(&fd, path)?;
        map(&fd, path, ProbeSource::Device(path.to_owned()))
    }

    /// The process-wide probe for [`Paths::from_env`], mapped on first use and kept for the life
    /// of the process. A failed first use is not remembered: the next call tries again.
    pub fn global() -> Result<&'static Probe> {
        if let Some(probe) = GLOBAL.get() {
            return Ok(probe);
        }
        let probe = Probe::open(&Paths::from_env())?;
        // A thread that lost the race drops its own mapping here.
        Ok(GLOBAL.get_or_init(|| probe))
    }

    /// The current generation: one atomic load from the shared page, no syscall.
    #[inline]
    pub fn generation(&self) -> u32 {
        // SAFETY: `page` is a live PROT_READ mapping of PAGE_SIZE bytes (kept until drop) and
        // the offset is 0, so the pointer is in bounds and 4-byte aligned. The daemon writes
        // this word with single aligned stores; a relaxed atomic load of a register-sized value
        // is allowed on read-only memory and never tears.
        let word = unsafe { AtomicU32::from_ptr(self.page.as_ptr().add(GENERATION_OFFSET).cast()) };
        word.load(Ordering::Relaxed)
    }

    /// The current generation and its random ID, a consistent pair read by the page's seqlock
    /// rule (`docs/abi.md`) with no syscall; retried while the daemon is writing the page.
    ///
    /// `None` where the page holds no ID (a daemon older than the ID, a kernel driver), or stays
    /// in the middle of an update (a daemon that died while writing it; the next one rewrites
    /// it at start).
    pub fn generation_with_id(&self) -> Option<(u32, GenerationId)> {
        // SAFETY: `page` is a live PROT_READ mapping of PAGE_SIZE bytes (kept until drop),
        // page-aligned, so its first PAGE_HEAD_WORDS words are in bounds and aligned; the daemon
        // writes them with single aligned stores, and relaxed or acquire atomic loads of
        // register-sized values are allowed on read-only memory and never tear.
        let head = unsafe { &*self.page.as_ptr().cast::<[AtomicU32; PAGE_HEAD_WORDS]>() };
        sysgenid_abi::read_head(head).filter(|(_, id)| !id.is_none())
    }

    /// The current generation's random ID: [`Probe::generation_with_id`] without the
    /// generation.
    pub fn generation_id(&self) -> Option<GenerationId> {
        self.generation_with_id().map(|(_, id)| id)
    }

    /// The file this probe maps.
    pub fn source(&self) -> &ProbeSource {
        &self.source
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: `page` is the start of a PAGE_SIZE mapping made by `map` and owned by this
        // value; nothing can use it after drop.
        let _ = unsafe { rustix::mm::munmap(self.page.as_ptr().cast(), PAGE_SIZE) };
    }
}

/// The mapped page file, `None` if it or its directory does not exist; refused unless both
/// pass the checks of [`crate::trust`]: the directory and the file are root's or this user's
/// and no one else may write them, and the file is one regular page (reached without following
/// a link).
fn open_page_file(path: &Path) -> Result<Option<Probe>> {
    let os = |e| Error::from_errno(Call::Map, e, path);
    let (dir_path, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => (dir, name),
        (_, Some(name)) => (Path::new("."), name),
        (_, None) => {
            return Err(Error::Unexpected {
                path: path.to_owned(),
                what: "this is not the path of a file".to_owned(),
            });
        }
    };
    let untrusted = |path: &Path| {
        let path = path.to_owned();
        move |problem| Error::Untrusted { path, problem }
    };
    let dir = match rustix::fs::open(
        dir_path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(os(e)),
    };
    trust::check_owned(&rustix::fs::fstat(&dir).map_err(os)?).map_err(untrusted(dir_path))?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => return Err(untrusted(path)(Distrust::NotRegular)),
        Err(e) => return Err(os(e)),
    };
    trust::check_page(&rustix::fs::fstat(&fd).map_err(os)?).map_err(untrusted(path))?;
    map(&fd, path, ProbeSource::PageFile(path.to_owned())).map(Some)
}

/// Checks that `fd` is a served device: a character device (a kernel driver), or a FUSE file
/// that holds at least a generation, mounted by root or this user. A stopped daemon leaves an
/// empty, unserved mountpoint file, which root can open; reading or mapping it would give
/// nothing, or `SIGBUS`.
pub(crate) fn check_served(fd: impl AsFd, path: &Path) -> Result<()> {
    let os = |e| Error::from_errno(Call::Open { write: false }, e, path);
    let stat = rustix::fs::fstat(&fd).map_err(os)?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::CharacterDevice {
        return Ok(());
    }
    let fs = rustix::fs::fstatfs(&fd).map_err(os)?;
    if fs.f_type as u64 == FUSE_SUPER_MAGIC && stat.st_size >= GENERATION_SIZE as i64 {
        return trust::check_mounter(&stat).map_err(|problem| Error::Untrusted {
            path: path.to_owned(),
            problem,
        });
    }
    Err(Error::NotServed {
        path: path.to_owned(),
    })
}

/// Maps the first page of `fd` read-only and shared.
fn map(fd: &OwnedFd, path: &Path, source: ProbeSource) -> Result<Probe> {
    // SAFETY: a fresh PROT_READ, MAP_SHARED mapping at an address the kernel picks aliases no
    // Rust object; it is only ever read through atomic loads and unmapped on drop.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            PAGE_SIZE,
            ProtFlags::READ,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(|e| Error::from_errno(Call::Map, e, path))?;
    let page = NonNull::new(ptr.cast()).ok_or_else(|| Error::Unexpected {
        path: path.to_owned(),
        what: "mmap returned a null address".to_owned(),
    })?;
    Ok(Probe { page, source })
}

/// The current generation through a probe of `paths` mapped just for this read, or `None` if
/// neither the page file nor the device can be mapped.
pub(crate) fn current_generation(paths: &Paths) -> Option<u32> {
    Probe::open(paths).ok().map(|probe| probe.generation())
}
