//! Wakeups: a blocked `read(2)`, `poll(2)` and `epoll_wait(2)` must be woken by a bump that
//! another process triggers, and `poll`/`epoll` must report `POLLIN | POLLRDNORM` exactly while
//! the file is outdated, both level- and edge-triggered.
//!
//! Blocked calls are observed, never slept on: a pending read shows in the daemon's status, and
//! a task sleeping in `poll` or `epoll_wait` shows `poll_schedule_timeout...` or
//! `do_epoll_wait` in `/proc/<pid>/wchan` (while a FUSE `POLL` request is still unanswered it
//! shows `request_wait_answer` instead).
//! Every wait has a timeout, so a missing wakeup fails an assertion instead of hanging.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use rustix::event::Timespec;
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use sysgenid_e2e::{Daemon, DevFile, Identity, Probe, eventually, wchan, within};

/// `POLLIN | POLLRDNORM` as `poll(2)` reports it.
const POLL_OUTDATED: u32 = sysgenid_abi::POLL_OUTDATED;
/// Long enough that only a missing wakeup reaches it.
const LONG: Duration = Duration::from_secs(5);

fn trigger_from_another_process(daemon: &Daemon) {
    let out = Probe::run(
        Identity::Root,
        &["open", daemon.device_str(), "ro", "trigger", "0"],
    );
    assert_eq!(out, ["open ok", "trigger ok 0"]);
}

/// An epoll instance watching one device file for `EPOLLIN` (plus `extra`, such as `EPOLLET`).
struct Epoll(OwnedFd);

impl Epoll {
    fn new(file: &DevFile, extra: EventFlags) -> Epoll {
        let ep = epoll::create(CreateFlags::CLOEXEC).expect("epoll_create1");
        epoll::add(
            &ep,
            file,
            EventData::new_u64(7),
            EventFlags::IN | EventFlags::RDNORM | extra,
        )
        .expect("epoll_ctl ADD");
        Epoll(ep)
    }

    /// The events reported within `timeout`, as raw flag bits.
    fn wait(&self, timeout: Duration) -> Vec<u32> {
        let mut events = Vec::with_capacity(4);
        let ts = Timespec::try_from(timeout).expect("timeout");
        epoll::wait(
            &self.0,
            rustix::buffer::spare_capacity(&mut events),
            Some(&ts),
        )
        .expect("epoll_wait");
        events
            .iter()
            .map(|e| {
                let (flags, data) = (e.flags, e.data);
                assert_eq!(data.u64(), 7);
                flags.bits()
            })
            .collect()
    }
}

#[test]
fn blocking_read_is_woken_by_a_trigger_from_another_process() {
    let daemon = Daemon::start();
    let mut reader = Probe::spawn(
        Identity::Root,
        &["open", daemon.device_str(), "ro", "read", "4"],
    );
    reader.expect("open ok");
    eventually("the read is pending", || daemon.count("pending_reads") == 1);
    assert_eq!(reader.line_within(Duration::from_millis(100)), None);
    trigger_from_another_process(&daemon);
    reader.expect("read ok 1");
    assert_eq!(daemon.count("pending_reads"), 0);
    reader.finish();
}

#[test]
fn poll_reports_pollin_and_rdnorm_only_while_outdated() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    assert!(f.poll(Duration::ZERO).unwrap().is_empty());
    assert_eq!(f.trigger(0), Ok(0));
    assert_eq!(f.poll(Duration::ZERO).unwrap().bits() as u32, POLL_OUTDATED);
    // Still outdated after reads: reading is not acknowledging.
    assert_eq!(f.read(), Ok(1));
    assert_eq!(f.poll(Duration::ZERO).unwrap().bits() as u32, POLL_OUTDATED);
    assert_eq!(f.ack(1), Ok(4));
    assert!(f.poll(Duration::ZERO).unwrap().is_empty());
}

#[test]
fn poll_is_woken_by_a_trigger_from_another_process() {
    let daemon = Daemon::start();
    let mut poller = Probe::spawn(
        Identity::Root,
        &["open", daemon.device_str(), "ro", "poll", "5000"],
    );
    poller.expect("open ok");
    let pid = poller.pid();
    eventually("the probe sleeps in poll", || {
        wchan(pid).starts_with("poll_schedule_timeout")
    });
    trigger_from_another_process(&daemon);
    poller.expect(&format!("poll ok {POLL_OUTDATED}"));
    poller.finish();
}

#[test]
fn epoll_level_triggered_reports_outdated_until_acked() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    let ep = Epoll::new(&f, EventFlags::empty());
    assert_eq!(ep.wait(Duration::ZERO), Vec::<u32>::new());
    trigger_from_another_process(&daemon);
    let ready = EventFlags::IN.bits() | EventFlags::RDNORM.bits();
    assert_eq!(ep.wait(LONG), [ready]);
    assert_eq!(ep.wait(LONG), [ready], "level-triggered: reported again");
    assert_eq!(f.read(), Ok(1));
    assert_eq!(ep.wait(LONG), [ready], "a read is not an ack");
    assert_eq!(f.ack(1), Ok(4));
    assert_eq!(ep.wait(Duration::from_millis(50)), Vec::<u32>::new());
}

#[test]
fn epoll_edge_triggered_reports_each_bump_once() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    let ep = Epoll::new(&f, EventFlags::ET);
    assert_eq!(ep.wait(Duration::ZERO), Vec::<u32>::new());
    trigger_from_another_process(&daemon);
    let ready = EventFlags::IN.bits() | EventFlags::RDNORM.bits();
    assert_eq!(ep.wait(LONG), [ready]);
    assert_eq!(
        ep.wait(Duration::from_millis(50)),
        Vec::<u32>::new(),
        "edge-triggered: one report per edge"
    );
    // A second bump while still outdated wakes every poller again.
    trigger_from_another_process(&daemon);
    assert_eq!(ep.wait(LONG), [ready]);
    assert_eq!(f.read(), Ok(2));
}

#[test]
fn epoll_edge_triggered_added_while_outdated_is_woken_after_ack_and_trigger() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(f.trigger(0), Ok(0));
    // Registered while already outdated (the driver's C code would not register here).
    let ep = Epoll::new(&f, EventFlags::ET);
    let ready = EventFlags::IN.bits() | EventFlags::RDNORM.bits();
    assert_eq!(ep.wait(LONG), [ready], "ready at registration");
    assert_eq!(f.ack(1), Ok(4));
    assert_eq!(ep.wait(Duration::from_millis(50)), Vec::<u32>::new());
    trigger_from_another_process(&daemon);
    assert_eq!(
        ep.wait(LONG),
        [ready],
        "a registration made while outdated must hear a later bump"
    );
    assert_eq!(f.read(), Ok(2));
}

#[test]
fn epoll_wait_in_progress_is_woken_by_a_trigger_from_another_process() {
    let daemon = Daemon::start();
    let f = DevFile::rw_nonblock(&daemon.device);
    let ep = Arc::new(Epoll::new(&f, EventFlags::ET));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiting = Arc::clone(&ep);
    let handle = std::thread::spawn(move || {
        tid_tx
            .send(rustix::thread::gettid().as_raw_nonzero().get() as u32)
            .unwrap();
        waiting.wait(LONG)
    });
    let tid = tid_rx.recv().unwrap();
    eventually("the thread sleeps in epoll_wait", || {
        let at = wchan(tid);
        at == "do_epoll_wait" || at.starts_with("ep_poll")
    });
    trigger_from_another_process(&daemon);
    let events = within("epoll_wait returns", LONG * 2, move || {
        handle.join().unwrap()
    });
    let ready = EventFlags::IN.bits() | EventFlags::RDNORM.bits();
    assert_eq!(events, [ready]);
}

#[test]
fn one_trigger_wakes_every_blocked_reader() {
    const READERS: usize = 20;
    let daemon = Daemon::start();
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..READERS {
        let reader = DevFile::rw(&daemon.device);
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(reader.read());
        });
    }
    eventually("every read is pending", || {
        daemon.count("pending_reads") == READERS as u64
    });
    trigger_from_another_process(&daemon);
    for _ in 0..READERS {
        let result = rx.recv_timeout(LONG).expect("every reader wakes");
        assert_eq!(result, Ok(1));
    }
    assert_eq!(daemon.count("pending_reads"), 0);
}

#[test]
fn concurrent_triggers_from_many_processes_each_bump_once() {
    const TRIGGERS: u64 = 8;
    let daemon = Daemon::start();
    let probes: Vec<Probe> = (0..TRIGGERS)
        .map(|_| {
            Probe::spawn(
                Identity::Root,
                &["open", daemon.device_str(), "ro", "trigger", "0"],
            )
        })
        .collect();
    for probe in probes {
        assert_eq!(probe.finish(), ["open ok", "trigger ok 0"]);
    }
    assert_eq!(daemon.generation(), TRIGGERS);
}
