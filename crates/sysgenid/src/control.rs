//! The control socket: one request line out, one JSON line back; and the conditional bump.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::paths::Paths;

/// How long the control socket gets to answer `status`.
pub(crate) const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long it gets to answer `trigger-if`, whose bump may queue behind others.
const TRIGGER_IF_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends `request` (one line, without its newline) to the control socket of `paths` and returns
/// the socket's path and the one JSON value it answered within `timeout`; an `{"error": ...}`
/// answer is returned as is, for the caller to map.
pub(crate) fn exchange(
    paths: &Paths,
    request: &str,
    timeout: Duration,
) -> Result<(PathBuf, serde_json::Value)> {
    let path = paths.control_socket();
    let unavailable = |source| Error::ControlUnavailable {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(&path).map_err(unavailable)?;
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
    let value = serde_json::from_str(&line).map_err(|source| Error::BadStatus {
        path: path.clone(),
        source,
    })?;
    Ok((path, value))
}

/// The message of an `{"error": ...}` answer, if it is one.
pub(crate) fn error_message(value: &serde_json::Value) -> Option<&str> {
    value.get("error").and_then(|m| m.as_str())
}

/// What a conditional bump ([`trigger_if`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct ConditionalBump {
    /// Whether this call bumped the generation.
    pub bumped: bool,
    /// The generation now: the new one when bumped; otherwise the current one, which had
    /// already moved on from the expected value.
    pub generation: u32,
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
    let request = match min {
        Some(min) => format!("trigger-if {expect} min {min}"),
        None => format!("trigger-if {expect}"),
    };
    let (path, value) = exchange(paths, &request, TRIGGER_IF_TIMEOUT)?;
    parse_trigger_if(value, &path)
}

/// Reads the answer to `trigger-if`.
fn parse_trigger_if(value: serde_json::Value, path: &Path) -> Result<ConditionalBump> {
    if let Some(message) = error_message(&value) {
        return Err(match value.get("errno").and_then(|e| e.as_str()) {
            Some("EACCES") => Error::TriggerDenied,
            Some("EOVERFLOW") => Error::Overflow,
            Some("EIO") => Error::PersistFailed,
            _ => Error::Control {
                path: path.to_owned(),
                message: message.to_owned(),
            },
        });
    }
    serde_json::from_value(value).map_err(|source| Error::BadStatus {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<ConditionalBump> {
        parse_trigger_if(serde_json::from_str(line).unwrap(), Path::new("/s"))
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
        let old = parse(r#"{"error": "unknown request \"trigger-if 1\""}"#).unwrap_err();
        assert!(matches!(old, Error::Control { .. }), "{old}");
        assert!(old.to_string().contains("unknown request"), "{old}");
        let bad = parse(r#"{"bumped": "yes"}"#).unwrap_err();
        assert!(matches!(bad, Error::BadStatus { .. }), "{bad}");
    }
}
