//! What one role asks STS for, as plain data ([`WebIdentitySpec`]), and the validated,
//! ready-to-call form of it ([`WebIdentityExchange`]): fetch a fresh JWT-SVID for the
//! audience from the Workload API, then AssumeRoleWithWebIdentity with it.
//!
//! Like `rolesanywhere::exchange`, the spec knows nothing of flags or config files; a
//! [`WebIdentitySpecError`] names the [`WebIdentityField`] that is wrong.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::client::{endpoint_url, AssumeRequest, AssumeRoleError, ClientConfig, StsClient};
use crate::clock::Clock;
use crate::identity::jwt_svid::{self, JwtSvidError, SvidSelector};
use crate::rolesanywhere::{ArnError, ConfigError, Credentials, ErrorClass, RegionError};

/// Session length asked for unless told otherwise, in seconds (STS's default too).
pub const DEFAULT_SESSION_DURATION: u32 = 3600;
/// Shortest session STS issues, in seconds.
pub const MIN_SESSION_DURATION: u32 = 900;
/// Longest session STS issues (a role's maximum session duration caps it), in seconds.
pub const MAX_SESSION_DURATION: u32 = 43_200;
/// How long one exchange (JWT-SVID fetch and STS call, with retries) may take unless told.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything needed to exchange a JWT-SVID for one role's credentials, unvalidated.
#[derive(Debug, Clone)]
pub struct WebIdentitySpec {
    pub role_arn: String,
    /// The JWT-SVID's audience: a client ID of the IAM OIDC identity provider.
    pub audience: String,
    /// STS region; picks the regional endpoint. `None`: the global endpoint.
    pub region: Option<String>,
    /// Base URL instead of `https://sts[.{region}].amazonaws.com`.
    pub endpoint: Option<String>,
    /// Extra PEM roots for the endpoint's TLS.
    pub ca_bundle: Option<PathBuf>,
    pub session_duration: u32,
    /// `None`: derived from the SPIFFE ID (see [`default_session_name`]).
    pub role_session_name: Option<String>,
    pub timeout: Duration,
    /// The Workload API address the JWT-SVIDs come from.
    pub workload_api: String,
    pub workload_api_timeout: Duration,
}

/// The setting of a [`WebIdentitySpec`] an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebIdentityField {
    RoleArn,
    Audience,
    Region,
    Endpoint,
    CaBundle,
    SessionDuration,
    RoleSessionName,
}

/// A [`WebIdentitySpec`] that cannot work, found before any network call.
#[derive(Debug, thiserror::Error)]
pub enum WebIdentitySpecError {
    #[error(transparent)]
    RoleArn(#[from] ArnError),
    #[error("must not be empty: it is the JWT-SVID's audience, a client ID of the IAM OIDC identity provider")]
    Audience,
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("{endpoint:?} is not a usable STS endpoint: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error(transparent)]
    Client(#[from] ConfigError),
    #[error("{0} is out of range: STS issues sessions of {MIN_SESSION_DURATION} to {MAX_SESSION_DURATION} seconds")]
    SessionDuration(u32),
    #[error("{0:?} is not a valid role session name: use 2 to 64 letters, digits and +=,.@_-")]
    RoleSessionName(String),
}

impl WebIdentitySpecError {
    /// Which setting is wrong; `None` for problems of the machine (no system roots).
    pub fn field(&self) -> Option<WebIdentityField> {
        use WebIdentitySpecError::*;
        match self {
            RoleArn(_) => Some(WebIdentityField::RoleArn),
            Audience => Some(WebIdentityField::Audience),
            Region(_) => Some(WebIdentityField::Region),
            Endpoint { .. } => Some(WebIdentityField::Endpoint),
            Client(ConfigError::CaBundle { .. }) => Some(WebIdentityField::CaBundle),
            Client(_) => None,
            SessionDuration(_) => Some(WebIdentityField::SessionDuration),
            RoleSessionName(_) => Some(WebIdentityField::RoleSessionName),
        }
    }
}

/// Why one web-identity exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum WebIdentityError {
    #[error(transparent)]
    JwtSvid(#[from] JwtSvidError),
    #[error(transparent)]
    Sts(#[from] AssumeRoleError),
}

impl WebIdentityError {
    /// How a caller that retries should treat this failure. A Workload API failure is not
    /// retried by a one-shot caller (it reports the cause at once, as the X.509 path does).
    pub fn class(&self) -> ErrorClass {
        match self {
            WebIdentityError::JwtSvid(_) => ErrorClass::Identity,
            WebIdentityError::Sts(e) => e.class(),
        }
    }
}

/// A validated web-identity exchange.
pub struct WebIdentityExchange {
    client: StsClient,
    role_arn: String,
    audience: String,
    duration_seconds: u32,
    role_session_name: Option<String>,
    timeout: Duration,
    workload_api: String,
    workload_api_timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for WebIdentityExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebIdentityExchange")
            .field("url", &self.client.url())
            .field("role_arn", &self.role_arn)
            .field("audience", &self.audience)
            .finish()
    }
}

fn valid_session_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    (2..=64).contains(&name.len()) && name.chars().all(ok_char)
}

/// The role session name used when none is configured: the SPIFFE ID without `spiffe://`,
/// `/` as `.` and any other character STS refuses as `-`, its last 64 characters (the most
/// specific part), so CloudTrail and `sts:RoleSessionName` conditions see who it was.
pub fn default_session_name(spiffe_id: &str) -> String {
    let rest = spiffe_id.strip_prefix("spiffe://").unwrap_or(spiffe_id);
    let mapped: Vec<char> = rest
        .chars()
        .map(|c| match c {
            '/' => '.',
            c if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) => c,
            _ => '-',
        })
        .collect();
    let start = mapped.len().saturating_sub(64);
    let name: String = mapped[start..].iter().collect();
    if name.len() < 2 {
        "spiffe-aws-agent".to_owned()
    } else {
        name
    }
}

impl WebIdentityExchange {
    /// Validates `spec` and builds its client (reads the CA bundle; no network).
    pub fn new(
        spec: &WebIdentitySpec,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WebIdentitySpecError> {
        let partition = crate::rolesanywhere::parse_role(&spec.role_arn)?;
        if spec.audience.trim().is_empty() {
            return Err(WebIdentitySpecError::Audience);
        }
        if let Some(region) = &spec.region {
            crate::rolesanywhere::validate_region(region)?;
        }
        if !(MIN_SESSION_DURATION..=MAX_SESSION_DURATION).contains(&spec.session_duration) {
            return Err(WebIdentitySpecError::SessionDuration(spec.session_duration));
        }
        if let Some(name) = &spec.role_session_name {
            if !valid_session_name(name) {
                return Err(WebIdentitySpecError::RoleSessionName(name.clone()));
            }
        }
        let endpoint = endpoint_url(spec.endpoint.as_deref(), spec.region.as_deref(), &partition)
            .map_err(|reason| WebIdentitySpecError::Endpoint {
            endpoint: spec.endpoint.clone().unwrap_or_default(),
            reason,
        })?;
        let client = StsClient::new(
            &ClientConfig {
                endpoint,
                ca_bundle: spec.ca_bundle.clone(),
                timeout: spec.timeout,
            },
            Arc::clone(&clock),
        )?;
        Ok(WebIdentityExchange {
            client,
            role_arn: spec.role_arn.clone(),
            audience: spec.audience.clone(),
            duration_seconds: spec.session_duration,
            role_session_name: spec.role_session_name.clone(),
            timeout: spec.timeout,
            workload_api: spec.workload_api.clone(),
            workload_api_timeout: spec.workload_api_timeout,
            clock,
        })
    }

    /// The role this exchange assumes.
    pub fn role_arn(&self) -> &str {
        &self.role_arn
    }

    /// The session length asked for, in seconds.
    pub fn session_duration(&self) -> u32 {
        self.duration_seconds
    }

    /// Fetches a fresh JWT-SVID (`selector`) and calls AssumeRoleWithWebIdentity, once.
    pub async fn run(&self, selector: &SvidSelector) -> Result<Credentials, WebIdentityError> {
        let svid = jwt_svid::fetch(
            &self.workload_api,
            &self.audience,
            selector,
            self.workload_api_timeout,
            self.clock.now(),
        )
        .await?;
        let spiffe_id = svid.spiffe_id().to_string();
        tracing::debug!(%spiffe_id, hint = ?svid.hint(), expiry = %svid.expiry(), "exchanging JWT-SVID");
        let request = AssumeRequest {
            role_arn: self.role_arn.clone(),
            role_session_name: self
                .role_session_name
                .clone()
                .unwrap_or_else(|| default_session_name(&spiffe_id)),
            duration_seconds: self.duration_seconds,
        };
        Ok(self.client.assume_role(svid.token(), &request).await?)
    }

    /// [`run`](Self::run), retrying throttling and transient STS failures (5xx, timeouts,
    /// unreachable, an expired token) with jittered backoff, all within the spec's timeout,
    /// with a fresh JWT-SVID each time: what a one-shot caller wants.
    pub async fn run_with_retries(
        &self,
        selector: &SvidSelector,
    ) -> Result<Credentials, WebIdentityError> {
        crate::backoff::retry_within(
            self.timeout,
            || self.run(selector),
            |e: &WebIdentityError| {
                matches!(e.class(), ErrorClass::Transient | ErrorClass::Throttled)
            },
            || {
                WebIdentityError::Sts(AssumeRoleError::Timeout {
                    endpoint: self.client.url().to_owned(),
                    seconds: self.timeout.as_secs(),
                })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WebIdentitySpec {
        WebIdentitySpec {
            role_arn: "arn:aws:iam::123456789012:role/orders".into(),
            audience: "sts.amazonaws.com".into(),
            region: None,
            endpoint: None,
            ca_bundle: None,
            session_duration: DEFAULT_SESSION_DURATION,
            role_session_name: None,
            timeout: DEFAULT_TIMEOUT,
            workload_api: "unix:///tmp/none.sock".into(),
            workload_api_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn every_bad_setting_names_its_field() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::TokioClock::new());
        assert!(WebIdentityExchange::new(&spec(), Arc::clone(&clock)).is_ok());
        let cases = [
            (
                WebIdentitySpec {
                    role_arn: "role/x".into(),
                    ..spec()
                },
                WebIdentityField::RoleArn,
            ),
            (
                WebIdentitySpec {
                    audience: " ".into(),
                    ..spec()
                },
                WebIdentityField::Audience,
            ),
            (
                WebIdentitySpec {
                    region: Some("nowhere".into()),
                    ..spec()
                },
                WebIdentityField::Region,
            ),
            (
                WebIdentitySpec {
                    endpoint: Some("http://localhost:1".into()),
                    ..spec()
                },
                WebIdentityField::Endpoint,
            ),
            (
                WebIdentitySpec {
                    ca_bundle: Some("/nonexistent/ca.pem".into()),
                    ..spec()
                },
                WebIdentityField::CaBundle,
            ),
            (
                WebIdentitySpec {
                    session_duration: 899,
                    ..spec()
                },
                WebIdentityField::SessionDuration,
            ),
            (
                WebIdentitySpec {
                    role_session_name: Some("a b".into()),
                    ..spec()
                },
                WebIdentityField::RoleSessionName,
            ),
        ];
        for (spec, field) in cases {
            let e = WebIdentityExchange::new(&spec, Arc::clone(&clock)).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
            assert!(!e.to_string().contains("--"), "{e}");
        }
    }

    #[test]
    fn default_session_names_are_valid_and_keep_the_specific_end() {
        assert_eq!(
            default_session_name("spiffe://example.org/service/orders"),
            "example.org.service.orders"
        );
        let long = format!("spiffe://example.org/{}/orders", "a".repeat(100));
        let name = default_session_name(&long);
        assert_eq!(name.len(), 64);
        assert!(
            name.ends_with(".orders") && valid_session_name(&name),
            "{name}"
        );
        assert!(valid_session_name(&default_session_name("spiffe://td/ü~x")));
        assert_eq!(default_session_name("spiffe://"), "spiffe-aws-agent");
    }
}
