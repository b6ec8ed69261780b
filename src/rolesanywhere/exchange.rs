//! What one role asks Roles Anywhere for, as plain data ([`ExchangeSpec`]), and the
//! validated, ready-to-call form of it ([`Exchange`]).
//!
//! The spec knows nothing of flags or config files: `plan.rs` fills it from either, and a
//! [`SpecError`] names the [`ExchangeField`] that is wrong so the caller can point at the
//! flag or the `file:line: key`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::arn::{ArnError, ArnField, SessionArns};
use super::client::ErrorClass;
use super::client::{
    ClientConfig, ConfigError, CreateSessionError, Credentials, RolesAnywhereClient, SessionRequest,
};
use crate::clock::Clock;
use crate::identity::X509Identity;

/// Session length asked for unless told otherwise, in seconds (the service's default too).
pub const DEFAULT_SESSION_DURATION: u32 = 3600;
/// Shortest session Roles Anywhere issues, in seconds.
pub const MIN_SESSION_DURATION: u32 = 900;
/// Longest session Roles Anywhere issues, in seconds.
pub const MAX_SESSION_DURATION: u32 = 43_200;
/// How long one CreateSession call (with its retries) may take unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything needed to exchange an identity for one role's credentials, unvalidated.
#[derive(Debug, Clone)]
pub struct ExchangeSpec {
    pub trust_anchor_arn: String,
    pub profile_arn: String,
    pub role_arn: String,
    /// Signing region; `None`: the trust anchor ARN's.
    pub region: Option<String>,
    /// Base URL instead of `https://rolesanywhere.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Extra PEM roots for the endpoint's TLS.
    pub ca_bundle: Option<PathBuf>,
    pub session_duration: u32,
    pub role_session_name: Option<String>,
    pub timeout: Duration,
    /// Endpoint variant and TLS verification.
    pub endpoint_options: EndpointOptions,
}

/// How to reach Roles Anywhere beyond the URL: the endpoint variants AWS SDKs choose with
/// `AWS_USE_FIPS_ENDPOINT` / `AWS_USE_DUALSTACK_ENDPOINT` (an explicit endpoint wins over
/// both), and `--no-verify-ssl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointOptions {
    /// `rolesanywhere-fips.{region}…`: FIPS 140 validated TLS endpoints. The signing region
    /// stays the region.
    pub fips: bool,
    /// `….api.aws` (`api.amazonwebservices.com.cn` in China): IPv4 and IPv6.
    pub dualstack: bool,
    /// Accept any TLS certificate from the Roles Anywhere endpoint (`--no-verify-ssl`).
    pub no_verify_ssl: bool,
}

/// An endpoint-variant environment variable holds something other than true or false.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the environment variable {name}={value:?} must be true or false")]
pub struct EnvFlagError {
    pub name: &'static str,
    pub value: String,
}

impl EndpointOptions {
    /// The FIPS and dual-stack choices from `AWS_USE_FIPS_ENDPOINT` and
    /// `AWS_USE_DUALSTACK_ENDPOINT`, read through `var` (`true`/`false` in any case; unset
    /// or empty is false), as the AWS SDKs read them.
    pub fn from_env(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self, EnvFlagError> {
        let flag = |name: &'static str| -> Result<bool, EnvFlagError> {
            match var(name) {
                None => Ok(false),
                Some(v) if v.is_empty() || v.eq_ignore_ascii_case("false") => Ok(false),
                Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
                Some(value) => Err(EnvFlagError { name, value }),
            }
        };
        self.fips = flag("AWS_USE_FIPS_ENDPOINT")?;
        self.dualstack = flag("AWS_USE_DUALSTACK_ENDPOINT")?;
        Ok(self)
    }
}

impl ExchangeSpec {
    /// A spec with every optional setting at its default.
    pub fn new(trust_anchor_arn: &str, profile_arn: &str, role_arn: &str) -> Self {
        ExchangeSpec {
            trust_anchor_arn: trust_anchor_arn.to_owned(),
            profile_arn: profile_arn.to_owned(),
            role_arn: role_arn.to_owned(),
            region: None,
            endpoint: None,
            ca_bundle: None,
            session_duration: DEFAULT_SESSION_DURATION,
            role_session_name: None,
            timeout: DEFAULT_TIMEOUT,
            endpoint_options: EndpointOptions::default(),
        }
    }
}

/// The setting of an [`ExchangeSpec`] a [`SpecError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeField {
    TrustAnchorArn,
    ProfileArn,
    RoleArn,
    Region,
    Endpoint,
    CaBundle,
    SessionDuration,
    RoleSessionName,
}

/// An [`ExchangeSpec`] that cannot work, found before any network call.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Arn(#[from] ArnError),
    #[error(transparent)]
    Client(#[from] ConfigError),
    #[error("{0} is out of range: Roles Anywhere issues sessions of {MIN_SESSION_DURATION} to {MAX_SESSION_DURATION} seconds")]
    SessionDuration(u32),
    #[error("{0:?} is not a valid role session name: use 2 to 64 letters, digits and +=,.@_-")]
    RoleSessionName(String),
}

impl SpecError {
    /// Which setting is wrong; `None` for problems of the machine (no system roots).
    pub fn field(&self) -> Option<ExchangeField> {
        match self {
            SpecError::Arn(e) => Some(match e.field {
                ArnField::TrustAnchor => ExchangeField::TrustAnchorArn,
                ArnField::Profile => ExchangeField::ProfileArn,
                ArnField::Role => ExchangeField::RoleArn,
            }),
            SpecError::Client(ConfigError::Region(_)) => Some(ExchangeField::Region),
            SpecError::Client(ConfigError::Endpoint { .. }) => Some(ExchangeField::Endpoint),
            SpecError::Client(ConfigError::CaBundle { .. }) => Some(ExchangeField::CaBundle),
            SpecError::Client(_) => None,
            SpecError::SessionDuration(_) => Some(ExchangeField::SessionDuration),
            SpecError::RoleSessionName(_) => Some(ExchangeField::RoleSessionName),
        }
    }
}

/// A validated exchange: the HTTPS client and the request, ready to call.
pub struct Exchange {
    client: RolesAnywhereClient,
    request: SessionRequest,
    timeout: Duration,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("url", &self.client.url())
            .field("role_arn", &self.request.arns.role)
            .finish()
    }
}

impl Exchange {
    /// Validates `spec` and builds its client (reads the CA bundle; no network).
    pub fn new(spec: &ExchangeSpec, clock: Arc<dyn Clock>) -> Result<Self, SpecError> {
        let arns = SessionArns::parse(&spec.trust_anchor_arn, &spec.profile_arn, &spec.role_arn)?;
        if !(MIN_SESSION_DURATION..=MAX_SESSION_DURATION).contains(&spec.session_duration) {
            return Err(SpecError::SessionDuration(spec.session_duration));
        }
        if let Some(name) = &spec.role_session_name {
            let ok_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
            if !(2..=64).contains(&name.len()) || !name.chars().all(ok_char) {
                return Err(SpecError::RoleSessionName(name.clone()));
            }
        }
        let config = ClientConfig {
            region: spec
                .region
                .clone()
                .unwrap_or_else(|| arns.trust_anchor_region.clone()),
            endpoint: spec.endpoint.clone(),
            ca_bundle: spec.ca_bundle.clone(),
            timeout: spec.timeout,
            options: spec.endpoint_options,
        };
        let client = RolesAnywhereClient::new(&config, &arns.partition, clock)?;
        Ok(Exchange {
            client,
            request: SessionRequest {
                arns,
                duration_seconds: spec.session_duration,
                role_session_name: spec.role_session_name.clone(),
            },
            timeout: spec.timeout,
        })
    }

    /// The role this exchange assumes.
    pub fn role_arn(&self) -> &str {
        &self.request.arns.role
    }

    /// The session length asked for, in seconds.
    pub fn session_duration(&self) -> u32 {
        self.request.duration_seconds
    }

    /// Calls CreateSession with `identity`, once.
    pub async fn run(&self, identity: &X509Identity) -> Result<Credentials, CreateSessionError> {
        self.client.create_session(identity, &self.request).await
    }

    /// Calls CreateSession, retrying throttling and transient failures (5xx, timeouts,
    /// unreachable) with jittered backoff, all within the spec's timeout: what a one-shot
    /// caller wants, as an SDK's retryer does. (The agent's refresher schedules its own
    /// retries and uses [`run`](Self::run).)
    pub async fn run_with_retries(
        &self,
        identity: &X509Identity,
    ) -> Result<Credentials, CreateSessionError> {
        crate::backoff::retry_within(
            self.timeout,
            || self.run(identity),
            |e: &CreateSessionError| {
                matches!(e.class(), ErrorClass::Transient | ErrorClass::Throttled)
            },
            || CreateSessionError::Timeout {
                endpoint: self.client.url().to_owned(),
                seconds: self.timeout.as_secs(),
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TA: &str = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001";
    const PR: &str =
        "arn:aws:rolesanywhere:us-east-1:123456789012:profile/8a9f3d2e-0000-4000-8000-000000000002";
    const ROLE: &str = "arn:aws:iam::123456789012:role/orders";

    fn check(spec: &ExchangeSpec) -> Result<Exchange, SpecError> {
        Exchange::new(spec, Arc::new(crate::clock::TokioClock::new()))
    }

    #[tokio::test]
    async fn every_bad_setting_names_its_field_and_never_a_flag() {
        let base = ExchangeSpec::new(TA, PR, ROLE);
        assert!(check(&base).is_ok());
        let cases: Vec<(ExchangeSpec, ExchangeField)> = vec![
            (
                ExchangeSpec::new(PR, PR, ROLE),
                ExchangeField::TrustAnchorArn,
            ),
            (ExchangeSpec::new(TA, TA, ROLE), ExchangeField::ProfileArn),
            (ExchangeSpec::new(TA, PR, "role/x"), ExchangeField::RoleArn),
            (
                ExchangeSpec {
                    region: Some("nowhere".into()),
                    ..base.clone()
                },
                ExchangeField::Region,
            ),
            (
                ExchangeSpec {
                    endpoint: Some("http://localhost:1".into()),
                    ..base.clone()
                },
                ExchangeField::Endpoint,
            ),
            (
                ExchangeSpec {
                    ca_bundle: Some("/nonexistent/ca.pem".into()),
                    ..base.clone()
                },
                ExchangeField::CaBundle,
            ),
            (
                ExchangeSpec {
                    session_duration: 899,
                    ..base.clone()
                },
                ExchangeField::SessionDuration,
            ),
            (
                ExchangeSpec {
                    session_duration: 43_201,
                    ..base.clone()
                },
                ExchangeField::SessionDuration,
            ),
            (
                ExchangeSpec {
                    role_session_name: Some("a".into()),
                    ..base.clone()
                },
                ExchangeField::RoleSessionName,
            ),
        ];
        for (spec, field) in cases {
            let e = check(&spec).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
            assert!(!e.to_string().contains("--"), "{e}");
        }
    }
}
