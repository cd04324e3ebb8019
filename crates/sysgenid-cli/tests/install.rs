//! `scripts/install.sh` into a temporary prefix, then the installed daemon and CLI, used as they
//! were installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use sysgenid_e2e::eventually;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("spawn");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Stops the installed daemon when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).expect("pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.0.wait();
    }
}

#[test]
fn the_install_command_installs_everything_and_the_installed_copy_works() {
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    run(Command::new(workspace_root().join("scripts/install.sh"))
        .args(["--debug", "--no-build", "--prefix"])
        .arg(p));
    for file in [
        "bin/sysgenidd",
        "bin/sysgenid",
        "share/man/man8/sysgenidd.8",
        "share/man/man1/sysgenid.1",
        "share/man/man1/sysgenid-watch.1",
        "share/man/man1/sysgenid-overseer-post-restore.1",
        "share/doc/sysgenid/overseer.md",
        "share/bash-completion/completions/sysgenid",
        "share/zsh/site-functions/_sysgenid",
        "share/fish/vendor_completions.d/sysgenid.fish",
        "lib/systemd/system/sysgenidd.service",
        "lib/libsysgenid.so.0",
        "lib/libsysgenid.a",
        "include/sysgenid/sysgenid.h",
        "lib/pkgconfig/sysgenid.pc",
    ] {
        let path = p.join(file);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} is missing or empty", path.display());
    }
    let unit = std::fs::read_to_string(p.join("lib/systemd/system/sysgenidd.service")).unwrap();
    let exec = format!("ExecStart={}/bin/sysgenidd", p.display());
    assert!(unit.lines().any(|l| l == exec), "{unit}");
    let man = std::fs::read_to_string(p.join("share/man/man8/sysgenidd.8")).unwrap();
    assert!(man.contains(".TH sysgenidd 8"));

    // The installed daemon and CLI, on a temporary device.
    let work = tempfile::tempdir().unwrap();
    let device = work.path().join("device");
    let state = work.path().join("state");
    let _daemon = Running(
        Command::new(p.join("bin/sysgenidd"))
            .arg("--device")
            .arg(&device)
            .arg("--state-dir")
            .arg(&state)
            .args(["--backends", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cli = |args: &[&str]| -> Output {
        Command::new(p.join("bin/sysgenid"))
            .env("SYSGENID_DEVICE", &device)
            .env("SYSGENID_STATE_DIR", &state)
            .args(args)
            .output()
            .unwrap()
    };
    eventually("the installed daemon serves", || {
        String::from_utf8_lossy(&cli(&["--json", "status"]).stdout).contains("\"serving\":true")
    });
    assert_eq!(
        String::from_utf8_lossy(&cli(&["trigger"]).stdout),
        "generation 1\n"
    );
    assert_eq!(String::from_utf8_lossy(&cli(&["get"]).stdout), "1\n");
    assert_installed_man_page_renders(&p.join("share/man/man1/sysgenid.1"));
    // The help and the man pages point to the installed documents.
    let doc = p.join("share/doc/sysgenid/overseer.md");
    let help = cli(&["overseer", "post-restore", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!("Documentation: {}", doc.display())),
        "{help}"
    );
    let page = p.join("share/man/man1/sysgenid-overseer.1");
    let page = std::fs::read_to_string(page).unwrap().replace("\\-", "-");
    assert!(page.contains(&doc.display().to_string()), "{page}");
}

#[test]
fn a_usr_install_brings_the_sysusers_file_of_the_writer_group() {
    let stage = tempfile::tempdir().unwrap();
    let out = run(Command::new(workspace_root().join("scripts/install.sh"))
        .args(["--debug", "--no-build", "--prefix", "/usr", "--destdir"])
        .arg(stage.path()));
    let conf = std::fs::read_to_string(stage.path().join("usr/lib/sysusers.d/sysgenid.conf"));
    let conf = conf.expect("the sysusers.d file is installed");
    assert!(conf.lines().any(|l| l == "g sysgenid -"), "{conf}");
    let unit = stage
        .path()
        .join("usr/lib/systemd/system/sysgenidd.service");
    assert!(unit.exists(), "the rest is staged too");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("under {}/usr", stage.path().display())),
        "{said}"
    );
}

/// The man page names the command and its subcommands.
fn assert_installed_man_page_renders(page: &Path) {
    let text = std::fs::read_to_string(page).unwrap();
    assert!(text.contains(".TH sysgenid 1"));
    assert!(
        text.contains("wait\\-watchers") || text.contains("wait-watchers"),
        "{text}"
    );
}
