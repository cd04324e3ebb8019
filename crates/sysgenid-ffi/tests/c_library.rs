//! The C library as C programs see it: the SONAME of the built cdylib, the exported symbols,
//! and the C example compiled against an installed copy (`scripts/install.sh`), both through
//! `pkg-config` with the shared library and with the static one.
//!
//! Needs what `cargo build --workspace` builds (the daemon, the `sysgenid` CLI, the cdylib and
//! the staticlib), a C compiler, `pkg-config` and `readelf` (Debian: build-essential,
//! pkg-config).

use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sysgenid_e2e::{Daemon, read_lines};

const LINE_TIMEOUT: Duration = Duration::from_secs(20);
const SONAME: &str = concat!("libsysgenid.so.", env!("CARGO_PKG_VERSION_MAJOR"));

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target profile directory this test was built into, such as `target/debug`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test runs from <profile>/deps")
        .to_owned()
}

/// A built artefact of the profile directory; fails clearly when it is missing.
fn built(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (it builds the daemon, the \
         `sysgenid` CLI, and the C library as libsysgenid_ffi.so and libsysgenid_ffi.a)",
        path.display()
    );
    path
}

/// The C library artefact `name` of the profile directory, checked to be built from the
/// current sources: `cargo test` builds its own copy of the library under `deps/` and does not
/// refresh the one `scripts/install.sh` installs, so an edit since the last `cargo build` would
/// otherwise go untested.
fn built_library(name: &str) -> PathBuf {
    let path = built(name);
    let built_at = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    // Cargo's dep-info file next to the artefact lists every source it was built from.
    let dep_info = profile_dir().join("libsysgenid_ffi.d");
    let dep_info = std::fs::read_to_string(&dep_info)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo build --workspace`", dep_info.display()));
    let (_, sources) = dep_info.split_once(": ").expect("a make rule");
    for source in sources.split_whitespace() {
        let Ok(changed_at) = std::fs::metadata(source).and_then(|m| m.modified()) else {
            continue;
        };
        assert!(
            changed_at <= built_at,
            "{} is older than {source}: run `cargo build --workspace` (cargo test does not \
             rebuild it)",
            path.display()
        );
    }
    path
}

/// Runs `command` and returns its output, failing the test with its stderr if it fails.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

/// `readelf -d` of an ELF file: its dynamic section.
fn dynamic_section(path: &Path) -> String {
    stdout(&run(Command::new("readelf").arg("-d").arg(path)))
}

/// The shared libraries an ELF file needs (`NEEDED`).
fn needed(path: &Path) -> Vec<String> {
    dynamic_section(path)
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| Some(line.split_once('[')?.1.trim_end_matches(']').to_owned()))
        .collect()
}

#[test]
fn the_built_library_carries_the_soname() {
    let dynamic = dynamic_section(&built_library("libsysgenid_ffi.so"));
    assert!(
        dynamic.contains(&format!("Library soname: [{SONAME}]")),
        "no SONAME {SONAME} (set by build.rs):\n{dynamic}"
    );
}

/// The functions the header declares.
fn header_functions() -> Vec<String> {
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/sysgenid/sysgenid.h");
    let header = std::fs::read_to_string(header).expect("read the header");
    header
        .lines()
        .filter(|line| !line.starts_with(' ') && !line.starts_with('#'))
        .filter_map(|line| {
            let start = line.find("sysgenid_")?;
            let name = &line[start..line[start..].find('(')? + start];
            Some(name.to_owned())
        })
        .collect()
}

#[test]
fn the_library_exports_exactly_the_functions_of_the_header() {
    let output = run(Command::new("nm")
        .args(["-D", "--defined-only", "--format=posix"])
        .arg(built_library("libsysgenid_ffi.so")));
    let mut exported: Vec<String> = stdout(&output)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with("sysgenid_"))
        .map(str::to_owned)
        .collect();
    exported.sort();
    let mut declared = header_functions();
    declared.sort();
    assert!(declared.len() > 15, "{declared:?}");
    assert_eq!(exported, declared);
}

/// An installed copy of everything `scripts/install.sh` installs, in a temporary prefix.
struct Installed {
    _dir: tempfile::TempDir,
    prefix: PathBuf,
}

impl Installed {
    fn new() -> Installed {
        // What install.sh --no-build copies from the profile directory.
        built("sysgenidd");
        built("sysgenid");
        built_library("libsysgenid_ffi.so");
        built_library("libsysgenid_ffi.a");
        let dir = tempfile::Builder::new()
            .prefix("sysgenid-ffi-install-")
            .tempdir()
            .expect("temp dir");
        let prefix = dir.path().to_owned();
        let mut install = Command::new(workspace_root().join("scripts/install.sh"));
        if profile_dir().file_name() != Some("release".as_ref()) {
            install.arg("--debug");
        }
        run(install.arg("--no-build").arg("--prefix").arg(&prefix));
        Installed { _dir: dir, prefix }
    }

    fn lib(&self) -> PathBuf {
        self.prefix.join("lib")
    }

    /// `pkg-config` with this prefix's `sysgenid.pc`, split into arguments.
    fn pkg_config(&self, args: &[&str]) -> Vec<String> {
        let output = run(Command::new("pkg-config")
            .args(args)
            .arg("sysgenid")
            .env("PKG_CONFIG_PATH", self.lib().join("pkgconfig")));
        stdout(&output)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Compiles `examples/c/watch.c` into `name` with the link arguments `libs`.
    fn compile(&self, name: &str, extra: &[&str], libs: &[String]) -> PathBuf {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c/watch.c");
        let binary = self.prefix.join(name);
        run(Command::new("cc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror"])
            .args(extra)
            .args(self.pkg_config(&["--cflags"]))
            .arg(&source)
            .arg("-o")
            .arg(&binary)
            .args(libs));
        binary
    }
}

/// A running C example, read line by line with a timeout.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn spawn(binary: &Path, daemon: &Daemon, library_path: Option<&Path>) -> Watch {
        let mut command = Command::new(binary);
        command
            .env("SYSGENID_DEVICE", &daemon.device)
            .env("SYSGENID_STATE_DIR", &daemon.state_dir)
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = library_path {
            command.env("LD_LIBRARY_PATH", dir);
        }
        let mut child = command.spawn().expect("run the C example");
        let lines = read_lines(child.stdout.take().expect("piped stdout"));
        Watch { child, lines }
    }

    fn expect(&mut self, expected: &str) {
        match self.lines.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => assert_eq!(line, expected),
            Err(_) => {
                let _ = self.child.kill();
                let (_, stderr) = self.wait();
                panic!("the C example did not print {expected:?}; stderr:\n{stderr}");
            }
        }
    }

    /// Waits for the process to exit: its status and its stderr.
    fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("wait for the C example");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
    }
}

/// Runs the C example against `daemon`: it prints the generation, watches as a tracked
/// watcher, sees the trigger this test makes, acknowledges, and exits 0.
fn watch_one_change(binary: &Path, daemon: &Daemon, library_path: Option<&Path>) {
    let before = u32::try_from(daemon.generation()).expect("u32 generation");
    let tracked = daemon.count("tracked");
    let mut watch = Watch::spawn(binary, daemon, library_path);
    watch.expect(&format!("generation {before}"));
    watch.expect(&format!("id {}", daemon.generation_id()));
    watch.expect(&format!(
        "watching with libsysgenid {}",
        env!("CARGO_PKG_VERSION")
    ));
    assert_eq!(
        daemon.count("tracked"),
        tracked + 1,
        "the example is tracked"
    );

    let device = CString::new(daemon.device_str()).unwrap();
    let state_dir = CString::new(daemon.state_dir.to_str().unwrap()).unwrap();
    // SAFETY: two valid C strings.
    let rc = unsafe { sysgenid_ffi::sysgenid_trigger_at(device.as_ptr(), state_dir.as_ptr(), 0) };
    assert_eq!(rc, 0);
    watch.expect(&format!("changed to {}", before + 1));
    watch.expect(&format!("acknowledged {}", before + 1));
    let (status, stderr) = watch.wait();
    assert!(
        status.success(),
        "the C example failed ({status}):\n{stderr}"
    );
    assert!(stderr.is_empty(), "the C example wrote to stderr: {stderr}");
    // The example acknowledged, so nobody lags.
    // SAFETY: two valid C strings.
    let rc = unsafe {
        sysgenid_ffi::sysgenid_wait_watchers_at(device.as_ptr(), state_dir.as_ptr(), 5_000)
    };
    assert_eq!(rc, 0);
}

#[test]
fn c_example_builds_and_runs_against_an_installed_copy() {
    let installed = Installed::new();
    let lib = installed.lib();

    // The names the linker and the loader look for, and the SONAME.
    let version = env!("CARGO_PKG_VERSION");
    let real = format!("libsysgenid.so.{version}");
    assert_eq!(
        std::fs::read_link(lib.join(SONAME)).expect("the SONAME link"),
        Path::new(&real)
    );
    assert_eq!(
        std::fs::read_link(lib.join("libsysgenid.so")).expect("the linker's link"),
        Path::new(SONAME)
    );
    let dynamic = dynamic_section(&lib.join(&real));
    assert!(
        dynamic.contains(&format!("Library soname: [{SONAME}]")),
        "the installed library has no SONAME {SONAME}:\n{dynamic}"
    );
    assert_eq!(
        std::fs::read(installed.prefix.join("include/sysgenid/sysgenid.h")).unwrap(),
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/sysgenid/sysgenid.h"))
            .unwrap(),
        "the installed header is the checked-in one"
    );

    // cc watch.c $(pkg-config --cflags --libs sysgenid)
    let libs = installed.pkg_config(&["--libs"]);
    let binary = installed.compile("watch", &[], &libs);
    let needed = needed(&binary);
    assert!(
        needed.contains(&SONAME.to_owned()),
        "the example does not need {SONAME}: {needed:?}"
    );

    let daemon = Daemon::start();
    watch_one_change(&binary, &daemon, Some(&lib));

    // Errors come with sysgenid_strerror's advice.
    let output = Command::new(&binary)
        .env("SYSGENID_DEVICE", installed.prefix.join("no-device"))
        .env("SYSGENID_STATE_DIR", installed.prefix.join("no-state"))
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .expect("run the C example");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "sysgenid_generation failed: no such device file (ENOENT): is sysgenidd running?"
        ),
        "{stderr}"
    );
}

#[test]
fn c_example_links_the_static_library() {
    let installed = Installed::new();
    let archive = installed.lib().join("libsysgenid.a");
    let archive = archive.to_str().expect("UTF-8 path").to_owned();

    // pkg-config --static --libs, with the archive in place of -lsysgenid (which would pick the
    // shared library).
    let libs: Vec<String> = installed
        .pkg_config(&["--static", "--libs"])
        .into_iter()
        .map(|arg| {
            if arg == "-lsysgenid" {
                archive.clone()
            } else {
                arg
            }
        })
        .collect();
    let binary = installed.compile("watch-static", &[], &libs);

    // Libs.private alone must be complete: without the compiler's default libraries the link
    // needs every library the Rust staticlib uses (such as libgcc_s for unwinding).
    let private: Vec<String> = std::iter::once(archive.clone())
        .chain(
            installed
                .pkg_config(&["--static", "--libs-only-l"])
                .into_iter()
                .filter(|arg| arg != "-lsysgenid"),
        )
        .collect();
    let strict = installed.compile("watch-strict", &["-nodefaultlibs"], &private);

    let daemon = Daemon::start();
    for binary in [binary, strict] {
        let needed = needed(&binary);
        assert!(
            !needed.iter().any(|lib| lib.starts_with("libsysgenid")),
            "{} links the shared library: {needed:?}",
            binary.display()
        );
        watch_one_change(&binary, &daemon, None);
    }
}
