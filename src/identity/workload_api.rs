//! An identity from the SPIFFE Workload API (a SPIRE agent), through the `spiffe` crate.
//!
//! [`fetch_once`] is for one-shot use (`credential-process`): it asks once and reports the
//! real cause of a failure (no socket, no identity, bad SVID) instead of retrying forever,
//! which is what a long-running watcher should do and a process run by an AWS SDK must not.

use std::time::{Duration, SystemTime};

use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::workload_api::error::WorkloadApiError as SpiffeError;
use spiffe::{WorkloadApiClient, X509Svid};

use super::{IdentityError, Origin, X509Identity};

/// Why the Workload API gave no usable SVID.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadApiError {
    #[error("invalid SPIFFE Workload API address {address:?}: {reason} (expected unix:///path/to/agent.sock or tcp://IP:port)")]
    BadAddress { address: String, reason: String },
    #[error("cannot reach the SPIFFE Workload API at {address}: {reason}; is the SPIRE agent running and is the socket path right?")]
    Unreachable { address: String, reason: String },
    #[error("the SPIFFE Workload API at {address} issued no identity to this process ({reason}); check the SPIRE registration entries (selectors) for this workload")]
    NoIdentity { address: String, reason: String },
    #[error("the SPIFFE Workload API at {address} did not answer within {seconds}s")]
    Timeout { address: String, seconds: u64 },
    #[error(
        "the SPIFFE Workload API at {address} sent an X.509-SVID that is not usable: {reason}"
    )]
    BadSvid { address: String, reason: String },
    #[error("the SPIFFE Workload API at {address} has no SVID with SPIFFE ID or hint {wanted:?}; it offers: {available}")]
    NoMatchingSvid {
        address: String,
        wanted: String,
        available: String,
    },
}

/// The address to dial for `address` as a user wrote it: a bare absolute path is accepted as
/// a convenience (`/run/spire/agent.sock` becomes `unix:///run/spire/agent.sock`).
pub fn normalize_address(address: &str) -> String {
    if address.starts_with('/') {
        format!("unix://{address}")
    } else {
        address.to_owned()
    }
}

/// Fetches the SVIDs once and returns the one selected by `spiffe_id` (matching the SPIFFE
/// ID or the hint), or the first (the Workload API's default) when none is asked for.
pub async fn fetch_once(
    address: &str,
    spiffe_id: Option<&str>,
    timeout: Duration,
    now: SystemTime,
) -> Result<X509Identity, IdentityError> {
    let fetch = async {
        let client = WorkloadApiClient::connect_to(address)
            .await
            .map_err(|e| classify(address, e))?;
        client
            .fetch_all_x509_svids()
            .await
            .map_err(|e| classify(address, e))
    };
    let svids =
        tokio::time::timeout(timeout, fetch)
            .await
            .map_err(|_| WorkloadApiError::Timeout {
                address: address.to_owned(),
                seconds: timeout.as_secs(),
            })??;
    let svid = select(address, &svids, spiffe_id)?;
    identity_from_svid(svid, now)
}

/// Every SVID and the trust bundles the Workload API gives this process, once (`inspect`).
pub async fn fetch_context(
    address: &str,
    timeout: Duration,
) -> Result<spiffe::X509Context, WorkloadApiError> {
    let fetch = async {
        let client = WorkloadApiClient::connect_to(address)
            .await
            .map_err(|e| classify(address, e))?;
        client
            .fetch_x509_context()
            .await
            .map_err(|e| classify(address, e))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| WorkloadApiError::Timeout {
            address: address.to_owned(),
            seconds: timeout.as_secs(),
        })?
}

/// Picks the SVID to use: by SPIFFE ID or hint when asked, else the first.
pub fn select<'a>(
    address: &str,
    svids: &'a [X509Svid],
    wanted: Option<&str>,
) -> Result<&'a X509Svid, WorkloadApiError> {
    let found = match wanted {
        None => svids.first(),
        Some(w) => svids
            .iter()
            .find(|s| s.spiffe_id().to_string() == w || s.hint() == Some(w)),
    };
    found.ok_or_else(|| {
        let available: Vec<String> = svids.iter().map(|s| s.spiffe_id().to_string()).collect();
        WorkloadApiError::NoMatchingSvid {
            address: address.to_owned(),
            wanted: wanted.unwrap_or_default().to_owned(),
            available: if available.is_empty() {
                "nothing".into()
            } else {
                available.join(", ")
            },
        }
    })
}

/// Turns an SVID into a validated identity (leaf + intermediates + PKCS#8 key).
pub fn identity_from_svid(svid: &X509Svid, now: SystemTime) -> Result<X509Identity, IdentityError> {
    let chain: Vec<Vec<u8>> = svid
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    X509Identity::new(chain, &key, Origin::WorkloadApi, now)
}

/// Shared so the long-running source can reuse the same wording.
pub fn classify(address: &str, e: SpiffeError) -> WorkloadApiError {
    let address = address.to_owned();
    match e {
        SpiffeError::MissingEndpointSocket => WorkloadApiError::BadAddress {
            address,
            reason: "no address".into(),
        },
        SpiffeError::Endpoint(err) => WorkloadApiError::BadAddress {
            address,
            reason: err.to_string(),
        },
        SpiffeError::NoIdentityIssued => WorkloadApiError::NoIdentity {
            address,
            reason: "no identity issued".into(),
        },
        SpiffeError::PermissionDenied(msg) => WorkloadApiError::NoIdentity {
            address,
            reason: format!("permission denied: {msg}"),
        },
        SpiffeError::EmptyResponse => WorkloadApiError::NoIdentity {
            address,
            reason: "empty response".into(),
        },
        SpiffeError::X509Svid(err) => WorkloadApiError::BadSvid {
            address,
            reason: err.to_string(),
        },
        SpiffeError::SpiffeId(err) => WorkloadApiError::BadSvid {
            address,
            reason: format!("bad SPIFFE ID: {err}"),
        },
        SpiffeError::MissingRequiredField { field }
        | SpiffeError::InvalidResponseField { field } => WorkloadApiError::BadSvid {
            address,
            reason: format!("malformed response field {field}"),
        },
        other => WorkloadApiError::Unreachable {
            address,
            reason: crate::display::error_chain(&other),
        },
    }
}
