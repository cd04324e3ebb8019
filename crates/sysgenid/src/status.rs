//! The control socket's status document, as typed structs.
//!
//! The fields mirror `docs/control.md`. Unknown fields are ignored, so a newer daemon that adds
//! some still parses.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::control::{STATUS_TIMEOUT, error_message, exchange};
use crate::error::{Error, Result};
use crate::paths::Paths;

/// The status document: what the device ABI cannot tell, such as who is lagging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The current generation.
    pub generation: u32,
    /// The device is mounted and answered the daemon's own first `stat`.
    pub serving: bool,
    /// The last persist failed: the last bump was refused with `EIO`.
    pub degraded: bool,
    /// Open files of the device (watchers).
    pub open_files: u64,
    /// Tracked watchers.
    pub tracked: u64,
    /// Tracked watchers that have not acknowledged the current generation: what
    /// `wait_watchers` waits for.
    pub outdated: u64,
    /// Every open file, tracked or not, that has not acknowledged the current generation.
    pub outdated_files: Vec<OutdatedFile>,
    /// Blocked `read` calls.
    pub pending_reads: u64,
    /// Blocked `WAIT_WATCHERS` calls.
    pub pending_waits: u64,
    /// The last applied bump.
    pub last_bump: Option<LastBump>,
    /// Bumps that could not be applied since the daemon started.
    pub failed_bumps: u64,
    /// The last bump that could not be applied.
    pub last_failure: Option<LastFailure>,
    /// Facts about the daemon.
    pub daemon: DaemonInfo,
}

/// An open file that has not acknowledged the current generation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct OutdatedFile {
    /// The process that opened it (a file passed on by `fork` or a socket stays under its
    /// opener).
    pub pid: u32,
    /// Its command line, `[name]` without one, `None` once the process is gone.
    pub command: Option<String>,
    /// Whether it is a tracked watcher.
    pub tracked: bool,
}

/// Who caused a bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BumpSource {
    /// A `TRIGGER_GEN_UPDATE` call.
    Trigger,
    /// A hardware backend.
    Backend,
    /// A source this version of the library does not know.
    #[serde(other)]
    Unknown,
}

/// The last applied bump.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct LastBump {
    /// The generation it set.
    pub generation: u32,
    /// Who caused it.
    pub source: BumpSource,
    /// For a trigger, the calling thread.
    pub pid: Option<u32>,
    /// For a backend, its name.
    pub backend: Option<String>,
}

/// The last bump that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct LastFailure {
    /// Who asked for it.
    pub source: BumpSource,
    /// For a backend, its name.
    pub backend: Option<String>,
    /// The errno name: `"EOVERFLOW"` or `"EIO"`.
    pub error: String,
    /// More detail, if any.
    pub detail: Option<String>,
}

/// Facts about the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct DaemonInfo {
    /// Its process id.
    pub pid: u32,
    /// The device it serves.
    pub device: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Whether `mmap` of the device is served.
    pub device_mmap: bool,
    /// Whether it is serving.
    pub serving: bool,
    /// Each hardware backend.
    pub backends: Vec<Backend>,
}

/// A hardware backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct Backend {
    /// Its name.
    pub name: String,
    /// Whether it is running.
    pub active: bool,
    /// Why not, when it is not.
    pub reason: Option<String>,
    /// How it runs, when that is worth knowing (how a probe attached, what it cannot see).
    #[serde(default)]
    pub detail: Option<String>,
}

/// The status document from the control socket of [`Paths::from_env`].
pub fn status() -> Result<Status> {
    status_at(&Paths::from_env())
}

/// The status document from the control socket of `paths`: connect, send `status`, read one
/// JSON line.
pub fn status_at(paths: &Paths) -> Result<Status> {
    let (path, value) = exchange(paths, "status", STATUS_TIMEOUT)?;
    from_answer(value, &path)
}

/// Reads one answer: a status document or `{"error": ...}`.
fn from_answer(value: serde_json::Value, path: &std::path::Path) -> Result<Status> {
    if let Some(message) = error_message(&value) {
        return Err(Error::Control {
            path: path.to_owned(),
            message: message.to_owned(),
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
    use std::path::Path;

    /// Parses one answer line, as `status_at` does.
    fn parse(line: &str, path: &Path) -> Result<Status> {
        let value = serde_json::from_str(line).map_err(|source| Error::BadStatus {
            path: path.to_owned(),
            source,
        })?;
        from_answer(value, path)
    }

    /// The example of `docs/control.md`, plus a field this version does not know.
    const DOC: &str = r#"{"generation":2,"serving":true,"degraded":false,"open_files":3,
        "tracked":1,"outdated":1,
        "outdated_files":[{"pid":4242,"command":"/usr/bin/myservice --flag","tracked":true}],
        "pending_reads":1,"pending_waits":0,
        "last_bump":{"generation":2,"source":"trigger","pid":4100,"backend":null},
        "failed_bumps":0,"last_failure":null,
        "daemon":{"pid":4000,"device":"/dev/sysgenid","state_dir":"/run/sysgenid",
            "device_mmap":true,"serving":true,"backends":[]},
        "future_field":42}"#;

    #[test]
    fn parses_the_documented_example() {
        let s = parse(&DOC.replace('\n', " "), Path::new("/s")).unwrap();
        assert_eq!(s.generation, 2);
        assert_eq!(s.outdated, 1);
        assert_eq!(s.outdated_files[0].pid, 4242);
        assert_eq!(
            s.outdated_files[0].command.as_deref(),
            Some("/usr/bin/myservice --flag")
        );
        let bump = s.last_bump.unwrap();
        assert_eq!(bump.source, BumpSource::Trigger);
        assert_eq!(bump.pid, Some(4100));
        assert_eq!(s.daemon.device, PathBuf::from("/dev/sysgenid"));
    }

    #[test]
    fn an_error_line_becomes_a_control_error() {
        let err = parse(r#"{"error": "unknown request \"x\""}"#, Path::new("/s")).unwrap_err();
        assert!(matches!(err, Error::Control { .. }), "{err}");
        assert!(err.to_string().contains("unknown request"));
    }

    #[test]
    fn garbage_is_a_bad_status() {
        let err = parse("not json", Path::new("/s")).unwrap_err();
        assert!(matches!(err, Error::BadStatus { .. }), "{err}");
    }

    #[test]
    fn unknown_bump_sources_parse() {
        let s: BumpSource = serde_json::from_str(r#""hypervisor""#).unwrap();
        assert_eq!(s, BumpSource::Unknown);
    }
}
