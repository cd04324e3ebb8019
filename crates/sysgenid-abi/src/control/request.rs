//! The request line grammar: `status` (or an empty line) and `trigger-if G [min N]`.

use std::fmt;

/// What the error of an unknown or malformed request says.
const REQUESTS: &str = "the requests are \"status\" and \"trigger-if G [min N]\"";

/// One request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// `status`, or an empty line: the status document.
    Status,
    /// `trigger-if G [min N]`: bump with minimum `N` (default 0) only if `G` is still current.
    TriggerIf {
        /// The generation the caller expects to be current.
        expect: u32,
        /// The new generation is at least this.
        min: u32,
    },
}

/// A request line that is not one of the requests; the message says which ones are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseRequestError {
    message: String,
}

impl fmt::Display for ParseRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseRequestError {}

impl Request {
    /// Parses a request line (surrounding white space ignored), or says what is wrong.
    pub fn parse(line: &str) -> Result<Request, ParseRequestError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |word: &str, what: &str| {
            word.parse::<u32>().map_err(|_| ParseRequestError {
                message: format!(
                    "{what} {word:?} is not a generation (0 to 4294967295); {REQUESTS}"
                ),
            })
        };
        match words.as_slice() {
            [] | ["status"] => Ok(Request::Status),
            ["trigger-if", expect] => Ok(Request::TriggerIf {
                expect: number(expect, "G")?,
                min: 0,
            }),
            ["trigger-if", expect, "min", min] => Ok(Request::TriggerIf {
                expect: number(expect, "G")?,
                min: number(min, "N")?,
            }),
            _ => Err(ParseRequestError {
                message: format!("unknown request {:?}; {REQUESTS}", line.trim()),
            }),
        }
    }
}

/// The request line without its newline; `min 0` is left out, as it is the default.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Request::Status => f.write_str("status"),
            Request::TriggerIf { expect, min: 0 } => write!(f, "trigger-if {expect}"),
            Request::TriggerIf { expect, min } => write!(f, "trigger-if {expect} min {min}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse() {
        assert_eq!(Request::parse("status\n"), Ok(Request::Status));
        assert_eq!(Request::parse(""), Ok(Request::Status));
        assert_eq!(
            Request::parse("trigger-if 5\n"),
            Ok(Request::TriggerIf { expect: 5, min: 0 })
        );
        assert_eq!(
            Request::parse(" trigger-if 4294967295 min 9 "),
            Ok(Request::TriggerIf {
                expect: u32::MAX,
                min: 9
            })
        );
    }

    #[test]
    fn malformed_requests_say_what_is_accepted() {
        for line in [
            "trigger-if",
            "trigger-if -1",
            "trigger-if 4294967296",
            "trigger-if 5 min",
            "trigger-if 5 max 7",
            "trigger-if 5 min x",
            "trigger 5",
            "status now",
        ] {
            let e = Request::parse(line).unwrap_err().to_string();
            assert!(e.contains("trigger-if G [min N]"), "{line}: {e}");
        }
    }

    #[test]
    fn requests_print_as_lines_that_parse_back() {
        for (request, line) in [
            (Request::Status, "status"),
            (Request::TriggerIf { expect: 5, min: 0 }, "trigger-if 5"),
            (
                Request::TriggerIf { expect: 5, min: 9 },
                "trigger-if 5 min 9",
            ),
        ] {
            assert_eq!(request.to_string(), line);
            assert_eq!(Request::parse(line), Ok(request));
        }
    }
}
