//! Where an agent's or a one-shot call's X.509 identity comes from, as plain data
//! ([`IdentitySpec`]), and the two ways to use it: fetch once, or follow changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::files::KeyPassword;
use super::watch::{spawn_files, spawn_workload_api, Snapshot};
use super::{files, workload_api, IdentityError, X509Identity};
use crate::clock::Clock;

/// How long a one-shot fetch waits for the Workload API unless told otherwise.
pub const DEFAULT_WORKLOAD_API_TIMEOUT: Duration = Duration::from_secs(10);
/// How often certificate files are checked for renewal by a long-running agent.
pub(super) const FILE_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// An identity source, resolved but not yet contacted.
#[derive(Debug, Clone)]
pub enum IdentitySpec {
    /// Files, as `aws_signing_helper` takes them: PEM certificate and key, or (no
    /// `private_key`) one file with both, PEM or PKCS#12.
    Files {
        certificate: PathBuf,
        private_key: Option<PathBuf>,
        intermediates: Option<PathBuf>,
        /// For an encrypted PKCS#8 key or a PKCS#12 file.
        password: Option<KeyPassword>,
    },
    /// The SPIFFE Workload API (a SPIRE agent).
    WorkloadApi {
        /// `unix:///path` or `tcp://IP:port`.
        address: String,
        /// Which SVID a one-shot fetch uses (SPIFFE ID or hint); `None`: the default SVID.
        spiffe_id: Option<String>,
        /// How long a one-shot fetch waits.
        timeout: Duration,
    },
}

impl IdentitySpec {
    /// Fetches and validates the identity once.
    pub async fn fetch_once(&self, clock: &dyn Clock) -> Result<X509Identity, IdentityError> {
        match self {
            IdentitySpec::Files {
                certificate,
                private_key,
                intermediates,
                password,
            } => files::load_any(
                certificate,
                private_key.as_deref(),
                intermediates.as_deref(),
                password.as_ref(),
                clock.now(),
            ),
            IdentitySpec::WorkloadApi {
                address,
                spiffe_id,
                timeout,
            } => {
                workload_api::fetch_once(address, spiffe_id.as_deref(), *timeout, clock.now()).await
            }
        }
    }

    /// Follows the source: every change (rotation, withdrawal, renewed files) is published
    /// on the returned channel by the returned task, until the receivers are dropped.
    pub fn watch(
        &self,
        clock: Arc<dyn Clock>,
    ) -> (watch::Receiver<Snapshot>, tokio::task::JoinHandle<()>) {
        match self {
            IdentitySpec::Files {
                certificate,
                private_key,
                intermediates,
                password,
            } => spawn_files(
                certificate.clone(),
                private_key.clone(),
                intermediates.clone(),
                password.clone(),
                FILE_POLL_INTERVAL,
                clock,
            ),
            IdentitySpec::WorkloadApi { address, .. } => spawn_workload_api(address.clone(), clock),
        }
    }
}
