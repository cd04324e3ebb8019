//! Signals against blocked callers, in real probe processes.
//!
//! A caught signal (SIGUSR1 with a no-op handler) interrupts a blocked `read(2)` or
//! `WAIT_WATCHERS` with `EINTR`, with or without `SA_RESTART`: the kernel's FUSE layer sends
//! `FUSE_INTERRUPT`, the daemon answers the request with `EINTR`, and the kernel hands a FUSE
//! reply of `EINTR` to the caller as is, so `SA_RESTART` cannot restart it (`docs/abi.md` lists
//! `EINTR` on a signal for both calls). Afterwards the daemon holds no pending request.
//!
//! SIGKILL of a blocked reader or waiter: the process dies, its request and its open file are
//! released, so `pending_reads`/`pending_waits` return to 0 and `open_files` to its baseline.

use rustix::process::Signal;
use sysgenid_e2e::{Daemon, DevFile, Identity, Probe, eventually};

/// A tracked watcher made outdated, so that a `WAIT_WATCHERS` from an up-to-date file blocks.
fn hold_a_wait_open(daemon: &Daemon) -> DevFile {
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.track(true), Ok(0));
    assert_eq!(f.trigger(0), Ok(0));
    assert_eq!(daemon.count("outdated"), 1);
    f
}

/// Runs a probe that installs the SIGUSR1 handler `sigaction_step`, opens the device and makes
/// the blocking call `call` (`read 4` or `wait 0`); interrupts it with SIGUSR1 once the daemon
/// holds it as `pending_field`; returns the call's line.
fn interrupt_with_sigusr1(
    daemon: &Daemon,
    sigaction_step: &str,
    call: [&str; 2],
    pending_field: &str,
) -> String {
    let mut probe = Probe::spawn(
        Identity::Root,
        &[
            sigaction_step,
            "open",
            daemon.device_str(),
            "ro",
            call[0],
            call[1],
            "ready",
        ],
    );
    probe.expect(&format!("{sigaction_step} ok 0"));
    probe.expect("open ok");
    eventually("the call is pending in the daemon", || {
        daemon.count(pending_field) == 1
    });
    probe.signal(Signal::USR1);
    let line = probe.line();
    probe.expect("ready ok");
    eventually("no pending request is left", || {
        daemon.count(pending_field) == 0
    });
    probe.finish();
    line
}

#[test]
fn sigusr1_without_sa_restart_interrupts_a_blocking_read_with_eintr() {
    let daemon = Daemon::start();
    let line = interrupt_with_sigusr1(&daemon, "sigaction-usr1", ["read", "4"], "pending_reads");
    assert_eq!(line, "read err EINTR");
    assert_eq!(daemon.count("pending_waits"), 0);
}

#[test]
fn sigusr1_with_sa_restart_still_interrupts_a_blocking_read_with_eintr() {
    let daemon = Daemon::start();
    let line = interrupt_with_sigusr1(
        &daemon,
        "sigaction-usr1-restart",
        ["read", "4"],
        "pending_reads",
    );
    assert_eq!(line, "read err EINTR");
}

#[test]
fn sigusr1_without_sa_restart_interrupts_a_wait_with_eintr() {
    let daemon = Daemon::start();
    let _lagging = hold_a_wait_open(&daemon);
    let line = interrupt_with_sigusr1(&daemon, "sigaction-usr1", ["wait", "0"], "pending_waits");
    assert_eq!(line, "wait err EINTR");
    assert_eq!(daemon.count("pending_reads"), 0);
}

#[test]
fn sigusr1_with_sa_restart_still_interrupts_a_wait_with_eintr() {
    let daemon = Daemon::start();
    let _lagging = hold_a_wait_open(&daemon);
    let line = interrupt_with_sigusr1(
        &daemon,
        "sigaction-usr1-restart",
        ["wait", "0"],
        "pending_waits",
    );
    assert_eq!(line, "wait err EINTR");
}

/// Starts a probe blocked in `call`, SIGKILLs it, and checks that the daemon let go of both the
/// request and the file.
fn sigkill_blocked_caller(daemon: &Daemon, call: [&str; 2], pending_field: &str) {
    let baseline = daemon.count("open_files");
    let mut probe = Probe::spawn(
        Identity::Root,
        &["open", daemon.device_str(), "ro", call[0], call[1]],
    );
    probe.expect("open ok");
    eventually("the call is pending in the daemon", || {
        daemon.count(pending_field) == 1
    });
    assert_eq!(daemon.count("open_files"), baseline + 1);
    probe.kill();
    eventually("the pending request is released", || {
        daemon.count(pending_field) == 0
    });
    eventually("the killed process's file is released", || {
        daemon.count("open_files") == baseline
    });
    let status = daemon.status();
    assert_eq!(status["pending_reads"], 0);
    assert_eq!(status["pending_waits"], 0);
}

#[test]
fn sigkill_of_a_blocked_reader_releases_its_request_and_file() {
    let daemon = Daemon::start();
    sigkill_blocked_caller(&daemon, ["read", "4"], "pending_reads");
}

#[test]
fn sigkill_of_a_blocked_waiter_releases_its_request_and_file() {
    let daemon = Daemon::start();
    let _lagging = hold_a_wait_open(&daemon);
    sigkill_blocked_caller(&daemon, ["wait", "0"], "pending_waits");
    // The lagging watcher is still there and still outdated.
    assert_eq!(daemon.count("outdated"), 1);
}
