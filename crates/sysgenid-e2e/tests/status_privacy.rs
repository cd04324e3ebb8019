//! `status` shows a process's full command line only to root and to the process's own user;
//! anyone else sees its command name in brackets, so the document does not undo `hidepid`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use sysgenid_e2e::{Daemon, DevFile};

/// Opens the device read-only, says so, and holds it until stdin closes; its own arguments
/// after the device are the secret.
const WATCHER: &str = r#"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print("open", flush=True)
sys.stdin.read()
"#;

/// Asks the control socket for `status` and prints the answer line.
const ASK_STATUS: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b"status\n")
print(s.makefile().readline().strip(), flush=True)
"#;

fn python(nobody: bool, script: &str, args: &[&str]) -> Command {
    let mut command = if nobody {
        sysgenid_e2e::as_nobody("/usr/bin/python3")
    } else {
        Command::new("/usr/bin/python3")
    };
    command.args(["-c", script]).args(args);
    command
}

/// A watcher with `secret` in its command line, holding the device open.
struct Watcher {
    child: Child,
}

impl Watcher {
    fn start(daemon: &Daemon, nobody: bool, secret: &str) -> Watcher {
        let mut child = python(nobody, WATCHER, &[daemon.device_str(), secret])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the watcher");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "open");
        Watcher { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.stdin.take().map(|mut s| s.write_all(b""));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status document as `nobody` gets it.
fn status_as_nobody(daemon: &Daemon) -> (String, serde_json::Value) {
    let socket = daemon.control_socket();
    let out = python(true, ASK_STATUS, &[socket.to_str().unwrap()])
        .output()
        .expect("ask as nobody");
    let line = String::from_utf8(out.stdout).unwrap();
    let document = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    (line, document)
}

/// The command shown for process `pid` in a status document.
fn command_of(status: &serde_json::Value, pid: u32) -> Option<String> {
    let files = status["outdated_files"].as_array().expect("a list");
    let file = files
        .iter()
        .find(|f| f["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not listed: {status}"));
    file["command"].as_str().map(str::to_owned)
}

#[test]
fn only_root_and_the_owner_see_a_command_line() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    let roots = Watcher::start(&daemon, false, "--password=hunter2");
    let nobodys = Watcher::start(&daemon, true, "--token=swordfish");
    let trigger = DevFile::rw_nonblock(&daemon.device);
    assert_eq!(trigger.trigger(0), Ok(0));
    assert_eq!(trigger.ack(1), Ok(4));

    let status = daemon.status();
    let root_sees = command_of(&status, roots.pid()).expect("a command line");
    assert!(root_sees.contains("--password=hunter2"), "{root_sees}");
    let root_sees = command_of(&status, nobodys.pid()).expect("a command line");
    assert!(root_sees.contains("--token=swordfish"), "{root_sees}");

    let (line, status) = status_as_nobody(&daemon);
    assert!(!line.contains("hunter2"), "{line}");
    assert_eq!(
        command_of(&status, roots.pid()).as_deref(),
        Some("[python3]"),
        "only the name of another user's process"
    );
    let own = command_of(&status, nobodys.pid()).expect("its own command line");
    assert!(own.contains("--token=swordfish"), "{own}");
}
