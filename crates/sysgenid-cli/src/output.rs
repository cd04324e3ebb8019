//! Writing to stdout and stderr without panicking when their reader has gone: a closed stdout
//! (`sysgenid watch | head -n 1`) ends a command quietly with exit 0, and a message that stderr
//! cannot take is dropped.

use std::fmt::Display;
use std::io::{self, Write};

use crate::cli::exit;
use crate::commands::{Failure, failure};

/// Writes `text` and a newline to stdout at once. Fails with [`Failure::stdout_closed`] when
/// the reader has gone (`EPIPE`).
pub fn line(text: impl Display) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes `bytes` to stdout as they are, as [`line`] does.
pub fn bytes(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// The failure for an error writing to stdout: a quiet stop when its reader has gone.
pub fn stdout_error(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::stdout_closed()
    } else {
        failure(exit::ERROR, format!("cannot write to stdout: {e}"))
    }
}

/// Writes `sysgenid: text` to stderr, or nothing if stderr cannot take it.
pub fn warn(text: impl Display) {
    let _ = writeln!(io::stderr().lock(), "sysgenid: {text}");
}
