//! The device state machine: the counter, the open files, and the requests waiting on them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use sysgenid_abi::{Errno, GENERATION_SIZE, GenerationId, Ioctl, POLL_OUTDATED, decode_generation};

use crate::io::{Action, Event, Reply};
use crate::state::{BadState, DeviceState, FileState, NotQuiet, PendingState};
use crate::status::{BumpFailure, BumpRecord, FileStatus, Status};
use crate::types::{BumpSource, BumpToken, Caller, FileId, PollHandle, RequestId, Time};

/// One open file: a watcher.
#[derive(Debug)]
struct OpenFile {
    /// The generation this file has acknowledged; outdated while it differs from the current one.
    acked: u32,
    tracked: bool,
    /// Opened for writing: able to acknowledge, so allowed to be tracked.
    writable: bool,
    /// Kept for the file's whole life, so that every bump wakes it (see [`Device::commit_bump`]).
    poll_handle: Option<PollHandle>,
    pid: u32,
    /// The open request that made it, to recognize that request when the kernel resends it.
    opened_by: RequestId,
}

/// A request that has not been answered yet.
#[derive(Debug)]
enum Pending {
    /// A blocking read of an up-to-date file.
    Read { file: FileId },
    /// `WAIT_WATCHERS` from an up-to-date file while some tracked watcher is outdated.
    Wait {
        file: FileId,
        deadline: Option<Time>,
    },
    /// A trigger whose bump is queued or being persisted.
    Trigger,
    /// A conditional trigger, which has no file, whose bump is queued or being persisted.
    TriggerIf,
}

/// A bump waiting its turn. Its target is computed when it starts, from the generation then.
#[derive(Debug)]
struct BumpRequest {
    min: u32,
    source: BumpSource,
    trigger: Option<RequestId>,
    /// For a hardware bump, the transport's token.
    token: Option<BumpToken>,
    /// For a conditional trigger: the generation that must still be current when it starts.
    expect: Option<u32>,
}

/// A bump whose new value is being persisted.
#[derive(Debug)]
struct InFlight {
    target: u32,
    request: BumpRequest,
}

/// The reads a bump answers with its trigger's answer; it answers the rest at
/// [`Event::WakeReaders`], so that the trigger's answer never waits for thousands of them.
pub const READS_ANSWERED_AT_ONCE: usize = 16;

/// The System Generation ID device, with no IO.
///
/// Feed it [`Event`]s with [`Device::handle`], then drain [`Action`]s with
/// [`Device::poll_action`] and carry them out in order.
///
/// Invariants, checked by the property test against an independent model:
/// - the generation never decreases and never wraps;
/// - the outdated count is the number of tracked files whose acknowledged value is not current;
/// - every pending request is answered exactly once;
/// - a pending read or wait belongs to an up-to-date file, but for the reads a bump woke until
///   [`Event::WakeReaders`] or their file's acknowledgement answers them;
/// - no wait completes with 0 while a tracked file is outdated.
#[derive(Debug)]
pub struct Device {
    generation: u32,
    /// The random ID of the current generation, drawn by the transport at its persist.
    generation_id: GenerationId,
    files: HashMap<FileId, OpenFile>,
    next_file: u64,
    tracked: usize,
    outdated_tracked: usize,
    pending: BTreeMap<RequestId, Pending>,
    /// The pending reads and waits by file, so a release finds its own without a scan.
    calls: BTreeSet<(FileId, RequestId)>,
    /// The deadlines of pending waits, soonest first.
    deadlines: BTreeSet<(Time, RequestId)>,
    in_flight: Option<InFlight>,
    queued_bumps: VecDeque<BumpRequest>,
    last_bump: Option<BumpRecord>,
    failed_bumps: u64,
    last_failure: Option<BumpFailure>,
    degraded: bool,
    actions: VecDeque<Action>,
    /// For each bump whose [`Action::WakeReaders`] is not handed back yet, oldest first: its
    /// generation and the reads it woke beyond the first few, in request order.
    woken_reads: VecDeque<(u32, Vec<RequestId>)>,
    /// How many woken reads a bump answers with its trigger's answer.
    reads_answered_at_once: usize,
    /// Files and requests whose state changed since the last [`Device::take_changes`].
    changed: Changes,
}

/// The files and requests whose state changed, for a transport that keeps a copy of the state
/// (see [`Device::take_changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Opened, closed, acknowledged, tracked or registered for poll.
    pub files: BTreeSet<FileId>,
    /// Became pending or were answered.
    pub requests: BTreeSet<RequestId>,
}

impl Device {
    /// A device whose counter starts at `generation` (0 on a fresh boot, the persisted value after
    /// a daemon restart).
    pub fn new(generation: u32) -> Device {
        Device {
            generation,
            generation_id: GenerationId::NONE,
            files: HashMap::new(),
            next_file: 1,
            tracked: 0,
            outdated_tracked: 0,
            pending: BTreeMap::new(),
            calls: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            in_flight: None,
            queued_bumps: VecDeque::new(),
            last_bump: None,
            failed_bumps: 0,
            last_failure: None,
            degraded: false,
            actions: VecDeque::new(),
            woken_reads: VecDeque::new(),
            reads_answered_at_once: READS_ANSWERED_AT_ONCE,
            changed: Changes::default(),
        }
    }

    /// Marks the counter as not durable from the start, when the transport could not make the
    /// starting value durable; status shows it until a persist succeeds, as after a failed bump.
    pub fn mark_degraded(&mut self) {
        self.degraded = true;
    }

    /// The current generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The same device with `id` as the current generation's ID: the ID the transport
    /// recovered with the counter, or drew for it.
    pub fn with_generation_id(mut self, id: GenerationId) -> Device {
        self.generation_id = id;
        self
    }

    /// The device answering at most `n` woken reads with a bump's trigger, instead of
    /// [`READS_ANSWERED_AT_ONCE`]; the others wait for [`Event::WakeReaders`]. Not part of the
    /// state: a device rebuilt with [`Device::from_state`] has the default.
    pub fn with_reads_answered_at_once(mut self, n: usize) -> Device {
        self.reads_answered_at_once = n;
        self
    }

    /// The random ID of the current generation ([`GenerationId::NONE`] until one is given).
    pub fn generation_id(&self) -> GenerationId {
        self.generation_id
    }

    /// The earliest deadline of a pending wait: feed [`Event::Timeout`] once the clock reaches it.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// The next action to carry out, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Acts on one event, queueing the actions it causes.
    pub fn handle(&mut self, event: Event<'_>) {
        match event {
            Event::Open {
                request,
                pid,
                writable,
            } => self.open(request, pid, writable),
            Event::Read {
                request,
                file,
                len,
                nonblocking,
            } => self.read(request, file, len, nonblocking),
            Event::Write {
                request,
                file,
                data,
            } => self.write(request, file, data),
            Event::Poll {
                request,
                file,
                handle,
            } => self.poll(request, file, handle),
            Event::Ioctl {
                request,
                file,
                cmd,
                arg,
                caller,
                now,
            } => self.ioctl(request, file, Ioctl::from_cmd(cmd), arg, (caller, now)),
            Event::Release { file } => self.release(file),
            Event::Interrupt { request } => self.interrupt(request),
            Event::Timeout { now } => self.timeout(now),
            Event::TriggerIf {
                request,
                expect,
                min,
                caller,
            } => self.trigger_if(request, expect, min, caller),
            Event::HardwareBump { backend, token } => self.enqueue_bump(BumpRequest {
                min: 0,
                source: BumpSource::Backend(backend.to_owned()),
                trigger: None,
                token: Some(token),
                expect: None,
            }),
            Event::PersistDone { result } => self.persist_done(result),
            Event::WakeReaders => self.wake_readers(),
        }
    }

    fn reply(&mut self, request: RequestId, reply: Reply) {
        self.actions.push_back(Action::Reply { request, reply });
    }

    fn is_outdated(&self, file: &OpenFile) -> bool {
        file.acked != self.generation
    }

    /// The open file, or `None` after answering `EBADF`.
    fn file_or_ebadf(&mut self, request: RequestId, file: FileId) -> Option<&mut OpenFile> {
        if !self.files.contains_key(&file) {
            self.reply(request, Reply::Error(Errno::BadF));
        }
        self.files.get_mut(&file)
    }

    fn open(&mut self, request: RequestId, pid: u32, writable: bool) {
        let id = FileId(self.next_file);
        self.next_file += 1;
        let file = OpenFile {
            acked: self.generation,
            tracked: false,
            writable,
            poll_handle: None,
            pid,
            opened_by: request,
        };
        self.files.insert(id, file);
        self.changed.files.insert(id);
        self.reply(request, Reply::Opened(id));
    }

    fn read(&mut self, request: RequestId, file: FileId, len: usize, nonblocking: bool) {
        let generation = self.generation;
        let Some(open) = self.file_or_ebadf(request, file) else {
            return;
        };
        let outdated = open.acked != generation;
        let reply = match () {
            _ if len == 0 => Reply::Empty,
            _ if len < GENERATION_SIZE => Reply::Error(Errno::Inval),
            _ if outdated => Reply::Generation(generation),
            _ if nonblocking => Reply::Error(Errno::Again),
            _ => {
                self.add_pending(request, Pending::Read { file });
                return;
            }
        };
        self.reply(request, reply);
    }

    fn write(&mut self, request: RequestId, file: FileId, data: &[u8]) {
        let generation = self.generation;
        let Some(open) = self.file_or_ebadf(request, file) else {
            return;
        };
        if !open.writable {
            self.reply(request, Reply::Error(Errno::BadF));
            return;
        }
        if data.len() != GENERATION_SIZE {
            self.reply(request, Reply::Error(Errno::NoBufs));
            return;
        }
        if decode_generation(data) != Some(generation) {
            self.reply(request, Reply::Error(Errno::Inval));
            return;
        }
        let was_outdated = open.acked != generation;
        let was_outdated_and_tracked = was_outdated && open.tracked;
        if was_outdated {
            self.answer_woken_reads_of(file);
        }
        if let Some(open) = self.files.get_mut(&file) {
            open.acked = generation;
        }
        self.changed.files.insert(file);
        self.reply(request, Reply::Written(GENERATION_SIZE));
        if was_outdated_and_tracked {
            self.outdated_tracked -= 1;
            self.complete_waits_if_settled();
        }
    }

    fn poll(&mut self, request: RequestId, file: FileId, handle: Option<PollHandle>) {
        let generation = self.generation;
        let Some(open) = self.file_or_ebadf(request, file) else {
            return;
        };
        // Register before answering, even when already outdated: a later bump after an ack must
        // still wake this handle (edge-triggered epoll relies on it).
        if handle.is_some() {
            open.poll_handle = handle;
        }
        let mask = if open.acked != generation {
            POLL_OUTDATED
        } else {
            0
        };
        if handle.is_some() {
            self.changed.files.insert(file);
        }
        self.reply(request, Reply::Poll(mask));
    }

    fn ioctl(
        &mut self,
        request: RequestId,
        file: FileId,
        ioctl: Option<Ioctl>,
        arg: u64,
        (caller, now): (Caller, Time),
    ) {
        let Some(open) = self.file_or_ebadf(request, file) else {
            return;
        };
        let writable = open.writable;
        match ioctl {
            // A read-only file could never acknowledge, so it would hold every wait forever.
            Some(Ioctl::SetWatcherTracking) if arg != 0 && !writable => {
                self.reply(request, Reply::Error(Errno::BadF));
            }
            Some(Ioctl::SetWatcherTracking) => {
                self.set_tracking(file, arg != 0);
                self.reply(request, Reply::Done);
            }
            Some(Ioctl::WaitWatchers) => self.wait_watchers(request, file, arg, now),
            Some(Ioctl::TriggerGenUpdate) => self.trigger(request, arg, caller),
            None => self.reply(request, Reply::Error(Errno::Inval)),
        }
    }

    fn set_tracking(&mut self, file: FileId, on: bool) {
        let generation = self.generation;
        let Some(open) = self.files.get_mut(&file) else {
            return;
        };
        if open.tracked == on {
            return;
        }
        open.tracked = on;
        self.changed.files.insert(file);
        let outdated = open.acked != generation;
        if on {
            self.tracked += 1;
            self.outdated_tracked += usize::from(outdated);
        } else {
            self.tracked -= 1;
            if outdated {
                self.outdated_tracked -= 1;
                self.complete_waits_if_settled();
            }
        }
    }

    fn wait_watchers(&mut self, request: RequestId, file: FileId, timeout_ms: u64, now: Time) {
        let caller_outdated = self.files.get(&file).is_some_and(|f| self.is_outdated(f));
        if caller_outdated {
            self.reply(request, Reply::Error(Errno::Intr));
            return;
        }
        if self.outdated_tracked == 0 {
            self.reply(request, Reply::Done);
            return;
        }
        // 0 means no timeout; a timeout past the clock's range never fires, which still waits
        // "at least that long".
        let deadline = match timeout_ms {
            0 => None,
            ms => now.checked_add_millis(ms),
        };
        if let Some(deadline) = deadline {
            self.deadlines.insert((deadline, request));
        }
        self.add_pending(request, Pending::Wait { file, deadline });
    }

    fn trigger(&mut self, request: RequestId, arg: u64, caller: Caller) {
        if !caller.privileged {
            self.reply(request, Reply::Error(Errno::Acces));
            return;
        }
        let Ok(min) = u32::try_from(arg) else {
            self.reply(request, Reply::Error(Errno::Inval));
            return;
        };
        self.add_pending(request, Pending::Trigger);
        self.enqueue_bump(BumpRequest {
            min,
            source: BumpSource::Trigger { pid: caller.pid },
            trigger: Some(request),
            token: None,
            expect: None,
        });
    }

    /// Queues a bump that applies only if the generation is still `expect` when it starts, so
    /// a bump queued or persisting before it (a backend's, another trigger's) makes it a no-op.
    fn trigger_if(&mut self, request: RequestId, expect: u32, min: u32, caller: Caller) {
        if !caller.privileged {
            self.reply(request, Reply::Error(Errno::Acces));
            return;
        }
        self.add_pending(request, Pending::TriggerIf);
        self.enqueue_bump(BumpRequest {
            min,
            source: BumpSource::Trigger { pid: caller.pid },
            trigger: Some(request),
            token: None,
            expect: Some(expect),
        });
    }

    fn release(&mut self, file: FileId) {
        self.set_tracking(file, false);
        let Some(_) = self.files.remove(&file) else {
            return;
        };
        self.changed.files.insert(file);
        // Over FUSE a file is never released while a call on it is in progress; answer any
        // leftover read or wait so that every request still completes exactly once.
        let orphans: Vec<RequestId> = self.calls_of(file).collect();
        for request in orphans {
            self.finish(request, Reply::Error(Errno::BadF));
        }
    }

    fn interrupt(&mut self, request: RequestId) {
        // A trigger is not interruptible: its bump is already under way and ends promptly.
        if matches!(
            self.pending.get(&request),
            Some(Pending::Read { .. } | Pending::Wait { .. })
        ) {
            self.finish(request, Reply::Error(Errno::Intr));
        }
    }

    fn timeout(&mut self, now: Time) {
        while let Some(&(deadline, request)) = self.deadlines.first()
            && deadline <= now
        {
            self.deadlines.remove(&(deadline, request));
            if matches!(self.pending.get(&request), Some(Pending::Wait { .. })) {
                self.finish(request, Reply::Error(Errno::Time));
            }
        }
    }

    fn add_pending(&mut self, request: RequestId, pending: Pending) {
        self.changed.requests.insert(request);
        self.index_call(request, &pending);
        let previous = self.pending.insert(request, pending);
        debug_assert!(
            previous.is_none(),
            "request id {request:?} reused while pending"
        );
    }

    /// Removes a pending request and answers it; its deadline and file index entry go too.
    fn finish(&mut self, request: RequestId, reply: Reply) {
        self.changed.requests.insert(request);
        match self.pending.remove(&request) {
            Some(Pending::Read { file }) => {
                self.calls.remove(&(file, request));
            }
            Some(Pending::Wait { file, deadline }) => {
                self.calls.remove(&(file, request));
                if let Some(deadline) = deadline {
                    self.deadlines.remove(&(deadline, request));
                }
            }
            Some(Pending::Trigger | Pending::TriggerIf) | None => {}
        }
        self.reply(request, reply);
    }

    /// The pending reads and waits of `file`, from the index.
    fn calls_of(&self, file: FileId) -> impl Iterator<Item = RequestId> + '_ {
        self.calls
            .range((file, RequestId(0))..=(file, RequestId(u64::MAX)))
            .map(|&(_, r)| r)
    }

    /// Notes a read or a wait under its file, for [`Device::release`].
    fn index_call(&mut self, request: RequestId, pending: &Pending) {
        if let Pending::Read { file } | Pending::Wait { file, .. } = *pending {
            self.calls.insert((file, request));
        }
    }

    /// Ends every pending wait with 0 once no tracked watcher is outdated.
    fn complete_waits_if_settled(&mut self) {
        if self.outdated_tracked != 0 {
            return;
        }
        let waits: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Wait { .. }))
            .map(|(&r, _)| r)
            .collect();
        for request in waits {
            self.finish(request, Reply::Done);
        }
    }

    fn enqueue_bump(&mut self, bump: BumpRequest) {
        self.queued_bumps.push_back(bump);
        self.start_next_bump();
    }

    /// Starts the oldest queued bump unless one is being persisted.
    fn start_next_bump(&mut self) {
        while self.in_flight.is_none() {
            let Some(request) = self.queued_bumps.pop_front() else {
                return;
            };
            if let Some(expect) = request.expect
                && expect != self.generation
            {
                if let Some(trigger) = request.trigger {
                    self.finish(trigger, Reply::Unchanged(self.generation));
                }
                continue;
            }
            let Some(next) = self.generation.checked_add(1) else {
                self.fail_bump(request, Errno::Overflow, None);
                continue;
            };
            let target = next.max(request.min);
            self.actions.push_back(Action::Persist(target));
            self.in_flight = Some(InFlight { target, request });
        }
    }

    fn persist_done(&mut self, result: Result<GenerationId, String>) {
        let Some(InFlight { target, request }) = self.in_flight.take() else {
            return;
        };
        match result {
            Ok(id) => {
                self.degraded = false;
                self.commit_bump(target, id, request);
            }
            Err(detail) => {
                self.degraded = true;
                self.fail_bump(request, Errno::Io, Some(detail));
            }
        }
        self.start_next_bump();
    }

    fn fail_bump(&mut self, request: BumpRequest, error: Errno, detail: Option<String>) {
        self.failed_bumps += 1;
        self.last_failure = Some(BumpFailure {
            source: request.source.clone(),
            error,
            detail: detail.clone(),
        });
        self.actions.push_back(Action::BumpFailed {
            source: request.source,
            error,
            detail,
            token: request.token,
        });
        if let Some(trigger) = request.trigger {
            self.finish(trigger, Reply::Error(error));
        }
    }

    /// Applies a persisted bump: publish first, then answer its caller, then wake the others.
    fn commit_bump(&mut self, target: u32, id: GenerationId, request: BumpRequest) {
        debug_assert!(target > self.generation);
        self.generation = target;
        self.generation_id = id;
        self.outdated_tracked = self.tracked;
        self.last_bump = Some(BumpRecord {
            generation: target,
            source: request.source.clone(),
        });
        self.actions.push_back(Action::Publish {
            generation: target,
            id,
            source: request.source,
            token: request.token,
        });
        // The caller that asked for the bump is answered first: the page already shows it, and
        // it need not wait for every wakeup to go out.
        if let Some(trigger) = request.trigger {
            let reply = match request.expect {
                Some(_) => Reply::Bumped(target),
                None => Reply::Done,
            };
            self.finish(trigger, reply);
        }
        // Like the driver, wake every registration on every bump, not only those that just
        // became ready: edge-triggered epoll reports each bump.
        let mut handles: Vec<PollHandle> =
            self.files.values().filter_map(|f| f.poll_handle).collect();
        handles.sort_unstable();
        self.actions
            .extend(handles.into_iter().map(Action::WakePoll));
        // Every open file is now outdated: waits get EINTR, the first reads the value now, the
        // other reads once the transport shows the new page (a read woken by an earlier bump
        // and not answered yet is among them).
        let mut waits = Vec::new();
        let mut reads = Vec::new();
        for (&request, pending) in &self.pending {
            match pending {
                Pending::Read { .. } => reads.push(request),
                Pending::Wait { .. } => waits.push(request),
                Pending::Trigger | Pending::TriggerIf => {}
            }
        }
        let later = reads.split_off(reads.len().min(self.reads_answered_at_once));
        for request in reads {
            self.finish(request, Reply::Generation(target));
        }
        for request in waits {
            self.finish(request, Reply::Error(Errno::Intr));
        }
        if !later.is_empty() {
            self.woken_reads.push_back((target, later));
            self.actions.push_back(Action::WakeReaders);
        }
    }

    /// Answers the reads of the oldest bump not handed back yet that are still pending, with
    /// that bump's value: its page is the one known to show.
    fn wake_readers(&mut self) {
        let Some((generation, reads)) = self.woken_reads.pop_front() else {
            return;
        };
        for request in reads {
            if let Some(Pending::Read { .. }) = self.pending.get(&request) {
                self.finish(request, Reply::Generation(generation));
            }
        }
    }

    /// Answers the reads pending on `file` while it is outdated: a bump woke them (a read of an
    /// outdated file never waits). Called as the file acknowledges, so that no state ever
    /// holds a woken read on an up-to-date file, which a rebuilt device would take for a
    /// sleeping one.
    fn answer_woken_reads_of(&mut self, file: FileId) {
        let woken: Vec<RequestId> = self
            .calls_of(file)
            .filter(|r| matches!(self.pending.get(r), Some(Pending::Read { .. })))
            .collect();
        for request in woken {
            self.finish(request, Reply::Generation(self.generation));
        }
    }

    /// The device's state between events, for another instance to continue from. Refused
    /// while actions wait to be carried out or a bump is under way: its outcome must come in
    /// first, so the state never holds half a bump.
    pub fn state(&self) -> Result<DeviceState, NotQuiet> {
        if !self.actions.is_empty() {
            return Err(NotQuiet::ActionsQueued);
        }
        if self.in_flight.is_some() || !self.queued_bumps.is_empty() || !self.woken_reads.is_empty()
        {
            return Err(NotQuiet::BumpUnderWay);
        }
        Ok(self.lasting_state())
    }

    /// The state that outlives the process serving it: [`Device::state`] without the quiet
    /// check, so without the bumps under way and the triggers waiting on them. A transport that
    /// keeps it up to date (with [`Device::take_changes`]) before each reply can continue from
    /// it after a crash; the kernel then sends the unanswered triggers again.
    pub fn lasting_state(&self) -> DeviceState {
        let mut files: Vec<FileState> = self
            .files
            .keys()
            .filter_map(|&id| self.file_state(id))
            .collect();
        files.sort_unstable_by_key(|f| f.id);
        let pending = self
            .pending
            .keys()
            .filter_map(|&request| self.pending_state(request))
            .collect();
        DeviceState {
            files,
            pending,
            ..self.lasting_meta()
        }
    }

    /// [`Device::lasting_state`] without its files and requests: the counter and what status
    /// says of past bumps.
    pub fn lasting_meta(&self) -> DeviceState {
        DeviceState {
            generation: self.generation,
            generation_id: self.generation_id,
            next_file: self.next_file,
            files: Vec::new(),
            pending: Vec::new(),
            last_bump: self.last_bump.clone(),
            failed_bumps: self.failed_bumps,
            last_failure: self.last_failure.clone(),
            degraded: self.degraded,
        }
    }

    /// Moves the counter up to `generation` with its ID `id`, already made durable by a
    /// process that died before it showed it: publishes them, wakes every registration and
    /// answers every blocked read and wait, as a bump does. Nothing happens unless it is above
    /// the current value.
    pub fn catch_up(&mut self, generation: u32, id: GenerationId, source: BumpSource) {
        if generation <= self.generation || self.in_flight.is_some() {
            return;
        }
        self.commit_bump(
            generation,
            id,
            BumpRequest {
                min: generation,
                source,
                trigger: None,
                token: None,
                expect: None,
            },
        );
    }

    /// One open file's state, if it is open.
    pub fn file_state(&self, id: FileId) -> Option<FileState> {
        self.files.get(&id).map(|f| FileState {
            id,
            acked: f.acked,
            tracked: f.tracked,
            writable: f.writable,
            poll_handle: f.poll_handle,
            pid: f.pid,
            opened_by: f.opened_by,
        })
    }

    /// A blocked read or wait, if `request` is one.
    pub fn pending_state(&self, request: RequestId) -> Option<PendingState> {
        match *self.pending.get(&request)? {
            Pending::Read { file } => Some(PendingState::Read { request, file }),
            Pending::Wait { file, deadline } => Some(PendingState::Wait {
                request,
                file,
                deadline,
            }),
            Pending::Trigger | Pending::TriggerIf => None,
        }
    }

    /// The open file that `request` made, if it is still open: an open request the kernel
    /// sends again after a crash gets the same file.
    pub fn file_opened_by(&self, request: RequestId) -> Option<FileId> {
        self.files
            .iter()
            .find(|(_, f)| f.opened_by == request)
            .map(|(&id, _)| id)
    }

    /// Whether `request` is waiting for an answer.
    pub fn is_pending(&self, request: RequestId) -> bool {
        self.pending.contains_key(&request)
    }

    /// The files and requests whose state changed since the last call: what a transport
    /// that keeps a copy of [`Device::lasting_state`] must write again.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changed)
    }

    /// A device that continues from `state`, as [`Device::state`] took it. A state that no
    /// device can reach is refused.
    pub fn from_state(state: DeviceState) -> Result<Device, BadState> {
        let mut device = Device::new(state.generation).with_generation_id(state.generation_id);
        device.next_file = state.next_file;
        for f in state.files {
            if f.id.0 >= state.next_file || device.files.contains_key(&f.id) {
                return Err(BadState::FileId(f.id));
            }
            if f.tracked && !f.writable {
                return Err(BadState::TrackedReadOnly(f.id));
            }
            let open = OpenFile {
                acked: f.acked,
                tracked: f.tracked,
                writable: f.writable,
                poll_handle: f.poll_handle,
                pid: f.pid,
                opened_by: f.opened_by,
            };
            device.tracked += usize::from(f.tracked);
            device.outdated_tracked += usize::from(f.tracked && device.is_outdated(&open));
            device.files.insert(f.id, open);
        }
        let mut reads = Vec::new();
        for p in state.pending {
            let request = p.request();
            let Some(file) = device.files.get(&p.file()) else {
                return Err(BadState::Pending(request));
            };
            // A read a bump woke whose answer the previous process never sent.
            let woken = device.is_outdated(file);
            if woken && !matches!(p, PendingState::Read { .. }) {
                return Err(BadState::Pending(request));
            }
            if device.pending.contains_key(&request) {
                return Err(BadState::DuplicateRequest(request));
            }
            let pending = match p {
                PendingState::Read { file, .. } => Pending::Read { file },
                PendingState::Wait { file, deadline, .. } => {
                    if let Some(deadline) = deadline {
                        device.deadlines.insert((deadline, request));
                    }
                    Pending::Wait { file, deadline }
                }
            };
            device.index_call(request, &pending);
            device.pending.insert(request, pending);
            if woken {
                reads.push(request);
            }
        }
        if !reads.is_empty() {
            reads.sort_unstable();
            device.woken_reads.push_back((device.generation, reads));
            device.actions.push_back(Action::WakeReaders);
        }
        device.last_bump = state.last_bump;
        device.failed_bumps = state.failed_bumps;
        device.last_failure = state.last_failure;
        device.degraded = state.degraded;
        // A wait with no outdated tracked watcher left would have ended already.
        device.complete_waits_if_settled();
        Ok(device)
    }

    /// A snapshot of everything the device knows, for the status channel.
    pub fn status(&self) -> Status {
        let mut files: Vec<FileStatus> = self
            .files
            .iter()
            .map(|(&id, f)| FileStatus {
                file: id,
                pid: f.pid,
                tracked: f.tracked,
                outdated: self.is_outdated(f),
            })
            .collect();
        files.sort_unstable_by_key(|f| f.file);
        let count = |want: fn(&Pending) -> bool| self.pending.values().filter(|p| want(p)).count();
        Status {
            generation: self.generation,
            generation_id: self.generation_id,
            open_files: self.files.len(),
            tracked: self.tracked,
            outdated: self.outdated_tracked,
            files,
            pending_reads: count(|p| matches!(p, Pending::Read { .. })),
            pending_waits: count(|p| matches!(p, Pending::Wait { .. })),
            bump_in_progress: self.in_flight.is_some() || !self.queued_bumps.is_empty(),
            last_bump: self.last_bump.clone(),
            failed_bumps: self.failed_bumps,
            last_failure: self.last_failure.clone(),
            degraded: self.degraded,
        }
    }
}
