//! `sysgenid-probe`: a scripted client process for end-to-end tests.
//!
//! Arguments are steps, run in order; each prints one line, `<step> ok <value>` or
//! `<step> err <ERRNO>`, and the probe goes on. Privilege changes are made from outside with
//! `setpriv` or `unshare`, so the probe itself never changes credentials.
//!
//! Steps: `open PATH ro|rw|ro-nonblock|rw-nonblock`, `read N`, `ack` (writes the last value
//! read), `write-u32 V`, `write-len N`, `ioctl CMD ARG`, `track 0|1`, `wait MS`,
//! `trigger MIN`, `thread-trigger MIN`, `poll MS`, `mmap`, `mmap-rw`, `mprotect-rw`,
//! `store V`, `msync`, `proc-mem-store V`, `load`, `sleep MS`, `ready`,
//! `wait-stdin`, `close` (closes the file), `sigaction-usr1` and `sigaction-usr1-restart`
//! (install a no-op SIGUSR1 handler without or with `SA_RESTART`, so that SIGUSR1 interrupts a
//! call instead of killing the probe), `whoami` (prints `uid=<euid> capeff=<hex>` from
//! `/proc/self/status`, to check what `setpriv`/`unshare` produced).

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use rustix::fs::OFlags;
use rustix::mm::ProtFlags;
use sysgenid_abi::{
    SYSGENID_SET_WATCHER_TRACKING, SYSGENID_TRIGGER_GEN_UPDATE, SYSGENID_WAIT_WATCHERS,
};
use sysgenid_e2e::{DevFile, Errno};

fn errno_name(e: Errno) -> String {
    match sysgenid_abi::Errno::from_raw(e.raw_os_error()) {
        Some(known) => known.name().to_owned(),
        None => match e {
            Errno::NOTCONN => "ENOTCONN".to_owned(),
            Errno::NODEV => "ENODEV".to_owned(),
            Errno::PERM => "EPERM".to_owned(),
            Errno::NOENT => "ENOENT".to_owned(),
            Errno::NOSYS => "ENOSYS".to_owned(),
            other => format!("E{}", other.raw_os_error()),
        },
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn report<T: std::fmt::Display>(step: &str, result: Result<T, Errno>) {
    match result {
        Ok(v) => say(format!("{step} ok {v}")),
        Err(e) => say(format!("{step} err {}", errno_name(e))),
    }
}

struct Mapping {
    ptr: *mut std::ffi::c_void,
}

/// What the steps so far left behind: the open file, the last generation read, the mapping.
#[derive(Default)]
struct Session {
    file: Option<DevFile>,
    last: u32,
    mapping: Option<Mapping>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    let mut session = Session::default();
    while let Some(step) = it.next() {
        let mut arg = || it.next().expect("missing step argument").clone();
        session.run(step, &mut arg);
    }
}

impl Session {
    /// Runs one step, taking its arguments from `arg`, and prints its line. This handles the
    /// steps on the open file and hands the others on.
    fn run(&mut self, step: &str, arg: &mut dyn FnMut() -> String) {
        match step {
            "open" => {
                let path = arg();
                self.open(&path, &arg());
            }
            "read" => {
                let n = number(arg(), "length");
                self.read(n);
            }
            "ack" => report("ack", self.file().ack(self.last)),
            "write-u32" => {
                let v = number(arg(), "value");
                report("write-u32", self.file().ack(v));
            }
            "write-len" => {
                let n = number(arg(), "length");
                report("write-len", self.file().write_bytes(&vec![0u8; n]));
            }
            "ioctl" => {
                let cmd = parse_u64(&arg()) as u32;
                let a = parse_u64(&arg());
                report("ioctl", self.file().ioctl(cmd, a));
            }
            "track" => {
                let on = number(arg(), "0 or 1");
                report(
                    "track",
                    self.file().ioctl(SYSGENID_SET_WATCHER_TRACKING, on),
                );
            }
            "wait" => {
                let ms = number(arg(), "ms");
                report("wait", self.file().ioctl(SYSGENID_WAIT_WATCHERS, ms));
            }
            "trigger" => {
                let min = parse_u64(&arg());
                report(
                    "trigger",
                    self.file().ioctl(SYSGENID_TRIGGER_GEN_UPDATE, min),
                );
            }
            "thread-trigger" => {
                let min = parse_u64(&arg());
                report(
                    "thread-trigger",
                    trigger_on_another_thread(self.file(), min),
                );
            }
            "poll" => {
                let ms = number(arg(), "ms");
                let result = self.file().poll(Duration::from_millis(ms));
                report("poll", result.map(|flags| flags.bits()));
            }
            "close" => {
                drop(self.file.take().expect("open a file first"));
                say("close ok".to_owned());
            }
            other => self.run_on_mapping(other, arg),
        }
    }

    /// Runs the steps that make or use the mapping, and hands the others on.
    fn run_on_mapping(&mut self, step: &str, arg: &mut dyn FnMut() -> String) {
        match step {
            "mmap" => self.map(step, ProtFlags::READ),
            "mmap-rw" => self.map(step, ProtFlags::READ | ProtFlags::WRITE),
            "mprotect-rw" => {
                let flags = rustix::mm::MprotectFlags::READ | rustix::mm::MprotectFlags::WRITE;
                // SAFETY: changes the protection of our own live mapping, which nothing else
                // in this process refers to.
                let result = unsafe {
                    rustix::mm::mprotect(self.mapping().ptr, sysgenid_abi::PAGE_SIZE, flags)
                };
                report("mprotect-rw", result.map(|()| 0));
            }
            "store" => {
                let v: u32 = number(arg(), "value");
                // SAFETY: offset 0 of a live, page-aligned mapping made writable by the steps
                // before; a fault here is the behaviour under test.
                unsafe { std::ptr::write_volatile(self.mapping().ptr.cast::<u32>(), v) };
                say("store ok".to_owned());
            }
            "msync" => {
                let sync = rustix::mm::MsyncFlags::SYNC;
                // SAFETY: syncs our own live mapping.
                let result =
                    unsafe { rustix::mm::msync(self.mapping().ptr, sysgenid_abi::PAGE_SIZE, sync) };
                report("msync", result.map(|()| 0));
            }
            "proc-mem-store" => {
                let v = number(arg(), "value");
                proc_mem_store(self.mapping(), v);
            }
            "load" => {
                // SAFETY: offset 0 of a live, page-aligned, readable mapping.
                let v = unsafe { std::ptr::read_volatile(self.mapping().ptr.cast::<u32>()) };
                say(format!("load ok {v}"));
            }
            other => process_step(other, arg),
        }
    }

    fn file(&self) -> &DevFile {
        self.file.as_ref().expect("open a file first")
    }

    fn mapping(&self) -> &Mapping {
        self.mapping.as_ref().expect("mmap first")
    }

    /// `open PATH ro|rw|ro-nonblock|rw-nonblock`.
    fn open(&mut self, path: &str, mode: &str) {
        let flags = match mode {
            "ro" => OFlags::RDONLY,
            "rw" => OFlags::RDWR,
            "ro-nonblock" => OFlags::RDONLY | OFlags::NONBLOCK,
            "rw-nonblock" => OFlags::RDWR | OFlags::NONBLOCK,
            other => panic!("unknown open mode {other}"),
        };
        match DevFile::open(Path::new(path), flags) {
            Ok(f) => {
                self.file = Some(f);
                say("open ok".to_owned());
            }
            Err(e) => say(format!("open err {}", errno_name(e))),
        }
    }

    /// `read N`: prints the generation read (and keeps it for `ack`), or the byte count.
    fn read(&mut self, n: usize) {
        let result = self.file().read_len(n).map(|bytes| {
            if let Some(g) = sysgenid_abi::decode_generation(&bytes) {
                self.last = g;
                g.to_string()
            } else {
                format!("{}bytes", bytes.len())
            }
        });
        report("read", result);
    }

    /// `mmap` and `mmap-rw`: maps the first page of the open file, shared, with `prot`.
    fn map(&mut self, step: &str, prot: ProtFlags) {
        // SAFETY: a fresh shared mapping of one page of an open file, at an address the kernel
        // picks; it is only touched through volatile loads and stores of its first word.
        let result = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                sysgenid_abi::PAGE_SIZE,
                prot,
                rustix::mm::MapFlags::SHARED,
                self.file(),
                0,
            )
        };
        match result {
            Ok(ptr) => {
                self.mapping = Some(Mapping { ptr });
                say(format!("{step} ok"));
            }
            Err(e) => say(format!("{step} err {}", errno_name(e))),
        }
    }
}

/// The steps that need neither the file nor the mapping: `sleep MS`, `ready`, `whoami`,
/// `sigaction-usr1`, `sigaction-usr1-restart`, `wait-stdin`.
fn process_step(step: &str, arg: &mut dyn FnMut() -> String) {
    match step {
        "sleep" => {
            let ms: u64 = arg().parse().expect("ms");
            std::thread::sleep(Duration::from_millis(ms));
            say("sleep ok".to_owned());
        }
        "ready" => say("ready ok".to_owned()),
        "whoami" => whoami(),
        "sigaction-usr1" => report("sigaction-usr1", install_noop_usr1(false)),
        "sigaction-usr1-restart" => {
            report("sigaction-usr1-restart", install_noop_usr1(true));
        }
        "wait-stdin" => {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            say("wait-stdin ok".to_owned());
        }
        other => panic!("unknown step {other}"),
    }
}

/// `TRIGGER_GEN_UPDATE` on `f` from a thread other than the main one.
fn trigger_on_another_thread(f: &DevFile, min: u64) -> Result<i32, Errno> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            let main = rustix::process::getpid().as_raw_nonzero().get();
            assert_ne!(tid, main, "runs on another thread");
            f.ioctl(SYSGENID_TRIGGER_GEN_UPDATE, min)
        })
        .join()
        .expect("thread")
    })
}

/// Writes `v` into the mapping through /proc/self/mem, which can force writes into read-only
/// private mappings but must not reach a shared read-only one.
fn proc_mem_store(m: &Mapping, v: u32) {
    let result = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")
        .and_then(|mem| std::os::unix::fs::FileExt::write_at(&mem, &v.to_ne_bytes(), m.ptr as u64));
    match result {
        Ok(n) => say(format!("proc-mem-store ok {n}")),
        Err(e) => say(format!(
            "proc-mem-store err {}",
            errno_name(Errno::from_io_error(&e).unwrap_or(Errno::IO))
        )),
    }
}

/// Prints `whoami ok uid=<euid> capeff=<hex>` from /proc/self/status.
fn whoami() {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("?")
            .to_owned()
    };
    let uid = field("Uid:");
    let euid = uid.split_whitespace().nth(1).unwrap_or("?");
    say(format!("whoami ok uid={euid} capeff={}", field("CapEff:")));
}

extern "C" fn noop_handler(_signal: libc::c_int) {}

/// Installs a no-op SIGUSR1 handler, with `SA_RESTART` if `restart`.
fn install_noop_usr1(restart: bool) -> Result<i32, Errno> {
    // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags) that is then
    // filled in; the handler is an `extern "C"` function that does nothing, which is
    // async-signal-safe; the old action pointer may be null.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = noop_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(0)
    } else {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    }
}

/// A step argument parsed as a decimal number; panics naming `what` otherwise.
fn number<T: std::str::FromStr>(text: String, what: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().expect(what)
}

fn parse_u64(text: &str) -> u64 {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).expect("hex number"),
        None => text.parse().expect("number"),
    }
}
