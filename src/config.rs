//! The agent's configuration: a TOML file with any number of roles, or one role given by
//! flags. Everything is validated before anything starts; a mistake is reported with the file,
//! the line and the key (`agent.toml:12: role "orders" role_arn: …`).
//!
//! ```toml
//! workload_api_socket = "unix:///run/spire/agent/public/api.sock"  # else SPIFFE_ENDPOINT_SOCKET
//! # endpoint = "https://rolesanywhere.us-east-1.amazonaws.com"
//! # ca_bundle = "/etc/ssl/private-ca.pem"
//! # min_remaining_seconds = 300   # never hand out credentials with less left
//!
//! [[role]]
//! name = "orders"                 # what clients ask for
//! trust_anchor_arn = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/…"
//! profile_arn = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/…"
//! role_arn = "arn:aws:iam::123456789012:role/orders"
//! # spiffe_id = "spiffe://example.org/service/orders"   # which SVID; default: the first
//! # region, session_duration, role_session_name, endpoint: as the flags
//!
//! [imds]                          # IMDSv2-style endpoint
//! listen = ["127.0.0.1:9911"]
//! # roles = ["orders"]            # the role it lists and serves (default: the first role)
//! [container]                     # container-credentials endpoint
//! listen = "127.0.0.1:9912"
//! token_file = "/run/spiffe-aws-agent/container-token"
//! [agent_socket]                  # fast path for credential-process --agent
//! path = "/run/spiffe-aws-agent/agent.sock"
//! [[credentials_file]]            # keep a profile in ~/.aws/credentials current
//! role = "orders"
//! profile = "default"
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::cli::{IdentityArgs, SessionArgs};
use crate::serve::process::{Exchange, IdentityPlan, ProcessError};

/// Shown by `run --help`.
pub const RUN_EXAMPLES: &str = "\
Examples:

  One role from flags, every server on:
    spiffe-aws-agent run --trust-anchor-arn ARN --profile-arn ARN --role-arn ARN \\
        --imds --container --agent-socket --credentials-profile default

  Then, in clients:
    AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9911/
    AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9912/v1/credentials/<role>
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/run/spiffe-aws-agent/container-token
    credential_process = spiffe-aws-agent credential-process --agent /run/spiffe-aws-agent/agent.sock --role <role>

  Several roles: a TOML file (run --config agent.toml):
    workload_api_socket = \"unix:///run/spire/agent/public/api.sock\"
    [[role]]
    name = \"orders\"
    trust_anchor_arn = \"arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/<uuid>\"
    profile_arn = \"arn:aws:rolesanywhere:us-east-1:123456789012:profile/<uuid>\"
    role_arn = \"arn:aws:iam::123456789012:role/orders\"
    spiffe_id = \"spiffe://example.org/service/orders\"   # optional: which SVID
    [imds]
    listen = [\"127.0.0.1:9911\"]
    [container]
    token_file = \"/run/spiffe-aws-agent/container-token\"
    [agent_socket]
    path = \"/run/spiffe-aws-agent/agent.sock\"
    [[credentials_file]]
    role = \"orders\"
    profile = \"default\"";

/// Default IMDS listen address, the same as `aws_signing_helper serve`.
pub const DEFAULT_IMDS_LISTEN: &str = "127.0.0.1:9911";
/// Default container-credentials listen address.
pub const DEFAULT_CONTAINER_LISTEN: &str = "127.0.0.1:9912";
/// Default agent socket path.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/spiffe-aws-agent/agent.sock";
/// Default container token file.
pub const DEFAULT_CONTAINER_TOKEN_FILE: &str = "/run/spiffe-aws-agent/container-token";
/// Default minimum lifetime of handed-out credentials.
pub const DEFAULT_MIN_REMAINING: Duration = Duration::from_secs(300);

/// A configuration mistake, located.
#[derive(Debug, thiserror::Error)]
#[error("{location}{message}")]
pub struct ConfigError {
    /// `file:line: ` or empty for flags.
    pub location: String,
    pub message: String,
}

impl ConfigError {
    /// A mistake in a command-line flag (no file to point at).
    pub fn flag(message: impl Into<String>) -> Self {
        ConfigError {
            location: String::new(),
            message: message.into(),
        }
    }
}

/// The longest `min_remaining` that makes sense, exclusive: the shortest session Roles
/// Anywhere issues. Shared by the file key and the flag.
pub fn check_min_remaining(seconds: u64) -> Result<Duration, &'static str> {
    if seconds < 900 {
        Ok(Duration::from_secs(seconds))
    } else {
        Err("must be below 900 (the shortest session Roles Anywhere issues)")
    }
}

/// One role, validated.
#[derive(Debug)]
pub struct RolePlan {
    pub name: String,
    pub spiffe_id: Option<String>,
    pub role_arn: String,
    pub exchange: Exchange,
}

/// A credentials-file writer.
#[derive(Debug, Clone)]
pub struct CredentialsFilePlan {
    pub role: String,
    pub profile: String,
    /// `None`: `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
    pub path: Option<PathBuf>,
}

/// The container endpoint.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
}

/// Everything `run` needs, validated.
#[derive(Debug)]
pub struct AgentPlan {
    pub identity: IdentityPlan,
    pub roles: Vec<RolePlan>,
    pub imds: Vec<SocketAddr>,
    pub container: Option<ContainerPlan>,
    pub agent_socket: Option<PathBuf>,
    pub credentials_files: Vec<CredentialsFilePlan>,
    pub min_remaining: Duration,
    /// IP TTL of the IMDS responses (`serve --hop-limit`); `None` leaves the system default.
    pub hop_limit: Option<u32>,
    /// The roles the IMDS endpoint lists and serves; `None`: the first role. (SDKs read the
    /// listing as one instance-profile name, so listing several breaks them.)
    pub imds_roles: Option<Vec<String>>,
}

impl AgentPlan {
    /// Whether any way of handing out credentials is configured (an agent without one is a
    /// mistake, not a daemon).
    pub fn has_server(&self) -> bool {
        !self.imds.is_empty()
            || self.container.is_some()
            || self.agent_socket.is_some()
            || !self.credentials_files.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workload_api_socket: Option<Spanned<String>>,
    workload_api_timeout: Option<Spanned<u64>>,
    certificate: Option<Spanned<String>>,
    private_key: Option<Spanned<String>>,
    intermediates: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    ca_bundle: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    timeout: Option<Spanned<u64>>,
    min_remaining_seconds: Option<Spanned<u64>>,
    #[serde(default)]
    role: Vec<Spanned<RoleToml>>,
    imds: Option<Spanned<ImdsToml>>,
    container: Option<Spanned<ContainerToml>>,
    agent_socket: Option<Spanned<AgentSocketToml>>,
    #[serde(default)]
    credentials_file: Vec<Spanned<CredentialsFileToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleToml {
    name: Spanned<String>,
    trust_anchor_arn: Spanned<String>,
    profile_arn: Spanned<String>,
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

/// Turns byte offsets into `file:line: ` prefixes.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, span: std::ops::Range<usize>) -> String {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        format!("{}:{line}: ", self.file.display())
    }

    fn err(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            location: self.at(span),
            message: message.into(),
        }
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<AgentPlan, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::flag(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    parse(path, &text)
}

/// Validates a config text (`path` is for messages).
pub fn parse(path: &Path, text: &str) -> Result<AgentPlan, ConfigError> {
    let loc = Locator { file: path, text };
    let config: FileConfig = toml::from_str(text).map_err(|e| {
        let location = e
            .span()
            .map(|s| loc.at(s))
            .unwrap_or_else(|| format!("{}: ", path.display()));
        ConfigError {
            location,
            message: e.message().trim().replace('\n', " "),
        }
    })?;

    let identity_args = IdentityArgs {
        workload_api_socket: config
            .workload_api_socket
            .as_ref()
            .map(|s| s.get_ref().clone()),
        spiffe_id: None,
        workload_api_timeout: config
            .workload_api_timeout
            .as_ref()
            .map(|s| *s.get_ref())
            .unwrap_or(10),
        certificate: config
            .certificate
            .as_ref()
            .map(|s| PathBuf::from(s.get_ref())),
        private_key: config
            .private_key
            .as_ref()
            .map(|s| PathBuf::from(s.get_ref())),
        intermediates: config
            .intermediates
            .as_ref()
            .map(|s| PathBuf::from(s.get_ref())),
    };
    if config.certificate.is_some() != config.private_key.is_some() {
        let span = config
            .certificate
            .as_ref()
            .or(config.private_key.as_ref())
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(loc.err(
            span,
            "certificate and private_key go together: set both, or neither to use the Workload API",
        ));
    }
    if config.certificate.is_some() && config.workload_api_socket.is_some() {
        let span = config
            .workload_api_socket
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(loc.err(
            span,
            "workload_api_socket and certificate exclude each other: pick one identity source",
        ));
    }
    let identity = IdentityPlan::new(&identity_args).map_err(|e| {
        let span = config
            .workload_api_socket
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(0..0);
        loc.err(span, e.to_string())
    })?;

    if config.role.is_empty() {
        return Err(ConfigError {
            location: format!("{}: ", path.display()),
            message: "no [[role]] is configured: add at least one with name, trust_anchor_arn, profile_arn and role_arn".into(),
        });
    }
    let mut roles = Vec::new();
    let mut names = BTreeSet::new();
    for spanned in &config.role {
        let role = spanned.get_ref();
        let name = role.name.get_ref().clone();
        if !valid_role_name(&name) {
            return Err(loc.err(
                role.name.span(),
                format!("role name {name:?} must be 1..64 of letters, digits and +=,.@_-"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(loc.err(
                role.name.span(),
                format!("role name {name:?} is used twice"),
            ));
        }
        let session = SessionArgs {
            trust_anchor_arn: Some(role.trust_anchor_arn.get_ref().clone()),
            profile_arn: Some(role.profile_arn.get_ref().clone()),
            role_arn: Some(role.role_arn.get_ref().clone()),
            region: role
                .region
                .as_ref()
                .or(config.region.as_ref())
                .map(|s| s.get_ref().clone()),
            endpoint: role
                .endpoint
                .as_ref()
                .or(config.endpoint.as_ref())
                .map(|s| s.get_ref().clone()),
            ca_bundle: config
                .ca_bundle
                .as_ref()
                .map(|s| PathBuf::from(s.get_ref())),
            session_duration: role
                .session_duration
                .as_ref()
                .map(|s| *s.get_ref())
                .unwrap_or(3600),
            role_session_name: role.role_session_name.as_ref().map(|s| s.get_ref().clone()),
            timeout: config.timeout.as_ref().map(|s| *s.get_ref()).unwrap_or(15),
        };
        let exchange = Exchange::new(&session).map_err(|e| {
            let (key, span) = blame(&e, role, &config, spanned.span());
            loc.err(
                span,
                format!("role {name:?} {key}: {}", strip_flag_prefix(&e)),
            )
        })?;
        if let Some(id) = role.spiffe_id.as_ref().filter(|id| id.get_ref().is_empty()) {
            // An empty selector matches no SVID: the role would never get credentials.
            return Err(loc.err(
                id.span(),
                "spiffe_id must not be empty (omit it to use the first SVID)",
            ));
        }
        roles.push(RolePlan {
            name,
            spiffe_id: role.spiffe_id.as_ref().map(|s| s.get_ref().clone()),
            role_arn: role.role_arn.get_ref().clone(),
            exchange,
        });
    }

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
            imds.push(parse_listen(&addr).map_err(|m| loc.err(span, format!("imds.listen: {m}")))?);
        }
    }
    let imds_roles = match config
        .imds
        .as_ref()
        .and_then(|s| s.get_ref().roles.as_ref())
    {
        None => None,
        Some(r) => {
            for name in r.get_ref() {
                if !names.contains(name) {
                    return Err(loc.err(
                        r.span(),
                        format!("imds.roles: {name:?} is not a configured [[role]] name"),
                    ));
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
            let listen =
                parse_listen(&addr).map_err(|m| loc.err(span, format!("container.listen: {m}")))?;
            Some(ContainerPlan {
                listen,
                token_file: c
                    .token_file
                    .as_ref()
                    .map(|s| PathBuf::from(s.get_ref()))
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTAINER_TOKEN_FILE)),
            })
        }
    };
    let agent_socket = config.agent_socket.as_ref().map(|s| {
        s.get_ref()
            .path
            .as_ref()
            .map(|p| PathBuf::from(p.get_ref()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET))
    });
    let mut credentials_files = Vec::new();
    for spanned in &config.credentials_file {
        let c = spanned.get_ref();
        if !names.contains(c.role.get_ref()) {
            return Err(loc.err(
                c.role.span(),
                format!(
                    "credentials_file.role {:?} is not a configured [[role]] name",
                    c.role.get_ref()
                ),
            ));
        }
        let profile = c
            .profile
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| "default".into());
        if let Err(e) = crate::serve::credentials_file::validate_profile(&profile) {
            let span = c
                .profile
                .as_ref()
                .map(|s| s.span())
                .unwrap_or(spanned.span());
            return Err(loc.err(span, format!("credentials_file.profile: {e}")));
        }
        credentials_files.push(CredentialsFilePlan {
            role: c.role.get_ref().clone(),
            profile,
            path: c.path.as_ref().map(|s| PathBuf::from(s.get_ref())),
        });
    }
    let min_remaining = match &config.min_remaining_seconds {
        None => DEFAULT_MIN_REMAINING,
        Some(s) => check_min_remaining(*s.get_ref())
            .map_err(|m| loc.err(s.span(), format!("min_remaining_seconds {m}")))?,
    };
    let plan = AgentPlan {
        identity,
        roles,
        imds,
        container,
        agent_socket,
        credentials_files,
        min_remaining,
        hop_limit: None,
        imds_roles,
    };
    if !plan.has_server() {
        return Err(ConfigError {
            location: format!("{}: ", path.display()),
            message: "no server is configured: add [imds], [container], [agent_socket] or [[credentials_file]]".into(),
        });
    }
    Ok(plan)
}

/// Which key (and where) an exchange validation error is about.
fn blame(
    e: &ProcessError,
    role: &RoleToml,
    config: &FileConfig,
    role_span: std::ops::Range<usize>,
) -> (&'static str, std::ops::Range<usize>) {
    use crate::rolesanywhere::client::ConfigError as C;
    let opt = |s: Option<&Spanned<String>>| s.map(|s| s.span());
    match e {
        ProcessError::Arn(a) => match a.flag {
            "--trust-anchor-arn" => ("trust_anchor_arn", role.trust_anchor_arn.span()),
            "--profile-arn" => ("profile_arn", role.profile_arn.span()),
            _ => ("role_arn", role.role_arn.span()),
        },
        ProcessError::Config(C::Duration(_)) => (
            "session_duration",
            role.session_duration
                .as_ref()
                .map(|s| s.span())
                .unwrap_or(role_span),
        ),
        ProcessError::Config(C::Region { .. }) => (
            "region",
            opt(role.region.as_ref())
                .or(opt(config.region.as_ref()))
                .unwrap_or(role_span),
        ),
        ProcessError::Config(C::Endpoint { .. }) => (
            "endpoint",
            opt(role.endpoint.as_ref())
                .or(opt(config.endpoint.as_ref()))
                .unwrap_or(role_span),
        ),
        ProcessError::Config(C::CaBundle { .. }) => (
            "ca_bundle",
            opt(config.ca_bundle.as_ref()).unwrap_or(role_span),
        ),
        ProcessError::RoleSessionName(_) => (
            "role_session_name",
            opt(role.role_session_name.as_ref()).unwrap_or(role_span),
        ),
        _ => ("", role_span),
    }
}

/// Flag-oriented messages read oddly in a file; keep the substance.
fn strip_flag_prefix(e: &ProcessError) -> String {
    let text = e.to_string();
    for flag in [
        "--trust-anchor-arn ",
        "--profile-arn ",
        "--role-arn ",
        "--session-duration ",
        "invalid --region ",
        "invalid --endpoint ",
        "cannot use --ca-bundle ",
        "invalid --role-session-name ",
    ] {
        if let Some(rest) = text.strip_prefix(flag) {
            return rest.to_owned();
        }
    }
    text
}

/// Parses `IP:port` or `[IPv6]:port`; a name like `localhost` is refused so the bind is
/// explicit.
pub fn parse_listen(addr: &str) -> Result<SocketAddr, String> {
    addr.parse::<SocketAddr>()
        .map_err(|_| format!("{addr:?} is not IP:port (e.g. 127.0.0.1:9911 or [::1]:9911)"))
}

/// Role names appear in URL paths; keep them to a safe alphabet.
pub fn valid_role_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
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

    fn parse_text(text: &str) -> Result<AgentPlan, ConfigError> {
        parse(Path::new("agent.toml"), text)
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
        assert_eq!(plan.imds.len(), 2);
        assert_eq!(plan.container.unwrap().listen.port(), 9912);
        assert_eq!(plan.agent_socket.unwrap(), PathBuf::from("/tmp/a.sock"));
        assert_eq!(plan.min_remaining, Duration::from_secs(120));
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
}
