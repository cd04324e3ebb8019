//! Clients check whom they trust: a page file, a control socket's daemon and a device mount
//! must belong to root or to the client's own user, and the page file must be a regular,
//! one-page file no one else may write. Anything else is refused with an error naming what is
//! wrong, never read as a generation or a bump.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sysgenid::{Paths, Probe, Watcher};
use sysgenid_e2e::{eventually, workspace_binary};

const NOBODY: u32 = 65534;
/// The value a forger wants clients to read.
const FORGED: u32 = 31337;

/// A directory every user may traverse, with a `state` directory in it owned by `owner`.
fn state_dir_of(owner: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chown(&state, Some(owner), Some(owner)).unwrap();
    (dir, state)
}

/// Writes a page file of `len` bytes holding [`FORGED`], owned by `owner`, with `mode`.
fn forge_page(path: &Path, len: usize, owner: u32, mode: u32) {
    let mut page = vec![0u8; len];
    page[..4].copy_from_slice(&FORGED.to_ne_bytes());
    std::fs::write(path, &page).unwrap();
    chown(path, Some(owner), Some(owner)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `Probe::open` on `state`, from another thread so that a probe stuck opening a pipe fails
/// the test instead of hanging it; the error message, or the value it read.
fn probe_outcome(state: &Path) -> Result<String, u32> {
    let paths = Paths::new(state.join("no-device"), state);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Probe::open(&paths).map(|p| p.generation()));
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(value)) => Err(value),
        Ok(Err(e)) => Ok(e.to_string()),
        Err(_) => Ok("(stuck opening it)".to_owned()),
    }
}

/// Asserts that the probe of `state` refuses with a message containing `why`.
fn assert_refused(state: &Path, why: &str) {
    match probe_outcome(state) {
        Ok(message) => assert!(message.contains(why), "{message:?} lacks {why:?}"),
        Err(value) => panic!("the probe read {value} instead of refusing ({why})"),
    }
}

#[test]
fn a_page_file_forged_by_another_user_is_refused_by_the_probe_and_by_sysgenid_get() {
    let (_dir, state) = state_dir_of(NOBODY);
    forge_page(&state.join("generation"), 4096, NOBODY, 0o444);
    assert_refused(&state, "uid 65534");

    let out = Command::new(workspace_binary("sysgenid"))
        .arg("get")
        .env("SYSGENID_STATE_DIR", &state)
        .env("SYSGENID_DEVICE", state.join("no-device"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(!stdout.contains(&FORGED.to_string()), "{stdout}");
    assert!(stderr.contains("uid 65534"), "{stderr}");
}

#[test]
fn a_root_owned_page_file_in_a_directory_of_another_user_is_refused() {
    let (_dir, state) = state_dir_of(NOBODY);
    forge_page(&state.join("generation"), 4096, 0, 0o444);
    assert_refused(&state, "uid 65534");
}

#[test]
fn a_page_file_others_may_write_or_replace_is_refused() {
    let (_dir, state) = state_dir_of(0);
    let page = state.join("generation");
    forge_page(&page, 4096, 0, 0o666);
    assert_refused(&state, "mode 0666");
    std::fs::set_permissions(&page, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_refused(&state, "mode 0777");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        probe_outcome(&state),
        Err(FORGED),
        "root's own page file is fine"
    );
}

#[test]
fn a_page_file_that_is_not_one_regular_page_is_refused() {
    let (dir, state) = state_dir_of(0);
    let page = state.join("generation");
    forge_page(&page, 8192, 0, 0o444);
    assert_refused(&state, "8192 bytes");
    std::fs::remove_file(&page).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    forge_page(&elsewhere, 4096, 0, 0o444);
    std::os::unix::fs::symlink(&elsewhere, &page).unwrap();
    assert_refused(&state, "not a regular file");
    std::fs::remove_file(&page).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &page,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o444),
        0,
    )
    .unwrap();
    assert_refused(&state, "not a regular file");
}

/// Answers every `trigger-if` with a bump and every other request with a status document.
const FAKE_DAEMON: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(8)
print("listening", flush=True)
status = ('{"version":2,"generation":99,"serving":true,"degraded":false,"open_files":0,'
    '"tracked":0,"outdated":0,"outdated_files":[],"pending_reads":0,"pending_waits":0,'
    '"last_bump":null,"failed_bumps":0,"last_failure":null,"daemon":{"pid":1,'
    '"device":"/dev/sysgenid","state_dir":"/run/sysgenid","device_mmap":true,'
    '"serving":true,"backends":[]}}\n')
while True:
    c, _ = s.accept()
    # A client that refuses this server hangs up at once; the next one must still find it.
    try:
        request = c.recv(4096)
        if request.startswith(b"trigger-if"):
            c.sendall(b'{"bumped":true,"generation":99}\n')
        else:
            c.sendall(status.encode())
    except OSError:
        pass
    c.close()
"#;

/// A process that kills its child when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_control_socket_served_by_another_user_is_refused() {
    let (_dir, state) = state_dir_of(NOBODY);
    let socket = state.join("control.sock");
    let mut child = sysgenid_e2e::as_nobody("/usr/bin/python3")
        .args(["-c", FAKE_DAEMON])
        .arg(&socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _fake = Killed(child);
    assert_eq!(line.trim(), "listening");

    let paths = Paths::new(state.join("no-device"), &state);
    match sysgenid::trigger_if_at(&paths, 0, None) {
        Ok(bump) => panic!("a forged answer was believed: {bump:?}"),
        Err(e) => assert!(e.to_string().contains("uid 65534"), "{e}"),
    }
    match sysgenid::status_at(&paths) {
        Ok(status) => panic!("a forged status was believed: {}", status.generation),
        Err(e) => assert!(e.to_string().contains("uid 65534"), "{e}"),
    }
}

#[test]
fn a_device_mounted_by_another_user_is_refused() {
    // A daemon whose real uid is nobody's: its mount says `user_id=65534`, as one made with
    // fusermount3 by nobody would.
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device");
    let state = dir.path().join("state");
    let daemon = Command::new("setpriv")
        .arg("--ruid=65534")
        .arg(workspace_binary("sysgenidd"))
        .arg("--device")
        .arg(&device)
        .arg("--state-dir")
        .arg(&state)
        .args(["--backends", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Unmounted(Killed(daemon), device.clone());
    eventually("the daemon serves", || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .is_ok_and(|m| m.contains(device.to_str().unwrap()))
            && std::fs::metadata(&device).is_ok_and(|m| m.len() == 4096)
    });

    let refused = |e: sysgenid::Error| e.to_string();
    let message = Probe::device(&device).map(|_| ()).map_err(refused);
    assert!(
        message.as_ref().is_err_and(|m| m.contains("uid 65534")),
        "{message:?}"
    );
    let paths = Paths::new(&device, dir.path().join("no-state"));
    let message = Watcher::open(&paths).map(|_| ()).map_err(refused);
    assert!(
        message.as_ref().is_err_and(|m| m.contains("uid 65534")),
        "{message:?}"
    );
}

/// Stops a daemon with SIGTERM (it unmounts its device), and unmounts what it left.
struct Unmounted(Killed, PathBuf);

impl Drop for Unmounted {
    fn drop(&mut self) {
        let child = &mut self.0.0;
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.1).output();
    }
}
