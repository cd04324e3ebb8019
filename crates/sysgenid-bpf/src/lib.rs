//! VM-restore events from the kernel's `add_vmfork_randomness()` via a tiny BPF probe.
//!
//! `drivers/virt/vmgenid.c` (Linux 5.18+) calls `add_vmfork_randomness()` when the
//! hypervisor's VM Generation ID changes. [`VmforkWatch`] attaches a BPF program to
//! that function (kprobe through the perf kprobe PMU, or fentry through BTF when
//! kprobes are absent). On each call the program increments `counter[0]` of an
//! ARRAY map and writes an [`Event`] `{count, boot_ns}` to a RINGBUF map.
//!
//! Build approach: the program is 22 instructions, hand-assembled by the typed
//! encoder in [`insn`] (golden-byte tests). No clang, no bpf-linker, no nightly,
//! no libbpf: maps, load, attach and pinning are raw `bpf(2)` calls ([`sys`]).
//!
//! Persistence: with a pin directory (e.g. `/sys/fs/bpf/sysgenid`), the link,
//! the counter map and the ring buffer are pinned there, so the probe keeps
//! counting (and queueing events) while no daemon runs. `counter[1]` holds the
//! count userspace has acknowledged ([`VmforkWatch::ack`]); a daemon started
//! later sees `counter() > acked()` and knows restores happened meanwhile.
#![deny(missing_docs)]

pub mod btf;
pub mod insn;
pub mod ringbuf;
pub mod sys;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The traced kernel function.
pub const SYMBOL: &str = "add_vmfork_randomness";
/// Ring buffer data size (one page; a record takes 24 bytes).
pub const RINGBUF_SIZE: u32 = 4096;
/// The default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sysgenid";

const PIN_LINK: &str = "link";
const PIN_COUNTER: &str = "counter";
const PIN_EVENTS: &str = "events";
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why the watch cannot be set up; each names the missing kernel feature.
#[derive(Debug)]
pub enum Unavailable {
    /// `bpf(2)` is missing or refused (ENOSYS, EPERM).
    NoBpf(io::Error),
    /// Permission denied at a named step (need root or CAP_BPF+CAP_PERFMON).
    Permission(&'static str, io::Error),
    /// No kprobe PMU (`CONFIG_KPROBES` off).
    NoKprobes,
    /// No `/sys/kernel/btf/vmlinux` (`CONFIG_DEBUG_INFO_BTF` off), needed for fentry.
    NoBtf(String),
    /// The symbol is not in the kernel (older than 5.18, or vmgenid not built).
    NotFound(String),
    /// Neither kprobe nor fentry could attach; both reasons.
    NoAttach(Box<Unavailable>, Box<Unavailable>),
    /// The verifier rejected the program.
    Verifier(io::Error, String),
    /// Pinning needs bpffs at the pin directory's parent.
    NoBpffs(PathBuf, io::Error),
    /// Another failure at a named step.
    Failed(&'static str, io::Error),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::NoBpf(e) => write!(f, "no BPF (bpf syscall: {e})"),
            Unavailable::Permission(step, e) => write!(f, "permission denied at {step}: {e}"),
            Unavailable::NoKprobes => {
                write!(f, "no kprobes ({KPROBE_PMU} missing: CONFIG_KPROBES off)")
            }
            Unavailable::NoBtf(why) => write!(f, "no BTF ({why})"),
            Unavailable::NotFound(sym) => write!(
                f,
                "{sym} not found (kernel older than 5.18 or vmgenid not built)"
            ),
            Unavailable::NoAttach(k, t) => write!(f, "cannot attach: kprobe: {k}; fentry: {t}"),
            Unavailable::Verifier(e, log) => write!(f, "verifier rejected the probe ({e}): {log}"),
            Unavailable::NoBpffs(p, e) => write!(
                f,
                "no bpffs for {} ({e}); mount -t bpf bpf /sys/fs/bpf",
                p.display()
            ),
            Unavailable::Failed(step, e) => write!(f, "{step}: {e}"),
        }
    }
}

impl std::error::Error for Unavailable {}

fn classify(step: &'static str, e: io::Error) -> Unavailable {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => Unavailable::Permission(step, e),
        _ => Unavailable::Failed(step, e),
    }
}

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Kprobe if the kprobe PMU exists, else fentry.
    Auto,
    /// Kprobe only.
    Kprobe,
    /// Fentry only.
    Fentry,
}

/// How the running probe is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// Perf kprobe PMU + `BPF_LINK_CREATE(BPF_PERF_EVENT)`.
    Kprobe,
    /// `BPF_PROG_TYPE_TRACING` / `BPF_TRACE_FENTRY`.
    Fentry,
    /// Reopened from pins left by an earlier process (kind not recorded).
    Pinned,
}

/// Setup options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pin directory in bpffs; `None` keeps everything owned by this process.
    pub pin_dir: Option<PathBuf>,
    /// Attach strategy.
    pub mode: AttachMode,
    /// Traced function (tests use `bpf_fentry_test1`).
    pub symbol: String,
}

impl Options {
    /// Defaults: pinned under `pin_dir`, auto attach, [`SYMBOL`].
    pub fn new(pin_dir: Option<&Path>) -> Options {
        Options {
            pin_dir: pin_dir.map(Path::to_path_buf),
            mode: AttachMode::Auto,
            symbol: SYMBOL.into(),
        }
    }
}

/// One probe hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// `counter[0]` after this hit (1 for the first since the maps were created).
    pub count: u64,
    /// `bpf_ktime_get_boot_ns()` at the hit.
    pub boot_ns: u64,
}

impl Event {
    /// Decodes a 16-byte record.
    pub fn parse(b: &[u8]) -> Option<Event> {
        let count = u64::from_ne_bytes(b.get(0..8)?.try_into().ok()?);
        let boot_ns = u64::from_ne_bytes(b.get(8..16)?.try_into().ok()?);
        Some(Event { count, boot_ns })
    }
}

/// The counter map and ring buffer of a live probe.
#[derive(Debug)]
pub struct VmforkWatch {
    counter: OwnedFd,
    ring: ringbuf::RingBuf,
    prog: Option<OwnedFd>,
    link: Option<OwnedFd>,
    attached: Attached,
}

/// Creates the two maps: ARRAY counter `[count, acked]` and the RINGBUF.
pub fn create_maps() -> Result<(OwnedFd, OwnedFd), Unavailable> {
    let counter =
        sys::map_create(sys::MAP_ARRAY, 4, 8, 2, "sysgenid_count").map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENOSYS | libc::EPERM) => Unavailable::NoBpf(e),
                _ => classify("map create (array)", e),
            }
        })?;
    let ring = sys::map_create(sys::MAP_RINGBUF, 0, 0, RINGBUF_SIZE, "sysgenid_events")
        .map_err(|e| classify("map create (ringbuf, 5.8+)", e))?;
    Ok((counter, ring))
}

/// Loads the probe program as `prog_type` against the given maps.
pub fn load_probe(
    spec: &sys::ProgSpec<'_>,
    counter: BorrowedFd<'_>,
    ring: BorrowedFd<'_>,
) -> Result<OwnedFd, Unavailable> {
    use std::os::fd::AsRawFd;
    let code = insn::to_bytes(&insn::probe_program(counter.as_raw_fd(), ring.as_raw_fd()));
    sys::prog_load(spec, &code).map_err(|e| match e.error.raw_os_error() {
        Some(libc::EPERM) if e.log.trim().is_empty() => {
            Unavailable::Permission("program load", e.error)
        }
        _ => Unavailable::Verifier(e.error, e.log),
    })
}

fn in_kallsyms(symbol: &str) -> Result<bool, Unavailable> {
    let text = std::fs::read_to_string("/proc/kallsyms")
        .map_err(|e| classify("read /proc/kallsyms", e))?;
    Ok(text
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some(symbol)))
}

fn attach_kprobe(
    symbol: &str,
    counter: BorrowedFd<'_>,
    ring: BorrowedFd<'_>,
) -> Result<(OwnedFd, OwnedFd), Unavailable> {
    let pmu = match std::fs::read_to_string(KPROBE_PMU) {
        Ok(s) => s
            .trim()
            .parse::<u32>()
            .map_err(|e| Unavailable::Failed("kprobe PMU type", io::Error::other(e)))?,
        Err(_) => return Err(Unavailable::NoKprobes),
    };
    if !in_kallsyms(symbol)? {
        return Err(Unavailable::NotFound(symbol.into()));
    }
    let spec = sys::ProgSpec {
        prog_type: sys::PROG_KPROBE,
        expected_attach_type: 0,
        attach_btf_id: 0,
        name: "sysgenid_vmfork",
    };
    let prog = load_probe(&spec, counter, ring)?;
    let perf = sys::kprobe_open(pmu, symbol).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT | libc::EINVAL) => Unavailable::NotFound(symbol.into()),
        _ => classify("perf_event_open (kprobe)", e),
    })?;
    let link = sys::perf_link_create(prog.as_fd(), perf.as_fd())
        .map_err(|e| classify("link create (perf event, 5.15+)", e))?;
    Ok((prog, link))
}

fn attach_fentry(
    symbol: &str,
    counter: BorrowedFd<'_>,
    ring: BorrowedFd<'_>,
) -> Result<(OwnedFd, OwnedFd), Unavailable> {
    let btf = std::fs::read(VMLINUX_BTF)
        .map_err(|e| Unavailable::NoBtf(format!("{VMLINUX_BTF}: {e}")))?;
    let id = btf::find_func(&btf, symbol)
        .map_err(Unavailable::NoBtf)?
        .ok_or_else(|| Unavailable::NotFound(symbol.into()))?;
    let spec = sys::ProgSpec {
        prog_type: sys::PROG_TRACING,
        expected_attach_type: sys::ATTACH_FENTRY,
        attach_btf_id: id,
        name: "sysgenid_vmfork",
    };
    let prog = load_probe(&spec, counter, ring)?;
    let link = sys::fentry_attach(prog.as_fd())
        .map_err(|e| classify("fentry attach (raw_tracepoint_open)", e))?;
    Ok((prog, link))
}

/// Removes the pins under `pin_dir` (detaches the probe once no process holds it).
pub fn unpin(pin_dir: &Path) -> io::Result<()> {
    for name in [PIN_LINK, PIN_COUNTER, PIN_EVENTS] {
        match std::fs::remove_file(pin_dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match std::fs::remove_dir(pin_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl VmforkWatch {
    /// Attaches to [`SYMBOL`] (or reopens the pins) with the probe pinned under `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<VmforkWatch, Unavailable> {
        VmforkWatch::open_with(&Options::new(Some(pin_dir)))
    }

    /// Attaches (or reopens) as `opts` says.
    pub fn open_with(opts: &Options) -> Result<VmforkWatch, Unavailable> {
        if let Some(dir) = &opts.pin_dir
            && let Some(w) = VmforkWatch::reopen(dir)?
        {
            return Ok(w);
        }
        let (counter, ring) = create_maps()?;
        let (prog, link, attached) = match opts.mode {
            AttachMode::Kprobe => attach_kprobe(&opts.symbol, counter.as_fd(), ring.as_fd())
                .map(|(p, l)| (p, l, Attached::Kprobe))?,
            AttachMode::Fentry => attach_fentry(&opts.symbol, counter.as_fd(), ring.as_fd())
                .map(|(p, l)| (p, l, Attached::Fentry))?,
            AttachMode::Auto => match attach_kprobe(&opts.symbol, counter.as_fd(), ring.as_fd()) {
                Ok((p, l)) => (p, l, Attached::Kprobe),
                Err(
                    k @ (Unavailable::NoKprobes
                    | Unavailable::Failed(..)
                    | Unavailable::NotFound(_)),
                ) => {
                    match attach_fentry(&opts.symbol, counter.as_fd(), ring.as_fd()) {
                        Ok((p, l)) => (p, l, Attached::Fentry),
                        // BTF was readable and lacks the function: that is the precise reason.
                        Err(Unavailable::NotFound(s)) => return Err(Unavailable::NotFound(s)),
                        Err(t) => return Err(Unavailable::NoAttach(Box::new(k), Box::new(t))),
                    }
                }
                Err(e) => return Err(e),
            },
        };
        if let Some(dir) = &opts.pin_dir {
            pin_all(dir, &counter, &ring, &link)?;
        }
        let ring = ringbuf::RingBuf::new(ring, RINGBUF_SIZE as usize)
            .map_err(|e| classify("mmap ringbuf", e))?;
        Ok(VmforkWatch {
            counter,
            ring,
            prog: Some(prog),
            link: Some(link),
            attached,
        })
    }

    /// Opens pins left by an earlier process; `None` if there are none (stale partial pins are removed).
    fn reopen(dir: &Path) -> Result<Option<VmforkWatch>, Unavailable> {
        let get = |name: &str| sys::obj_get(&dir.join(name));
        match (get(PIN_LINK), get(PIN_COUNTER), get(PIN_EVENTS)) {
            (Ok(link), Ok(counter), Ok(ring)) => {
                let ring = ringbuf::RingBuf::new(ring, RINGBUF_SIZE as usize)
                    .map_err(|e| classify("mmap pinned ringbuf", e))?;
                Ok(Some(VmforkWatch {
                    counter,
                    ring,
                    prog: None,
                    link: Some(link),
                    attached: Attached::Pinned,
                }))
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e))
                if e.raw_os_error() == Some(libc::ENOSYS) =>
            {
                Err(Unavailable::NoBpf(e))
            }
            _ => {
                unpin(dir).map_err(|e| classify("remove stale pins", e))?;
                Ok(None)
            }
        }
    }

    /// Readable (for epoll/poll, EPOLLIN) when events wait; then call [`read_events`](Self::read_events).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ring.fd()
    }

    /// Drains the ring buffer.
    pub fn read_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        self.ring.consume(|b| out.extend(Event::parse(b)));
        out
    }

    /// Probe hits since the maps were created (survives daemon restarts when pinned).
    pub fn counter(&self) -> io::Result<u64> {
        sys::array_get(self.counter.as_fd(), 0)
    }

    /// The count last passed to [`ack`](Self::ack).
    pub fn acked(&self) -> io::Result<u64> {
        sys::array_get(self.counter.as_fd(), 1)
    }

    /// Records that userspace has handled hits up to `count` (kept in the pinned map).
    pub fn ack(&self, count: u64) -> io::Result<()> {
        sys::array_set(self.counter.as_fd(), 1, count)
    }

    /// A handle that records acks from another thread (it holds its own fd of the counter map).
    pub fn acker(&self) -> io::Result<Acker> {
        Ok(Acker {
            counter: self.counter.try_clone()?,
        })
    }

    /// How the probe is attached.
    pub fn attached(&self) -> Attached {
        self.attached
    }

    /// The program fd when this process loaded it (for `BPF_PROG_TEST_RUN` in tests).
    pub fn prog_fd(&self) -> Option<BorrowedFd<'_>> {
        self.prog.as_ref().map(AsFd::as_fd)
    }

    /// Whether this value holds a link (always, today).
    pub fn has_link(&self) -> bool {
        self.link.is_some()
    }
}

/// Records acks in the counter map; see [`VmforkWatch::acker`].
#[derive(Debug)]
pub struct Acker {
    counter: OwnedFd,
}

impl Acker {
    /// Same as [`VmforkWatch::ack`].
    pub fn ack(&self, count: u64) -> io::Result<()> {
        sys::array_set(self.counter.as_fd(), 1, count)
    }
}

fn pin_all(
    dir: &Path,
    counter: &OwnedFd,
    ring: &OwnedFd,
    link: &OwnedFd,
) -> Result<(), Unavailable> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Err(Unavailable::NoBpffs(dir.into(), e));
    }
    let pin = |fd: &OwnedFd, name: &str| {
        sys::obj_pin(fd.as_fd(), &dir.join(name)).map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES) => Unavailable::Permission("pin", e),
            _ => Unavailable::NoBpffs(dir.into(), e),
        })
    };
    // Counter and ring first: the link pin marks a complete set.
    pin(counter, PIN_COUNTER)?;
    pin(ring, PIN_EVENTS)?;
    pin(link, PIN_LINK)
}
