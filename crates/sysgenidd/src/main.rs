//! `sysgenidd`: parse the options, set up logging, serve.

use std::io::Write;

use clap::Parser;
use sysgenidd::config::{Args, Config, Toggle};
use sysgenidd::{fdstore, keeper};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.generate_man {
        let page = clap_mangen::Man::new(<Args as clap::CommandFactory>::command()).section("8");
        return match page.render(&mut std::io::stdout().lock()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "sysgenidd: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log));
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log that cannot be written (a full disk, a file-size limit) must not stop the
        // daemon: tracing's own fallback report would panic in `eprintln!`.
        .log_internal_errors(false)
        .with_ansi(false);
    if under_journal {
        subscriber.without_time().init();
    } else {
        subscriber.init();
    }
    if args.keeper == Toggle::On && std::env::var_os(keeper::KEEPER_FD_ENV).is_none() {
        return keep(&args);
    }
    let result = Config::from_args(&args)
        .map_err(sysgenidd::DaemonError::from)
        .and_then(|config| sysgenidd::run(&config));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e @ sysgenidd::DaemonError::Unmounted) => {
            tracing::error!("{e}");
            std::process::ExitCode::from(keeper::EXIT_CONNECTION_LOST)
        }
        Err(e) => {
            tracing::error!("{e}");
            let _ = writeln!(std::io::stderr(), "sysgenidd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Becomes the keeper of a serving process started with the same arguments.
fn keep(args: &Args) -> std::process::ExitCode {
    if let Err(e) = Config::from_args(args) {
        let _ = writeln!(std::io::stderr(), "sysgenidd: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "sysgenidd: cannot find this program: {e}"
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    let rest: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    keeper::keep(&exe, &rest, fdstore::take_stored(), args.keeper_max_crashes)
}
