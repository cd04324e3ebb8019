//! The control socket's `status`: a tracked process that really lags behind a bump is listed in
//! `outdated_files` by its pid, with its command line (which names `sysgenid-probe`) and
//! `tracked: true`, and the counts agree; once it acknowledges, it is gone from the list.

use sysgenid_e2e::{Daemon, DevFile, Probe};

/// The `outdated_files` entries of process `pid`.
fn entries_of(status: &serde_json::Value, pid: u32) -> Vec<serde_json::Value> {
    status["outdated_files"]
        .as_array()
        .expect("outdated_files is a list")
        .iter()
        .filter(|f| f["pid"] == pid)
        .cloned()
        .collect()
}

#[test]
fn status_lists_a_lagging_tracked_process_until_it_acks() {
    let daemon = Daemon::start();
    let mut probe = Probe::lagging_tracked(&daemon, &["read", "4", "ack", "wait-stdin"]);
    let pid = probe.pid();
    assert_eq!(daemon.status()["version"], 4, "the document's format");
    assert!(
        entries_of(&daemon.status(), pid).is_empty(),
        "not lagging yet"
    );

    let trigger = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(trigger.trigger(0), Ok(0));
    assert_eq!(trigger.ack(1), Ok(4));
    let status = daemon.status();
    let entries = entries_of(&status, pid);
    assert_eq!(entries.len(), 1, "{status}");
    assert_eq!(entries[0]["tracked"], true);
    let command = entries[0]["command"].as_str().expect("a command line");
    assert!(command.contains("sysgenid-probe"), "{command}");
    assert_eq!(status["outdated"], 1);
    assert_eq!(
        status["outdated_files"].as_array().unwrap().len(),
        1,
        "only the probe lags: {status}"
    );

    probe.resume();
    probe.expect("wait-stdin ok");
    probe.expect("read ok 1");
    probe.expect("ack ok 4");
    let status = daemon.status();
    assert!(entries_of(&status, pid).is_empty(), "{status}");
    assert_eq!(status["outdated"], 0);
    assert_eq!(status["outdated_files"].as_array().unwrap().len(), 0);
    probe.resume();
    probe.finish();
}
