//! STS `AssumeRoleWithWebIdentity` (Query API, unsigned: the token is the authentication),
//! checked the way STS checks a token from an IAM OIDC identity provider:
//!
//! 1. the token parses as a JWT, and its `iss` names a registered [`OidcProvider`]
//!    (else `InvalidIdentityToken` "No OpenIDConnect provider found in your account for …");
//! 2. its `aud` is one of the provider's client IDs (else `InvalidIdentityToken` "Incorrect
//!    token audience");
//! 3. its signature verifies with the provider's JWKS (the trust domain's JWT bundle: the
//!    Workload API double's key, or a real SPIRE server's) (else `InvalidIdentityToken`);
//! 4. it has not expired (else `ExpiredTokenException` "Token expired: …");
//! 5. the role trusts the provider for this `sub` (else 403 `AccessDenied` "Not authorized to
//!    perform sts:AssumeRoleWithWebIdentity").
//!
//! Then it issues credentials that the STS and Lattice doubles accept in SigV4, and answers
//! with the documented XML. Every refusal is the STS `ErrorResponse` shape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::request::Parts;
use http::Response;
use ring::rand::{SecureRandom, SystemRandom};

use super::sts::{self, Protocol, StsError};
use crate::dev::jwt::{self, JwtRejection};
use crate::dev::rolesanywhere::IssuedSession;

/// An IAM OIDC identity provider: who may issue tokens, for which audiences, with which keys,
/// and which roles trust it for which subjects.
#[derive(Clone, Debug)]
pub struct OidcProvider {
    /// The `iss` claim tokens must carry (the provider URL, e.g. `https://oidc.example.org`).
    pub issuer: String,
    /// The client IDs (audiences) registered with the provider.
    pub client_ids: Vec<String>,
    /// The JWKS STS fetched from the issuer's `jwks_uri` (the trust domain's JWT bundle).
    pub jwks: String,
    /// Roles whose trust policy names this provider.
    pub trusted_roles: Vec<RoleTrust>,
}

/// A role's trust policy statement for a provider: `Principal.Federated` = the provider, and a
/// `StringLike` condition on `<issuer>:sub`.
#[derive(Clone, Debug)]
pub struct RoleTrust {
    pub role_arn: String,
    /// The subjects allowed: exact, or a prefix followed by `*`.
    pub subject: String,
}

impl RoleTrust {
    fn allows(&self, role_arn: &str, sub: &str) -> bool {
        self.role_arn == role_arn
            && match self.subject.strip_suffix('*') {
                Some(prefix) => sub.starts_with(prefix),
                None => sub == self.subject,
            }
    }
}

/// An injected failure for the next calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebIdentityFault {
    /// 503 `ServiceUnavailable`.
    Unavailable,
    /// 400 `Throttling` "Rate exceeded".
    Throttling,
    /// 200 with a 1 MiB body, for clients that must bound what they read.
    HugeBody,
}

/// The double's web-identity state.
#[derive(Default)]
pub(super) struct WebIdentityState {
    pub(super) providers: std::sync::Mutex<Vec<OidcProvider>>,
    /// Sessions issued here, so SigV4 requests signed with them verify.
    pub(super) issued: std::sync::Mutex<Vec<IssuedSession>>,
    pub(super) faults: std::sync::Mutex<Option<(WebIdentityFault, u64)>>,
    pub(super) calls: AtomicU64,
    /// When set, issued credentials live this long whatever `DurationSeconds` asked for.
    pub(super) session_ttl_override: std::sync::Mutex<Option<Duration>>,
    /// How far STS's clock is ahead of this host's (a host whose clock is behind).
    pub(super) clock_ahead: std::sync::Mutex<Duration>,
}

fn sender(status: u16, code: &str, message: impl Into<String>) -> StsError {
    StsError {
        status,
        code: code.to_owned(),
        message: message.into(),
        fault: "Sender",
    }
}

fn invalid_token(message: impl Into<String>) -> StsError {
    sender(400, "InvalidIdentityToken", message)
}

/// Handles one `Action=AssumeRoleWithWebIdentity` request.
pub(super) fn handle(
    state: &WebIdentityState,
    rng: &SystemRandom,
    params: &[(String, String)],
    now: SystemTime,
    request_id: &str,
) -> Response<String> {
    state.calls.fetch_add(1, Ordering::Relaxed);
    let now = now + *crate::dev::lock(&state.clock_ahead);
    match assume(state, rng, params, now, request_id) {
        Ok(resp) => resp,
        Err(err) => sts::error_response(Protocol::Query, &err, request_id),
    }
}

fn assume(
    state: &WebIdentityState,
    rng: &SystemRandom,
    params: &[(String, String)],
    now: SystemTime,
    request_id: &str,
) -> Result<Response<String>, StsError> {
    match take_fault(state) {
        None => {}
        Some(WebIdentityFault::HugeBody) => {
            let mut resp = Response::new("<x>".repeat(350_000));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/xml"),
            );
            return Ok(resp);
        }
        Some(WebIdentityFault::Unavailable) => {
            return Err(StsError {
                status: 503,
                code: "ServiceUnavailable".into(),
                message: "Service is unavailable".into(),
                fault: "Receiver",
            })
        }
        Some(WebIdentityFault::Throttling) => {
            return Err(sender(400, "Throttling", "Rate exceeded"))
        }
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let required = |name: &str, member: &str| {
        get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            sender(
                400,
                "ValidationError",
                format!("1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"),
            )
        })
    };
    let role_arn = required("RoleArn", "roleArn")?;
    let session_name = required("RoleSessionName", "roleSessionName")?;
    let token = required("WebIdentityToken", "webIdentityToken")?;
    let session_ok = (2..=64).contains(&session_name.len())
        && session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if !session_ok {
        return Err(sender(400, "ValidationError", format!("1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*")));
    }
    let duration = match get("DurationSeconds") {
        None => 3600,
        Some(d) => d.parse::<u64>().ok().filter(|d| (900..=43_200).contains(d)).ok_or_else(|| {
            sender(400, "ValidationError", format!("1 validation error detected: Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200"))
        })?,
    };

    // 1. Which provider issued it (the claims are read before anything is trusted).
    let claims = jwt::unverified_claims(token).map_err(|e| invalid_token(e.to_string()))?;
    let issuer = claims
        .get("iss")
        .and_then(|v| v.as_str())
        .ok_or_else(|| invalid_token("Missing a required claim: iss"))?;
    let provider = crate::dev::lock(&state.providers)
        .iter()
        .find(|p| p.issuer == issuer)
        .cloned()
        .ok_or_else(|| {
            invalid_token(format!(
                "No OpenIDConnect provider found in your account for {issuer}"
            ))
        })?;
    // 2. The audience.
    let audience_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => provider.client_ids.contains(a),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str())
            .any(|a| provider.client_ids.iter().any(|c| c == a)),
        _ => false,
    };
    if !audience_ok {
        return Err(invalid_token("Incorrect token audience"));
    }
    // 3 and 4. Signature, then expiry.
    let verified = jwt::verify(token, &provider.jwks, now).map_err(|e| match e {
        JwtRejection::Expired { exp, now } => sender(
            400,
            "ExpiredTokenException",
            format!("Token expired: current date/time {now} must be before the expiration date/time {exp}"),
        ),
        JwtRejection::Malformed(reason) => invalid_token(reason),
        JwtRejection::UnknownKey(_) | JwtRejection::BadSignature => {
            invalid_token("The signature of the web identity token could not be verified with the provider's keys")
        }
    })?;
    let sub = verified
        .str_claim("sub")
        .ok_or_else(|| invalid_token("Missing a required claim: sub"))?
        .to_owned();
    // 5. The role's trust policy.
    if !provider
        .trusted_roles
        .iter()
        .any(|t| t.allows(role_arn, &sub))
    {
        return Err(sender(
            403,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        ));
    }

    let account = role_arn.split(':').nth(4).unwrap_or_default().to_owned();
    let role_name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    let ttl =
        crate::dev::lock(&state.session_ttl_override).unwrap_or(Duration::from_secs(duration));
    let expiration_unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        + ttl.as_secs();
    let expiration = SystemTime::UNIX_EPOCH + Duration::from_secs(expiration_unix);
    let internal = || StsError {
        status: 500,
        code: "InternalFailure".into(),
        message: "random number generator failed".into(),
        fault: "Receiver",
    };
    let session = IssuedSession {
        access_key_id: format!(
            "ASIA{}",
            random_chars(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16).ok_or_else(internal)?
        ),
        secret_access_key: random_chars(
            rng,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            40,
        )
        .ok_or_else(internal)?,
        session_token: format!(
            "IQoJb3JpZ2luX2VjEwebidentity{}",
            random_chars(
                rng,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                160
            )
            .ok_or_else(internal)?
        ),
        expiration,
        role_arn: role_arn.to_owned(),
        role_session_name: session_name.to_owned(),
        assumed_role_arn: format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}"),
        account,
        // A web-identity session carries no x509SAN principal tags.
        spiffe_id: None,
        leaf_serial_decimal: String::new(),
    };
    let expiration_text = crate::display::aws_time(expiration);
    let audience = verified
        .audiences()
        .first()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let body = format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
         <AssumeRoleWithWebIdentityResult>\n    <Audience>{audience}</Audience>\n    \
         <AssumedRoleUser>\n      <Arn>{arn}</Arn>\n      <AssumedRoleId>{role_id}</AssumedRoleId>\n    \
         </AssumedRoleUser>\n    <Credentials>\n      <SessionToken>{token}</SessionToken>\n      \
         <SecretAccessKey>{secret}</SecretAccessKey>\n      <Expiration>{expiration_text}</Expiration>\n      \
         <AccessKeyId>{akid}</AccessKeyId>\n    </Credentials>\n    <Provider>{provider}</Provider>\n    \
         <SubjectFromWebIdentityToken>{sub}</SubjectFromWebIdentityToken>\n  \
         </AssumeRoleWithWebIdentityResult>\n  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  \
         </ResponseMetadata>\n</AssumeRoleWithWebIdentityResponse>\n",
        audience = sts::xml_escape(&audience),
        arn = sts::xml_escape(&session.assumed_role_arn),
        role_id = sts::xml_escape(&sts::user_id(&session)),
        token = sts::xml_escape(&session.session_token),
        secret = sts::xml_escape(&session.secret_access_key),
        akid = sts::xml_escape(&session.access_key_id),
        provider = sts::xml_escape(&provider.issuer),
        sub = sts::xml_escape(&sub),
        request_id = sts::xml_escape(request_id),
    );
    crate::dev::lock(&state.issued).push(session);
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    Ok(resp)
}

fn take_fault(state: &WebIdentityState) -> Option<WebIdentityFault> {
    let mut faults = crate::dev::lock(&state.faults);
    match faults.as_mut() {
        Some((fault, n)) if *n > 0 => {
            *n -= 1;
            let f = *fault;
            if *n == 0 {
                *faults = None;
            }
            Some(f)
        }
        _ => None,
    }
}

fn random_chars(rng: &SystemRandom, alphabet: &[u8], n: usize) -> Option<String> {
    let mut bytes = vec![0u8; n];
    rng.fill(&mut bytes).ok()?;
    Some(
        bytes
            .iter()
            .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
            .collect(),
    )
}

/// Whether `parts`/`body` is a Query API `AssumeRoleWithWebIdentity` call (which needs no
/// signature), and its parameters.
pub(super) fn request(parts: &Parts, body: &[u8]) -> Option<Vec<(String, String)>> {
    if sts::protocol(parts) != Protocol::Query {
        return None;
    }
    let params = sts::query_params(parts, body);
    params
        .iter()
        .any(|(k, v)| k == "Action" && v == "AssumeRoleWithWebIdentity")
        .then_some(params)
}
