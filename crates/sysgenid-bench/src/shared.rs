//! Counters shared between the fan-out and its watcher processes: one page of a memfd.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicU32;

use rustix::fs::MemfdFlags;
use rustix::mm::{MapFlags, ProtFlags};

const SIZE: usize = 4096;

/// A shared page holding three `AtomicU32`: acks left, re-armed waits and errors.
#[derive(Debug)]
pub struct Shared {
    ptr: *mut AtomicU32,
}

// SAFETY: the page holds only atomics, which any thread may use through a shared reference.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// A new zeroed memfd of one page, for passing to watcher processes.
    pub fn create() -> OwnedFd {
        let fd = rustix::fs::memfd_create("sysgenid-bench-shared", MemfdFlags::CLOEXEC)
            .expect("memfd_create");
        rustix::fs::ftruncate(&fd, SIZE as u64).expect("size the memfd");
        fd
    }

    /// Maps the page of `fd` shared.
    pub fn map(fd: impl AsFd) -> Shared {
        // SAFETY: a new shared mapping at an address the kernel picks; nothing else in this
        // process refers to that range, and it is never unmapped (it lives as long as the process).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                SIZE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .expect("mmap the shared page");
        Shared { ptr: ptr.cast() }
    }

    fn at(&self, i: usize) -> &AtomicU32 {
        // SAFETY: the page is mapped for the life of the process, page-aligned, and zeroed or
        // written only through atomics; `i` is below 3, well inside one page.
        unsafe { &*self.ptr.add(i) }
    }

    /// Eventfd proxy: acknowledgements still to come this round.
    pub fn acks_left(&self) -> &AtomicU32 {
        self.at(0)
    }

    /// Acknowledgements made so far, each followed by a new wait.
    pub fn rearmed(&self) -> &AtomicU32 {
        self.at(1)
    }

    /// Changes a watcher saw out of order.
    pub fn errors(&self) -> &AtomicU32 {
        self.at(2)
    }
}
