//! `Device::state` and `Device::from_state`: a device rebuilt from its state carries on as the
//! old one would, and a state no device can reach is refused.

mod common;

use common::{Harness, id_of};
use sysgenid_core::{
    BadState, Device, Event, FileId, GenerationId, NotQuiet, PendingState, Reply, RequestId,
};

#[test]
fn a_rebuilt_device_keeps_blocked_reads_waits_tracking_and_laggards() {
    let mut h = Harness::new(3);
    let reader = h.open();
    let lagger = h.open();
    let waiter = h.open();
    h.track(lagger, true);
    h.poll(reader, Some(77));
    let read = h.start_read(reader);
    assert_eq!(h.trigger(waiter, 0), Some(Reply::Done));
    h.ack(waiter);
    let blocked = h.start_read(waiter);
    let (wait, answered) = h.wait(waiter, 0);
    assert_eq!(answered, None, "the tracked lagger holds the wait");

    let state = h.dev.state().unwrap();
    assert_eq!(state.pending.len(), 2, "{state:?}");
    h.dev = Device::from_state(state).unwrap();

    let status = h.dev.status();
    assert_eq!((status.tracked, status.outdated), (1, 1));
    assert_eq!((status.pending_reads, status.pending_waits), (1, 1));
    assert_eq!(h.ack(lagger), Reply::Written(4));
    let done = h.log.iter().any(|a| {
        matches!(a, sysgenid_core::Action::Reply { request, reply: Reply::Done } if *request == wait)
    });
    assert!(done, "the wait ends once the lagger acks: {:?}", h.log);
    assert_ne!(read, blocked);
}

#[test]
fn the_state_is_refused_while_a_bump_is_under_way() {
    let mut h = Harness::new(0);
    let file = h.open();
    h.dev.handle(sysgenid_core::Event::HardwareBump {
        backend: "hw",
        token: sysgenid_core::BumpToken(1),
    });
    assert_eq!(h.dev.state(), Err(NotQuiet::ActionsQueued));
    h.dev.poll_action();
    assert_eq!(h.dev.state(), Err(NotQuiet::BumpUnderWay));
    h.dev.handle(sysgenid_core::Event::PersistDone {
        result: Ok(id_of(1)),
    });
    while h.dev.poll_action().is_some() {}
    assert_eq!(h.dev.state().unwrap().generation, 1);
    assert_eq!(h.dev.state().unwrap().generation_id, id_of(1));
    assert_eq!(h.read(file, 4, true), Some(Reply::Generation(1)));
}

#[test]
fn states_no_device_can_reach_are_refused() {
    let mut h = Harness::new(5);
    let file = h.open();
    let base = h.dev.state().unwrap();

    let mut high_id = base.clone();
    high_id.files[0].id = FileId(base.next_file);
    assert_eq!(
        Device::from_state(high_id).err(),
        Some(BadState::FileId(FileId(base.next_file)))
    );

    let mut tracked_ro = base.clone();
    tracked_ro.files[0].tracked = true;
    tracked_ro.files[0].writable = false;
    assert_eq!(
        Device::from_state(tracked_ro).err(),
        Some(BadState::TrackedReadOnly(file))
    );

    let mut outdated_wait = base.clone();
    outdated_wait.files[0].acked = 4;
    outdated_wait.pending.push(PendingState::Wait {
        request: RequestId(9),
        file,
        deadline: None,
    });
    assert_eq!(
        Device::from_state(outdated_wait).err(),
        Some(BadState::Pending(RequestId(9)))
    );

    let mut read_of_a_closed_file = base.clone();
    read_of_a_closed_file.pending.push(PendingState::Read {
        request: RequestId(9),
        file: FileId(file.0 + 100),
    });
    assert_eq!(
        Device::from_state(read_of_a_closed_file).err(),
        Some(BadState::Pending(RequestId(9)))
    );

    let mut twice = base;
    let read = PendingState::Read {
        request: RequestId(9),
        file,
    };
    twice.pending.extend([read, read]);
    assert_eq!(
        Device::from_state(twice).err(),
        Some(BadState::DuplicateRequest(RequestId(9)))
    );
}

#[test]
fn catching_up_with_a_durable_value_acts_as_a_bump() {
    let mut h = Harness::new(4);
    let file = h.open();
    h.poll(file, Some(9));
    let read = h.start_read(file);
    let resumed = || sysgenid_core::BumpSource::Backend("resumed".into());
    h.dev.catch_up(4, id_of(4), resumed());
    assert_eq!(
        h.dev.poll_action(),
        None,
        "not above the current value: nothing"
    );
    h.dev.catch_up(6, id_of(6), resumed());
    let actions: Vec<_> = std::iter::from_fn(|| h.dev.poll_action()).collect();
    assert!(matches!(
        actions[0],
        sysgenid_core::Action::Publish { generation: 6, id, .. } if id == id_of(6)
    ));
    assert_eq!(h.dev.generation_id(), id_of(6));
    assert!(
        actions.contains(&sysgenid_core::Action::WakePoll(sysgenid_core::PollHandle(
            9
        )))
    );
    assert!(actions.contains(&sysgenid_core::Action::Reply {
        request: read,
        reply: Reply::Generation(6)
    }));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, sysgenid_core::Action::Persist(_))),
        "already durable"
    );
}

#[test]
fn every_bump_takes_the_id_its_persist_drew_and_a_rebuilt_device_keeps_it() {
    let start = GenerationId([9; 16]);
    let mut h = Harness::new(2);
    h.dev = Device::new(2).with_generation_id(start);
    assert_eq!(h.dev.status().generation_id, start);
    let file = h.open();
    assert_eq!(h.trigger(file, 0), Some(Reply::Done));
    assert_eq!((h.dev.generation(), h.dev.generation_id()), (3, id_of(3)));
    assert_eq!(h.trigger(file, 0), Some(Reply::Done));
    assert_eq!(h.dev.generation_id(), id_of(4));
    h.fail_persist = true;
    assert_ne!(h.trigger(file, 0), Some(Reply::Done));
    assert_eq!(
        h.dev.generation_id(),
        id_of(4),
        "a failed bump keeps the ID"
    );

    let rebuilt = Device::from_state(h.dev.state().unwrap()).unwrap();
    assert_eq!(
        (rebuilt.generation(), rebuilt.generation_id()),
        (4, id_of(4))
    );
}

#[cfg(feature = "serde")]
#[test]
fn a_state_serialized_before_the_id_existed_reads_with_no_id() {
    let h = Harness::new(7);
    let mut json = serde_json::to_value(h.dev.state().unwrap()).unwrap();
    assert_eq!(json["generation_id"], GenerationId::NONE.to_string());
    json.as_object_mut().unwrap().remove("generation_id");
    let old: sysgenid_core::DeviceState = serde_json::from_value(json).unwrap();
    assert_eq!((old.generation, old.generation_id), (7, GenerationId::NONE));
}

#[test]
fn the_state_is_refused_until_the_reads_a_bump_woke_are_answered() {
    let mut h = Harness::new(0);
    for _ in 0..=sysgenid_core::READS_ANSWERED_AT_ONCE {
        let file = h.open();
        h.start_read(file);
    }
    h.dev.handle(Event::HardwareBump {
        backend: "hw",
        token: sysgenid_core::BumpToken(1),
    });
    h.dev.poll_action();
    h.dev.handle(Event::PersistDone {
        result: Ok(id_of(1)),
    });
    while h.dev.poll_action().is_some() {}
    assert_eq!(h.dev.state(), Err(NotQuiet::BumpUnderWay));
    h.dev.handle(Event::WakeReaders);
    while h.dev.poll_action().is_some() {}
    assert!(h.dev.state().unwrap().pending.is_empty());
}

#[test]
fn a_read_a_bump_woke_but_never_answered_is_answered_by_a_rebuilt_device() {
    let mut h = Harness::new(5);
    let file = h.open();
    let mut state = h.dev.state().unwrap();
    // The previous process showed 6 and died before answering the read it had woken.
    state.generation = 6;
    state.pending.push(PendingState::Read {
        request: RequestId(9),
        file,
    });
    let mut dev = Device::from_state(state).unwrap();
    assert_eq!(dev.poll_action(), Some(sysgenid_core::Action::WakeReaders));
    assert_eq!(dev.poll_action(), None);
    dev.handle(Event::WakeReaders);
    assert_eq!(
        dev.poll_action(),
        Some(sysgenid_core::Action::Reply {
            request: RequestId(9),
            reply: Reply::Generation(6)
        })
    );
}
