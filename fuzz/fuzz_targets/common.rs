//! Shared by the endpoint targets: a request from fuzz bytes, written as text so seeds are
//! readable and mutations stay near the format.
//!
//! ```text
//! METHOD TARGET
//! Name: value
//! ```
//!
//! Lines end at `\n` (a `\r` before it is dropped); lines that are not a valid header are
//! skipped. `$TOKEN` in a header value becomes the harness's valid token, so the fuzzer gets
//! past the token checks without guessing 32 random bytes.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use spiffe_aws_agent::credentials::{CredentialStore, RoleCredentials};
use spiffe_aws_agent::fuzz_api::{http, Body};
use spiffe_aws_agent::rolesanywhere::Credentials;
use spiffe_aws_agent::{Clock, TokioClock};

pub const SECRET: &str = "fuzz-secret-access-key";
pub const SESSION_TOKEN: &str = "fuzz-session-token";
pub const PROXY_HEADERS: [&str; 6] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "via",
    "x-forwarded-host",
    "x-client-ip",
];

pub struct Parsed {
    pub request: http::Request<Body>,
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
}

pub fn request(data: &[u8], token: &str) -> Option<Parsed> {
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let method = http::Method::from_bytes(&first[..space]).ok()?;
    let uri = http::Uri::try_from(&first[space + 1..]).ok()?;
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let Ok(name) = http::HeaderName::from_bytes(&line[..colon]) else {
            continue;
        };
        let value = replace(
            line[colon + 1..].trim_ascii_start(),
            b"$TOKEN",
            token.as_bytes(),
        );
        let Ok(value) = http::HeaderValue::from_bytes(&value) else {
            continue;
        };
        headers.append(name, value);
    }
    let mut builder = http::Request::builder()
        .method(method.clone())
        .uri(uri.clone());
    for (n, v) in &headers {
        builder = builder.header(n, v);
    }
    let request = builder.body(Body::empty()).ok()?;
    Some(Parsed {
        request,
        method,
        uri,
        headers,
    })
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// A store with `orders` (credentials valid for an hour) and `starting` (none yet).
pub fn store() -> Arc<CredentialStore> {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let store = Arc::new(CredentialStore::new(
        [
            (
                "orders".to_owned(),
                "arn:aws:iam::123456789012:role/orders".to_owned(),
            ),
            (
                "starting".to_owned(),
                "arn:aws:iam::123456789012:role/starting".to_owned(),
            ),
        ],
        Duration::from_secs(300),
        Arc::clone(&clock),
    ));
    let now = clock.now();
    store.publish(
        "orders",
        RoleCredentials::new(
            Credentials {
                access_key_id: "ASIAFUZZ".to_owned(),
                secret_access_key: zeroize::Zeroizing::new(SECRET.to_owned()),
                session_token: zeroize::Zeroizing::new(SESSION_TOKEN.to_owned()),
                expiration: now + Duration::from_secs(3600),
                assumed_role_arn: None,
                role_arn: "arn:aws:iam::123456789012:role/orders".to_owned(),
            },
            now,
            Some("spiffe://example.org/service/orders".to_owned()),
            [7; 32],
        ),
    );
    store
}

pub fn has_proxy_header(headers: &http::HeaderMap) -> bool {
    headers.keys().any(|k| PROXY_HEADERS.contains(&k.as_str()))
}

pub fn single_host(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::HOST).iter().count() == 1
}
