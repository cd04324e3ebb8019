//! A small test driver around `Device`: numbers requests and collects actions.
#![allow(dead_code)]

use sysgenid_abi::{
    Errno, SYSGENID_SET_WATCHER_TRACKING, SYSGENID_TRIGGER_GEN_UPDATE, SYSGENID_WAIT_WATCHERS,
};
use sysgenid_core::{
    Action, BumpToken, Caller, Device, Event, FileId, GenerationId, PollHandle, Reply, RequestId,
    Time,
};

/// The ID the test persist gives `generation`: known, and different for each generation.
pub fn id_of(generation: u32) -> GenerationId {
    GenerationId::from_words([generation, !generation, 0x5eed, generation ^ 0xa5a5])
}

pub const ROOT: Caller = Caller {
    pid: 1,
    privileged: true,
};
pub const NOBODY: Caller = Caller {
    pid: 2,
    privileged: false,
};

/// Drives a device; persists succeed unless `fail_persist` is set.
pub struct Harness {
    pub dev: Device,
    next_request: u64,
    pub now: Time,
    pub fail_persist: bool,
    /// Every action seen, in order, persist requests included.
    pub log: Vec<Action>,
}

impl Harness {
    pub fn new(generation: u32) -> Harness {
        Harness {
            dev: Device::new(generation),
            next_request: 1,
            now: Time(1_000),
            fail_persist: false,
            log: Vec::new(),
        }
    }

    pub fn request(&mut self) -> RequestId {
        let r = RequestId(self.next_request);
        self.next_request += 1;
        r
    }

    /// Handles an event, answers persist requests, and returns the actions it caused.
    pub fn run(&mut self, event: Event<'_>) -> Vec<Action> {
        self.dev.handle(event);
        let mut out = Vec::new();
        while let Some(action) = self.dev.poll_action() {
            if let Action::Persist(generation) = action {
                let result = if self.fail_persist {
                    Err("disk on fire".to_owned())
                } else {
                    Ok(id_of(generation))
                };
                self.log.push(action.clone());
                out.push(action);
                self.dev.handle(Event::PersistDone { result });
                continue;
            }
            let wake = action == Action::WakeReaders;
            self.log.push(action.clone());
            out.push(action);
            if wake {
                self.dev.handle(Event::WakeReaders);
            }
        }
        out
    }

    /// The replies among the actions an event caused, by request.
    pub fn replies(&mut self, event: Event<'_>) -> Vec<(RequestId, Reply)> {
        replies_of(&self.run(event))
    }

    /// Sends a request and returns its one immediate reply, or `None` if it stayed pending.
    pub fn call(&mut self, make: impl FnOnce(RequestId) -> Event<'static>) -> Option<Reply> {
        let request = self.request();
        let replies = self.replies(make(request));
        reply_for(&replies, request)
    }

    pub fn open(&mut self) -> FileId {
        self.open_with(true)
    }

    pub fn open_read_only(&mut self) -> FileId {
        self.open_with(false)
    }

    fn open_with(&mut self, writable: bool) -> FileId {
        match self.call(|request| Event::Open {
            request,
            pid: 42,
            writable,
        }) {
            Some(Reply::Opened(file)) => file,
            other => panic!("open gave {other:?}"),
        }
    }

    pub fn read(&mut self, file: FileId, len: usize, nonblocking: bool) -> Option<Reply> {
        self.call(|request| Event::Read {
            request,
            file,
            len,
            nonblocking,
        })
    }

    pub fn start_read(&mut self, file: FileId) -> RequestId {
        let request = self.request();
        let replies = self.replies(Event::Read {
            request,
            file,
            len: 4,
            nonblocking: false,
        });
        assert!(replies.is_empty(), "read did not block: {replies:?}");
        request
    }

    pub fn write(&mut self, file: FileId, data: &[u8]) -> Reply {
        let request = self.request();
        let replies = self.replies(Event::Write {
            request,
            file,
            data,
        });
        reply_for(&replies, request).expect("write always answers")
    }

    pub fn ack(&mut self, file: FileId) -> Reply {
        let generation = self.dev.generation();
        self.write(file, &generation.to_ne_bytes())
    }

    pub fn poll(&mut self, file: FileId, handle: Option<u64>) -> Reply {
        self.call(|request| Event::Poll {
            request,
            file,
            handle: handle.map(PollHandle),
        })
        .expect("poll always answers")
    }

    pub fn ioctl_event(
        &mut self,
        file: FileId,
        cmd: u32,
        arg: u64,
        caller: Caller,
    ) -> (RequestId, Event<'static>) {
        let request = self.request();
        let now = self.now;
        (
            request,
            Event::Ioctl {
                request,
                file,
                cmd,
                arg,
                caller,
                now,
            },
        )
    }

    pub fn ioctl(&mut self, file: FileId, cmd: u32, arg: u64, caller: Caller) -> Option<Reply> {
        let (request, event) = self.ioctl_event(file, cmd, arg, caller);
        let replies = self.replies(event);
        reply_for(&replies, request)
    }

    pub fn track(&mut self, file: FileId, on: bool) -> Option<Reply> {
        self.ioctl(file, SYSGENID_SET_WATCHER_TRACKING, u64::from(on), ROOT)
    }

    pub fn trigger(&mut self, file: FileId, min: u64) -> Option<Reply> {
        self.ioctl(file, SYSGENID_TRIGGER_GEN_UPDATE, min, ROOT)
    }

    /// A conditional trigger (`trigger-if`); its reply, or `None` if it stayed pending.
    pub fn trigger_if(&mut self, expect: u32, min: u32, caller: Caller) -> Option<Reply> {
        self.call(|request| Event::TriggerIf {
            request,
            expect,
            min,
            caller,
        })
    }

    /// Starts a WAIT_WATCHERS; returns the request and its immediate reply, if any.
    pub fn wait(&mut self, file: FileId, timeout_ms: u64) -> (RequestId, Option<Reply>) {
        let (request, event) = self.ioctl_event(file, SYSGENID_WAIT_WATCHERS, timeout_ms, ROOT);
        let replies = self.replies(event);
        (request, reply_for(&replies, request))
    }

    pub fn release(&mut self, file: FileId) -> Vec<Action> {
        self.run(Event::Release { file })
    }

    pub fn hardware_bump(&mut self) -> Vec<Action> {
        self.run(Event::HardwareBump {
            backend: "test-hw",
            token: BumpToken(0),
        })
    }
}

pub fn replies_of(actions: &[Action]) -> Vec<(RequestId, Reply)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { request, reply } => Some((*request, reply.clone())),
            _ => None,
        })
        .collect()
}

pub fn reply_for(replies: &[(RequestId, Reply)], request: RequestId) -> Option<Reply> {
    let mine: Vec<&Reply> = replies
        .iter()
        .filter(|(r, _)| *r == request)
        .map(|(_, reply)| reply)
        .collect();
    assert!(mine.len() <= 1, "request answered twice: {replies:?}");
    mine.first().map(|r| (*r).clone())
}

/// Opens a file on a bare device (request 1), for tests that answer persists themselves.
pub fn open_on(dev: &mut Device) -> FileId {
    dev.handle(Event::Open {
        request: RequestId(1),
        pid: 1,
        writable: true,
    });
    match dev.poll_action() {
        Some(Action::Reply {
            reply: Reply::Opened(file),
            ..
        }) => file,
        other => panic!("open gave {other:?}"),
    }
}

pub fn err(errno: Errno) -> Option<Reply> {
    Some(Reply::Error(errno))
}
