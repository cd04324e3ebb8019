//! A `BPF_MAP_TYPE_RINGBUF` consumer over its mmapped pages.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HDR: usize = 8;

/// A mapped ring buffer: consumer page (rw), producer page plus data twice (ro).
#[derive(Debug)]
pub struct RingBuf {
    fd: OwnedFd,
    consumer: *mut u8,
    producer: *mut u8,
    page: usize,
    size: usize,
}

// SAFETY: the mappings are owned by this value and only touched through &mut self
// or atomics; moving them to another thread is fine.
unsafe impl Send for RingBuf {}

impl RingBuf {
    /// Maps `fd`, a ring buffer of `size` data bytes.
    pub fn new(fd: OwnedFd, size: usize) -> io::Result<RingBuf> {
        // SAFETY: plain query, no memory involved.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("page size"))?;
        let map = |len: usize, prot: i32, off: usize| {
            // SAFETY: a fresh shared mapping of a BPF map fd; the kernel validates the range.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    off as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(p.cast::<u8>())
            }
        };
        let consumer = map(page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = match map(page + 2 * size, libc::PROT_READ, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: unmapping what we just mapped.
                unsafe { libc::munmap(consumer.cast(), page) };
                return Err(e);
            }
        };
        Ok(RingBuf {
            fd,
            consumer,
            producer,
            page,
            size,
        })
    }

    /// The map fd: readable (EPOLLIN) when records are waiting.
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    fn pos(&self, p: *mut u8) -> &AtomicU64 {
        // SAFETY: p is the page-aligned start of a live mapping; the first 8 bytes are
        // the kernel's position counter, only ever accessed atomically.
        unsafe { &*p.cast::<AtomicU64>() }
    }

    /// Drains all complete records, calling `f` with each payload.
    pub fn consume(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let cons_pos = self.pos(self.consumer);
        let prod_pos = self.pos(self.producer);
        let mut cons = cons_pos.load(Ordering::Acquire);
        let mut n = 0;
        loop {
            let prod = prod_pos.load(Ordering::Acquire);
            if cons >= prod {
                break;
            }
            let off = (cons as usize) & (self.size - 1);
            // SAFETY: data starts one page after the producer page; off < size and the
            // data is mapped twice, so header and payload are in range.
            let hdr = unsafe { self.producer.add(self.page + off) };
            // SAFETY: the header's length word is 4-aligned and written atomically by the kernel.
            let len = unsafe { &*hdr.cast::<AtomicU32>() }.load(Ordering::Acquire);
            if len & BUSY != 0 {
                break;
            }
            let payload = (len & !(BUSY | DISCARD)) as usize;
            if len & DISCARD == 0 {
                // SAFETY: the committed record's payload follows its header, within the double map.
                f(unsafe { std::slice::from_raw_parts(hdr.add(HDR), payload) });
                n += 1;
            }
            cons += ((payload + HDR + 7) & !7) as u64;
            cons_pos.store(cons, Ordering::Release);
        }
        n
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mappings exactly once.
        unsafe {
            libc::munmap(self.consumer.cast(), self.page);
            libc::munmap(self.producer.cast(), self.page + 2 * self.size);
        }
    }
}
