//! `sysgenid overseer`: the snapshot-safe workflow, from quiescing before a snapshot to telling
//! the host that a restored machine has readjusted.

use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sysgenid::{Paths, Probe, Watcher, WatcherOptions};

use crate::cli::{Cli, PostRestoreArgs, PreSnapshotArgs, exit};
use crate::commands::{Failure, failure};
use crate::hooks::{self, Hook, HookFailure};

const QUIESCE_DIR: &str = "/etc/sysgenid/quiesce.d";
const UNQUIESCE_DIR: &str = "/etc/sysgenid/unquiesce.d";
/// The record's file name in the state directory.
const RECORD_NAME: &str = "overseer.json";
/// How often progress is polled from the status document.
const PROGRESS_POLL: Duration = Duration::from_millis(200);
/// At most one JSON progress line per this long.
const JSON_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a --notify-host path may take to accept the final line.
const NOTIFY_HOST_TIMEOUT: Duration = Duration::from_secs(5);

/// What pre-snapshot records: the generation the snapshot will hold.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    generation: u32,
    /// Seconds since the epoch, for people reading the file.
    quiesced_at: u64,
    pid: u32,
}

/// A tracked watcher that has not acknowledged the current generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Laggard {
    pid: u32,
    command: Option<String>,
}

impl Laggard {
    fn describe(&self) -> String {
        format!(
            "pid {} ({})",
            self.pid,
            self.command.as_deref().unwrap_or("gone")
        )
    }
}

fn laggards(status: &sysgenid::Status) -> Vec<Laggard> {
    status
        .outdated_files
        .iter()
        .filter(|f| f.tracked)
        .map(|f| Laggard {
            pid: f.pid,
            command: f.command.clone(),
        })
        .collect()
}

/// How a step ended: its final JSON line, its text for a terminal on success, and the failure
/// that sets the exit code.
struct Ending {
    line: Value,
    text: Option<String>,
    failure: Option<Failure>,
}

/// JSON lines (with --json, or when stdout is not a terminal), or text with a live progress
/// line.
struct Report {
    json: bool,
}

impl Report {
    fn new(cli: &Cli) -> Report {
        Report {
            json: cli.json || !io::stdout().is_terminal(),
        }
    }

    fn line(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", text());
        }
    }

    /// Prints the final line, tells systemd and the host, and turns the ending into the result.
    fn finish(&self, result: Result<Ending, Failure>, hosts: &[PathBuf]) -> Result<(), Failure> {
        let (line, text, mut failed) = match result {
            Ok(ending) => (ending.line, ending.text, ending.failure),
            Err(f) => {
                let line = json!({ "event": "error", "error": f.message, "exit": f.code });
                (line, None, Some(f))
            }
        };
        if self.json {
            println!("{line}");
        } else if let Some(text) = text {
            println!("{text}");
        }
        if let Some(f) = failed.as_mut() {
            f.reported = self.json;
        }
        let status = match (line["event"].as_str(), line["generation"].as_u64()) {
            (Some(event), Some(generation)) => format!("{event} generation {generation}"),
            (event, _) => event.unwrap_or("error").to_owned(),
        };
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status)]);
        for host in hosts {
            if let Err(e) = notify_host(host, &line) {
                let message = format!("cannot tell the host through {}: {e}", host.display());
                match failed {
                    None => failed = Some(failure(exit::ERROR, message)),
                    Some(_) => eprintln!("sysgenid: {message}"),
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// `overseer pre-snapshot`.
pub fn pre_snapshot(cli: &Cli, paths: &Paths, args: &PreSnapshotArgs) -> Result<(), Failure> {
    let report = Report::new(cli);
    report.finish(quiesce(paths, args), &[])
}

/// Whether post-restore runs the un-quiesce hooks and `--exec` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPolicy {
    /// Run them.
    Run,
    /// Run none (criu-action, for a container without a user namespace of its own, whose
    /// hooks would run as host root); the final line says `"hooks_skipped": true`.
    Skip,
}

/// `overseer post-restore`.
pub fn post_restore(
    cli: &Cli,
    paths: &Paths,
    args: &PostRestoreArgs,
    policy: HookPolicy,
) -> Result<(), Failure> {
    let report = Report::new(cli);
    report.finish(readjust(&report, paths, args, policy), &args.notify_host)
}

fn quiesce(paths: &Paths, args: &PreSnapshotArgs) -> Result<Ending, Failure> {
    let hooks = hooks_of(&args.hooks_dir, QUIESCE_DIR, &args.exec)?;
    // The daemon must be running: post-restore will need it.
    let before = sysgenid::status_at(paths)?.generation;
    let env = hook_env(paths, "quiesce", Some(before), None);
    if let Some(f) = hooks::run_all(&hooks, &env, args.hook_timeout, true).first() {
        let line = json!({
            "event": "hook-failed", "phase": "quiesce", "hook": f.hook, "status": f.status,
            "generation": before,
        });
        let message = format!(
            "quiesce hook {} failed ({}); nothing recorded: do not take the snapshot, and run \
             `sysgenid overseer post-restore` to un-quiesce",
            f.hook, f.status
        );
        return Ok(Ending {
            line,
            text: None,
            failure: Some(failure(exit::EXEC_FAILED, message)),
        });
    }
    let generation = sysgenid::status_at(paths)?.generation;
    let record = record_path(paths, &args.record);
    write_record(&record, generation)?;
    let names: Vec<String> = hooks.iter().map(Hook::name).collect();
    let line = json!({
        "event": "quiesced", "generation": generation, "record": record, "hooks": names,
    });
    let text = format!(
        "quiesced at generation {generation} ({}); recorded in {}",
        hooks_count(names.len()),
        record.display()
    );
    Ok(Ending {
        line,
        text: Some(text),
        failure: None,
    })
}

/// What post-restore has done so far, for its report if it fails.
#[derive(Debug, Default)]
struct Progress {
    expected: Option<u32>,
    triggered: bool,
}

fn readjust(
    report: &Report,
    paths: &Paths,
    args: &PostRestoreArgs,
    policy: HookPolicy,
) -> Result<Ending, Failure> {
    let skipped = policy == HookPolicy::Skip;
    let hooks = if skipped {
        Vec::new()
    } else {
        hooks_of(&args.unquiesce_dir, UNQUIESCE_DIR, &args.exec)?
    };
    // From here on the hooks are known: a failure still un-quiesces.
    let mut progress = Progress::default();
    let (generation, timed_out) = match bump_and_wait(report, paths, args, &mut progress) {
        Ok(done) => done,
        Err(f) => {
            return Ok(unquiesce_after_error(
                paths, args, &hooks, skipped, &progress, f,
            ));
        }
    };
    let Progress {
        expected,
        triggered,
    } = progress;
    let unquiesce = timed_out.is_none() || !args.no_unquiesce_on_timeout;
    let outcome = if timed_out.is_some() {
        "timeout"
    } else {
        "readjusted"
    };
    let failed = if unquiesce {
        let env = hook_env(paths, "unquiesce", Some(generation), Some(outcome));
        hooks::run_all(&hooks, &env, args.hook_timeout, false)
    } else {
        Vec::new()
    };

    let mut line = json!({
        "generation": generation, "expected": expected, "triggered": triggered,
        "unquiesced": unquiesce && failed.is_empty(),
    });
    mark_skipped(&mut line, skipped);
    if let Some(HookFailure { hook, status }) = failed.first() {
        line["event"] = json!("hook-failed");
        line["phase"] = json!("unquiesce");
        line["hook"] = json!(hook);
        line["status"] = json!(status);
        line["failed"] = json!(
            failed
                .iter()
                .map(|f| json!({"hook": f.hook, "status": f.status}))
                .collect::<Vec<_>>()
        );
        line["readjusted"] = json!(timed_out.is_none());
        line["laggards"] = json!(timed_out.clone().unwrap_or_default());
        let message = format!("un-quiesce hook {hook} failed ({status})");
        return Ok(Ending {
            line,
            text: None,
            failure: Some(failure(exit::EXEC_FAILED, message)),
        });
    }
    if let Some(laggards) = timed_out {
        line["event"] = json!("timeout");
        line["laggards"] = json!(laggards);
        let names: Vec<String> = laggards.iter().map(Laggard::describe).collect();
        let message = format!(
            "timed out after {} with tracked watchers outdated at generation {generation}: {}; {}",
            humantime::format_duration(args.timeout),
            if names.is_empty() {
                "none left".to_owned()
            } else {
                names.join(", ")
            },
            if skipped {
                "un-quiesce hooks skipped (no user namespace)"
            } else if unquiesce {
                "un-quiesced anyway"
            } else {
                "left quiesced (--no-unquiesce-on-timeout)"
            }
        );
        return Ok(Ending {
            line,
            text: None,
            failure: Some(failure(exit::TIMEOUT, message)),
        });
    }
    line["event"] = json!("readjusted");
    let unquiesced = if skipped {
        "un-quiesce hooks skipped (no user namespace)".to_owned()
    } else {
        format!("un-quiesced ({})", hooks_count(hooks.len()))
    };
    let text = format!(
        "readjusted: every tracked watcher has acknowledged generation {generation}; {unquiesced}"
    );
    Ok(Ending {
        line,
        text: Some(text),
        failure: None,
    })
}

/// The bump (with --trigger), the record's removal and the wait: the generation after it, and
/// the laggards if it timed out.
fn bump_and_wait(
    report: &Report,
    paths: &Paths,
    args: &PostRestoreArgs,
    progress: &mut Progress,
) -> Result<(u32, Option<Vec<Laggard>>), Failure> {
    let record_path = record_path(paths, &args.record);
    let record = read_record(&record_path)?;
    let expected = args.expect.or(record.as_ref().map(|r| r.generation));
    progress.expected = expected;
    if args.trigger {
        let expected = expected.ok_or_else(|| {
            failure(
                exit::ERROR,
                format!(
                    "no generation to expect: {} does not exist; run `sysgenid overseer \
                     pre-snapshot` before taking the snapshot, or pass --expect G",
                    record_path.display()
                ),
            )
        })?;
        let (generation, bumped) = bump_unless_moved(paths, expected, args.min, args.grace)?;
        progress.triggered = bumped;
        let line = json!({
            "event": "bumped", "expected": expected, "generation": generation,
            "triggered": bumped,
        });
        report.line(&line, || {
            if bumped {
                format!("generation {generation}: bumped from {expected}")
            } else {
                format!("generation {generation}: already moved past {expected}; no trigger")
            }
        });
    }
    // The cycle is over: a later restore must not reuse the record.
    if record.is_some()
        && let Err(e) = std::fs::remove_file(&record_path)
    {
        eprintln!("sysgenid: cannot remove {}: {e}", record_path.display());
    }
    let timed_out = wait_with_progress(report, paths, args.timeout)?;
    let generation = sysgenid::status_at(paths)?.generation;
    Ok((generation, timed_out))
}

/// After post-restore failed: runs the un-quiesce hooks with SYSGENID_OUTCOME=error (unless
/// --no-unquiesce-on-error or `skipped`), logging their failures, and reports the original
/// failure.
fn unquiesce_after_error(
    paths: &Paths,
    args: &PostRestoreArgs,
    hooks: &[Hook],
    skipped: bool,
    progress: &Progress,
    mut failed: Failure,
) -> Ending {
    let generation = Probe::open(paths).ok().map(|p| p.generation());
    let unquiesce = !args.no_unquiesce_on_error;
    let hook_failures = if unquiesce {
        let env = hook_env(paths, "unquiesce", generation, Some("error"));
        hooks::run_all(hooks, &env, args.hook_timeout, false)
    } else {
        Vec::new()
    };
    for HookFailure { hook, status } in &hook_failures {
        eprintln!("sysgenid: un-quiesce hook {hook} failed ({status})");
    }
    let unquiesced = unquiesce && hook_failures.is_empty();
    let what = if skipped {
        "un-quiesce hooks skipped (no user namespace)"
    } else if !unquiesce {
        "left quiesced (--no-unquiesce-on-error)"
    } else if unquiesced {
        "un-quiesced anyway (SYSGENID_OUTCOME=error)"
    } else {
        "un-quiesce hooks failed too"
    };
    failed.message = format!("{}; {what}", failed.message);
    let mut line = json!({
        "event": "error", "error": failed.message, "exit": failed.code,
        "expected": progress.expected, "triggered": progress.triggered, "unquiesced": unquiesced,
    });
    if let Some(generation) = generation {
        line["generation"] = json!(generation);
    }
    mark_skipped(&mut line, skipped);
    Ending {
        line,
        text: None,
        failure: Some(failed),
    }
}

/// With skipped hooks, nothing was un-quiesced: the line says so.
fn mark_skipped(line: &mut Value, skipped: bool) {
    if skipped {
        line["hooks_skipped"] = json!(true);
        line["unquiesced"] = json!(false);
    }
}

/// "1 hook", "2 hooks".
fn hooks_count(n: usize) -> String {
    match n {
        1 => "1 hook".to_owned(),
        n => format!("{n} hooks"),
    }
}

/// The hooks of `dir` (the default one may be missing) and the `--exec` commands.
fn hooks_of(dir: &Option<PathBuf>, default: &str, execs: &[String]) -> Result<Vec<Hook>, Failure> {
    let (dir, required) = match dir {
        Some(dir) => (dir.clone(), true),
        None => (PathBuf::from(default), false),
    };
    hooks::collect(&dir, required, execs).map_err(|e| failure(exit::ERROR, e))
}

/// What hooks find in their environment; SYSGENID_GENERATION is left out when it cannot be
/// read.
fn hook_env(
    paths: &Paths,
    phase: &str,
    generation: Option<u32>,
    outcome: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("SYSGENID_PHASE", phase.to_owned()),
        ("SYSGENID_DEVICE", paths.device().display().to_string()),
        (
            "SYSGENID_STATE_DIR",
            paths.state_dir().display().to_string(),
        ),
    ];
    if let Some(generation) = generation {
        env.push(("SYSGENID_GENERATION", generation.to_string()));
    }
    if let Some(outcome) = outcome {
        env.push(("SYSGENID_OUTCOME", outcome.to_owned()));
    }
    env
}

fn record_path(paths: &Paths, explicit: &Option<PathBuf>) -> PathBuf {
    explicit
        .clone()
        .unwrap_or_else(|| paths.state_dir().join(RECORD_NAME))
}

/// Writes the record whole (a temporary file renamed over it), readable by everyone.
fn write_record(path: &Path, generation: u32) -> Result<(), Failure> {
    let record = Record {
        generation,
        quiesced_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        pid: std::process::id(),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let write = || -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        let text = serde_json::to_string(&record).map_err(io::Error::other)?;
        writeln!(file, "{text}")?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        failure(
            exit::ERROR,
            format!("cannot write the record {}: {e}", path.display()),
        )
    })
}

/// The record, if there is one. It decides whether the generation is bumped, so it must be
/// ours and writable by no one else.
fn read_record(path: &Path) -> Result<Option<Record>, Failure> {
    let bad = |why: String| failure(exit::ERROR, format!("record {}: {why}", path.display()));
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if meta.uid() != rustix::process::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(bad(
            "refusing it: it must belong to this user and be writable by no one else".to_owned(),
        ));
    }
    serde_json::from_reader(file)
        .map(Some)
        .map_err(|e| bad(format!("not a record of pre-snapshot: {e}")))
}

/// Waits up to `grace` for a backend to move the generation past `expected`; if none did, bumps
/// it with a conditional trigger, which bumps nothing if one did meanwhile. Returns the
/// generation and whether this call bumped it.
fn bump_unless_moved(
    paths: &Paths,
    expected: u32,
    min: Option<u32>,
    grace: Duration,
) -> Result<(u32, bool), Failure> {
    // Open first, then look: a bump after the look makes the file readable.
    let mut watcher = Watcher::open_with(paths, WatcherOptions::new().read_only())?;
    let current = Probe::open(paths)?.generation();
    if current != expected {
        return Ok((current, false));
    }
    if readable_within(&watcher, grace)?
        && let Some(change) = watcher.try_read()?
    {
        return Ok((change.generation, false));
    }
    drop(watcher);
    let outcome = sysgenid::trigger_if_at(paths, expected, min)?;
    Ok((outcome.generation, outcome.bumped))
}

/// Whether `watcher` turns readable (outdated) within `wait`.
fn readable_within(watcher: &Watcher, wait: Duration) -> Result<bool, Failure> {
    let deadline = Instant::now() + wait.min(crate::hooks::FOREVER);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(watcher, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&left)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(failure(exit::ERROR, format!("poll: {e}"))),
        }
    }
}

/// Waits until every tracked watcher has acknowledged, showing who is outdated meanwhile.
/// Returns `None` when they all did, or the laggards when `timeout` passed first.
fn wait_with_progress(
    report: &Report,
    paths: &Paths,
    timeout: Duration,
) -> Result<Option<Vec<Laggard>>, Failure> {
    let (tx, rx) = mpsc::channel();
    let waiter = paths.clone();
    std::thread::spawn(move || {
        let _ = tx.send(sysgenid::wait_watchers_at(&waiter, Some(timeout)));
    });
    let mut shown: Option<(u32, Vec<Laggard>)> = None;
    let mut shown_at: Option<Instant> = None;
    let result = loop {
        match rx.recv_timeout(PROGRESS_POLL) {
            Ok(result) => break result,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(failure(exit::ERROR, "the wait for watchers ended abruptly"));
            }
        }
        let Ok(status) = sysgenid::status_at(paths) else {
            continue;
        };
        let now = (status.generation, laggards(&status));
        let too_soon =
            report.json && shown_at.is_some_and(|t| t.elapsed() < JSON_PROGRESS_INTERVAL);
        // No one left to name: the wait is about to end.
        if now.1.is_empty() || shown.as_ref() == Some(&now) || too_soon {
            continue;
        }
        let (generation, outdated) = &now;
        if report.json {
            let line =
                json!({ "event": "waiting", "generation": generation, "outdated": outdated });
            println!("{line}");
        } else {
            let names: Vec<String> = outdated.iter().map(Laggard::describe).collect();
            let text = format!(
                "generation {generation}: waiting for {} tracked watcher(s): {}",
                names.len(),
                names.join(", ")
            );
            print!("\r\x1b[K{}", fit_terminal(&text));
            let _ = io::stdout().flush();
        }
        shown = Some(now);
        shown_at = Some(Instant::now());
    };
    if !report.json && shown.is_some() {
        print!("\r\x1b[K");
        let _ = io::stdout().flush();
    }
    match result {
        Ok(()) => Ok(None),
        Err(sysgenid::Error::Timeout { .. }) => {
            let status = sysgenid::status_at(paths)?;
            Ok(Some(laggards(&status)))
        }
        Err(e) => Err(e.into()),
    }
}

/// `text` cut to the terminal's width, so the progress line stays one line.
fn fit_terminal(text: &str) -> String {
    let width = rustix::termios::tcgetwinsize(io::stdout())
        .map(|w| usize::from(w.ws_col))
        .ok()
        .filter(|&w| w > 0)
        .unwrap_or(80);
    text.chars().take(width.saturating_sub(1)).collect()
}

/// Appends `line` to `path` (a file, a serial or virtio-serial port) without waiting for
/// longer than [`NOTIFY_HOST_TIMEOUT`] for a port that does not drain.
fn notify_host(path: &Path, line: &Value) -> io::Result<()> {
    let flags = OFlags::WRONLY | OFlags::APPEND | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())?;
    let data = format!("{line}\n");
    let mut rest = data.as_bytes();
    let deadline = Instant::now() + NOTIFY_HOST_TIMEOUT;
    while !rest.is_empty() {
        match rustix::io::write(&fd, rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the port did not take the line (is the host side connected?)",
                    ));
                }
                let left = Timespec::try_from(left).map_err(io::Error::other)?;
                let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
                match rustix::event::poll(&mut fds, Some(&left)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_record_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_NAME);
        assert!(read_record(&path).unwrap().is_none());
        write_record(&path, 41).unwrap();
        assert_eq!(read_record(&path).unwrap().unwrap().generation, 41);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_record_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_NAME);
        write_record(&path, 41).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read_record(&path).unwrap_err();
        assert!(
            e.message.contains("writable by no one else"),
            "{}",
            e.message
        );
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_record(&path).unwrap_err();
        assert!(e.message.contains("not a record"), "{}", e.message);
    }

    #[test]
    fn notify_host_appends_one_line_and_needs_the_path_to_exist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("port");
        assert!(notify_host(&path, &json!({"event": "readjusted"})).is_err());
        std::fs::write(&path, "earlier\n").unwrap();
        notify_host(&path, &json!({"event": "readjusted"})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "earlier\n{\"event\":\"readjusted\"}\n"
        );
    }
}
