//! The two jobs that may wait on a disk or on the kernel run on threads of their own, so the
//! thread that reads `/dev/fuse` never waits on them: the persist of a new generation (a frozen
//! or slow state directory), and the device page store (`FUSE_NOTIFY_STORE` waits for a page
//! lock that a faulting mapper holds until the serving thread answers its fill).
//!
//! Each worker takes jobs in order from a channel and reports each outcome through the inbox.
//! It ends when the dispatcher drops its sender.

use std::sync::{Arc, mpsc};

use sysgenid_fuse::{Channel, Sent};

use crate::effects::{DeviceStore, Persist, Persisting, Storing};
use crate::inbox::{Inbox, Message};
use crate::state::StateFile;

/// Persists on its own thread; the outcome comes back as `Message::Persisted`.
#[derive(Debug)]
pub struct PersistWorker {
    jobs: mpsc::Sender<u32>,
}

impl PersistWorker {
    /// Starts the thread that owns `state`.
    pub fn start(mut state: StateFile, inbox: Inbox) -> std::io::Result<PersistWorker> {
        let (jobs, queue) = mpsc::channel::<u32>();
        std::thread::Builder::new()
            .name("persist".to_owned())
            .spawn(move || {
                for generation in queue {
                    let result = state.persist(generation).map_err(|e| e.to_string());
                    inbox.send(Message::Persisted(result));
                }
            })?;
        Ok(PersistWorker { jobs })
    }
}

impl Persist for PersistWorker {
    fn persist(&mut self, generation: u32) -> Persisting {
        match self.jobs.send(generation) {
            Ok(()) => Persisting::Started,
            Err(_) => Persisting::Done(Err("the persist thread is gone".to_owned())),
        }
    }
}

/// Writes device page stores on its own thread; each completion comes back as
/// `Message::DeviceStored`.
#[derive(Debug)]
pub struct StoreWorker {
    jobs: mpsc::Sender<Vec<u8>>,
}

impl StoreWorker {
    /// Starts the thread that writes to `channel`.
    pub fn start(channel: Arc<Channel>, inbox: Inbox) -> std::io::Result<StoreWorker> {
        let (jobs, queue) = mpsc::channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("page-store".to_owned())
            .spawn(move || {
                for message in queue {
                    match channel.send(&message) {
                        Ok(Sent::Delivered | Sent::NotFound | Sent::Unmounted) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot store the device page"),
                    }
                    inbox.send(Message::DeviceStored);
                }
            })?;
        Ok(StoreWorker { jobs })
    }
}

impl DeviceStore for StoreWorker {
    fn store(&mut self, message: Vec<u8>) -> Storing {
        match self.jobs.send(message) {
            Ok(()) => Storing::Started,
            Err(_) => {
                tracing::warn!("the page-store thread is gone; device mappings miss this value");
                Storing::Done
            }
        }
    }
}
