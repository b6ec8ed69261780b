//! Request handling: routing, fault injection, authentication, parameter validation, trust
//! anchor / profile checks and issuing credentials. Every request is recorded, whatever the
//! outcome.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response};
use hyper::body::{Body as _, Incoming};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::canonical::{self, CanonicalError};
use super::response::{
    self, error_response, json_response, random_base64, random_chars, random_uuid, ApiError,
    KEY_ID_ALPHABET, SECRET_ALPHABET,
};
use super::verify::{self, AuthHeaderError, LeafInfo, SignatureError, MAX_CHAIN_CERTS};
use super::{lock, Fault, IssuedSession, RecordedCall, Shared, MAX_BODY_BYTES};

/// Returned to hyper to drop the connection without a response ([`Fault::CloseConnection`]).
#[derive(Debug, thiserror::Error)]
#[error("connection closed on purpose by an injected fault")]
pub(super) struct CloseConnection;

/// How processing stopped short of success.
enum Stop {
    Api(ApiError),
    Close,
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Stop::Api(e)
    }
}

const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_X509: &str = "x-amz-x509";
const X_AMZ_X509_CHAIN: &str = "x-amz-x509-chain";
const DEFAULT_DURATION_SECONDS: u32 = 3600;
const MIN_DURATION_SECONDS: u64 = 900;
const MAX_DURATION_SECONDS: u64 = 43_200;

/// Entry point for every request: processes it and records the outcome.
pub(super) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<String>, CloseConnection> {
    let mut call = RecordedCall {
        at: SystemTime::now(),
        status: 0,
        error_type: None,
        leaf_serial_decimal: None,
        leaf_sha256_hex: None,
        spiffe_id: None,
        role_arn: None,
        duration_seconds: None,
    };
    let request_id =
        random_uuid(&shared.rng).unwrap_or_else(|_| "00000000-0000-4000-8000-000000000000".into());
    let outcome = process(shared, req, &mut call, &request_id).await;
    let result = match outcome {
        Ok(resp) => Ok(resp),
        Err(Stop::Api(err)) => {
            tracing::debug!(
                status = err.status,
                error_type = %err.error_type,
                message = %err.message,
                "Roles Anywhere double refused a request"
            );
            Ok(error_response(&err, &request_id))
        }
        Err(Stop::Close) => Err(CloseConnection),
    };
    if let Ok(resp) = &result {
        call.status = resp.status().as_u16();
        call.error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    lock(&shared.calls).push(call);
    result
}

async fn process(
    shared: &Shared,
    req: Request<Incoming>,
    call: &mut RecordedCall,
    request_id: &str,
) -> Result<Response<String>, Stop> {
    let (parts, body) = req.into_parts();
    if parts.uri.path() != "/sessions" {
        return Err(ApiError::unknown_operation().into());
    }
    if parts.method != Method::POST {
        return Err(ApiError::method_not_allowed().into());
    }
    observe_leaf(&parts.headers, call);
    let body = read_body(body, &parts.headers).await?;
    observe_params(&parts, &body, call);

    if let Some(fault) = shared.take_fault() {
        match fault {
            Fault::Status {
                status,
                error_type,
                message,
            } => return Err(ApiError::injected(status, &error_type, &message).into()),
            Fault::GarbageBody => {
                return Ok(json_response(
                    201,
                    "<html>this is not JSON".to_owned(),
                    None,
                    request_id,
                ))
            }
            Fault::EmptyCredentialSet => {
                let body = json!({
                    "credentialSet": [],
                    "subjectArn": format!(
                        "arn:aws:rolesanywhere:{}:{}:subject/{}",
                        shared.region,
                        shared.account,
                        random_uuid(&shared.rng)?
                    ),
                });
                return Ok(json_response(201, body.to_string(), None, request_id));
            }
            Fault::CloseConnection => return Err(Stop::Close),
            Fault::Delay(d) => tokio::time::sleep(d).await,
        }
    }

    let now = OffsetDateTime::now_utc();
    let auth = authenticate(shared, &parts, &body, now)?;
    let params = parse_params(&parts, &body)?;

    let anchor = shared
        .anchors
        .iter()
        .find(|a| a.arn == params.trust_anchor_arn)
        .ok_or_else(|| ApiError::not_found("Trust anchor not found"))?;
    if !anchor.enabled {
        return Err(ApiError::access_denied("Trust anchor is disabled").into());
    }
    check_trust(&auth, &anchor.ca_ders, now.unix_timestamp())?;

    let profile = shared
        .profiles
        .iter()
        .find(|p| p.arn == params.profile_arn)
        .ok_or_else(|| ApiError::not_found("Profile not found"))?;
    if !profile.enabled {
        return Err(ApiError::access_denied("Profile is disabled").into());
    }
    if !profile.role_arns.contains(&params.role_arn) {
        return Err(ApiError::access_denied("Role is not in the profile's list of roles").into());
    }

    check_session_tags(&auth, &params)?;
    let (body, session) = issue(shared, &auth, &params)?;
    lock(&shared.issued).push(session);
    Ok(json_response(201, body, None, request_id))
}

/// The service maps the leaf's first URI SAN (and subject/issuer attributes) to session tags;
/// STS takes tag values of at most 256 characters of letters, separators, digits and
/// `_.:/=+-@`, and one value it cannot map fails the call, naming the field that failed.
fn check_session_tags(auth: &Authenticated, params: &Params) -> Result<(), ApiError> {
    let Some(uri) = &auth.info.spiffe_id else {
        return Ok(());
    };
    let mappable = uri.chars().count() <= 256
        && uri
            .chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c));
    if mappable {
        return Ok(());
    }
    Err(ApiError::access_denied(format!(
        "Unable to assume role for {}. Some attributes failed to be mapped into session tags. Issuer: [  ]; Subject: [  ]; SAN: [ URI/1 ]",
        params.role_arn
    )))
}

/// Records the presented leaf (unverified) so refused calls still say who tried.
fn observe_leaf(headers: &HeaderMap, call: &mut RecordedCall) {
    let Some(der) = headers
        .get(X_AMZ_X509)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
    else {
        return;
    };
    if let Ok(cert) = verify::parse_cert(&der) {
        let info = verify::leaf_info(&cert, &der);
        call.leaf_serial_decimal = Some(info.serial_decimal);
        call.leaf_sha256_hex = Some(info.sha256_hex);
        call.spiffe_id = info.spiffe_id;
    }
}

/// Records `roleArn` and `durationSeconds` as sent (unvalidated).
fn observe_params(parts: &Parts, body: &[u8], call: &mut RecordedCall) {
    let json: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    call.role_arn = query_param(parts, "roleArn").ok().flatten().or_else(|| {
        json.as_ref()
            .and_then(|j| j.get("roleArn"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    call.duration_seconds = json
        .as_ref()
        .and_then(|j| j.get("durationSeconds"))
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok());
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] (early when Content-Length says so).
async fn read_body(mut body: Incoming, headers: &HeaderMap) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::too_large());
    }
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| ApiError::validation("Could not read the request body"))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY_BYTES {
                return Err(ApiError::too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// The one value of a header as text; absent is `None`, repeated or non-text is an error.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::access_denied(format!(
            "Header '{name}' must appear only once"
        )));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| ApiError::access_denied(format!("Header '{name}' is not valid text")))
}

/// A request that passed authentication.
struct Authenticated {
    leaf_der: Vec<u8>,
    chain_ders: Vec<Vec<u8>>,
    info: LeafInfo,
}

/// Checks the SigV4-X509 signature exactly as the real service does, from the raw request.
fn authenticate(
    shared: &Shared,
    parts: &Parts,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Authenticated, ApiError> {
    let headers = &parts.headers;
    let authz_value = single_header(headers, AUTHORIZATION.as_str())?
        .ok_or_else(|| ApiError::access_denied("Missing Authentication Token"))?;
    let authz = verify::parse_authorization(authz_value).map_err(authz_error)?;

    let amz_date = single_header(headers, X_AMZ_DATE)?.ok_or_else(|| {
        ApiError::access_denied(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    })?;
    let signed_at = verify::parse_amz_date(amz_date).map_err(authz_error)?;
    check_skew(signed_at, now, shared.max_clock_skew)?;

    if authz.date != amz_date[..8] {
        return Err(ApiError::access_denied(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{}' != '{}', from '{amz_date}'.",
            authz.date,
            &amz_date[..8]
        )));
    }
    if authz.region != shared.region {
        return Err(ApiError::access_denied(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            authz.region
        )));
    }
    if authz.service != "rolesanywhere" {
        return Err(ApiError::access_denied(format!(
            "Credential should be scoped to correct service: 'rolesanywhere', not '{}'.",
            authz.service
        )));
    }
    if authz.terminator != "aws4_request" {
        return Err(ApiError::access_denied(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'.",
            authz.terminator
        )));
    }

    let chain_value = single_header(headers, X_AMZ_X509_CHAIN)?;
    let mut must_sign = vec!["host", X_AMZ_DATE, X_AMZ_X509];
    if chain_value.is_some() {
        must_sign.push(X_AMZ_X509_CHAIN);
    }
    for name in must_sign {
        if !authz.signed_headers.iter().any(|h| h == name) {
            return Err(ApiError::access_denied(format!(
                "'{name}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }

    let leaf_b64 = single_header(headers, X_AMZ_X509)?
        .ok_or_else(|| ApiError::access_denied("Missing signing certificate (X-Amz-X509)"))?;
    let leaf_der = decode_cert(leaf_b64)
        .ok_or_else(|| ApiError::access_denied("Invalid signing certificate"))?;
    let leaf = verify::parse_cert(&leaf_der)
        .map_err(|_| ApiError::access_denied("Invalid signing certificate"))?;

    let mut chain_ders = Vec::new();
    if let Some(chain) = chain_value {
        for item in chain.split(',') {
            if chain_ders.len() == MAX_CHAIN_CERTS {
                return Err(ApiError::access_denied(
                    "Too many certificates in the chain",
                ));
            }
            let der = decode_cert(item)
                .ok_or_else(|| ApiError::access_denied("Invalid certificate chain"))?;
            verify::parse_cert(&der)
                .map_err(|_| ApiError::access_denied("Invalid certificate chain"))?;
            chain_ders.push(der);
        }
    }

    let info = verify::leaf_info(&leaf, &leaf_der);
    if authz.serial != info.serial_decimal {
        return Err(ApiError::access_denied(
            "Credential serial number does not match the signing certificate",
        ));
    }

    let canonical_request = canonical::canonical_request(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query(),
        headers,
        &authz.signed_headers,
        body,
    )
    .map_err(|e| match e {
        CanonicalError::MissingSignedHeader(h) => {
            ApiError::access_denied(format!("Signed header '{h}' is missing from the request"))
        }
        CanonicalError::BadHeaderValue(h) => {
            ApiError::access_denied(format!("Signed header '{h}' is not valid text"))
        }
    })?;
    let string_to_sign = canonical::string_to_sign(
        authz.algorithm.name(),
        amz_date,
        &authz.scope(),
        &canonical_request,
    );
    verify::verify_request_signature(
        &leaf,
        authz.algorithm,
        string_to_sign.as_bytes(),
        &authz.signature,
    )
    .map_err(|e| match e {
        SignatureError::AlgorithmMismatch { .. } => ApiError::access_denied(
            "Signature algorithm does not match the signing certificate's key type",
        ),
        SignatureError::UnsupportedKey => {
            ApiError::access_denied("Unsupported signing certificate key type")
        }
        SignatureError::Invalid => ApiError::access_denied("Invalid signature"),
    })?;

    Ok(Authenticated {
        leaf_der,
        chain_ders,
        info,
    })
}

/// Base64 DER of one certificate, tolerating surrounding spaces.
fn decode_cert(b64: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .filter(|d| !d.is_empty())
}

fn authz_error(e: AuthHeaderError) -> ApiError {
    let message = match e {
        AuthHeaderError::UnsupportedAlgorithm(alg) => {
            format!("Unsupported signing algorithm '{alg}'")
        }
        AuthHeaderError::MissingComponent(c) => {
            format!("Authorization header requires '{c}' parameter.")
        }
        AuthHeaderError::MalformedComponent(_)
        | AuthHeaderError::MalformedCredential(_)
        | AuthHeaderError::MalformedSignedHeaders(_) => {
            format!("Authorization header is malformed: {e}")
        }
        AuthHeaderError::BadSignatureHex => "Invalid signature".to_owned(),
        AuthHeaderError::BadDate(d) => {
            format!("Invalid X-Amz-Date '{d}': expected YYYYMMDDTHHMMSSZ")
        }
    };
    ApiError::access_denied(message)
}

/// The real service refuses signatures more than 5 minutes away from its clock.
fn check_skew(
    signed_at: OffsetDateTime,
    now: OffsetDateTime,
    max_skew: Duration,
) -> Result<(), ApiError> {
    let skew = time::Duration::try_from(max_skew).unwrap_or(time::Duration::MAX);
    let what = if max_skew.as_secs().is_multiple_of(60) {
        format!("{} min.", max_skew.as_secs() / 60)
    } else {
        format!("{} s", max_skew.as_secs())
    };
    let earliest = now.checked_sub(skew).unwrap_or(now);
    let latest = now.checked_add(skew).unwrap_or(now);
    if signed_at < earliest {
        return Err(ApiError::access_denied(format!(
            "Signature expired: {} is now earlier than {} ({} - {what})",
            verify::format_amz_date(signed_at),
            verify::format_amz_date(earliest),
            verify::format_amz_date(now),
        )));
    }
    if signed_at > latest {
        return Err(ApiError::access_denied(format!(
            "Signature not yet current: {} is still later than {} ({} + {what})",
            verify::format_amz_date(signed_at),
            verify::format_amz_date(latest),
            verify::format_amz_date(now),
        )));
    }
    Ok(())
}

/// Path validation of the authenticated leaf and chain against one trust anchor.
fn check_trust(auth: &Authenticated, anchor_ders: &[Vec<u8>], now: i64) -> Result<(), ApiError> {
    let untrusted = || ApiError::access_denied("Untrusted signing certificate");
    let leaf = verify::parse_cert(&auth.leaf_der).map_err(|_| untrusted())?;
    let chain = auth
        .chain_ders
        .iter()
        .map(|d| verify::parse_cert(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| untrusted())?;
    let anchors = anchor_ders
        .iter()
        .map(|d| verify::parse_cert(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::internal("trust anchor certificate does not parse"))?;
    verify::validate_chain(&leaf, &chain, &anchors, now).map_err(|e| {
        tracing::debug!(reason = %e, "Roles Anywhere double: untrusted signing certificate");
        untrusted()
    })
}

/// Validated CreateSession parameters.
#[derive(Debug)]
struct Params {
    role_arn: String,
    profile_arn: String,
    trust_anchor_arn: String,
    duration_seconds: u32,
    role_session_name: Option<String>,
}

/// A decoded query parameter; repeated or non-UTF-8 values are an error.
fn query_param(parts: &Parts, name: &str) -> Result<Option<String>, ApiError> {
    let mut found = None;
    for (k, v) in canonical::query_pairs(parts.uri.query().unwrap_or("")) {
        if k == name.as_bytes() {
            if found.is_some() {
                return Err(ApiError::validation(format!(
                    "Query parameter '{name}' must appear only once"
                )));
            }
            let v = String::from_utf8(v).map_err(|_| {
                ApiError::validation(format!("Query parameter '{name}' is not valid UTF-8"))
            })?;
            found = Some(v);
        }
    }
    Ok(found)
}

fn null_error(field: &str) -> ApiError {
    ApiError::validation(format!(
        "1 validation error detected: Value null at '{field}' failed to satisfy constraint: \
         Member must not be null"
    ))
}

/// An ARN from the query string or the JSON body; both given must agree.
fn arn_param(parts: &Parts, json: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    let from_query = query_param(parts, field)?;
    let from_body = match json.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::validation(format!(
                "Value at '{field}' must be a string"
            )))
        }
    };
    let value = match (from_query, from_body) {
        (Some(q), Some(b)) if q != b => {
            return Err(ApiError::validation(format!(
                "'{field}' differs between the query string and the body"
            )))
        }
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => return Err(null_error(field)),
    };
    if !value.starts_with("arn:") || value.len() > 1011 {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy \
             constraint: Member must be a valid ARN"
        )));
    }
    Ok(value)
}

fn parse_params(parts: &Parts, body: &[u8]) -> Result<Params, ApiError> {
    let json: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(ApiError::validation(
                    "Could not parse request body into json",
                ))
            }
        }
    };
    let role_arn = arn_param(parts, &json, "roleArn")?;
    let profile_arn = arn_param(parts, &json, "profileArn")?;
    let trust_anchor_arn = arn_param(parts, &json, "trustAnchorArn")?;
    if !role_arn.contains(":role/") {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{role_arn}' at 'roleArn' failed to satisfy \
             constraint: Member must be a role ARN"
        )));
    }

    let duration_seconds = match json.get("durationSeconds") {
        None | Some(Value::Null) => DEFAULT_DURATION_SECONDS,
        Some(v) => {
            let d = v.as_u64().ok_or_else(|| {
                ApiError::validation(format!(
                    "1 validation error detected: Value '{v}' at 'durationSeconds' failed to \
                     satisfy constraint: Member must be an integer"
                ))
            })?;
            if d < MIN_DURATION_SECONDS {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{d}' at 'durationSeconds' failed to \
                     satisfy constraint: Member must have value greater than or equal to \
                     {MIN_DURATION_SECONDS}"
                )));
            }
            if d > MAX_DURATION_SECONDS {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{d}' at 'durationSeconds' failed to \
                     satisfy constraint: Member must have value less than or equal to \
                     {MAX_DURATION_SECONDS}"
                )));
            }
            // In range, so it fits.
            u32::try_from(d).unwrap_or(DEFAULT_DURATION_SECONDS)
        }
    };

    let role_session_name = match json.get("roleSessionName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let ok_chars = s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
            if !(2..=64).contains(&s.len()) || !ok_chars {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{s}' at 'roleSessionName' failed to \
                     satisfy constraint: Member must satisfy regular expression pattern: \
                     [\\w+=,.@-]{{2,64}}"
                )));
            }
            Some(s.clone())
        }
        Some(_) => {
            return Err(ApiError::validation(
                "Value at 'roleSessionName' must be a string",
            ))
        }
    };

    Ok(Params {
        role_arn,
        profile_arn,
        trust_anchor_arn,
        duration_seconds,
        role_session_name,
    })
}

/// A stable pseudo-random id derived from `seed`, so the same role always has the same
/// `AROA…` id and the same certificate subject the same subject ARN, like on the real service.
fn stable_chars(seed: &str, alphabet: &[u8], n: usize) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    digest
        .as_ref()
        .iter()
        .cycle()
        .take(n)
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect()
}

fn stable_uuid(seed: &str) -> String {
    let h =
        hex::encode(&ring::digest::digest(&ring::digest::SHA256, seed.as_bytes()).as_ref()[..16]);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Issues a credential set: the response body and the record kept for other doubles.
fn issue(
    shared: &Shared,
    auth: &Authenticated,
    params: &Params,
) -> Result<(String, IssuedSession), ApiError> {
    let lifetime = shared
        .credential_lifetime
        .unwrap_or(Duration::from_secs(u64::from(params.duration_seconds)));
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| ApiError::internal("clock is before 1970"))?
        .as_secs();
    let exp_unix = now_unix.saturating_add(lifetime.as_secs());
    let exp_signed = i64::try_from(exp_unix).map_err(|_| ApiError::internal("time overflow"))?;
    let expiration_text = response::format_expiration(exp_signed)?;
    let expiration = SystemTime::UNIX_EPOCH + Duration::from_secs(exp_unix);

    let access_key_id = format!("ASIA{}", random_chars(&shared.rng, KEY_ID_ALPHABET, 16)?);
    let secret_access_key = random_chars(&shared.rng, SECRET_ALPHABET, 40)?;
    let session_token = format!("IQoJb3JpZ2luX2VjE{}", random_base64(&shared.rng, 180)?);

    let session_name = params
        .role_session_name
        .clone()
        .unwrap_or_else(|| auth.info.serial_hex.clone());
    let role_name = params.role_arn.rsplit('/').next().unwrap_or_default();
    // arn:aws:iam::<account>:role/<name>
    let account = params
        .role_arn
        .split(':')
        .nth(4)
        .filter(|a| !a.is_empty())
        .unwrap_or(&shared.account)
        .to_owned();
    let assumed_role_arn =
        format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}");
    let assumed_role_id = format!(
        "AROA{}:{session_name}",
        stable_chars(&params.role_arn, KEY_ID_ALPHABET, 17)
    );
    let leaf = verify::parse_cert(&auth.leaf_der)
        .map_err(|_| ApiError::internal("verified leaf no longer parses"))?;
    let subject_arn = format!(
        "arn:aws:rolesanywhere:{}:{}:subject/{}",
        shared.region,
        shared.account,
        stable_uuid(&format!("{}|{}", leaf.subject(), leaf.issuer()))
    );

    let mut set = json!({
        "assumedRoleUser": { "arn": assumed_role_arn, "assumedRoleId": assumed_role_id },
        "credentials": {
            "accessKeyId": access_key_id,
            "secretAccessKey": secret_access_key,
            "sessionToken": session_token,
            "expiration": expiration_text,
        },
        "packedPolicySize": 0,
        "roleArn": params.role_arn,
    });
    if let (Some(cn), Some(obj)) = (&auth.info.common_name, set.as_object_mut()) {
        obj.insert("sourceIdentity".to_owned(), Value::String(cn.clone()));
    }
    let body = json!({ "credentialSet": [set], "subjectArn": subject_arn }).to_string();

    let session = IssuedSession {
        access_key_id,
        secret_access_key,
        session_token,
        expiration,
        role_arn: params.role_arn.clone(),
        role_session_name: session_name,
        assumed_role_arn,
        account,
        spiffe_id: auth.info.spiffe_id.clone(),
        leaf_serial_decimal: auth.info.serial_decimal.clone(),
    };
    Ok((body, session))
}
