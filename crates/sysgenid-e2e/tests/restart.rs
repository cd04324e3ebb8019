//! Daemon restarts and faults: persistence, stale mounts, what old clients see, failed persists,
//! and a daemon killed in the middle of bumps.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rustix::fs::OFlags;
use sysgenid_e2e::{
    Daemon, DaemonOptions, DevFile, Errno, FailingWrites, Identity, Probe, eventually,
    workspace_binary,
};

fn restart_in(dir: &Path) -> Daemon {
    Daemon::start_with(DaemonOptions {
        dir: Some(dir.to_owned()),
        ..DaemonOptions::default()
    })
}

fn page_value(daemon: &Daemon) -> u32 {
    let mut buf = [0u8; 4];
    std::fs::File::open(daemon.page_file())
        .unwrap()
        .read_exact_at(&mut buf, 0)
        .unwrap();
    u32::from_ne_bytes(buf)
}

/// Runs the daemon binary on `dir` until it exits by itself (it is expected to refuse).
fn run_to_exit(dir: &Path, prefix: &[&str]) -> Output {
    let daemon = workspace_binary("sysgenidd");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(daemon);
            c
        }
        None => Command::new(daemon),
    };
    let child = cmd
        .arg("--device")
        .arg(dir.join("device"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--backends", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    out
}

#[test]
fn counter_survives_a_restart() {
    let mut daemon = Daemon::start();
    let f = DevFile::rw(&daemon.device);
    for _ in 0..3 {
        f.trigger(0).unwrap();
    }
    drop(f);
    assert!(daemon.stop(), "clean exit on SIGTERM");
    let (_temp, dir) = daemon.into_dir();
    let daemon = restart_in(&dir);
    assert_eq!(daemon.status()["generation"], 3);
    assert_eq!(page_value(&daemon), 3);
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.read(), Err(Errno::AGAIN), "a new open starts up to date");
    f.trigger(0).unwrap();
    assert_eq!(f.read(), Ok(4), "the counter continues");
}

#[test]
fn sigterm_unmounts_and_removes_the_file_it_made() {
    let mut daemon = Daemon::start();
    assert!(daemon.stop());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(daemon.device.to_str().unwrap()),
        "unmounted"
    );
    assert!(
        std::fs::symlink_metadata(&daemon.device).is_err(),
        "nothing that looks like a device is left"
    );
    assert!(!daemon.control_socket().exists(), "control socket removed");
}

#[test]
fn a_mountpoint_file_it_did_not_make_is_left_with_mode_0000() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("d/device"), "").unwrap();
    let mut daemon = restart_in(&dir.path().join("d"));
    assert!(daemon.stop());
    let meta = std::fs::metadata(&daemon.device).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0
    );
    assert_eq!(meta.len(), 0);
}

#[test]
fn a_lazy_unmount_from_outside_ends_the_daemon_with_an_error_within_a_second() {
    let mut daemon = Daemon::start();
    let open = DevFile::rw_nonblock(&daemon.device);
    let lazily = Command::new("umount")
        .arg("-l")
        .arg(&daemon.device)
        .status()
        .unwrap();
    assert!(lazily.success());
    let started = std::time::Instant::now();
    let status = daemon
        .wait_exit(Duration::from_secs(3))
        .expect("the daemon exits");
    assert!(
        !status.success(),
        "an error, so that Restart= starts it again"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        daemon.log().contains("unmounted from outside"),
        "{}",
        daemon.log()
    );
    assert!(open.read().is_err(), "the detached mount is served no more");
}

#[test]
fn a_crash_leaves_a_stale_mount_that_the_next_daemon_replaces() {
    let daemon = Daemon::start();
    let f = DevFile::rw(&daemon.device);
    f.trigger(0).unwrap();
    // A read and an ack drop the kernel's cached attributes, so stat of the stale mount will
    // fail with ENOTCONN too.
    assert_eq!(f.read(), Ok(1));
    f.ack(1).unwrap();
    let (_temp, dir) = daemon.into_dir();
    let device = dir.join("device");
    let err = std::fs::File::open(&device).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOTCONN),
        "stale mount: {err}"
    );
    let daemon = restart_in(&dir);
    assert!(
        daemon.log().contains("replacing a stale mount"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.status()["generation"], 1);
    assert_eq!(DevFile::rw(&daemon.device).trigger(0), Ok(0));
}

#[test]
fn a_second_daemon_refuses_a_live_mount() {
    let daemon = Daemon::start();
    let other_state = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_binary("sysgenidd"))
        .arg("--device")
        .arg(&daemon.device)
        .arg("--state-dir")
        .arg(other_state.path().join("state"))
        .args(["--backends", "none"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already served by a live FUSE mount")
            && stderr.contains("another sysgenidd"),
        "{stderr}"
    );
    assert_eq!(
        daemon.status()["serving"],
        true,
        "the first daemon is unharmed"
    );
}

#[test]
fn old_fds_get_enotconn_after_a_restart_and_a_reopen_works() {
    let mut daemon = Daemon::start();
    let old = DevFile::rw_nonblock(&daemon.device);
    old.trigger(0).unwrap();
    assert!(daemon.stop());
    let (_temp, dir) = daemon.into_dir();
    let daemon = restart_in(&dir);
    assert_eq!(old.read(), Err(Errno::NOTCONN));
    assert_eq!(old.ack(1), Err(Errno::NOTCONN));
    assert_eq!(old.trigger(0), Err(Errno::NOTCONN));
    let new = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(new.read(), Err(Errno::AGAIN));
    new.trigger(0).unwrap();
    assert_eq!(new.read(), Ok(2));
}

#[test]
fn the_page_file_keeps_the_last_value_and_follows_the_next_daemon() {
    let daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(7).unwrap();
    let page = std::fs::File::open(daemon.page_file()).unwrap();
    let read = |f: &std::fs::File| {
        let mut buf = [0u8; 4];
        f.read_exact_at(&mut buf, 0).unwrap();
        u32::from_ne_bytes(buf)
    };
    assert_eq!(read(&page), 7);
    let (_temp, dir) = daemon.into_dir();
    assert_eq!(read(&page), 7, "kept while the daemon is down");
    let daemon = restart_in(&dir);
    assert_eq!(read(&page), 7);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    assert_eq!(read(&page), 8, "the same file, updated in place");
}

#[test]
fn a_damaged_state_file_continues_from_the_page_file() {
    let mut daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(6).unwrap();
    assert!(daemon.stop());
    let (_temp, dir) = daemon.into_dir();
    std::fs::write(dir.join("state/state"), "garbage\n").unwrap();
    let daemon = restart_in(&dir);
    let status = daemon.status();
    assert_eq!(status["generation"], 6, "{status}");
    assert_eq!(status["degraded"], false, "{status}");
    assert_eq!(DevFile::rw(&daemon.device).trigger(0), Ok(0));
    assert_eq!(daemon.status()["generation"], 7);
}

#[test]
fn a_damaged_state_file_with_no_page_file_serves_degraded_and_refuses_bumps() {
    let mut daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(6).unwrap();
    assert!(daemon.stop());
    let (_temp, dir) = daemon.into_dir();
    std::fs::write(dir.join("state/state"), "garbage\n").unwrap();
    std::fs::remove_file(dir.join("state/generation")).unwrap();
    let daemon = restart_in(&dir);
    let status = daemon.status();
    assert_eq!(status["degraded"], true, "{status}");
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.read(), Err(Errno::AGAIN), "reads work");
    assert_eq!(f.trigger(0), Err(Errno::IO), "no guess: bumps are refused");
    assert!(
        daemon.log().contains("is not a sysgenid state file"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("state/state")).unwrap(),
        "garbage\n",
        "the damaged file is left for the operator"
    );
}

#[test]
fn a_rolled_back_state_file_never_moves_the_counter_back() {
    let mut daemon = Daemon::start();
    let f = DevFile::rw(&daemon.device);
    f.trigger(0).unwrap();
    let old_state = std::fs::read(daemon.dir.join("state/state")).unwrap();
    f.trigger(9).unwrap();
    drop(f);
    // A crash, then a valid record of this boot with a lower value put back.
    daemon.kill();
    let (_temp, dir) = daemon.into_dir();
    std::fs::write(dir.join("state/state"), old_state).unwrap();
    let daemon = restart_in(&dir);
    assert_eq!(daemon.status()["generation"], 9);
    let f = DevFile::rw_nonblock(&daemon.device);
    f.trigger(0).unwrap();
    assert_eq!(f.read(), Ok(10), "never a value handed out before");
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused_with_the_holders_pid() {
    let daemon = Daemon::start();
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_binary("sysgenidd"))
        .arg("--device")
        .arg(other.path().join("device"))
        .arg("--state-dir")
        .arg(daemon.dir.join("state"))
        .args(["--backends", "none"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another sysgenidd")
            && stderr.contains(&format!("pid {}", daemon.pid())),
        "{stderr}"
    );
    assert!(
        !other.path().join("device").exists(),
        "nothing mounted or made"
    );
    assert!(
        daemon.control_socket().exists(),
        "the first daemon's socket stays"
    );
    assert_eq!(daemon.status()["serving"], true);
}

#[test]
fn a_missing_dev_fuse_gets_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // A private mount namespace whose /dev has no fuse node.
    let out = run_to_exit(
        dir.path(),
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs none /dev && exec \"$0\" \"$@\"",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/dev/fuse") && stderr.contains("missing"),
        "{stderr}"
    );
}

#[test]
fn a_device_path_in_a_missing_directory_is_refused_and_nothing_is_made() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("nonexistent/dir");
    let out = run_to_exit(&dir, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the directory {} does not exist", dir.display())),
        "{stderr}"
    );
    assert!(
        !temp.path().join("nonexistent").exists(),
        "no directory was made"
    );
}

#[test]
fn a_failed_persist_fails_the_trigger_with_eio_and_changes_nothing() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    f.trigger(0).unwrap();
    assert_eq!(f.read(), Ok(1));
    f.ack(1).unwrap();
    let failing = FailingWrites::on(daemon.serving_pid());
    assert_eq!(
        f.trigger(0),
        Err(Errno::IO),
        "the bump cannot be made durable"
    );
    assert_eq!(f.read(), Err(Errno::AGAIN), "nobody was woken");
    assert_eq!(page_value(&daemon), 1, "nothing was published");
    let status = daemon.status();
    assert_eq!(status["generation"], 1);
    assert_eq!(status["degraded"], true);
    assert_eq!(status["failed_bumps"], 1);
    assert_eq!(status["last_failure"]["error"], "EIO");
    drop(failing);
    assert_eq!(f.trigger(0), Ok(0), "works again once writes do");
    assert_eq!(f.read(), Ok(2));
    assert_eq!(daemon.status()["degraded"], false);
}

#[test]
fn a_daemon_killed_during_bumps_never_moves_the_counter_backwards() {
    let first = Daemon::start();
    let (_temp, dir) = first.into_dir();
    let mut highest_seen = 0u32;
    for round in 0..5 {
        let daemon = restart_in(&dir);
        let start = daemon.status()["generation"].as_u64().unwrap() as u32;
        assert!(
            start >= highest_seen,
            "round {round}: restarted at {start} after seeing {highest_seen}"
        );
        let device = daemon.device.clone();
        let bumper = std::thread::spawn(move || {
            let f = DevFile::rw(&device);
            let mut seen = 0;
            // Each successful trigger was persisted before it was answered.
            while f.trigger(0).is_ok() {
                seen = f.read().unwrap_or(seen).max(seen);
            }
            seen
        });
        std::thread::sleep(Duration::from_millis(30 + 20 * round));
        let mut daemon = daemon;
        daemon.kill();
        highest_seen = highest_seen.max(bumper.join().unwrap());
    }
    let daemon = restart_in(&dir);
    let end = daemon.status()["generation"].as_u64().unwrap() as u32;
    assert!(
        end >= highest_seen && highest_seen > 0,
        "end {end}, seen {highest_seen}"
    );
    eventually("serving", || daemon.status()["serving"] == true);
}

/// Unmounts the small tmpfs when dropped, even if the test fails.
#[test]
fn sigint_unmounts_and_exits_cleanly_too() {
    let mut daemon = Daemon::start();
    daemon.signal(rustix::process::Signal::INT);
    eventually("the daemon logs the signal", || {
        daemon.log().contains("got SIGINT")
    });
    assert!(daemon.stop(), "clean exit");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(daemon.device.to_str().unwrap()),
        "unmounted"
    );
}

#[test]
fn a_lost_state_file_never_moves_the_counter_backwards() {
    let mut daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(5).unwrap();
    assert!(daemon.stop());
    let (_temp, dir) = daemon.into_dir();
    std::fs::remove_file(dir.join("state/state")).unwrap();
    let daemon = restart_in(&dir);
    assert_eq!(daemon.generation(), 5, "continued from the page file");
    assert!(
        daemon
            .log()
            .contains("the page file shows a higher generation than the state file")
    );
}

#[test]
fn a_state_directory_from_another_boot_continues_from_its_page_file() {
    let mut daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(7).unwrap();
    assert!(daemon.stop());
    let (_temp, dir) = daemon.into_dir();
    // As if the directory came from another host or boot (CRIU carrying a container's tmpfs).
    let state = dir.join("state/state");
    let text = std::fs::read_to_string(&state).unwrap();
    let other: String = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some(("boot_id", _)) => "boot_id=00000000-0000-0000-0000-000000000000".to_owned(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    assert_ne!(other, text, "the state file names its boot: {text}");
    std::fs::write(&state, other).unwrap();
    let daemon = restart_in(&dir);
    assert_eq!(daemon.generation(), 7, "continued from the page file");
    assert!(
        daemon
            .log()
            .contains("persisted counter is from another boot")
    );
}

/// A read-only bind mount of a directory onto itself, undone on drop.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn bind(dir: &Path) -> ReadOnly {
        let mount = |args: &[&str]| {
            let ok = Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mount {args:?}");
        };
        mount(&["--bind"]);
        let guard = ReadOnly(dir.to_owned());
        mount(&["-o", "remount,ro,bind"]);
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Starts the daemon on `dir` without its control socket to wait on, and waits until the device
/// answers a read.
/// A daemon started outside the harness, stopped with SIGTERM when dropped (also when a test
/// fails half way).
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn start_without_status(dir: &Path) -> Stopped {
    let log = std::fs::File::create(dir.join("daemon-ro.log")).unwrap();
    let child = Stopped(
        Command::new(workspace_binary("sysgenidd"))
            .arg("--device")
            .arg(dir.join("device"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--backends", "none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let device = dir.join("device");
    eventually("the device is served", || {
        DevFile::open(&device, OFlags::RDONLY | OFlags::NONBLOCK)
            .is_ok_and(|f| f.read() == Err(Errno::AGAIN))
    });
    // As the daemon's readiness step does: a stat makes the kernel learn the size, so a
    // mapping made now cannot fault.
    std::fs::metadata(&device).unwrap();
    child
}

fn stop_child(child: Stopped) {
    drop(child);
}

#[test]
fn a_read_only_state_directory_serves_reads_and_refuses_bumps_with_eio() {
    let mut daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(4).unwrap();
    assert!(daemon.stop());
    let (_temp, dir) = daemon.into_dir();
    let state = dir.join("state");
    let before = std::fs::read(state.join("state")).unwrap();
    let read_only = ReadOnly::bind(&state);
    let child = start_without_status(&dir);
    let f = DevFile::rw_nonblock(&dir.join("device"));
    assert_eq!(
        f.trigger(0),
        Err(Errno::IO),
        "no bump without a durable record"
    );
    assert_eq!(f.read(), Err(Errno::AGAIN), "the generation is unchanged");
    drop(f);
    let log = std::fs::read_to_string(dir.join("daemon-ro.log")).unwrap();
    assert!(log.contains("no control socket"), "{log}");
    stop_child(child);
    drop(read_only);
    assert_eq!(std::fs::read(state.join("state")).unwrap(), before);
    assert_eq!(page_file_value(&state), 4);
}

#[test]
fn a_start_that_cannot_write_its_starting_point_serves_it_degraded() {
    let mut daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(6).unwrap();
    assert!(daemon.stop());
    let (_temp, dir) = daemon.into_dir();
    let state = dir.join("state");
    // The state file is lost; the page file says 6, and the start would write that down.
    std::fs::remove_file(state.join("state")).unwrap();
    let read_only = ReadOnly::bind(&state);
    let child = start_without_status(&dir);
    let device = dir.join("device");
    let f = DevFile::rw_nonblock(&device);
    assert_eq!(f.trigger(0), Err(Errno::IO));
    let mapped = Probe::run(
        Identity::Root,
        &["open", device.to_str().unwrap(), "ro", "mmap", "load"],
    );
    assert_eq!(
        mapped.last().unwrap(),
        "load ok 6",
        "it serves the page file's value"
    );
    let log = std::fs::read_to_string(dir.join("daemon-ro.log")).unwrap();
    assert!(log.contains("serving degraded"), "{log}");
    stop_child(child);
    drop(read_only);
    assert!(!state.join("state").exists(), "nothing was written");
}

fn page_file_value(state: &Path) -> u32 {
    let bytes = std::fs::read(state.join("generation")).unwrap();
    u32::from_ne_bytes(bytes[..4].try_into().unwrap())
}
