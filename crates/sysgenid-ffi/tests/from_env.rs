//! The functions without `_at` find the daemon through `SYSGENID_DEVICE` and
//! `SYSGENID_STATE_DIR`. The only test of its binary, since it sets the process environment.

use std::ptr;

use sysgenid_e2e::Daemon;
use sysgenid_ffi::*;

#[test]
fn functions_without_paths_use_the_environment() {
    let daemon = Daemon::start();
    // SAFETY: this binary runs this one test, and no other thread of it reads or writes the
    // environment while it is set (the daemon is a separate process, already started).
    unsafe {
        std::env::set_var("SYSGENID_DEVICE", &daemon.device);
        std::env::set_var("SYSGENID_STATE_DIR", &daemon.state_dir);
    }
    let mut generation = u32::MAX;
    // SAFETY: a valid out-parameter.
    assert_eq!(unsafe { sysgenid_generation(&mut generation) }, 0);
    assert_eq!(generation, 0);

    let mut watcher = ptr::null_mut();
    // SAFETY: a valid out-parameter.
    let rc = unsafe { sysgenid_watcher_open(SYSGENID_TRACK, &mut watcher) };
    assert_eq!(rc, 0);
    assert_eq!(daemon.count("tracked"), 1);
    let mut probe = ptr::null_mut();
    // SAFETY: a valid out-parameter.
    assert_eq!(unsafe { sysgenid_probe_open(&mut probe) }, 0);

    assert_eq!(sysgenid_trigger(0), 0);
    assert_eq!(daemon.generation(), 1);
    assert_eq!(sysgenid_wait_watchers(100), -libc::ETIME);
    // The process-wide mapping sees the bump with no new call to set it up.
    // SAFETY: a valid out-parameter.
    assert_eq!(unsafe { sysgenid_generation(&mut generation) }, 0);
    assert_eq!(generation, 1);
    let mut id = [0u8; SYSGENID_ID_SIZE];
    // SAFETY: valid out-parameters (16 bytes for the ID).
    let rc = unsafe { sysgenid_generation_id(&mut generation, id.as_mut_ptr()) };
    assert_eq!(rc, 0);
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!((generation, hex), (1, daemon.generation_id()));
    let mut from_probe = 0;
    // SAFETY: a live probe and a valid out-parameter.
    let rc = unsafe { sysgenid_probe_generation(probe, &mut from_probe) };
    assert_eq!(rc, 0);
    assert_eq!(from_probe, 1);

    let mut changed = 0;
    // SAFETY: a live watcher and a valid out-parameter.
    unsafe {
        assert_eq!(sysgenid_watcher_next_change(watcher, &mut changed), 0);
        assert_eq!(changed, 1);
        assert_eq!(sysgenid_watcher_ack(watcher, changed), 0);
    }
    assert_eq!(sysgenid_wait_watchers(0), 0, "nobody lags: returns at once");
    // SAFETY: live objects, not used afterwards.
    unsafe {
        sysgenid_watcher_free(watcher);
        sysgenid_probe_free(probe);
    }
}
