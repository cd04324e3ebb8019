//! Raw `bpf(2)` and `perf_event_open(2)` calls, with `bpf_attr` laid out by hand.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `BPF_MAP_TYPE_ARRAY`.
pub const MAP_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_RINGBUF`.
pub const MAP_RINGBUF: u32 = 27;
/// `BPF_PROG_TYPE_SOCKET_FILTER`.
pub const PROG_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_KPROBE`.
pub const PROG_KPROBE: u32 = 2;
/// `BPF_PROG_TYPE_TRACING`.
pub const PROG_TRACING: u32 = 26;
/// `BPF_TRACE_FENTRY`.
pub const ATTACH_FENTRY: u32 = 24;
/// `BPF_PERF_EVENT`.
pub const ATTACH_PERF_EVENT: u32 = 41;

const MAP_CREATE: u32 = 0;
const MAP_LOOKUP_ELEM: u32 = 1;
const MAP_UPDATE_ELEM: u32 = 2;
const PROG_LOAD: u32 = 5;
const OBJ_PIN: u32 = 6;
const OBJ_GET: u32 = 7;
const PROG_TEST_RUN: u32 = 10;
const RAW_TRACEPOINT_OPEN: u32 = 17;
const LINK_CREATE: u32 = 28;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// A zeroed `union bpf_attr` prefix; fields are written at their uapi offsets.
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn name(&mut self, off: usize, name: &str) -> &mut Attr {
        let n = name.len().min(15);
        self.0[off..off + n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: u32, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: attr is a valid, writable 128-byte buffer for the whole call;
    // every pointer stored in it refers to memory the caller keeps alive.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len() as u32) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn bpf_fd(cmd: u32, attr: &mut Attr) -> io::Result<OwnedFd> {
    let fd = i32::try_from(bpf(cmd, attr)?).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ptr<T>(p: *const T) -> u64 {
    p as usize as u64
}

fn ptr_mut<T>(p: *mut T) -> u64 {
    p as usize as u64
}

/// `BPF_MAP_CREATE`.
pub fn map_create(kind: u32, key: u32, value: u32, max: u32, name: &str) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, kind)
        .u32(4, key)
        .u32(8, value)
        .u32(12, max)
        .name(28, name);
    bpf_fd(MAP_CREATE, &mut a)
}

/// Reads the `u64` at array index `key`.
pub fn array_get(map: BorrowedFd<'_>, key: u32) -> io::Result<u64> {
    let mut v = 0u64;
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, ptr(&key))
        .u64(16, ptr_mut(&mut v));
    bpf(MAP_LOOKUP_ELEM, &mut a)?;
    Ok(v)
}

/// Writes the `u64` at array index `key`.
pub fn array_set(map: BorrowedFd<'_>, key: u32, value: u64) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, ptr(&key))
        .u64(16, ptr(&value));
    bpf(MAP_UPDATE_ELEM, &mut a).map(drop)
}

/// What to load.
#[derive(Debug, Clone, Copy)]
pub struct ProgSpec<'a> {
    /// `BPF_PROG_TYPE_*`.
    pub prog_type: u32,
    /// `BPF_*` attach type, or 0.
    pub expected_attach_type: u32,
    /// BTF id of the traced function (fentry), or 0.
    pub attach_btf_id: u32,
    /// Program name (15 bytes kept).
    pub name: &'a str,
}

/// A failed `BPF_PROG_LOAD`: errno and verifier log.
#[derive(Debug)]
pub struct LoadError {
    /// The errno.
    pub error: io::Error,
    /// The verifier log (may be empty).
    pub log: String,
}

/// `BPF_PROG_LOAD`; on failure retries with a verifier log.
pub fn prog_load(spec: &ProgSpec<'_>, insns: &[u8]) -> Result<OwnedFd, LoadError> {
    let license = c"Dual MIT/GPL";
    let load = |log: &mut [u8]| {
        let mut a = Attr::new();
        a.u32(0, spec.prog_type)
            .u32(4, (insns.len() / 8) as u32)
            .u64(8, ptr(insns.as_ptr()))
            .u64(16, ptr(license.as_ptr()))
            .name(48, spec.name)
            .u32(68, spec.expected_attach_type)
            .u32(108, spec.attach_btf_id);
        if !log.is_empty() {
            a.u32(24, 1)
                .u32(28, log.len() as u32)
                .u64(32, ptr_mut(log.as_mut_ptr()));
        }
        bpf_fd(PROG_LOAD, &mut a)
    };
    match load(&mut []) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 64 * 1024];
            match load(&mut log) {
                Ok(fd) => Ok(fd),
                Err(error) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    let log = String::from_utf8_lossy(&log[..end]).into_owned();
                    let error = if error.raw_os_error() == first.raw_os_error() {
                        error
                    } else {
                        first
                    };
                    Err(LoadError { error, log })
                }
            }
        }
    }
}

fn cpath(path: &std::path::Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `BPF_OBJ_PIN`: pins a map, program or link at `path` in bpffs.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> io::Result<()> {
    let p = cpath(path)?;
    let mut a = Attr::new();
    a.u64(0, ptr(p.as_ptr())).u32(8, fd.as_raw_fd() as u32);
    bpf(OBJ_PIN, &mut a).map(drop)
}

/// `BPF_OBJ_GET`: opens a pinned object.
pub fn obj_get(path: &std::path::Path) -> io::Result<OwnedFd> {
    let p = cpath(path)?;
    let mut a = Attr::new();
    a.u64(0, ptr(p.as_ptr()));
    bpf_fd(OBJ_GET, &mut a)
}

/// `BPF_PROG_TEST_RUN` with `data` as packet input; returns the program's r0.
pub fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8]) -> io::Result<u32> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(8, data.len() as u32)
        .u32(32, 1);
    if !data.is_empty() {
        a.u64(16, ptr(data.as_ptr()));
    }
    bpf(PROG_TEST_RUN, &mut a)?;
    Ok(a.get_u32(4))
}

/// `BPF_RAW_TRACEPOINT_OPEN` with no name: attaches a loaded fentry program; returns the link.
pub fn fentry_attach(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(8, prog.as_raw_fd() as u32);
    bpf_fd(RAW_TRACEPOINT_OPEN, &mut a)
}

/// `BPF_LINK_CREATE` of type `BPF_PERF_EVENT` (5.15+): a pinnable link owning the perf event.
pub fn perf_link_create(prog: BorrowedFd<'_>, perf: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, perf.as_raw_fd() as u32)
        .u32(8, ATTACH_PERF_EVENT);
    bpf_fd(LINK_CREATE, &mut a)
}

/// `perf_event_open` on the kprobe PMU `pmu_type` at function `symbol`, CPU 0, all tasks.
pub fn kprobe_open(pmu_type: u32, symbol: &str) -> io::Result<OwnedFd> {
    let sym = CString::new(symbol).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // struct perf_event_attr, PERF_ATTR_SIZE_VER1 (72 bytes).
    let mut attr = [0u8; 72];
    attr[0..4].copy_from_slice(&pmu_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&72u32.to_ne_bytes());
    attr[16..24].copy_from_slice(&1u64.to_ne_bytes()); // sample_period
    attr[56..64].copy_from_slice(&ptr(sym.as_ptr()).to_ne_bytes()); // config1 = kprobe_func
    // SAFETY: attr is a valid perf_event_attr of the size it declares; sym outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1i32,
            0i32,
            -1i32,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layout() {
        let mut a = Attr::new();
        a.u32(0, 2).u32(4, 4).name(28, "sysgenid_counter_long");
        assert_eq!(&a.0[0..8], &[2, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(&a.0[28..44], b"sysgenid_counte\0");
    }
}
