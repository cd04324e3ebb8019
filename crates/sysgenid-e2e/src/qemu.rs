//! Real VM restores: boot a Linux guest under QEMU (TCG) with a vmgenid device, snapshot, restore.
//!
//! The guest is a Debian cloud kernel (fetched once into `~/.cache/sysgenid-e2e`) and an
//! initramfs with static busybox and static builds of our binaries. `/init`
//! (`guest/init.sh`) prints a heartbeat line every 100 ms on the console (ttyS0, a file on the
//! host) and runs shell commands received on ttyS1, a unix socket on the host: the host sends
//! `<id> <command>`, the guest answers with the output and `@@e2e-done <id> <status>`. The
//! monitor is QMP on another unix socket; [`Vm::monitor`] runs human-monitor commands through it.
//! Every wait has a timeout and fails with the console log.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The pinned guest kernel (Debian package `linux-image-<this>-unsigned`).
pub const KERNEL_VERSION: &str = "6.12.117+deb12-cloud-amd64";
/// Guest memory in MiB; the snapshot is about this big.
pub const MEMORY_MIB: u32 = 256;
/// How long the guest gets to boot to its command agent.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one guest command or migration gets.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

const INIT: &str = include_str!("../guest/init.sh");
const SERVICES: &str = include_str!("../guest/e2e-services");
const STATIC_BINARIES: [&str; 4] = [
    "sysgenidd",
    "sysgenid",
    "sysgenid-probe",
    "sysgenid-sample-service",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cache_dir() -> PathBuf {
    let dir = match std::env::var_os("SYSGENID_E2E_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/sysgenid-e2e"),
    };
    std::fs::create_dir_all(&dir).expect("create the cache directory");
    dir
}

/// Holds an exclusive `flock` on a file of the cache, so parallel test processes take turns.
fn lock_cache(name: &str) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache_dir().join(name))
        .expect("open the lock file");
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    file
}

fn run(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn require_tool(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is missing: apt-get install {package} (scripts/test.sh installs it)"
    );
}

/// A Debian cloud kernel series: a pinned version and how to find the newest of the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSeries {
    /// The pinned version (Debian package `linux-image-<this>-unsigned`).
    pub pinned: &'static str,
    /// An `apt-cache search --names-only` pattern for the series' packages.
    pub packages: &'static str,
}

/// Debian's 6.12 cloud kernel: vmgenid built in, kprobes, BPF, BTF, FUSE built in.
pub const LINUX_6_12: KernelSeries = KernelSeries {
    pinned: KERNEL_VERSION,
    packages: r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64-unsigned$",
};

/// Debian 12's own 6.1 cloud kernel: no vmgenid driver, FUSE as a module, no
/// `FUSE_DIRECT_IO_ALLOW_MMAP` (6.6), no thread pidfds (6.9).
pub const LINUX_6_1: KernelSeries = KernelSeries {
    pinned: "6.1.0-57-cloud-amd64",
    packages: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
};

/// Modules the guest loads when the kernel has them as modules, in load order.
const MODULES: [&str; 2] = [
    "kernel/fs/fuse/fuse.ko",
    "kernel/drivers/firmware/qemu_fw_cfg.ko",
];

/// A guest kernel in the cache, with the modules the guest loads.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Its version.
    pub version: String,
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// Uncompressed modules to load at boot, in order.
    pub modules: Vec<PathBuf>,
}

impl Kernel {
    fn in_cache(version: &str) -> Option<Kernel> {
        let dir = cache_dir().join(version);
        let vmlinuz = dir.join("vmlinuz");
        let done = dir.join("complete");
        if !done.exists() || !vmlinuz.exists() {
            return None;
        }
        let modules = std::fs::read_to_string(&done)
            .ok()?
            .lines()
            .filter(|l| !l.is_empty())
            .map(|name| dir.join(name))
            .collect();
        Some(Kernel {
            version: version.to_owned(),
            vmlinuz,
            modules,
        })
    }
}

/// Downloads `linux-image-<version>-unsigned` into the cache: vmlinuz and [`MODULES`].
fn download_kernel(version: &str) -> Result<Kernel, String> {
    require_tool("xz", "xz-utils");
    let work = tempfile::tempdir_in(cache_dir()).map_err(|e| e.to_string())?;
    let package = format!("linux-image-{version}-unsigned");
    run(Command::new("apt-get")
        .args(["download", "-q", &package])
        .current_dir(work.path()))?;
    let deb = std::fs::read_dir(work.path())
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let root = work.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let dir = cache_dir().join(version);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let vmlinuz = root.join(format!("boot/vmlinuz-{version}"));
    std::fs::copy(&vmlinuz, dir.join("vmlinuz"))
        .map_err(|e| format!("{}: {e}", vmlinuz.display()))?;
    let mut names = Vec::new();
    for module in MODULES {
        let base = root.join(format!("lib/modules/{version}/{module}"));
        let name = Path::new(module).file_name().expect("module name");
        let dest = dir.join(name);
        let xz = base.with_extension("ko.xz");
        if base.exists() {
            std::fs::copy(&base, &dest).map_err(|e| format!("{}: {e}", base.display()))?;
        } else if xz.exists() {
            let out = Command::new("xz")
                .arg("-dc")
                .arg(&xz)
                .output()
                .map_err(|e| format!("xz: {e}"))?;
            if !out.status.success() {
                return Err(format!("xz -dc {}: {}", xz.display(), out.status));
            }
            std::fs::write(&dest, out.stdout).map_err(|e| e.to_string())?;
        } else {
            continue; // built in
        }
        names.push(name.to_string_lossy().into_owned());
    }
    std::fs::write(dir.join("complete"), names.join("\n") + "\n").map_err(|e| e.to_string())?;
    Kernel::in_cache(version).ok_or_else(|| "the cache entry did not complete".to_owned())
}

/// The newest version of `series` the package archive offers.
fn newest_in_series(series: &KernelSeries) -> Result<String, String> {
    let list = run(Command::new("apt-cache").args(["search", "--names-only", series.packages]))?;
    let key = |v: &str| -> Vec<u32> {
        v.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| p.strip_prefix("linux-image-")?.strip_suffix("-unsigned"))
        .max_by_key(|v| key(v))
        .map(str::to_owned)
        .ok_or_else(|| format!("no package matching {} in apt-cache", series.packages))
}

/// The pinned 6.12 guest kernel; see [`kernel_of`].
pub fn kernel() -> Kernel {
    kernel_of(&LINUX_6_12)
}

/// A guest kernel of `series`: the pinned one from the cache, else downloaded; if the archive no
/// longer has it, the newest of the series (said on stderr).
pub fn kernel_of(series: &KernelSeries) -> Kernel {
    let _lock = lock_cache("kernel.lock");
    if let Some(k) = Kernel::in_cache(series.pinned) {
        return k;
    }
    eprintln!("qemu: downloading kernel {}", series.pinned);
    let first = download_kernel(series.pinned);
    let Err(why) = first else {
        return first.expect("checked");
    };
    eprintln!("qemu: {why}; updating the package lists");
    let _ = run(Command::new("apt-get").args(["update", "-qq"]));
    if let Ok(k) = download_kernel(series.pinned) {
        return k;
    }
    let newest = newest_in_series(series).unwrap_or_else(|e| panic!("no guest kernel: {e}"));
    eprintln!(
        "qemu: WARNING: pinned kernel {} is gone from the archive; using {newest}",
        series.pinned
    );
    Kernel::in_cache(&newest)
        .map(Ok)
        .unwrap_or_else(|| download_kernel(&newest))
        .unwrap_or_else(|e| panic!("no guest kernel: {e}"))
}

/// Builds the static binaries the guest runs (once per test process) and returns their dir.
///
/// `SYSGENID_STATIC_BIN_DIR` points at prebuilt ones instead.
pub fn static_binaries() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SYSGENID_STATIC_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let root = workspace_root();
        let target = "x86_64-unknown-linux-gnu";
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run(Command::new(cargo)
            .current_dir(&root)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args(["build", "--quiet", "--release", "--target", target])
            .arg("--target-dir")
            .arg(root.join("target/static"))
            .args([
                "-p",
                "sysgenidd",
                "-p",
                "sysgenid-cli",
                "-p",
                "sysgenid-e2e",
                "-p",
                "sysgenid-examples",
            ]))
        .unwrap_or_else(|e| panic!("static build of the guest binaries: {e}"));
        root.join("target/static").join(target).join("release")
    })
    .clone()
}

/// Appends one `newc` entry to a cpio archive.
fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let ino = out.len() as u32;
    let fields = [ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(format!("{:08x}{:08x}", name.len() + 1, 0).as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn read_static(path: &Path) -> Vec<u8> {
    let ldd = Command::new("ldd").arg(path).output().expect("run ldd");
    let text =
        String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        text.contains("not a dynamic executable") || text.contains("statically linked"),
        "{} is not static (ldd: {text})",
        path.display()
    );
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes the initramfs: busybox, `/init`, the helper script, our static binaries, and the
/// kernel's modules in `/lib/modules` (named `NN-name.ko`, loaded in that order by `/init`).
pub fn build_initramfs(dest: &Path, kernel: &Kernel) {
    require_tool("busybox", "busybox-static");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox is missing: apt-get install busybox-static");
    let bins = static_binaries();
    let mut out = Vec::new();
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "lib",
        "lib/modules",
    ] {
        cpio_entry(&mut out, dir, 0o040755, &[]);
    }
    for (i, module) in kernel.modules.iter().enumerate() {
        let data = std::fs::read(module).unwrap_or_else(|e| panic!("{}: {e}", module.display()));
        let name = module.file_name().expect("module name").to_string_lossy();
        cpio_entry(
            &mut out,
            &format!("lib/modules/{i:02}-{name}"),
            0o100644,
            &data,
        );
    }
    cpio_entry(&mut out, "bin/busybox", 0o100755, &read_static(busybox));
    cpio_entry(&mut out, "init", 0o100755, INIT.as_bytes());
    cpio_entry(&mut out, "bin/e2e-services", 0o100755, SERVICES.as_bytes());
    for name in STATIC_BINARIES {
        let data = read_static(&bins.join(name));
        cpio_entry(&mut out, &format!("bin/{name}"), 0o100755, &data);
    }
    cpio_entry(&mut out, "TRAILER!!!", 0, &[]);
    std::fs::write(dest, out).expect("write the initramfs");
}

/// What a VM boots: kernel and initramfs. Restores must use the same.
#[derive(Debug, Clone)]
pub struct Image {
    /// The kernel.
    pub kernel: PathBuf,
    /// Its version.
    pub kernel_version: String,
    /// The initramfs.
    pub initrd: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

impl Image {
    /// Fetches the pinned 6.12 kernel and builds the initramfs.
    pub fn build() -> Image {
        Image::build_for(&LINUX_6_12)
    }

    /// Fetches a kernel of `series` and builds the initramfs.
    pub fn build_for(series: &KernelSeries) -> Image {
        require_tool("qemu-system-x86_64", "qemu-system-x86");
        let dir = tempfile::Builder::new()
            .prefix("sysgenid-qemu-image-")
            .tempdir()
            .expect("temp dir");
        let initrd = dir.path().join("initrd.cpio");
        let kernel = kernel_of(series);
        build_initramfs(&initrd, &kernel);
        Image {
            kernel: kernel.vmlinuz,
            kernel_version: kernel.version,
            initrd,
            _dir: Arc::new(dir),
        }
    }
}

/// A saved VM: the migration stream and the image it needs.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The migration stream file.
    pub state: PathBuf,
    /// The image the VM was booted from.
    pub image: Image,
}

/// A QMP connection; commands answer within [`COMMAND_TIMEOUT`].
#[derive(Debug)]
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path, deadline: Instant) -> Result<Qmp, String> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => return Err(format!("QMP connect: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        qmp.read_value()?; // greeting
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read_value(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QMP closed".to_owned()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("QMP {line:?}: {e}")),
            Err(e) => Err(format!("QMP read: {e}")),
        }
    }

    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
        let request = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{request}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let value = self.read_value()?;
            if let Some(r) = value.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = value.get("error") {
                return Err(format!("QMP {command}: {e}"));
            }
        }
    }
}

/// Output and exit status of a guest command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestOutput {
    /// The exit status.
    pub status: i32,
    /// Standard output and error, without the final newline.
    pub output: String,
}

/// Console lines with the host time each was first seen, read by a background thread.
type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

fn tail_console(path: PathBuf, lines: Lines, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut offset = 0usize;
        let mut partial = String::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(data) = std::fs::read(&path)
                && data.len() > offset
            {
                let now = Instant::now();
                partial.push_str(&String::from_utf8_lossy(&data[offset..]));
                offset = data.len();
                let mut got = lines.lock().expect("lines");
                while let Some(end) = partial.find('\n') {
                    let line: String = partial.drain(..=end).collect();
                    got.push((now, line.trim_end().to_owned()));
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
}

/// Reads lines from the guest's readiness port (a virtio-serial port on a unix socket).
fn tail_socket(path: PathBuf, lines: Lines, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(&path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    eprintln!("qemu: readiness socket {}: {e}", path.display());
                    return;
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut reader = BufReader::new(stream);
        let mut partial = String::new();
        while !stop.load(Ordering::Relaxed) {
            match reader.read_line(&mut partial) {
                Ok(0) => return,
                Ok(_) if partial.ends_with('\n') => {
                    let line = std::mem::take(&mut partial);
                    lines
                        .lock()
                        .expect("lines")
                        .push((Instant::now(), line.trim_end().to_owned()));
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    });
}

/// The name of the guest's readiness port: `/dev/virtio-ports/<this>` in the guest.
pub const READY_PORT: &str = "org.sysgenid.ready";

/// A running QEMU guest.
#[derive(Debug)]
pub struct Vm {
    child: Option<Child>,
    image: Image,
    dir: tempfile::TempDir,
    qmp: Qmp,
    agent: Option<BufReader<UnixStream>>,
    next_id: u64,
    lines: Lines,
    ready_lines: Lines,
    stop_tail: Arc<AtomicBool>,
    cont_at: Option<Instant>,
    /// When QEMU was started.
    pub started_at: Instant,
}

impl Vm {
    /// Builds the image and boots a fresh guest to its command agent.
    pub fn boot() -> Vm {
        Vm::boot_image(&Image::build())
    }

    /// Boots a fresh guest from `image`.
    pub fn boot_image(image: &Image) -> Vm {
        let mut vm = Vm::spawn(image, None);
        let ready = vm.wait_console("@@e2e-ready", BOOT_TIMEOUT);
        eprintln!(
            "qemu: guest booted to its agent in {:?}",
            ready - vm.started_at
        );
        vm
    }

    /// Starts QEMU on a restored state, waits for the incoming migration, then `cont`.
    pub fn restore(snapshot: &Snapshot) -> Vm {
        let mut vm = Vm::spawn(&snapshot.image, Some(&snapshot.state));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let status = vm.qmp("query-migrate", json!({}));
            match status["status"].as_str() {
                Some("completed") => break,
                Some("failed") => vm.fail(&format!("incoming migration failed: {status}")),
                _ => {}
            }
            if Instant::now() > deadline {
                vm.fail(&format!("incoming migration did not complete: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        vm.cont();
        vm
    }

    fn spawn(image: &Image, incoming: Option<&Path>) -> Vm {
        let dir = tempfile::Builder::new()
            .prefix("sysgenid-qemu-vm-")
            .tempdir()
            .expect("temp dir");
        let console = dir.path().join("console.log");
        let qmp_path = dir.path().join("qmp.sock");
        let agent_path = dir.path().join("agent.sock");
        let ready_path = dir.path().join("ready.sock");
        std::fs::write(&console, "").expect("console log");
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-accel", "tcg", "-m", &MEMORY_MIB.to_string()])
            .args(["-display", "none", "-no-reboot", "-nodefaults"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .args(["-device", "vmgenid,guid=auto"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-chardev")
            .arg(format!(
                "socket,id=agent,path={},server=on,wait=off",
                agent_path.display()
            ))
            .args(["-serial", "chardev:agent"])
            .args(["-device", "virtio-serial-pci,id=vser"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=ready,path={},server=on,wait=off",
                ready_path.display()
            ))
            .arg("-device")
            .arg(format!(
                "virtserialport,bus=vser.0,chardev=ready,name={READY_PORT}"
            ))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()));
        if let Some(state) = incoming {
            command
                .arg("-S")
                .arg("-incoming")
                .arg(format!("exec:cat {}", state.display()));
        }
        let stderr = std::fs::File::create(dir.path().join("qemu.stderr")).expect("stderr file");
        let started_at = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn qemu-system-x86_64");
        let qmp = match Qmp::connect(&qmp_path, started_at + Duration::from_secs(20)) {
            Ok(q) => q,
            Err(e) => panic!(
                "{e}; qemu stderr:\n{}",
                std::fs::read_to_string(dir.path().join("qemu.stderr")).unwrap_or_default()
            ),
        };
        let lines = Lines::default();
        let stop_tail = Arc::new(AtomicBool::new(false));
        tail_console(console, lines.clone(), stop_tail.clone());
        let ready_lines = Lines::default();
        tail_socket(ready_path, ready_lines.clone(), stop_tail.clone());
        Vm {
            child: Some(child),
            image: image.clone(),
            dir,
            qmp,
            agent: None,
            next_id: 1,
            lines,
            ready_lines,
            stop_tail,
            cont_at: None,
            started_at,
        }
    }

    /// Panics with `why`, the console log and QEMU's stderr.
    pub fn fail(&self, why: &str) -> ! {
        let console: Vec<String> = self.console_lines().into_iter().map(|(_, l)| l).collect();
        let tail = console[console.len().saturating_sub(40)..].join("\n");
        let stderr =
            std::fs::read_to_string(self.dir.path().join("qemu.stderr")).unwrap_or_default();
        panic!("{why}\n--- console (last 40 lines) ---\n{tail}\n--- qemu stderr ---\n{stderr}");
    }

    fn console_lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits for a console line containing `pattern`; returns when it was seen.
    pub fn wait_console(&mut self, pattern: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((at, _)) = self
                .console_lines()
                .into_iter()
                .find(|(_, l)| l.contains(pattern))
            {
                return at;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.fail(&format!("QEMU exited ({status}) before {pattern:?}"));
            }
            if Instant::now() > deadline {
                self.fail(&format!("no console line {pattern:?} within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lines the guest wrote to its readiness port since QEMU started.
    pub fn ready_lines(&self) -> Vec<String> {
        let lines = self.ready_lines.lock().expect("lines");
        lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// Waits for a line on the readiness port containing `pattern` and returns it.
    pub fn wait_ready_line(&mut self, pattern: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.ready_lines().into_iter().find(|l| l.contains(pattern)) {
                return line;
            }
            if Instant::now() > deadline {
                let seen = self.ready_lines();
                self.fail(&format!(
                    "no readiness line {pattern:?} within {timeout:?}; seen: {seen:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Host time from the last `cont` to the first console line containing `pattern` seen after
    /// it (the console is polled every 2 ms), and that line.
    pub fn host_time_to_line(&mut self, pattern: &str, timeout: Duration) -> (Duration, String) {
        let cont = self.cont_at.unwrap_or_else(|| self.fail("no cont yet"));
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((at, line)) = self
                .console_lines()
                .into_iter()
                .find(|(at, l)| *at >= cont && l.contains(pattern))
            {
                return (at - cont, line);
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "no console line {pattern:?} within {timeout:?} of cont"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn qmp(&mut self, command: &str, arguments: Value) -> Value {
        match self.qmp.execute(command, arguments) {
            Ok(v) => v,
            Err(e) => self.fail(&e),
        }
    }

    /// Runs a human-monitor command (such as `info vm-generation-id`) and returns its output.
    pub fn monitor(&mut self, command: &str) -> String {
        let out = self.qmp("human-monitor-command", json!({ "command-line": command }));
        out.as_str().unwrap_or_default().to_owned()
    }

    /// The vmgenid GUID QEMU currently gives the guest.
    pub fn vmgenid(&mut self) -> String {
        let out = self.qmp("query-vm-generation-id", json!({}));
        out["guid"].as_str().expect("guid").to_owned()
    }

    /// Pauses the guest (`stop`).
    pub fn stop(&mut self) {
        self.qmp("stop", json!({}));
    }

    /// Resumes the guest (`cont`) and records the host time for [`Vm::host_time_to_line`].
    pub fn cont(&mut self) {
        self.cont_at = Some(Instant::now());
        self.qmp("cont", json!({}));
    }

    fn agent(&mut self) -> &mut BufReader<UnixStream> {
        if self.agent.is_none() {
            let path = self.dir.path().join("agent.sock");
            let stream = UnixStream::connect(&path)
                .unwrap_or_else(|e| self.fail(&format!("agent socket: {e}")));
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            self.agent = Some(BufReader::new(stream));
        }
        self.agent.as_mut().expect("agent")
    }

    /// Runs a shell command in the guest and returns its status and output.
    pub fn guest_status(&mut self, command: &str) -> GuestOutput {
        assert!(!command.contains('\n'), "one line per guest command");
        let id = self.next_id;
        self.next_id += 1;
        let line = format!("{id} {command}\n");
        if let Err(e) = self.agent().get_mut().write_all(line.as_bytes()) {
            self.fail(&format!("agent write: {e}"));
        }
        let marker = format!("\n@@e2e-done {id} ");
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let mut buf = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(at) = text.find(&marker)
                && let Some(end) = text[at + marker.len()..].find('\n')
            {
                let rest = &text[at + marker.len()..at + marker.len() + end];
                let status = rest.trim().parse().unwrap_or(-1);
                let output = text[..at].strip_suffix('\n').unwrap_or(&text[..at]);
                return GuestOutput {
                    status,
                    output: output.to_owned(),
                };
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "guest command {command:?}: no answer within {COMMAND_TIMEOUT:?}; got {text:?}"
                ));
            }
            let mut chunk = [0u8; 4096];
            match self.agent().get_mut().read(&mut chunk) {
                Ok(0) => self.fail("agent socket closed"),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => self.fail(&format!("agent read: {e}")),
            }
        }
    }

    /// Runs a shell command in the guest, asserts it succeeded, and returns its output.
    pub fn guest(&mut self, command: &str) -> String {
        let out = self.guest_status(command);
        if out.status != 0 {
            self.fail(&format!(
                "guest command {command:?} exited {}: {}",
                out.status, out.output
            ));
        }
        out.output
    }

    /// Saves the paused VM to `path` (`stop`, `migrate "exec:cat > path"`, `quit`).
    pub fn snapshot(mut self, path: &Path) -> Snapshot {
        self.stop();
        let uri = format!("exec:cat > {}", path.display());
        self.qmp("migrate", json!({ "uri": uri }));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let status = self.qmp("query-migrate", json!({}));
            match status["status"].as_str() {
                Some("completed") => break,
                Some("failed") => self.fail(&format!("migration failed: {status}")),
                _ => {}
            }
            if Instant::now() > deadline {
                self.fail(&format!("migration did not complete: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.qmp.execute("quit", json!({}));
        self.wait_exit(Duration::from_secs(20));
        Snapshot {
            state: path.to_owned(),
            image: self.image.clone(),
        }
    }

    fn wait_exit(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop_tail.store(true, Ordering::Relaxed);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
