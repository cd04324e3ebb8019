//! The error type: one variant per thing that can go wrong, each saying what to do about it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::io::Errno as RawErrno;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The operation that failed, for messages and for [`Error::Os`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Opening the device.
    Open,
    /// Reading the generation from the device.
    Read,
    /// Acknowledging a generation (`write`).
    Ack,
    /// `SET_WATCHER_TRACKING`.
    SetTracking,
    /// `WAIT_WATCHERS`.
    WaitWatchers,
    /// `TRIGGER_GEN_UPDATE`.
    Trigger,
    /// Waiting for the device with `poll(2)`.
    Poll,
    /// Opening or mapping the page file or the device for a probe.
    Map,
    /// Asking the control socket for the status document.
    Status,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Read => "read",
            Op::Ack => "ack",
            Op::SetTracking => "set_tracking",
            Op::WaitWatchers => "wait_watchers",
            Op::Trigger => "trigger",
            Op::Poll => "poll",
            Op::Map => "mmap",
            Op::Status => "status",
        })
    }
}

/// Everything that can go wrong, one variant per errno of the device ABI (and a few more for the
/// page file and the control socket).
///
/// Each message says what happened and what to do. [`Error::raw_os_error`] gives the errno
/// behind a variant, and [`Error::errno`] the same as a [`sysgenid_abi::Errno`] when it is one
/// of the device's.
///
/// ```
/// use sysgenid::{Error, Paths, Watcher};
///
/// let paths = Paths::new("/nonexistent/sysgenid", "/nonexistent/state");
/// let err = Watcher::open(&paths).unwrap_err();
/// assert!(matches!(err, Error::DeviceMissing { .. }));
/// assert!(err.to_string().contains("is sysgenidd running?"), "{err}");
/// assert_eq!(err.raw_os_error(), Some(2)); // ENOENT
/// assert!(err.daemon_not_running());
/// // `Debug` prints the same message, so `main` returning this error reads well too.
/// assert_eq!(format!("{err:?}"), err.to_string());
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `ENOENT` on open: the device file does not exist.
    #[error(
        "{}: no such device file; is sysgenidd running? (start it, or set SYSGENID_DEVICE to \
         the device it serves)",
        path.display()
    )]
    DeviceMissing {
        /// The device path.
        path: PathBuf,
    },
    /// The path exists but no daemon serves it: the empty mountpoint a stopped daemon leaves.
    #[error(
        "{}: the file exists but is not served (an empty mountpoint); is sysgenidd running?",
        path.display()
    )]
    NotServed {
        /// The device path.
        path: PathBuf,
    },
    /// `ENOTCONN`: the daemon that served this file is gone.
    #[error(
        "{}: the daemon is gone (ENOTCONN): sysgenidd stopped or crashed; start it again, then \
         reopen the device",
        path.display()
    )]
    DaemonGone {
        /// The device path.
        path: PathBuf,
    },
    /// `EACCES` on opening the device for writing, which acknowledging and tracking need.
    #[error(
        "{}: permission denied opening the device for writing (EACCES): acknowledging and \
         tracking need root or membership in the `sysgenid` group (the daemon's --group); add \
         the user to that group. Watching alone needs neither: open read-only \
         (WatcherOptions::read_only; `sysgenid watch` without --track)",
        path.display()
    )]
    WriteAccessDenied {
        /// The device path.
        path: PathBuf,
    },
    /// `EACCES` on opening the device read-only, which a served device allows everyone.
    #[error(
        "{}: permission denied opening the device (EACCES): a served device is readable by \
         everyone, so this is likely the mode-0000 mountpoint a stopped daemon leaves; is \
         sysgenidd running?",
        path.display()
    )]
    AccessDenied {
        /// The device path.
        path: PathBuf,
    },
    /// `EACCES` on a trigger: the caller lacks the capability.
    #[error(
        "trigger refused (EACCES): bumping the generation needs CAP_CHECKPOINT_RESTORE or \
         CAP_SYS_ADMIN in the user namespace that owns the device; run it as root or grant \
         one of these capabilities"
    )]
    TriggerDenied,
    /// `EBADF`: an acknowledgement or tracking on a file opened read-only.
    #[error(
        "{op} refused (EBADF): this watcher was opened read-only; {op} needs a file open for \
         writing (root or the `sysgenid` group)"
    )]
    ReadOnly {
        /// [`Op::Ack`] or [`Op::SetTracking`].
        op: Op,
    },
    /// `EINVAL` on an acknowledgement: the value is not the current generation.
    #[error(
        "ack of generation {generation} refused (EINVAL): it is not the current generation; \
         read the current one (next_change or try_read) and ack that"
    )]
    NotCurrent {
        /// The value that was refused.
        generation: u32,
    },
    /// `ENOBUFS`: an acknowledgement whose length is not 4 bytes.
    #[error("ack refused (ENOBUFS): an acknowledgement must be exactly 4 bytes")]
    AckLength,
    /// `ETIME`: `wait_watchers` timed out while tracked watchers were still outdated.
    #[error(
        "wait_watchers timed out (ETIME) after {timeout:?} with {} tracked watcher(s) still \
         outdated; status() names the lagging processes",
        match outdated { Some(n) => n.to_string(), None => "some".to_owned() }
    )]
    Timeout {
        /// The timeout that expired.
        timeout: Duration,
        /// How many tracked watchers were outdated, from the status document, if it answered.
        outdated: Option<u64>,
    },
    /// `EINTR` on `wait_watchers` because the caller itself is outdated.
    #[error(
        "wait_watchers interrupted (EINTR): this watcher is itself outdated (the generation \
         changed); read and ack the new generation first, then wait again"
    )]
    WatcherOutdated,
    /// `EINTR` from a signal, where the call is not retried.
    #[error("{op} interrupted by a signal (EINTR); call it again")]
    Interrupted {
        /// The interrupted operation.
        op: Op,
    },
    /// `EOVERFLOW`: the generation is `u32::MAX` and cannot be bumped.
    #[error(
        "trigger refused (EOVERFLOW): the generation is already u32::MAX and can never change \
         again; nothing changed"
    )]
    Overflow,
    /// `EIO` on a trigger: the daemon could not make the new value durable.
    #[error(
        "trigger failed (EIO): the daemon could not persist the new generation, so nothing \
         changed and it reports itself degraded; check the disk of its state directory, see \
         status().last_failure, then retry"
    )]
    PersistFailed,
    /// `EINVAL` on another call: an argument the device does not accept.
    #[error("{op} refused (EINVAL): the device does not accept this argument")]
    InvalidArgument {
        /// The operation.
        op: Op,
    },
    /// `ENODEV` when mapping the device, and no page file to map instead.
    #[error(
        "{}: the device cannot be mapped (ENODEV: sysgenidd runs with --device-mmap off, or \
         the kernel is older than 6.6) and there is no page file; set SYSGENID_STATE_DIR to \
         the daemon's state directory",
        path.display()
    )]
    MapUnsupported {
        /// The device path.
        path: PathBuf,
    },
    /// The control socket cannot be reached.
    #[error("cannot reach the control socket {}: {source}; is sysgenidd running?", path.display())]
    ControlUnavailable {
        /// The socket path.
        path: PathBuf,
        /// What connecting, writing or reading said.
        #[source]
        source: io::Error,
    },
    /// The control socket answered with an error line.
    #[error("the control socket {} answered an error: {message}", path.display())]
    Control {
        /// The socket path.
        path: PathBuf,
        /// The daemon's message.
        message: String,
    },
    /// The control socket answered something this library cannot read: not a status document,
    /// not a `trigger-if` answer.
    #[error("the control socket {} sent an unreadable answer: {source}", path.display())]
    BadStatus {
        /// The socket path.
        path: PathBuf,
        /// What parsing said.
        #[source]
        source: serde_json::Error,
    },
    /// The control socket answered a status document without fields that every version of it
    /// has: the peer is not sysgenidd, or not a working one.
    #[error(
        "the control socket {} sent a status document without {}, which every sysgenidd \
         writes; is sysgenidd what listens there? restart or reinstall it",
        path.display(),
        fields.join(", ")
    )]
    StatusIncomplete {
        /// The socket path.
        path: PathBuf,
        /// The fields it lacks.
        fields: Vec<&'static str>,
    },
    /// The page file, its directory, the daemon behind the control socket or the mount serving
    /// the device belongs to a user other than root and this process's own, or others may write
    /// it: whoever controls it could forge the generation or the daemon's answers, so the client
    /// refuses it rather than fall back to anything.
    #[error(
        "{}: refusing to trust it: {problem}; whoever controls it could forge the generation or \
         the daemon's answers. Check that SYSGENID_STATE_DIR and SYSGENID_DEVICE name the paths \
         of a sysgenidd run by root or by this user",
        path.display()
    )]
    Untrusted {
        /// The file, directory or socket.
        path: PathBuf,
        /// What is wrong with it.
        problem: crate::Distrust,
    },
    /// A file did not behave as the ABI says (such as a short read, or a page file shorter
    /// than the generation).
    #[error("{}: {what}", path.display())]
    Unexpected {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// Any other system error.
    #[error("{op} on {} failed: {source}", path.display())]
    Os {
        /// The operation.
        op: Op,
        /// The file.
        path: PathBuf,
        /// The error, with its errno.
        #[source]
        source: io::Error,
    },
}

/// The message, as [`Display`](fmt::Display) gives it: what `main` prints when it returns
/// `Result<_, Error>`, so a user sees what to do rather than the variant's fields.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A call of the ABI, with what its errors need to say.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call {
    Open { write: bool },
    Read,
    Ack(u32),
    SetTracking,
    WaitWatchers(Duration),
    Trigger,
    Poll,
    Map,
}

impl Call {
    fn op(self) -> Op {
        match self {
            Call::Open { .. } => Op::Open,
            Call::Read => Op::Read,
            Call::Ack(_) => Op::Ack,
            Call::SetTracking => Op::SetTracking,
            Call::WaitWatchers(_) => Op::WaitWatchers,
            Call::Trigger => Op::Trigger,
            Call::Poll => Op::Poll,
            Call::Map => Op::Map,
        }
    }
}

impl Error {
    /// The error for `errno` returned by `call` on `path`.
    pub(crate) fn from_errno(call: Call, errno: RawErrno, path: &Path) -> Error {
        let path = path.to_owned();
        match (call, errno) {
            (_, RawErrno::NOTCONN) => Error::DaemonGone { path },
            (Call::Open { .. } | Call::Map, RawErrno::NOENT | RawErrno::NOTDIR) => {
                Error::DeviceMissing { path }
            }
            (Call::Open { write: true }, RawErrno::ACCESS) => Error::WriteAccessDenied { path },
            (Call::Open { write: false } | Call::Map, RawErrno::ACCESS) => {
                Error::AccessDenied { path }
            }
            (Call::Map, RawErrno::NODEV) => Error::MapUnsupported { path },
            (Call::Trigger, RawErrno::ACCESS) => Error::TriggerDenied,
            (Call::Trigger, RawErrno::OVERFLOW) => Error::Overflow,
            (Call::Trigger, RawErrno::IO) => Error::PersistFailed,
            (Call::Ack(_), RawErrno::BADF) => Error::ReadOnly { op: Op::Ack },
            (Call::SetTracking, RawErrno::BADF) => Error::ReadOnly {
                op: Op::SetTracking,
            },
            (Call::Ack(generation), RawErrno::INVAL) => Error::NotCurrent { generation },
            (Call::Ack(_), RawErrno::NOBUFS) => Error::AckLength,
            (Call::WaitWatchers(timeout), RawErrno::TIME) => Error::Timeout {
                timeout,
                outdated: None,
            },
            (Call::WaitWatchers(_), RawErrno::INTR) => Error::WatcherOutdated,
            (call, RawErrno::INTR) => Error::Interrupted { op: call.op() },
            (call, RawErrno::INVAL) => Error::InvalidArgument { op: call.op() },
            (call, errno) => Error::Os {
                op: call.op(),
                path,
                source: io::Error::from_raw_os_error(errno.raw_os_error()),
            },
        }
    }

    /// The errno behind this error, if it came from one.
    pub fn raw_os_error(&self) -> Option<i32> {
        let errno = match self {
            Error::DeviceMissing { .. } => RawErrno::NOENT,
            Error::NotServed { .. }
            | Error::Control { .. }
            | Error::BadStatus { .. }
            | Error::StatusIncomplete { .. } => {
                return None;
            }
            Error::Unexpected { .. } | Error::Untrusted { .. } => return None,
            Error::DaemonGone { .. } => RawErrno::NOTCONN,
            Error::WriteAccessDenied { .. } | Error::AccessDenied { .. } | Error::TriggerDenied => {
                RawErrno::ACCESS
            }
            Error::ReadOnly { .. } => RawErrno::BADF,
            Error::NotCurrent { .. } | Error::InvalidArgument { .. } => RawErrno::INVAL,
            Error::AckLength => RawErrno::NOBUFS,
            Error::Timeout { .. } => RawErrno::TIME,
            Error::WatcherOutdated | Error::Interrupted { .. } => RawErrno::INTR,
            Error::Overflow => RawErrno::OVERFLOW,
            Error::PersistFailed => RawErrno::IO,
            Error::MapUnsupported { .. } => RawErrno::NODEV,
            Error::ControlUnavailable { source, .. } | Error::Os { source, .. } => {
                return source.raw_os_error();
            }
        };
        Some(errno.raw_os_error())
    }

    /// The errno as one of the device's documented errors, if it is one.
    pub fn errno(&self) -> Option<sysgenid_abi::Errno> {
        self.raw_os_error().and_then(sysgenid_abi::Errno::from_raw)
    }

    /// Whether this error means that no daemon serves the device (or the control socket) right
    /// now: it is missing, unserved, gone, or not answering.
    pub fn daemon_not_running(&self) -> bool {
        self.device_unserved() || matches!(self, Error::ControlUnavailable { .. })
    }

    /// Whether a reopen should wait and try again after this error: the device is missing,
    /// unserved, or still the mode-0000 mountpoint of a stopped daemon.
    pub(crate) fn retry_reopen(&self) -> bool {
        self.device_unserved() || matches!(self, Error::WriteAccessDenied { .. })
    }

    /// Whether the device is missing, unserved, gone, or refuses to open as the mode-0000
    /// mountpoint of a stopped daemon does.
    fn device_unserved(&self) -> bool {
        matches!(
            self,
            Error::DeviceMissing { .. }
                | Error::NotServed { .. }
                | Error::DaemonGone { .. }
                | Error::AccessDenied { .. }
        )
    }

    fn io_kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            Error::DeviceMissing { .. } => K::NotFound,
            Error::NotServed { .. } | Error::DaemonGone { .. } => K::NotConnected,
            Error::WriteAccessDenied { .. }
            | Error::AccessDenied { .. }
            | Error::TriggerDenied
            | Error::ReadOnly { .. }
            | Error::Untrusted { .. } => K::PermissionDenied,
            Error::NotCurrent { .. } | Error::AckLength | Error::InvalidArgument { .. } => {
                K::InvalidInput
            }
            Error::Timeout { .. } => K::TimedOut,
            Error::WatcherOutdated | Error::Interrupted { .. } => K::Interrupted,
            Error::MapUnsupported { .. } => K::Unsupported,
            Error::BadStatus { .. } | Error::StatusIncomplete { .. } | Error::Unexpected { .. } => {
                K::InvalidData
            }
            Error::ControlUnavailable { source, .. } | Error::Os { source, .. } => source.kind(),
            Error::Overflow | Error::PersistFailed | Error::Control { .. } => K::Other,
        }
    }
}

impl From<Error> for io::Error {
    /// An `io::Error` of the matching kind that carries the [`Error`] as its source.
    fn from(err: Error) -> io::Error {
        io::Error::new(err.io_kind(), err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(call: Call, errno: RawErrno) -> Error {
        Error::from_errno(call, errno, Path::new("/dev/sysgenid"))
    }

    /// Each errno of the contract (and `ENOTCONN`) becomes its variant with an actionable
    /// message, and the raw errno is kept.
    #[test]
    fn every_errno_of_the_spec_maps_to_a_variant_that_says_what_to_do() {
        let second = Duration::from_secs(1);
        let cases: Vec<(Call, RawErrno, &str)> = vec![
            (
                Call::Open { write: false },
                RawErrno::NOENT,
                "is sysgenidd running?",
            ),
            (Call::Read, RawErrno::NOTCONN, "daemon is gone"),
            (
                Call::Open { write: true },
                RawErrno::ACCESS,
                "`sysgenid` group",
            ),
            (
                Call::Open { write: false },
                RawErrno::ACCESS,
                "is sysgenidd running?",
            ),
            (
                Call::Trigger,
                RawErrno::ACCESS,
                "CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN",
            ),
            (Call::SetTracking, RawErrno::BADF, "opened read-only"),
            (Call::Ack(7), RawErrno::BADF, "opened read-only"),
            (
                Call::Ack(7),
                RawErrno::INVAL,
                "generation 7 refused (EINVAL): it is not the current generation",
            ),
            (Call::Ack(7), RawErrno::NOBUFS, "exactly 4 bytes"),
            (
                Call::WaitWatchers(second),
                RawErrno::TIME,
                "timed out (ETIME) after 1s",
            ),
            (
                Call::WaitWatchers(second),
                RawErrno::INTR,
                "itself outdated",
            ),
            (Call::Read, RawErrno::INTR, "interrupted by a signal"),
            (Call::Trigger, RawErrno::OVERFLOW, "u32::MAX"),
            (Call::Trigger, RawErrno::IO, "could not persist"),
            (Call::Trigger, RawErrno::INVAL, "trigger refused (EINVAL)"),
            (Call::Map, RawErrno::NODEV, "--device-mmap off"),
            (Call::Poll, RawErrno::FAULT, "poll on"),
        ];
        for (call, errno, text) in cases {
            let err = map(call, errno);
            let message = err.to_string();
            assert!(message.contains(text), "{message:?} lacks {text:?}");
            assert_eq!(err.raw_os_error(), Some(errno.raw_os_error()), "{message}");
        }
    }

    #[test]
    fn the_documented_errnos_are_typed() {
        assert_eq!(
            map(Call::Ack(1), RawErrno::INVAL).errno(),
            Some(sysgenid_abi::Errno::Inval)
        );
        assert_eq!(
            map(Call::Trigger, RawErrno::IO).errno(),
            Some(sysgenid_abi::Errno::Io)
        );
        assert_eq!(map(Call::Read, RawErrno::NOTCONN).errno(), None);
    }

    #[test]
    fn timeout_names_the_outdated_count_when_known() {
        let err = Error::Timeout {
            timeout: Duration::from_millis(50),
            outdated: Some(2),
        };
        assert!(
            err.to_string().contains("with 2 tracked watcher(s)"),
            "{err}"
        );
    }

    #[test]
    fn converts_to_io_error_of_the_matching_kind() {
        let io: io::Error = map(Call::Open { write: false }, RawErrno::NOENT).into();
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
        assert!(io.to_string().contains("is sysgenidd running?"));
        let io: io::Error = map(Call::Trigger, RawErrno::ACCESS).into();
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn debug_prints_the_message_not_the_fields() {
        for err in [
            map(Call::Open { write: false }, RawErrno::NOENT),
            map(Call::Trigger, RawErrno::ACCESS),
            map(Call::Poll, RawErrno::FAULT),
        ] {
            let debug = format!("{err:?}");
            assert_eq!(debug, err.to_string());
            assert!(
                !debug.contains("DeviceMissing") && !debug.contains("path:"),
                "{debug}"
            );
        }
    }

    #[test]
    fn absence_errors_are_recognised() {
        assert!(map(Call::Read, RawErrno::NOTCONN).daemon_not_running());
        assert!(map(Call::Open { write: false }, RawErrno::NOENT).daemon_not_running());
        assert!(!map(Call::Trigger, RawErrno::ACCESS).daemon_not_running());
    }
}
