//! A persist held as long as the test likes: the state directory on an ext4 image frozen with
//! `fsfreeze -f`. The trigger waits for its bump to be durable; every other request is answered
//! at once meanwhile, with the published state, also while a new daemon waits to take over. The
//! freeze is always lifted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use sysgenid_e2e::{Daemon, DaemonOptions, DevFile, Errno};

/// How long a request may take while the disk is frozen before the test calls it stuck.
const STUCK: Duration = Duration::from_secs(5);
/// The disk is thawed after this long in any case.
const THAW_ANYWAY: Duration = Duration::from_secs(20);

/// A small ext4 file system on a loop device, mounted on `<dir>/state`.
struct Ext4State {
    mount_point: PathBuf,
}

/// The file system frozen until this is dropped. Declared after the daemon, it thaws first,
/// so a daemon stuck on the frozen disk can still be stopped.
struct Frozen(PathBuf);

impl Drop for Frozen {
    fn drop(&mut self) {
        // Not `run`: the watchdog may have thawed it already.
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.0).status();
    }
}

impl Ext4State {
    fn mount(dir: &Path) -> Ext4State {
        let image = dir.join("state.img");
        run("truncate", &["-s", "16M", image.to_str().unwrap()]);
        run("mkfs.ext4", &["-q", image.to_str().unwrap()]);
        let mount_point = dir.join("state");
        std::fs::create_dir(&mount_point).unwrap();
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap(),
                mount_point.to_str().unwrap(),
            ],
        );
        std::fs::remove_dir(mount_point.join("lost+found")).unwrap();
        Ext4State { mount_point }
    }

    /// Freezes the file system; a watchdog thaws it after THAW_ANYWAY whatever happens, so a
    /// test that fails while something is stuck on the frozen disk cannot hang for ever.
    fn freeze(&self) -> Frozen {
        run("fsfreeze", &["-f", self.mount_point.to_str().unwrap()]);
        // A process of its own (detached by the shell), so nothing stuck in this one can keep
        // it from running.
        let started = Command::new("sh")
            .args([
                "-c",
                "(sleep \"$1\"; fsfreeze -u \"$2\") >/dev/null 2>&1 &",
                "sh",
            ])
            .arg(THAW_ANYWAY.as_secs().to_string())
            .arg(&self.mount_point)
            .stdin(std::process::Stdio::null())
            .status()
            .expect("start the thaw watchdog");
        assert!(started.success());
        Frozen(self.mount_point.clone())
    }
}

impl Drop for Ext4State {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// Runs `f` on a thread and gives its result, or `None` if it has not finished within STUCK.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(STUCK).ok()
}

/// A nonblocking read of a newly opened file of `device`, or `None` if it took longer than STUCK.
fn read_within(device: &Path) -> Option<Result<u32, Errno>> {
    let device = device.to_owned();
    within(move || DevFile::rw_nonblock(&device).read())
}

/// A daemon with its state on an ext4 image under `dir`, bumped once, then the image frozen and
/// a second trigger on its way, held by its persist. Bound in this order, the freeze is lifted
/// before the daemon stops and the image goes last.
fn a_trigger_held_by_a_frozen_disk(
    dir: &Path,
) -> (
    Ext4State,
    Daemon,
    Frozen,
    std::thread::JoinHandle<Result<i32, Errno>>,
) {
    let disk = Ext4State::mount(dir);
    let daemon = Daemon::start_with(DaemonOptions {
        dir: Some(dir.to_owned()),
        ..DaemonOptions::default()
    });
    let device = daemon.device.clone();
    DevFile::rw(&device).trigger(0).unwrap();
    let frozen = disk.freeze();
    let trigger = std::thread::spawn(move || DevFile::rw(&device).trigger(0));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!trigger.is_finished(), "the trigger waits for its persist");
    (disk, daemon, frozen, trigger)
}

#[test]
fn a_frozen_state_disk_holds_the_trigger_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (_disk, daemon, frozen, trigger) = a_trigger_held_by_a_frozen_disk(dir.path());
    let device = daemon.device.clone();

    let reader = read_within(&device);
    assert_eq!(
        reader,
        Some(Err(Errno::AGAIN)),
        "an unrelated read is answered at once, with the published state"
    );
    let opened_and_polled = {
        let device = device.clone();
        within(move || DevFile::rw_nonblock(&device).poll(Duration::ZERO))
    };
    assert!(
        opened_and_polled.is_some(),
        "open and poll are answered at once"
    );
    let socket = daemon.control_socket();
    let status = within(move || sysgenid_e2e::control_status(&socket))
        .expect("status answers while the disk is frozen")
        .expect("a status document");
    assert_eq!(status["generation"], 1, "{status}");

    drop(frozen);
    assert_eq!(
        trigger.join().unwrap(),
        Ok(0),
        "the trigger ends once durable"
    );
    assert_eq!(daemon.generation(), 2);
}

/// A process killed and reaped when dropped, so a failing test leaves none behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_handover_asked_during_a_frozen_persist_leaves_the_device_served_then_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_disk, daemon, frozen, trigger) = a_trigger_held_by_a_frozen_disk(dir.path());
    let device = daemon.device.clone();

    // A new daemon asks for the device; the running one cannot hand over while the bump is
    // under way, and serves on meanwhile.
    let mut next = KillOnDrop(
        Command::new(sysgenid_e2e::workspace_binary("sysgenidd"))
            .arg("--device")
            .arg(&device)
            .arg("--state-dir")
            .arg(&daemon.state_dir)
            .args(["--backends", "none", "--keeper", "off"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    sysgenid_e2e::eventually("the running daemon is asked for the device", || {
        daemon.log().contains("a new daemon asks for the device")
    });
    let reader = read_within(&device);
    assert_eq!(
        reader,
        Some(Err(Errno::AGAIN)),
        "a read is answered while the handover waits"
    );

    // The bump stays under way past the limit: the running daemon refuses, and the new one
    // waits for that answer and exits with it.
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut next.0.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = next.0.wait().unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("a bump stayed under way"),
        "{stderr}"
    );
    assert!(
        daemon.log().contains("handover refused"),
        "{}",
        daemon.log()
    );

    drop(frozen);
    assert_eq!(
        trigger.join().unwrap(),
        Ok(0),
        "the trigger ends once durable"
    );
    assert_eq!(daemon.generation(), 2);
    assert_eq!(
        read_within(&device),
        Some(Err(Errno::AGAIN)),
        "the running daemon serves on"
    );
}
