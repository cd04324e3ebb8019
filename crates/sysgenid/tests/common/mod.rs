//! Helpers shared by the integration tests: explicit paths for a harness daemon, the example
//! client binary, and a raw trigger.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use sysgenid::Paths;
use sysgenid_e2e::{Daemon, Identity, Probe};

/// The daemon's paths, passed explicitly (tests never touch the process environment).
pub fn paths(daemon: &Daemon) -> Paths {
    Paths::new(&daemon.device, &daemon.state_dir)
}

/// Bumps the generation from another process (the e2e probe, as root).
pub fn trigger_from_another_process(daemon: &Daemon, min: u32) {
    let out = Probe::run(
        Identity::Root,
        &[
            "open",
            daemon.device_str(),
            "ro",
            "trigger",
            &min.to_string(),
        ],
    );
    assert_eq!(out, ["open ok", "trigger ok 0"]);
}

/// The `client` example, copied into the daemon's directory (made traversable) so that other
/// users can run it.
pub fn client_binary(daemon: &Daemon) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let built = profile.join("examples").join("client");
    assert!(
        built.exists(),
        "{} is missing: cargo test and cargo nextest build the examples",
        built.display()
    );
    daemon.allow_other_users();
    let copy = daemon.dir.join("client");
    std::fs::copy(&built, &copy).expect("copy the client example");
    copy
}

/// Runs the `client` example with `args` as `who` (`setpriv` arguments, empty for root), with
/// the daemon's paths in the child's environment only.
pub fn run_client(daemon: &Daemon, setpriv: &[&str], args: &[&str]) -> Output {
    let client = client_binary(daemon);
    let mut command = if setpriv.is_empty() {
        Command::new(&client)
    } else {
        let mut c = Command::new("setpriv");
        c.args(setpriv).arg(&client);
        c
    };
    command
        .args(args)
        .env("SYSGENID_DEVICE", &daemon.device)
        .env("SYSGENID_STATE_DIR", &daemon.state_dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the client example")
}

/// `setpriv` arguments for `nobody` with no capabilities and no groups.
#[allow(unused_imports)]
pub use sysgenid_e2e::NOBODY_SETPRIV as NOBODY;
