//! Helpers shared by the `sysgenid` command's tests: the command aimed at a test daemon.
// Each test binary uses only some of these.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

use sysgenid_e2e::Daemon;

/// `sysgenid ARGS` aimed at `daemon`, with no stdin and no sd_notify socket.
pub fn sysgenid(daemon: &Daemon, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sysgenid"));
    c.env("SYSGENID_DEVICE", &daemon.device)
        .env("SYSGENID_STATE_DIR", &daemon.state_dir)
        .env_remove("NOTIFY_SOCKET")
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Runs `sysgenid ARGS` against `daemon` to the end.
pub fn run(daemon: &Daemon, args: &[&str]) -> Output {
    sysgenid(daemon, args).output().unwrap()
}

/// The command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `sysgenid ARGS` aimed at `daemon` on a terminal: `script` (util-linux) gives it one and
/// copies what it prints, stdout and stderr alike, to its own stdout.
pub fn on_a_terminal(daemon: &Daemon, args: &[&str]) -> Command {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let command = format!(
        "'{}' --device '{}' --state-dir '{}' {}",
        env!("CARGO_BIN_EXE_sysgenid"),
        daemon.device.display(),
        daemon.state_dir.display(),
        quoted.join(" ")
    );
    let mut c = Command::new("script");
    c.args(["-qec", &command, "/dev/null"])
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    c
}
