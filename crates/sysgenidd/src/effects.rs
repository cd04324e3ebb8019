//! The event loop's side effects as small traits, with the daemon's real implementations.
//!
//! As in rust-vmm's vm-superio, the code that decides what to do (the FUSE adapter and the
//! dispatcher) only sees these traits, so its unit tests run without `/dev/fuse`, a state
//! directory, a page mapping, a clock or a service manager.

use std::fmt::Debug;
use std::sync::Arc;

use sysgenid_core::{Changes, Device, GenerationId, Time};
use sysgenid_fuse::{Channel, Negotiated, Sent};

use crate::caps::TriggerPolicy;

/// Where reply and notification messages go: the FUSE connection.
pub trait Kernel: Debug {
    /// Sends one whole message. A failure is logged, not returned: the kernel may have dropped
    /// the request (an interrupt) or the whole connection, and the loop carries on either way.
    fn send(&mut self, message: &[u8]);
}

/// Draws a new generation's random ID, makes both durable, then shows them in the page file,
/// before anyone else sees them.
///
/// The core waits for the outcome (`Event::PersistDone`) and keeps serving meanwhile, so a
/// persist may finish at once or later: the daemon's writer
/// ([`crate::workers::PersistWorker`]) runs on a thread of its own, answers
/// [`Persisting::Started`] and sends its outcome through the inbox (`Message::Persisted`).
pub trait Persist: Debug {
    /// Starts making `generation` and a freshly drawn ID durable.
    fn persist(&mut self, generation: u32) -> Persisting;
}

/// What became of a persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persisting {
    /// Finished: durable with this ID, or the reason it is not.
    Done(Result<GenerationId, String>),
    /// Under way elsewhere: the outcome comes through the inbox as `Message::Persisted`.
    Started,
}

/// Puts a page into every device mapping (`FUSE_NOTIFY_STORE`). The kernel may wait for a page
/// lock that a faulting mapper holds until its fill is answered, and only the serving thread
/// answers fills, so the daemon's store is written on a thread of its own
/// ([`crate::workers::StoreWorker`]), which counts the jobs it has written. It wakes the loop
/// (through the inbox's eventfd) only when the loop has said it waits for one.
pub trait DeviceStore: Debug {
    /// Starts writing `job`: its page messages, each whole and in order (the seqlock steps of
    /// one page update), then its kernel sends.
    fn store(&mut self, job: StoreJob) -> Storing;
    /// How many started jobs are written, after saying whether the loop must be woken when
    /// the next one is. Setting the wish and reading the count are ordered against the
    /// writer's counting and reading of the wish, so a job written meanwhile is either
    /// counted here or wakes the loop: never neither.
    fn written(&self, wake_me: bool) -> u64;
}

/// A device page store and the kernel sends that must follow it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreJob {
    /// The `FUSE_NOTIFY_STORE` messages of one page update.
    pub page: Vec<Vec<u8>>,
    /// Replies and poll wakeups the core ordered after the page update (a bump's trigger
    /// answer, its wakeups): sent by whoever writes the page, right after it, which saves the
    /// serving thread a round trip through the inbox.
    pub then: Vec<Vec<u8>>,
}

/// What became of a device page store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storing {
    /// Written (or given up on).
    Done,
    /// Under way elsewhere: [`DeviceStore::written`] counts it once it is written.
    Started,
}

/// Keeps the device's lasting state outside the serving process (the session memfd that the
/// keeper or the fd store holds), written before the replies that depend on it.
pub trait SessionStore: Debug {
    /// Writes the files and requests in `changes` as `device` has them, and the header (the
    /// counter, the INIT agreement) if it changed.
    fn record(&mut self, device: &Device, changes: &Changes, fuse: Option<Negotiated>);
}

/// The loop's monotonic clock.
pub trait Clock: Debug {
    /// Now, in nanoseconds from the clock's epoch.
    fn now(&self) -> Time;
}

/// Judges who may bump the generation with `TRIGGER_GEN_UPDATE`.
pub trait TriggerJudge: Debug {
    /// Whether thread `pid` may trigger a bump.
    fn may_trigger(&self, pid: u32) -> bool;
}

/// The service manager, told when the daemon is ready and what it serves.
pub trait Supervisor: Debug {
    /// The daemon is ready; `status` says what it serves.
    fn ready(&mut self, status: &str);
    /// What the daemon serves now.
    fn status(&mut self, status: &str);
}

/// One of each side effect: what the dispatcher acts through.
#[derive(Debug)]
pub struct Effects {
    /// The FUSE connection.
    pub kernel: Box<dyn Kernel>,
    /// The state file and the page file.
    pub state: Box<dyn Persist>,
    /// Device mappings.
    pub device_page: Box<dyn DeviceStore>,
    /// The lasting state's copy.
    pub session: Box<dyn SessionStore>,
    /// The clock.
    pub clock: Box<dyn Clock>,
    /// The trigger policy.
    pub judge: Box<dyn TriggerJudge>,
    /// The service manager.
    pub supervisor: Box<dyn Supervisor>,
}

impl Kernel for Arc<Channel> {
    fn send(&mut self, message: &[u8]) {
        match Channel::send(self, message) {
            Ok(Sent::Delivered | Sent::NotFound | Sent::Unmounted) => {}
            Err(e) => tracing::warn!(error = %e, "cannot send to the kernel"),
        }
    }
}

/// `CLOCK_MONOTONIC`: one clock for every process of a boot, so the deadlines in a snapshot
/// mean the same to the daemon that takes it over.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Time {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let ns = u64::try_from(now.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000);
        Time(ns.saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0)))
    }
}

impl TriggerJudge for Arc<TriggerPolicy> {
    fn may_trigger(&self, pid: u32) -> bool {
        TriggerPolicy::may_trigger(self, pid)
    }
}

/// systemd's `sd_notify`, which does nothing when the daemon was not started by it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SdNotify;

impl Supervisor for SdNotify {
    fn ready(&mut self, status: &str) {
        let _ = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(status),
            ],
        );
    }

    fn status(&mut self, status: &str) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(status)]);
    }
}
