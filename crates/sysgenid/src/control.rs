//! The control socket: one request line out, one JSON line back; and the conditional bump.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sysgenid_abi::Errno;
use sysgenid_abi::control::{ErrorAnswer, Request};

use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::trust;

pub use sysgenid_abi::control::ConditionalBump;

/// How long the control socket gets to answer `status`.
pub(crate) const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long it gets to answer `trigger-if`, whose bump may queue behind others.
const TRIGGER_IF_TIMEOUT: Duration = Duration::from_secs(15);

/// The one JSON value the control socket answered, and the socket's path.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) path: PathBuf,
    pub(crate) value: serde_json::Value,
}

impl Answer {
    /// Parses one answer line from the socket at `path`.
    pub(crate) fn parse(line: &str, path: PathBuf) -> Result<Answer> {
        match serde_json::from_str(line) {
            Ok(value) => Ok(Answer { path, value }),
            Err(source) => Err(Error::BadStatus { path, source }),
        }
    }

    /// The daemon's error line, if the answer is one.
    pub(crate) fn refusal(&self) -> Result<Option<ErrorAnswer>> {
        if self.value.get("error").is_none() {
            return Ok(None);
        }
        let refusal = ErrorAnswer::deserialize(&self.value).map_err(|e| self.unreadable(e))?;
        Ok(Some(refusal))
    }

    /// The error for an answer this library cannot read.
    pub(crate) fn unreadable(&self, source: serde_json::Error) -> Error {
        Error::BadStatus {
            path: self.path.clone(),
            source,
        }
    }

    /// The error for the daemon's error line.
    pub(crate) fn control_error(&self, refusal: ErrorAnswer) -> Error {
        Error::Control {
            path: self.path.clone(),
            message: refusal.error,
        }
    }
}

/// Sends `request` to the control socket of `paths` and returns the one JSON value it answered
/// within `timeout`; an `{"error": ...}` answer is returned as is, for the caller to map.
pub(crate) fn exchange(paths: &Paths, request: Request, timeout: Duration) -> Result<Answer> {
    let path = paths.control_socket();
    let unavailable = |source| Error::ControlUnavailable {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(&path).map_err(unavailable)?;
    if let Err(problem) = trust::check_listener(&stream).map_err(unavailable)? {
        return Err(Error::Untrusted { path, problem });
    }
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unavailable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unavailable)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(unavailable)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(unavailable)?;
    Answer::parse(&line, path)
}

/// A conditional bump through the control socket of [`Paths::from_env`]; see
/// [`trigger_if_at`].
pub fn trigger_if(expect: u32, min: Option<u32>) -> Result<ConditionalBump> {
    trigger_if_at(&Paths::from_env(), expect, min)
}

/// Bumps the generation of the daemon at `paths` to `max(min, current + 1)`, as
/// [`trigger_at`](crate::trigger_at) does, but only if it is still `expect`.
///
/// This is the overseer's bump after a restore: read the generation before the snapshot, and
/// after the restore ask for a bump only if nothing (a hardware backend, another trigger) has
/// bumped since. The daemon decides in turn with every other bump, so a backend bump racing
/// with this call still makes exactly one bump. Returns once the new value is durable and
/// published, or at once with `bumped: false` and the current generation.
///
/// The caller needs `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN` in the daemon's user namespace
/// ([`Error::TriggerDenied`]). Other errors: [`Error::Overflow`], [`Error::PersistFailed`],
/// [`Error::ControlUnavailable`] (no daemon), [`Error::Control`] (a daemon without
/// `trigger-if`, or another refusal, with its message).
///
/// ```no_run
/// let before = sysgenid::generation()?; // before the snapshot
/// // ... snapshot, restore ...
/// let outcome = sysgenid::trigger_if(before, None)?;
/// if !outcome.bumped {
///     println!("a backend already bumped to {}", outcome.generation);
/// }
/// # Ok::<(), sysgenid::Error>(())
/// ```
pub fn trigger_if_at(paths: &Paths, expect: u32, min: Option<u32>) -> Result<ConditionalBump> {
    let min = min.unwrap_or(0);
    let answer = exchange(
        paths,
        Request::TriggerIf { expect, min },
        TRIGGER_IF_TIMEOUT,
    )?;
    read_trigger_if(&answer)
}

/// Reads the answer to `trigger-if`.
fn read_trigger_if(answer: &Answer) -> Result<ConditionalBump> {
    if let Some(refusal) = answer.refusal()? {
        return Err(match refusal.device_errno() {
            Some(Errno::Acces) => Error::TriggerDenied,
            Some(Errno::Overflow) => Error::Overflow,
            Some(Errno::Io) => Error::PersistFailed,
            _ => answer.control_error(refusal),
        });
    }
    ConditionalBump::deserialize(&answer.value).map_err(|e| answer.unreadable(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<ConditionalBump> {
        read_trigger_if(&Answer::parse(line, PathBuf::from("/s"))?)
    }

    #[test]
    fn answers_parse() {
        let bumped = parse(r#"{"bumped": true, "generation": 6}"#).unwrap();
        assert_eq!((bumped.bumped, bumped.generation), (true, 6));
        let unchanged = parse(r#"{"bumped": false, "generation": 7}"#).unwrap();
        assert_eq!((unchanged.bumped, unchanged.generation), (false, 7));
    }

    #[test]
    fn refusals_become_the_trigger_errors() {
        let refusal = |errno| {
            let line = format!(r#"{{"error": "no", "errno": "{errno}"}}"#);
            parse(&line).unwrap_err()
        };
        assert!(matches!(refusal("EACCES"), Error::TriggerDenied));
        assert!(matches!(refusal("EOVERFLOW"), Error::Overflow));
        assert!(matches!(refusal("EIO"), Error::PersistFailed));
        let other = refusal("EBUSY");
        assert!(matches!(other, Error::Control { .. }), "{other}");
        let old = parse(r#"{"error": "unknown request \"trigger-if 1\""}"#).unwrap_err();
        assert!(matches!(old, Error::Control { .. }), "{old}");
        assert!(old.to_string().contains("unknown request"), "{old}");
        let bad = parse(r#"{"bumped": "yes"}"#).unwrap_err();
        assert!(matches!(bad, Error::BadStatus { .. }), "{bad}");
        let garbage = parse("not json").unwrap_err();
        assert!(matches!(garbage, Error::BadStatus { .. }), "{garbage}");
    }
}
