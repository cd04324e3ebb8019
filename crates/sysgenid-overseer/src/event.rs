//! What the overseer tells its observer as it goes, and what its steps end with.
//!
//! Each event serializes to the JSON object `sysgenid overseer` prints for it (docs/overseer.md):
//! the variant's name in kebab case under `"event"`, then the payload's fields.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::hooks::{HookFailure, HookStatus};

/// One step of the workflow, as it happens. The last event of a step is final
/// ([`Event::is_final`]): `quiesced`, `readjusted`, `timeout`, `hook-failed` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// pre-snapshot is about to run its quiesce hooks.
    Quiescing(Quiescing),
    /// pre-snapshot ran its hooks and recorded the generation (final).
    Quiesced(Quiesced),
    /// post-restore with a trigger waits up to its grace period for a hardware backend's bump
    /// before it bumps itself (not sent when the generation already moved, or with no grace).
    Grace(Grace),
    /// post-restore with a trigger decided about the bump.
    Bumped(Bumped),
    /// Tracked watchers are outdated; sent when that changes, at most once per
    /// [`PostRestoreOptions::progress_interval`](crate::PostRestoreOptions::progress_interval).
    Waiting(Waiting),
    /// post-restore is about to run its un-quiesce hooks.
    Unquiescing(Unquiescing),
    /// Every tracked watcher acknowledged and the un-quiesce hooks succeeded (final).
    Readjusted(Readjusted),
    /// The wait for the tracked watchers timed out first (final).
    Timeout(TimedOut),
    /// A hook failed (final).
    HookFailed(HookFailed),
    /// Anything else went wrong (final).
    Error(ErrorReport),
    /// Something went wrong that does not change the outcome.
    Warning(Warning),
}

impl Event {
    /// Whether this event ends its step.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Event::Quiesced(_)
                | Event::Readjusted(_)
                | Event::Timeout(_)
                | Event::HookFailed(_)
                | Event::Error(_)
        )
    }
}

/// A tracked watcher that has not acknowledged the current generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Laggard {
    /// The process that opened it.
    pub pid: u32,
    /// That process's command line; `None` once it is gone.
    pub command: Option<String>,
}

impl fmt::Display for Laggard {
    /// `pid 812 (/usr/bin/myservice)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let command = self.command.as_deref().unwrap_or("gone");
        write!(f, "pid {} ({command})", self.pid)
    }
}

/// Which hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// pre-snapshot's quiesce hooks.
    Quiesce,
    /// post-restore's un-quiesce hooks.
    Unquiesce,
}

impl Phase {
    /// Its name, as `SYSGENID_PHASE` gives it to hooks.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Quiesce => "quiesce",
            Phase::Unquiesce => "unquiesce",
        }
    }
}

/// Why post-restore un-quiesces, as `SYSGENID_OUTCOME` gives it to hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Every tracked watcher acknowledged.
    Readjusted,
    /// The wait timed out.
    Timeout,
    /// A step failed (the generation may not have been bumped).
    Error,
}

impl Reason {
    /// Its name, as `SYSGENID_OUTCOME` gives it to hooks.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Readjusted => "readjusted",
            Reason::Timeout => "timeout",
            Reason::Error => "error",
        }
    }
}

/// Payload of [`Event::Quiescing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quiescing {
    /// The generation the hooks get.
    pub generation: u32,
    /// The hooks, in the order they run.
    pub hooks: Vec<String>,
}

/// Payload of [`Event::Quiesced`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quiesced {
    /// The generation recorded.
    pub generation: u32,
    /// Where it is recorded.
    pub record: PathBuf,
    /// The hooks that ran.
    pub hooks: Vec<String>,
}

/// Payload of [`Event::Grace`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grace {
    /// The generation before the snapshot, which is still the current one.
    pub expected: u32,
    /// How long it waits at most, in milliseconds.
    pub grace_ms: u64,
}

/// Payload of [`Event::Bumped`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bumped {
    /// The generation before the snapshot.
    pub expected: u32,
    /// The generation now.
    pub generation: u32,
    /// Whether this overseer bumped it (not a backend).
    pub triggered: bool,
}

/// Payload of [`Event::Waiting`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    /// The current generation.
    pub generation: u32,
    /// The tracked watchers that have not acknowledged it.
    pub outdated: Vec<Laggard>,
}

/// Payload of [`Event::Unquiescing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unquiescing {
    /// The generation the hooks get; `None` when it cannot be read (after an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// Why they run.
    pub outcome: Reason,
    /// The hooks, in the order they run.
    pub hooks: Vec<String>,
}

/// How post-restore left the machine: part of its final events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Restore {
    /// The generation before the snapshot (`None`: not known, and not needed without a
    /// trigger).
    pub expected: Option<u32>,
    /// Whether this overseer bumped the generation.
    pub triggered: bool,
    /// Whether the un-quiesce hooks ran and all succeeded.
    pub unquiesced: bool,
    /// Whether the hooks were skipped ([`HookPolicy::Skip`](crate::HookPolicy::Skip)); then
    /// `unquiesced` is false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hooks_skipped: bool,
}

/// Payload of [`Event::Readjusted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readjusted {
    /// The generation every tracked watcher acknowledged.
    pub generation: u32,
    /// The bump and the un-quiesce.
    #[serde(flatten)]
    pub restore: Restore,
    /// How many un-quiesce hooks ran.
    #[serde(skip)]
    pub hooks: usize,
}

/// Payload of [`Event::Timeout`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimedOut {
    /// The generation at the end of the wait.
    pub generation: u32,
    /// The bump and the un-quiesce.
    #[serde(flatten)]
    pub restore: Restore,
    /// The tracked watchers still outdated.
    pub laggards: Vec<Laggard>,
}

/// Payload of [`Event::HookFailed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookFailed {
    /// Which hooks.
    pub phase: Phase,
    /// The first hook that failed.
    pub hook: String,
    /// How it failed.
    pub status: HookStatus,
    /// The generation the hooks got.
    pub generation: u32,
    /// In post-restore, the rest of the story.
    #[serde(flatten)]
    pub unquiesce: Option<UnquiesceFailure>,
}

/// What post-restore adds to [`HookFailed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnquiesceFailure {
    /// Every hook that failed (the others ran anyway).
    pub failed: Vec<HookFailure>,
    /// Whether every tracked watcher had acknowledged.
    pub readjusted: bool,
    /// The tracked watchers still outdated after a timeout.
    pub laggards: Vec<Laggard>,
    /// The bump and the un-quiesce.
    #[serde(flatten)]
    pub restore: Restore,
}

/// Payload of [`Event::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorReport {
    /// What went wrong, and, in post-restore, what became of the un-quiesce.
    pub error: String,
    /// The current generation, in post-restore when it can be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// In post-restore once its hooks are known: the bump and the un-quiesce.
    #[serde(flatten)]
    pub restore: Option<Restore>,
    /// Un-quiesce hooks that failed after the error.
    #[serde(skip)]
    pub hook_failures: Vec<HookFailure>,
}

impl From<&crate::Error> for ErrorReport {
    /// The report of an error that ended a step before it ran anything.
    fn from(error: &crate::Error) -> ErrorReport {
        ErrorReport {
            error: error.to_string(),
            generation: None,
            restore: None,
            hook_failures: Vec::new(),
        }
    }
}

/// Payload of [`Event::Warning`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// What happened.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn restore() -> Restore {
        Restore {
            expected: None,
            triggered: false,
            unquiesced: true,
            hooks_skipped: false,
        }
    }

    #[test]
    fn events_serialize_to_the_documented_lines() {
        let waiting = Event::Waiting(Waiting {
            generation: 1,
            outdated: vec![Laggard {
                pid: 812,
                command: None,
            }],
        });
        assert_eq!(
            serde_json::to_value(&waiting).unwrap(),
            json!({"event": "waiting", "generation": 1,
                   "outdated": [{"pid": 812, "command": null}]})
        );
        let grace = Event::Grace(Grace {
            expected: 4,
            grace_ms: 2000,
        });
        assert_eq!(
            serde_json::to_value(&grace).unwrap(),
            json!({"event": "grace", "expected": 4, "grace_ms": 2000})
        );
        assert!(!grace.is_final());
        let readjusted = Event::Readjusted(Readjusted {
            generation: 1,
            restore: restore(),
            hooks: 2,
        });
        assert_eq!(
            serde_json::to_value(&readjusted).unwrap(),
            json!({"event": "readjusted", "generation": 1, "expected": null,
                   "triggered": false, "unquiesced": true})
        );
        let skipped = Restore {
            hooks_skipped: true,
            unquiesced: false,
            ..restore()
        };
        let error = Event::Error(ErrorReport {
            error: "no daemon".to_owned(),
            generation: None,
            restore: Some(skipped),
            hook_failures: Vec::new(),
        });
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            json!({"event": "error", "error": "no daemon", "expected": null,
                   "triggered": false, "unquiesced": false, "hooks_skipped": true})
        );
    }

    #[test]
    fn a_failed_hook_says_which_and_how() {
        let failed = Event::HookFailed(HookFailed {
            phase: Phase::Quiesce,
            hook: "exit 3".to_owned(),
            status: HookStatus::Exited(3),
            generation: 4,
            unquiesce: None,
        });
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            json!({"event": "hook-failed", "phase": "quiesce", "hook": "exit 3",
                   "status": "exit status 3", "generation": 4})
        );
        assert!(failed.is_final());
        assert!(
            !Event::Warning(Warning {
                message: String::new()
            })
            .is_final()
        );
    }
}
