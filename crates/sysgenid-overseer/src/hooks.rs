//! The overseer's hooks: the executables of a directory, then shell commands, each in its own
//! process group, killed with that group when its time is up.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal};
use serde::{Serialize, Serializer};

use sysgenid::Paths;

use crate::{Error, Phase, Reason};

/// Waits longer than this (136 years) are cut to it, so that deadlines never overflow.
pub(crate) const FOREVER: Duration = Duration::from_secs(u32::MAX as u64);

/// One hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// An executable file of a hooks directory.
    File(PathBuf),
    /// A shell command, run with `sh -c`.
    Shell(String),
}

impl Hook {
    /// How reports name it: the file's path, or the command.
    pub fn name(&self) -> String {
        match self {
            Hook::File(path) => path.display().to_string(),
            Hook::Shell(command) => command.clone(),
        }
    }
}

/// How a hook failed. Its text (`Display`, and its JSON string) is what reports show:
/// `exit status 3`, `killed by signal 9`, `timed out after 30s; its process group was killed`,
/// `cannot run it: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookStatus {
    /// It exited with this nonzero status.
    Exited(i32),
    /// A signal killed it.
    Killed(i32),
    /// It ran longer than the hook timeout; its process group was killed.
    TimedOut(Duration),
    /// It could not be started: why.
    CannotRun(String),
    /// It could not be waited for: why (it was killed).
    CannotWait(String),
    /// It ended in some other way, as the system describes it.
    Other(String),
}

impl fmt::Display for HookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookStatus::Exited(code) => write!(f, "exit status {code}"),
            HookStatus::Killed(signal) => write!(f, "killed by signal {signal}"),
            HookStatus::TimedOut(after) => write!(
                f,
                "timed out after {}; its process group was killed",
                humantime::format_duration(*after)
            ),
            HookStatus::CannotRun(why) => write!(f, "cannot run it: {why}"),
            HookStatus::CannotWait(why) => write!(f, "cannot wait for it: {why}"),
            HookStatus::Other(text) => f.write_str(text),
        }
    }
}

impl Serialize for HookStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A hook that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookFailure {
    /// The hook's name ([`Hook::name`]).
    pub hook: String,
    /// What happened.
    pub status: HookStatus,
}

/// The hooks of a run: every executable regular file of `dir` in lexical order of file name
/// (names starting with `.` skipped), then the `execs`. A missing `dir` means no hooks unless
/// `required` (it was named explicitly), which is then an error.
pub fn collect(dir: &Path, required: bool, execs: &[String]) -> Result<Vec<Hook>, Error> {
    let describe = |source: io::Error| Error::HooksDir {
        dir: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(describe)?;
                let name = entry.file_name();
                if name.as_encoded_bytes().starts_with(b".") {
                    continue;
                }
                let path = entry.path();
                let is_file = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
                let executable = rustix::fs::access(&path, rustix::fs::Access::EXEC_OK).is_ok();
                if is_file && executable {
                    files.push(path);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {}
        Err(e) => return Err(describe(e)),
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let shell = execs.iter().cloned().map(Hook::Shell);
    Ok(files.into_iter().map(Hook::File).chain(shell).collect())
}

/// The hooks of `dir`, or of `default` when no directory is named (a missing default means no
/// hooks), then the `execs`.
pub(crate) fn of(
    dir: &Option<PathBuf>,
    default: &str,
    execs: &[String],
) -> Result<Vec<Hook>, Error> {
    match dir {
        Some(dir) => collect(dir, true, execs),
        None => collect(Path::new(default), false, execs),
    }
}

/// Their names, in order.
pub(crate) fn names(hooks: &[Hook]) -> Vec<String> {
    hooks.iter().map(Hook::name).collect()
}

/// What hooks find in their environment; SYSGENID_GENERATION is left out when it cannot be
/// read.
pub(crate) fn environment(
    paths: &Paths,
    phase: Phase,
    generation: Option<u32>,
    outcome: Option<Reason>,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("SYSGENID_PHASE", phase.as_str().to_owned()),
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
        env.push(("SYSGENID_OUTCOME", outcome.as_str().to_owned()));
    }
    env
}

/// Runs `hooks` in order with `env` added, each for at most `timeout`. Stops at the first failure
/// when `stop_at_failure`; otherwise runs them all. Returns the failures, in order.
pub fn run_all(
    hooks: &[Hook],
    env: &[(&str, String)],
    timeout: Duration,
    stop_at_failure: bool,
) -> Vec<HookFailure> {
    let mut failures = Vec::new();
    for hook in hooks {
        if let Err(status) = run(hook, env, timeout) {
            failures.push(HookFailure {
                hook: hook.name(),
                status,
            });
            if stop_at_failure {
                break;
            }
        }
    }
    failures
}

/// Runs one hook; `Err` says how it failed.
fn run(hook: &Hook, env: &[(&str, String)], timeout: Duration) -> Result<(), HookStatus> {
    let mut command = match hook {
        Hook::File(path) => Command::new(path),
        Hook::Shell(text) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(text);
            c
        }
    };
    let cannot_run = |e: io::Error| HookStatus::CannotRun(e.to_string());
    // Stdout carries the overseer's report, so the hook's output goes to stderr.
    let stderr = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(cannot_run)?;
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove(crate::criu::STAGE)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .process_group(0);
    let mut child = command.spawn().map_err(cannot_run)?;
    match wait_at_most(&mut child, timeout) {
        Ok(Some(status)) if status.success() => Ok(()),
        Ok(Some(status)) => Err(status_of(status)),
        Ok(None) => {
            // Its group is its pid: process_group(0) made it a group leader.
            if let Some(group) = Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
            }
            let _ = child.wait();
            Err(HookStatus::TimedOut(timeout))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(HookStatus::CannotWait(e.to_string()))
        }
    }
}

/// Exited or killed.
fn status_of(status: ExitStatus) -> HookStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => HookStatus::Exited(code),
        (None, Some(signal)) => HookStatus::Killed(signal),
        (None, None) => HookStatus::Other(status.to_string()),
    }
}

/// A wait of `left` for poll(2), cut to what it can express.
pub(crate) fn poll_timeout(left: Duration) -> Timespec {
    Timespec::try_from(left).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    })
}

/// Waits for `child` to exit, for at most `timeout`: its status, or `None` if it is still
/// running.
fn wait_at_most(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let pid = Pid::from_raw(child.id() as i32).ok_or_else(|| io::Error::other("pid 0"))?;
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())?;
    let deadline = Instant::now() + timeout.min(FOREVER);
    loop {
        let left = poll_timeout(deadline.saturating_duration_since(Instant::now()));
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&left)) {
            Ok(0) => return Ok(None),
            Ok(_) => return child.wait().map(Some),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn collects_executables_in_lexical_order_then_the_commands() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "20-b", "true", 0o755);
        script(dir.path(), "10-a", "true", 0o700);
        script(dir.path(), "15-not-executable", "true", 0o644);
        script(dir.path(), ".hidden", "true", 0o755);
        std::fs::create_dir(dir.path().join("05-dir")).unwrap();
        let hooks = collect(dir.path(), true, &["echo x".to_owned()]).unwrap();
        let names: Vec<String> = hooks.iter().map(Hook::name).collect();
        let at = |n: &str| dir.path().join(n).display().to_string();
        assert_eq!(names, [at("10-a"), at("20-b"), "echo x".to_owned()]);
    }

    #[test]
    fn a_missing_directory_is_no_hooks_unless_it_was_named() {
        let missing = Path::new("/nonexistent/sysgenid/quiesce.d");
        assert!(collect(missing, false, &[]).unwrap().is_empty());
        let e = collect(missing, true, &[]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/sysgenid/quiesce.d"), "{e}");
    }

    #[test]
    fn failures_are_named_with_their_status_and_may_stop_the_run() {
        let hooks = [
            Hook::Shell("exit 3".to_owned()),
            Hook::Shell("kill -9 $$".to_owned()),
            Hook::File(PathBuf::from("/nonexistent/hook")),
        ];
        let second = Duration::from_secs(10);
        let all = run_all(&hooks, &[], second, false);
        let statuses: Vec<String> = all.iter().map(|f| f.status.to_string()).collect();
        assert_eq!(statuses[..2], ["exit status 3", "killed by signal 9"]);
        assert!(statuses[2].starts_with("cannot run it"), "{statuses:?}");
        assert_eq!(all[0].status, HookStatus::Exited(3));
        assert_eq!(run_all(&hooks, &[], second, true).len(), 1);
    }

    #[test]
    fn a_hook_past_its_time_is_killed_and_says_so() {
        let hooks = [Hook::Shell("sleep 1000".to_owned())];
        let failed = run_all(&hooks, &[], Duration::from_millis(100), true);
        assert_eq!(
            failed[0].status.to_string(),
            "timed out after 100ms; its process group was killed"
        );
        let json = serde_json::to_value(&failed[0]).unwrap();
        assert_eq!(json["status"], failed[0].status.to_string());
    }

    #[test]
    fn hooks_get_the_environment_given() {
        let hooks = [Hook::Shell("test \"$SYSGENID_PHASE\" = quiesce".to_owned())];
        let env = [("SYSGENID_PHASE", "quiesce".to_owned())];
        assert!(run_all(&hooks, &env, Duration::from_secs(10), true).is_empty());
        assert_eq!(run_all(&hooks, &[], Duration::from_secs(10), true).len(), 1);
    }
}
