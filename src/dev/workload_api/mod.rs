//! A SPIFFE Workload API double that behaves like a SPIRE agent, for tests and
//! `spiffe-aws-agent dev`.
//!
//! It serves the real gRPC protocol (generated from `proto/workload.proto`) on a unix socket,
//! so the agent under test talks to it through the same `spiffe` crate client it uses against
//! SPIRE. What matters for the agent is reproduced as SPIRE does it:
//!
//! - every call must carry the metadata `workload.spiffe.io: true`, else it fails with
//!   `InvalidArgument` "security header missing from request";
//! - `FetchX509SVID` is a server stream: the full current state first, then a new full state
//!   on every change ([`WorkloadApiDouble::set_svids`], [`WorkloadApiDouble::set_bundle`]);
//! - with no identity (an empty SVID list, or after [`WorkloadApiDouble::deny`]) calls fail
//!   with `PermissionDenied` "no identity issued", and so do streams already open; the
//!   `spiffe` crate maps that message to `WorkloadApiError::NoIdentityIssued`;
//! - `FetchX509Bundles` streams the trust bundle under the same rules;
//! - `FetchJWTSVID` mints a JWT-SVID per identity (or only the one asked for by `spiffe_id`)
//!   for the audiences asked for, signed by the trust domain's [`JwtAuthority`]; no audience is
//!   `InvalidArgument` "audience must be specified", as in SPIRE. `FetchJWTBundles` streams
//!   the trust domain's JWKS; `ValidateJWTSVID` verifies a token against it.
//!
//! The double serves what it is given without validating it, so tests can also send broken
//! material (a key that does not match its certificate, a wrong SPIFFE ID).
//!
//! It stands for a SPIRE agent's Workload API (checked against real SPIRE v1.13.3 in
//! `tests/real_spire.rs`) where SPIRE cannot act on demand: rotation or withdrawal at an exact
//! moment, several SVIDs for one workload, P-384 or broken SVIDs, a stalled or absent agent.
//!
//! [`DelegatedIdentityDouble`] is the same SPIRE agent's admin socket: the Delegated Identity
//! API that per-caller mode asks about each caller (see its module docs for what it stands
//! for).

mod delegated;
mod svid;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status};

use crate::dev::jwt::{self, JwtAuthority};

pub use delegated::{DelegatedIdentityDouble, Registration};
pub use svid::{SvidEntry, SvidIssuer};

/// Code generated from `proto/workload.proto` by `build.rs`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::large_enum_variant
)]
pub(crate) mod pb {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));

    // `build.rs` skips the derived Debug for this message because it carries a private key.
    impl std::fmt::Debug for X509svid {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("X509svid")
                .field("spiffe_id", &self.spiffe_id)
                .field("x509_svid_len", &self.x509_svid.len())
                .field("x509_svid_key", &"<redacted>")
                .field("bundle_len", &self.bundle.len())
                .field("hint", &self.hint)
                .finish()
        }
    }
}

use pb::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};

/// The metadata key every Workload API call must carry with the value `true`; it keeps a
/// browser or SSRF-style request from reaching the API by accident.
const SECURITY_HEADER: &str = "workload.spiffe.io";
/// SPIRE's status message when the security header is absent or wrong.
const SECURITY_HEADER_MISSING: &str = "security header missing from request";
/// SPIRE's status message when the caller has no registration entry; the `spiffe` crate
/// matches on this text to report `NoIdentityIssued`.
const NO_IDENTITY_ISSUED: &str = "no identity issued";
/// How long [`WorkloadApiDouble::shutdown`] waits for connections to drain before it stops
/// the server forcibly.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why the double could not be built or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadApiDoubleError {
    /// The certificate chain PEM of an SVID could not be read.
    #[error("the certificate chain for {spiffe_id} is unusable: {reason}")]
    CertificatePem {
        /// The SPIFFE ID the chain was loaded for.
        spiffe_id: String,
        /// What was wrong (never contains key material).
        reason: String,
    },
    /// The private key PEM of an SVID could not be read or converted to PKCS#8.
    #[error("the private key for {spiffe_id} is unusable: {reason}")]
    KeyPem {
        /// The SPIFFE ID the key was loaded for.
        spiffe_id: String,
        /// What was wrong (a fixed description; the key is never quoted).
        reason: String,
    },
    /// The CA certificate or key given to [`SvidIssuer`] is unusable.
    #[error("the SVID issuing CA is unusable: {reason}; check the CA certificate and key PEM")]
    IssuerCa {
        /// What was wrong (never contains key material).
        reason: String,
    },
    /// The SPIFFE ID to issue an SVID for is not a valid SPIFFE ID.
    #[error("{spiffe_id:?} is not a valid SPIFFE ID: {reason}")]
    InvalidSpiffeId {
        /// The rejected ID.
        spiffe_id: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The requested SVID lifetime does not fit in a certificate validity period.
    #[error("an SVID lifetime of {ttl:?} is out of range")]
    Ttl {
        /// The requested lifetime.
        ttl: Duration,
    },
    /// The system random number generator failed while drawing a serial number.
    #[error("the system random number generator failed")]
    Random,
    /// rcgen could not build or sign the SVID.
    #[error("could not issue an X.509-SVID for {spiffe_id}: {source}")]
    Issue {
        /// The SPIFFE ID being issued.
        spiffe_id: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// The trust bundle passed to [`WorkloadApiDouble::start`] has no certificate; the
    /// Workload API requires one, and clients reject responses without it.
    #[error("the trust bundle is empty; pass at least one CA certificate (DER)")]
    EmptyBundle,
    /// The socket path exists and is not a socket, so it is not a stale socket to replace.
    #[error("{path} exists and is not a unix socket; refusing to replace it")]
    SocketPathOccupied {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket path could not be resolved, inspected or cleared.
    #[error("cannot prepare the Workload API socket path {path}: {source}")]
    SocketPath {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Listening on the socket failed (missing directory, permissions, path too long).
    #[error("cannot listen on the Workload API socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What every call and stream sees: replaced as a whole on each change and broadcast through
/// a watch channel, so every open stream re-sends the full state (as the protocol requires).
#[derive(Clone)]
struct Snapshot {
    svids: Arc<Vec<SvidEntry>>,
    bundle_der: Arc<Vec<Vec<u8>>>,
    /// How JWT-SVIDs are minted.
    jwt: Arc<JwtSettings>,
    /// Set by [`WorkloadApiDouble::deny`]; cleared by a non-empty `set_svids`.
    denied: bool,
    /// Set on shutdown so open streams end instead of holding the server open.
    closing: bool,
}

impl Snapshot {
    /// Fails like SPIRE when the caller has no identity, and ends streams on shutdown.
    fn check_identity(&self) -> Result<(), Status> {
        if self.closing {
            return Err(Status::unavailable(
                "the Workload API double is shutting down",
            ));
        }
        if self.denied || self.svids.is_empty() {
            return Err(Status::permission_denied(NO_IDENTITY_ISSUED));
        }
        Ok(())
    }

    fn x509_svid_response(&self) -> Result<pb::X509svidResponse, Status> {
        self.check_identity()?;
        let bundle = self.bundle_der.concat();
        let svids = self
            .svids
            .iter()
            .map(|svid| pb::X509svid {
                spiffe_id: svid.spiffe_id.clone(),
                x509_svid: svid.concatenated_chain(),
                x509_svid_key: svid.key_pkcs8_der.clone(),
                bundle: bundle.clone(),
                hint: svid.hint.clone(),
            })
            .collect();
        Ok(pb::X509svidResponse {
            svids,
            crl: Vec::new(),
            federated_bundles: HashMap::new(),
        })
    }

    /// The bundle keyed by the trust domain ID (`spiffe://example.org`) of every SVID served;
    /// the double models a single trust domain, so they all share the one bundle.
    fn x509_bundles_response(&self) -> Result<pb::X509BundlesResponse, Status> {
        self.check_identity()?;
        let bundle = self.bundle_der.concat();
        let bundles = self
            .svids
            .iter()
            .filter_map(|svid| spiffe::SpiffeId::new(&svid.spiffe_id).ok())
            .map(|id| (id.trust_domain().id_string(), bundle.clone()))
            .collect();
        Ok(pb::X509BundlesResponse {
            crl: Vec::new(),
            bundles,
        })
    }
}

/// The issuer `iss` of the double's JWT-SVIDs unless changed: a SPIRE server's `jwt_issuer`,
/// the URL its OIDC discovery provider serves and IAM registers as an OIDC identity provider.
pub const DEV_JWT_ISSUER: &str = "https://oidc-discovery.example.org";
/// How long the double's JWT-SVIDs live unless changed (SPIRE's default JWT-SVID TTL).
pub const DEV_JWT_TTL: Duration = Duration::from_secs(300);

/// How JWT-SVIDs are minted: the trust domain's signing key, the `iss` claim, and validity.
struct JwtSettings {
    authority: Arc<JwtAuthority>,
    issuer: Option<String>,
    /// `iat` is this long before now (0 unless a test wants a stale token).
    issued_ago: Duration,
    ttl: Duration,
}

impl Snapshot {
    /// SPIRE's `FetchJWTSVID`: audience required; one token per identity, or the one asked
    /// for; none at all is "no identity issued".
    fn jwt_svid_response(
        &self,
        request: &pb::JwtsvidRequest,
    ) -> Result<pb::JwtsvidResponse, Status> {
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if !request.spiffe_id.is_empty() {
            spiffe::SpiffeId::new(&request.spiffe_id).map_err(|e| {
                Status::invalid_argument(format!("invalid requested SPIFFE ID: {e}"))
            })?;
        }
        self.check_identity()?;
        let now = std::time::SystemTime::now();
        let jwt = &self.jwt;
        let mut svids = Vec::new();
        for svid in self.svids.iter() {
            if !request.spiffe_id.is_empty() && svid.spiffe_id != request.spiffe_id {
                continue;
            }
            let token = jwt
                .authority
                .mint_svid(
                    &svid.spiffe_id,
                    &request.audience,
                    jwt.issuer.as_deref(),
                    now - jwt.issued_ago,
                    jwt.ttl,
                )
                .ok_or_else(|| Status::internal("could not sign the JWT-SVID"))?;
            svids.push(pb::Jwtsvid {
                spiffe_id: svid.spiffe_id.clone(),
                svid: token,
                hint: svid.hint.clone(),
            });
        }
        if svids.is_empty() {
            return Err(Status::permission_denied(NO_IDENTITY_ISSUED));
        }
        Ok(pb::JwtsvidResponse { svids })
    }

    /// The trust domain's JWKS, keyed by the trust domain ID.
    fn jwt_bundles_response(&self) -> Result<pb::JwtBundlesResponse, Status> {
        self.check_identity()?;
        let jwks = jwt::jwks(&[&self.jwt.authority]).into_bytes();
        let bundles = self
            .svids
            .iter()
            .filter_map(|svid| spiffe::SpiffeId::new(&svid.spiffe_id).ok())
            .map(|id| (id.trust_domain().id_string(), jwks.clone()))
            .collect();
        Ok(pb::JwtBundlesResponse { bundles })
    }

    /// SPIRE's `ValidateJWTSVID`: signature, expiry and audience, against the trust
    /// domain's JWKS; failures are `InvalidArgument`.
    fn validate_jwt_svid(
        &self,
        request: &pb::ValidateJwtsvidRequest,
    ) -> Result<pb::ValidateJwtsvidResponse, Status> {
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if request.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let jwks = jwt::jwks(&[&self.jwt.authority]);
        let verified = jwt::verify(&request.svid, &jwks, std::time::SystemTime::now())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !verified.audiences().contains(&request.audience.as_str()) {
            return Err(Status::invalid_argument(format!(
                "expected audience in {:?} (audience={:?})",
                request.audience,
                verified.audiences()
            )));
        }
        let spiffe_id = verified
            .str_claim("sub")
            .filter(|s| spiffe::SpiffeId::new(s).is_ok())
            .ok_or_else(|| Status::invalid_argument("the sub claim is not a SPIFFE ID"))?
            .to_owned();
        let claims = prost_types::Struct {
            fields: verified
                .claims
                .iter()
                .map(|(k, v)| (k.clone(), to_prost(v)))
                .collect(),
        };
        Ok(pb::ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(claims),
        })
    }
}

/// A JSON value as a `google.protobuf.Value`.
fn to_prost(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_prost).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// State shared by the handle and the gRPC service.
struct Shared {
    state: watch::Sender<Snapshot>,
    fetch_x509_svid_calls: AtomicUsize,
    /// Every `FetchJWTSVID` request that carried the security header: (audiences, spiffe_id).
    jwt_svid_requests: std::sync::Mutex<Vec<(Vec<String>, String)>>,
}

/// A running Workload API double; see the [module docs](self).
///
/// Dropping it stops the server without waiting; [`shutdown`](Self::shutdown) also waits for
/// it to stop. Either way the socket file is removed.
pub struct WorkloadApiDouble {
    shared: Arc<Shared>,
    socket_path: PathBuf,
    /// Device and inode of the socket this double created, so cleanup never removes a socket
    /// that a newer double (a simulated agent restart) has since bound at the same path.
    socket_id: Option<(u64, u64)>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl std::fmt::Debug for WorkloadApiDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadApiDouble")
            .field("socket_path", &self.socket_path)
            .finish_non_exhaustive()
    }
}

impl WorkloadApiDouble {
    /// Starts serving on `socket_path` (made absolute; a stale socket there is removed) with
    /// `svids` (the first is the default identity) and the trust domain's CA certificates
    /// `bundle_der`. An empty `svids` starts in the "no identity issued" state.
    ///
    /// Must be called within a tokio runtime; the server runs as a background task.
    pub async fn start(
        socket_path: impl Into<PathBuf>,
        svids: Vec<SvidEntry>,
        bundle_der: Vec<Vec<u8>>,
    ) -> Result<Self, WorkloadApiDoubleError> {
        if bundle_der.is_empty() {
            return Err(WorkloadApiDoubleError::EmptyBundle);
        }
        let requested = socket_path.into();
        let socket_path = std::path::absolute(&requested).map_err(|source| {
            WorkloadApiDoubleError::SocketPath {
                path: requested.clone(),
                source,
            }
        })?;
        remove_stale_socket(&socket_path)?;
        let listener =
            UnixListener::bind(&socket_path).map_err(|source| WorkloadApiDoubleError::Bind {
                path: socket_path.clone(),
                source,
            })?;
        let socket_id = std::fs::symlink_metadata(&socket_path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));

        let authority = JwtAuthority::generate().map_err(|_| WorkloadApiDoubleError::Random)?;
        let (state, _) = watch::channel(Snapshot {
            svids: Arc::new(svids),
            bundle_der: Arc::new(bundle_der),
            jwt: Arc::new(JwtSettings {
                authority: Arc::new(authority),
                issuer: Some(DEV_JWT_ISSUER.to_owned()),
                issued_ago: Duration::ZERO,
                ttl: DEV_JWT_TTL,
            }),
            denied: false,
            closing: false,
        });
        let shared = Arc::new(Shared {
            state,
            fetch_x509_svid_calls: AtomicUsize::new(0),
            jwt_svid_requests: std::sync::Mutex::new(Vec::new()),
        });
        let service = SpiffeWorkloadApiServer::new(Service {
            shared: Arc::clone(&shared),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    // Either an explicit stop or the handle being dropped ends the server.
                    let _ = stopped.await;
                }),
        );
        tracing::debug!(socket = %socket_path.display(), "Workload API double listening");
        Ok(Self {
            shared,
            socket_path,
            socket_id,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// The address clients dial: `unix://` followed by the absolute socket path, the form
    /// `SPIFFE_ENDPOINT_SOCKET` takes.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket_path.display())
    }

    /// The absolute path of the socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Replaces the served SVIDs and pushes the new full state to every open stream (a
    /// rotation, or identities added or removed). A non-empty list also lifts
    /// [`deny`](Self::deny); an empty list means "no identity issued".
    pub fn set_svids(&self, svids: Vec<SvidEntry>) {
        self.shared.state.send_modify(|state| {
            state.denied = state.denied && svids.is_empty();
            state.svids = Arc::new(svids);
        });
    }

    /// Replaces the trust bundle (CA certificates, DER) and pushes the new full state to every
    /// open stream, as SPIRE does when the trust domain's CA rotates. An empty bundle is
    /// served as is, which clients reject.
    pub fn set_bundle(&self, bundle_der: Vec<Vec<u8>>) {
        self.shared.state.send_modify(|state| {
            state.bundle_der = Arc::new(bundle_der);
        });
    }

    /// Withdraws the caller's identity, as SPIRE does when its registration entry is deleted:
    /// open streams fail with `PermissionDenied` "no identity issued" and so do new calls,
    /// until [`set_svids`](Self::set_svids) is called with a non-empty list.
    pub fn deny(&self) {
        self.shared.state.send_modify(|state| state.denied = true);
    }

    /// How many `FetchX509SVID` calls carrying the security header have arrived, including
    /// those answered with `PermissionDenied`; lets tests check reconnect and caching
    /// behaviour.
    pub fn fetch_x509_svid_calls(&self) -> usize {
        self.shared.fetch_x509_svid_calls.load(Ordering::SeqCst)
    }

    /// The trust domain's JWT bundle (JWKS): what `FetchJWTBundles` serves and what an IAM
    /// OIDC identity provider for [`DEV_JWT_ISSUER`] would fetch.
    pub fn jwt_bundle(&self) -> String {
        jwt::jwks(&[&self.shared.state.borrow().jwt.authority])
    }

    /// Replaces the JWT signing key (a new `kid`), as SPIRE does when its JWT key rotates;
    /// `FetchJWTBundles` streams push the new JWKS.
    pub fn rotate_jwt_authority(&self) -> Result<(), WorkloadApiDoubleError> {
        let authority = JwtAuthority::generate().map_err(|_| WorkloadApiDoubleError::Random)?;
        self.shared.state.send_modify(|state| {
            state.jwt = Arc::new(JwtSettings {
                authority: Arc::new(authority),
                issuer: state.jwt.issuer.clone(),
                issued_ago: state.jwt.issued_ago,
                ttl: state.jwt.ttl,
            });
        });
        Ok(())
    }

    /// Sets the `iss` claim of new JWT-SVIDs (`None`: none, as SPIRE without `jwt_issuer`).
    pub fn set_jwt_issuer(&self, issuer: Option<&str>) {
        self.shared.state.send_modify(|state| {
            state.jwt = Arc::new(JwtSettings {
                authority: Arc::clone(&state.jwt.authority),
                issuer: issuer.map(str::to_owned),
                issued_ago: state.jwt.issued_ago,
                ttl: state.jwt.ttl,
            });
        });
    }

    /// Mints new JWT-SVIDs issued `issued_ago` before now and valid for `ttl` from then: a
    /// token already expired when `issued_ago > ttl` (a SPIRE agent with a skewed clock).
    pub fn set_jwt_validity(&self, issued_ago: Duration, ttl: Duration) {
        self.shared.state.send_modify(|state| {
            state.jwt = Arc::new(JwtSettings {
                authority: Arc::clone(&state.jwt.authority),
                issuer: state.jwt.issuer.clone(),
                issued_ago,
                ttl,
            });
        });
    }

    /// Every `FetchJWTSVID` request so far (with the security header): its audiences and
    /// requested SPIFFE ID (empty: all).
    pub fn jwt_svid_requests(&self) -> Vec<(Vec<String>, String)> {
        crate::dev::lock(&self.shared.jwt_svid_requests).clone()
    }

    /// Ends open streams (`Unavailable`), stops the server and removes the socket file. Waits
    /// up to three seconds for connections to drain before aborting the server task.
    pub async fn shutdown(mut self) {
        self.shared.state.send_modify(|state| state.closing = true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => {
                    tracing::debug!(%error, "Workload API double stopped with an error");
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "Workload API double task failed");
                }
                Err(_) => {
                    tracing::debug!("Workload API double did not drain in time; aborting");
                    server.abort();
                }
            }
        }
        self.remove_own_socket();
    }

    /// Removes the socket file if it is still the one this double bound.
    fn remove_own_socket(&self) {
        let path = &self.socket_path;
        let still_ours = std::fs::symlink_metadata(path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()))
            .is_some_and(|id| Some(id) == self.socket_id);
        if !still_ours {
            return;
        }
        if let Err(error) = std::fs::remove_file(path) {
            tracing::debug!(%error, socket = %path.display(), "could not remove the socket");
        }
    }
}

impl Drop for WorkloadApiDouble {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.shared.state.send_modify(|state| state.closing = true);
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            server.abort();
            self.remove_own_socket();
        }
    }
}

/// Removes a socket left behind by an earlier run (bind fails with `AddrInUse` otherwise), but
/// never a regular file or directory that happens to sit at the path.
fn remove_stale_socket(path: &Path) -> Result<(), WorkloadApiDoubleError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| WorkloadApiDoubleError::SocketPath {
                path: path.to_owned(),
                source,
            })
        }
        Ok(_) => Err(WorkloadApiDoubleError::SocketPathOccupied {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(WorkloadApiDoubleError::SocketPath {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Rejects calls without exactly one `workload.spiffe.io: true`, as SPIRE does.
fn check_security_header<T>(request: &Request<T>) -> Result<(), Status> {
    let mut values = request.metadata().get_all(SECURITY_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if value.as_bytes() == b"true" => Ok(()),
        _ => Err(Status::invalid_argument(SECURITY_HEADER_MISSING)),
    }
}

/// Streams `build(state)` now and after every state change. An error is sent as the stream's
/// final status, which is how SPIRE ends a stream whose identity was withdrawn.
///
/// The first message is built before the call is answered, so a caller without an identity
/// gets the error as the call's status rather than from an empty stream.
fn state_stream<T, F>(
    mut state: watch::Receiver<Snapshot>,
    build: F,
) -> Result<ReceiverStream<Result<T, Status>>, Status>
where
    T: Send + 'static,
    F: Fn(&Snapshot) -> Result<T, Status> + Send + 'static,
{
    let first = build(&state.borrow_and_update())?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut next = Ok(first);
        loop {
            let last = next.is_err();
            if tx.send(next).await.is_err() || last {
                return;
            }
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
            next = build(&state.borrow_and_update());
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// The gRPC service; all state lives in [`Shared`].
struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = ReceiverStream<Result<pb::X509svidResponse, Status>>;
    type FetchX509BundlesStream = ReceiverStream<Result<pb::X509BundlesResponse, Status>>;
    type FetchJWTBundlesStream = ReceiverStream<Result<pb::JwtBundlesResponse, Status>>;

    async fn fetch_x509svid(
        &self,
        request: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_security_header(&request)?;
        self.shared
            .fetch_x509_svid_calls
            .fetch_add(1, Ordering::SeqCst);
        let stream = state_stream(self.shared.state.subscribe(), Snapshot::x509_svid_response)?;
        Ok(Response::new(stream))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_security_header(&request)?;
        let stream = state_stream(
            self.shared.state.subscribe(),
            Snapshot::x509_bundles_response,
        )?;
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        check_security_header(&request)?;
        let request = request.into_inner();
        crate::dev::lock(&self.shared.jwt_svid_requests)
            .push((request.audience.clone(), request.spiffe_id.clone()));
        let state = self.shared.state.borrow().clone();
        Ok(Response::new(state.jwt_svid_response(&request)?))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_security_header(&request)?;
        let stream = state_stream(
            self.shared.state.subscribe(),
            Snapshot::jwt_bundles_response,
        )?;
        Ok(Response::new(stream))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        check_security_header(&request)?;
        let state = self.shared.state.borrow().clone();
        Ok(Response::new(state.validate_jwt_svid(request.get_ref())?))
    }
}
