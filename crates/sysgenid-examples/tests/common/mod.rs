//! Helpers shared by the example tests: run an example binary against a harness daemon and
//! read its output line by line, with timeouts.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sysgenid::Paths;
use sysgenid_e2e::{Daemon, read_lines};

/// How long an example gets to print its next line or to exit.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon's paths, passed explicitly (tests never touch the process environment).
pub fn paths(daemon: &Daemon) -> Paths {
    Paths::new(&daemon.device, &daemon.state_dir)
}

/// The `key=value` fields of an output line.
pub fn fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .collect()
}

/// A running example binary. Dropping it kills the process if it is still running.
#[derive(Debug)]
pub struct Example {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Example {
    /// Starts `exe` with `args`, pointed at `daemon` through the environment the client library
    /// reads (`SYSGENID_DEVICE`, `SYSGENID_STATE_DIR`), in the child only.
    pub fn spawn(exe: &str, daemon: &Daemon, args: &[&str]) -> Example {
        let mut child = Command::new(exe)
            .args(args)
            .env("SYSGENID_DEVICE", &daemon.device)
            .env("SYSGENID_STATE_DIR", &daemon.state_dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {exe}: {e}"));
        let stdin = child.stdin.take();
        let lines = read_lines(child.stdout.take().expect("piped stdout"));
        Example {
            child,
            stdin,
            lines,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line; panics at end of output or after [`TIMEOUT`].
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the example ended early"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the example printed nothing for {TIMEOUT:?}")
            }
        }
    }

    /// The next line if one comes within `wait`.
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Sends `command` and a newline to stdin.
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{command}").expect("write to the example");
        stdin.flush().expect("flush");
    }

    /// Sends `command` and returns the line it answers with.
    pub fn ask(&mut self, command: &str) -> String {
        self.send(command);
        self.line()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// Waits for the process to exit (panics after [`TIMEOUT`]) and returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        self.stdin = None;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the example did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
