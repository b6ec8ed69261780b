//! Logging that a flood cannot turn into a flood of log lines.
//!
//! A local client can make the agent refuse thousands of requests or connections a second;
//! one log line each filled disks (187 MB of INFO in 10 s). A [`LogLimiter`] lets the first
//! occurrence of each distinct problem through at once, counts the repeats, and logs one
//! summary line per problem per minute. At most [`MAX_KEYS`] distinct problems are tracked
//! per minute, so the lines written stay under `2 × MAX_KEYS + 1` a minute whatever arrives.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long repeats of a problem are counted before their summary is logged.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Distinct problems tracked per window; more are only counted.
pub(crate) const MAX_KEYS: usize = 32;

/// See the module documentation.
pub(crate) struct LogLimiter {
    state: Mutex<Option<State>>,
}

struct State {
    window_start: Instant,
    /// Problem → repeats not logged in this window.
    repeats: HashMap<String, u64>,
    /// Occurrences of problems beyond [`MAX_KEYS`].
    untracked: u64,
}

impl LogLimiter {
    pub(crate) const fn new() -> Self {
        LogLimiter {
            state: Mutex::new(None),
        }
    }

    /// Whether the occurrence of `problem` should be logged now. Summaries of the last
    /// window's repeats are logged here, when the window has passed.
    pub(crate) fn admit(&self, problem: &str) -> bool {
        self.admit_at(problem, Instant::now())
    }

    fn admit_at(&self, problem: &str, now: Instant) -> bool {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = guard.get_or_insert_with(|| State {
            window_start: now,
            repeats: HashMap::new(),
            untracked: 0,
        });
        if now.duration_since(state.window_start) >= WINDOW {
            for (problem, repeats) in state.repeats.drain() {
                if repeats > 0 {
                    tracing::warn!(
                        repeats,
                        "{problem} (repeated {repeats} more times in the last minute)"
                    );
                }
            }
            if state.untracked > 0 {
                tracing::warn!(
                    occurrences = state.untracked,
                    "{} more occurrences of other problems in the last minute were not logged",
                    state.untracked
                );
            }
            state.untracked = 0;
            state.window_start = now;
        }
        let tracked = state.repeats.len();
        match state.repeats.get_mut(problem) {
            Some(repeats) => {
                *repeats += 1;
                false
            }
            None if tracked < MAX_KEYS => {
                state.repeats.insert(problem.to_owned(), 0);
                true
            }
            None => {
                state.untracked += 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrences_pass_repeats_are_counted_and_the_window_resets() {
        let limiter = LogLimiter::new();
        let t0 = Instant::now();
        assert!(limiter.admit_at("role orders unavailable", t0));
        assert!(!limiter.admit_at("role orders unavailable", t0));
        assert!(
            limiter.admit_at("role reviews unavailable", t0),
            "a distinct problem"
        );
        let admitted = (0..100_000)
            .filter(|i| limiter.admit_at(&format!("flood {i}"), t0))
            .count();
        assert_eq!(
            admitted,
            MAX_KEYS - 2,
            "only so many distinct problems per window"
        );
        assert!(
            limiter.admit_at("role orders unavailable", t0 + WINDOW),
            "a new window"
        );
    }
}
