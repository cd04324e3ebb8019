//! Identity values kept in the state directory between runs, to see restores made while down.
//!
//! A backend whose hardware holds a value that changes once per restore (a counter, a GUID)
//! records it after each change. At start, a recorded value that differs from the hardware's
//! means a restore happened while no daemon ran. No record (first start on this boot: the state
//! directory lives on tmpfs) tells nothing.

use std::io;
use std::path::{Path, PathBuf};

use super::BackendKind;
use crate::inbox::{Completion, Inbox, Message};

/// A backend's record file in a state directory.
pub fn path(state_dir: &Path, backend: BackendKind) -> PathBuf {
    state_dir.join(format!("{backend}.record"))
}

/// Whether a start should report a restore: the value differs from the recorded one.
pub fn restored_while_down(recorded: Option<u128>, now: u128) -> bool {
    recorded.is_some_and(|r| r != now)
}

/// The recorded value, if there is a readable one.
pub fn read(path: &Path) -> Option<u128> {
    u128::from_str_radix(std::fs::read_to_string(path).ok()?.trim(), 16).ok()
}

/// Records a value (a temporary file renamed over the record).
pub fn write(path: &Path, value: u128) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{value:x}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Where a backend keeps its value; cheap to clone into a completion.
#[derive(Debug, Clone)]
pub struct Recorder {
    backend: BackendKind,
    path: Option<PathBuf>,
}

impl Recorder {
    /// Records `value`, logging a failure.
    pub fn save(&self, value: u128) {
        if let Some(path) = &self.path
            && let Err(e) = write(path, value)
        {
            tracing::warn!(backend = self.backend.name(), path = %path.display(), error = %e, "cannot record the value");
        }
    }

    /// Reports a new value; it is recorded once the restore is handled.
    pub fn report(&self, inbox: &Inbox, value: u128) {
        let me = self.clone();
        inbox.send(Message::Report {
            backend: self.backend,
            key: Some(value),
            completion: Completion::then(move || me.save(value)),
        });
    }
}

/// Compares the hardware's value at start with the record and reports a restore made while
/// down; returns the recorder for later values.
pub fn resume(
    inbox: &Inbox,
    backend: BackendKind,
    state_dir: Option<&Path>,
    now: u128,
) -> Recorder {
    let recorder = Recorder {
        backend,
        path: state_dir.map(|dir| path(dir, backend)),
    };
    let recorded = recorder.path.as_deref().and_then(read);
    let key_at_start = |key| inbox.send(Message::KeyAtStart { backend, key });
    if let Some(r) = recorded {
        key_at_start(r);
    }
    if restored_while_down(recorded, now) {
        tracing::info!(
            backend = backend.name(),
            now = format_args!("{now:x}"),
            recorded = format_args!("{:x}", recorded.unwrap_or_default()),
            "the value changed while the daemon was down: a restore"
        );
        recorder.report(inbox, now);
    } else {
        key_at_start(now);
        recorder.save(now);
    }
    recorder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_value_means_a_restore_while_down() {
        assert!(!restored_while_down(None, 5));
        assert!(!restored_while_down(Some(5), 5));
        assert!(restored_while_down(Some(5), 6));
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), BackendKind::FwCfg);
        assert!(p.ends_with("fw-cfg.record"));
        assert_eq!(read(&p), None);
        write(&p, u128::MAX).unwrap();
        assert_eq!(read(&p), Some(u128::MAX));
        std::fs::write(&p, "not hex\n").unwrap();
        assert_eq!(read(&p), None);
    }
}
