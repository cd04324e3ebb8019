//! Generated files: the man page and shell completions, printed to stdout.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, exit};
use crate::commands::{Failure, failure};

/// Prints the man page (`man`) or the completions for a shell (`bash`, `zsh`, `fish`).
pub fn print(what: &str) -> Result<(), Failure> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    if what == "man" {
        return clap_mangen::Man::new(command)
            .render(&mut out)
            .map_err(|e| failure(exit::ERROR, e.to_string()));
    }
    let shell: Shell = what.parse().map_err(|_| {
        failure(
            exit::USAGE,
            format!("cannot generate {what:?}: say man, bash, zsh or fish"),
        )
    })?;
    clap_complete::generate(shell, &mut command, "sysgenid", &mut out);
    Ok(())
}
