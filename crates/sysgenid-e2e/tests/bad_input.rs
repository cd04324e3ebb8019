//! Bad input and misuse: the device refuses it with the documented errno and its state is left
//! exactly as it was.
//!
//! - Closing a file while another thread waits on it: the in-flight `WAIT_WATCHERS` holds its
//!   own reference to the open file, so `close(2)` only drops the descriptor; the daemon sees a
//!   `FLUSH` but no `RELEASE`, the wait goes on, and a later bump ends it with `EINTR` (the
//!   waiter became outdated). Only then is the file released.
//! - Reads of 1 to 3 bytes: `EINVAL`, checked before the state (an up-to-date blocking file does
//!   not block), and an outdated file stays outdated.
//! - Writes of 3, 5, 4096 and 65536 bytes, even starting with the current value: `ENOBUFS`, and
//!   no acknowledgement happens.
//! - Trigger minimums above `u32::MAX`: `EINVAL`, the generation unchanged.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use sysgenid_e2e::{Daemon, DevFile, Errno, eventually, raw_ioctl, within};

const QUICK: Duration = Duration::from_secs(5);

#[test]
fn closing_the_fd_during_a_wait_keeps_the_wait_until_a_trigger_ends_it_with_eintr() {
    let daemon = Daemon::start();
    let lagging = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(lagging.track(true), Ok(0));
    assert_eq!(lagging.trigger(0), Ok(0));
    let baseline = daemon.count("open_files");
    let waiter = DevFile::rw(&daemon.device);
    let fd = waiter.raw_fd();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(raw_ioctl(fd, sysgenid_abi::SYSGENID_WAIT_WATCHERS, 0));
    });
    eventually("the wait is pending", || daemon.count("pending_waits") == 1);
    // Close the descriptor from this thread while the other one waits on it.
    within("close(2) returns", QUICK, move || drop(waiter));
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(200)).ok(),
        None,
        "the wait must go on after close"
    );
    let status = daemon.status();
    assert_eq!(status["pending_waits"], 1, "{status}");
    assert_eq!(
        status["open_files"],
        baseline + 1,
        "the in-flight call holds the file: {status}"
    );
    assert_eq!(lagging.trigger(0), Ok(0));
    let result = rx.recv_timeout(QUICK).expect("the wait ends");
    assert_eq!(result, Err(Errno::INTR));
    eventually("the closed file is released", || {
        daemon.count("open_files") == baseline
    });
    assert_eq!(daemon.count("pending_waits"), 0);
}

#[test]
fn reads_of_1_to_3_bytes_are_einval_without_blocking_and_leave_the_file_outdated() {
    let daemon = Daemon::start();
    let f = Arc::new(DevFile::rw(&daemon.device));
    // Blocking and up to date: the length check comes first, so no blocking.
    let g = Arc::clone(&f);
    let results = within("short blocking reads", QUICK, move || {
        (1..=3).map(|len| g.read_len(len)).collect::<Vec<_>>()
    });
    assert_eq!(results, vec![Err(Errno::INVAL); 3]);
    assert_eq!(daemon.count("pending_reads"), 0);
    assert_eq!(f.track(true), Ok(0));
    assert_eq!(f.trigger(0), Ok(0));
    for len in 1..=3 {
        assert_eq!(f.read_len(len), Err(Errno::INVAL), "len {len}");
    }
    assert_eq!(daemon.count("outdated"), 1);
    assert_eq!(f.read(), Ok(1));
}

#[test]
fn writes_of_the_wrong_length_are_enobufs_and_acknowledge_nothing() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.track(true), Ok(0));
    assert_eq!(f.trigger(0), Ok(0));
    for len in [3usize, 5, 4096, 65536] {
        // Begin with the current value, so only the length is wrong.
        let mut data = vec![0u8; len];
        let n = len.min(4);
        data[..n].copy_from_slice(&1u32.to_ne_bytes()[..n]);
        assert_eq!(f.write_bytes(&data), Err(Errno::NOBUFS), "{len} bytes");
        assert_eq!(daemon.count("outdated"), 1, "after {len} bytes");
    }
    assert_eq!(f.read(), Ok(1), "still outdated");
    assert_eq!(f.ack(1), Ok(4));
    assert_eq!(daemon.count("outdated"), 0);
}

#[test]
fn trigger_minimums_above_u32_max_are_einval_and_change_nothing() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    for min in [
        0x1_0000_0000u64,
        0x1_0000_0005,
        0x8000_0000_0000_0000,
        u64::MAX,
    ] {
        assert_eq!(f.trigger(min), Err(Errno::INVAL), "min {min:#x}");
    }
    let status = daemon.status();
    assert_eq!(status["generation"], 0);
    assert!(status["last_bump"].is_null(), "{status}");
    assert_eq!(f.read(), Err(Errno::AGAIN), "no bump happened");
}
