//! The shipped unit under a real systemd (PID 1 of new namespaces): the daemon starts with its
//! sandbox in force, serves the device to the namespace, answers on its control socket, and a
//! stop unmounts and exits cleanly. `systemctl restart` and a crash of the whole service keep
//! the connection in systemd's fd store: an open file and a blocked read never notice.

use std::path::Path;

use sysgenid_e2e::systemd::Systemd;
use sysgenid_e2e::{DevFile, Errno, control_status, workspace_binary};

const SERVICE: &str = "sysgenidd.service";
/// `CAP_SYS_ADMIN` (21) and `CAP_SYS_PTRACE` (19): the unit's `CapabilityBoundingSet=`.
const EXPECTED_CAPS: u64 = 1 << 21 | 1 << 19;

/// The unit from `contrib/` with what a test needs changed: the built daemon on paths in `dir`,
/// its log in a file, and no default dependencies (which would run sysinit steps against the
/// shared kernel). `Wants=modprobe@fuse.service` goes for the same reason.
fn unit_for_test(dir: &Path) -> String {
    unit_for_test_with(dir, "", &[])
}

fn same_key(a: &str, b: &str) -> bool {
    a.split_once('=').map(|(k, _)| k) == b.split_once('=').map(|(k, _)| k)
}

/// Whether `line` replaces a line of `unit` with the same key.
fn replaces(line: &str, unit: &str) -> bool {
    unit.lines().any(|l| same_key(line, l))
}

/// [`unit_for_test`] with `extra` daemon arguments and `service` lines set in `[Service]`
/// (replacing the unit's own line of the same key).
fn unit_for_test_with(dir: &Path, extra: &str, service: &[&str]) -> String {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd/sysgenidd.service");
    let text = std::fs::read_to_string(unit).unwrap();
    let exec = format!(
        "ExecStart={} --device {} --state-dir {} --backends uevent,vmgenid-bpf --bpf-pin-dir none --log debug {extra}",
        workspace_binary("sysgenidd").display(),
        dir.join("device").display(),
        dir.join("state").display(),
    );
    let log = dir.join("daemon.log");
    let mut out = String::new();
    let mut exec_lines = 0;
    for line in text.lines() {
        match line {
            l if l.starts_with("ExecStart=") => {
                exec_lines += 1;
                out.push_str(&exec);
            }
            l if l.starts_with("Wants=modprobe@") => continue,
            // No start limit: the crash tests restart the service a hundred times.
            "[Unit]" => out.push_str("[Unit]\nDefaultDependencies=no\nStartLimitIntervalSec=0"),
            "[Service]" => {
                out.push_str("[Service]");
                for line in service.iter().filter(|l| !replaces(l, &text)) {
                    out.push('\n');
                    out.push_str(line);
                }
            }
            l if let Some(line) = service.iter().find(|s| same_key(s, l)) => out.push_str(line),
            "[Install]" => out.push_str(&format!(
                "StandardOutput=append:{0}\nStandardError=append:{0}\n\n[Install]",
                log.display()
            )),
            l => out.push_str(l),
        }
        out.push('\n');
    }
    assert_eq!(exec_lines, 1, "the unit has one ExecStart=");
    out
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
        .trim()
        .to_owned()
}

fn ns(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn the_unit_serves_under_a_real_systemd_with_its_sandbox_in_force() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    // Traversable by the unprivileged caller below; the state directory is the daemon's own.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let unit = unit_for_test(dir);
    let systemd = Systemd::boot(&[(SERVICE, &unit)]).unwrap_or_else(|e| panic!("{e}"));
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();

    let start = systemd.systemctl(&["start", SERVICE]);
    assert!(
        start.status.success(),
        "systemctl start: {}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&start.stderr),
        String::from_utf8_lossy(&systemd.systemctl(&["status", "--no-pager", SERVICE]).stdout),
        log()
    );
    // Type=notify: `start` returned once READY=1 came, and the STATUS= line reached systemd.
    assert_eq!(systemd.property(SERVICE, "ActiveState"), "active");
    assert_eq!(
        systemd.property(SERVICE, "StatusText"),
        "serving generation 0"
    );

    let pids = systemd.service_pids(SERVICE);
    assert_eq!(
        pids.len(),
        2,
        "the keeper and the serving process in the service's cgroup: {pids:?}"
    );
    for pid in pids {
        check_sandbox(&systemd, pid);
    }

    let device = dir.join("device");
    let state = dir.join("state");
    check_serving(&systemd, &device, &state);
    check_page_store_placed(&systemd.service_pids(SERVICE));
    for refusal in ["stays unplaced", "runs where the scheduler puts it"] {
        assert!(!log().contains(refusal), "the sandbox refused: {}", log());
    }

    let stop = systemd.systemctl(&["stop", SERVICE]);
    assert!(stop.status.success(), "systemctl stop: {stop:?}");
    assert_eq!(systemd.property(SERVICE, "Result"), "success");
    assert_eq!(systemd.property(SERVICE, "ExecMainStatus"), "0");
    assert!(
        !systemd.mountinfo().contains(device.to_str().unwrap()),
        "the device is still mounted after stop; daemon log:\n{}",
        log()
    );
    assert!(log().contains("unmounting and exiting"), "{}", log());
}

/// The daemon runs with the unit's sandbox: seccomp, no new privileges, the two capabilities,
/// its own network namespace, and the manager's mount namespace (never one of its own).
fn check_sandbox(systemd: &Systemd, pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(status_field(&status, "Seccomp:"), "2", "a seccomp filter");
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");
    let cap = |name| u64::from_str_radix(&status_field(&status, name), 16).unwrap();
    assert_eq!(cap("CapBnd:"), EXPECTED_CAPS, "bounding set");
    assert_eq!(cap("CapEff:"), EXPECTED_CAPS, "effective set");
    assert_eq!(cap("CapAmb:"), 0, "no ambient capabilities");
    assert_eq!(
        ns(pid, "mnt"),
        ns(systemd.pid1(), "mnt"),
        "no mount namespace"
    );
    assert_ne!(
        ns(pid, "net"),
        ns(systemd.pid1(), "net"),
        "PrivateNetwork=yes"
    );
}

/// Serving: the page file and the device answer inside, a privileged trigger bumps, an
/// unprivileged one is refused, and the control socket answers with the backends' state.
fn check_serving(systemd: &Systemd, device: &Path, state: &Path) {
    let mountinfo = systemd.mountinfo();
    assert!(
        mountinfo
            .lines()
            .any(|l| l.contains(device.to_str().unwrap()) && l.contains(" fuse.sysgenid ")),
        "{mountinfo}"
    );
    let cli = |extra: &[&str]| {
        let mut command = systemd.command(workspace_binary("sysgenid"));
        command
            .arg("--device")
            .arg(device)
            .arg("--state-dir")
            .arg(state);
        command.args(extra).output().unwrap()
    };
    assert_eq!(String::from_utf8_lossy(&cli(&["get"]).stdout).trim(), "0");
    // An open file of the device, reached through the manager's mount namespace.
    let file = DevFile::rw_nonblock(&systemd.path_inside(device));
    assert_eq!(file.read(), Err(Errno::AGAIN), "a fresh file is up to date");

    // Root with every capability: the daemon needs CAP_SYS_PTRACE to read its user namespace.
    let trigger = cli(&["trigger"]);
    assert!(trigger.status.success(), "trigger: {trigger:?}");
    let nobody = systemd
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(workspace_binary("sysgenid"))
        .arg("--device")
        .arg(device)
        .arg("--state-dir")
        .arg(state)
        .arg("trigger")
        .output()
        .unwrap();
    assert!(
        !nobody.status.success(),
        "an unprivileged trigger: {nobody:?}"
    );
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("EACCES"),
        "{nobody:?}"
    );
    assert_eq!(file.read(), Ok(1), "the bump reached the open file");

    let status = control_status(&state.join(sysgenid_abi::CONTROL_SOCKET_NAME)).unwrap();
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["serving"], true, "{status}");
    let backends = status["daemon"]["backends"].as_array().unwrap();
    let backend = |name: &str| {
        backends
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no backend {name}: {status}"))
    };
    // AF_NETLINK is allowed: the uevent socket binds.
    assert_eq!(backend("uevent")["active"], true, "{status}");
    // bpf(2) passes the filter and the capabilities: the probe gets past map creation (what
    // follows, loading and attaching, depends on the kernel).
    let bpf = backend("vmgenid-bpf");
    let reason = bpf["reason"].as_str().unwrap_or_default();
    assert!(
        bpf["active"] == true || !(reason.contains("bpf syscall") || reason.contains("map create")),
        "the sandbox stops bpf(2): {reason}"
    );
}

/// The two scheduling calls the unit allows get through: after a trigger's page store, the
/// page-store thread is `SCHED_BATCH` and kept to one CPU.
fn check_page_store_placed(pids: &[u32]) {
    let named = |task: &Path| {
        std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim() == "page-store")
    };
    let thread = pids
        .iter()
        .find_map(|pid| {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
            tasks
                .flatten()
                .map(|task| task.path())
                .find(|task| named(task))
        })
        .unwrap_or_else(|| panic!("no page-store thread in {pids:?}"));
    let stat = std::fs::read_to_string(thread.join("stat")).unwrap();
    // Fields from the third on follow the name's closing parenthesis; the policy is the 41st.
    let policy = stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(41 - 3);
    assert_eq!(policy, Some("3"), "SCHED_BATCH: {stat}");
    let status = std::fs::read_to_string(thread.join("status")).unwrap();
    let cpus = status_field(&status, "Cpus_allowed_list:");
    assert!(cpus.parse::<u32>().is_ok(), "kept to one CPU: {cpus}");
}

fn start(systemd: &Systemd, log: &dyn Fn() -> String) {
    let start = systemd.systemctl(&["start", SERVICE]);
    assert!(
        start.status.success(),
        "systemctl start: {start:?}\n{}",
        log()
    );
}

/// A trigger from inside the manager's namespaces, where the daemon can judge the caller.
fn trigger_inside(systemd: &Systemd, dir: &Path) {
    let out = systemd
        .command(workspace_binary("sysgenid"))
        .arg("--device")
        .arg(dir.join("device"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("trigger")
        .output()
        .unwrap();
    assert!(out.status.success(), "trigger: {out:?}");
}

fn main_pid(systemd: &Systemd) -> u32 {
    systemd.property(SERVICE, "MainPID").parse().unwrap()
}

#[test]
fn restarts_and_crashes_of_the_service_keep_the_connection_in_the_fd_store() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let unit = unit_for_test(dir);
    let systemd = Systemd::boot(&[(SERVICE, &unit)]).unwrap_or_else(|e| panic!("{e}"));
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    start(&systemd, &log);
    let device = systemd.path_inside(&dir.join("device"));
    let socket = dir.join("state").join(sysgenid_abi::CONTROL_SOCKET_NAME);
    let file = DevFile::rw_nonblock(&device);
    let (answer, blocked) = std::sync::mpsc::channel();
    {
        let file = DevFile::rw(&device);
        std::thread::spawn(move || answer.send(file.read()));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));

    // systemctl restart: the serving process exits without unmounting, the next one continues.
    let first = main_pid(&systemd);
    let restart = systemd.systemctl(&["restart", SERVICE]);
    assert!(
        restart.status.success(),
        "systemctl restart: {restart:?}\n{}",
        log()
    );
    assert_ne!(main_pid(&systemd), first);
    assert!(
        log().contains("restarting: the connection stays"),
        "{}",
        log()
    );
    let status = control_status(&socket).unwrap();
    assert_eq!(status["daemon"]["restarts"]["mode"], "fdstore", "{status}");
    assert_eq!(
        status["pending_reads"], 1,
        "the blocked read survived: {status}"
    );
    assert_eq!(
        file.read(),
        Err(Errno::AGAIN),
        "the open file is still up to date"
    );
    trigger_inside(&systemd, dir);
    let got = blocked.recv_timeout(std::time::Duration::from_secs(10));
    assert_eq!(
        got,
        Ok(Ok(1)),
        "the blocked read got the bump; log:\n{}",
        log()
    );
    assert_eq!(file.read(), Ok(1));
    file.ack(1).unwrap();

    // SIGKILL of the keeper ends the whole service; Restart= starts it from the fd store.
    let keeper = main_pid(&systemd);
    let kill = systemd
        .command("kill")
        .args(["-9", &keeper.to_string()])
        .output()
        .unwrap();
    assert!(kill.status.success(), "{kill:?}");
    sysgenid_e2e::eventually("systemd starts the service again", || {
        let pid = main_pid(&systemd);
        pid != 0 && pid != keeper && systemd.property(SERVICE, "ActiveState") == "active"
    });
    let status = control_status(&socket).unwrap();
    assert_eq!(status["daemon"]["restarts"]["count"], 2, "{status}");
    trigger_inside(&systemd, dir);
    assert_eq!(file.read(), Ok(2), "the same open file still works");

    // The one real stop: the device is unmounted, and the open file ends.
    let stop = systemd.systemctl(&["stop", SERVICE]);
    assert!(stop.status.success(), "systemctl stop: {stop:?}");
    assert!(
        !systemd
            .mountinfo()
            .contains(dir.join("device").to_str().unwrap()),
        "{}",
        log()
    );
    assert!(file.read().is_err(), "no connection after a real stop");
}

/// Without a keeper, systemd's fd store alone carries the connection over 100 SIGKILLs of the
/// serving process at random points of a trigger storm.
#[test]
fn a_hundred_crashes_under_systemd_alone_cost_no_client_an_error() {
    const CYCLES: u64 = 100;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let unit = unit_for_test_with(dir, "--keeper off", &["RestartSec=10ms"]);
    let systemd = Systemd::boot(&[(SERVICE, &unit)]).unwrap_or_else(|e| panic!("{e}"));
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    start(&systemd, &log);
    let device = systemd.path_inside(&dir.join("device"));
    let socket = dir.join("state").join(sysgenid_abi::CONTROL_SOCKET_NAME);
    let mut mapper = sysgenid_e2e::Mapper::start(&device);
    // The storm: triggers from inside, each failure on its own line.
    let storm_log = dir.join("storm.log");
    let mut storm = systemd
        .command("sh")
        .arg("-c")
        .arg(format!(
            "while :; do {} --device {} --state-dir {} trigger >/dev/null 2>>{} || echo FAILED >>{}; done",
            workspace_binary("sysgenid").display(),
            dir.join("device").display(),
            dir.join("state").display(),
            storm_log.display(),
            storm_log.display(),
        ))
        .spawn()
        .unwrap();
    let file = DevFile::rw_nonblock(&device);
    let mut seen = mapper.first;
    for cycle in 0..CYCLES {
        std::thread::sleep(std::time::Duration::from_micros((cycle * 7919) % 30_000));
        let before = main_pid(&systemd);
        let kill = systemd
            .command("kill")
            .args(["-9", &before.to_string()])
            .output()
            .unwrap();
        assert!(kill.status.success(), "cycle {cycle}: {kill:?}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let pid = main_pid(&systemd);
            if pid != 0 && pid != before && systemd.property(SERVICE, "ActiveState") == "active" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cycle {cycle}: systemd did not start the service again:\n{}\n{}",
                String::from_utf8_lossy(
                    &systemd.systemctl(&["status", "--no-pager", SERVICE]).stdout
                ),
                log()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Every client follows: the open file reads a newer value, the mapper sees it.
        let now = control_status(&socket).unwrap()["generation"]
            .as_u64()
            .unwrap();
        let now = u32::try_from(now).unwrap();
        while seen < now {
            seen = mapper
                .next_change(std::time::Duration::from_secs(10))
                .unwrap_or_else(|| panic!("cycle {cycle}: the mapper is stuck at {seen} < {now}"));
        }
        match file.read() {
            Ok(g) => assert!(g >= now, "cycle {cycle}: read {g} < {now}"),
            Err(Errno::AGAIN) => {}
            Err(e) => panic!("cycle {cycle}: the open file got {e:?}"),
        }
        mapper.page_out();
        assert!(mapper.alive(), "cycle {cycle}: the mapper died");
    }
    let _ = storm.kill();
    let _ = storm.wait();
    let failures = std::fs::read_to_string(&storm_log).unwrap_or_default();
    assert_eq!(failures, "", "no trigger of the storm failed");
    let status = control_status(&socket).unwrap();
    assert_eq!(status["daemon"]["restarts"]["count"], CYCLES, "{status}");
    assert_eq!(status["daemon"]["restarts"]["mode"], "fdstore", "{status}");
    assert!(mapper.finish().success());
}

/// A lost mount ends the service with an error while its connection, now ended, still waits in
/// the fd store; the start that `Restart=` makes mounts anew instead of serving nothing, and
/// stores its own connection in place of the dead one.
#[test]
fn after_a_lost_mount_the_next_start_mounts_anew_and_stores_its_own_connection() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let unit = unit_for_test_with(dir, "", &["RestartSec=10ms"]);
    let systemd = Systemd::boot(&[(SERVICE, &unit)]).unwrap_or_else(|e| panic!("{e}"));
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    start(&systemd, &log);
    trigger_inside(&systemd, dir);
    let first = main_pid(&systemd);
    let device = dir.join("device");
    let umount = systemd
        .command("umount")
        .arg("-l")
        .arg(&device)
        .output()
        .unwrap();
    assert!(umount.status.success(), "{umount:?}");
    sysgenid_e2e::eventually("systemd starts the service again and it serves", || {
        let pid = main_pid(&systemd);
        pid != 0
            && pid != first
            && systemd.property(SERVICE, "ActiveState") == "active"
            && systemd.mountinfo().contains(device.to_str().unwrap())
    });
    assert!(
        // systemd itself may have dropped the ended connection from the store by then.
        log().contains("; starting anew"),
        "{}",
        log()
    );
    let socket = dir.join("state").join(sysgenid_abi::CONTROL_SOCKET_NAME);
    let status = control_status(&socket).unwrap();
    assert_eq!(
        status["generation"], 1,
        "went on from the state dir: {status}"
    );
    let file = DevFile::rw_nonblock(&systemd.path_inside(&device));
    assert_eq!(
        file.read(),
        Err(Errno::AGAIN),
        "a new open file is up to date"
    );
    assert_eq!(
        systemd.property(SERVICE, "NFileDescriptorStore"),
        "2",
        "the new connection and session, and nothing of the dead one"
    );
    let restart = systemd.systemctl(&["restart", SERVICE]);
    assert!(restart.status.success(), "{restart:?}\n{}", log());
    assert_eq!(
        file.read(),
        Err(Errno::AGAIN),
        "the new connection went on over a restart"
    );
}
