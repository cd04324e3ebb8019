//! The event loop: FUSE requests and inbox messages in, core events out, core actions carried out.
//!
//! One thread owns the FUSE channel, the core, the persisted state and the page. It waits in
//! `poll(2)` on the channel, the inbox and the nearest timer. A blocked `read(2)` or
//! `WAIT_WATCHERS` is an entry in the core, never a blocked thread.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags, Timespec};
use sysgenid_abi::{Errno, Ioctl, PAGE_SIZE, encode_generation};
use sysgenid_core::{
    Action, BumpSource, BumpToken, Caller, Device, Event, FileId, PollHandle, Reply, RequestId,
    Time,
};
use sysgenid_fuse::{
    Channel, InitWants, Negotiated, Operation, Received, RequestBuffer, RequestHeader, Sent, reply,
    wire,
};

use crate::backends::Reporter;
use crate::caps::TriggerPolicy;
use crate::config::Config;
use crate::control::{DaemonFacts, Snapshot};
use crate::inbox::{Applied, InboxReceiver, Message};
use crate::page::PageFile;
use crate::state::StateFile;

/// The largest write payload negotiated: acks are 4 bytes, and anything longer is refused.
const MAX_WRITE: u32 = 4096;
/// How long the kernel may cache the file's attributes: they never change.
const ATTR_VALID: Duration = Duration::from_secs(3600);
/// Requests read per wakeup before the inbox gets a turn.
const BATCH: usize = 64;
/// Request ids of control-socket requests have this bit set. FUSE request ids count up from 0
/// in steps of 2 (the low bit marks interrupts), so they never reach it.
const CONTROL_REQUEST_BIT: u64 = 1 << 63;

/// Why the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// A shutdown message (a signal).
    Shutdown(String),
    /// The kernel ended the connection: unmounted from outside, or aborted.
    Unmounted,
}

/// Errors that end the loop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The FUSE device failed.
    #[error(transparent)]
    Channel(#[from] sysgenid_fuse::ChannelError),
    /// Waiting for events failed.
    #[error("poll failed: {0}")]
    Poll(#[source] std::io::Error),
}

/// The serving state.
#[derive(Debug)]
pub struct Server {
    device: Device,
    channel: Channel,
    state: StateFile,
    page: PageFile,
    policy: Arc<TriggerPolicy>,
    inbox: InboxReceiver,
    /// Control-socket requests the core has not answered yet, with where the answer goes.
    control_requests: HashMap<RequestId, mpsc::SyncSender<Reply>>,
    next_control_request: u64,
    /// Backend bumps not applied yet, oldest first, with what to run once they are.
    pending_backend_bumps: VecDeque<(String, Applied)>,
    /// The backends' dedupe policy, told of the overseer's conditional bumps.
    reporter: Option<Reporter>,
    facts: DaemonFacts,
    mode: u32,
    uid: u32,
    gid: u32,
    want_device_mmap: bool,
    negotiated: Option<Negotiated>,
    epoch: Instant,
    started: Duration,
}

impl Server {
    /// A server for an open channel, with the state already loaded.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        channel: Channel,
        state: StateFile,
        page: PageFile,
        generation: u32,
        policy: Arc<TriggerPolicy>,
        inbox: InboxReceiver,
        facts: DaemonFacts,
    ) -> Server {
        Server {
            device: Device::new(generation),
            channel,
            state,
            page,
            policy,
            inbox,
            control_requests: HashMap::new(),
            next_control_request: 0,
            pending_backend_bumps: VecDeque::new(),
            reporter: None,
            facts,
            mode: config.mode,
            uid: config.uid,
            gid: config.gid,
            want_device_mmap: config.device_mmap,
            negotiated: None,
            epoch: Instant::now(),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// Tells the backends' dedupe policy of the overseer's conditional bumps.
    pub fn with_reporter(mut self, reporter: Reporter) -> Server {
        self.reporter = Some(reporter);
        self
    }

    fn now(&self) -> Time {
        Time(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Serves until a shutdown message or the end of the connection.
    pub fn run(&mut self) -> Result<Stopped, ServerError> {
        self.channel
            .set_nonblocking(true)
            .map_err(ServerError::Poll)?;
        let mut buf = RequestBuffer::new(MAX_WRITE);
        loop {
            let timeout = self.poll_timeout();
            let (fuse_ready, inbox_ready) = {
                let mut fds = [
                    PollFd::new(&self.channel, PollFlags::IN),
                    PollFd::new(&self.inbox, PollFlags::IN),
                ];
                match rustix::event::poll(&mut fds, timeout.as_ref()) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(ServerError::Poll(e.into())),
                }
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty())
            };
            if inbox_ready {
                for message in self.inbox.drain() {
                    if let Some(stopped) = self.on_message(message) {
                        return Ok(stopped);
                    }
                }
            }
            if fuse_ready {
                for _ in 0..BATCH {
                    match self.channel.try_receive(&mut buf)? {
                        None => break,
                        Some(Received::Unmounted) => return Ok(Stopped::Unmounted),
                        Some(Received::Message(bytes)) => {
                            if self.on_request(bytes) {
                                return Ok(Stopped::Unmounted);
                            }
                        }
                    }
                }
            }
            self.fire_timers();
        }
    }

    fn poll_timeout(&self) -> Option<Timespec> {
        let deadline = self.device.poll_timeout()?;
        let wait = deadline.0.saturating_sub(self.now().0);
        Some(Timespec {
            tv_sec: i64::try_from(wait / 1_000_000_000).unwrap_or(i64::MAX),
            tv_nsec: (wait % 1_000_000_000) as _,
        })
    }

    fn fire_timers(&mut self) {
        let now = self.now();
        if self
            .device
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            self.feed(Event::Timeout { now });
        }
    }

    fn on_message(&mut self, message: Message) -> Option<Stopped> {
        match message {
            Message::Status(reply) => {
                let _ = reply.try_send(Snapshot {
                    status: self.device.status(),
                    facts: self.facts.clone(),
                });
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
            Message::Serving => {
                self.facts.serving = true;
                tracing::info!(
                    device = %self.facts.device.display(),
                    generation = self.device.generation(),
                    device_mmap = self.facts.device_mmap,
                    "serving"
                );
                let status = format!("serving generation {}", self.device.generation());
                let _ = sd_notify::notify(
                    false,
                    &[
                        sd_notify::NotifyState::Ready,
                        sd_notify::NotifyState::Status(&status),
                    ],
                );
            }
            Message::Shutdown { reason } => return Some(Stopped::Shutdown(reason)),
        }
        None
    }

    /// Handles one request; returns true when the kernel says the file system is going away.
    fn on_request(&mut self, bytes: &[u8]) -> bool {
        let request = match sysgenid_fuse::parse(bytes) {
            Ok(request) => request,
            Err(e) => {
                match RequestHeader::parse(bytes) {
                    Ok(header) => {
                        tracing::warn!(unique = header.unique, opcode = header.opcode, error = %e, "malformed request; answering EIO");
                        self.send(&reply::error(header.unique, libc::EIO));
                    }
                    Err(_) => {
                        tracing::warn!(error = %e, "malformed request without a header; dropped")
                    }
                }
                return false;
            }
        };
        let header = request.header;
        let unique = header.unique;
        let id = RequestId(unique);
        match request.op {
            Operation::Init(kernel) => {
                let wants = InitWants {
                    max_write: MAX_WRITE,
                    direct_io_allow_mmap: self.want_device_mmap,
                    ..InitWants::default()
                };
                match sysgenid_fuse::negotiate(&kernel, &wants) {
                    Ok(agreed) => {
                        self.facts.device_mmap = agreed.direct_io_allow_mmap;
                        if self.want_device_mmap && !agreed.direct_io_allow_mmap {
                            tracing::warn!(
                                kernel_minor = kernel.minor,
                                "this kernel cannot map direct-io FUSE files (needs Linux 6.6+): \
                                 mmap of the device gives ENODEV; probes use the page file"
                            );
                        }
                        self.negotiated = Some(agreed);
                        self.send(&reply::init(unique, &agreed));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot agree on the FUSE protocol");
                        self.send(&reply::error(unique, libc::EPROTO));
                    }
                }
            }
            Operation::Getattr { .. } => self.send(&reply::attr(unique, &self.attr(), ATTR_VALID)),
            Operation::Setattr { mode, uid, gid, .. } => {
                // Size changes (`> FILE`, truncate) are accepted and ignored, so mappers never
                // see the file shrink; ownership and mode belong to the daemon.
                if mode.is_some() || uid.is_some() || gid.is_some() {
                    self.send(&reply::error(unique, libc::EPERM));
                } else {
                    self.send(&reply::attr(unique, &self.attr(), ATTR_VALID));
                }
            }
            Operation::Lookup { .. } => self.send(&reply::error(unique, libc::ENOENT)),
            Operation::Statfs => self.send(&reply::statfs(unique, &wire::Kstatfs::default())),
            Operation::Open { flags, .. } => self.feed(Event::Open {
                request: id,
                pid: header.pid,
                writable: flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32,
            }),
            Operation::Read {
                fh,
                offset,
                size,
                lock_owner,
                flags,
                ..
            } => match lock_owner {
                // A page-cache fill for a mapping: answer from the page, at once.
                None => self.send(&reply::data(unique, &self.page_bytes(offset, size))),
                Some(_) => self.feed(Event::Read {
                    request: id,
                    file: FileId(fh),
                    len: size as usize,
                    nonblocking: flags & libc::O_NONBLOCK as u32 != 0,
                }),
            },
            Operation::Write {
                fh,
                write_flags,
                data,
                ..
            } => {
                if write_flags & wire::FUSE_WRITE_CACHE != 0 {
                    // Writeback of a writable shared mapping: never an ack. Put the true page
                    // back for every mapper.
                    self.send(&reply::error(unique, libc::EACCES));
                    self.store_device_page();
                    tracing::warn!(
                        "a process wrote to the device page through a writable mapping; \
                         refused, and the true page restored (see docs/security.md)"
                    );
                } else {
                    self.feed(Event::Write {
                        request: id,
                        file: FileId(fh),
                        data,
                    });
                }
            }
            Operation::Flush { .. } => self.send(&reply::empty(unique)),
            Operation::Release { fh, .. } => {
                self.feed(Event::Release { file: FileId(fh) });
                self.send(&reply::empty(unique));
            }
            Operation::Poll { fh, kh, flags, .. } => {
                let handle =
                    (flags & wire::FUSE_POLL_SCHEDULE_NOTIFY != 0).then_some(PollHandle(kh));
                self.feed(Event::Poll {
                    request: id,
                    file: FileId(fh),
                    handle,
                });
            }
            Operation::Ioctl { fh, cmd, arg, .. } => {
                let privileged = Ioctl::from_cmd(cmd) == Some(Ioctl::TriggerGenUpdate)
                    && self.policy.may_trigger(header.pid);
                let now = self.now();
                self.feed(Event::Ioctl {
                    request: id,
                    file: FileId(fh),
                    cmd,
                    arg,
                    caller: Caller {
                        pid: header.pid,
                        privileged,
                    },
                    now,
                });
            }
            Operation::Interrupt { unique: target } => self.feed(Event::Interrupt {
                request: RequestId(target),
            }),
            Operation::Forget { .. } | Operation::BatchForget { .. } => {}
            Operation::Destroy => {
                self.send(&reply::empty(unique));
                return true;
            }
            _ => self.send(&reply::error(unique, libc::ENOSYS)),
        }
        false
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
            Action::Reply { request, reply } => {
                if let Some(answer) = self.control_requests.remove(&request) {
                    if let (Reply::Bumped(_), Some(reporter)) = (&reply, &self.reporter) {
                        reporter.bumped_by_overseer();
                    }
                    // The control thread may have given up waiting; then no one listens.
                    let _ = answer.try_send(reply);
                    return;
                }
                let unique = request.0;
                let message = match reply {
                    Reply::Opened(file) => reply::open(
                        unique,
                        file.0,
                        wire::FOPEN_DIRECT_IO | wire::FOPEN_NONSEEKABLE | wire::FOPEN_KEEP_CACHE,
                    ),
                    Reply::Generation(g) => reply::data(unique, &encode_generation(g)),
                    Reply::Empty => reply::data(unique, &[]),
                    Reply::Written(n) => reply::write(unique, n as u32),
                    Reply::Poll(mask) => reply::poll(unique, mask),
                    Reply::Done => reply::ioctl(unique, 0, &[]),
                    Reply::Error(errno) => reply::error(unique, errno.raw()),
                    // Only control requests get these, and they were answered above.
                    Reply::Bumped(_) | Reply::Unchanged(_) => {
                        tracing::error!(unique, ?reply, "a control reply for a FUSE request");
                        reply::error(unique, libc::EIO)
                    }
                };
                self.send(&message);
            }
            Action::WakePoll(PollHandle(kh)) => self.send(&reply::notify_poll(kh)),
            Action::Persist(generation) => {
                let result = self.state.persist(generation).map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::error!(error = %e, "persist failed; the bump is refused");
                }
                self.device.handle(Event::PersistDone { result });
            }
            Action::Publish {
                generation, source, ..
            } => {
                self.page.store(generation);
                self.store_device_page();
                tracing::info!(generation, %source, "new generation");
                let status = format!("serving generation {generation}");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status)]);
                if let BumpSource::Backend(backend) = &source
                    && let Some(applied) = self.take_backend_bump(backend)
                {
                    applied.run();
                }
            }
            Action::BumpFailed {
                source,
                error,
                detail,
                ..
            } => {
                let why = match error {
                    Errno::Overflow => "the generation is at u32::MAX".to_owned(),
                    _ => detail.unwrap_or_else(|| error.name().to_owned()),
                };
                tracing::error!(%source, error = error.name(), why, "bump failed; the generation is unchanged");
                if let BumpSource::Backend(backend) = &source
                    && self.take_backend_bump(backend).is_some()
                {
                    tracing::warn!(
                        backend,
                        "the backend's restore stays unacknowledged: its next start reports it again"
                    );
                }
            }
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

    /// Updates resident pages of every device mapping in place.
    fn store_device_page(&self) {
        if self.negotiated.is_some_and(|n| n.direct_io_allow_mmap) {
            let page = self.page_bytes(0, PAGE_SIZE as u32);
            self.send(&reply::notify_store(wire::FUSE_ROOT_ID, 0, &page));
        }
    }

    /// The device page from `offset`, at most `size` bytes: the generation, then zeros.
    fn page_bytes(&self, offset: u64, size: u32) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_SIZE];
        page[..4].copy_from_slice(&encode_generation(self.device.generation()));
        let start = usize::try_from(offset).unwrap_or(PAGE_SIZE).min(PAGE_SIZE);
        let end = start.saturating_add(size as usize).min(PAGE_SIZE);
        page[start..end].to_vec()
    }

    fn attr(&self) -> wire::Attr {
        let secs = self.started.as_secs();
        let nanos = self.started.subsec_nanos();
        wire::Attr {
            ino: wire::FUSE_ROOT_ID,
            size: PAGE_SIZE as u64,
            blocks: (PAGE_SIZE / 512) as u64,
            atime: secs,
            mtime: secs,
            ctime: secs,
            atimensec: nanos,
            mtimensec: nanos,
            ctimensec: nanos,
            mode: libc::S_IFREG | self.mode,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: PAGE_SIZE as u32,
            flags: 0,
        }
    }

    fn send(&self, message: &[u8]) {
        match self.channel.send(message) {
            Ok(Sent::Delivered | Sent::NotFound | Sent::Unmounted) => {}
            Err(e) => tracing::warn!(error = %e, "cannot send to the kernel"),
        }
    }
}
