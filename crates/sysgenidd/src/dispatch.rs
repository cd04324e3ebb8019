//! What the event loop does with each input: FUSE requests (through the [`FuseAdapter`]), inbox
//! messages and timeouts become core events, and every core action is carried out, in order,
//! through the [`Effects`] traits.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::time::Duration;

use sysgenid_abi::Errno;
use sysgenid_core::{
    Action, BumpSource, BumpToken, Device, Event, PollHandle, Reply, RequestId, Time,
};
use sysgenid_fuse::reply;

use crate::backends::Reporter;
use crate::control::{DaemonFacts, Snapshot};
use crate::effects::Effects;
use crate::fuse_adapter::{Context, FuseAdapter, Routed, reply_message};
use crate::inbox::{Applied, Message};

/// Request ids of control-socket requests have this bit set. FUSE request ids count up from 0
/// in steps of 2 (the low bit marks interrupts), so they never reach it.
const CONTROL_REQUEST_BIT: u64 = 1 << 63;

/// Why serving ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// A shutdown message (a signal).
    Shutdown(String),
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
    /// Backend bumps not applied yet, oldest first, with what to run once they are.
    pending_backend_bumps: VecDeque<(String, Applied)>,
    /// The backends' dedupe policy, told of the overseer's conditional bumps.
    reporter: Option<Reporter>,
    facts: DaemonFacts,
}

impl Dispatcher {
    /// A dispatcher for `device`, acting through `effects`.
    pub fn new(
        device: Device,
        fuse: FuseAdapter,
        effects: Effects,
        facts: DaemonFacts,
    ) -> Dispatcher {
        Dispatcher {
            device,
            fuse,
            effects,
            control_requests: HashMap::new(),
            next_control_request: 0,
            pending_backend_bumps: VecDeque::new(),
            reporter: None,
            facts,
        }
    }

    /// Tells the backends' dedupe policy of the overseer's conditional bumps.
    pub fn with_reporter(mut self, reporter: Reporter) -> Dispatcher {
        self.reporter = Some(reporter);
        self
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
            clock: &*self.effects.clock,
            judge: &*self.effects.judge,
        };
        match self.fuse.route(bytes, &cx) {
            Routed::Answer(message) => self.effects.kernel.send(&message),
            Routed::Core(event) => self.feed(event),
            Routed::CoreThenAnswer(event, message) => {
                self.feed(event);
                self.effects.kernel.send(&message);
            }
            Routed::RefusedWriteback(message) => {
                self.effects.kernel.send(&message);
                self.store_device_page(self.device.generation());
            }
            Routed::Nothing => {}
            Routed::Destroy(message) => {
                self.effects.kernel.send(&message);
                return Some(Stopped::Unmounted);
            }
        }
        None
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
            Message::HardwareBump { backend, applied } => {
                // Queued first: the bump may be persisted and published inside `feed`.
                self.pending_backend_bumps
                    .push_back((backend.clone(), applied));
                self.feed(Event::HardwareBump {
                    backend: &backend,
                    token: BumpToken(0),
                });
            }
            Message::AfterBump { winner, applied } => {
                match self
                    .pending_backend_bumps
                    .iter_mut()
                    .rev()
                    .find(|(b, _)| *b == winner)
                {
                    Some((_, pending)) => {
                        let first = std::mem::replace(pending, Applied::nothing());
                        *pending = first.and(applied);
                    }
                    None => applied.run(),
                }
            }
            Message::Serving => self.serving(),
            Message::Shutdown { reason } => return Some(Stopped::Shutdown(reason)),
        }
        None
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
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
        while let Some(action) = self.device.poll_action() {
            self.carry_out(action);
        }
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Reply { request, reply } => self.answer(request, reply),
            Action::WakePoll(PollHandle(kh)) => self.effects.kernel.send(&reply::notify_poll(kh)),
            Action::Persist(generation) => {
                let result = self.effects.state.persist(generation);
                self.persisted(result);
            }
            Action::Publish {
                generation, source, ..
            } => self.publish(generation, &source),
            Action::BumpFailed {
                source,
                error,
                detail,
                ..
            } => self.bump_failed(&source, error, detail),
        }
    }

    /// Hands the outcome of a persist to the core; its actions join the queue `feed` drains.
    fn persisted(&mut self, result: Result<(), String>) {
        if let Err(e) = &result {
            tracing::error!(error = %e, "persist failed; the bump is refused");
        }
        self.device.handle(Event::PersistDone { result });
    }

    fn answer(&mut self, request: RequestId, reply: Reply) {
        if let Some(answer) = self.control_requests.remove(&request) {
            if let (Reply::Bumped(_), Some(reporter)) = (&reply, &self.reporter) {
                reporter.bumped_by_overseer();
            }
            // The control thread may have given up waiting; then no one listens.
            let _ = answer.try_send(reply);
            return;
        }
        self.effects.kernel.send(&reply_message(request, reply));
    }

    /// Shows a persisted generation: the page file, then every device mapping.
    fn publish(&mut self, generation: u32, source: &BumpSource) {
        self.effects.page.publish(generation);
        self.store_device_page(generation);
        tracing::info!(generation, %source, "new generation");
        self.effects
            .supervisor
            .status(&format!("serving generation {generation}"));
        if let BumpSource::Backend(backend) = source
            && let Some(applied) = self.take_backend_bump(backend)
        {
            applied.run();
        }
    }

    fn bump_failed(&mut self, source: &BumpSource, error: Errno, detail: Option<String>) {
        let why = match error {
            Errno::Overflow => "the generation is at u32::MAX".to_owned(),
            _ => detail.unwrap_or_else(|| error.name().to_owned()),
        };
        tracing::error!(%source, error = error.name(), why, "bump failed; the generation is unchanged");
        if let BumpSource::Backend(backend) = source
            && self.take_backend_bump(backend).is_some()
        {
            tracing::warn!(
                backend,
                "the backend's restore stays unacknowledged: its next start reports it again"
            );
        }
    }

    /// The completion of the oldest pending bump of `backend` (the core applies bumps in order).
    fn take_backend_bump(&mut self, backend: &str) -> Option<Applied> {
        let at = self
            .pending_backend_bumps
            .iter()
            .position(|(b, _)| b == backend)?;
        self.pending_backend_bumps.remove(at).map(|(_, a)| a)
    }

    /// Puts the page of `generation` into every device mapping.
    fn store_device_page(&mut self, generation: u32) {
        if let Some(message) = self.fuse.device_page_store(generation) {
            self.effects.kernel.send(&message);
        }
    }
}

#[cfg(test)]
mod tests {
    use sysgenid_abi::{Ioctl, encode_generation};
    use sysgenid_core::Caller;
    use sysgenid_fuse::wire::{self, Wire};

    use super::*;
    use crate::fakes::{self, Effect, Rig, errno_of, rig, split_reply};
    use crate::fuse_adapter::page_bytes;

    const TRIGGER: u32 = Ioctl::TriggerGenUpdate.cmd();

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
    fn a_bump_persists_then_publishes_then_wakes_and_answers() {
        let mut rig = mounted(4);
        rig.dispatcher.on_request(&fakes::poll(10, 1, 77));
        rig.dispatcher.on_request(&fakes::read(12, 1, false));
        let polled = rig.journal.take_sent();
        assert_eq!(polled.len(), 1, "the blocking read waits: {polled:?}");

        rig.dispatcher.on_request(&fakes::ioctl(14, 1, TRIGGER, 0));
        let effects = rig.journal.take();
        let expected = vec![
            Effect::Persisted(5),
            Effect::PageStored(5),
            Effect::Sent(reply::notify_store(
                wire::FUSE_ROOT_ID,
                0,
                &page_bytes(5, 0, 4096),
            )),
            Effect::Status("serving generation 5".to_owned()),
            Effect::Sent(reply::notify_poll(77)),
            Effect::Sent(reply::data(12, &encode_generation(5))),
            Effect::Sent(reply::ioctl(14, 0, &[])),
        ];
        assert_eq!(effects, expected);
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
    fn a_writeback_is_refused_and_the_true_page_stored_again() {
        let mut rig = mounted(6);
        rig.dispatcher
            .on_request(&fakes::write(16, 1, &[9, 9, 9, 9], true));
        let sent = rig.journal.take_sent();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(errno_of(&sent[0], 16), libc::EACCES);
        assert_eq!(
            sent[1],
            reply::notify_store(wire::FUSE_ROOT_ID, 0, &page_bytes(6, 0, 4096))
        );
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
}
