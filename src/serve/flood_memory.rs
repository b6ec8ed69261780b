//! Giving back the memory a connection flood left behind.
//!
//! Each open connection holds a few kilobytes (hyper's read and write buffers, the task, the
//! accept loop's bookkeeping). When a local process opens thousands of connections and then
//! lets them go, the allocator keeps the freed memory in its per-thread arenas: measured in the
//! soak run, RSS rose from 11.7 MiB to 43 MiB during a 2,000-connection flood and stayed at
//! 44 MiB after it ended. A long-running agent should not keep the high-water mark of the worst
//! flood it ever saw, so once a listener that was crowded is quiet again, the accept loop asks
//! the allocator to return free pages to the kernel (`malloc_trim`, glibc only; elsewhere this
//! is a no-op).
//!
//! Trimming walks the heap, so it runs on a blocking thread, only after a real flood
//! ([`CROWDED`] open connections), and at most once per [`MIN_INTERVAL`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Open connections on one listener that count as a flood worth cleaning up after.
pub(super) const CROWDED: usize = 256;
/// Open connections at or below which the flood is over.
pub(super) const QUIET: usize = 16;
/// Trims are at least this far apart, whatever the listeners do.
const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Watches one listener's open-connection count and trims once after each flood.
#[derive(Default)]
pub(super) struct FloodMemory {
    crowded: bool,
}

impl FloodMemory {
    /// Called whenever the listener's open-connection count changes. Returns true when a
    /// flood just ended (and a trim was asked for, subject to [`MIN_INTERVAL`]).
    pub(super) fn observe(&mut self, open: usize) -> bool {
        if open >= CROWDED {
            self.crowded = true;
            false
        } else if self.crowded && open <= QUIET {
            self.crowded = false;
            return_freed_memory();
            true
        } else {
            false
        }
    }
}

/// Asks the allocator to give free memory back to the kernel, on a blocking thread, unless a
/// trim ran less than [`MIN_INTERVAL`] ago.
fn return_freed_memory() {
    static START: OnceLock<Instant> = OnceLock::new();
    static LAST_MS: AtomicU64 = AtomicU64::new(u64::MAX);
    let now_ms = u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis())
        .unwrap_or(u64::MAX - 1);
    let last = LAST_MS.load(Ordering::Relaxed);
    let min = u64::try_from(MIN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
    if last != u64::MAX && now_ms.saturating_sub(last) < min {
        return;
    }
    if LAST_MS
        .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        tokio::task::spawn_blocking(trim);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and may be called from any thread at any time.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(
        released = released != 0,
        "returned memory freed after a connection flood"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_ends_once_when_the_listener_is_quiet_again() {
        let mut watch = FloodMemory::default();
        // Never crowded: no trim however the count moves.
        assert!(!watch.observe(10));
        assert!(!watch.observe(0));
        // Crowded, then draining but not yet quiet: no trim.
        assert!(!watch.observe(CROWDED));
        assert!(!watch.observe(2_000));
        assert!(!watch.observe(QUIET + 1));
        // Quiet again: one trim, then none until the next flood.
        assert!(watch.observe(QUIET));
        assert!(!watch.observe(0));
        assert!(!watch.observe(QUIET));
    }
}
