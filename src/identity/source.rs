//! Where an agent's or a one-shot call's X.509 identity comes from, as plain data
//! ([`IdentitySpec`]), and the two ways to use it: fetch once, or follow changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::files::KeyPassword;
use super::pkcs11::{self, Pkcs11Spec};
use super::watch::{spawn_files, spawn_pkcs11, spawn_workload_api, ConnectionState, Snapshot};
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
    /// A key (and maybe its certificate) in a PKCS#11 token.
    Pkcs11(Pkcs11Spec),
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
            IdentitySpec::Pkcs11(spec) => {
                // Token calls block (and may ask for a PIN): keep them off the runtime.
                let (spec, now) = (spec.clone(), clock.now());
                tokio::task::spawn_blocking(move || pkcs11::load(&spec, now))
                    .await
                    .unwrap_or_else(|e| Err(pkcs11_task_failed(e)))
            }
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
        self.watch_reporting(clock, Arc::default())
    }

    /// [`watch`](Self::watch), keeping the Workload API connection's state in `connection`
    /// (certificate files leave it untouched).
    pub fn watch_reporting(
        &self,
        clock: Arc<dyn Clock>,
        connection: Arc<ConnectionState>,
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
            IdentitySpec::Pkcs11(spec) => spawn_pkcs11(spec.clone(), FILE_POLL_INTERVAL, clock),
            IdentitySpec::WorkloadApi { address, .. } => {
                spawn_workload_api(address.clone(), clock, connection)
            }
        }
    }
}

/// A PKCS#11 load whose thread died (a panic in the provider library, or shutdown).
pub(super) fn pkcs11_task_failed(e: tokio::task::JoinError) -> IdentityError {
    IdentityError::Pkcs11(pkcs11::Pkcs11Error::Interrupted(e.to_string()))
}
