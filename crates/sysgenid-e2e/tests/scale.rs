//! Blocked callers are data in the daemon, not threads: ten thousand blocked readers leave its
//! thread count unchanged, and one trigger answers them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sysgenid_e2e::{Daemon, DevFile, eventually};

const READERS: usize = 10_000;

fn daemon_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

fn daemon_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn ten_thousand_blocked_readers_cost_the_daemon_no_threads() {
    let daemon = Daemon::start();
    let pid = daemon.serving_pid();
    let threads_before = daemon_threads(pid);
    let rss_before = daemon_rss_kib(pid);
    let answered = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        let file = DevFile::rw(&daemon.device);
        let answered = Arc::clone(&answered);
        let reader = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let value = file.read();
                answered.fetch_add(1, Ordering::SeqCst);
                value
            })
            .expect("spawn a reader thread");
        readers.push(reader);
    }
    eventually("every reader is blocked in the daemon", || {
        daemon.count("pending_reads") == READERS as u64
    });
    let threads_blocked = daemon_threads(pid);
    let rss_blocked = daemon_rss_kib(pid);
    assert_eq!(answered.load(Ordering::SeqCst), 0);
    // The loop, the signal and control threads, and at most one short-lived thread per status
    // query in flight: nothing per blocked reader.
    assert!(
        threads_blocked <= threads_before + 1,
        "the daemon grew from {threads_before} to {threads_blocked} threads for blocked readers"
    );
    eprintln!(
        "daemon: {threads_blocked} threads; RSS {rss_before} KiB idle, {rss_blocked} KiB with \
         {READERS} blocked readers ({:.0} bytes each)",
        (rss_blocked.saturating_sub(rss_before) * 1024) as f64 / READERS as f64
    );
    let trigger = DevFile::rw(&daemon.device);
    assert_eq!(trigger.trigger(0), Ok(0));
    for reader in readers {
        assert_eq!(reader.join().unwrap(), Ok(1));
    }
    assert_eq!(daemon.count("pending_reads"), 0);
}
