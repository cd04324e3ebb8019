//! `sysgenid overseer` against a running daemon, with real hooks, real watchers and a real
//! readiness file: quiesce, bump once, wait, un-quiesce, tell the host.

mod common;

use common::{on_a_terminal, run, stderr, sysgenid};

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use sysgenid_e2e::{Daemon, DevFile, Probe, eventually, read_lines, within};

/// Every stdout line, each parsed as JSON.
fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn last_line(out: &Output) -> Value {
    json_lines(out).pop().expect("a final line")
}

/// A hooks directory under the daemon's directory.
fn hooks_dir(daemon: &Daemon, name: &str) -> PathBuf {
    let dir = daemon.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes an executable shell script `name` into `dir`.
fn hook(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Records generation `g` with pre-snapshot and no hooks.
fn pre_snapshot(daemon: &Daemon) -> Value {
    let empty = hooks_dir(daemon, "no-hooks");
    let out = run(
        daemon,
        &["overseer", "pre-snapshot", "--hooks-dir", path_str(&empty)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    last_line(&out)
}

/// A child's stdout, line by line, with a timeout per line.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn of(child: &mut Child) -> Lines {
        Lines(read_lines(child.stdout.take().expect("piped stdout")))
    }

    fn next(&self) -> Value {
        let line = self
            .0
            .recv_timeout(Duration::from_secs(20))
            .expect("a line within 20s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn rest(&self) -> Vec<Value> {
        self.0
            .iter()
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect()
    }
}

#[test]
fn pre_snapshot_runs_the_hooks_in_order_and_records_the_generation() {
    let daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(3).unwrap();
    let log = daemon.dir.join("log");
    let dir = hooks_dir(&daemon, "quiesce.d");
    let append = |what: &str| {
        format!(
            "echo noise; echo \"{what} $SYSGENID_PHASE $SYSGENID_GENERATION\" >> '{}'",
            log.display()
        )
    };
    hook(&dir, "20-second", &append("20-second"));
    hook(&dir, "10-first", &append("10-first"));
    hook(&dir, ".hidden", &append("hidden"));
    hook(&dir, "15-not-executable", &append("not-executable"));
    std::fs::set_permissions(
        dir.join("15-not-executable"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let notify = daemon.dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&notify).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let exec = append("exec");
    let out = sysgenid(
        &daemon,
        &[
            "overseer",
            "pre-snapshot",
            "--hooks-dir",
            path_str(&dir),
            "--exec",
            &exec,
        ],
    )
    .env("NOTIFY_SOCKET", &notify)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        read(&log),
        "10-first quiesce 3\n20-second quiesce 3\nexec quiesce 3\n"
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "hook output stays off stdout: {lines:?}");
    assert!(stderr(&out).contains("noise"), "{}", stderr(&out));
    let quiesced = &lines[0];
    assert_eq!(quiesced["event"], "quiesced");
    assert_eq!(quiesced["generation"], 3);
    let record = daemon.state_dir.join("overseer.json");
    assert_eq!(quiesced["record"], path_str(&record));
    assert_eq!(quiesced["hooks"].as_array().unwrap().len(), 3);
    let recorded: Value = serde_json::from_str(&read(&record)).unwrap();
    assert_eq!(recorded["generation"], 3);
    let mut buf = [0u8; 256];
    let n = systemd.recv(&mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]).trim_end(),
        "STATUS=quiesced generation 3"
    );
}

#[test]
fn a_hook_that_times_out_is_killed_with_its_group_and_fails_with_6() {
    let daemon = Daemon::start();
    let log = daemon.dir.join("log");
    let background = daemon.dir.join("background.pid");
    let dir = hooks_dir(&daemon, "quiesce.d");
    hook(
        &dir,
        "10-hang",
        &format!("sleep 1000 & echo $! > '{}'; wait", background.display()),
    );
    hook(
        &dir,
        "20-never",
        &format!("echo never >> '{}'", log.display()),
    );
    let out = run(
        &daemon,
        &[
            "overseer",
            "pre-snapshot",
            "--hooks-dir",
            path_str(&dir),
            "--hook-timeout",
            "300ms",
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let failed = last_line(&out);
    assert_eq!(failed["event"], "hook-failed");
    assert_eq!(failed["phase"], "quiesce");
    assert_eq!(failed["hook"], path_str(&dir.join("10-hang")));
    let status = failed["status"].as_str().unwrap();
    assert!(status.contains("timed out after 300ms"), "{status}");
    assert!(
        stderr(&out).contains("do not take the snapshot"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read(&log), "", "the run stopped at the failed hook");
    assert!(
        !daemon.state_dir.join("overseer.json").exists(),
        "nothing recorded"
    );
    let pid = read(&background).trim().to_owned();
    assert!(!pid.is_empty());
    eventually("the hook's background child is killed too", || {
        let stat = read(Path::new(&format!("/proc/{pid}/stat")));
        stat.is_empty() || stat.split(' ').nth(2) == Some("Z")
    });

    let out = run(
        &daemon,
        &[
            "overseer",
            "pre-snapshot",
            "--hooks-dir",
            path_str(&hooks_dir(&daemon, "empty")),
            "--exec",
            "exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let failed = last_line(&out);
    assert_eq!(
        (&failed["hook"], &failed["status"]),
        (&Value::from("exit 3"), &Value::from("exit status 3"))
    );
}

#[test]
fn post_restore_bumps_once_waits_for_the_watcher_then_unquiesces_and_tells_the_host() {
    let daemon = Daemon::start();
    assert_eq!(pre_snapshot(&daemon)["generation"], 0);
    let log = daemon.dir.join("log");
    let go = daemon.dir.join("go");
    let adjust = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; echo watcher >> '{}'",
        go.display(),
        log.display()
    );
    let mut watcher = sysgenid(
        &daemon,
        &["watch", "--track", "--count", "1", "--exec", &adjust],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    eventually("the watcher is tracked", || daemon.count("tracked") == 1);
    let dir = hooks_dir(&daemon, "unquiesce.d");
    hook(
        &dir,
        "50-resume",
        &format!(
            "echo \"unquiesce $SYSGENID_GENERATION $SYSGENID_OUTCOME\" >> '{}'",
            log.display()
        ),
    );
    let host = daemon.dir.join("virtio-port");
    std::fs::write(&host, "").unwrap();

    let mut overseer = sysgenid(
        &daemon,
        &[
            "overseer",
            "post-restore",
            "--trigger",
            "--grace",
            "100ms",
            "--unquiesce-dir",
            path_str(&dir),
            "--notify-host",
            path_str(&host),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let lines = Lines::of(&mut overseer);
    assert_eq!(
        lines.next(),
        serde_json::json!({"event": "grace", "expected": 0, "grace_ms": 100}),
        "the grace period is announced"
    );
    let bumped = lines.next();
    assert_eq!(bumped["event"], "bumped");
    assert_eq!(bumped["expected"], 0);
    assert_eq!(bumped["generation"], 1);
    assert_eq!(bumped["triggered"], true);
    let waiting = lines.next();
    assert_eq!(waiting["event"], "waiting");
    assert_eq!(waiting["generation"], 1);
    let outdated = waiting["outdated"].as_array().unwrap();
    assert_eq!(outdated.len(), 1, "{waiting}");
    assert_eq!(outdated[0]["pid"], watcher.id());
    let command = outdated[0]["command"].as_str().unwrap();
    assert!(command.contains("watch --track"), "{command}");
    assert_eq!(read(&log), "", "no un-quiesce while the watcher lags");

    std::fs::write(&go, "").unwrap();
    assert!(watcher.wait().unwrap().success());
    let status = overseer.wait().unwrap();
    let rest = lines.rest();
    assert!(status.success(), "{rest:?}");
    let last = rest.last().expect("a final line");
    assert_eq!(last["event"], "readjusted", "{rest:?}");
    assert_eq!(last["generation"], 1);
    assert_eq!(last["triggered"], true);
    assert_eq!(last["unquiesced"], true);
    assert_eq!(read(&log), "watcher\nunquiesce 1 readjusted\n");
    assert_eq!(
        read(&host),
        format!("{last}\n"),
        "the host got the final line"
    );

    let status = daemon.status();
    assert_eq!(status["generation"], 1, "exactly one bump");
    assert_eq!(status["last_bump"]["source"], "trigger");
    assert_eq!(status["last_bump"]["pid"], overseer.id());
    assert!(
        !daemon.state_dir.join("overseer.json").exists(),
        "the record is used once"
    );
}

#[test]
fn a_watcher_that_never_acks_times_out_with_3_naming_it() {
    let daemon = Daemon::start();
    let lagger = Probe::lagging_tracked(&daemon, &[]);
    let log = daemon.dir.join("log");
    let resume = format!(
        "echo \"unquiesce $SYSGENID_OUTCOME\" >> '{}'",
        log.display()
    );
    let out = run(
        &daemon,
        &[
            "overseer",
            "post-restore",
            "--trigger",
            "--expect",
            "0",
            "--grace",
            "0s",
            "--timeout",
            "500ms",
            "--exec",
            &resume,
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let pid = lagger.pid().to_string();
    let message = stderr(&out);
    assert!(message.contains("timed out after 500ms"), "{message}");
    assert!(
        message.contains(&format!("pid {pid}")) && message.contains("sysgenid-probe"),
        "{message}"
    );
    let timeout = last_line(&out);
    assert_eq!(timeout["event"], "timeout");
    assert_eq!(timeout["generation"], 1);
    assert_eq!(timeout["unquiesced"], true);
    let laggards = timeout["laggards"].as_array().unwrap();
    assert_eq!(laggards.len(), 1, "{timeout}");
    assert_eq!(laggards[0]["pid"], lagger.pid());
    assert!(
        laggards[0]["command"]
            .as_str()
            .unwrap()
            .contains("sysgenid-probe")
    );
    assert_eq!(read(&log), "unquiesce timeout\n", "un-quiesced anyway");

    let out = run(
        &daemon,
        &[
            "overseer",
            "post-restore",
            "--timeout",
            "300ms",
            "--no-unquiesce-on-timeout",
            "--exec",
            &resume,
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("left quiesced"), "{}", stderr(&out));
    assert_eq!(last_line(&out)["unquiesced"], false);
    assert_eq!(read(&log), "unquiesce timeout\n", "no un-quiesce hook ran");
    assert_eq!(
        daemon.generation(),
        1,
        "without --trigger nothing is bumped"
    );
}

#[test]
fn a_bump_between_pre_snapshot_and_post_restore_is_not_repeated() {
    let daemon = Daemon::start();
    pre_snapshot(&daemon);
    // A hardware backend (or anyone) bumps before the overseer runs.
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let out = run(
        &daemon,
        &["overseer", "post-restore", "--trigger", "--grace", "0s"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["event"], "bumped");
    assert_eq!(lines[0]["generation"], 1);
    assert_eq!(lines[0]["triggered"], false);
    assert_eq!(lines.last().unwrap()["event"], "readjusted");
    assert_eq!(daemon.generation(), 1, "exactly one bump");
}

#[test]
fn a_bump_during_the_grace_period_is_noticed_and_not_repeated() {
    let daemon = Daemon::start();
    pre_snapshot(&daemon);
    let mut overseer = sysgenid(
        &daemon,
        &["overseer", "post-restore", "--trigger", "--grace", "60s"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let lines = Lines::of(&mut overseer);
    // The grace event comes once the overseer has looked and watches for a late bump; a bump
    // before that look would be taken as one that came before the grace period.
    let grace = lines.next();
    assert_eq!(grace["event"], "grace", "{grace}");
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    // Far sooner than the 60 s grace: the bump itself ends the wait.
    let bumped = lines.next();
    assert_eq!(bumped["event"], "bumped", "{bumped}");
    assert_eq!(bumped["triggered"], false, "{bumped}");
    assert_eq!(bumped["generation"], 1);
    let status = within("the overseer ends", Duration::from_secs(20), move || {
        overseer.wait().unwrap()
    });
    let rest = lines.rest();
    assert!(status.success(), "{rest:?}");
    assert_eq!(daemon.generation(), 1, "exactly one bump");
}

#[test]
fn post_restore_trigger_needs_a_record_or_expect_and_without_trigger_just_unquiesces() {
    let daemon = Daemon::start();
    let out = run(&daemon, &["overseer", "post-restore", "--trigger"]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("overseer.json does not exist")
            && message.contains("pre-snapshot")
            && message.contains("--expect G"),
        "{message}"
    );
    let error = last_line(&out);
    assert_eq!(
        (&error["event"], &error["exit"]),
        (&Value::from("error"), &Value::from(1))
    );

    let out = run(&daemon, &["overseer", "post-restore", "--exec", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "readjusted");
    assert_eq!(lines[0]["triggered"], false);
    assert_eq!(lines[0]["expected"], Value::Null);
    assert_eq!(daemon.generation(), 0);
}

#[test]
fn post_restore_checks_the_notify_host_paths_before_it_does_anything() {
    let daemon = Daemon::start();
    let log = daemon.dir.join("log");
    let resume = format!("echo unquiesced >> '{}'", log.display());
    let port = daemon.dir.join("port");
    std::fs::write(&port, "").unwrap();
    let missing = daemon.dir.join("no-such-port");
    let cases = [
        (missing.clone(), "No such file or directory"),
        (daemon.dir.clone(), "a directory"),
    ];
    for (bad, problem) in cases {
        let out = run(
            &daemon,
            &[
                "overseer",
                "post-restore",
                "--trigger",
                "--expect",
                "0",
                "--exec",
                &resume,
                "--notify-host",
                path_str(&port),
                "--notify-host",
                path_str(&bad),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let message = stderr(&out);
        assert!(
            message.contains(&format!("--notify-host {}: {problem}", bad.display()))
                && message.contains("nothing was done"),
            "{message}"
        );
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "only the error: {lines:?}");
        assert_eq!(
            (&lines[0]["event"], &lines[0]["exit"]),
            (&"error".into(), &1.into())
        );
        assert_eq!(daemon.generation(), 0, "not bumped");
        assert_eq!(read(&log), "", "not un-quiesced");
        assert_eq!(read(&port), "", "the good port heard nothing");
    }
}

#[test]
fn pre_snapshot_checks_where_the_record_goes_before_it_quiesces() {
    let daemon = Daemon::start();
    let log = daemon.dir.join("log");
    let quiesce = format!("echo quiesced >> '{}'", log.display());
    let record = daemon.dir.join("no-such-dir/overseer.json");
    let out = run(
        &daemon,
        &[
            "overseer",
            "pre-snapshot",
            "--exec",
            &quiesce,
            "--record",
            path_str(&record),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot write the record {}", record.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(read(&log), "", "no quiesce hook ran");
}

#[test]
fn a_failed_post_restore_still_unquiesces_and_keeps_its_exit_code() {
    let mut daemon = Daemon::start();
    let log = daemon.dir.join("log");
    let resume = format!(
        "echo \"unquiesce $SYSGENID_OUTCOME ${{SYSGENID_GENERATION-unknown}}\" >> '{}'",
        log.display()
    );
    // --trigger with no record and no --expect: nothing to compare with.
    let out = run(
        &daemon,
        &["overseer", "post-restore", "--trigger", "--exec", &resume],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(read(&log), "unquiesce error 0\n", "un-quiesced anyway");
    let message = stderr(&out);
    assert!(
        message.contains("--expect G") && message.contains("un-quiesced anyway"),
        "{message}"
    );
    let error = last_line(&out);
    assert_eq!(error["event"], "error", "{error}");
    assert_eq!(error["exit"], 1, "{error}");
    assert_eq!(error["unquiesced"], true, "{error}");
    assert_eq!(error["triggered"], false, "{error}");
    assert_eq!(daemon.generation(), 0);

    // Kept quiesced on request.
    let out = run(
        &daemon,
        &[
            "overseer",
            "post-restore",
            "--trigger",
            "--no-unquiesce-on-error",
            "--exec",
            &resume,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("left quiesced"), "{}", stderr(&out));
    assert_eq!(last_line(&out)["unquiesced"], false);
    assert_eq!(read(&log), "unquiesce error 0\n", "no un-quiesce hook ran");

    // A hook that fails then is only logged: the exit code stays the original error's.
    let out = run(
        &daemon,
        &["overseer", "post-restore", "--trigger", "--exec", "exit 7"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("un-quiesce hook exit 7 failed (exit status 7)"),
        "{message}"
    );
    assert_eq!(last_line(&out)["unquiesced"], false);

    // No daemon: the wait fails with 5, after which the hooks still run.
    assert!(daemon.stop());
    let out = run(&daemon, &["overseer", "post-restore", "--exec", &resume]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let logged = read(&log);
    let last = logged.lines().last().unwrap_or_default();
    assert!(last.starts_with("unquiesce error "), "{logged}");
    assert_eq!(last_line(&out)["exit"], 5);
}

#[test]
fn a_failing_unquiesce_hook_exits_6_after_the_others_ran() {
    let daemon = Daemon::start();
    let log = daemon.dir.join("log");
    let after = format!("echo after >> '{}'", log.display());
    let out = run(
        &daemon,
        &[
            "overseer",
            "post-restore",
            "--exec",
            "exit 4",
            "--exec",
            &after,
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let failed = last_line(&out);
    assert_eq!(failed["event"], "hook-failed");
    assert_eq!(failed["phase"], "unquiesce");
    assert_eq!(failed["hook"], "exit 4");
    assert_eq!(failed["status"], "exit status 4");
    assert_eq!(failed["readjusted"], true);
    assert_eq!(failed["unquiesced"], false);
    assert_eq!(read(&log), "after\n", "the other hooks still ran");
}

#[test]
fn post_restore_trigger_without_the_capability_exits_4_and_still_unquiesces() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    // The hook runs as nobody too.
    let log = daemon.dir.join("log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    let resume = format!(
        "echo \"unquiesce $SYSGENID_OUTCOME\" >> '{}'",
        log.display()
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_sysgenid"))
        .args(["--device", daemon.device_str()])
        .args(["--state-dir", path_str(&daemon.state_dir)])
        .args(["overseer", "post-restore", "--trigger", "--expect", "0"])
        .args(["--grace", "0s", "--record", "/nonexistent/record"])
        .args(["--exec", &resume])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(
        read(&log),
        "unquiesce error\n",
        "the refused bump still un-quiesces"
    );
    assert!(
        stderr(&out).contains("CAP_CHECKPOINT_RESTORE"),
        "{}",
        stderr(&out)
    );
    let error = last_line(&out);
    assert_eq!(
        (&error["exit"], &error["unquiesced"]),
        (&Value::from(4), &Value::from(true))
    );
    assert_eq!(daemon.generation(), 0);
}

#[test]
fn on_a_terminal_it_shows_one_live_progress_line() {
    let daemon = Daemon::start();
    let lagger = Probe::lagging_tracked(&daemon, &[]);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let out = on_a_terminal(
        &daemon,
        &["overseer", "post-restore", "--timeout", "1500ms"],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let progress = format!(
        "\r\x1b[Kgeneration 1: waiting for 1 tracked watcher(s): pid {}",
        lagger.pid()
    );
    assert!(text.contains(&progress), "{text:?}");
    assert!(!text.contains("{\"event\""), "text, not JSON: {text:?}");
}

#[test]
fn on_a_terminal_the_grace_period_is_announced() {
    let daemon = Daemon::start();
    let args = [
        "overseer",
        "post-restore",
        "--trigger",
        "--expect",
        "0",
        "--grace",
        "200ms",
    ];
    let out = on_a_terminal(&daemon, &args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let grace = "generation 0: waiting up to 200ms for a hardware backend to bump it (--grace)";
    let bumped = "generation 1: bumped from 0";
    let (at_grace, at_bump) = (text.find(grace), text.find(bumped));
    assert!(
        at_grace.is_some() && at_bump.is_some() && at_grace < at_bump,
        "{text:?}"
    );
}
