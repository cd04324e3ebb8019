//! Test harness: start a real `sysgenidd` on a temporary device, talk to it with real syscalls.
//!
//! Tests run as root. Each [`Daemon`] gets its own device path and state directory under a
//! temporary directory, runs with hardware backends off, and is stopped and unmounted when
//! dropped.
#![deny(missing_docs)]
pub mod qemu;
pub mod systemd;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
pub use rustix::io::Errno;

/// How long a daemon gets to start serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A built binary of the workspace, next to the test executable's `deps` directory.
///
/// `scripts/test.sh` builds every binary before running the tests; `SYSGENID_BIN_DIR` points
/// elsewhere if needed.
pub fn workspace_binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SYSGENID_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("current exe");
            let deps = exe.parent().expect("deps dir");
            deps.parent().expect("profile dir").to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// The daemon built to write the next handover snapshot format (`scripts/test.sh` builds it with
/// `SYSGENID_SNAPSHOT_FORMAT_NEXT=1` into `<target>/format-next`).
pub fn next_format_daemon() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile = exe.parent().and_then(Path::parent).expect("profile dir");
    let target = profile.parent().expect("target dir");
    let name = profile.file_name().expect("profile name");
    let path = target.join("format-next").join(name).join("sysgenidd");
    assert!(
        path.exists(),
        "{} is missing: build it with SYSGENID_SNAPSHOT_FORMAT_NEXT=1 cargo build -p sysgenidd \
         --target-dir <target>/format-next (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The C program `c/<name>.c` of this crate, compiled once (with `cc`) next to the workspace's
/// binaries.
pub fn c_program(name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("c/{name}.c"));
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile dir")
        .join("c");
    std::fs::create_dir_all(&dir).expect("c program dir");
    let program = dir.join(name);
    let fresh = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if fresh(&program) >= fresh(&source) && program.exists() {
        return program;
    }
    // Compiled under a name of this process, then renamed: tests in parallel never see half.
    let partial = dir.join(format!("{name}.{}", std::process::id()));
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&partial)
        .arg(&source)
        .output()
        .expect("cc (build-essential) runs");
    assert!(
        out.status.success(),
        "cc {}: {}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&partial, &program).expect("rename the compiled program");
    program
}

/// The C mapper (`c/mapper.c`): a client that maps the device once, as existing mmap libraries
/// do, and prints each value its loads see.
#[derive(Debug)]
pub struct Mapper {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The first value it loaded.
    pub first: u32,
    address: usize,
}

impl Mapper {
    /// Starts it on `device` and waits for its first load.
    pub fn start(device: &Path) -> Mapper {
        let mut child = Command::new(c_program("mapper"))
            .arg(device)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the mapper");
        let lines = read_lines(child.stdout.take().expect("stdout"));
        let start = lines
            .recv_timeout(START_TIMEOUT)
            .expect("the mapper's first line");
        let mut words = start.split_whitespace().skip(1);
        let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
        let (Some(first), Some(address)) = (number(), number()) else {
            panic!("the mapper said {start:?}");
        };
        Mapper {
            child,
            lines,
            first: u32::try_from(first).expect("u32"),
            address: usize::try_from(address).expect("address"),
        }
    }

    /// The next value it saw change, within `limit`.
    pub fn next_change(&self, limit: Duration) -> Option<u32> {
        let line = self.lines.recv_timeout(limit).ok()?;
        line.strip_prefix("gen ").and_then(|n| n.parse().ok())
    }

    /// Reclaims its mapped page from outside (`process_madvise(MADV_PAGEOUT)`), as memory
    /// pressure would; the next load faults the page back in through the daemon.
    pub fn page_out(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .expect("pidfd_open");
        let iov = libc::iovec {
            iov_base: self.address as *mut libc::c_void,
            iov_len: 4096,
        };
        // SAFETY: process_madvise reads one iovec from our memory and only advises the target
        // process's address range; it never touches our memory otherwise.
        let done = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd.as_raw_fd(),
                &raw const iov,
                1usize,
                libc::MADV_PAGEOUT,
                0u32,
            )
        };
        assert!(
            done >= 0,
            "process_madvise: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Whether it still runs (a SIGBUS would have killed it).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Closes its stdin and returns how it ended.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().expect("wait for the mapper")
    }
}

/// The probe helper binary of this crate, for actions that need their own process.
pub fn probe_binary() -> PathBuf {
    workspace_binary("sysgenid-probe")
}

/// A running daemon on a temporary device.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// The temporary directory holding everything.
    pub dir: PathBuf,
    /// The device file.
    pub device: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    log: PathBuf,
    /// Whether dropping unmounts the device (off once the caller keeps the directory).
    unmount_on_drop: bool,
}

/// Options for [`Daemon::start_with`].
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Extra arguments, such as `--device-mmap off`.
    pub args: Vec<String>,
    /// Reuse this directory (for restarts) instead of a new temporary one.
    pub dir: Option<PathBuf>,
    /// Extra environment variables, such as `NOTIFY_SOCKET`.
    pub env: Vec<(String, String)>,
    /// Another build of the daemon, instead of the workspace's.
    pub binary: Option<PathBuf>,
}

impl Daemon {
    /// Starts a daemon with default options and waits until it is serving.
    pub fn start() -> Daemon {
        Daemon::start_with(DaemonOptions::default())
    }

    /// Starts a daemon and waits until its control socket says it is serving.
    pub fn start_with(options: DaemonOptions) -> Daemon {
        let (temp, dir) = match options.dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("sysgenid-e2e-")
                    .tempdir()
                    .expect("temp dir");
                let dir = temp.path().to_owned();
                (Some(temp), dir)
            }
        };
        let device = dir.join("device");
        let state_dir = dir.join("state");
        let log = dir.join("daemon.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let binary = options
            .binary
            .clone()
            .unwrap_or_else(|| workspace_binary("sysgenidd"));
        let child = Command::new(binary)
            .arg("--device")
            .arg(&device)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--backends", "none", "--log", "debug"])
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn sysgenidd");
        let mut daemon = Daemon {
            child: Some(child),
            dir,
            device,
            state_dir,
            _temp: temp,
            log,
            unmount_on_drop: true,
        };
        daemon.wait_serving();
        daemon
    }

    fn wait_serving(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("sysgenidd exited early ({status}); log:\n{}", self.log());
            }
            // After a handover the old daemon may answer for a moment: wait for this one.
            let pid = self.child.as_ref().map(Child::id);
            if let Ok(status) = self.try_status()
                && status["serving"] == true
                && status["daemon"]["pid"].as_u64() == pid.map(u64::from)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sysgenidd did not start serving; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The pids of the tracked watchers that have not acknowledged, sorted: what a wait waits
    /// for.
    pub fn tracked_laggards(&self) -> Vec<u64> {
        let mut pids: Vec<u64> = self.status()["outdated_files"]
            .as_array()
            .expect("outdated_files")
            .iter()
            .filter(|f| f["tracked"] == true)
            .filter_map(|f| f["pid"].as_u64())
            .collect();
        pids.sort_unstable();
        pids
    }

    /// The process that reads the device: under the keeper (the default), the keeper's child.
    pub fn serving_pid(&self) -> u32 {
        let status = self.status();
        let pid = status["daemon"]["serving_pid"]
            .as_u64()
            .expect("serving_pid in status");
        u32::try_from(pid).expect("a pid")
    }

    /// Kills the serving process with SIGKILL, as a crash would, and waits until the keeper has
    /// started the next one and it serves. Returns the new serving pid.
    pub fn crash_serving(&self) -> u32 {
        let old = self.serving_pid();
        let pid = rustix::process::Pid::from_raw(old as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(status) = self.try_status()
                && status["serving"] == true
                && let Some(new) = status["daemon"]["serving_pid"].as_u64()
                && new != u64::from(old)
            {
                return u32::try_from(new).expect("a pid");
            }
            assert!(
                Instant::now() < deadline,
                "no new serving process after {old}; status {:?}; threads:\n{}\nlog:\n{}",
                self.try_status().ok(),
                daemon_threads(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Makes the temporary directory traversable by every user (mode 0755), so that probes
    /// running as other users can reach the device. The device's own mode still decides who
    /// may open it.
    pub fn allow_other_users(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the temporary directory");
    }

    /// The device path as a string, for probe arguments.
    pub fn device_str(&self) -> &str {
        self.device.to_str().expect("UTF-8 device path")
    }

    /// The current generation from the status document.
    pub fn generation(&self) -> u64 {
        self.status()["generation"]
            .as_u64()
            .expect("status has a generation")
    }

    /// The current generation's random ID from the status document: 32 lowercase hex digits.
    pub fn generation_id(&self) -> String {
        let status = self.status();
        status["generation_id"]
            .as_str()
            .unwrap_or_else(|| panic!("status has no generation_id: {status}"))
            .to_owned()
    }

    /// A numeric field of the status document, such as `open_files` or `pending_reads`.
    pub fn count(&self, field: &str) -> u64 {
        let status = self.status();
        status[field]
            .as_u64()
            .unwrap_or_else(|| panic!("status has no number {field:?}: {status}"))
    }

    /// The control socket path.
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir.join(sysgenid_abi::CONTROL_SOCKET_NAME)
    }

    /// The page file path.
    pub fn page_file(&self) -> PathBuf {
        self.state_dir.join(sysgenid_abi::PAGE_FILE_NAME)
    }

    /// One `status` request over the control socket.
    pub fn try_status(&self) -> std::io::Result<serde_json::Value> {
        control_status(&self.control_socket())
    }

    /// The status document; panics if the daemon does not answer.
    pub fn status(&self) -> serde_json::Value {
        self.try_status().expect("control socket answers")
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// Stops the daemon with SIGTERM and waits; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Waits up to `limit` for the daemon to exit by itself; its exit status, or `None` if it
    /// still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Kills the daemon (the keeper, and with it the serving process) with SIGKILL and waits
    /// for both, leaving the mount stale.
    pub fn kill(&mut self) {
        let serving = self
            .try_status()
            .ok()
            .and_then(|s| s["daemon"]["serving_pid"].as_u64());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = serving {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while proc.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    /// Starts a second daemon on this one's device and state directory, which takes the device
    /// over; waits until the new one serves and this one has exited, and returns the new one
    /// (which now owns the directory) with this one's exit status.
    pub fn take_over(
        mut self,
        options: DaemonOptions,
    ) -> (Daemon, Option<std::process::ExitStatus>) {
        let temp = self._temp.take();
        self.unmount_on_drop = false;
        let mut next = Daemon::start_with(DaemonOptions {
            dir: Some(self.dir.clone()),
            ..options
        });
        next._temp = temp;
        let status = self.wait_exit(Duration::from_secs(10));
        (next, status)
    }

    /// Keeps the directory after the daemon is gone, for a restart on the same state.
    /// A killed daemon leaves its mount stale, and this keeps it so.
    pub fn into_dir(mut self) -> (tempfile::TempDir, PathBuf) {
        self.kill();
        self.unmount_on_drop = false;
        let temp = self._temp.take().expect("owns a temp dir");
        (temp, self.dir.clone())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.stop() {
            eprintln!("sysgenidd did not exit cleanly; log:\n{}", self.log());
        }
        if self.unmount_on_drop {
            let _ = rustix::mount::unmount(&self.device, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// One `status` request over the control socket at `socket`: the status document.
pub fn control_status(socket: &Path) -> std::io::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"status\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

/// An open file of the device, with the raw calls of the ABI.
#[derive(Debug)]
pub struct DevFile {
    fd: OwnedFd,
}

impl DevFile {
    /// Opens `path` with `flags` (for example `OFlags::RDWR`).
    pub fn open(path: &Path, flags: OFlags) -> Result<DevFile, Errno> {
        let fd = rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())?;
        Ok(DevFile { fd })
    }

    /// Opens read-write.
    pub fn rw(path: &Path) -> DevFile {
        DevFile::open(path, OFlags::RDWR).expect("open rw")
    }

    /// Opens read-write and non-blocking.
    pub fn rw_nonblock(path: &Path) -> DevFile {
        DevFile::open(path, OFlags::RDWR | OFlags::NONBLOCK).expect("open rw nonblock")
    }

    /// `read(2)` of `len` bytes: the generation, or the number of bytes when it is not 4.
    pub fn read_len(&self, len: usize) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        let n = rustix::io::read(&self.fd, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// `read(2)` of 4 bytes as a generation.
    pub fn read(&self) -> Result<u32, Errno> {
        let bytes = self.read_len(4)?;
        Ok(sysgenid_abi::decode_generation(&bytes).expect("4 bytes"))
    }

    /// `write(2)` of raw bytes.
    pub fn write_bytes(&self, data: &[u8]) -> Result<usize, Errno> {
        rustix::io::write(&self.fd, data)
    }

    /// Acknowledges `generation`.
    pub fn ack(&self, generation: u32) -> Result<usize, Errno> {
        self.write_bytes(&generation.to_ne_bytes())
    }

    /// `ioctl(2)` with an integer argument; the return value on success.
    pub fn ioctl(&self, cmd: u32, arg: u64) -> Result<i32, Errno> {
        raw_ioctl(self.fd.as_raw_fd(), cmd, arg)
    }

    /// The raw file descriptor, for a call made from another thread while this one closes it.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `SET_WATCHER_TRACKING`.
    pub fn track(&self, on: bool) -> Result<i32, Errno> {
        self.ioctl(sysgenid_abi::SYSGENID_SET_WATCHER_TRACKING, u64::from(on))
    }

    /// `WAIT_WATCHERS` with a timeout in milliseconds.
    pub fn wait_watchers(&self, timeout_ms: u64) -> Result<i32, Errno> {
        self.ioctl(sysgenid_abi::SYSGENID_WAIT_WATCHERS, timeout_ms)
    }

    /// `TRIGGER_GEN_UPDATE` with a minimum.
    pub fn trigger(&self, min: u64) -> Result<i32, Errno> {
        self.ioctl(sysgenid_abi::SYSGENID_TRIGGER_GEN_UPDATE, min)
    }

    /// `poll(2)` for `POLLIN` with a timeout; the returned events.
    pub fn poll(&self, timeout: Duration) -> Result<rustix::event::PollFlags, Errno> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN | PollFlags::RDNORM)];
        let ts = Timespec::try_from(timeout).expect("timeout");
        rustix::event::poll(&mut fds, Some(&ts))?;
        Ok(fds[0].revents())
    }
}

impl AsFd for DevFile {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `ioctl(2)` with an integer argument on a raw descriptor; the return value on success.
///
/// A stale or closed `fd` gives `EBADF`; the device's ioctls take an integer, never a pointer.
pub fn raw_ioctl(fd: RawFd, cmd: u32, arg: u64) -> Result<i32, Errno> {
    // SAFETY: the device's ioctls take an integer argument, never a pointer, so the kernel
    // dereferences nothing of ours; an invalid descriptor only yields EBADF.
    let rc = unsafe { libc::ioctl(fd, cmd as libc::c_ulong, arg as libc::c_ulong) };
    if rc < 0 {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    } else {
        Ok(rc)
    }
}

/// The kernel function a task (process or thread id) sleeps in, from `/proc/<id>/wchan`:
/// for example `request_wait_answer` while a FUSE request is unanswered, or
/// `poll_schedule_timeout...` while it sleeps in `poll(2)` after registering.
pub fn wchan(task: u32) -> String {
    std::fs::read_to_string(format!("/proc/{task}/wchan")).unwrap_or_default()
}

/// Every thread of every `sysgenidd` process, with its state, `wchan` and kernel stack: what a
/// test prints when a daemon stops answering.
pub fn daemon_threads() -> String {
    let mut out = String::new();
    let procs = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for proc in procs {
        let comm = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("sysgenidd") {
            continue;
        }
        let pid = proc.file_name().to_string_lossy().into_owned();
        let tasks = std::fs::read_dir(proc.path().join("task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let read =
                |name: &str| std::fs::read_to_string(task.path().join(name)).unwrap_or_default();
            let stat = read("stat");
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            out.push_str(&format!(
                "pid {pid} tid {} {} state {} wchan {}\n{}",
                task.file_name().to_string_lossy(),
                read("comm").trim(),
                state.unwrap_or("?"),
                read("wchan"),
                read("stack"),
            ));
        }
    }
    out
}

/// Who a probe process runs as. Credentials change only through `setpriv` or `unshare`, in
/// the probe's own process, never in the test process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The test's own credentials: root with its capabilities.
    Root,
    /// `nobody` (65534:65534, no supplementary groups) with no capabilities at all.
    Nobody,
    /// `nobody` holding only `CAP_CHECKPOINT_RESTORE` (inheritable and ambient, so effective
    /// after exec).
    NobodyWithCheckpointRestore,
    /// Root inside a new user namespace (`unshare -Ur`): every capability there, none in the
    /// daemon's namespace.
    RootInNewUserNs,
}

/// `setpriv` arguments for `nobody` (65534:65534) with no groups and no capabilities at all.
pub const NOBODY_SETPRIV: [&str; 5] = [
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
];

/// `program` run as `nobody` with no groups and no capabilities at all.
pub fn as_nobody(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("setpriv");
    command.args(NOBODY_SETPRIV).arg(program);
    command
}

/// The `sysgenid-probe` command running as `who`, with `args` as its steps.
pub fn probe_command(who: Identity, args: &[&str]) -> Command {
    let probe = probe_binary();
    let mut command = match who {
        Identity::Root => Command::new(&probe),
        Identity::Nobody => as_nobody(&probe),
        Identity::NobodyWithCheckpointRestore => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all,+checkpoint_restore",
                "--ambient-caps=+checkpoint_restore",
            ])
            .arg(&probe);
            c
        }
        Identity::RootInNewUserNs => {
            let mut c = Command::new("unshare");
            c.arg("-Ur").arg(&probe);
            c
        }
    };
    command.args(args);
    command
}

/// How long a probe gets to print its next line.
pub const PROBE_LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running probe process whose output is read line by line, with a timeout.
///
/// Dropping it kills the process if it is still running.
#[derive(Debug)]
pub struct Probe {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Probe {
    /// A root probe that opens the device read-write, turns tracking on, then waits for stdin
    /// before running `after`: it lags behind the next bump until resumed.
    pub fn lagging_tracked(daemon: &Daemon, after: &[&str]) -> Probe {
        let mut steps = vec![
            "open",
            daemon.device_str(),
            "rw",
            "track",
            "1",
            "wait-stdin",
        ];
        steps.extend_from_slice(after);
        let mut probe = Probe::spawn(Identity::Root, &steps);
        probe.expect("open ok");
        probe.expect("track ok 0");
        probe
    }

    /// Starts a probe as `who` with `args` as its steps.
    pub fn spawn(who: Identity, args: &[&str]) -> Probe {
        let mut child = probe_command(who, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the probe");
        let stdin = child.stdin.take();
        let lines = read_lines(child.stdout.take().expect("piped stdout"));
        Probe {
            child,
            stdin,
            lines,
        }
    }

    /// Runs a probe to the end and returns every line it printed.
    pub fn run(who: Identity, args: &[&str]) -> Vec<String> {
        Probe::spawn(who, args).finish()
    }

    /// The probe's process id (`setpriv` and `unshare -Ur` exec it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line, or `None` at end of output; panics after [`PROBE_LINE_TIMEOUT`].
    pub fn try_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(PROBE_LINE_TIMEOUT) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the probe printed nothing for {PROBE_LINE_TIMEOUT:?}")
            }
        }
    }

    /// The next line; panics at end of output or after [`PROBE_LINE_TIMEOUT`].
    pub fn line(&mut self) -> String {
        self.try_line().expect("the probe ended early")
    }

    /// Asserts that the next line is `expected`.
    pub fn expect(&mut self, expected: &str) {
        assert_eq!(self.line(), expected);
    }

    /// The next line if one comes within `wait`: `None` shows that a call is still in progress.
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Sends a line to the probe's stdin, ending a `wait-stdin` step.
    pub fn resume(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(b"\n").expect("write to the probe");
        stdin.flush().expect("flush");
    }

    /// Sends `signal` to the probe.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// Kills the probe with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin, reads the remaining lines, and reaps the process.
    pub fn finish(mut self) -> Vec<String> {
        self.stdin = None;
        let mut out = Vec::new();
        while let Some(line) = self.try_line() {
            out.push(line);
        }
        let status = self.child.wait().expect("wait for the probe");
        assert!(
            status.success(),
            "the probe failed ({status}); printed {out:?}"
        );
        out
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Runs `f` on a new thread and returns its result, or panics with `what` after `timeout`, so
/// that a call that should not block fails the test instead of hanging it.
pub fn within<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("{what}: no result within {timeout:?}"))
}

/// A soft file-size limit of one byte on a running daemon (`prlimit --fsize=1:`): its next persist
/// writes one byte, the same first byte again, and fails as a short write, so the state file is
/// unharmed. The limit is lifted on drop.
#[derive(Debug)]
pub struct FailingWrites {
    pid: u32,
}

impl FailingWrites {
    /// Limits the daemon with this pid.
    pub fn on(pid: u32) -> FailingWrites {
        set_fsize_limit(pid, "1:");
        FailingWrites { pid }
    }
}

impl Drop for FailingWrites {
    fn drop(&mut self) {
        set_fsize_limit(self.pid, "unlimited:");
    }
}

fn set_fsize_limit(pid: u32, limit: &str) {
    let ok = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={limit}"))
        .status()
        .expect("run prlimit (util-linux)")
        .success();
    assert!(ok, "prlimit --fsize={limit} on pid {pid}");
}

/// The lines `reader` yields, read on a thread of their own and sent in order; the channel
/// closes at end of input.
pub fn read_lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Waits until `check` holds, polling every 10 ms, or panics with `what` after 10 seconds.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
