//! post-restore: bump the generation unless a backend did, wait for every tracked watcher,
//! un-quiesce; and un-quiesce anyway when a step fails.

use std::path::PathBuf;
use std::time::Duration;

use sysgenid::{Paths, Probe};

use crate::event::{
    Bumped, ErrorReport, HookFailed, Phase, Readjusted, Reason, Restore, TimedOut,
    UnquiesceFailure, Unquiescing, Warning,
};
use crate::hooks::{Hook, HookFailure};
use crate::pre_snapshot::DEFAULT_HOOK_TIMEOUT;
use crate::record::{read_record, record_path};
use crate::wait::{bump_unless_moved, wait_with_progress};
use crate::{Error, Event, Laggard, hooks};

/// The un-quiesce hooks directory when none is named; it may be missing.
pub const DEFAULT_UNQUIESCE_DIR: &str = "/etc/sysgenid/unquiesce.d";

/// Whether post-restore runs the un-quiesce hooks and commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HookPolicy {
    /// Run them.
    #[default]
    Run,
    /// Run none (CRIU's action script, for a container without a user namespace of its own,
    /// whose hooks would run as host root); the final event says `hooks_skipped`.
    Skip,
}

/// Options of [`post_restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRestoreOptions {
    /// Bump the generation unless a hardware backend already moved it past the expected one.
    pub trigger: bool,
    /// With `trigger`: the new generation is at least this.
    pub min: Option<u32>,
    /// The generation before the snapshot; `None`: from the record of pre-snapshot.
    pub expect: Option<u32>,
    /// The record; `None`: `overseer.json` in the state directory.
    pub record: Option<PathBuf>,
    /// With `trigger`: how long to wait first for a backend's bump (default 2 s).
    pub grace: Duration,
    /// How long to wait for every tracked watcher (default 30 s).
    pub timeout: Duration,
    /// The un-quiesce hooks directory, which must exist; `None`: [`DEFAULT_UNQUIESCE_DIR`],
    /// which may be missing.
    pub unquiesce_dir: Option<PathBuf>,
    /// Shell commands to run after the directory's hooks.
    pub exec: Vec<String>,
    /// Kill a hook's process group and count it as failed after this long (default 30 s).
    pub hook_timeout: Duration,
    /// Run the un-quiesce hooks after a timeout too (default true).
    pub unquiesce_on_timeout: bool,
    /// Run the un-quiesce hooks after an error too, with `SYSGENID_OUTCOME=error` (default
    /// true).
    pub unquiesce_on_error: bool,
    /// Whether the hooks run at all.
    pub hooks: HookPolicy,
    /// At most one [`Event::Waiting`] per this long (default 1 s); zero sends each change.
    pub progress_interval: Duration,
}

impl Default for PostRestoreOptions {
    fn default() -> Self {
        PostRestoreOptions {
            trigger: false,
            min: None,
            expect: None,
            record: None,
            grace: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
            unquiesce_dir: None,
            exec: Vec::new(),
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            unquiesce_on_timeout: true,
            unquiesce_on_error: true,
            hooks: HookPolicy::Run,
            progress_interval: Duration::from_secs(1),
        }
    }
}

/// How post-restore ended, once it knew its hooks.
#[derive(Debug)]
pub enum PostRestoreOutcome {
    /// Every tracked watcher acknowledged and the un-quiesce hooks succeeded.
    Readjusted(Readjusted),
    /// The wait timed out with tracked watchers outdated (un-quiesced unless
    /// [`PostRestoreOptions::unquiesce_on_timeout`] is off).
    TimedOut(TimedOut),
    /// An un-quiesce hook failed; the others ran.
    HookFailed(HookFailed),
    /// A step failed; the un-quiesce hooks ran anyway unless
    /// [`PostRestoreOptions::unquiesce_on_error`] is off.
    Failed(Failed),
}

/// A post-restore that failed after its hooks were known.
#[derive(Debug)]
pub struct Failed {
    /// What failed. The generation may not have been bumped.
    pub error: Error,
    /// What its final event says, including what became of the un-quiesce.
    pub report: ErrorReport,
}

impl PostRestoreOutcome {
    /// Its final event.
    pub fn event(&self) -> Event {
        match self {
            PostRestoreOutcome::Readjusted(r) => Event::Readjusted(r.clone()),
            PostRestoreOutcome::TimedOut(t) => Event::Timeout(t.clone()),
            PostRestoreOutcome::HookFailed(h) => Event::HookFailed(h.clone()),
            PostRestoreOutcome::Failed(f) => Event::Error(f.report.clone()),
        }
    }
}

/// After a restore: with a trigger, bumps the generation unless a backend moved it past the
/// expected one within the grace period; removes the record; waits for every tracked watcher;
/// runs the un-quiesce hooks. The observer gets [`Event::Grace`], [`Event::Bumped`],
/// [`Event::Waiting`], [`Event::Unquiescing`] as they happen, then the final event, also for an
/// error.
///
/// `Err` only when the hooks cannot be found (nothing ran); a later failure still un-quiesces
/// and ends as [`PostRestoreOutcome::Failed`].
pub fn post_restore(
    paths: &Paths,
    options: &PostRestoreOptions,
    mut observer: impl FnMut(&Event),
) -> Result<PostRestoreOutcome, Error> {
    let result = readjust(paths, options, &mut observer);
    crate::finish(&mut observer, result, PostRestoreOutcome::event)
}

/// What post-restore decided about the bump.
#[derive(Debug, Default, Clone, Copy)]
struct Decision {
    expected: Option<u32>,
    triggered: bool,
}

impl Decision {
    fn restore(self, unquiesced: bool, options: &PostRestoreOptions) -> Restore {
        let skipped = options.hooks == HookPolicy::Skip;
        Restore {
            expected: self.expected,
            triggered: self.triggered,
            unquiesced: unquiesced && !skipped,
            hooks_skipped: skipped,
        }
    }
}

fn readjust(
    paths: &Paths,
    options: &PostRestoreOptions,
    observer: &mut dyn FnMut(&Event),
) -> Result<PostRestoreOutcome, Error> {
    let hooks = match options.hooks {
        HookPolicy::Skip => Vec::new(),
        HookPolicy::Run => hooks::of(&options.unquiesce_dir, DEFAULT_UNQUIESCE_DIR, &options.exec)?,
    };
    // From here on the hooks are known: a failure still un-quiesces.
    let mut decision = Decision::default();
    let outcome = match bump_and_wait(paths, options, &mut decision, observer) {
        Ok((generation, timed_out)) => {
            let waited = Waited {
                generation,
                decision,
                timed_out,
            };
            unquiesce(paths, options, &hooks, waited, observer)
        }
        Err(error) => PostRestoreOutcome::Failed(unquiesce_after_error(
            paths, options, &hooks, decision, error, observer,
        )),
    };
    Ok(outcome)
}

/// Where the wait left post-restore.
struct Waited {
    generation: u32,
    decision: Decision,
    /// The laggards, if it timed out.
    timed_out: Option<Vec<Laggard>>,
}

/// After the wait: the un-quiesce hooks (unless timed out and told not to), and the outcome.
fn unquiesce(
    paths: &Paths,
    options: &PostRestoreOptions,
    hooks: &[Hook],
    waited: Waited,
    observer: &mut dyn FnMut(&Event),
) -> PostRestoreOutcome {
    let Waited {
        generation,
        decision,
        timed_out,
    } = waited;
    let (run, reason) = match timed_out {
        None => (true, Reason::Readjusted),
        Some(_) => (options.unquiesce_on_timeout, Reason::Timeout),
    };
    let failed = if run {
        run_unquiesce_hooks(paths, options, hooks, Some(generation), reason, observer)
    } else {
        Vec::new()
    };
    let restore = decision.restore(run && failed.is_empty(), options);
    if let Some(first) = failed.first() {
        return PostRestoreOutcome::HookFailed(HookFailed {
            phase: Phase::Unquiesce,
            hook: first.hook.clone(),
            status: first.status.clone(),
            generation,
            unquiesce: Some(UnquiesceFailure {
                readjusted: timed_out.is_none(),
                laggards: timed_out.unwrap_or_default(),
                failed,
                restore,
            }),
        });
    }
    match timed_out {
        Some(laggards) => PostRestoreOutcome::TimedOut(TimedOut {
            generation,
            restore,
            laggards,
        }),
        None => PostRestoreOutcome::Readjusted(Readjusted {
            generation,
            restore,
            hooks: hooks.len(),
        }),
    }
}

/// Runs the un-quiesce hooks (all of them, whatever fails), telling the observer first.
fn run_unquiesce_hooks(
    paths: &Paths,
    options: &PostRestoreOptions,
    hooks: &[Hook],
    generation: Option<u32>,
    reason: Reason,
    observer: &mut dyn FnMut(&Event),
) -> Vec<HookFailure> {
    if options.hooks == HookPolicy::Skip {
        return Vec::new();
    }
    observer(&Event::Unquiescing(Unquiescing {
        generation,
        outcome: reason,
        hooks: hooks::names(hooks),
    }));
    let env = hooks::environment(paths, Phase::Unquiesce, generation, Some(reason));
    hooks::run_all(hooks, &env, options.hook_timeout, false)
}

/// The bump (with a trigger), the record's removal and the wait: the generation after it, and
/// the laggards if it timed out.
fn bump_and_wait(
    paths: &Paths,
    options: &PostRestoreOptions,
    decision: &mut Decision,
    observer: &mut dyn FnMut(&Event),
) -> Result<(u32, Option<Vec<Laggard>>), Error> {
    let record_path = record_path(paths, &options.record);
    let record = read_record(&record_path)?;
    let expected = options.expect.or(record.as_ref().map(|r| r.generation));
    decision.expected = expected;
    if options.trigger {
        let expected = expected.ok_or_else(|| Error::NoExpectedGeneration {
            record: record_path.clone(),
        })?;
        let (generation, triggered) =
            bump_unless_moved(paths, expected, options.min, options.grace, observer)?;
        decision.triggered = triggered;
        observer(&Event::Bumped(Bumped {
            expected,
            generation,
            triggered,
        }));
    }
    // The cycle is over: a later restore must not reuse the record.
    if record.is_some()
        && let Err(e) = std::fs::remove_file(&record_path)
    {
        let message = format!("cannot remove {}: {e}", record_path.display());
        observer(&Event::Warning(Warning { message }));
    }
    let interval = options.progress_interval;
    let timed_out = wait_with_progress(paths, options.timeout, interval, observer)?;
    let generation = sysgenid::status_at(paths)?.generation;
    Ok((generation, timed_out))
}

/// After post-restore failed: runs the un-quiesce hooks with SYSGENID_OUTCOME=error (unless
/// told not to or skipped) and reports the original error.
fn unquiesce_after_error(
    paths: &Paths,
    options: &PostRestoreOptions,
    hooks: &[Hook],
    decision: Decision,
    error: Error,
    observer: &mut dyn FnMut(&Event),
) -> Failed {
    let generation = Probe::open(paths).ok().map(|p| p.generation());
    let run = options.unquiesce_on_error;
    let hook_failures = if run {
        run_unquiesce_hooks(paths, options, hooks, generation, Reason::Error, observer)
    } else {
        Vec::new()
    };
    let restore = decision.restore(run && hook_failures.is_empty(), options);
    let what = if restore.hooks_skipped {
        "un-quiesce hooks skipped (no user namespace)"
    } else if !run {
        "left quiesced (--no-unquiesce-on-error)"
    } else if restore.unquiesced {
        "un-quiesced anyway (SYSGENID_OUTCOME=error)"
    } else {
        "un-quiesce hooks failed too"
    };
    let report = ErrorReport {
        error: format!("{error}; {what}"),
        generation,
        restore: Some(restore),
        hook_failures,
    };
    Failed { error, report }
}
