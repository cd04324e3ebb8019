//! `sysgenidd`: parse the options, set up logging, serve.

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
                eprintln!("sysgenidd: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log));
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
            eprintln!("sysgenidd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
