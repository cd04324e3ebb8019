//! The control socket's status document: the types of `sysgenid_abi::control`, and `status()`.
//!
//! Unknown fields are ignored, so a newer daemon's document still parses. A document from an
//! older daemon parses with the fields it lacks absent, and [`Status::missing_fields`] names
//! them; one without a field every daemon writes is [`Error::StatusIncomplete`].

use std::path::Path;

use serde::Deserialize;
use sysgenid_abi::control::Request;

use crate::control::{Answer, STATUS_TIMEOUT, exchange};
use crate::error::{Error, Result};
use crate::paths::Paths;

pub use sysgenid_abi::control::{
    Backend, BumpSource, DaemonInfo, LastBump, LastFailure, OutdatedFile, STATUS_VERSION, Status,
};

/// The status document from the control socket of [`Paths::from_env`].
pub fn status() -> Result<Status> {
    status_at(&Paths::from_env())
}

/// The status document from the control socket of `paths`: connect, send `status`, read one
/// JSON line.
///
/// A document from a daemon older than this library parses with what it lacks absent; see
/// [`Status::missing_fields`] (they are also logged through `log`).
pub fn status_at(paths: &Paths) -> Result<Status> {
    read_status(&exchange(paths, Request::Status, STATUS_TIMEOUT)?)
}

/// Reads one answer: a status document or `{"error": ...}`.
fn read_status(answer: &Answer) -> Result<Status> {
    if let Some(refusal) = answer.refusal()? {
        return Err(answer.control_error(refusal));
    }
    let status = Status::deserialize(&answer.value).map_err(|source| {
        let missing = match answer.value.as_object() {
            Some(fields) => Status::missing_required(|field| fields.contains_key(field)),
            None => Vec::new(),
        };
        if missing.is_empty() {
            return answer.unreadable(source);
        }
        Error::StatusIncomplete {
            path: answer.path.clone(),
            fields: missing,
        }
    })?;
    log_version(&status, &answer.path);
    Ok(status)
}

/// Says through `log` what an older document lacks, or that a newer one has more.
fn log_version(status: &Status, path: &Path) {
    let missing = status.missing_fields();
    if !missing.is_empty() {
        log::info!(
            "{}: the status document is version {}, older than this library's {STATUS_VERSION}; \
             it lacks {}",
            path.display(),
            status.version,
            missing.join(", ")
        );
    } else if status.is_newer() {
        log::debug!(
            "{}: the status document is version {}, newer than this library's \
             {STATUS_VERSION}; the fields this library does not know are ignored",
            path.display(),
            status.version
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Parses one answer line, as `status_at` does.
    fn parse(line: &str) -> Result<Status> {
        read_status(&Answer::parse(line, PathBuf::from("/s"))?)
    }

    /// The example of `docs/control.md`, plus a field this version does not know.
    const DOC: &str = r#"{"version":4,"generation":2,
        "generation_id":"5f0c3a9e1b7d4e2f8a6c0d1e3b5a7c9f","serving":true,"degraded":false,
        "open_files":3,"tracked":1,"outdated":1,
        "outdated_files":[{"pid":4242,"command":"/usr/bin/myservice --flag","tracked":true}],
        "pending_reads":1,"pending_waits":0,
        "last_bump":{"generation":2,"source":"trigger","pid":4100,"backend":null},
        "failed_bumps":0,"last_failure":null,
        "daemon":{"pid":4000,"device":"/dev/sysgenid","state_dir":"/run/sysgenid",
            "device_mmap":true,"serving":true,"backends":[],"serving_pid":4001,
            "restarts":{"count":1,"mode":"keeper","at":1,"previous_pid":3990,"cause":"signal 9"}},
        "future_field":42}"#;

    #[test]
    fn parses_the_documented_example() {
        let s = parse(&DOC.replace('\n', " ")).unwrap();
        assert_eq!(s.version, STATUS_VERSION);
        assert!(s.missing_fields().is_empty());
        assert_eq!(s.generation, 2);
        assert_eq!(
            s.generation_id.unwrap().to_string(),
            "5f0c3a9e1b7d4e2f8a6c0d1e3b5a7c9f"
        );
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

    /// A version-1 daemon's document (the example without `version`) parses, and says so.
    #[test]
    fn a_version_1_document_names_what_it_lacks() {
        let old = DOC.replace('\n', " ").replace(r#""version":4,"#, "");
        let s = parse(&old).unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(
            s.missing_fields(),
            [
                "version",
                "daemon.serving_pid",
                "daemon.restarts",
                "generation_id"
            ]
        );
        assert_eq!(s.daemon.pid, 4000);
    }

    #[test]
    fn a_document_without_a_required_field_names_it() {
        let err = parse(r#"{"version":2,"generation":2,"serving":true}"#).unwrap_err();
        let Error::StatusIncomplete { fields, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(fields.contains(&"daemon") && !fields.contains(&"generation"));
        assert!(err.to_string().contains("daemon"), "{err}");
    }

    #[test]
    fn an_error_line_becomes_a_control_error() {
        let err = parse(r#"{"error": "unknown request \"x\""}"#).unwrap_err();
        assert!(matches!(err, Error::Control { .. }), "{err}");
        assert!(err.to_string().contains("unknown request"));
    }

    #[test]
    fn garbage_is_a_bad_status() {
        let err = parse("not json").unwrap_err();
        assert!(matches!(err, Error::BadStatus { .. }), "{err}");
        let full = DOC
            .replace('\n', " ")
            .replace(r#""generation":2,"s"#, r#""generation":"2","s"#);
        let err = parse(&full).unwrap_err();
        assert!(matches!(err, Error::BadStatus { .. }), "{err}");
    }

    #[test]
    fn unknown_bump_sources_parse() {
        let s: BumpSource = serde_json::from_str(r#""hypervisor""#).unwrap();
        assert_eq!(s, BumpSource::Unknown);
    }
}
