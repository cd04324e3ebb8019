//! `Watcher`: changes, nonblocking reads, acknowledgements, tracking, waits and triggers
//! against a real daemon.

mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use sysgenid::{Change, Error, Watcher, WatcherOptions};
use sysgenid_e2e::{Daemon, DevFile, Identity, Probe, eventually, within};

use common::{paths, trigger_from_another_process};

const LONG: Duration = Duration::from_secs(20);

#[test]
fn next_change_is_woken_by_a_trigger_from_another_thread() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher = Watcher::open(&paths).unwrap();
    assert_eq!(watcher.last_seen(), Some(0));
    let waiter = std::thread::spawn(move || {
        let change = watcher.next_change().unwrap();
        (watcher, change)
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(!waiter.is_finished(), "blocks while up to date");
    sysgenid::trigger_at(&paths, None).unwrap();
    let (watcher, change) = within("next_change", LONG, move || waiter.join().unwrap());
    assert_eq!(
        change,
        Change {
            generation: 1,
            reopened: false
        }
    );
    assert_eq!(watcher.last_seen(), Some(1));
}

#[test]
fn next_change_is_woken_by_a_trigger_from_another_process() {
    let daemon = Daemon::start();
    let mut watcher = Watcher::open(&paths(&daemon)).unwrap();
    let waiter = std::thread::spawn(move || watcher.next_change().unwrap());
    std::thread::sleep(Duration::from_millis(100));
    trigger_from_another_process(&daemon, 7);
    let change = within("next_change", LONG, move || waiter.join().unwrap());
    assert_eq!(change.generation, 7);
}

#[test]
fn try_read_is_none_while_up_to_date_and_repeats_a_change_until_acked() {
    let daemon = Daemon::start();
    let mut watcher = Watcher::open(&paths(&daemon)).unwrap();
    assert_eq!(watcher.try_read().unwrap(), None);
    sysgenid::trigger_at(&paths(&daemon), None).unwrap();
    let change = watcher.try_read().unwrap().expect("outdated");
    assert_eq!(change.generation, 1);
    assert_eq!(
        watcher.try_read().unwrap(),
        Some(change),
        "again until acked"
    );
    assert_eq!(watcher.next_change().unwrap(), change, "and at once");
    watcher.ack(1).unwrap();
    assert_eq!(watcher.try_read().unwrap(), None);
}

#[test]
fn an_ack_of_another_value_is_refused_with_not_current() {
    let daemon = Daemon::start();
    let mut watcher = Watcher::open(&paths(&daemon)).unwrap();
    sysgenid::trigger_at(&paths(&daemon), None).unwrap();
    let err = watcher.ack(0).unwrap_err();
    assert!(
        matches!(err, Error::NotCurrent { generation: 0 }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("not the current generation"),
        "{err}"
    );
    assert_eq!(err.raw_os_error(), Some(libc_einval()));
    assert_eq!(watcher.try_read().unwrap().map(|c| c.generation), Some(1));
    watcher.ack(1).unwrap();
}

fn libc_einval() -> i32 {
    sysgenid_abi::Errno::Inval.raw()
}

#[test]
fn a_read_only_watcher_cannot_track_or_ack() {
    let daemon = Daemon::start();
    let mut watcher =
        Watcher::open_with(&paths(&daemon), WatcherOptions::new().read_only()).unwrap();
    assert!(!watcher.is_writable());
    let err = watcher.set_tracking(true).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("opened read-only"), "{err}");
    let err = watcher.ack(0).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    assert!(!watcher.is_tracking());
}

#[test]
fn mark_handled_lets_a_read_only_watcher_wait_for_the_next_change() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher = Watcher::open_with(&paths, WatcherOptions::new().read_only()).unwrap();
    let fd = watcher.as_raw_fd();
    sysgenid::trigger_at(&paths, None).unwrap();
    assert_eq!(watcher.next_change().unwrap().generation, 1);
    assert_eq!(
        watcher.try_read().unwrap().unwrap().generation,
        1,
        "still outdated"
    );
    watcher.mark_handled(1).unwrap();
    assert_eq!(watcher.try_read().unwrap(), None, "a fresh file is current");
    assert_eq!(watcher.as_raw_fd(), fd, "the same descriptor number");
    eventually("no outdated file left", || {
        daemon.status()["outdated_files"] == serde_json::json!([])
    });
    // A bump after the handled change but before the fresh open is reported, once.
    sysgenid::trigger_at(&paths, None).unwrap();
    assert_eq!(watcher.next_change().unwrap().generation, 2);
    sysgenid::trigger_at(&paths, None).unwrap();
    watcher.mark_handled(2).unwrap();
    let change = watcher
        .try_read()
        .unwrap()
        .expect("the bump to 3 is pending");
    assert_eq!(change.generation, 3);
    watcher.mark_handled(3).unwrap();
    assert_eq!(watcher.try_read().unwrap(), None);
}

#[test]
fn mark_handled_acknowledges_on_a_writable_watcher() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher = Watcher::open_with(&paths, WatcherOptions::new().tracking(true)).unwrap();
    sysgenid::trigger_at(&paths, None).unwrap();
    assert_eq!(daemon.count("outdated"), 1);
    let change = watcher.next_change().unwrap();
    watcher.mark_handled(change.generation).unwrap();
    assert_eq!(daemon.count("outdated"), 0);
    assert_eq!(watcher.try_read().unwrap(), None);
}

#[test]
fn the_fd_polls_readable_while_outdated() {
    let daemon = Daemon::start();
    let mut watcher = Watcher::open(&paths(&daemon)).unwrap();
    let poll = |w: &Watcher| {
        let mut fds = [PollFd::new(w, PollFlags::IN)];
        let ts = Timespec::try_from(Duration::from_millis(50)).unwrap();
        rustix::event::poll(&mut fds, Some(&ts)).unwrap();
        fds[0].revents().contains(PollFlags::IN)
    };
    assert!(!poll(&watcher));
    sysgenid::trigger_at(&paths(&daemon), None).unwrap();
    assert!(poll(&watcher));
    assert_eq!(watcher.as_fd().as_raw_fd(), watcher.as_raw_fd());
    watcher.ack(1).unwrap();
    assert!(!poll(&watcher));
}

#[test]
fn tracking_shows_in_status_and_wait_watchers_waits_for_the_ack() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut tracked = Watcher::open(&paths).unwrap();
    tracked.set_tracking(true).unwrap();
    assert!(tracked.is_tracking());
    assert_eq!(daemon.count("tracked"), 1);
    // Nobody is outdated: the wait returns at once.
    within("wait_watchers", LONG, {
        let paths = paths.clone();
        move || sysgenid::wait_watchers_at(&paths, Some(Duration::from_secs(5))).unwrap()
    });

    sysgenid::trigger_at(&paths, None).unwrap();
    let waiter = std::thread::spawn({
        let paths = paths.clone();
        move || sysgenid::wait_watchers_at(&paths, None)
    });
    eventually("the wait is pending", || daemon.count("pending_waits") == 1);
    assert!(!waiter.is_finished());
    let change = tracked.next_change().unwrap();
    tracked.ack(change.generation).unwrap();
    within("wait_watchers", LONG, move || waiter.join().unwrap()).unwrap();

    tracked.set_tracking(false).unwrap();
    assert_eq!(daemon.count("tracked"), 0);
}

#[test]
fn wait_watchers_times_out_naming_the_outdated_count() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let _lagging = Watcher::open_with(&paths, WatcherOptions::new().tracking(true)).unwrap();
    sysgenid::trigger_at(&paths, None).unwrap();
    let err = sysgenid::wait_watchers_at(&paths, Some(Duration::from_millis(100))).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                outdated: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("1 tracked watcher(s) still outdated"),
        "{err}"
    );
    assert_eq!(err.raw_os_error(), Some(sysgenid_abi::Errno::Time.raw()));
}

#[test]
fn an_outdated_caller_gets_watcher_outdated_from_its_own_wait() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut overseer = Watcher::open(&paths).unwrap();
    sysgenid::trigger_at(&paths, None).unwrap();
    let err = overseer
        .wait_watchers(Some(Duration::from_secs(5)))
        .unwrap_err();
    assert!(matches!(err, Error::WatcherOutdated), "{err:?}");
    assert!(err.to_string().contains("itself outdated"), "{err}");
    // After acking, the same watcher can wait.
    let change = overseer.try_read().unwrap().unwrap();
    overseer.ack(change.generation).unwrap();
    overseer
        .wait_watchers(Some(Duration::from_secs(5)))
        .unwrap();
}

#[test]
fn a_bump_during_its_own_wait_interrupts_the_watcher_but_not_the_free_function() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut lagging = Watcher::open_with(&paths, WatcherOptions::new().tracking(true)).unwrap();
    sysgenid::trigger_at(&paths, None).unwrap();

    let mut overseer = Watcher::open(&paths).unwrap();
    let waiter = std::thread::spawn(move || overseer.wait_watchers(None));
    let free = std::thread::spawn({
        let paths = paths.clone();
        move || sysgenid::wait_watchers_at(&paths, None)
    });
    eventually("both waits pending", || daemon.count("pending_waits") == 2);
    sysgenid::trigger_at(&paths, None).unwrap();
    let err = within("the watcher's wait", LONG, move || waiter.join().unwrap()).unwrap_err();
    assert!(matches!(err, Error::WatcherOutdated), "{err:?}");
    // The free function acked the new generation and waits again.
    eventually("the free wait is pending again", || {
        daemon.count("pending_waits") == 1
    });
    assert!(!free.is_finished());
    let change = lagging.try_read().unwrap().unwrap();
    assert_eq!(change.generation, 2);
    lagging.ack(2).unwrap();
    within("the free wait", LONG, move || free.join().unwrap()).unwrap();
}

#[test]
fn trigger_on_a_watcher_takes_a_minimum() {
    let daemon = Daemon::start();
    let mut watcher = Watcher::open(&paths(&daemon)).unwrap();
    watcher.trigger(Some(8)).unwrap();
    assert_eq!(watcher.next_change().unwrap().generation, 8);
    watcher.trigger(Some(3)).unwrap();
    assert_eq!(
        watcher.next_change().unwrap().generation,
        9,
        "a trigger always increments"
    );
    watcher.trigger(None).unwrap();
    assert_eq!(watcher.next_change().unwrap().generation, 10);
}

#[test]
fn trigger_at_u32_max_overflows() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    sysgenid::trigger_at(&paths, Some(u32::MAX)).unwrap();
    let err = sysgenid::trigger_at(&paths, None).unwrap_err();
    assert!(matches!(err, Error::Overflow), "{err:?}");
    assert!(err.to_string().contains("u32::MAX"), "{err}");
}

#[test]
fn a_watcher_opened_by_a_process_lags_until_it_acks() {
    // A watcher in another process, blocked in the ABI's own read, wakes with ours.
    let daemon = Daemon::start();
    let mut probe = Probe::spawn(
        Identity::Root,
        &["open", daemon.device_str(), "rw", "ready", "read", "4"],
    );
    probe.expect("open ok");
    probe.expect("ready ok");
    let mut watcher = Watcher::open(&paths(&daemon)).unwrap();
    watcher.trigger(None).unwrap();
    probe.expect("read ok 1");
    assert_eq!(watcher.next_change().unwrap().generation, 1);
    let raw = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(raw.read(), Err(sysgenid_e2e::Errno::AGAIN));
}
