//! In-kernel and in-memory baselines: eventfd read, write and wakeups, and a plain memory load.

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::time::Instant;

use rustix::event::{EventfdFlags, PollFd, PollFlags, eventfd};
use rustix::io::Errno;

use crate::stats::{time_batches, time_each};
use crate::wakeup::{self, WakeupSamples};

fn new_eventfd(flags: EventfdFlags) -> OwnedFd {
    eventfd(0, flags | EventfdFlags::CLOEXEC).expect("eventfd")
}

/// `read(2)` on a non-blocking eventfd whose counter is 0: `EAGAIN` every time.
pub fn eventfd_read_eagain(warmup: usize, iters: usize) -> Vec<f64> {
    let fd = new_eventfd(EventfdFlags::NONBLOCK);
    let mut buf = [0u8; 8];
    let mut wrong = 0usize;
    let samples = time_each(warmup, iters, || {
        if rustix::io::read(&fd, &mut buf) != Err(Errno::AGAIN) {
            wrong += 1;
        }
    });
    assert_eq!(wrong, 0, "eventfd read did not give EAGAIN");
    samples
}

/// `write(2)` of 1 to an eventfd.
pub fn eventfd_write(warmup: usize, iters: usize) -> Vec<f64> {
    let fd = new_eventfd(EventfdFlags::NONBLOCK);
    let one = 1u64.to_ne_bytes();
    let mut wrong = 0usize;
    let samples = time_each(warmup, iters, || {
        if rustix::io::write(&fd, &one) != Ok(8) {
            wrong += 1;
        }
    });
    assert_eq!(wrong, 0, "eventfd write did not return 8");
    samples
}

/// A blocked in `read(2)` on an eventfd, B writes 1.
pub fn eventfd_read_wakeup(warmup: usize, iters: usize) -> WakeupSamples {
    let fd = new_eventfd(EventfdFlags::empty());
    let one = 1u64.to_ne_bytes();
    let wait = || {
        let mut buf = [0u8; 8];
        rustix::io::read(&fd, &mut buf).expect("eventfd read");
        Instant::now()
    };
    // Nothing but the read can put A to sleep between its announcement and the call.
    let ready = |t: &wakeup::TaskState| t.state == 'S';
    let fire = || {
        rustix::io::write(&fd, &one).expect("eventfd write");
    };
    wakeup::measure(warmup, iters, wait, ready, fire)
}

/// A blocked in `poll(2)` on an eventfd, B writes 1; A then drains the counter.
pub fn eventfd_poll_wakeup(warmup: usize, iters: usize) -> WakeupSamples {
    let fd = new_eventfd(EventfdFlags::NONBLOCK);
    let one = 1u64.to_ne_bytes();
    let wait = || {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        rustix::event::poll(&mut fds, None).expect("poll");
        let woke = Instant::now();
        let mut buf = [0u8; 8];
        rustix::io::read(&fd, &mut buf).expect("drain the eventfd");
        woke
    };
    let ready = |t: &wakeup::TaskState| t.sleeps_in("poll");
    let fire = || {
        rustix::io::write(&fd, &one).expect("eventfd write");
    };
    wakeup::measure(warmup, iters, wait, ready, fire)
}

/// `n` volatile 4-byte loads from `ptr`, summed so that none can be dropped.
///
/// # Safety
///
/// `ptr` must be valid for aligned 4-byte reads for the whole call.
#[inline(never)]
pub unsafe fn volatile_loads(ptr: *const u32, n: usize) -> u32 {
    let ptr = black_box(ptr);
    let mut acc = 0u32;
    for _ in 0..n {
        // SAFETY: the caller guarantees `ptr` is valid and aligned; a volatile read is
        // neither merged nor hoisted out of the loop.
        acc = acc.wrapping_add(unsafe { ptr.read_volatile() });
    }
    acc
}

/// Times batches of volatile loads from `ptr`, in nanoseconds per load.
///
/// # Safety
///
/// `ptr` must be valid for aligned 4-byte reads until this returns.
pub unsafe fn time_loads(ptr: *const u32, warmup: usize, batches: usize, per: usize) -> Vec<f64> {
    time_batches(warmup, batches, per, |n| {
        // SAFETY: the caller's guarantee on `ptr` holds for the whole timing loop.
        black_box(unsafe { volatile_loads(ptr, n) });
    })
}

/// Volatile loads from ordinary process memory (a heap word).
pub fn memory_loads(warmup: usize, batches: usize, per: usize) -> Vec<f64> {
    let word = Box::new(7u32);
    let ptr: *const u32 = &*word;
    // SAFETY: `word` is alive and aligned until the end of this function.
    unsafe { time_loads(ptr, warmup, batches, per) }
}
