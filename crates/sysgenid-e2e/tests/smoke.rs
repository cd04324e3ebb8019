//! The harness itself: a daemon starts, serves, answers status, and stops cleanly.

use std::process::Command;

use sysgenid_e2e::{Daemon, DevFile, Errno, probe_binary};

#[test]
fn daemon_serves_and_counts_a_trigger() {
    let daemon = Daemon::start();
    let status = daemon.status();
    assert_eq!(status["generation"], 0);
    assert_eq!(status["serving"], true);
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.read(), Err(Errno::AGAIN));
    assert_eq!(f.trigger(0), Ok(0));
    assert_eq!(f.read(), Ok(1));
    assert_eq!(daemon.status()["generation"], 1);
    assert_eq!(daemon.status()["last_bump"]["source"], "trigger");
}

#[test]
fn probe_process_reads_and_acks() {
    let daemon = Daemon::start();
    let dev = daemon.device.to_str().unwrap();
    let out = Command::new(probe_binary())
        .args([
            "open",
            dev,
            "rw-nonblock",
            "trigger",
            "4",
            "read",
            "4",
            "ack",
            "read",
            "4",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        "open ok\ntrigger ok 0\nread ok 4\nack ok 4\nread err EAGAIN\n"
    );
}
