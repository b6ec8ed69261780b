//! systemd's service notification protocol (`sd_notify(3)`), the three messages the agent
//! sends: `READY=1` once it can serve, `WATCHDOG=1` while it is healthy, `STOPPING=1` when it
//! shuts down.
//!
//! The protocol is one datagram per message to the unix socket named by `NOTIFY_SOCKET`: a
//! path, or a Linux abstract socket when it starts with `@`. It is written here on `std`
//! rather than taken from the `sd-notify` crate because that crate enables the watchdog only
//! when `WATCHDOG_PID` is set, while `sd_watchdog_enabled(3)` also enables it when the
//! variable is unset, and because abstract addresses need `std`'s `SocketAddrExt` anyway.
//! Sending never blocks and never fails the agent: a manager that stopped listening is
//! not a reason to stop serving credentials.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The shortest watchdog ping interval honoured, so a tiny `WATCHDOG_USEC` cannot make a
/// busy loop.
const MIN_WATCHDOG_INTERVAL: Duration = Duration::from_millis(100);
/// How long to wait before sending again into a full queue.
const RETRY_DELAY: Duration = Duration::from_millis(50);

/// Why `NOTIFY_SOCKET` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an abstract socket name (@name)")]
    BadAddress(String),
    #[error("cannot create a socket for NOTIFY_SOCKET: {0}")]
    Socket(#[source] io::Error),
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for; `Ok(None)` when it is unset or empty (not run by
    /// a service manager that listens).
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => Notifier::new(&v.to_string_lossy()).map(Some),
        }
    }

    /// A notifier for the socket at `address` (`/path` or `@abstract-name`).
    pub fn new(address: &str) -> Result<Notifier, NotifyError> {
        let bad = || NotifyError::BadAddress(address.to_owned());
        let addr = if let Some(name) = address.strip_prefix('@') {
            abstract_addr(name.as_bytes()).map_err(|_| bad())?
        } else if address.starts_with('/') {
            SocketAddr::from_pathname(address).map_err(|_| bad())?
        } else {
            return Err(bad());
        };
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        socket.set_nonblocking(true).map_err(NotifyError::Socket)?;
        Ok(Notifier { socket, addr })
    }

    /// Sends `message` (newline-separated `KEY=VALUE` assignments).
    pub fn send(&self, message: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(message.as_bytes(), &self.addr)?;
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the notification was truncated",
            ));
        }
        Ok(())
    }

    /// Sends `message`, logging (at debug level) instead of failing. For `WATCHDOG=1`: a
    /// ping lost because the manager's queue is full is followed by the next one.
    pub fn notify(&self, message: &str) {
        if let Err(e) = self.send(message) {
            tracing::debug!(error = %e, message, "cannot notify the service manager");
        }
    }

    /// Sends `message`, retrying for up to `limit` while the manager's queue is full: for
    /// the messages that are sent once (`READY=1`, `STOPPING=1`) and must not be lost to a
    /// burst of pings.
    pub async fn notify_retrying(&self, message: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.send(message) {
                Ok(()) => return,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, message, "cannot notify the service manager");
                    return;
                }
            }
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt as _;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt as _;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)`
/// advises, when it is set and `WATCHDOG_PID` is this process or unset; else `None`.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(&usec, pid.as_deref(), std::process::id())
}

fn watchdog_interval_from(usec: &str, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec.trim().parse().ok().filter(|u| *u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        None => {}
        Some(Ok(p)) if p == own_pid => {}
        Some(_) => return None,
    }
    Some((Duration::from_micros(usec) / 2).max(MIN_WATCHDOG_INTERVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_follows_sd_watchdog_enabled() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_from("30000000", None, 7), half);
        assert_eq!(watchdog_interval_from("30000000", Some("7"), 7), half);
        assert_eq!(watchdog_interval_from("30000000", Some("8"), 7), None);
        assert_eq!(watchdog_interval_from("30000000", Some("x"), 7), None);
        assert_eq!(watchdog_interval_from("0", None, 7), None);
        assert_eq!(watchdog_interval_from("soon", None, 7), None);
        assert_eq!(
            watchdog_interval_from("2", None, 7),
            Some(MIN_WATCHDOG_INTERVAL)
        );
    }

    #[test]
    fn messages_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap())
            .unwrap()
            .send("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("spiffe-aws-agent-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes()).unwrap()).unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .send("WATCHDOG=1")
            .unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");

        assert!(matches!(
            Notifier::new("relative/path"),
            Err(NotifyError::BadAddress(_))
        ));
    }
}
