//! `sysgenid`: parse the command line, run the command, turn failures into exit codes.

mod cli;
mod commands;
mod generate;
mod output;
mod overseer;
mod progress;

use std::process::ExitCode;

use clap::FromArgMatches;

fn main() -> ExitCode {
    let mut command = cli::command(cli::installed_doc_dir().as_deref());
    let matches = command.get_matches_mut();
    let cli =
        cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit());
    match commands::run(&cli) {
        Ok(()) => ExitCode::from(cli::exit::OK),
        // Stdout's reader has gone: nothing is left to say, and no one to say it to.
        Err(failure) if failure.is_quiet() => ExitCode::from(cli::exit::OK),
        Err(failure) => {
            if cli.json && !failure.reported {
                let line = serde_json::json!({ "error": failure.message, "exit": failure.code });
                let _ = output::line(line);
            }
            output::warn(&failure.message);
            ExitCode::from(failure.code)
        }
    }
}
