//! The event loop: waits on the FUSE channel, the inbox and the core's soonest deadline, and
//! hands what arrives to the [`Dispatcher`].
//!
//! One thread owns the FUSE channel and the core (the state file and the page file belong to the
//! persist worker, the device page store to its own worker). It waits in `poll(2)`; a blocked `read(2)` or `WAIT_WATCHERS` is an entry in the core, never a blocked
//! thread.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags, Timespec};
use sysgenid_core::Device;
use sysgenid_fuse::{Channel, Received, RequestBuffer};

use crate::backends::dedupe::DEFAULT_WINDOW;
use crate::caps::TriggerPolicy;
use crate::config::Config;
use crate::control::DaemonFacts;
use crate::dispatch::Dispatcher;
pub use crate::dispatch::Stopped;
use crate::effects::{Effects, MonotonicClock, SdNotify};
use crate::fuse_adapter::{FileAttributes, FuseAdapter, MAX_WRITE};
use crate::inbox::{Inbox, InboxReceiver};
use crate::page::PageFile;
use crate::state::StateFile;
use crate::workers::{PersistWorker, StoreWorker};

/// Requests read per wakeup before the inbox gets a turn.
const BATCH: usize = 64;

/// Errors that end the loop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The FUSE device failed.
    #[error(transparent)]
    Channel(#[from] sysgenid_fuse::ChannelError),
    /// Waiting for events failed.
    #[error("poll failed: {0}")]
    Poll(#[source] std::io::Error),
    /// A worker thread could not start.
    #[error("cannot start a worker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What the loop serves from: the mounted channel and the parts the dispatcher acts on.
#[derive(Debug)]
pub struct Serving {
    /// The FUSE connection of the mount.
    pub channel: Channel,
    /// The persisted counter.
    pub state: StateFile,
    /// The page file, if it could be opened.
    pub page: Option<PageFile>,
    /// The generation to start from.
    pub generation: u32,
    /// The starting value could not be made durable: status says so until a persist works.
    pub degraded: bool,
    /// Who may trigger a bump.
    pub policy: Arc<TriggerPolicy>,
    /// Messages from other threads.
    pub inbox: InboxReceiver,
    /// The sending side of the inbox, for the persist and page-store workers.
    pub outbox: Inbox,
    /// What status reports about the daemon.
    pub facts: DaemonFacts,
}

/// The serving state: the channel and inbox it waits on, and the dispatcher.
#[derive(Debug)]
pub struct Server {
    channel: Arc<Channel>,
    inbox: InboxReceiver,
    dispatcher: Dispatcher,
}

impl Server {
    /// A server for an open channel, with the state already loaded; starts the persist and
    /// page-store threads.
    pub fn new(config: &Config, serving: Serving) -> Result<Server, ServerError> {
        let channel = Arc::new(serving.channel);
        let attributes = FileAttributes {
            mode: config.mode,
            uid: config.uid,
            gid: config.gid,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        };
        let effects = Effects {
            kernel: Box::new(Arc::clone(&channel)),
            state: Box::new(
                PersistWorker::start(serving.state, serving.page, serving.outbox.clone())
                    .map_err(ServerError::Thread)?,
            ),
            device_page: Box::new(
                StoreWorker::start(Arc::clone(&channel), serving.outbox)
                    .map_err(ServerError::Thread)?,
            ),
            clock: Box::new(MonotonicClock::start()),
            judge: Box::new(serving.policy),
            supervisor: Box::new(SdNotify),
        };
        let mut device = Device::new(serving.generation);
        if serving.degraded {
            device.mark_degraded();
        }
        let dispatcher = Dispatcher::new(
            device,
            FuseAdapter::new(attributes, config.device_mmap),
            effects,
            serving.facts,
            DEFAULT_WINDOW,
        );
        Ok(Server {
            channel,
            inbox: serving.inbox,
            dispatcher,
        })
    }

    /// Serves until a shutdown message or the end of the connection.
    pub fn run(&mut self) -> Result<Stopped, ServerError> {
        self.channel
            .set_nonblocking(true)
            .map_err(ServerError::Poll)?;
        let mut buf = RequestBuffer::new(MAX_WRITE);
        loop {
            let Some((fuse_ready, inbox_ready)) = self.wait()? else {
                continue;
            };
            if inbox_ready {
                for message in self.inbox.drain() {
                    if let Some(stopped) = self.dispatcher.on_message(message) {
                        return Ok(stopped);
                    }
                }
            }
            if fuse_ready && let Some(stopped) = self.serve_requests(&mut buf)? {
                return Ok(stopped);
            }
            self.dispatcher.on_timeout();
        }
    }

    /// Waits for the channel, the inbox or the soonest deadline; which of the two fds are
    /// ready, or `None` when a signal interrupted the wait.
    fn wait(&self) -> Result<Option<(bool, bool)>, ServerError> {
        let timeout = self.dispatcher.poll_timeout().map(|wait| Timespec {
            tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: wait.subsec_nanos().into(),
        });
        let mut fds = [
            PollFd::new(&*self.channel, PollFlags::IN),
            PollFd::new(&self.inbox, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) => Ok(Some((
                !fds[0].revents().is_empty(),
                !fds[1].revents().is_empty(),
            ))),
            Err(rustix::io::Errno::INTR) => Ok(None),
            Err(e) => Err(ServerError::Poll(e.into())),
        }
    }

    /// Reads and handles up to [`BATCH`] requests.
    fn serve_requests(&mut self, buf: &mut RequestBuffer) -> Result<Option<Stopped>, ServerError> {
        for _ in 0..BATCH {
            match self.channel.try_receive(buf)? {
                None => break,
                Some(Received::Unmounted) => return Ok(Some(Stopped::Unmounted)),
                Some(Received::Message(bytes)) => {
                    if let Some(stopped) = self.dispatcher.on_request(bytes) {
                        return Ok(Some(stopped));
                    }
                }
            }
        }
        Ok(None)
    }
}
