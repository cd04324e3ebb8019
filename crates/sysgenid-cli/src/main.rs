//! `sysgenid`: parse the command line, run the command, turn failures into exit codes.

mod cli;
mod commands;
mod generate;
mod overseer;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(&cli) {
        Ok(()) => ExitCode::from(cli::exit::OK),
        Err(failure) => {
            if cli.json && !failure.reported {
                println!(
                    "{}",
                    serde_json::json!({ "error": failure.message, "exit": failure.code })
                );
            }
            eprintln!("sysgenid: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
