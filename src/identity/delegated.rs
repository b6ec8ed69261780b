//! Other processes' X.509-SVIDs from SPIRE's Delegated Identity API, for per-caller mode.
//!
//! The SPIRE agent serves the API on its admin socket (not the Workload API socket) to the
//! delegates listed in its `authorized_delegates`. `SubscribeToX509SVIDs` with a `pid` makes
//! the SPIRE agent attest that process itself (SPIRE ≥ 1.10) and stream the SVIDs registered
//! for it: the full set first, then the full set again on every change (rotation, an entry
//! added or removed; an empty set when nothing is left). The attestation happens once, when
//! the stream opens; after that the stream follows the selectors SPIRE found, so it keeps
//! reporting rotations and removals of that workload's identities even after the process is
//! gone. The caller of the API must make sure the pid was not reused while SPIRE attested it
//! (see `serve::agent_socket`, which compares the process start time before and after).
//!
//! The client is the `spire-api` crate's generated one on a channel from the `spiffe` crate's
//! connector: every SVID of the response is used, not only the first.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use spire_api::pb::spire::api::agent::delegatedidentity::v1::delegated_identity_client::DelegatedIdentityClient;
use spire_api::pb::spire::api::agent::delegatedidentity::v1::{
    SubscribeToX509sviDsRequest, SubscribeToX509sviDsResponse,
};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use super::watch::Entry;
use super::{IdentityError, Origin, X509Identity};
use crate::clock::Clock;

/// How long the first answer of a subscription may take.
pub const DEFAULT_ATTEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the Delegated Identity API gave no answer about a process.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DelegatedError {
    #[error("invalid SPIRE admin socket address {address:?}: {reason} (expected unix:///path/to/admin.sock)")]
    BadAddress { address: String, reason: String },
    #[error("cannot reach the SPIRE agent's admin socket at {address}: {reason}; is the SPIRE agent running with admin_socket_path set, and is the socket mounted here?")]
    Unreachable { address: String, reason: String },
    #[error("the SPIRE agent at {address} refused this agent as a delegate ({reason}); add this agent's SPIFFE ID to the SPIRE agent's authorized_delegates")]
    NotAuthorized { address: String, reason: String },
    #[error("the SPIRE agent at {address} answered {code:?}: {reason}")]
    Status {
        address: String,
        code: tonic::Code,
        reason: String,
    },
    #[error("the SPIRE agent at {address} did not answer within {seconds} s")]
    Timeout { address: String, seconds: u64 },
    #[error("the SPIRE agent at {address} closed the subscription without an answer")]
    Ended { address: String },
}

/// The process at the other end of a unix socket, as the kernel reported it (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProcess {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Display for PeerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}, uid {}, gid {}", self.pid, self.uid, self.gid)
    }
}

/// Why a process could not be attested.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttestError {
    #[error("SPIRE issued no SVID to this process ({process}): register it with the SPIRE server (for example with the selector unix:uid:{uid}, or k8s selectors for a pod)", uid = process.uid)]
    NoIdentity { process: PeerProcess },
    #[error(
        "this process ({process}) ended or its pid was reused while SPIRE attested it; refusing"
    )]
    PidReused { process: PeerProcess },
    #[error("cannot read the start time of this process ({process}) from /proc: {reason}; per-caller mode needs the host's pid namespace (hostPID: true on Kubernetes)")]
    NoStartTime {
        process: PeerProcess,
        reason: String,
    },
    #[error(transparent)]
    Api(#[from] DelegatedError),
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, clock ticks since boot):
/// with the pid, it names one process, so a pid reused in between is noticed.
pub fn process_start_time(pid: i32) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| std::io::Error::other("unexpected /proc/PID/stat format"))
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses itself, so fields are counted after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts with field 3 (state); field 22 is the 20th from there.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// A client of one SPIRE agent's Delegated Identity API; connects on first use and again
/// after a connection failure.
pub struct DelegatedIdentity {
    address: String,
    timeout: Duration,
    channel: Mutex<Option<Channel>>,
}

impl std::fmt::Debug for DelegatedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedIdentity")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The SVIDs SPIRE issued to one workload, as they change.
pub struct Subscription {
    address: String,
    stream: tonic::Streaming<SubscribeToX509sviDsResponse>,
    clock: Arc<dyn Clock>,
}

/// Checks an admin socket address as given by the user (`unix:///path`, or a bare absolute
/// path, which [`super::workload_api::normalize_address`] turns into one).
pub fn check_address(address: &str) -> Result<(), DelegatedError> {
    spiffe::transport::Endpoint::parse(address)
        .map(|_| ())
        .map_err(|e| DelegatedError::BadAddress {
            address: address.to_owned(),
            reason: e.to_string(),
        })
}

impl DelegatedIdentity {
    /// A client for the admin socket at `address` whose first answers may take `timeout`.
    pub fn new(address: String, timeout: Duration) -> Self {
        DelegatedIdentity {
            address,
            timeout,
            channel: Mutex::new(None),
        }
    }

    /// The admin socket's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    async fn channel(&self) -> Result<Channel, DelegatedError> {
        let mut slot = self.channel.lock().await;
        if let Some(channel) = &*slot {
            return Ok(channel.clone());
        }
        let endpoint = spiffe::transport::Endpoint::parse(&self.address).map_err(|e| {
            DelegatedError::BadAddress {
                address: self.address.clone(),
                reason: e.to_string(),
            }
        })?;
        let channel = spiffe::transport::connect(&endpoint).await.map_err(|e| {
            DelegatedError::Unreachable {
                address: self.address.clone(),
                reason: crate::display::error_chain(&e),
            }
        })?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Asks SPIRE to attest `pid` and returns the first set of SVIDs it issued to that
    /// process (empty when none), with the subscription that reports later changes.
    pub async fn subscribe(
        &self,
        pid: i32,
        clock: Arc<dyn Clock>,
    ) -> Result<(Vec<Entry>, Subscription), DelegatedError> {
        let attempt = async {
            let channel = self.channel().await?;
            let request = SubscribeToX509sviDsRequest {
                selectors: Vec::new(),
                pid,
            };
            let mut stream = DelegatedIdentityClient::new(channel)
                .subscribe_to_x509svi_ds(request)
                .await
                .map_err(|s| self.status_error(s))?
                .into_inner();
            let first = stream
                .message()
                .await
                .map_err(|s| self.status_error(s))?
                .ok_or_else(|| DelegatedError::Ended {
                    address: self.address.clone(),
                })?;
            Ok((first, stream))
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(DelegatedError::Timeout {
                address: self.address.clone(),
                seconds: self.timeout.as_secs(),
            }),
        };
        if matches!(
            result,
            Err(DelegatedError::Unreachable { .. } | DelegatedError::Timeout { .. })
        ) {
            // Dial again next time: the SPIRE agent may have restarted.
            *self.channel.lock().await = None;
        }
        let (first, stream) = result?;
        let entries = entries(&first, clock.now());
        Ok((
            entries,
            Subscription {
                address: self.address.clone(),
                stream,
                clock,
            },
        ))
    }

    /// Attests `process` with SPIRE and returns its SVIDs (at least one) and the
    /// subscription that reports their changes. The process's start time is read before
    /// asking and again after the answer: if it changed (or the process is gone), the pid
    /// may have been reused in between and the answer may describe another process, so it is
    /// refused.
    pub async fn attest(
        &self,
        process: PeerProcess,
        clock: Arc<dyn Clock>,
    ) -> Result<(Vec<Entry>, Subscription), AttestError> {
        let start_time = |process: PeerProcess| {
            process_start_time(process.pid).map_err(|e| AttestError::NoStartTime {
                process,
                reason: e.to_string(),
            })
        };
        let before = start_time(process)?;
        let (entries, subscription) = self.subscribe(process.pid, clock).await?;
        match process_start_time(process.pid) {
            Ok(after) if after == before => {}
            _ => return Err(AttestError::PidReused { process }),
        }
        if entries.is_empty() {
            return Err(AttestError::NoIdentity { process });
        }
        Ok((entries, subscription))
    }

    /// Asks SPIRE about this agent's own process and closes the subscription at once: it
    /// answers when the admin socket is reachable and this agent is an authorized delegate
    /// (whether or not SPIRE issues it an SVID), which is what per-caller mode needs to
    /// serve anyone.
    pub async fn probe(&self, clock: Arc<dyn Clock>) -> Result<(), DelegatedError> {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        self.subscribe(pid, clock).await.map(|_| ())
    }

    fn status_error(&self, status: tonic::Status) -> DelegatedError {
        status_error(&self.address, status)
    }
}

fn status_error(address: &str, status: tonic::Status) -> DelegatedError {
    let address = address.to_owned();
    let reason = status.message().to_owned();
    match status.code() {
        tonic::Code::PermissionDenied => DelegatedError::NotAuthorized { address, reason },
        tonic::Code::Unavailable | tonic::Code::Unknown if reason.contains("transport") => {
            DelegatedError::Unreachable { address, reason }
        }
        code => DelegatedError::Status {
            address,
            code,
            reason,
        },
    }
}

impl Subscription {
    /// The next full set of SVIDs; `None` when SPIRE closed the stream.
    pub async fn next(&mut self) -> Option<Result<Vec<Entry>, DelegatedError>> {
        match self.stream.message().await {
            Ok(Some(response)) => Some(Ok(entries(&response, self.clock.now()))),
            Ok(None) => None,
            Err(status) => Some(Err(status_error(&self.address, status))),
        }
    }
}

/// The SVIDs of a response, validated one by one (an unusable one is kept with its reason).
fn entries(response: &SubscribeToX509sviDsResponse, now: std::time::SystemTime) -> Vec<Entry> {
    response
        .x509_svids
        .iter()
        .filter_map(|with_key| {
            let svid = with_key.x509_svid.as_ref()?;
            let id = svid.id.as_ref()?;
            let spiffe_id = format!("spiffe://{}{}", id.trust_domain, id.path);
            let chain: Vec<Vec<u8>> = svid.cert_chain.iter().map(|c| c.to_vec()).collect();
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(with_key.x509_svid_key.to_vec()));
            let identity = X509Identity::new(chain, &key, Origin::WorkloadApi, now).and_then(|i| {
                // The ID SPIRE announces is the one roles are matched against; the leaf's URI
                // SAN is the one Roles Anywhere tags the session with. They must agree.
                if i.spiffe_id() == Some(spiffe_id.as_str()) {
                    Ok(i)
                } else {
                    Err(IdentityError::SpiffeIdMismatch {
                        announced: spiffe_id.clone(),
                        in_certificate: i.spiffe_id().unwrap_or_default().to_owned(),
                    })
                }
            });
            Some(Entry {
                spiffe_id: Some(spiffe_id),
                hint: (!svid.hint.is_empty()).then(|| svid.hint.clone()),
                identity: identity.map(Arc::new).map_err(Arc::new),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let line = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time("4242 (x) S 1"), None);
        let own = process_start_time(std::process::id() as i32).unwrap();
        assert_eq!(process_start_time(std::process::id() as i32).unwrap(), own);
    }
}
