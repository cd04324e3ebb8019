//! A crash of the serving process (SIGKILL at any point, even in the middle of trigger storms)
//! is invisible to clients: the keeper starts it again on the same connection, and every file,
//! mapping, registration and blocked call carries on with no error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use sysgenid_e2e::{Daemon, DaemonOptions, DevFile, Errno, Identity, Mapper, Probe, eventually};

const LONG: Duration = Duration::from_secs(10);

fn start(max_crashes: usize) -> Daemon {
    let daemon = Daemon::start_with(DaemonOptions {
        args: vec!["--keeper-max-crashes".to_owned(), max_crashes.to_string()],
        ..DaemonOptions::default()
    });
    daemon.allow_other_users();
    daemon
}

/// Acknowledges `g`; `EINVAL` says the storm bumped again since the read, which is no error.
fn ack_unless_moved_on(file: &DevFile, g: u32) -> Result<(), Errno> {
    match file.ack(g) {
        Ok(_) | Err(Errno::INVAL) => Ok(()),
        Err(e) => Err(e),
    }
}

#[test]
fn a_crash_of_the_serving_process_is_invisible_to_every_kind_of_client() {
    let daemon = start(10);
    let device = daemon.device.clone();
    let dev = device.to_str().unwrap();
    let mut lagger = Probe::spawn(
        Identity::Root,
        &["open", dev, "rw", "track", "1", "wait-stdin"],
    );
    lagger.expect("open ok");
    lagger.expect("track ok 0");
    let mut mapper = Mapper::start(&device);
    let acked = DevFile::rw(&device);
    acked.track(true).unwrap();
    DevFile::rw(&device).trigger(0).unwrap();
    assert_eq!(mapper.next_change(LONG), Some(1));
    acked.ack(1).unwrap();
    let mut reader = Probe::spawn(Identity::Root, &["open", dev, "ro", "read", "4"]);
    reader.expect("open ok");
    let polled = DevFile::open(&device, rustix::fs::OFlags::RDONLY).unwrap();
    let ep = epoll::create(CreateFlags::CLOEXEC).unwrap();
    epoll::add(&ep, &polled, EventData::new_u64(1), EventFlags::IN).unwrap();
    let mut waiter = Probe::spawn(Identity::Root, &["open", dev, "rw", "wait", "0"]);
    waiter.expect("open ok");
    eventually("the read and the wait are blocked", || {
        let s = daemon.status();
        s["pending_reads"] == 1 && s["pending_waits"] == 1
    });
    let laggards = daemon.tracked_laggards();

    let old = daemon.serving_pid();
    let new = daemon.crash_serving();
    assert_ne!(old, new);
    let status = daemon.status();
    assert_eq!(status["daemon"]["restarts"]["mode"], "keeper", "{status}");
    assert_eq!(
        status["daemon"]["restarts"]["cause"], "signal 9",
        "{status}"
    );
    assert_eq!(
        status["daemon"]["pid"],
        u64::from(daemon.pid()),
        "the keeper stays"
    );
    assert_eq!(
        (
            status["pending_reads"].as_u64(),
            status["pending_waits"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(daemon.tracked_laggards(), laggards, "the same laggards");
    mapper.page_out();

    DevFile::rw(&device).trigger(0).unwrap();
    assert_eq!(reader.line(), "read ok 2");
    assert_eq!(waiter.line(), "wait err EINTR");
    assert_eq!(
        mapper.next_change(LONG),
        Some(2),
        "no SIGBUS after a reclaim"
    );
    let mut events = Vec::with_capacity(2);
    let ts = rustix::event::Timespec::try_from(LONG).unwrap();
    epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), Some(&ts)).unwrap();
    assert_eq!(events.len(), 1, "the epoll registration is woken");
    assert_eq!(acked.read(), Ok(2));
    assert_eq!(acked.ack(2), Ok(4));
    assert_eq!(polled.read(), Ok(2));
    assert!(mapper.alive());
    assert!(mapper.finish().success());
    lagger.kill();
}

/// One client of each kind, each recording the first error it sees.
struct Clients {
    stop: Arc<AtomicBool>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    fn start(device: &std::path::Path) -> Clients {
        let mut clients = Clients {
            stop: Arc::new(AtomicBool::new(false)),
            errors: Arc::default(),
            threads: Vec::new(),
        };
        for _ in 0..2 {
            clients.spawn("trigger", device, |f, _| f.trigger(0).map(drop));
        }
        // More readers than the 16 a bump answers at once, so crashes also land between a
        // trigger's answer and the answers to the rest of the readers it woke.
        for _ in 0..20 {
            clients.spawn("read", device, |f, _| {
                let g = f.read()?;
                ack_unless_moved_on(f, g)
            });
        }
        // A wait on an up-to-date file ends with EINTR at the next bump: that is its answer.
        clients.spawn("wait", device, |f, _| {
            let g = f.read()?;
            ack_unless_moved_on(f, g)?;
            match f.wait_watchers(0) {
                Ok(_) | Err(Errno::INTR) => Ok(()),
                Err(e) => Err(e),
            }
        });
        clients
    }

    fn spawn(
        &mut self,
        name: &'static str,
        device: &std::path::Path,
        step: impl Fn(&DevFile, u32) -> Result<(), Errno> + Send + 'static,
    ) {
        let file = DevFile::rw(device);
        let (stop, errors) = (Arc::clone(&self.stop), Arc::clone(&self.errors));
        self.threads.push(std::thread::spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                if let Err(e) = step(&file, round) {
                    errors.lock().unwrap().push(format!("{name}: {e:?}"));
                    return;
                }
                round += 1;
            }
        }));
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Stops every client (the blocked ones end at the next bump) and returns the errors.
    fn stop(self, device: &std::path::Path) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        let nudge = DevFile::rw(device);
        let deadline = std::time::Instant::now() + LONG;
        while self.threads.iter().any(|t| !t.is_finished()) {
            assert!(std::time::Instant::now() < deadline, "a client never ended");
            let _ = nudge.trigger(0);
            std::thread::sleep(Duration::from_millis(10));
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        self.errors.lock().unwrap().clone()
    }
}

/// Also the case that once stalled it: a SIGKILL while the page-store thread sleeps in the
/// kernel on a page that a mapper's fill holds locked, unanswered by the dead process.
#[test]
fn a_hundred_crashes_during_trigger_storms_cost_no_client_an_error() {
    const CYCLES: usize = 100;
    let daemon = start(CYCLES * 2);
    let device = daemon.device.clone();
    let dev = device.to_str().unwrap();
    let mut lagger = Probe::spawn(
        Identity::Root,
        &["open", dev, "rw", "track", "1", "wait-stdin"],
    );
    lagger.expect("open ok");
    lagger.expect("track ok 0");
    let mut mapper = Mapper::start(&device);
    let clients = Clients::start(&device);
    let checker = DevFile::rw(&device);
    let mut seen = mapper.first;
    for cycle in 0..CYCLES {
        // A random point of the storm: 0 to 30 ms after the last start.
        let pause = Duration::from_micros((cycle as u64 * 7919) % 30_000);
        std::thread::sleep(pause);
        daemon.crash_serving();
        checker
            .trigger(0)
            .unwrap_or_else(|e| panic!("cycle {cycle}: trigger {e:?}"));
        let after = checker
            .read()
            .unwrap_or_else(|e| panic!("cycle {cycle}: read {e:?}"));
        ack_unless_moved_on(&checker, after).unwrap();
        mapper.page_out();
        // The mapper follows: every value it reports only goes up.
        while let Some(g) = mapper.next_change(Duration::from_millis(200)) {
            assert!(g > seen, "cycle {cycle}: the mapper saw {seen} then {g}");
            seen = g;
            if g >= after {
                break;
            }
        }
        assert!(
            seen >= after,
            "cycle {cycle}: the mapper is stuck at {seen} < {after}"
        );
        assert!(mapper.alive(), "cycle {cycle}: the mapper died (SIGBUS?)");
        assert_eq!(clients.errors(), Vec::<String>::new(), "cycle {cycle}");
        assert_eq!(
            daemon.tracked_laggards(),
            vec![u64::from(lagger.pid())],
            "cycle {cycle}: the laggards"
        );
    }
    let restarts = daemon.status()["daemon"]["restarts"]["count"].as_u64();
    assert_eq!(restarts, Some(CYCLES as u64));
    let last = checker.trigger(0).and_then(|_| checker.read());
    let errors = clients.stop(&device);
    assert_eq!(errors, Vec::<String>::new());
    assert!(last.is_ok());
    assert!(mapper.finish().success());
    lagger.kill();
}

/// The connection the keeper holds can end while no process serves it (the mount goes in
/// between): the next serving process mounts anew instead of failing on the ended one.
#[test]
fn a_connection_that_ends_between_two_serving_processes_is_replaced_by_a_new_mount() {
    use rustix::process::Signal;
    let daemon = start(10);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let old = daemon.serving_pid();
    daemon.signal(Signal::STOP);
    let serving = rustix::process::Pid::from_raw(old as i32).unwrap();
    rustix::process::kill_process(serving, Signal::KILL).unwrap();
    eventually("the serving process is dead", || {
        std::fs::read_to_string(format!("/proc/{old}/stat")).map_or(true, |stat| {
            stat.rsplit(')').next().unwrap().trim().starts_with('Z')
        })
    });
    let umount = std::process::Command::new("umount")
        .arg("-l")
        .arg(&daemon.device)
        .status()
        .unwrap();
    assert!(umount.success());
    daemon.signal(Signal::CONT);
    eventually("a new serving process serves a new mount", || {
        daemon.try_status().is_ok_and(|s| {
            s["serving"] == true && s["daemon"]["serving_pid"].as_u64() != Some(u64::from(old))
        })
    });
    assert!(
        daemon
            .log()
            .contains("the kept connection no longer serves the device; starting anew"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.generation(), 1, "the counter went on");
    let file = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(file.read(), Err(Errno::AGAIN));
    file.trigger(0).unwrap();
    assert_eq!(file.read(), Ok(2));
}
