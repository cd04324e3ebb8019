//! Random event sequences against a small reference model that recomputes every fact from scratch.
//!
//! The model shares no code with the core. It keeps only the generation, each file's
//! acknowledged value and tracking flag, and the requests left unanswered; after every step it
//! decides afresh which unanswered requests are now due. The test checks, after every step,
//! that the core answered exactly those, with exactly the model's replies, and that every fact
//! the core reports matches the model.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sysgenid_abi::{
    Errno, POLL_OUTDATED, SYSGENID_SET_WATCHER_TRACKING, SYSGENID_TRIGGER_GEN_UPDATE,
    SYSGENID_WAIT_WATCHERS,
};
use sysgenid_core::{Action, Caller, Device, Event, FileId, PollHandle, Reply, RequestId, Time};

/// One step of a scenario. Indices pick among files or requests seen so far.
#[derive(Debug, Clone)]
enum Op {
    Open,
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
        persist_ok: bool,
    },
    HardwareBump {
        persist_ok: bool,
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
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0usize..8;
    prop_oneof![
        3 => Just(Op::Open),
        3 => (file.clone(), prop_oneof![Just(0usize), 1usize..4, Just(4), Just(4096)], any::<bool>())
            .prop_map(|(file, len, nonblocking)| Op::Read { file, len, nonblocking }),
        4 => file.clone().prop_map(|file| Op::AckCurrent { file }),
        1 => (file.clone(), prop_oneof![0u32..4, Just(u32::MAX)])
            .prop_map(|(file, value)| Op::WriteValue { file, value }),
        1 => (file.clone(), prop_oneof![Just(0usize), Just(3), Just(5), Just(4096)])
            .prop_map(|(file, len)| Op::WriteLen { file, len }),
        2 => (file.clone(), any::<bool>()).prop_map(|(file, register)| Op::Poll { file, register }),
        3 => (file.clone(), any::<bool>()).prop_map(|(file, on)| Op::Track { file, on }),
        3 => (file.clone(), prop_oneof![Just(0u64), 1u64..50, Just(u64::MAX), Just(1u64 << 44)])
            .prop_map(|(file, timeout_ms)| Op::Wait { file, timeout_ms }),
        3 => (
            file.clone(),
            prop_oneof![
                0u64..12,
                Just(u64::from(u32::MAX)),
                Just(0x8000_0000u64),
                Just(1u64 << 32),
                Just(u64::MAX)
            ],
            prop::bool::weighted(0.85),
            prop::bool::weighted(0.85)
        )
            .prop_map(|(file, min, privileged, persist_ok)| Op::Trigger {
                file,
                min,
                privileged,
                persist_ok
            }),
        3 => prop::bool::weighted(0.85).prop_map(|persist_ok| Op::HardwareBump { persist_ok }),
        1 => (file.clone(), prop_oneof![Just(0u32), Just(0xE404), Just(0x541B)])
            .prop_map(|(file, cmd)| Op::UnknownIoctl { file, cmd }),
        2 => file.clone().prop_map(|file| Op::Close { file }),
        2 => (0usize..64).prop_map(|request| Op::Interrupt { request }),
        2 => prop_oneof![1u64..30, Just(100)].prop_map(|ms| Op::AdvanceMs { ms }),
    ]
}

fn start_generation() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..1000, (u32::MAX - 3)..=u32::MAX]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Read,
    Wait { deadline_ns: Option<u128> },
}

#[derive(Debug)]
struct ModelFile {
    acked: u32,
    tracked: bool,
    handle: Option<u64>,
}

/// The reference model: the rules of the spec, written as plainly as possible.
#[derive(Debug)]
struct Model {
    generation: u32,
    files: BTreeMap<FileId, ModelFile>,
    waiting: BTreeMap<RequestId, (FileId, Waiting)>,
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

    /// Which waiting requests are due now, and with what, decided from scratch.
    fn settle(&mut self) -> BTreeMap<RequestId, Reply> {
        let mut due = BTreeMap::new();
        for (&request, &(file, waiting)) in &self.waiting {
            let reply = match waiting {
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

    /// Applies a bump as the spec says; `Err` is the errno of a failed bump.
    fn bump(&mut self, min: u32, persist_ok: bool) -> Result<(), Errno> {
        if self.generation == u32::MAX {
            return Err(Errno::Overflow);
        }
        if !persist_ok {
            return Err(Errno::Io);
        }
        self.generation = std::cmp::max(min, self.generation + 1);
        Ok(())
    }
}

/// Runs the core with real timers kept in a map, and answers each persist as told.
struct Driver {
    dev: Device,
    timers: BTreeMap<RequestId, Time>,
    now: Time,
}

impl Driver {
    fn run(&mut self, event: Event<'_>, persist_ok: bool) -> Vec<Action> {
        self.dev.handle(event);
        let mut actions = Vec::new();
        while let Some(action) = self.dev.poll_action() {
            match &action {
                Action::Persist(_) => {
                    let result = if persist_ok {
                        Ok(())
                    } else {
                        Err("injected".to_owned())
                    };
                    actions.push(action);
                    self.dev.handle(Event::PersistDone { result });
                    continue;
                }
                Action::ArmTimer { request, deadline } => {
                    self.timers.insert(*request, *deadline);
                }
                Action::CancelTimer { request } => {
                    self.timers.remove(request);
                }
                _ => {}
            }
            actions.push(action);
        }
        actions
    }
}

fn run_scenario(start: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut driver = Driver {
        dev: Device::new(start),
        timers: BTreeMap::new(),
        now: Time(1_000_000),
    };
    let mut model = Model {
        generation: start,
        files: BTreeMap::new(),
        waiting: BTreeMap::new(),
        now_ns: 1_000_000,
    };
    let mut opened: Vec<FileId> = Vec::new();
    let mut issued: Vec<RequestId> = Vec::new();
    let mut answered: BTreeSet<RequestId> = BTreeSet::new();
    let root = |privileged| Caller {
        pid: 10,
        privileged,
    };

    for (step, op) in ops.iter().enumerate() {
        let request = RequestId(step as u64 + 1);
        let previous_generation = model.generation;
        let pick = |i: usize| opened.get(i % opened.len().max(1)).copied();
        // What the model says this step answers at once, and whether a bump is published.
        let mut immediate: Option<Reply> = None;
        let mut published = false;
        let mut issued_request = true;
        let actions = match (op, pick(0)) {
            (Op::Open, _) | (_, None) => {
                let actions = driver.run(Event::Open { request, pid: 1 }, true);
                let Some(Action::Reply {
                    reply: Reply::Opened(file),
                    ..
                }) = actions.first()
                else {
                    return Err(TestCaseError::fail(format!("open gave {actions:?}")));
                };
                prop_assert!(!model.files.contains_key(file), "file id reused");
                model.files.insert(
                    *file,
                    ModelFile {
                        acked: model.generation,
                        tracked: false,
                        handle: None,
                    },
                );
                opened.push(*file);
                immediate = Some(Reply::Opened(*file));
                actions
            }
            (op, Some(_)) => {
                let file_of = |i: usize| pick(i).expect("some file was opened");
                match *op {
                    Op::Open => unreachable!(),
                    Op::Read {
                        file,
                        len,
                        nonblocking,
                    } => {
                        let file = file_of(file);
                        immediate = match model.files.get(&file) {
                            None => Some(Reply::Error(Errno::BadF)),
                            Some(_) if len == 0 => Some(Reply::Empty),
                            Some(_) if len < 4 => Some(Reply::Error(Errno::Inval)),
                            Some(_) if model.outdated(file) => {
                                Some(Reply::Generation(model.generation))
                            }
                            Some(_) if nonblocking => Some(Reply::Error(Errno::Again)),
                            Some(_) => {
                                model.waiting.insert(request, (file, Waiting::Read));
                                None
                            }
                        };
                        let event = Event::Read {
                            request,
                            file,
                            len,
                            nonblocking,
                        };
                        driver.run(event, true)
                    }
                    Op::AckCurrent { file }
                    | Op::WriteValue { file, .. }
                    | Op::WriteLen { file, .. } => {
                        let file = file_of(file);
                        let data: Vec<u8> = match *op {
                            Op::AckCurrent { .. } => model.generation.to_ne_bytes().to_vec(),
                            Op::WriteValue { value, .. } => value.to_ne_bytes().to_vec(),
                            Op::WriteLen { len, .. } => vec![0; len],
                            _ => unreachable!(),
                        };
                        let generation = model.generation;
                        immediate = Some(match model.files.get_mut(&file) {
                            None => Reply::Error(Errno::BadF),
                            Some(_) if data.len() != 4 => Reply::Error(Errno::NoBufs),
                            Some(_) if data[..] != generation.to_ne_bytes() => {
                                Reply::Error(Errno::Inval)
                            }
                            Some(f) => {
                                f.acked = generation;
                                Reply::Written(4)
                            }
                        });
                        let event = Event::Write {
                            request,
                            file,
                            data: &data,
                        };
                        driver.run(event, true)
                    }
                    Op::Poll { file, register } => {
                        let file = file_of(file);
                        let handle = register.then_some(file.0 + 1000);
                        immediate = Some(match model.files.get_mut(&file) {
                            None => Reply::Error(Errno::BadF),
                            Some(f) => {
                                if handle.is_some() {
                                    f.handle = handle;
                                }
                                let outdated = f.acked != model.generation;
                                Reply::Poll(if outdated { POLL_OUTDATED } else { 0 })
                            }
                        });
                        let event = Event::Poll {
                            request,
                            file,
                            handle: handle.map(PollHandle),
                        };
                        driver.run(event, true)
                    }
                    Op::Track { file, on } => {
                        let file = file_of(file);
                        immediate = Some(match model.files.get_mut(&file) {
                            None => Reply::Error(Errno::BadF),
                            Some(f) => {
                                f.tracked = on;
                                Reply::Done
                            }
                        });
                        let event = ioctl(
                            request,
                            file,
                            SYSGENID_SET_WATCHER_TRACKING,
                            u64::from(on),
                            root(true),
                            driver.now,
                        );
                        driver.run(event, true)
                    }
                    Op::Wait { file, timeout_ms } => {
                        let file = file_of(file);
                        if model.files.contains_key(&file) {
                            let deadline_ns = (timeout_ms != 0)
                                .then(|| model.now_ns + u128::from(timeout_ms) * 1_000_000);
                            model
                                .waiting
                                .insert(request, (file, Waiting::Wait { deadline_ns }));
                        } else {
                            immediate = Some(Reply::Error(Errno::BadF));
                        }
                        let event = ioctl(
                            request,
                            file,
                            SYSGENID_WAIT_WATCHERS,
                            timeout_ms,
                            root(true),
                            driver.now,
                        );
                        driver.run(event, true)
                    }
                    Op::Trigger {
                        file,
                        min,
                        privileged,
                        persist_ok,
                    } => {
                        let file = file_of(file);
                        immediate = Some(if !model.files.contains_key(&file) {
                            Reply::Error(Errno::BadF)
                        } else if !privileged {
                            Reply::Error(Errno::Acces)
                        } else if min > u64::from(u32::MAX) {
                            Reply::Error(Errno::Inval)
                        } else {
                            match model.bump(min as u32, persist_ok) {
                                Ok(()) => {
                                    published = true;
                                    Reply::Done
                                }
                                Err(e) => Reply::Error(e),
                            }
                        });
                        let event = ioctl(
                            request,
                            file,
                            SYSGENID_TRIGGER_GEN_UPDATE,
                            min,
                            root(privileged),
                            driver.now,
                        );
                        driver.run(event, persist_ok)
                    }
                    Op::HardwareBump { persist_ok } => {
                        issued_request = false;
                        published = model.bump(0, persist_ok).is_ok();
                        driver.run(Event::HardwareBump { backend: "hw" }, persist_ok)
                    }
                    Op::UnknownIoctl { file, cmd } => {
                        let file = file_of(file);
                        immediate = Some(if model.files.contains_key(&file) {
                            Reply::Error(Errno::Inval)
                        } else {
                            Reply::Error(Errno::BadF)
                        });
                        driver.run(ioctl(request, file, cmd, 1, root(true), driver.now), true)
                    }
                    Op::Close { file } => {
                        issued_request = false;
                        let file = file_of(file);
                        model.files.remove(&file);
                        driver.run(Event::Release { file }, true)
                    }
                    Op::Interrupt { request: i } => {
                        issued_request = false;
                        let target = issued
                            .get(i % issued.len().max(1))
                            .copied()
                            .unwrap_or(request);
                        driver.run(Event::Interrupt { request: target }, true)
                    }
                    Op::AdvanceMs { ms } => {
                        issued_request = false;
                        model.now_ns += u128::from(ms) * 1_000_000;
                        driver.now = Time(driver.now.0 + ms * 1_000_000);
                        let now = driver.now;
                        let due: Vec<RequestId> = driver
                            .timers
                            .iter()
                            .filter(|(_, d)| **d <= now)
                            .map(|(r, _)| *r)
                            .collect();
                        let mut actions = Vec::new();
                        for r in due {
                            driver.timers.remove(&r);
                            actions
                                .extend(driver.run(Event::TimerExpired { request: r, now }, true));
                        }
                        actions
                    }
                }
            }
        };
        if issued_request {
            issued.push(request);
        }

        // What the model expects this step to answer: the immediate reply, plus whatever is due.
        let mut expected: BTreeMap<RequestId, Reply> = BTreeMap::new();
        match op {
            Op::Interrupt { request: i } => {
                let target = issued.get(i % issued.len().max(1)).copied();
                if let Some(target) = target
                    && model.waiting.remove(&target).is_some()
                {
                    expected.insert(target, Reply::Error(Errno::Intr));
                }
            }
            Op::Close { .. } => {
                let gone: Vec<RequestId> = model
                    .waiting
                    .iter()
                    .filter(|(_, (f, _))| !model.files.contains_key(f))
                    .map(|(r, _)| *r)
                    .collect();
                for r in gone {
                    model.waiting.remove(&r);
                    expected.insert(r, Reply::Error(Errno::BadF));
                }
            }
            _ => {}
        }
        if let Some(reply) = immediate {
            expected.insert(request, reply);
        }
        expected.extend(model.settle());

        // The core answered exactly what the model expected, each request once ever.
        let mut got: BTreeMap<RequestId, Reply> = BTreeMap::new();
        for action in &actions {
            if let Action::Reply { request, reply } = action {
                prop_assert!(
                    answered.insert(*request),
                    "step {step} {op:?}: {request:?} answered twice"
                );
                got.insert(*request, reply.clone());
            }
        }
        prop_assert_eq!(&got, &expected, "step {} {:?}", step, op);

        // Facts recomputed from scratch.
        prop_assert!(model.generation >= previous_generation);
        prop_assert_eq!(driver.dev.generation(), model.generation);
        let status = driver.dev.status();
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
        let model_reads = model
            .waiting
            .values()
            .filter(|(_, w)| *w == Waiting::Read)
            .count();
        prop_assert_eq!(status.pending_reads, model_reads);
        prop_assert_eq!(status.pending_waits, model.waiting.len() - model_reads);
        if got.values().any(|r| *r == Reply::Done) && model.outdated_tracked() > 0 {
            for (r, reply) in &got {
                if *reply == Reply::Done {
                    prop_assert!(
                        !model.waiting.contains_key(r),
                        "a wait completed with 0 while a tracked file is outdated"
                    );
                }
            }
        }

        // A bump publishes once, after its persist and before every wake and reply.
        let publish_at = actions
            .iter()
            .position(|a| matches!(a, Action::Publish { .. }));
        prop_assert_eq!(publish_at.is_some(), published, "step {} {:?}", step, op);
        if let Some(at) = publish_at {
            prop_assert_eq!(
                actions.get(at),
                Some(&Action::Publish {
                    generation: model.generation,
                    source: match op {
                        Op::HardwareBump { .. } => sysgenid_core::BumpSource::Backend("hw".into()),
                        _ => sysgenid_core::BumpSource::Trigger { pid: 10 },
                    }
                })
            );
            prop_assert!(
                matches!(actions.get(at.wrapping_sub(1)), Some(Action::Persist(g)) if *g == model.generation)
            );
            prop_assert!(
                !actions[..at]
                    .iter()
                    .any(|a| matches!(a, Action::Reply { .. } | Action::WakePoll(_))),
                "a wake or reply came before the publish"
            );
        }
        let woken: BTreeSet<u64> = actions
            .iter()
            .filter_map(|a| match a {
                Action::WakePoll(PollHandle(h)) => Some(*h),
                _ => None,
            })
            .collect();
        let want_woken: BTreeSet<u64> = if published {
            model.files.values().filter_map(|f| f.handle).collect()
        } else {
            BTreeSet::new()
        };
        prop_assert_eq!(woken, want_woken, "step {} {:?}", step, op);
    }

    // Closing everything answers every request that was left waiting.
    for file in opened {
        if model.files.remove(&file).is_some() {
            for action in driver.run(Event::Release { file }, true) {
                if let Action::Reply { request, .. } = action {
                    prop_assert!(answered.insert(request), "{request:?} answered twice");
                }
            }
        }
    }
    for request in &issued {
        prop_assert!(answered.contains(request), "{request:?} never answered");
    }
    let status = driver.dev.status();
    prop_assert_eq!((status.pending_reads, status.pending_waits), (0, 0));
    Ok(())
}

fn ioctl(
    request: RequestId,
    file: FileId,
    cmd: u32,
    arg: u64,
    caller: Caller,
    now: Time,
) -> Event<'static> {
    Event::Ioctl {
        request,
        file,
        cmd,
        arg,
        caller,
        now,
    }
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
    fn core_matches_the_reference_model(start in start_generation(), ops in prop::collection::vec(op(), 1..60)) {
        run_scenario(start, &ops)?;
    }
}
