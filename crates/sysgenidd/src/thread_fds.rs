//! A thread's own descriptor table. A thread that may sleep in the kernel past its process's
//! death (the device page store waits on a page lock that only a serving process releases)
//! keeps only the descriptors it uses, so that the process's other files — the state
//! directory's lock, the keeper's socket, the control socket — close when every other thread
//! has exited, and the next serving process can start.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Gives the calling thread a private copy of the descriptor table (`unshare(CLONE_FILES)`) and
/// closes in it every descriptor but `keep` and standard input, output and error.
///
/// The caller must not use, in this thread, any descriptor it did not name: those numbers are
/// closed here (though still open for every other thread).
pub fn keep_only(keep: &[BorrowedFd<'_>]) -> io::Result<()> {
    unshare_files()?;
    let kept = kept_numbers(keep);
    match close_all_but(&kept) {
        Ok(()) => Ok(()),
        // No close_range(2) (before Linux 5.9, or a filter without it): one at a time.
        Err(_) => close_listed_but(&kept),
    }
}

fn unshare_files() -> io::Result<()> {
    // SAFETY: unsharing the table affects this thread alone; other threads keep the shared
    // table. The caller of `keep_only` uses no descriptor here but those it keeps.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FILES) }?;
    Ok(())
}

fn kept_numbers(keep: &[BorrowedFd<'_>]) -> Vec<u32> {
    let mut kept: Vec<u32> = keep
        .iter()
        .filter_map(|fd| u32::try_from(fd.as_raw_fd()).ok())
        .chain([0, 1, 2])
        .collect();
    kept.sort_unstable();
    kept.dedup();
    kept
}

fn close_all_but(kept: &[u32]) -> io::Result<()> {
    let mut first = 0u32;
    for &fd in kept {
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX)
}

/// Closes every descriptor `/proc/thread-self/fd` lists but `kept`, in this thread's table.
fn close_listed_but(kept: &[u32]) -> io::Result<()> {
    let open: Vec<u32> = std::fs::read_dir("/proc/thread-self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| !kept.contains(fd)) {
        let Ok(raw) = i32::try_from(fd) else { continue };
        // SAFETY: a descriptor of this thread's private table (after unshare), which this
        // thread does not use again; the listing's own descriptor is closed already, and
        // closing a number no longer open fails harmlessly.
        let _ = unsafe { libc::close(raw) };
    }
    Ok(())
}

fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range(2) closes descriptors of this thread's private table only (after
    // unshare above), none of which this thread uses again.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_thread_with_its_own_table_keeps_what_it_names_and_closes_nothing_of_the_others() {
        let kept = std::fs::File::open("/proc/self/stat").unwrap();
        let other = std::fs::File::open("/proc/self/status").unwrap();
        let (kept_raw, other_raw) = (kept.as_raw_fd(), other.as_raw_fd());
        let open_here = std::thread::scope(|s| {
            s.spawn(|| {
                keep_only(&[kept.as_fd()]).unwrap();
                let open = |fd| rustix::io::fcntl_getfd(unsafe_borrow(fd)).is_ok();
                (open(kept_raw), open(other_raw))
            })
            .join()
            .unwrap()
        });
        assert_eq!(open_here, (true, false));
        assert!(
            rustix::io::fcntl_getfd(other.as_fd()).is_ok(),
            "still open here"
        );
    }

    #[test]
    fn without_close_range_the_listed_descriptors_are_closed_one_at_a_time() {
        let kept = std::fs::File::open("/proc/self/stat").unwrap();
        let other = std::fs::File::open("/proc/self/status").unwrap();
        let (kept_raw, other_raw) = (kept.as_raw_fd(), other.as_raw_fd());
        let open_here = std::thread::scope(|s| {
            s.spawn(|| {
                unshare_files().unwrap();
                close_listed_but(&kept_numbers(&[kept.as_fd()])).unwrap();
                let open = |fd| rustix::io::fcntl_getfd(unsafe_borrow(fd)).is_ok();
                (open(kept_raw), open(other_raw), open(2))
            })
            .join()
            .unwrap()
        });
        assert_eq!(open_here, (true, false, true));
        assert!(
            rustix::io::fcntl_getfd(other.as_fd()).is_ok(),
            "still open here"
        );
    }

    fn unsafe_borrow(fd: i32) -> BorrowedFd<'static> {
        // SAFETY: only used for fcntl(F_GETFD) probes, which fail harmlessly on a closed fd.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }
}
