//! The ways credentials leave the agent. Each module has one output format.
//!
//! - [`process`]: the `credential_process` JSON (printed one-shot, served by the socket).
//! - [`imds`]: an IMDSv2-compatible endpoint (`AWS_EC2_METADATA_SERVICE_ENDPOINT`).
//! - [`container`]: the container-credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`
//!   with an authorization token).
//! - [`agent_socket`]: HTTP over a unix socket, the fast path for
//!   `credential-process --agent`, with its client.
//! - [`credentials_file`]: a profile in the shared credentials file, kept current.
//!
//! Beside them, [`admin`] serves health, readiness and metrics (no credentials).
//!
//! What they share lives beside them: `http` (the accept loop, limits, error responses),
//! `flood_memory` (returning memory to the kernel after a connection flood),
//! `request_guard` (Host, proxy and request-target checks against DNS rebinding), `memo`
//! (each sink's rendered documents), `private_file` (atomic 0600 writes), and
//! [`start_servers`], which binds everything a [`ServersSpec`] asks for.

pub mod admin;
pub mod agent_socket;
pub mod container;
pub mod credentials_file;
mod flood_memory;
mod http;
pub mod imds;
mod memo;
mod private_file;
pub mod process;
mod request_guard;
pub mod runtime_dir;

#[cfg(fuzzing)]
pub(crate) use http::{connection_builder, parse_response};
#[cfg(fuzzing)]
pub(crate) use request_guard::RequestGuard;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::credentials::per_caller::PerCallerCache;
use crate::credentials::CredentialStore;

/// Where the IMDS endpoint listens unless told otherwise (as `aws_signing_helper serve`).
pub const DEFAULT_IMDS_LISTEN: &str = "127.0.0.1:9911";
/// The port of [`DEFAULT_IMDS_LISTEN`], for `serve --port`.
pub const DEFAULT_IMDS_PORT: u16 = 9911;
/// Where the container endpoint listens unless told otherwise.
pub const DEFAULT_CONTAINER_LISTEN: &str = "127.0.0.1:9912";
/// The container endpoint's token file unless told otherwise.
pub const DEFAULT_CONTAINER_TOKEN_FILE: &str = "/run/spiffe-aws-agent/container-token";
/// The agent socket unless told otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/spiffe-aws-agent/agent.sock";
/// The credentials-file profile unless told otherwise (as `aws_signing_helper update`).
pub const DEFAULT_PROFILE: &str = "default";

/// Which sinks to start, validated.
#[derive(Debug, Clone, Default)]
pub struct ServersSpec {
    /// IMDS listen addresses (each one endpoint).
    pub imds: Vec<SocketAddr>,
    /// The roles the IMDS endpoints list and serve; `None`: every role. (SDKs read the
    /// listing as one instance-profile name, so listing several breaks them.)
    pub imds_roles: Option<Vec<String>>,
    /// IP TTL of the IMDS responses (`serve --hop-limit`); `None` leaves the system default.
    pub hop_limit: Option<u32>,
    pub container: Option<ContainerSpec>,
    pub agent_socket: Option<PathBuf>,
    pub credentials_files: Vec<CredentialsFileSpec>,
    /// Host names the IMDS and container endpoints answer to besides their address and
    /// `localhost` (every other `Host` is refused: DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// The admin listener (health, readiness, metrics); started by the agent once
    /// everything it reports on runs.
    pub admin: Option<admin::AdminSpec>,
}

impl ServersSpec {
    /// Whether any way of handing out credentials is configured (an agent without one is a
    /// mistake, not a daemon).
    pub fn is_empty(&self) -> bool {
        self.imds.is_empty()
            && self.container.is_none()
            && self.agent_socket.is_none()
            && self.credentials_files.is_empty()
    }

    /// Whether a host-level channel is configured: the IMDS or container endpoint, or a
    /// credentials file (whoever reaches them gets the host's roles, in either mode).
    pub fn has_host_channels(&self) -> bool {
        !self.imds.is_empty() || self.container.is_some() || !self.credentials_files.is_empty()
    }
}

/// The container endpoint.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub listen: SocketAddr,
    /// Role `R`'s token is in `<token_file>.R` ([`container::role_token_file`]).
    pub token_file: PathBuf,
}

/// A credentials-file writer.
#[derive(Debug, Clone)]
pub struct CredentialsFileSpec {
    pub role: String,
    pub profile: String,
    /// `None`: `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
    pub path: Option<PathBuf>,
}

/// A sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {what} {address}: {source}{}", in_use_hint(.source, .setting))]
    Bind {
        what: &'static str,
        address: SocketAddr,
        source: std::io::Error,
        /// The flags and keys that choose this address, for the hint.
        setting: &'static str,
    },
    #[error(transparent)]
    ContainerToken(#[from] container::ContainerTokenError),
    #[error(transparent)]
    AgentSocket(#[from] agent_socket::AgentSocketError),
    #[error("cannot find the credentials file: set AWS_SHARED_CREDENTIALS_FILE or HOME")]
    NoCredentialsFile,
}

/// The flags and keys that choose the IMDS endpoint's address, for hints.
const IMDS_SETTING: &str = "--imds IP:PORT (serve: --port PORT; config file: [imds] listen)";
/// The same for the container endpoint.
const CONTAINER_SETTING: &str = "--container IP:PORT (config file: [container] listen)";

/// What to add to a failed bind: for a port in use, that another process has it and which
/// setting picks another; for a port below 1024 refused to a non-root user, the same.
fn in_use_hint(source: &std::io::Error, setting: &str) -> String {
    match source.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            " (another process listens there, perhaps another spiffe-aws-agent or aws_signing_helper serve: stop it, or choose another address with {setting})"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE: choose another with {setting})"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            " (no interface of this host has that address: choose another with {setting})"
        ),
        _ => String::new(),
    }
}

/// The servers that were started.
#[derive(Default)]
pub struct StartedServers {
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What each of `tasks` does, in the same order (health reports name the one that
    /// stopped).
    pub task_names: Vec<String>,
    pub imds_addrs: Vec<SocketAddr>,
    pub container_addr: Option<SocketAddr>,
    /// The container tokens' base path: role `R`'s token is in `<this>.R`.
    pub container_token_file: Option<PathBuf>,
    pub agent_socket: Option<PathBuf>,
    /// The write outcome of each credentials file, in the spec's order.
    pub credentials_files: Vec<watch::Receiver<credentials_file::WriteState>>,
}

/// A future that completes when `rx` turns true: how every task is told to stop.
pub async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Binds every listener `spec` asks for, then serves from `store` until `shutdown`. With
/// `per_caller`, the agent socket serves each caller its own credentials from that cache
/// instead of the host's roles from `store`.
///
/// All binds happen before any server starts, so a port in use or a bad socket path stops
/// the agent before it serves anything.
pub async fn start_servers(
    spec: &ServersSpec,
    store: Arc<CredentialStore>,
    per_caller: Option<Arc<PerCallerCache>>,
    shutdown: watch::Receiver<bool>,
) -> Result<StartedServers, ServeError> {
    http::raise_open_file_limit();
    let bind_err = |what: &'static str, address: SocketAddr, setting: &'static str| {
        move |source: std::io::Error| ServeError::Bind {
            what,
            address,
            source,
            setting,
        }
    };
    for addr in spec
        .imds
        .iter()
        .chain(spec.container.as_ref().map(|c| &c.listen))
    {
        if !addr.ip().is_loopback() {
            // Allowed, because the operator asked for it, but never quietly: these endpoints
            // hand out credentials to anyone who can connect.
            tracing::warn!(%addr, "serving credentials on a non-loopback address: anyone who can reach it can take them");
        }
    }
    if per_caller.is_some() && spec.has_host_channels() {
        tracing::warn!("per-caller mode: the IMDS endpoint, the container endpoint and the credentials files are host-level: they serve the host's roles to whoever reaches them, not per caller");
    }
    let mut imds_listeners = Vec::new();
    for addr in &spec.imds {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind_err(
            "the IMDS endpoint",
            *addr,
            IMDS_SETTING,
        ))?;
        imds_listeners.push(listener);
    }
    let container = match &spec.container {
        None => None,
        Some(c) => {
            let tokens = container::load_or_create_role_tokens(&c.token_file, store.role_names())?;
            let listener = tokio::net::TcpListener::bind(c.listen)
                .await
                .map_err(bind_err(
                    "the container endpoint",
                    c.listen,
                    CONTAINER_SETTING,
                ))?;
            Some((listener, tokens, c.token_file.clone()))
        }
    };
    let agent_listener = match &spec.agent_socket {
        None => None,
        Some(path) => {
            let mode = match per_caller {
                Some(_) => agent_socket::PER_CALLER_SOCKET_MODE,
                None => agent_socket::SOCKET_MODE,
            };
            Some((agent_socket::bind(path, mode).await?, path.clone()))
        }
    };
    let mut files = Vec::new();
    for f in &spec.credentials_files {
        let path = f
            .path
            .clone()
            .or_else(credentials_file::default_path)
            .ok_or(ServeError::NoCredentialsFile)?;
        files.push((f.role.clone(), path, f.profile.clone()));
    }

    let mut out = StartedServers::default();
    for listener in imds_listeners {
        if let Ok(addr) = listener.local_addr() {
            out.imds_addrs.push(addr);
        }
        let config = imds::ImdsConfig {
            hop_limit: spec.hop_limit,
            roles: spec.imds_roles.clone(),
            allowed_hosts: spec.allowed_hosts.clone(),
        };
        let store = Arc::clone(&store);
        let stop = shutdown_signal(shutdown.clone());
        out.task_names.push(format!(
            "IMDS endpoint on {}",
            out.imds_addrs
                .last()
                .map_or_else(String::new, |a| a.to_string())
        ));
        out.tasks.push(tokio::spawn(async move {
            if let Err(e) = imds::serve_with(listener, store, config, stop).await {
                tracing::error!(error = %e, "the IMDS endpoint stopped");
            }
        }));
    }
    if let Some((listener, tokens, token_file)) = container {
        out.container_addr = listener.local_addr().ok();
        out.container_token_file = Some(token_file);
        let store = Arc::clone(&store);
        let stop = shutdown_signal(shutdown.clone());
        let hosts = spec.allowed_hosts.clone();
        out.task_names.push("container endpoint".to_owned());
        out.tasks.push(tokio::spawn(async move {
            if let Err(e) = container::serve_for_hosts(listener, store, tokens, hosts, stop).await {
                tracing::error!(error = %e, "the container endpoint stopped");
            }
        }));
    }
    if let Some((listener, path)) = agent_listener {
        out.agent_socket = Some(path);
        let store = Arc::clone(&store);
        let stop = shutdown_signal(shutdown.clone());
        let per_caller = per_caller.clone();
        out.task_names.push("agent socket".to_owned());
        out.tasks.push(tokio::spawn(async move {
            let served = match per_caller {
                Some(cache) => agent_socket::serve_per_caller(listener, cache, stop).await,
                None => agent_socket::serve(listener, store, stop).await,
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "the agent socket stopped");
            }
        }));
    }
    for (role, path, profile) in files {
        let store = Arc::clone(&store);
        let stop = shutdown_signal(shutdown.clone());
        let (report, state) = watch::channel(credentials_file::WriteState::Pending);
        out.credentials_files.push(state);
        out.task_names
            .push(format!("credentials file writer of profile {profile:?}"));
        out.tasks.push(tokio::spawn(async move {
            if let Err(e) =
                credentials_file::run_reporting(store, role, path, profile, stop, report).await
            {
                tracing::error!(error = %e, "the credentials file writer stopped");
            }
        }));
    }
    Ok(out)
}
