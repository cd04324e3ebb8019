//! Handing the live device from a running daemon to a new one (an upgrade, a restart without a
//! service manager): the FUSE connection and a snapshot of the core pass over a Unix socket in
//! the state directory, so the mount, every open file, mapping and blocked call stay in place.
//!
//! The new daemon connects to `<state-dir>/handover.sock` and says which snapshot formats it
//! reads. The running one serves on until no bump is under way, then, between two requests,
//! sends the connection and a memfd holding the snapshot (`SCM_RIGHTS`). The new one checks
//! everything it can before it answers `taken`; then the old one exits without unmounting,
//! and the new one takes the state directory's lock and serves. Any other answer, or none
//! within [`ANSWER_TIMEOUT`], and the old one serves on.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sysgenid_core::DeviceState;
use sysgenid_fuse::Negotiated;

use crate::caps::peer_uid;
use crate::fdpass;
use crate::inbox::{Inbox, Message};

/// The socket's name in the state directory.
pub const HANDOVER_SOCKET_NAME: &str = "handover.sock";

/// The snapshot format this build writes. A test build made with
/// `SYSGENID_SNAPSHOT_FORMAT_NEXT=1` in its environment writes the next one, as a future
/// release would (`scripts/test.sh` builds one for the upgrade tests).
pub const SNAPSHOT_FORMAT: u32 = match option_env!("SYSGENID_SNAPSHOT_FORMAT_NEXT") {
    Some(_) => 2,
    None => 1,
};
/// The oldest snapshot format this build reads.
pub const OLDEST_FORMAT_READ: u32 = 1;

/// How long either side waits for the other's next line.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the running daemon looks for a quiet moment (no bump under way) to hand over in
/// before it refuses; the new daemon waits that long and [`ANSWER_TIMEOUT`] more for the
/// snapshot.
pub const QUIET_LIMIT: Duration = Duration::from_secs(10);

/// Everything the next daemon needs to serve the same connection as this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The format, [`SNAPSHOT_FORMAT`] of the writer.
    pub format: u32,
    /// The core: counter, open files, blocked calls.
    pub device: DeviceState,
    /// What INIT agreed with the kernel; the connection is not initialized again.
    pub fuse: FuseState,
    /// The device path of the mount.
    pub device_path: PathBuf,
    /// Whether a daemon made the mountpoint file, so a clean stop removes it.
    pub made_device_file: bool,
    /// Whether the mount was made by `fusermount3`, so that is how it is unmounted.
    pub fusermount: bool,
    /// The serving process's restarts on this connection so far, for status.
    pub restarts: Option<sysgenid_abi::control::Restarts>,
    /// The pid of the daemon that wrote it.
    pub from_pid: u32,
}

/// The INIT agreement, as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuseState {
    /// The kernel's minor version.
    pub kernel_minor: u32,
    /// The minor version both sides speak.
    pub minor: u32,
    /// Accepted INIT flags.
    pub flags: u64,
    /// Largest WRITE payload.
    pub max_write: u32,
    /// Readahead limit.
    pub max_readahead: u32,
    /// Largest request in pages.
    pub max_pages: u16,
    /// Whether shared mappings of the device work.
    pub direct_io_allow_mmap: bool,
}

impl From<Negotiated> for FuseState {
    fn from(n: Negotiated) -> FuseState {
        FuseState {
            kernel_minor: n.kernel_minor,
            minor: n.minor,
            flags: n.flags,
            max_write: n.max_write,
            max_readahead: n.max_readahead,
            max_pages: n.max_pages,
            direct_io_allow_mmap: n.direct_io_allow_mmap,
        }
    }
}

impl From<FuseState> for Negotiated {
    fn from(s: FuseState) -> Negotiated {
        Negotiated {
            kernel_minor: s.kernel_minor,
            minor: s.minor,
            flags: s.flags,
            max_write: s.max_write,
            max_readahead: s.max_readahead,
            max_pages: s.max_pages,
            direct_io_allow_mmap: s.direct_io_allow_mmap,
        }
    }
}

/// The new daemon's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The device path it was started for; it must be the one served.
    pub device: PathBuf,
    /// The oldest snapshot format it reads.
    pub oldest_format: u32,
    /// The newest snapshot format it reads.
    pub newest_format: u32,
}

/// Either side's answer line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The snapshot of this many bytes comes with the descriptors (old to new).
    Snapshot {
        /// Its length in the memfd.
        len: usize,
    },
    /// The new daemon serves from now on (new to old).
    Taken,
    /// No handover, and why.
    Refused(String),
}

/// Why a handover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The socket failed.
    #[error("handover socket {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The running daemon refused.
    #[error("the running sysgenidd refused to hand over: {0}")]
    Refused(String),
    /// What the running daemon sent cannot be served.
    #[error("cannot take over from the running sysgenidd: {0}")]
    Unusable(String),
}

/// A new connection that asks for the device, already checked to come from this daemon's uid.
#[derive(Debug)]
pub struct Asked {
    /// The connection to answer on.
    pub stream: UnixStream,
    /// What the new daemon said.
    pub hello: Hello,
}

/// Binds the handover socket in `dir` (mode 0600: the daemon's own uid only).
pub fn bind(dir: &Path) -> io::Result<UnixListener> {
    let path = dir.join(HANDOVER_SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts handover requests from this daemon's uid and hands each to the loop.
pub fn serve(listener: UnixListener, inbox: Inbox) {
    let ours = rustix::process::geteuid().as_raw();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        match read_hello(&stream, ours) {
            Ok(hello) => inbox.send(Message::HandoverAsked(Asked { stream, hello })),
            Err(why) => {
                tracing::warn!(why, "handover request refused");
                let _ = send_line(&stream, &Answer::Refused(why));
            }
        }
    }
}

fn read_hello(stream: &UnixStream, ours: u32) -> Result<Hello, String> {
    let uid = peer_uid(stream.as_fd()).map_err(|e| format!("cannot identify the peer: {e}"))?;
    if uid != ours {
        return Err(format!(
            "uid {uid} may not take over a daemon of uid {ours}"
        ));
    }
    read_line(stream)
}

/// The pid of the process at the other end, if the kernel knows it.
pub fn peer_pid(stream: &UnixStream) -> Option<u32> {
    let cred = rustix::net::sockopt::socket_peercred(stream).ok()?;
    u32::try_from(cred.pid.as_raw_nonzero().get()).ok()
}

/// What the loop says to a new daemon whose hello it cannot serve, if anything.
pub fn refusal(hello: &Hello, device: &Path) -> Option<String> {
    if hello.device != device {
        return Some(format!(
            "this daemon serves {}, not {}",
            device.display(),
            hello.device.display()
        ));
    }
    if !(hello.oldest_format..=hello.newest_format).contains(&SNAPSHOT_FORMAT) {
        return Some(format!(
            "this daemon writes snapshot format {SNAPSHOT_FORMAT}, and the new one reads \
             formats {} to {}: start a build at least as new as the running one",
            hello.oldest_format, hello.newest_format
        ));
    }
    None
}

/// Sends the connection and the snapshot, and waits for the answer: `Ok` once the new daemon
/// has taken over, so this one must exit without touching the mount.
pub fn give(asked: &Asked, fuse: &impl AsFd, snapshot: &Snapshot) -> Result<(), String> {
    let bytes = serde_json::to_vec(snapshot).map_err(|e| e.to_string())?;
    let memfd = snapshot_memfd(&bytes).map_err(|e| format!("cannot write the snapshot: {e}"))?;
    let header = Answer::Snapshot { len: bytes.len() };
    fdpass::send(&asked.stream, &header, &[fuse.as_fd(), memfd.as_fd()])
        .map_err(|e| format!("cannot send the connection: {e}"))?;
    match read_line::<Answer>(&asked.stream)? {
        Answer::Taken => Ok(()),
        Answer::Refused(why) => Err(why),
        Answer::Snapshot { .. } => Err("unexpected answer".to_owned()),
    }
}

/// Answers `asked` with a refusal.
pub fn refuse(asked: &Asked, why: &str) {
    let _ = send_line(&asked.stream, &Answer::Refused(why.to_owned()));
}

/// What a new daemon got from the running one.
#[derive(Debug)]
pub struct Taken {
    /// The FUSE connection.
    pub fuse: OwnedFd,
    /// The running daemon's snapshot, already checked.
    pub snapshot: Snapshot,
    stream: UnixStream,
}

/// Asks the daemon serving `state_dir` for the device at `device`. Checks the snapshot (format,
/// core state) before anything is answered.
pub fn take_over(state_dir: &Path, device: &Path) -> Result<Taken, HandoverError> {
    let path = state_dir.join(HANDOVER_SOCKET_NAME);
    let io_err = |source: io::Error| HandoverError::Io {
        path: path.clone(),
        source,
    };
    let stream = UnixStream::connect(&path).map_err(io_err)?;
    let ours = rustix::process::geteuid().as_raw();
    let uid = peer_uid(stream.as_fd()).map_err(io_err)?;
    if uid != ours {
        return Err(HandoverError::Unusable(format!(
            "{} is served by uid {uid}, not this daemon's uid {ours}",
            path.display()
        )));
    }
    let hello = Hello {
        device: device.to_owned(),
        oldest_format: OLDEST_FORMAT_READ,
        newest_format: SNAPSHOT_FORMAT,
    };
    send_line(&stream, &hello).map_err(io_err)?;
    let (answer, mut fds) = fdpass::receive(&stream, Some(QUIET_LIMIT + ANSWER_TIMEOUT))
        .map_err(io_err)?
        .ok_or_else(|| HandoverError::Unusable("the running daemon closed the socket".into()))?;
    let len = match answer {
        Answer::Snapshot { len } => len,
        Answer::Refused(why) => return Err(HandoverError::Refused(why)),
        Answer::Taken => return Err(HandoverError::Unusable("unexpected answer".to_owned())),
    };
    if fds.len() != 2 {
        return Err(HandoverError::Unusable(format!(
            "got {} descriptors, not 2",
            fds.len()
        )));
    }
    let memfd = fds.pop().expect("two");
    let fuse = fds.pop().expect("two");
    match read_snapshot(memfd, len) {
        Ok(snapshot) => Ok(Taken {
            fuse,
            snapshot,
            stream,
        }),
        Err(why) => {
            let _ = send_line(&stream, &Answer::Refused(why.clone()));
            Err(HandoverError::Unusable(why))
        }
    }
}

impl Taken {
    /// Tells the running daemon to go, and waits until it has (its end of the socket closes
    /// when it exits).
    pub fn confirm(&mut self) -> io::Result<()> {
        send_line(&self.stream, &Answer::Taken)?;
        self.stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).map(drop)
    }
}

fn read_snapshot(memfd: OwnedFd, len: usize) -> Result<Snapshot, String> {
    let mut bytes = vec![0u8; len];
    // The writer's offset is shared with this descriptor: read from the start.
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::from(memfd), &mut bytes, 0)
        .map_err(|e| format!("cannot read the snapshot: {e}"))?;
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let Format { format } =
        serde_json::from_slice(&bytes).map_err(|e| format!("the snapshot has no format: {e}"))?;
    if !(OLDEST_FORMAT_READ..=SNAPSHOT_FORMAT).contains(&format) {
        return Err(format!(
            "its snapshot format {format} is not one this daemon reads \
             ({OLDEST_FORMAT_READ} to {SNAPSHOT_FORMAT}): start a build at least as new as \
             the running one"
        ));
    }
    let snapshot: Snapshot =
        serde_json::from_slice(&bytes).map_err(|e| format!("the snapshot is damaged: {e}"))?;
    sysgenid_core::Device::from_state(snapshot.device.clone())
        .map_err(|e| format!("the snapshot's device state is impossible: {e}"))?;
    Ok(snapshot)
}

fn snapshot_memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        "sysgenid-snapshot",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    let fd = OwnedFd::from(file);
    rustix::fs::fcntl_add_seals(&fd, SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK)?;
    Ok(fd)
}

fn send_line(stream: &UnixStream, value: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    (&*stream).write_all(&line)
}

fn read_line<T: for<'de> Deserialize<'de>>(stream: &UnixStream) -> Result<T, String> {
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream.take(64 * 1024))
        .read_line(&mut line)
        .map_err(|e| format!("no answer: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("not a handover message ({e}): {line:?}"))
}
