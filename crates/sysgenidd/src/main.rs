//! `sysgenidd`: parse the options, set up logging, serve.

use std::io::Write;

use clap::Parser;
use sysgenidd::config::{Args, Config};
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
    let result = Config::from_args(&args)
        .map_err(sysgenidd::DaemonError::from)
        .and_then(|config| sysgenidd::run(&config));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            let _ = writeln!(std::io::stderr(), "sysgenidd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
