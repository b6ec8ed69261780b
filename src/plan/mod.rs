//! Where raw settings become validated plans, once: command-line flags here, the TOML file in
//! [`file`]. Both fill the same domain specs ([`ExchangeSpec`], [`IdentitySpec`],
//! [`ServersSpec`]) and both locate what is wrong: a domain error names a *field*, and this
//! module adds the flag (`--session-duration 899 is out of range…`) or the file, line and key
//! (`agent.toml:9: role "orders" session_duration: 899 is out of range…`).
//!
//! Defaults are the named constants of the modules that own them; nothing here invents one.

pub mod file;
mod inspect;

pub use inspect::inspect;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{self, AgentPlan, OneShotPlan, PerCallerPlan, RolePlan, WebIdentityOneShotPlan};
use crate::cli::{
    AdminArgs, CredentialProcessArgs, IdentityArgs, JwtCredentialProcessArgs, RunArgs, ServeArgs,
    SessionArgs, UpdateArgs, X509CredentialFileArgs,
};
use crate::clock::Clock;
use crate::identity::delegated::{self, DelegatedError, DEFAULT_ATTEST_TIMEOUT};
use crate::identity::jwt_svid::SvidSelector;
use crate::identity::pkcs11::{CertificateSource, Pkcs11Spec, Pkcs11Uri, UriError};
use crate::identity::workload_api::normalize_address;
use crate::identity::{IdentitySpec, PatternError, SpiffeIdPattern};
use crate::rolesanywhere::exchange::{EndpointOptions, EnvFlagError};
use crate::rolesanywhere::{Exchange, ExchangeField, ExchangeSpec, SpecError};
use crate::serve::admin::AdminSpec;
use crate::serve::credentials_file::{self, CredentialsFileError};
use crate::serve::{runtime_dir, ContainerSpec, CredentialsFileSpec, ServersSpec};
use crate::webidentity::{
    WebIdentityExchange, WebIdentityField, WebIdentitySpec, WebIdentitySpecError,
};

/// A setting that cannot work, with where it was given.
#[derive(Debug, thiserror::Error)]
#[error("{at}{problem}")]
pub struct PlanError {
    pub at: Location,
    pub problem: Box<Problem>,
}

/// Where a mistaken setting was given.
#[derive(Debug, Clone)]
pub enum Location {
    /// The command line as a whole.
    Flags,
    /// One flag.
    Flag(&'static str),
    /// A config file, at a line when known, under a key when there is one.
    File {
        path: PathBuf,
        line: Option<usize>,
        key: Option<String>,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Flags => Ok(()),
            Location::Flag(flag) => write!(f, "{flag} "),
            Location::File { path, line, key } => {
                write!(f, "{}", path.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                f.write_str(": ")?;
                if let Some(key) = key {
                    write!(f, "{key}: ")?;
                }
                Ok(())
            }
        }
    }
}

/// What is wrong with a setting. Each message reads after its [`Location`].
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Exchange(#[from] SpecError),
    #[error(transparent)]
    WebIdentity(#[from] WebIdentitySpecError),
    #[error(transparent)]
    CredentialsFile(#[from] CredentialsFileError),
    #[error(transparent)]
    EnvFlag(#[from] EnvFlagError),
    #[error("is required (or use --agent SOCKET --role NAME to read from a running agent)")]
    Required,
    #[error("no SPIFFE Workload API address: pass --workload-api-socket or set SPIFFE_ENDPOINT_SOCKET (e.g. unix:///run/spire/agent.sock)")]
    NoWorkloadApiFlag,
    #[error("no SPIFFE Workload API address: set workload_api_socket, or SPIFFE_ENDPOINT_SOCKET in the agent's environment (or certificate and private_key)")]
    NoWorkloadApiKey,
    #[error("{0:?} is not a host name (letters, digits, dots and hyphens)")]
    HostName(String),
    #[error("{0:?} is not IP:port (e.g. 127.0.0.1:9911 or [::1]:9911)")]
    Listen(String),
    #[error("{0:?} is not a valid role name: use 1 to 64 letters, digits and +=,.@_-")]
    RoleName(String),
    #[error("{0} must be below {max} (the shortest session Roles Anywhere issues)", max = agent::MAX_MIN_REMAINING.as_secs())]
    MinRemaining(u64),
    #[error("{min_remaining} leaves sessions of {session_duration} s servable for only {window} s, less than the {margin} s the agent needs to refresh them before they drop under it: lower the minimum or raise the session duration")]
    NoServingWindow {
        min_remaining: u64,
        session_duration: u32,
        window: u64,
        margin: u64,
    },
    #[error("no server chosen: pass --imds, --container, --agent-socket or --credentials-profile (or use a --config file)")]
    NoServerFlag,
    #[error(
        "no server is configured: add [imds], [container], [agent_socket] or [[credentials_file]]"
    )]
    NoServerKey,
    #[error("cannot read the config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: crate::FileError,
    },
    #[error("{}", .0.message().trim().replace('\n', " "))]
    Syntax(Box<toml::de::Error>),
    #[error("no [[role]] is configured: add at least one with name, trust_anchor_arn, profile_arn and role_arn")]
    NoRole,
    #[error("role name {0:?} is used twice")]
    DuplicateRole(String),
    #[error("{key} {name:?} is not a configured [[role]] name")]
    UnknownRole { key: &'static str, name: String },
    #[error("imds.roles: {0:?} is listed twice")]
    ListedTwice(String),
    #[error("[[credentials_file]] profile {profile:?} of this file is already kept by the entry at line {first_line}: two writers would overwrite each other")]
    TwoWriters { profile: String, first_line: usize },
    #[error("spiffe_id must not be empty (omit it to use the first SVID)")]
    EmptySpiffeId,
    #[error(
        "private_key needs certificate (a certificate alone is a PKCS#12 file, or a PEM file that holds the key too); set neither to use the Workload API"
    )]
    CertificateWithoutKey,
    #[error("workload_api_socket and certificate exclude each other: pick one identity source")]
    TwoIdentitySources,
    #[error("needs --certificate (a PEM file), unless the key is a pkcs11: URI")]
    NeedsCertificateFlag,
    #[error("needs --certificate or --private-key: the Workload API sends its own chain")]
    IntermediatesWithoutCertificate,
    #[error(transparent)]
    Pkcs11Uri(#[from] UriError),
    #[error("only applies to PKCS#11 keys: give a pkcs11: URI in --certificate or --private-key")]
    Pkcs11FlagWithoutUri,
    #[error("must be in the token too when --certificate is a pkcs11: URI: give its pkcs11: URI, or omit it to find the key with the certificate's URI")]
    FileKeyForTokenCertificate,
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error(transparent)]
    AdminSocket(#[from] DelegatedError),
    #[error("is required in per-caller mode: the SPIFFE ID of the workloads this role is for (or spiffe://trust.domain/path/* for every ID below a path)")]
    SpiffeIdRequired,
    #[error("needs an [agent_socket]: per-caller mode serves callers on the agent socket")]
    PerCallerWithoutSocket,
    #[error("{0} must be at least 1")]
    Zero(u64),
    #[error("{0} is out of range: a hop limit is 1 to 255")]
    HopLimit(u32),
    #[error("only applies in per-caller mode: set spire_admin_socket too")]
    PerCallerIdleWithoutSocket,
    #[error("{0:?} is not an exchange: use \"roles-anywhere\" (the default) or \"web-identity\"")]
    UnknownExchange(String),
    #[error("is required")]
    RequiredKey,
    #[error("only applies to exchange = \"web-identity\" roles")]
    OnlyForWebIdentity,
    #[error("does not apply to exchange = \"web-identity\" roles (they assume the role with STS AssumeRoleWithWebIdentity, not Roles Anywhere)")]
    NotForWebIdentity,
    #[error("\"web-identity\" needs the SPIFFE Workload API (JWT-SVIDs come only from it): set workload_api_socket instead of certificate and private_key")]
    WebIdentityNeedsWorkloadApi,
    #[error("\"web-identity\" roles cannot be served in per-caller mode (the agent can fetch JWT-SVIDs only for itself): drop spire_admin_socket or use Roles Anywhere")]
    WebIdentityPerCaller,
    #[error("nothing to inspect: pass --workload-api-socket (or set SPIFFE_ENDPOINT_SOCKET) or --certificate FILE")]
    NoInspectSource,
    #[error("{0} is not a loopback address: the admin listener shows role names, health and metrics to whoever reaches it; allow it explicitly with --admin-allow-remote (or allow_remote = true under [admin]), e.g. for Kubernetes probes on 0.0.0.0:9913")]
    AdminNotLoopback(SocketAddr),
}

impl PlanError {
    /// `problem`, given at `at`.
    pub fn new(at: Location, problem: impl Into<Problem>) -> Self {
        PlanError {
            at,
            problem: Box::new(problem.into()),
        }
    }

    fn flag(flag: &'static str, problem: impl Into<Problem>) -> Self {
        PlanError::new(Location::Flag(flag), problem)
    }
}

/// The flag of each exchange setting.
fn exchange_flag(field: Option<ExchangeField>) -> Location {
    use ExchangeField::*;
    match field {
        None => Location::Flags,
        Some(f) => Location::Flag(match f {
            TrustAnchorArn => "--trust-anchor-arn",
            ProfileArn => "--profile-arn",
            RoleArn => "--role-arn",
            Region => "--region",
            Endpoint => "--endpoint",
            CaBundle => "--ca-bundle",
            SessionDuration => "--session-duration",
            RoleSessionName => "--role-session-name",
        }),
    }
}

/// The admin listener: `listen` must be loopback unless `allow_remote` says otherwise.
pub fn admin_listen(listen: &str, allow_remote: bool) -> Result<AdminSpec, Problem> {
    let listen = parse_listen(listen)?;
    if !allow_remote && !listen.ip().is_loopback() {
        return Err(Problem::AdminNotLoopback(listen));
    }
    Ok(AdminSpec { listen })
}

/// The `--admin` flags.
fn admin(args: &AdminArgs) -> Result<Option<AdminSpec>, PlanError> {
    args.admin
        .as_deref()
        .map(|a| {
            admin_listen(a, args.admin_allow_remote).map_err(|p| PlanError::flag("--admin", p))
        })
        .transpose()
}

/// The flag of each web-identity setting (`jwt-credential-process`).
fn web_identity_flag(field: Option<WebIdentityField>) -> Location {
    use WebIdentityField::*;
    match field {
        None => Location::Flags,
        Some(f) => Location::Flag(match f {
            RoleArn => "--role-arn",
            Audience => "--audience",
            Region => "--region",
            Endpoint => "--endpoint",
            CaBundle => "--ca-bundle",
            SessionDuration => "--session-duration",
            RoleSessionName => "--role-session-name",
        }),
    }
}

/// `jwt-credential-process`: checks every flag before any I/O.
pub fn jwt_credential_process(
    args: &JwtCredentialProcessArgs,
    clock: &Arc<dyn Clock>,
) -> Result<WebIdentityOneShotPlan, PlanError> {
    let workload_api = args
        .workload_api_socket
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(normalize_address)
        .ok_or_else(|| PlanError::new(Location::Flags, Problem::NoWorkloadApiFlag))?;
    let spec = WebIdentitySpec {
        role_arn: args.role_arn.clone(),
        audience: args.audience.clone(),
        region: args.region.clone(),
        endpoint: args.endpoint.clone(),
        ca_bundle: args.ca_bundle.clone(),
        session_duration: args.session_duration,
        role_session_name: args.role_session_name.clone(),
        timeout: Duration::from_secs(args.timeout),
        workload_api,
        workload_api_timeout: Duration::from_secs(args.workload_api_timeout),
    };
    let exchange = WebIdentityExchange::new(&spec, Arc::clone(clock))
        .map_err(|e| PlanError::new(web_identity_flag(e.field()), e))?;
    let selector = match (&args.spiffe_id, &args.hint) {
        (Some(id), _) => SvidSelector::id_or_hint(id),
        (None, Some(hint)) => SvidSelector::Hint(hint.clone()),
        (None, None) => SvidSelector::Default,
    };
    Ok(WebIdentityOneShotPlan { selector, exchange })
}

/// Parses `IP:port` or `[IPv6]:port`; a name like `localhost` is refused so the bind is
/// explicit.
pub fn parse_listen(addr: &str) -> Result<SocketAddr, Problem> {
    addr.parse::<SocketAddr>()
        .map_err(|_| Problem::Listen(addr.to_owned()))
}

/// Checks a host name an endpoint may answer to: letters, digits, dots and hyphens.
pub fn host_name(name: &str) -> Result<(), Problem> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Problem::HostName(name.to_owned()))
    }
}

/// Role names appear in URL paths; keep them to a safe alphabet.
pub fn valid_role_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// Checks a minimum remaining lifetime: it must be below the shortest session, or no
/// credentials could ever be handed out.
pub fn min_remaining(seconds: u64) -> Result<Duration, Problem> {
    let d = Duration::from_secs(seconds);
    if d < agent::MAX_MIN_REMAINING {
        Ok(d)
    } else {
        Err(Problem::MinRemaining(seconds))
    }
}

/// Checks that credentials of every role can be served above `min_remaining` and still be
/// refreshed before they drop under it.
pub fn serving_window(roles: &[RolePlan], min_remaining: Duration) -> Result<(), Problem> {
    for role in roles {
        let session = Duration::from_secs(u64::from(role.exchange.session_duration()));
        let margin = crate::credentials::refresher::refresh_margin(session);
        let window = session.saturating_sub(min_remaining);
        if window <= margin {
            return Err(Problem::NoServingWindow {
                min_remaining: min_remaining.as_secs(),
                session_duration: role.exchange.session_duration(),
                window: window.as_secs(),
                margin: margin.as_secs(),
            });
        }
    }
    Ok(())
}

/// `--no-verify-ssl`, and the endpoint variant from `AWS_USE_FIPS_ENDPOINT` /
/// `AWS_USE_DUALSTACK_ENDPOINT` (the process environment, as the AWS SDKs read it).
pub fn endpoint_options(no_verify_ssl: bool) -> Result<EndpointOptions, PlanError> {
    EndpointOptions {
        no_verify_ssl,
        ..EndpointOptions::default()
    }
    .from_env(|name| std::env::var(name).ok())
    .map_err(|e| PlanError::new(Location::Flags, Problem::EnvFlag(e)))
}

/// The Roles Anywhere flags, validated into a ready exchange.
fn exchange(args: &SessionArgs, clock: &Arc<dyn Clock>) -> Result<Exchange, PlanError> {
    let required =
        |v: &Option<String>, flag| v.clone().ok_or(PlanError::flag(flag, Problem::Required));
    let spec = ExchangeSpec {
        trust_anchor_arn: required(&args.trust_anchor_arn, "--trust-anchor-arn")?,
        profile_arn: required(&args.profile_arn, "--profile-arn")?,
        role_arn: required(&args.role_arn, "--role-arn")?,
        region: args.region.clone(),
        endpoint: args.endpoint.clone(),
        ca_bundle: args.ca_bundle.clone(),
        session_duration: args.session_duration,
        role_session_name: args.role_session_name.clone(),
        timeout: Duration::from_secs(args.timeout),
        endpoint_options: endpoint_options(args.compat.no_verify_ssl)?,
    };
    Exchange::new(&spec, Arc::clone(clock)).map_err(|e| PlanError::new(exchange_flag(e.field()), e))
}

/// The identity flags: files when `--certificate` is given, else the Workload API
/// (`--workload-api-socket`, which clap fills from `SPIFFE_ENDPOINT_SOCKET`).
fn identity(args: &IdentityArgs) -> Result<IdentitySpec, PlanError> {
    if let Some(spec) = pkcs11_identity(args)? {
        return Ok(IdentitySpec::Pkcs11(spec));
    }
    match (&args.certificate, &args.private_key) {
        // Without --private-key the certificate file holds the key too (PKCS#12, or PEM
        // with both), as aws_signing_helper takes it.
        (Some(certificate), private_key) => {
            return Ok(IdentitySpec::Files {
                certificate: certificate.clone(),
                private_key: private_key.clone(),
                intermediates: args.intermediates.clone(),
                password: args.pkcs8_password.clone(),
            })
        }
        (None, Some(_)) => {
            return Err(PlanError::flag(
                "--private-key",
                Problem::NeedsCertificateFlag,
            ))
        }
        (None, None) if args.intermediates.is_some() => {
            return Err(PlanError::flag(
                "--intermediates",
                Problem::IntermediatesWithoutCertificate,
            ))
        }
        (None, None) => {}
    }
    match args
        .workload_api_socket
        .as_deref()
        .filter(|a| !a.is_empty())
    {
        Some(address) => Ok(IdentitySpec::WorkloadApi {
            address: normalize_address(address),
            spiffe_id: args.spiffe_id.clone(),
            timeout: Duration::from_secs(args.workload_api_timeout),
        }),
        None => Err(PlanError::new(Location::Flags, Problem::NoWorkloadApiFlag)),
    }
}

/// The identity flags when `--certificate` or `--private-key` is a `pkcs11:` URI; `None`
/// when neither is (and then `--pkcs11-lib` and `--reuse-pin` have nothing to apply to).
fn pkcs11_identity(args: &IdentityArgs) -> Result<Option<Pkcs11Spec>, PlanError> {
    let as_uri =
        |value: &Option<PathBuf>, flag: &'static str| match value.as_ref().and_then(|p| p.to_str())
        {
            Some(s) if Pkcs11Uri::is_uri(s) => Pkcs11Uri::parse(s)
                .map(Some)
                .map_err(|e| PlanError::flag(flag, Problem::Pkcs11Uri(e))),
            _ => Ok(None),
        };
    let certificate_uri = as_uri(&args.certificate, "--certificate")?;
    let key_uri = as_uri(&args.private_key, "--private-key")?;
    if certificate_uri.is_none() && key_uri.is_none() {
        if args.pkcs11_lib.is_some() {
            return Err(PlanError::flag(
                "--pkcs11-lib",
                Problem::Pkcs11FlagWithoutUri,
            ));
        }
        if args.reuse_pin {
            return Err(PlanError::flag(
                "--reuse-pin",
                Problem::Pkcs11FlagWithoutUri,
            ));
        }
        return Ok(None);
    }
    if certificate_uri.is_some() && key_uri.is_none() && args.private_key.is_some() {
        return Err(PlanError::flag(
            "--private-key",
            Problem::FileKeyForTokenCertificate,
        ));
    }
    let certificate = match (certificate_uri, &args.certificate) {
        (Some(uri), _) => Some(CertificateSource::Token(uri)),
        (None, Some(path)) => Some(CertificateSource::File(path.clone())),
        (None, None) => None,
    };
    Ok(Some(Pkcs11Spec {
        library: args.pkcs11_lib.clone(),
        certificate,
        private_key: key_uri,
        intermediates: args.intermediates.clone(),
        reuse_pin: args.reuse_pin,
    }))
}

/// `credential-process` (without `--agent`): checks every flag before any I/O.
pub fn credential_process(
    args: &CredentialProcessArgs,
    clock: &Arc<dyn Clock>,
) -> Result<OneShotPlan, PlanError> {
    let exchange = exchange(&args.session, clock)?;
    let identity = identity(&args.identity)?;
    Ok(OneShotPlan { identity, exchange })
}

/// One role from flags, named `name` or after its ARN.
/// The identity is checked by the caller (per-caller mode may not need one).
#[allow(clippy::type_complexity)]
fn single_role(
    identity_args: &IdentityArgs,
    session: &SessionArgs,
    name: Option<&str>,
    clock: &Arc<dyn Clock>,
) -> Result<(Result<IdentitySpec, PlanError>, RolePlan), PlanError> {
    let exchange = exchange(session, clock)?;
    let identity = identity(identity_args);
    let name = name
        .map(str::to_owned)
        .unwrap_or_else(|| agent::role_name_from_arn(exchange.role_arn()));
    if !valid_role_name(&name) {
        return Err(PlanError::flag("--role-name", Problem::RoleName(name)));
    }
    Ok((
        identity,
        RolePlan {
            name,
            spiffe_id: identity_args.spiffe_id.clone(),
            bound_to: None,
            exchange: exchange.into(),
        },
    ))
}

/// `run`: a config file, or one role from flags.
pub fn run(args: &RunArgs, clock: &Arc<dyn Clock>) -> Result<AgentPlan, PlanError> {
    if let Some(path) = &args.config {
        let mut plan = file::load(path, clock)?;
        // `--admin` adds the admin listener to a config file's servers (or moves it).
        if let Some(spec) = admin(&args.admin)? {
            plan.servers.admin = Some(spec);
        }
        return Ok(plan);
    }
    let (identity, mut role) = single_role(
        &args.identity,
        &args.session,
        args.role_name.as_deref(),
        clock,
    )?;
    let mut imds = Vec::new();
    for a in &args.imds {
        imds.push(parse_listen(a).map_err(|p| PlanError::flag("--imds", p))?);
    }
    let container = match &args.container {
        None => None,
        Some(a) => Some(ContainerSpec {
            listen: parse_listen(a).map_err(|p| PlanError::flag("--container", p))?,
            token_file: args
                .container_token_file
                .clone()
                .unwrap_or_else(runtime_dir::default_container_token_file),
        }),
    };
    let credentials_files = match &args.credentials_profile {
        None => vec![],
        Some(profile) => {
            credentials_file::validate_profile(profile)
                .map_err(|e| PlanError::flag("--credentials-profile", e))?;
            vec![CredentialsFileSpec {
                role: role.name.clone(),
                profile: profile.clone(),
                path: None,
            }]
        }
    };
    let min_remaining =
        min_remaining(args.min_remaining).map_err(|p| PlanError::flag("--min-remaining", p))?;
    serving_window(std::slice::from_ref(&role), min_remaining)
        .map_err(|p| PlanError::flag("--min-remaining", p))?;
    for name in &args.allowed_host {
        host_name(name).map_err(|p| PlanError::flag("--allowed-host", p))?;
    }
    let servers = ServersSpec {
        imds,
        imds_roles: None,
        hop_limit: args.hop_limit,
        container,
        agent_socket: args
            .agent_socket
            .clone()
            .map(|p| p.unwrap_or_else(runtime_dir::default_agent_socket)),
        credentials_files,
        allowed_hosts: args.allowed_host.clone(),
        admin: admin(&args.admin)?,
    };
    if servers.is_empty() {
        return Err(PlanError::new(Location::Flags, Problem::NoServerFlag));
    }
    let per_caller = match &args.spire_admin_socket {
        None => None,
        Some(address) => {
            let admin_socket = normalize_address(address);
            delegated::check_address(&admin_socket)
                .map_err(|e| PlanError::flag("--spire-admin-socket", e))?;
            let spiffe_id = args
                .identity
                .spiffe_id
                .as_deref()
                .ok_or(PlanError::flag("--spiffe-id", Problem::SpiffeIdRequired))?;
            role.bound_to = Some(
                SpiffeIdPattern::parse(spiffe_id).map_err(|e| PlanError::flag("--spiffe-id", e))?,
            );
            if args.per_caller_idle == 0 {
                return Err(PlanError::flag(
                    "--per-caller-idle",
                    Problem::Zero(args.per_caller_idle),
                ));
            }
            Some(PerCallerPlan {
                admin_socket,
                idle: Duration::from_secs(args.per_caller_idle),
                attest_timeout: DEFAULT_ATTEST_TIMEOUT,
            })
        }
    };
    // Per-caller mode needs the agent's own identity only for the host-level channels.
    let identity = if per_caller.is_some() && !servers.has_host_channels() {
        None
    } else {
        Some(identity?)
    };
    Ok(AgentPlan {
        identity,
        roles: vec![role],
        servers,
        min_remaining,
        per_caller,
    })
}

/// `serve`: IMDS on 127.0.0.1:port for one role.
pub fn serve(args: &ServeArgs, clock: &Arc<dyn Clock>) -> Result<AgentPlan, PlanError> {
    let (identity, role) = single_role(&args.identity, &args.session, None, clock)?;
    Ok(AgentPlan {
        identity: Some(identity?),
        roles: vec![role],
        servers: ServersSpec {
            imds: vec![SocketAddr::from(([127, 0, 0, 1], args.port))],
            hop_limit: Some(args.hop_limit),
            admin: admin(&args.admin)?,
            ..ServersSpec::default()
        },
        min_remaining: agent::DEFAULT_MIN_REMAINING,
        per_caller: None,
    })
}

/// `update`: the credentials file for one role.
pub fn update(args: &UpdateArgs, clock: &Arc<dyn Clock>) -> Result<AgentPlan, PlanError> {
    let (identity, role) = single_role(&args.identity, &args.session, None, clock)?;
    credentials_file::validate_profile(&args.profile)
        .map_err(|e| PlanError::flag("--profile", e))?;
    Ok(AgentPlan {
        identity: Some(identity?),
        per_caller: None,
        servers: ServersSpec {
            credentials_files: vec![CredentialsFileSpec {
                role: role.name.clone(),
                profile: args.profile.clone(),
                path: None,
            }],
            ..ServersSpec::default()
        },
        roles: vec![role],
        min_remaining: agent::DEFAULT_MIN_REMAINING,
    })
}

/// `x509-credential-file[-oneshot]`: the default profile of `--aws-credentials-path`.
pub fn x509_credential_file(
    args: &X509CredentialFileArgs,
    clock: &Arc<dyn Clock>,
) -> Result<AgentPlan, PlanError> {
    let (identity, role) = single_role(&args.identity, &args.session, None, clock)?;
    Ok(AgentPlan {
        identity: Some(identity?),
        per_caller: None,
        servers: ServersSpec {
            credentials_files: vec![CredentialsFileSpec {
                role: role.name.clone(),
                profile: crate::serve::DEFAULT_PROFILE.to_owned(),
                path: Some(args.aws_credentials_path.clone()),
            }],
            ..ServersSpec::default()
        },
        roles: vec![role],
        min_remaining: agent::DEFAULT_MIN_REMAINING,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    const TA: &str = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001";
    const PR: &str =
        "arn:aws:rolesanywhere:us-east-1:123456789012:profile/8a9f3d2e-0000-4000-8000-000000000002";
    const ROLE: &str = "arn:aws:iam::123456789012:role/orders";

    fn credential_process_error(extra: &[&str]) -> String {
        let mut argv = vec![
            "spiffe-aws-agent",
            "credential-process",
            "--workload-api-socket",
            "unix:///tmp/none.sock",
            "--trust-anchor-arn",
            TA,
            "--profile-arn",
            PR,
            "--role-arn",
            ROLE,
        ];
        argv.extend_from_slice(extra);
        let Command::CredentialProcess(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not credential-process");
        };
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::TokioClock::new());
        match credential_process(&args, &clock) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn identity_flags_pair_up_and_pkcs11_uris_are_checked() {
        for (extra, expected) in [
            (
                // The certificate file holds the key too (PKCS#12, or PEM with both).
                &["--certificate", "c.pem"][..],
                "",
            ),
            (
                &["--private-key", "k.pem"],
                "--private-key needs --certificate",
            ),
            (
                &["--intermediates", "i.pem"],
                "--intermediates needs --certificate",
            ),
            (&["--reuse-pin"], "--reuse-pin only applies to PKCS#11 keys"),
            (
                &[
                    "--certificate",
                    "c.pem",
                    "--private-key",
                    "k.pem",
                    "--pkcs11-lib",
                    "x.so",
                ],
                "--pkcs11-lib only applies to PKCS#11 keys",
            ),
            (
                &["--certificate", "pkcs11:object=a;colour=b"],
                "--certificate pkcs11:object=a;colour=b: \"colour\" is not a path attribute",
            ),
            (
                &["--certificate", "pkcs11:object=a", "--private-key", "k.pem"],
                "--private-key must be in the token too",
            ),
            (&["--certificate", "pkcs11:object=a?pin-value=1"], ""),
            (&["--private-key", "pkcs11:id=%01", "--reuse-pin"], ""),
            (
                &[
                    "--certificate",
                    "c.pem",
                    "--private-key",
                    "PKCS11:id=%01",
                    "--pkcs11-lib",
                    "x.so",
                ],
                "",
            ),
        ] {
            let e = credential_process_error(extra);
            assert!(
                if expected.is_empty() {
                    e.is_empty()
                } else {
                    e.starts_with(expected)
                },
                "{extra:?}: {e}"
            );
        }
    }

    fn run_plan(extra: &[&str]) -> Result<AgentPlan, PlanError> {
        let mut argv = vec![
            "spiffe-aws-agent",
            "run",
            "--trust-anchor-arn",
            TA,
            "--profile-arn",
            PR,
            "--role-arn",
            ROLE,
            "--agent-socket",
            "/tmp/a.sock",
        ];
        argv.extend_from_slice(extra);
        let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not run");
        };
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::TokioClock::new());
        run(&args, &clock)
    }

    #[tokio::test]
    async fn hop_limit_applies_to_runs_imds_listeners() {
        let ws = ["--workload-api-socket", "unix:///tmp/a.sock"];
        let plan = run_plan(&[
            ws[0],
            ws[1],
            "--imds",
            "--imds",
            "[::1]:9911",
            "--hop-limit",
            "1",
        ])
        .unwrap();
        assert_eq!(plan.servers.imds.len(), 2);
        assert_eq!(plan.servers.hop_limit, Some(1));
        let plan = run_plan(&[ws[0], ws[1], "--imds"]).unwrap();
        assert_eq!(plan.servers.hop_limit, None);
        for bad in ["0", "256"] {
            let argv = [
                "spiffe-aws-agent",
                "run",
                "--trust-anchor-arn",
                TA,
                "--profile-arn",
                PR,
                "--role-arn",
                ROLE,
                "--imds",
                "--hop-limit",
                bad,
            ];
            assert!(Cli::try_parse_from(argv).is_err(), "--hop-limit {bad}");
        }
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::TokioClock::new());
        let role = format!(
            "[[role]]\nname = \"orders\"\ntrust_anchor_arn = \"{TA}\"\nprofile_arn = \"{PR}\"\nrole_arn = \"{ROLE}\"\n"
        );
        let text =
            format!("workload_api_socket = \"unix:///tmp/a.sock\"\n{role}[imds]\nhop_limit = 1\n");
        let plan = file::parse(std::path::Path::new("agent.toml"), &text, &clock).unwrap();
        assert_eq!(plan.servers.hop_limit, Some(1));
        let text =
            format!("workload_api_socket = \"unix:///tmp/a.sock\"\n{role}[imds]\nhop_limit = 0\n");
        let e = file::parse(std::path::Path::new("agent.toml"), &text, &clock)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agent.toml:8: imds.hop_limit: 0 is out of range"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn per_caller_flags() {
        let admin = ["--spire-admin-socket", "/run/spire/admin.sock"];
        let e = run_plan(&admin).unwrap_err().to_string();
        assert!(
            e.starts_with("--spiffe-id is required in per-caller mode"),
            "{e}"
        );
        let plan = run_plan(&[
            admin[0],
            admin[1],
            "--spiffe-id",
            "spiffe://example.org/service/*",
            "--per-caller-idle",
            "30",
        ])
        .unwrap();
        let pc = plan.per_caller.unwrap();
        assert_eq!(pc.admin_socket, "unix:///run/spire/admin.sock");
        assert_eq!(pc.idle, Duration::from_secs(30));
        assert!(
            plan.identity.is_none(),
            "no host-level channel, no own SVID"
        );
        let e = run_plan(&[admin[0], admin[1], "--spiffe-id", "spiffe://x/*/y"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--spiffe-id \"spiffe://x/*/y\" is not a SPIFFE ID"),
            "{e}"
        );
        let e = run_plan(&[admin[0], "tcp:nope", "--spiffe-id", "spiffe://x/y"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--spire-admin-socket invalid SPIRE admin socket address"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_admin_flags_default_to_loopback_and_refuse_wider_addresses_unless_allowed() {
        const WL: &str = "--workload-api-socket";
        const WL_ADDR: &str = "unix:///tmp/w.sock";
        assert!(
            run_plan(&[WL, WL_ADDR]).unwrap().servers.admin.is_none(),
            "off by default"
        );
        let plan = run_plan(&[WL, WL_ADDR, "--admin"]).unwrap();
        assert_eq!(
            plan.servers.admin.unwrap().listen,
            "127.0.0.1:9913".parse().unwrap()
        );
        let e = run_plan(&[WL, WL_ADDR, "--admin", "0.0.0.0:9913"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--admin 0.0.0.0:9913 is not a loopback address"),
            "{e}"
        );
        let plan = run_plan(&[
            WL,
            WL_ADDR,
            "--admin",
            "0.0.0.0:9913",
            "--admin-allow-remote",
        ])
        .unwrap();
        assert!(plan.servers.admin.unwrap().listen.ip().is_unspecified());
        let e = run_plan(&[WL, WL_ADDR, "--admin", "localhost:1"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--admin \"localhost:1\" is not IP:port"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn flag_errors_start_with_the_flag_and_name_the_value() {
        for (extra, expected) in [
            (
                &["--session-duration", "899"][..],
                "--session-duration 899 is out of range",
            ),
            (
                &["--region", "nowhere"],
                "--region \"nowhere\" is not a valid region",
            ),
            (
                &["--endpoint", "http://localhost:1"],
                "--endpoint \"http://localhost:1\" is not a usable endpoint",
            ),
            (
                &["--role-session-name", "a"],
                "--role-session-name \"a\" is not a valid role session name",
            ),
            (
                &["--ca-bundle", "/nonexistent/ca.pem"],
                "--ca-bundle /nonexistent/ca.pem is not a usable CA bundle",
            ),
        ] {
            let e = credential_process_error(extra);
            assert!(e.starts_with(expected), "{extra:?}: {e}");
        }
        assert_eq!(
            credential_process_error(&[]),
            "",
            "the base flags are valid"
        );
    }
}
