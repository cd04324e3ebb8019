//! pre-snapshot: run the quiesce hooks, then record the generation the snapshot will hold.

use std::path::PathBuf;
use std::time::Duration;

use sysgenid::Paths;

use crate::event::{HookFailed, Phase, Quiesced, Quiescing};
use crate::record::{check_record_dir, record_path, write_record};
use crate::{Error, Event, hooks};

/// The quiesce hooks directory when none is named; it may be missing.
pub const DEFAULT_QUIESCE_DIR: &str = "/etc/sysgenid/quiesce.d";

/// How long a hook may run by default before its process group is killed.
pub(crate) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of [`pre_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreSnapshotOptions {
    /// The quiesce hooks directory, which must exist; `None`: [`DEFAULT_QUIESCE_DIR`], which
    /// may be missing.
    pub hooks_dir: Option<PathBuf>,
    /// Shell commands to run after the directory's hooks.
    pub exec: Vec<String>,
    /// Kill a hook's process group and count it as failed after this long (default 30 s).
    pub hook_timeout: Duration,
    /// Where to record the generation; `None`: `overseer.json` in the state directory.
    pub record: Option<PathBuf>,
}

impl Default for PreSnapshotOptions {
    fn default() -> Self {
        PreSnapshotOptions {
            hooks_dir: None,
            exec: Vec::new(),
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            record: None,
        }
    }
}

/// How pre-snapshot ended, when it got to run its hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreSnapshotOutcome {
    /// Every hook succeeded and the generation is recorded: take the snapshot.
    Quiesced(Quiesced),
    /// A hook failed; the later ones did not run and nothing is recorded. Do not take the
    /// snapshot; un-quiesce with [`post_restore`](crate::post_restore) without a trigger.
    HookFailed(HookFailed),
}

impl PreSnapshotOutcome {
    /// Its final event.
    pub fn event(&self) -> Event {
        match self {
            PreSnapshotOutcome::Quiesced(q) => Event::Quiesced(q.clone()),
            PreSnapshotOutcome::HookFailed(h) => Event::HookFailed(h.clone()),
        }
    }
}

/// Before the snapshot: runs the quiesce hooks (stopping at the first failure), then records
/// the generation. The observer gets [`Event::Quiescing`] and then the final event, also for an
/// error.
///
/// The daemon must be running, as post-restore will need it.
pub fn pre_snapshot(
    paths: &Paths,
    options: &PreSnapshotOptions,
    mut observer: impl FnMut(&Event),
) -> Result<PreSnapshotOutcome, Error> {
    let result = quiesce(paths, options, &mut observer);
    crate::finish(&mut observer, result, PreSnapshotOutcome::event)
}

fn quiesce(
    paths: &Paths,
    options: &PreSnapshotOptions,
    observer: &mut dyn FnMut(&Event),
) -> Result<PreSnapshotOutcome, Error> {
    let hooks = hooks::of(&options.hooks_dir, DEFAULT_QUIESCE_DIR, &options.exec)?;
    let record = record_path(paths, &options.record);
    // Not quiesced yet: a record that could not be written must stop the step here.
    check_record_dir(&record)?;
    let names = hooks::names(&hooks);
    let before = sysgenid::status_at(paths)?.generation;
    observer(&Event::Quiescing(Quiescing {
        generation: before,
        hooks: names.clone(),
    }));
    let env = hooks::environment(paths, Phase::Quiesce, Some(before), None);
    if let Some(failed) = hooks::run_all(&hooks, &env, options.hook_timeout, true).pop() {
        return Ok(PreSnapshotOutcome::HookFailed(HookFailed {
            phase: Phase::Quiesce,
            hook: failed.hook,
            status: failed.status,
            generation: before,
            unquiesce: None,
        }));
    }
    let generation = sysgenid::status_at(paths)?.generation;
    write_record(&record, generation)?;
    Ok(PreSnapshotOutcome::Quiesced(Quiesced {
        generation,
        record,
        hooks: names,
    }))
}
