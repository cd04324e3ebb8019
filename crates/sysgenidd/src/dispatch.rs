//! What the event loop does with each input: FUSE requests (through the [`FuseAdapter`]), inbox
//! messages and timeouts become core events, and every core action is carried out, in order,
//! through the [`Effects`] traits.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use sysgenid_abi::Errno;
use sysgenid_core::{
    Action, BumpSource, BumpToken, Device, DeviceState, Event, GenerationId, PollHandle, Reply,
    RequestId, Time,
};
use sysgenid_fuse::{Negotiated, reply};

use crate::bump_log::BumpLog;
use crate::control::{DaemonFacts, StatusSnapshot};
use crate::effects::{Effects, Persisting, StoreJob, Storing};
use crate::fuse_adapter::{Context, FuseAdapter, Routed, reply_message};
use crate::inbox::Message;
use crate::restores::Restores;

/// Request ids of control-socket requests have this bit set. FUSE request ids count up from 0
/// in steps of 2 (the low bit marks interrupts), so they never reach it.
const CONTROL_REQUEST_BIT: u64 = 1 << 62;
/// The kernel's mark on a request it sends again after `FUSE_NOTIFY_RESEND`.
const RESENT_BIT: u64 = 1 << 63;

/// At most this many kernel sends go with a bump's page store: the trigger's answer comes first,
/// and building the wakeups of thousands of watchers would delay it (the rest follow from the
/// serving thread once the store is written, as before).
const GATHER_LIMIT: usize = 16;

/// Why serving ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// A shutdown message (a signal).
    Shutdown(String),
    /// A new daemon took the connection over; the mount stays.
    HandedOver {
        /// The new daemon's pid, if known.
        to: Option<u32>,
    },
    /// The kernel ended the connection: unmounted from outside, or aborted.
    Unmounted,
}

/// The core with its adapters: everything the loop decides, with no IO of its own.
#[derive(Debug)]
pub struct Dispatcher {
    device: Device,
    fuse: FuseAdapter,
    effects: Effects,
    /// Control-socket requests the core has not answered yet, with where the answer goes.
    control_requests: HashMap<RequestId, mpsc::SyncSender<Reply>>,
    next_control_request: u64,
    /// Backend reports: one bump per restore, completions after their bump.
    restores: Restores,
    /// Requests the core waits on that the kernel sent again after a crash: the answer goes
    /// to the new id (the kernel forgot the old one).
    resent: HashMap<RequestId, RequestId>,
    /// Device page stores started, and how many of them the page-store thread has written.
    /// While one is in flight the core's later actions wait, so a watcher woken by a bump
    /// finds the new page in its mapping.
    stores_started: u64,
    stores_written: u64,
    /// A bump's page store being gathered with the kernel sends that follow it.
    gathering: Option<StoreJob>,
    /// The core's next action while a store is in flight (after a bump's gathered store, the
    /// first that is not a kernel send): it waits, with those after it, until the store is
    /// written, and while it is here the loop asks to be woken for that.
    held: Option<Action>,
    /// Which bumps get a log line of their own.
    bump_log: BumpLog,
    facts: DaemonFacts,
}

impl Dispatcher {
    /// A dispatcher for `device`, acting through `effects`; backend reports less than
    /// `dedupe_window` apart are one restore.
    pub fn new(
        device: Device,
        fuse: FuseAdapter,
        effects: Effects,
        facts: DaemonFacts,
        dedupe_window: Duration,
    ) -> Dispatcher {
        Dispatcher {
            device,
            fuse,
            effects,
            control_requests: HashMap::new(),
            next_control_request: 0,
            restores: Restores::new(dedupe_window),
            resent: HashMap::new(),
            stores_started: 0,
            stores_written: 0,
            gathering: None,
            held: None,
            bump_log: BumpLog::default(),
            facts,
        }
    }

    /// How long until the core's soonest deadline, if it has one.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let deadline = self.device.poll_timeout()?;
        Some(Duration::from_nanos(
            deadline.0.saturating_sub(self.now().0),
        ))
    }

    fn now(&self) -> Time {
        self.effects.clock.now()
    }

    /// Now, as the dedupe policy measures time.
    fn since_epoch(&self) -> Duration {
        Duration::from_nanos(self.now().0)
    }

    /// Ends every wait whose deadline has passed.
    pub fn on_timeout(&mut self) {
        let now = self.now();
        if self
            .device
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            self.feed(Event::Timeout { now });
        }
    }

    /// Handles one FUSE message; `Some` when the kernel says the file system is going away.
    pub fn on_request(&mut self, bytes: &[u8]) -> Option<Stopped> {
        let cx = Context {
            generation: self.device.generation(),
            generation_id: self.device.generation_id(),
            clock: &*self.effects.clock,
            judge: &*self.effects.judge,
        };
        match self.fuse.route(bytes, &cx) {
            Routed::Answer(message) => {
                // An INIT answer depends on the agreement being in the session.
                self.record_session();
                self.effects.kernel.send(&message);
            }
            Routed::Core(event) => {
                if !self.took_resent(&event) {
                    self.feed(event);
                }
            }
            Routed::CoreThenAnswer(event, message) => {
                if !self.took_resent(&event) {
                    self.feed(event);
                }
                self.effects.kernel.send(&message);
            }
            Routed::DiscardedWriteback(message) => {
                self.effects.kernel.send(&message);
                self.store_current_page();
            }
            Routed::Nothing => {}
            Routed::Destroy(message) => {
                self.effects.kernel.send(&message);
                return Some(Stopped::Unmounted);
            }
        }
        None
    }

    /// Carries out what the core decided before any event: a durable value that a previous
    /// process never showed (`Device::catch_up`). Also writes the session's first state, and
    /// stores the page into device mappings of a connection this process continues (a
    /// previous process may have died between the steps of a page store, or before its
    /// last one; a new mount has none yet).
    pub fn start(&mut self) {
        self.store_current_page();
        self.carry_out_all();
    }

    /// Takes a request the kernel sent again after a crash (`FUSE_NOTIFY_RESEND`): one the
    /// core already waits on is answered later under its new id, an open that already made a
    /// file gets that file, and an interrupt of a resent request reaches the core under the
    /// id it knows. `true` when the event needs nothing more.
    fn took_resent(&mut self, event: &Event<'_>) -> bool {
        if let &Event::Interrupt { request } = event {
            // A call the core holds under its resent id (handed over so) is interrupted as is.
            if request.0 & RESENT_BIT == 0 || self.device.is_pending(request) {
                return false;
            }
            let known = self
                .resent
                .iter()
                .find(|&(_, &new)| new == request)
                .map_or(RequestId(request.0 & !RESENT_BIT), |(&known, _)| known);
            self.feed(Event::Interrupt { request: known });
            return true;
        }
        let Some(request) = request_of(event).filter(|r| r.0 & RESENT_BIT != 0) else {
            return false;
        };
        if self.device.is_pending(request) {
            // Sent again after a handover that passed it on under this id: the core waits.
            return true;
        }
        let known = RequestId(request.0 & !RESENT_BIT);
        if self.device.is_pending(known) {
            self.resent.insert(known, request);
            return true;
        }
        if let Event::Open { .. } = event
            && let Some(file) = self.device.file_opened_by(known)
        {
            self.effects
                .kernel
                .send(&reply_message(request, Reply::Opened(file)));
            return true;
        }
        false
    }

    /// Writes what changed in the core, and the INIT agreement, to the session.
    fn record_session(&mut self) {
        let changes = self.device.take_changes();
        self.effects
            .session
            .record(&self.device, &changes, self.fuse.negotiated());
    }

    /// The core's state and the INIT agreement, once nothing is under way that a next daemon
    /// could not finish: no bump, no device page store, no control request, INIT done. A call
    /// the kernel sent again after a crash is in it under the id the kernel knows now.
    pub fn quiet_state(&self) -> Option<(DeviceState, Negotiated)> {
        if self.storing() || self.held.is_some() || !self.control_requests.is_empty() {
            return None;
        }
        let mut state = self.device.state().ok()?;
        for pending in &mut state.pending {
            if let Some(&new) = self.resent.get(&pending.request()) {
                *pending = pending.with_request(new);
            }
        }
        Some((state, self.fuse.negotiated()?))
    }

    /// Handles one inbox message; `Some` when it says to stop.
    pub fn on_message(&mut self, message: Message) -> Option<Stopped> {
        match message {
            Message::Status(reply) => {
                let _ = reply.try_send(self.snapshot());
            }
            Message::TriggerIf {
                expect,
                min,
                caller,
                reply,
            } => {
                self.next_control_request += 1;
                let request = RequestId(CONTROL_REQUEST_BIT | self.next_control_request);
                self.control_requests.insert(request, reply);
                self.feed(Event::TriggerIf {
                    request,
                    expect,
                    min,
                    caller,
                });
            }
            Message::Report {
                backend,
                key,
                completion,
            } => {
                let now = self.since_epoch();
                if let Some(token) = self.restores.report(backend, key, completion, now) {
                    self.feed(Event::HardwareBump {
                        backend: backend.name(),
                        token,
                    });
                }
            }
            Message::KeyAtStart { backend, key } => self.restores.note_key(backend, key),
            Message::Persisted(result) => {
                self.persisted(result);
                self.carry_out_all();
            }
            Message::Serving => self.serving(),
            // The server answers these itself; one that reaches the dispatcher is refused.
            Message::HandoverAsked(asked) => {
                crate::handover::refuse(&asked, "this daemon cannot hand over now");
            }
            Message::Shutdown { reason } => return Some(Stopped::Shutdown(reason)),
            Message::MountLost => {
                tracing::error!(
                    device = %self.facts.device.display(),
                    "the device was unmounted from outside (umount -l?); it is no longer served"
                );
                return Some(Stopped::Unmounted);
            }
        }
        None
    }

    fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            status: self.device.status(),
            facts: DaemonFacts {
                device_mmap: self.fuse.device_mmap(),
                ..self.facts.clone()
            },
        }
    }

    fn serving(&mut self) {
        self.facts.serving = true;
        let generation = self.device.generation();
        tracing::info!(
            device = %self.facts.device.display(),
            generation,
            device_mmap = self.fuse.device_mmap(),
            "serving"
        );
        self.effects
            .supervisor
            .ready(&format!("serving generation {generation}"));
    }

    /// Hands an event to the core and carries out every action that follows.
    fn feed(&mut self, event: Event<'_>) {
        self.device.handle(event);
        self.carry_out_all();
    }

    /// Carries out the core's actions in order, pausing while a device page store is being
    /// written: what follows a publish (wakes, replies) waits until mappings show it. The
    /// kernel sends right after a bump's store go with it, to be sent once it is written.
    fn carry_out_all(&mut self) {
        self.record_session();
        while !self.storing()
            && let Some(action) = self.held.take().or_else(|| self.device.poll_action())
        {
            let Some(job) = self.gathering.as_mut() else {
                self.carry_out(action);
                continue;
            };
            let taken = if job.then.len() < GATHER_LIMIT {
                kernel_send_of(action, &self.control_requests, &mut self.resent)
            } else {
                Err(action)
            };
            match taken {
                Ok(message) => job.then.push(message),
                Err(action) => {
                    self.held = Some(action);
                    self.start_gathered_store();
                }
            }
        }
        self.start_gathered_store();
        // What waits behind a store in flight shows in `held`, so the loop asks to be woken.
        if self.storing() && self.held.is_none() {
            self.held = self.device.poll_action();
        }
    }

    /// Whether a device page store is in flight.
    fn storing(&self) -> bool {
        self.stores_started > self.stores_written
    }

    /// Takes in the device page stores written since the last look and carries out what
    /// waited on them; `true` if there were any. The loop calls it before each sleep: while a
    /// store is in flight and something waits on it (a held action, or a handover when
    /// `waiting`), the page-store thread is asked to wake the loop once it is written.
    pub fn catch_up_with_stores(&mut self, waiting: bool) -> bool {
        let wake_me = self.storing() && (self.held.is_some() || waiting);
        let written = self.effects.device_page.written(wake_me);
        if written == self.stores_written {
            return false;
        }
        self.stores_written = written;
        self.carry_out_all();
        true
    }

    /// Starts the gathered store, if any, after recording the session its sends depend on.
    fn start_gathered_store(&mut self) {
        let Some(job) = self.gathering.take() else {
            return;
        };
        self.record_session();
        self.start_store(job);
    }

    /// Hands `job` to the device page store; the core's later actions wait until it is written.
    fn start_store(&mut self, job: StoreJob) {
        if self.effects.device_page.store(job) == Storing::Started {
            self.stores_started += 1;
        }
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Reply { request, reply } => self.answer(request, reply),
            Action::WakePoll(PollHandle(kh)) => self.effects.kernel.send(&reply::notify_poll(kh)),
            Action::Persist(generation) => match self.effects.state.persist(generation) {
                Persisting::Done(result) => self.persisted(result),
                Persisting::Started => {}
            },
            Action::Publish {
                generation,
                id,
                source,
                token,
            } => self.publish(generation, id, &source, token),
            Action::BumpFailed {
                source,
                error,
                detail,
                token,
            } => self.bump_failed(&source, error, detail, token),
            // Carried out only once the bump's page store is written: the loop holds it until then.
            Action::WakeReaders => {
                self.device.handle(Event::WakeReaders);
                self.record_session();
            }
        }
    }

    /// Hands the outcome of a persist to the core; its actions join the queue being drained.
    fn persisted(&mut self, result: Result<GenerationId, String>) {
        if let Err(e) = &result {
            tracing::error!(error = %e, "persist failed; the bump is refused");
        }
        self.device.handle(Event::PersistDone { result });
    }

    fn answer(&mut self, request: RequestId, reply: Reply) {
        if let Some(answer) = self.control_requests.remove(&request) {
            if let Reply::Bumped(_) = reply {
                let now = self.since_epoch();
                self.restores.trigger_if_bumped(now);
            }
            // The control thread may have given up waiting; then no one listens.
            let _ = answer.try_send(reply);
            return;
        }
        let message = fuse_reply(&mut self.resent, request, reply);
        self.effects.kernel.send(&message);
    }

    /// Shows a persisted generation in every device mapping (the persist put it in the page
    /// file), then runs the completions waiting on a hardware bump: its restore is handled.
    fn publish(
        &mut self,
        generation: u32,
        id: GenerationId,
        source: &BumpSource,
        token: Option<BumpToken>,
    ) {
        self.gathering = self.page_store_job(generation, id);
        let verdict = self.bump_log.bump(self.now());
        if verdict.unlogged_before > 0 {
            tracing::info!(
                count = verdict.unlogged_before,
                "new generations not logged one by one (over 10 in a second) since the last line"
            );
        }
        if verdict.log_this {
            tracing::info!(generation, %id, %source, "new generation");
        }
        self.effects
            .supervisor
            .status(&format!("serving generation {generation}"));
        if let Some(token) = token {
            self.restores.published(token);
        }
    }

    fn bump_failed(
        &mut self,
        source: &BumpSource,
        error: Errno,
        detail: Option<String>,
        token: Option<BumpToken>,
    ) {
        let why = match error {
            Errno::Overflow => "the generation is at u32::MAX".to_owned(),
            _ => detail.unwrap_or_else(|| error.name().to_owned()),
        };
        tracing::error!(%source, error = error.name(), why, "bump failed; the generation is unchanged");
        if let Some(token) = token {
            self.restores.failed(token);
        }
    }

    /// Puts the page of the current generation into every device mapping again. It holds the
    /// core's later actions like a bump's store: a bump published meanwhile would otherwise
    /// leave an older store in flight behind a newer value, which a successor, answering the
    /// page fill that store waits on, would show before the older store lands.
    fn store_current_page(&mut self) {
        let (generation, id) = (self.device.generation(), self.device.generation_id());
        if let Some(job) = self.page_store_job(generation, id) {
            self.start_store(job);
        }
    }

    /// A store of the page of `generation` and `id` into device mappings, with no sends yet;
    /// `None` when the device cannot be mapped.
    fn page_store_job(&self, generation: u32, id: GenerationId) -> Option<StoreJob> {
        let page = self.fuse.device_page_store(generation, id)?;
        Some(StoreJob {
            page,
            then: Vec::new(),
        })
    }
}

/// The message for an action that is only a send to the kernel: a reply to a FUSE request or a
/// poll wakeup; any other action comes back.
fn kernel_send_of(
    action: Action,
    control_requests: &HashMap<RequestId, mpsc::SyncSender<Reply>>,
    resent: &mut HashMap<RequestId, RequestId>,
) -> Result<Vec<u8>, Action> {
    match action {
        Action::Reply { request, reply } if !control_requests.contains_key(&request) => {
            Ok(fuse_reply(resent, request, reply))
        }
        Action::WakePoll(PollHandle(kh)) => Ok(reply::notify_poll(kh)),
        other => Err(other),
    }
}

/// The reply to FUSE request `request`, under the id the kernel knows it by now.
fn fuse_reply(
    resent: &mut HashMap<RequestId, RequestId>,
    request: RequestId,
    reply: Reply,
) -> Vec<u8> {
    let request = resent.remove(&request).unwrap_or(request);
    reply_message(request, reply)
}

/// The request an event answers, if it has one.
fn request_of(event: &Event<'_>) -> Option<RequestId> {
    match *event {
        Event::Open { request, .. }
        | Event::Read { request, .. }
        | Event::Write { request, .. }
        | Event::Poll { request, .. }
        | Event::Ioctl { request, .. }
        | Event::TriggerIf { request, .. } => Some(request),
        Event::Interrupt { .. }
        | Event::Release { .. }
        | Event::Timeout { .. }
        | Event::HardwareBump { .. }
        | Event::PersistDone { .. }
        | Event::WakeReaders => None,
    }
}

#[cfg(test)]
mod tests {
    use sysgenid_abi::{Ioctl, encode_generation};
    use sysgenid_core::Caller;
    use sysgenid_fuse::wire::{self, Wire};

    use super::*;
    use crate::backends::BackendKind;
    use crate::fakes::{self, Effect, Rig, errno_of, flag, raised, rig, split_reply};
    use crate::fuse_adapter::page_bytes;

    const TRIGGER: u32 = Ioctl::TriggerGenUpdate.cmd();

    /// The device page stores of `generation` with the fake persist's ID: the sequence word
    /// odd, the page, the sequence word even.
    fn page_store(generation: u32) -> Vec<Vec<u8>> {
        let even = sysgenid_abi::stable_sequence(generation);
        let mut page = page_bytes(generation, fakes::id_of(generation), 0, 4096);
        page[4..8].copy_from_slice(&(even - 1).to_ne_bytes());
        vec![
            reply::notify_store(wire::FUSE_ROOT_ID, 4, &(even - 1).to_ne_bytes()),
            reply::notify_store(wire::FUSE_ROOT_ID, 0, &page),
            reply::notify_store(wire::FUSE_ROOT_ID, 4, &even.to_ne_bytes()),
        ]
    }

    fn sent_page_store(generation: u32) -> Vec<Effect> {
        page_store(generation)
            .into_iter()
            .map(Effect::Sent)
            .collect()
    }

    /// [`mounted`] at generation 4 with a read of fh 1 blocked as request 12, which the kernel
    /// then sent again after a crash; returns the resent id too.
    fn mounted_with_a_resent_read() -> (Rig, u64) {
        let mut rig = mounted(4);
        rig.dispatcher.on_request(&fakes::read(12, 1, false));
        let resent = 12 | RESENT_BIT;
        rig.dispatcher.on_request(&fakes::read(resent, 1, false));
        (rig, resent)
    }

    /// INIT (with device mappings), then an open of a writable file as fh 1.
    fn mounted(generation: u32) -> Rig {
        let mut rig = rig(generation);
        assert_eq!(rig.dispatcher.on_request(&fakes::init(1)), None);
        rig.dispatcher.on_request(&fakes::open(2, libc::O_RDWR));
        let sent = rig.journal.take_sent();
        assert_eq!(sent.len(), 2, "INIT and OPEN answered");
        let out = wire::OpenOut::decode(split_reply(&sent[1]).1).unwrap();
        assert_eq!(out.fh, 1);
        rig
    }

    #[test]
    fn a_bump_persists_then_publishes_then_answers_its_caller_then_wakes_the_others() {
        let mut rig = mounted(4);
        rig.dispatcher.on_request(&fakes::poll(10, 1, 77));
        rig.dispatcher.on_request(&fakes::read(12, 1, false));
        let polled = rig.journal.take_sent();
        assert_eq!(polled.len(), 1, "the blocking read waits: {polled:?}");

        rig.dispatcher.on_request(&fakes::ioctl(14, 1, TRIGGER, 0));
        let effects = rig.journal.take();
        let mut expected = vec![
            Effect::Persisted(5),
            Effect::PageStored(5),
            Effect::Status("serving generation 5".to_owned()),
        ];
        expected.extend(sent_page_store(5));
        expected.extend([
            Effect::Sent(reply::ioctl(14, 0, &[])),
            Effect::Sent(reply::notify_poll(77)),
            Effect::Sent(reply::data(12, &encode_generation(5))),
        ]);
        assert_eq!(effects, expected);
        assert_eq!(
            rig.dispatcher.snapshot().status.generation_id,
            fakes::id_of(5)
        );
    }

    #[test]
    fn a_failed_persist_publishes_nothing_and_the_trigger_gets_eio() {
        let mut rig = mounted(4);
        rig.dispatcher.on_request(&fakes::poll(10, 1, 77));
        rig.journal.take();
        rig.persist_fails.set(true);
        rig.dispatcher.on_request(&fakes::ioctl(14, 1, TRIGGER, 0));
        let effects = rig.journal.take();
        assert_eq!(effects.len(), 2, "{effects:?}");
        assert_eq!(effects[0], Effect::Persisted(5));
        let Effect::Sent(answer) = &effects[1] else {
            panic!("{effects:?}")
        };
        assert_eq!(errno_of(answer, 14), libc::EIO);
        let status = rig.dispatcher.snapshot().status;
        assert!(status.degraded);
        assert_eq!((status.generation, status.failed_bumps), (4, 1));
    }

    #[test]
    fn an_unprivileged_trigger_is_refused_without_a_persist() {
        let mut rig = fakes::rig_with(0, false);
        rig.dispatcher.on_request(&fakes::open(2, libc::O_RDWR));
        rig.journal.take();
        rig.dispatcher.on_request(&fakes::ioctl(4, 1, TRIGGER, 0));
        let sent = rig.journal.take();
        assert!(matches!(sent.as_slice(), [Effect::Sent(m)] if errno_of(m, 4) == libc::EACCES));
    }

    #[test]
    fn a_writeback_is_discarded_and_the_true_page_stored_again() {
        let mut rig = mounted(6);
        rig.dispatcher
            .on_request(&fakes::write(16, 1, &[9, 9, 9, 9], true));
        let sent = rig.journal.take_sent();
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert_eq!(sent[0], reply::write(16, 4));
        assert_eq!(sent[1..], page_store(6), "the page with its ID");
        assert_eq!(
            rig.dispatcher.device.generation(),
            6,
            "not an ack, not a bump"
        );
    }

    #[test]
    fn an_ack_write_reaches_the_core() {
        let mut rig = mounted(6);
        rig.dispatcher
            .on_request(&fakes::write(16, 1, &encode_generation(6), false));
        assert_eq!(rig.journal.take_sent(), [reply::write(16, 4)]);
        rig.dispatcher
            .on_request(&fakes::write(18, 1, &encode_generation(5), false));
        assert_eq!(errno_of(&rig.journal.take_sent()[0], 18), libc::EINVAL);
    }

    #[test]
    fn a_page_cache_fill_shows_the_generation_after_a_bump() {
        let mut rig = mounted(1);
        rig.dispatcher.on_request(&fakes::ioctl(4, 1, TRIGGER, 0));
        rig.journal.take();
        rig.dispatcher.on_request(&fakes::page_fill(6, 0, 4));
        assert_eq!(
            rig.journal.take_sent(),
            [reply::data(6, &encode_generation(2))]
        );
    }

    #[test]
    fn a_release_reaches_the_core_before_its_answer() {
        let mut rig = mounted(0);
        rig.dispatcher.on_request(&fakes::read(4, 1, false));
        let release = wire::ReleaseIn {
            fh: 1,
            ..wire::ReleaseIn::default()
        };
        rig.dispatcher
            .on_request(&fakes::request(wire::FUSE_RELEASE, 6, &release.to_bytes()));
        let sent = rig.journal.take_sent();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(errno_of(&sent[0], 4), libc::EBADF, "the orphaned read ends");
        assert_eq!(sent[1], reply::empty(6));
    }

    #[test]
    fn destroy_is_answered_and_stops_serving() {
        let mut rig = mounted(0);
        let destroy = fakes::request(wire::FUSE_DESTROY, 8, &[]);
        assert_eq!(
            rig.dispatcher.on_request(&destroy),
            Some(Stopped::Unmounted)
        );
        assert_eq!(rig.journal.take_sent(), [reply::empty(8)]);
    }

    #[test]
    fn a_wait_ends_with_etime_once_the_clock_reaches_its_deadline() {
        let mut rig = mounted(0);
        rig.dispatcher.on_request(&fakes::open(4, libc::O_RDWR));
        let tracking = Ioctl::SetWatcherTracking.cmd();
        rig.dispatcher.on_request(&fakes::ioctl(6, 1, tracking, 1));
        rig.dispatcher.on_request(&fakes::ioctl(8, 2, TRIGGER, 0));
        rig.dispatcher
            .on_request(&fakes::write(10, 2, &encode_generation(1), false));
        assert_eq!(rig.dispatcher.poll_timeout(), None);
        let wait = Ioctl::WaitWatchers.cmd();
        rig.dispatcher.on_request(&fakes::ioctl(12, 2, wait, 100));
        rig.journal.take();
        assert_eq!(
            rig.dispatcher.poll_timeout(),
            Some(Duration::from_millis(100))
        );

        rig.clock.set(rig.clock.get() + 60_000_000);
        rig.dispatcher.on_timeout();
        assert!(rig.journal.take().is_empty(), "not due yet");
        assert_eq!(
            rig.dispatcher.poll_timeout(),
            Some(Duration::from_millis(40))
        );

        rig.clock.set(rig.clock.get() + 40_000_000);
        rig.dispatcher.on_timeout();
        let sent = rig.journal.take_sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(errno_of(&sent[0], 12), libc::ETIME);
        assert_eq!(rig.dispatcher.poll_timeout(), None);
    }

    #[test]
    fn a_conditional_trigger_is_answered_through_its_channel() {
        let mut rig = mounted(3);
        let (reply, answer) = mpsc::sync_channel(2);
        let caller = Caller {
            pid: 9,
            privileged: true,
        };
        for expect in [3, 3] {
            rig.dispatcher.on_message(Message::TriggerIf {
                expect,
                min: 0,
                caller,
                reply: reply.clone(),
            });
        }
        assert_eq!(answer.try_recv(), Ok(Reply::Bumped(4)));
        assert_eq!(answer.try_recv(), Ok(Reply::Unchanged(4)));
        let effects = rig.journal.take();
        assert_eq!(effects[..2], [Effect::Persisted(4), Effect::PageStored(4)]);
        assert!(
            effects
                .iter()
                .all(|e| !matches!(e, Effect::Sent(m) if split_reply(m).0.unique != 0)),
            "no FUSE reply for a control request: {effects:?}"
        );
    }

    #[test]
    fn serving_tells_the_supervisor_and_status_shows_it() {
        let mut rig = mounted(2);
        assert!(!rig.dispatcher.snapshot().facts.serving);
        assert_eq!(rig.dispatcher.on_message(Message::Serving), None);
        assert_eq!(
            rig.journal.take(),
            [Effect::Ready("serving generation 2".to_owned())]
        );
        let facts = rig.dispatcher.snapshot().facts;
        assert!(facts.serving && facts.device_mmap);
        let stop = Message::Shutdown {
            reason: "got SIGTERM".to_owned(),
        };
        assert_eq!(
            rig.dispatcher.on_message(stop),
            Some(Stopped::Shutdown("got SIGTERM".to_owned()))
        );
    }

    fn report(
        backend: BackendKind,
        key: Option<u128>,
    ) -> (Message, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let (completion, ran) = flag();
        let message = Message::Report {
            backend,
            key,
            completion,
        };
        (message, ran)
    }

    #[test]
    fn a_backend_report_is_completed_after_its_bump_is_published() {
        let mut rig = mounted(0);
        let (message, ran) = report(BackendKind::Vmclock, Some(5));
        rig.dispatcher.on_message(message);
        assert!(raised(&ran));
        let effects = rig.journal.take();
        assert_eq!(effects[..2], [Effect::Persisted(1), Effect::PageStored(1)]);
        let last = rig.dispatcher.snapshot().status.last_bump.unwrap();
        assert_eq!(last.source, BumpSource::Backend("vmclock".to_owned()));
    }

    #[test]
    fn a_failed_winner_and_its_duplicate_both_stay_unacknowledged() {
        let mut rig = mounted(0);
        rig.persist_fails.set(true);
        let (winner, winner_ran) = report(BackendKind::Vmclock, Some(5));
        rig.dispatcher.on_message(winner);
        let (duplicate, duplicate_ran) = report(BackendKind::FwCfg, Some(9));
        rig.dispatcher.on_message(duplicate);
        assert!(!raised(&winner_ran) && !raised(&duplicate_ran));
        assert_eq!(
            rig.journal.take(),
            [Effect::Persisted(1)],
            "one bump, which failed"
        );
        let status = rig.dispatcher.snapshot().status;
        assert_eq!((status.generation, status.failed_bumps), (0, 1));
    }

    #[test]
    fn a_duplicate_of_a_bump_in_flight_completes_only_after_publish() {
        let mut rig = mounted(0);
        rig.persist_deferred.set(true);
        let (winner, winner_ran) = report(BackendKind::Vmclock, Some(5));
        rig.dispatcher.on_message(winner);
        assert_eq!(rig.journal.take(), [Effect::Persisted(1)]);
        let (duplicate, duplicate_ran) = report(BackendKind::FwCfg, Some(9));
        rig.dispatcher.on_message(duplicate);
        assert!(rig.journal.take().is_empty(), "no second bump");
        assert!(!raised(&winner_ran) && !raised(&duplicate_ran));

        rig.dispatcher
            .on_message(Message::Persisted(Ok(fakes::id_of(1))));
        let effects = rig.journal.take();
        assert_eq!(
            effects[1..4],
            sent_page_store(1),
            "the device page store: {effects:?}"
        );
        assert!(raised(&winner_ran) && raised(&duplicate_ran));
        assert_eq!(rig.dispatcher.device.generation(), 1);
    }

    #[test]
    fn while_a_persist_is_in_flight_every_other_request_is_answered_at_once() {
        let mut rig = mounted(4);
        rig.persist_deferred.set(true);
        rig.dispatcher.on_request(&fakes::ioctl(14, 1, TRIGGER, 0));
        assert_eq!(rig.journal.take(), [Effect::Persisted(5)]);
        rig.dispatcher.on_request(&fakes::open(16, libc::O_RDONLY));
        rig.dispatcher.on_request(&fakes::read(18, 1, true));
        rig.dispatcher.on_request(&fakes::poll(20, 1, 0));
        let sent = rig.journal.take_sent();
        assert_eq!(sent.len(), 3, "open, read and poll answered: {sent:?}");
        assert_eq!(
            errno_of(&sent[1], 18),
            libc::EAGAIN,
            "the published state: no bump yet"
        );
        assert_eq!(rig.dispatcher.snapshot().status.generation, 4);
        rig.dispatcher
            .on_message(Message::Persisted(Ok(fakes::id_of(5))));
        let sent = rig.journal.take_sent();
        assert!(
            sent.contains(&reply::ioctl(14, 0, &[])),
            "the trigger, at last: {sent:?}"
        );
    }

    #[test]
    fn what_follows_a_publish_waits_until_mappings_show_the_new_page() {
        let mut rig = mounted(4);
        rig.store_deferred.set(true);
        rig.dispatcher.on_request(&fakes::poll(10, 1, 77));
        rig.dispatcher.on_request(&fakes::read(12, 1, false));
        rig.journal.take();
        rig.dispatcher.on_request(&fakes::ioctl(14, 1, TRIGGER, 0));
        let store = page_store(5);
        let mut expected = vec![
            Effect::Persisted(5),
            Effect::PageStored(5),
            Effect::Status("serving generation 5".to_owned()),
        ];
        expected.extend(sent_page_store(5));
        assert_eq!(
            rig.journal.take(),
            expected,
            "no wake and no reply while the store is being written"
        );
        // Meanwhile fills are answered at once (a faulting mapper holds the page lock the
        // store waits for) and other requests reach the core.
        rig.dispatcher.on_request(&fakes::page_fill(16, 0, 4096));
        assert_eq!(
            rig.journal.take_sent(),
            [reply::data(16, &page_bytes(5, fakes::id_of(5), 0, 4096))]
        );
        rig.dispatcher
            .on_request(&fakes::write(18, 1, &[1, 1, 1, 1], true));
        let mut written_then_stored = vec![reply::write(18, 4)];
        written_then_stored.extend(store.clone());
        assert_eq!(rig.journal.take_sent(), written_then_stored);

        rig.dispatcher.on_request(&fakes::read(20, 1, true));
        assert_eq!(rig.journal.take(), [], "a later answer waits too");

        // The bump's store is written first, and its writer then sends what the bump ordered
        // after it: the trigger's answer, the wakeup, the woken read.
        rig.store_written();
        assert_eq!(
            rig.journal.take_sent(),
            [
                reply::ioctl(14, 0, &[]),
                reply::notify_poll(77),
                reply::data(12, &encode_generation(5)),
            ],
            "sent once the bump's store is written"
        );
        // The writeback's store, still in flight, holds what follows (a store in flight never
        // falls behind a newer value).
        rig.store_written();
        assert_eq!(
            rig.journal.take_sent(),
            [reply::data(20, &encode_generation(5))],
            "answered once every store is written"
        );
    }

    #[test]
    fn a_bumps_store_carries_the_trigger_answer_and_at_most_a_few_wakeups() {
        let mut rig = mounted(4);
        rig.store_deferred.set(true);
        let watchers = 3 * GATHER_LIMIT as u64;
        for i in 0..watchers {
            rig.dispatcher
                .on_request(&fakes::open(100 + 2 * i, libc::O_RDONLY));
            rig.dispatcher
                .on_request(&fakes::poll(3000 + 2 * i, 2 + i, 500 + i));
            rig.dispatcher
                .on_request(&fakes::read(1000 + 2 * i, 2 + i, false));
        }
        rig.journal.take();
        rig.dispatcher.on_request(&fakes::ioctl(14, 1, TRIGGER, 0));
        assert_eq!(
            rig.sends_in_flight(),
            [GATHER_LIMIT],
            "the trigger's answer and the first poll wakeups fill the store job"
        );
        rig.journal.take();
        rig.store_written();
        let sent = rig.journal.take_sent();
        let mut expected = vec![reply::ioctl(14, 0, &[])];
        expected.extend((0..watchers).map(|i| reply::notify_poll(500 + i)));
        expected.extend((0..watchers).map(|i| reply::data(1000 + 2 * i, &encode_generation(5))));
        assert_eq!(
            sent, expected,
            "the answer first, then every wakeup, then every reader, each in order"
        );
    }

    #[test]
    fn the_reads_a_bump_wakes_after_its_store_are_recorded_before_their_answers() {
        let mut rig = mounted(4);
        rig.store_deferred.set(true);
        let readers = sysgenid_core::READS_ANSWERED_AT_ONCE as u64 + 2;
        for i in 0..readers {
            rig.dispatcher
                .on_request(&fakes::open(100 + 2 * i, libc::O_RDONLY));
            rig.dispatcher
                .on_request(&fakes::read(1000 + 2 * i, 2 + i, false));
        }
        let last_read = RequestId(1000 + 2 * (readers - 1));
        rig.dispatcher.on_request(&fakes::ioctl(14, 1, TRIGGER, 0));
        rig.journal.take();
        rig.session.borrow_mut().clear();
        rig.store_written();
        let effects = rig.journal.take();
        let answered_at = effects
            .iter()
            .position(|e| *e == Effect::Sent(reply::data(last_read.0, &encode_generation(5))))
            .expect("the last read is answered once the store is written");
        let recorded_at = rig
            .session
            .borrow()
            .iter()
            .find(|(_, changes)| changes.requests.contains(&last_read))
            .map(|&(seen, _)| seen)
            .expect("its end is recorded");
        assert!(recorded_at <= answered_at, "{recorded_at} > {answered_at}");
    }

    #[test]
    fn a_store_wakes_the_loop_only_when_something_waits_on_it() {
        let mut rig = mounted(4);
        rig.store_deferred.set(true);
        rig.dispatcher.on_request(&fakes::ioctl(14, 1, TRIGGER, 0));
        assert!(
            !rig.asks_for_a_wake(false),
            "the trigger's answer goes with the store: nothing waits"
        );
        assert!(
            rig.asks_for_a_wake(true),
            "a handover waits for a quiet core"
        );
        // File 1 is outdated now; its read is answered at once, but only after the store.
        rig.dispatcher.on_request(&fakes::read(16, 1, false));
        assert!(rig.asks_for_a_wake(false), "an answer waits on the store");
        rig.journal.take();
        rig.store_written();
        assert_eq!(
            rig.journal.take_sent(),
            [
                reply::ioctl(14, 0, &[]),
                reply::data(16, &encode_generation(5))
            ]
        );
        assert!(!rig.asks_for_a_wake(true), "no store in flight");
    }

    #[test]
    fn a_handover_waits_for_a_store_in_flight_and_asks_to_be_woken() {
        let mut rig = mounted(4);
        rig.store_deferred.set(true);
        rig.dispatcher.on_request(&fakes::ioctl(14, 1, TRIGGER, 0));
        assert!(
            rig.dispatcher.quiet_state().is_none(),
            "its answer is not sent yet"
        );
        assert!(rig.asks_for_a_wake(true));
        rig.store_written();
        assert!(rig.dispatcher.quiet_state().is_some());
    }

    #[test]
    fn a_page_stored_again_after_a_writeback_holds_later_answers_and_asks_to_be_woken() {
        let mut rig = mounted(6);
        rig.store_deferred.set(true);
        rig.dispatcher
            .on_request(&fakes::write(16, 1, &[9, 9, 9, 9], true));
        assert!(!rig.asks_for_a_wake(false), "nothing waits on it yet");
        rig.dispatcher
            .on_request(&fakes::ioctl(18, 1, Ioctl::SetWatcherTracking.cmd(), 1));
        rig.journal.take();
        assert!(rig.asks_for_a_wake(false), "an answer waits on it");
        rig.store_written();
        assert_eq!(rig.journal.take_sent(), [reply::ioctl(18, 0, &[])]);
    }

    #[test]
    fn a_bumps_store_carries_only_kernel_sends_and_holds_the_rest() {
        let mut rig = mounted(4);
        rig.store_deferred.set(true);
        rig.dispatcher.on_request(&fakes::read(10, 1, false));
        rig.journal.take();
        // A control-socket trigger: its answer is no kernel send, so it waits for the store.
        let (answer, answered) = mpsc::sync_channel(1);
        rig.dispatcher.on_message(Message::TriggerIf {
            expect: 4,
            min: 0,
            caller: Caller {
                pid: 9,
                privileged: true,
            },
            reply: answer,
        });
        assert_eq!(
            answered.try_recv().ok(),
            None,
            "not before the page shows it"
        );
        assert!(
            rig.journal.take_sent().len() == 3,
            "only the page store is sent"
        );
        rig.store_written();
        assert_eq!(answered.try_recv().ok(), Some(Reply::Bumped(5)));
        assert_eq!(
            rig.journal.take_sent(),
            [reply::data(10, &encode_generation(5))],
            "then the wakeups, in the core's order"
        );
    }

    #[test]
    fn a_deferred_persist_that_fails_drops_the_joined_completions() {
        let mut rig = mounted(0);
        rig.persist_deferred.set(true);
        let (winner, winner_ran) = report(BackendKind::Vmclock, Some(5));
        rig.dispatcher.on_message(winner);
        let (duplicate, duplicate_ran) = report(BackendKind::Uevent, None);
        rig.dispatcher.on_message(duplicate);
        assert_eq!(rig.journal.take(), [Effect::Persisted(1)]);
        rig.dispatcher
            .on_message(Message::Persisted(Err("disk full".to_owned())));
        assert!(rig.journal.take().is_empty(), "nothing published");
        let (late, late_ran) = report(BackendKind::FwCfg, Some(1));
        rig.dispatcher.on_message(late);
        assert!(!raised(&winner_ran) && !raised(&duplicate_ran) && !raised(&late_ran));
        assert!(rig.dispatcher.snapshot().status.degraded);
    }

    #[test]
    fn a_backend_after_the_overseers_bump_is_the_same_restore() {
        let mut rig = mounted(3);
        let (reply, answer) = mpsc::sync_channel(1);
        let caller = Caller {
            pid: 9,
            privileged: true,
        };
        rig.dispatcher.on_message(Message::TriggerIf {
            expect: 3,
            min: 0,
            caller,
            reply,
        });
        assert_eq!(answer.try_recv(), Ok(Reply::Bumped(4)));
        rig.journal.take();
        rig.clock.set(rig.clock.get() + 500_000_000);
        let (late, ran) = report(BackendKind::FwCfg, Some(1));
        rig.dispatcher.on_message(late);
        assert!(raised(&ran), "handled: the overseer bumped for it");
        assert!(rig.journal.take().is_empty(), "no second bump");
        assert_eq!(rig.dispatcher.device.generation(), 4);
    }

    #[test]
    fn keys_known_at_start_are_not_restores() {
        let mut rig = mounted(0);
        rig.dispatcher.on_message(Message::KeyAtStart {
            backend: BackendKind::FwCfg,
            key: 7,
        });
        let (same, ran) = report(BackendKind::FwCfg, Some(7));
        rig.dispatcher.on_message(same);
        assert!(raised(&ran));
        assert_eq!(rig.dispatcher.device.generation(), 0);
    }

    #[test]
    fn the_session_holds_each_change_before_the_reply_that_depends_on_it() {
        let mut rig = mounted(4);
        let opened = rig.session.borrow().clone();
        // INIT and OPEN were answered: the open's file was recorded before its reply went out.
        let (seen, changes) = opened.last().cloned().expect("a record");
        assert_eq!(seen, 1, "after INIT's answer, before OPEN's");
        assert!(changes.files.contains(&sysgenid_core::FileId(1)));
        rig.dispatcher.on_request(&fakes::read(12, 1, false));
        let (seen, changes) = rig.session.borrow().last().cloned().unwrap();
        assert_eq!(seen, 0, "nothing sent since the journal was last taken");
        assert!(
            changes.requests.contains(&RequestId(12)),
            "the blocked read"
        );
        rig.dispatcher
            .on_request(&fakes::write(14, 1, &encode_generation(4), false));
        let (_, changes) = rig.session.borrow().last().cloned().unwrap();
        assert!(changes.files.contains(&sysgenid_core::FileId(1)), "the ack");
    }

    #[test]
    fn a_resent_read_the_core_waits_on_is_answered_once_under_its_new_id() {
        let (mut rig, resent) = mounted_with_a_resent_read();
        assert!(
            rig.journal.take_sent().is_empty(),
            "still blocked, not a second read"
        );
        assert_eq!(rig.dispatcher.device.status().pending_reads, 1);
        rig.dispatcher.on_request(&fakes::ioctl(14, 1, TRIGGER, 0));
        let answers: Vec<u64> = rig
            .journal
            .take_sent()
            .iter()
            .map(|m| split_reply(m).0.unique)
            .filter(|&u| u == 12 || u == resent)
            .collect();
        assert_eq!(answers, [resent], "the kernel only knows the new id");
    }

    #[test]
    fn a_resent_read_still_blocked_is_handed_over_under_its_new_id() {
        let (rig, resent) = mounted_with_a_resent_read();
        let (state, _) = rig.dispatcher.quiet_state().expect("quiet");
        let ids: Vec<u64> = state.pending.iter().map(|p| p.request().0).collect();
        assert_eq!(ids, [resent], "the id the kernel knows");
    }

    #[test]
    fn a_read_held_under_its_resent_id_is_taken_once_and_can_be_interrupted() {
        // A daemon that took the device over with a resent read, then crashed: the core holds
        // the read under its resent id, and the kernel sends it again under the same id.
        let mut rig = mounted(4);
        let resent = 12 | RESENT_BIT;
        rig.dispatcher.on_request(&fakes::read(resent, 1, false));
        rig.dispatcher.on_request(&fakes::read(resent, 1, false));
        assert!(rig.journal.take_sent().is_empty(), "still blocked");
        assert_eq!(rig.dispatcher.device.status().pending_reads, 1, "one read");
        rig.dispatcher.on_request(&fakes::request(
            wire::FUSE_INTERRUPT,
            resent | 1,
            &resent.to_ne_bytes(),
        ));
        let sent = rig.journal.take_sent();
        let (header, _) = split_reply(&sent[0]);
        assert_eq!(
            (header.unique, header.error),
            (resent, -libc::EINTR),
            "interrupted under the id the kernel knows"
        );
        assert_eq!(rig.dispatcher.device.status().pending_reads, 0);
    }

    #[test]
    fn a_resent_open_gets_the_file_it_made() {
        let mut rig = mounted(4);
        rig.dispatcher
            .on_request(&fakes::open(2 | RESENT_BIT, libc::O_RDWR));
        let sent = rig.journal.take_sent();
        let (header, body) = split_reply(&sent[0]);
        assert_eq!(header.unique, 2 | RESENT_BIT);
        assert_eq!(wire::OpenOut::decode(body).unwrap().fh, 1, "the same file");
        assert_eq!(
            rig.dispatcher.device.status().open_files,
            1,
            "no second file"
        );
        rig.dispatcher
            .on_request(&fakes::open(30 | RESENT_BIT, libc::O_RDWR));
        let sent = rig.journal.take_sent();
        let out = wire::OpenOut::decode(split_reply(&sent[0]).1).unwrap();
        assert_eq!(out.fh, 2, "an open the core never saw is a new file");
    }
}
