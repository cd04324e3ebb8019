//! The control socket's messages (feature `serde`), defined once for the daemon that writes them
//! and every client that reads them.
//!
//! Connect to `<state-dir>/control.sock`, send one [`Request`] line, read one line of JSON:
//!
//! | request | answer |
//! |---|---|
//! | [`Request::Status`] | a [`Status`] document |
//! | [`Request::TriggerIf`] | a [`ConditionalBump`] (bumped or unchanged) |
//! | anything the daemon refuses or cannot serve | an [`ErrorAnswer`] |
//!
//! A reader tells an [`ErrorAnswer`] from the others by its `error` field. Readers ignore fields
//! they do not know, so a newer daemon's answers still parse; the status document carries a
//! [`version`](Status::version) so that a newer reader can tell what an older daemon lacks.
//!
//! ```
//! use sysgenid_abi::control::{ConditionalBump, Request};
//!
//! let request = Request::parse("trigger-if 5 min 9\n").unwrap();
//! assert_eq!(request, Request::TriggerIf { expect: 5, min: 9 });
//! assert_eq!(request.to_string(), "trigger-if 5 min 9");
//!
//! let answer: ConditionalBump = serde_json::from_str(r#"{"bumped":true,"generation":6}"#)?;
//! assert!(answer.bumped);
//! # Ok::<(), serde_json::Error>(())
//! ```

mod request;
mod status;

use serde::{Deserialize, Serialize};

use crate::Errno;

pub use request::{ParseRequestError, Request};
pub use status::{
    ADDED_FIELDS, Backend, BumpSource, DaemonInfo, LastBump, LastFailure, OutdatedFile, Restarts,
    STATUS_VERSION, Status, VERSION_1_FIELDS,
};

/// The answer to `trigger-if` when the daemon judged it: `{"bumped": true, "generation": 6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConditionalBump {
    /// Whether this request bumped the generation.
    pub bumped: bool,
    /// The generation now: the new one when bumped; otherwise the current one, which had
    /// already moved on from the expected value.
    pub generation: u32,
}

/// The answer to a request the daemon refuses or cannot serve:
/// `{"error": "...", "errno": "EACCES"}`, where `errno` is present only when the refusal is one
/// of the device's errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// What went wrong and what to do, for people.
    pub error: String,
    /// The errno name, such as `"EACCES"`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
}

impl ErrorAnswer {
    /// An error without an errno.
    pub fn new(message: impl Into<String>) -> ErrorAnswer {
        ErrorAnswer {
            error: message.into(),
            errno: None,
        }
    }

    /// An error that is one of the device's errnos.
    pub fn with_errno(message: impl Into<String>, errno: Errno) -> ErrorAnswer {
        ErrorAnswer {
            error: message.into(),
            errno: Some(errno.name().to_owned()),
        }
    }

    /// The errno as one of the device's, if the answer names one this crate knows.
    pub fn device_errno(&self) -> Option<Errno> {
        self.errno.as_deref().and_then(Errno::from_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes `value`, checks the JSON against `expected`, and parses it back.
    fn round_trip<T>(value: &T, expected: &str)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_string(value).unwrap();
        assert_eq!(json, expected);
        let back: T = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, value);
    }

    #[test]
    fn conditional_bumps_round_trip() {
        let bumped = ConditionalBump {
            bumped: true,
            generation: 6,
        };
        round_trip(&bumped, r#"{"bumped":true,"generation":6}"#);
        let unchanged = ConditionalBump {
            bumped: false,
            generation: 7,
        };
        round_trip(&unchanged, r#"{"bumped":false,"generation":7}"#);
    }

    #[test]
    fn error_answers_round_trip_with_and_without_errno() {
        let plain = ErrorAnswer::new("unknown request");
        round_trip(&plain, r#"{"error":"unknown request"}"#);
        assert_eq!(plain.device_errno(), None);
        let refusal = ErrorAnswer::with_errno("refused", Errno::Acces);
        round_trip(&refusal, r#"{"error":"refused","errno":"EACCES"}"#);
        assert_eq!(refusal.device_errno(), Some(Errno::Acces));
    }

    /// The lines a version-1 daemon printed, key order and all, still parse.
    #[test]
    fn answers_of_a_version_1_daemon_parse() {
        let refusal: ErrorAnswer = serde_json::from_str(
            r#"{"errno":"EACCES","error":"trigger-if refused (EACCES): the calling process (pid 16911) needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the daemon's user namespace"}"#,
        )
        .unwrap();
        assert_eq!(refusal.device_errno(), Some(Errno::Acces));
        let unknown: ErrorAnswer = serde_json::from_str(
            r#"{"error":"unknown request \"bogus\"; the requests are \"status\" and \"trigger-if G [min N]\""}"#,
        )
        .unwrap();
        assert_eq!(unknown.errno, None);
        let answer: ConditionalBump =
            serde_json::from_str(r#"{"bumped":false,"generation":2}"#).unwrap();
        assert!(!answer.bumped);
    }

    /// A newer daemon may add fields and errnos: an older reader ignores the fields and keeps
    /// the errno's name.
    #[test]
    fn answers_with_unknown_fields_and_errnos_parse() {
        let answer: ConditionalBump =
            serde_json::from_str(r#"{"bumped":true,"generation":3,"took_ms":4}"#).unwrap();
        assert_eq!(answer.generation, 3);
        let refusal: ErrorAnswer =
            serde_json::from_str(r#"{"error":"busy","errno":"EBUSY","retry":true}"#).unwrap();
        assert_eq!(refusal.errno.as_deref(), Some("EBUSY"));
        assert_eq!(refusal.device_errno(), None);
    }
}
