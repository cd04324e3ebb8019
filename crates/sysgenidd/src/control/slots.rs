//! Concurrent control connections, counted per peer uid, so that no user can take the slots
//! of another: root and the daemon's own uid each have a budget of their own that no other uid
//! touches; every other uid has a small one, and all of them together a shared ceiling that
//! bounds the daemon's threads.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// How many connections each kind of uid may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Root's, and the daemon's own uid's, each.
    pub privileged: usize,
    /// Each other uid's.
    pub per_uid: usize,
    /// All other uids' together.
    pub others: usize,
}

/// The daemon's limits, as `docs/control.md` states them.
pub const LIMITS: Limits = Limits {
    privileged: 32,
    per_uid: 4,
    others: 128,
};

/// Why a connection gets no slot; the message is the one the peer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This uid already holds its limit.
    Uid {
        /// The peer's uid.
        uid: u32,
        /// Its limit.
        limit: usize,
    },
    /// The uids other than root's and the daemon's hold their shared ceiling.
    Others {
        /// The ceiling.
        limit: usize,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Uid { uid, limit } => write!(
                f,
                "too many control connections from uid {uid}: at most {limit} at once per user; \
                 let the others finish, then try again"
            ),
            Refusal::Others { limit } => write!(
                f,
                "too many control connections from users other than root: at most {limit} at \
                 once in all; try again"
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    by_uid: HashMap<u32, usize>,
    others: usize,
}

/// The slots of every uid.
#[derive(Debug)]
pub struct Slots {
    limits: Limits,
    daemon_uid: u32,
    counts: Mutex<Counts>,
}

/// A connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    /// Slots with `limits`, where `daemon_uid` is privileged like root.
    pub fn new(limits: Limits, daemon_uid: u32) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            daemon_uid,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.daemon_uid
    }

    /// A slot for a connection from `uid`, or why not.
    pub fn take(self: &Arc<Self>, uid: u32) -> Result<Slot, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let privileged = self.privileged(uid);
        let limit = if privileged {
            self.limits.privileged
        } else {
            self.limits.per_uid
        };
        let held = counts.by_uid.get(&uid).copied().unwrap_or(0);
        if held >= limit {
            return Err(Refusal::Uid { uid, limit });
        }
        if !privileged {
            if counts.others >= self.limits.others {
                return Err(Refusal::Others {
                    limit: self.limits.others,
                });
            }
            counts.others += 1;
        }
        counts.by_uid.insert(uid, held + 1);
        Ok(Slot {
            slots: Arc::clone(self),
            uid,
        })
    }
}

impl Slot {
    /// The uid of the connection that holds it.
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = &self.slots;
        let mut counts = slots.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = counts.by_uid.get_mut(&self.uid) {
            *held -= 1;
            if *held == 0 {
                counts.by_uid.remove(&self.uid);
            }
        }
        if !slots.privileged(self.uid) {
            counts.others -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        privileged: 3,
        per_uid: 2,
        others: 3,
    };

    fn take_all(slots: &Arc<Slots>, uid: u32, n: usize) -> Vec<Slot> {
        (0..n).map(|_| slots.take(uid).unwrap()).collect()
    }

    #[test]
    fn each_uid_has_its_own_limit_and_gets_slots_back() {
        let slots = Slots::new(SMALL, 999);
        let held = take_all(&slots, 1000, 2);
        assert_eq!(
            slots.take(1000).unwrap_err(),
            Refusal::Uid {
                uid: 1000,
                limit: 2
            }
        );
        let other = slots.take(1001).expect("another uid is not held back");
        drop(held);
        let again = take_all(&slots, 1000, 2);
        drop((other, again));
        assert!(slots.counts.lock().unwrap().by_uid.is_empty());
        assert_eq!(slots.counts.lock().unwrap().others, 0);
    }

    #[test]
    fn other_uids_never_take_root_s_or_the_daemon_s_slots() {
        let slots = Slots::new(SMALL, 999);
        let _a = take_all(&slots, 1000, 2);
        let _b = take_all(&slots, 1001, 1);
        assert_eq!(
            slots.take(1002).unwrap_err(),
            Refusal::Others { limit: 3 },
            "the shared ceiling"
        );
        let _root = take_all(&slots, 0, 3);
        let _daemon = take_all(&slots, 999, 3);
        assert!(matches!(slots.take(0), Err(Refusal::Uid { uid: 0, .. })));
    }

    #[test]
    fn refusals_name_the_uid_and_the_limit() {
        let message = Refusal::Uid {
            uid: 65534,
            limit: 4,
        }
        .to_string();
        assert!(message.contains("uid 65534") && message.contains("at most 4 "));
    }
}
