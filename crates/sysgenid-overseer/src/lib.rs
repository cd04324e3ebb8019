//! The snapshot-safe workflow of the System Generation ID as a library: what
//! `sysgenid overseer` runs, for an orchestrator that runs it in-process.
//!
//! - [`pre_snapshot`], before the snapshot: runs the quiesce hooks, then records the generation
//!   the snapshot will hold.
//! - [`post_restore`], in each restored machine: bumps the generation once (unless a hardware
//!   backend did), waits until every tracked watcher has acknowledged it, and runs the
//!   un-quiesce hooks, also after a timeout or an error unless told not to.
//! - [`criu::action`], CRIU's action script: runs post-restore inside a restored process tree.
//!
//! Each step reports to an observer (`FnMut(&Event)`) as it goes: [`Event::Grace`],
//! [`Event::Bumped`],
//! [`Event::Waiting`] (who lags), ... and a final event ([`Event::is_final`]), which is also
//! what it returns as a typed outcome. Events serialize to the JSON lines `sysgenid overseer`
//! prints. Nothing is printed; hooks write to stderr. The workflow, its hooks, record and
//! limits are described in `docs/overseer.md`.
//!
//! ```no_run
//! use sysgenid::Paths;
//! use sysgenid_overseer::{Event, PostRestoreOptions, PostRestoreOutcome, post_restore};
//!
//! let options = PostRestoreOptions {
//!     trigger: true,
//!     expect: Some(5), // the generation before the snapshot
//!     ..PostRestoreOptions::default()
//! };
//! let outcome = post_restore(&Paths::from_env(), &options, |event| {
//!     if let Event::Waiting(waiting) = event {
//!         for laggard in &waiting.outdated {
//!             eprintln!("waiting for {laggard}");
//!         }
//!     }
//! })?;
//! match outcome {
//!     PostRestoreOutcome::Readjusted(done) => println!("ready at generation {}", done.generation),
//!     PostRestoreOutcome::TimedOut(late) => eprintln!("still outdated: {:?}", late.laggards),
//!     other => eprintln!("not ready: {:?}", other.event()),
//! }
//! # Ok::<(), sysgenid_overseer::Error>(())
//! ```
//!
//! An event as JSON:
//!
//! ```
//! use sysgenid_overseer::{Bumped, Event};
//!
//! let event = Event::Bumped(Bumped { expected: 0, generation: 1, triggered: true });
//! assert_eq!(
//!     serde_json::to_string(&event).unwrap(),
//!     r#"{"event":"bumped","expected":0,"generation":1,"triggered":true}"#
//! );
//! ```
#![deny(missing_docs)]

pub mod criu;
mod error;
mod event;
pub mod hooks;
mod post_restore;
mod pre_snapshot;
mod record;
mod wait;

pub use error::Error;
pub use event::{
    Bumped, ErrorReport, Event, Grace, HookFailed, Laggard, Phase, Quiesced, Quiescing, Readjusted,
    Reason, Restore, TimedOut, UnquiesceFailure, Unquiescing, Waiting, Warning,
};
pub use hooks::{Hook, HookFailure, HookStatus};
pub use post_restore::{
    DEFAULT_UNQUIESCE_DIR, Failed, HookPolicy, PostRestoreOptions, PostRestoreOutcome, post_restore,
};
pub use pre_snapshot::{DEFAULT_QUIESCE_DIR, PreSnapshotOptions, PreSnapshotOutcome, pre_snapshot};
pub use record::RECORD_NAME;
pub use wait::wait_watchers;

/// Sends a step's final event (an error's too) and returns its result.
fn finish<T>(
    observer: &mut dyn FnMut(&Event),
    result: Result<T, Error>,
    event_of: impl FnOnce(&T) -> Event,
) -> Result<T, Error> {
    let last = match &result {
        Ok(outcome) => event_of(outcome),
        Err(e) => Event::Error(e.into()),
    };
    observer(&last);
    result
}
