//! The C API called from Rust against a live daemon: NULL checks, out-parameters left alone on
//! error, errno mapping, a full watch/ack/trigger/wait cycle, messages, and the panic boundary.

use std::ffi::{CStr, CString, c_int};
use std::ptr;
use std::time::Duration;

use sysgenid_e2e::{Daemon, eventually, within};
use sysgenid_ffi::*;

/// What an out-parameter holds before a call that must not write it.
const SENTINEL: u32 = 0xDEAD_BEEF;
const LONG: Duration = Duration::from_secs(20);

/// The daemon's paths as C strings.
struct CPaths {
    device: CString,
    state_dir: CString,
}

impl CPaths {
    fn of(daemon: &Daemon) -> CPaths {
        CPaths::new(
            daemon.device.to_str().expect("UTF-8 path"),
            daemon.state_dir.to_str().expect("UTF-8 path"),
        )
    }

    fn new(device: &str, state_dir: &str) -> CPaths {
        CPaths {
            device: CString::new(device).unwrap(),
            state_dir: CString::new(state_dir).unwrap(),
        }
    }

    fn open(&self, flags: u32) -> *mut sysgenid_watcher {
        let mut watcher = ptr::null_mut();
        // SAFETY: valid C strings and a valid out-parameter.
        let rc = unsafe {
            sysgenid_watcher_open_at(
                self.device.as_ptr(),
                self.state_dir.as_ptr(),
                flags,
                &mut watcher,
            )
        };
        assert_eq!(rc, 0, "open: {}", message(rc));
        assert!(!watcher.is_null());
        watcher
    }

    fn trigger(&self, min: u32) -> c_int {
        // SAFETY: valid C strings.
        unsafe { sysgenid_trigger_at(self.device.as_ptr(), self.state_dir.as_ptr(), min) }
    }

    fn wait(&self, timeout_ms: u64) -> c_int {
        // SAFETY: valid C strings.
        unsafe {
            sysgenid_wait_watchers_at(self.device.as_ptr(), self.state_dir.as_ptr(), timeout_ms)
        }
    }
}

fn message(code: c_int) -> String {
    // SAFETY: sysgenid_strerror returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(sysgenid_strerror(code)) }
        .to_str()
        .expect("UTF-8 message")
        .to_owned()
}

fn try_read(watcher: *mut sysgenid_watcher) -> (c_int, u32) {
    let mut out = SENTINEL;
    // SAFETY: a live watcher and a valid out-parameter.
    let rc = unsafe { sysgenid_watcher_try_read(watcher, &mut out) };
    (rc, out)
}

fn ack(watcher: *mut sysgenid_watcher, generation: u32) -> c_int {
    // SAFETY: a live watcher.
    unsafe { sysgenid_watcher_ack(watcher, generation) }
}

fn set_tracking(watcher: *mut sysgenid_watcher, on: bool) -> c_int {
    // SAFETY: a live watcher.
    unsafe { sysgenid_watcher_set_tracking(watcher, on) }
}

fn free(watcher: *mut sysgenid_watcher) {
    // SAFETY: a live watcher, not used afterwards.
    unsafe { sysgenid_watcher_free(watcher) }
}

/// A watcher pointer moved to another thread, which then is its only user.
struct SendWatcher(*mut sysgenid_watcher);
// SAFETY: a watcher may move between threads; the test uses it from one thread at a time.
unsafe impl Send for SendWatcher {}

const EINVAL: c_int = -libc::EINVAL;

#[test]
fn null_pointers_give_einval_write_nothing_and_do_nothing() {
    let daemon = Daemon::start();
    let paths = CPaths::of(&daemon);
    let (device, state) = (paths.device.as_ptr(), paths.state_dir.as_ptr());
    let watcher = paths.open(0);
    let mut probe = ptr::null_mut();
    // SAFETY: valid C strings and out-parameter.
    let rc = unsafe { sysgenid_probe_open_at(device, state, &mut probe) };
    assert_eq!(rc, 0);
    let bogus_watcher = ptr::dangling_mut::<sysgenid_watcher>();
    let bogus_probe = ptr::dangling_mut::<sysgenid_probe>();
    let mut out_watcher = bogus_watcher;
    let mut out_probe = bogus_probe;
    let mut generation = SENTINEL;
    let mut fd: c_int = -7;
    let mut count = u64::MAX;
    let null = ptr::null();

    // SAFETY: every pointer is NULL, a live object, or a valid out-parameter.
    unsafe {
        assert_eq!(sysgenid_generation(ptr::null_mut()), EINVAL);
        assert_eq!(sysgenid_probe_open(ptr::null_mut()), EINVAL);
        assert_eq!(sysgenid_probe_open_at(null, state, &mut out_probe), EINVAL);
        assert_eq!(sysgenid_probe_open_at(device, null, &mut out_probe), EINVAL);
        assert_eq!(
            sysgenid_probe_open_at(device, state, ptr::null_mut()),
            EINVAL
        );
        assert_eq!(
            sysgenid_probe_generation(ptr::null(), &mut generation),
            EINVAL
        );
        assert_eq!(sysgenid_probe_generation(probe, ptr::null_mut()), EINVAL);
        sysgenid_probe_free(ptr::null_mut());

        assert_eq!(sysgenid_watcher_open(0, ptr::null_mut()), EINVAL);
        assert_eq!(
            sysgenid_watcher_open_at(null, state, 0, &mut out_watcher),
            EINVAL
        );
        assert_eq!(
            sysgenid_watcher_open_at(device, null, 0, &mut out_watcher),
            EINVAL
        );
        assert_eq!(
            sysgenid_watcher_open_at(device, state, 0, ptr::null_mut()),
            EINVAL
        );
        assert_eq!(sysgenid_watcher_fd(ptr::null(), &mut fd), EINVAL);
        assert_eq!(sysgenid_watcher_fd(watcher, ptr::null_mut()), EINVAL);
        assert_eq!(
            sysgenid_watcher_next_change(ptr::null_mut(), &mut generation),
            EINVAL
        );
        // With a NULL out-parameter it fails at once instead of blocking.
        assert_eq!(
            sysgenid_watcher_next_change(watcher, ptr::null_mut()),
            EINVAL
        );
        assert_eq!(
            sysgenid_watcher_try_read(ptr::null_mut(), &mut generation),
            EINVAL
        );
        assert_eq!(sysgenid_watcher_try_read(watcher, ptr::null_mut()), EINVAL);
        assert_eq!(sysgenid_watcher_ack(ptr::null_mut(), 0), EINVAL);
        assert_eq!(sysgenid_watcher_set_tracking(ptr::null_mut(), true), EINVAL);
        assert_eq!(
            sysgenid_watcher_reopen_count(ptr::null(), &mut count),
            EINVAL
        );
        assert_eq!(
            sysgenid_watcher_reopen_count(watcher, ptr::null_mut()),
            EINVAL
        );
        sysgenid_watcher_free(ptr::null_mut());

        assert_eq!(sysgenid_wait_watchers_at(null, state, 1), EINVAL);
        assert_eq!(sysgenid_wait_watchers_at(device, null, 1), EINVAL);
        assert_eq!(sysgenid_trigger_at(null, state, 0), EINVAL);
        assert_eq!(sysgenid_trigger_at(device, null, 0), EINVAL);

        // A misaligned out-parameter is refused like a NULL one.
        let mut words = [SENTINEL; 2];
        let misaligned = words.as_mut_ptr().cast::<u8>().add(1).cast::<u32>();
        assert_eq!(sysgenid_probe_generation(probe, misaligned), EINVAL);
        assert_eq!(words, [SENTINEL; 2]);
        sysgenid_probe_free(probe);
    }
    assert_eq!(
        out_watcher, bogus_watcher,
        "a failed open wrote its out-parameter"
    );
    assert_eq!(
        out_probe, bogus_probe,
        "a failed open wrote its out-parameter"
    );
    assert_eq!((generation, fd, count), (SENTINEL, -7, u64::MAX));
    assert_eq!(daemon.generation(), 0, "a refused trigger bumped");
    assert_eq!(
        daemon.count("open_files"),
        1,
        "a refused open opened the device"
    );
    free(watcher);
}

#[test]
fn unknown_flags_give_einval() {
    let daemon = Daemon::start();
    let paths = CPaths::of(&daemon);
    let bogus = ptr::dangling_mut::<sysgenid_watcher>();
    let mut out = bogus;
    // SAFETY: valid C strings and out-parameter.
    let rc = unsafe {
        sysgenid_watcher_open_at(paths.device.as_ptr(), paths.state_dir.as_ptr(), 8, &mut out)
    };
    assert_eq!(rc, EINVAL);
    assert_eq!(out, bogus);
    // The kernel sends RELEASE after close returns: the count drops soon after.
    eventually("every file is released", || daemon.count("open_files") == 0);
}

#[test]
fn a_missing_device_gives_enoent_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let paths = CPaths::new(
        dir.path().join("device").to_str().unwrap(),
        dir.path().join("state").to_str().unwrap(),
    );
    let bogus = ptr::dangling_mut::<sysgenid_watcher>();
    let mut watcher = bogus;
    let bogus_probe = ptr::dangling_mut::<sysgenid_probe>();
    let mut probe = bogus_probe;
    // SAFETY: valid C strings and out-parameters.
    unsafe {
        let (device, state) = (paths.device.as_ptr(), paths.state_dir.as_ptr());
        assert_eq!(
            sysgenid_watcher_open_at(device, state, 0, &mut watcher),
            -libc::ENOENT
        );
        assert_eq!(
            sysgenid_probe_open_at(device, state, &mut probe),
            -libc::ENOENT
        );
    }
    assert_eq!(paths.wait(10), -libc::ENOENT);
    assert_eq!(paths.trigger(0), -libc::ENOENT);
    assert_eq!((watcher, probe), (bogus, bogus_probe));
    assert!(message(-libc::ENOENT).contains("is sysgenidd running?"));
}

#[test]
fn a_stopped_daemons_mountpoint_gives_enotconn() {
    // A mountpoint file the daemon did not make stays after a clean stop, mode 0000.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("device"), "").unwrap();
    let mut daemon = sysgenid_e2e::Daemon::start_with(sysgenid_e2e::DaemonOptions {
        dir: Some(dir.path().to_owned()),
        ..Default::default()
    });
    let paths = CPaths::of(&daemon);
    assert!(daemon.stop());
    let bogus = ptr::dangling_mut::<sysgenid_watcher>();
    let mut watcher = bogus;
    // SAFETY: valid C strings and out-parameter.
    let rc = unsafe {
        sysgenid_watcher_open_at(
            paths.device.as_ptr(),
            paths.state_dir.as_ptr(),
            0,
            &mut watcher,
        )
    };
    assert_eq!(rc, -libc::ENOTCONN, "{}", message(rc));
    assert_eq!(watcher, bogus);
    assert!(message(rc).contains("start it again"));
}

#[test]
fn an_ack_of_a_value_that_is_not_current_gives_einval() {
    let daemon = Daemon::start();
    let paths = CPaths::of(&daemon);
    let watcher = paths.open(0);
    assert_eq!(ack(watcher, 5), EINVAL);
    assert_eq!(paths.trigger(0), 0);
    assert_eq!(ack(watcher, 0), EINVAL, "0 is no longer current");
    assert_eq!(ack(watcher, 1), 0);
    free(watcher);
}

#[test]
fn tracking_or_acking_on_a_read_only_watcher_gives_ebadf() {
    let daemon = Daemon::start();
    let paths = CPaths::of(&daemon);
    let watcher = paths.open(SYSGENID_READ_ONLY);
    assert_eq!(set_tracking(watcher, true), -libc::EBADF);
    assert_eq!(set_tracking(watcher, false), 0, "turning it off is allowed");
    assert_eq!(ack(watcher, 0), -libc::EBADF);
    assert_eq!(daemon.count("tracked"), 0);
    free(watcher);

    let bogus = ptr::dangling_mut::<sysgenid_watcher>();
    let mut out = bogus;
    // SAFETY: valid C strings and out-parameter.
    let rc = unsafe {
        sysgenid_watcher_open_at(
            paths.device.as_ptr(),
            paths.state_dir.as_ptr(),
            SYSGENID_TRACK | SYSGENID_READ_ONLY,
            &mut out,
        )
    };
    assert_eq!(rc, -libc::EBADF);
    assert_eq!(out, bogus);
    assert!(message(rc).contains("read-only"));
}

#[test]
fn a_wait_times_out_with_etime_while_a_tracked_watcher_lags() {
    let daemon = Daemon::start();
    let paths = CPaths::of(&daemon);
    let watcher = paths.open(SYSGENID_TRACK);
    assert_eq!(paths.trigger(0), 0);
    assert_eq!(paths.wait(100), -libc::ETIME);
    assert!(message(-libc::ETIME).contains("names the lagging processes"));
    assert_eq!(try_read(watcher), (0, 1));
    assert_eq!(ack(watcher, 1), 0);
    assert_eq!(paths.wait(5_000), 0);
    free(watcher);
}

/// The ID as the status document prints it.
fn hex(id: &[u8; SYSGENID_ID_SIZE]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A probe of `paths`' device, which must open.
fn open_probe(paths: &CPaths) -> *mut sysgenid_probe {
    let mut probe = ptr::null_mut();
    // SAFETY: valid C strings and out-parameter.
    let rc = unsafe {
        sysgenid_probe_open_at(paths.device.as_ptr(), paths.state_dir.as_ptr(), &mut probe)
    };
    assert_eq!(rc, 0);
    probe
}

#[test]
fn the_probe_reads_each_generation_with_its_id_and_checks_its_arguments() {
    let daemon = Daemon::start();
    let paths = CPaths::of(&daemon);
    let probe = open_probe(&paths);
    let mut seen = Vec::new();
    for round in 0..3 {
        let (mut generation, mut id) = (SENTINEL, [0u8; SYSGENID_ID_SIZE]);
        // SAFETY: a live probe and valid out-parameters (16 bytes for the ID).
        let rc = unsafe { sysgenid_probe_generation_id(probe, &mut generation, id.as_mut_ptr()) };
        assert_eq!((rc, generation), (0, round));
        assert_eq!(hex(&id), daemon.generation_id(), "the status document's ID");
        assert!(!seen.contains(&id), "a new ID at every bump");
        seen.push(id);
        assert_eq!(paths.trigger(0), 0);
    }
    let (mut generation, mut id) = (SENTINEL, [7u8; SYSGENID_ID_SIZE]);
    // SAFETY: NULL arguments are refused before anything is read or written.
    unsafe {
        let none = ptr::null_mut();
        assert_eq!(
            sysgenid_probe_generation_id(ptr::null(), &mut generation, id.as_mut_ptr()),
            EINVAL
        );
        assert_eq!(
            sysgenid_probe_generation_id(probe, none, id.as_mut_ptr()),
            EINVAL
        );
        assert_eq!(
            sysgenid_probe_generation_id(probe, &mut generation, none.cast()),
            EINVAL
        );
        assert_eq!(
            sysgenid_generation_id(&mut generation, ptr::null_mut()),
            EINVAL
        );
        sysgenid_probe_free(probe);
    }
    assert_eq!(
        (generation, id),
        (SENTINEL, [7u8; SYSGENID_ID_SIZE]),
        "nothing written"
    );
}

#[test]
fn a_page_without_an_id_gives_enodata() {
    let dir = tempfile::tempdir().unwrap();
    let mut page = vec![0u8; 4096];
    page[..4].copy_from_slice(&3u32.to_ne_bytes());
    std::fs::write(dir.path().join("generation"), &page).unwrap();
    let paths = CPaths::new("/nonexistent", dir.path().to_str().unwrap());
    let mut probe = ptr::null_mut();
    let (mut generation, mut id) = (SENTINEL, [0u8; SYSGENID_ID_SIZE]);
    // SAFETY: valid C strings and out-parameters; the probe is freed once.
    unsafe {
        assert_eq!(
            sysgenid_probe_open_at(paths.device.as_ptr(), paths.state_dir.as_ptr(), &mut probe),
            0
        );
        assert_eq!(sysgenid_probe_generation(probe, &mut generation), 0);
        assert_eq!(generation, 3, "an older daemon's page");
        generation = SENTINEL;
        let rc = sysgenid_probe_generation_id(probe, &mut generation, id.as_mut_ptr());
        assert_eq!((rc, generation), (-libc::ENODATA, SENTINEL));
        sysgenid_probe_free(probe);
    }
}

#[test]
fn watch_ack_trigger_and_wait_cycle() {
    let daemon = Daemon::start();
    let paths = CPaths::of(&daemon);
    let (device, state) = (paths.device.as_ptr(), paths.state_dir.as_ptr());

    let mut probe = ptr::null_mut();
    let mut generation = SENTINEL;
    // SAFETY: valid C strings and out-parameters.
    unsafe {
        assert_eq!(sysgenid_probe_open_at(device, state, &mut probe), 0);
        assert_eq!(sysgenid_probe_generation(probe, &mut generation), 0);
    }
    assert_eq!(generation, 0);

    let watcher = paths.open(SYSGENID_TRACK);
    assert_eq!(daemon.count("tracked"), 1);
    assert_eq!(try_read(watcher), (-libc::EAGAIN, SENTINEL), "up to date");

    let mut fd = -1;
    let mut reopens = u64::MAX;
    // SAFETY: a live watcher and valid out-parameters.
    unsafe {
        assert_eq!(sysgenid_watcher_fd(watcher, &mut fd), 0);
        assert_eq!(sysgenid_watcher_reopen_count(watcher, &mut reopens), 0);
    }
    assert!(fd >= 0);
    assert_eq!(reopens, 0);
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pollfd, 1, 0) };
    assert_eq!(rc, 0, "not readable while current");

    // A blocked next_change on another thread is woken by a trigger from this one.
    let moved = SendWatcher(watcher);
    let waiter = std::thread::spawn(move || {
        let moved = moved;
        let mut out = SENTINEL;
        // SAFETY: the watcher is live and this thread is its only user until joined.
        let rc = unsafe { sysgenid_watcher_next_change(moved.0, &mut out) };
        (rc, out)
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(!waiter.is_finished(), "next_change blocks while up to date");
    assert_eq!(paths.trigger(5), 0, "trigger to at least 5");
    let (rc, changed) = within("next_change", LONG, move || waiter.join().unwrap());
    assert_eq!((rc, changed), (0, 5));

    // SAFETY: a live probe and a valid out-parameter.
    let rc = unsafe { sysgenid_probe_generation(probe, &mut generation) };
    assert_eq!(rc, 0);
    assert_eq!(generation, 5);
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pollfd, 1, 0) };
    assert_eq!(rc, 1, "readable while outdated");
    assert_eq!(paths.wait(100), -libc::ETIME, "the tracked watcher lags");

    // The overseer's forever-wait returns once the watcher acknowledges.
    let overseer = CPaths::of(&daemon);
    let wait = std::thread::spawn(move || overseer.wait(0));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!wait.is_finished(), "waits while the tracked watcher lags");
    assert_eq!(ack(watcher, 5), 0);
    assert_eq!(
        within("wait_watchers", LONG, move || wait.join().unwrap()),
        0
    );
    assert_eq!(try_read(watcher), (-libc::EAGAIN, SENTINEL));

    // Untracked, it no longer holds waits.
    assert_eq!(set_tracking(watcher, false), 0);
    assert_eq!(paths.trigger(0), 0);
    assert_eq!(paths.wait(5_000), 0);
    assert_eq!(try_read(watcher), (0, 6));
    assert_eq!(daemon.generation(), 6);

    free(watcher);
    // SAFETY: a live probe, not used afterwards.
    unsafe { sysgenid_probe_free(probe) };
    // The kernel sends RELEASE after close returns: the count drops soon after.
    eventually("every file is released", || daemon.count("open_files") == 0);
}

#[test]
fn strerror_says_what_happened_and_what_to_do_for_every_errno() {
    let unknown = message(-libc::ENOSPC);
    assert!(unknown.contains("does not document"), "{unknown}");
    let mut seen = Vec::new();
    let documented = sysgenid_abi::Errno::ALL
        .iter()
        .map(|e| (e.raw(), e.name()))
        .chain([
            (libc::ENOENT, "ENOENT"),
            (libc::ENOTCONN, "ENOTCONN"),
            (libc::ENODEV, "ENODEV"),
        ]);
    for (errno, name) in documented {
        let text = message(-errno);
        assert!(text.len() > 40, "{name}: {text:?}");
        assert!(text.contains(name), "{name}: {text:?} does not name it");
        assert_ne!(text, unknown, "{name} has no message of its own");
        assert!(!seen.contains(&text), "{name} shares a message: {text:?}");
        assert_eq!(message(errno), text, "a positive errno means the same");
        seen.push(text);
    }
    // The advice mirrors the Rust errors'.
    for (errno, advice) in [
        (libc::ENOENT, "is sysgenidd running?"),
        (libc::EACCES, "`sysgenid` group"),
        (libc::EACCES, "CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN"),
        (libc::EBADF, "opened read-only"),
        (libc::EINVAL, "not the current one"),
        (libc::EOVERFLOW, "UINT32_MAX"),
        (libc::EIO, "could not persist"),
        (libc::ENODEV, "--device-mmap off"),
    ] {
        assert!(message(-errno).contains(advice), "{advice:?} missing");
    }
    assert_eq!(message(0), "success");
    assert!(message(SYSGENID_E_PANIC).contains("SYSGENID_E_PANIC"));
    assert_eq!(message(c_int::MIN), unknown);
}

#[test]
fn version_is_the_package_version() {
    // SAFETY: a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(sysgenid_version()) };
    assert_eq!(version.to_str(), Ok(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_panic_inside_a_call_returns_the_panic_code_and_writes_nothing() {
    let daemon = Daemon::start();
    let paths = CPaths::of(&daemon);
    let probe = open_probe(&paths);
    let mut generation = SENTINEL;
    sysgenid_private_inject_panic();
    // SAFETY: a live probe and a valid out-parameter.
    let rc = unsafe { sysgenid_probe_generation(probe, &mut generation) };
    assert_eq!(
        rc, SYSGENID_E_PANIC,
        "the panic became a code instead of unwinding"
    );
    assert_eq!(generation, SENTINEL);
    // The hook fires once; the probe works again.
    // SAFETY: as above.
    let rc = unsafe { sysgenid_probe_generation(probe, &mut generation) };
    assert_eq!(rc, 0);
    assert_eq!(generation, 0);

    sysgenid_private_inject_panic();
    assert_eq!(paths.trigger(0), SYSGENID_E_PANIC);
    assert_eq!(daemon.generation(), 0, "the panic came before the trigger");
    sysgenid_private_inject_panic();
    assert_eq!(sysgenid_wait_watchers(1), SYSGENID_E_PANIC);
    // SAFETY: a live probe, not used afterwards.
    unsafe { sysgenid_probe_free(probe) };
}

#[test]
fn a_watcher_whose_call_panicked_refuses_every_later_call() {
    let daemon = Daemon::start();
    let paths = CPaths::of(&daemon);
    let watcher = paths.open(SYSGENID_TRACK);
    assert_eq!(paths.trigger(0), 0);
    sysgenid_private_inject_panic();
    assert_eq!(try_read(watcher), (SYSGENID_E_PANIC, SENTINEL));
    // Poisoned: the next calls refuse without touching the device.
    assert_eq!(try_read(watcher), (SYSGENID_E_PANIC, SENTINEL));
    assert_eq!(ack(watcher, 1), SYSGENID_E_PANIC);
    assert_eq!(set_tracking(watcher, false), SYSGENID_E_PANIC);
    assert_eq!(
        daemon.count("outdated"),
        1,
        "the refused ack did not happen"
    );
    // Freeing still works and ends the lagging watcher.
    free(watcher);
    assert_eq!(paths.wait(5_000), 0);
}

#[test]
fn trigger_if_bumps_only_from_the_expected_generation_and_checks_its_out_parameters() {
    let daemon = Daemon::start();
    let paths = CPaths::of(&daemon);
    let trigger_if = |expect: u32, min: u32, generation: *mut u32, bumped: *mut bool| {
        // SAFETY: valid C strings; the out-parameters are NULL or point at locals.
        unsafe {
            sysgenid_trigger_if_at(
                paths.device.as_ptr(),
                paths.state_dir.as_ptr(),
                expect,
                min,
                generation,
                bumped,
            )
        }
    };
    let mut generation = SENTINEL;
    let mut bumped = false;
    assert_eq!(trigger_if(0, 0, ptr::null_mut(), &mut bumped), EINVAL);
    assert_eq!(trigger_if(0, 0, &mut generation, ptr::null_mut()), EINVAL);
    assert_eq!(generation, SENTINEL, "nothing written on error");
    assert_eq!(daemon.generation(), 0, "nothing bumped on error");

    assert_eq!(trigger_if(0, 7, &mut generation, &mut bumped), 0);
    assert_eq!((generation, bumped), (7, true));
    assert_eq!(trigger_if(0, 0, &mut generation, &mut bumped), 0);
    assert_eq!((generation, bumped), (7, false), "7 is not the expected 0");
    assert_eq!(daemon.generation(), 7);

    // No daemon behind the state directory: the socket's errno.
    let gone = CPaths::new("/nonexistent/device", "/nonexistent/state");
    // SAFETY: valid C strings and out-parameters.
    let rc = unsafe {
        sysgenid_trigger_if_at(
            gone.device.as_ptr(),
            gone.state_dir.as_ptr(),
            0,
            0,
            &mut generation,
            &mut bumped,
        )
    };
    assert_eq!(rc, -libc::ENOENT, "{}", message(rc));
}
