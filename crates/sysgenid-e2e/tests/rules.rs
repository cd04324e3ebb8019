//! Conformance, rule by rule: every behaviour of `docs/abi.md` and every errno it names, reached
//! through a real mounted `sysgenidd` with real syscalls (`read`, `write`, `ioctl`) from the test
//! process and, where another process matters, from `sysgenid-probe` processes.
//!
//! Covered: read of 0 bytes, of 1 to 3 bytes (`EINVAL`), non-blocking read when up to date
//! (`EAGAIN`), outdated reads returning the current value until acknowledged, writes of the wrong
//! length (`ENOBUFS`) or value (`EINVAL`), the ack, `SET_WATCHER_TRACKING` on and off,
//! `WAIT_WATCHERS` (`ETIME`, success, `EINTR` at once and `EINTR` from another process's trigger),
//! `TRIGGER_GEN_UPDATE` minimum handling (`EINVAL` above `u32::MAX`, `max(min, current + 1)`,
//! `0x80000000`, `EOVERFLOW` at `u32::MAX`) and unknown ioctls (`EINVAL`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sysgenid_e2e::{Daemon, DevFile, Errno, Identity, Probe, eventually, within};

const QUICK: Duration = Duration::from_secs(5);

/// A tracked watcher made outdated by its own trigger (the generation becomes 1 on a fresh
/// daemon).
fn outdated_tracked_watcher(daemon: &Daemon) -> DevFile {
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.track(true), Ok(0));
    assert_eq!(f.trigger(0), Ok(0));
    assert_eq!(daemon.count("outdated"), 1);
    f
}

#[test]
fn read_of_zero_bytes_returns_zero_bytes_and_changes_nothing() {
    let daemon = Daemon::start();
    // Blocking and up to date: a 0-byte read must not block.
    let f = Arc::new(DevFile::rw(&daemon.device));
    let g = Arc::clone(&f);
    let got = within("0-byte blocking read", QUICK, move || g.read_len(0));
    assert_eq!(got, Ok(vec![]));
    assert_eq!(f.trigger(0), Ok(0));
    // Outdated: still 0 bytes, and the file stays outdated.
    assert_eq!(f.read_len(0), Ok(vec![]));
    assert_eq!(f.read(), Ok(1));
}

#[test]
fn reads_of_one_to_three_bytes_are_einval() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    // Up to date: the length is checked before the state, so EINVAL and not EAGAIN.
    for len in 1..=3 {
        assert_eq!(f.read_len(len), Err(Errno::INVAL), "len {len}, up to date");
    }
    assert_eq!(f.trigger(0), Ok(0));
    for len in 1..=3 {
        assert_eq!(f.read_len(len), Err(Errno::INVAL), "len {len}, outdated");
    }
}

#[test]
fn nonblocking_read_when_up_to_date_is_eagain() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.read(), Err(Errno::AGAIN));
    assert_eq!(f.read_len(4096), Err(Errno::AGAIN));
    assert_eq!(daemon.count("pending_reads"), 0);
}

#[test]
fn outdated_read_returns_the_current_value_until_acked() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    let other = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.trigger(0), Ok(0));
    for _ in 0..3 {
        assert_eq!(f.read(), Ok(1));
    }
    // A larger buffer still gets exactly the 4 bytes of the generation.
    assert_eq!(f.read_len(64), Ok(1u32.to_ne_bytes().to_vec()));
    // Another bump before the ack: the read gives the value current now.
    assert_eq!(other.trigger(0), Ok(0));
    assert_eq!(f.read(), Ok(2));
    assert_eq!(f.read(), Ok(2));
    assert_eq!(f.ack(2), Ok(4));
    assert_eq!(f.read(), Err(Errno::AGAIN));
}

#[test]
fn writes_of_3_5_and_4096_bytes_are_enobufs() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    for len in [3, 5, 4096] {
        assert_eq!(
            f.write_bytes(&vec![0u8; len]),
            Err(Errno::NOBUFS),
            "{len} bytes, up to date"
        );
    }
    assert_eq!(f.trigger(0), Ok(0));
    for len in [3, 5, 4096] {
        let mut data = vec![0u8; len];
        let n = len.min(4);
        data[..n].copy_from_slice(&1u32.to_ne_bytes()[..n]);
        assert_eq!(
            f.write_bytes(&data),
            Err(Errno::NOBUFS),
            "{len} bytes, outdated"
        );
    }
}

#[test]
fn write_of_a_value_other_than_the_current_one_is_einval() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    // Up to date at 0: 1 is not current.
    assert_eq!(f.ack(1), Err(Errno::INVAL));
    assert_eq!(f.trigger(0), Ok(0));
    // Outdated at 1: neither the old acknowledged value nor a future one is accepted.
    assert_eq!(f.ack(0), Err(Errno::INVAL));
    assert_eq!(f.ack(2), Err(Errno::INVAL));
    assert_eq!(f.ack(u32::MAX), Err(Errno::INVAL));
    assert_eq!(f.read(), Ok(1), "still outdated after refused acks");
}

#[test]
fn write_of_the_current_value_acks_and_returns_4() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    // An ack of the current value while up to date is accepted too.
    assert_eq!(f.ack(0), Ok(4));
    assert_eq!(f.track(true), Ok(0));
    assert_eq!(f.trigger(0), Ok(0));
    assert_eq!(daemon.count("outdated"), 1);
    assert_eq!(f.ack(1), Ok(4));
    assert_eq!(f.read(), Err(Errno::AGAIN));
    assert!(f.poll(Duration::ZERO).unwrap().is_empty());
    assert_eq!(daemon.count("outdated"), 0);
    // Acking again is harmless.
    assert_eq!(f.ack(1), Ok(4));
    assert_eq!(daemon.count("outdated"), 0);
}

#[test]
fn set_watcher_tracking_turns_on_and_off_idempotently() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(daemon.count("tracked"), 0);
    assert_eq!(f.track(true), Ok(0));
    assert_eq!(daemon.count("tracked"), 1);
    // Any nonzero argument means on; on twice is one tracked watcher.
    assert_eq!(
        f.ioctl(sysgenid_abi::SYSGENID_SET_WATCHER_TRACKING, 7),
        Ok(0)
    );
    assert_eq!(daemon.count("tracked"), 1);
    assert_eq!(f.trigger(0), Ok(0));
    assert_eq!(daemon.count("outdated"), 1);
    assert_eq!(f.track(false), Ok(0));
    assert_eq!(daemon.count("tracked"), 0);
    assert_eq!(
        daemon.count("outdated"),
        0,
        "an untracked file is not counted"
    );
    assert_eq!(f.track(false), Ok(0));
    assert_eq!(daemon.count("tracked"), 0);
    // Turning tracking on while outdated counts the file as outdated at once.
    assert_eq!(f.track(true), Ok(0));
    assert_eq!(daemon.count("outdated"), 1);
}

#[test]
fn wait_watchers_times_out_with_etime() {
    let daemon = Daemon::start();
    let _lagging = outdated_tracked_watcher(&daemon);
    let waiter = Arc::new(DevFile::rw(&daemon.device));
    let w = Arc::clone(&waiter);
    let (result, elapsed) = within("a 150 ms wait", QUICK, move || {
        let start = Instant::now();
        (w.wait_watchers(150), start.elapsed())
    });
    assert_eq!(result, Err(Errno::TIME));
    assert!(
        elapsed >= Duration::from_millis(150),
        "returned after {elapsed:?}"
    );
    assert_eq!(daemon.count("pending_waits"), 0);
}

#[test]
fn wait_watchers_returns_zero_at_once_when_no_tracked_watcher_is_outdated() {
    let daemon = Daemon::start();
    // An outdated file that is not tracked does not hold a wait.
    let untracked = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(untracked.trigger(0), Ok(0));
    let up_to_date_tracked = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(up_to_date_tracked.track(true), Ok(0));
    let waiter = Arc::new(DevFile::rw(&daemon.device));
    let w = Arc::clone(&waiter);
    let result = within("a wait with nobody outdated", QUICK, move || {
        w.wait_watchers(0)
    });
    assert_eq!(result, Ok(0));
}

#[test]
fn wait_watchers_returns_zero_when_the_last_outdated_tracked_watcher_acks() {
    let daemon = Daemon::start();
    let lagging = outdated_tracked_watcher(&daemon);
    let waiter = Arc::new(DevFile::rw(&daemon.device));
    let w = Arc::clone(&waiter);
    let handle = std::thread::spawn(move || w.wait_watchers(0));
    eventually("the wait is pending", || daemon.count("pending_waits") == 1);
    assert_eq!(lagging.ack(1), Ok(4));
    let result = within("the wait ends", QUICK, move || handle.join().unwrap());
    assert_eq!(result, Ok(0));
    assert_eq!(daemon.count("pending_waits"), 0);
}

#[test]
fn wait_watchers_is_eintr_at_once_when_the_caller_is_outdated() {
    let daemon = Daemon::start();
    // The caller is itself an outdated tracked watcher: no wait could ever succeed.
    let lagging = Arc::new(outdated_tracked_watcher(&daemon));
    let w = Arc::clone(&lagging);
    let result = within("a wait by an outdated caller", QUICK, move || {
        w.wait_watchers(0)
    });
    assert_eq!(result, Err(Errno::INTR));
    // Outdated but untracked, with no tracked watcher outdated at all: still EINTR.
    assert_eq!(lagging.track(false), Ok(0));
    let plain = Arc::new(DevFile::rw(&daemon.device));
    assert_eq!(plain.trigger(0), Ok(0));
    let w = Arc::clone(&plain);
    let result = within("a wait by an outdated untracked caller", QUICK, move || {
        w.wait_watchers(0)
    });
    assert_eq!(result, Err(Errno::INTR));
    assert_eq!(daemon.count("pending_waits"), 0);
}

#[test]
fn wait_watchers_is_eintr_when_another_process_triggers_during_the_wait() {
    let daemon = Daemon::start();
    let _lagging = outdated_tracked_watcher(&daemon);
    let waiter = Arc::new(DevFile::rw(&daemon.device));
    let w = Arc::clone(&waiter);
    let handle = std::thread::spawn(move || w.wait_watchers(0));
    eventually("the wait is pending", || daemon.count("pending_waits") == 1);
    let out = Probe::run(
        Identity::Root,
        &["open", daemon.device_str(), "ro", "trigger", "0"],
    );
    assert_eq!(out, ["open ok", "trigger ok 0"]);
    let result = within("the wait ends", QUICK, move || handle.join().unwrap());
    assert_eq!(result, Err(Errno::INTR));
    assert_eq!(daemon.count("pending_waits"), 0);
    assert_eq!(waiter.read_len(4), Ok(2u32.to_ne_bytes().to_vec()));
}

#[test]
fn trigger_with_min_above_u32_max_is_einval_and_changes_nothing() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.trigger(3), Ok(0));
    assert_eq!(f.ack(3), Ok(4));
    assert_eq!(f.trigger(0x1_0000_0005), Err(Errno::INVAL));
    assert_eq!(daemon.generation(), 3);
    assert_eq!(f.read(), Err(Errno::AGAIN), "no bump happened");
}

#[test]
fn trigger_with_min_at_or_below_current_sets_current_plus_one() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.trigger(9), Ok(0));
    assert_eq!(daemon.generation(), 9);
    // "And what if it's 9?": 8 gives 10.
    assert_eq!(f.trigger(8), Ok(0));
    assert_eq!(daemon.generation(), 10);
    assert_eq!(f.trigger(10), Ok(0));
    assert_eq!(daemon.generation(), 11);
    assert_eq!(f.trigger(0), Ok(0));
    assert_eq!(daemon.generation(), 12);
    assert_eq!(f.read(), Ok(12));
}

#[test]
fn trigger_with_min_above_current_sets_min() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.trigger(5), Ok(0));
    assert_eq!(f.trigger(8), Ok(0));
    assert_eq!(daemon.generation(), 8);
    assert_eq!(f.read(), Ok(8));
}

#[test]
fn trigger_with_min_0x80000000_sets_it() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.trigger(0x8000_0000), Ok(0));
    assert_eq!(daemon.generation(), 0x8000_0000);
    assert_eq!(f.read(), Ok(0x8000_0000));
    assert_eq!(f.trigger(0), Ok(0));
    assert_eq!(f.read(), Ok(0x8000_0001));
    assert_eq!(f.trigger(0x8000_0000), Ok(0));
    assert_eq!(f.read(), Ok(0x8000_0002));
    assert_eq!(f.trigger(0xC000_0000), Ok(0));
    assert_eq!(f.read(), Ok(0xC000_0000));
}

#[test]
fn trigger_at_u32_max_is_eoverflow_and_changes_nothing() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.trigger(0xFFFF_FFFF), Ok(0));
    assert_eq!(daemon.generation(), u64::from(u32::MAX));
    assert_eq!(f.ack(u32::MAX), Ok(4));
    assert_eq!(f.trigger(0), Err(Errno::OVERFLOW));
    assert_eq!(f.trigger(0xFFFF_FFFF), Err(Errno::OVERFLOW));
    let status = daemon.status();
    assert_eq!(status["generation"], u64::from(u32::MAX));
    assert_eq!(status["failed_bumps"], 2);
    assert_eq!(status["last_failure"]["error"], "EOVERFLOW");
    assert_eq!(f.read(), Err(Errno::AGAIN), "no bump happened");
}

#[test]
fn unknown_ioctls_are_einval() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    for cmd in [0xE400, 0xE404, 0xE4FF, 0xE301, 0xE501, 0x4242] {
        assert_eq!(f.ioctl(cmd, 1), Err(Errno::INVAL), "ioctl {cmd:#x}");
    }
    let status = daemon.status();
    assert_eq!(status["generation"], 0);
    assert_eq!(status["tracked"], 0);
    assert_eq!(status["pending_waits"], 0);
}

#[test]
fn wait_watchers_with_a_huge_timeout_does_not_time_out_early() {
    let daemon = Daemon::start();
    let lagging = outdated_tracked_watcher(&daemon);
    // u64::MAX, 2^63, and the smallest value whose nanoseconds overflow a u64: the driver's
    // multiplication would wrap these to short or zero deadlines.
    let timeouts = [u64::MAX, 1 << 63, u64::MAX / 1_000_000 + 1];
    let (tx, rx) = std::sync::mpsc::channel();
    for ms in timeouts {
        let waiter = DevFile::rw(&daemon.device);
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((ms, waiter.wait_watchers(ms)));
        });
    }
    eventually("every wait is pending", || {
        daemon.count("pending_waits") == timeouts.len() as u64
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(200)).ok(),
        None,
        "no wait may end before the watcher acks"
    );
    assert_eq!(lagging.ack(1), Ok(4));
    for _ in timeouts {
        let (ms, result) = rx.recv_timeout(QUICK).expect("every wait ends");
        assert_eq!(result, Ok(0), "timeout {ms}");
    }
}

#[test]
fn nonblocking_mode_set_with_fcntl_after_open_gives_eagain() {
    let daemon = Daemon::start();
    let f = Arc::new(DevFile::rw(&daemon.device));
    rustix::fs::fcntl_setfl(&*f, rustix::fs::OFlags::NONBLOCK).expect("F_SETFL");
    let g = Arc::clone(&f);
    let result = within("a read after F_SETFL O_NONBLOCK", QUICK, move || g.read());
    assert_eq!(result, Err(Errno::AGAIN));
    assert_eq!(daemon.count("pending_reads"), 0);
}
