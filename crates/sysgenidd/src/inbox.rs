//! Messages from other threads to the event loop, with an eventfd that wakes its poll.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc;

use rustix::event::{EventfdFlags, eventfd};

use sysgenid_core::{Caller, Reply};

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
    /// A hardware backend saw a restore.
    HardwareBump {
        /// The backend's name.
        backend: String,
        /// Run once the bump is persisted and published: the backend records the restore as
        /// handled only then, so a daemon that dies first sees it again at its next start.
        applied: Applied,
    },
    /// A report that was the same restore as `winner`'s bump: run `applied` once that bump is
    /// applied (at once if it already was; dropped if it fails).
    AfterBump {
        /// The backend (or `trigger-if`) whose bump counted the restore.
        winner: String,
        /// What the dropped report's backend does then.
        applied: Applied,
    },
    /// The device answered its first stat: the daemon is serving.
    Serving,
    /// Stop serving: unmount and exit.
    Shutdown {
        /// Why, for the log.
        reason: String,
    },
}

/// What a backend does once its bump is applied (write its record, acknowledge its probe).
pub struct Applied(Option<Box<dyn FnOnce() + Send>>);

impl Applied {
    /// Nothing to do.
    pub fn nothing() -> Applied {
        Applied(None)
    }

    /// Run `f` once the bump is applied.
    pub fn then(f: impl FnOnce() + Send + 'static) -> Applied {
        Applied(Some(Box::new(f)))
    }

    /// Runs it now.
    pub fn run(self) {
        if let Some(f) = self.0 {
            f();
        }
    }

    /// This, then `next`.
    pub fn and(self, next: Applied) -> Applied {
        match (self.0, next.0) {
            (None, next) => Applied(next),
            (first, None) => Applied(first),
            (Some(first), Some(next)) => Applied::then(move || {
                first();
                next();
            }),
        }
    }
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Applied(..)"
        } else {
            "Applied(none)"
        })
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
    /// Queues a message and wakes the loop. A message for a loop that is gone is dropped.
    pub fn send(&self, message: Message) {
        if self.tx.send(message).is_ok() {
            let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
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
