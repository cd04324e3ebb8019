//! The keeper: a small parent process that holds the FUSE connection and the session memfd,
//! and starts the serving process again, on the same connection, when it crashes. Clients
//! never see the crash: their files, mappings and blocked calls stay on the connection.
//!
//! The keeper reads no request and mounts nothing. It starts the serving process (this binary,
//! same arguments) with one end of a socket pair, tells it what it holds (`fresh`, or `resume`
//! with the connection and the session), and takes `hold` messages back. A serving process
//! that exits 0 (a clean stop or a handover) or with [`EXIT_CONNECTION_LOST`] ends the keeper
//! too; one killed by a signal or failing otherwise is started again, up to
//! `--keeper-max-crashes` times in [`CRASH_WINDOW`]. The serving process dies with its keeper (`PR_SET_PDEATHSIG`).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fdpass;

/// The serving process's end of the keeper's socket, by descriptor number.
pub const KEEPER_FD_ENV: &str = "SYSGENID_KEEPER_FD";
/// The keeper's pid, so the serving process can tell that its parent is still the keeper (which
/// may itself be PID 1 of a container).
pub const KEEPER_PID_ENV: &str = "SYSGENID_KEEPER_PID";
/// How the previous serving process ended, when the keeper starts another (`signal 9`).
pub const PREVIOUS_END_ENV: &str = "SYSGENID_PREVIOUS_END";
/// The exit code of a serving process whose connection is gone: nothing to start again.
pub const EXIT_CONNECTION_LOST: u8 = 3;
/// More crashes than `--keeper-max-crashes` within this window, and the keeper gives up.
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// The connection and the session, as the keeper holds them.
pub type Held = (OwnedFd, OwnedFd);

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToServing {
    /// Nothing held: start as a new daemon would.
    Fresh,
    /// The connection and the session come with this message.
    Resume,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToKeeper {
    /// Hold the connection and the session that come with this message.
    Hold,
}

/// The pid a service is known by: the keeper's when a keeper started this process, else this
/// process's own.
pub fn service_pid() -> u32 {
    let own = std::process::id();
    if std::env::var_os(KEEPER_FD_ENV).is_none() {
        return own;
    }
    rustix::process::getppid().map_or(own, |p| p.as_raw_nonzero().get().unsigned_abs())
}

/// The serving process's link to its keeper.
#[derive(Debug)]
pub struct Link {
    stream: UnixStream,
    /// How the previous serving process ended, when this one replaces it.
    pub previous_end: Option<String>,
}

impl Link {
    /// The link, when a keeper started this process; it dies with its keeper from now on.
    pub fn from_env() -> io::Result<Option<Link>> {
        let Some(number) = std::env::var_os(KEEPER_FD_ENV) else {
            return Ok(None);
        };
        let number: i32 = number
            .to_str()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| io::Error::other(format!("{KEEPER_FD_ENV} is not a descriptor")))?;
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        let keeper: Option<i32> = std::env::var(KEEPER_PID_ENV)
            .ok()
            .and_then(|p| p.parse().ok());
        let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
        if parent.is_none() || parent != keeper {
            return Err(io::Error::other("the keeper is gone"));
        }
        // SAFETY: the keeper left exactly this descriptor open across exec for this process
        // and named it in the environment; nothing else in this process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(number) };
        let kind = rustix::fs::fstat(&fd)?.st_mode;
        if rustix::fs::FileType::from_raw_mode(kind) != rustix::fs::FileType::Socket {
            return Err(io::Error::other(format!("{KEEPER_FD_ENV} is not a socket")));
        }
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        Ok(Some(Link {
            stream: UnixStream::from(fd),
            previous_end: std::env::var(PREVIOUS_END_ENV).ok(),
        }))
    }

    /// What the keeper holds for this start: the connection and session of a process that
    /// died, or nothing.
    pub fn start(&self) -> io::Result<Option<Held>> {
        let (message, mut fds) = fdpass::receive::<ToServing>(&self.stream, None)?
            .ok_or_else(|| io::Error::other("the keeper closed its socket"))?;
        match message {
            ToServing::Fresh => Ok(None),
            ToServing::Resume if fds.len() == 2 => {
                let session = fds.pop().expect("two");
                Ok(Some((fds.pop().expect("two"), session)))
            }
            ToServing::Resume => Err(io::Error::other("the keeper sent no descriptors")),
        }
    }

    /// Gives the keeper the connection and the session to hold.
    pub fn hold(&self, fuse: impl AsFd, session: impl AsFd) -> io::Result<()> {
        fdpass::send(
            &self.stream,
            &ToKeeper::Hold,
            &[fuse.as_fd(), session.as_fd()],
        )
    }
}

/// Runs the keeper: starts `exe` with `args` and keeps it serving. `held` is what a service
/// manager passed in (its fd store), if anything.
pub fn keep(exe: &Path, args: &[OsString], held: Option<Held>, max_crashes: usize) -> ExitCode {
    let held = Arc::new(Mutex::new(held));
    let child = Arc::new(AtomicI32::new(0));
    if let Err(error) = forward_signals(Arc::clone(&child)) {
        tracing::error!(%error, "keeper: cannot install signal handlers");
        return ExitCode::FAILURE;
    }
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut previous_end: Option<String> = None;
    loop {
        let (pid, status) = match run_once(exe, args, &held, &child, previous_end.as_deref()) {
            Ok(ended) => ended,
            Err(error) => {
                tracing::error!(%error, "keeper: cannot start the serving process");
                return ExitCode::FAILURE;
            }
        };
        let cause = describe(status);
        match status.code() {
            Some(0) => return ExitCode::SUCCESS,
            Some(code) if code == i32::from(EXIT_CONNECTION_LOST) => {
                return ExitCode::from(EXIT_CONNECTION_LOST);
            }
            _ if lock(&held).is_none() => {
                tracing::error!(%cause, "keeper: the serving process ended before it served");
                return ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1));
            }
            _ => {}
        }
        crashes.push_back(Instant::now());
        while crashes.front().is_some_and(|t| t.elapsed() > CRASH_WINDOW) {
            crashes.pop_front();
        }
        if crashes.len() > max_crashes {
            tracing::error!(
                %cause,
                "keeper: the serving process crashed more than {max_crashes} times within {}s; \
                 giving up (the device's connection ends now)",
                CRASH_WINDOW.as_secs()
            );
            return ExitCode::FAILURE;
        }
        tracing::warn!(
            pid,
            %cause,
            "keeper: the serving process died; starting it again on the same connection"
        );
        previous_end = Some(cause);
    }
}

fn lock(held: &Mutex<Option<Held>>) -> std::sync::MutexGuard<'_, Option<Held>> {
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the serving process once and waits for it; its pid and how it ended.
fn run_once(
    exe: &Path,
    args: &[OsString],
    held: &Arc<Mutex<Option<Held>>>,
    child_pid: &AtomicI32,
    previous_end: Option<&str>,
) -> io::Result<(u32, ExitStatus)> {
    let (ours, theirs) = UnixStream::pair()?;
    {
        let held = lock(held);
        match held.as_ref() {
            Some((fuse, session)) => {
                fdpass::send(&ours, &ToServing::Resume, &[fuse.as_fd(), session.as_fd()])?;
            }
            None => fdpass::send(&ours, &ToServing::Fresh, &[])?,
        }
    }
    // Only this descriptor crosses the exec; it is closed here once the child has it.
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .env(KEEPER_FD_ENV, theirs.as_raw_fd().to_string())
        .env(KEEPER_PID_ENV, std::process::id().to_string());
    match previous_end {
        Some(end) => command.env(PREVIOUS_END_ENV, end),
        None => command.env_remove(PREVIOUS_END_ENV),
    };
    let mut child = command.spawn()?;
    drop(theirs);
    let pid = child.id();
    child_pid.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
    let holder = std::thread::Builder::new()
        .name("keeper-hold".to_owned())
        .spawn({
            let held = Arc::clone(held);
            move || take_holds(&ours, &held)
        })?;
    let status = child.wait()?;
    child_pid.store(0, Ordering::SeqCst);
    let _ = holder.join();
    Ok((pid, status))
}

/// Stores every connection and session the serving process sends, until it closes its end.
fn take_holds(stream: &UnixStream, held: &Mutex<Option<Held>>) {
    while let Ok(Some((ToKeeper::Hold, mut fds))) = fdpass::receive::<ToKeeper>(stream, None) {
        if fds.len() == 2 {
            let session = fds.pop().expect("two");
            let fuse = fds.pop().expect("two");
            *lock(held) = Some((fuse, session));
        }
    }
}

/// SIGTERM, SIGINT and SIGHUP go on to the serving process, which stops (or not) as it would
/// alone; the keeper ends when it does.
fn forward_signals(child: Arc<AtomicI32>) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("keeper-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                let pid = child.load(Ordering::SeqCst);
                let (Some(pid), Some(signal)) = (
                    rustix::process::Pid::from_raw(pid),
                    rustix::process::Signal::from_named_raw(signal),
                ) else {
                    continue;
                };
                let _ = rustix::process::kill_process(pid, signal);
            }
        })?;
    Ok(())
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".to_owned(),
    }
}
