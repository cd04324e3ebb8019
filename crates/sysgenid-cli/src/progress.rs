//! A live progress line on a terminal: rewritten in place with `\r`, cut to the terminal's
//! width so that it stays one line, and cleared before anything else is printed. Write errors
//! are ignored: progress is never worth failing for.

use std::io::{self, IsTerminal, Write};

/// Which stream the line goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (the overseer's text mode).
    Stdout,
    /// Standard error (beside a command's result on stdout).
    Stderr,
}

impl Stream {
    /// Whether this stream is a terminal.
    pub fn is_terminal(self) -> bool {
        match self {
            Stream::Stdout => io::stdout().is_terminal(),
            Stream::Stderr => io::stderr().is_terminal(),
        }
    }

    fn write(self, text: &str) {
        let _ = match self {
            Stream::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush())
            }
            Stream::Stderr => io::stderr().lock().write_all(text.as_bytes()),
        };
    }

    /// The terminal's width in columns, 80 if it cannot tell.
    fn width(self) -> usize {
        let size = match self {
            Stream::Stdout => rustix::termios::tcgetwinsize(io::stdout()),
            Stream::Stderr => rustix::termios::tcgetwinsize(io::stderr()),
        };
        size.map(|w| usize::from(w.ws_col))
            .ok()
            .filter(|&w| w > 0)
            .unwrap_or(80)
    }
}

/// The progress line of one stream.
#[derive(Debug)]
pub struct ProgressLine {
    stream: Stream,
    /// Whether the line is on the screen.
    shown: bool,
}

impl ProgressLine {
    /// A line on `stream`, not shown yet.
    pub fn new(stream: Stream) -> ProgressLine {
        ProgressLine {
            stream,
            shown: false,
        }
    }

    /// Shows `text` in place of the line.
    pub fn show(&mut self, text: &str) {
        let width = self.stream.width();
        let fitted: String = text.chars().take(width.saturating_sub(1)).collect();
        self.stream.write(&format!("\r\x1b[K{fitted}"));
        self.shown = true;
    }

    /// Removes the line, if it is shown.
    pub fn clear(&mut self) {
        if self.shown {
            self.stream.write("\r\x1b[K");
            self.shown = false;
        }
    }
}
