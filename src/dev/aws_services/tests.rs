//! Tests: AWS-published SigV4 known answers against the verifier's pieces, then the running
//! doubles driven over HTTP by a small SigV4 signer written here, independently of `sigv4.rs`
//! (it shares no function with it, so one misreading of the spec cannot hide in both).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Request;
use ring::{digest, hmac};
use time::OffsetDateTime;

use super::policy::glob_match;
use super::sigv4::{
    canonical_query, canonical_request, canonical_uri, parse_authorization, signature_hex,
    signing_key, string_to_sign, AuthFailure,
};
use super::*;

const SECRET_EXAMPLE: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const ORDERS: &str = "spiffe://example.org/service/orders";
const REVIEWS: &str = "spiffe://example.org/service/reviews";

// ---------------------------------------------------------------------------------------------
// Known answers from the AWS SigV4 documentation and test suite.

#[test]
fn signing_key_matches_the_documented_derivation() {
    let key = signing_key(SECRET_EXAMPLE, "20150830", "us-east-1", "iam");
    assert_eq!(
        hex::encode(key),
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    );
}

/// Builds request parts and an `Authorization` for the suite's fixed example credential.
fn example_parts(uri: &str, headers: &[(&str, &str)], signed: &str, service: &str) -> Parts {
    let mut b = Request::builder().method("GET").uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/{service}/aws4_request, \
         SignedHeaders={signed}, Signature=00"
    );
    b = b.header("authorization", auth);
    b.body(()).expect("static request").into_parts().0
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn iam_list_users_example_canonical_request_and_signature() {
    let parts = example_parts(
        "/?Action=ListUsers&Version=2010-05-08",
        &[
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("host", "iam.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
        ],
        "content-type;host;x-amz-date",
        "iam",
    );
    let auth = parse_authorization(&parts.headers).expect("parses");
    let canonical = canonical_request(&parts, &auth, EMPTY_SHA256).expect("canonical");
    assert_eq!(
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes())),
        "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    );
    let sts = string_to_sign(
        "20150830T123600Z",
        "20150830/us-east-1/iam/aws4_request",
        &canonical,
    );
    let key = signing_key(SECRET_EXAMPLE, "20150830", "us-east-1", "iam");
    assert_eq!(
        signature_hex(&key, &sts),
        "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    );
}

fn suite_signature(uri: &str) -> (String, String) {
    let parts = example_parts(
        uri,
        &[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
        ],
        "host;x-amz-date",
        "service",
    );
    let auth = parse_authorization(&parts.headers).expect("parses");
    let canonical = canonical_request(&parts, &auth, EMPTY_SHA256).expect("canonical");
    let sts = string_to_sign(
        "20150830T123600Z",
        "20150830/us-east-1/service/aws4_request",
        &canonical,
    );
    let key = signing_key(SECRET_EXAMPLE, "20150830", "us-east-1", "service");
    (
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes())),
        signature_hex(&key, &sts),
    )
}

#[test]
fn get_vanilla_from_the_test_suite() {
    let (canonical_hash, signature) = suite_signature("/");
    assert_eq!(
        canonical_hash,
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    );
    assert_eq!(
        signature,
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn get_vanilla_query_order_key_case_from_the_test_suite() {
    let (_, signature) = suite_signature("/?Param2=value2&Param1=value1");
    assert_eq!(
        signature,
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
    );
}

#[test]
fn test_suite_path_normalization_cases() {
    // get-slashes, get-relative, get-relative-relative, get-slash-dot-slash, get-slash-pointless-dot
    assert_eq!(canonical_uri("//example//"), "/example/");
    assert_eq!(canonical_uri("/example/.."), "/");
    assert_eq!(canonical_uri("/example1/example2/../.."), "/");
    assert_eq!(canonical_uri("/./"), "/");
    assert_eq!(canonical_uri("/./example"), "/example");
    assert_eq!(canonical_uri(""), "/");
    // Non-S3 services encode the path as received once more.
    assert_eq!(canonical_uri("/example%20space/"), "/example%2520space/");
    assert_eq!(canonical_uri("/a:b/c"), "/a%3Ab/c");
}

#[test]
fn canonical_query_sorts_and_encodes() {
    // get-vanilla-query-order-value / -key / -unreserved
    assert_eq!(
        canonical_query("Param1=value2&Param1=Value1"),
        "Param1=Value1&Param1=value2"
    );
    assert_eq!(
        canonical_query("Param1=value1&Param2=value2"),
        "Param1=value1&Param2=value2"
    );
    assert_eq!(canonical_query("a=b%2Fc&z&x=%7e"), "a=b%2Fc&x=~&z=");
    assert_eq!(canonical_query("k=a+b"), "k=a%2Bb");
    assert_eq!(canonical_query(""), "");
}

#[test]
fn authorization_header_parsing() {
    let headers = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", v.parse().expect("header"));
        h
    };
    let ok = parse_authorization(&headers(
        "AWS4-HMAC-SHA256 Credential=ASIAX/20240101/us-east-1/sts/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=abcd",
    ))
    .expect("parses");
    assert_eq!(ok.access_key_id, "ASIAX");
    assert_eq!(ok.service, "sts");
    assert_eq!(ok.signed_headers, "host;x-amz-date");
    assert_eq!(
        parse_authorization(&http::HeaderMap::new()),
        Err(AuthFailure::Missing)
    );
    for bad in [
        "AWS4-ECDSA-P256-SHA256 Credential=a/20240101/us-east-1/sts/aws4_request, \
         SignedHeaders=host, Signature=ab",
        "AWS4-HMAC-SHA256 Credential=a/20240101/us-east-1/sts/aws4_request, SignedHeaders=host",
        "AWS4-HMAC-SHA256 Credential=a/2024/us-east-1/sts/aws4_request, SignedHeaders=host, \
         Signature=ab",
        "AWS4-HMAC-SHA256 Credential=a/20240101/sts/aws4_request, SignedHeaders=host, \
         Signature=ab",
        "Bearer abc",
    ] {
        assert!(
            matches!(
                parse_authorization(&headers(bad)),
                Err(AuthFailure::Incomplete(_))
            ),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Policies.

#[test]
fn glob_matching() {
    assert!(glob_match("spiffe://example.org/*", ORDERS));
    assert!(glob_match("*", ""));
    assert!(glob_match("spiffe://example.org/service/?rders", ORDERS));
    assert!(!glob_match("spiffe://example.org/service/?", ORDERS));
    assert!(glob_match("*orders", ORDERS));
    assert!(glob_match("a*b*c", "aXbYbZc"));
    assert!(!glob_match("a*b*c", "aXbYbZ"));
    assert!(!glob_match("spiffe://other.org/*", ORDERS));
}

#[test]
fn seed_policies() {
    let p = Policies::seed();
    assert_eq!(p.services(), vec!["billing", "rates"]);
    assert_eq!(p.evaluate("billing", Some(ORDERS)), Decision::Allow);
    assert_eq!(p.evaluate("billing", Some(REVIEWS)), Decision::ImplicitDeny);
    assert_eq!(p.evaluate("rates", Some(ORDERS)), Decision::Allow);
    assert_eq!(p.evaluate("rates", Some(REVIEWS)), Decision::Allow);
    assert_eq!(p.evaluate("rates", None), Decision::ImplicitDeny);
    assert_eq!(
        p.evaluate("payments", Some(ORDERS)),
        Decision::UnknownService
    );
}

#[test]
fn deny_wins_and_operators_follow_iam() {
    let p = Policies::from_json_str(
        r#"{"billing": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "vpc-lattice-svcs:*", "Resource": "*",
             "Condition": {"StringLike": {"aws:PrincipalTag/x509SAN/URI": "spiffe://example.org/*"}}},
            {"Sid": "NoReviews", "Effect": "Deny", "Principal": {"AWS": ["*"]},
             "Action": ["vpc-lattice-svcs:Invoke"], "Resource": ["*"],
             "Condition": {"StringEquals": {"aws:principaltag/x509san/uri": ["spiffe://example.org/service/reviews"]}}}
        ]},
        "open": {"Statement": {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "*",
             "Resource": "*", "Condition": {"StringNotEquals":
             {"aws:PrincipalTag/x509SAN/URI": "spiffe://example.org/service/reviews"}}}}}"#,
    )
    .expect("valid policies");
    assert_eq!(p.evaluate("billing", Some(ORDERS)), Decision::Allow);
    assert_eq!(p.evaluate("billing", Some(REVIEWS)), Decision::ExplicitDeny);
    assert_eq!(
        p.evaluate("billing", Some("spiffe://other.org/x")),
        Decision::ImplicitDeny
    );
    assert_eq!(p.evaluate("open", Some(ORDERS)), Decision::Allow);
    assert_eq!(p.evaluate("open", Some(REVIEWS)), Decision::ImplicitDeny);
    // A negated operator holds when the key is absent (IAM semantics).
    assert_eq!(p.evaluate("open", None), Decision::Allow);
}

#[test]
fn policy_file_loading_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policies.json");
    std::fs::write(&path, Policies::seed_document().to_string()).expect("write");
    let loaded = load_policies(&path).expect("seed document loads");
    assert_eq!(loaded.evaluate("billing", Some(ORDERS)), Decision::Allow);

    let missing = load_policies(dir.path().join("nope.json")).expect_err("missing file");
    assert!(matches!(missing, PolicyError::Read { .. }), "{missing}");
    assert!(missing.to_string().contains("nope.json"));

    std::fs::write(&path, "{not json").expect("write");
    let err = load_policies(&path).expect_err("bad json");
    assert!(matches!(err, PolicyError::Json { .. }), "{err}");
    assert!(err.to_string().contains("policies.json"), "{err}");

    let cases: &[(&str, &str, &str)] = &[
        ("[]", "", "JSON object mapping service names"),
        (r#"{"Billing": {"Statement": []}}"#, "Billing", "lowercase"),
        (
            r#"{"bill-ing": {"Statement": []}}"#,
            "bill-ing",
            "lowercase",
        ),
        (
            r#"{"billing": {"Version": "2012-10-17"}}"#,
            "billing",
            "no \"Statement\"",
        ),
        (
            r#"{"billing": {"Statement": [{"Effect": "Permit", "Principal": "*", "Action": "*", "Resource": "*"}]}}"#,
            "billing",
            "statement 1: \"Effect\"",
        ),
        (
            r#"{"billing": {"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}, "Action": "*", "Resource": "*"}]}}"#,
            "billing",
            "Principal",
        ),
        (
            r#"{"billing": {"Statement": [{"Effect": "Allow", "Principal": "*", "NotAction": "*", "Resource": "*"}]}}"#,
            "billing",
            "NotAction",
        ),
        (
            r#"{"billing": {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "arn:aws:vpc-lattice:us-east-1:1:service/svc-1/*"}]}}"#,
            "billing",
            "Resource",
        ),
        (
            r#"{"billing": {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"aws:SourceVpc": "vpc-1"}}}]}}"#,
            "billing",
            "aws:SourceVpc",
        ),
        (
            r#"{"billing": {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*", "Condition": {"ForAnyValue:StringEquals": {"aws:PrincipalTag/x509SAN/URI": "x"}}}]}}"#,
            "billing",
            "ForAnyValue:StringEquals",
        ),
        (
            r#"{"billing": {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"aws:PrincipalTag/x509SAN/URI": 7}}}]}}"#,
            "billing",
            "must be a string",
        ),
    ];
    for (text, service, needle) in cases {
        std::fs::write(&path, text).expect("write");
        let err = load_policies(&path).expect_err(text);
        let msg = err.to_string();
        assert!(msg.contains(needle), "{text}: {msg}");
        if !service.is_empty() {
            assert!(
                matches!(&err, PolicyError::Service { service: s, .. } if s == service),
                "{text}: {msg}"
            );
            assert!(msg.contains(&format!("'{service}'")), "{msg}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The running doubles, driven by an independent test signer.

/// A minimal SigV4 signer, test-only: enough for the requests below, not a general client.
mod signer {
    use super::*;

    pub(super) struct Creds {
        pub(super) akid: String,
        pub(super) secret: String,
        pub(super) token: Option<String>,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Payload {
        /// Hash the body; do not send x-amz-content-sha256.
        Hashed,
        /// Hash the body and send the hash in x-amz-content-sha256.
        HashedWithHeader,
        /// Sign `UNSIGNED-PAYLOAD` and send it in x-amz-content-sha256.
        Unsigned,
    }

    pub(super) struct Signing<'a> {
        pub(super) service: &'a str,
        pub(super) region: &'a str,
        pub(super) at: OffsetDateTime,
        pub(super) payload: Payload,
        /// Whether the session token is part of SignedHeaders.
        pub(super) sign_token: bool,
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
            .as_ref()
            .to_vec()
    }

    fn sha_hex(data: &[u8]) -> String {
        hex::encode(digest::digest(&digest::SHA256, data))
    }

    fn encode_segment(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// Returns the headers to send (including `host`) for a request to `path_and_query`
    /// (already URL-encoded, path without dot segments).
    pub(super) fn sign(
        method: &str,
        path_and_query: &str,
        host: &str,
        extra_headers: &[(&str, &str)],
        body: &[u8],
        creds: &Creds,
        s: &Signing<'_>,
    ) -> Vec<(String, String)> {
        let amz_date = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            s.at.year(),
            s.at.month() as u8,
            s.at.day(),
            s.at.hour(),
            s.at.minute(),
            s.at.second()
        );
        let date = &amz_date[..8];
        let payload_hash = match s.payload {
            Payload::Unsigned => "UNSIGNED-PAYLOAD".to_owned(),
            _ => sha_hex(body),
        };
        let mut headers: Vec<(String, String)> = extra_headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        headers.push(("host".into(), host.into()));
        headers.push(("x-amz-date".into(), amz_date.clone()));
        if s.payload != Payload::Hashed {
            headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
        }
        let mut signed: Vec<(String, String)> = headers.clone();
        if let Some(token) = &creds.token {
            headers.push(("x-amz-security-token".into(), token.clone()));
            if s.sign_token {
                signed.push(("x-amz-security-token".into(), token.clone()));
            }
        }
        signed.sort();
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let canon_path = path
            .split('/')
            .map(encode_segment)
            .collect::<Vec<_>>()
            .join("/");
        let mut q: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        q.sort();
        let canon_query = q
            .iter()
            .map(|p| {
                if p.contains('=') {
                    p.to_string()
                } else {
                    format!("{p}=")
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        let canon_headers: String = signed
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let signed_names = signed
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical = format!(
            "{method}\n{canon_path}\n{canon_query}\n{canon_headers}\n{signed_names}\n{payload_hash}"
        );
        let scope = format!("{date}/{}/{}/aws4_request", s.region, s.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha_hex(canonical.as_bytes())
        );
        let k = hmac(format!("AWS4{}", creds.secret).as_bytes(), date);
        let k = hmac(&k, s.region);
        let k = hmac(&k, s.service);
        let k = hmac(&k, "aws4_request");
        let signature = hex::encode(hmac(&k, &to_sign));
        headers.push((
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, \
                 Signature={signature}",
                creds.akid
            ),
        ));
        headers
    }
}

use signer::{Creds, Payload, Signing};

fn session(name: &str, spiffe_id: Option<&str>, expiration: SystemTime) -> IssuedSession {
    IssuedSession {
        access_key_id: format!("ASIATEST{}", name.to_ascii_uppercase()),
        secret_access_key: format!("secret/{name}/EXAMPLEKEY"),
        session_token: format!("token-{name}-FwoGZXIvYXdzEXAMPLE"),
        expiration,
        role_arn: format!("arn:aws:iam::123456789012:role/{name}"),
        role_session_name: "4d2".to_owned(),
        assumed_role_arn: format!("arn:aws:sts::123456789012:assumed-role/{name}/4d2"),
        account: "123456789012".to_owned(),
        spiffe_id: spiffe_id.map(str::to_owned),
        leaf_serial_decimal: "1234".to_owned(),
    }
}

struct Fixture {
    double: AwsServicesDouble,
    orders: IssuedSession,
    reviews: IssuedSession,
    expired: IssuedSession,
    http: reqwest::Client,
}

impl Fixture {
    async fn start() -> Self {
        Self::start_with(AwsServicesConfig::seed()).await
    }

    async fn start_with(cfg: AwsServicesConfig) -> Self {
        let later = SystemTime::now() + Duration::from_secs(3600);
        let orders = session("orders", Some(ORDERS), later);
        let reviews = session("reviews", Some(REVIEWS), later);
        let expired = session(
            "expired",
            Some(ORDERS),
            SystemTime::now() - Duration::from_secs(60),
        );
        let all = [orders.clone(), reviews.clone(), expired.clone()];
        let lookup: SessionLookup =
            Arc::new(move |akid: &str| all.iter().find(|s| s.access_key_id == akid).cloned());
        let double = AwsServicesDouble::start(cfg, lookup)
            .await
            .expect("double starts");
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .expect("client");
        Self {
            double,
            orders,
            reviews,
            expired,
            http,
        }
    }

    fn host(&self) -> String {
        self.double.local_addr().to_string()
    }

    /// Sends `headers` (as produced by the signer, `host` included) and returns status,
    /// headers and body.
    async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> (u16, http::HeaderMap, String) {
        let url = format!("{}{path_and_query}", self.double.endpoint());
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            url,
        );
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.body(body).send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        (status, headers, text)
    }
}

fn creds(s: &IssuedSession) -> Creds {
    Creds {
        akid: s.access_key_id.clone(),
        secret: s.secret_access_key.clone(),
        token: Some(s.session_token.clone()),
    }
}

fn signing(service: &str, payload: Payload) -> Signing<'_> {
    Signing {
        service,
        region: "us-east-1",
        at: OffsetDateTime::now_utc(),
        payload,
        sign_token: true,
    }
}

const GCI_BODY: &[u8] = b"Action=GetCallerIdentity&Version=2011-06-15";
const FORM: (&str, &str) = (
    "content-type",
    "application/x-www-form-urlencoded; charset=utf-8",
);

/// Signs and sends an STS GetCallerIdentity (query protocol) with the given knobs.
async fn sts_call(
    fx: &Fixture,
    creds: &Creds,
    sign: &Signing<'_>,
    signed_body: &[u8],
    sent_body: &[u8],
) -> (u16, String) {
    let headers = signer::sign("POST", "/", &fx.host(), &[FORM], signed_body, creds, sign);
    let (status, _, body) = fx.send("POST", "/", &headers, sent_body.to_vec()).await;
    (status, body)
}

fn xml_code(body: &str) -> &str {
    body.split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or("")
}

#[tokio::test]
async fn sts_get_caller_identity_query_protocol() {
    let fx = Fixture::start().await;
    let (status, body) = sts_call(
        &fx,
        &creds(&fx.orders),
        &signing("sts", Payload::Hashed),
        GCI_BODY,
        GCI_BODY,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    ));
    assert!(body.contains("<Arn>arn:aws:sts::123456789012:assumed-role/orders/4d2</Arn>"));
    assert!(body.contains("<Account>123456789012</Account>"));
    let user_id = body
        .split("<UserId>")
        .nth(1)
        .and_then(|r| r.split("</UserId>").next())
        .unwrap_or("");
    assert!(
        user_id.starts_with("AROA") && user_id.ends_with(":4d2"),
        "{user_id}"
    );
    assert_eq!(user_id.len(), "AROA".len() + 17 + ":4d2".len());
    assert!(body.contains("<RequestId>"));

    let calls = fx.double.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].service, ServiceKind::Sts);
    assert_eq!(calls[0].operation.as_deref(), Some("GetCallerIdentity"));
    assert_eq!(calls[0].access_key_id.as_deref(), Some("ASIATESTORDERS"));
    assert_eq!(calls[0].spiffe_id.as_deref(), Some(ORDERS));
    assert_eq!(calls[0].status, 200);
    assert_eq!(calls[0].error_code, None);
    fx.double.shutdown().await;
}

#[tokio::test]
async fn sts_get_caller_identity_json_protocol_and_signed_payload_header() {
    let fx = Fixture::start().await;
    let body = b"{}";
    let headers = signer::sign(
        "POST",
        "/",
        &fx.host(),
        &[
            ("content-type", "application/x-amz-json-1.0"),
            (
                "x-amz-target",
                "AWSSecurityTokenServiceV20110615.GetCallerIdentity",
            ),
        ],
        body,
        &creds(&fx.reviews),
        &signing("sts", Payload::HashedWithHeader),
    );
    let (status, resp_headers, text) = fx.send("POST", "/", &headers, body.to_vec()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        resp_headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-amz-json-1.0")
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        v["Arn"],
        "arn:aws:sts::123456789012:assumed-role/reviews/4d2"
    );
    assert_eq!(v["Account"], "123456789012");

    // The same credentials, expired-token path, in the JSON error shape.
    let headers = signer::sign(
        "POST",
        "/",
        &fx.host(),
        &[
            ("content-type", "application/x-amz-json-1.0"),
            (
                "x-amz-target",
                "AWSSecurityTokenServiceV20110615.GetCallerIdentity",
            ),
        ],
        body,
        &creds(&fx.expired),
        &signing("sts", Payload::Hashed),
    );
    let (status, resp_headers, text) = fx.send("POST", "/", &headers, body.to_vec()).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(
        resp_headers
            .get("x-amzn-query-error")
            .and_then(|v| v.to_str().ok()),
        Some("ExpiredToken;Sender")
    );
    fx.double.shutdown().await;
}

#[tokio::test]
async fn sts_refusals_have_the_real_codes() {
    let fx = Fixture::start().await;
    let host = fx.host();
    let sts = |p| signing("sts", p);

    // Expired credentials.
    let (status, body) = sts_call(
        &fx,
        &creds(&fx.expired),
        &sts(Payload::Hashed),
        GCI_BODY,
        GCI_BODY,
    )
    .await;
    assert_eq!((status, xml_code(&body)), (403, "ExpiredToken"), "{body}");
    assert!(
        body.contains("<Message>The security token included in the request is expired</Message>")
    );
    assert!(body.contains("<Type>Sender</Type>"));
    assert!(body.starts_with("<ErrorResponse"));

    // Unknown access key.
    let unknown = Creds {
        akid: "ASIANOTISSUED".into(),
        secret: "x".into(),
        token: Some("t".into()),
    };
    let (status, body) = sts_call(&fx, &unknown, &sts(Payload::Hashed), GCI_BODY, GCI_BODY).await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "InvalidClientTokenId"),
        "{body}"
    );

    // Body tampered after signing.
    let (status, body) = sts_call(
        &fx,
        &creds(&fx.orders),
        &sts(Payload::Hashed),
        GCI_BODY,
        b"Action=GetCallerIdentity&Version=2011-06-15&X=1",
    )
    .await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "SignatureDoesNotMatch"),
        "{body}"
    );

    // Wrong secret.
    let mut wrong = creds(&fx.orders);
    wrong.secret.push('x');
    let (status, body) = sts_call(&fx, &wrong, &sts(Payload::Hashed), GCI_BODY, GCI_BODY).await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "SignatureDoesNotMatch"),
        "{body}"
    );

    // No session token, and a wrong one.
    let mut no_token = creds(&fx.orders);
    no_token.token = None;
    let (status, body) = sts_call(&fx, &no_token, &sts(Payload::Hashed), GCI_BODY, GCI_BODY).await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "InvalidClientTokenId"),
        "{body}"
    );
    let mut bad_token = creds(&fx.orders);
    bad_token.token = Some("token-reviews-FwoGZXIvYXdzEXAMPLE".into());
    let (status, body) = sts_call(&fx, &bad_token, &sts(Payload::Hashed), GCI_BODY, GCI_BODY).await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "InvalidClientTokenId"),
        "{body}"
    );

    // UNSIGNED-PAYLOAD is for Lattice only.
    let (status, body) = sts_call(
        &fx,
        &creds(&fx.orders),
        &sts(Payload::Unsigned),
        GCI_BODY,
        GCI_BODY,
    )
    .await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "SignatureDoesNotMatch"),
        "{body}"
    );
    assert!(body.contains("UNSIGNED-PAYLOAD"), "{body}");

    // A stated body hash that does not match the body.
    let mut headers = signer::sign(
        "POST",
        "/",
        &host,
        &[FORM],
        GCI_BODY,
        &creds(&fx.orders),
        &sts(Payload::HashedWithHeader),
    );
    for (k, v) in &mut headers {
        if k == "x-amz-content-sha256" {
            *v = "0".repeat(64);
        }
    }
    let (status, _, body) = fx.send("POST", "/", &headers, GCI_BODY.to_vec()).await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "SignatureDoesNotMatch"),
        "{body}"
    );

    // Signed 20 minutes ago: outside the 15-minute window.
    let mut old = sts(Payload::Hashed);
    old.at -= time::Duration::minutes(20);
    let (status, body) = sts_call(&fx, &creds(&fx.orders), &old, GCI_BODY, GCI_BODY).await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "SignatureDoesNotMatch"),
        "{body}"
    );
    assert!(body.contains("Signature expired"), "{body}");

    // Wrong region in the scope.
    let mut eu = sts(Payload::Hashed);
    eu.region = "eu-west-1";
    let (status, body) = sts_call(&fx, &creds(&fx.orders), &eu, GCI_BODY, GCI_BODY).await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "SignatureDoesNotMatch"),
        "{body}"
    );

    // An unsigned token is accepted (AWS does not require it to be signed).
    let mut unsigned_token = sts(Payload::Hashed);
    unsigned_token.sign_token = false;
    let (status, body) =
        sts_call(&fx, &creds(&fx.orders), &unsigned_token, GCI_BODY, GCI_BODY).await;
    assert_eq!(status, 200, "{body}");

    // No Authorization at all.
    let (status, _, body) = fx
        .send(
            "POST",
            "/",
            &[("content-type".to_owned(), FORM.1.to_owned())],
            GCI_BODY.to_vec(),
        )
        .await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "MissingAuthenticationToken"),
        "{body}"
    );

    // Another operation.
    let other = b"Action=AssumeRole&Version=2011-06-15";
    let (status, body) =
        sts_call(&fx, &creds(&fx.orders), &sts(Payload::Hashed), other, other).await;
    assert_eq!((status, xml_code(&body)), (400, "InvalidAction"), "{body}");

    let codes: Vec<_> = fx
        .double
        .calls()
        .iter()
        .map(|c| c.error_code.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        codes,
        [
            "ExpiredToken",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "SignatureDoesNotMatch",
            "InvalidClientTokenId",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "SignatureDoesNotMatch",
            "SignatureDoesNotMatch",
            "SignatureDoesNotMatch",
            "",
            "MissingAuthenticationToken",
            "InvalidAction",
        ]
    );
    fx.double.shutdown().await;
}

/// Signs and sends a Lattice call with `UNSIGNED-PAYLOAD`.
async fn lattice_call(
    fx: &Fixture,
    who: &IssuedSession,
    host: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, http::HeaderMap, String) {
    let headers = signer::sign(
        method,
        path,
        host,
        &[("content-type", "application/json")],
        body,
        &creds(who),
        &signing("vpc-lattice-svcs", Payload::Unsigned),
    );
    fx.send(method, path, &headers, body.to_vec()).await
}

#[tokio::test]
async fn lattice_seed_scenario_by_path_and_by_host() {
    let fx = Fixture::start().await;
    let ip = fx.host();
    let port = fx.double.local_addr().port();
    let by_name = |label: &str| format!("{label}.lattice.local:{port}");

    // orders -> billing, addressed by path.
    let (status, _, body) = lattice_call(
        &fx,
        &fx.orders,
        &ip,
        "POST",
        "/billing/invoices?x=1",
        b"{\"a\":1}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["service"], "billing");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/billing/invoices");
    assert_eq!(v["query"], "x=1");
    assert_eq!(v["body"], "{\"a\":1}");
    assert_eq!(
        v["caller"]["arn"],
        "arn:aws:sts::123456789012:assumed-role/orders/4d2"
    );
    assert_eq!(v["caller"]["account"], "123456789012");
    assert_eq!(v["caller"]["principalTags"]["x509SAN/URI"], ORDERS);

    // orders -> rates and reviews -> rates, addressed by Host.
    let (status, _, body) =
        lattice_call(&fx, &fx.orders, &by_name("rates"), "GET", "/quote", b"").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = lattice_call(
        &fx,
        &fx.reviews,
        &format!("rates-0a1b2c3d.7d67968.vpc-lattice-svcs.us-east-1.on.aws:{port}"),
        "GET",
        "/",
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["service"], "rates");
    assert_eq!(v["caller"]["principalTags"]["x509SAN/URI"], REVIEWS);

    // reviews -> billing is denied, in the real message shape.
    let (status, headers, body) = lattice_call(
        &fx,
        &fx.reviews,
        &by_name("billing"),
        "GET",
        "/invoices",
        b"",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("AccessDeniedException")
    );
    assert!(
        body.starts_with(
            "AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/reviews/4d2 is \
             not authorized to perform: vpc-lattice-svcs:Invoke on resource: \
             arn:aws:vpc-lattice:us-east-1:123456789012:service/svc-"
        ),
        "{body}"
    );
    assert!(
        body.ends_with(
            "/invoices because no service-based policy allows the vpc-lattice-svcs:Invoke action"
        ),
        "{body}"
    );

    let calls = fx.double.calls();
    let summary: Vec<_> = calls
        .iter()
        .map(|c| {
            (
                c.service,
                c.operation.clone().unwrap_or_default(),
                c.spiffe_id.clone().unwrap_or_default(),
                c.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (ServiceKind::Lattice, "billing".into(), ORDERS.into(), 200),
            (ServiceKind::Lattice, "rates".into(), ORDERS.into(), 200),
            (ServiceKind::Lattice, "rates".into(), REVIEWS.into(), 200),
            (ServiceKind::Lattice, "billing".into(), REVIEWS.into(), 403),
        ]
    );
    assert_eq!(
        calls[3].error_code.as_deref(),
        Some("AccessDeniedException")
    );
    fx.double.shutdown().await;
}

#[tokio::test]
async fn lattice_refusals() {
    let fx = Fixture::start().await;
    let ip = fx.host();

    // Unknown service.
    let (status, _, body) = lattice_call(&fx, &fx.orders, &ip, "GET", "/payments/x", b"").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("'payments'"), "{body}");
    // No service named at all.
    let (status, _, body) = lattice_call(&fx, &fx.orders, &ip, "GET", "/", b"").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("names no VPC Lattice service"), "{body}");

    // Unsigned request: anonymous, denied.
    let (status, _, body) = fx
        .send(
            "GET",
            "/billing/x",
            &[("host".to_owned(), ip.clone())],
            Vec::new(),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.starts_with("AccessDeniedException: User: anonymous is not authorized"),
        "{body}"
    );

    // Expired credentials.
    let (status, headers, body) =
        lattice_call(&fx, &fx.expired, &ip, "GET", "/billing/x", b"").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("ExpiredTokenException")
    );

    // Body hashed and stated: accepted too.
    let body = b"hello";
    let headers = signer::sign(
        "PUT",
        "/rates/x",
        &ip,
        &[],
        body,
        &creds(&fx.reviews),
        &signing("vpc-lattice-svcs", Payload::HashedWithHeader),
    );
    let (status, _, text) = fx.send("PUT", "/rates/x", &headers, body.to_vec()).await;
    assert_eq!(status, 200, "{text}");

    // The signature covers another path.
    let headers = signer::sign(
        "GET",
        "/rates/x",
        &ip,
        &[],
        b"",
        &creds(&fx.reviews),
        &signing("vpc-lattice-svcs", Payload::Unsigned),
    );
    let (status, headers_out, text) = fx.send("GET", "/rates/y", &headers, Vec::new()).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(
        headers_out
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("InvalidSignatureException")
    );

    // No session token.
    let mut headers = headers;
    headers.retain(|(k, _)| k != "x-amz-security-token");
    let (status, headers_out, text) = fx.send("GET", "/rates/x", &headers, Vec::new()).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(
        headers_out
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("UnrecognizedClientException")
    );
    fx.double.shutdown().await;
}

#[tokio::test]
async fn lattice_custom_policy_with_explicit_deny() {
    let mut cfg = AwsServicesConfig::seed();
    cfg.policies = Policies::from_json_str(
        r#"{"billing": {"Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "vpc-lattice-svcs:Invoke",
             "Resource": "*", "Condition": {"StringLike":
               {"aws:PrincipalTag/x509SAN/URI": "spiffe://example.org/service/*"}}},
            {"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*",
             "Condition": {"StringEquals":
               {"aws:PrincipalTag/x509SAN/URI": "spiffe://example.org/service/reviews"}}}]}}"#,
    )
    .expect("policy");
    let fx = Fixture::start_with(cfg).await;
    let ip = fx.host();
    let (status, _, body) = lattice_call(&fx, &fx.orders, &ip, "GET", "/billing/", b"").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = lattice_call(&fx, &fx.reviews, &ip, "GET", "/billing/", b"").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.ends_with("with an explicit deny in a service-based policy"),
        "{body}"
    );
    // `rates` is not in this configuration.
    let (status, _, _) = lattice_call(&fx, &fx.orders, &ip, "GET", "/rates/", b"").await;
    assert_eq!(status, 404);
    fx.double.shutdown().await;
}

#[tokio::test]
async fn requests_signed_for_another_service_are_refused() {
    let fx = Fixture::start().await;
    let headers = signer::sign(
        "POST",
        "/",
        &fx.host(),
        &[FORM],
        GCI_BODY,
        &creds(&fx.orders),
        &signing("iam", Payload::Hashed),
    );
    let (status, _, body) = fx.send("POST", "/", &headers, GCI_BODY.to_vec()).await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "SignatureDoesNotMatch"),
        "{body}"
    );
    assert!(body.contains("'iam'"), "{body}");
    fx.double.shutdown().await;
}

#[test]
fn debug_output_has_no_secrets() {
    let s = session("orders", Some(ORDERS), SystemTime::now());
    let call = ServiceCall {
        at: SystemTime::now(),
        service: ServiceKind::Sts,
        operation: None,
        access_key_id: Some(s.access_key_id.clone()),
        caller_arn: None,
        spiffe_id: None,
        status: 200,
        error_code: None,
    };
    let text = format!("{call:?} {:?}", AwsServicesConfig::seed());
    assert!(!text.contains(&s.secret_access_key));
    assert!(!text.contains(&s.session_token));
}

// ---------------------------------------------------------------------------------------------
// AssumeRoleWithWebIdentity.

fn web_identity_provider(authority: &crate::dev::jwt::JwtAuthority) -> OidcProvider {
    OidcProvider {
        issuer: "https://oidc.example.org".into(),
        client_ids: vec!["sts.amazonaws.com".into()],
        jwks: crate::dev::jwt::jwks(&[authority]),
        trusted_roles: vec![RoleTrust {
            role_arn: "arn:aws:iam::123456789012:role/orders".into(),
            subject: "spiffe://example.org/service/*".into(),
        }],
    }
}

async fn assume(fx: &Fixture, form: &[(&str, &str)]) -> (u16, String) {
    let resp = fx
        .http
        .post(fx.double.endpoint())
        .form(form)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

#[tokio::test]
async fn assume_role_with_web_identity_checks_the_token_and_answers_in_the_documented_shapes() {
    let authority = crate::dev::jwt::JwtAuthority::generate().unwrap();
    let mut cfg = AwsServicesConfig::seed();
    cfg.oidc_providers = vec![web_identity_provider(&authority)];
    let fx = Fixture::start_with(cfg).await;
    let now = SystemTime::now();
    let mint = |aud: &[&str], iss: Option<&str>, sub: &str| {
        let aud: Vec<String> = aud.iter().map(|a| a.to_string()).collect();
        authority
            .mint_svid(sub, &aud, iss, now, Duration::from_secs(300))
            .unwrap()
    };
    let good = mint(
        &["sts.amazonaws.com"],
        Some("https://oidc.example.org"),
        ORDERS,
    );
    let role = "arn:aws:iam::123456789012:role/orders";
    let base = |token: &str| {
        vec![
            (
                "Action".to_string(),
                "AssumeRoleWithWebIdentity".to_string(),
            ),
            ("Version".into(), "2011-06-15".into()),
            ("RoleArn".into(), role.into()),
            ("RoleSessionName".into(), "s1".into()),
            ("WebIdentityToken".into(), token.to_string()),
        ]
    };
    let send = |form: Vec<(String, String)>| {
        let fx = &fx;
        async move {
            let form: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assume(fx, &form).await
        }
    };

    let (status, body) = send(base(&good)).await;
    assert_eq!(status, 200, "{body}");
    let doc = roxmltree::Document::parse(&body).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "AssumeRoleWithWebIdentityResponse");
    assert_eq!(
        root.tag_name().namespace(),
        Some("https://sts.amazonaws.com/doc/2011-06-15/")
    );
    let text = |name: &str| {
        doc.descendants()
            .find(|n| n.tag_name().name() == name)
            .and_then(|n| n.text())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(text("SubjectFromWebIdentityToken"), ORDERS);
    assert_eq!(text("Provider"), "https://oidc.example.org");
    assert_eq!(text("Audience"), "sts.amazonaws.com");
    assert_eq!(
        text("Arn"),
        "arn:aws:sts::123456789012:assumed-role/orders/s1"
    );
    let akid = text("AccessKeyId");
    assert!(akid.starts_with("ASIA") && !text("SessionToken").is_empty());
    let issued = fx.double.web_identity_sessions();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].access_key_id, akid);
    assert_eq!(issued[0].spiffe_id, None, "no x509SAN principal tag");
    let call = fx.double.calls().pop().unwrap();
    assert_eq!(call.operation.as_deref(), Some("AssumeRoleWithWebIdentity"));
    assert_eq!(call.status, 200);

    // Every refusal: the STS ErrorResponse shape with the real code.
    let error = |body: &str| {
        let doc = roxmltree::Document::parse(body).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "ErrorResponse", "{body}");
        let get = |n: &str| {
            doc.descendants()
                .find(|d| d.tag_name().name() == n)
                .and_then(|d| d.text())
                .unwrap_or("")
                .to_owned()
        };
        (get("Type"), get("Code"), get("Message"))
    };
    let other_key = crate::dev::jwt::JwtAuthority::generate().unwrap();
    let forged = other_key
        .mint_svid(
            ORDERS,
            &["sts.amazonaws.com".into()],
            Some("https://oidc.example.org"),
            now,
            Duration::from_secs(300),
        )
        .unwrap();
    let expired = authority
        .mint_svid(
            ORDERS,
            &["sts.amazonaws.com".into()],
            Some("https://oidc.example.org"),
            now - Duration::from_secs(900),
            Duration::from_secs(300),
        )
        .unwrap();
    type Case<'a> = (Vec<(String, String)>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            base(&mint(&["other"], Some("https://oidc.example.org"), ORDERS)),
            400,
            "InvalidIdentityToken",
            "Incorrect token audience",
        ),
        (
            base(&mint(
                &["sts.amazonaws.com"],
                Some("https://nope.example"),
                ORDERS,
            )),
            400,
            "InvalidIdentityToken",
            "No OpenIDConnect provider found in your account for https://nope.example",
        ),
        (
            base(&mint(&["sts.amazonaws.com"], None, ORDERS)),
            400,
            "InvalidIdentityToken",
            "Missing a required claim: iss",
        ),
        (
            base(&forged),
            400,
            "InvalidIdentityToken",
            "could not be verified",
        ),
        (
            base(&expired),
            400,
            "ExpiredTokenException",
            "Token expired: current date/time",
        ),
        (
            base("not.a.jwt"),
            400,
            "InvalidIdentityToken",
            "not base64url",
        ),
        (
            base(&mint(
                &["sts.amazonaws.com"],
                Some("https://oidc.example.org"),
                "spiffe://other.org/x",
            )),
            403,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        ),
        (
            {
                let mut f = base(&good);
                f.retain(|(k, _)| k != "RoleArn");
                f
            },
            400,
            "ValidationError",
            "'roleArn'",
        ),
        (
            {
                let mut f = base(&good);
                f.push(("DurationSeconds".into(), "899".into()));
                f
            },
            400,
            "ValidationError",
            "'durationSeconds'",
        ),
        (
            {
                let mut f = base(&good);
                f[3].1 = "a b".into();
                f
            },
            400,
            "ValidationError",
            "'roleSessionName'",
        ),
    ];
    for (form, want_status, want_code, want_message) in cases {
        let (status, body) = send(form).await;
        assert_eq!(status, want_status, "{body}");
        let (fault, code, message) = error(&body);
        assert_eq!(fault, "Sender", "{body}");
        assert_eq!(code, want_code, "{body}");
        assert!(message.contains(want_message), "{message}");
    }
    assert_eq!(
        fx.double.web_identity_sessions().len(),
        1,
        "nothing more issued"
    );

    // An array audience that includes a client ID is accepted, as STS does.
    let multi = mint(
        &["x", "sts.amazonaws.com"],
        Some("https://oidc.example.org"),
        ORDERS,
    );
    assert_eq!(send(base(&multi)).await.0, 200);
}
