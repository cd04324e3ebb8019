//! The `sysgenid` command against a running daemon: each command, its output, its exit codes.

mod common;

use common::{on_a_terminal, run, stderr, sysgenid};

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sysgenid_e2e::{Daemon, DaemonOptions, DevFile, Probe, eventually, within};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn get_prints_the_generation_as_text_or_json() {
    let daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(3).unwrap();
    let out = run(&daemon, &["get"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "3\n");
    assert_eq!(
        stdout(&run(&daemon, &["get", "--json"])),
        "{\"generation\":3}\n"
    );
}

#[test]
fn get_id_prints_the_generation_and_its_id_as_status_shows_them() {
    let daemon = Daemon::start();
    let mut seen = Vec::new();
    for generation in 0..3 {
        let out = run(&daemon, &["get", "--id"]);
        assert!(out.status.success());
        let id = daemon.generation_id();
        assert_eq!(stdout(&out), format!("{generation} {id}\n"));
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(!seen.contains(&id), "a new ID at every bump");
        let json = stdout(&run(&daemon, &["get", "--id", "--json"]));
        assert_eq!(
            json,
            format!("{{\"generation\":{generation},\"generation_id\":\"{id}\"}}\n")
        );
        let status = stdout(&run(&daemon, &["status"]));
        assert!(status.contains(&format!("id:         {id}")), "{status}");
        seen.push(id);
        DevFile::rw(&daemon.device).trigger(0).unwrap();
    }
}

#[test]
fn trigger_bumps_and_honours_the_minimum() {
    let daemon = Daemon::start();
    assert_eq!(stdout(&run(&daemon, &["trigger"])), "generation 1\n");
    assert_eq!(
        stdout(&run(&daemon, &["trigger", "--min", "10"])),
        "generation 10\n"
    );
    assert_eq!(
        stdout(&run(&daemon, &["--json", "trigger", "--min", "2"])),
        "{\"generation\":11}\n"
    );
    assert_eq!(daemon.generation(), 11);
}

#[test]
fn trigger_without_the_capability_exits_4_and_names_it() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg("env")
        .arg(format!("SYSGENID_DEVICE={}", daemon.device.display()))
        .arg(format!("SYSGENID_STATE_DIR={}", daemon.state_dir.display()))
        .arg(env!("CARGO_BIN_EXE_sysgenid"))
        .arg("trigger")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CAP_CHECKPOINT_RESTORE"),
        "{}",
        stderr(&out)
    );
    assert_eq!(daemon.generation(), 0);
}

#[test]
fn watch_prints_and_acknowledges_each_change() {
    let daemon = Daemon::start();
    let mut child = sysgenid(&daemon, &["watch", "--track", "--count", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the watcher is tracked", || daemon.count("tracked") == 1);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let f = DevFile::rw(&daemon.device);
    f.trigger(0).unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "generation 1");
    eventually("acknowledged", || daemon.count("outdated") == 0);
    f.trigger(0).unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "generation 2");
    assert!(child.wait().unwrap().success());
}

/// `sysgenid ARGS` as `nobody`, with no groups and no capabilities, aimed at `daemon`.
fn as_nobody(daemon: &Daemon, args: &[&str]) -> Command {
    daemon.allow_other_users();
    let mut c = sysgenid_e2e::as_nobody("env");
    c.arg(format!("SYSGENID_DEVICE={}", daemon.device.display()))
        .arg(format!("SYSGENID_STATE_DIR={}", daemon.state_dir.display()))
        .arg(env!("CARGO_BIN_EXE_sysgenid"))
        .args(args)
        .stdin(Stdio::null());
    c
}

#[test]
fn watch_without_track_needs_no_privilege() {
    let daemon = Daemon::start();
    let mut child = as_nobody(&daemon, &["--json", "watch", "--count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the watcher has opened", || daemon.count("open_files") == 1);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Each trigger through a file of its own, closed at once: it would be outdated otherwise.
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let line = lines.next().unwrap().unwrap();
    assert_eq!(line, r#"{"acked":false,"generation":1,"reopened":false}"#);
    eventually("the watcher is current again", || {
        daemon.status()["outdated_files"] == serde_json::json!([])
    });
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let line = lines.next().unwrap().unwrap();
    assert!(line.contains(r#""generation":2"#), "{line}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no note off a terminal");
}

#[test]
fn on_a_terminal_watch_says_which_generation_it_watches_from() {
    let daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(4).unwrap();
    let child = on_a_terminal(&daemon, &["watch", "--count", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the watcher has opened", || daemon.count("open_files") == 1);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let out = within("watch ends", Duration::from_secs(10), move || {
        child.wait_with_output().unwrap()
    });
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let note = format!(
        "sysgenid: watching {} from generation 4; a line per change\r\ngeneration 5\r\n",
        daemon.device.display()
    );
    assert!(text.contains(&note), "{text:?}");
}

#[test]
fn wait_watchers_shows_who_it_waits_for_on_a_terminal_only() {
    let daemon = Daemon::start();
    let lagger = Probe::lagging_tracked(&daemon, &[]);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let out = on_a_terminal(&daemon, &["wait-watchers", "--timeout", "1s"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text:?}");
    let progress = format!(
        "\r\x1b[Kwaiting for 1 tracked watcher(s) to acknowledge generation 1: pid {} (",
        lagger.pid()
    );
    assert!(text.contains(&progress), "{text:?}");
    assert!(
        text.contains("\r\x1b[Ksysgenid: timed out after 1s"),
        "cleared first: {text:?}"
    );

    let out = run(&daemon, &["wait-watchers", "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(!stderr(&out).contains("waiting for"), "{}", stderr(&out));
}

#[test]
fn watch_track_without_write_access_exits_4_and_says_how_to_watch() {
    let daemon = Daemon::start();
    let out = as_nobody(&daemon, &["watch", "--track"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`sysgenid watch` without --track"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn watch_exec_that_fails_does_not_acknowledge_and_exits_6() {
    let daemon = Daemon::start();
    let child = sysgenid(&daemon, &["watch", "--track", "--exec", "exit 3"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the watcher is tracked", || daemon.count("tracked") == 1);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("generation 1 not acknowledged"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn watch_exec_keep_going_retries_until_the_command_succeeds() {
    let daemon = Daemon::start();
    let marker = daemon.dir.join("second-try");
    let hook = format!(
        "test -e '{0}' && echo \"ran for $SYSGENID_GENERATION\" || {{ touch '{0}'; exit 1; }}",
        marker.display()
    );
    let child = sysgenid(
        &daemon,
        &[
            "watch",
            "--track",
            "--count",
            "1",
            "--keep-going",
            "--exec",
            &hook,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    eventually("the watcher is tracked", || daemon.count("tracked") == 1);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not acknowledged, retrying"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "ran for 1\ngeneration 1\n");
    assert_eq!(daemon.count("outdated"), 0);
}

#[test]
fn ack_acknowledges_on_a_descriptor_the_shell_opened() {
    let daemon = Daemon::start();
    let bin = env!("CARGO_BIN_EXE_sysgenid");
    let script = format!(
        "exec 3<>'{dev}'; '{bin}' trigger >/dev/null; '{bin}' ack --fd 3; '{bin}' ack --fd 3",
        dev = daemon.device.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("SYSGENID_DEVICE", &daemon.device)
        .env("SYSGENID_STATE_DIR", &daemon.state_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "acknowledged generation 1\nalready up to date: nothing to acknowledge\n"
    );
    let bad = run(&daemon, &["ack", "--fd", "9"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("exec 9<>/dev/sysgenid"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn wait_watchers_succeeds_or_times_out_naming_the_laggard() {
    let daemon = Daemon::start();
    let mut lagger = Probe::lagging_tracked(&daemon, &[]);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let out = run(&daemon, &["wait-watchers", "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("timed out after 300ms"), "{message}");
    assert!(
        message.contains(&lagger.pid().to_string()) && message.contains("sysgenid-probe"),
        "{message}"
    );
    lagger.kill();
    let out = run(&daemon, &["wait-watchers", "--timeout", "5s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "every tracked watcher has acknowledged generation 1\n"
    );
}

#[test]
fn status_names_a_lagging_process() {
    let daemon = Daemon::start();
    let lagger = Probe::lagging_tracked(&daemon, &[]);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let text = stdout(&run(&daemon, &["status"]));
    assert!(text.contains("generation: 1"), "{text}");
    assert!(text.contains("1 tracked outdated"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains(&lagger.pid().to_string()))
        .expect(&text);
    assert!(
        line.contains("tracked") && line.contains("sysgenid-probe"),
        "{line}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&run(&daemon, &["--json", "status"]).stdout).unwrap();
    assert_eq!(json["outdated_files"][0]["pid"], lagger.pid());
}

#[test]
fn status_says_what_the_uevent_backend_listens_for() {
    let daemon = Daemon::start_with(DaemonOptions {
        args: vec!["--backends".into(), "uevent".into()],
        ..Default::default()
    });
    let text = stdout(&run(&daemon, &["status"]));
    let line = text
        .lines()
        .find(|l| l.starts_with("backend:"))
        .expect(&text);
    assert_eq!(
        line,
        "backend:    uevent active: listening for the vmgenid driver's NEW_VMGENID=1 uevent, \
         which no current kernel sends (only Linux 6.8 did)"
    );
    // The JSON document is the daemon's, unchanged.
    let json: serde_json::Value =
        serde_json::from_slice(&run(&daemon, &["--json", "status"]).stdout).unwrap();
    let backend = &json["daemon"]["backends"][0];
    assert_eq!(
        (&backend["name"], &backend["active"]),
        (&"uevent".into(), &true.into())
    );
}

#[test]
fn a_missing_daemon_exits_5_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sysgenid"))
        .env("SYSGENID_DEVICE", dir.path().join("device"))
        .env("SYSGENID_STATE_DIR", dir.path().join("state"))
        .arg("trigger")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        stderr(&out).contains("is sysgenidd running?"),
        "{}",
        stderr(&out)
    );
    let json = Command::new(env!("CARGO_BIN_EXE_sysgenid"))
        .env("SYSGENID_DEVICE", dir.path().join("device"))
        .env("SYSGENID_STATE_DIR", dir.path().join("state"))
        .args(["--json", "status"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(5));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["exit"], 5);
}

/// A pipe whose reading end is already closed: writing to it fails with `EPIPE`.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

#[test]
fn a_closed_stdout_ends_status_quietly_with_0() {
    let daemon = Daemon::start();
    for args in [&["status"][..], &["--json", "status"], &["get"]] {
        let out = sysgenid(&daemon, args)
            .stdout(closed_pipe())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

#[test]
fn a_watch_whose_reader_has_gone_stops_quietly_with_0() {
    let daemon = Daemon::start();
    let (reader, writer) = std::io::pipe().unwrap();
    let child = sysgenid(&daemon, &["watch"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the watcher has opened", || daemon.count("open_files") == 1);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let mut lines = BufReader::new(reader).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "generation 1");
    drop(lines);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let out = within("watch stops", Duration::from_secs(10), move || {
        child.wait_with_output().unwrap()
    });
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn a_closed_stderr_keeps_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sysgenid"))
        .env("SYSGENID_DEVICE", dir.path().join("device"))
        .env("SYSGENID_STATE_DIR", dir.path().join("state"))
        .arg("trigger")
        .stderr(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "no panic (101)");
}

/// The pages `sysgenid(1)` and its subcommands' pages refer to, such as
/// `sysgenid-overseer-post-restore`.
fn page_references(roff: &str) -> Vec<String> {
    let text = roff.replace("\\-", "-");
    let mut names: Vec<String> = text
        .match_indices("(1)")
        .filter_map(|(end, _)| {
            let start = text[..end]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .map_or(0, |i| i + 1);
            let name = &text[start..end];
            name.starts_with("sysgenid").then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_man_page_referred_to_is_generated() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sysgenid"))
        .args(["generate", "man"])
        .arg(dir.path())
        .args(["--doc-dir", "/usr/share/doc/sysgenid"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let top = std::fs::read_to_string(dir.path().join("sysgenid.1")).unwrap();
    let referred = page_references(&top);
    for command in ["get", "watch", "wait-watchers", "status", "overseer"] {
        assert!(
            referred.contains(&format!("sysgenid-{command}")),
            "{referred:?}"
        );
    }
    let mut pages = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let roff = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        pages += 1;
        for name in page_references(&roff) {
            assert!(dir.path().join(format!("{name}.1")).is_file(), "{name}(1)");
        }
    }
    assert_eq!(pages, 11, "sysgenid, 7 commands, overseer's 3 steps");
    let page = std::fs::read_to_string(dir.path().join("sysgenid-overseer-post-restore.1"));
    let page = page.unwrap();
    assert!(
        page.contains("\\-\\-notify\\-host"),
        "the step's own options"
    );
    assert!(
        page.contains("/usr/share/doc/sysgenid/overseer.md"),
        "{page}"
    );
}

#[test]
fn help_documents_exit_codes_and_man_and_completions_generate() {
    let bin = env!("CARGO_BIN_EXE_sysgenid");
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(stdout(&help).contains("Exit codes:"));
    assert!(stdout(&help).contains("overseer: a hook failed"));
    let man = Command::new(bin)
        .args(["generate", "man"])
        .output()
        .unwrap();
    assert!(man.status.success());
    assert!(stdout(&man).contains(".TH sysgenid 1"));
    assert!(
        !stdout(&man).contains("sysgenid\\-help"),
        "no page for help"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin)
            .args(["generate", shell])
            .output()
            .unwrap();
        assert!(
            out.status.success()
                && stdout(&out).contains("wait-watchers")
                && stdout(&out).contains("post-restore"),
            "{shell}"
        );
    }
    let bad = Command::new(bin)
        .args(["generate", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
