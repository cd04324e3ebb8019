//! Messages from other threads to the event loop, with an eventfd that wakes its poll.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc;

use rustix::event::{EventfdFlags, eventfd};

use sysgenid_core::{Caller, Reply};

use crate::backends::BackendKind;
use crate::control::StatusSnapshot;

/// Something for the event loop to do.
#[derive(Debug)]
pub enum Message {
    /// Send a status snapshot back.
    Status(mpsc::SyncSender<StatusSnapshot>),
    /// A conditional trigger from the control socket; the core's reply goes back.
    TriggerIf {
        /// The generation the caller expects to be current.
        expect: u32,
        /// The new generation is at least this.
        min: u32,
        /// The peer, as the control thread judged it.
        caller: Caller,
        /// Where the reply goes.
        reply: mpsc::SyncSender<Reply>,
    },
    /// A hardware backend saw a restore. The loop judges it with the dedupe policy, in inbox
    /// order: a new restore bumps, and a report of one already counted waits for that bump.
    Report {
        /// The backend.
        backend: BackendKind,
        /// The hardware's identity value for the state it saw, if it has one.
        key: Option<u128>,
        /// Run once the bump that counts this restore is persisted and published: the backend
        /// marks the restore as handled only then, so a daemon that dies first, or whose bump
        /// fails, sees it again at its next start.
        completion: Completion,
    },
    /// A backend's key at start: a state handled before this run, never a restore.
    KeyAtStart {
        /// The backend.
        backend: BackendKind,
        /// Its identity value.
        key: u128,
    },
    /// The outcome of a persist that a [`crate::effects::Persist`] started elsewhere.
    Persisted(Result<sysgenid_core::GenerationId, String>),
    /// The device path no longer shows this daemon's mount (`umount -l` from outside).
    MountLost,
    /// The device answered its first stat: the daemon is serving.
    Serving,
    /// A new daemon of this uid asks to take the device over.
    HandoverAsked(crate::handover::Asked),
    /// Stop serving: unmount and exit.
    Shutdown {
        /// Why, for the log.
        reason: String,
    },
}

/// What a backend runs once a restore it reported is handled (writes its record, acknowledges
/// its probe): the closures run in the order they were joined.
#[derive(Default)]
pub struct Completion(Vec<Box<dyn FnOnce() + Send>>);

impl Completion {
    /// Nothing to do.
    pub fn nothing() -> Completion {
        Completion::default()
    }

    /// Run `f` once the restore is handled.
    pub fn then(f: impl FnOnce() + Send + 'static) -> Completion {
        Completion(vec![Box::new(f)])
    }

    /// Runs it now.
    pub fn run(self) {
        for f in self.0 {
            f();
        }
    }

    /// Adds `next`, to run after what is already here.
    pub fn join(&mut self, next: Completion) {
        self.0.extend(next.0);
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Completion({} to run)", self.0.len())
    }
}

/// The sending side, cheap to clone into any thread.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: mpsc::Sender<Message>,
    wake: Arc<OwnedFd>,
}

/// The receiving side, owned by the event loop.
#[derive(Debug)]
pub struct InboxReceiver {
    rx: mpsc::Receiver<Message>,
    wake: Arc<OwnedFd>,
}

/// A connected inbox.
pub fn inbox() -> std::io::Result<(Inbox, InboxReceiver)> {
    let wake = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
    let (tx, rx) = mpsc::channel();
    Ok((
        Inbox {
            tx,
            wake: Arc::clone(&wake),
        },
        InboxReceiver { rx, wake },
    ))
}

impl Inbox {
    /// The descriptor that wakes the loop, which a thread with its own table must keep.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Wakes the loop with no message, for news it reads elsewhere (a page store written).
    pub fn wake(&self) {
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
    }

    /// Queues a message and wakes the loop. A message for a loop that is gone is dropped.
    pub fn send(&self, message: Message) {
        if self.tx.send(message).is_ok() {
            self.wake();
        }
    }
}

impl InboxReceiver {
    /// Every queued message, clearing the wake signal first so none is missed.
    pub fn drain(&self) -> Vec<Message> {
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&*self.wake, &mut counter);
        self.rx.try_iter().collect()
    }
}

impl AsFd for InboxReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}
