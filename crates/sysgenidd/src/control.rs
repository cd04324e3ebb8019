//! The control socket: status for any local user, and the overseer's conditional bump.
//!
//! Protocol: connect to `<state-dir>/control.sock`, send one line (`status`, or
//! `trigger-if G [min N]`), read one JSON line, done. The socket threads never touch the device
//! state: they ask the event loop through the inbox (a snapshot, or a conditional trigger the
//! core judges in turn with every other bump) and format its answer.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;
use sysgenid_abi::Errno;
use sysgenid_core::{BumpSource, Caller, Reply, Status};

use crate::caps::{Peer, TriggerPolicy};
use crate::inbox::{Inbox, Message};

/// At most this many control connections are served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 32;
/// A client gets this long to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request line accepted.
const MAX_REQUEST: u64 = 256;
/// How long a connection waits for the event loop's answer.
const LOOP_TIMEOUT: Duration = Duration::from_secs(10);
/// What the error of an unknown or malformed request says.
const REQUESTS: &str = "the requests are \"status\" and \"trigger-if G [min N]\"";

/// Daemon facts that the core does not hold.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonFacts {
    /// The daemon's process id.
    pub pid: u32,
    /// The device path served.
    pub device: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Whether `mmap` of the device is served.
    pub device_mmap: bool,
    /// Whether the device is being served (mounted and answering).
    pub serving: bool,
    /// Each hardware backend and whether it is active.
    pub backends: Vec<BackendStatus>,
}

/// One hardware backend's state.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// Its name.
    pub name: String,
    /// Whether it is running.
    pub active: bool,
    /// Why not, if it is not.
    pub reason: Option<String>,
    /// How it runs, if that is worth knowing (how a probe attached, what it cannot see).
    pub detail: Option<String>,
}

/// What the event loop answers to a status query.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The device state.
    pub status: Status,
    /// The daemon state.
    pub facts: DaemonFacts,
}

/// The JSON document of the `status` request.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The current generation.
    pub generation: u32,
    /// Whether the device is being served.
    pub serving: bool,
    /// Whether the last persist failed.
    pub degraded: bool,
    /// Open files (watchers).
    pub open_files: usize,
    /// Tracked watchers.
    pub tracked: usize,
    /// Tracked watchers that have not acknowledged the current generation.
    pub outdated: usize,
    /// Every open file that has not acknowledged the current generation.
    pub outdated_files: Vec<OutdatedFile>,
    /// Blocked reads.
    pub pending_reads: usize,
    /// Blocked `WAIT_WATCHERS` calls.
    pub pending_waits: usize,
    /// The last bump applied.
    pub last_bump: Option<BumpReport>,
    /// Bumps that could not be applied since start.
    pub failed_bumps: u64,
    /// The last bump that could not be applied.
    pub last_failure: Option<FailureReport>,
    /// Daemon facts.
    pub daemon: DaemonFacts,
}

/// An outdated open file, with the process that opened it.
#[derive(Debug, Serialize)]
pub struct OutdatedFile {
    /// The opening process.
    pub pid: u32,
    /// Its command line, if it can still be read.
    pub command: Option<String>,
    /// Whether the file is a tracked watcher.
    pub tracked: bool,
}

/// A bump that was applied.
#[derive(Debug, Serialize)]
pub struct BumpReport {
    /// The generation it set.
    pub generation: u32,
    /// `"trigger"` or `"backend"`.
    pub source: &'static str,
    /// For a trigger, the calling thread.
    pub pid: Option<u32>,
    /// For a backend, its name.
    pub backend: Option<String>,
}

/// A bump that failed.
#[derive(Debug, Serialize)]
pub struct FailureReport {
    /// `"trigger"` or `"backend"`.
    pub source: &'static str,
    /// For a backend, its name.
    pub backend: Option<String>,
    /// The errno name, such as `"EIO"`.
    pub error: &'static str,
    /// More detail, if any.
    pub detail: Option<String>,
}

fn source_fields(source: &BumpSource) -> (&'static str, Option<u32>, Option<String>) {
    match source {
        BumpSource::Trigger { pid } => ("trigger", Some(*pid), None),
        BumpSource::Backend(name) => ("backend", None, Some(name.clone())),
    }
}

impl StatusReport {
    /// Builds the report, reading each outdated process's command line.
    pub fn new(snapshot: Snapshot) -> StatusReport {
        let Snapshot { status, facts } = snapshot;
        let outdated_files = status
            .files
            .iter()
            .filter(|f| f.outdated)
            .map(|f| OutdatedFile {
                pid: f.pid,
                command: command_line(f.pid),
                tracked: f.tracked,
            })
            .collect();
        let last_bump = status.last_bump.as_ref().map(|b| {
            let (source, pid, backend) = source_fields(&b.source);
            BumpReport {
                generation: b.generation,
                source,
                pid,
                backend,
            }
        });
        let last_failure = status.last_failure.as_ref().map(|f| {
            let (source, _, backend) = source_fields(&f.source);
            FailureReport {
                source,
                backend,
                error: f.error.name(),
                detail: f.detail.clone(),
            }
        });
        StatusReport {
            generation: status.generation,
            serving: facts.serving,
            degraded: status.degraded,
            open_files: status.open_files,
            tracked: status.tracked,
            outdated: status.outdated,
            outdated_files,
            pending_reads: status.pending_reads,
            pending_waits: status.pending_waits,
            last_bump,
            failed_bumps: status.failed_bumps,
            last_failure,
            daemon: facts,
        }
    }
}

/// A process's command line with arguments joined by spaces, or its name, or `None` if gone.
pub fn command_line(pid: u32) -> Option<String> {
    if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline"))
        && !raw.is_empty()
    {
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        return Some(args.join(" "));
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(format!("[{}]", comm.trim_end()))
}

/// Binds the control socket, replacing a stale one, readable and writable by everyone.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves the control socket on the current thread until the listener fails.
pub fn serve(listener: UnixListener, inbox: Inbox, policy: Arc<TriggerPolicy>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = answer_error(&stream, "too many control connections; try again");
            continue;
        }
        let inbox = inbox.clone();
        let busy = Arc::clone(&busy);
        let policy = Arc::clone(&policy);
        std::thread::spawn(move || {
            if let Err(e) = handle(&stream, &inbox, &policy) {
                tracing::debug!(error = %e, "control connection ended");
            }
            busy.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

fn answer_error(stream: &UnixStream, message: &str) -> io::Result<()> {
    answer(stream, &serde_json::json!({ "error": message }))
}

fn answer(mut stream: &UnixStream, value: &impl Serialize) -> io::Result<()> {
    let mut out = serde_json::to_vec(value).map_err(io::Error::other)?;
    out.push(b'\n');
    stream.write_all(&out)
}

/// One request line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `status`, or an empty line.
    Status,
    /// `trigger-if G [min N]`: bump with minimum `N` (default 0) only if `G` is still current.
    TriggerIf {
        /// The generation the caller expects to be current.
        expect: u32,
        /// The new generation is at least this.
        min: u32,
    },
}

impl Request {
    /// Parses a request line (surrounding white space ignored), or says what is wrong.
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |word: &str, what: &str| {
            word.parse::<u32>().map_err(|_| {
                format!("{what} {word:?} is not a generation (0 to 4294967295); {REQUESTS}")
            })
        };
        match words.as_slice() {
            [] | ["status"] => Ok(Request::Status),
            ["trigger-if", expect] => Ok(Request::TriggerIf {
                expect: number(expect, "G")?,
                min: 0,
            }),
            ["trigger-if", expect, "min", min] => Ok(Request::TriggerIf {
                expect: number(expect, "G")?,
                min: number(min, "N")?,
            }),
            _ => Err(format!("unknown request {:?}; {REQUESTS}", line.trim())),
        }
    }
}

/// A conditional trigger's refusal or failure, with its errno name.
fn trigger_if_error(errno: Errno, pid: u32) -> serde_json::Value {
    let message = match errno {
        Errno::Acces => format!(
            "trigger-if refused (EACCES): the calling process (pid {pid}) needs \
             CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the daemon's user namespace"
        ),
        Errno::Overflow => "trigger-if refused (EOVERFLOW): the generation is already u32::MAX \
                            and can never change again; nothing changed"
            .to_owned(),
        Errno::Io => "trigger-if failed (EIO): the daemon could not persist the new generation, \
                      so nothing changed; see last_failure in the status document"
            .to_owned(),
        other => format!("trigger-if failed ({})", other.name()),
    };
    serde_json::json!({ "error": message, "errno": errno.name() })
}

fn handle(stream: &UnixStream, inbox: &Inbox, policy: &TriggerPolicy) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(io::Read::take(stream, MAX_REQUEST)).read_line(&mut line)?;
    let no_answer = |_| io::Error::other("the event loop did not answer");
    match Request::parse(&line) {
        Ok(Request::Status) => {
            let (tx, rx) = mpsc::sync_channel(1);
            inbox.send(Message::Status(tx));
            let snapshot = rx.recv_timeout(REQUEST_TIMEOUT).map_err(no_answer)?;
            answer(stream, &StatusReport::new(snapshot))
        }
        Ok(Request::TriggerIf { expect, min }) => {
            let caller = match Peer::of(stream.as_fd()) {
                Ok(peer) => Caller {
                    pid: peer.pid,
                    privileged: policy.may_trigger_peer(&peer),
                },
                Err(e) => {
                    let message = format!("trigger-if refused: cannot identify the caller: {e}");
                    let value = serde_json::json!({ "error": message, "errno": "EACCES" });
                    return answer(stream, &value);
                }
            };
            let (tx, rx) = mpsc::sync_channel(1);
            inbox.send(Message::TriggerIf {
                expect,
                min,
                caller,
                reply: tx,
            });
            let Ok(reply) = rx.recv_timeout(LOOP_TIMEOUT) else {
                let message = "trigger-if: the event loop did not answer in time; the bump may \
                               still happen, so read the status document before retrying";
                return answer_error(stream, message);
            };
            tracing::info!(pid = caller.pid, expect, min, ?reply, "trigger-if");
            let value = match reply {
                Reply::Bumped(g) => serde_json::json!({ "bumped": true, "generation": g }),
                Reply::Unchanged(g) => serde_json::json!({ "bumped": false, "generation": g }),
                Reply::Error(errno) => trigger_if_error(errno, caller.pid),
                other => serde_json::json!({ "error": format!("unexpected answer {other:?}") }),
            };
            answer(stream, &value)
        }
        Err(message) => answer_error(stream, &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse() {
        assert_eq!(Request::parse("status\n"), Ok(Request::Status));
        assert_eq!(Request::parse(""), Ok(Request::Status));
        assert_eq!(
            Request::parse("trigger-if 5\n"),
            Ok(Request::TriggerIf { expect: 5, min: 0 })
        );
        assert_eq!(
            Request::parse(" trigger-if 4294967295 min 9 "),
            Ok(Request::TriggerIf {
                expect: u32::MAX,
                min: 9
            })
        );
    }

    #[test]
    fn malformed_requests_say_what_is_accepted() {
        for line in [
            "trigger-if",
            "trigger-if -1",
            "trigger-if 4294967296",
            "trigger-if 5 min",
            "trigger-if 5 max 7",
            "trigger-if 5 min x",
            "trigger 5",
            "status now",
        ] {
            let e = Request::parse(line).unwrap_err();
            assert!(e.contains("trigger-if G [min N]"), "{line}: {e}");
        }
    }

    #[test]
    fn refusals_name_their_errno() {
        let v = trigger_if_error(Errno::Acces, 42);
        assert_eq!(v["errno"], "EACCES");
        let message = v["error"].as_str().unwrap();
        assert!(message.contains("pid 42") && message.contains("CAP_CHECKPOINT_RESTORE"));
        assert_eq!(trigger_if_error(Errno::Overflow, 1)["errno"], "EOVERFLOW");
        assert_eq!(trigger_if_error(Errno::Io, 1)["errno"], "EIO");
    }
}
