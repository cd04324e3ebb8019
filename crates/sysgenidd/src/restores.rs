//! Restore reports from the backends, judged in the event loop: one bump per restore, and each
//! report's completion run only once the bump that counted its restore is published.
//!
//! Backends send raw reports ([`crate::inbox::Message::Report`]); the loop judges them in inbox
//! order with the [`Dedupe`] policy. A new restore gets a [`BumpToken`] and becomes one
//! `Event::HardwareBump`, and its completion waits on that token. A report of a restore already
//! counted (another backend's, or a key seen before) follows the bump that counted it: its
//! completion joins that bump's while it is queued or being persisted, runs at once if it was
//! published, and is dropped if it failed, so the restore stays unacknowledged and the
//! backend's next start reports it again. Nothing marks a restore as handled before its bump
//! is persisted and published.

use std::collections::HashMap;
use std::time::Duration;

use sysgenid_core::BumpToken;

use crate::backends::BackendKind;
use crate::backends::dedupe::{Dedupe, Verdict};
use crate::inbox::Completion;

/// Where the bump that counted a restore stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Queued in the core or being persisted.
    Pending(BumpToken),
    /// Published, or handled before this run (a key a backend had at start).
    Published,
    /// Failed: the restore stays unacknowledged.
    Failed,
}

/// The loop's memory of restore reports: the dedupe policy and the completions waiting on bumps.
#[derive(Debug)]
pub struct Restores {
    dedupe: Dedupe,
    next_token: u64,
    /// Completions of bumps not yet published or failed, by token.
    waiting: HashMap<BumpToken, Completion>,
    /// The bump that opened the dedupe window (before any: nothing to wait for).
    window: Fate,
    /// For each backend, the bump that counted its last key.
    counted: HashMap<BackendKind, Fate>,
}

impl Restores {
    /// Nothing reported yet; reports less than `window` apart are one restore.
    pub fn new(window: Duration) -> Restores {
        Restores {
            dedupe: Dedupe::new(window),
            next_token: 0,
            waiting: HashMap::new(),
            window: Fate::Published,
            counted: HashMap::new(),
        }
    }

    /// Records a backend's key at start: a state already handled, never a restore.
    pub fn note_key(&mut self, backend: BackendKind, key: u128) {
        self.dedupe.note_key(backend, key);
        self.counted.insert(backend, Fate::Published);
    }

    /// Judges a report made at `now` (any fixed epoch). A new restore returns the token of the
    /// bump to hand to the core; `completion` runs once that bump is published. A restore
    /// already counted returns `None`, and `completion` follows the bump that counted it.
    pub fn report(
        &mut self,
        backend: BackendKind,
        key: Option<u128>,
        completion: Completion,
        now: Duration,
    ) -> Option<BumpToken> {
        let name = backend.name();
        let counted_by = match self.dedupe.offer(backend, key, now) {
            Verdict::Forward => {
                tracing::info!(
                    backend = name,
                    ?key,
                    "hardware restore: bumping the generation"
                );
                let token = BumpToken(self.next_token);
                self.next_token += 1;
                self.waiting.insert(token, completion);
                self.window = Fate::Pending(token);
                if key.is_some() {
                    self.counted.insert(backend, self.window);
                }
                return Some(token);
            }
            Verdict::Duplicate { winner, after } => {
                tracing::info!(backend = name, ?key, %winner, ?after, "same restore already reported");
                if key.is_some() {
                    self.counted.insert(backend, self.window);
                }
                self.window
            }
            Verdict::SameKey => {
                tracing::debug!(backend = name, ?key, "key already reported");
                self.counted
                    .get(&backend)
                    .copied()
                    .unwrap_or(Fate::Published)
            }
        };
        match counted_by {
            Fate::Pending(token) => self.waiting.entry(token).or_default().join(completion),
            Fate::Published => completion.run(),
            Fate::Failed => tracing::warn!(
                backend = name,
                "the bump that counted this restore failed: the restore stays unacknowledged, \
                 so the backend's next start reports it again"
            ),
        }
        None
    }

    /// Records that the overseer's conditional trigger bumped for a restore: backend reports
    /// of it inside the window are the same restore, already published.
    pub fn trigger_if_bumped(&mut self, now: Duration) {
        self.dedupe.bumped_by_trigger_if(now);
        self.window = Fate::Published;
    }

    /// The bump of `token` is published: runs every completion waiting on it.
    pub fn published(&mut self, token: BumpToken) {
        self.settle(token, Fate::Published).run();
    }

    /// The bump of `token` failed: drops every completion waiting on it.
    pub fn failed(&mut self, token: BumpToken) {
        drop(self.settle(token, Fate::Failed));
        tracing::warn!(
            "the restore of the failed bump stays unacknowledged: the backends' next start \
             reports it again"
        );
    }

    fn settle(&mut self, token: BumpToken, fate: Fate) -> Completion {
        for counted in std::iter::once(&mut self.window).chain(self.counted.values_mut()) {
            if *counted == Fate::Pending(token) {
                *counted = fate;
            }
        }
        self.waiting.remove(&token).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::fakes::{flag, raised};
    use BackendKind::{FwCfg, Uevent, Vmclock};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn report(
        r: &mut Restores,
        backend: BackendKind,
        key: Option<u128>,
        at: u64,
    ) -> (Option<BumpToken>, std::sync::Arc<AtomicBool>) {
        let (completion, ran) = flag();
        (r.report(backend, key, completion, ms(at)), ran)
    }

    #[test]
    fn a_duplicate_of_a_bump_in_flight_completes_only_when_it_is_published() {
        let mut r = Restores::new(ms(2000));
        let (token, winner) = report(&mut r, Vmclock, Some(2), 0);
        let token = token.expect("a new restore bumps");
        let (none, duplicate) = report(&mut r, FwCfg, Some(9), 100);
        assert_eq!(none, None, "the same restore bumps once");
        assert!(!raised(&winner) && !raised(&duplicate));
        r.published(token);
        assert!(raised(&winner) && raised(&duplicate));
    }

    #[test]
    fn a_failed_bump_drops_its_completion_and_every_duplicate() {
        let mut r = Restores::new(ms(2000));
        let (token, winner) = report(&mut r, Vmclock, Some(2), 0);
        let (_, joined) = report(&mut r, FwCfg, Some(9), 100);
        r.failed(token.unwrap());
        let (none, late) = report(&mut r, Uevent, None, 200);
        assert_eq!(none, None);
        assert!(!raised(&winner) && !raised(&joined) && !raised(&late));
        // The keyed backend's key is remembered with the failed bump too.
        let (none, again) = report(&mut r, FwCfg, Some(9), 5000);
        assert_eq!(none, None);
        assert!(!raised(&again));
    }

    #[test]
    fn a_duplicate_of_a_published_bump_completes_at_once() {
        let mut r = Restores::new(ms(2000));
        let (token, _) = report(&mut r, Uevent, None, 0);
        r.published(token.unwrap());
        let (none, duplicate) = report(&mut r, Vmclock, Some(4), 300);
        assert_eq!(none, None);
        assert!(raised(&duplicate));
    }

    #[test]
    fn a_key_known_at_start_is_handled_and_a_new_one_bumps() {
        let mut r = Restores::new(ms(2000));
        r.note_key(FwCfg, 7);
        let (none, same) = report(&mut r, FwCfg, Some(7), 0);
        assert_eq!(none, None);
        assert!(raised(&same), "a recorded state needs no bump");
        let (token, new) = report(&mut r, FwCfg, Some(8), 10);
        assert!(token.is_some());
        assert!(!raised(&new));
    }

    #[test]
    fn a_repeated_key_follows_the_bump_that_counted_it() {
        let mut r = Restores::new(ms(2000));
        let (token, _) = report(&mut r, Vmclock, Some(3), 0);
        let (none, repeated) = report(&mut r, Vmclock, Some(3), 10);
        assert_eq!(none, None);
        assert!(!raised(&repeated), "waits for the bump of key 3");
        r.published(token.unwrap());
        assert!(raised(&repeated));
    }

    #[test]
    fn the_conditional_trigger_opens_a_published_window() {
        let mut r = Restores::new(ms(2000));
        r.trigger_if_bumped(ms(1000));
        let (none, late) = report(&mut r, FwCfg, Some(1), 1250);
        assert_eq!(none, None, "the overseer already bumped for this restore");
        assert!(raised(&late));
        let (token, _) = report(&mut r, Vmclock, Some(1), 3500);
        assert!(token.is_some(), "after the window it is a new restore");
    }

    #[test]
    fn tokens_are_distinct() {
        let mut r = Restores::new(Duration::ZERO);
        let (a, _) = report(&mut r, Uevent, None, 0);
        let (b, _) = report(&mut r, Uevent, None, 1);
        assert_ne!(a.unwrap(), b.unwrap());
    }
}
