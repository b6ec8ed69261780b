//! The real peers built by `scripts/build-peers.sh` from the Go module proxy: `spire-server`,
//! `spire-agent` (spiffe/spire v1.13.3) and `aws_signing_helper`
//! (aws/rolesanywhere-credential-helper v1.4.0).

use std::path::PathBuf;
use std::process::Child;

/// A peer binary: `$SPIFFE_AWS_AGENT_PEERS_DIR/bin/NAME`, else `target/peers/bin/NAME`.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("SPIFFE_AWS_AGENT_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::root().join("target/peers"));
    let path = dir.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-peers.sh (scripts/test.sh does) to build the real \
         peers from the Go module proxy",
        path.display()
    );
    path
}

/// A child process that is killed (and reaped) when dropped.
pub struct Guard(pub Option<Child>);

impl Guard {
    pub fn new(child: Child) -> Self {
        Guard(Some(child))
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.0.as_ref().map(|c| c.id())
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}
