//! The CreateSession client: one signed `POST /sessions` over HTTPS (reqwest + rustls with
//! ring), and the mapping of every way it can fail to an error that says what to check.
//!
//! Proxies come from the standard `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` variables
//! (reqwest reads them). Trust comes from the system's roots plus the configured CA bundle.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::arn::SessionArns;
use super::signer;
use crate::bounded_file::Links;
use crate::clock::Clock;
use crate::identity::X509Identity;

/// Largest CA bundle read (a full system bundle is about 200 KiB).
const MAX_CA_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;
/// Largest response body read; a real one is about 2 KiB.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// How to reach Roles Anywhere.
#[derive(Debug, Clone)]
pub(super) struct ClientConfig {
    /// Signing region; also picks the default endpoint.
    pub region: String,
    /// `https://host[:port]` to use instead of `https://rolesanywhere.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Extra PEM roots to trust (private CA, TLS-inspecting proxy, the dev double).
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Whole-request deadline.
    pub timeout: Duration,
    /// FIPS / dual-stack endpoint, TLS verification.
    pub options: super::exchange::EndpointOptions,
}

/// What to ask CreateSession for.
#[derive(Debug, Clone)]
pub(super) struct SessionRequest {
    pub arns: SessionArns,
    pub duration_seconds: u32,
    pub role_session_name: Option<String>,
}

/// Temporary AWS credentials. `Debug` shows only the access key ID.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Zeroizing<String>,
    pub expiration: SystemTime,
    /// The assumed-role ARN (`arn:aws:sts::…:assumed-role/…`), when the service said.
    pub assumed_role_arn: Option<String>,
    pub role_arn: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("role_arn", &self.role_arn)
            .finish_non_exhaustive()
    }
}

/// The client could not be set up. Messages name the value, not the flag or key it came
/// from; the caller knows that and adds it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{endpoint:?} is not a usable endpoint: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error(transparent)]
    Region(#[from] super::arn::RegionError),
    #[error("{path} is not a usable CA bundle: {reason}")]
    CaBundle { path: String, reason: String },
    #[error(
        "no trusted root certificates: install the system CA certificates or give a CA bundle"
    )]
    NoRoots,
    #[error("cannot build the HTTPS client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// CreateSession failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateSessionError {
    #[error("Roles Anywhere denied access (AccessDeniedException: {message}): {hint}")]
    AccessDenied { message: String, hint: &'static str },
    #[error("Roles Anywhere rejected the request (ValidationException: {message}): check the ARNs and the session duration (a profile can cap the duration)")]
    Validation { message: String },
    #[error("Roles Anywhere did not find a resource (ResourceNotFoundException: {message}): check that the trust anchor and profile ARNs exist in region {region}")]
    NotFound { message: String, region: String },
    #[error("Roles Anywhere is throttling CreateSession ({error_type}: {message}): retry later, or run `spiffe-aws-agent run` so clients share cached credentials")]
    Throttled { error_type: String, message: String },
    #[error("Roles Anywhere failed (HTTP {status} {error_type}: {message}): the service had an internal error, retry later")]
    Server {
        status: u16,
        error_type: String,
        message: String,
    },
    #[error("Roles Anywhere answered HTTP {status} ({error_type}: {message})")]
    Unexpected {
        status: u16,
        error_type: String,
        message: String,
    },
    #[error("Roles Anywhere sent an unusable response (HTTP {status}): {reason}")]
    BadResponse { status: u16, reason: String },
    #[error("cannot reach Roles Anywhere at {endpoint}: {reason}; check the endpoint, network access, the proxy variables, and the CA bundle for a private CA")]
    Unreachable { endpoint: String, reason: String },
    #[error("Roles Anywhere at {endpoint} presented a TLS certificate this agent does not trust ({reason}); check the endpoint and, for a private CA, the CA bundle")]
    UntrustedEndpoint { endpoint: String, reason: String },
    #[error("Roles Anywhere at {endpoint} did not answer within {seconds}s")]
    Timeout { endpoint: String, seconds: u64 },
    #[error("cannot sign the request: {0}")]
    Signing(#[from] crate::identity::key::KeyError),
    #[error("the SPIFFE ID {spiffe_id} cannot become the session tag aws:PrincipalTag/x509SAN/URI: {problem}; Roles Anywhere would refuse the whole CreateSession, so it was not called")]
    UnmappableSpiffeId {
        spiffe_id: String,
        problem: super::session_tags::TagProblem,
    },
    #[error("Roles Anywhere could not map the certificate into session tags ({message}): {hint}")]
    TagMapping { message: String, hint: String },
}

/// What a failed CreateSession means for whoever retries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The service asked us to slow down: retry, but later than usual.
    Throttled,
    /// A network problem or a server-side failure: retrying soon may work.
    Transient,
    /// The service refused the request as configured (ARNs, trust, duration): retrying the
    /// same request will fail the same way until someone changes something.
    Configuration,
    /// The identity could not be used to sign.
    Identity,
}

impl CreateSessionError {
    /// How a refresher should treat this failure.
    pub fn class(&self) -> ErrorClass {
        use CreateSessionError::*;
        match self {
            Throttled { .. } => ErrorClass::Throttled,
            // The endpoint's TLS certificate is not trusted: retrying changes nothing.
            UntrustedEndpoint { .. } => ErrorClass::Configuration,
            Server { .. } | BadResponse { .. } | Unreachable { .. } | Timeout { .. } => {
                ErrorClass::Transient
            }
            AccessDenied { .. } | Validation { .. } | NotFound { .. } | Unexpected { .. } => {
                ErrorClass::Configuration
            }
            Signing(_) | UnmappableSpiffeId { .. } | TagMapping { .. } => ErrorClass::Identity,
        }
    }
}

/// A CreateSession client for one endpoint and region.
pub(super) struct RolesAnywhereClient {
    http: reqwest::Client,
    url: reqwest::Url,
    host: String,
    region: String,
    timeout: Duration,
    /// Signing time and the "already expired?" check of responses.
    clock: Arc<dyn Clock>,
}

impl RolesAnywhereClient {
    /// Builds the client; fails on a bad endpoint, region or CA bundle, before any I/O
    /// beyond reading the bundle.
    pub(super) fn new(
        config: &ClientConfig,
        partition: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        super::arn::validate_region(&config.region)?;
        let url = endpoint_url(config, partition)?;
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let tls = if config.options.no_verify_ssl {
            tls_config_unverified()?
        } else {
            tls_config(config.ca_bundle.as_deref())?
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .user_agent(concat!("spiffe-aws-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ConfigError::Http)?;
        Ok(RolesAnywhereClient {
            http,
            url,
            host,
            region: config.region.clone(),
            timeout: config.timeout,
            clock,
        })
    }

    /// The `/sessions` URL this client posts to.
    pub(super) fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Exchanges `identity` for credentials.
    pub(super) async fn create_session(
        &self,
        identity: &X509Identity,
        request: &SessionRequest,
    ) -> Result<Credentials, CreateSessionError> {
        if let Some(id) = identity.spiffe_id() {
            if let Some(problem) = super::session_tags::problem(id) {
                return Err(CreateSessionError::UnmappableSpiffeId {
                    spiffe_id: id.chars().take(300).collect(),
                    problem,
                });
            }
        }
        let body = request_body(request);
        let signed = signer::sign(
            &signer::Request {
                method: "POST",
                host: &self.host,
                path: self.url.path(),
                query: &[],
                content_type: "application/json",
                body: body.as_bytes(),
            },
            &self.region,
            self.clock.now(),
            identity,
        )?;
        let mut builder = self.http.post(self.url.clone()).body(body);
        for (name, value) in &signed.headers {
            builder = builder.header(*name, value);
        }
        let response = crate::aws_http::send(builder, MAX_RESPONSE_BYTES)
            .await
            .map_err(|f| self.failure(f))?;
        let (status, body) = (response.status, response.body);
        let error_type_header = response
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_owned());
        if (200..300).contains(&status) {
            parse_success(status, &body, &request.arns.role, self.clock.now())
        } else {
            Err(tag_mapping_hint(
                map_error(status, error_type_header, &body, &self.region),
                identity,
            ))
        }
    }

    /// No whole response: a timeout, an untrusted or unreachable endpoint, a broken body.
    fn failure(&self, failure: crate::aws_http::Failure) -> CreateSessionError {
        use crate::aws_http::Failure;
        let endpoint = self.url.as_str().to_owned();
        match failure {
            Failure::TimedOut => CreateSessionError::Timeout {
                endpoint,
                seconds: self.timeout.as_secs(),
            },
            Failure::UntrustedCertificate { reason } => {
                CreateSessionError::UntrustedEndpoint { endpoint, reason }
            }
            Failure::Unreachable { reason } => CreateSessionError::Unreachable { endpoint, reason },
            Failure::BadBody { status, reason } => {
                CreateSessionError::BadResponse { status, reason }
            }
        }
    }
}

fn endpoint_url(config: &ClientConfig, partition: &str) -> Result<reqwest::Url, ConfigError> {
    let raw = match &config.endpoint {
        Some(e) if e.contains("://") => e.clone(),
        Some(e) => format!("https://{e}"),
        None => {
            // The AWS SDKs' endpoint variants (aws-sdk-go's partition defaults).
            let domain = match (partition == "aws-cn", config.options.dualstack) {
                (true, true) => "api.amazonwebservices.com.cn",
                (true, false) => "amazonaws.com.cn",
                (false, true) => "api.aws",
                (false, false) => "amazonaws.com",
            };
            let service = if config.options.fips {
                "rolesanywhere-fips"
            } else {
                "rolesanywhere"
            };
            format!("https://{service}.{}.{domain}", config.region)
        }
    };
    let bad = |reason: &str| ConfigError::Endpoint {
        endpoint: raw.clone(),
        reason: reason.to_owned(),
    };
    let mut url = reqwest::Url::parse(&raw).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "https" {
        return Err(bad(
            "only https:// is allowed: the response carries credentials",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("give the base URL only, without query or fragment"));
    }
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}/sessions"));
    Ok(url)
}

/// The system roots plus `ca_bundle`; shared with the STS client (`webidentity`).
pub(crate) fn tls_config(ca_bundle: Option<&Path>) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A broken system certificate must not stop the agent; skip it.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_bundle {
        let bad = |reason: String| ConfigError::CaBundle {
            path: path.display().to_string(),
            reason,
        };
        let pem = crate::bounded_file::read(path, MAX_CA_BUNDLE_BYTES, Links::Follow)
            .map_err(|e| bad(e.to_string()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad(format!("bad PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("it holds no PEM CERTIFICATE block".into()));
        }
    }
    if roots.is_empty() {
        return Err(ConfigError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// TLS that accepts any server certificate (`--no-verify-ssl`, as aws_signing_helper's): the
/// handshake signatures are still checked, so the connection is encrypted to whoever
/// answered, but who answered is not checked.
fn tls_config_unverified() -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
        .with_no_client_auth();
    Ok(config)
}

/// The verifier of [`tls_config_unverified`].
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The JSON body, keys sorted as the AWS SDKs send them.
fn request_body(request: &SessionRequest) -> String {
    let mut body = serde_json::Map::new();
    body.insert(
        "durationSeconds".into(),
        serde_json::Value::from(request.duration_seconds),
    );
    body.insert(
        "profileArn".into(),
        serde_json::Value::from(request.arns.profile.clone()),
    );
    body.insert(
        "roleArn".into(),
        serde_json::Value::from(request.arns.role.clone()),
    );
    if let Some(name) = &request.role_session_name {
        body.insert(
            "roleSessionName".into(),
            serde_json::Value::from(name.clone()),
        );
    }
    body.insert(
        "trustAnchorArn".into(),
        serde_json::Value::from(request.arns.trust_anchor.clone()),
    );
    serde_json::Value::Object(body).to_string()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionResponse {
    credential_set: Option<Vec<CredentialSetEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialSetEntry {
    credentials: Option<WireCredentials>,
    assumed_role_user: Option<AssumedRoleUser>,
    role_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCredentials {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    expiration: Option<String>,
}

#[derive(Deserialize)]
struct AssumedRoleUser {
    arn: Option<String>,
}

pub(crate) fn parse_success(
    status: u16,
    body: &[u8],
    role_arn: &str,
    now: SystemTime,
) -> Result<Credentials, CreateSessionError> {
    let bad = |reason: String| CreateSessionError::BadResponse { status, reason };
    let parsed: SessionResponse = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not the CreateSession JSON ({e})")))?;
    let entry = parsed
        .credential_set
        .and_then(|set| set.into_iter().next())
        .ok_or_else(|| bad("credentialSet is missing or empty".into()))?;
    let creds = entry
        .credentials
        .ok_or_else(|| bad("credentialSet[0].credentials is missing".into()))?;
    let field = |v: Option<String>, name: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("credentials.{name} is missing or empty")))
    };
    let access_key_id = field(creds.access_key_id, "accessKeyId")?;
    let secret_access_key = Zeroizing::new(field(creds.secret_access_key, "secretAccessKey")?);
    let session_token = Zeroizing::new(field(creds.session_token, "sessionToken")?);
    let expiration_text = field(creds.expiration, "expiration")?;
    let expiration =
        crate::aws_http::checked_expiration(&expiration_text, "credentials.expiration", now)
            .map_err(bad)?;
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token,
        expiration,
        assumed_role_arn: entry.assumed_role_user.and_then(|u| u.arn),
        role_arn: entry.role_arn.unwrap_or_else(|| role_arn.to_owned()),
    })
}

pub(crate) fn map_error(
    status: u16,
    header_type: Option<String>,
    body: &[u8],
    region: &str,
) -> CreateSessionError {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: Option<String>,
        #[serde(rename = "Message")]
        message_upper: Option<String>,
        #[serde(rename = "__type")]
        error_type: Option<String>,
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let body_type = parsed
        .as_ref()
        .and_then(|b| b.error_type.clone())
        .map(|t| t.rsplit('#').next().unwrap_or(&t).to_owned());
    let error_type = header_type
        .or(body_type)
        .unwrap_or_else(|| "UnknownError".into());
    let message = parsed
        .and_then(|b| b.message.or(b.message_upper))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "no message".into()
            } else {
                text.chars().take(200).collect()
            }
        });
    match (status, error_type.as_str()) {
        (403, _) | (_, "AccessDeniedException") => CreateSessionError::AccessDenied {
            hint: access_denied_hint(&message),
            message,
        },
        (_, "ValidationException") => CreateSessionError::Validation { message },
        (404, _) | (_, "ResourceNotFoundException") => CreateSessionError::NotFound {
            message,
            region: region.to_owned(),
        },
        (429, _) | (_, "ThrottlingException") | (_, "TooManyRequestsException") => {
            CreateSessionError::Throttled {
                error_type,
                message,
            }
        }
        (500..=599, _) => CreateSessionError::Server {
            status,
            error_type,
            message,
        },
        _ => CreateSessionError::Unexpected {
            status,
            error_type,
            message,
        },
    }
}

/// The service's "Some attributes failed to be mapped into session tags", with the
/// certificate value that cannot be a tag named.
fn tag_mapping_hint(e: CreateSessionError, identity: &X509Identity) -> CreateSessionError {
    let message = match &e {
        CreateSessionError::AccessDenied { message, .. }
        | CreateSessionError::Validation { message }
        | CreateSessionError::Unexpected { message, .. } => message,
        _ => return e,
    };
    if !message.to_ascii_lowercase().contains("session tag") {
        return e;
    }
    let offending = identity.tag_attributes().iter().find_map(|(tag, value)| {
        super::session_tags::problem(value).map(|problem| (tag, value, problem))
    });
    let hint = match offending {
        Some((tag, value, problem)) => format!(
            "the certificate's {tag} {:?} cannot be a session tag value: {problem}",
            value.chars().take(80).collect::<String>()
        ),
        None => "check the certificate's subject, issuer and SAN values (at most 256 letters, digits, spaces and _.:/=+-@ each) and the profile's attribute mappings".to_owned(),
    };
    CreateSessionError::TagMapping {
        message: message.clone(),
        hint,
    }
}

fn access_denied_hint(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("untrusted") || m.contains("trust anchor") || m.contains("chain") {
        "is the certificate's CA (for SPIRE: the SPIRE server's CA) in the trust anchor?"
    } else if m.contains("expired") || m.contains("skew") || m.contains("date") {
        "check the system clock and the certificate's validity"
    } else if m.contains("signature") {
        "the request signature did not verify: check that the private key matches the certificate"
    } else {
        "check that the trust anchor and profile are enabled, the role is in the profile, and the role's trust policy allows rolesanywhere.amazonaws.com for this certificate"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: Option<&str>) -> ClientConfig {
        ClientConfig {
            region: "us-east-1".into(),
            endpoint: endpoint.map(str::to_owned),
            ca_bundle: None,
            timeout: Duration::from_secs(5),
            options: Default::default(),
        }
    }

    #[test]
    fn fips_and_dualstack_variants_keep_the_region_for_signing() {
        use super::super::exchange::EndpointOptions;
        let cases = [
            (false, false, "aws", "rolesanywhere.us-east-1.amazonaws.com"),
            (
                true,
                false,
                "aws",
                "rolesanywhere-fips.us-east-1.amazonaws.com",
            ),
            (false, true, "aws", "rolesanywhere.us-east-1.api.aws"),
            (true, true, "aws", "rolesanywhere-fips.us-east-1.api.aws"),
            (
                true,
                false,
                "aws-us-gov",
                "rolesanywhere-fips.us-east-1.amazonaws.com",
            ),
            (
                false,
                true,
                "aws-cn",
                "rolesanywhere.us-east-1.api.amazonwebservices.com.cn",
            ),
            (
                true,
                true,
                "aws-cn",
                "rolesanywhere-fips.us-east-1.api.amazonwebservices.com.cn",
            ),
        ];
        for (fips, dualstack, partition, host) in cases {
            let mut c = config(None);
            c.options = EndpointOptions {
                fips,
                dualstack,
                no_verify_ssl: false,
            };
            let client =
                RolesAnywhereClient::new(&c, partition, Arc::new(crate::clock::TokioClock::new()))
                    .unwrap();
            assert_eq!(client.url(), format!("https://{host}/sessions"));
            assert_eq!(client.host, host);
            // The signing scope takes the region, never the -fips host label.
            assert_eq!(client.region, "us-east-1", "{host}");
        }
        // An explicit endpoint wins over the variants, as in the AWS SDKs.
        let mut c = config(Some("https://vpce.example:8443"));
        c.options.fips = true;
        c.options.dualstack = true;
        let url = endpoint_url(&c, "aws").unwrap();
        assert_eq!(url.as_str(), "https://vpce.example:8443/sessions");
    }

    #[test]
    fn endpoint_variant_environment() {
        use super::super::exchange::EndpointOptions;
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let o = EndpointOptions::default()
            .from_env(env(&[
                ("AWS_USE_FIPS_ENDPOINT", "TRUE"),
                ("AWS_USE_DUALSTACK_ENDPOINT", ""),
            ]))
            .unwrap();
        assert!(o.fips && !o.dualstack);
        let o = EndpointOptions::default()
            .from_env(env(&[
                ("AWS_USE_DUALSTACK_ENDPOINT", "true"),
                ("AWS_USE_FIPS_ENDPOINT", "false"),
            ]))
            .unwrap();
        assert!(!o.fips && o.dualstack);
        let e = EndpointOptions::default()
            .from_env(env(&[("AWS_USE_FIPS_ENDPOINT", "yes")]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the environment variable AWS_USE_FIPS_ENDPOINT=\"yes\" must be true or false"
        );
    }

    #[test]
    fn default_endpoint_follows_region_and_partition() {
        let url = endpoint_url(&config(None), "aws").unwrap();
        assert_eq!(
            url.as_str(),
            "https://rolesanywhere.us-east-1.amazonaws.com/sessions"
        );
        let url = endpoint_url(&config(None), "aws-cn").unwrap();
        assert_eq!(
            url.host_str(),
            Some("rolesanywhere.us-east-1.amazonaws.com.cn")
        );
    }

    #[test]
    fn endpoint_override_accepts_host_or_url_and_refuses_plain_http() {
        let url = endpoint_url(&config(Some("localhost:8443")), "aws").unwrap();
        assert_eq!(url.as_str(), "https://localhost:8443/sessions");
        let url = endpoint_url(&config(Some("https://proxy.example/ra/")), "aws").unwrap();
        assert_eq!(url.path(), "/ra/sessions");
        assert!(endpoint_url(&config(Some("http://localhost:80")), "aws").is_err());
    }

    #[test]
    fn error_type_comes_from_header_or_body() {
        let e = map_error(
            403,
            None,
            br#"{"message":"Untrusted signing certificate"}"#,
            "us-east-1",
        );
        assert!(matches!(e, CreateSessionError::AccessDenied { .. }), "{e}");
        assert!(e.to_string().contains("trust anchor"), "{e}");
        let e = map_error(
            400,
            None,
            br#"{"__type":"com.amazon#ValidationException","message":"bad"}"#,
            "r",
        );
        assert!(matches!(e, CreateSessionError::Validation { .. }), "{e}");
        let e = map_error(429, Some("ThrottlingException".into()), b"", "r");
        assert!(matches!(e, CreateSessionError::Throttled { .. }), "{e}");
        let e = map_error(503, None, b"<html>busy</html>", "r");
        assert!(e.to_string().contains("<html>busy</html>"), "{e}");
    }

    #[test]
    fn the_session_tag_mapping_failure_names_what_to_check() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        let identity = crate::identity::files::load(
            &root.join("orders-p256.pem"),
            &root.join("orders-p256.key"),
            None,
            SystemTime::now(),
        )
        .unwrap();
        assert!(identity
            .tag_attributes()
            .iter()
            .any(|(tag, value)| tag == "x509SAN/URI" && value.starts_with("spiffe://")));
        let e = map_error(
            403,
            Some("AccessDeniedException".into()),
            br#"{"message":"Unable to assume role for arn:aws:iam::1:role/r. Some attributes failed to be mapped into session tags. Issuer: [  ]; Subject: [ CN ]; SAN: [  ]"}"#,
            "us-east-1",
        );
        let e = tag_mapping_hint(e, &identity);
        assert!(matches!(e, CreateSessionError::TagMapping { .. }), "{e}");
        assert_eq!(e.class(), ErrorClass::Identity);
        assert!(e.to_string().contains("subject, issuer and SAN"), "{e}");
        // Other denials keep their own hint.
        let e = map_error(
            403,
            None,
            br#"{"message":"Untrusted signing certificate"}"#,
            "r",
        );
        assert!(matches!(
            tag_mapping_hint(e, &identity),
            CreateSessionError::AccessDenied { .. }
        ));
    }

    #[test]
    fn success_parsing_rejects_missing_fields_and_garbage() {
        assert!(parse_success(201, b"not json", "r", SystemTime::now()).is_err());
        assert!(parse_success(201, br#"{"credentialSet":[]}"#, "r", SystemTime::now()).is_err());
        let no_token = br#"{"credentialSet":[{"credentials":{"accessKeyId":"A","secretAccessKey":"S","expiration":"2099-01-01T00:00:00Z"}}]}"#;
        let e = parse_success(201, no_token, "r", SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("sessionToken"), "{e}");
        let far = br#"{"credentialSet":[{"credentials":{"accessKeyId":"A","secretAccessKey":"S","sessionToken":"T","expiration":"9999-01-01T00:00:00Z"}}]}"#;
        let e = parse_success(201, far, "r", SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("further away"), "{e}");
        let ok = br#"{"credentialSet":[{"credentials":{"accessKeyId":"A","secretAccessKey":"S","sessionToken":"T","expiration":"2099-01-01T00:00:00Z"}}]}"#;
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(4_070_908_800 - 3600);
        let creds = parse_success(201, ok, "role", then).unwrap();
        assert_eq!(creds.access_key_id, "A");
        let shown = format!("{creds:?}");
        assert!(
            !shown.contains("\"S\"") && !shown.contains("\"T\""),
            "{shown}"
        );
    }
}
