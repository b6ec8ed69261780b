//! Exponential backoff with jitter, shared by everything that retries: the Workload API
//! watcher reconnecting to SPIRE, the refresher retrying an exchange, and the one-shot
//! commands retrying within `--timeout` ([`retry_within`]).

use std::future::Future;
use std::time::Duration;

/// The first and the longest pause between one-shot retries.
const ONE_SHOT_MIN_BACKOFF: Duration = Duration::from_millis(200);
const ONE_SHOT_MAX_BACKOFF: Duration = Duration::from_secs(3);

/// Runs `attempt` until it succeeds, fails in a way `retryable` says retrying cannot fix, or
/// `timeout` runs out, with a jittered backoff between tries: what a one-shot command does
/// within `--timeout`.
///
/// When the time runs out during an attempt, the previous attempt's error is returned if
/// there was one (it says what went wrong, where "did not answer in time" would not), else
/// `timed_out()`.
pub(crate) async fn retry_within<T, E, Fut>(
    timeout: Duration,
    mut attempt: impl FnMut() -> Fut,
    retryable: impl Fn(&E) -> bool,
    timed_out: impl FnOnce() -> E,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Backoff::new(ONE_SHOT_MIN_BACKOFF, ONE_SHOT_MAX_BACKOFF);
    let mut previous: Option<E> = None;
    loop {
        let error = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => return Err(previous.unwrap_or_else(timed_out)),
        };
        let delay = backoff.next_delay();
        if !retryable(&error) || tokio::time::Instant::now() + delay >= deadline {
            return Err(error);
        }
        tracing::debug!(%error, retry_in_ms = delay.as_millis() as u64, "failed; retrying");
        previous = Some(error);
        tokio::time::sleep(delay).await;
    }
}

/// Exponential backoff with jitter, so a fleet does not retry in step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    /// The next delay: doubles up to `max`, with up to half of it random.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retry_within_reports_the_last_real_error_when_time_runs_out() {
        // Every attempt fails transiently, the last one is cut off by the deadline: the error
        // is the last real one, not "timed out".
        let mut calls = 0;
        let result: Result<(), String> = retry_within(
            Duration::from_secs(2),
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n >= 3 {
                        std::future::pending::<()>().await;
                    }
                    Err(format!("connection closed (attempt {n})"))
                }
            },
            |_| true,
            || "timed out".to_owned(),
        )
        .await;
        assert_eq!(result, Err("connection closed (attempt 2)".to_owned()));
        // A first attempt that never answers is a timeout.
        let result: Result<(), String> = retry_within(
            Duration::from_secs(2),
            std::future::pending,
            |_| true,
            || "timed out".to_owned(),
        )
        .await;
        assert_eq!(result, Err("timed out".to_owned()));
        // A failure retrying cannot fix ends at once.
        let mut calls = 0;
        let result: Result<(), String> = retry_within(
            Duration::from_secs(2),
            || {
                calls += 1;
                async { Err("refused".to_owned()) }
            },
            |_| false,
            || "timed out".to_owned(),
        )
        .await;
        assert_eq!((result, calls), (Err("refused".to_owned()), 1));
    }

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
        assert!(delays[5] >= Duration::from_secs(4) && delays[5] <= Duration::from_secs(8));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
