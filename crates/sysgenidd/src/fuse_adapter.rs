//! The FUSE adapter: a FUSE request becomes a core event or an answer of its own, and a core
//! reply becomes reply bytes.
//!
//! The adapter answers what the core does not model: INIT negotiation, attributes, lookups,
//! page-cache fills of device mappings (from the page, at once), and writebacks through a
//! writable mapping (discarded). It does no IO: the dispatcher sends what it returns.

use std::time::Duration;

use sysgenid_abi::{
    GenerationId, Ioctl, PAGE_SIZE, SEQUENCE_OFFSET, encode_generation, encode_head,
    stable_sequence,
};
use sysgenid_core::{Caller, Event, FileId, PollHandle, Reply, RequestId};
use sysgenid_fuse::{InitWants, KernelInit, Negotiated, Operation, RequestHeader, reply, wire};

use crate::effects::{Clock, TriggerJudge};

/// The largest write payload negotiated: acks are 4 bytes, and anything longer is refused.
pub const MAX_WRITE: u32 = 4096;
/// How long the kernel may cache the file's attributes: they never change.
const ATTR_VALID: Duration = Duration::from_secs(3600);

/// What one FUSE request asks of the dispatcher.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed<'a> {
    /// Answered here: send this message.
    Answer(Vec<u8>),
    /// For the core, which answers through its actions.
    Core(Event<'a>),
    /// For the core, then answered with this message (RELEASE, which the core does not answer).
    CoreThenAnswer(Event<'a>, Vec<u8>),
    /// A writeback through a writable shared mapping: send this answer (taken as written, so
    /// no write error sticks to the file), then store the true page again for every mapper.
    DiscardedWriteback(Vec<u8>),
    /// Nothing to send (FORGET, or a message too short to answer).
    Nothing,
    /// DESTROY: send this, then stop serving.
    Destroy(Vec<u8>),
}

/// What routing a request may need from outside the adapter.
#[derive(Debug, Clone, Copy)]
pub struct Context<'c> {
    /// The current generation, for page-cache fills.
    pub generation: u32,
    /// Its ID, for page-cache fills.
    pub generation_id: GenerationId,
    /// The clock, for ioctl deadlines.
    pub clock: &'c dyn Clock,
    /// The trigger policy, for `TRIGGER_GEN_UPDATE` callers.
    pub judge: &'c dyn TriggerJudge,
}

/// The served file's fixed attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAttributes {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Its times: when the daemon started, since the Unix epoch.
    pub started: Duration,
}

/// The FUSE side of the daemon: what INIT agreed, and how requests map to the core.
#[derive(Debug)]
pub struct FuseAdapter {
    attributes: FileAttributes,
    want_device_mmap: bool,
    negotiated: Option<Negotiated>,
}

impl FuseAdapter {
    /// An adapter for a file with `attributes`; `want_device_mmap` asks INIT for mappings of the
    /// device.
    pub fn new(attributes: FileAttributes, want_device_mmap: bool) -> FuseAdapter {
        FuseAdapter {
            attributes,
            want_device_mmap,
            negotiated: None,
        }
    }

    /// An adapter for a connection that a previous daemon initialized with `negotiated`.
    pub fn resumed(
        attributes: FileAttributes,
        want_device_mmap: bool,
        negotiated: Negotiated,
    ) -> FuseAdapter {
        FuseAdapter {
            attributes,
            want_device_mmap,
            negotiated: Some(negotiated),
        }
    }

    /// What INIT agreed, once it has.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.negotiated
    }

    /// Whether INIT agreed that the device can be mapped.
    pub fn device_mmap(&self) -> bool {
        self.negotiated.is_some_and(|n| n.direct_io_allow_mmap)
    }

    /// Turns one FUSE message into what the dispatcher does with it.
    pub fn route<'a>(&mut self, bytes: &'a [u8], cx: &Context<'_>) -> Routed<'a> {
        let request = match sysgenid_fuse::parse(bytes) {
            Ok(request) => request,
            Err(e) => return malformed(bytes, &e),
        };
        let header = request.header;
        let unique = header.unique;
        match request.op {
            Operation::Init(kernel) => Routed::Answer(self.init(unique, &kernel)),
            Operation::Getattr { .. } => Routed::Answer(self.attr_reply(unique)),
            Operation::Setattr { mode, uid, gid, .. } => {
                // Size changes (`> FILE`, truncate) are accepted and ignored, so mappers never
                // see the file shrink; ownership and mode belong to the daemon.
                if mode.is_some() || uid.is_some() || gid.is_some() {
                    Routed::Answer(reply::error(unique, libc::EPERM))
                } else {
                    Routed::Answer(self.attr_reply(unique))
                }
            }
            Operation::Lookup { .. } => Routed::Answer(reply::error(unique, libc::ENOENT)),
            Operation::Statfs => Routed::Answer(reply::statfs(unique, &wire::Kstatfs::default())),
            Operation::Flush { .. } => Routed::Answer(reply::empty(unique)),
            Operation::Release { fh, .. } => {
                Routed::CoreThenAnswer(Event::Release { file: FileId(fh) }, reply::empty(unique))
            }
            Operation::Forget { .. } | Operation::BatchForget { .. } => Routed::Nothing,
            Operation::Destroy => Routed::Destroy(reply::empty(unique)),
            op => file_operation(&header, op, cx),
        }
    }

    fn init(&mut self, unique: u64, kernel: &KernelInit) -> Vec<u8> {
        let wants = InitWants {
            max_write: MAX_WRITE,
            direct_io_allow_mmap: self.want_device_mmap,
            ..InitWants::default()
        };
        match sysgenid_fuse::negotiate(kernel, &wants) {
            Ok(agreed) => {
                if self.want_device_mmap && !agreed.direct_io_allow_mmap {
                    tracing::warn!(
                        kernel_minor = kernel.minor,
                        "this kernel cannot map direct-io FUSE files (needs Linux 6.6+): \
                         mmap of the device gives ENODEV; probes use the page file"
                    );
                }
                self.negotiated = Some(agreed);
                reply::init(unique, &agreed)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot agree on the FUSE protocol");
                reply::error(unique, libc::EPROTO)
            }
        }
    }

    /// The messages that update resident pages of every device mapping in place, if the device
    /// can be mapped, to be sent in order: the sequence word odd, the whole page (with the
    /// sequence word still odd), the sequence word even. One store is a copy with no order
    /// inside it, but each one locks and unlocks the page in the kernel, so a mapper sees the
    /// stores in the order they are sent: the seqlock rule of `docs/abi.md`.
    pub fn device_page_store(&self, generation: u32, id: GenerationId) -> Option<Vec<Vec<u8>>> {
        self.device_mmap().then(|| {
            let even = stable_sequence(generation);
            let odd = even.wrapping_sub(1).to_ne_bytes();
            let mut page = page_bytes(generation, id, 0, PAGE_SIZE as u32);
            page[SEQUENCE_OFFSET..SEQUENCE_OFFSET + 4].copy_from_slice(&odd);
            let sequence = SEQUENCE_OFFSET as u64;
            vec![
                reply::notify_store(wire::FUSE_ROOT_ID, sequence, &odd),
                reply::notify_store(wire::FUSE_ROOT_ID, 0, &page),
                reply::notify_store(wire::FUSE_ROOT_ID, sequence, &even.to_ne_bytes()),
            ]
        })
    }

    fn attr_reply(&self, unique: u64) -> Vec<u8> {
        reply::attr(unique, &self.attr(), ATTR_VALID)
    }

    fn attr(&self) -> wire::Attr {
        let FileAttributes {
            mode,
            uid,
            gid,
            started,
        } = self.attributes;
        let secs = started.as_secs();
        let nanos = started.subsec_nanos();
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
            mode: libc::S_IFREG | mode,
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            blksize: PAGE_SIZE as u32,
            flags: 0,
        }
    }
}

/// A message that does not parse: `EIO` if it has a header to answer, else nothing.
fn malformed<'a>(bytes: &[u8], error: &sysgenid_fuse::ParseError) -> Routed<'a> {
    match RequestHeader::parse(bytes) {
        Ok(header) => {
            tracing::warn!(unique = header.unique, opcode = header.opcode, %error, "malformed request; answering EIO");
            Routed::Answer(reply::error(header.unique, libc::EIO))
        }
        Err(_) => {
            tracing::warn!(%error, "malformed request without a header; dropped");
            Routed::Nothing
        }
    }
}

/// The operations on an open file of the device: the core's, except page-cache traffic.
fn file_operation<'a>(header: &RequestHeader, op: Operation<'a>, cx: &Context<'_>) -> Routed<'a> {
    let unique = header.unique;
    let request = RequestId(unique);
    let event = match op {
        Operation::Open { flags, .. } => Event::Open {
            request,
            pid: header.pid,
            writable: opened_for_writing(flags),
        },
        Operation::Read {
            fh,
            offset,
            size,
            lock_owner,
            flags,
            ..
        } => match lock_owner {
            // A page-cache fill for a mapping: answer from the page, at once.
            None => {
                return Routed::Answer(reply::data(
                    unique,
                    &page_bytes(cx.generation, cx.generation_id, offset, size),
                ));
            }
            Some(_) => Event::Read {
                request,
                file: FileId(fh),
                len: size as usize,
                nonblocking: flags & libc::O_NONBLOCK as u32 != 0,
            },
        },
        Operation::Write {
            fh,
            write_flags,
            data,
            ..
        } => {
            if write_flags & wire::FUSE_WRITE_CACHE != 0 {
                tracing::warn!(
                    "a process wrote to the device page through a writable mapping; \
                     discarded, and the true page restored (see docs/security.md)"
                );
                // Taken as written, then overwritten: a refusal would leave a write error on
                // the file that makes every later read(2) of it fail with EIO.
                let written = u32::try_from(data.len()).unwrap_or(u32::MAX);
                return Routed::DiscardedWriteback(reply::write(unique, written));
            }
            Event::Write {
                request,
                file: FileId(fh),
                data,
            }
        }
        Operation::Poll { fh, kh, flags, .. } => Event::Poll {
            request,
            file: FileId(fh),
            handle: (flags & wire::FUSE_POLL_SCHEDULE_NOTIFY != 0).then_some(PollHandle(kh)),
        },
        Operation::Ioctl { fh, cmd, arg, .. } => ioctl(header, FileId(fh), cmd, arg, cx),
        Operation::Interrupt { unique: target } => Event::Interrupt {
            request: RequestId(target),
        },
        _ => return Routed::Answer(reply::error(unique, libc::ENOSYS)),
    };
    Routed::Core(event)
}

/// An ioctl, with the clock and, for `TRIGGER_GEN_UPDATE` only, the caller judged.
fn ioctl<'a>(
    header: &RequestHeader,
    file: FileId,
    cmd: u32,
    arg: u64,
    cx: &Context<'_>,
) -> Event<'a> {
    let trigger = Ioctl::from_cmd(cmd) == Some(Ioctl::TriggerGenUpdate);
    Event::Ioctl {
        request: RequestId(header.unique),
        file,
        cmd,
        arg,
        caller: Caller {
            pid: header.pid,
            privileged: trigger && cx.judge.may_trigger(header.pid),
        },
        now: cx.clock.now(),
    }
}

/// The device page from `offset`, at most `size` bytes: the generation, the sequence word of a
/// stable page, the ID, then zeros.
pub fn page_bytes(generation: u32, id: GenerationId, offset: u64, size: u32) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE];
    let head = encode_head(generation, id);
    page[..head.len()].copy_from_slice(&head);
    let start = usize::try_from(offset).unwrap_or(PAGE_SIZE).min(PAGE_SIZE);
    let end = start.saturating_add(size as usize).min(PAGE_SIZE);
    page[start..end].to_vec()
}

/// How every open file of the device is served: each read and write reaches the daemon
/// (direct I/O), no seek position, device mappings keep their pages, and acknowledgements of
/// different files do not queue on the inode lock for each other's round trip to the daemon.
const OPEN_FLAGS: u32 = wire::FOPEN_DIRECT_IO
    | wire::FOPEN_NONSEEKABLE
    | wire::FOPEN_KEEP_CACHE
    | wire::FOPEN_PARALLEL_DIRECT_WRITES;

/// The reply message for a core reply to FUSE request `request`.
pub fn reply_message(request: RequestId, answer: Reply) -> Vec<u8> {
    let unique = request.0;
    match answer {
        Reply::Opened(file) => reply::open(unique, file.0, OPEN_FLAGS),
        Reply::Generation(g) => reply::data(unique, &encode_generation(g)),
        Reply::Empty => reply::data(unique, &[]),
        Reply::Written(n) => reply::write(unique, n as u32),
        Reply::Poll(mask) => reply::poll(unique, mask),
        Reply::Done => reply::ioctl(unique, 0, &[]),
        Reply::Error(errno) => reply::error(unique, errno.raw()),
        // Only control requests get these, and the dispatcher answers them itself.
        Reply::Bumped(_) | Reply::Unchanged(_) => {
            tracing::error!(unique, ?answer, "a control reply for a FUSE request");
            reply::error(unique, libc::EIO)
        }
    }
}

/// Whether an open's flags let the file write, and so acknowledge: `O_WRONLY` or `O_RDWR`.
/// Access mode 3 asks for neither read nor write (the kernel gives such a file only ioctls).
fn opened_for_writing(flags: u32) -> bool {
    let mode = flags & libc::O_ACCMODE as u32;
    mode == libc::O_WRONLY as u32 || mode == libc::O_RDWR as u32
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use sysgenid_core::Time;
    use sysgenid_fuse::wire::Wire;

    use super::*;
    use crate::fakes::{self, FakeClock, FakeJudge, PID, errno_of, split_reply};

    const NOW: u64 = 5_000;

    fn route_with(bytes: &[u8], privileged: bool) -> Routed<'_> {
        let clock = FakeClock(Rc::new(Cell::new(NOW)));
        let judge = FakeJudge(privileged);
        let cx = Context {
            generation: 7,
            generation_id: fakes::id_of(7),
            clock: &clock,
            judge: &judge,
        };
        FuseAdapter::new(fakes::attributes(), true).route(bytes, &cx)
    }

    fn route(bytes: &[u8]) -> Routed<'_> {
        route_with(bytes, true)
    }

    fn answer(routed: Routed<'_>) -> Vec<u8> {
        match routed {
            Routed::Answer(message) => message,
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn only_write_only_and_read_write_opens_may_write() {
        assert!(opened_for_writing(libc::O_WRONLY as u32));
        assert!(opened_for_writing((libc::O_RDWR | libc::O_NONBLOCK) as u32));
        assert!(!opened_for_writing(libc::O_RDONLY as u32));
        // Access mode 3 ("ioctl only") can neither read nor write, so it can never acknowledge.
        assert!(!opened_for_writing(3 | libc::O_LARGEFILE as u32));
    }

    #[test]
    fn open_read_write_poll_and_interrupt_become_core_events() {
        let id = RequestId(2);
        assert_eq!(
            route(&fakes::open(2, libc::O_RDWR)),
            Routed::Core(Event::Open {
                request: id,
                pid: PID,
                writable: true
            })
        );
        assert_eq!(
            route(&fakes::open(2, libc::O_RDONLY)),
            Routed::Core(Event::Open {
                request: id,
                pid: PID,
                writable: false
            })
        );
        assert_eq!(
            route(&fakes::read(2, 3, true)),
            Routed::Core(Event::Read {
                request: id,
                file: FileId(3),
                len: 4,
                nonblocking: true
            })
        );
        assert_eq!(
            route(&fakes::read(2, 3, false)),
            Routed::Core(Event::Read {
                request: id,
                file: FileId(3),
                len: 4,
                nonblocking: false
            })
        );
        let ack = encode_generation(7);
        assert_eq!(
            route(&fakes::write(2, 3, &ack, false)),
            Routed::Core(Event::Write {
                request: id,
                file: FileId(3),
                data: &ack
            })
        );
        assert_eq!(
            route(&fakes::poll(2, 3, 77)),
            Routed::Core(Event::Poll {
                request: id,
                file: FileId(3),
                handle: Some(PollHandle(77))
            })
        );
        let interrupt = wire::InterruptIn { unique: 10 }.to_bytes();
        assert_eq!(
            route(&fakes::request(wire::FUSE_INTERRUPT, 11, &interrupt)),
            Routed::Core(Event::Interrupt {
                request: RequestId(10)
            })
        );
    }

    #[test]
    fn ioctls_carry_the_clock_and_only_a_trigger_is_judged() {
        let trigger = Ioctl::TriggerGenUpdate.cmd();
        let event = |privileged, cmd| Event::Ioctl {
            request: RequestId(2),
            file: FileId(3),
            cmd,
            arg: 9,
            caller: Caller {
                pid: PID,
                privileged,
            },
            now: Time(NOW),
        };
        let request = fakes::ioctl(2, 3, trigger, 9);
        assert_eq!(route(&request), Routed::Core(event(true, trigger)));
        assert_eq!(
            route_with(&request, false),
            Routed::Core(event(false, trigger))
        );
        let tracking = Ioctl::SetWatcherTracking.cmd();
        assert_eq!(
            route(&fakes::ioctl(2, 3, tracking, 9)),
            Routed::Core(event(false, tracking))
        );
    }

    #[test]
    fn release_goes_to_the_core_and_is_answered_empty() {
        let body = wire::ReleaseIn {
            fh: 3,
            ..wire::ReleaseIn::default()
        };
        assert_eq!(
            route(&fakes::request(wire::FUSE_RELEASE, 4, &body.to_bytes())),
            Routed::CoreThenAnswer(Event::Release { file: FileId(3) }, reply::empty(4))
        );
    }

    #[test]
    fn a_page_cache_fill_is_answered_from_the_page() {
        let whole = answer(route(&fakes::page_fill(6, 0, PAGE_SIZE as u32)));
        let (header, body) = split_reply(&whole);
        assert_eq!((header.unique, header.error), (6, 0));
        assert_eq!(body.len(), PAGE_SIZE);
        assert_eq!(&body[..4], encode_generation(7));
        assert_eq!(
            sysgenid_abi::decode_head(body),
            Some((7, fakes::id_of(7))),
            "a stable page with the ID"
        );
        assert!(body[24..].iter().all(|&b| b == 0));

        let part = answer(route(&fakes::page_fill(6, 2, 4)));
        assert_eq!(
            split_reply(&part).1,
            &page_bytes(7, fakes::id_of(7), 0, 8)[2..6]
        );
        let past_the_end = answer(route(&fakes::page_fill(6, 8192, 16)));
        assert!(split_reply(&past_the_end).1.is_empty());
    }

    #[test]
    fn a_writeback_of_a_mapping_is_taken_as_written_and_discarded() {
        match route(&fakes::write(8, 3, &[1, 2, 3, 4], true)) {
            Routed::DiscardedWriteback(message) => assert_eq!(message, reply::write(8, 4)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn setattr_of_mode_or_owner_is_refused_and_a_size_change_ignored() {
        for valid in [wire::FATTR_MODE, wire::FATTR_UID, wire::FATTR_GID] {
            let refused = answer(route(&fakes::setattr(12, valid, 0o777)));
            assert_eq!(errno_of(&refused, 12), libc::EPERM);
        }
        let truncate = answer(route(&fakes::setattr(12, wire::FATTR_SIZE, 0)));
        let (header, body) = split_reply(&truncate);
        assert_eq!(header.error, 0);
        let out = wire::AttrOut::decode(body).unwrap();
        assert_eq!(out.attr.size, PAGE_SIZE as u64, "the file never shrinks");
    }

    #[test]
    fn getattr_shows_the_daemons_file() {
        let body = wire::GetattrIn::default().to_bytes();
        let message = answer(route(&fakes::request(wire::FUSE_GETATTR, 14, &body)));
        let out = wire::AttrOut::decode(split_reply(&message).1).unwrap();
        assert_eq!(out.attr_valid, ATTR_VALID.as_secs());
        let attr = out.attr;
        assert_eq!(attr.mode, libc::S_IFREG | 0o644);
        assert_eq!((attr.uid, attr.gid), (7, 8));
        assert_eq!((attr.mtime, attr.mtimensec), (1_700_000_000, 5));
        assert_eq!(attr.size, PAGE_SIZE as u64);
    }

    #[test]
    fn malformed_requests_are_answered_eio_when_they_have_a_header() {
        // A WRITE whose size field disagrees with its payload.
        let mut bad = fakes::write(16, 3, &[1, 2, 3, 4], false);
        bad.pop();
        let len = bad.len() as u32;
        bad[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(errno_of(&answer(route(&bad)), 16), libc::EIO);
        assert_eq!(route(&[1, 2, 3]), Routed::Nothing);
    }

    #[test]
    fn lookups_find_nothing_and_unknown_operations_are_enosys() {
        let lookup = fakes::request(wire::FUSE_LOOKUP, 18, b"x\0");
        assert_eq!(errno_of(&answer(route(&lookup)), 18), libc::ENOENT);
        let mkdir = fakes::request(wire::FUSE_MKDIR, 20, &[0; 16]);
        assert_eq!(errno_of(&answer(route(&mkdir)), 20), libc::ENOSYS);
        let forget = wire::ForgetIn { nlookup: 1 }.to_bytes();
        assert_eq!(
            route(&fakes::request(wire::FUSE_FORGET, 22, &forget)),
            Routed::Nothing
        );
        assert_eq!(
            route(&fakes::request(wire::FUSE_DESTROY, 24, &[])),
            Routed::Destroy(reply::empty(24))
        );
    }

    #[test]
    fn init_agrees_on_device_mappings_when_asked_and_offered() {
        let clock = FakeClock(Rc::new(Cell::new(0)));
        let judge = FakeJudge(false);
        let cx = Context {
            generation: 3,
            generation_id: fakes::id_of(3),
            clock: &clock,
            judge: &judge,
        };
        let mut adapter = FuseAdapter::new(fakes::attributes(), true);
        assert_eq!(
            adapter.device_page_store(3, fakes::id_of(3)),
            None,
            "nothing before INIT"
        );
        let message = answer(adapter.route(&fakes::init(1), &cx));
        let out = wire::InitOut::decode(split_reply(&message).1).unwrap();
        assert_eq!(out.max_write, MAX_WRITE);
        assert!(adapter.device_mmap());
        let store = adapter.device_page_store(3, fakes::id_of(3)).unwrap();
        let mut odd_page = page_bytes(3, fakes::id_of(3), 0, 4096);
        odd_page[4..8].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(
            store,
            [
                reply::notify_store(1, 4, &7u32.to_ne_bytes()),
                reply::notify_store(1, 0, &odd_page),
                reply::notify_store(1, 4, &8u32.to_ne_bytes()),
            ],
            "sequence 2g + 1, the page, sequence 2g + 2"
        );

        let mut unwanted = FuseAdapter::new(fakes::attributes(), false);
        unwanted.route(&fakes::init(1), &cx);
        assert!(!unwanted.device_mmap());
        assert_eq!(unwanted.device_page_store(3, fakes::id_of(3)), None);
    }

    #[test]
    fn core_replies_become_fuse_replies() {
        let id = RequestId(30);
        let opened = reply_message(id, Reply::Opened(FileId(5)));
        let out = wire::OpenOut::decode(split_reply(&opened).1).unwrap();
        assert_eq!(out.fh, 5);
        assert_eq!(
            out.open_flags,
            wire::FOPEN_DIRECT_IO
                | wire::FOPEN_NONSEEKABLE
                | wire::FOPEN_KEEP_CACHE
                | wire::FOPEN_PARALLEL_DIRECT_WRITES
        );
        let read = reply_message(id, Reply::Generation(9));
        assert_eq!(split_reply(&read).1, encode_generation(9));
        let refused = reply_message(id, Reply::Error(sysgenid_abi::Errno::Acces));
        assert_eq!(errno_of(&refused, 30), libc::EACCES);
        // A control reply never belongs to a FUSE request.
        assert_eq!(
            errno_of(&reply_message(id, Reply::Bumped(1)), 30),
            libc::EIO
        );
    }
}
