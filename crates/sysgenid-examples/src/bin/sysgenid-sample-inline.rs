//! `sysgenid-sample-inline`: a library that adjusts lazily, checking the generation on each call.
//!
//! [`UniqueIds`] hands out ids from a userspace RNG and reseeds it when it notices, at the next
//! call, that the generation has changed. The binary drives it from stdin, one command a line:
//!
//! - `id` prints `generation=<G> reseeded=<true|false> id=<16 hex digits>`;
//! - `quit` (or end of input) exits with status 0.
//!
//! The device and state directory come from `SYSGENID_DEVICE` and `SYSGENID_STATE_DIR`.
#![forbid(unsafe_code)]

use std::error::Error;
use std::io::{BufRead, Write};
use std::process::ExitCode;

use sysgenid::{Paths, Probe};
use sysgenid_examples::SplitMix64;

/// Unique ids from a userspace RNG that is reseeded from the OS after every generation change.
///
/// Each [`UniqueIds::next_id`] reads the generation through a [`Probe`]: one load from a shared
/// page, no syscall, so the check costs next to nothing in a hot path. When the generation
/// differs from the one the RNG was seeded under, it reseeds before handing out the id, so no
/// id after a bump comes from a stream that a clone shares.
///
/// It never opens a tracked [`sysgenid::Watcher`]: it adjusts only when called, so an overseer
/// waiting for it to acknowledge would wait for a call that cannot come while the overseer holds
/// traffic back, a deadlock. Components that must be fresh before traffic resumes watch and
/// acknowledge instead (see `sysgenid-sample-service`).
#[derive(Debug)]
struct UniqueIds {
    probe: Probe,
    /// The generation the RNG was seeded under.
    generation: u32,
    rng: SplitMix64,
}

/// One id, with what happened while making it.
#[derive(Debug)]
struct Id {
    generation: u32,
    reseeded: bool,
    value: u64,
}

impl UniqueIds {
    fn new(paths: &Paths) -> Result<UniqueIds, Box<dyn Error>> {
        let probe = Probe::open(paths)?;
        Ok(UniqueIds {
            generation: probe.generation(),
            probe,
            rng: SplitMix64::from_os()?,
        })
    }

    fn next_id(&mut self) -> std::io::Result<Id> {
        let generation = self.probe.generation();
        let reseeded = generation != self.generation;
        if reseeded {
            self.rng = SplitMix64::from_os()?;
            self.generation = generation;
        }
        Ok(Id {
            generation,
            reseeded,
            value: self.rng.next_u64(),
        })
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sysgenid-sample-inline: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    if std::env::args_os().len() > 1 {
        return Err("no arguments; commands come on stdin: id, quit".into());
    }
    let mut ids = UniqueIds::new(&Paths::from_env())?;
    let mut stdout = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "id" => {
                let id = ids.next_id()?;
                writeln!(
                    stdout,
                    "generation={} reseeded={} id={:016x}",
                    id.generation, id.reseeded, id.value
                )?;
            }
            "quit" => break,
            "" => continue,
            other => writeln!(stdout, "error=unknown-command command={other}")?,
        }
        stdout.flush()?;
    }
    Ok(())
}
