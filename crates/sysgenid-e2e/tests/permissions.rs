//! What a user without write permission may do with the device.
//!
//! Without a `sysgenid` group the device is mode 0644, owned by root, so `nobody` (run as a probe
//! under `setpriv`, never by changing the test process's credentials) can open it read-only
//! only. Such a file may read, poll and wait, but can never acknowledge: `write(2)` needs a
//! writable file. The writer group is documented as the group whose members may "open the
//! device for writing (ack and track)" (`sysgenid_abi::WRITER_GROUP`, `sysgenidd --group`), so
//! a file that cannot acknowledge must not become a tracked watcher either: otherwise any local
//! user could hold the overseer's `WAIT_WATCHERS` for as long as it keeps the file open.

use sysgenid_e2e::{Daemon, DevFile, Identity, Probe};

#[test]
fn nobody_with_a_read_only_file_may_read_poll_and_wait_but_not_ack() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    let mut probe = Probe::spawn(
        Identity::Nobody,
        &[
            "open",
            daemon.device_str(),
            "ro",
            "wait-stdin",
            "read",
            "4",
            "poll",
            "0",
            "ack",
            "wait",
            "0",
        ],
    );
    probe.expect("open ok");
    let root = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(root.trigger(0), Ok(0));
    probe.resume();
    probe.expect("wait-stdin ok");
    probe.expect("read ok 1");
    probe.expect(&format!("poll ok {}", sysgenid_abi::POLL_OUTDATED));
    probe.expect("ack err EBADF");
    // Outdated itself, so its wait is EINTR at once, like any outdated caller.
    probe.expect("wait err EINTR");
    probe.finish();
}

#[test]
fn a_read_only_file_cannot_become_a_tracked_watcher() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    let mut probe = Probe::spawn(
        Identity::Nobody,
        &[
            "open",
            daemon.device_str(),
            "ro",
            "track",
            "1",
            "wait-stdin",
        ],
    );
    probe.expect("open ok");
    let track = probe.line();
    assert_eq!(track, "track err EBADF", "tracking needs a writable file");
    assert_eq!(
        daemon.count("tracked"),
        0,
        "nobody's read-only file became a tracked watcher ({track}); it can never ack"
    );
    // And so it cannot hold up the overseer after a bump.
    let overseer = DevFile::rw(&daemon.device);
    assert_eq!(overseer.trigger(0), Ok(0));
    assert_eq!(overseer.ack(1), Ok(4));
    let started = std::time::Instant::now();
    let result = overseer.wait_watchers(300);
    assert_eq!(
        result,
        Ok(0),
        "WAIT_WATCHERS held by a file that cannot ack (after {:?})",
        started.elapsed()
    );
    probe.resume();
    probe.finish();
}

#[test]
fn a_member_of_the_writer_group_may_track_and_ack() {
    // `nogroup` is gid 65534, the group `nobody` runs with under setpriv.
    let daemon = Daemon::start_with(sysgenid_e2e::DaemonOptions {
        args: vec!["--group".into(), "nogroup".into()],
        ..Default::default()
    });
    daemon.allow_other_users();
    let meta = std::fs::metadata(&daemon.device).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::mode(&meta) & 0o777, 0o664);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534);
    let mut probe = Probe::spawn(
        Identity::Nobody,
        &[
            "open",
            daemon.device_str(),
            "rw",
            "track",
            "1",
            "wait-stdin",
            "read",
            "4",
            "ack",
        ],
    );
    probe.expect("open ok");
    probe.expect("track ok 0");
    assert_eq!(daemon.count("tracked"), 1);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    assert_eq!(daemon.count("outdated"), 1);
    probe.resume();
    probe.expect("wait-stdin ok");
    probe.expect("read ok 1");
    probe.expect("ack ok 4");
    sysgenid_e2e::eventually("the member's ack counts", || daemon.count("outdated") == 0);
    probe.finish();
}

/// Access mode 3 (`open(dev, 3)`, "ioctl only") can neither read nor write, so it can never
/// acknowledge: it must not become a tracked watcher that would hold every wait for ever.
#[test]
fn an_ioctl_only_open_is_not_a_writer() {
    let daemon = Daemon::start();
    let three = rustix::fs::OFlags::from_bits_retain(3);
    let f = DevFile::open(&daemon.device, three).expect("root may open with access mode 3");
    assert_eq!(f.track(true), Err(sysgenid_e2e::Errno::BADF));
    assert_eq!(daemon.status()["tracked"], 0);
}
