//! Random event sequences against a small reference model that recomputes every fact from scratch.
//!
//! The model shares no code with the core. It keeps the generation, each file's acknowledged
//! value and tracking flag, the requests left unanswered and the bumps not yet applied; after
//! every step it decides afresh which unanswered requests are now due. The test checks, after
//! every step, that the core answered exactly those, with exactly the model's replies, and that
//! every fact the core reports matches the model.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use sysgenid_abi::{
    Errno, POLL_OUTDATED, SYSGENID_SET_WATCHER_TRACKING, SYSGENID_TRIGGER_GEN_UPDATE,
    SYSGENID_WAIT_WATCHERS,
};
use sysgenid_core::{
    Action, BumpSource, BumpToken, Caller, Device, DeviceState, Event, FileId, FileState,
    PendingState, PollHandle, READS_ANSWERED_AT_ONCE, Reply, RequestId, Time,
};

/// The ID the test persist gives `generation`: known, and different for each generation.
fn id_of(generation: u32) -> sysgenid_core::GenerationId {
    sysgenid_core::GenerationId::from_words([generation, !generation, 0x5eed, generation ^ 0xa5a5])
}

/// How the driver answers the persist of a bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    Ok,
    Fail,
    /// Left outstanding until a later [`Op::FinishPersist`].
    Defer,
}

/// One step of a scenario. Indices pick among files or requests seen so far.
#[derive(Debug, Clone, Copy)]
enum Op {
    Open {
        writable: bool,
    },
    Read {
        file: usize,
        len: usize,
        nonblocking: bool,
    },
    AckCurrent {
        file: usize,
    },
    WriteValue {
        file: usize,
        value: u32,
    },
    WriteLen {
        file: usize,
        len: usize,
    },
    Poll {
        file: usize,
        register: bool,
    },
    Track {
        file: usize,
        on: bool,
    },
    Wait {
        file: usize,
        timeout_ms: u64,
    },
    Trigger {
        file: usize,
        min: u64,
        privileged: bool,
        persist: Persist,
    },
    /// A conditional trigger from the control socket: it expects the generation current when
    /// it is sent, moved by `delta` (so stale values are tried too).
    TriggerIf {
        delta: i32,
        min: u32,
        privileged: bool,
        persist: Persist,
    },
    HardwareBump {
        persist: Persist,
    },
    FinishPersist {
        ok: bool,
    },
    UnknownIoctl {
        file: usize,
        cmd: u32,
    },
    Close {
        file: usize,
    },
    Interrupt {
        request: usize,
    },
    AdvanceMs {
        ms: u64,
    },
    /// Another instance takes over: the device is rebuilt from its own `state()` (through
    /// JSON with the `serde` feature), which is refused while a bump is under way.
    Handover,
}

fn persist() -> impl Strategy<Value = Persist> {
    prop_oneof![7 => Just(Persist::Ok), 1 => Just(Persist::Fail), 2 => Just(Persist::Defer)]
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0usize..8;
    let read_len = prop_oneof![Just(0usize), 1usize..4, Just(4), Just(4096)];
    let timeout = prop_oneof![Just(0u64), 1u64..50, Just(u64::MAX), Just(1u64 << 44)];
    let min = prop_oneof![
        0u64..12,
        Just(u64::from(u32::MAX)),
        Just(0x8000_0000u64),
        Just(1u64 << 32),
        Just(u64::MAX)
    ];
    prop_oneof![
        3 => prop::bool::weighted(0.8).prop_map(|writable| Op::Open { writable }),
        3 => (file.clone(), read_len, any::<bool>())
            .prop_map(|(file, len, nonblocking)| Op::Read { file, len, nonblocking }),
        4 => file.clone().prop_map(|file| Op::AckCurrent { file }),
        1 => (file.clone(), prop_oneof![0u32..4, Just(u32::MAX)])
            .prop_map(|(file, value)| Op::WriteValue { file, value }),
        1 => (file.clone(), prop_oneof![Just(0usize), Just(3), Just(5), Just(4096)])
            .prop_map(|(file, len)| Op::WriteLen { file, len }),
        2 => (file.clone(), any::<bool>()).prop_map(|(file, register)| Op::Poll { file, register }),
        3 => (file.clone(), any::<bool>()).prop_map(|(file, on)| Op::Track { file, on }),
        3 => (file.clone(), timeout).prop_map(|(file, timeout_ms)| Op::Wait { file, timeout_ms }),
        3 => (file.clone(), min, prop::bool::weighted(0.85), persist()).prop_map(
            |(file, min, privileged, persist)| Op::Trigger { file, min, privileged, persist }
        ),
        3 => (
            prop_oneof![3 => Just(0i32), 1 => -2i32..=2, 1 => any::<i32>()],
            prop_oneof![0u32..12, Just(u32::MAX), Just(0x8000_0000)],
            prop::bool::weighted(0.85),
            persist(),
        ).prop_map(|(delta, min, privileged, persist)| Op::TriggerIf { delta, min, privileged, persist }),
        3 => persist().prop_map(|persist| Op::HardwareBump { persist }),
        2 => prop::bool::weighted(0.8).prop_map(|ok| Op::FinishPersist { ok }),
        1 => (file.clone(), prop_oneof![Just(0u32), Just(0xE404), Just(0x541B)])
            .prop_map(|(file, cmd)| Op::UnknownIoctl { file, cmd }),
        2 => file.prop_map(|file| Op::Close { file }),
        2 => (0usize..64).prop_map(|request| Op::Interrupt { request }),
        2 => prop_oneof![1u64..30, Just(100)].prop_map(|ms| Op::AdvanceMs { ms }),
        2 => Just(Op::Handover),
    ]
}

fn start_generation() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..1000, (u32::MAX - 3)..=u32::MAX]
}

const TRIGGER_PID: u32 = 10;
/// The file of a waiting conditional trigger, which has none (the core numbers files from 1).
const NO_FILE: FileId = FileId(0);
const BACKEND: &str = "hw";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Read,
    Wait { deadline_ns: Option<u128> },
    Trigger,
}

#[derive(Debug)]
struct ModelFile {
    acked: u32,
    tracked: bool,
    writable: bool,
    handle: Option<u64>,
}

#[derive(Debug)]
struct ModelBump {
    min: u32,
    trigger: Option<RequestId>,
    /// A conditional trigger applies only if the generation is still this when it starts.
    expect: Option<u32>,
    /// A hardware bump's token, to come back with its outcome.
    token: Option<BumpToken>,
}

/// What one step of the model decided about bumps.
#[derive(Debug, Default)]
struct BumpOutcome {
    /// Values the driver is asked to persist, in order.
    persists: Vec<u32>,
    /// The bump applied in this step, with its source and token.
    published: Option<(u32, BumpSource, Option<BumpToken>)>,
    /// Triggers answered by bumps that ended in this step.
    replies: BTreeMap<RequestId, Reply>,
}

/// The reference model: the rules of the spec, written as plainly as possible.
#[derive(Debug)]
struct Model {
    generation: u32,
    files: BTreeMap<FileId, ModelFile>,
    waiting: BTreeMap<RequestId, (FileId, Waiting)>,
    /// Bumps in arrival order; the first one is being persisted when `persisting`.
    bumps: VecDeque<ModelBump>,
    persisting: bool,
    failed_bumps: u64,
    degraded: bool,
    now_ns: u128,
}

impl Model {
    fn outdated(&self, file: FileId) -> bool {
        self.files[&file].acked != self.generation
    }

    fn outdated_tracked(&self) -> usize {
        self.files
            .values()
            .filter(|f| f.tracked && f.acked != self.generation)
            .count()
    }

    /// Which waiting reads and waits are due now, and with what, decided from scratch.
    fn settle(&mut self) -> BTreeMap<RequestId, Reply> {
        let mut due = BTreeMap::new();
        for (&request, &(file, waiting)) in &self.waiting {
            let reply = match waiting {
                Waiting::Trigger => None,
                Waiting::Read if self.outdated(file) => Some(Reply::Generation(self.generation)),
                Waiting::Read => None,
                Waiting::Wait { .. } if self.outdated(file) => Some(Reply::Error(Errno::Intr)),
                Waiting::Wait { .. } if self.outdated_tracked() == 0 => Some(Reply::Done),
                Waiting::Wait {
                    deadline_ns: Some(d),
                } if self.now_ns >= d => Some(Reply::Error(Errno::Time)),
                Waiting::Wait { .. } => None,
            };
            if let Some(reply) = reply {
                due.insert(request, reply);
            }
        }
        for request in due.keys() {
            self.waiting.remove(request);
        }
        due
    }

    fn source(bump: &ModelBump) -> BumpSource {
        match bump.trigger {
            Some(_) => BumpSource::Trigger { pid: TRIGGER_PID },
            None => BumpSource::Backend(BACKEND.into()),
        }
    }

    /// Ends the first bump: applied if `ok`, failed with `EIO` if not.
    fn end_first_bump(&mut self, ok: bool, out: &mut BumpOutcome) {
        let bump = self.bumps.pop_front().expect("a bump is waiting");
        self.persisting = false;
        let reply = if ok {
            self.generation = std::cmp::max(bump.min, self.generation + 1);
            self.degraded = false;
            out.published = Some((self.generation, Model::source(&bump), bump.token));
            match bump.expect {
                Some(_) => Reply::Bumped(self.generation),
                None => Reply::Done,
            }
        } else {
            self.failed_bumps += 1;
            self.degraded = true;
            Reply::Error(Errno::Io)
        };
        if let Some(trigger) = bump.trigger {
            self.waiting.remove(&trigger);
            out.replies.insert(trigger, reply);
        }
    }

    /// Starts waiting bumps one at a time: one at `u32::MAX` fails at once with `EOVERFLOW`;
    /// otherwise its persist is requested and answered as `persist` says.
    fn start_bumps(&mut self, persist: Persist, out: &mut BumpOutcome) {
        while !self.persisting && !self.bumps.is_empty() {
            if self.bumps[0].expect.is_some_and(|e| e != self.generation) {
                let bump = self.bumps.pop_front().expect("not empty");
                let trigger = bump.trigger.expect("only triggers are conditional");
                self.waiting.remove(&trigger);
                out.replies
                    .insert(trigger, Reply::Unchanged(self.generation));
                continue;
            }
            if self.generation == u32::MAX {
                let bump = self.bumps.pop_front().expect("not empty");
                self.failed_bumps += 1;
                if let Some(trigger) = bump.trigger {
                    self.waiting.remove(&trigger);
                    out.replies.insert(trigger, Reply::Error(Errno::Overflow));
                }
                continue;
            }
            let min = self.bumps[0].min;
            out.persists.push(std::cmp::max(min, self.generation + 1));
            self.persisting = true;
            match persist {
                Persist::Ok => self.end_first_bump(true, out),
                Persist::Fail => self.end_first_bump(false, out),
                Persist::Defer => {}
            }
            // Bumps queued behind this one start only when a later step finishes it.
            break;
        }
    }
}

/// Runs the core, keeps its clock, and answers persists as the step says. Keeps a copy of the
/// lasting state from the core's changes alone, as a transport that survives crashes does.
struct Driver {
    dev: Device,
    /// The device's `with_reads_answered_at_once`, kept across rebuilds.
    reads_at_once: usize,
    now: Time,
    outstanding_persist: Option<u32>,
    copy_files: BTreeMap<FileId, FileState>,
    copy_pending: BTreeMap<RequestId, PendingState>,
}

impl Driver {
    /// Writes the changed files and requests into the copy, and checks it against the core.
    fn follow_changes(&mut self) {
        let changes = self.dev.take_changes();
        for id in changes.files {
            match self.dev.file_state(id) {
                Some(state) => self.copy_files.insert(id, state),
                None => self.copy_files.remove(&id),
            };
        }
        for request in changes.requests {
            match self.dev.pending_state(request) {
                Some(state) => self.copy_pending.insert(request, state),
                None => self.copy_pending.remove(&request),
            };
        }
        let lasting = self.dev.lasting_state();
        assert_eq!(
            lasting.files,
            self.copy_files.values().copied().collect::<Vec<_>>()
        );
        assert_eq!(
            lasting.pending,
            self.copy_pending.values().copied().collect::<Vec<_>>()
        );
    }

    fn run(&mut self, event: Event<'_>, persist: Persist) -> Vec<Action> {
        let actions = self.run_unchecked(event, persist);
        self.follow_changes();
        actions
    }

    fn run_unchecked(&mut self, event: Event<'_>, persist: Persist) -> Vec<Action> {
        self.dev.handle(event);
        let mut actions = Vec::new();
        while let Some(action) = self.dev.poll_action() {
            match action {
                Action::Persist(value) if persist != Persist::Defer => {
                    let result = match persist {
                        Persist::Ok => Ok(id_of(value)),
                        _ => Err("injected".to_owned()),
                    };
                    self.dev.handle(Event::PersistDone { result });
                    actions.push(Action::Persist(value));
                    continue;
                }
                Action::Persist(value) => self.outstanding_persist = Some(value),
                Action::WakeReaders => {
                    self.dev.handle(Event::WakeReaders);
                    continue;
                }
                _ => {}
            }
            actions.push(action);
        }
        actions
    }
}

#[cfg(feature = "serde")]
fn through_json(state: DeviceState) -> DeviceState {
    serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap()
}

#[cfg(not(feature = "serde"))]
fn through_json(state: DeviceState) -> DeviceState {
    state
}

struct Scenario {
    driver: Driver,
    model: Model,
    opened: Vec<FileId>,
    issued: Vec<RequestId>,
    /// The requests that were `WAIT_WATCHERS` calls.
    waits: BTreeSet<RequestId>,
    answered: BTreeSet<RequestId>,
}

/// What the model expects a step to do.
#[derive(Default)]
struct Expect {
    replies: BTreeMap<RequestId, Reply>,
    /// The persist this step finished, asked for by an earlier step.
    finished_persist: Option<u32>,
    bumps: BumpOutcome,
}

impl Scenario {
    fn new(start: u32, reads_at_once: usize) -> Scenario {
        Scenario {
            driver: Driver {
                dev: Device::new(start).with_reads_answered_at_once(reads_at_once),
                reads_at_once,
                now: Time(1_000_000),
                outstanding_persist: None,
                copy_files: BTreeMap::new(),
                copy_pending: BTreeMap::new(),
            },
            model: Model {
                generation: start,
                files: BTreeMap::new(),
                waiting: BTreeMap::new(),
                bumps: VecDeque::new(),
                persisting: false,
                failed_bumps: 0,
                degraded: false,
                now_ns: 1_000_000,
            },
            opened: Vec::new(),
            issued: Vec::new(),
            waits: BTreeSet::new(),
            answered: BTreeSet::new(),
        }
    }

    /// Runs one operation through both the core and the model; returns the core's actions and
    /// the model's expectations.
    fn apply(&mut self, op: &Op, request: RequestId) -> (Vec<Action>, Expect) {
        let op = if self.opened.is_empty() {
            &Op::Open { writable: true }
        } else {
            op
        };
        let issues_request = !matches!(
            op,
            Op::HardwareBump { .. }
                | Op::FinishPersist { .. }
                | Op::Close { .. }
                | Op::Interrupt { .. }
                | Op::AdvanceMs { .. }
                | Op::Handover
        );
        if issues_request {
            self.issued.push(request);
        }
        let Scenario {
            driver,
            model,
            opened,
            issued,
            waits,
            ..
        } = self;
        let mut expect = Expect::default();
        // The reply the model expects for this step's own request, if it answers at once.
        let mut immediate: Option<Reply> = None;
        let now = driver.now;
        let pick = |i: usize| opened.get(i % opened.len().max(1)).copied();
        let actions = match (*op, pick(0)) {
            (Op::Open { .. }, _) | (_, None) => {
                let writable = match *op {
                    Op::Open { writable } => writable,
                    _ => true,
                };
                let event = Event::Open {
                    request,
                    pid: 1,
                    writable,
                };
                let actions = driver.run(event, Persist::Ok);
                if let Some(Action::Reply {
                    reply: Reply::Opened(file),
                    ..
                }) = actions.first()
                {
                    let acked = model.generation;
                    let file_state = ModelFile {
                        acked,
                        tracked: false,
                        writable,
                        handle: None,
                    };
                    assert!(
                        model.files.insert(*file, file_state).is_none(),
                        "file id reused"
                    );
                    opened.push(*file);
                    immediate = Some(Reply::Opened(*file));
                }
                actions
            }
            (
                Op::Read {
                    file,
                    len,
                    nonblocking,
                },
                Some(_),
            ) => {
                let file = pick(file).expect("opened");
                immediate = match model.files.get(&file) {
                    None => Some(Reply::Error(Errno::BadF)),
                    Some(_) if len == 0 => Some(Reply::Empty),
                    Some(_) if len < 4 => Some(Reply::Error(Errno::Inval)),
                    Some(_) if model.outdated(file) => Some(Reply::Generation(model.generation)),
                    Some(_) if nonblocking => Some(Reply::Error(Errno::Again)),
                    Some(_) => {
                        model.waiting.insert(request, (file, Waiting::Read));
                        None
                    }
                };
                driver.run(
                    Event::Read {
                        request,
                        file,
                        len,
                        nonblocking,
                    },
                    Persist::Ok,
                )
            }
            (
                Op::AckCurrent { file } | Op::WriteValue { file, .. } | Op::WriteLen { file, .. },
                Some(_),
            ) => {
                let file = pick(file).expect("opened");
                let data: Vec<u8> = match *op {
                    Op::WriteValue { value, .. } => value.to_ne_bytes().to_vec(),
                    Op::WriteLen { len, .. } => vec![0; len],
                    _ => model.generation.to_ne_bytes().to_vec(),
                };
                let generation = model.generation;
                immediate = Some(match model.files.get_mut(&file) {
                    None => Reply::Error(Errno::BadF),
                    Some(f) if !f.writable => Reply::Error(Errno::BadF),
                    Some(_) if data.len() != 4 => Reply::Error(Errno::NoBufs),
                    Some(_) if data[..] != generation.to_ne_bytes() => Reply::Error(Errno::Inval),
                    Some(f) => {
                        f.acked = generation;
                        Reply::Written(4)
                    }
                });
                driver.run(
                    Event::Write {
                        request,
                        file,
                        data: &data,
                    },
                    Persist::Ok,
                )
            }
            (Op::Poll { file, register }, Some(_)) => {
                let file = pick(file).expect("opened");
                let handle = register.then_some(file.0 + 1000);
                let generation = model.generation;
                immediate = Some(match model.files.get_mut(&file) {
                    None => Reply::Error(Errno::BadF),
                    Some(f) => {
                        if handle.is_some() {
                            f.handle = handle;
                        }
                        Reply::Poll(if f.acked != generation {
                            POLL_OUTDATED
                        } else {
                            0
                        })
                    }
                });
                let event = Event::Poll {
                    request,
                    file,
                    handle: handle.map(PollHandle),
                };
                driver.run(event, Persist::Ok)
            }
            (Op::Track { file, on }, Some(_)) => {
                let file = pick(file).expect("opened");
                immediate = Some(match model.files.get_mut(&file) {
                    None => Reply::Error(Errno::BadF),
                    // A read-only file can never acknowledge, so it may not be tracked.
                    Some(f) if on && !f.writable => Reply::Error(Errno::BadF),
                    Some(f) => {
                        f.tracked = on;
                        Reply::Done
                    }
                });
                let cmd = SYSGENID_SET_WATCHER_TRACKING;
                driver.run(
                    ioctl_event(now, request, file, cmd, u64::from(on), true),
                    Persist::Ok,
                )
            }
            (Op::Wait { file, timeout_ms }, Some(_)) => {
                waits.insert(request);
                let file = pick(file).expect("opened");
                if model.files.contains_key(&file) {
                    let deadline_ns = (timeout_ms != 0)
                        .then(|| model.now_ns + u128::from(timeout_ms) * 1_000_000);
                    model
                        .waiting
                        .insert(request, (file, Waiting::Wait { deadline_ns }));
                } else {
                    immediate = Some(Reply::Error(Errno::BadF));
                }
                let cmd = SYSGENID_WAIT_WATCHERS;
                driver.run(
                    ioctl_event(now, request, file, cmd, timeout_ms, true),
                    Persist::Ok,
                )
            }
            (
                Op::Trigger {
                    file,
                    min,
                    privileged,
                    persist,
                },
                Some(_),
            ) => {
                let file = pick(file).expect("opened");
                if !model.files.contains_key(&file) {
                    immediate = Some(Reply::Error(Errno::BadF));
                } else if !privileged {
                    immediate = Some(Reply::Error(Errno::Acces));
                } else if let Ok(min) = u32::try_from(min) {
                    model.waiting.insert(request, (file, Waiting::Trigger));
                    model.bumps.push_back(ModelBump {
                        min,
                        trigger: Some(request),
                        expect: None,
                        token: None,
                    });
                    model.start_bumps(persist, &mut expect.bumps);
                } else {
                    immediate = Some(Reply::Error(Errno::Inval));
                }
                let cmd = SYSGENID_TRIGGER_GEN_UPDATE;
                driver.run(
                    ioctl_event(now, request, file, cmd, min, privileged),
                    persist,
                )
            }
            (
                Op::TriggerIf {
                    delta,
                    min,
                    privileged,
                    persist,
                },
                Some(_),
            ) => {
                let expected = model.generation.wrapping_add_signed(delta);
                if privileged {
                    model.waiting.insert(request, (NO_FILE, Waiting::Trigger));
                    model.bumps.push_back(ModelBump {
                        min,
                        trigger: Some(request),
                        expect: Some(expected),
                        token: None,
                    });
                    model.start_bumps(persist, &mut expect.bumps);
                } else {
                    immediate = Some(Reply::Error(Errno::Acces));
                }
                let caller = Caller {
                    pid: TRIGGER_PID,
                    privileged,
                };
                let event = Event::TriggerIf {
                    request,
                    expect: expected,
                    min,
                    caller,
                };
                driver.run(event, persist)
            }
            (Op::HardwareBump { persist }, Some(_)) => {
                let token = BumpToken(request.0);
                model.bumps.push_back(ModelBump {
                    min: 0,
                    trigger: None,
                    expect: None,
                    token: Some(token),
                });
                model.start_bumps(persist, &mut expect.bumps);
                let event = Event::HardwareBump {
                    backend: BACKEND,
                    token,
                };
                driver.run(event, persist)
            }
            (Op::FinishPersist { ok }, Some(_)) => {
                if let Some(value) = driver.outstanding_persist.take() {
                    expect.finished_persist = Some(value);
                    model.end_first_bump(ok, &mut expect.bumps);
                    model.start_bumps(Persist::Defer, &mut expect.bumps);
                    let result = if ok {
                        Ok(id_of(value))
                    } else {
                        Err("injected".to_owned())
                    };
                    driver.run(Event::PersistDone { result }, Persist::Defer)
                } else {
                    assert!(
                        !model.persisting,
                        "the model awaits a persist the core never asked for"
                    );
                    Vec::new()
                }
            }
            (Op::UnknownIoctl { file, cmd }, Some(_)) => {
                let file = pick(file).expect("opened");
                let errno = if model.files.contains_key(&file) {
                    Errno::Inval
                } else {
                    Errno::BadF
                };
                immediate = Some(Reply::Error(errno));
                driver.run(ioctl_event(now, request, file, cmd, 1, true), Persist::Ok)
            }
            (Op::Close { file }, Some(_)) => {
                let file = pick(file).expect("opened");
                model.files.remove(&file);
                let orphans: Vec<RequestId> = model
                    .waiting
                    .iter()
                    .filter(|(_, (f, w))| *f == file && *w != Waiting::Trigger)
                    .map(|(r, _)| *r)
                    .collect();
                for r in orphans {
                    model.waiting.remove(&r);
                    expect.replies.insert(r, Reply::Error(Errno::BadF));
                }
                driver.run(Event::Release { file }, Persist::Ok)
            }
            (Op::Interrupt { request: i }, Some(_)) => {
                let target = issued
                    .get(i % issued.len().max(1))
                    .copied()
                    .unwrap_or(request);
                if let Some((_, Waiting::Read | Waiting::Wait { .. })) = model.waiting.get(&target)
                {
                    model.waiting.remove(&target);
                    expect.replies.insert(target, Reply::Error(Errno::Intr));
                }
                driver.run(Event::Interrupt { request: target }, Persist::Ok)
            }
            (Op::AdvanceMs { ms }, Some(_)) => {
                model.now_ns += u128::from(ms) * 1_000_000;
                driver.now = Time(driver.now.0 + ms * 1_000_000);
                let now = driver.now;
                driver.run(Event::Timeout { now }, Persist::Ok)
            }
            (Op::Handover, Some(_)) => {
                let bump_under_way = model.persisting || !model.bumps.is_empty();
                match driver.dev.state() {
                    Ok(state) => {
                        assert!(!bump_under_way, "a state taken with a bump under way");
                        let state = through_json(state);
                        driver.dev = Device::from_state(state.clone())
                            .expect("its own state")
                            .with_reads_answered_at_once(driver.reads_at_once);
                        assert_eq!(driver.dev.state(), Ok(state), "the state round-trips");
                    }
                    Err(e) => assert!(bump_under_way, "state refused: {e}"),
                }
                Vec::new()
            }
        };
        if let Some(reply) = immediate {
            expect.replies.insert(request, reply);
        }
        let bump_replies = std::mem::take(&mut expect.bumps.replies);
        expect.replies.extend(bump_replies);
        expect.replies.extend(model.settle());
        (actions, expect)
    }

    fn check_step(
        &mut self,
        step: usize,
        op: &Op,
        previous_generation: u32,
        actions: &[Action],
        expect: &Expect,
    ) -> Result<(), TestCaseError> {
        let model = &self.model;
        // The core answered exactly what the model expected, each request once ever.
        let mut got: BTreeMap<RequestId, Reply> = BTreeMap::new();
        for action in actions {
            if let Action::Reply { request, reply } = action {
                prop_assert!(
                    self.answered.insert(*request),
                    "step {step} {op:?}: {request:?} answered twice"
                );
                got.insert(*request, reply.clone());
            }
        }
        prop_assert_eq!(&got, &expect.replies, "step {} {:?}", step, op);

        // Facts recomputed from scratch.
        prop_assert!(model.generation >= previous_generation);
        prop_assert_eq!(self.driver.dev.generation(), model.generation);
        let status = self.driver.dev.status();
        prop_assert_eq!(
            status.generation,
            model.generation,
            "step {} {:?}",
            step,
            op
        );
        prop_assert_eq!(status.open_files, model.files.len());
        prop_assert_eq!(
            status.tracked,
            model.files.values().filter(|f| f.tracked).count()
        );
        prop_assert_eq!(
            status.outdated,
            model.outdated_tracked(),
            "step {} {:?}",
            step,
            op
        );
        for f in &status.files {
            let m = &model.files[&f.file];
            prop_assert_eq!(f.tracked, m.tracked);
            prop_assert_eq!(f.outdated, m.acked != model.generation);
        }
        let count =
            |kind: fn(&Waiting) -> bool| model.waiting.values().filter(|(_, w)| kind(w)).count();
        prop_assert_eq!(status.pending_reads, count(|w| *w == Waiting::Read));
        prop_assert_eq!(
            status.pending_waits,
            count(|w| matches!(w, Waiting::Wait { .. }))
        );
        prop_assert_eq!(status.bump_in_progress, !model.bumps.is_empty());
        let soonest = model
            .waiting
            .values()
            .filter_map(|(_, w)| match w {
                Waiting::Wait { deadline_ns } => deadline_ns.and_then(|d| u64::try_from(d).ok()),
                _ => None,
            })
            .min()
            .map(Time);
        prop_assert_eq!(
            self.driver.dev.poll_timeout(),
            soonest,
            "step {} {:?}: the soonest wait deadline",
            step,
            op
        );
        prop_assert_eq!(status.failed_bumps, model.failed_bumps);
        prop_assert_eq!(status.degraded, model.degraded);
        for (request, reply) in &got {
            if *reply == Reply::Done && self.waits.contains(request) {
                prop_assert_eq!(
                    model.outdated_tracked(),
                    0,
                    "step {} {:?}: a wait returned 0 while a tracked file is outdated",
                    step,
                    op
                );
            }
        }

        // Persists asked for, in order; a bump publishes once, right after its persist and
        // before every wake and reply.
        let persists: Vec<u32> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Persist(v) => Some(*v),
                _ => None,
            })
            .collect();
        prop_assert_eq!(&persists, &expect.bumps.persists, "step {} {:?}", step, op);
        let publishes: Vec<(usize, &Action)> = actions
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a, Action::Publish { .. }))
            .collect();
        match (&expect.bumps.published, publishes.as_slice()) {
            (None, []) => {}
            (Some((generation, source, token)), [(at, action)]) => {
                let want = Action::Publish {
                    generation: *generation,
                    id: id_of(*generation),
                    source: source.clone(),
                    token: *token,
                };
                prop_assert_eq!(*action, &want, "step {} {:?}", step, op);
                let persisted_first = matches!(
                    actions[..*at].iter().rev().find(|a| matches!(a, Action::Persist(_))),
                    Some(Action::Persist(v)) if v == generation
                ) || expect.finished_persist == Some(*generation);
                prop_assert!(
                    persisted_first,
                    "step {step} {op:?}: publish without its persist"
                );
                prop_assert!(
                    !actions[..*at]
                        .iter()
                        .any(|a| matches!(a, Action::WakePoll(_))),
                    "step {step} {op:?}: a wake came before the publish"
                );
                let early_reply = actions[..*at].iter().any(|a| {
                    matches!(a, Action::Reply { request, .. } if !matches!(expect.replies.get(request), Some(Reply::Error(_))))
                });
                prop_assert!(
                    !early_reply,
                    "step {step} {op:?}: a bump's reply came before the publish"
                );
            }
            (want, got) => prop_assert!(false, "step {step} {op:?}: publish {want:?}, got {got:?}"),
        }
        let woken: BTreeSet<u64> = actions
            .iter()
            .filter_map(|a| match a {
                Action::WakePoll(PollHandle(h)) => Some(*h),
                _ => None,
            })
            .collect();
        let want_woken: BTreeSet<u64> = match expect.bumps.published {
            Some(_) => model.files.values().filter_map(|f| f.handle).collect(),
            None => BTreeSet::new(),
        };
        prop_assert_eq!(woken, want_woken, "step {} {:?}", step, op);
        Ok(())
    }

    /// Finishes outstanding persists, closes every file, and checks that every request was
    /// answered exactly once.
    fn finish(mut self) -> Result<(), TestCaseError> {
        let mut extra = Vec::new();
        while let Some(value) = self.driver.outstanding_persist.take() {
            extra.extend(self.driver.run(
                Event::PersistDone {
                    result: Ok(id_of(value)),
                },
                Persist::Defer,
            ));
        }
        for file in self.opened.clone() {
            if self.model.files.remove(&file).is_some() {
                extra.extend(self.driver.run(Event::Release { file }, Persist::Ok));
            }
        }
        for action in extra {
            if let Action::Reply { request, .. } = action {
                prop_assert!(self.answered.insert(request), "{request:?} answered twice");
            }
        }
        for request in &self.issued {
            prop_assert!(
                self.answered.contains(request),
                "{request:?} never answered"
            );
        }
        let status = self.driver.dev.status();
        prop_assert_eq!((status.pending_reads, status.pending_waits), (0, 0));
        prop_assert!(!status.bump_in_progress);
        Ok(())
    }
}

fn ioctl_event(
    now: Time,
    request: RequestId,
    file: FileId,
    cmd: u32,
    arg: u64,
    privileged: bool,
) -> Event<'static> {
    let caller = Caller {
        pid: TRIGGER_PID,
        privileged,
    };
    Event::Ioctl {
        request,
        file,
        cmd,
        arg,
        caller,
        now,
    }
}

fn run_scenario(start: u32, reads_at_once: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut scenario = Scenario::new(start, reads_at_once);
    for (step, op) in ops.iter().enumerate() {
        let request = RequestId(step as u64 + 1);
        let previous_generation = scenario.model.generation;
        let (actions, expect) = scenario.apply(op, request);
        scenario.check_step(step, op, previous_generation, &actions, &expect)?;
    }
    scenario.finish()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn core_matches_the_reference_model(
        start in start_generation(),
        // Fewer than the default, so that woken reads also take the `WakeReaders` path.
        reads_at_once in prop_oneof![Just(0usize), Just(1), Just(READS_ANSWERED_AT_ONCE)],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run_scenario(start, reads_at_once, &ops)?;
    }
}
