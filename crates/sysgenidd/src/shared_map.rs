//! A file mapped whole, shared and writable: the session memfd and the page file, both written
//! in place by the daemon and read by other processes.

use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use rustix::mm::{MapFlags, ProtFlags};

/// A file mapped whole, shared and writable, unmapped on drop.
#[derive(Debug)]
pub struct SharedMap {
    ptr: NonNull<u8>,
    len: usize,
}

impl SharedMap {
    /// Maps the first `len` bytes of `fd`, which must be at least that long.
    pub fn new(fd: impl AsFd, len: u64) -> io::Result<SharedMap> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        // SAFETY: a fresh shared mapping at an address the kernel picks; the caller's file is
        // at least `len` bytes long, and neither user here ever shrinks it while mapped.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("null mapping"))?;
        Ok(SharedMap { ptr, len })
    }

    /// The start of the mapping (page-aligned).
    pub fn start(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Its length in bytes.
    pub fn byte_len(&self) -> usize {
        self.len
    }

    /// Writes `bytes` at `at`, the first byte last (a release store), so that a reader of the
    /// file never finds the first byte set over a half-written rest.
    pub fn write_first_last(&self, at: u64, bytes: &[u8]) {
        let at = usize::try_from(at).expect("in the mapping");
        assert!(at + bytes.len() <= self.len && !bytes.is_empty());
        // SAFETY: the range is inside the live mapping (checked above); the owner writes it
        // from one thread, and nothing holds a reference into that range.
        unsafe {
            let base = self.ptr.as_ptr().add(at);
            std::ptr::copy_nonoverlapping(bytes[1..].as_ptr(), base.add(1), bytes.len() - 1);
            AtomicU8::from_ptr(base).store(bytes[0], Ordering::Release);
        }
    }

    /// Copies `N` bytes from `at` out of the mapping.
    pub fn read<const N: usize>(&self, at: u64) -> [u8; N] {
        let at = usize::try_from(at).expect("in the mapping");
        assert!(at + N <= self.len);
        let mut out = [0u8; N];
        // SAFETY: the range is inside the live mapping (checked above); only its owner writes
        // it, from the thread calling this.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(at), out.as_mut_ptr(), N) };
        out
    }

    /// Stores the 8 bytes at `at`, which must be 8-aligned, as one atomic store: a reader, or a
    /// process dying meanwhile, sees all of them or none.
    pub fn store_word(&self, at: u64, bytes: [u8; 8]) {
        let at = usize::try_from(at).expect("in the mapping");
        assert!(at + 8 <= self.len && at % 8 == 0);
        // SAFETY: the range is inside the live, page-aligned mapping and 8-aligned (checked
        // above); the owner writes it from one thread, and nothing holds a reference into it.
        unsafe {
            AtomicU64::from_ptr(self.ptr.as_ptr().add(at).cast::<u64>())
                .store(u64::from_ne_bytes(bytes), Ordering::Release);
        }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `SharedMap::new` with this length and nothing
        // refers into it any more.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves its only
// user with it.
unsafe impl Send for SharedMap {}
