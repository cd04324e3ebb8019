//! The events that go into the core and the actions that come out of it.

use sysgenid_abi::{Errno, GenerationId};

use crate::types::{BumpSource, BumpToken, Caller, FileId, PollHandle, RequestId, Time};

/// Something that happened, for the core to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `open(2)`. Replies [`Reply::Opened`].
    Open {
        /// The request to answer.
        request: RequestId,
        /// The opening process, remembered for status.
        pid: u32,
        /// Whether the file was opened for writing. Only such a file can acknowledge, so only
        /// such a file may become a tracked watcher.
        writable: bool,
    },
    /// `read(2)`. Replies at once or stays pending until the file is outdated.
    Read {
        /// The request to answer.
        request: RequestId,
        /// The open file read from.
        file: FileId,
        /// The caller's buffer length.
        len: usize,
        /// Whether the file is in `O_NONBLOCK` mode.
        nonblocking: bool,
    },
    /// `write(2)`: an acknowledgement.
    Write {
        /// The request to answer.
        request: RequestId,
        /// The open file written to.
        file: FileId,
        /// The bytes written.
        data: &'a [u8],
    },
    /// `poll(2)` and friends. Replies with the ready mask at once.
    Poll {
        /// The request to answer.
        request: RequestId,
        /// The open file polled.
        file: FileId,
        /// A handle to wake on every later bump, if the caller asks for notification.
        handle: Option<PollHandle>,
    },
    /// `ioctl(2)`.
    Ioctl {
        /// The request to answer.
        request: RequestId,
        /// The open file the ioctl was made on.
        file: FileId,
        /// The request number.
        cmd: u32,
        /// The integer argument (an `unsigned long`).
        arg: u64,
        /// Who made the call.
        caller: Caller,
        /// The transport's clock now, for timeouts.
        now: Time,
    },
    /// The last close of an open file. Needs no reply.
    Release {
        /// The open file that is gone.
        file: FileId,
    },
    /// The caller of a pending request got a signal.
    Interrupt {
        /// The request to end.
        request: RequestId,
    },
    /// The transport's clock reached [`crate::Device::poll_timeout`]: every wait whose deadline
    /// is at or before `now` ends with `ETIME`. Early or repeated calls do nothing.
    Timeout {
        /// The transport's clock now.
        now: Time,
    },
    /// A conditional trigger (the control socket's `trigger-if`): a bump like
    /// `TRIGGER_GEN_UPDATE` with `min`, applied only if the generation is still `expect` when
    /// its turn comes, after every bump queued before it. Needs no open file.
    ///
    /// Replies [`Reply::Bumped`], [`Reply::Unchanged`], or an error: `EACCES` for an
    /// unprivileged caller, `EOVERFLOW` at `u32::MAX`, `EIO` when the persist fails.
    TriggerIf {
        /// The request to answer; the transport keeps these apart from its file requests.
        request: RequestId,
        /// The generation the caller saw; no bump unless it is still current.
        expect: u32,
        /// The new generation is at least this.
        min: u32,
        /// Who asked.
        caller: Caller,
    },
    /// A hardware backend saw a restore: a bump with no minimum.
    HardwareBump {
        /// The backend's name.
        backend: &'a str,
        /// The transport's own mark for this bump, handed back in [`Action::Publish`] or
        /// [`Action::BumpFailed`] so it can finish what waits on the bump.
        token: BumpToken,
    },
    /// The oldest [`Action::WakeReaders`] not handed back yet is carried out: every device
    /// mapping shows the page of the bump that queued it.
    WakeReaders,
    /// The outcome of the last [`Action::Persist`].
    PersistDone {
        /// `Ok` with the new generation's random ID once the value and the ID are durable, or
        /// the reason they are not. The transport draws the ID (from the kernel's random
        /// source, never from a generator in its own memory, which a snapshot clones).
        result: Result<GenerationId, String>,
    },
}

/// Something the transport must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer a request.
    Reply {
        /// The request answered.
        request: RequestId,
        /// The answer.
        reply: Reply,
    },
    /// Wake a poll registration.
    WakePoll(PollHandle),
    /// Draw a random ID for this generation and make both durable, then send
    /// [`Event::PersistDone`] with the ID. Nothing is published and no one is woken before that.
    Persist(u32),
    /// Show this generation to every probe (page file, device page). Always comes before the
    /// wakes and replies of the same bump (of which the bump's own trigger comes first).
    Publish {
        /// The new generation.
        generation: u32,
        /// Its random ID, from [`Event::PersistDone`].
        id: GenerationId,
        /// Who caused it.
        source: BumpSource,
        /// The token of the [`Event::HardwareBump`] that asked for it, if one did.
        token: Option<BumpToken>,
    },
    /// Send [`Event::WakeReaders`] once the [`Action::Publish`] before it shows in every
    /// mapping, one event per action, in order. Then the reads that bump woke beyond the first
    /// [`crate::READS_ANSWERED_AT_ONCE`] are answered with its value, but for those answered
    /// meanwhile (interrupted, closed, or their file acknowledged). Up to one per watcher, they
    /// are left out of the work that comes before the bump's own trigger is answered.
    WakeReaders,
    /// A bump could not be applied; log it and report it.
    BumpFailed {
        /// Who asked for it.
        source: BumpSource,
        /// Why: [`Errno::Overflow`] or [`Errno::Io`].
        error: Errno,
        /// For [`Errno::Io`], what the persist step said.
        detail: Option<String>,
        /// The token of the [`Event::HardwareBump`] that asked for it, if one did.
        token: Option<BumpToken>,
    },
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The open succeeded; this is the new file.
    Opened(FileId),
    /// A read returns the four bytes of this generation, native-endian.
    Generation(u32),
    /// A read returns zero bytes.
    Empty,
    /// A write took this many bytes.
    Written(usize),
    /// A poll's ready mask ([`sysgenid_abi::POLL_OUTDATED`] or 0).
    Poll(u32),
    /// An ioctl returned 0.
    Done,
    /// A conditional trigger bumped the generation to this value.
    Bumped(u32),
    /// A conditional trigger found the generation moved on from the value it expected, and
    /// bumped nothing; this is the current generation.
    Unchanged(u32),
    /// The call failed with this errno.
    Error(Errno),
}
