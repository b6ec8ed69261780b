//! The STS `AssumeRoleWithWebIdentity` client: one unsigned Query API `POST` over HTTPS
//! (reqwest + rustls with ring), the XML answer read within a size limit, and every way it
//! can fail mapped to an error that says what to check.
//!
//! The request is the form body `Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=…
//! &RoleSessionName=…&WebIdentityToken=…&DurationSeconds=…`; the token authenticates it, so
//! there is no signature. The answer is
//! `AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials{AccessKeyId,
//! SecretAccessKey,SessionToken,Expiration}` plus `AssumedRoleUser/Arn`; errors are
//! `ErrorResponse/Error{Type,Code,Message}`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::rolesanywhere::{ConfigError, Credentials, ErrorClass};

/// Largest response body read; a real one is about 2 KiB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The Query API version of STS.
const API_VERSION: &str = "2011-06-15";
/// Where STS is and how long to wait for it.
#[derive(Debug, Clone)]
pub(super) struct ClientConfig {
    /// `https://…` base URL; see [`endpoint_url`].
    pub endpoint: reqwest::Url,
    pub ca_bundle: Option<std::path::PathBuf>,
    pub timeout: Duration,
}

/// What to ask for, besides the token.
#[derive(Debug, Clone)]
pub(super) struct AssumeRequest {
    pub role_arn: String,
    pub role_session_name: String,
    pub duration_seconds: u32,
}

/// AssumeRoleWithWebIdentity failed.
#[derive(Debug, thiserror::Error)]
pub enum AssumeRoleError {
    #[error("STS refused the JWT-SVID (InvalidIdentityToken: {message}): check that an IAM OIDC identity provider exists for the token's issuer (the SPIRE server's jwt_issuer, served by the SPIRE OIDC discovery provider), that it lists the audience as a client ID, and that STS can fetch the trust domain's current keys")]
    InvalidToken { message: String },
    #[error("STS says the JWT-SVID expired (ExpiredTokenException: {message}): check the clocks of this host, the SPIRE agent and the SPIRE server")]
    ExpiredToken { message: String },
    #[error("STS denied the role (AccessDenied: {message}): check the role's trust policy: Principal Federated = the OIDC provider's ARN, Action sts:AssumeRoleWithWebIdentity, and conditions on <issuer>:aud (the audience) and <issuer>:sub (the SPIFFE ID)")]
    AccessDenied { message: String },
    #[error("the identity provider rejected a claim (IDPRejectedClaim: {message}): check the role's trust policy conditions against the JWT-SVID's sub and aud")]
    RejectedClaim { message: String },
    #[error("STS could not reach the OIDC discovery provider to fetch the trust domain's keys (IDPCommunicationError: {message}): it must be reachable from the internet over HTTPS; retry later")]
    IdpUnreachable { message: String },
    #[error("STS is not enabled in this region (RegionDisabledException: {message}): activate it in IAM account settings or use another --region or --endpoint")]
    RegionDisabled { message: String },
    #[error("STS rejected the request ({code}: {message}): check the role ARN, the session duration (the role's maximum session duration caps it) and the role session name")]
    Validation { code: String, message: String },
    #[error("STS is throttling AssumeRoleWithWebIdentity ({code}: {message}): retry later, or run `spiffe-aws-agent run` so clients share cached credentials")]
    Throttled { code: String, message: String },
    #[error("STS failed (HTTP {status} {code}: {message}): the service had an internal error, retry later")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("STS answered HTTP {status} ({code}: {message})")]
    Unexpected {
        status: u16,
        code: String,
        message: String,
    },
    #[error("STS sent an unusable response (HTTP {status}): {reason}")]
    BadResponse { status: u16, reason: String },
    #[error("cannot reach STS at {endpoint}: {reason}; check the endpoint, network access, the proxy variables, and the CA bundle for a private CA")]
    Unreachable { endpoint: String, reason: String },
    #[error("STS at {endpoint} presented a TLS certificate this agent does not trust ({reason}); check the endpoint and, for a private CA, the CA bundle")]
    UntrustedEndpoint { endpoint: String, reason: String },
    #[error("STS at {endpoint} did not answer within {seconds}s")]
    Timeout { endpoint: String, seconds: u64 },
}

impl AssumeRoleError {
    /// How a caller that retries should treat this failure.
    pub fn class(&self) -> ErrorClass {
        use AssumeRoleError::*;
        match self {
            Throttled { .. } => ErrorClass::Throttled,
            // The endpoint's TLS certificate is not trusted: retrying changes nothing.
            UntrustedEndpoint { .. } => ErrorClass::Configuration,
            // A fresh JWT-SVID is fetched for every attempt, so an expired one may not recur.
            ExpiredToken { .. }
            | IdpUnreachable { .. }
            | Server { .. }
            | BadResponse { .. }
            | Unreachable { .. }
            | Timeout { .. } => ErrorClass::Transient,
            InvalidToken { .. }
            | AccessDenied { .. }
            | RejectedClaim { .. }
            | RegionDisabled { .. }
            | Validation { .. }
            | Unexpected { .. } => ErrorClass::Configuration,
        }
    }
}

/// An STS client for one endpoint.
pub(super) struct StsClient {
    http: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl StsClient {
    /// Builds the client; reads the CA bundle, no network.
    pub(super) fn new(config: &ClientConfig, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        let tls = crate::rolesanywhere::tls_config(config.ca_bundle.as_deref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .user_agent(concat!("spiffe-aws-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ConfigError::Http)?;
        Ok(StsClient {
            http,
            url: config.endpoint.clone(),
            timeout: config.timeout,
            clock,
        })
    }

    pub(super) fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Exchanges `token` (a JWT-SVID) for credentials, once.
    pub(super) async fn assume_role(
        &self,
        token: &str,
        request: &AssumeRequest,
    ) -> Result<Credentials, AssumeRoleError> {
        let duration = request.duration_seconds.to_string();
        let form: [(&str, &str); 6] = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", API_VERSION),
            ("RoleArn", &request.role_arn),
            ("RoleSessionName", &request.role_session_name),
            ("WebIdentityToken", token),
            ("DurationSeconds", &duration),
        ];
        let response = crate::aws_http::send(
            self.http.post(self.url.clone()).form(&form),
            MAX_RESPONSE_BYTES,
        )
        .await
        .map_err(|f| self.failure(f))?;
        let (status, body) = (response.status, response.body);
        if (200..300).contains(&status) {
            parse_success(status, &body, &request.role_arn, self.clock.now())
        } else {
            Err(map_error(status, &body))
        }
    }

    /// No whole response: a timeout, an untrusted or unreachable endpoint, a broken body.
    fn failure(&self, failure: crate::aws_http::Failure) -> AssumeRoleError {
        use crate::aws_http::Failure;
        let endpoint = self.url.as_str().to_owned();
        match failure {
            Failure::TimedOut => AssumeRoleError::Timeout {
                endpoint,
                seconds: self.timeout.as_secs(),
            },
            Failure::UntrustedCertificate { reason } => {
                AssumeRoleError::UntrustedEndpoint { endpoint, reason }
            }
            Failure::Unreachable { reason } => AssumeRoleError::Unreachable { endpoint, reason },
            Failure::BadBody { status, reason } => AssumeRoleError::BadResponse { status, reason },
        }
    }
}

/// The STS URL: `endpoint` as given (`https://` only; a bare host gets it), else the
/// regional endpoint of `region` in `partition`, else the global `https://sts.amazonaws.com`.
pub(super) fn endpoint_url(
    endpoint: Option<&str>,
    region: Option<&str>,
    partition: &str,
) -> Result<reqwest::Url, String> {
    let raw = match (endpoint, region) {
        (Some(e), _) if e.contains("://") => e.to_owned(),
        (Some(e), _) => format!("https://{e}"),
        (None, Some(region)) => {
            let domain = if partition == "aws-cn" {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("https://sts.{region}.{domain}/")
        }
        (None, None) => "https://sts.amazonaws.com/".to_owned(),
    };
    let url = reqwest::Url::parse(&raw).map_err(|e| e.to_string())?;
    if url.scheme() != "https" {
        return Err("only https:// is allowed: the request carries the JWT-SVID and the response carries credentials".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("give the base URL only, without query or fragment".into());
    }
    Ok(url)
}

/// The text of the first descendant of `node` named `name` (namespace ignored).
fn child_text<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
        .and_then(|n| n.text())
        .map(str::trim)
}

fn child<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

pub(crate) fn parse_success(
    status: u16,
    body: &[u8],
    role_arn: &str,
    now: SystemTime,
) -> Result<Credentials, AssumeRoleError> {
    let bad = |reason: String| AssumeRoleError::BadResponse { status, reason };
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8".into()))?;
    let doc =
        roxmltree::Document::parse(text).map_err(|e| bad(format!("the body is not XML ({e})")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "AssumeRoleWithWebIdentityResponse" {
        return Err(bad(format!(
            "the document is <{}>, not <AssumeRoleWithWebIdentityResponse>",
            root.tag_name().name()
        )));
    }
    let result = child(root, "AssumeRoleWithWebIdentityResult")
        .ok_or_else(|| bad("AssumeRoleWithWebIdentityResult is missing".into()))?;
    let creds = child(result, "Credentials").ok_or_else(|| bad("Credentials is missing".into()))?;
    let field = |name: &str| {
        child_text(creds, name)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("Credentials/{name} is missing or empty")))
    };
    let access_key_id = field("AccessKeyId")?;
    let secret_access_key = Zeroizing::new(field("SecretAccessKey")?);
    let session_token = Zeroizing::new(field("SessionToken")?);
    let expiration_text = field("Expiration")?;
    let expiration =
        crate::aws_http::checked_expiration(&expiration_text, "Credentials/Expiration", now)
            .map_err(bad)?;
    let assumed_role_arn =
        child(result, "AssumedRoleUser").and_then(|u| child_text(u, "Arn").map(str::to_owned));
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token,
        expiration,
        assumed_role_arn,
        role_arn: role_arn.to_owned(),
    })
}

pub(crate) fn map_error(status: u16, body: &[u8]) -> AssumeRoleError {
    let text = String::from_utf8_lossy(body);
    let parsed = roxmltree::Document::parse(&text).ok();
    let error = parsed.as_ref().and_then(|doc| {
        let root = doc.root_element();
        if root.tag_name().name() == "Error" {
            Some(root)
        } else {
            child(root, "Error")
        }
    });
    let code = error
        .and_then(|e| child_text(e, "Code"))
        .filter(|c| !c.is_empty())
        .unwrap_or("UnknownError")
        .to_owned();
    let message = error
        .and_then(|e| child_text(e, "Message"))
        .map(|m| m.chars().take(500).collect::<String>())
        .unwrap_or_else(|| {
            let t = text.trim();
            if t.is_empty() {
                "no message".into()
            } else {
                t.chars().take(200).collect()
            }
        });
    use AssumeRoleError::*;
    match code.as_str() {
        "InvalidIdentityToken" => InvalidToken { message },
        "ExpiredTokenException" | "ExpiredToken" => ExpiredToken { message },
        "AccessDenied" | "AccessDeniedException" => AccessDenied { message },
        "IDPRejectedClaim" => RejectedClaim { message },
        "IDPCommunicationError" => IdpUnreachable { message },
        "RegionDisabledException" => RegionDisabled { message },
        "ValidationError"
        | "InvalidParameterValue"
        | "MissingParameter"
        | "MalformedPolicyDocument"
        | "PackedPolicyTooLarge"
        | "InvalidAction" => Validation { code, message },
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
            Throttled { code, message }
        }
        _ if status == 429 => Throttled { code, message },
        _ if (500..=599).contains(&status) => Server {
            status,
            code,
            message,
        },
        _ => Unexpected {
            status,
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/orders/s1</Arn>
      <AssumedRoleId>AROAEXAMPLE:s1</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>T&amp;1</SessionToken>
      <SecretAccessKey>S</SecretAccessKey>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
    <Provider>https://oidc.example.org</Provider>
    <SubjectFromWebIdentityToken>spiffe://example.org/service/orders</SubjectFromWebIdentityToken>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn parses_the_documented_response_and_unescapes_entities() {
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(4_070_908_800 - 3600);
        let creds = parse_success(
            200,
            OK.as_bytes(),
            "arn:aws:iam::123456789012:role/orders",
            then,
        )
        .unwrap();
        assert_eq!(creds.access_key_id, "ASIAEXAMPLE");
        assert_eq!(creds.session_token.as_str(), "T&1");
        assert_eq!(
            creds.assumed_role_arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/orders/s1")
        );
        let e = parse_success(200, b"<x/>", "r", then).unwrap_err();
        assert!(
            e.to_string().contains("AssumeRoleWithWebIdentityResponse"),
            "{e}"
        );
        let no_token = OK.replace("<SessionToken>T&amp;1</SessionToken>", "");
        let e = parse_success(200, no_token.as_bytes(), "r", then).unwrap_err();
        assert!(e.to_string().contains("SessionToken"), "{e}");
        let e = parse_success(200, OK.as_bytes(), "r", SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("further away"), "{e}");
    }

    #[test]
    fn maps_each_sts_error_code() {
        let body = |code: &str| {
            format!("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>m</Message></Error><RequestId>r</RequestId></ErrorResponse>")
        };
        let cases: [(&str, u16, ErrorClass); 8] = [
            ("InvalidIdentityToken", 400, ErrorClass::Configuration),
            ("ExpiredTokenException", 400, ErrorClass::Transient),
            ("AccessDenied", 403, ErrorClass::Configuration),
            ("IDPRejectedClaim", 403, ErrorClass::Configuration),
            ("IDPCommunicationError", 400, ErrorClass::Transient),
            ("ValidationError", 400, ErrorClass::Configuration),
            ("Throttling", 400, ErrorClass::Throttled),
            ("InternalFailure", 500, ErrorClass::Transient),
        ];
        for (code, status, class) in cases {
            let e = map_error(status, body(code).as_bytes());
            assert_eq!(e.class(), class, "{code}: {e}");
            assert!(
                e.to_string().contains(code) || code == "InternalFailure",
                "{e}"
            );
        }
        let e = map_error(502, b"<html>bad gateway</html>");
        assert!(matches!(e, AssumeRoleError::Server { .. }), "{e}");
    }

    #[test]
    fn hostile_or_broken_answers_are_errors_never_panics() {
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(4_070_908_800 - 3600);
        let bytes = OK.as_bytes();
        // Every truncation, and every single-byte corruption, of a real answer.
        for end in 0..bytes.len() {
            let _ = parse_success(200, &bytes[..end], "r", then);
            let _ = map_error(400, &bytes[..end]);
        }
        for i in 0..bytes.len() {
            for b in [0u8, b'<', b'>', b'&', 0xff] {
                let mut v = bytes.to_vec();
                v[i] = b;
                let _ = parse_success(200, &v, "r", then);
                let _ = map_error(400, &v);
            }
        }
        // Entity expansion is not offered: a DTD is refused outright.
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><AssumeRoleWithWebIdentityResponse>&b;</AssumeRoleWithWebIdentityResponse>"#;
        let e = parse_success(200, bomb, "r", then).unwrap_err();
        assert!(matches!(e, AssumeRoleError::BadResponse { .. }), "{e}");
        let e = map_error(400, bomb);
        assert!(matches!(e, AssumeRoleError::Unexpected { .. }), "{e}");
    }

    #[test]
    fn endpoint_defaults_and_checks() {
        let url = |e, r, p| endpoint_url(e, r, p).map(|u| u.to_string());
        assert_eq!(
            url(None, None, "aws").unwrap(),
            "https://sts.amazonaws.com/"
        );
        assert_eq!(
            url(None, Some("eu-west-1"), "aws").unwrap(),
            "https://sts.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            url(None, Some("cn-north-1"), "aws-cn").unwrap(),
            "https://sts.cn-north-1.amazonaws.com.cn/"
        );
        assert_eq!(
            url(Some("localhost:8443"), None, "aws").unwrap(),
            "https://localhost:8443/"
        );
        assert!(url(Some("http://localhost:1"), None, "aws").is_err());
        assert!(url(Some("https://h/?a=b"), None, "aws").is_err());
    }
}
