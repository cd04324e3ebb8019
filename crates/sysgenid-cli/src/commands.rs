//! What each command does, on top of the `sysgenid` client library.

use std::os::fd::{AsFd, BorrowedFd};
use std::process::Command as Process;
use std::time::Duration;

use serde_json::json;
use sysgenid::{Error, Paths, Probe, Watcher, WatcherOptions};
use sysgenid_overseer::{Error as OverseerError, HookPolicy, Laggard};

use crate::cli::{Cli, Command, OverseerStep, WatchArgs, exit};
use crate::output;
use crate::progress::{ProgressLine, Stream};

/// A command's failure: the exit code and what to say.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// The message.
    pub message: String,
    /// Whether the command already reported it on stdout as JSON.
    pub reported: bool,
}

/// The exit code for an error of the client library.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Timeout { .. } => exit::TIMEOUT,
        Error::TriggerDenied | Error::WriteAccessDenied { .. } => exit::NOT_PERMITTED,
        e if e.daemon_not_running() => exit::NOT_RUNNING,
        _ => exit::ERROR,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        failure(exit_code(&e), e.to_string())
    }
}

impl From<OverseerError> for Failure {
    fn from(e: OverseerError) -> Failure {
        let code = match &e {
            OverseerError::Client(e) => exit_code(e),
            OverseerError::Criu(e) if e.usage() => exit::USAGE,
            OverseerError::Criu(e) if e.not_permitted() => exit::NOT_PERMITTED,
            _ => exit::ERROR,
        };
        failure(code, e.to_string())
    }
}

impl Failure {
    /// Stdout's reader has gone: stop quietly with exit 0, as documented in `--help`.
    pub fn stdout_closed() -> Failure {
        Failure {
            code: exit::OK,
            message: String::new(),
            reported: true,
        }
    }

    /// Whether this is a quiet stop ([`Failure::stdout_closed`]) rather than an error.
    pub fn is_quiet(&self) -> bool {
        self.code == exit::OK
    }
}

/// A failure with this exit code and message, not yet reported.
pub fn failure(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
        reported: false,
    }
}

/// Prints a result line: JSON, or the text.
fn say(cli: &Cli, value: serde_json::Value, text: impl FnOnce() -> String) -> Result<(), Failure> {
    if cli.json {
        output::line(value)
    } else {
        output::line(text())
    }
}

/// Runs the command.
pub fn run(cli: &Cli) -> Result<(), Failure> {
    let mut paths = Paths::from_env();
    if let Some(device) = &cli.device {
        paths = paths.with_device(device);
    }
    if let Some(dir) = &cli.state_dir {
        paths = paths.with_state_dir(dir);
    }
    match &cli.command {
        Command::Get { id: false } => {
            let probe = Probe::open(&paths)?;
            let generation = probe.generation();
            say(cli, json!({ "generation": generation }), || {
                generation.to_string()
            })?;
            Ok(())
        }
        Command::Get { id: true } => get_with_id(cli, &paths),
        Command::Watch(args) => watch(cli, &paths, args),
        Command::Ack { fd } => ack_fd(cli, *fd),
        Command::Trigger { min } => {
            sysgenid::trigger_at(&paths, *min)?;
            let generation = Probe::open(&paths)?.generation();
            say(cli, json!({ "generation": generation }), || {
                format!("generation {generation}")
            })?;
            Ok(())
        }
        Command::WaitWatchers { timeout } => wait_watchers(cli, &paths, *timeout),
        Command::Status => status(cli, &paths),
        Command::Overseer {
            step: OverseerStep::PreSnapshot(args),
        } => crate::overseer::pre_snapshot(cli, &paths, args),
        Command::Overseer {
            step: OverseerStep::PostRestore(args),
        } => crate::overseer::post_restore(cli, &paths, args, HookPolicy::Run),
        Command::Overseer {
            step: OverseerStep::CriuAction(args),
        } => crate::overseer::criu_action(cli, &paths, args),
        Command::Generate { what, dir, doc_dir } => {
            crate::generate::print(what, dir.as_deref(), doc_dir.as_deref())
        }
    }
}

fn watch(cli: &Cli, paths: &Paths, args: &WatchArgs) -> Result<(), Failure> {
    // Only acknowledging needs the device open for writing (root or the writer group), and only
    // a tracked watcher needs to acknowledge: anyone may watch read-only.
    let options = if args.track {
        WatcherOptions::new().tracking(true)
    } else {
        WatcherOptions::new().read_only()
    };
    let mut watcher = Watcher::open_with(paths, options)?;
    if Stream::Stderr.is_terminal() {
        announce_watch(paths, &watcher);
    }
    let mut seen = 0u64;
    while args.count.is_none_or(|n| seen < n) {
        let change = watcher.next_change()?;
        seen += 1;
        let generation = match &args.exec {
            Some(cmd) => exec_until_done(cmd, args.keep_going, &mut watcher, change.generation)?,
            None => change.generation,
        };
        watcher.mark_handled(generation)?;
        say(
            cli,
            json!({ "generation": generation, "reopened": change.reopened, "acked": args.track }),
            || {
                let note = if change.reopened {
                    " (reopened after a daemon restart)"
                } else {
                    ""
                };
                format!("generation {generation}{note}")
            },
        )?;
    }
    Ok(())
}

/// Tells the person at the terminal what `watch` waits for.
fn announce_watch(paths: &Paths, watcher: &Watcher) {
    let from = match watcher.last_seen() {
        Some(generation) => format!("from generation {generation}"),
        None => "(the current generation is unknown: no page file)".to_owned(),
    };
    output::warn(format_args!(
        "watching {} {from}{}; a line per change",
        paths.device().display(),
        if watcher.is_tracking() {
            ", tracked"
        } else {
            ""
        }
    ));
}

/// Runs `cmd` for `generation` until it succeeds; with `keep_going` it retries with a backoff,
/// for the newest generation, else its failure ends the watch. Returns the generation it ran
/// for last.
fn exec_until_done(
    cmd: &str,
    keep_going: bool,
    watcher: &mut Watcher,
    mut generation: u32,
) -> Result<u32, Failure> {
    let mut delay = Duration::from_secs(1);
    loop {
        match run_hook(cmd, generation) {
            Ok(()) => return Ok(generation),
            Err(why) if keep_going => {
                output::warn(format_args!(
                    "{why}; generation {generation} not acknowledged, retrying in {}",
                    humantime::format_duration(delay)
                ));
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(30));
                // Run for the newest generation if another bump came meanwhile.
                if let Some(newer) = watcher.try_read()? {
                    generation = newer.generation;
                }
            }
            Err(why) => {
                return Err(failure(
                    exit::EXEC_FAILED,
                    format!("{why}; generation {generation} not acknowledged"),
                ));
            }
        }
    }
}

fn run_hook(cmd: &str, generation: u32) -> Result<(), String> {
    let status = Process::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("SYSGENID_GENERATION", generation.to_string())
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})"))
    }
}

fn ack_fd(cli: &Cli, fd: i32) -> Result<(), Failure> {
    if fd < 0 {
        return Err(failure(
            exit::USAGE,
            format!("--fd {fd} is not a file descriptor"),
        ));
    }
    // SAFETY: the caller names a descriptor it opened for us; it is only borrowed for the
    // duration of this call, and `fcntl` below checks that it is open before any other use.
    let file = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = rustix::fs::fcntl_getfl(file).map_err(|e| {
        failure(
            exit::USAGE,
            format!("--fd {fd}: {e}; open it first, e.g. `exec {fd}<>/dev/sysgenid`"),
        )
    })?;
    if !flags.contains(rustix::fs::OFlags::RDWR) {
        return Err(failure(
            exit::USAGE,
            format!(
                "--fd {fd} is not open for reading and writing; open it with `exec {fd}<>/dev/sysgenid`"
            ),
        ));
    }
    let mut fds = [rustix::event::PollFd::new(
        &file,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec::default();
    rustix::event::poll(&mut fds, Some(&zero))
        .map_err(|e| failure(exit::ERROR, format!("poll: {e}")))?;
    if fds[0].revents().is_empty() {
        say(cli, json!({ "acked": false, "up_to_date": true }), || {
            "already up to date: nothing to acknowledge".to_owned()
        })?;
        return Ok(());
    }
    let mut buf = [0u8; 4];
    let n = rustix::io::read(file.as_fd(), &mut buf)
        .map_err(|e| failure(exit::ERROR, format!("read from --fd {fd}: {e}")))?;
    let generation = sysgenid_abi::decode_generation(&buf[..n]).ok_or_else(|| {
        failure(
            exit::ERROR,
            format!("--fd {fd} gave {n} bytes: is it the sysgenid device?"),
        )
    })?;
    rustix::io::write(file, &buf).map_err(|e| {
        failure(
            exit::ERROR,
            format!("acknowledging generation {generation} on --fd {fd}: {e}"),
        )
    })?;
    say(
        cli,
        json!({ "acked": true, "generation": generation }),
        || format!("acknowledged generation {generation}"),
    )?;
    Ok(())
}

fn wait_watchers(cli: &Cli, paths: &Paths, timeout: Option<Duration>) -> Result<(), Failure> {
    // On a terminal, stderr shows who is being waited for; scripts see only the result.
    let mut progress = Stream::Stderr
        .is_terminal()
        .then(|| ProgressLine::new(Stream::Stderr));
    let result = sysgenid_overseer::wait_watchers(paths, timeout, Duration::ZERO, |waiting| {
        if let Some(line) = progress.as_mut() {
            let names: Vec<String> = waiting.outdated.iter().map(Laggard::to_string).collect();
            line.show(&format!(
                "waiting for {} tracked watcher(s) to acknowledge generation {}: {}",
                names.len(),
                waiting.generation,
                names.join(", ")
            ));
        }
    });
    if let Some(line) = progress.as_mut() {
        line.clear();
    }
    match result? {
        None => {
            let generation = Probe::open(paths)?.generation();
            say(
                cli,
                json!({ "readjusted": true, "generation": generation }),
                || format!("every tracked watcher has acknowledged generation {generation}"),
            )
        }
        Some(laggards) => {
            let names: Vec<String> = laggards
                .iter()
                .map(|l| format!("{} ({})", l.pid, l.command.as_deref().unwrap_or("gone")))
                .collect();
            let waited = timeout.map(|t| humantime::format_duration(t).to_string());
            Err(failure(
                exit::TIMEOUT,
                format!(
                    "timed out after {}; still outdated: {}",
                    waited.unwrap_or_default(),
                    if names.is_empty() {
                        "none left".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            ))
        }
    }
}

/// `get --id`: the generation and its ID, a consistent pair from the page.
fn get_with_id(cli: &Cli, paths: &Paths) -> Result<(), Failure> {
    let probe = Probe::open(paths)?;
    let (generation, id) = probe.generation_with_id().ok_or_else(|| {
        failure(
            exit::ERROR,
            "the page holds no generation ID: the device is served by a sysgenidd older than \
             the ID, or by a kernel driver"
                .to_owned(),
        )
    })?;
    say(
        cli,
        json!({ "generation": generation, "generation_id": id.to_string() }),
        || format!("{generation} {id}"),
    )
}

fn status(cli: &Cli, paths: &Paths) -> Result<(), Failure> {
    let s = sysgenid::status_at(paths)?;
    if cli.json {
        let value = serde_json::to_value(&s).map_err(|e| failure(exit::ERROR, e.to_string()))?;
        return output::line(value);
    }
    output::line(status_text(&s))
}

/// What an active backend waits for, where "active" alone would promise more than it can
/// deliver (docs/backends.md).
fn listens_for(backend: &str) -> Option<&'static str> {
    match backend {
        "uevent" => Some(
            "listening for the vmgenid driver's NEW_VMGENID=1 uevent, which no current kernel \
             sends (only Linux 6.8 did)",
        ),
        _ => None,
    }
}

/// The status document as text, one line per fact.
fn status_text(s: &sysgenid::Status) -> String {
    let daemon = &s.daemon;
    let mut lines = vec![
        format!("generation: {}", s.generation),
        format!(
            "id:         {}",
            s.generation_id
                .map_or("(none: a daemon older than the ID)".to_owned(), |id| id
                    .to_string())
        ),
        format!(
            "daemon:     pid {}, {}{}",
            daemon.pid,
            if s.serving { "serving" } else { "starting" },
            if s.degraded {
                ", DEGRADED (the last persist failed)"
            } else {
                ""
            }
        ),
        format!(
            "device:     {} (mmap {})",
            daemon.device.display(),
            if daemon.device_mmap { "on" } else { "off" }
        ),
        format!(
            "watchers:   {} open, {} tracked, {} tracked outdated",
            s.open_files, s.tracked, s.outdated
        ),
        format!(
            "blocked:    {} reads, {} waits",
            s.pending_reads, s.pending_waits
        ),
    ];
    if let Some(serving) = daemon.serving_pid.filter(|&p| p != daemon.pid) {
        lines.push(format!("serving:    pid {serving} (under the keeper)"));
    }
    if let Some(r) = &daemon.restarts {
        lines.push(format!(
            "restarts:   {} unnoticed by clients; last by {} (pid {} ended: {})",
            r.count, r.mode, r.previous_pid, r.cause
        ));
    }
    for b in &daemon.backends {
        let how = match (b.active, &b.reason, &b.detail) {
            (true, _, Some(detail)) => format!("active: {detail}"),
            (true, _, None) => match listens_for(&b.name) {
                Some(what) => format!("active: {what}"),
                None => "active".to_owned(),
            },
            (false, Some(reason), _) => format!("inactive: {reason}"),
            (false, None, _) => "inactive".to_owned(),
        };
        lines.push(format!("backend:    {} {how}", b.name));
    }
    if let Some(b) = &s.last_bump {
        let by = match (&b.backend, b.pid) {
            (Some(name), _) => format!("backend {name}"),
            (None, Some(pid)) => format!("trigger from pid {pid}"),
            (None, None) => "unknown".to_owned(),
        };
        lines.push(format!("last bump:  generation {} by {by}", b.generation));
    }
    if s.failed_bumps > 0 {
        lines.push(format!("failed:     {} bumps", s.failed_bumps));
    }
    if !s.outdated_files.is_empty() {
        lines.push("outdated:".to_owned());
        for f in &s.outdated_files {
            lines.push(format!(
                "  pid {:>7} {:9} {}",
                f.pid,
                if f.tracked { "tracked" } else { "untracked" },
                f.command.as_deref().unwrap_or("(gone)")
            ));
        }
    }
    lines.join("\n")
}
