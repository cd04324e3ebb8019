//! A second `sysgenidd` on the same device and state directory takes the live device over: the
//! mount, every open file (tracked or not, with what it acknowledged), every mapping and every
//! blocked call carry on, and no client sees an error.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::fs::OFlags;
use sysgenid_e2e::{
    Daemon, DaemonOptions, DevFile, Errno, Identity, Mapper, Probe, eventually, next_format_daemon,
    read_lines, workspace_binary,
};

const LONG: Duration = Duration::from_secs(10);

/// `sysgenid watch --json`: a `Watcher` in a process of its own.
fn watcher(daemon: &Daemon) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(workspace_binary("sysgenid"))
        .args(["--json", "watch"])
        .env("SYSGENID_DEVICE", &daemon.device)
        .env("SYSGENID_STATE_DIR", &daemon.state_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = read_lines(child.stdout.take().unwrap());
    (child, lines)
}

fn epoll_on(file: &DevFile) -> rustix::fd::OwnedFd {
    let ep = epoll::create(CreateFlags::CLOEXEC).unwrap();
    epoll::add(&ep, file, EventData::new_u64(1), EventFlags::IN).unwrap();
    ep
}

fn epoll_ready(ep: &rustix::fd::OwnedFd, timeout: Duration) -> usize {
    let mut events = Vec::with_capacity(4);
    let ts = rustix::event::Timespec::try_from(timeout).unwrap();
    epoll::wait(ep, rustix::buffer::spare_capacity(&mut events), Some(&ts)).unwrap();
    events.len()
}

#[test]
fn a_second_daemon_takes_over_and_no_client_notices() {
    let daemon = Daemon::start();
    let device = daemon.device.clone();
    // A tracked watcher that never acknowledges: the laggard a wait is held by.
    let lagger = Probe::spawn(
        Identity::Root,
        &[
            "open",
            device.to_str().unwrap(),
            "rw",
            "track",
            "1",
            "wait-stdin",
        ],
    );
    let mut lagger = lagger;
    lagger.expect("open ok");
    lagger.expect("track ok 0");
    let mapper = Mapper::start(&device);
    assert_eq!(mapper.first, 0);
    let (mut watch, watch_lines) = watcher(&daemon);
    eventually(
        "the lagger, the mapper and the watcher have the device open",
        || daemon.status()["open_files"] == 3,
    );
    let acked = DevFile::rw(&device);
    acked.track(true).unwrap();
    DevFile::rw(&device).trigger(0).unwrap();
    assert_eq!(mapper.next_change(LONG), Some(1));
    assert!(
        watch_lines
            .recv_timeout(LONG)
            .unwrap()
            .contains("\"generation\":1")
    );
    assert_eq!(acked.read(), Ok(1));
    acked.ack(1).unwrap();
    // Blocked calls: a read, an epoll registration, a wait held by the lagger.
    let reader = Probe::spawn(
        Identity::Root,
        &["open", device.to_str().unwrap(), "ro", "read", "4"],
    );
    let mut reader = reader;
    reader.expect("open ok");
    let polled = DevFile::open(&device, OFlags::RDONLY).unwrap();
    let ep = epoll_on(&polled);
    assert_eq!(epoll_ready(&ep, Duration::ZERO), 0);
    let waiter = Probe::spawn(
        Identity::Root,
        &["open", device.to_str().unwrap(), "rw", "wait", "0"],
    );
    let mut waiter = waiter;
    waiter.expect("open ok");
    eventually("the read and the wait are blocked", || {
        let status = daemon.status();
        status["pending_reads"] == 1 && status["pending_waits"] == 1
    });
    let laggards = daemon.tracked_laggards();
    assert_eq!(laggards, vec![u64::from(lagger.pid())]);

    let old_pid = daemon.pid();
    let (daemon, old_exit) = daemon.take_over(DaemonOptions::default());
    assert!(
        old_exit.is_some_and(|s| s.success()),
        "the old daemon exits cleanly"
    );
    assert_ne!(daemon.pid(), old_pid);
    let status = daemon.status();
    assert_eq!(status["generation"], 1);
    assert_eq!(
        (
            status["pending_reads"].clone(),
            status["pending_waits"].clone()
        ),
        (1.into(), 1.into())
    );
    assert_eq!(daemon.tracked_laggards(), laggards, "the same laggards");
    assert!(
        daemon.log().contains("took the device over"),
        "{}",
        daemon.log()
    );

    // Every client follows the next bump, through the new daemon.
    DevFile::rw(&device).trigger(0).unwrap();
    assert_eq!(reader.line(), "read ok 2");
    assert_eq!(mapper.next_change(LONG), Some(2));
    assert_eq!(epoll_ready(&ep, LONG), 1, "the epoll registration is woken");
    assert_eq!(
        waiter.line(),
        "wait err EINTR",
        "a bump ends a wait from an outdated file"
    );
    let line = watch_lines.recv_timeout(LONG).unwrap();
    assert!(
        line.contains("\"generation\":2") && line.contains("\"reopened\":false"),
        "{line}"
    );
    assert_eq!(
        acked.read(),
        Ok(2),
        "the acknowledged file is outdated by the new bump"
    );
    assert_eq!(acked.ack(2), Ok(4));
    assert_eq!(polled.read(), Ok(2));

    assert!(mapper.finish().success(), "no SIGBUS, no error");
    let _ = watch.kill();
    lagger.kill();
}

#[test]
fn a_wait_keeps_its_deadline_across_a_handover() {
    let daemon = Daemon::start();
    let device = daemon.device.clone();
    let lagger = DevFile::rw(&device);
    lagger.track(true).unwrap();
    DevFile::rw(&device).trigger(0).unwrap();
    let mut waiter = Probe::spawn(
        Identity::Root,
        &["open", device.to_str().unwrap(), "rw", "wait", "1500"],
    );
    waiter.expect("open ok");
    let started = std::time::Instant::now();
    eventually("the wait is blocked", || {
        daemon.status()["pending_waits"] == 1
    });
    let (daemon, _) = daemon.take_over(DaemonOptions::default());
    assert_eq!(waiter.line(), "wait err ETIME");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the deadline carried over: {took:?}"
    );
    assert_eq!(daemon.status()["outdated"], 1);
    drop(lagger);
}

#[test]
fn a_daemon_for_another_device_is_refused_and_the_running_one_serves_on() {
    let daemon = Daemon::start();
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_binary("sysgenidd"))
        .arg("--device")
        .arg(other.path().join("device"))
        .arg("--state-dir")
        .arg(&daemon.state_dir)
        .args(["--backends", "none"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("taking over from it failed") && stderr.contains("serves"),
        "{stderr}"
    );
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.read(), Err(Errno::AGAIN));
    f.trigger(0).unwrap();
    assert_eq!(f.read(), Ok(1), "the running daemon still serves");
}

#[test]
fn the_new_daemon_keeps_handing_over() {
    let mut daemon = Daemon::start();
    let file = DevFile::rw(&daemon.device);
    for round in 1..=5u32 {
        let (next, exit) = daemon.take_over(DaemonOptions::default());
        assert!(exit.is_some_and(|s| s.success()), "round {round}");
        daemon = next;
        file.trigger(0).unwrap();
        assert_eq!(file.read(), Ok(round));
        file.ack(round).unwrap();
    }
    let took_over = BufReader::new(daemon.log().as_bytes())
        .lines()
        .filter(|l| l.as_ref().is_ok_and(|l| l.contains("took the device over")))
        .count();
    assert_eq!(took_over, 5, "every daemon logs into the same file");
}

#[test]
fn an_upgrade_to_a_newer_snapshot_format_takes_over_and_a_downgrade_is_refused() {
    let daemon = Daemon::start();
    let file = DevFile::rw(&daemon.device);
    file.track(true).unwrap();
    file.trigger(0).unwrap();
    let newer = DaemonOptions {
        binary: Some(next_format_daemon()),
        ..DaemonOptions::default()
    };
    let (daemon, exit) = daemon.take_over(newer);
    assert!(exit.is_some_and(|s| s.success()));
    assert!(
        daemon.log().contains("format=1"),
        "the newer build read format 1"
    );
    assert_eq!(
        daemon.status()["outdated"],
        1,
        "the tracked file is still a laggard"
    );

    // Back to the release: it cannot read format 2, says so, and the newer one serves on.
    let out = Command::new(workspace_binary("sysgenidd"))
        .arg("--device")
        .arg(&daemon.device)
        .arg("--state-dir")
        .arg(&daemon.state_dir)
        .args(["--backends", "none"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("writes snapshot format 2") && stderr.contains("reads formats 1 to 1"),
        "{stderr}"
    );
    assert_eq!(file.read(), Ok(1));
    assert_eq!(
        file.ack(1),
        Ok(4),
        "the newer daemon still serves the same file"
    );
    assert_eq!(daemon.status()["outdated"], 0);
}
