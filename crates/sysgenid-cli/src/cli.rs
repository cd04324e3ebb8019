//! The command line: commands, options, and the exit codes they may end with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Exit codes, the same for every command.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other error.
    pub const ERROR: u8 = 1;
    /// The command line was wrong.
    pub const USAGE: u8 = 2;
    /// `wait-watchers` or `overseer post-restore` timed out with tracked watchers still
    /// outdated.
    pub const TIMEOUT: u8 = 3;
    /// Not permitted: a trigger without the capability, or a device not open to this user.
    pub const NOT_PERMITTED: u8 = 4;
    /// The device is missing or no daemon serves it.
    pub const NOT_RUNNING: u8 = 5;
    /// `watch --exec`: the command failed, so the change was not acknowledged; `overseer`: a
    /// hook failed or timed out.
    pub const EXEC_FAILED: u8 = 6;
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other error
  2  the command line was wrong
  3  wait-watchers, overseer post-restore: timed out while tracked watchers were still
     outdated
  4  not permitted (trigger without CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN, or no access)
  5  the device is missing or no sysgenidd serves it
  6  watch --exec: the command failed, so the change was not acknowledged;
     overseer: a hook failed or timed out
A command whose stdout is closed by its reader (`sysgenid watch | head -n 1`) stops quietly
with 0; overseer steps run to the end all the same and keep their code.

Environment:
  SYSGENID_DEVICE     the device (default /dev/sysgenid)
  SYSGENID_STATE_DIR  the daemon's state directory (default /run/sysgenid)";

/// Read, watch and drive the System Generation ID.
///
/// The generation is a counter that goes up whenever this machine is restored from a snapshot
/// or cloned. `sysgenid` talks to the device served by sysgenidd (or any driver with the same
/// ABI), to its page file, and to its control socket.
#[derive(Debug, Parser)]
#[command(name = "sysgenid", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// The device file (overrides SYSGENID_DEVICE).
    #[arg(long, global = true, value_name = "PATH")]
    pub device: Option<PathBuf>,

    /// The daemon's state directory (overrides SYSGENID_STATE_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the current generation (from the page file; from the device if there is none).
    ///
    /// With --id, also its random ID (32 hex digits): two clones of one snapshot print the same
    /// generation and different IDs. With --json: {"generation": N, "generation_id": "..."}.
    Get {
        /// Also print the generation's random ID, after the generation on the same line.
        #[arg(long)]
        id: bool,
    },
    /// Print each new generation; with --track, acknowledge it too.
    ///
    /// Without --track the device is opened read-only, which needs no privilege, and nothing is
    /// acknowledged; --track opens it for writing (root or the `sysgenid` group). With --json
    /// each change is one line: {"generation": N, "reopened": BOOL, "acked": BOOL}.
    Watch(WatchArgs),
    /// Acknowledge the current generation on a file descriptor the shell opened.
    ///
    /// For example: `exec 3<>/dev/sysgenid`, then later `sysgenid ack --fd 3`.
    Ack {
        /// The open file descriptor of the device.
        #[arg(long, value_name = "N")]
        fd: i32,
    },
    /// Bump the generation (needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN).
    Trigger {
        /// The new generation is at least this (and always at least the current one plus 1).
        #[arg(long, value_name = "N")]
        min: Option<u32>,
    },
    /// Wait until every tracked watcher has acknowledged the current generation.
    WaitWatchers {
        /// Give up after this long (`500ms`, `10s`, `2m`); waits forever without it.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Show the generation, the watchers, and which processes are outdated.
    Status,
    /// Run the snapshot-safe workflow: quiesce before a snapshot, readjust after a restore.
    ///
    /// `pre-snapshot` runs the quiesce hooks and records the generation; `post-restore` bumps
    /// it unless a hardware backend already did, waits for every tracked watcher, runs the
    /// un-quiesce hooks and tells the host. On a terminal they print text and a live progress
    /// line; otherwise (or with --json) one JSON object per line.
    Overseer {
        /// The step.
        #[command(subcommand)]
        step: OverseerStep,
    },
    /// Print a generated file: the man page or shell completions.
    #[command(hide = true)]
    Generate {
        /// `man`, or a shell name: `bash`, `zsh`, `fish`.
        what: String,
        /// With `man`: write every page (sysgenid.1 and one per subcommand, such as
        /// sysgenid-overseer-post-restore.1) into this directory instead of printing sysgenid.1.
        dir: Option<PathBuf>,
        /// Where the pages say the documentation is installed [default: next to this program,
        /// PREFIX/share/doc/sysgenid, if it is there].
        #[arg(long, value_name = "DIR")]
        doc_dir: Option<PathBuf>,
    },
}

/// The steps of `overseer`.
#[derive(Debug, Subcommand)]
pub enum OverseerStep {
    /// Before the snapshot: run the quiesce hooks, then record the generation.
    ///
    /// Runs every executable regular file of --hooks-dir in lexical order (names starting with
    /// `.` are skipped), then each --exec command with `sh -c`; each in its own process group,
    /// killed when --hook-timeout passes. Hooks get SYSGENID_PHASE=quiesce and
    /// SYSGENID_GENERATION; their output goes to stderr. If all succeed, the generation is
    /// written to the record file (on tmpfs, so it is inside the snapshot) and "quiesced" is
    /// reported: exit 0, a JSON line, and STATUS= to systemd when NOTIFY_SOCKET is set. A
    /// failing hook stops the step with exit 6 and nothing is recorded: do not take the
    /// snapshot, and run `post-restore` (without --trigger) to un-quiesce.
    PreSnapshot(PreSnapshotArgs),
    /// After the restore: bump (with --trigger), wait for the watchers, un-quiesce, tell the
    /// host.
    ///
    /// With --trigger it waits up to --grace for a hardware backend to move the generation past
    /// the recorded one (or --expect), and otherwise bumps it with a conditional trigger that
    /// is a no-op if a backend got there first (a backend that reports later than the daemon's
    /// dedupe window after that bump bumps again: see the limits in the documentation). It then
    /// removes the
    /// record, waits until every tracked watcher has acknowledged (--timeout), runs the
    /// un-quiesce hooks (also after a timeout, unless --no-unquiesce-on-timeout), and reports the
    /// outcome: "readjusted" (exit 0), "timeout" (exit 3, naming the laggards) or "hook-failed"
    /// (exit 6). If a step fails, the un-quiesce hooks still run with SYSGENID_OUTCOME=error
    /// (unless --no-unquiesce-on-error) and the error keeps its exit code. The final JSON line
    /// also goes to each --notify-host path. Without --trigger nothing is bumped: use it to
    /// un-quiesce a machine that was not restored.
    PostRestore(PostRestoreArgs),
    /// As CRIU's --action-script: on `post-restore`, run `post-restore` in the restored tree.
    ///
    /// CRIU runs its action script for every action with CRTOOLS_SCRIPT_ACTION set; every action
    /// but `post-restore` returns 0 at once. At `post-restore` the restored tasks are still
    /// stopped, and CRIU resumes them only after the script returns, so waiting for watchers
    /// there would deadlock: this checks CRTOOLS_INIT_PID, starts a detached copy of itself and
    /// returns 0. The copy closes the file descriptors it inherited (all but 0-2), starts its
    /// own session, joins the pid namespace of CRTOOLS_INIT_PID and starts a child there, which
    /// joins its cgroup (v2) and other namespaces (user, mount, network, IPC, UTS, cgroup: those
    /// that differ), where the device and state directory paths are the container's, becomes
    /// root of its user namespace, and runs `post-restore` with these options. A container
    /// without a user namespace of its own gets no un-quiesce hook or --exec command run: they
    /// would run as host root. Its outcome goes to --notify-host and --log.
    ///
    /// Use: criu restore --action-script 'sysgenid overseer criu-action --trigger --expect G
    /// --notify-host PATH'
    CriuAction(CriuActionArgs),
}

/// Options of `overseer criu-action`.
#[derive(Debug, Args)]
pub struct CriuActionArgs {
    /// Where the detached post-restore writes its output (in the caller's file system)
    /// [default: discarded].
    #[arg(long, value_name = "PATH")]
    pub log: Option<PathBuf>,

    /// The options of post-restore.
    #[command(flatten)]
    pub post_restore: PostRestoreArgs,
}

/// Options of `overseer pre-snapshot`.
#[derive(Debug, Args)]
pub struct PreSnapshotArgs {
    /// The quiesce hooks directory [default: /etc/sysgenid/quiesce.d; a missing default
    /// directory means no hooks].
    #[arg(long, value_name = "DIR")]
    pub hooks_dir: Option<PathBuf>,

    /// A shell command to run after the directory's hooks (repeatable).
    #[arg(long = "exec", value_name = "CMD")]
    pub exec: Vec<String>,

    /// Kill a hook's process group and count it as failed after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub hook_timeout: Duration,

    /// Where to record the generation [default: <state-dir>/overseer.json].
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,
}

/// Options of `overseer post-restore`.
#[derive(Debug, Args)]
pub struct PostRestoreArgs {
    /// Bump the generation unless a hardware backend already moved it past the expected one.
    #[arg(long)]
    pub trigger: bool,

    /// The new generation is at least this (and always at least the current one plus 1).
    #[arg(long, value_name = "N", requires = "trigger")]
    pub min: Option<u32>,

    /// The generation before the snapshot [default: from the record of pre-snapshot].
    #[arg(long, value_name = "G")]
    pub expect: Option<u32>,

    /// The record written by pre-snapshot [default: <state-dir>/overseer.json].
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,

    /// With --trigger: how long to wait first for a hardware backend's bump (time for a late
    /// hardware event).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub grace: Duration,

    /// How long to wait for every tracked watcher to acknowledge.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// The un-quiesce hooks directory [default: /etc/sysgenid/unquiesce.d; a missing default
    /// directory means no hooks].
    #[arg(long, value_name = "DIR")]
    pub unquiesce_dir: Option<PathBuf>,

    /// A shell command to run after the directory's un-quiesce hooks (repeatable).
    #[arg(long = "exec", value_name = "CMD")]
    pub exec: Vec<String>,

    /// Kill a hook's process group and count it as failed after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub hook_timeout: Duration,

    /// After a timeout, leave the machine quiesced: do not run the un-quiesce hooks.
    #[arg(long)]
    pub no_unquiesce_on_timeout: bool,

    /// After an error (no generation to expect, a bad record, the bump refused or failed, no
    /// daemon), leave the machine quiesced: do not run the un-quiesce hooks.
    #[arg(long)]
    pub no_unquiesce_on_error: bool,

    /// Append the final JSON line to this file or device, such as a virtio-serial port
    /// (/dev/virtio-ports/NAME) or a serial port (/dev/ttyS1): the host's readiness channel.
    /// It must exist. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub notify_host: Vec<PathBuf>,
}

/// Options of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Be a tracked watcher: `wait-watchers` waits for this one to acknowledge. Needs the device
    /// open for writing: root or the `sysgenid` group.
    #[arg(long)]
    pub track: bool,

    /// Run this shell command on each change, before acknowledging (with --track);
    /// SYSGENID_GENERATION holds the new generation. If it fails, the change is not
    /// acknowledged and the command exits 6.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,

    /// When the command fails, say so and retry it instead of exiting.
    #[arg(long, requires = "exec")]
    pub keep_going: bool,

    /// Stop after this many changes (for scripts and tests).
    #[arg(long, value_name = "N", hide = true)]
    pub count: Option<u64>,
}

/// The command line, with where the documentation is (`doc_dir`, such as
/// /usr/local/share/doc/sysgenid; `None` when it is not installed) in the help of `overseer`.
pub fn command(doc_dir: Option<&Path>) -> clap::Command {
    let overseer_doc = match doc_dir {
        Some(dir) => format!(
            "Documentation: {} (hooks, the record, the grace period, exit codes, limits, the \
             readiness channel per hypervisor).",
            dir.join("overseer.md").display()
        ),
        None => "Documentation: docs/overseer.md in the sysgenid source; scripts/install.sh \
                 installs it in PREFIX/share/doc/sysgenid."
            .to_owned(),
    };
    Cli::command().mut_subcommand("overseer", |overseer| {
        overseer
            .after_help(overseer_doc.clone())
            .mut_subcommands(|step| step.after_help(overseer_doc.clone()))
    })
}

/// The documentation installed with this program, PREFIX/share/doc/sysgenid beside
/// PREFIX/bin/sysgenid, if it is there.
pub fn installed_doc_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("share/doc/sysgenid");
    dir.join("overseer.md").is_file().then_some(dir)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        command(None).debug_assert();
    }

    #[test]
    fn the_overseer_help_names_the_installed_documentation() {
        let mut cmd = command(Some(Path::new("/usr/share/doc/sysgenid")));
        let overseer = cmd.find_subcommand_mut("overseer").unwrap();
        let help = overseer
            .find_subcommand_mut("post-restore")
            .unwrap()
            .render_help()
            .to_string();
        assert!(
            help.contains("Documentation: /usr/share/doc/sysgenid/overseer.md"),
            "{help}"
        );
        let mut cmd = command(None);
        let help = cmd.find_subcommand_mut("overseer").unwrap().render_help();
        assert!(
            help.to_string()
                .contains("docs/overseer.md in the sysgenid source")
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").unwrap_err().contains("examples"));
    }

    #[test]
    fn overseer_options_parse_with_their_defaults() {
        let cli = Cli::try_parse_from([
            "sysgenid",
            "overseer",
            "post-restore",
            "--trigger",
            "--min",
            "9",
            "--exec",
            "a",
            "--exec",
            "b",
            "--notify-host",
            "/dev/ttyS1",
        ])
        .unwrap();
        let Command::Overseer {
            step: OverseerStep::PostRestore(args),
        } = cli.command
        else {
            panic!("{cli:?}")
        };
        assert_eq!((args.trigger, args.min, args.expect), (true, Some(9), None));
        assert_eq!(args.grace, Duration::from_secs(2));
        assert_eq!(args.timeout, Duration::from_secs(30));
        assert_eq!(args.hook_timeout, Duration::from_secs(30));
        assert_eq!(args.exec, ["a", "b"]);
        assert!(!args.no_unquiesce_on_timeout && !args.no_unquiesce_on_error);
        assert!(
            Cli::try_parse_from(["sysgenid", "overseer", "post-restore", "--min", "9"]).is_err(),
            "--min needs --trigger"
        );
    }

    #[test]
    fn keep_going_needs_exec() {
        assert!(Cli::try_parse_from(["sysgenid", "watch", "--keep-going"]).is_err());
        assert!(
            Cli::try_parse_from(["sysgenid", "watch", "--exec", "true", "--keep-going"]).is_ok()
        );
    }
}
