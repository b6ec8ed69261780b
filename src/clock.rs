//! The one clock the agent's timing logic reads.
//!
//! Refresh scheduling, backoff and token TTLs sleep on tokio's timer; wall-clock questions
//! ("do these credentials expire in less than 5 minutes?") go through [`Clock`]. The
//! [`TokioClock`] derives wall time from tokio's `Instant`, so a test that pauses and
//! advances tokio's time moves both together, and no test sleeps for real.

use std::time::SystemTime;

/// Wall-clock time for expiry decisions.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// Wall time anchored at creation and advanced by tokio's (possibly paused) clock.
pub struct TokioClock {
    base_wall: SystemTime,
    base_instant: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock {
            base_wall: SystemTime::now(),
            base_instant: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.base_wall + self.base_instant.elapsed()
    }
}
