//! Closing releases waiters: when the last outdated tracked watcher goes away, by `close(2)` or
//! by its process being killed, a `WAIT_WATCHERS` in another process returns 0; while another
//! outdated tracked watcher remains, the wait goes on.
//!
//! Process A (a probe) is the tracked watcher that lags; process B (another probe) waits with
//! no timeout. The test process only triggers and reads the daemon's status.

use std::time::Duration;

use sysgenid_e2e::{Daemon, DevFile, Identity, Probe, eventually};

/// Starts a probe that opens the device, turns tracking on and then waits for stdin: it will
/// lag behind the next bump. After stdin it closes the file and waits for stdin again.
fn lagging_tracked_watcher(daemon: &Daemon) -> Probe {
    Probe::lagging_tracked(daemon, &["close", "wait-stdin"])
}

/// Starts a probe that opens the device (up to date) and waits for the watchers, no timeout.
fn waiter(daemon: &Daemon) -> Probe {
    let mut b = Probe::spawn(
        Identity::Root,
        &["open", daemon.device_str(), "ro", "wait", "0"],
    );
    b.expect("open ok");
    b
}

fn trigger(daemon: &Daemon) {
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.trigger(0), Ok(0));
}

#[test]
fn closing_the_last_outdated_tracked_watcher_ends_a_wait_with_zero() {
    let daemon = Daemon::start();
    let mut a = lagging_tracked_watcher(&daemon);
    trigger(&daemon);
    assert_eq!(daemon.count("outdated"), 1);
    let mut b = waiter(&daemon);
    eventually("B's wait is pending", || daemon.count("pending_waits") == 1);
    a.resume();
    a.expect("wait-stdin ok");
    a.expect("close ok");
    b.expect("wait ok 0");
    assert_eq!(daemon.count("outdated"), 0);
    assert_eq!(daemon.count("pending_waits"), 0);
    b.finish();
    a.resume();
    a.finish();
}

#[test]
fn killing_the_last_outdated_tracked_watcher_ends_a_wait_with_zero() {
    let daemon = Daemon::start();
    let mut a = lagging_tracked_watcher(&daemon);
    trigger(&daemon);
    assert_eq!(daemon.count("outdated"), 1);
    let mut b = waiter(&daemon);
    eventually("B's wait is pending", || daemon.count("pending_waits") == 1);
    a.kill();
    b.expect("wait ok 0");
    assert_eq!(daemon.count("outdated"), 0);
    assert_eq!(daemon.count("pending_waits"), 0);
    b.finish();
}

#[test]
fn a_wait_continues_while_another_outdated_tracked_watcher_remains() {
    let daemon = Daemon::start();
    let mut a1 = lagging_tracked_watcher(&daemon);
    let mut a2 = lagging_tracked_watcher(&daemon);
    trigger(&daemon);
    assert_eq!(daemon.count("outdated"), 2);
    let mut b = waiter(&daemon);
    eventually("B's wait is pending", || daemon.count("pending_waits") == 1);
    a1.kill();
    eventually("A1's file is released", || daemon.count("outdated") == 1);
    assert_eq!(
        b.line_within(Duration::from_millis(200)),
        None,
        "the wait must go on while A2 is outdated"
    );
    assert_eq!(daemon.count("pending_waits"), 1);
    a2.kill();
    b.expect("wait ok 0");
    b.finish();
}

#[test]
fn a_dup_shares_the_watcher_and_only_the_last_close_releases_it() {
    let daemon = Daemon::start();
    let baseline = daemon.count("open_files");
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.track(true), Ok(0));
    let dup = rustix::io::dup(&f).expect("dup");
    assert_eq!(daemon.count("open_files"), baseline + 1, "one watcher");
    assert_eq!(f.trigger(0), Ok(0));
    drop(f);
    // The watcher lives on through the dup: acking through it clears the outdated count.
    assert_eq!(daemon.count("outdated"), 1);
    assert_eq!(rustix::io::write(&dup, &1u32.to_ne_bytes()), Ok(4));
    assert_eq!(daemon.count("outdated"), 0);
    assert_eq!(daemon.count("open_files"), baseline + 1);
    drop(dup);
    eventually("the last close releases the watcher", || {
        daemon.count("open_files") == baseline
    });
    assert_eq!(daemon.count("tracked"), 0);
}
