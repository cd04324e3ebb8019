//! Who may trigger: `TRIGGER_GEN_UPDATE` needs `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN` in
//! the user namespace that owns the device, judged for the calling thread.
//!
//! Each identity is a real probe process whose credentials were set by `setpriv` or
//! `unshare -Ur` before exec (the test process never changes its own): `nobody` with no
//! capabilities, `nobody` holding only `CAP_CHECKPOINT_RESTORE`, and root inside a new user
//! namespace. The first test checks that these incantations produce the intended credentials.
//! After every refused trigger the generation is unchanged. Checks happen in the documented
//! order: permission, then the argument, then overflow.

use sysgenid_e2e::{Daemon, DevFile, Identity, Probe};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// The `uid=` and `capeff=` of a probe's `whoami` line.
fn whoami(who: Identity) -> (u32, u64) {
    let out = Probe::run(who, &["whoami"]);
    let line = out[0].strip_prefix("whoami ok ").expect("whoami line");
    let mut uid = None;
    let mut cap_eff = None;
    for field in line.split_whitespace() {
        if let Some(v) = field.strip_prefix("uid=") {
            uid = Some(v.parse().expect("uid"));
        }
        if let Some(v) = field.strip_prefix("capeff=") {
            cap_eff = Some(u64::from_str_radix(v, 16).expect("capeff"));
        }
    }
    (uid.expect("uid"), cap_eff.expect("capeff"))
}

fn run(daemon: &Daemon, who: Identity, steps: &[&str]) -> Vec<String> {
    let mut args = vec!["open", daemon.device_str(), "ro"];
    args.extend_from_slice(steps);
    Probe::run(who, &args)
}

#[test]
fn probe_identities_have_the_intended_credentials() {
    assert_eq!(whoami(Identity::Nobody), (65534, 0));
    assert_eq!(
        whoami(Identity::NobodyWithCheckpointRestore),
        (65534, 1 << CAP_CHECKPOINT_RESTORE)
    );
    let (uid, cap_eff) = whoami(Identity::RootInNewUserNs);
    assert_eq!(uid, 0);
    assert_ne!(cap_eff & (1 << CAP_SYS_ADMIN), 0, "{cap_eff:#x}");
    assert_ne!(cap_eff & (1 << CAP_CHECKPOINT_RESTORE), 0, "{cap_eff:#x}");
}

#[test]
fn nobody_can_open_the_device_read_only_but_not_read_write() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    let dev = daemon.device_str();
    let out = Probe::run(
        Identity::Nobody,
        &["open", dev, "rw", "open", dev, "ro", "read", "0"],
    );
    assert_eq!(out, ["open err EACCES", "open ok", "read ok 0bytes"]);
}

#[test]
fn nobody_without_capabilities_gets_eacces_and_the_generation_is_unchanged() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    let out = run(
        &daemon,
        Identity::Nobody,
        &["trigger", "0", "thread-trigger", "0", "trigger", "7"],
    );
    assert_eq!(
        out,
        [
            "open ok",
            "trigger err EACCES",
            "thread-trigger err EACCES",
            "trigger err EACCES"
        ]
    );
    let status = daemon.status();
    assert_eq!(status["generation"], 0);
    assert!(status["last_bump"].is_null(), "{status}");
}

#[test]
fn non_root_with_only_cap_checkpoint_restore_may_trigger() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    let mut probe = Probe::spawn(
        Identity::NobodyWithCheckpointRestore,
        &["open", daemon.device_str(), "ro", "trigger", "5"],
    );
    let pid = probe.pid();
    probe.expect("open ok");
    probe.expect("trigger ok 0");
    probe.finish();
    let status = daemon.status();
    assert_eq!(status["generation"], 5);
    assert_eq!(status["last_bump"]["source"], "trigger");
    assert_eq!(status["last_bump"]["pid"], pid);
}

#[test]
fn non_root_with_only_cap_checkpoint_restore_may_trigger_from_a_non_main_thread() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    let out = run(
        &daemon,
        Identity::NobodyWithCheckpointRestore,
        &["thread-trigger", "0"],
    );
    assert_eq!(out, ["open ok", "thread-trigger ok 0"]);
    assert_eq!(daemon.generation(), 1);
}

#[test]
fn root_in_a_new_user_namespace_gets_eacces_and_the_generation_is_unchanged() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    let out = run(
        &daemon,
        Identity::RootInNewUserNs,
        &["trigger", "0", "thread-trigger", "0"],
    );
    assert_eq!(
        out,
        ["open ok", "trigger err EACCES", "thread-trigger err EACCES"]
    );
    let status = daemon.status();
    assert_eq!(status["generation"], 0);
    assert!(status["last_bump"].is_null(), "{status}");
}

#[test]
fn a_trigger_from_a_non_main_thread_succeeds() {
    let daemon = Daemon::start();
    let mut probe = Probe::spawn(
        Identity::Root,
        &["open", daemon.device_str(), "ro", "thread-trigger", "0"],
    );
    let pid = probe.pid();
    probe.expect("open ok");
    probe.expect("thread-trigger ok 0");
    probe.finish();
    let status = daemon.status();
    assert_eq!(status["generation"], 1);
    // The daemon judged and recorded the calling thread, not the process.
    let tid = status["last_bump"]["pid"].as_u64().expect("a trigger pid");
    assert_ne!(tid, u64::from(pid), "{status}");
}

#[test]
fn trigger_checks_permission_then_argument_then_overflow() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    let root = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(root.trigger(0xFFFF_FFFF), Ok(0));
    // Unprivileged: EACCES even with a bad argument or at the overflow.
    let out = run(
        &daemon,
        Identity::Nobody,
        &["trigger", "0x100000005", "trigger", "0"],
    );
    assert_eq!(out, ["open ok", "trigger err EACCES", "trigger err EACCES"]);
    // Privileged: the argument is checked before the overflow.
    assert_eq!(root.trigger(0x1_0000_0005), Err(sysgenid_e2e::Errno::INVAL));
    assert_eq!(root.trigger(0), Err(sysgenid_e2e::Errno::OVERFLOW));
    assert_eq!(daemon.generation(), u64::from(u32::MAX));
}
