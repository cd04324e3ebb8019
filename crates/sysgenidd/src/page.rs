//! The read-only counter page for probes: `<state-dir>/generation`, updated in place.
//!
//! The file is created whole (written under a temporary name, then renamed), so nobody ever
//! maps an empty file. After that it is never replaced or truncated: existing mappings must keep
//! seeing updates, so each new value and its ID are atomic stores into a shared mapping, by the
//! seqlock rule of [`sysgenid_abi::write_head`].

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use sysgenid_abi::{GenerationId, PAGE_FILE_NAME, PAGE_HEAD_WORDS, PAGE_SIZE, encode_head};

use crate::shared_map::SharedMap;
use crate::state_dir::StateDir;

/// The mode of the page file: readable by everyone, writable by no one but its owner's
/// capabilities.
pub const PAGE_FILE_MODE: u32 = 0o444;

/// The page file, mapped shared and writable by the daemon alone.
#[derive(Debug)]
pub struct PageFile {
    path: PathBuf,
    map: SharedMap,
}

impl PageFile {
    /// Opens the page file of `dir`, creating it whole if it is missing or not a whole page,
    /// and stores `generation` and its `id` in it.
    pub fn open_or_create(
        dir: &StateDir,
        generation: u32,
        id: GenerationId,
    ) -> io::Result<PageFile> {
        let found = existing_page(dir)?;
        if found != Some(true) {
            if found.is_some() {
                tracing::warn!(
                    path = %dir.path_of(PAGE_FILE_NAME).display(),
                    "page file is not a {PAGE_SIZE}-byte regular file; replacing it (existing \
                     mappings of the old file stop seeing updates)"
                );
            }
            let mut page = vec![0u8; PAGE_SIZE];
            let head = encode_head(generation, id);
            page[..head.len()].copy_from_slice(&head);
            dir.replace(PAGE_FILE_NAME, &page, PAGE_FILE_MODE)?;
        }
        let file = open_for_update(dir)?;
        let page = PageFile::map(&dir.path_of(PAGE_FILE_NAME), &file)?;
        page.store(generation, id);
        Ok(page)
    }

    fn map(path: &Path, file: &File) -> io::Result<PageFile> {
        Ok(PageFile {
            path: path.to_owned(),
            map: SharedMap::new(file, PAGE_SIZE as u64)?,
        })
    }

    fn head(&self) -> &[AtomicU32; PAGE_HEAD_WORDS] {
        // SAFETY: the start of a page-aligned mapping of PAGE_SIZE bytes is aligned for `u32`
        // and holds the PAGE_HEAD_WORDS words; the mapping lives as long as `self`; every access
        // to these words (ours and other processes') is a single aligned load or store.
        unsafe {
            &*self
                .map
                .start()
                .as_ptr()
                .cast::<[AtomicU32; PAGE_HEAD_WORDS]>()
        }
    }

    /// Publishes a new generation and its ID: the generation word with one atomic store, the
    /// pair under the sequence word.
    pub fn store(&self, generation: u32, id: GenerationId) {
        sysgenid_abi::write_head(self.head(), generation, id);
    }

    /// The generation and ID the page shows now.
    pub fn load(&self) -> (u32, GenerationId) {
        sysgenid_abi::read_head(self.head()).expect("only this process writes the page")
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The generation an existing, whole page file of `dir` shows, if there is one, with its ID if
/// the page holds one and is not in the middle of an update (a daemon that died while writing
/// it). The generation word alone is always whole.
pub fn peek(dir: &StateDir) -> Option<(u32, Option<GenerationId>)> {
    let bytes = dir.read(PAGE_FILE_NAME).ok()??;
    if bytes.len() != PAGE_SIZE {
        return None;
    }
    let generation = sysgenid_abi::decode_generation(&bytes)?;
    let id = sysgenid_abi::decode_head(&bytes)
        .map(|(_, id)| id)
        .filter(|id| !id.is_none());
    Some((generation, id))
}

/// Whether the page file is a whole page (`Some(true)`), something else (`Some(false)`), or
/// missing (`None`).
fn existing_page(dir: &StateDir) -> io::Result<Option<bool>> {
    match rustix::fs::statat(dir, PAGE_FILE_NAME, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(
            FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
                && stat.st_size == PAGE_SIZE as i64,
        )),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The page file opened for update. Without root, the owner lifts its own write protection
/// for a moment.
fn open_for_update(dir: &StateDir) -> io::Result<File> {
    let open = || dir.open_at(PAGE_FILE_NAME, OFlags::RDWR, 0).map(File::from);
    match open() {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let chmod = |mode| {
                rustix::fs::chmodat(
                    dir,
                    PAGE_FILE_NAME,
                    Mode::from_raw_mode(mode),
                    AtFlags::empty(),
                )
            };
            chmod(0o644)?;
            let file = open();
            chmod(PAGE_FILE_MODE)?;
            file
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn id(seed: u8) -> GenerationId {
        GenerationId([seed; 16])
    }

    fn setup() -> (tempfile::TempDir, StateDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("s")).unwrap();
        (tmp, dir)
    }

    fn read_counter(path: &Path) -> u32 {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(bytes.len(), PAGE_SIZE);
        sysgenid_abi::decode_generation(&bytes).unwrap()
    }

    #[test]
    fn creates_a_whole_read_only_page() {
        let (_tmp, dir) = setup();
        let path = dir.path_of(PAGE_FILE_NAME);
        let page = PageFile::open_or_create(&dir, 9, id(9)).unwrap();
        assert_eq!(read_counter(&path), 9);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, PAGE_FILE_MODE);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[..24], encode_head(9, id(9)));
        assert!(bytes[24..].iter().all(|&b| b == 0));
        page.store(10, id(10));
        assert_eq!(read_counter(&path), 10);
        assert_eq!(page.load(), (10, id(10)));
        assert_eq!(peek(&dir), Some((10, Some(id(10)))));
    }

    #[test]
    fn reopening_updates_in_place_so_old_readers_follow() {
        let (_tmp, dir) = setup();
        let path = dir.path_of(PAGE_FILE_NAME);
        let first = PageFile::open_or_create(&dir, 1, id(1)).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        drop(first);
        let reader = File::open(&path).unwrap();
        let second = PageFile::open_or_create(&dir, 2, id(2)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino, "same inode");
        second.store(3, id(3));
        let mut buf = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(&reader, &mut buf, 0).unwrap();
        assert_eq!(u32::from_ne_bytes(buf), 3);
    }

    #[test]
    fn peek_reads_only_a_whole_page() {
        let (_tmp, dir) = setup();
        assert_eq!(peek(&dir), None);
        drop(PageFile::open_or_create(&dir, 12, id(12)).unwrap());
        assert_eq!(peek(&dir), Some((12, Some(id(12)))));
        let mut old = vec![0u8; PAGE_SIZE];
        old[..4].copy_from_slice(&13u32.to_ne_bytes());
        dir.replace(PAGE_FILE_NAME, &old, 0o444).unwrap();
        assert_eq!(
            peek(&dir),
            Some((13, None)),
            "an older daemon's page: no ID"
        );
        old[4..8].copy_from_slice(&27u32.to_ne_bytes());
        old[8..24].copy_from_slice(&id(14).0);
        dir.replace(PAGE_FILE_NAME, &old, 0o444).unwrap();
        assert_eq!(
            peek(&dir),
            Some((13, None)),
            "left mid-update: the counter, no ID"
        );
        dir.replace(PAGE_FILE_NAME, &12u32.to_ne_bytes(), 0o444)
            .unwrap();
        assert_eq!(peek(&dir), None, "a short file is not a page");
    }

    #[test]
    fn a_wrong_sized_file_is_replaced_whole() {
        let (_tmp, dir) = setup();
        dir.replace(PAGE_FILE_NAME, b"", 0o444).unwrap();
        let page = PageFile::open_or_create(&dir, 5, id(5)).unwrap();
        assert_eq!(read_counter(&dir.path_of(PAGE_FILE_NAME)), 5);
        assert_eq!(page.load(), (5, id(5)));
    }
}
