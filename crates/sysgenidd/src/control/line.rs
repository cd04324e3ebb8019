//! Reads a control request line: short, UTF-8, and complete before one deadline for the whole
//! line, however slowly its bytes come.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The longest request line accepted, without its newline.
pub const MAX_REQUEST: usize = 256;

/// Why no request line could be read.
#[derive(Debug)]
pub enum BadLine {
    /// More than [`MAX_REQUEST`] bytes came without a newline.
    TooLong,
    /// The line is not UTF-8.
    NotUtf8,
    /// The deadline passed before the line was complete.
    TimedOut(Duration),
    /// Reading failed; the peer is gone, so nothing is answered.
    Io(io::Error),
}

/// What the peer is told.
impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REQUESTS: &str = "send one line: \"status\" or \"trigger-if G [min N]\"";
        match self {
            BadLine::TooLong => write!(
                f,
                "the request line is longer than {MAX_REQUEST} bytes; {REQUESTS}"
            ),
            BadLine::NotUtf8 => write!(f, "the request line is not UTF-8 text; {REQUESTS}"),
            BadLine::TimedOut(limit) => write!(
                f,
                "no complete request line within {} s; {REQUESTS}, ending in a newline",
                limit.as_secs()
            ),
            BadLine::Io(e) => write!(f, "reading the request failed: {e}"),
        }
    }
}

/// Reads one line from `stream`: up to a newline or the end of input, at most
/// [`MAX_REQUEST`] bytes, all before `deadline`, which was `limit` after the connection came.
/// Bytes after the newline are ignored.
pub fn read_request(
    mut stream: &UnixStream,
    deadline: Instant,
    limit: Duration,
) -> Result<String, BadLine> {
    let mut buf = [0u8; MAX_REQUEST + 1];
    let mut filled = 0;
    let end = loop {
        if let Some(newline) = buf[..filled].iter().position(|&b| b == b'\n') {
            break newline;
        }
        if filled == buf.len() {
            return Err(BadLine::TooLong);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BadLine::TimedOut(limit));
        }
        stream.set_read_timeout(Some(left)).map_err(BadLine::Io)?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => break filled,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(BadLine::TimedOut(limit));
            }
            Err(e) => return Err(BadLine::Io(e)),
        }
    };
    String::from_utf8(buf[..end].to_vec()).map_err(|_| BadLine::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMIT: Duration = Duration::from_millis(300);

    fn read(sent: &[u8], close: bool) -> Result<String, BadLine> {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(sent).unwrap();
        let _open = (!close).then_some(theirs);
        read_request(&ours, Instant::now() + LIMIT, LIMIT)
    }

    #[test]
    fn a_line_ends_at_its_newline_or_at_the_end_of_input() {
        assert_eq!(read(b"status\nmore", false).unwrap(), "status");
        assert_eq!(read(b"trigger-if 3", true).unwrap(), "trigger-if 3");
        assert_eq!(read(b"", true).unwrap(), "");
        let longest = [b'a'; MAX_REQUEST];
        assert_eq!(
            read(&[&longest[..], b"\n"].concat(), false).unwrap().len(),
            256
        );
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(matches!(
            read(b"st\xffatus\n", false),
            Err(BadLine::NotUtf8)
        ));
        let long = [b' '; MAX_REQUEST + 1];
        assert!(matches!(read(&long, false), Err(BadLine::TooLong)));
        assert!(matches!(read(b"stat", false), Err(BadLine::TimedOut(_))));
        let message = BadLine::TooLong.to_string();
        assert!(message.contains("longer than 256 bytes"), "{message}");
    }

    #[test]
    fn the_deadline_holds_for_the_whole_line_however_the_bytes_trickle() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let trickle = std::thread::spawn(move || {
            for _ in 0..40 {
                if theirs.write_all(b"s").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let start = Instant::now();
        let result = read_request(&ours, start + LIMIT, LIMIT);
        assert!(matches!(result, Err(BadLine::TimedOut(_))), "{result:?}");
        assert!(start.elapsed() < LIMIT + Duration::from_millis(200));
        drop(ours);
        trickle.join().unwrap();
    }
}
