//! One test per rule of the device, and one per errno it can return.

mod common;

use common::*;
use sysgenid_abi::{Errno, POLL_OUTDATED, SYSGENID_TRIGGER_GEN_UPDATE, SYSGENID_WAIT_WATCHERS};
use sysgenid_core::{
    Action, BumpSource, BumpToken, Device, Event, PollHandle, READS_ANSWERED_AT_ONCE, Reply,
    RequestId, Time,
};

#[test]
fn generation_starts_at_the_given_value() {
    assert_eq!(Device::new(0).generation(), 0);
    assert_eq!(Device::new(77).generation(), 77);
}

#[test]
fn trigger_sets_max_of_min_and_current_plus_one() {
    let mut h = Harness::new(5);
    let f = h.open();
    assert_eq!(h.trigger(f, 8), Some(Reply::Done));
    assert_eq!(h.dev.generation(), 8);
    let mut h = Harness::new(9);
    let f = h.open();
    assert_eq!(
        h.trigger(f, 8),
        Some(Reply::Done),
        "what if it's 9? it becomes 10"
    );
    assert_eq!(h.dev.generation(), 10);
    assert_eq!(h.trigger(f, 0), Some(Reply::Done));
    assert_eq!(h.dev.generation(), 11);
    assert_eq!(h.trigger(f, 11), Some(Reply::Done));
    assert_eq!(h.dev.generation(), 12);
}

#[test]
fn counter_is_a_true_u32_above_0x80000000() {
    let mut h = Harness::new(5);
    let f = h.open();
    assert_eq!(h.trigger(f, 0x8000_0000), Some(Reply::Done));
    assert_eq!(h.dev.generation(), 0x8000_0000);
    assert_eq!(h.trigger(f, 0), Some(Reply::Done));
    assert_eq!(h.dev.generation(), 0x8000_0001);
    assert_eq!(h.trigger(f, 0xFFFF_FFFE), Some(Reply::Done));
    assert_eq!(h.dev.generation(), 0xFFFF_FFFE);
    assert_eq!(h.read(f, 4, true), Some(Reply::Generation(0xFFFF_FFFE)));
    assert_eq!(h.ack(f), Reply::Written(4));
}

#[test]
fn trigger_min_above_u32_max_is_einval_and_changes_nothing() {
    let mut h = Harness::new(5);
    let f = h.open();
    for min in [1u64 << 32, u64::MAX, 0x1_0000_0005] {
        assert_eq!(h.trigger(f, min), err(Errno::Inval), "{min:#x}");
    }
    assert_eq!(h.dev.generation(), 5);
    assert!(!h.log.iter().any(|a| matches!(a, Action::Persist(_))));
    assert_eq!(h.read(f, 4, true), err(Errno::Again));
}

#[test]
fn trigger_at_u32_max_is_eoverflow_and_changes_nothing() {
    let mut h = Harness::new(u32::MAX - 1);
    let f = h.open();
    assert_eq!(h.trigger(f, u64::from(u32::MAX)), Some(Reply::Done));
    assert_eq!(h.ack(f), Reply::Written(4));
    assert_eq!(h.trigger(f, 0), err(Errno::Overflow));
    assert_eq!(h.trigger(f, u64::from(u32::MAX)), err(Errno::Overflow));
    assert_eq!(h.dev.generation(), u32::MAX, "never wraps to 0");
    assert_eq!(h.read(f, 4, true), err(Errno::Again), "no bump happened");
    assert_eq!(h.dev.status().failed_bumps, 2);
}

#[test]
fn hardware_bump_is_bump_with_no_minimum() {
    let mut h = Harness::new(3);
    let actions = h.hardware_bump();
    assert_eq!(h.dev.generation(), 4);
    assert!(actions.contains(&Action::Publish {
        generation: 4,
        id: id_of(4),
        source: BumpSource::Backend("test-hw".into()),
        token: Some(BumpToken(0)),
    }));
    let last = h.dev.status().last_bump.expect("recorded");
    assert_eq!(last.source, BumpSource::Backend("test-hw".into()));
}

#[test]
fn hardware_bump_at_u32_max_is_reported_not_dropped() {
    let mut h = Harness::new(u32::MAX);
    let actions = h.hardware_bump();
    assert_eq!(
        actions,
        vec![Action::BumpFailed {
            source: BumpSource::Backend("test-hw".into()),
            error: Errno::Overflow,
            detail: None,
            token: Some(BumpToken(0)),
        }]
    );
    let status = h.dev.status();
    assert_eq!(status.generation, u32::MAX);
    assert_eq!(status.failed_bumps, 1);
    assert_eq!(
        status.last_failure.expect("recorded").error,
        Errno::Overflow
    );
}

#[test]
fn open_acknowledges_the_current_generation_and_each_open_is_its_own_watcher() {
    let mut h = Harness::new(0);
    let a = h.open();
    h.hardware_bump();
    let b = h.open();
    assert_ne!(a, b);
    assert_eq!(h.read(a, 4, true), Some(Reply::Generation(1)));
    assert_eq!(h.read(b, 4, true), err(Errno::Again));
    assert_eq!(h.dev.status().open_files, 2);
}

#[test]
fn read_of_zero_bytes_gives_zero_bytes_even_when_outdated() {
    let mut h = Harness::new(0);
    let f = h.open();
    assert_eq!(h.read(f, 0, true), Some(Reply::Empty));
    assert_eq!(h.read(f, 0, false), Some(Reply::Empty), "does not block");
    h.hardware_bump();
    assert_eq!(h.read(f, 0, true), Some(Reply::Empty));
}

#[test]
fn read_shorter_than_four_bytes_is_einval() {
    let mut h = Harness::new(0);
    let f = h.open();
    h.hardware_bump();
    for len in 1..4 {
        assert_eq!(h.read(f, len, true), err(Errno::Inval), "len {len}");
        assert_eq!(h.read(f, len, false), err(Errno::Inval), "len {len}");
    }
}

#[test]
fn nonblocking_read_of_up_to_date_file_is_eagain() {
    let mut h = Harness::new(0);
    let f = h.open();
    assert_eq!(h.read(f, 4, true), err(Errno::Again));
}

#[test]
fn blocking_read_waits_for_the_next_bump() {
    let mut h = Harness::new(0);
    let f = h.open();
    let r = h.start_read(f);
    assert_eq!(h.dev.status().pending_reads, 1);
    let actions = h.hardware_bump();
    assert_eq!(
        reply_for(&replies_of(&actions), r),
        Some(Reply::Generation(1))
    );
    assert_eq!(h.dev.status().pending_reads, 0);
}

#[test]
fn outdated_read_returns_current_value_until_acknowledged() {
    let mut h = Harness::new(0);
    let f = h.open();
    h.hardware_bump();
    h.hardware_bump();
    for _ in 0..3 {
        assert_eq!(h.read(f, 4, false), Some(Reply::Generation(2)));
    }
    assert_eq!(
        h.read(f, 4096, true),
        Some(Reply::Generation(2)),
        "long buffer, 4 bytes"
    );
    assert_eq!(h.ack(f), Reply::Written(4));
    assert_eq!(h.read(f, 4, true), err(Errno::Again));
}

#[test]
fn write_of_other_than_four_bytes_is_enobufs() {
    let mut h = Harness::new(1);
    let f = h.open();
    h.hardware_bump();
    for len in [0, 1, 3, 5, 8, 4096] {
        let data = vec![0u8; len];
        assert_eq!(h.write(f, &data), Reply::Error(Errno::NoBufs), "len {len}");
    }
    assert_eq!(
        h.read(f, 4, true),
        Some(Reply::Generation(2)),
        "still outdated"
    );
}

#[test]
fn write_of_a_value_other_than_current_is_einval() {
    let mut h = Harness::new(1);
    let f = h.open();
    h.hardware_bump();
    for value in [0u32, 1, 3, u32::MAX] {
        assert_eq!(
            h.write(f, &value.to_ne_bytes()),
            Reply::Error(Errno::Inval),
            "value {value}"
        );
    }
    assert_eq!(
        h.read(f, 4, true),
        Some(Reply::Generation(2)),
        "still outdated"
    );
}

#[test]
fn write_of_current_value_acknowledges() {
    let mut h = Harness::new(1);
    let f = h.open();
    assert_eq!(
        h.ack(f),
        Reply::Written(4),
        "up to date: accepted, no change"
    );
    h.track(f, true);
    h.hardware_bump();
    assert_eq!(h.dev.status().outdated, 1);
    assert_eq!(h.ack(f), Reply::Written(4));
    assert_eq!(h.dev.status().outdated, 0, "tracked file stops counting");
    assert_eq!(h.ack(f), Reply::Written(4), "a second ack changes nothing");
    assert_eq!(h.dev.status().outdated, 0);
}

#[test]
fn poll_is_readable_exactly_while_outdated() {
    let mut h = Harness::new(0);
    let f = h.open();
    assert_eq!(h.poll(f, None), Reply::Poll(0));
    h.hardware_bump();
    assert_eq!(h.poll(f, None), Reply::Poll(POLL_OUTDATED));
    h.ack(f);
    assert_eq!(h.poll(f, None), Reply::Poll(0));
}

#[test]
fn registered_poll_handle_is_woken_by_a_bump() {
    let mut h = Harness::new(0);
    let f = h.open();
    let g = h.open();
    h.poll(f, Some(7));
    h.poll(g, None);
    let actions = h.hardware_bump();
    let wakes: Vec<_> = actions
        .iter()
        .filter(|a| matches!(a, Action::WakePoll(_)))
        .collect();
    assert_eq!(wakes, vec![&Action::WakePoll(PollHandle(7))]);
}

#[test]
fn poll_registered_while_outdated_is_still_woken_after_ack_and_bump() {
    let mut h = Harness::new(0);
    let f = h.open();
    h.hardware_bump();
    assert_eq!(h.poll(f, Some(9)), Reply::Poll(POLL_OUTDATED));
    h.ack(f);
    let actions = h.hardware_bump();
    assert!(actions.contains(&Action::WakePoll(PollHandle(9))));
}

#[test]
fn every_bump_wakes_every_registration_even_if_already_outdated() {
    let mut h = Harness::new(0);
    let f = h.open();
    h.poll(f, Some(3));
    assert!(h.hardware_bump().contains(&Action::WakePoll(PollHandle(3))));
    assert!(h.hardware_bump().contains(&Action::WakePoll(PollHandle(3))));
}

#[test]
fn tracking_on_and_off_are_idempotent() {
    let mut h = Harness::new(0);
    let f = h.open();
    assert_eq!(h.track(f, true), Some(Reply::Done));
    assert_eq!(h.track(f, true), Some(Reply::Done));
    assert_eq!(h.dev.status().tracked, 1);
    h.hardware_bump();
    assert_eq!(h.dev.status().outdated, 1);
    assert_eq!(h.track(f, true), Some(Reply::Done));
    assert_eq!(h.dev.status().outdated, 1, "not counted twice");
    assert_eq!(h.track(f, false), Some(Reply::Done));
    assert_eq!(h.track(f, false), Some(Reply::Done));
    let s = h.dev.status();
    assert_eq!((s.tracked, s.outdated), (0, 0));
}

#[test]
fn any_nonzero_argument_turns_tracking_on() {
    let mut h = Harness::new(0);
    let f = h.open();
    h.ioctl(
        f,
        sysgenid_abi::SYSGENID_SET_WATCHER_TRACKING,
        1 << 40,
        ROOT,
    );
    assert_eq!(h.dev.status().tracked, 1);
}

#[test]
fn a_read_only_file_cannot_be_tracked_or_ack_but_may_read_poll_and_wait() {
    let mut h = Harness::new(0);
    let ro = h.open_read_only();
    assert_eq!(
        h.track(ro, true),
        err(Errno::BadF),
        "it could never acknowledge"
    );
    assert_eq!(h.track(ro, false), Some(Reply::Done), "off is harmless");
    assert_eq!(h.dev.status().tracked, 0);
    h.hardware_bump();
    assert_eq!(h.read(ro, 4, true), Some(Reply::Generation(1)));
    assert_eq!(h.poll(ro, None), Reply::Poll(POLL_OUTDATED));
    assert_eq!(h.ack(ro), Reply::Error(Errno::BadF));
    assert_eq!(h.wait(ro, 0).1, err(Errno::Intr), "still outdated");
}

#[test]
fn tracking_an_outdated_file_counts_it_outdated() {
    let mut h = Harness::new(0);
    let f = h.open();
    h.hardware_bump();
    assert_eq!(h.dev.status().outdated, 0, "untracked files never count");
    h.track(f, true);
    assert_eq!(h.dev.status().outdated, 1);
}

#[test]
fn untracking_an_outdated_file_completes_waits() {
    let mut h = Harness::new(0);
    let lagger = h.open();
    let waiter = h.open();
    h.track(lagger, true);
    h.hardware_bump();
    h.ack(waiter);
    let (w, now) = h.wait(waiter, 0);
    assert_eq!(now, None, "blocks while the lagger is outdated");
    let replies = h.replies(Event::Ioctl {
        request: RequestId(999),
        file: lagger,
        cmd: sysgenid_abi::SYSGENID_SET_WATCHER_TRACKING,
        arg: 0,
        caller: ROOT,
        now: Time(0),
    });
    assert_eq!(reply_for(&replies, w), Some(Reply::Done));
    assert_eq!(h.dev.status().outdated, 0);
}

#[test]
fn closing_an_outdated_tracked_file_completes_waits() {
    let mut h = Harness::new(0);
    let lagger = h.open();
    let waiter = h.open();
    h.track(lagger, true);
    h.hardware_bump();
    h.ack(waiter);
    let (w, now) = h.wait(waiter, 0);
    assert_eq!(now, None);
    let actions = h.release(lagger);
    assert_eq!(reply_for(&replies_of(&actions), w), Some(Reply::Done));
    let s = h.dev.status();
    assert_eq!((s.open_files, s.tracked, s.outdated), (1, 0, 0));
}

#[test]
fn wait_with_no_outdated_watcher_returns_at_once() {
    let mut h = Harness::new(0);
    let f = h.open();
    assert_eq!(h.wait(f, 0).1, Some(Reply::Done));
    h.track(f, true);
    assert_eq!(h.wait(f, 10).1, Some(Reply::Done));
}

#[test]
fn wait_by_an_outdated_caller_is_eintr_at_once() {
    let mut h = Harness::new(0);
    let f = h.open();
    h.hardware_bump();
    assert_eq!(
        h.wait(f, 0).1,
        err(Errno::Intr),
        "no tracked watchers at all"
    );
    h.track(f, true);
    assert_eq!(h.wait(f, 5).1, err(Errno::Intr));
}

#[test]
fn wait_completes_when_the_last_tracked_watcher_acks() {
    let mut h = Harness::new(0);
    let a = h.open();
    let b = h.open();
    let waiter = h.open();
    h.track(a, true);
    h.track(b, true);
    h.hardware_bump();
    h.ack(waiter);
    let (w, now) = h.wait(waiter, 0);
    assert_eq!(now, None);
    let replies = h.replies(Event::Write {
        request: RequestId(500),
        file: a,
        data: &1u32.to_ne_bytes(),
    });
    assert_eq!(reply_for(&replies, w), None, "b is still outdated");
    let replies = h.replies(Event::Write {
        request: RequestId(501),
        file: b,
        data: &1u32.to_ne_bytes(),
    });
    assert_eq!(reply_for(&replies, w), Some(Reply::Done));
}

#[test]
fn wait_is_eintr_when_a_bump_makes_the_caller_outdated() {
    let mut h = Harness::new(0);
    let a = h.open();
    let waiter = h.open();
    h.track(a, true);
    h.hardware_bump();
    h.ack(waiter);
    let (w, _) = h.wait(waiter, 0);
    let actions = h.hardware_bump();
    assert_eq!(reply_for(&replies_of(&actions), w), err(Errno::Intr));
}

#[test]
fn wait_timeout_sets_a_deadline_and_expires_with_etime() {
    let mut h = Harness::new(0);
    let a = h.open();
    let waiter = h.open();
    h.track(a, true);
    h.hardware_bump();
    h.ack(waiter);
    h.now = Time(5_000);
    let (request, event) = h.ioctl_event(waiter, SYSGENID_WAIT_WATCHERS, 250, ROOT);
    let actions = h.run(event);
    assert!(actions.is_empty(), "the wait blocks: {actions:?}");
    assert_eq!(h.dev.poll_timeout(), Some(Time(5_000 + 250_000_000)));
    let early = h.run(Event::Timeout {
        now: Time(5_000 + 249_999_999),
    });
    assert!(
        early.is_empty(),
        "an early timeout is not obeyed: {early:?}"
    );
    assert_eq!(h.dev.poll_timeout(), Some(Time(250_005_000)));
    let late = h.run(Event::Timeout {
        now: Time(250_005_000),
    });
    assert_eq!(
        late,
        vec![Action::Reply {
            request,
            reply: Reply::Error(Errno::Time)
        }]
    );
    assert_eq!(h.dev.status().pending_waits, 0);
    assert_eq!(h.dev.poll_timeout(), None, "no deadline is left");
}

#[test]
fn wait_that_completes_otherwise_forgets_its_deadline() {
    let mut h = Harness::new(0);
    let a = h.open();
    let waiter = h.open();
    h.track(a, true);
    h.hardware_bump();
    h.ack(waiter);
    let (w, _) = h.wait(waiter, 1000);
    assert!(h.dev.poll_timeout().is_some());
    let actions = h.ack_actions(a);
    assert_eq!(h.dev.poll_timeout(), None);
    assert_eq!(reply_for(&replies_of(&actions), w), Some(Reply::Done));
    let stale = h.run(Event::Timeout {
        now: Time(u64::MAX),
    });
    assert!(stale.is_empty(), "a late timeout finds nothing to end");
}

#[test]
fn one_timeout_ends_every_wait_that_is_due_and_only_those() {
    let mut h = Harness::new(0);
    let a = h.open();
    h.track(a, true);
    h.hardware_bump();
    let waiters: Vec<_> = (0..3).map(|_| h.open()).collect();
    for &w in &waiters {
        h.ack(w);
    }
    h.now = Time(0);
    let (first, _) = h.wait(waiters[0], 10);
    let (second, _) = h.wait(waiters[1], 20);
    let (third, _) = h.wait(waiters[2], 30);
    assert_eq!(h.dev.poll_timeout(), Some(Time(10_000_000)));
    let due = h.run(Event::Timeout {
        now: Time(20_000_000),
    });
    let replies = replies_of(&due);
    assert_eq!(reply_for(&replies, first), Some(Reply::Error(Errno::Time)));
    assert_eq!(reply_for(&replies, second), Some(Reply::Error(Errno::Time)));
    assert_eq!(reply_for(&replies, third), None);
    assert_eq!(h.dev.poll_timeout(), Some(Time(30_000_000)));
    assert_eq!(h.dev.status().pending_waits, 1);
}

#[test]
fn huge_wait_timeouts_never_mean_return_at_once() {
    for ms in [
        u64::MAX,
        u64::MAX / 1_000_000,
        1 << 63,
        18_446_744_073_709,
        1 << 40,
    ] {
        let mut h = Harness::new(0);
        let a = h.open();
        let waiter = h.open();
        h.track(a, true);
        h.hardware_bump();
        h.ack(waiter);
        h.now = Time(1_000_000_000);
        let (request, event) = h.ioctl_event(waiter, SYSGENID_WAIT_WATCHERS, ms, ROOT);
        let actions = h.run(event);
        let wanted = u128::from(h.now.0) + u128::from(ms) * 1_000_000;
        assert!(actions.is_empty(), "{ms} ms: {actions:?}");
        let _ = request;
        let expected = match u64::try_from(wanted) {
            Ok(deadline) => Some(Time(deadline)),
            // Past the clock's range: no deadline, so it waits at least that long.
            Err(_) => None,
        };
        assert_eq!(h.dev.poll_timeout(), expected, "{ms} ms");
        assert_eq!(h.dev.status().pending_waits, 1, "{ms}: still waiting");
    }
}

#[test]
fn trigger_without_capability_is_eacces() {
    let mut h = Harness::new(4);
    let f = h.open();
    assert_eq!(
        h.ioctl(f, SYSGENID_TRIGGER_GEN_UPDATE, 0, NOBODY),
        err(Errno::Acces)
    );
    assert_eq!(
        h.ioctl(f, SYSGENID_TRIGGER_GEN_UPDATE, 1 << 40, NOBODY),
        err(Errno::Acces),
        "permission is judged before the argument"
    );
    assert_eq!(h.dev.generation(), 4);
}

#[test]
fn unknown_ioctl_is_einval() {
    let mut h = Harness::new(0);
    let f = h.open();
    for cmd in [0, 0xE400, 0xE404, 0x541B /* FIONREAD */, 0x4004_E401] {
        assert_eq!(h.ioctl(f, cmd, 0, ROOT), err(Errno::Inval), "{cmd:#x}");
    }
}

#[test]
fn interrupt_ends_a_pending_read_with_eintr() {
    let mut h = Harness::new(0);
    let f = h.open();
    let r = h.start_read(f);
    assert_eq!(
        h.replies(Event::Interrupt { request: r }),
        vec![(r, Reply::Error(Errno::Intr))]
    );
    assert_eq!(h.dev.status().pending_reads, 0);
    assert!(
        h.replies(Event::Interrupt { request: r }).is_empty(),
        "once"
    );
}

#[test]
fn interrupt_ends_a_pending_wait_with_eintr_and_forgets_its_deadline() {
    let mut h = Harness::new(0);
    let a = h.open();
    let waiter = h.open();
    h.track(a, true);
    h.hardware_bump();
    h.ack(waiter);
    let (w, _) = h.wait(waiter, 60_000);
    let actions = h.run(Event::Interrupt { request: w });
    assert_eq!(
        actions,
        vec![Action::Reply {
            request: w,
            reply: Reply::Error(Errno::Intr)
        }]
    );
    assert_eq!(h.dev.poll_timeout(), None, "its deadline is gone");
}

#[test]
fn interrupt_of_an_unknown_request_does_nothing() {
    let mut h = Harness::new(0);
    assert!(
        h.run(Event::Interrupt {
            request: RequestId(12345)
        })
        .is_empty()
    );
}

#[test]
fn release_removes_the_file_its_tracking_and_its_requests() {
    let mut h = Harness::new(0);
    let f = h.open();
    h.track(f, true);
    let r = h.start_read(f);
    let actions = h.release(f);
    assert_eq!(replies_of(&actions), vec![(r, Reply::Error(Errno::BadF))]);
    let s = h.dev.status();
    assert_eq!((s.open_files, s.tracked, s.pending_reads), (0, 0, 0));
    assert_eq!(h.read(f, 4, true), err(Errno::BadF), "the file is gone");
    assert!(h.release(f).is_empty(), "a second release is harmless");
}

#[test]
fn requests_on_an_unknown_file_are_ebadf() {
    let mut h = Harness::new(0);
    let ghost = sysgenid_core::FileId(404);
    assert_eq!(h.read(ghost, 4, false), err(Errno::BadF));
    assert_eq!(
        h.write(ghost, &0u32.to_ne_bytes()),
        Reply::Error(Errno::BadF)
    );
    assert_eq!(h.poll(ghost, Some(1)), Reply::Error(Errno::BadF));
    assert_eq!(h.trigger(ghost, 0), err(Errno::BadF));
    assert_eq!(h.dev.generation(), 0);
}

#[test]
fn bump_persists_then_publishes_before_any_wake_or_reply() {
    let mut h = Harness::new(0);
    let f = h.open();
    let reader = h.open();
    h.poll(f, Some(1));
    let r = h.start_read(reader);
    let (t, event) = h.ioctl_event(f, SYSGENID_TRIGGER_GEN_UPDATE, 0, ROOT);
    let actions = h.run(event);
    assert_eq!(actions[0], Action::Persist(1));
    assert_eq!(
        actions[1],
        Action::Publish {
            generation: 1,
            id: id_of(1),
            source: BumpSource::Trigger { pid: ROOT.pid },
            token: None,
        }
    );
    let rest = &actions[2..];
    assert!(rest.contains(&Action::WakePoll(PollHandle(1))));
    assert_eq!(reply_for(&replies_of(rest), r), Some(Reply::Generation(1)));
    assert_eq!(reply_for(&replies_of(rest), t), Some(Reply::Done));
    assert_eq!(rest.len(), 3);
}

#[test]
fn nothing_happens_until_the_persist_is_done() {
    let mut dev = Device::new(0);
    let f = open_on(&mut dev);
    dev.handle(Event::Read {
        request: RequestId(2),
        file: f,
        len: 4,
        nonblocking: false,
    });
    dev.handle(Event::HardwareBump {
        backend: "hw",
        token: BumpToken(1),
    });
    assert_eq!(dev.poll_action(), Some(Action::Persist(1)));
    assert_eq!(dev.poll_action(), None, "no publish, no wake, no reply yet");
    assert_eq!(dev.generation(), 0, "the old value holds until durable");
    // A second bump queues behind the first and is computed from the new value.
    dev.handle(Event::HardwareBump {
        backend: "hw2",
        token: BumpToken(2),
    });
    assert_eq!(dev.poll_action(), None);
    assert!(dev.status().bump_in_progress);
    dev.handle(Event::PersistDone {
        result: Ok(id_of(1)),
    });
    let mut actions = Vec::new();
    while let Some(a) = dev.poll_action() {
        actions.push(a);
    }
    assert_eq!(
        actions,
        vec![
            Action::Publish {
                generation: 1,
                id: id_of(1),
                source: BumpSource::Backend("hw".into()),
                token: Some(BumpToken(1)),
            },
            Action::Reply {
                request: RequestId(2),
                reply: Reply::Generation(1)
            },
            Action::Persist(2),
        ]
    );
}

#[test]
fn failed_persist_fails_the_bump_with_eio_and_marks_degraded() {
    let mut h = Harness::new(7);
    let f = h.open();
    let reader = h.open();
    h.poll(f, Some(1));
    let r = h.start_read(reader);
    h.fail_persist = true;
    let (t, event) = h.ioctl_event(f, SYSGENID_TRIGGER_GEN_UPDATE, 0, ROOT);
    let actions = h.run(event);
    assert_eq!(
        actions,
        vec![
            Action::Persist(8),
            Action::BumpFailed {
                source: BumpSource::Trigger { pid: ROOT.pid },
                error: Errno::Io,
                detail: Some("disk on fire".into()),
                token: None,
            },
            Action::Reply {
                request: t,
                reply: Reply::Error(Errno::Io)
            },
        ],
        "nothing published, no one woken"
    );
    let s = h.dev.status();
    assert_eq!(s.generation, 7);
    assert!(s.degraded);
    assert_eq!(s.pending_reads, 1, "the reader still waits");
    h.fail_persist = false;
    let actions = h.hardware_bump();
    assert_eq!(
        reply_for(&replies_of(&actions), r),
        Some(Reply::Generation(8))
    );
    assert!(!h.dev.status().degraded, "a good persist clears it");
}

#[test]
fn failed_persist_of_a_hardware_bump_is_reported() {
    let mut h = Harness::new(7);
    h.fail_persist = true;
    let actions = h.hardware_bump();
    assert!(actions.contains(&Action::BumpFailed {
        source: BumpSource::Backend("test-hw".into()),
        error: Errno::Io,
        detail: Some("disk on fire".into()),
        token: Some(BumpToken(0)),
    }));
    assert_eq!(h.dev.status().failed_bumps, 1);
}

#[test]
fn a_trigger_is_not_interruptible() {
    let mut dev = Device::new(0);
    let f = open_on(&mut dev);
    dev.handle(Event::Ioctl {
        request: RequestId(2),
        file: f,
        cmd: SYSGENID_TRIGGER_GEN_UPDATE,
        arg: 0,
        caller: ROOT,
        now: Time(0),
    });
    assert_eq!(dev.poll_action(), Some(Action::Persist(1)));
    dev.handle(Event::Interrupt {
        request: RequestId(2),
    });
    assert_eq!(dev.poll_action(), None);
    dev.handle(Event::PersistDone {
        result: Ok(id_of(1)),
    });
    let last = std::iter::from_fn(|| dev.poll_action()).last();
    assert_eq!(
        last,
        Some(Action::Reply {
            request: RequestId(2),
            reply: Reply::Done
        })
    );
}

#[test]
fn status_lists_outdated_files_with_their_opener() {
    let mut h = Harness::new(0);
    let f = h.open();
    let g = h.open();
    h.track(f, true);
    h.hardware_bump();
    h.ack(g);
    let s = h.dev.status();
    assert_eq!(s.files.len(), 2);
    let ff = s.files.iter().find(|x| x.file == f).expect("listed");
    assert!(ff.tracked && ff.outdated);
    assert_eq!(ff.pid, 42);
    let gg = s.files.iter().find(|x| x.file == g).expect("listed");
    assert!(!gg.tracked && !gg.outdated);
}

impl Harness {
    fn ack_actions(&mut self, file: sysgenid_core::FileId) -> Vec<Action> {
        let request = self.request();
        let generation = self.dev.generation();
        let data = generation.to_ne_bytes();
        self.run(Event::Write {
            request,
            file,
            data: &data,
        })
    }
}

#[test]
fn trigger_if_with_the_current_generation_bumps_like_a_trigger() {
    let mut h = Harness::new(5);
    let f = h.open();
    h.track(f, true);
    h.poll(f, Some(1));
    let request = h.request();
    let actions = h.run(Event::TriggerIf {
        request,
        expect: 5,
        min: 0,
        caller: ROOT,
    });
    assert_eq!(
        actions,
        vec![
            Action::Persist(6),
            Action::Publish {
                generation: 6,
                id: id_of(6),
                source: BumpSource::Trigger { pid: ROOT.pid },
                token: None,
            },
            // The caller is answered before the wakeups go out.
            Action::Reply {
                request,
                reply: Reply::Bumped(6)
            },
            Action::WakePoll(PollHandle(1)),
        ]
    );
    let s = h.dev.status();
    assert_eq!((s.generation, s.outdated), (6, 1));
    assert_eq!(
        s.last_bump.expect("recorded").source,
        BumpSource::Trigger { pid: ROOT.pid }
    );
    assert_eq!(h.trigger_if(6, 9, ROOT), Some(Reply::Bumped(9)));
    assert_eq!(
        h.trigger_if(9, 8, ROOT),
        Some(Reply::Bumped(10)),
        "what if it's 9? it becomes 10"
    );
}

#[test]
fn trigger_if_with_a_stale_generation_changes_nothing() {
    let mut h = Harness::new(5);
    let f = h.open();
    for stale in [4, 6, 0, u32::MAX] {
        assert_eq!(h.trigger_if(stale, 0, ROOT), Some(Reply::Unchanged(5)));
    }
    assert!(
        !h.log
            .iter()
            .any(|a| matches!(a, Action::Persist(_) | Action::Publish { .. })),
        "{:?}",
        h.log
    );
    let s = h.dev.status();
    assert_eq!((s.generation, s.failed_bumps, s.last_bump), (5, 0, None));
    assert_eq!(h.read(f, 4, true), err(Errno::Again), "no one is outdated");
}

#[test]
fn trigger_if_without_capability_is_eacces_even_when_current() {
    let mut h = Harness::new(5);
    assert_eq!(h.trigger_if(5, 0, NOBODY), err(Errno::Acces));
    assert_eq!(h.trigger_if(4, 0, NOBODY), err(Errno::Acces));
    assert_eq!(h.dev.generation(), 5);
    assert!(h.log.iter().all(|a| matches!(a, Action::Reply { .. })));
}

#[test]
fn trigger_if_is_judged_when_its_turn_comes_after_earlier_bumps() {
    let mut dev = Device::new(0);
    dev.handle(Event::HardwareBump {
        backend: "hw",
        token: BumpToken(1),
    });
    assert_eq!(dev.poll_action(), Some(Action::Persist(1)));
    // Both arrive while the backend's bump is being persisted, with 0 still current.
    for (request, expect) in [(RequestId(7), 0), (RequestId(8), 1)] {
        dev.handle(Event::TriggerIf {
            request,
            expect,
            min: 0,
            caller: ROOT,
        });
    }
    assert_eq!(dev.poll_action(), None, "queued behind the backend's bump");
    dev.handle(Event::PersistDone {
        result: Ok(id_of(1)),
    });
    let actions: Vec<Action> = std::iter::from_fn(|| dev.poll_action()).collect();
    assert_eq!(
        actions,
        vec![
            Action::Publish {
                generation: 1,
                id: id_of(1),
                source: BumpSource::Backend("hw".into()),
                token: Some(BumpToken(1)),
            },
            Action::Reply {
                request: RequestId(7),
                reply: Reply::Unchanged(1)
            },
            Action::Persist(2),
        ],
        "the backend bumped first: the overseer's expectation of 0 is stale"
    );
    dev.handle(Event::PersistDone {
        result: Ok(id_of(2)),
    });
    let last = std::iter::from_fn(|| dev.poll_action()).last();
    assert_eq!(
        last,
        Some(Action::Reply {
            request: RequestId(8),
            reply: Reply::Bumped(2)
        })
    );
}

#[test]
fn trigger_if_behind_a_failed_bump_still_bumps() {
    let mut dev = Device::new(3);
    dev.handle(Event::HardwareBump {
        backend: "hw",
        token: BumpToken(1),
    });
    assert_eq!(dev.poll_action(), Some(Action::Persist(4)));
    dev.handle(Event::TriggerIf {
        request: RequestId(7),
        expect: 3,
        min: 0,
        caller: ROOT,
    });
    dev.handle(Event::PersistDone {
        result: Err("disk on fire".into()),
    });
    assert!(matches!(dev.poll_action(), Some(Action::BumpFailed { .. })));
    assert_eq!(dev.poll_action(), Some(Action::Persist(4)));
    dev.handle(Event::PersistDone {
        result: Ok(id_of(4)),
    });
    let last = std::iter::from_fn(|| dev.poll_action()).last();
    assert_eq!(
        last,
        Some(Action::Reply {
            request: RequestId(7),
            reply: Reply::Bumped(4)
        })
    );
}

#[test]
fn trigger_if_at_u32_max_is_eoverflow_only_when_current() {
    let mut h = Harness::new(u32::MAX);
    assert_eq!(h.trigger_if(u32::MAX, 0, ROOT), err(Errno::Overflow));
    assert_eq!(
        h.trigger_if(u32::MAX - 1, 0, ROOT),
        Some(Reply::Unchanged(u32::MAX))
    );
    let s = h.dev.status();
    assert_eq!((s.generation, s.failed_bumps), (u32::MAX, 1));
    assert_eq!(s.last_failure.expect("recorded").error, Errno::Overflow);
}

#[test]
fn trigger_if_whose_persist_fails_is_eio_and_changes_nothing() {
    let mut h = Harness::new(7);
    h.fail_persist = true;
    assert_eq!(h.trigger_if(7, 0, ROOT), err(Errno::Io));
    let s = h.dev.status();
    assert_eq!(s.generation, 7);
    assert!(s.degraded);
    assert!(!h.log.iter().any(|a| matches!(a, Action::Publish { .. })));
}

#[test]
fn trigger_if_is_neither_interruptible_nor_ended_by_a_release() {
    let mut dev = Device::new(0);
    let f = open_on(&mut dev);
    dev.handle(Event::HardwareBump {
        backend: "hw",
        token: BumpToken(1),
    });
    assert_eq!(dev.poll_action(), Some(Action::Persist(1)));
    dev.handle(Event::TriggerIf {
        request: RequestId(7),
        expect: 1,
        min: 0,
        caller: ROOT,
    });
    dev.handle(Event::Interrupt {
        request: RequestId(7),
    });
    dev.handle(Event::Release { file: f });
    assert_eq!(dev.poll_action(), None);
    dev.handle(Event::PersistDone {
        result: Ok(id_of(1)),
    });
    assert!(matches!(dev.poll_action(), Some(Action::Publish { .. })));
    assert_eq!(dev.poll_action(), Some(Action::Persist(2)));
    dev.handle(Event::PersistDone {
        result: Ok(id_of(2)),
    });
    let last = std::iter::from_fn(|| dev.poll_action()).last();
    assert_eq!(
        last,
        Some(Action::Reply {
            request: RequestId(7),
            reply: Reply::Bumped(2)
        })
    );
}

/// `n` readers blocked in read, opened before the one a test watches: a bump answers them at
/// once, so the reads that follow wait for `Event::WakeReaders`.
fn readers_answered_at_once(h: &mut Harness) -> Vec<RequestId> {
    (0..READS_ANSWERED_AT_ONCE)
        .map(|_| {
            let f = h.open();
            h.start_read(f)
        })
        .collect()
}

/// A hardware bump through `h.dev`, stopped where the transport still shows the page: every
/// action up to and with `Action::WakeReaders`, which is not handed back yet.
fn bump_before_the_page_shows(h: &mut Harness) -> Vec<Action> {
    h.dev.handle(Event::HardwareBump {
        backend: "hw",
        token: BumpToken(7),
    });
    let mut actions = Vec::new();
    while let Some(action) = h.dev.poll_action() {
        if let Action::Persist(generation) = action {
            h.dev.handle(Event::PersistDone {
                result: Ok(id_of(generation)),
            });
        }
        actions.push(action);
    }
    actions
}

/// Hands `Action::WakeReaders` back and returns what follows.
fn page_shows(h: &mut Harness) -> Vec<Action> {
    h.dev.handle(Event::WakeReaders);
    std::iter::from_fn(|| h.dev.poll_action()).collect()
}

#[test]
fn a_bump_answers_its_first_reads_at_once_and_the_rest_once_the_page_shows() {
    let mut h = Harness::new(0);
    let first = readers_answered_at_once(&mut h);
    let f = h.open();
    let r = h.start_read(f);
    let actions = bump_before_the_page_shows(&mut h);
    assert_eq!(actions.last(), Some(&Action::WakeReaders));
    let replies = replies_of(&actions);
    for &request in &first {
        assert_eq!(reply_for(&replies, request), Some(Reply::Generation(1)));
    }
    assert_eq!(reply_for(&replies, r), None);
    assert_eq!(
        page_shows(&mut h),
        [Action::Reply {
            request: r,
            reply: Reply::Generation(1)
        }]
    );
}

#[test]
fn a_bump_with_few_readers_answers_them_all_at_once() {
    let mut h = Harness::new(0);
    let first = readers_answered_at_once(&mut h);
    let actions = bump_before_the_page_shows(&mut h);
    assert!(!actions.contains(&Action::WakeReaders), "{actions:?}");
    assert_eq!(replies_of(&actions).len(), first.len());
}

#[test]
fn a_woken_read_is_answered_as_its_file_acknowledges_before_the_page_shows() {
    let mut h = Harness::new(0);
    readers_answered_at_once(&mut h);
    let f = h.open();
    let r = h.start_read(f);
    bump_before_the_page_shows(&mut h);
    // Another thread of the watcher reads the new value and acknowledges it first.
    assert_eq!(h.read(f, 4, true), Some(Reply::Generation(1)));
    let ack = h.request();
    let replies = h.replies(Event::Write {
        request: ack,
        file: f,
        data: &1u32.to_ne_bytes(),
    });
    assert_eq!(
        replies,
        [(r, Reply::Generation(1)), (ack, Reply::Written(4))],
        "the bump woke it: no state may hold it asleep on an up-to-date file"
    );
    assert_eq!(page_shows(&mut h), [], "answered once");
}

#[test]
fn each_hand_back_answers_the_reads_of_its_own_bump_with_that_bumps_value() {
    let mut h = Harness::new(0);
    readers_answered_at_once(&mut h);
    // Sixteen more readers and `r` wait for the first hand-back.
    readers_answered_at_once(&mut h);
    let f = h.open();
    let r = h.start_read(f);
    bump_before_the_page_shows(&mut h);
    // A second bump answers the sixteen at once; `r` waits for a hand-back again.
    let second = bump_before_the_page_shows(&mut h);
    assert_eq!(replies_of(&second).len(), READS_ANSWERED_AT_ONCE);
    assert_eq!(reply_for(&replies_of(&second), r), None);
    assert_eq!(
        page_shows(&mut h),
        [Action::Reply {
            request: r,
            reply: Reply::Generation(1)
        }],
        "the first hand-back says page 1 shows, not page 2"
    );
    assert_eq!(page_shows(&mut h), [], "the second finds it answered");
}

#[test]
fn a_woken_read_interrupted_or_closed_before_the_page_shows_is_answered_once() {
    let mut h = Harness::new(0);
    readers_answered_at_once(&mut h);
    let f = h.open();
    let g = h.open();
    let interrupted = h.start_read(f);
    let closed = h.start_read(g);
    bump_before_the_page_shows(&mut h);
    let replies = h.replies(Event::Interrupt {
        request: interrupted,
    });
    assert_eq!(
        reply_for(&replies, interrupted),
        Some(Reply::Error(Errno::Intr))
    );
    h.release(g);
    assert_eq!(
        page_shows(&mut h),
        [],
        "neither is answered again: {closed:?}"
    );
}

#[test]
fn a_second_bump_before_the_page_shows_answers_each_woken_read_once_with_the_newest_value() {
    let mut h = Harness::new(0);
    readers_answered_at_once(&mut h);
    let f = h.open();
    let r = h.start_read(f);
    bump_before_the_page_shows(&mut h);
    let second = bump_before_the_page_shows(&mut h);
    assert_eq!(
        replies_of(&second),
        [(r, Reply::Generation(2))],
        "now among the first reads of the second bump"
    );
    assert_eq!(
        page_shows(&mut h),
        [],
        "the first bump's hand-back finds it answered"
    );
}
