//! One bump per restore: the policy that merges reports of the same restore from several backends.
//!
//! # The rule
//!
//! Every report names its backend and may carry an identity key: a value that the hardware
//! changes exactly once per restore (the vmclock `vm_generation_counter`, a vmgenid GUID).
//! A report is judged in this order:
//!
//! 1. **Same key again.** A keyed report whose key equals the last key seen from the same
//!    backend is suppressed, whatever the time: it describes a state already counted.
//! 2. **Inside the window.** If a report was forwarded less than `window` ago (default 2 s),
//!    the new one is suppressed as the same restore seen twice, unless it comes from the
//!    backend whose report was forwarded and carries a key (by rule 1, a new key): a backend
//!    that can tell restores apart is believed when it says there was another one.
//! 3. Otherwise it is forwarded and opens a new window.
//!
//! The first report of a restore wins, whichever backend sent it; a later report from another
//! backend inside the window loses. There is no priority order: the backends that exist do
//! not disagree about *whether* a restore happened, only about when they notice, and waiting
//! for a preferred one would delay every bump.
//!
//! The window is anchored at the forwarded report; suppressed reports do not extend it, so a
//! stream of reports cannot hold bumps off for longer than one window. Keys of suppressed
//! reports are still recorded, so a key already counted never bumps later.
//!
//! Time is an input (a [`Duration`] since any fixed epoch); the policy reads no clock. A time
//! earlier than the last forwarded report counts as inside the window.
//!
//! A bump for a restore made elsewhere, the overseer's conditional trigger, opens a window too
//! ([`Dedupe::bumped_by_trigger_if`]): a backend that notices the restore after the overseer bumped for it
//! is the same restore.
//!
//! What it costs: two genuine restores less than a window apart, seen only by unkeyed
//! backends (or by a keyed one after an unkeyed one won the first), count as one bump. A
//! single bump already marks every watcher outdated, so the second restore's effect on
//! clients is the same as the first's.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::BackendKind;

/// The default window: reports of one restore by different backends arrive within it.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(2);

/// Who made the bump that opened a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bumper {
    /// A backend's forwarded report.
    Backend(BackendKind),
    /// The overseer's conditional trigger (`trigger-if` on the control socket).
    TriggerIf,
}

impl fmt::Display for Bumper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bumper::Backend(kind) => f.write_str(kind.name()),
            Bumper::TriggerIf => f.write_str("trigger-if"),
        }
    }
}

/// What to do with a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send one hardware bump.
    Forward,
    /// The same restore as the report forwarded `after` earlier by `winner`.
    Duplicate {
        /// Who bumped for the restore.
        winner: Bumper,
        /// How long after it this report came.
        after: Duration,
    },
    /// The backend reported a key it had already reported.
    SameKey,
}

/// The policy's memory.
#[derive(Debug, Clone)]
pub struct Dedupe {
    window: Duration,
    forwarded: Option<(Duration, Bumper)>,
    keys: HashMap<BackendKind, u128>,
}

impl Default for Dedupe {
    fn default() -> Self {
        Dedupe::new(DEFAULT_WINDOW)
    }
}

impl Dedupe {
    /// A policy with this window and nothing seen.
    pub fn new(window: Duration) -> Dedupe {
        Dedupe {
            window,
            forwarded: None,
            keys: HashMap::new(),
        }
    }

    /// Records a backend's current key without reporting a restore (its value at start).
    pub fn note_key(&mut self, backend: BackendKind, key: u128) {
        self.keys.insert(backend, key);
    }

    /// Records a bump the overseer's conditional trigger made for a restore: backend reports of
    /// the same restore inside the window are dropped.
    pub fn bumped_by_trigger_if(&mut self, now: Duration) {
        self.forwarded = Some((now, Bumper::TriggerIf));
    }

    /// Judges a report from `backend` with an optional `key`, made at time `now`.
    pub fn offer(&mut self, backend: BackendKind, key: Option<u128>, now: Duration) -> Verdict {
        if let Some(key) = key {
            if self.keys.get(&backend) == Some(&key) {
                return Verdict::SameKey;
            }
            self.keys.insert(backend, key);
        }
        if let Some((at, winner)) = self.forwarded {
            let after = now.saturating_sub(at);
            let inside = now < at || after < self.window;
            let believed = winner == Bumper::Backend(backend) && key.is_some();
            if inside && !believed {
                return Verdict::Duplicate { winner, after };
            }
        }
        self.forwarded = Some((now, Bumper::Backend(backend)));
        Verdict::Forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendKind::{FwCfg, Uevent, Vmclock, VmgenidBpf};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_report_wins_and_the_second_backend_is_suppressed() {
        let mut p = Dedupe::default();
        assert_eq!(p.offer(Vmclock, Some(7), ms(1000)), Verdict::Forward);
        assert_eq!(
            p.offer(Uevent, None, ms(1300)),
            Verdict::Duplicate {
                winner: Bumper::Backend(Vmclock),
                after: ms(300)
            }
        );

        let mut p = Dedupe::default();
        assert_eq!(p.offer(Uevent, None, ms(1000)), Verdict::Forward);
        assert_eq!(
            p.offer(Vmclock, Some(7), ms(1050)),
            Verdict::Duplicate {
                winner: Bumper::Backend(Uevent),
                after: ms(50)
            }
        );
        // The suppressed key was recorded: repeating it later is not a new restore.
        assert_eq!(p.offer(Vmclock, Some(7), ms(60_000)), Verdict::SameKey);
    }

    #[test]
    fn reports_after_the_window_are_new_restores() {
        let mut p = Dedupe::default();
        assert_eq!(p.offer(Uevent, None, ms(0)), Verdict::Forward);
        assert!(matches!(
            p.offer(Uevent, None, ms(1999)),
            Verdict::Duplicate { .. }
        ));
        assert_eq!(p.offer(Uevent, None, ms(2000)), Verdict::Forward);
        assert_eq!(p.offer(Vmclock, Some(1), ms(4000)), Verdict::Forward);
    }

    #[test]
    fn suppressed_reports_do_not_extend_the_window() {
        let mut p = Dedupe::default();
        assert_eq!(p.offer(Uevent, None, ms(0)), Verdict::Forward);
        for t in [500, 1000, 1500, 1900] {
            assert!(matches!(
                p.offer(Vmclock, Some(t.into()), ms(t)),
                Verdict::Duplicate { .. }
            ));
        }
        assert_eq!(p.offer(Vmclock, Some(9999), ms(2000)), Verdict::Forward);
    }

    #[test]
    fn a_new_key_from_the_winner_is_believed_inside_the_window() {
        let mut p = Dedupe::default();
        p.note_key(Vmclock, 5);
        assert_eq!(p.offer(Vmclock, Some(5), ms(10)), Verdict::SameKey);
        assert_eq!(p.offer(Vmclock, Some(6), ms(100)), Verdict::Forward);
        assert_eq!(p.offer(Vmclock, Some(7), ms(200)), Verdict::Forward);
        assert_eq!(p.offer(Vmclock, Some(7), ms(300)), Verdict::SameKey);
        // The unkeyed backend inside the window is still the same restore.
        assert!(matches!(
            p.offer(Uevent, None, ms(400)),
            Verdict::Duplicate { .. }
        ));
    }

    #[test]
    fn a_keyed_report_after_an_unkeyed_winner_is_suppressed() {
        let mut p = Dedupe::default();
        assert_eq!(p.offer(Uevent, None, ms(0)), Verdict::Forward);
        assert!(matches!(
            p.offer(Vmclock, Some(1), ms(10)),
            Verdict::Duplicate { .. }
        ));
        // The keyed backend is not the winner, so even a second new key waits for the window.
        assert!(matches!(
            p.offer(Vmclock, Some(2), ms(20)),
            Verdict::Duplicate { .. }
        ));
    }

    #[test]
    fn time_going_backwards_counts_as_inside_the_window() {
        let mut p = Dedupe::default();
        assert_eq!(p.offer(Uevent, None, ms(5000)), Verdict::Forward);
        assert_eq!(
            p.offer(Vmclock, Some(3), ms(1000)),
            Verdict::Duplicate {
                winner: Bumper::Backend(Uevent),
                after: Duration::ZERO
            }
        );
    }

    #[test]
    fn a_conditional_trigger_opens_the_window_for_late_backends() {
        let mut p = Dedupe::default();
        p.bumped_by_trigger_if(ms(1000));
        assert_eq!(
            p.offer(FwCfg, Some(9), ms(1250)),
            Verdict::Duplicate {
                winner: Bumper::TriggerIf,
                after: ms(250)
            }
        );
        assert_eq!(p.offer(VmgenidBpf, Some(1), ms(3000)), Verdict::Forward);
    }

    #[test]
    fn a_zero_window_forwards_every_new_report() {
        let mut p = Dedupe::new(Duration::ZERO);
        assert_eq!(p.offer(Uevent, None, ms(0)), Verdict::Forward);
        assert_eq!(p.offer(Vmclock, Some(1), ms(0)), Verdict::Forward);
        assert_eq!(p.offer(Vmclock, Some(1), ms(0)), Verdict::SameKey);
    }
}
