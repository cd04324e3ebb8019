//! A tiny client: `client generation|trigger [MIN]|trigger-if G [MIN]|watch|wait MS|status`,
//! paths from `SYSGENID_DEVICE` and `SYSGENID_STATE_DIR`.
//!
//! Prints one line per result, `ok <value>`; on failure prints `error: <message>` and
//! `errno: <n>` to stderr and exits with status 1. The tests run it under `setpriv` to see the
//! library's messages for real permission errors.

use std::process::ExitCode;
use std::time::Duration;

use sysgenid::{Paths, Watcher};

fn run(args: &[String]) -> sysgenid::Result<String> {
    let paths = Paths::from_env();
    let number = |i: usize| args.get(i).map(|a| a.parse::<u32>().expect("a number"));
    match args.first().map(String::as_str) {
        Some("generation") => Ok(sysgenid::generation()?.to_string()),
        Some("trigger") => sysgenid::trigger(number(1)).map(|()| String::new()),
        Some("trigger-if") => {
            let expect = number(1).expect("trigger-if G");
            let outcome = sysgenid::trigger_if(expect, number(2))?;
            Ok(format!(
                "bumped={} generation={}",
                outcome.bumped, outcome.generation
            ))
        }
        Some("watch") => {
            let mut watcher = Watcher::open(&paths)?;
            println!("ready");
            let change = watcher.next_change()?;
            watcher.ack(change.generation)?;
            Ok(change.generation.to_string())
        }
        Some("wait") => {
            let ms = number(1).expect("wait MS");
            sysgenid::wait_watchers(Some(Duration::from_millis(u64::from(ms))))
                .map(|()| String::new())
        }
        Some("status") => Ok(format!("{:?}", sysgenid::status()?)),
        _ => {
            panic!("usage: client generation|trigger [MIN]|trigger-if G [MIN]|watch|wait MS|status")
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(value) => {
            println!("ok {value}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            eprintln!("errno: {}", err.raw_os_error().unwrap_or(0));
            ExitCode::FAILURE
        }
    }
}
