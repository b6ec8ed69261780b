//! An in-process IAM Roles Anywhere double: an HTTPS `POST /sessions` (CreateSession) server
//! that authenticates requests the way the real service does.
//!
//! Why a verifying double: a double that accepts anything would let a broken signer pass every
//! test. This one re-derives the SigV4-X509 canonical request from the raw HTTP request it
//! received ([`canonical`]), checks the signature against the leaf certificate's public key and
//! the certificate path against the configured trust anchors ([`verify`]), and only then issues
//! credentials. It deliberately shares no code with the agent's signer
//! (`crate::rolesanywhere::signer`), so one bug cannot hide in both.
//!
//! What it records ([`RolesAnywhereDouble::calls`], [`RolesAnywhereDouble::issued`]) is what
//! tests assert on, and the issued secrets are what later doubles (STS, VPC Lattice) verify
//! HMAC SigV4 signatures against.
//!
//! It stands for IAM Roles Anywhere's `CreateSession` (no AWS account in tests). The real
//! `aws_signing_helper` is accepted by it (`tests/peer_signing_helper.rs`), and a trust anchor
//! can be any CA PEM, such as a real SPIRE server's bundle (`tests/real_spire.rs`).

mod canonical;
mod handler;
mod response;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::dev::pki;

/// Region the dev setup runs in.
pub const DEV_REGION: &str = "us-east-1";
/// Account the dev setup's ARNs live in.
pub const DEV_ACCOUNT: &str = "123456789012";
/// Trust anchor of the dev setup (the test PKI's root CA).
pub const DEV_TRUST_ANCHOR_ARN: &str =
    "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001";
/// Profile of the dev setup (allows [`DEV_ROLE_ARN_ORDERS`] and [`DEV_ROLE_ARN_REVIEWS`]).
pub const DEV_PROFILE_ARN: &str =
    "arn:aws:rolesanywhere:us-east-1:123456789012:profile/8a9f3d2e-0000-4000-8000-000000000002";
/// Role for the `orders` workload.
pub const DEV_ROLE_ARN_ORDERS: &str = "arn:aws:iam::123456789012:role/orders";
/// Role for the `reviews` workload.
pub const DEV_ROLE_ARN_REVIEWS: &str = "arn:aws:iam::123456789012:role/reviews";

/// The largest request body the double reads; larger ones get 413 (the real service also caps
/// request sizes, and an unbounded read would let a test hang the double).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take for the TLS handshake and the request head; a stuck client must not
/// keep a connection task alive forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the double trusts and serves.
#[derive(Clone, Debug)]
pub struct RolesAnywhereDoubleConfig {
    /// The only region the double accepts in the credential scope.
    pub region: String,
    /// Account used in the ARNs of issued sessions.
    pub account: String,
    /// Trust anchors, looked up by `trustAnchorArn`.
    pub trust_anchors: Vec<TrustAnchor>,
    /// Profiles, looked up by `profileArn`.
    pub profiles: Vec<Profile>,
    /// When set, issued credentials live this long whatever `durationSeconds` asked for, so
    /// refresh tests need not wait 15 minutes.
    pub credential_lifetime: Option<Duration>,
    /// How far `X-Amz-Date` may be from the double's clock (the real service allows 5 minutes).
    pub max_clock_skew: Duration,
    /// Where to listen; loopback by default.
    pub bind: SocketAddr,
}

impl Default for RolesAnywhereDoubleConfig {
    /// The dev setup: the test PKI's root CA as the one trust anchor and one profile that allows
    /// the `orders` and `reviews` roles.
    fn default() -> Self {
        Self {
            region: DEV_REGION.to_owned(),
            account: DEV_ACCOUNT.to_owned(),
            trust_anchors: vec![TrustAnchor {
                arn: DEV_TRUST_ANCHOR_ARN.to_owned(),
                ca_certs_pem: pki::ROOT_CA_PEM.to_owned(),
                enabled: true,
            }],
            profiles: vec![Profile {
                arn: DEV_PROFILE_ARN.to_owned(),
                role_arns: vec![
                    DEV_ROLE_ARN_ORDERS.to_owned(),
                    DEV_ROLE_ARN_REVIEWS.to_owned(),
                ],
                enabled: true,
            }],
            credential_lifetime: None,
            max_clock_skew: Duration::from_secs(5 * 60),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// A Roles Anywhere trust anchor: the CA certificates a signing certificate must chain to.
#[derive(Clone, Debug)]
pub struct TrustAnchor {
    /// The anchor's ARN, matched exactly against `trustAnchorArn`.
    pub arn: String,
    /// One or more PEM certificates; any of them may terminate the path.
    pub ca_certs_pem: String,
    /// A disabled anchor is refused like on the real service.
    pub enabled: bool,
}

/// A Roles Anywhere profile: which roles a session may assume.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The profile's ARN, matched exactly against `profileArn`.
    pub arn: String,
    /// Role ARNs this profile allows.
    pub role_arns: Vec<String>,
    /// A disabled profile is refused like on the real service.
    pub enabled: bool,
}

/// Why the double could not start.
#[derive(Debug, thiserror::Error)]
pub enum RolesAnywhereDoubleError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the config.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The compiled-in TLS server certificate or key is unusable.
    #[error("TLS server identity is unusable: {0}")]
    TlsIdentity(String),
    /// rustls refused the server configuration.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// A trust anchor's PEM holds no parseable CA certificate.
    #[error("trust anchor {arn} is unusable: {reason}")]
    TrustAnchor {
        /// The anchor's ARN.
        arn: String,
        /// What is wrong with its certificates.
        reason: String,
    },
}

/// A misbehaviour to inject instead of normal CreateSession handling, to test client error paths.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status, `X-Amzn-ErrorType` and JSON `message`.
    Status {
        /// HTTP status code (an invalid code becomes 500).
        status: u16,
        /// Value of `X-Amzn-ErrorType`, e.g. `ThrottlingException`.
        error_type: String,
        /// The JSON `message`.
        message: String,
    },
    /// 201 with a body that is not JSON.
    GarbageBody,
    /// 201 with `"credentialSet": []`.
    EmptyCredentialSet,
    /// Close the connection without any response.
    CloseConnection,
    /// Wait this long, then handle the request normally.
    Delay(Duration),
}

/// One request the double received, accepted or not.
///
/// Identity fields are filled as far as the request got: a request rejected for a bad signature
/// still records the leaf it presented (when the `X-Amz-X509` header parsed).
#[derive(Clone, Debug)]
pub struct RecordedCall {
    /// When the request arrived.
    pub at: SystemTime,
    /// Status sent; `0` when the connection was closed without a response
    /// ([`Fault::CloseConnection`]).
    pub status: u16,
    /// `X-Amzn-ErrorType` sent, if the call failed.
    pub error_type: Option<String>,
    /// Serial of the presented leaf, in decimal.
    pub leaf_serial_decimal: Option<String>,
    /// Lowercase hex SHA-256 of the presented leaf's DER.
    pub leaf_sha256_hex: Option<String>,
    /// First URI SAN of the presented leaf (the SPIFFE ID).
    pub spiffe_id: Option<String>,
    /// `roleArn` from the body or query.
    pub role_arn: Option<String>,
    /// `durationSeconds` from the body, if it was a valid u32.
    pub duration_seconds: Option<u32>,
}

/// A credential set the double handed out. Keeps the secrets so other doubles can verify HMAC
/// SigV4 signatures made with them; `Debug` redacts them.
#[derive(Clone)]
pub struct IssuedSession {
    /// `ASIA…` access key id.
    pub access_key_id: String,
    /// The secret access key (never in `Debug`).
    pub secret_access_key: String,
    /// The session token (never in `Debug`).
    pub session_token: String,
    /// When the credentials expire (whole seconds, as sent).
    pub expiration: SystemTime,
    /// The assumed role's ARN.
    pub role_arn: String,
    /// Session name: `roleSessionName`, else the leaf serial in hex.
    pub role_session_name: String,
    /// `arn:aws:sts::<account>:assumed-role/<role name>/<session name>`.
    pub assumed_role_arn: String,
    /// Account the role lives in.
    pub account: String,
    /// First URI SAN of the leaf (the SPIFFE ID).
    pub spiffe_id: Option<String>,
    /// Serial of the leaf, in decimal.
    pub leaf_serial_decimal: String,
}

impl fmt::Debug for IssuedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSession")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .field("role_arn", &self.role_arn)
            .field("role_session_name", &self.role_session_name)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .field("account", &self.account)
            .field("spiffe_id", &self.spiffe_id)
            .field("leaf_serial_decimal", &self.leaf_serial_decimal)
            .finish()
    }
}

/// A trust anchor with its certificates decoded once at start.
struct AnchorState {
    arn: String,
    enabled: bool,
    ca_ders: Vec<Vec<u8>>,
}

/// State shared by every connection.
struct Shared {
    region: String,
    account: String,
    anchors: Vec<AnchorState>,
    profiles: Vec<Profile>,
    credential_lifetime: Option<Duration>,
    max_clock_skew: Duration,
    calls: Mutex<Vec<RecordedCall>>,
    issued: Mutex<Vec<IssuedSession>>,
    faults: Mutex<VecDeque<(Fault, usize)>>,
    /// Every this many CreateSession calls one fails with 500 ([`RolesAnywhereDouble::fail_every`]);
    /// 0: never.
    fail_every: AtomicU64,
    /// CreateSession calls counted for `fail_every`.
    fail_counter: AtomicU64,
    rng: ring::rand::SystemRandom,
}

impl Shared {
    /// Takes the next injected fault, if any.
    fn take_fault(&self) -> Option<Fault> {
        let every = self.fail_every.load(Ordering::Relaxed);
        if every > 0
            && (self.fail_counter.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(every)
        {
            return Some(Fault::Status {
                status: 500,
                error_type: "InternalServerException".to_owned(),
                message: format!("injected failure (one CreateSession in {every})"),
            });
        }
        let mut faults = lock(&self.faults);
        let (fault, remaining) = faults.front_mut()?;
        let fault = fault.clone();
        *remaining -= 1;
        if *remaining == 0 {
            faults.pop_front();
        }
        Some(fault)
    }
}

use super::lock;

/// A running Roles Anywhere double. Dropping it stops the server too; [`Self::shutdown`] also
/// waits for that.
pub struct RolesAnywhereDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl fmt::Debug for RolesAnywhereDouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RolesAnywhereDouble")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RolesAnywhereDouble {
    /// Binds, loads the TLS identity and trust anchors, and starts serving.
    pub async fn start(cfg: RolesAnywhereDoubleConfig) -> Result<Self, RolesAnywhereDoubleError> {
        let acceptor = tls_acceptor()?;
        let anchors = cfg
            .trust_anchors
            .iter()
            .map(load_anchor)
            .collect::<Result<Vec<_>, _>>()?;
        let listener =
            TcpListener::bind(cfg.bind)
                .await
                .map_err(|source| RolesAnywhereDoubleError::Bind {
                    addr: cfg.bind,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| RolesAnywhereDoubleError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let shared = Arc::new(Shared {
            region: cfg.region,
            account: cfg.account,
            anchors,
            profiles: cfg.profiles,
            credential_lifetime: cfg.credential_lifetime,
            max_clock_skew: cfg.max_clock_skew,
            calls: Mutex::new(Vec::new()),
            issued: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            fail_every: AtomicU64::new(0),
            fail_counter: AtomicU64::new(0),
            rng: ring::rand::SystemRandom::new(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            Arc::clone(&shared),
            shutdown_rx,
        ));
        tracing::debug!(%addr, "Roles Anywhere double listening");
        Ok(Self {
            shared,
            addr,
            shutdown_tx,
            task,
        })
    }

    /// `https://localhost:<port>`: the TLS certificate names `localhost`, so clients verify it.
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA that issued the double's TLS certificate; clients must trust it.
    pub fn ca_pem() -> &'static str {
        pki::TLS_CA_PEM
    }

    /// Every request received so far, in arrival order of completion.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.shared.calls).clone()
    }

    /// Every credential set handed out so far.
    pub fn issued(&self) -> Vec<IssuedSession> {
        lock(&self.shared.issued).clone()
    }

    /// The session an access key id belongs to, for doubles that verify HMAC SigV4.
    pub fn session_for_access_key(&self, access_key_id: &str) -> Option<IssuedSession> {
        lock(&self.shared.issued)
            .iter()
            .find(|s| s.access_key_id == access_key_id)
            .cloned()
    }

    /// A lookup of issued sessions by access key that outlives borrows of the double: what
    /// the AWS service doubles verify SigV4 against.
    pub fn session_lookup(&self) -> crate::dev::aws_services::SessionLookup {
        let shared = Arc::clone(&self.shared);
        Arc::new(move |access_key_id: &str| {
            lock(&shared.issued)
                .iter()
                .find(|s| s.access_key_id == access_key_id)
                .cloned()
        })
    }

    /// The next `times` CreateSession calls (`POST /sessions`) get `fault` instead of normal
    /// handling. Faults queue up in injection order.
    pub fn inject(&self, fault: Fault, times: usize) {
        if times > 0 {
            lock(&self.shared.faults).push_back((fault, times));
        }
    }

    /// From now on every `n`th CreateSession call (the `n`th, `2n`th, … counting from the next
    /// call) gets 500 `InternalServerException` instead of credentials, until set again;
    /// `0` turns it off. Queued [`Fault`]s are unaffected and apply to the other calls.
    pub fn fail_every(&self, n: u64) {
        self.shared.fail_counter.store(0, Ordering::Relaxed);
        self.shared.fail_every.store(n, Ordering::Relaxed);
    }

    /// Stops accepting, drops open connections and waits for the server task to end.
    pub async fn shutdown(self) {
        let Self {
            shutdown_tx, task, ..
        } = self;
        // Ignored error: the accept loop may already have ended.
        let _ = shutdown_tx.send(true);
        drop(shutdown_tx);
        let _ = task.await;
    }
}

/// Builds the TLS acceptor from the compiled-in test PKI (HTTP/1.1 only, like the client uses).
/// The AWS services double serves its HTTPS listener with it too.
pub(crate) fn tls_acceptor() -> Result<TlsAcceptor, RolesAnywhereDoubleError> {
    let certs = CertificateDer::pem_slice_iter(pki::TLS_SERVER_CERT_PEM.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RolesAnywhereDoubleError::TlsIdentity(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(RolesAnywhereDoubleError::TlsIdentity(
            "no certificate in TLS_SERVER_CERT_PEM".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(pki::TLS_SERVER_KEY_PEM.as_bytes())
        .map_err(|e| RolesAnywhereDoubleError::TlsIdentity(format!("private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Decodes a trust anchor's PEM bundle; every certificate must parse as X.509.
fn load_anchor(anchor: &TrustAnchor) -> Result<AnchorState, RolesAnywhereDoubleError> {
    let fail = |reason: String| RolesAnywhereDoubleError::TrustAnchor {
        arn: anchor.arn.clone(),
        reason,
    };
    let ders = CertificateDer::pem_slice_iter(anchor.ca_certs_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("bad PEM: {e}")))?;
    if ders.is_empty() {
        return Err(fail("no certificate in ca_certs_pem".to_owned()));
    }
    let mut ca_ders = Vec::with_capacity(ders.len());
    for der in ders {
        verify::parse_cert(der.as_ref()).map_err(|e| fail(e.to_string()))?;
        ca_ders.push(der.as_ref().to_vec());
    }
    Ok(AnchorState {
        arn: anchor.arn.clone(),
        enabled: anchor.enabled,
        ca_ders,
    })
}

/// Accepts connections until shutdown; each connection runs in `conns`, so dropping the set on
/// shutdown aborts them all.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown_rx: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // Err means the handle was dropped: stop as well.
            _ = shutdown_rx.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let acceptor = acceptor.clone();
                    let shared = Arc::clone(&shared);
                    conns.spawn(serve_connection(tcp, peer, acceptor, shared));
                }
                Err(e) => {
                    // Typically EMFILE; back off briefly instead of spinning.
                    tracing::warn!(error = %e, "Roles Anywhere double: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    conns.shutdown().await;
}

/// TLS handshake, then HTTP/1.1 until the client closes or a handler asks to drop the connection.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "Roles Anywhere double: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "Roles Anywhere double: TLS handshake timed out");
            return;
        }
    };
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { handler::handle(&shared, req).await }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "Roles Anywhere double: connection ended with an error");
    }
}
