//! The control socket under attack by a hostile local user (`nobody`, in helper processes):
//! slow-loris connections and a reconnect flood leave root's `status` and `trigger-if`
//! answered at once; a request line gets 2 seconds in all, however its bytes trickle in; a
//! uid past its own limit of connections is told so at once; malformed lines (invalid UTF-8,
//! over-long) get the `{"error": ...}` line.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use sysgenid_e2e::{Daemon, read_lines};

/// How long root may wait for an answer while the attack goes on.
const PROMPT: Duration = Duration::from_millis(1500);
/// The documented limit of concurrent connections of one uid other than root's.
const PER_UID: usize = 4;

/// Opens `count` connections, then sends one byte (never a newline) on each every 0.25 s for
/// `hold` seconds, and prints how many the daemon had not yet answered or closed.
const SLOW_LORIS: &str = r#"
import socket, sys, time
path, count, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
conns = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    conns.append(s)
print("connected", flush=True)
waiting = set(range(count))
end = time.monotonic() + hold
while time.monotonic() < end:
    for i in list(waiting):
        try:
            conns[i].recv(4096)
            waiting.discard(i)  # an answer or the end: the daemon let go
        except BlockingIOError:
            try:
                conns[i].send(b"s")
            except OSError:
                waiting.discard(i)
        except OSError:
            waiting.discard(i)
    time.sleep(0.25)
print("waiting", len(waiting), flush=True)
"#;

/// Keeps `count` connections open that never send anything, and opens a new one as soon as the
/// daemon answers or closes one, for `secs` seconds; prints how many it made.
const RECONNECT_FLOOD: &str = r#"
import socket, sys, time, selectors
path, count, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sel = selectors.DefaultSelector()
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    sel.register(s, selectors.EVENT_READ)
for _ in range(count):
    connect()
print("flooding", flush=True)
made = count
end = time.monotonic() + secs
while time.monotonic() < end:
    for key, _ in sel.select(timeout=0.05):
        sel.unregister(key.fileobj)
        key.fileobj.close()
        connect()
        made += 1
print("made", made, flush=True)
"#;

/// Opens `count` idle connections, then one more, and prints how long that one waited for its
/// first line, and the line.
const ONE_TOO_MANY: &str = r#"
import socket, sys, time
path, count = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    held.append(s)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
s.settimeout(5)
start = time.monotonic()
try:
    line = s.recv(4096).decode().strip()
except socket.timeout:
    line = "(nothing)"
print("%.3f %s" % (time.monotonic() - start, line), flush=True)
"#;

/// A python3 script run as `nobody` (no capabilities, no groups) with `args`, its output read
/// line by line.
struct Attacker {
    child: Child,
    lines: Receiver<String>,
}

impl Attacker {
    fn start(script: &str, args: &[&str]) -> Attacker {
        let mut child = sysgenid_e2e::as_nobody("/usr/bin/python3")
            .args(["-c", script])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3 as nobody");
        let lines = read_lines(child.stdout.take().expect("piped"));
        Attacker { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the attacker printed its next line")
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` as root and returns the answer line and how long it took.
fn ask(socket: &Path, request: &[u8]) -> (String, Duration) {
    let start = Instant::now();
    let mut stream = UnixStream::connect(socket).expect("connect as root");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The daemon may answer before reading all of an over-long request and close.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let line = String::from_utf8_lossy(&answer).trim().to_owned();
    (line, start.elapsed())
}

/// Root's `status` and `trigger-if` are answered promptly, with a document and a bump.
fn root_is_served(daemon: &Daemon) {
    let (status, took) = ask(&daemon.control_socket(), b"status\n");
    assert!(took < PROMPT, "status took {took:?}");
    let document: serde_json::Value = serde_json::from_str(&status).expect(&status);
    let generation = document["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("root's status was refused: {status}"));
    let request = format!("trigger-if {generation}\n");
    let (bump, took) = ask(&daemon.control_socket(), request.as_bytes());
    assert!(took < PROMPT, "trigger-if took {took:?}");
    assert!(bump.contains(r#""bumped":true"#), "{bump}");
}

fn attacked_daemon() -> Daemon {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    daemon
}

#[test]
fn slow_loris_connections_from_nobody_leave_root_served_and_end_within_2_seconds() {
    let daemon = attacked_daemon();
    let socket = daemon.control_socket();
    let attacker = Attacker::start(SLOW_LORIS, &[socket.to_str().unwrap(), "40", "3.2"]);
    assert_eq!(attacker.line(), "connected");
    std::thread::sleep(Duration::from_millis(300));
    root_is_served(&daemon);
    std::thread::sleep(Duration::from_millis(500));
    root_is_served(&daemon);
    // A byte every 0.25 s kept each read alive, but a request line gets 2 seconds in all.
    assert_eq!(attacker.line(), "waiting 0", "3.2 s after connecting");
    assert_eq!(daemon.generation(), 2);
}

#[test]
fn a_reconnect_flood_from_nobody_leaves_root_served() {
    let daemon = attacked_daemon();
    let socket = daemon.control_socket();
    let attacker = Attacker::start(RECONNECT_FLOOD, &[socket.to_str().unwrap(), "64", "3"]);
    assert_eq!(attacker.line(), "flooding");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        root_is_served(&daemon);
    }
    let made = attacker.line();
    assert!(made.starts_with("made "), "{made}");
    assert_eq!(daemon.generation(), 3);
}

#[test]
fn a_uid_past_its_limit_is_refused_at_once_and_told_why() {
    let daemon = attacked_daemon();
    let socket = daemon.control_socket();
    let limit = PER_UID.to_string();
    let attacker = Attacker::start(ONE_TOO_MANY, &[socket.to_str().unwrap(), &limit]);
    let line = attacker.line();
    let (seconds, answer) = line.split_once(' ').expect(&line);
    let seconds: f64 = seconds.parse().expect(&line);
    assert!(seconds < 1.0, "the refusal took {seconds} s: {answer}");
    let error: serde_json::Value = serde_json::from_str(answer).expect(answer);
    let message = error["error"].as_str().expect(answer);
    assert!(
        message.contains("uid 65534") && message.contains(&format!("{PER_UID} ")),
        "{message}"
    );
    root_is_served(&daemon);
}

/// The error message of one answer line.
fn error_of(line: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error line: {line}"))
        .to_owned()
}

#[test]
fn invalid_utf8_gets_an_error_line() {
    let daemon = Daemon::start();
    let (line, _) = ask(&daemon.control_socket(), b"stat\xffus\n");
    let message = error_of(&line);
    assert!(message.contains("UTF-8"), "{message}");
}

#[test]
fn an_over_long_line_gets_an_error_line_without_waiting_for_its_end() {
    let daemon = Daemon::start();
    // A valid request padded past the limit is refused, not cut and served.
    let padded = format!("status{}\n", " ".repeat(300));
    let (line, _) = ask(&daemon.control_socket(), padded.as_bytes());
    assert!(error_of(&line).contains("longer than 256 bytes"), "{line}");
    // No newline at all: answered as soon as the limit is passed.
    let mut stream = UnixStream::connect(daemon.control_socket()).unwrap();
    stream.write_all(&[b'a'; 300]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        error_of(answer.trim()).contains("longer than 256 bytes"),
        "{answer:?}"
    );
}

#[test]
fn a_silent_client_is_told_its_time_is_up() {
    let daemon = Daemon::start();
    let start = Instant::now();
    let (line, took) = ask(&daemon.control_socket(), b"stat");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(error_of(&line).contains("2 s"), "{line}");
    assert!(start.elapsed() < Duration::from_secs(5));
}
