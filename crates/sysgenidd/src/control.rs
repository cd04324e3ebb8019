//! The control socket: status for any local user, and the overseer's conditional bump.
//!
//! Protocol: connect to `<state-dir>/control.sock`, send one line (`status`, or
//! `trigger-if G [min N]`), read one JSON line, done. The socket threads never touch the device
//! state: they ask the event loop through the inbox (a snapshot, or a conditional trigger the
//! core judges in turn with every other bump) and answer with the messages of
//! `sysgenid_abi::control`; `StatusSnapshot::into_document` is where the core's `Status` becomes
//! the wire's status document.
//!
//! Against hostile local users: each peer uid has its own budget of connections (`slots.rs`),
//! refused at once on the accepting thread; a request line has 2 seconds in all (`line.rs`);
//! and a status document shows other users' command lines only to root (`viewer.rs`).

mod line;
mod slots;
mod viewer;

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sysgenid_abi::Errno;
use sysgenid_abi::control::{self as wire, ConditionalBump, ErrorAnswer, Request};
use sysgenid_core::{BumpSource, Caller, Reply, Status};

use crate::caps::{Peer, TriggerPolicy, peer_uid};
use crate::inbox::{Inbox, Message};
use line::{BadLine, read_request};
use slots::{LIMITS, Slot, Slots};
pub use viewer::{Viewer, command_line};

/// The wire's daemon facts and backend states, under the names the daemon gives them.
pub use sysgenid_abi::control::{Backend as BackendStatus, DaemonInfo as DaemonFacts};

/// A client gets this long, from its connection, to send its whole request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection waits for the event loop's answer.
const LOOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the event loop answers to a status query: the core's snapshot and the daemon's facts.
#[derive(Debug, Clone)]
pub struct StatusSnapshot {
    /// The device state.
    pub status: Status,
    /// The daemon state.
    pub facts: DaemonFacts,
}

/// A bump's source as the wire spells it: the source, a trigger's pid, a backend's name.
fn wire_source(source: &BumpSource) -> (wire::BumpSource, Option<u32>, Option<String>) {
    match source {
        BumpSource::Trigger { pid } => (wire::BumpSource::Trigger, Some(*pid), None),
        BumpSource::Backend(name) => (wire::BumpSource::Backend, None, Some(name.clone())),
    }
}

impl StatusSnapshot {
    /// The status document for `viewer`, with each outdated process's command as it may see
    /// it.
    pub fn into_document(self, viewer: &Viewer) -> wire::Status {
        let StatusSnapshot { status, facts } = self;
        let outdated_files = status
            .files
            .iter()
            .filter(|f| f.outdated)
            .map(|f| wire::OutdatedFile {
                pid: f.pid,
                command: viewer.command(f.pid),
                tracked: f.tracked,
            })
            .collect();
        let last_bump = status.last_bump.as_ref().map(|b| {
            let (source, pid, backend) = wire_source(&b.source);
            wire::LastBump {
                generation: b.generation,
                source,
                pid,
                backend,
            }
        });
        let last_failure = status.last_failure.as_ref().map(|f| {
            let (source, _, backend) = wire_source(&f.source);
            wire::LastFailure {
                source,
                backend,
                error: f.error.name().to_owned(),
                detail: f.detail.clone(),
            }
        });
        wire::Status {
            version: wire::STATUS_VERSION,
            generation: status.generation,
            generation_id: Some(status.generation_id).filter(|id| !id.is_none()),
            serving: facts.serving,
            degraded: status.degraded,
            open_files: status.open_files as u64,
            tracked: status.tracked as u64,
            outdated: status.outdated as u64,
            outdated_files,
            pending_reads: status.pending_reads as u64,
            pending_waits: status.pending_waits as u64,
            last_bump,
            failed_bumps: status.failed_bumps,
            last_failure,
            daemon: facts,
        }
    }
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
    let slots = Slots::new(LIMITS, rustix::process::geteuid().as_raw());
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => accept(stream, &slots, &inbox, &policy),
            Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
        }
    }
}

/// Gives a new connection a slot of its peer's uid and a thread, or refuses it at once.
fn accept(stream: UnixStream, slots: &Arc<Slots>, inbox: &Inbox, policy: &Arc<TriggerPolicy>) {
    let accepted = Instant::now();
    let slot = peer_uid(stream.as_fd())
        .map_err(|e| format!("cannot identify the connecting process: {e}"))
        .and_then(|uid| slots.take(uid).map_err(|refusal| refusal.to_string()));
    let slot = match slot {
        Ok(slot) => slot,
        Err(message) => return refuse(&stream, &message),
    };
    let stream = Arc::new(stream);
    let spawned = std::thread::Builder::new()
        .name("control-conn".into())
        .spawn({
            let (stream, inbox, policy) = (Arc::clone(&stream), inbox.clone(), Arc::clone(policy));
            move || {
                if let Err(e) = handle(&stream, &slot, accepted, &inbox, &policy) {
                    tracing::debug!(error = %e, "control connection ended");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a control connection thread");
        refuse(
            &stream,
            "the daemon cannot take more connections now; try again",
        );
    }
}

/// Answers `message` as an error line without ever blocking the accepting thread.
fn refuse(stream: &UnixStream, message: &str) {
    tracing::debug!(message, "control connection refused");
    if stream.set_nonblocking(true).is_ok() {
        let _ = answer_error(stream, message);
    }
}

fn answer_error(stream: &UnixStream, message: &str) -> io::Result<()> {
    answer(stream, &ErrorAnswer::new(message))
}

fn answer(mut stream: &UnixStream, value: &impl Serialize) -> io::Result<()> {
    let mut out = serde_json::to_vec(value).map_err(io::Error::other)?;
    out.push(b'\n');
    stream.write_all(&out)
}

/// A conditional trigger's refusal or failure, with its errno name.
fn trigger_if_error(errno: Errno, pid: u32) -> ErrorAnswer {
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
    ErrorAnswer::with_errno(message, errno)
}

fn handle(
    stream: &UnixStream,
    slot: &Slot,
    accepted: Instant,
    inbox: &Inbox,
    policy: &TriggerPolicy,
) -> io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let line = match read_request(stream, accepted + REQUEST_TIMEOUT, REQUEST_TIMEOUT) {
        Ok(line) => line,
        Err(BadLine::Io(e)) => return Err(e),
        Err(bad) => return answer_error(stream, &bad.to_string()),
    };
    match Request::parse(&line) {
        Ok(Request::Status) => {
            let (tx, rx) = mpsc::sync_channel(1);
            inbox.send(Message::Status(tx));
            let snapshot = rx
                .recv_timeout(REQUEST_TIMEOUT)
                .map_err(|_| io::Error::other("the event loop did not answer"))?;
            answer(stream, &snapshot.into_document(&Viewer::new(slot.uid())))
        }
        Ok(Request::TriggerIf { expect, min }) => trigger_if(stream, inbox, policy, expect, min),
        Err(e) => answer_error(stream, &e.to_string()),
    }
}

/// Judges the peer, hands `trigger-if expect min min` to the event loop and answers its reply.
fn trigger_if(
    stream: &UnixStream,
    inbox: &Inbox,
    policy: &TriggerPolicy,
    expect: u32,
    min: u32,
) -> io::Result<()> {
    let caller = match Peer::of(stream.as_fd()) {
        Ok(peer) => Caller {
            pid: peer.pid,
            privileged: policy.may_trigger_peer(&peer),
        },
        Err(e) => {
            let message = format!("trigger-if refused: cannot identify the caller: {e}");
            return answer(stream, &ErrorAnswer::with_errno(message, Errno::Acces));
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
        let message = "trigger-if: the event loop did not answer in time; the bump may still \
                       happen, so read the status document before retrying";
        return answer_error(stream, message);
    };
    tracing::info!(pid = caller.pid, expect, min, ?reply, "trigger-if");
    let judged = |bumped, generation| ConditionalBump { bumped, generation };
    match reply {
        Reply::Bumped(g) => answer(stream, &judged(true, g)),
        Reply::Unchanged(g) => answer(stream, &judged(false, g)),
        Reply::Error(errno) => answer(stream, &trigger_if_error(errno, caller.pid)),
        other => answer_error(stream, &format!("unexpected answer {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_errno() {
        let refusal = trigger_if_error(Errno::Acces, 42);
        assert_eq!(refusal.errno.as_deref(), Some("EACCES"));
        let message = &refusal.error;
        assert!(message.contains("pid 42") && message.contains("CAP_CHECKPOINT_RESTORE"));
        let errno = |e| trigger_if_error(e, 1).errno;
        assert_eq!(errno(Errno::Overflow).as_deref(), Some("EOVERFLOW"));
        assert_eq!(errno(Errno::Io).as_deref(), Some("EIO"));
    }

    #[test]
    fn the_document_lists_outdated_files_and_spells_sources() {
        use sysgenid_core::{BumpFailure, BumpRecord, FileId, FileStatus};
        let me = std::process::id();
        let file = |id, tracked, outdated| FileStatus {
            file: FileId(id),
            pid: me,
            tracked,
            outdated,
        };
        let status = Status {
            generation: 5,
            generation_id: sysgenid_abi::GenerationId([0xab; 16]),
            open_files: 2,
            tracked: 1,
            outdated: 1,
            files: vec![file(1, true, true), file(2, false, false)],
            pending_reads: 3,
            pending_waits: 4,
            bump_in_progress: false,
            last_bump: Some(BumpRecord {
                generation: 5,
                source: BumpSource::Trigger { pid: 77 },
            }),
            failed_bumps: 1,
            last_failure: Some(BumpFailure {
                source: BumpSource::Backend("fw-cfg".to_owned()),
                error: Errno::Io,
                detail: Some("disk full".to_owned()),
            }),
            degraded: true,
        };
        let facts = DaemonFacts {
            pid: me,
            device: "/dev/sysgenid".into(),
            state_dir: "/run/sysgenid".into(),
            device_mmap: true,
            serving: true,
            backends: vec![],
            serving_pid: Some(me),
            restarts: None,
        };
        let doc = StatusSnapshot { status, facts }.into_document(&Viewer::new(0));
        assert_eq!(doc.version, wire::STATUS_VERSION);
        assert_eq!((doc.generation, doc.outdated, doc.pending_waits), (5, 1, 4));
        assert_eq!(
            doc.generation_id.map(|id| id.to_string()),
            Some("ab".repeat(16)),
            "32 lowercase hex digits"
        );
        assert!(doc.serving && doc.degraded);
        assert_eq!(doc.outdated_files.len(), 1, "only the outdated file");
        assert!(doc.outdated_files[0].tracked);
        assert!(
            doc.outdated_files[0].command.is_some(),
            "our own command line"
        );
        let bump = doc.last_bump.unwrap();
        assert_eq!(
            (bump.source, bump.pid),
            (wire::BumpSource::Trigger, Some(77))
        );
        let failure = doc.last_failure.unwrap();
        assert_eq!(failure.source, wire::BumpSource::Backend);
        assert_eq!(failure.backend.as_deref(), Some("fw-cfg"));
        assert_eq!(failure.error, "EIO");
        assert_eq!(failure.detail.as_deref(), Some("disk full"));
    }
}
