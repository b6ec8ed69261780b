//! The VPC Lattice double: SigV4-authenticated (signing name `vpc-lattice-svcs`) calls to
//! named services, authorized by each service's auth policy, answered like a Lambda target
//! that echoes the request and the caller.
//!
//! Addressing, since every service shares one loopback listener:
//! - By Host: the first DNS label up to the first `-` or `.` names the service, so
//!   `billing.lattice.local:PORT` and the real-looking
//!   `billing-0a1b2c.x.vpc-lattice-svcs.us-east-1.on.aws` both reach `billing`. Clients point
//!   the name at 127.0.0.1 (curl `--connect-to`/`--resolve`, a hosts entry, or a Host header).
//! - By path, when the Host is an IP literal or `localhost`: `http://127.0.0.1:PORT/billing/…`
//!   reaches `billing`. The path is not rewritten: the echo shows it as sent (and as signed).
//!
//! Denials use the real service's text: `AccessDeniedException: User: <arn> is not authorized
//! to perform: vpc-lattice-svcs:Invoke on resource: arn:aws:vpc-lattice:<region>:<account>:
//! service/svc-<id>/<path> because no service-based policy allows the vpc-lattice-svcs:Invoke
//! action` (or `with an explicit deny in a service-based policy`), with `User: anonymous` for
//! unsigned requests, as a plain-text body with `x-amzn-ErrorType`.

use std::net::IpAddr;

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use ring::digest;
use serde_json::json;

use super::policy::{Caller, Decision, Policies, INVOKE_ACTION};
use super::sigv4::AuthFailure;
use crate::dev::rolesanywhere::IssuedSession;

/// The signing name Lattice clients put in the credential scope.
pub(super) const SIGNING_NAME: &str = "vpc-lattice-svcs";
/// The account that owns the double's Lattice services (the dev account).
const SERVICE_ACCOUNT: &str = crate::dev::rolesanywhere::DEV_ACCOUNT;

/// The Lattice service a request addresses (see the module docs), lowercased. `None` when the
/// request names none (e.g. `GET /` on an IP address).
pub(super) fn target_service(parts: &Parts) -> Option<String> {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.host().map(str::to_owned))
        .unwrap_or_default();
    let hostname = strip_port(host.trim());
    let by_path = hostname.is_empty()
        || hostname.eq_ignore_ascii_case("localhost")
        || hostname.parse::<IpAddr>().is_ok();
    let name = if by_path {
        parts.uri.path().split('/').find(|s| !s.is_empty())?
    } else {
        hostname.split(['-', '.']).next()?
    };
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → the host part without brackets.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // More than one colon without brackets is a bare IPv6 address.
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The service's ARN-style resource for the request path, as real denials print it.
fn resource_arn(region: &str, service: &str, path: &str) -> String {
    let id = hex::encode(digest::digest(&digest::SHA256, service.as_bytes()));
    format!(
        "arn:aws:vpc-lattice:{region}:{SERVICE_ACCOUNT}:service/svc-{}/{}",
        id.get(..17).unwrap_or(&id),
        path.trim_start_matches('/')
    )
}

/// Decides and answers an addressed request. `session` is `None` for an unsigned request.
pub(super) fn handle(
    policies: &Policies,
    region: &str,
    service: &str,
    parts: &Parts,
    body: &[u8],
    session: Option<&IssuedSession>,
) -> Response<String> {
    let caller = match session {
        None => Caller::Anonymous,
        Some(s) => Caller::Authenticated(s.spiffe_id.as_deref()),
    };
    // Unsigned requests are never let through, whatever the policy says: the double's
    // contract is "only SigV4 with issued credentials", so a `Principal: "*"` policy cannot
    // make a test pass without the agent's credentials. (Real Lattice would admit anonymous
    // callers under such a policy.)
    let decision = match (session, policies.evaluate_caller(service, caller)) {
        (_, Decision::UnknownService) => Decision::UnknownService,
        (None, _) => Decision::ImplicitDeny,
        (Some(_), d) => d,
    };
    let user = session.map_or("anonymous", |s| s.assumed_role_arn.as_str());
    let resource = resource_arn(region, service, parts.uri.path());
    match decision {
        Decision::Allow => {
            let principal_tags = match session.and_then(|s| s.spiffe_id.as_deref()) {
                Some(uri) => json!({"x509SAN/URI": uri}),
                None => json!({}),
            };
            let body = json!({
                "service": service,
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query().unwrap_or(""),
                "body": String::from_utf8_lossy(body),
                "caller": {
                    "arn": user,
                    "account": session.map(|s| s.account.as_str()),
                    "principalTags": principal_tags,
                },
            });
            text_response(200, "application/json", body.to_string(), None)
        }
        Decision::ExplicitDeny => denied(format!(
            "User: {user} is not authorized to perform: {INVOKE_ACTION} on resource: {resource} \
             with an explicit deny in a service-based policy"
        )),
        Decision::ImplicitDeny => denied(format!(
            "User: {user} is not authorized to perform: {INVOKE_ACTION} on resource: {resource} \
             because no service-based policy allows the {INVOKE_ACTION} action"
        )),
        Decision::UnknownService => not_found(Some(service)),
    }
}

/// 404 for a service the double does not have (`None`: the request names no service).
pub(super) fn not_found(service: Option<&str>) -> Response<String> {
    let message = match service {
        Some(name) => format!("no VPC Lattice service named '{name}' on this endpoint"),
        None => "the request names no VPC Lattice service: use Host '<service>.<anything>' or, \
                 on an IP or localhost Host, the path '/<service>/...'"
            .to_owned(),
    };
    text_response(
        404,
        "text/plain",
        format!("NotFoundException: {message}\n"),
        Some("NotFoundException"),
    )
}

fn denied(message: String) -> Response<String> {
    text_response(
        403,
        "text/plain",
        format!("AccessDeniedException: {message}"),
        Some("AccessDeniedException"),
    )
}

/// The Lattice answer to a request that failed SigV4 authentication, using the error names of
/// AWS's JSON-protocol services (Lattice's data plane does not document its own).
pub(super) fn auth_failed(failure: &AuthFailure) -> Response<String> {
    let (status, code) = match failure {
        AuthFailure::Missing => (403, "MissingAuthenticationTokenException"),
        AuthFailure::Incomplete(_) => (403, "IncompleteSignatureException"),
        AuthFailure::UnknownKey | AuthFailure::InvalidToken => (403, "UnrecognizedClientException"),
        AuthFailure::Expired => (403, "ExpiredTokenException"),
        AuthFailure::Mismatch(_) => (403, "InvalidSignatureException"),
    };
    text_response(
        status,
        "text/plain",
        format!("{code}: {failure}"),
        Some(code),
    )
}

fn text_response(
    status: u16,
    content_type: &str,
    body: String,
    error_type: Option<&str>,
) -> Response<String> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    if let Some(Ok(v)) = error_type.map(HeaderValue::from_str) {
        headers.insert("x-amzn-errortype", v);
    }
    resp
}
