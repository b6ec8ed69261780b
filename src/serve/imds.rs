//! An IMDSv2-compatible endpoint: what EC2's instance metadata service offers for
//! credentials, and nothing else. AWS SDKs find it through `AWS_EC2_METADATA_SERVICE_ENDPOINT`
//! (`http://127.0.0.1:9911`, like `aws_signing_helper serve`).
//!
//! The protocol, as the SDKs speak it:
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 1..=21600` returns a
//!   session token, and echoes the TTL in the same response header (the Rust SDK refuses a
//!   token response without it).
//! - Every other request carries `X-aws-ec2-metadata-token`; without a valid, unexpired one
//!   it gets 401. Tokens are remembered only as their SHA-256, with their expiry on tokio's
//!   monotonic clock, so a wall-clock jump cannot extend or cut short a token.
//! - Any request with `X-Forwarded-For` (or another proxy header) gets 403, as real IMDS
//!   refuses proxied requests: it keeps a misconfigured reverse proxy on the host from handing
//!   credentials out. A `Host` that does not name the endpoint gets 403 and an absolute-form
//!   target 400 (DNS rebinding; see `request_guard`).
//! - `GET /latest/meta-data/iam/security-credentials/` lists the roles, one per line;
//!   `GET …/{role}` returns the credentials document. botocore (so boto3 and the AWS CLI, as
//!   of 1.44) and the Rust SDK use this legacy path only. The JS v3, Java v2, Ruby and PHP
//!   SDKs first try `…/security-credentials-extended/`, which adds `AccountId`, and fall back
//!   to the legacy path on 404; serving the extended path too saves them that round trip.
//! - Real IMDS lists exactly one role, and botocore uses the whole listing as the role name,
//!   so with several roles configured botocore only works against an endpoint that lists one:
//!   [`ImdsConfig::roles`] picks which roles an endpoint serves (the rest are 404 there).
//! - A role without usable credentials gets 503 and a short reason, never an empty
//!   "Success" document (the failure `aws_signing_helper serve` used to have).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use serde::Serialize;
use tokio::time::Instant;

use super::http;
use super::memo::RoleMemos;
use super::request_guard::RequestGuard;
use crate::credentials::{CredentialStore, RoleCredentials, Unavailable};

const TOKEN_PATH: &str = "/latest/api/token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The longest token lifetime IMDS grants: 6 hours.
pub const MAX_TOKEN_TTL: u64 = 21600;
/// How many live tokens are remembered. SDKs cache a token for its lifetime, so a few per
/// client process is normal; beyond the cap the token closest to expiry is forgotten
/// (its client gets a 401 and asks for a new one).
const MAX_TOKENS: usize = 4096;

/// The IMDS endpoint as one hyper/tower service. Every answer is computed synchronously from
/// the store and the token table, so the service returns a ready future: no router, no
/// middleware stack, no boxed futures or per-request clones on the hot path (measured: the
/// axum router and its two middleware layers were most of the per-request instructions).
#[derive(Clone)]
pub(crate) struct ImdsService {
    imds: Imds,
}

impl ImdsService {
    pub(crate) fn new(
        store: Arc<CredentialStore>,
        roles: Option<Vec<String>>,
        guard: RequestGuard,
    ) -> Self {
        let roles = roles.unwrap_or_else(|| store.role_names().map(str::to_owned).collect());
        let names = || roles.iter().map(String::as_str);
        ImdsService {
            imds: Imds {
                legacy: Arc::new(RoleMemos::new(names())),
                extended: Arc::new(RoleMemos::new(names())),
                store,
                roles: Arc::new(roles),
                tokens: Arc::new(TokenTable::new(MAX_TOKENS)),
                guard,
            },
        }
    }
}

impl<B> tower_service::Service<axum::http::Request<B>> for ImdsService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        // The body is never read; dropping it with the request is all it needs.
        std::future::ready(Ok(handle(
            &self.imds,
            req.method(),
            req.uri(),
            req.headers(),
        )))
    }
}

const LIST_PATH: &str = "/latest/meta-data/iam/security-credentials";
const EXTENDED_LIST_PATH: &str = "/latest/meta-data/iam/security-credentials-extended";

/// What a path asks for.
enum Route<'a> {
    Token,
    List,
    Document { role: &'a str, extended: bool },
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    if path == TOKEN_PATH {
        return Route::Token;
    }
    // The extended prefix first: the legacy one is a prefix of it.
    for (base, extended) in [(EXTENDED_LIST_PATH, true), (LIST_PATH, false)] {
        if let Some(rest) = path.strip_prefix(base) {
            return match rest {
                "" | "/" => Route::List,
                _ => match rest.strip_prefix('/') {
                    Some(role) if !role.contains('/') => Route::Document { role, extended },
                    _ => Route::NotFound,
                },
            };
        }
    }
    Route::NotFound
}

/// Checks in IMDS's order: who is asking (Host, proxies, request target), body limits, the
/// session token (everywhere but the token request itself, unknown paths included), then
/// the method and the path.
fn handle(imds: &Imds, method: &Method, uri: &axum::http::Uri, headers: &HeaderMap) -> Response {
    if let Some(refusal) = imds.guard.refusal(uri, headers) {
        return refusal;
    }
    if let Some(refusal) = http::body_refusal(headers) {
        return refusal;
    }
    let route = route(uri.path());
    if !matches!(route, Route::Token) {
        let valid = headers
            .get(TOKEN_HEADER)
            .is_some_and(|t| imds.tokens.check(t.as_bytes()));
        if !valid {
            return http::text(
                StatusCode::UNAUTHORIZED,
                "missing, invalid or expired X-aws-ec2-metadata-token: PUT /latest/api/token first",
            );
        }
    }
    let is_get = *method == Method::GET || *method == Method::HEAD;
    match route {
        Route::Token if *method == Method::PUT => issue_token(imds, headers),
        Route::Token => method_not_allowed("PUT"),
        Route::NotFound => http::text(StatusCode::NOT_FOUND, "not found"),
        _ if !is_get => method_not_allowed("GET,HEAD"),
        Route::List => list_roles(imds),
        Route::Document { role, extended } => match percent_decode(role) {
            Some(role) => document(imds, &role, extended),
            None => http::text(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp = http::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    resp.headers_mut()
        .insert(axum::http::header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// Decodes `%XX` escapes in a path segment (role names are matched decoded, as a router's
/// path parameters are); `None` for malformed escapes or non-UTF-8.
fn percent_decode(segment: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !segment.contains('%') {
        return Some(std::borrow::Cow::Borrowed(segment));
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(std::borrow::Cow::Owned)
}

/// How one IMDS endpoint behaves beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct ImdsConfig {
    /// IP TTL / IPv6 hop limit of every response (`--hop-limit`, as EC2's
    /// `HttpPutResponseHopLimit`): with 1, responses cannot leave the host, so a container
    /// behind a NAT hop cannot use the endpoint. `IP_TTL` on IPv4 connections,
    /// `IPV6_UNICAST_HOPS` on IPv6 ones (and `IP_TTL` too for IPv4-mapped peers).
    pub hop_limit: Option<u32>,
    /// The roles this endpoint lists and serves; `None` for every role in the store.
    pub roles: Option<Vec<String>>,
    /// Host names it answers to besides its address and `localhost`.
    pub allowed_hosts: Vec<String>,
}

/// Serves IMDS on an already-bound listener (IPv4 or IPv6) until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<CredentialStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, store, ImdsConfig::default(), shutdown).await
}

/// [`serve`] with an [`ImdsConfig`].
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    store: Arc<CredentialStore>,
    config: ImdsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let guard = RequestGuard::new(listener.local_addr()?, Arc::from(config.allowed_hosts));
    let counters = store.metrics().endpoint("imds");
    let service = ImdsService::new(store, config.roles, guard);
    match config.hop_limit {
        None => http::serve(listener, service, shutdown, counters).await,
        Some(ttl) => {
            let listener = HopLimited { listener, ttl };
            http::serve(listener, service, shutdown, counters).await
        }
    }
}

/// A listener whose connections send with a fixed IP TTL.
struct HopLimited {
    listener: tokio::net::TcpListener,
    ttl: u32,
}

impl http::Accept for HopLimited {
    type Io = tokio::net::TcpStream;
    async fn accept_io(&self) -> std::io::Result<Self::Io> {
        let stream = self.listener.accept_io().await?;
        if let Err(e) = set_hop_limit(&stream, self.ttl) {
            // Serving with the default TTL would silently drop the protection the
            // operator asked for: refuse the connection instead.
            tracing::warn!(error = %e, "cannot set the IMDS hop limit; closing the connection");
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                e,
            ));
        }
        Ok(stream)
    }
}

/// Sets the hop limit of a connection's outgoing packets: `IP_TTL` for IPv4,
/// `IPV6_UNICAST_HOPS` for IPv6 (plus `IP_TTL` when the peer is IPv4-mapped, since those
/// packets leave as IPv4).
fn set_hop_limit(stream: &tokio::net::TcpStream, hops: u32) -> std::io::Result<()> {
    match stream.local_addr()? {
        std::net::SocketAddr::V4(_) => stream.set_ttl(hops),
        std::net::SocketAddr::V6(local) => {
            set_int_option(stream, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, hops)?;
            if local.ip().to_ipv4_mapped().is_some() {
                set_int_option(stream, libc::IPPROTO_IP, libc::IP_TTL, hops)?;
            }
            Ok(())
        }
    }
}

fn set_int_option(
    stream: &tokio::net::TcpStream,
    level: libc::c_int,
    name: libc::c_int,
    value: u32,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(value)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: the fd is open for the lifetime of `stream`; the option value is a c_int
    // whose size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[derive(Clone)]
struct Imds {
    store: Arc<CredentialStore>,
    /// The roles served here, in listing order.
    roles: Arc<Vec<String>>,
    tokens: Arc<TokenTable>,
    /// The documents of the legacy and the extended path, rendered once per credential set.
    legacy: Arc<RoleMemos>,
    extended: Arc<RoleMemos>,
    /// Host, proxy and request-target checks (DNS rebinding).
    guard: RequestGuard,
}

/// Session tokens, remembered as SHA-256 digests with their expiry.
///
/// The table is bounded, so a local process can fill it with token requests. Tokens that
/// were used since they were issued are what real clients hold; when the table is full, the
/// oldest unused token is forgotten first, so a flood of token requests only displaces its
/// own tokens, in constant time per request. Only when every token has been used is an
/// expired one, else the used one closest to expiry, forgotten (its client gets a 401 and
/// asks again).
struct TokenTable {
    /// Read on every GET, written only when a token is issued or found expired: a read
    /// lock keeps concurrent GETs from queueing behind each other.
    live: RwLock<Tokens>,
    cap: usize,
    rng: ring::rand::SystemRandom,
}

#[derive(Default)]
struct Tokens {
    by_digest: HashMap<[u8; 32], Issued>,
    /// Digests in the order they were issued: where the next unused victim is found. Entries
    /// of tokens that were used or are gone are skipped (and compacted away).
    issue_order: std::collections::VecDeque<[u8; 32]>,
}

/// One issued token.
struct Issued {
    expiry: Instant,
    /// Set by the first request that presents it (an atomic, so under the read lock).
    used: std::sync::atomic::AtomicBool,
}

impl Tokens {
    fn is_unused(&self, key: &[u8; 32]) -> bool {
        self.by_digest
            .get(key)
            .is_some_and(|t| !t.used.load(Ordering::Relaxed))
    }

    /// Makes room for one more token.
    fn evict_one(&mut self, now: Instant) {
        while let Some(key) = self.issue_order.pop_front() {
            if self.is_unused(&key) {
                self.by_digest.remove(&key);
                return;
            }
        }
        // Every token has been used: drop the expired, else the one closest to expiry.
        let before = self.by_digest.len();
        self.by_digest.retain(|_, t| t.expiry > now);
        if self.by_digest.len() < before {
            return;
        }
        let victim = self
            .by_digest
            .iter()
            .min_by_key(|(_, t)| t.expiry)
            .map(|(k, _)| *k);
        if let Some(victim) = victim {
            self.by_digest.remove(&victim);
        }
    }
}

impl TokenTable {
    fn new(cap: usize) -> Self {
        TokenTable {
            live: RwLock::new(Tokens::default()),
            cap,
            rng: ring::rand::SystemRandom::new(),
        }
    }

    /// A new token valid for `ttl`: 32 random bytes, base64url without padding.
    fn issue(&self, ttl: Duration) -> Option<String> {
        let mut raw = zeroize::Zeroizing::new([0u8; 32]);
        self.rng.fill(&mut raw[..]).ok()?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..]);
        let now = Instant::now();
        let key = digest(token.as_bytes());
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        if live.by_digest.len() >= self.cap {
            live.evict_one(now);
        }
        if live.issue_order.len() >= 2 * self.cap {
            // Keep the order list proportional to the table.
            let Tokens {
                by_digest,
                issue_order,
            } = &mut *live;
            issue_order.retain(|k| {
                by_digest
                    .get(k)
                    .is_some_and(|t| !t.used.load(Ordering::Relaxed))
            });
        }
        live.by_digest.insert(
            key,
            Issued {
                expiry: now + ttl,
                used: std::sync::atomic::AtomicBool::new(false),
            },
        );
        live.issue_order.push_back(key);
        Some(token)
    }

    /// Whether `token` was issued here and has not expired.
    fn check(&self, token: &[u8]) -> bool {
        let key = digest(token);
        let now = Instant::now();
        let expiry = {
            let live = self.live.read().unwrap_or_else(|e| e.into_inner());
            live.by_digest.get(&key).map(|t| {
                if !t.used.load(Ordering::Relaxed) {
                    t.used.store(true, Ordering::Relaxed);
                }
                t.expiry
            })
        };
        match expiry {
            Some(expiry) if expiry > now => true,
            Some(_) => {
                self.live
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .by_digest
                    .remove(&key);
                false
            }
            None => false,
        }
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Parses the TTL header: ASCII digits only, 1..=21600.
fn parse_ttl(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(TTL_HEADER)?.to_str().ok()?.trim();
    if value.is_empty() || value.len() > 5 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ttl: u64 = value.parse().ok()?;
    (1..=MAX_TOKEN_TTL).contains(&ttl).then_some(ttl)
}

fn issue_token(imds: &Imds, headers: &HeaderMap) -> Response {
    let Some(ttl) = parse_ttl(headers) else {
        return http::text(
            StatusCode::BAD_REQUEST,
            "X-aws-ec2-metadata-token-ttl-seconds must be a number of seconds from 1 to 21600",
        );
    };
    let Some(token) = imds.tokens.issue(Duration::from_secs(ttl)) else {
        tracing::error!("the system random number generator failed; cannot issue an IMDS token");
        return http::text(StatusCode::INTERNAL_SERVER_ERROR, "cannot issue a token");
    };
    let mut resp = http::text(StatusCode::OK, "");
    *resp.body_mut() = token.into();
    resp.headers_mut()
        .insert(TTL_HEADER, HeaderValue::from(ttl));
    resp
}

fn list_roles(imds: &Imds) -> Response {
    if imds.roles.is_empty() {
        return http::text(StatusCode::NOT_FOUND, "no roles are configured");
    }
    let mut resp = http::text(StatusCode::OK, "");
    *resp.body_mut() = imds.roles.join("\n").into();
    resp
}

/// The credentials document, in IMDS's field order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Document<'a> {
    code: &'static str,
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

fn document(imds: &Imds, role: &str, extended: bool) -> Response {
    if !imds.roles.iter().any(|r| r == role) {
        return http::unavailable(&Unavailable::UnknownRole(role.to_owned()));
    }
    match imds.store.get(role) {
        Ok(creds) => {
            let body = if extended {
                imds.extended.get(role, &creds, |c| {
                    render(c, account_id(&c.credentials.role_arn))
                })
            } else {
                imds.legacy.get(role, &creds, |c| render(c, None))
            };
            http::json("text/plain", body)
        }
        Err(e) => http::unavailable(&e),
    }
}

fn render(creds: &RoleCredentials, account_id: Option<&str>) -> String {
    let doc = Document {
        code: "Success",
        last_updated: http::aws_time(creds.last_updated),
        kind: "AWS-HMAC",
        access_key_id: &creds.credentials.access_key_id,
        secret_access_key: &creds.credentials.secret_access_key,
        token: &creds.credentials.session_token,
        expiration: http::aws_time(creds.credentials.expiration),
        account_id,
    };
    // A struct of strings always serializes.
    serde_json::to_string(&doc).unwrap_or_default()
}

/// The account of `arn:PARTITION:iam::ACCOUNT:role/NAME`, if the ARN has that shape.
fn account_id(role_arn: &str) -> Option<&str> {
    let account = role_arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::http::testing::{creds, store, tcp};
    use crate::serve::http::{Accept as _, RawResponse};
    use std::net::SocketAddr;

    const HOUR: Duration = Duration::from_secs(3600);

    async fn start(
        store: Arc<CredentialStore>,
        bind: &str,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, store, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    async fn token(addr: SocketAddr, ttl: &str) -> RawResponse {
        tcp(
            addr,
            "PUT",
            TOKEN_PATH,
            &[("X-aws-ec2-metadata-token-ttl-seconds", ttl)],
        )
        .await
    }

    async fn get_with(addr: SocketAddr, path: &str, token: &str) -> RawResponse {
        tcp(addr, "GET", path, &[("X-aws-ec2-metadata-token", token)]).await
    }

    fn body(r: &RawResponse) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    async fn fresh_token(addr: SocketAddr) -> String {
        let r = token(addr, "21600").await;
        assert_eq!(r.status, 200);
        body(&r)
    }

    #[tokio::test]
    async fn token_ttl_bounds() {
        let (addr, _stop) = start(store(&["app"]), "127.0.0.1:0").await;
        for bad in [
            "0",
            "21601",
            "junk",
            "-1",
            "+5",
            "1.5",
            "",
            "99999999999999999999",
        ] {
            assert_eq!(token(addr, bad).await.status, 400, "ttl {bad:?}");
        }
        assert_eq!(tcp(addr, "PUT", TOKEN_PATH, &[]).await.status, 400);
        for good in ["1", "21600", "300"] {
            let r = token(addr, good).await;
            assert_eq!(r.status, 200, "ttl {good}");
            assert_eq!(r.header(TTL_HEADER), Some(good));
            let t = body(&r);
            assert!(t.len() >= 43, "{} chars", t.len());
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
        assert_ne!(fresh_token(addr).await, fresh_token(addr).await);
        // Only PUT issues tokens.
        assert_eq!(
            tcp(addr, "GET", TOKEN_PATH, &[(TTL_HEADER, "60")])
                .await
                .status,
            405
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_expire() {
        let s = store(&["app"]);
        s.publish("app", creds(&s, "app", "AKIA1", HOUR * 6));
        let (addr, _stop) = start(s, "127.0.0.1:0").await;
        let short = body(&token(addr, "10").await);
        let long = fresh_token(addr).await;
        let path = "/latest/meta-data/iam/security-credentials/app";
        assert_eq!(get_with(addr, path, &short).await.status, 200);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(get_with(addr, path, &short).await.status, 200);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(get_with(addr, path, &short).await.status, 401);
        assert_eq!(get_with(addr, path, &long).await.status, 200);
    }

    #[tokio::test]
    async fn gets_need_a_valid_token() {
        let s = store(&["app"]);
        s.publish("app", creds(&s, "app", "AKIA1", HOUR));
        let (addr, _stop) = start(s, "127.0.0.1:0").await;
        for path in [
            "/latest/meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/security-credentials/app",
            "/latest/meta-data/iam/security-credentials-extended/app",
            "/latest/meta-data/instance-id",
        ] {
            assert_eq!(tcp(addr, "GET", path, &[]).await.status, 401, "{path}");
            assert_eq!(
                get_with(addr, path, "not-a-token").await.status,
                401,
                "{path}"
            );
            assert_eq!(get_with(addr, path, "").await.status, 401, "{path}");
        }
        let t = fresh_token(addr).await;
        assert_eq!(
            get_with(addr, "/latest/meta-data/iam/security-credentials/app", &t)
                .await
                .status,
            200
        );
        assert_eq!(
            get_with(addr, "/latest/meta-data/instance-id", &t)
                .await
                .status,
            404
        );
        assert_eq!(get_with(addr, "/latest/user-data", &t).await.status, 404);
        assert_eq!(
            get_with(addr, "/latest/meta-data/iam/security-credentials/app/x", &t)
                .await
                .status,
            404
        );
        // A token from another server instance is not valid here.
        let (other, _stop2) = start(store(&["app"]), "127.0.0.1:0").await;
        let foreign = fresh_token(other).await;
        assert_eq!(
            get_with(
                addr,
                "/latest/meta-data/iam/security-credentials/",
                &foreign
            )
            .await
            .status,
            401
        );
    }

    #[tokio::test]
    async fn forwarded_requests_are_refused() {
        let (addr, _stop) = start(store(&["app"]), "127.0.0.1:0").await;
        let r = tcp(
            addr,
            "PUT",
            TOKEN_PATH,
            &[(TTL_HEADER, "60"), ("X-Forwarded-For", "10.0.0.1")],
        )
        .await;
        assert_eq!(r.status, 403);
        assert!(body(&r).contains("X-Forwarded-For"));
        let t = fresh_token(addr).await;
        let r = tcp(
            addr,
            "GET",
            "/latest/meta-data/iam/security-credentials/",
            &[
                ("X-aws-ec2-metadata-token", &t),
                ("x-forwarded-for", "1.2.3.4"),
            ],
        )
        .await;
        assert_eq!(r.status, 403);
    }

    #[tokio::test]
    async fn a_dns_rebinding_page_cannot_get_a_token_or_credentials() {
        let s = store(&["app"]);
        s.publish("app", creds(&s, "app", "ASIAREBIND", HOUR));
        let (addr, _stop) = start(s, "127.0.0.1:0").await;
        // What a browser sends after rebinding evil.example to 127.0.0.1: its own name.
        let raw = |request: String| async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            stream.read_to_end(&mut buf).await.unwrap();
            http::parse_response(&buf).unwrap()
        };
        let port = addr.port();
        let r = raw(format!("PUT {TOKEN_PATH} HTTP/1.1\r\nHost: evil.example:{port}\r\n{TTL_HEADER}: 60\r\nConnection: close\r\n\r\n")).await;
        assert_eq!(r.status, 403);
        assert!(body(&r).contains("Host"), "{}", body(&r));
        // The same request naming the endpoint works.
        let r = raw(format!("PUT {TOKEN_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{TTL_HEADER}: 60\r\nConnection: close\r\n\r\n")).await;
        assert_eq!(r.status, 200);
        let token = String::from_utf8(r.body).unwrap();
        // Absolute-form targets (a request meant for a proxy) and other proxy headers.
        let r = raw(format!("GET http://evil.example{LIST_PATH}/app HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n")).await;
        assert_eq!(r.status, 400);
        for header in [
            "Forwarded: for=1.2.3.4",
            "X-Real-IP: 1.2.3.4",
            "Via: 1.1 proxy",
        ] {
            let r = raw(format!("GET {LIST_PATH}/app HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-aws-ec2-metadata-token: {token}\r\n{header}\r\nConnection: close\r\n\r\n")).await;
            assert_eq!(r.status, 403, "{header}");
        }
        let r = raw(format!("GET {LIST_PATH}/app HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n")).await;
        assert_eq!(r.status, 200);
    }

    #[test]
    fn routing_matches_the_documented_paths_only() {
        assert!(matches!(route(TOKEN_PATH), Route::Token));
        assert!(matches!(route(LIST_PATH), Route::List));
        assert!(matches!(
            route("/latest/meta-data/iam/security-credentials-extended/"),
            Route::List
        ));
        assert!(matches!(
            route("/latest/meta-data/iam/security-credentials-extended/app"),
            Route::Document {
                role: "app",
                extended: true
            }
        ));
        assert!(matches!(
            route("/latest/meta-data/iam/security-credentials/app"),
            Route::Document {
                role: "app",
                extended: false
            }
        ));
        for other in [
            "/latest/meta-data/iam/security-credentials/app/",
            "/latest/meta-data/iam/security-credentials/a/b",
            "/latest/meta-data/iam/security-credentialsX",
            "/latest/meta-data/iam/info",
            "/",
        ] {
            assert!(matches!(route(other), Route::NotFound), "{other}");
        }
        assert_eq!(percent_decode("a%2Bb").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[tokio::test]
    async fn escaped_role_names_and_wrong_methods() {
        let s = store(&["app"]);
        s.publish("app", creds(&s, "app", "ASIAESCAPED", HOUR));
        let (addr, _stop) = start(s, "127.0.0.1:0").await;
        let t = fresh_token(addr).await;
        let r = get_with(addr, "/latest/meta-data/iam/security-credentials/%61pp", &t).await;
        assert_eq!(r.status, 200);
        assert!(body(&r).contains("ASIAESCAPED"));
        let r = tcp(
            addr,
            "DELETE",
            "/latest/meta-data/iam/security-credentials/app",
            &[(TOKEN_HEADER, t.as_str())],
        )
        .await;
        assert_eq!(r.status, 405);
    }

    #[tokio::test]
    async fn lists_roles_on_both_paths() {
        let (addr, _stop) = start(store(&["beta", "alpha"]), "127.0.0.1:0").await;
        let t = fresh_token(addr).await;
        for path in [
            "/latest/meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/security-credentials",
            "/latest/meta-data/iam/security-credentials-extended/",
        ] {
            let r = get_with(addr, path, &t).await;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(body(&r), "alpha\nbeta", "{path}");
        }
    }

    #[tokio::test]
    async fn documents_carry_the_published_credentials() {
        let s = store(&["app"]);
        let c = creds(&s, "app", "ASIAEXAMPLE", HOUR);
        let (expiration, updated) = (
            http::aws_time(c.credentials.expiration),
            http::aws_time(c.last_updated),
        );
        s.publish("app", c);
        let (addr, _stop) = start(s, "127.0.0.1:0").await;
        let t = fresh_token(addr).await;

        let r = get_with(addr, "/latest/meta-data/iam/security-credentials/app", &t).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let text = body(&r);
        assert!(
            text.starts_with(r#"{"Code":"Success","LastUpdated":"#),
            "{text}"
        );
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["Code"], "Success");
        assert_eq!(doc["Type"], "AWS-HMAC");
        assert_eq!(doc["AccessKeyId"], "ASIAEXAMPLE");
        assert_eq!(doc["SecretAccessKey"], "secret-ASIAEXAMPLE");
        assert_eq!(doc["Token"], "token-ASIAEXAMPLE");
        assert_eq!(doc["Expiration"], expiration.as_str());
        assert_eq!(doc["LastUpdated"], updated.as_str());
        assert!(doc.get("AccountId").is_none());

        let r = get_with(
            addr,
            "/latest/meta-data/iam/security-credentials-extended/app",
            &t,
        )
        .await;
        assert_eq!(r.status, 200);
        let ext: serde_json::Value = serde_json::from_str(&body(&r)).unwrap();
        assert_eq!(ext["AccountId"], "123456789012");
        assert_eq!(ext["AccessKeyId"], "ASIAEXAMPLE");
        assert_eq!(ext["Expiration"], expiration.as_str());
    }

    #[tokio::test]
    async fn unknown_role_is_404_and_unusable_credentials_503() {
        let s = store(&["app", "late", "stale"]);
        s.publish("app", creds(&s, "app", "AKIA1", HOUR));
        // Four minutes left: under the store's five-minute minimum.
        s.publish(
            "stale",
            creds(&s, "stale", "AKIA2", Duration::from_secs(240)),
        );
        let (addr, _stop) = start(s, "127.0.0.1:0").await;
        let t = fresh_token(addr).await;
        let base = "/latest/meta-data/iam/security-credentials";
        assert_eq!(
            get_with(addr, &format!("{base}/nope"), &t).await.status,
            404
        );
        assert_eq!(
            get_with(addr, &format!("{base}-extended/nope"), &t)
                .await
                .status,
            404
        );
        for role in ["late", "stale"] {
            let r = get_with(addr, &format!("{base}/{role}"), &t).await;
            assert_eq!(r.status, 503, "{role}");
            let text = body(&r);
            assert!(
                !text.contains("Success") && !text.contains("AKIA2"),
                "{text}"
            );
            assert!(text.contains(role), "{text}");
        }
    }

    #[tokio::test]
    async fn an_endpoint_can_serve_a_subset_of_roles() {
        let s = store(&["alpha", "beta"]);
        s.publish("alpha", creds(&s, "alpha", "AKIAA", HOUR));
        s.publish("beta", creds(&s, "beta", "AKIAB", HOUR));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ImdsConfig {
            roles: Some(vec!["beta".into()]),
            ..ImdsConfig::default()
        };
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(listener, s, config, async {
            let _ = rx.await;
        }));
        let t = fresh_token(addr).await;
        let base = "/latest/meta-data/iam/security-credentials";
        assert_eq!(body(&get_with(addr, &format!("{base}/"), &t).await), "beta");
        assert_eq!(
            get_with(addr, &format!("{base}/beta"), &t).await.status,
            200
        );
        assert_eq!(
            get_with(addr, &format!("{base}/alpha"), &t).await.status,
            404
        );
        assert_eq!(
            get_with(addr, &format!("{base}-extended/alpha"), &t)
                .await
                .status,
            404
        );
    }

    #[tokio::test]
    async fn large_bodies_are_refused() {
        let (addr, _stop) = start(store(&["app"]), "127.0.0.1:0").await;
        let r = tcp(
            addr,
            "PUT",
            TOKEN_PATH,
            &[(TTL_HEADER, "60"), ("Content-Length", "100000")],
        )
        .await;
        assert_eq!(r.status, 413);
    }

    #[tokio::test]
    async fn serves_on_ipv6_loopback() {
        let s = store(&["app"]);
        s.publish("app", creds(&s, "app", "AKIA6", HOUR));
        let listener = match tokio::net::TcpListener::bind("[::1]:0").await {
            Ok(l) => l,
            // A host without IPv6 at all cannot run this test; say so loudly rather than
            // pretend it passed for a reason it did not.
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                eprintln!("no IPv6 loopback on this host: {e}");
                return;
            }
            Err(e) => panic!("binding [::1]:0: {e}"),
        };
        let addr = listener.local_addr().unwrap();
        assert!(addr.is_ipv6());
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, s, async {
            let _ = rx.await;
        }));
        let t = fresh_token(addr).await;
        let r = get_with(addr, "/latest/meta-data/iam/security-credentials/app", &t).await;
        assert_eq!(r.status, 200);
        assert!(body(&r).contains("AKIA6"));
    }

    #[tokio::test]
    async fn shutdown_ends_serve() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, store(&["app"]), async {
            let _ = rx.await;
        }));
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn token_table_is_bounded() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let table = TokenTable::new(3);
            let first = table.issue(Duration::from_secs(10)).unwrap();
            let later: Vec<String> = (0..3)
                .map(|_| table.issue(Duration::from_secs(100)).unwrap())
                .collect();
            // The token closest to expiry made room.
            assert!(!table.check(first.as_bytes()));
            assert!(later.iter().all(|t| table.check(t.as_bytes())));
            assert_eq!(table.live.read().unwrap().by_digest.len(), 3);
            tokio::time::advance(Duration::from_secs(101)).await;
            let fresh = table.issue(Duration::from_secs(5)).unwrap();
            assert_eq!(
                table.live.read().unwrap().by_digest.len(),
                1,
                "expired tokens were evicted"
            );
            assert!(table.check(fresh.as_bytes()));
        });
    }

    #[test]
    fn a_token_in_use_survives_a_flood_of_token_requests() {
        let table = TokenTable::new(MAX_TOKENS);
        // A real client: a short-lived token, used.
        let mine = table.issue(Duration::from_secs(60)).unwrap();
        assert!(table.check(mine.as_bytes()));
        // Another local process asks for 10,000 long-lived tokens and never uses them.
        for _ in 0..10_000 {
            table.issue(Duration::from_secs(MAX_TOKEN_TTL)).unwrap();
        }
        assert!(table.check(mine.as_bytes()), "the used token was kept");
        assert_eq!(table.live.read().unwrap().by_digest.len(), MAX_TOKENS);
        // A new client's token gets a place too, and keeps it once used.
        let next = table.issue(Duration::from_secs(60)).unwrap();
        assert!(table.check(next.as_bytes()));
        for _ in 0..10_000 {
            table.issue(Duration::from_secs(MAX_TOKEN_TTL)).unwrap();
        }
        assert!(table.check(mine.as_bytes()) && table.check(next.as_bytes()));
    }

    #[tokio::test]
    async fn hop_limit_is_applied() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limited = HopLimited { listener, ttl: 1 };
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_side = limited.accept_io().await.unwrap();
        assert_eq!(server_side.ttl().unwrap(), 1);
        drop(client);
    }

    /// Reads an int socket option back, as the kernel holds it.
    fn int_option(stream: &tokio::net::TcpStream, level: libc::c_int, name: libc::c_int) -> i32 {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        value
    }

    #[tokio::test]
    async fn hop_limit_is_applied_on_ipv6_too() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            // No IPv6 loopback on this machine: the IPv4 test above still runs.
            eprintln!("skipping: no IPv6 loopback");
            return;
        };
        let addr = listener.local_addr().unwrap();
        let limited = HopLimited { listener, ttl: 3 };
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_side = limited.accept_io().await.unwrap();
        assert_eq!(
            int_option(&server_side, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS),
            3
        );
        drop(client);
    }

    #[tokio::test]
    async fn hop_limit_is_applied_to_ipv4_mapped_peers_of_an_ipv6_listener() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::]:0").await else {
            eprintln!("skipping: no IPv6");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let limited = HopLimited { listener, ttl: 2 };
        // A dual-stack listener takes IPv4 clients as ::ffff:127.0.0.1.
        let Ok(client) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            eprintln!("skipping: IPv6 listener is v6-only here");
            return;
        };
        let server_side = limited.accept_io().await.unwrap();
        assert_eq!(int_option(&server_side, libc::IPPROTO_IP, libc::IP_TTL), 2);
        assert_eq!(
            int_option(&server_side, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS),
            2
        );
        drop(client);
    }

    #[test]
    fn account_ids() {
        assert_eq!(
            account_id("arn:aws:iam::123456789012:role/x"),
            Some("123456789012")
        );
        assert_eq!(
            account_id("arn:aws-us-gov:iam::000000000001:role/a/b"),
            Some("000000000001")
        );
        assert_eq!(account_id("arn:aws:iam::12345:role/x"), None);
        assert_eq!(account_id("junk"), None);
    }
}
