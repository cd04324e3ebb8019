//! The event loop: waits on the FUSE channel, the inbox and the core's soonest deadline, and
//! hands what arrives to the [`Dispatcher`].
//!
//! One thread owns the FUSE channel and the core (the state file and the page file belong to the
//! persist worker, or to this thread where the state directory is in memory; the device page
//! store to its own worker). It waits in `poll(2)`; a blocked `read(2)` or `WAIT_WATCHERS` is
//! an entry in the core, never a blocked thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags, Timespec};
use sysgenid_core::{BumpSource, Device, GenerationId};
use sysgenid_fuse::{Channel, Received, RequestBuffer};

use crate::backends::dedupe::DEFAULT_WINDOW;
use crate::caps::TriggerPolicy;
use crate::config::Config;
use crate::control::DaemonFacts;
use crate::dispatch::Dispatcher;
pub use crate::dispatch::Stopped;
use crate::effects::{Effects, MonotonicClock, SdNotify};
use crate::fuse_adapter::{FileAttributes, FuseAdapter, MAX_WRITE};
use crate::handover::{self, Asked, Snapshot};
use crate::inbox::{Inbox, InboxReceiver, Message};
use crate::page::PageFile;
use crate::session::{HeaderFacts, SessionWriter};
use crate::start::Start;
use crate::state::StateFile;
use crate::workers::{StoreWorker, start_persist};

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
    /// A handed-over state cannot be served.
    #[error("the handed-over device state is impossible: {0}")]
    Snapshot(#[source] sysgenid_core::BadState),
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
    /// Its ID.
    pub generation_id: GenerationId,
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
    /// What a next daemon needs to know about the mount.
    pub mount_facts: HeaderFacts,
    /// The copy of the lasting state outside this process.
    pub session: SessionWriter,
    /// The state a previous process left, when this one continues its connection.
    pub resumed: Option<Snapshot>,
    /// Whether the previous process died with requests read and not answered: ask the kernel
    /// to send them again.
    pub resend: bool,
    /// Opens when the previous serving process, still exiting at this start, is gone; the
    /// device page store waits for it.
    pub store_gate: Option<std::sync::mpsc::Receiver<()>>,
}

impl Serving {
    /// What a start left, with the helpers' parts.
    pub fn from_start(
        start: Start,
        policy: Arc<TriggerPolicy>,
        (inbox, outbox): (InboxReceiver, Inbox),
        facts: DaemonFacts,
        mount_facts: HeaderFacts,
    ) -> Serving {
        Serving {
            channel: start.channel,
            state: start.recovered.state,
            page: start.page,
            generation: start.recovered.generation,
            generation_id: start.recovered.generation_id,
            degraded: start.recovered.degraded.is_some(),
            policy,
            inbox,
            outbox,
            facts,
            session: SessionWriter::new(start.session, mount_facts.clone()),
            mount_facts,
            resumed: start.resumed,
            resend: start.resend,
            store_gate: None,
        }
    }
}

/// The serving state: the channel and inbox it waits on, and the dispatcher.
#[derive(Debug)]
pub struct Server {
    channel: Arc<Channel>,
    inbox: InboxReceiver,
    dispatcher: Dispatcher,
    device_path: PathBuf,
    mount_facts: HeaderFacts,
    resend: bool,
    /// A new daemon waiting for the device, and until when it may wait for a quiet moment.
    /// Requests are served meanwhile: a bump under way may need them to finish (a page store
    /// waits for the page fill of a mapper), and no client waits for the handover.
    asked: Option<(Asked, Instant)>,
}

impl Server {
    /// A server for an open channel, with the state already loaded; starts the page-store
    /// thread and, unless the state directory is in memory, the persist thread.
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
            state: start_persist(serving.state, serving.page, serving.outbox.clone())
                .map_err(ServerError::Thread)?,
            device_page: Box::new(
                StoreWorker::start(Arc::clone(&channel), serving.outbox, serving.store_gate)
                    .map_err(ServerError::Thread)?,
            ),
            session: Box::new(serving.session),
            clock: Box::new(MonotonicClock),
            judge: Box::new(serving.policy),
            supervisor: Box::new(SdNotify),
        };
        let (mut device, fuse) = match serving.resumed {
            Some(mut snapshot) => (
                {
                    // A snapshot of a daemon older than the ID: the start paired one with it.
                    if snapshot.device.generation_id.is_none() {
                        snapshot.device.generation_id = serving.generation_id;
                    }
                    Device::from_state(snapshot.device).map_err(ServerError::Snapshot)?
                },
                FuseAdapter::resumed(attributes, config.device_mmap, snapshot.fuse.into()),
            ),
            None => (
                Device::new(serving.generation).with_generation_id(serving.generation_id),
                FuseAdapter::new(attributes, config.device_mmap),
            ),
        };
        if serving.degraded {
            device.mark_degraded();
        }
        // A value the previous process made durable and died before showing.
        device.catch_up(
            serving.generation,
            serving.generation_id,
            BumpSource::Backend("restart".to_owned()),
        );
        let mut dispatcher = Dispatcher::new(device, fuse, effects, serving.facts, DEFAULT_WINDOW);
        dispatcher.start();
        Ok(Server {
            channel,
            inbox: serving.inbox,
            dispatcher,
            device_path: config.device.clone(),
            mount_facts: serving.mount_facts,
            resend: serving.resend,
            asked: None,
        })
    }

    /// Serves until a shutdown message or the end of the connection.
    pub fn run(&mut self) -> Result<Stopped, ServerError> {
        self.channel
            .set_nonblocking(true)
            .map_err(ServerError::Poll)?;
        let mut buf = RequestBuffer::new(MAX_WRITE);
        if self.resend {
            self.ask_for_unanswered_requests();
        }
        loop {
            // Page stores written meanwhile wake no one unless something waits on them; take
            // them in before judging whether the core is quiet enough for a handover.
            let caught_up = self.dispatcher.catch_up_with_stores(self.asked.is_some());
            if let Some(stopped) = self.try_handover() {
                return Ok(stopped);
            }
            if caught_up {
                continue;
            }
            let Some((fuse_ready, inbox_ready)) = self.wait()? else {
                continue;
            };
            if inbox_ready {
                for message in self.inbox.drain() {
                    let stopped = match message {
                        Message::HandoverAsked(asked) => {
                            self.ask_handover(asked);
                            None
                        }
                        message => self.dispatcher.on_message(message),
                    };
                    if let Some(stopped) = stopped {
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

    /// After a crash: asks the kernel to send again what the dead process read and never
    /// answered (Linux 6.9+). Older kernels refuse; their callers keep waiting until a signal.
    fn ask_for_unanswered_requests(&self) {
        match self.channel.send(&sysgenid_fuse::reply::notify_resend()) {
            Ok(_) => tracing::info!("asked the kernel to resend unanswered requests"),
            Err(error) => tracing::warn!(
                %error,
                "this kernel cannot resend requests (Linux 6.9+ can): calls the previous \
                 process read and never answered stay blocked until their callers are signalled"
            ),
        }
    }

    /// Takes a new daemon's request for the device: refused at once if it cannot be served,
    /// else handed over at the first quiet moment between requests.
    fn ask_handover(&mut self, asked: Asked) {
        if let Some(why) = handover::refusal(&asked.hello, &self.device_path) {
            tracing::warn!(why, "handover refused");
            handover::refuse(&asked, &why);
        } else if self.asked.is_some() {
            handover::refuse(&asked, "another handover is under way");
        } else {
            tracing::info!(
                "a new daemon asks for the device; handing over once no bump is under way"
            );
            self.asked = Some((asked, Instant::now() + handover::QUIET_LIMIT));
        }
    }

    /// Hands the device over once the core is quiet; `Some` once the new daemon has it.
    fn try_handover(&mut self) -> Option<Stopped> {
        let (_, deadline) = self.asked.as_ref()?;
        let Some((device, fuse)) = self.dispatcher.quiet_state() else {
            if Instant::now() >= *deadline {
                let (asked, _) = self.asked.take()?;
                handover::refuse(&asked, "a bump stayed under way; try again");
                tracing::warn!("handover refused: a bump stayed under way; serving on");
            }
            return None;
        };
        let (asked, _) = self.asked.take()?;
        let snapshot = Snapshot {
            format: handover::SNAPSHOT_FORMAT,
            device,
            fuse: fuse.into(),
            device_path: self.device_path.clone(),
            made_device_file: self.mount_facts.made_device_file,
            fusermount: self.mount_facts.fusermount,
            restarts: self.mount_facts.restarts.clone(),
            from_pid: std::process::id(),
        };
        match handover::give(&asked, &*self.channel, &snapshot) {
            Ok(()) => Some(Stopped::HandedOver {
                to: handover::peer_pid(&asked.stream),
            }),
            Err(why) => {
                tracing::warn!(why, "the handover did not happen; serving on");
                None
            }
        }
    }

    /// Waits for the channel, the inbox or the soonest deadline; which of the two fds are
    /// ready, or `None` when a signal interrupted the wait.
    fn wait(&self) -> Result<Option<(bool, bool)>, ServerError> {
        let handover_check = self.asked.as_ref().map(|_| Duration::from_millis(50));
        let wait = match (self.dispatcher.poll_timeout(), handover_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = wait.map(|wait| Timespec {
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
