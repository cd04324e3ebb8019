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
//!
//! A serving process whose main thread has exited but which stays unreaped has a thread asleep
//! in the kernel (a page store waiting on a fill only a serving process can answer): the next
//! one starts anyway, told to hold its page stores until the keeper reports the old one gone.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus};
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
    /// As `Resume`, while the previous serving process is still exiting: a thread of it sleeps
    /// in the kernel (a page store waiting on a page fill). `PreviousGone` follows once it has.
    ResumeBehindExiting,
    /// The previous serving process has exited.
    PreviousGone,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToKeeper {
    /// Hold the connection and the session that come with this message.
    Hold,
    /// The serving process is ending of its own accord (a stop, a handover, an error): wait
    /// for its exit status, however long it takes to be reaped.
    Ending,
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
    /// died, or nothing. With them, whether that process is still exiting.
    pub fn start(&self) -> io::Result<(Option<Held>, bool)> {
        let (message, mut fds) = fdpass::receive::<ToServing>(&self.stream, None)?
            .ok_or_else(|| io::Error::other("the keeper closed its socket"))?;
        let exiting = matches!(message, ToServing::ResumeBehindExiting);
        match message {
            ToServing::Fresh => Ok((None, false)),
            ToServing::Resume | ToServing::ResumeBehindExiting if fds.len() == 2 => {
                let session = fds.pop().expect("two");
                Ok((Some((fds.pop().expect("two"), session)), exiting))
            }
            ToServing::Resume | ToServing::ResumeBehindExiting => {
                Err(io::Error::other("the keeper sent no descriptors"))
            }
            ToServing::PreviousGone => Err(io::Error::other("the keeper sent no start")),
        }
    }

    /// Runs `gone` on a thread of its own once the keeper says the previous serving process
    /// has exited (or the keeper is gone).
    pub fn when_previous_gone(&self, gone: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let stream = self.stream.try_clone()?;
        std::thread::Builder::new()
            .name("keeper-link".to_owned())
            .spawn(move || {
                while let Ok(Some((message, _))) = fdpass::receive::<ToServing>(&stream, None) {
                    if matches!(message, ToServing::PreviousGone) {
                        break;
                    }
                }
                gone();
            })
            .map(drop)
    }

    /// Tells the keeper that this process is ending of its own accord.
    pub fn ending(&self) {
        let _ = fdpass::send(&self.stream, &ToKeeper::Ending, &[]);
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
    let succession = Arc::new(Mutex::new(Succession::default()));
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut previous_end: Option<String> = None;
    loop {
        let shared = (&held, &succession);
        let (pid, status) = match run_once(exe, args, shared, &child, previous_end.as_deref()) {
            Ok(ended) => ended,
            Err(error) => {
                tracing::error!(%error, "keeper: cannot start the serving process");
                return ExitCode::FAILURE;
            }
        };
        let cause = status.map_or_else(|| "killed, still exiting".to_owned(), describe);
        match status.and_then(|s| s.code()) {
            Some(0) => return ExitCode::SUCCESS,
            Some(code) if code == i32::from(EXIT_CONNECTION_LOST) => {
                return ExitCode::from(EXIT_CONNECTION_LOST);
            }
            _ if lock(&held).is_none() => {
                tracing::error!(%cause, "keeper: the serving process ended before it served");
                let code = status.and_then(|s| s.code()).unwrap_or(1);
                return ExitCode::from(u8::try_from(code).unwrap_or(1));
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

/// What the keeper's loop shares with the threads that reap serving processes still exiting.
#[derive(Debug, Default)]
struct Succession {
    /// Previous serving processes that are still exiting.
    exiting: usize,
    /// The current serving process's socket, to tell it once none is.
    current: Option<UnixStream>,
}

/// How long after its socket closes a serving process may take to be reaped before the keeper
/// starts the next one anyway (if it is dying: its main thread has exited).
const STUCK_AFTER: Duration = Duration::from_millis(50);

fn lock_succession(succession: &Mutex<Succession>) -> std::sync::MutexGuard<'_, Succession> {
    succession
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the serving process once and waits for it; its pid and how it ended (`None`: it is
/// still exiting, reaped by a thread of its own).
fn run_once(
    exe: &Path,
    args: &[OsString],
    (held, succession): (&Arc<Mutex<Option<Held>>>, &Arc<Mutex<Succession>>),
    child_pid: &AtomicI32,
    previous_end: Option<&str>,
) -> io::Result<(u32, Option<ExitStatus>)> {
    let (ours, theirs) = message_pair()?;
    {
        let held = lock(held);
        let mut succession = lock_succession(succession);
        match held.as_ref() {
            Some((fuse, session)) => {
                let message = match succession.exiting {
                    0 => ToServing::Resume,
                    _ => ToServing::ResumeBehindExiting,
                };
                fdpass::send(&ours, &message, &[fuse.as_fd(), session.as_fd()])?;
            }
            None => fdpass::send(&ours, &ToServing::Fresh, &[])?,
        }
        succession.current = ours.try_clone().ok();
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
    let child = command.spawn()?;
    drop(theirs);
    let pid = child.id();
    child_pid.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
    let holder = std::thread::Builder::new()
        .name("keeper-hold".to_owned())
        .spawn({
            let held = Arc::clone(held);
            move || take_holds(&ours, &held)
        })?;
    let status = wait_for_end(child, holder, succession);
    child_pid.store(0, Ordering::SeqCst);
    Ok((pid, status?))
}

/// Waits until the serving process's socket closes, then until it is reaped. One that did not
/// say it was ending, whose main thread has exited but which stays unreaped past
/// [`STUCK_AFTER`], died with a thread asleep in the kernel, waiting for the next serving
/// process: a thread of its own reaps it.
fn wait_for_end(
    mut child: Child,
    holder: std::thread::JoinHandle<bool>,
    succession: &Arc<Mutex<Succession>>,
) -> io::Result<Option<ExitStatus>> {
    if holder.join().unwrap_or(false) {
        return child.wait().map(Some);
    }
    let since = Instant::now();
    while since.elapsed() < STUCK_AFTER {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if !main_thread_exited(child.id()) {
        return child.wait().map(Some);
    }
    let pid = child.id();
    tracing::warn!(
        pid,
        "keeper: the serving process died with a thread still in the kernel; starting the next one"
    );
    lock_succession(succession).exiting += 1;
    let succession = Arc::clone(succession);
    std::thread::Builder::new()
        .name("keeper-reap".to_owned())
        .spawn(move || {
            let status = child.wait();
            tracing::info!(
                pid,
                ?status,
                "keeper: a previous serving process has exited"
            );
            let mut succession = lock_succession(&succession);
            succession.exiting -= 1;
            if let (0, Some(current)) = (succession.exiting, &succession.current) {
                let _ = fdpass::send(current, &ToServing::PreviousGone, &[]);
            }
        })?;
    Ok(None)
}

/// Whether the main thread of `pid` has exited (a zombie while other threads remain).
fn main_thread_exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X")
    })
}

/// Stores every connection and session the serving process sends, until it closes its end.
/// Returns whether the serving process said it was ending.
fn take_holds(stream: &UnixStream, held: &Mutex<Option<Held>>) -> bool {
    let mut ending = false;
    while let Ok(Some((message, mut fds))) = fdpass::receive::<ToKeeper>(stream, None) {
        match message {
            ToKeeper::Hold if fds.len() == 2 => {
                let session = fds.pop().expect("two");
                let fuse = fds.pop().expect("two");
                *lock(held) = Some((fuse, session));
            }
            ToKeeper::Hold => {}
            ToKeeper::Ending => ending = true,
        }
    }
    ending
}

/// A connected pair of `SOCK_SEQPACKET` sockets: each message arrives alone, so a message sent
/// before the peer has read the previous one is never read together with it.
fn message_pair() -> io::Result<(UnixStream, UnixStream)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((UnixStream::from(a), UnixStream::from(b)))
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
