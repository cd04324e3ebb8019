//! The read-only counter page for probes: `<state-dir>/generation`, updated in place.
//!
//! The file is created whole (written under a temporary name, then renamed), so nobody ever
//! maps an empty file. After that it is never replaced or truncated: existing mappings must keep
//! seeing updates, so each new value is one atomic store into a shared mapping.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::mm::{MapFlags, ProtFlags};
use sysgenid_abi::{GENERATION_OFFSET, PAGE_SIZE, encode_generation};

/// The mode of the page file: readable by everyone, writable by no one but its owner's
/// capabilities.
pub const PAGE_FILE_MODE: u32 = 0o444;

/// The page file, mapped shared and writable by the daemon alone.
#[derive(Debug)]
pub struct PageFile {
    path: PathBuf,
    map: NonNull<u8>,
}

// SAFETY: the mapping is only ever accessed through atomic operations on its first word and
// lives until `drop`; nothing ties it to one thread.
unsafe impl Send for PageFile {}

impl PageFile {
    /// Opens the page file at `path`, creating it whole if it is missing or unusable, and stores
    /// `generation` in it.
    pub fn open_or_create(path: &Path, generation: u32) -> io::Result<PageFile> {
        let file = match open_existing(path)? {
            Some(file) => file,
            None => create_whole(path, generation)?,
        };
        let page = PageFile::map(path, &file)?;
        page.store(generation);
        Ok(page)
    }

    fn map(path: &Path, file: &File) -> io::Result<PageFile> {
        // SAFETY: a fresh shared mapping of a file we hold open, at an address the kernel picks;
        // the file is exactly one page long, so every byte of the mapping is backed.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                0,
            )
        }?;
        let map = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("null mapping"))?;
        Ok(PageFile {
            path: path.to_owned(),
            map,
        })
    }

    fn counter(&self) -> &AtomicU32 {
        // SAFETY: offset 0 of a page-aligned mapping is aligned for `u32`, the mapping lives as
        // long as `self`, and every access to this word (ours and other processes') is a single
        // aligned load or store.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().add(GENERATION_OFFSET).cast::<u32>()) }
    }

    /// Publishes a new generation with one atomic store.
    pub fn store(&self, generation: u32) {
        self.counter().store(generation, Ordering::Release);
    }

    /// The generation the page shows now.
    pub fn load(&self) -> u32 {
        self.counter().load(Ordering::Acquire)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PageFile {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`, which nothing uses after drop.
        let _ = unsafe { rustix::mm::munmap(self.map.as_ptr().cast(), PAGE_SIZE) };
    }
}

/// The generation an existing, whole page file shows, if there is one.
pub fn peek(path: &Path) -> Option<u32> {
    let bytes = fs::read(path).ok()?;
    if bytes.len() != PAGE_SIZE {
        return None;
    }
    sysgenid_abi::decode_generation(&bytes)
}

/// The existing page file opened for update, or `None` if it must be (re)created.
fn open_existing(path: &Path) -> io::Result<Option<File>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let usable = meta.file_type().is_file()
        && meta.len() == PAGE_SIZE as u64
        && meta.uid() == rustix::process::geteuid().as_raw();
    if !usable {
        tracing::warn!(
            path = %path.display(),
            "page file is not a {PAGE_SIZE}-byte regular file of ours; replacing it (existing \
             mappings of the old file stop seeing updates)"
        );
        return Ok(None);
    }
    let open = || OpenOptions::new().read(true).write(true).open(path);
    match open() {
        Ok(file) => Ok(Some(file)),
        // Not root: the owner may lift its own write protection for a moment.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            fs::set_permissions(path, Permissions::from_mode(0o644))?;
            let file = open();
            fs::set_permissions(path, Permissions::from_mode(PAGE_FILE_MODE))?;
            file.map(Some)
        }
        Err(e) => Err(e),
    }
}

/// Writes a whole page under a temporary name, then renames it into place.
fn create_whole(path: &Path, generation: u32) -> io::Result<File> {
    let tmp = path.with_extension("new");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(PAGE_FILE_MODE)
        .open(&tmp)?;
    let mut page = vec![0u8; PAGE_SIZE];
    page[GENERATION_OFFSET..GENERATION_OFFSET + 4].copy_from_slice(&encode_generation(generation));
    file.write_all(&page)?;
    file.sync_all()?;
    fs::set_permissions(&tmp, Permissions::from_mode(PAGE_FILE_MODE))?;
    fs::rename(&tmp, path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_counter(path: &Path) -> u32 {
        let bytes = fs::read(path).unwrap();
        assert_eq!(bytes.len(), PAGE_SIZE);
        sysgenid_abi::decode_generation(&bytes).unwrap()
    }

    #[test]
    fn creates_a_whole_read_only_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generation");
        let page = PageFile::open_or_create(&path, 9).unwrap();
        assert_eq!(read_counter(&path), 9);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, PAGE_FILE_MODE);
        assert!(fs::read(&path).unwrap()[4..].iter().all(|&b| b == 0));
        page.store(10);
        assert_eq!(read_counter(&path), 10);
        assert_eq!(page.load(), 10);
    }

    #[test]
    fn reopening_updates_in_place_so_old_readers_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generation");
        let first = PageFile::open_or_create(&path, 1).unwrap();
        let ino = fs::metadata(&path).unwrap().ino();
        drop(first);
        let reader = File::open(&path).unwrap();
        let second = PageFile::open_or_create(&path, 2).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), ino, "same inode");
        second.store(3);
        let mut buf = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(&reader, &mut buf, 0).unwrap();
        assert_eq!(u32::from_ne_bytes(buf), 3);
    }

    #[test]
    fn peek_reads_only_a_whole_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generation");
        assert_eq!(peek(&path), None);
        drop(PageFile::open_or_create(&path, 12).unwrap());
        assert_eq!(peek(&path), Some(12));
        fs::remove_file(&path).unwrap();
        fs::write(&path, 12u32.to_ne_bytes()).unwrap();
        assert_eq!(peek(&path), None, "a short file is not a page");
    }

    #[test]
    fn a_wrong_sized_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generation");
        fs::write(&path, b"").unwrap();
        let page = PageFile::open_or_create(&path, 5).unwrap();
        assert_eq!(read_counter(&path), 5);
        assert_eq!(page.load(), 5);
    }
}
