//! STS `GetCallerIdentity`, in the wire protocols real clients use (`AssumeRoleWithWebIdentity`
//! is in [`super::web_identity`]).
//!
//! Which protocol: botocore 1.44 (and so boto3 and the AWS CLI v1/v2 built on the same models)
//! declares STS as `query`, and aws-sdk-sts (smithy-rs) serializes GetCallerIdentity with the
//! awsQuery writer: `POST /`, `Content-Type: application/x-www-form-urlencoded`, body
//! `Action=GetCallerIdentity&Version=2011-06-15`, XML answers. That is what the double serves
//! first. It also understands the awsJson1_0 shape (`X-Amz-Target:
//! AWSSecurityTokenServiceV20110615.GetCallerIdentity`, `application/x-amz-json-1.0`) that AWS
//! has been moving query services to, answering it in JSON with the query error code in
//! `x-amzn-query-error`, so a client that switches protocol keeps working. CBOR (rpcv2Cbor) is
//! not spoken by any STS client today and is refused.

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use ring::digest;
use serde_json::json;

use super::sigv4::{percent_decode, AuthFailure};
use crate::dev::rolesanywhere::IssuedSession;

const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const API_VERSION: &str = "2011-06-15";
const JSON_TARGET_PREFIX: &str = "AWSSecurityTokenServiceV20110615.";
const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// How the client framed its request, and so how it must be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    /// Form-encoded `Action=…` with XML answers.
    Query,
    /// `X-Amz-Target` with JSON answers.
    Json,
}

/// An STS error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct StsError {
    pub(super) status: u16,
    pub(super) code: String,
    pub(super) message: String,
    /// `Sender` (client's fault) or `Receiver`.
    pub(super) fault: &'static str,
}

impl StsError {
    fn sender(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            fault: "Sender",
        }
    }

    /// Maps an authentication failure to the code STS sends for it.
    pub(super) fn from_auth(failure: &AuthFailure) -> Self {
        let msg = failure.to_string();
        match failure {
            AuthFailure::Missing => Self::sender(403, "MissingAuthenticationToken", msg),
            AuthFailure::Incomplete(_) => Self::sender(400, "IncompleteSignature", msg),
            AuthFailure::UnknownKey | AuthFailure::InvalidToken => {
                Self::sender(403, "InvalidClientTokenId", msg)
            }
            AuthFailure::Expired => Self::sender(403, "ExpiredToken", msg),
            AuthFailure::Mismatch(_) => Self::sender(403, "SignatureDoesNotMatch", msg),
        }
    }

    /// 403 for a request signed for a service this endpoint does not serve.
    pub(super) fn wrong_service(service: &str) -> Self {
        Self::sender(
            403,
            "SignatureDoesNotMatch",
            format!(
                "Credential should be scoped to correct service: 'sts' (or 'vpc-lattice-svcs' on \
                 this endpoint), not '{service}'."
            ),
        )
    }

    /// 413 for bodies over the limit.
    pub(super) fn too_large() -> Self {
        Self::sender(413, "RequestEntityTooLarge", "Request body is too large")
    }
}

/// Picks the protocol from the headers: `X-Amz-Target` or an `application/x-amz-json`
/// content type means JSON, anything else the query protocol.
pub(super) fn protocol(parts: &Parts) -> Protocol {
    let json_ct = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim().starts_with("application/x-amz-json"));
    if parts.headers.contains_key("x-amz-target") || json_ct {
        Protocol::Json
    } else {
        Protocol::Query
    }
}

/// The operation the request names (`Action` for query, the `X-Amz-Target` suffix for JSON),
/// before authentication, so refused calls are recorded with it too.
pub(super) fn operation(parts: &Parts, body: &[u8], protocol: Protocol) -> Option<String> {
    match protocol {
        Protocol::Json => parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(|t| t.strip_prefix(JSON_TARGET_PREFIX).unwrap_or(t).to_owned()),
        Protocol::Query => query_params(parts, body)
            .into_iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v),
    }
}

/// Whether an unsigned request looks like it was meant for STS.
pub(super) fn looks_like_sts(parts: &Parts, body: &[u8]) -> bool {
    protocol(parts) == Protocol::Json || operation(parts, body, Protocol::Query).is_some()
}

/// Query parameters from the URI and, for a form body, from the body (form encoding: `+` is a
/// space).
pub(super) fn query_params(parts: &Parts, body: &[u8]) -> Vec<(String, String)> {
    let mut out = form_pairs(parts.uri.query().unwrap_or(""));
    if let Ok(text) = std::str::from_utf8(body) {
        out.extend(form_pairs(text));
    }
    out
}

fn form_pairs(raw: &str) -> Vec<(String, String)> {
    let decode = |s: &str| String::from_utf8_lossy(&percent_decode(&s.replace('+', " "))).into();
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Serves an authenticated request.
pub(super) fn handle(
    parts: &Parts,
    body: &[u8],
    protocol: Protocol,
    session: &IssuedSession,
    request_id: &str,
) -> Response<String> {
    match protocol {
        Protocol::Query => {
            let params = query_params(parts, body);
            let get = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            if let Some(version) = get("Version") {
                if version != API_VERSION {
                    return error_response(
                        protocol,
                        &StsError::sender(
                            400,
                            "InvalidAction",
                            format!("Could not find operation for version {version}"),
                        ),
                        request_id,
                    );
                }
            }
            match get("Action") {
                Some("GetCallerIdentity") => xml_response(
                    200,
                    format!(
                        "<GetCallerIdentityResponse xmlns=\"{XMLNS}\">\n  \
                         <GetCallerIdentityResult>\n    <Arn>{}</Arn>\n    \
                         <UserId>{}</UserId>\n    <Account>{}</Account>\n  \
                         </GetCallerIdentityResult>\n  <ResponseMetadata>\n    \
                         <RequestId>{}</RequestId>\n  </ResponseMetadata>\n\
                         </GetCallerIdentityResponse>\n",
                        xml_escape(&session.assumed_role_arn),
                        xml_escape(&user_id(session)),
                        xml_escape(&session.account),
                        xml_escape(request_id)
                    ),
                    request_id,
                ),
                Some(other) => error_response(
                    protocol,
                    &StsError::sender(
                        400,
                        "InvalidAction",
                        format!("Could not find operation {other} for version {API_VERSION}"),
                    ),
                    request_id,
                ),
                None => error_response(
                    protocol,
                    &StsError::sender(400, "MissingAction", "Missing Action"),
                    request_id,
                ),
            }
        }
        Protocol::Json => match operation(parts, body, protocol).as_deref() {
            Some("GetCallerIdentity") => json_response(
                200,
                json!({
                    "Arn": session.assumed_role_arn,
                    "UserId": user_id(session),
                    "Account": session.account,
                })
                .to_string(),
                request_id,
            ),
            other => error_response(
                protocol,
                &StsError::sender(
                    400,
                    "InvalidAction",
                    format!(
                        "Could not find operation {} for version {API_VERSION}",
                        other.unwrap_or("(no X-Amz-Target)")
                    ),
                ),
                request_id,
            ),
        },
    }
}

/// `AROA…:<session name>`: the role id is derived from the role ARN so it is stable across
/// sessions, like the real (opaque, per-role) id.
pub(super) fn user_id(session: &IssuedSession) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = digest::digest(&digest::SHA256, session.role_arn.as_bytes());
    let id: String = hash
        .as_ref()
        .iter()
        .take(17)
        .map(|b| char::from(ALPHABET[usize::from(b & 0x1f)]))
        .collect();
    format!("AROA{id}:{}", session.role_session_name)
}

/// An error in the shape of `protocol`: the STS XML `ErrorResponse`, or JSON `__type` /
/// `message` plus `x-amzn-query-error: <Code>;<Fault>` as awsQuery-compatible JSON services send.
pub(super) fn error_response(
    protocol: Protocol,
    err: &StsError,
    request_id: &str,
) -> Response<String> {
    match protocol {
        Protocol::Query => xml_response(
            err.status,
            format!(
                "<ErrorResponse xmlns=\"{XMLNS}\">\n  <Error>\n    <Type>{}</Type>\n    \
                 <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  \
                 <RequestId>{}</RequestId>\n</ErrorResponse>\n",
                err.fault,
                xml_escape(&err.code),
                xml_escape(&err.message),
                xml_escape(request_id)
            ),
            request_id,
        ),
        Protocol::Json => {
            let mut resp = json_response(
                err.status,
                json!({"__type": err.code, "message": err.message}).to_string(),
                request_id,
            );
            let headers = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&err.code) {
                headers.insert("x-amzn-errortype", v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("{};{}", err.code, err.fault)) {
                headers.insert("x-amzn-query-error", v);
            }
            resp
        }
    }
}

fn xml_response(status: u16, body: String, request_id: &str) -> Response<String> {
    response(status, "text/xml", body, request_id)
}

fn json_response(status: u16, body: String, request_id: &str) -> Response<String> {
    response(status, JSON_CONTENT_TYPE, body, request_id)
}

fn response(status: u16, content_type: &str, body: String, request_id: &str) -> Response<String> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    resp
}

/// Escapes text for XML element content (quotes need no escaping there).
pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}
