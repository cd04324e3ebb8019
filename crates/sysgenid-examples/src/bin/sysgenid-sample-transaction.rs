//! `sysgenid-sample-transaction`: the transaction-retry pattern, with work you can watch.
//!
//! Read the generation, do the work, read it again; if it moved, a restore (or clone) happened
//! meanwhile and another copy may be doing the same work, so undo it and try again.
//!
//! The work appends a record `attempt=<k> generation=<G>` to a ledger (in memory, and in the
//! file given by `--ledger PATH`), then takes `--work-ms` milliseconds; undoing removes the
//! record. Each attempt prints two lines, the first once its record is written:
//!
//! ```text
//! attempt=<k> started before=<G>
//! attempt=<k> before=<G> after=<G2> outcome=committed|reverted
//! ```
//!
//! It exits 0 once an attempt commits, and 1 after `--attempts` reverted ones. The generation
//! comes from the page file of `SYSGENID_STATE_DIR` (or the device of `SYSGENID_DEVICE`).
#![forbid(unsafe_code)]

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: sysgenid-sample-transaction [--work-ms N (default 500)] [--attempts N (default 3)] \
     [--ledger PATH]";

#[derive(Debug)]
struct Args {
    work: Duration,
    attempts: u32,
    ledger: Option<PathBuf>,
}

/// The committed records, mirrored to a file if one was given.
#[derive(Debug)]
struct Ledger {
    records: Vec<String>,
    path: Option<PathBuf>,
}

impl Ledger {
    fn append(&mut self, record: String) -> std::io::Result<()> {
        self.records.push(record);
        self.save()
    }

    /// Undoes the last append.
    fn revert_last(&mut self) -> std::io::Result<()> {
        self.records.pop();
        self.save()
    }

    fn save(&self) -> std::io::Result<()> {
        match &self.path {
            Some(path) => std::fs::write(path, self.records.concat()),
            None => Ok(()),
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sysgenid-sample-transaction: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let mut ledger = Ledger {
        records: Vec::new(),
        path: args.ledger,
    };
    ledger.save()?;
    for attempt in 1..=args.attempts {
        // One load from the shared page each time: cheap enough for every transaction.
        let before = sysgenid::generation()?;
        ledger.append(format!("attempt={attempt} generation={before}\n"))?;
        say(&format!("attempt={attempt} started before={before}"))?;
        std::thread::sleep(args.work);

        let after = sysgenid::generation()?;
        if after == before {
            say(&format!(
                "attempt={attempt} before={before} after={after} outcome=committed"
            ))?;
            return Ok(());
        }
        // Restored (or cloned) while working: another copy may commit the same work.
        ledger.revert_last()?;
        say(&format!(
            "attempt={attempt} before={before} after={after} outcome=reverted"
        ))?;
    }
    Err(format!(
        "gave up: the generation changed during each of {} attempts",
        args.attempts
    )
    .into())
}

/// Prints `line` and flushes, so that a reader sees it at once.
fn say(line: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

fn parse_args() -> Result<Args, String> {
    let mut parsed = Args {
        work: Duration::from_millis(500),
        attempts: 3,
        ledger: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{arg} {v:?}: {e}"));
        match arg.as_str() {
            "--work-ms" => parsed.work = Duration::from_millis(number(value()?)?),
            "--attempts" => {
                parsed.attempts = u32::try_from(number(value()?)?)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--attempts must be from 1 to {}", u32::MAX))?;
            }
            "--ledger" => parsed.ledger = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(parsed)
}
