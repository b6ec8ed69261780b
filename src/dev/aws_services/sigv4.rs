//! Verification of standard SigV4 (`AWS4-HMAC-SHA256`) requests, written from the public
//! specification and independent of any signer in this crate.
//!
//! Why its own code: the doubles exist to catch signing bugs in clients. They must compute what
//! AWS computes from the bytes on the wire (the path as sent, the query as sent, the headers the
//! client listed), not what a client library believes it signed.
//!
//! The pure pieces ([`signing_key`], [`canonical_uri`], [`canonical_query`],
//! [`string_to_sign`], [`signature_hex`]) are separate functions so the AWS-published known
//! answers can be checked against them directly.

use std::time::{Duration, SystemTime};

use http::request::Parts;
use http::HeaderMap;
use ring::{digest, hmac};
use subtle::ConstantTimeEq;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::SessionLookup;
use crate::dev::rolesanywhere::IssuedSession;

/// The only algorithm accepted (SigV4A and the X.509 variants are refused).
pub(super) const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// `x-amz-content-sha256` value meaning "the body is not part of the signature".
pub(super) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";

/// The parsed `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Authorization {
    pub(super) access_key_id: String,
    /// `YYYYMMDD` from the credential scope.
    pub(super) date: String,
    pub(super) region: String,
    /// Signing service name from the scope (`sts`, `vpc-lattice-svcs`), used for routing.
    pub(super) service: String,
    /// The `SignedHeaders` value as sent (lowercase names joined by `;`).
    pub(super) signed_headers: String,
    /// Lowercase hex signature as sent.
    pub(super) signature: String,
}

impl Authorization {
    fn signed_header_names(&self) -> impl Iterator<Item = &str> {
        self.signed_headers.split(';').filter(|h| !h.is_empty())
    }
}

/// Why a request was not authenticated. Each service maps these to its own error shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum AuthFailure {
    /// No `Authorization` header at all.
    #[error("Request is missing Authentication Token")]
    Missing,
    /// The header or the required companions are malformed (AWS: `IncompleteSignature`).
    #[error("{0}")]
    Incomplete(String),
    /// The access key id is not one the Roles Anywhere double issued.
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// The session token is absent or is not the one issued with the access key.
    #[error("The security token included in the request is invalid.")]
    InvalidToken,
    /// The credentials are past their expiration.
    #[error("The security token included in the request is expired")]
    Expired,
    /// The signature, scope or date is wrong (AWS: `SignatureDoesNotMatch`).
    #[error("{0}")]
    Mismatch(String),
}

/// What verification needs besides the request.
pub(super) struct VerifyContext<'a> {
    pub(super) now: SystemTime,
    pub(super) max_clock_skew: Duration,
    /// The only region accepted in the credential scope.
    pub(super) region: &'a str,
    /// Whether `x-amz-content-sha256: UNSIGNED-PAYLOAD` may stand in for the body hash.
    pub(super) allow_unsigned_payload: bool,
    pub(super) lookup: &'a SessionLookup,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/region/service/aws4_request,
/// SignedHeaders=a;b, Signature=hex`. Absent header is [`AuthFailure::Missing`]; anything
/// malformed is [`AuthFailure::Incomplete`] with a message in the style AWS uses.
pub(super) fn parse_authorization(headers: &HeaderMap) -> Result<Authorization, AuthFailure> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthFailure::Missing);
    };
    if values.next().is_some() {
        return Err(AuthFailure::Incomplete(
            "The Authorization header must appear only once".to_owned(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthFailure::Incomplete("The Authorization header is not valid text".into()))?
        .trim();
    let (algorithm, rest) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(AuthFailure::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}' (this endpoint accepts only {ALGORITHM})"
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((key, val)) = part.split_once('=') else {
            return Err(AuthFailure::Incomplete(format!(
                "Authorization header requires each component to be of the form key=value, \
                 got '{part}'"
            )));
        };
        let slot = match key.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            other => {
                return Err(AuthFailure::Incomplete(format!(
                    "Authorization header has an unknown component '{other}'"
                )))
            }
        };
        if slot.replace(val.trim().to_owned()).is_some() {
            return Err(AuthFailure::Incomplete(format!(
                "Authorization header repeats the '{}' component",
                key.trim()
            )));
        }
    }
    let mut missing = Vec::new();
    for (name, slot) in [
        ("Credential", &credential),
        ("Signature", &signature),
        ("SignedHeaders", &signed_headers),
    ] {
        if slot.as_deref().is_none_or(str::is_empty) {
            missing.push(format!("Authorization header requires '{name}' parameter."));
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature), true) =
        (credential, signed_headers, signature, missing.is_empty())
    else {
        return Err(AuthFailure::Incomplete(missing.join(" ")));
    };
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts.as_slice() else {
        return Err(AuthFailure::Incomplete(format!(
            "Credential '{credential}' is not of the form \
             <access key>/<YYYYMMDD>/<region>/<service>/aws4_request"
        )));
    };
    if *terminator != "aws4_request" {
        return Err(AuthFailure::Mismatch(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not \
             '{terminator}'."
        )));
    }
    if access_key_id.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthFailure::Incomplete(format!(
            "Credential '{credential}' has an empty access key or a date that is not YYYYMMDD"
        )));
    }
    Ok(Authorization {
        access_key_id: (*access_key_id).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers,
        signature,
    })
}

/// Authenticates a request whose `Authorization` header parsed as `auth`; on success returns
/// the session the access key belongs to.
///
/// The checks run in the order AWS reports them: date and scope, then the key, the session
/// token and its expiry, and only then the signature, so a client gets the most useful error.
pub(super) fn verify(
    auth: &Authorization,
    parts: &Parts,
    body: &[u8],
    ctx: &VerifyContext<'_>,
) -> Result<IssuedSession, AuthFailure> {
    let amz_date = single_header(&parts.headers, X_AMZ_DATE)?.ok_or_else(|| {
        AuthFailure::Incomplete(
            "Authorization header requires existence of a 'X-Amz-Date' header (this double does \
             not accept 'Date' instead)."
                .to_owned(),
        )
    })?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        AuthFailure::Incomplete(format!(
            "X-Amz-Date '{amz_date}' is not of the form YYYYMMDDTHHMMSSZ"
        ))
    })?;
    if !amz_date.starts_with(&auth.date) {
        return Err(AuthFailure::Mismatch(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{}' != '{}', from '{amz_date}'.",
            auth.date,
            amz_date.get(..8).unwrap_or(amz_date)
        )));
    }
    if auth.region != ctx.region {
        return Err(AuthFailure::Mismatch(format!(
            "Credential should be scoped to a valid region. This endpoint serves '{}', not '{}'.",
            ctx.region, auth.region
        )));
    }
    if !auth.signed_header_names().any(|h| h == "host") {
        return Err(AuthFailure::Incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".to_owned(),
        ));
    }
    if !auth.signed_header_names().any(|h| h == X_AMZ_DATE) {
        return Err(AuthFailure::Incomplete(
            "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.".to_owned(),
        ));
    }
    check_skew(signed_at, amz_date, ctx)?;

    let session = (ctx.lookup)(&auth.access_key_id).ok_or(AuthFailure::UnknownKey)?;
    let token = single_header(&parts.headers, X_AMZ_SECURITY_TOKEN)?;
    let token_ok =
        token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(session.session_token.as_bytes())));
    if !token_ok {
        return Err(AuthFailure::InvalidToken);
    }
    if session.expiration <= ctx.now {
        return Err(AuthFailure::Expired);
    }

    let payload_hash = payload_hash(&parts.headers, body, ctx.allow_unsigned_payload)?;
    let canonical = canonical_request(parts, auth, &payload_hash)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = string_to_sign(amz_date, &scope, &canonical);
    let key = signing_key(
        &session.secret_access_key,
        &auth.date,
        &auth.region,
        &auth.service,
    );
    let expected = signature_hex(&key, &to_sign);
    if !bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        // The canonical request is what a developer needs to find a signing bug, but it holds
        // the session token when that is signed: never log the token itself.
        let shown = if session.session_token.is_empty() {
            canonical
        } else {
            canonical.replace(&session.session_token, "<redacted>")
        };
        tracing::debug!(
            access_key_id = %auth.access_key_id,
            canonical_request = %shown,
            "SigV4 signature mismatch"
        );
        return Err(AuthFailure::Mismatch(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details."
                .to_owned(),
        ));
    }
    Ok(session)
}

fn check_skew(
    signed_at: OffsetDateTime,
    amz_date: &str,
    ctx: &VerifyContext<'_>,
) -> Result<(), AuthFailure> {
    let now = OffsetDateTime::from(ctx.now);
    let skew = ctx.max_clock_skew;
    let minutes = skew.as_secs() / 60;
    if signed_at + skew < now {
        return Err(AuthFailure::Mismatch(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - {minutes} min.)",
            format_amz_date(now - skew),
            format_amz_date(now)
        )));
    }
    if signed_at - skew > now {
        return Err(AuthFailure::Mismatch(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + {minutes} min.)",
            format_amz_date(now + skew),
            format_amz_date(now)
        )));
    }
    Ok(())
}

/// The payload hash that goes into the canonical request.
///
/// `UNSIGNED-PAYLOAD` is honoured only where the service allows it (VPC Lattice); elsewhere the
/// hash is always computed from the body, and a stated `x-amz-content-sha256` must agree with
/// it, as AWS does.
fn payload_hash(
    headers: &HeaderMap,
    body: &[u8],
    allow_unsigned: bool,
) -> Result<String, AuthFailure> {
    let stated = single_header(headers, X_AMZ_CONTENT_SHA256)?;
    if stated == Some(UNSIGNED_PAYLOAD) {
        if allow_unsigned {
            return Ok(UNSIGNED_PAYLOAD.to_owned());
        }
        return Err(AuthFailure::Mismatch(
            "x-amz-content-sha256 'UNSIGNED-PAYLOAD' is not accepted by this service: the \
             request body must be signed."
                .to_owned(),
        ));
    }
    let actual = sha256_hex(body);
    if let Some(stated) = stated {
        if !stated.eq_ignore_ascii_case(&actual) {
            return Err(AuthFailure::Mismatch(format!(
                "The provided 'x-amz-content-sha256' header does not match what was computed: \
                 stated '{stated}', body hashes to '{actual}'."
            )));
        }
    }
    Ok(actual)
}

/// The canonical request as AWS re-derives it from the received request.
pub(super) fn canonical_request(
    parts: &Parts,
    auth: &Authorization,
    payload_hash: &str,
) -> Result<String, AuthFailure> {
    let mut out = String::new();
    out.push_str(parts.method.as_str());
    out.push('\n');
    out.push_str(&canonical_uri(parts.uri.path()));
    out.push('\n');
    out.push_str(&canonical_query(parts.uri.query().unwrap_or("")));
    out.push('\n');
    for name in auth.signed_header_names() {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| canonical_header_value(v.as_bytes()))
            .collect();
        if values.is_empty() {
            return Err(AuthFailure::Mismatch(format!(
                "The request signature we calculated does not match the signature you provided: \
                 signed header '{name}' is not in the request."
            )));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&auth.signed_headers);
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// Canonical URI for every service but S3: dot segments and repeated slashes are removed, then
/// each segment of the path *as received* (still percent-encoded) is URI-encoded again, so
/// `%20` on the wire becomes `%2520`. An empty path is `/`.
pub(super) fn canonical_uri(raw_path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in raw_path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    let encoded: Vec<String> = segments.iter().map(|s| uri_encode(s.as_bytes())).collect();
    out.push_str(&encoded.join("/"));
    if raw_path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// Canonical query string: every `name=value` pair decoded, re-encoded strictly, and sorted by
/// name then value. A parameter without `=` gets an empty value.
pub(super) fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Header value for the canonical form: trimmed, inner runs of spaces collapsed to one.
fn canonical_header_value(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// `AWS4-HMAC-SHA256\n<amz date>\n<scope>\n<hex sha256(canonical request)>`.
pub(super) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
pub(super) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_secret = format!("AWS4{secret}");
    let k_date = hmac_sha256(k_secret.as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// Lowercase hex HMAC-SHA256 of the string to sign under the signing key.
pub(super) fn signature_hex(signing_key: &[u8], string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(signing_key, string_to_sign.as_bytes()))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, msg).as_ref().to_vec()
}

pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters stay, every other byte is `%XX`
/// (uppercase), including `/`.
pub(super) fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decoding that leaves a malformed escape literal and `+` as `+` (SigV4 query strings
/// are not form-encoded).
pub(super) fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|b| char::from(*b).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|b| char::from(*b).to_digit(16));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                // Both digits are < 16, so the value fits in a byte.
                out.push(((hi << 4) | lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The one value of a header as text: absent is `None`; repeated or non-text is refused.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, AuthFailure> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthFailure::Incomplete(format!(
            "Header '{name}' must appear only once"
        )));
    }
    first
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| AuthFailure::Incomplete(format!("Header '{name}' is not valid text")))
}

/// Parses `YYYYMMDDTHHMMSSZ` as UTC.
pub(super) fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    PrimitiveDateTime::parse(s, fmt)
        .ok()
        .map(|t| t.assume_utc())
}

/// Formats as `YYYYMMDDTHHMMSSZ`.
pub(super) fn format_amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
