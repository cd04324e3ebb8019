//! `sysgenid-sample-service`: a tracked watcher that renews its UUID and RNG seed on each change.
//!
//! At start it makes a random UUID and seeds a userspace RNG, both from the OS RNG. Each time
//! the generation changes (a restore or a clone) it makes both anew, publishes the new state,
//! and only then acknowledges, so an overseer whose `wait_watchers` returns knows that every
//! published state is fresh.
//!
//! Each state is one line, `generation=<G> uuid=<UUID>`, printed to stdout and, with
//! `--state-file PATH`, written to `PATH` (through a temporary file and a rename, so a reader
//! never sees half a line). `SIGTERM` and `SIGINT` end it with status 0.
//!
//! The device and state directory come from `SYSGENID_DEVICE` and `SYSGENID_STATE_DIR`.
#![forbid(unsafe_code)]

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use signal_hook::consts::{SIGINT, SIGTERM};
use sysgenid::{Paths, Watcher, WatcherOptions};
use sysgenid_examples::{SplitMix64, Uuid};

const USAGE: &str = "usage: sysgenid-sample-service [--state-file PATH]";

/// What must differ between clones of one snapshot.
#[derive(Debug)]
struct State {
    generation: u32,
    uuid: Uuid,
    /// Not used here beyond seeding; a real service would draw nonces or ids from it.
    _rng: SplitMix64,
}

impl State {
    /// Fresh state for `generation`, all of it from the OS RNG.
    fn new(generation: u32) -> std::io::Result<State> {
        Ok(State {
            generation,
            uuid: Uuid::new_v4()?,
            _rng: SplitMix64::from_os()?,
        })
    }

    fn line(&self) -> String {
        format!("generation={} uuid={}", self.generation, self.uuid)
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sysgenid-sample-service: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let state_file = parse_args()?;

    // Each state is published whole before we block, so a signal may end us at once, with 0.
    let always = Arc::new(AtomicBool::new(true));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 0, Arc::clone(&always))?;
    }

    // Tracked: an overseer's wait_watchers() waits for our ack after each change. Open it
    // before reading the generation, so that a bump in between is still reported as a change.
    let options = WatcherOptions::new().tracking(true);
    let mut watcher = Watcher::open_with(&Paths::from_env(), options)?;

    let state = State::new(sysgenid::generation()?)?;
    publish(&state, state_file.as_deref())?;
    loop {
        let change = watcher.next_change()?; // blocks in poll(2)
        let state = State::new(change.generation)?;
        publish(&state, state_file.as_deref())?;
        // Tracking does not survive a CRIU restore (files are reopened by path): turn it on
        // again before each ack; it is cheap and idempotent.
        watcher.set_tracking(true)?;
        // Only now: once acknowledged, the overseer may let traffic in.
        watcher.ack(change.generation)?;
    }
}

/// Prints the state's line and writes it to the state file, if any.
fn publish(state: &State, state_file: Option<&Path>) -> std::io::Result<()> {
    let line = state.line();
    if let Some(path) = state_file {
        write_atomically(path, &format!("{line}\n"))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// Writes `PATH.tmp`, then renames it over `PATH`: readers see the old line or the new one.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

fn parse_args() -> Result<Option<PathBuf>, String> {
    let mut state_file = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--state-file") => {
                let path = args.next().ok_or("--state-file needs a path")?;
                state_file = Some(PathBuf::from(path));
            }
            Some("-h" | "--help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(state_file)
}
