//! `sysgenid overseer`: runs the workflow of the `sysgenid-overseer` library with options from
//! the command line, prints its events (JSON lines, or text with a live progress line), tells
//! systemd and the host the final line, and turns the outcome into the exit code.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use serde::Serialize;
use serde_json::Value;
use sysgenid::Paths;
use sysgenid_overseer::criu::{self, CriuStep};
use sysgenid_overseer::{
    ErrorReport, Event, HookPolicy, Laggard, PostRestoreOptions, PostRestoreOutcome,
    PreSnapshotOptions, PreSnapshotOutcome, Readjusted, TimedOut,
};

use crate::cli::{Cli, CriuActionArgs, PostRestoreArgs, PreSnapshotArgs, exit};
use crate::commands::{Failure, failure};
use crate::output;
use crate::progress::{ProgressLine, Stream};

/// At most one JSON progress line per this long.
const JSON_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a --notify-host path may take to accept the final line.
const NOTIFY_HOST_TIMEOUT: Duration = Duration::from_secs(5);
/// What the text says when the hooks were skipped.
const HOOKS_SKIPPED: &str = "un-quiesce hooks skipped (no user namespace)";

/// `overseer pre-snapshot`.
pub fn pre_snapshot(cli: &Cli, paths: &Paths, args: &PreSnapshotArgs) -> Result<(), Failure> {
    let options = PreSnapshotOptions {
        hooks_dir: args.hooks_dir.clone(),
        exec: args.exec.clone(),
        hook_timeout: args.hook_timeout,
        record: args.record.clone(),
    };
    let mut printer = Printer::new(cli);
    let result = sysgenid_overseer::pre_snapshot(paths, &options, |e| printer.show(e));
    let ending = match result {
        Ok(outcome) => quiesce_ending(outcome),
        Err(e) => error_ending(e),
    };
    printer.finish(ending, &[])
}

/// `overseer post-restore`, or its last stage under `criu-action` with `policy`.
pub fn post_restore(
    cli: &Cli,
    paths: &Paths,
    args: &PostRestoreArgs,
    policy: HookPolicy,
) -> Result<(), Failure> {
    let mut printer = Printer::new(cli);
    if let Err(message) = check_notify_hosts(&args.notify_host) {
        let event = Event::Error(ErrorReport {
            error: message.clone(),
            generation: None,
            restore: None,
            hook_failures: Vec::new(),
        });
        return printer.finish(failed(event, exit::ERROR, message), &[]);
    }
    let options = PostRestoreOptions {
        trigger: args.trigger,
        min: args.min,
        expect: args.expect,
        record: args.record.clone(),
        grace: args.grace,
        timeout: args.timeout,
        unquiesce_dir: args.unquiesce_dir.clone(),
        exec: args.exec.clone(),
        hook_timeout: args.hook_timeout,
        unquiesce_on_timeout: !args.no_unquiesce_on_timeout,
        unquiesce_on_error: !args.no_unquiesce_on_error,
        hooks: policy,
        // On a terminal the progress line shows each change.
        progress_interval: if printer.json {
            JSON_PROGRESS_INTERVAL
        } else {
            Duration::ZERO
        },
    };
    let result = sysgenid_overseer::post_restore(paths, &options, |e| printer.show(e));
    let ending = match result {
        Ok(outcome) => readjust_ending(outcome, args.timeout),
        Err(e) => error_ending(e),
    };
    printer.finish(ending, &args.notify_host)
}

/// `overseer criu-action`.
pub fn criu_action(cli: &Cli, paths: &Paths, args: &CriuActionArgs) -> Result<(), Failure> {
    match criu::action(args.log.as_deref(), warn)? {
        CriuStep::NotPostRestore | CriuStep::ChildExited(0) => Ok(()),
        CriuStep::Detached { copy, tree } => {
            output::warn(format_args!(
                "post-restore runs detached (pid {copy}) in the namespaces of pid {tree}"
            ));
            Ok(())
        }
        // It has reported already.
        CriuStep::ChildExited(code) => std::process::exit(code),
        CriuStep::PostRestore(policy) => post_restore(cli, paths, &args.post_restore, policy),
    }
}

/// Prints a warning event on stderr.
fn warn(event: &Event) {
    if let Event::Warning(warning) = event {
        output::warn(&warning.message);
    }
}

/// How a step ended: its final event, its text for a terminal on success, and the failure
/// that sets the exit code.
struct Ending {
    event: Event,
    text: Option<String>,
    failure: Option<Failure>,
}

fn quiesce_ending(outcome: PreSnapshotOutcome) -> Ending {
    let event = outcome.event();
    match outcome {
        PreSnapshotOutcome::Quiesced(q) => Ending {
            text: Some(format!(
                "quiesced at generation {} ({}); recorded in {}",
                q.generation,
                hooks_count(q.hooks.len()),
                q.record.display()
            )),
            event,
            failure: None,
        },
        PreSnapshotOutcome::HookFailed(h) => {
            let message = format!(
                "quiesce hook {} failed ({}); nothing recorded: do not take the snapshot, and \
                 run `sysgenid overseer post-restore` to un-quiesce",
                h.hook, h.status
            );
            failed(event, exit::EXEC_FAILED, message)
        }
    }
}

fn readjust_ending(outcome: PostRestoreOutcome, timeout: Duration) -> Ending {
    let event = outcome.event();
    match outcome {
        PostRestoreOutcome::Readjusted(r) => Ending {
            text: Some(readjusted_text(&r)),
            event,
            failure: None,
        },
        PostRestoreOutcome::TimedOut(t) => {
            failed(event, exit::TIMEOUT, timed_out_message(&t, timeout))
        }
        PostRestoreOutcome::HookFailed(h) => {
            let message = format!("un-quiesce hook {} failed ({})", h.hook, h.status);
            failed(event, exit::EXEC_FAILED, message)
        }
        PostRestoreOutcome::Failed(f) => {
            for h in &f.report.hook_failures {
                output::warn(format_args!(
                    "un-quiesce hook {} failed ({})",
                    h.hook, h.status
                ));
            }
            let code = Failure::from(f.error).code;
            failed(event, code, f.report.error)
        }
    }
}

fn error_ending(error: sysgenid_overseer::Error) -> Ending {
    Ending {
        event: Event::Error((&error).into()),
        text: None,
        failure: Some(error.into()),
    }
}

fn failed(event: Event, code: u8, message: String) -> Ending {
    Ending {
        event,
        text: None,
        failure: Some(failure(code, message)),
    }
}

fn readjusted_text(r: &Readjusted) -> String {
    let unquiesced = if r.restore.hooks_skipped {
        HOOKS_SKIPPED.to_owned()
    } else {
        format!("un-quiesced ({})", hooks_count(r.hooks))
    };
    format!(
        "readjusted: every tracked watcher has acknowledged generation {}; {unquiesced}",
        r.generation
    )
}

fn timed_out_message(t: &TimedOut, timeout: Duration) -> String {
    let names: Vec<String> = t.laggards.iter().map(Laggard::to_string).collect();
    format!(
        "timed out after {} with tracked watchers outdated at generation {}: {}; {}",
        humantime::format_duration(timeout),
        t.generation,
        if names.is_empty() {
            "none left".to_owned()
        } else {
            names.join(", ")
        },
        if t.restore.hooks_skipped {
            HOOKS_SKIPPED
        } else if t.restore.unquiesced {
            "un-quiesced anyway"
        } else {
            "left quiesced (--no-unquiesce-on-timeout)"
        }
    )
}

/// "1 hook", "2 hooks".
fn hooks_count(n: usize) -> String {
    match n {
        1 => "1 hook".to_owned(),
        n => format!("{n} hooks"),
    }
}

/// A JSON line: the event, and with an error the exit code.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    event: &'a Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<u8>,
}

fn json_line(event: &Event, exit: Option<u8>) -> Value {
    serde_json::to_value(Line { event, exit }).unwrap_or_else(
        |e| serde_json::json!({ "event": "error", "error": format!("cannot print an event: {e}") }),
    )
}

/// JSON lines (with --json, or when stdout is not a terminal), or text with a live progress
/// line.
struct Printer {
    json: bool,
    progress: ProgressLine,
}

impl Printer {
    fn new(cli: &Cli) -> Printer {
        Printer {
            json: cli.json || !Stream::Stdout.is_terminal(),
            progress: ProgressLine::new(Stream::Stdout),
        }
    }

    /// Prints an event as it happens; the final one waits for [`Printer::finish`].
    fn show(&mut self, event: &Event) {
        match event {
            Event::Grace(_) | Event::Bumped(_) if self.json => say(json_line(event, None)),
            Event::Grace(g) => {
                self.clear_progress();
                say(format_args!(
                    "generation {}: waiting up to {} for a hardware backend to bump it (--grace)",
                    g.expected,
                    humantime::format_duration(Duration::from_millis(g.grace_ms))
                ));
            }
            Event::Bumped(b) => {
                self.clear_progress();
                if b.triggered {
                    say(format_args!(
                        "generation {}: bumped from {}",
                        b.generation, b.expected
                    ));
                } else {
                    say(format_args!(
                        "generation {}: already moved past {}; no trigger",
                        b.generation, b.expected
                    ));
                }
            }
            Event::Waiting(_) if self.json => say(json_line(event, None)),
            Event::Waiting(w) => {
                let names: Vec<String> = w.outdated.iter().map(Laggard::to_string).collect();
                let text = format!(
                    "generation {}: waiting for {} tracked watcher(s): {}",
                    w.generation,
                    names.len(),
                    names.join(", ")
                );
                self.progress.show(&text);
            }
            Event::Warning(_) => {
                self.clear_progress();
                warn(event);
            }
            // Hooks may write to the terminal next.
            _ => self.clear_progress(),
        }
    }

    /// Ends the live progress line.
    fn clear_progress(&mut self) {
        self.progress.clear();
    }

    /// Prints the final line, tells systemd and the host, and turns the ending into the result.
    fn finish(mut self, ending: Ending, hosts: &[PathBuf]) -> Result<(), Failure> {
        self.clear_progress();
        let Ending {
            event,
            text,
            failure: mut failed,
        } = ending;
        let exit = match event {
            Event::Error(_) => failed.as_ref().map(|f| f.code),
            _ => None,
        };
        let line = json_line(&event, exit);
        if self.json {
            say(&line);
        } else if let Some(text) = text {
            say(text);
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
                    Some(_) => output::warn(message),
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Prints a line on stdout. The workflow runs to its end even if stdout's reader has gone: the
/// host and systemd still hear the outcome, and the exit code still tells it.
fn say(line: impl std::fmt::Display) {
    let _ = output::line(line);
}

/// Checks, before anything is bumped or un-quiesced, that each --notify-host path exists, is
/// not a directory, and may be written by this user: a readiness line that cannot be delivered
/// must not be found out only after the work is done.
fn check_notify_hosts(hosts: &[PathBuf]) -> Result<(), String> {
    for host in hosts {
        let problem = match std::fs::metadata(host) {
            Err(e) => Some(e.to_string()),
            Ok(meta) if meta.is_dir() => Some("a directory".to_owned()),
            Ok(_) => rustix::fs::access(host, rustix::fs::Access::WRITE_OK)
                .err()
                .map(|e| format!("not writable: {e}")),
        };
        if let Some(problem) = problem {
            return Err(format!(
                "--notify-host {}: {problem}; nothing was done: name a port (/dev/virtio-ports/NAME, \
                 /dev/ttyS1) or a file that exists and that this user may write",
                host.display()
            ));
        }
    }
    Ok(())
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
    use serde_json::json;
    use sysgenid_overseer::{ErrorReport, Restore};

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

    #[test]
    fn an_error_line_carries_the_exit_code_in_sorted_keys() {
        let event = Event::Error(ErrorReport {
            error: "no daemon".to_owned(),
            generation: Some(2),
            restore: Some(Restore {
                expected: Some(1),
                triggered: false,
                unquiesced: true,
                hooks_skipped: false,
            }),
            hook_failures: Vec::new(),
        });
        assert_eq!(
            json_line(&event, Some(5)).to_string(),
            r#"{"error":"no daemon","event":"error","exit":5,"expected":1,"generation":2,"triggered":false,"unquiesced":true}"#
        );
    }
}
