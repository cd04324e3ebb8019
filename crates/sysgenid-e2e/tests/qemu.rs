//! Real VM restores under QEMU: snapshot a guest running sysgenidd, restore it twice, check
//! each clone: the vmgenid-bpf backend bumps exactly once per restore, and nothing else does,
//! also when the daemon restarts (keeper, handover) around the snapshot and the restore; two
//! clones read the same generation and different generation IDs.

use std::time::{Duration, Instant};

use serde_json::Value;
use sysgenid_e2e::qemu::{Image, LINUX_6_1, Vm};

/// The daemon's backends in the guest.
const BACKENDS: &str = "auto";
/// The backend that sees a restore on the 6.12 guest kernel.
const RESTORE_BACKEND: &str = "vmgenid-bpf";
/// Longer than the dedupe window: a second bump for one restore would show within it.
const SETTLE: Duration = Duration::from_secs(3);

fn status(vm: &mut Vm) -> Value {
    let out = vm.guest("sysgenid --json status");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status {out:?}: {e}"))
}

/// The generation and its random ID, as `sysgenid get --id` reads them from the page file;
/// status must show the same ID.
fn generation_and_id(vm: &mut Vm) -> (u64, String) {
    let out = vm.guest("sysgenid --json get --id");
    let pair: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("get --id {out:?}: {e}"));
    let generation = pair["generation"].as_u64().expect("generation");
    let id = pair["generation_id"]
        .as_str()
        .expect("generation_id")
        .to_owned();
    let s = status(vm);
    assert_eq!(
        (s["generation"].as_u64(), s["generation_id"].as_str()),
        (Some(generation), Some(id.as_str())),
        "{s}"
    );
    (generation, id)
}

fn view(vm: &mut Vm, what: &str) -> u64 {
    let out = vm.guest(&format!("e2e-services view {what}"));
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("view {what}: {out:?}"))
}

fn watch_log(vm: &mut Vm) -> Vec<Value> {
    vm.guest("cat /run/e2e/watch.log")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("watch line {l:?}: {e}")))
        .collect()
}

fn assert_services_running(vm: &mut Vm) {
    let check = vm.guest("e2e-services check");
    let mut expected = vec!["daemon", "watch", "page"];
    if status(vm)["daemon"]["device_mmap"] == true {
        expected.push("dev");
    }
    for service in expected {
        assert!(
            check.lines().any(|l| l == format!("{service} running")),
            "guest services: {check}"
        );
    }
    assert!(
        check.lines().all(|l| l.ends_with(" running")),
        "guest services: {check}"
    );
    assert_eq!(status(vm)["serving"], true);
}

/// Asserts the generation is `expected` everywhere: status, page file and device mappings.
fn assert_generation(vm: &mut Vm, expected: u64) {
    let s = status(vm);
    assert_eq!(s["generation"], expected, "status generation");
    assert_eq!(view(vm, "page"), expected, "page file mapping");
    if s["daemon"]["device_mmap"] == true {
        assert_eq!(view(vm, "dev"), expected, "device mapping");
    }
}

/// The daemon's status entry for `backend`.
fn backend(vm: &mut Vm, name: &str) -> Value {
    let s = status(vm);
    s["daemon"]["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no backend {name} in {s}"))
}

/// Waits for the daemon to serve, after a start by hand.
fn wait_serving(vm: &mut Vm) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = vm.guest_status("sysgenid --json status");
        if out.status == 0 {
            let s: Value = serde_json::from_str(&out.output).expect("status JSON");
            if s["serving"] == true {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the daemon does not serve: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until status shows `generation` (a backend bumps shortly after `cont`).
fn wait_generation(vm: &mut Vm, generation: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(vm);
        if s["generation"] == generation {
            return s;
        }
        assert!(Instant::now() < deadline, "no generation {generation}: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the tracked watcher has logged and acked `generation`.
fn wait_acked(vm: &mut Vm, generation: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !watch_log(vm)
        .iter()
        .any(|l| l["generation"] == generation && l["acked"] == true)
    {
        assert!(
            Instant::now() < deadline,
            "the watcher did not ack {generation}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_backend_active(vm: &mut Vm) {
    let s = status(vm);
    let backends = s["daemon"]["backends"].as_array().expect("backends");
    let probe = backends
        .iter()
        .find(|b| b["name"] == RESTORE_BACKEND)
        .unwrap_or_else(|| panic!("no {RESTORE_BACKEND} in {s}"));
    assert_eq!(probe["active"], true, "{probe}");
    let detail = probe["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("kprobe on add_vmfork_randomness, pinned at /sys/fs/bpf/sysgenid"),
        "{probe}"
    );
    let text = vm.guest("sysgenid status");
    assert!(
        text.contains("backend:    vmgenid-bpf active: kprobe on add_vmfork_randomness"),
        "{text}"
    );
}

fn boot_with_services() -> (Vm, u64) {
    let (mut vm, generation) = boot_image_with_services(&Image::build(), BACKENDS);
    assert_backend_active(&mut vm);
    (vm, generation)
}

fn boot_image_with_services(image: &Image, backends: &str) -> (Vm, u64) {
    let started = Instant::now();
    let mut vm = Vm::boot_image(image);
    eprintln!(
        "qemu: image built and guest booted in {:?}",
        started.elapsed()
    );
    assert_eq!(
        vm.guest(&format!("e2e-services start {backends}")),
        "started"
    );
    assert_services_running(&mut vm);
    let generation = status(&mut vm)["generation"].as_u64().expect("generation");
    (vm, generation)
}

#[test]
fn snapshot_and_two_restores_give_two_clones_with_different_vmgenids() {
    let (mut vm, gen0) = boot_with_services();
    let mut guids = vec![vm.vmgenid()];
    eprintln!("qemu: original vmgenid {}", guids[0]);
    let (generation, original_id) = generation_and_id(&mut vm);
    assert_eq!(generation, gen0);
    // Each generation's random ID: the same counter in both clones, a different ID in each.
    let mut ids = vec![original_id];
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let last = vm.guest("cat /proc/uptime");
    eprintln!("qemu: guest uptime before the snapshot {last}");
    let started = Instant::now();
    let snapshot = vm.snapshot(&state);
    let size = std::fs::metadata(&state).expect("state file").len();
    eprintln!(
        "qemu: snapshot of {} bytes in {:?}",
        size,
        started.elapsed()
    );

    for clone in 1..=2 {
        let started = Instant::now();
        let mut vm = Vm::restore(&snapshot);
        let restored = started.elapsed();
        let (first_line, line) = vm.host_time_to_line("@@hb", Duration::from_secs(30));
        eprintln!("qemu: clone {clone}: first guest line {line:?}");
        let echo = Instant::now();
        vm.guest("true");
        eprintln!(
            "qemu: clone {clone}: restore to cont {restored:?}; cont to first guest line \
             {first_line:?}; a guest command round trip {:?}",
            echo.elapsed()
        );
        let guid = vm.vmgenid();
        eprintln!("qemu: clone {clone} vmgenid {guid}");
        assert!(
            !guids.contains(&guid),
            "clone {clone} reuses a vmgenid: {guid} in {guids:?}"
        );
        guids.push(guid);

        // The backend bumps once: status, both mappings, the watcher, wait-watchers.
        let after_restore = gen0 + 1;
        let (to_bump, line) = vm.host_time_to_line("@@gen", Duration::from_secs(30));
        eprintln!("qemu: clone {clone}: cont to the new-generation line {to_bump:?}: {line:?}");
        assert!(
            line.ends_with(&format!("@@gen generation {after_restore}")),
            "{line:?}"
        );
        let s = wait_generation(&mut vm, after_restore);
        assert_eq!(s["last_bump"]["source"], "backend", "{s}");
        assert_eq!(s["last_bump"]["backend"], RESTORE_BACKEND, "{s}");
        let (generation, id) = generation_and_id(&mut vm);
        eprintln!("qemu: clone {clone}: generation {generation}, ID {id}");
        assert_eq!(
            generation, after_restore,
            "every clone reads the same counter"
        );
        assert!(
            !ids.contains(&id),
            "clone {clone} reuses an ID: {id} in {ids:?}"
        );
        ids.push(id);
        wait_acked(&mut vm, after_restore);
        let wait = vm.guest_status("sysgenid wait-watchers --timeout 10s");
        assert_eq!(wait.status, 0, "wait-watchers: {}", wait.output);
        std::thread::sleep(SETTLE);
        assert_services_running(&mut vm);
        assert_generation(&mut vm, after_restore);
        let lines = watch_log(&mut vm);
        assert_eq!(lines.len(), 1, "one change per restore: {lines:?}");
        assert_eq!(status(&mut vm)["outdated"], 0);

        // Step 4 of the workflow: a software trigger.
        vm.guest("sysgenid trigger");
        let bumped = after_restore + 1;
        wait_acked(&mut vm, bumped);
        let wait = vm.guest_status("sysgenid wait-watchers --timeout 10s");
        assert_eq!(wait.status, 0, "wait-watchers: {}", wait.output);
        assert_generation(&mut vm, bumped);
        let s = status(&mut vm);
        assert_eq!(s["outdated"], 0, "{s}");
        assert_eq!(s["last_bump"]["source"], "trigger", "{s}");
        assert_eq!(s["last_bump"]["generation"], bumped, "{s}");
        assert_services_running(&mut vm);
    }
}

#[test]
fn a_running_vm_and_a_plain_pause_do_not_bump() {
    let (mut vm, gen0) = boot_with_services();
    let guid = vm.vmgenid();
    std::thread::sleep(Duration::from_secs(2));
    assert_generation(&mut vm, gen0);
    vm.stop();
    std::thread::sleep(Duration::from_secs(2));
    vm.cont();
    let (first_line, line) = vm.host_time_to_line("@@hb", Duration::from_secs(30));
    eprintln!("qemu: after a plain pause, cont to first guest line {first_line:?}: {line:?}");
    std::thread::sleep(SETTLE);
    assert_eq!(vm.vmgenid(), guid, "a pause keeps the vmgenid");
    assert_services_running(&mut vm);
    assert_generation(&mut vm, gen0);
    assert!(watch_log(&mut vm).is_empty(), "the watcher saw a change");
    assert_eq!(status(&mut vm)["last_bump"], Value::Null);
}

/// Two backends see each restore: the BPF probe (attached by fentry here, the path for kernels
/// without kprobes) and fw-cfg at its next poll. One bump per restore, by the first to report;
/// the other's report is the same restore. Then a restore while the daemon is down: both notice
/// at the next start (pinned probe count, recorded GUID); the probe starts first, so it bumps,
/// once.
#[test]
fn two_backends_one_bump_per_restore_even_while_the_daemon_was_down() {
    let (mut vm, gen0) =
        boot_image_with_services(&Image::build(), "vmgenid-bpf,fw-cfg --bpf-attach fentry");
    for name in [RESTORE_BACKEND, "fw-cfg"] {
        assert_eq!(backend(&mut vm, name)["active"], true, "{name}");
    }
    let probe = backend(&mut vm, RESTORE_BACKEND);
    assert!(
        probe["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("fentry on add_vmfork_randomness"),
        "{probe}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let snapshot = vm.snapshot(&dir.path().join("first"));

    // Both see the restore; whichever reports first bumps (under TCG a 250 ms fw-cfg poll can
    // land before the ACPI notification is handled), and the other is dropped as the same
    // restore. The winner is named in status and in the log, and the loser names it.
    let mut vm = Vm::restore(&snapshot);
    let s = wait_generation(&mut vm, gen0 + 1);
    let winner = s["last_bump"]["backend"]
        .as_str()
        .expect("a backend bumped")
        .to_owned();
    let loser = if winner == RESTORE_BACKEND {
        "fw-cfg"
    } else {
        RESTORE_BACKEND
    };
    eprintln!("qemu: one restore, two backends: {winner} bumped, {loser} was the duplicate");
    wait_acked(&mut vm, gen0 + 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = vm.guest("cat /run/e2e/daemon.log");
        if log.contains(&format!(
            "same restore already reported backend=\"{loser}\""
        )) {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "{loser} never reported the restore:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let bumps: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("hardware restore: bumping the generation"))
        .collect();
    assert_eq!(bumps.len(), 1, "{log}");
    assert!(bumps[0].contains(&format!("backend=\"{winner}\"")), "{log}");
    assert!(log.contains(&format!("winner={winner}")), "{log}");
    std::thread::sleep(SETTLE);
    assert_generation(&mut vm, gen0 + 1);
    assert_eq!(watch_log(&mut vm).len(), 1, "one change");

    // Stop the daemon (the probe stays pinned; the GUID is recorded), snapshot, restore.
    vm.guest("kill $(cat /run/e2e/daemon.pid); while kill -0 $(cat /run/e2e/daemon.pid) 2>/dev/null; do sleep 0.05; done");
    let snapshot = vm.snapshot(&dir.path().join("second"));
    let mut vm = Vm::restore(&snapshot);
    vm.guest("sysgenidd --backends vmgenid-bpf,fw-cfg >/run/e2e/daemon2.log 2>&1 & echo $! >/run/e2e/daemon.pid");
    wait_serving(&mut vm);
    let s = wait_generation(&mut vm, gen0 + 2);
    assert_eq!(s["last_bump"]["backend"], RESTORE_BACKEND, "{s}");
    let log = vm.guest("cat /run/e2e/daemon2.log");
    assert!(
        log.contains("add_vmfork_randomness ran while the daemon was down"),
        "{log}"
    );
    assert!(
        log.contains("the value changed while the daemon was down"),
        "{log}"
    );
    std::thread::sleep(SETTLE);
    assert_eq!(
        status(&mut vm)["generation"],
        gen0 + 2,
        "one bump for one restore"
    );
}

/// Debian 12's own 6.1 kernel: no vmgenid driver (so no probe target), no device mmap, no
/// thread pidfds. The daemon serves with its fallbacks and fw-cfg polling bumps on a restore.
#[test]
fn linux_6_1_serves_with_fallbacks_and_fw_cfg_bumps_on_restore() {
    let image = Image::build_for(&LINUX_6_1);
    eprintln!("qemu: guest kernel {}", image.kernel_version);
    let (mut vm, gen0) = boot_image_with_services(&image, "auto");
    assert!(vm.guest("uname -r").starts_with("6.1."));
    let s = status(&mut vm);
    assert_eq!(s["daemon"]["device_mmap"], false, "{s}");
    let probe = backend(&mut vm, RESTORE_BACKEND);
    assert_eq!(probe["active"], false, "{probe}");
    assert!(
        probe["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("add_vmfork_randomness not found"),
        "{probe}"
    );
    assert_eq!(backend(&mut vm, "fw-cfg")["active"], true);
    // Fallbacks: mmap of the device is refused, the page file serves; a trigger from a thread
    // other than the main one is judged without a thread pidfd.
    assert_eq!(
        vm.guest("sysgenid-probe open /dev/sysgenid ro mmap"),
        "open ok\nmmap err ENODEV"
    );
    assert_eq!(
        vm.guest("sysgenid-probe open /dev/sysgenid ro thread-trigger 0"),
        "open ok\nthread-trigger ok 0"
    );
    let gen1 = gen0 + 1;
    wait_acked(&mut vm, gen1);
    assert_generation(&mut vm, gen1);

    let dir = tempfile::tempdir().expect("temp dir");
    let snapshot = vm.snapshot(&dir.path().join("state"));
    let mut vm = Vm::restore(&snapshot);
    let (to_bump, line) = vm.host_time_to_line("@@gen", Duration::from_secs(30));
    eprintln!("qemu: 6.1 clone: cont to the new-generation line {to_bump:?}: {line:?}");
    let s = wait_generation(&mut vm, gen1 + 1);
    assert_eq!(s["last_bump"]["backend"], "fw-cfg", "{s}");
    wait_acked(&mut vm, gen1 + 1);
    std::thread::sleep(SETTLE);
    assert_services_running(&mut vm);
    assert_generation(&mut vm, gen1 + 1);
}

/// JSON lines of a guest command's output.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON line {l:?}: {e}")))
        .collect()
}

/// The spec's snapshot-safe workflow with the overseer: quiesce, snapshot, restore two clones;
/// in each the hardware bump happens once, `post-restore --trigger` adds none, waits for the
/// sample service, un-quiesces and tells the host over the readiness port, with the service's
/// new UUID. Then a watcher that never acks makes the overseer time out and name it.
#[test]
fn overseer_readjusts_each_clone_and_names_a_laggard() {
    let (mut vm, gen0) = boot_with_services();
    assert_eq!(vm.guest("e2e-services overseer-setup"), "ready");
    let original = vm.guest("cat /run/e2e/sample.state");
    assert!(
        original.starts_with(&format!("generation={gen0} uuid=")),
        "{original}"
    );

    let pre = vm.guest_status("sysgenid --json overseer pre-snapshot");
    assert_eq!(pre.status, 0, "{}", pre.output);
    let quiesced = json_lines(&pre.output);
    let last = quiesced.last().expect("a JSON line");
    assert_eq!(last["event"], "quiesced", "{last}");
    assert_eq!(last["generation"], gen0, "{last}");
    assert_eq!(
        vm.guest("cat /run/e2e/hooks.log"),
        format!("quiesce {gen0}")
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let snapshot = vm.snapshot(&dir.path().join("state"));
    let mut uuids = vec![original.clone()];
    for clone in 1..=2 {
        let mut vm = Vm::restore(&snapshot);
        let post = vm.guest_status(
            "sysgenid --json overseer post-restore --trigger --timeout 20s \
             --notify-host /dev/virtio-ports/org.sysgenid.ready",
        );
        assert_eq!(post.status, 0, "clone {clone}: {}", post.output);
        let lines = json_lines(&post.output);
        let bumped = lines
            .iter()
            .find(|l| l["event"] == "bumped")
            .unwrap_or_else(|| panic!("no bumped line: {}", post.output));
        assert_eq!(bumped["expected"], gen0, "{bumped}");
        assert_eq!(
            bumped["triggered"], false,
            "the backend had bumped already: {bumped}"
        );
        let done = lines.last().expect("final line");
        assert_eq!(done["event"], "readjusted", "{done}");
        assert_eq!(done["generation"], gen0 + 1, "{done}");

        // The host hears the service's new state, then the overseer's line.
        let state = vm.wait_ready_line("uuid=", Duration::from_secs(10));
        let ready = vm.wait_ready_line("\"readjusted\"", Duration::from_secs(10));
        eprintln!("qemu: clone {clone} told the host: {state} / {ready}");
        assert!(
            state.starts_with(&format!("generation={} uuid=", gen0 + 1)),
            "{state}"
        );
        let uuid = state.split("uuid=").nth(1).expect("uuid").to_owned();
        assert!(
            !uuids.iter().any(|u| u.contains(&uuid)),
            "clone {clone} reuses a UUID: {uuid} in {uuids:?}"
        );
        uuids.push(uuid);
        let ready: Value = serde_json::from_str(&ready).expect("readiness JSON");
        assert_eq!(ready["generation"], gen0 + 1);
        assert_eq!(
            vm.guest("cat /run/e2e/hooks.log"),
            format!("quiesce {gen0}\nunquiesce {}", gen0 + 1)
        );
        std::thread::sleep(SETTLE);
        assert_eq!(status(&mut vm)["generation"], gen0 + 1, "exactly one bump");
        assert_services_running(&mut vm);

        if clone == 2 {
            let laggard = vm.guest("e2e-services laggard");
            vm.guest("sysgenid trigger");
            let post = vm.guest_status(&format!(
                "sysgenid --json overseer post-restore --expect {} --timeout 3s",
                gen0 + 2
            ));
            assert_eq!(post.status, 3, "{}", post.output);
            let done = json_lines(&post.output).pop().expect("final line");
            assert_eq!(done["event"], "timeout", "{done}");
            let laggards = done["laggards"].as_array().expect("laggards");
            assert_eq!(laggards.len(), 1, "{done}");
            assert_eq!(laggards[0]["pid"].to_string(), laggard, "{done}");
            assert!(
                laggards[0]["command"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("sysgenid-probe"),
                "{done}"
            );
        }
    }
}

/// The guest daemon's log: every daemon the guest starts appends to it.
fn daemon_log(vm: &mut Vm) -> String {
    vm.guest("cat /run/e2e/daemon.log")
}

/// Runs `check`; if it panics, prints the guest daemon's log first.
fn with_daemon_log<T>(vm: &mut Vm, check: impl FnOnce(&mut Vm) -> T) -> T {
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    match catch_unwind(AssertUnwindSafe(|| check(vm))) {
        Ok(value) => value,
        Err(panic) => {
            match catch_unwind(AssertUnwindSafe(|| daemon_log(vm))) {
                Ok(log) => eprintln!("--- guest /run/e2e/daemon.log ---\n{log}\n---"),
                Err(_) => eprintln!("(the guest daemon's log could not be read)"),
            }
            resume_unwind(panic)
        }
    }
}

/// The number after `key=` in an `e2e-services` answer such as `killed=81 serving=95`.
fn field(out: &str, key: &str) -> u64 {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key}= in {out:?}"))
}

/// Asserts that no line of the tracked watcher's log says it reopened the device.
fn assert_never_reopened(lines: &[Value]) {
    assert!(
        lines.iter().all(|l| l["reopened"] == false),
        "the watcher reopened the device: {lines:?}"
    );
}

/// Kills the guest's serving process; the keeper's next one serves on, unseen. Returns its pid.
fn crash_serving_unseen(vm: &mut Vm, generation: u64) -> u64 {
    let started = Instant::now();
    let out = vm.guest("e2e-services crash-serving");
    eprintln!(
        "qemu: serving process killed, the keeper's next one serves after {:?}: {out}",
        started.elapsed()
    );
    let s = status(vm);
    let restarts = &s["daemon"]["restarts"];
    assert_eq!(restarts["count"], 1, "{s}");
    assert_eq!(restarts["mode"], "keeper", "{s}");
    assert_eq!(restarts["previous_pid"], field(&out, "killed"), "{s}");
    assert_eq!(restarts["cause"], "signal 9", "{s}");
    assert_eq!(s["daemon"]["serving_pid"], field(&out, "serving"), "{s}");
    assert_services_running(vm);
    assert_generation(vm, generation);
    assert!(watch_log(vm).is_empty(), "the watcher saw a change");
    field(&out, "serving")
}

/// Asserts the guest daemons' log has exactly one hardware bump and a handover, and prints
/// which daemon bumped and the lines that tell the story.
fn assert_one_bump_across_the_handover(vm: &mut Vm) {
    let log = daemon_log(vm);
    let bumps: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("hardware restore: bumping the generation"))
        .collect();
    assert_eq!(bumps.len(), 1, "one bump in the log:\n{log}");
    let took_over = log
        .find("took the device over")
        .unwrap_or_else(|| panic!("no handover in the log:\n{log}"));
    let bumped_by = match log.find(bumps[0]) {
        Some(at) if at < took_over => "the first daemon",
        _ => "the second daemon",
    };
    eprintln!("qemu: clone: {bumped_by} bumped; the daemons' log says:");
    let telling = [
        "bumping",
        "same restore",
        "while the daemon was down",
        "handed the device over",
        "took the device over",
        "probe ready",
    ];
    for line in log
        .lines()
        .filter(|l| telling.iter().any(|t| l.contains(t)))
    {
        eprintln!("  {line}");
    }
}

/// In a clone just resumed (at `cont`): a second daemon takes the device over while the
/// restore's bump is being noticed; one bump, every client follows, none reopens or exits.
fn hand_over_during_the_restore(vm: &mut Vm, cont: Instant, after_restore: u64, serving: u64) {
    let handover = vm.guest("e2e-services handover");
    let handed = cont.elapsed();
    let (to_bump, line) = vm.host_time_to_line("@@gen", Duration::from_secs(30));
    eprintln!(
        "qemu: clone: cont to the handover done {handed:?}, to the new-generation line \
         {to_bump:?} ({line:?}): {handover}"
    );
    assert_eq!(field(&handover, "exit"), 0, "the first daemon exits 0");
    assert!(
        line.ends_with(&format!("@@gen generation {after_restore}")),
        "{line:?}"
    );
    let s = wait_generation(vm, after_restore);
    assert_eq!(s["last_bump"]["source"], "backend", "{s}");
    assert_eq!(s["last_bump"]["backend"], RESTORE_BACKEND, "{s}");
    wait_acked(vm, after_restore);
    let wait = vm.guest_status("sysgenid wait-watchers --timeout 10s");
    assert_eq!(wait.status, 0, "wait-watchers: {}", wait.output);
    std::thread::sleep(SETTLE);
    assert_services_running(vm);
    assert_generation(vm, after_restore);
    let lines = watch_log(vm);
    assert_eq!(lines.len(), 1, "one change per restore: {lines:?}");
    assert_never_reopened(&lines);
    assert_one_bump_across_the_handover(vm);
    let s = status(vm);
    let restarts = &s["daemon"]["restarts"];
    assert_eq!(restarts["count"], 2, "{s}");
    assert_eq!(restarts["mode"], "handover", "{s}");
    assert_eq!(restarts["previous_pid"], serving, "{s}");
    let new_serving = field(&handover, "serving");
    assert_eq!(s["daemon"]["serving_pid"], new_serving, "{s}");
    assert_eq!(s["outdated"], 0, "{s}");
}

/// The daemon restarts around a restore and no client notices: the keeper restarts a killed
/// serving process before the snapshot, and in the clone a second daemon takes the device over
/// as the first guest command after `cont`, racing the restore's bump (under TCG the bump
/// usually lands first, and the handover follows while the watchers follow it). Exactly one
/// bump for the restore; no watcher exits or reopens; a trigger works after both restarts.
#[test]
fn a_keeper_restart_before_the_snapshot_and_a_handover_during_the_restore_bump_once() {
    let (mut vm, gen0) = boot_with_services();
    let serving = with_daemon_log(&mut vm, |vm| crash_serving_unseen(vm, gen0));
    let dir = tempfile::tempdir().expect("temp dir");
    let snapshot = vm.snapshot(&dir.path().join("state"));
    let mut vm = Vm::restore(&snapshot);
    let cont = Instant::now();
    let after_restore = gen0 + 1;
    with_daemon_log(&mut vm, |vm| {
        hand_over_during_the_restore(vm, cont, after_restore, serving);
        vm.guest("sysgenid trigger");
        let bumped = after_restore + 1;
        wait_acked(vm, bumped);
        let wait = vm.guest_status("sysgenid wait-watchers --timeout 10s");
        assert_eq!(wait.status, 0, "wait-watchers: {}", wait.output);
        assert_generation(vm, bumped);
        let s = status(vm);
        assert_eq!(s["last_bump"]["source"], "trigger", "{s}");
        assert_eq!(s["last_bump"]["generation"], bumped, "{s}");
        assert_services_running(vm);
        let lines = watch_log(vm);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_never_reopened(&lines);
    });
}
