//! Test doubles for the loop's side effects, and FUSE request bytes built from the wire structs.
//!
//! Every fake writes what it was asked to do into one shared [`Journal`], so a test sees the
//! order of effects across the kernel, the state file, the page and the service manager.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sysgenid_core::{Device, GenerationId, Time};
use sysgenid_fuse::wire::{self, Wire};

use crate::control::DaemonFacts;
use crate::dispatch::Dispatcher;
use crate::effects::{
    Clock, DeviceStore, Effects, Kernel, Persist, Persisting, SessionStore, StoreJob, Storing,
    Supervisor, TriggerJudge,
};
use crate::fuse_adapter::{FileAttributes, FuseAdapter};
use crate::inbox::Completion;

/// The pid every test request comes from.
pub const PID: u32 = 4242;

/// The ID the fake persist draws for `generation`: known, and different for each generation.
pub fn id_of(generation: u32) -> GenerationId {
    GenerationId::from_words([generation, !generation, 0xfa4e, generation ^ 0x5a5a])
}

/// One side effect, as a fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A message to the kernel.
    Sent(Vec<u8>),
    /// A persist of this generation (whether or not it failed).
    Persisted(u32),
    /// A store into the page file, after a persist that succeeded at once.
    PageStored(u32),
    /// The service manager was told the daemon is ready.
    Ready(String),
    /// The service manager was told a status.
    Status(String),
}

/// The effects seen so far, shared by every fake of one dispatcher.
#[derive(Debug, Clone, Default)]
pub struct Journal(Rc<RefCell<Vec<Effect>>>);

impl Journal {
    fn push(&self, effect: Effect) {
        self.0.borrow_mut().push(effect);
    }

    /// Takes every effect seen since the last call.
    pub fn take(&self) -> Vec<Effect> {
        std::mem::take(&mut self.0.borrow_mut())
    }

    /// Takes every effect and keeps the messages sent to the kernel.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.take()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Sent(m) => Some(m),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug)]
struct FakeKernel(Journal);

impl Kernel for FakeKernel {
    fn send(&mut self, message: &[u8]) {
        self.0.push(Effect::Sent(message.to_vec()));
    }
}

#[derive(Debug)]
struct FakeState {
    journal: Journal,
    fail: Rc<Cell<bool>>,
    defer: Rc<Cell<bool>>,
}

impl Persist for FakeState {
    fn persist(&mut self, generation: u32) -> Persisting {
        self.journal.push(Effect::Persisted(generation));
        if self.defer.get() {
            Persisting::Started
        } else if self.fail.get() {
            Persisting::Done(Err("disk full".to_owned()))
        } else {
            self.journal.push(Effect::PageStored(generation));
            Persisting::Done(Ok(id_of(generation)))
        }
    }
}

/// Device page stores go into the journal as messages sent, like every other write to the
/// kernel; with `defer` set each stays in flight, its kernel sends unsent, until the test calls
/// [`Rig::store_written`].
#[derive(Debug)]
struct FakeDeviceStore {
    journal: Journal,
    defer: Rc<Cell<bool>>,
    in_flight: StoresInFlight,
    progress: StoreProgress,
}

/// Deferred stores written so far, and whether the dispatcher last asked to be woken.
type StoreProgress = Rc<(Cell<u64>, Cell<bool>)>;

/// The kernel sends of each deferred store, oldest first.
type StoresInFlight = Rc<RefCell<VecDeque<Vec<Vec<u8>>>>>;

impl DeviceStore for FakeDeviceStore {
    fn store(&mut self, job: StoreJob) -> Storing {
        for message in job.page {
            self.journal.push(Effect::Sent(message));
        }
        if self.defer.get() {
            self.in_flight.borrow_mut().push_back(job.then);
            return Storing::Started;
        }
        for message in job.then {
            self.journal.push(Effect::Sent(message));
        }
        Storing::Done
    }

    fn written(&self, wake_me: bool) -> u64 {
        self.progress.1.set(wake_me);
        self.progress.0.get()
    }
}

/// What the fake session saw at each record: how many effects the journal held by then, and
/// the files and requests that changed.
pub type SessionLog = Rc<RefCell<Vec<(usize, sysgenid_core::Changes)>>>;

#[derive(Debug)]
struct FakeSession {
    journal: Journal,
    log: SessionLog,
}

impl SessionStore for FakeSession {
    fn record(
        &mut self,
        _device: &Device,
        changes: &sysgenid_core::Changes,
        _fuse: Option<sysgenid_fuse::Negotiated>,
    ) {
        if !changes.files.is_empty() || !changes.requests.is_empty() {
            let seen = self.journal.0.borrow().len();
            self.log.borrow_mut().push((seen, changes.clone()));
        }
    }
}

/// A clock that reads what the test set.
#[derive(Debug)]
pub struct FakeClock(pub Rc<Cell<u64>>);

impl Clock for FakeClock {
    fn now(&self) -> Time {
        Time(self.0.get())
    }
}

/// A trigger policy that says the same of every caller.
#[derive(Debug)]
pub struct FakeJudge(pub bool);

impl TriggerJudge for FakeJudge {
    fn may_trigger(&self, _pid: u32) -> bool {
        self.0
    }
}

#[derive(Debug)]
struct FakeSupervisor(Journal);

impl Supervisor for FakeSupervisor {
    fn ready(&mut self, status: &str) {
        self.0.push(Effect::Ready(status.to_owned()));
    }

    fn status(&mut self, status: &str) {
        self.0.push(Effect::Status(status.to_owned()));
    }
}

/// A dispatcher on fakes, with handles to steer and watch them.
#[derive(Debug)]
pub struct Rig {
    /// The dispatcher under test.
    pub dispatcher: Dispatcher,
    /// What it did.
    pub journal: Journal,
    /// Set to make every persist fail.
    pub persist_fails: Rc<Cell<bool>>,
    /// Set to leave every persist in flight until the test sends `Message::Persisted`.
    pub persist_deferred: Rc<Cell<bool>>,
    /// Set to leave every device page store in flight until the test calls
    /// [`Rig::store_written`].
    pub store_deferred: Rc<Cell<bool>>,
    /// The kernel sends of deferred device page stores.
    stores_in_flight: StoresInFlight,
    store_progress: StoreProgress,
    /// The fake clock, in nanoseconds.
    pub clock: Rc<Cell<u64>>,
    /// What the session was told, and when.
    pub session: SessionLog,
}

/// A dispatcher at `generation` whose trigger callers are privileged.
pub fn rig(generation: u32) -> Rig {
    rig_with(generation, true)
}

/// A dispatcher at `generation`; `privileged` is what the trigger policy says of every caller.
pub fn rig_with(generation: u32, privileged: bool) -> Rig {
    let journal = Journal::default();
    let persist_fails = Rc::new(Cell::new(false));
    let persist_deferred = Rc::new(Cell::new(false));
    let store_deferred = Rc::new(Cell::new(false));
    let stores_in_flight = StoresInFlight::default();
    let store_progress = StoreProgress::default();
    let clock = Rc::new(Cell::new(1_000_000_000));
    let session = SessionLog::default();
    let effects = Effects {
        kernel: Box::new(FakeKernel(journal.clone())),
        state: Box::new(FakeState {
            journal: journal.clone(),
            fail: Rc::clone(&persist_fails),
            defer: Rc::clone(&persist_deferred),
        }),
        device_page: Box::new(FakeDeviceStore {
            journal: journal.clone(),
            defer: Rc::clone(&store_deferred),
            in_flight: Rc::clone(&stores_in_flight),
            progress: Rc::clone(&store_progress),
        }),
        session: Box::new(FakeSession {
            journal: journal.clone(),
            log: Rc::clone(&session),
        }),
        clock: Box::new(FakeClock(Rc::clone(&clock))),
        judge: Box::new(FakeJudge(privileged)),
        supervisor: Box::new(FakeSupervisor(journal.clone())),
    };
    let dispatcher = Dispatcher::new(
        Device::new(generation).with_generation_id(id_of(generation)),
        FuseAdapter::new(attributes(), true),
        effects,
        facts(),
        std::time::Duration::from_secs(2),
    );
    Rig {
        dispatcher,
        journal,
        persist_fails,
        persist_deferred,
        store_deferred,
        stores_in_flight,
        store_progress,
        clock,
        session,
    }
}

impl Rig {
    /// How many kernel sends each deferred device page store carries, oldest first.
    pub fn sends_in_flight(&self) -> Vec<usize> {
        self.stores_in_flight
            .borrow()
            .iter()
            .map(Vec::len)
            .collect()
    }

    /// The oldest deferred device page store is written: its kernel sends go out and it is
    /// counted, as by the daemon's store thread; then the loop looks, as before it sleeps.
    pub fn store_written(&mut self) {
        let then = self
            .stores_in_flight
            .borrow_mut()
            .pop_front()
            .expect("a device page store in flight");
        for message in then {
            self.journal.push(Effect::Sent(message));
        }
        let written = &self.store_progress.0;
        written.set(written.get() + 1);
        self.dispatcher.catch_up_with_stores(false);
    }

    /// Whether the loop, about to sleep (`handover` says whether a handover waits), would ask
    /// the page-store thread to wake it.
    pub fn asks_for_a_wake(&mut self, handover: bool) -> bool {
        assert!(
            !self.dispatcher.catch_up_with_stores(handover),
            "no store news"
        );
        self.store_progress.1.get()
    }
}

/// The attributes every fake device has.
pub fn attributes() -> FileAttributes {
    FileAttributes {
        mode: 0o644,
        uid: 7,
        gid: 8,
        started: std::time::Duration::new(1_700_000_000, 5),
    }
}

fn facts() -> DaemonFacts {
    DaemonFacts {
        pid: 1,
        device: PathBuf::from("/dev/sysgenid"),
        state_dir: PathBuf::from("/run/sysgenid"),
        device_mmap: false,
        serving: false,
        backends: Vec::new(),
        serving_pid: Some(1),
        restarts: None,
    }
}

/// A completion that raises a flag when it runs.
pub fn flag() -> (Completion, Arc<AtomicBool>) {
    let ran = Arc::new(AtomicBool::new(false));
    let raise = Arc::clone(&ran);
    (
        Completion::then(move || raise.store(true, Ordering::SeqCst)),
        ran,
    )
}

/// Whether a flag from [`flag`] is up.
pub fn raised(flag: &AtomicBool) -> bool {
    flag.load(Ordering::SeqCst)
}

/// A request: a header with the right length, then `body`.
pub fn request(opcode: u32, unique: u64, body: &[u8]) -> Vec<u8> {
    let mut out = wire::InHeader {
        len: u32::try_from(wire::InHeader::SIZE + body.len()).unwrap(),
        opcode,
        unique,
        nodeid: wire::FUSE_ROOT_ID,
        uid: 1000,
        gid: 1000,
        pid: PID,
        total_extlen: 0,
        padding: 0,
    }
    .to_bytes();
    out.extend_from_slice(body);
    out
}

/// INIT from a 7.39 kernel that offers mappings of direct-io files.
pub fn init(unique: u64) -> Vec<u8> {
    let mut body = wire::InitIn {
        major: 7,
        minor: 39,
        max_readahead: 4096,
        flags: wire::FUSE_INIT_EXT as u32,
    }
    .to_bytes();
    body.extend_from_slice(&((wire::FUSE_DIRECT_IO_ALLOW_MMAP >> 32) as u32).to_ne_bytes());
    request(wire::FUSE_INIT, unique, &body)
}

/// OPEN with these `open(2)` flags.
pub fn open(unique: u64, flags: i32) -> Vec<u8> {
    let body = wire::OpenIn {
        flags: flags as u32,
        open_flags: 0,
    };
    request(wire::FUSE_OPEN, unique, &body.to_bytes())
}

/// A `read(2)` of an open file (it has a lock owner), blocking unless `nonblocking`.
pub fn read(unique: u64, fh: u64, nonblocking: bool) -> Vec<u8> {
    let body = wire::ReadIn {
        fh,
        offset: 0,
        size: 4,
        read_flags: wire::FUSE_READ_LOCKOWNER,
        lock_owner: 99,
        flags: if nonblocking {
            libc::O_NONBLOCK as u32
        } else {
            0
        },
        padding: 0,
    };
    request(wire::FUSE_READ, unique, &body.to_bytes())
}

/// A page-cache fill of a mapping: a READ without a lock owner.
pub fn page_fill(unique: u64, offset: u64, size: u32) -> Vec<u8> {
    let body = wire::ReadIn {
        offset,
        size,
        ..wire::ReadIn::default()
    };
    request(wire::FUSE_READ, unique, &body.to_bytes())
}

/// WRITE of `data`; `cache` marks a writeback of a writable mapping.
pub fn write(unique: u64, fh: u64, data: &[u8], cache: bool) -> Vec<u8> {
    let mut body = wire::WriteIn {
        fh,
        size: u32::try_from(data.len()).unwrap(),
        write_flags: if cache { wire::FUSE_WRITE_CACHE } else { 0 },
        ..wire::WriteIn::default()
    }
    .to_bytes();
    body.extend_from_slice(data);
    request(wire::FUSE_WRITE, unique, &body)
}

/// IOCTL `cmd` with an integer `arg`.
pub fn ioctl(unique: u64, fh: u64, cmd: u32, arg: u64) -> Vec<u8> {
    let body = wire::IoctlIn {
        fh,
        cmd,
        arg,
        ..wire::IoctlIn::default()
    };
    request(wire::FUSE_IOCTL, unique, &body.to_bytes())
}

/// POLL that asks for a notification on handle `kh`.
pub fn poll(unique: u64, fh: u64, kh: u64) -> Vec<u8> {
    let body = wire::PollIn {
        fh,
        kh,
        flags: wire::FUSE_POLL_SCHEDULE_NOTIFY,
        events: 0,
    };
    request(wire::FUSE_POLL, unique, &body.to_bytes())
}

/// SETATTR of the fields in `valid`, with mode `mode` and size 0.
pub fn setattr(unique: u64, valid: u32, mode: u32) -> Vec<u8> {
    let body = wire::SetattrIn {
        valid,
        mode,
        ..wire::SetattrIn::default()
    };
    request(wire::FUSE_SETATTR, unique, &body.to_bytes())
}

/// A reply's header and body.
pub fn split_reply(message: &[u8]) -> (wire::OutHeader, &[u8]) {
    let header = wire::OutHeader::decode(message).expect("a reply header");
    assert_eq!(header.len as usize, message.len(), "length field");
    (header, &message[wire::OutHeader::SIZE..])
}

/// The errno of an error reply to `unique` (0 for success).
pub fn errno_of(message: &[u8], unique: u64) -> i32 {
    let (header, _) = split_reply(message);
    assert_eq!(header.unique, unique, "reply to another request");
    -header.error
}
