//! The System Generation ID device as a pure state machine.
//!
//! [`Device`] holds all the device knows: the generation counter, each open file (a watcher)
//! with the generation it acknowledged and whether it is tracked, and every request still
//! waiting for an answer. It does no IO and reads no clock. A transport (the FUSE daemon, a
//! test) turns what callers do into [`Event`]s and carries out the [`Action`]s that come back:
//! replies, poll wakeups, persisting and publishing the counter, timers.
//!
//! A blocked `read(2)` or `WAIT_WATCHERS` is an entry in a map, not a blocked thread.
//!
//! ```
//! use sysgenid_core::{Action, Caller, Device, Event, GenerationId, Reply, RequestId, Time};
//! use sysgenid_abi::SYSGENID_TRIGGER_GEN_UPDATE;
//!
//! let mut dev = Device::new(5);
//! dev.handle(Event::Open { request: RequestId(1), pid: 100, writable: true });
//! let Some(Action::Reply { reply: Reply::Opened(file), .. }) = dev.poll_action() else {
//!     unreachable!()
//! };
//! // "What if it's 9?": the new value is max(min, current + 1).
//! let caller = Caller { pid: 100, privileged: true };
//! let trigger = Event::Ioctl {
//!     request: RequestId(2), file, cmd: SYSGENID_TRIGGER_GEN_UPDATE, arg: 3, caller, now: Time(0),
//! };
//! dev.handle(trigger);
//! assert_eq!(dev.poll_action(), Some(Action::Persist(6)));
//! // The transport drew the new generation's random ID and made both durable.
//! let id = GenerationId([7; 16]);
//! dev.handle(Event::PersistDone { result: Ok(id) });
//! assert!(matches!(dev.poll_action(), Some(Action::Publish { generation: 6, id: _, .. })));
//! assert_eq!(dev.poll_action(), Some(Action::Reply { request: RequestId(2), reply: Reply::Done }));
//! assert_eq!((dev.generation(), dev.generation_id()), (6, id));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod device;
mod io;
mod state;
mod status;
mod types;

pub use device::{Changes, Device, READS_ANSWERED_AT_ONCE};
pub use io::{Action, Event, Reply};
pub use state::{BadState, DeviceState, FileState, NotQuiet, PendingState};
pub use status::{BumpFailure, BumpRecord, FileStatus, Status};
pub use sysgenid_abi::GenerationId;
pub use types::{BumpSource, BumpToken, Caller, FileId, PollHandle, RequestId, Time};
