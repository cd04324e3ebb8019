//! Fuzzes `sysgenid_core::Device` with arbitrary operation sequences, checking its invariants after every event.
#![no_main]

use std::collections::{BTreeSet, HashMap, HashSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sysgenid_abi::{Errno, Ioctl, encode_generation};
use sysgenid_core::{
    Action, BumpToken, Caller, Device, Event, FileId, GenerationId, PollHandle, Reply, RequestId,
    Time,
};

#[derive(Debug, Arbitrary)]
struct Input {
    start: u32,
    steps: Vec<Step>,
}

#[derive(Debug, Arbitrary)]
struct Step {
    op: Op,
    /// How to answer an `Action::Persist` this step causes.
    persist: PersistAnswer,
}

#[derive(Debug, Arbitrary)]
enum PersistAnswer {
    /// Leave it in flight until a later `Op::PersistDone`.
    Later,
    Ok,
    Err(String),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Open {
        pid: u32,
        writable: bool,
    },
    Read {
        file: FileRef,
        len: usize,
        nonblocking: bool,
    },
    Write {
        file: FileRef,
        data: WriteData,
    },
    Poll {
        file: FileRef,
        handle: Option<u64>,
    },
    Ioctl {
        file: FileRef,
        cmd: Cmd,
        arg: Arg,
        privileged: bool,
        pid: u32,
        now: u64,
    },
    Release {
        file: FileRef,
    },
    Interrupt {
        request: ReqRef,
    },
    Timeout {
        now: TimeRef,
    },
    /// A conditional trigger; `expect: None` expects the current generation.
    TriggerIf {
        expect: Option<u32>,
        min: u32,
        privileged: bool,
        pid: u32,
    },
    HardwareBump {
        backend: String,
        token: u64,
    },
    PersistDone {
        result: Result<(), String>,
    },
    /// The transport hands back `Action::WakeReaders`: the page shows in every mapping.
    PageShows,
}

/// An opened file by index (released ones included), or any id.
#[derive(Debug, Arbitrary)]
enum FileRef {
    Opened(u8),
    Raw(u64),
}

#[derive(Debug, Arbitrary)]
enum WriteData {
    /// The current generation: an acknowledgement that takes.
    Ack,
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Cmd {
    Known(u8),
    Raw(u32),
}

#[derive(Debug, Arbitrary)]
enum Arg {
    Small(u8),
    Raw(u64),
}

/// A request still unanswered, one issued earlier, or any id.
#[derive(Debug, Arbitrary)]
enum ReqRef {
    Outstanding(u8),
    Issued(u64),
    Raw(u64),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum TimeRef {
    /// Relative to the soonest wait deadline.
    Deadline(i16),
    Raw(u64),
}

#[derive(Default)]
struct Harness {
    next_request: u64,
    files: Vec<FileId>,
    /// Issued requests not answered yet.
    outstanding: BTreeSet<RequestId>,
    answered: HashSet<RequestId>,
    waits: HashSet<RequestId>,
    /// The file of every read issued, by request.
    reads: HashMap<RequestId, FileId>,
    /// `Action::WakeReaders` seen and not handed back yet.
    unhanded: usize,
    persist_in_flight: Option<u32>,
    generation: u32,
}

impl Harness {
    fn request(&mut self) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.outstanding.insert(id);
        id
    }

    fn file(&self, file: &FileRef) -> FileId {
        match *file {
            FileRef::Opened(i) if !self.files.is_empty() => {
                self.files[usize::from(i) % self.files.len()]
            }
            FileRef::Opened(i) => FileId(u64::from(i)),
            FileRef::Raw(id) => FileId(id),
        }
    }

    fn pick_request(&self, r: &ReqRef) -> RequestId {
        match *r {
            ReqRef::Outstanding(i) if !self.outstanding.is_empty() => *self
                .outstanding
                .iter()
                .nth(usize::from(i) % self.outstanding.len())
                .unwrap(),
            ReqRef::Outstanding(i) => RequestId(u64::from(i)),
            ReqRef::Issued(n) => RequestId(n % (self.next_request + 1)),
            ReqRef::Raw(n) => RequestId(n),
        }
    }

    /// Hands one event to the device, drains its actions and checks the invariants.
    fn step(&mut self, dev: &mut Device, event: Event<'_>, persist: &PersistAnswer) {
        dev.handle(event);
        let mut waits_done = false;
        while let Some(action) = dev.poll_action() {
            match action {
                Action::Reply { request, reply } => {
                    assert!(self.answered.insert(request), "{request:?} answered twice");
                    assert!(
                        self.outstanding.remove(&request),
                        "{request:?} never issued"
                    );
                    if self.waits.remove(&request) && reply == Reply::Done {
                        waits_done = true;
                    }
                    // A conditional trigger answers with the generation it left current.
                    if let Reply::Bumped(g) | Reply::Unchanged(g) = reply {
                        assert_eq!(g, dev.generation(), "{reply:?}");
                    }
                    if let Reply::Opened(file) = reply {
                        assert!(!self.files.contains(&file), "{file:?} opened twice");
                        self.files.push(file);
                    }
                }
                Action::Persist(target) => {
                    assert!(self.persist_in_flight.is_none(), "two persists in flight");
                    assert!(
                        target > dev.generation(),
                        "persist {target} not above current"
                    );
                    self.persist_in_flight = Some(target);
                }
                Action::Publish { generation, .. } => {
                    assert_eq!(self.persist_in_flight.take(), Some(generation));
                    assert_eq!(generation, dev.generation());
                }
                Action::BumpFailed { error, .. } => {
                    // An Io failure ends the persist in flight; an Overflow never had one.
                    let had = self.persist_in_flight.take().is_some();
                    assert_eq!(
                        had,
                        error == Errno::Io,
                        "{error:?} with persist in flight: {had}"
                    );
                }
                // Handed back whenever the input says so (`Op::PageShows`), or at the end.
                Action::WakeReaders => self.unhanded += 1,
                Action::WakePoll(_) => {}
            }
        }
        self.check(dev, waits_done);

        if self.persist_in_flight.is_some() {
            let result = match persist {
                PersistAnswer::Later => return,
                PersistAnswer::Ok => Ok(GenerationId([1; 16])),
                PersistAnswer::Err(detail) => Err(detail.clone()),
            };
            self.step(dev, Event::PersistDone { result }, persist);
        }
    }

    fn check(&mut self, dev: &Device, waits_done: bool) {
        let status = dev.status();
        assert_eq!(status.generation, dev.generation());
        assert!(status.generation >= self.generation, "generation decreased");
        self.generation = status.generation;
        let tracked = status.files.iter().filter(|f| f.tracked).count();
        let outdated = status
            .files
            .iter()
            .filter(|f| f.tracked && f.outdated)
            .count();
        assert_eq!(status.tracked, tracked);
        assert_eq!(status.outdated, outdated);
        assert_eq!(status.open_files, status.files.len());
        assert!(status.pending_reads + status.pending_waits <= self.outstanding.len());
        assert_eq!(status.bump_in_progress, self.persist_in_flight.is_some());
        if waits_done {
            assert_eq!(
                status.outdated, 0,
                "WAIT_WATCHERS done while watchers outdated"
            );
        }
        // Once every bump's page shows, no read sleeps on an outdated file: a bump woke it.
        if self.unhanded == 0 {
            let outdated: HashSet<FileId> = status
                .files
                .iter()
                .filter(|f| f.outdated)
                .map(|f| f.file)
                .collect();
            for (request, file) in &self.reads {
                assert!(
                    !self.outstanding.contains(request) || !outdated.contains(file),
                    "{request:?} asleep on outdated {file:?}"
                );
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let mut dev = Device::new(input.start);
    let mut h = Harness {
        generation: input.start,
        ..Harness::default()
    };
    for Step { op, persist } in &input.steps {
        let ack = encode_generation(dev.generation());
        let event = match op {
            Op::Open { pid, writable } => Event::Open {
                request: h.request(),
                pid: *pid,
                writable: *writable,
            },
            Op::Read {
                file,
                len,
                nonblocking,
            } => {
                let (request, file) = (h.request(), h.file(file));
                h.reads.insert(request, file);
                Event::Read {
                    request,
                    file,
                    len: *len,
                    nonblocking: *nonblocking,
                }
            }
            Op::Write { file, data } => Event::Write {
                request: h.request(),
                file: h.file(file),
                data: match data {
                    WriteData::Ack => &ack[..],
                    WriteData::Bytes(bytes) => &bytes[..],
                },
            },
            Op::Poll { file, handle } => Event::Poll {
                request: h.request(),
                file: h.file(file),
                handle: handle.map(PollHandle),
            },
            Op::Ioctl {
                file,
                cmd,
                arg,
                privileged,
                pid,
                now,
            } => {
                let cmd = match *cmd {
                    Cmd::Known(i) => Ioctl::ALL[usize::from(i) % Ioctl::ALL.len()].cmd(),
                    Cmd::Raw(c) => c,
                };
                let request = h.request();
                if Ioctl::from_cmd(cmd) == Some(Ioctl::WaitWatchers) {
                    h.waits.insert(request);
                }
                Event::Ioctl {
                    request,
                    file: h.file(file),
                    cmd,
                    arg: match *arg {
                        Arg::Small(a) => u64::from(a),
                        Arg::Raw(a) => a,
                    },
                    caller: Caller {
                        pid: *pid,
                        privileged: *privileged,
                    },
                    now: Time(*now),
                }
            }
            Op::Release { file } => Event::Release { file: h.file(file) },
            Op::Interrupt { request } => Event::Interrupt {
                request: h.pick_request(request),
            },
            Op::Timeout { now } => match (*now, dev.poll_timeout()) {
                (TimeRef::Deadline(delta), Some(deadline)) => Event::Timeout {
                    now: Time(deadline.0.saturating_add_signed(i64::from(delta))),
                },
                (TimeRef::Deadline(delta), None) => Event::Timeout {
                    now: Time(delta as u64),
                },
                (TimeRef::Raw(now), _) => Event::Timeout { now: Time(now) },
            },
            Op::TriggerIf {
                expect,
                min,
                privileged,
                pid,
            } => Event::TriggerIf {
                request: h.request(),
                expect: expect.unwrap_or(dev.generation()),
                min: *min,
                caller: Caller {
                    pid: *pid,
                    privileged: *privileged,
                },
            },
            Op::HardwareBump { backend, token } => Event::HardwareBump {
                backend,
                token: BumpToken(*token),
            },
            Op::PersistDone { result } => Event::PersistDone {
                result: result.clone().map(|()| GenerationId([2; 16])),
            },
            Op::PageShows => {
                h.unhanded = h.unhanded.saturating_sub(1);
                Event::WakeReaders
            }
        };
        h.step(&mut dev, event, persist);
    }

    // Wind down: finish every bump and close every file; then every request has its answer.
    while h.persist_in_flight.is_some() {
        h.step(
            &mut dev,
            Event::PersistDone {
                result: Ok(GenerationId([3; 16])),
            },
            &PersistAnswer::Later,
        );
    }
    while h.unhanded > 0 {
        h.unhanded -= 1;
        h.step(&mut dev, Event::WakeReaders, &PersistAnswer::Ok);
    }
    for file in h.files.clone() {
        h.step(&mut dev, Event::Release { file }, &PersistAnswer::Ok);
    }
    assert!(
        h.outstanding.is_empty(),
        "never answered: {:?}",
        h.outstanding
    );
    assert_eq!(dev.status().open_files, 0);
});
