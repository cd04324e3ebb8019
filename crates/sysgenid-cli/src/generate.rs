//! Generated files: the man page and shell completions, printed to stdout.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, exit};
use crate::commands::{Failure, failure};
use crate::output;

/// Prints the man page (`man`) or the completions for a shell (`bash`, `zsh`, `fish`).
pub fn print(what: &str) -> Result<(), Failure> {
    let mut command = Cli::command();
    // Rendered whole first, so that a closed stdout is an error here, not a panic inside
    // clap_complete.
    let mut out = Vec::new();
    if what == "man" {
        clap_mangen::Man::new(command)
            .render(&mut out)
            .map_err(|e| failure(exit::ERROR, e.to_string()))?;
        return output::bytes(&out);
    }
    let shell: Shell = what.parse().map_err(|_| {
        failure(
            exit::USAGE,
            format!("cannot generate {what:?}: say man, bash, zsh or fish"),
        )
    })?;
    clap_complete::generate(shell, &mut command, "sysgenid", &mut out);
    output::bytes(&out)
}
