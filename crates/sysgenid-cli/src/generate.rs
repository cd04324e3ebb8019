//! Generated files: the man pages and shell completions.

use std::path::Path;

use clap_complete::Shell;

use crate::cli::{self, exit};
use crate::commands::{Failure, failure};
use crate::output;

/// Prints the man page (`man`), or writes every man page into `dir` (`man DIR`), or prints the
/// completions for a shell (`bash`, `zsh`, `fish`). The pages name `doc_dir` as where the
/// documentation is, by default the one installed beside this program.
pub fn print(what: &str, dir: Option<&Path>, doc_dir: Option<&Path>) -> Result<(), Failure> {
    let doc_dir = doc_dir.map(Path::to_owned).or_else(cli::installed_doc_dir);
    let mut command = cli::command(doc_dir.as_deref());
    // No `help` subcommand on a page: sysgenid-help(1) would not exist.
    let pages = || command.clone().disable_help_subcommand(true);
    // Rendered whole first, so that a closed stdout is an error here, not a panic inside
    // clap_complete.
    let mut out = Vec::new();
    match (what, dir) {
        ("man", Some(dir)) => {
            return clap_mangen::generate_to(pages(), dir).map_err(|e| {
                failure(
                    exit::ERROR,
                    format!("cannot write the man pages to {}: {e}", dir.display()),
                )
            });
        }
        ("man", None) => {
            clap_mangen::Man::new(pages())
                .render(&mut out)
                .map_err(|e| failure(exit::ERROR, e.to_string()))?;
            return output::bytes(&out);
        }
        (_, Some(_)) => {
            return Err(failure(
                exit::USAGE,
                "only `generate man` takes a directory",
            ));
        }
        _ => {}
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
