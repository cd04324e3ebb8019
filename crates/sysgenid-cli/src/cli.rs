//! The command line: commands, options, and the exit codes they may end with.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Exit codes, the same for every command.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other error.
    pub const ERROR: u8 = 1;
    /// The command line was wrong.
    pub const USAGE: u8 = 2;
    /// `wait-watchers` timed out with tracked watchers still outdated.
    pub const TIMEOUT: u8 = 3;
    /// Not permitted: a trigger without the capability, or a device not open to this user.
    pub const NOT_PERMITTED: u8 = 4;
    /// The device is missing or no daemon serves it.
    pub const NOT_RUNNING: u8 = 5;
    /// `watch --exec`: the command failed, so the change was not acknowledged.
    pub const EXEC_FAILED: u8 = 6;
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other error
  2  the command line was wrong
  3  wait-watchers: timed out while tracked watchers were still outdated
  4  not permitted (trigger without CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN, or no access)
  5  the device is missing or no sysgenidd serves it
  6  watch --exec: the command failed, so the change was not acknowledged

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
    Get,
    /// Print each new generation and acknowledge it.
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
    /// Print a generated file: the man page or shell completions.
    #[command(hide = true)]
    Generate {
        /// `man`, or a shell name: `bash`, `zsh`, `fish`.
        what: String,
    },
}

/// Options of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Be a tracked watcher: `wait-watchers` waits for this one to acknowledge.
    #[arg(long)]
    pub track: bool,

    /// Run this shell command on each change, before acknowledging; SYSGENID_GENERATION holds
    /// the new generation. If it fails, the change is not acknowledged.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,

    /// When the command fails, say so and retry it instead of exiting.
    #[arg(long, requires = "exec")]
    pub keep_going: bool,

    /// Stop after this many changes (for scripts and tests).
    #[arg(long, value_name = "N", hide = true)]
    pub count: Option<u64>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").unwrap_err().contains("examples"));
    }

    #[test]
    fn keep_going_needs_exec() {
        assert!(Cli::try_parse_from(["sysgenid", "watch", "--keep-going"]).is_err());
        assert!(
            Cli::try_parse_from(["sysgenid", "watch", "--exec", "true", "--keep-going"]).is_ok()
        );
    }
}
