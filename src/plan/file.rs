//! The agent's TOML configuration file: any number of roles and the servers to start.
//! Everything is validated before anything starts; a mistake is reported with the file, the
//! line and the key (`agent.toml:12: role "orders" role_arn: …`).
//!
//! ```toml
//! workload_api_socket = "unix:///run/spire/agent/public/api.sock"  # else SPIFFE_ENDPOINT_SOCKET
//! # endpoint = "https://rolesanywhere.us-east-1.amazonaws.com"
//! # ca_bundle = "/etc/ssl/private-ca.pem"
//! # certificate = "/etc/pki/agent.p12"   # files instead of the Workload API: PKCS#12 alone,
//! #   or with private_key (PEM), intermediates and pkcs8_password as the flags
//! # min_remaining_seconds = 300   # never hand out credentials with less left
//! # spire_admin_socket = "unix:///run/spire/agent/admin/admin.sock"  # per-caller mode
//! # per_caller_idle_seconds = 900  # per-caller: drop credentials unused this long
//!
//! [[role]]
//! name = "orders"                 # what clients ask for
//! trust_anchor_arn = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/…"
//! profile_arn = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/…"
//! role_arn = "arn:aws:iam::123456789012:role/orders"
//! # spiffe_id = "spiffe://example.org/service/orders"   # which SVID; default: the first
//! #   (per-caller mode: required; the callers this role is for, or ".../service/*")
//! # region, session_duration, role_session_name, endpoint: as the flags
//!
//! [[role]]                        # STS AssumeRoleWithWebIdentity with a JWT-SVID instead
//! name = "uploads"
//! exchange = "web-identity"       # default: "roles-anywhere"
//! audience = "sts.amazonaws.com"  # a client ID of the trust domain's IAM OIDC provider
//! role_arn = "arn:aws:iam::123456789012:role/uploads"
//! # region = "us-east-1"          # regional STS endpoint (default: sts.amazonaws.com)
//! # endpoint = "https://sts.us-east-1.amazonaws.com"  # else the top-level sts_endpoint
//! # spiffe_id, session_duration, role_session_name: as above
//!
//! [imds]                          # IMDSv2-style endpoint
//! listen = ["127.0.0.1:9911"]
//! # roles = ["orders"]            # the role it lists and serves (default: the first role)
//! # hop_limit = 1                 # IP TTL / IPv6 hop limit of responses (1: this host only)
//! [container]                     # container-credentials endpoint
//! listen = "127.0.0.1:9912"
//! token_file = "/run/spiffe-aws-agent/container-token"
//! [agent_socket]                  # fast path for credential-process --agent
//! path = "/run/spiffe-aws-agent/agent.sock"
//! [[credentials_file]]            # keep a profile in ~/.aws/credentials current
//! role = "orders"
//! profile = "default"
//! [admin]                         # /healthz, /readyz, /metrics (off without this section)
//! listen = "127.0.0.1:9913"
//! # allow_remote = true           # required for a non-loopback listen (Kubernetes probes)
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{parse_listen, valid_role_name, Location, PlanError, Problem};
use crate::agent::{AgentPlan, PerCallerPlan, RoleExchange, RolePlan, DEFAULT_MIN_REMAINING};
use crate::bounded_file::Links;
use crate::clock::Clock;
use crate::credentials::per_caller::DEFAULT_IDLE;
use crate::identity::delegated::{self, DEFAULT_ATTEST_TIMEOUT};
use crate::identity::files::KeyPassword;
use crate::identity::pkcs11::{CertificateSource, Pkcs11Spec, Pkcs11Uri};
use crate::identity::workload_api::normalize_address;
use crate::identity::SpiffeIdPattern;
use crate::identity::{IdentitySpec, DEFAULT_WORKLOAD_API_TIMEOUT};
use crate::rolesanywhere::exchange::{DEFAULT_SESSION_DURATION, DEFAULT_TIMEOUT};
use crate::rolesanywhere::{Exchange, ExchangeField, ExchangeSpec};
use crate::serve::admin::DEFAULT_ADMIN_LISTEN;
use crate::serve::{
    credentials_file, runtime_dir, ContainerSpec, CredentialsFileSpec, ServersSpec,
    DEFAULT_CONTAINER_LISTEN, DEFAULT_IMDS_LISTEN, DEFAULT_PROFILE,
};
use crate::webidentity::{WebIdentityExchange, WebIdentityField, WebIdentitySpec};

/// The largest config file read: a real one is a few KiB.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workload_api_socket: Option<Spanned<String>>,
    workload_api_timeout: Option<Spanned<u64>>,
    certificate: Option<Spanned<String>>,
    private_key: Option<Spanned<String>>,
    pkcs8_password: Option<Spanned<String>>,
    intermediates: Option<Spanned<String>>,
    pkcs11_lib: Option<Spanned<String>>,
    reuse_pin: Option<Spanned<bool>>,
    endpoint: Option<Spanned<String>>,
    /// The STS endpoint of web-identity roles (`endpoint` is Roles Anywhere's).
    sts_endpoint: Option<Spanned<String>>,
    ca_bundle: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    timeout: Option<Spanned<u64>>,
    min_remaining_seconds: Option<Spanned<u64>>,
    allowed_hosts: Option<Spanned<Vec<String>>>,
    spire_admin_socket: Option<Spanned<String>>,
    per_caller_idle_seconds: Option<Spanned<u64>>,
    #[serde(default)]
    role: Vec<Spanned<RoleToml>>,
    imds: Option<Spanned<ImdsToml>>,
    container: Option<Spanned<ContainerToml>>,
    agent_socket: Option<Spanned<AgentSocketToml>>,
    #[serde(default)]
    credentials_file: Vec<Spanned<CredentialsFileToml>>,
    admin: Option<Spanned<AdminToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminToml {
    listen: Option<Spanned<String>>,
    allow_remote: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleToml {
    name: Spanned<String>,
    /// `roles-anywhere` (the default) or `web-identity`.
    exchange: Option<Spanned<String>>,
    /// Roles Anywhere: required.
    trust_anchor_arn: Option<Spanned<String>>,
    profile_arn: Option<Spanned<String>>,
    /// Web identity: the JWT-SVID's audience, required.
    audience: Option<Spanned<String>>,
    role_arn: Spanned<String>,
    region: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    session_duration: Option<Spanned<u32>>,
    role_session_name: Option<Spanned<String>>,
    spiffe_id: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImdsToml {
    listen: Option<Spanned<OneOrMany>>,
    roles: Option<Spanned<Vec<String>>>,
    hop_limit: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerToml {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSocketToml {
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFileToml {
    role: Spanned<String>,
    profile: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
}

/// Turns byte offsets into locations.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// An error at `span`, under `key` when given.
    fn err(
        &self,
        span: std::ops::Range<usize>,
        key: Option<String>,
        problem: impl Into<Problem>,
    ) -> PlanError {
        let at = Location::File {
            path: self.file.to_owned(),
            line: Some(self.line(span)),
            key,
        };
        PlanError::new(at, problem)
    }

    /// An error about the file as a whole.
    fn whole(&self, problem: Problem) -> PlanError {
        let at = Location::File {
            path: self.file.to_owned(),
            line: None,
            key: None,
        };
        PlanError::new(at, problem)
    }
}

/// Reads and validates a config file. Only a regular file of reasonable size is read.
pub fn load(path: &Path, clock: &Arc<dyn Clock>) -> Result<AgentPlan, PlanError> {
    let read_err = |source| {
        let problem = Problem::ReadFile {
            path: path.to_owned(),
            source,
        };
        PlanError::new(Location::Flag("--config"), problem)
    };
    let bytes = crate::bounded_file::read(path, MAX_FILE_BYTES, Links::Follow).map_err(read_err)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        read_err(crate::FileError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not UTF-8 text",
        )))
    })?;
    parse(path, &text, clock)
}

/// Validates a config text (`path` is for messages).
pub fn parse(path: &Path, text: &str, clock: &Arc<dyn Clock>) -> Result<AgentPlan, PlanError> {
    let loc = Locator { file: path, text };
    let config: FileConfig = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => loc.err(span, None, Problem::Syntax(Box::new(e))),
        None => loc.whole(Problem::Syntax(Box::new(e))),
    })?;
    let identity = identity(&config, &loc);
    let per_caller = per_caller(&config, &loc)?;

    if config.role.is_empty() {
        return Err(loc.whole(Problem::NoRole));
    }
    let mut roles = Vec::new();
    let mut names = BTreeSet::new();
    for spanned in &config.role {
        let role = spanned.get_ref();
        let name = role.name.get_ref().clone();
        if !valid_role_name(&name) {
            return Err(loc.err(role.name.span(), None, Problem::RoleName(name)));
        }
        if !names.insert(name.clone()) {
            return Err(loc.err(role.name.span(), None, Problem::DuplicateRole(name)));
        }
        let exchange = match role.exchange.as_ref().map(|e| e.get_ref().as_str()) {
            None | Some(ROLES_ANYWHERE) => {
                roles_anywhere_exchange(role, spanned.span(), &config, &name, &loc, clock)?
            }
            Some(WEB_IDENTITY) => web_identity_exchange(
                role,
                spanned.span(),
                &config,
                &name,
                &identity,
                per_caller.is_some(),
                &loc,
                clock,
            )?,
            Some(other) => {
                let key = Some(format!("role {name:?} exchange"));
                let span = role.exchange.as_ref().map_or(spanned.span(), |e| e.span());
                return Err(loc.err(span, key, Problem::UnknownExchange(other.to_owned())));
            }
        };
        if let Some(id) = role.spiffe_id.as_ref().filter(|id| id.get_ref().is_empty()) {
            // An empty selector matches no SVID: the role would never get credentials.
            return Err(loc.err(id.span(), None, Problem::EmptySpiffeId));
        }
        let bound_to = match (&per_caller, &role.spiffe_id) {
            (None, _) => None,
            (Some(_), None) => {
                let key = Some(format!("role {name:?} spiffe_id"));
                return Err(loc.err(role.name.span(), key, Problem::SpiffeIdRequired));
            }
            (Some(_), Some(id)) => Some(
                SpiffeIdPattern::parse(id.get_ref())
                    .map_err(|e| loc.err(id.span(), Some(format!("role {name:?} spiffe_id")), e))?,
            ),
        };
        roles.push(RolePlan {
            name,
            spiffe_id: value(role.spiffe_id.as_ref()),
            bound_to,
            exchange,
        });
    }
    let servers = servers(&config, &names, &roles, &loc)?;
    let min_remaining = match &config.min_remaining_seconds {
        None => DEFAULT_MIN_REMAINING,
        Some(s) => super::min_remaining(*s.get_ref())
            .map_err(|p| loc.err(s.span(), Some("min_remaining_seconds".into()), p))?,
    };
    if servers.is_empty() {
        return Err(loc.whole(Problem::NoServerKey));
    }
    if let (Some(_), Some(key), None) = (
        &per_caller,
        &config.spire_admin_socket,
        &servers.agent_socket,
    ) {
        let at = Some("spire_admin_socket".into());
        return Err(loc.err(key.span(), at, Problem::PerCallerWithoutSocket));
    }
    // Per-caller mode needs the agent's own identity only for the host-level channels.
    let identity = if per_caller.is_some() && !servers.has_host_channels() {
        None
    } else {
        Some(identity?)
    };
    Ok(AgentPlan {
        identity,
        roles,
        servers,
        min_remaining,
        per_caller,
    })
}

/// `exchange = "roles-anywhere"` (the default).
const ROLES_ANYWHERE: &str = "roles-anywhere";
/// `exchange = "web-identity"`: STS AssumeRoleWithWebIdentity with a JWT-SVID.
const WEB_IDENTITY: &str = "web-identity";

/// A Roles Anywhere role's exchange, validated.
fn roles_anywhere_exchange(
    role: &RoleToml,
    role_span: std::ops::Range<usize>,
    config: &FileConfig,
    name: &str,
    loc: &Locator<'_>,
    clock: &Arc<dyn Clock>,
) -> Result<RoleExchange, PlanError> {
    if let Some(audience) = &role.audience {
        let key = Some(format!("role {name:?} audience"));
        return Err(loc.err(audience.span(), key, Problem::OnlyForWebIdentity));
    }
    let required = |v: &Option<Spanned<String>>, key: &str| {
        v.as_ref().map(|v| v.get_ref().clone()).ok_or_else(|| {
            loc.err(
                role_span.clone(),
                Some(format!("role {name:?} {key}")),
                Problem::RequiredKey,
            )
        })
    };
    let spec = ExchangeSpec {
        trust_anchor_arn: required(&role.trust_anchor_arn, "trust_anchor_arn")?,
        profile_arn: required(&role.profile_arn, "profile_arn")?,
        role_arn: role.role_arn.get_ref().clone(),
        region: value(role.region.as_ref().or(config.region.as_ref())),
        endpoint: value(role.endpoint.as_ref().or(config.endpoint.as_ref())),
        ca_bundle: value(config.ca_bundle.as_ref()).map(PathBuf::from),
        session_duration: role
            .session_duration
            .as_ref()
            .map_or(DEFAULT_SESSION_DURATION, |s| *s.get_ref()),
        role_session_name: value(role.role_session_name.as_ref()),
        timeout: config
            .timeout
            .as_ref()
            .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(*s.get_ref())),
        // The endpoint variant comes from the agent's environment, as for the flags.
        endpoint_options: super::endpoint_options(false)?,
    };
    let exchange = Exchange::new(&spec, Arc::clone(clock)).map_err(|e| {
        let (key, span) = blame(e.field(), role, config, role_span);
        loc.err(span, Some(format!("role {name:?} {key}")), e)
    })?;
    Ok(exchange.into())
}

/// A web-identity role's exchange, validated: its JWT-SVIDs come from the agent's Workload
/// API, so the identity must be the Workload API, and per-caller mode (callers' SVIDs from
/// the Delegated Identity API) cannot serve it.
#[allow(clippy::too_many_arguments)]
fn web_identity_exchange(
    role: &RoleToml,
    role_span: std::ops::Range<usize>,
    config: &FileConfig,
    name: &str,
    identity: &Result<IdentitySpec, PlanError>,
    per_caller: bool,
    loc: &Locator<'_>,
    clock: &Arc<dyn Clock>,
) -> Result<RoleExchange, PlanError> {
    let key = |k: &str| Some(format!("role {name:?} {k}"));
    let exchange_span = role
        .exchange
        .as_ref()
        .map_or(role_span.clone(), |e| e.span());
    if per_caller {
        return Err(loc.err(
            exchange_span,
            key("exchange"),
            Problem::WebIdentityPerCaller,
        ));
    }
    for (k, v) in [
        ("trust_anchor_arn", &role.trust_anchor_arn),
        ("profile_arn", &role.profile_arn),
    ] {
        if let Some(v) = v {
            return Err(loc.err(v.span(), key(k), Problem::NotForWebIdentity));
        }
    }
    let (workload_api, workload_api_timeout) = match identity {
        Ok(IdentitySpec::WorkloadApi {
            address, timeout, ..
        }) => (address.clone(), *timeout),
        Ok(IdentitySpec::Files { .. } | IdentitySpec::Pkcs11(_)) => {
            return Err(loc.err(
                exchange_span,
                key("exchange"),
                Problem::WebIdentityNeedsWorkloadApi,
            ))
        }
        Err(_) => return Err(loc.whole(Problem::NoWorkloadApiKey)),
    };
    let audience = role
        .audience
        .as_ref()
        .ok_or_else(|| loc.err(role_span.clone(), key("audience"), Problem::RequiredKey))?;
    let spec = WebIdentitySpec {
        role_arn: role.role_arn.get_ref().clone(),
        audience: audience.get_ref().clone(),
        region: value(role.region.as_ref().or(config.region.as_ref())),
        endpoint: value(role.endpoint.as_ref().or(config.sts_endpoint.as_ref())),
        ca_bundle: value(config.ca_bundle.as_ref()).map(PathBuf::from),
        session_duration: role
            .session_duration
            .as_ref()
            .map_or(DEFAULT_SESSION_DURATION, |s| *s.get_ref()),
        role_session_name: value(role.role_session_name.as_ref()),
        timeout: config
            .timeout
            .as_ref()
            .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(*s.get_ref())),
        workload_api,
        workload_api_timeout,
    };
    let exchange = WebIdentityExchange::new(&spec, Arc::clone(clock)).map_err(|e| {
        use WebIdentityField::*;
        let opt = |s: Option<&Spanned<String>>| s.map(|s| s.span());
        let (k, span) = match e.field() {
            Some(RoleArn) => ("role_arn", Some(role.role_arn.span())),
            Some(Audience) => ("audience", Some(audience.span())),
            Some(Region) => (
                "region",
                opt(role.region.as_ref()).or(opt(config.region.as_ref())),
            ),
            Some(Endpoint) => (
                "endpoint",
                opt(role.endpoint.as_ref()).or(opt(config.sts_endpoint.as_ref())),
            ),
            Some(CaBundle) => ("ca_bundle", opt(config.ca_bundle.as_ref())),
            Some(SessionDuration) => (
                "session_duration",
                role.session_duration.as_ref().map(|s| s.span()),
            ),
            Some(RoleSessionName) => ("role_session_name", opt(role.role_session_name.as_ref())),
            None => ("", None),
        };
        loc.err(span.unwrap_or(role_span), key(k), e)
    })?;
    Ok(exchange.into())
}

/// `spire_admin_socket` and `per_caller_idle_seconds`: per-caller mode.
fn per_caller(config: &FileConfig, loc: &Locator<'_>) -> Result<Option<PerCallerPlan>, PlanError> {
    let Some(socket) = &config.spire_admin_socket else {
        if let Some(idle) = &config.per_caller_idle_seconds {
            let at = Some("per_caller_idle_seconds".into());
            return Err(loc.err(idle.span(), at, Problem::PerCallerIdleWithoutSocket));
        }
        return Ok(None);
    };
    let admin_socket = normalize_address(socket.get_ref());
    delegated::check_address(&admin_socket)
        .map_err(|e| loc.err(socket.span(), Some("spire_admin_socket".into()), e))?;
    let idle = match &config.per_caller_idle_seconds {
        None => DEFAULT_IDLE,
        Some(s) if *s.get_ref() == 0 => {
            let at = Some("per_caller_idle_seconds".into());
            return Err(loc.err(s.span(), at, Problem::Zero(0)));
        }
        Some(s) => Duration::from_secs(*s.get_ref()),
    };
    Ok(Some(PerCallerPlan {
        admin_socket,
        idle,
        attest_timeout: DEFAULT_ATTEST_TIMEOUT,
    }))
}

fn value(s: Option<&Spanned<String>>) -> Option<String> {
    s.map(|s| s.get_ref().clone())
}

/// The identity keys: certificate files, else the Workload API (the key, else the
/// agent's `SPIFFE_ENDPOINT_SOCKET`).
fn identity(config: &FileConfig, loc: &Locator<'_>) -> Result<IdentitySpec, PlanError> {
    let span = |s: Option<&Spanned<String>>| s.map(|s| s.span()).unwrap_or(0..0);
    if let Some(spec) = pkcs11_identity(config, loc)? {
        if let Some(socket) = &config.workload_api_socket {
            return Err(loc.err(socket.span(), None, Problem::TwoIdentitySources));
        }
        return Ok(IdentitySpec::Pkcs11(spec));
    }
    match (&config.certificate, &config.private_key) {
        // A certificate alone holds the key too (PKCS#12, or PEM with both), as the flags.
        (Some(certificate), private_key) => {
            if let Some(socket) = &config.workload_api_socket {
                return Err(loc.err(socket.span(), None, Problem::TwoIdentitySources));
            }
            Ok(IdentitySpec::Files {
                certificate: PathBuf::from(certificate.get_ref()),
                private_key: value(private_key.as_ref()).map(PathBuf::from),
                intermediates: value(config.intermediates.as_ref()).map(PathBuf::from),
                password: value(config.pkcs8_password.as_ref()).map(KeyPassword::new),
            })
        }
        (None, Some(_)) => Err(loc.err(
            span(config.private_key.as_ref()),
            None,
            Problem::CertificateWithoutKey,
        )),
        (None, None) => {
            let address = value(config.workload_api_socket.as_ref())
                .or_else(|| std::env::var("SPIFFE_ENDPOINT_SOCKET").ok())
                .filter(|a| !a.is_empty())
                .ok_or_else(|| loc.whole(Problem::NoWorkloadApiKey))?;
            Ok(IdentitySpec::WorkloadApi {
                address: normalize_address(&address),
                spiffe_id: None,
                timeout: config
                    .workload_api_timeout
                    .as_ref()
                    .map_or(DEFAULT_WORKLOAD_API_TIMEOUT, |s| {
                        Duration::from_secs(*s.get_ref())
                    }),
            })
        }
    }
}

/// The identity keys when `certificate` or `private_key` is a `pkcs11:` URI (with
/// `pkcs11_lib` and `reuse_pin`, as the flags); `None` when neither is.
fn pkcs11_identity(
    config: &FileConfig,
    loc: &Locator<'_>,
) -> Result<Option<Pkcs11Spec>, PlanError> {
    let as_uri = |value: Option<&Spanned<String>>| match value {
        Some(v) if Pkcs11Uri::is_uri(v.get_ref()) => Pkcs11Uri::parse(v.get_ref())
            .map(Some)
            .map_err(|e| loc.err(v.span(), None, Problem::Pkcs11Uri(e))),
        _ => Ok(None),
    };
    let certificate_uri = as_uri(config.certificate.as_ref())?;
    let key_uri = as_uri(config.private_key.as_ref())?;
    if certificate_uri.is_none() && key_uri.is_none() {
        if let Some(lib) = &config.pkcs11_lib {
            return Err(loc.err(lib.span(), None, Problem::Pkcs11FlagWithoutUri));
        }
        if let Some(reuse) = config.reuse_pin.as_ref().filter(|r| *r.get_ref()) {
            return Err(loc.err(reuse.span(), None, Problem::Pkcs11FlagWithoutUri));
        }
        return Ok(None);
    }
    if let (Some(_), None, Some(key)) = (&certificate_uri, &key_uri, &config.private_key) {
        return Err(loc.err(key.span(), None, Problem::FileKeyForTokenCertificate));
    }
    let certificate = match (certificate_uri, &config.certificate) {
        (Some(uri), _) => Some(CertificateSource::Token(uri)),
        (None, Some(path)) => Some(CertificateSource::File(PathBuf::from(path.get_ref()))),
        (None, None) => None,
    };
    Ok(Some(Pkcs11Spec {
        library: value(config.pkcs11_lib.as_ref()).map(PathBuf::from),
        certificate,
        private_key: key_uri,
        intermediates: value(config.intermediates.as_ref()).map(PathBuf::from),
        reuse_pin: config.reuse_pin.as_ref().is_some_and(|r| *r.get_ref()),
    }))
}

/// The server sections.
fn servers(
    config: &FileConfig,
    names: &BTreeSet<String>,
    roles: &[RolePlan],
    loc: &Locator<'_>,
) -> Result<ServersSpec, PlanError> {
    let mut imds = Vec::new();
    if let Some(section) = &config.imds {
        let listen = match section.get_ref().listen.as_ref() {
            None => vec![(DEFAULT_IMDS_LISTEN.to_owned(), section.span())],
            Some(l) => match l.get_ref() {
                OneOrMany::One(a) => vec![(a.clone(), l.span())],
                OneOrMany::Many(v) => v.iter().map(|a| (a.clone(), l.span())).collect(),
            },
        };
        for (addr, span) in listen {
            imds.push(
                parse_listen(&addr).map_err(|p| loc.err(span, Some("imds.listen".into()), p))?,
            );
        }
    }
    let hop_limit = match config
        .imds
        .as_ref()
        .and_then(|s| s.get_ref().hop_limit.as_ref())
    {
        None => None,
        Some(h) if (1..=255).contains(h.get_ref()) => Some(*h.get_ref()),
        Some(h) => {
            return Err(loc.err(
                h.span(),
                Some("imds.hop_limit".into()),
                Problem::HopLimit(*h.get_ref()),
            ))
        }
    };
    let imds_roles = match config
        .imds
        .as_ref()
        .and_then(|s| s.get_ref().roles.as_ref())
    {
        // botocore reads the whole role listing as one name: list one role unless told.
        None => roles.first().map(|r| vec![r.name.clone()]),
        Some(r) => {
            let mut listed = BTreeSet::new();
            for name in r.get_ref() {
                if !listed.insert(name) {
                    return Err(loc.err(r.span(), None, Problem::ListedTwice(name.clone())));
                }
                if !names.contains(name) {
                    let problem = Problem::UnknownRole {
                        key: "imds.roles:",
                        name: name.clone(),
                    };
                    return Err(loc.err(r.span(), None, problem));
                }
            }
            Some(r.get_ref().clone())
        }
    };
    let container = match &config.container {
        None => None,
        Some(section) => {
            let c = section.get_ref();
            let (addr, span) = match &c.listen {
                Some(l) => (l.get_ref().clone(), l.span()),
                None => (DEFAULT_CONTAINER_LISTEN.to_owned(), section.span()),
            };
            let listen = parse_listen(&addr)
                .map_err(|p| loc.err(span, Some("container.listen".into()), p))?;
            Some(ContainerSpec {
                listen,
                token_file: value(c.token_file.as_ref())
                    .map(PathBuf::from)
                    .unwrap_or_else(runtime_dir::default_container_token_file),
            })
        }
    };
    let agent_socket = config.agent_socket.as_ref().map(|s| {
        value(s.get_ref().path.as_ref())
            .map(PathBuf::from)
            .unwrap_or_else(runtime_dir::default_agent_socket)
    });
    let mut credentials_files: Vec<CredentialsFileSpec> = Vec::new();
    let mut writers: Vec<(Option<PathBuf>, String, usize)> = Vec::new();
    for spanned in &config.credentials_file {
        let c = spanned.get_ref();
        if !names.contains(c.role.get_ref()) {
            let problem = Problem::UnknownRole {
                key: "credentials_file.role",
                name: c.role.get_ref().clone(),
            };
            return Err(loc.err(c.role.span(), None, problem));
        }
        let profile = value(c.profile.as_ref()).unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
        if let Err(e) = credentials_file::validate_profile(&profile) {
            let span = c
                .profile
                .as_ref()
                .map(|s| s.span())
                .unwrap_or(spanned.span());
            return Err(loc.err(span, Some("credentials_file.profile".into()), e));
        }
        let path = value(c.path.as_ref()).map(PathBuf::from);
        let line = loc.line(spanned.span());
        if let Some((_, _, first)) = writers
            .iter()
            .find(|(p, pr, _)| *p == path && *pr == profile)
        {
            let problem = Problem::TwoWriters {
                profile,
                first_line: *first,
            };
            return Err(loc.err(spanned.span(), None, problem));
        }
        writers.push((path.clone(), profile.clone(), line));
        credentials_files.push(CredentialsFileSpec {
            role: c.role.get_ref().clone(),
            profile,
            path,
        });
    }
    let mut allowed_hosts = Vec::new();
    if let Some(hosts) = &config.allowed_hosts {
        for name in hosts.get_ref() {
            super::host_name(name)
                .map_err(|p| loc.err(hosts.span(), Some("allowed_hosts".into()), p))?;
            allowed_hosts.push(name.clone());
        }
    }
    let admin = match &config.admin {
        None => None,
        Some(section) => {
            let a = section.get_ref();
            let (addr, span) = match &a.listen {
                Some(l) => (l.get_ref().clone(), l.span()),
                None => (DEFAULT_ADMIN_LISTEN.to_owned(), section.span()),
            };
            Some(
                super::admin_listen(&addr, a.allow_remote.unwrap_or(false))
                    .map_err(|p| loc.err(span, Some("admin.listen".into()), p))?,
            )
        }
    };
    Ok(ServersSpec {
        admin,
        allowed_hosts,
        imds,
        imds_roles,
        hop_limit,
        container,
        agent_socket,
        credentials_files,
    })
}

/// The key (and where it is) of a role's exchange setting.
fn blame(
    field: Option<ExchangeField>,
    role: &RoleToml,
    config: &FileConfig,
    role_span: std::ops::Range<usize>,
) -> (&'static str, std::ops::Range<usize>) {
    use ExchangeField::*;
    let opt = |s: Option<&Spanned<String>>| s.map(|s| s.span());
    match field {
        Some(TrustAnchorArn) => (
            "trust_anchor_arn",
            opt(role.trust_anchor_arn.as_ref()).unwrap_or(role_span),
        ),
        Some(ProfileArn) => (
            "profile_arn",
            opt(role.profile_arn.as_ref()).unwrap_or(role_span),
        ),
        Some(RoleArn) => ("role_arn", role.role_arn.span()),
        Some(SessionDuration) => (
            "session_duration",
            role.session_duration
                .as_ref()
                .map(|s| s.span())
                .unwrap_or(role_span),
        ),
        Some(Region) => (
            "region",
            opt(role.region.as_ref())
                .or(opt(config.region.as_ref()))
                .unwrap_or(role_span),
        ),
        Some(Endpoint) => (
            "endpoint",
            opt(role.endpoint.as_ref())
                .or(opt(config.endpoint.as_ref()))
                .unwrap_or(role_span),
        ),
        Some(CaBundle) => (
            "ca_bundle",
            opt(config.ca_bundle.as_ref()).unwrap_or(role_span),
        ),
        Some(RoleSessionName) => (
            "role_session_name",
            opt(role.role_session_name.as_ref()).unwrap_or(role_span),
        ),
        None => ("", role_span),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TA: &str = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001";
    const PR: &str =
        "arn:aws:rolesanywhere:us-east-1:123456789012:profile/8a9f3d2e-0000-4000-8000-000000000002";

    fn role(name: &str, role_arn: &str) -> String {
        format!("[[role]]\nname = \"{name}\"\ntrust_anchor_arn = \"{TA}\"\nprofile_arn = \"{PR}\"\nrole_arn = \"{role_arn}\"\n")
    }

    fn parse_text(text: &str) -> Result<AgentPlan, PlanError> {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::TokioClock::new());
        parse(Path::new("agent.toml"), text, &clock)
    }

    #[test]
    fn a_full_config_parses() {
        let text = format!(
            "workload_api_socket = \"unix:///tmp/agent.sock\"\nmin_remaining_seconds = 120\n{}{}spiffe_id = \"spiffe://example.org/service/reviews\"\n[imds]\nlisten = [\"127.0.0.1:9911\", \"[::1]:9911\"]\n[container]\n[agent_socket]\npath = \"/tmp/a.sock\"\n[[credentials_file]]\nrole = \"orders\"\nprofile = \"orders\"\n",
            role("orders", "arn:aws:iam::123456789012:role/orders"),
            role("reviews", "arn:aws:iam::123456789012:role/reviews"),
        );
        let plan = parse_text(&text).unwrap();
        assert_eq!(plan.roles.len(), 2);
        assert_eq!(
            plan.roles[1].spiffe_id.as_deref(),
            Some("spiffe://example.org/service/reviews")
        );
        assert_eq!(plan.servers.imds.len(), 2);
        assert_eq!(plan.servers.container.unwrap().listen.port(), 9912);
        assert_eq!(
            plan.servers.agent_socket.unwrap(),
            PathBuf::from("/tmp/a.sock")
        );
        assert_eq!(plan.min_remaining, Duration::from_secs(120));
    }

    #[test]
    fn pkcs11_uris_in_the_identity_keys() {
        let roles = role("orders", "arn:aws:iam::123456789012:role/orders");
        let text = format!(
            "certificate = \"pkcs11:token=ra;object=orders?pin-source=/run/pin\"\npkcs11_lib = \"/usr/lib/softhsm/libsofthsm2.so\"\nreuse_pin = true\n[agent_socket]\n{roles}"
        );
        let plan = parse_text(&text).unwrap();
        let Some(IdentitySpec::Pkcs11(spec)) = plan.identity else {
            panic!("not a PKCS#11 identity: {:?}", plan.identity);
        };
        assert!(spec.reuse_pin && spec.private_key.is_none());
        assert!(matches!(
            spec.certificate,
            Some(CertificateSource::Token(_))
        ));
        assert_eq!(
            spec.library.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        for (keys, expected) in [
            (
                "certificate = \"pkcs11:object=a;colour=b\"\n",
                "agent.toml:1: pkcs11:object=a;colour=b: \"colour\" is not a path attribute",
            ),
            (
                "certificate = \"c.pem\"\nprivate_key = \"k.pem\"\npkcs11_lib = \"x.so\"\n",
                "agent.toml:3: only applies to PKCS#11 keys",
            ),
        ] {
            let e = parse_text(&format!("{keys}[agent_socket]\n{roles}"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(expected), "{e}");
        }
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let text = format!(
            "workload_api_socket = \"unix:///tmp/agent.sock\"\n[imds]\n{}",
            role("orders", "arn:aws:iam::123456789012:user/orders")
        );
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("agent.toml:7: role \"orders\" role_arn:"),
            "{e}"
        );

        let text = format!(
            "workload_api_socket = \"unix:///tmp/a.sock\"\n[imds]\n{}session_duration = 60\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("agent.toml:8: role \"orders\" session_duration:"),
            "{e}"
        );

        let e = parse_text("workload_api_socket = \"unix:///tmp/a.sock\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agent.toml:2: ") && e.contains("bogus"),
            "{e}"
        );

        let e = parse_text(
            "workload_api_socket = \"unix:///tmp/a.sock\"\n[imds]\nlisten = \"localhost:1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no [[role]]"), "{e}");

        let text = format!(
            "workload_api_socket = \"unix:///tmp/a.sock\"\n[imds]\nlisten = \"localhost:1\"\n{}",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(e.starts_with("agent.toml:3: imds.listen"), "{e}");

        let text = format!("workload_api_socket = \"unix:///tmp/a.sock\"\n{}[[credentials_file]]\nrole = \"nope\"\n", role("orders", "arn:aws:iam::123456789012:role/orders"));
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(
            e.contains("agent.toml:8: credentials_file.role \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn a_config_that_is_not_a_small_regular_file_is_refused() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::TokioClock::new());
        let e = load(Path::new("/dev/zero"), &clock)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        let e = load(&big, &clock).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn a_role_listed_twice_or_two_writers_of_one_profile_are_refused() {
        let text = format!(
            "workload_api_socket = \"unix:///tmp/a.sock\"\n{}[imds]\nroles = [\"orders\", \"orders\"]\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("agent.toml:8: imds.roles: \"orders\" is listed twice"),
            "{e}"
        );
        let text = format!(
            "workload_api_socket = \"unix:///tmp/a.sock\"\n{}[[credentials_file]]\nrole = \"orders\"\n[[credentials_file]]\nrole = \"orders\"\nprofile = \"default\"\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(e.starts_with("agent.toml:9: "), "{e}");
        assert!(e.contains("line 7"), "{e}");
    }

    #[test]
    fn per_caller_mode_binds_every_role_to_spiffe_ids() {
        let admin = "spire_admin_socket = \"unix:///run/spire/admin.sock\"\n";
        let text = format!(
            "{admin}per_caller_idle_seconds = 60\n{}spiffe_id = \"spiffe://example.org/service/*\"\n[agent_socket]\npath = \"/tmp/a.sock\"\n",
            role("services", "arn:aws:iam::123456789012:role/services")
        );
        let plan = parse_text(&text).unwrap();
        let pc = plan.per_caller.unwrap();
        assert_eq!(pc.admin_socket, "unix:///run/spire/admin.sock");
        assert_eq!(pc.idle, Duration::from_secs(60));
        assert_eq!(
            plan.roles[0].bound_to,
            Some(SpiffeIdPattern::Below(
                "spiffe://example.org/service/".into()
            ))
        );
        // No host-level channel: no Workload API needed for the agent itself.
        assert!(plan.identity.is_none());

        // A role without spiffe_id: the file, the role's line and the key.
        let text = format!(
            "{admin}{}[agent_socket]\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "agent.toml:3: role \"orders\" spiffe_id: is required in per-caller mode"
            ),
            "{e}"
        );
        // A bad pattern.
        let text = format!(
            "{admin}{}spiffe_id = \"spiffe://example.org/*/x\"\n[agent_socket]\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("agent.toml:7: role \"orders\" spiffe_id: \"spiffe://example.org/*/x\" is not a SPIFFE ID or pattern"),
            "{e}"
        );
        // Per-caller mode serves on the agent socket only.
        let text = format!(
            "{admin}workload_api_socket = \"unix:///tmp/w.sock\"\n{}spiffe_id = \"spiffe://example.org/x\"\n[imds]\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("agent.toml:1: spire_admin_socket: needs an [agent_socket]"),
            "{e}"
        );
        // The idle time only applies to per-caller mode, and must be positive.
        let text = format!(
            "workload_api_socket = \"unix:///tmp/w.sock\"\nper_caller_idle_seconds = 5\n{}[imds]\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("agent.toml:2: per_caller_idle_seconds: only applies"),
            "{e}"
        );
        let text = format!(
            "{admin}per_caller_idle_seconds = 0\n{}spiffe_id = \"spiffe://example.org/x\"\n[agent_socket]\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("agent.toml:2: per_caller_idle_seconds: 0 must be at least 1"),
            "{e}"
        );
        // Host-level channels in per-caller mode need the agent's own identity.
        let text = format!(
            "{admin}{}spiffe_id = \"spiffe://example.org/x\"\n[agent_socket]\n[imds]\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        if std::env::var_os("SPIFFE_ENDPOINT_SOCKET").is_none() {
            let e = parse_text(&text).unwrap_err().to_string();
            assert!(e.contains("no SPIFFE Workload API address"), "{e}");
        }
    }

    #[test]
    fn allowed_hosts_are_checked_and_reach_the_servers() {
        let text = format!(
            "workload_api_socket = \"unix:///tmp/a.sock\"\nallowed_hosts = [\"agent.internal\"]\n{}[imds]\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let plan = parse_text(&text).unwrap();
        assert_eq!(plan.servers.allowed_hosts, ["agent.internal"]);
        let text = text.replace("agent.internal", "evil/path");
        let e = parse_text(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("agent.toml:2: allowed_hosts: \"evil/path\" is not a host name"),
            "{e}"
        );
    }

    #[test]
    fn the_admin_listener_is_loopback_unless_allowed() {
        let base = format!(
            "workload_api_socket = \"unix:///tmp/a.sock\"\n{}[imds]\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        let plan = parse_text(&format!("{base}[admin]\n")).unwrap();
        assert_eq!(
            plan.servers.admin.unwrap().listen,
            "127.0.0.1:9913".parse().unwrap()
        );
        let e = parse_text(&format!("{base}[admin]\nlisten = \"0.0.0.0:9913\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agent.toml:9: admin.listen: 0.0.0.0:9913 is not a loopback address")
                && e.contains("allow_remote = true"),
            "{e}"
        );
        let plan = parse_text(&format!(
            "{base}[admin]\nlisten = \"0.0.0.0:9913\"\nallow_remote = true\n"
        ))
        .unwrap();
        assert!(plan.servers.admin.unwrap().listen.ip().is_unspecified());
        // An admin listener alone serves no credentials.
        let text = format!(
            "workload_api_socket = \"unix:///tmp/a.sock\"\n{}[admin]\n",
            role("orders", "arn:aws:iam::123456789012:role/orders")
        );
        assert!(parse_text(&text)
            .unwrap_err()
            .to_string()
            .contains("no server is configured"));
    }

    #[test]
    fn duplicate_roles_and_missing_servers_are_refused() {
        let text = format!(
            "workload_api_socket = \"unix:///tmp/a.sock\"\n[imds]\n{}{}",
            role("a", "arn:aws:iam::123456789012:role/a"),
            role("a", "arn:aws:iam::123456789012:role/b")
        );
        assert!(parse_text(&text)
            .unwrap_err()
            .to_string()
            .contains("used twice"));
        let text = format!(
            "workload_api_socket = \"unix:///tmp/a.sock\"\n{}",
            role("a", "arn:aws:iam::123456789012:role/a")
        );
        assert!(parse_text(&text)
            .unwrap_err()
            .to_string()
            .contains("no server is configured"));
    }

    #[test]
    fn certificate_files_in_the_file() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::TokioClock::new());
        let role = "[[role]]\nname = \"orders\"\ntrust_anchor_arn = \"arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001\"\nprofile_arn = \"arn:aws:rolesanywhere:us-east-1:123456789012:profile/8a9f3d2e-0000-4000-8000-000000000002\"\nrole_arn = \"arn:aws:iam::123456789012:role/orders\"\n[agent_socket]\npath = \"/tmp/a.sock\"\n";
        let path = Path::new("agent.toml");
        let text = format!("certificate = \"/etc/pki/agent.p12\"\npkcs8_password = \"pw\"\n{role}");
        let plan = parse(path, &text, &clock).unwrap();
        match plan.identity {
            Some(IdentitySpec::Files {
                certificate,
                private_key,
                password,
                ..
            }) => {
                assert_eq!(certificate, PathBuf::from("/etc/pki/agent.p12"));
                assert_eq!(private_key, None, "the PKCS#12 file holds the key");
                assert_eq!(password, Some(KeyPassword::new("pw".into())));
            }
            other => panic!("{other:?}"),
        }
        let text = format!("private_key = \"/etc/pki/agent.key\"\n{role}");
        let e = parse(path, &text, &clock).unwrap_err().to_string();
        assert!(
            e.starts_with("agent.toml:1: private_key needs certificate"),
            "{e}"
        );
    }
}
