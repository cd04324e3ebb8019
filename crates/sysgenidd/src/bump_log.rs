//! How many "new generation" lines the log gets: every bump while they are rare (a restore), at
//! most a burst per second when something triggers in a loop, with a count of the rest.
//!
//! Like the kernel's rate-limited messages: formatting and writing a log line was the largest
//! user-space cost left in a trigger, and a flood of identical lines tells an operator less
//! than one that says how many there were. The generation, its ID and the last bump's source are
//! always in `sysgenid status`.

use sysgenid_core::Time;

/// Lines logged one by one in each window.
pub const BURST: u32 = 10;
/// The window, in nanoseconds.
pub const WINDOW_NS: u64 = 1_000_000_000;

/// The rate limit's state: pure, the caller gives it the time.
#[derive(Debug, Default)]
pub struct BumpLog {
    window_start: Option<Time>,
    logged: u32,
    unlogged: u32,
}

/// What to log for one bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Bumps since the last logged line that were not logged one by one, to report first (at
    /// the first bump of a later window, however much later).
    pub unlogged_before: u32,
    /// Whether this bump gets its own line.
    pub log_this: bool,
}

impl BumpLog {
    /// Counts a bump at `now`.
    pub fn bump(&mut self, now: Time) -> Verdict {
        let mut unlogged_before = 0;
        let window_over = self
            .window_start
            .is_none_or(|start| start > now || now.0 - start.0 >= WINDOW_NS);
        if window_over {
            unlogged_before = std::mem::take(&mut self.unlogged);
            self.window_start = Some(now);
            self.logged = 0;
        }
        let log_this = self.logged < BURST;
        if log_this {
            self.logged += 1;
        } else {
            self.unlogged += 1;
        }
        Verdict {
            unlogged_before,
            log_this,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn rare_bumps_are_each_logged() {
        let mut log = BumpLog::default();
        for second in 1..20 {
            let verdict = log.bump(Time(second * WINDOW_NS));
            assert_eq!(
                verdict,
                Verdict {
                    unlogged_before: 0,
                    log_this: true
                }
            );
        }
    }

    #[test]
    fn a_flood_logs_a_burst_then_counts_the_rest_and_reports_them_in_the_next_window() {
        let mut log = BumpLog::default();
        let start = 5 * WINDOW_NS;
        let verdicts: Vec<Verdict> = (0..1000)
            .map(|i| log.bump(Time(start + i * MS / 2)))
            .collect();
        let logged = verdicts.iter().filter(|v| v.log_this).count();
        assert_eq!(logged, BURST as usize, "one burst in the first half second");
        assert!(verdicts.iter().all(|v| v.unlogged_before == 0));
        assert!(verdicts[..BURST as usize].iter().all(|v| v.log_this));

        let next = log.bump(Time(start + WINDOW_NS));
        assert_eq!(
            next,
            Verdict {
                unlogged_before: 1000 - BURST,
                log_this: true
            },
            "every bump is counted: logged, or reported as unlogged"
        );
        assert_eq!(log.bump(Time(start + 3 * WINDOW_NS)).unlogged_before, 0);
    }

    #[test]
    fn a_clock_that_went_back_opens_a_new_window() {
        let mut log = BumpLog::default();
        for _ in 0..BURST + 3 {
            log.bump(Time(10 * WINDOW_NS));
        }
        let verdict = log.bump(Time(WINDOW_NS));
        assert_eq!(verdict.unlogged_before, 3);
        assert!(verdict.log_this);
    }
}
