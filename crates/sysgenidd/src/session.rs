//! The device's lasting state kept in a memfd outside the serving process's memory: the keeper
//! or the service manager's fd store holds it with the FUSE connection, and the serving
//! process writes every change into it before the replies that depend on it, so the next
//! serving process continues from it after a crash.
//!
//! Layout: a header region holding a [`Snapshot`] as JSON with its files and requests left out,
//! then fixed 64-byte slots, one per open file or blocked request. A dying process never leaves
//! a write half done: the header is one `pwrite`, and so is a slot change spanning more than one
//! aligned 8-byte word; a narrower change (an ack) is one atomic word store; a new slot is
//! written through a shared mapping with its kind byte last (until then it reads as free), and a
//! freed slot is one byte store. The file grows in chunks, so a new slot rarely costs a syscall, and
//! ten thousand readers woken by one bump cost ten thousand byte stores.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use sysgenid_core::{Changes, Device, DeviceState, FileId, FileState, PendingState, PollHandle};
use sysgenid_core::{RequestId, Time};

use sysgenid_fuse::Negotiated;

use crate::effects::SessionStore;
use crate::handover::{FuseState, Snapshot};
use crate::shared_map::SharedMap;

/// Bytes before the first slot.
const HEADER_LEN: u64 = 16 * 1024;
/// Bytes per slot.
const SLOT_LEN: u64 = 64;
/// Slots the file grows by at least (16 KiB).
const MIN_GROWTH: u64 = 256;
/// The header's first bytes.
const MAGIC: &[u8; 8] = b"SGIDSES1";

const FREE: u8 = 0;
const FILE: u8 = 1;
const READ: u8 = 2;
const WAIT: u8 = 3;

/// Where each file and request sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    File(FileId),
    Request(RequestId),
}

/// The session memfd, with the slot of every file and request written so far.
#[derive(Debug)]
pub struct Session {
    fd: OwnedFd,
    map: SharedMap,
    slots: HashMap<Key, u64>,
    free: Vec<u64>,
    next_slot: u64,
    header: Vec<u8>,
}

/// Why a session cannot be continued from.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading it failed.
    #[error("cannot read the session: {0}")]
    Io(#[from] io::Error),
    /// It is not a session, or it is damaged.
    #[error("the session is damaged: {0}")]
    Damaged(String),
}

impl Session {
    /// A new, empty session memfd.
    pub fn create() -> io::Result<Session> {
        let fd = rustix::fs::memfd_create("sysgenid-session", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, HEADER_LEN)?;
        Ok(Session {
            map: SharedMap::new(&fd, HEADER_LEN)?,
            fd,
            slots: HashMap::new(),
            free: Vec::new(),
            next_slot: 0,
            header: Vec::new(),
        })
    }

    /// The memfd, for the keeper or the fd store.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Writes the header (counter, INIT agreement, mount facts) if it changed.
    pub fn write_header(&mut self, header: &Snapshot) -> io::Result<()> {
        let mut header = header.clone();
        header.device.files.clear();
        header.device.pending.clear();
        let mut json = serde_json::to_vec(&header).map_err(io::Error::other)?;
        if json.len() + 12 > HEADER_LEN as usize {
            // Only a very long failure message could do this; it is not worth a restart.
            if let Some(failure) = header.device.last_failure.as_mut() {
                failure.detail = None;
            }
            json = serde_json::to_vec(&header).map_err(io::Error::other)?;
        }
        if json == self.header {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(12 + json.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(
            &u32::try_from(json.len())
                .map_err(io::Error::other)?
                .to_le_bytes(),
        );
        bytes.extend_from_slice(&json);
        write_all_at(&self.fd, &bytes, 0)?;
        self.header = json;
        Ok(())
    }

    /// Writes every file and request in `changes` as `device` has it now.
    pub fn write_changes(&mut self, device: &Device, changes: &Changes) -> io::Result<()> {
        for &id in &changes.files {
            let slot = device.file_state(id).map(|f| file_slot(&f));
            self.put(Key::File(id), slot)?;
        }
        for &request in &changes.requests {
            let slot = device.pending_state(request).map(|p| pending_slot(&p));
            self.put(Key::Request(request), slot)?;
        }
        Ok(())
    }

    /// Writes everything `state` holds, as after a start from it.
    pub fn write_all(&mut self, state: &DeviceState) -> io::Result<()> {
        for f in &state.files {
            self.put(Key::File(f.id), Some(file_slot(f)))?;
        }
        for p in &state.pending {
            self.put(Key::Request(p.request()), Some(pending_slot(p)))?;
        }
        Ok(())
    }

    fn put(&mut self, key: Key, bytes: Option<[u8; SLOT_LEN as usize]>) -> io::Result<()> {
        match (bytes, self.slots.get(&key).copied()) {
            (Some(bytes), Some(slot)) => self.change(offset(slot), &bytes),
            (Some(bytes), None) => {
                let slot = match self.free.pop() {
                    Some(slot) => slot,
                    None => self.grow()?,
                };
                self.map.write_first_last(offset(slot), &bytes);
                self.slots.insert(key, slot);
                Ok(())
            }
            (None, Some(slot)) => {
                self.map.write_first_last(offset(slot), &[FREE]);
                self.slots.remove(&key);
                self.free.push(slot);
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    /// Rewrites the slot at `at`: a change within one aligned 8-byte word (an ack, a new poll
    /// handle's flag) is one atomic store, a wider one a `pwrite`; either way a dying process
    /// leaves the old slot or the new one.
    fn change(&mut self, at: u64, bytes: &[u8; SLOT_LEN as usize]) -> io::Result<()> {
        let old: [u8; SLOT_LEN as usize] = self.map.read(at);
        let differs = |word: &usize| old[word * 8..word * 8 + 8] != bytes[word * 8..word * 8 + 8];
        let mut changed = (0..SLOT_LEN as usize / 8).filter(differs);
        match (changed.next(), changed.next()) {
            (None, _) => Ok(()),
            (Some(word), None) => {
                let mut new = [0u8; 8];
                new.copy_from_slice(&bytes[word * 8..word * 8 + 8]);
                self.map.store_word(at + word as u64 * 8, new);
                Ok(())
            }
            (Some(_), Some(_)) => write_all_at(&self.fd, bytes, at),
        }
    }

    /// A slot never used yet; the file and its mapping grow by doubling when none is left.
    fn grow(&mut self) -> io::Result<u64> {
        let slot = self.next_slot;
        let capacity = (self.map.byte_len() as u64 - HEADER_LEN) / SLOT_LEN;
        if slot >= capacity {
            let len = offset((capacity * 2).max(MIN_GROWTH));
            rustix::fs::ftruncate(&self.fd, len)?;
            self.map = SharedMap::new(&self.fd, len)?;
        }
        self.next_slot += 1;
        Ok(slot)
    }

    /// Reads a session that another process wrote, and takes it over for writing. `None` when
    /// it holds nothing yet: the process died before it answered INIT.
    pub fn open(fd: OwnedFd) -> Result<(Session, Option<Snapshot>), SessionError> {
        let len = rustix::fs::fstat(&fd).map_err(io::Error::from)?.st_size;
        let len = u64::try_from(len).map_err(|_| SessionError::Damaged("negative size".into()))?;
        if len < HEADER_LEN || !(len - HEADER_LEN).is_multiple_of(SLOT_LEN) {
            return Err(SessionError::Damaged(format!("size {len}")));
        }
        let mut head = vec![0u8; HEADER_LEN as usize];
        read_exact_at(&fd, &mut head, 0)?;
        if head[..8] == [0; 8] {
            rustix::fs::ftruncate(&fd, HEADER_LEN).map_err(io::Error::from)?;
            let empty = Session {
                map: SharedMap::new(&fd, HEADER_LEN)?,
                fd,
                slots: HashMap::new(),
                free: Vec::new(),
                next_slot: 0,
                header: Vec::new(),
            };
            return Ok((empty, None));
        }
        if &head[..8] != MAGIC {
            return Err(SessionError::Damaged("no session header".into()));
        }
        let json_len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
        let json = head
            .get(12..12 + json_len)
            .ok_or_else(|| SessionError::Damaged("header too long".into()))?;
        let mut snapshot: Snapshot = serde_json::from_slice(json)
            .map_err(|e| SessionError::Damaged(format!("header: {e}")))?;
        let mut session = Session {
            map: SharedMap::new(&fd, len)?,
            fd,
            slots: HashMap::new(),
            free: Vec::new(),
            next_slot: (len - HEADER_LEN) / SLOT_LEN,
            header: json.to_vec(),
        };
        let mut body = vec![0u8; (len - HEADER_LEN) as usize];
        read_exact_at(&session.fd, &mut body, HEADER_LEN)?;
        for (slot, bytes) in body.chunks_exact(SLOT_LEN as usize).enumerate() {
            let slot = slot as u64;
            match parse_slot(bytes)? {
                None => session.free.push(slot),
                Some(Parsed::File(f)) => {
                    snapshot.device.next_file = snapshot.device.next_file.max(f.id.0 + 1);
                    session.slots.insert(Key::File(f.id), slot);
                    snapshot.device.files.push(f);
                }
                Some(Parsed::Pending(p)) => {
                    session.slots.insert(Key::Request(p.request()), slot);
                    snapshot.device.pending.push(p);
                }
            }
        }
        snapshot.device.files.sort_unstable_by_key(|f| f.id);
        snapshot
            .device
            .pending
            .sort_unstable_by_key(PendingState::request);
        Ok((session, Some(snapshot)))
    }

    /// Gives up the memfd.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// The daemon's [`SessionStore`]: the session, and what its header says besides the core.
#[derive(Debug)]
pub struct SessionWriter {
    session: Session,
    facts: HeaderFacts,
    last: Option<(DeviceState, FuseState)>,
}

/// What the header holds besides the core's counter and the INIT agreement.
#[derive(Debug, Clone)]
pub struct HeaderFacts {
    /// The device path of the mount.
    pub device_path: std::path::PathBuf,
    /// Whether a daemon made the mountpoint file.
    pub made_device_file: bool,
    /// Whether `fusermount3` made the mount.
    pub fusermount: bool,
    /// Restarts on this connection so far.
    pub restarts: Option<sysgenid_abi::control::Restarts>,
}

impl SessionWriter {
    /// Writes into `session` from now on.
    pub fn new(session: Session, facts: HeaderFacts) -> SessionWriter {
        SessionWriter {
            session,
            facts,
            last: None,
        }
    }

    fn header(&self, meta: DeviceState, fuse: FuseState) -> Snapshot {
        Snapshot {
            format: crate::handover::SNAPSHOT_FORMAT,
            device: meta,
            fuse,
            device_path: self.facts.device_path.clone(),
            made_device_file: self.facts.made_device_file,
            fusermount: self.facts.fusermount,
            restarts: self.facts.restarts.clone(),
            from_pid: std::process::id(),
        }
    }
}

impl SessionStore for SessionWriter {
    fn record(&mut self, device: &Device, changes: &Changes, fuse: Option<Negotiated>) {
        if let Err(error) = self.session.write_changes(device, changes) {
            tracing::warn!(%error, "cannot write the session: a crash now would lose open files");
        }
        // Before INIT there is no agreement to keep; the kernel resends an unanswered INIT.
        let Some(fuse) = fuse.map(FuseState::from) else {
            return;
        };
        let meta = device.lasting_meta();
        if self.last.as_ref() == Some(&(meta.clone(), fuse)) {
            return;
        }
        let header = self.header(meta.clone(), fuse);
        match self.session.write_header(&header) {
            Ok(()) => self.last = Some((meta, fuse)),
            Err(error) => tracing::warn!(%error, "cannot write the session header"),
        }
    }
}

fn offset(slot: u64) -> u64 {
    HEADER_LEN + slot * SLOT_LEN
}

enum Parsed {
    File(FileState),
    Pending(PendingState),
}

fn file_slot(f: &FileState) -> [u8; SLOT_LEN as usize] {
    let mut b = [0u8; SLOT_LEN as usize];
    b[0] = FILE;
    b[1] = u8::from(f.writable);
    b[2] = u8::from(f.tracked);
    b[3] = u8::from(f.poll_handle.is_some());
    b[4..8].copy_from_slice(&f.acked.to_le_bytes());
    b[8..16].copy_from_slice(&f.id.0.to_le_bytes());
    b[16..24].copy_from_slice(&f.poll_handle.map_or(0, |h| h.0).to_le_bytes());
    b[24..28].copy_from_slice(&f.pid.to_le_bytes());
    b[32..40].copy_from_slice(&f.opened_by.0.to_le_bytes());
    b
}

fn pending_slot(p: &PendingState) -> [u8; SLOT_LEN as usize] {
    let mut b = [0u8; SLOT_LEN as usize];
    let (kind, deadline) = match *p {
        PendingState::Read { .. } => (READ, None),
        PendingState::Wait { deadline, .. } => (WAIT, deadline),
    };
    b[0] = kind;
    b[3] = u8::from(deadline.is_some());
    b[8..16].copy_from_slice(&p.request().0.to_le_bytes());
    b[16..24].copy_from_slice(&p.file().0.to_le_bytes());
    b[24..32].copy_from_slice(&deadline.map_or(0, |t| t.0).to_le_bytes());
    b
}

fn parse_slot(b: &[u8]) -> Result<Option<Parsed>, SessionError> {
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    Ok(match b[0] {
        FREE => None,
        FILE => Some(Parsed::File(FileState {
            id: FileId(u64_at(8)),
            acked: u32_at(4),
            tracked: b[2] != 0,
            writable: b[1] != 0,
            poll_handle: (b[3] != 0).then(|| PollHandle(u64_at(16))),
            pid: u32_at(24),
            opened_by: RequestId(u64_at(32)),
        })),
        READ => Some(Parsed::Pending(PendingState::Read {
            request: RequestId(u64_at(8)),
            file: FileId(u64_at(16)),
        })),
        WAIT => Some(Parsed::Pending(PendingState::Wait {
            request: RequestId(u64_at(8)),
            file: FileId(u64_at(16)),
            deadline: (b[3] != 0).then(|| Time(u64_at(24))),
        })),
        other => return Err(SessionError::Damaged(format!("slot kind {other}"))),
    })
}

fn write_all_at(fd: &OwnedFd, bytes: &[u8], at: u64) -> io::Result<()> {
    let written = rustix::io::pwrite(fd, bytes, at)?;
    if written != bytes.len() {
        return Err(io::Error::other("short write to the session"));
    }
    Ok(())
}

fn read_exact_at(fd: &OwnedFd, buf: &mut [u8], at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = rustix::io::pread(fd, &mut buf[done..], at + done as u64)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sysgenid_core::{Action, Caller, Event, Reply};

    use super::*;
    use crate::handover::SNAPSHOT_FORMAT;

    fn header(device: &Device) -> Snapshot {
        Snapshot {
            format: SNAPSHOT_FORMAT,
            device: device.lasting_state(),
            fuse: FuseState {
                kernel_minor: 45,
                minor: 41,
                flags: 0,
                max_write: 4096,
                max_readahead: 0,
                max_pages: 0,
                direct_io_allow_mmap: true,
            },
            device_path: "/dev/sysgenid".into(),
            made_device_file: true,
            fusermount: false,
            restarts: None,
            from_pid: 1,
        }
    }

    fn opened(device: &mut Device, request: u64, writable: bool) -> FileId {
        device.handle(Event::Open {
            request: RequestId(request),
            pid: 7,
            writable,
        });
        match device.poll_action() {
            Some(Action::Reply {
                reply: Reply::Opened(id),
                ..
            }) => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_narrow_change_is_one_word_store_and_a_wide_one_rewrites_the_slot() {
        let mut session = Session::create().unwrap();
        let key = Key::File(FileId(5));
        let mut slot = [0u8; SLOT_LEN as usize];
        slot[0] = FILE;
        slot[8] = 5;
        session.put(key, Some(slot)).unwrap();
        let at = offset(session.slots[&key]);
        let in_file = |s: &Session| {
            let mut b = [0u8; SLOT_LEN as usize];
            read_exact_at(&s.fd, &mut b, at).unwrap();
            b
        };
        // An ack: bytes 4..8 only.
        slot[4..8].copy_from_slice(&9u32.to_le_bytes());
        session.put(key, Some(slot)).unwrap();
        assert_eq!(in_file(&session), slot);
        // Two words at once: the poll flag and the handle.
        slot[3] = 1;
        slot[16..24].copy_from_slice(&42u64.to_le_bytes());
        session.put(key, Some(slot)).unwrap();
        assert_eq!(in_file(&session), slot);
    }

    #[test]
    fn a_new_slot_left_half_written_reads_as_free_and_the_file_grows_in_chunks() {
        let mut device = Device::new(0);
        let mut session = Session::create().unwrap();
        let kept = opened(&mut device, 1, true);
        sync(&mut session, &mut device);
        session.write_header(&header(&device)).unwrap();
        let size = |s: &Session| rustix::fs::fstat(&s.fd).unwrap().st_size as u64;
        assert_eq!(
            size(&session),
            offset(MIN_GROWTH),
            "one chunk for the first slot"
        );
        // A process killed in the middle of writing slot 1: the body is there, the kind byte
        // (written last) is not.
        let mut body = file_slot(&device.file_state(kept).unwrap());
        body[0] = FREE;
        body[8..16].copy_from_slice(&77u64.to_le_bytes());
        write_all_at(&session.fd, &body, offset(1)).unwrap();
        let copy = rustix::io::dup(session.fd()).unwrap();
        let (_, snapshot) = Session::open(copy).unwrap();
        let files = snapshot.unwrap().device.files;
        assert_eq!(files.iter().map(|f| f.id).collect::<Vec<_>>(), [kept]);
    }

    fn sync(session: &mut Session, device: &mut Device) {
        let changes = device.take_changes();
        session.write_changes(device, &changes).unwrap();
    }

    #[test]
    fn a_session_written_change_by_change_reads_back_as_the_lasting_state() {
        let id = sysgenid_abi::GenerationId([0x3c; 16]);
        let mut device = Device::new(3).with_generation_id(id);
        let mut session = Session::create().unwrap();
        let a = opened(&mut device, 1, true);
        let b = opened(&mut device, 2, false);
        let c = opened(&mut device, 3, true);
        device.handle(Event::Poll {
            request: RequestId(4),
            file: b,
            handle: Some(PollHandle(99)),
        });
        let caller = Caller {
            pid: 7,
            privileged: true,
        };
        device.handle(Event::Ioctl {
            request: RequestId(5),
            file: a,
            cmd: sysgenid_abi::SYSGENID_SET_WATCHER_TRACKING,
            arg: 1,
            caller,
            now: Time(0),
        });
        device.handle(Event::Read {
            request: RequestId(6),
            file: b,
            len: 4,
            nonblocking: false,
        });
        device.handle(Event::Release { file: c });
        while device.poll_action().is_some() {}
        sync(&mut session, &mut device);
        session.write_header(&header(&device)).unwrap();

        let copy = rustix::io::dup(session.fd()).unwrap();
        let (_reopened, snapshot) = Session::open(copy).unwrap();
        let snapshot = snapshot.expect("a header");
        assert_eq!(snapshot.device, device.lasting_state());
        assert_eq!(
            snapshot.device.generation_id, id,
            "the ID lasts with the counter"
        );
        assert_eq!(snapshot.fuse, header(&device).fuse);
    }

    #[test]
    fn freed_slots_are_reused_and_a_damaged_session_is_refused() {
        let mut device = Device::new(0);
        let mut session = Session::create().unwrap();
        for round in 0..10u64 {
            let file = opened(&mut device, round * 2 + 1, true);
            sync(&mut session, &mut device);
            device.handle(Event::Release { file });
            sync(&mut session, &mut device);
        }
        assert_eq!(session.next_slot, 1, "one slot, reused");
        session.write_header(&header(&device)).unwrap();
        write_all_at(&session.fd, &[9], offset(0)).unwrap();
        let copy = rustix::io::dup(session.fd()).unwrap();
        assert!(matches!(Session::open(copy), Err(SessionError::Damaged(_))));
    }
}
