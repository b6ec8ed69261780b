//! `credential-process`: one exchange, printed in the format the AWS SDKs read from a
//! `credential_process` command:
//! `{"Version":1,"AccessKeyId","SecretAccessKey","SessionToken","Expiration"}`.
//!
//! Every flag is checked before any I/O, so a typo fails fast with exit status 2 and
//! never reaches SPIRE or Roles Anywhere.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::cli::{CredentialProcessArgs, IdentityArgs, SessionArgs};
use crate::identity::{files, workload_api, IdentityError, X509Identity};
use crate::rolesanywhere::arn::{ArnError, SessionArns};
use crate::rolesanywhere::client::{
    self, ClientConfig, ConfigError, CreateSessionError, Credentials, RolesAnywhereClient,
    SessionRequest,
};

/// Why `credential-process` failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0}")]
    Arn(#[from] ArnError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("invalid --role-session-name {0:?}: use 2 to 64 letters, digits and +=,.@_-")]
    RoleSessionName(String),
    #[error("{0} is required (or use --agent SOCKET --role NAME to read from a running agent)")]
    MissingFlag(&'static str),
    #[error("{0}")]
    Agent(String),
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    CreateSession(#[from] CreateSessionError),
}

impl ProcessError {
    /// 2 for invalid flags (nothing was attempted), 1 for failures while fetching.
    pub fn exit_code(&self) -> u8 {
        match self {
            ProcessError::Arn(_)
            | ProcessError::Config(_)
            | ProcessError::RoleSessionName(_)
            | ProcessError::MissingFlag(_) => 2,
            ProcessError::Identity(IdentityError::WorkloadApi(
                workload_api::WorkloadApiError::NoAddress
                | workload_api::WorkloadApiError::BadAddress { .. },
            )) => 2,
            _ => 1,
        }
    }
}

/// The `credential_process` document. Field order is the documented one.
#[derive(Serialize)]
struct ProcessOutput<'a> {
    #[serde(rename = "Version")]
    version: u8,
    #[serde(rename = "AccessKeyId")]
    access_key_id: &'a str,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: &'a str,
    #[serde(rename = "SessionToken")]
    session_token: &'a str,
    #[serde(rename = "Expiration")]
    expiration: String,
}

/// The `credential_process` JSON: the one renderer for both `credential-process` (fresh
/// [`Credentials`]) and the agent socket (cached `RoleCredentials`).
pub fn render_document(
    access_key_id: &str,
    secret_access_key: &str,
    session_token: &str,
    expiration: std::time::SystemTime,
) -> String {
    let out = ProcessOutput {
        version: 1,
        access_key_id,
        secret_access_key,
        session_token,
        expiration: crate::display::aws_time(expiration),
    };
    // Serializing a struct of strings cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

/// Renders freshly exchanged credentials as the `credential_process` JSON.
pub fn render(creds: &Credentials) -> String {
    render_document(
        &creds.access_key_id,
        &creds.secret_access_key,
        &creds.session_token,
        creds.expiration,
    )
}

/// A validated plan for one exchange: everything that can be checked without I/O.
pub struct Exchange {
    client: RolesAnywhereClient,
    request: SessionRequest,
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
    /// Validates the Roles Anywhere flags and builds the client.
    pub fn new(args: &SessionArgs) -> Result<Self, ProcessError> {
        fn required<'a>(
            v: &'a Option<String>,
            flag: &'static str,
        ) -> Result<&'a str, ProcessError> {
            v.as_deref().ok_or(ProcessError::MissingFlag(flag))
        }
        let arns = SessionArns::parse(
            required(&args.trust_anchor_arn, "--trust-anchor-arn")?,
            required(&args.profile_arn, "--profile-arn")?,
            required(&args.role_arn, "--role-arn")?,
        )?;
        let duration_seconds = client::validate_duration(args.session_duration)?;
        if let Some(name) = &args.role_session_name {
            let ok_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
            if !(2..=64).contains(&name.len()) || !name.chars().all(ok_char) {
                return Err(ProcessError::RoleSessionName(name.clone()));
            }
        }
        let config = ClientConfig {
            region: args
                .region
                .clone()
                .unwrap_or_else(|| arns.trust_anchor_region.clone()),
            endpoint: args.endpoint.clone(),
            ca_bundle: args.ca_bundle.clone(),
            timeout: Duration::from_secs(args.timeout),
        };
        let client = RolesAnywhereClient::new(&config, &arns.partition)?;
        Ok(Exchange {
            client,
            request: SessionRequest {
                arns,
                duration_seconds,
                role_session_name: args.role_session_name.clone(),
            },
        })
    }

    /// Calls CreateSession with `identity`.
    pub async fn run(&self, identity: &X509Identity) -> Result<Credentials, ProcessError> {
        Ok(self.client.create_session(identity, &self.request).await?)
    }
}

/// Where the identity will come from, resolved (but not yet fetched).
#[derive(Debug, Clone)]
pub enum IdentityPlan {
    Files {
        certificate: std::path::PathBuf,
        private_key: std::path::PathBuf,
        intermediates: Option<std::path::PathBuf>,
    },
    WorkloadApi {
        address: String,
        spiffe_id: Option<String>,
        timeout: Duration,
    },
}

impl IdentityPlan {
    /// Picks the source: files when --certificate is given, else the Workload API.
    pub fn new(args: &IdentityArgs) -> Result<Self, ProcessError> {
        match (&args.certificate, &args.private_key) {
            (Some(certificate), Some(private_key)) => Ok(IdentityPlan::Files {
                certificate: certificate.clone(),
                private_key: private_key.clone(),
                intermediates: args.intermediates.clone(),
            }),
            _ => {
                let address = workload_api::resolve_address(args.workload_api_socket.as_deref())
                    .map_err(IdentityError::from)?;
                Ok(IdentityPlan::WorkloadApi {
                    address,
                    spiffe_id: args.spiffe_id.clone(),
                    timeout: Duration::from_secs(args.workload_api_timeout),
                })
            }
        }
    }

    /// Fetches and validates the identity.
    pub async fn fetch(&self) -> Result<X509Identity, IdentityError> {
        match self {
            IdentityPlan::Files {
                certificate,
                private_key,
                intermediates,
            } => files::load(
                certificate,
                private_key,
                intermediates.as_deref(),
                SystemTime::now(),
            ),
            IdentityPlan::WorkloadApi {
                address,
                spiffe_id,
                timeout,
            } => workload_api::fetch_once(address, spiffe_id.as_deref(), *timeout).await,
        }
    }
}

/// The whole `credential-process` command: validate, fetch the identity, exchange.
pub async fn fetch(args: &CredentialProcessArgs) -> Result<Credentials, ProcessError> {
    let exchange = Exchange::new(&args.session)?;
    let plan = IdentityPlan::new(&args.identity)?;
    let identity = plan.fetch().await?;
    tracing::debug!(
        subject = identity.subject(),
        spiffe_id = identity.spiffe_id(),
        serial = identity.serial_decimal(),
        "exchanging identity"
    );
    exchange.run(&identity).await
}
