//! In-process doubles of the AWS services a workload calls with the credentials the agent
//! serves: STS `GetCallerIdentity` and VPC Lattice service invocation, on one loopback HTTP
//! listener and the same on an HTTPS one ([`AwsServicesDouble::https_endpoint`], the dev TLS
//! certificate). STS also answers `AssumeRoleWithWebIdentity` (`web_identity.rs`): unsigned,
//! authenticated by a JWT-SVID it verifies against a registered [`OidcProvider`]'s JWKS; the
//! credentials it issues are accepted in SigV4 like Roles Anywhere's.
//!
//! Why: the agent's job ends when a client holds credentials, but the proof that they are
//! right is that an ordinary AWS client can *use* them. These doubles accept only standard
//! SigV4 (`AWS4-HMAC-SHA256`) requests signed with credentials the Roles Anywhere double
//! issued and that have not expired, verified by this module's own code ([`sigv4`]), and answer
//! everything else with the real services' error shapes. The Lattice double then applies IAM
//! auth policies to the SPIFFE ID the session carries (`aws:PrincipalTag/x509SAN/URI`), which is
//! the end-to-end scenario the product exists for.
//!
//! Routing: the credential scope's signing name picks the service. `sts` goes to STS whatever
//! the Host or path; `vpc-lattice-svcs` goes to Lattice, where the Host's first label (up to
//! `-` or `.`) or, on an IP/`localhost` Host, the first path segment names the Lattice service
//! (see [`lattice`]). Unsigned requests go to STS when they look like STS (`Action=` or
//! `X-Amz-Target`), to Lattice when they address a configured Lattice service, else to STS.
//!
//! Clock skew: `X-Amz-Date` may differ from the double's clock by at most
//! [`AwsServicesConfig::max_clock_skew`], 15 minutes in [`AwsServicesConfig::seed`] because that
//! is what STS and Lattice allow, so a client that works here is not refused by AWS for skew.

mod lattice;
mod policy;
mod sigv4;
mod sts;
mod web_identity;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::request::Parts;
use http::{Request, Response};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use web_identity::{OidcProvider, RoleTrust, WebIdentityFault};

pub use policy::{
    load_policies, Decision, Policies, PolicyError, INVOKE_ACTION, PRINCIPAL_TAG_URI_KEY,
};

use crate::dev::rolesanywhere::{IssuedSession, DEV_REGION};
use sigv4::{AuthFailure, VerifyContext};

/// Finds the session an access key id belongs to; usually
/// `RolesAnywhereDouble::session_for_access_key` behind an `Arc`.
pub type SessionLookup = Arc<dyn Fn(&str) -> Option<IssuedSession> + Send + Sync>;

/// The largest request body read; larger ones are refused (413) so a test cannot make the
/// double buffer without bound.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a client may take to send the request head; a stuck client must not keep a
/// connection task alive forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`AwsServicesDouble::shutdown`] waits for in-flight requests before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where and how the doubles serve.
#[derive(Clone, Debug)]
pub struct AwsServicesConfig {
    /// Listen address; loopback by default.
    pub bind: SocketAddr,
    /// The only region accepted in credential scopes.
    pub region: String,
    /// Lattice services and their auth policies.
    pub policies: Policies,
    /// How far `X-Amz-Date` may be from the double's clock.
    pub max_clock_skew: Duration,
    /// IAM OIDC identity providers STS `AssumeRoleWithWebIdentity` accepts tokens from.
    pub oidc_providers: Vec<OidcProvider>,
}

impl AwsServicesConfig {
    /// `127.0.0.1:0`, `us-east-1`, the seed Lattice policies ([`Policies::seed`]) and AWS's
    /// 15-minute skew allowance.
    pub fn seed() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            region: DEV_REGION.to_owned(),
            policies: Policies::seed(),
            max_clock_skew: Duration::from_secs(15 * 60),
            oidc_providers: Vec::new(),
        }
    }
}

/// Why the doubles could not start.
#[derive(Debug, thiserror::Error)]
pub enum AwsServicesError {
    /// The dev TLS identity is unusable.
    #[error("cannot set up TLS for the AWS service doubles: {reason}")]
    Tls {
        /// What was wrong.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} for the AWS service doubles: {source}")]
    Bind {
        /// The address from the config.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Which double answered a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// STS.
    Sts,
    /// VPC Lattice.
    Lattice,
}

/// One request the doubles received, accepted or not.
#[derive(Clone, Debug)]
pub struct ServiceCall {
    /// When the request arrived.
    pub at: SystemTime,
    /// Which double answered.
    pub service: ServiceKind,
    /// STS: the operation (`GetCallerIdentity`); Lattice: the addressed Lattice service.
    pub operation: Option<String>,
    /// The access key id from the credential scope, if the request was signed.
    pub access_key_id: Option<String>,
    /// The caller's assumed-role ARN, when authentication succeeded.
    pub caller_arn: Option<String>,
    /// The caller's SPIFFE ID (`x509SAN/URI` principal tag), when authentication succeeded.
    pub spiffe_id: Option<String>,
    /// HTTP status sent.
    pub status: u16,
    /// The error code sent (STS `Code`, Lattice `x-amzn-ErrorType`), if the call failed.
    pub error_code: Option<String>,
}

/// State shared by every connection.
struct Shared {
    region: String,
    policies: Policies,
    max_clock_skew: Duration,
    lookup: SessionLookup,
    calls: Mutex<Vec<ServiceCall>>,
    rng: SystemRandom,
    web_identity: Arc<web_identity::WebIdentityState>,
}

use super::lock;

/// The running STS and VPC Lattice doubles. Dropping it stops the server too;
/// [`Self::shutdown`] also waits for that.
pub struct AwsServicesDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The same services over HTTPS (the dev TLS certificate), as STS is reached for real.
    tls_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
    tls_task: JoinHandle<()>,
}

impl fmt::Debug for AwsServicesDouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsServicesDouble")
            .field("addr", &self.addr)
            .field("lattice_services", &self.shared.policies.services())
            .finish_non_exhaustive()
    }
}

impl AwsServicesDouble {
    /// Binds and starts serving; `lookup` resolves access key ids to issued sessions.
    pub async fn start(
        cfg: AwsServicesConfig,
        lookup: SessionLookup,
    ) -> Result<Self, AwsServicesError> {
        let bind_err = |source| AwsServicesError::Bind {
            addr: cfg.bind,
            source,
        };
        let listener = TcpListener::bind(cfg.bind).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let tls_listener = TcpListener::bind(SocketAddr::new(cfg.bind.ip(), 0))
            .await
            .map_err(bind_err)?;
        let tls_addr = tls_listener.local_addr().map_err(bind_err)?;
        let acceptor =
            crate::dev::rolesanywhere::tls_acceptor().map_err(|e| AwsServicesError::Tls {
                reason: e.to_string(),
            })?;
        let web_identity = Arc::new(web_identity::WebIdentityState::default());
        *lock(&web_identity.providers) = cfg.oidc_providers;
        // SigV4 requests may be signed with Roles Anywhere's credentials or with those
        // AssumeRoleWithWebIdentity issued here.
        let own = Arc::clone(&web_identity);
        let lookup: SessionLookup = Arc::new(move |access_key_id: &str| {
            lock(&own.issued)
                .iter()
                .find(|s| s.access_key_id == access_key_id)
                .cloned()
                .or_else(|| lookup(access_key_id))
        });
        let shared = Arc::new(Shared {
            region: cfg.region,
            policies: cfg.policies,
            max_clock_skew: cfg.max_clock_skew,
            lookup,
            calls: Mutex::new(Vec::new()),
            rng: SystemRandom::new(),
            web_identity,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            shutdown_rx.clone(),
            None,
        ));
        let tls_task = tokio::spawn(accept_loop(
            tls_listener,
            Arc::clone(&shared),
            shutdown_rx,
            Some(acceptor),
        ));
        tracing::debug!(%addr, %tls_addr, "AWS service doubles (STS, VPC Lattice) listening");
        Ok(Self {
            shared,
            addr,
            tls_addr,
            shutdown_tx,
            task,
            tls_task,
        })
    }

    /// `https://127.0.0.1:PORT`: the same services over TLS with the dev certificate (trust
    /// [`crate::dev::rolesanywhere::RolesAnywhereDouble::ca_pem`]), for clients that accept
    /// only https, like this agent's STS client.
    pub fn https_endpoint(&self) -> String {
        format!("https://{}", self.tls_addr)
    }

    /// Registers (or replaces, by issuer) an IAM OIDC identity provider.
    pub fn add_oidc_provider(&self, provider: OidcProvider) {
        let mut providers = lock(&self.shared.web_identity.providers);
        providers.retain(|p| p.issuer != provider.issuer);
        providers.push(provider);
    }

    /// The next `times` AssumeRoleWithWebIdentity calls fail with `fault`.
    pub fn fail_web_identity(&self, fault: WebIdentityFault, times: u64) {
        *lock(&self.shared.web_identity.faults) = (times > 0).then_some((fault, times));
    }

    /// Issued web-identity credentials live this long, whatever `DurationSeconds` asked for
    /// (`None`: as asked), so refresh tests need not wait 15 minutes.
    pub fn set_web_identity_session_ttl(&self, ttl: Option<Duration>) {
        *lock(&self.shared.web_identity.session_ttl_override) = ttl;
    }

    /// Makes AssumeRoleWithWebIdentity judge token expiry by a clock `ahead` of this host's.
    pub fn set_web_identity_clock_ahead(&self, ahead: Duration) {
        *lock(&self.shared.web_identity.clock_ahead) = ahead;
    }

    /// How many AssumeRoleWithWebIdentity calls arrived, refused or not.
    pub fn web_identity_calls(&self) -> u64 {
        self.shared
            .web_identity
            .calls
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The sessions AssumeRoleWithWebIdentity issued.
    pub fn web_identity_sessions(&self) -> Vec<IssuedSession> {
        lock(&self.shared.web_identity.issued).clone()
    }

    /// `http://127.0.0.1:PORT` (the bound address), for `--endpoint-url` / `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request answered so far, in order of completion.
    pub fn calls(&self) -> Vec<ServiceCall> {
        lock(&self.shared.calls).clone()
    }

    /// Stops accepting, gives in-flight requests a moment, drops the connections and waits for
    /// the server task to end.
    pub async fn shutdown(self) {
        let Self {
            shutdown_tx,
            task,
            tls_task,
            ..
        } = self;
        // Ignored error: the accept loop may already have ended.
        let _ = shutdown_tx.send(true);
        drop(shutdown_tx);
        let _ = task.await;
        let _ = tls_task.await;
    }
}

/// Accepts connections until shutdown; each connection runs in `conns`, so dropping the set
/// aborts them all.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown_rx: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // Err means the handle was dropped: stop as well.
            _ = shutdown_rx.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let shared = Arc::clone(&shared);
                    let shutdown_rx = shutdown_rx.clone();
                    match tls.clone() {
                        None => {
                            conns.spawn(serve_connection(tcp, peer, shared, shutdown_rx));
                        }
                        Some(acceptor) => {
                            conns.spawn(async move {
                                let handshake = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await;
                                if let Ok(Ok(tls)) = handshake {
                                    serve_connection(tls, peer, shared, shutdown_rx).await;
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Typically EMFILE; back off briefly instead of spinning.
                    tracing::warn!(error = %e, "AWS service doubles: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    // Connections close once their in-flight request is answered (idle keep-alive ones at
    // once); whatever is still running after the grace period is aborted.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.shutdown().await;
}

/// HTTP/1.1 until the client closes or shutdown is signalled; on shutdown the connection
/// finishes the request in flight and closes.
async fn serve_connection<I>(
    tcp: I,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown_rx: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, std::convert::Infallible>(handle(&shared, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown_rx.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "AWS service doubles: connection ended with an error");
    }
}

/// Routes, authenticates, answers and records one request.
async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<String> {
    let at = SystemTime::now();
    let request_id = random_uuid(&shared.rng);
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts).await;
    let mut call = ServiceCall {
        at,
        service: ServiceKind::Sts,
        operation: None,
        access_key_id: None,
        caller_arn: None,
        spiffe_id: None,
        status: 0,
        error_code: None,
    };
    let resp = match body {
        Some(body) => dispatch(shared, &parts, &body, at, &request_id, &mut call),
        None => {
            let protocol = sts::protocol(&parts);
            sts::error_response(protocol, &sts::StsError::too_large(), &request_id)
        }
    };
    call.status = resp.status().as_u16();
    if call.error_code.is_none() && !resp.status().is_success() {
        call.error_code = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    tracing::debug!(
        service = ?call.service,
        operation = ?call.operation,
        access_key_id = ?call.access_key_id,
        status = call.status,
        error_code = ?call.error_code,
        "AWS service double answered"
    );
    lock(&shared.calls).push(call);
    resp
}

fn dispatch(
    shared: &Shared,
    parts: &Parts,
    body: &[u8],
    now: SystemTime,
    request_id: &str,
    call: &mut ServiceCall,
) -> Response<String> {
    let auth = sigv4::parse_authorization(&parts.headers);
    let signing_name = auth.as_ref().ok().map(|a| a.service.as_str());
    let lattice_target = lattice::target_service(parts);
    let to_lattice = match signing_name {
        Some(name) => name == lattice::SIGNING_NAME,
        None => {
            !sts::looks_like_sts(parts, body)
                && lattice_target
                    .as_deref()
                    .is_some_and(|s| shared.policies.contains(s))
        }
    };
    if let Ok(a) = &auth {
        call.access_key_id = Some(a.access_key_id.clone());
    }

    // The token authenticates AssumeRoleWithWebIdentity; STS needs no signature for it.
    if !to_lattice {
        if let Some(params) = web_identity::request(parts, body) {
            call.service = ServiceKind::Sts;
            call.operation = Some("AssumeRoleWithWebIdentity".into());
            let resp =
                web_identity::handle(&shared.web_identity, &shared.rng, &params, now, request_id);
            if !resp.status().is_success() {
                call.error_code = error_code_of(&resp);
            }
            return resp;
        }
    }

    if to_lattice {
        call.service = ServiceKind::Lattice;
        call.operation = lattice_target.clone();
        let Some(service) = lattice_target.filter(|s| shared.policies.contains(s)) else {
            return lattice::not_found(call.operation.as_deref());
        };
        let session = match auth {
            Err(AuthFailure::Missing) => None,
            Err(failure) => return lattice::auth_failed(&failure),
            Ok(a) => {
                let ctx = verify_context(shared, now, true);
                match sigv4::verify(&a, parts, body, &ctx) {
                    Ok(session) => Some(session),
                    Err(failure) => return lattice::auth_failed(&failure),
                }
            }
        };
        if let Some(s) = &session {
            call.caller_arn = Some(s.assumed_role_arn.clone());
            call.spiffe_id.clone_from(&s.spiffe_id);
        }
        return lattice::handle(
            &shared.policies,
            &shared.region,
            &service,
            parts,
            body,
            session.as_ref(),
        );
    }

    call.service = ServiceKind::Sts;
    let protocol = sts::protocol(parts);
    call.operation = sts::operation(parts, body, protocol);
    let fail = |call: &mut ServiceCall, err: sts::StsError| {
        call.error_code = Some(err.code.clone());
        sts::error_response(protocol, &err, request_id)
    };
    let auth = match auth {
        Ok(a) => a,
        Err(failure) => return fail(call, sts::StsError::from_auth(&failure)),
    };
    if auth.service != "sts" {
        return fail(call, sts::StsError::wrong_service(&auth.service));
    }
    let ctx = verify_context(shared, now, false);
    let session = match sigv4::verify(&auth, parts, body, &ctx) {
        Ok(s) => s,
        Err(failure) => return fail(call, sts::StsError::from_auth(&failure)),
    };
    call.caller_arn = Some(session.assumed_role_arn.clone());
    call.spiffe_id.clone_from(&session.spiffe_id);
    let resp = sts::handle(parts, body, protocol, &session, request_id);
    if !resp.status().is_success() {
        call.error_code = error_code_of(&resp);
    }
    resp
}

fn verify_context(
    shared: &Shared,
    now: SystemTime,
    allow_unsigned_payload: bool,
) -> VerifyContext<'_> {
    VerifyContext {
        now,
        max_clock_skew: shared.max_clock_skew,
        region: &shared.region,
        allow_unsigned_payload,
        lookup: &shared.lookup,
    }
}

/// The STS error code of an error response (from the JSON header or the XML `<Code>`).
fn error_code_of(resp: &Response<String>) -> Option<String> {
    if let Some(v) = resp.headers().get("x-amzn-errortype") {
        return v.to_str().ok().map(str::to_owned);
    }
    let body = resp.body();
    let start = body.find("<Code>")? + "<Code>".len();
    let len = body[start..].find("</Code>")?;
    Some(body[start..start + len].to_owned())
}

/// Reads the whole body; `None` when it exceeds [`MAX_BODY_BYTES`] or breaks off.
async fn read_body(mut body: Incoming, parts: &Parts) -> Option<Vec<u8>> {
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return None;
    }
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else {
            return None;
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY_BYTES {
                return None;
            }
            out.extend_from_slice(&data);
        }
    }
    Some(out)
}

/// A random version-4 UUID for request ids (all zeros if the RNG fails, which only costs
/// uniqueness of an id nobody relies on).
fn random_uuid(rng: &SystemRandom) -> String {
    let mut b = [0u8; 16];
    if rng.fill(&mut b).is_ok() {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
    }
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
