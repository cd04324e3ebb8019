//! Table-driven corner cases, with the expected values worked out from the reference driver.

mod common;

use common::*;
use sysgenid_abi::Errno;
use sysgenid_core::{FileId, Reply};

/// (current, min, new value): the driver sets `max(min, current + 1)`.
const BUMPS: &[(u32, u64, u32)] = &[
    (5, 8, 8),
    (9, 8, 10),
    (8, 8, 9),
    (5, 0, 6),
    (5, 6, 6),
    (0, 1, 1),
    (0, 0, 1),
    (7, 0x8000_0000, 0x8000_0000),
    (0x8000_0000, 0, 0x8000_0001),
    (0x8000_0000, 0x7FFF_FFFF, 0x8000_0001),
    (0, u32::MAX as u64, u32::MAX),
    (u32::MAX - 1, 0, u32::MAX),
];

#[test]
fn min_below_and_above_current() {
    for &(current, min, want) in BUMPS {
        let mut h = Harness::new(current);
        let f = h.open();
        assert_eq!(h.trigger(f, min), Some(Reply::Done), "{current} min {min}");
        assert_eq!(h.dev.generation(), want, "{current} min {min}");
    }
}

/// A tracking script, one letter a step, and the outdated count after each step:
/// `+` track on, `-` track off, `b` bump, `a` ack.
const TRACKING: &[(&str, &[usize])] = &[
    ("+b-+a-", &[0, 1, 0, 1, 0, 0]),
    ("b+", &[0, 1]),
    ("b+-", &[0, 1, 0]),
    ("+b--++", &[0, 1, 0, 0, 1, 1]),
    ("+bb-", &[0, 1, 1, 0]),
    ("+ba+b", &[0, 1, 0, 0, 1]),
    ("b+ab-+", &[0, 1, 0, 1, 0, 1]),
];

#[test]
fn tracking_toggled_while_outdated() {
    for &(script, counts) in TRACKING {
        let mut h = Harness::new(0);
        let f = h.open();
        for (step, (op, &want)) in script.chars().zip(counts).enumerate() {
            match op {
                '+' => assert_eq!(h.track(f, true), Some(Reply::Done)),
                '-' => assert_eq!(h.track(f, false), Some(Reply::Done)),
                'b' => {
                    h.hardware_bump();
                }
                'a' => assert_eq!(h.ack(f), Reply::Written(4)),
                _ => unreachable!(),
            }
            assert_eq!(h.dev.status().outdated, want, "{script} step {step}");
        }
    }
}

/// How the caller and one other tracked watcher stand before `WAIT_WATCHERS`, and its
/// immediate result (`None`: it blocks).
struct WaitCase {
    name: &'static str,
    caller_tracked: bool,
    caller_acked: bool,
    other_acked: bool,
    want: Option<Reply>,
}

const WAITS: &[WaitCase] = &[
    WaitCase {
        name: "caller outdated, untracked",
        caller_tracked: false,
        caller_acked: false,
        other_acked: true,
        want: Some(Reply::Error(Errno::Intr)),
    },
    WaitCase {
        name: "caller outdated and tracked, others settled",
        caller_tracked: true,
        caller_acked: false,
        other_acked: true,
        want: Some(Reply::Error(Errno::Intr)),
    },
    WaitCase {
        name: "caller outdated, others outdated too",
        caller_tracked: false,
        caller_acked: false,
        other_acked: false,
        want: Some(Reply::Error(Errno::Intr)),
    },
    WaitCase {
        name: "caller current, other outdated",
        caller_tracked: true,
        caller_acked: true,
        other_acked: false,
        want: None,
    },
    WaitCase {
        name: "everyone current",
        caller_tracked: true,
        caller_acked: true,
        other_acked: true,
        want: Some(Reply::Done),
    },
];

#[test]
fn wait_while_the_caller_is_outdated() {
    for case in WAITS {
        let mut h = Harness::new(0);
        let caller = h.open();
        let other = h.open();
        h.track(other, true);
        h.track(caller, case.caller_tracked);
        h.hardware_bump();
        if case.caller_acked {
            h.ack(caller);
        }
        if case.other_acked {
            h.ack(other);
        }
        assert_eq!(h.wait(caller, 0).1, case.want, "{}", case.name);
    }
}

#[test]
fn close_of_an_outdated_tracked_file_during_a_wait() {
    // (tracked laggards, how many are closed, whether the wait then returns 0)
    for (laggards, closed, done) in [(1, 1, true), (2, 1, false), (2, 2, true), (3, 2, false)] {
        let mut h = Harness::new(0);
        let files: Vec<FileId> = (0..laggards).map(|_| h.open()).collect();
        for &f in &files {
            h.track(f, true);
        }
        let waiter = h.open();
        h.hardware_bump();
        h.ack(waiter);
        let (w, now) = h.wait(waiter, 0);
        assert_eq!(now, None);
        let mut got = None;
        for &f in &files[..closed] {
            got = got.or(reply_for(&replies_of(&h.release(f)), w));
        }
        let want = done.then_some(Reply::Done);
        assert_eq!(got, want, "{laggards} laggards, {closed} closed");
        assert_eq!(h.dev.status().outdated, laggards - closed);
    }
}
