//! The ways credentials leave the agent. Each module has one output format.
//!
//! - [`process`]: `credential_process` JSON, fetched one-shot.
//! - [`imds`]: an IMDSv2-compatible endpoint (`AWS_EC2_METADATA_SERVICE_ENDPOINT`).
//! - [`container`]: the container-credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`
//!   with an authorization token).
//! - [`agent_socket`]: HTTP over a unix socket, the fast path for
//!   `credential-process --agent`, with its client.
//! - [`credentials_file`]: a profile in the shared credentials file, kept current.
//!
//! `http` holds what the HTTP endpoints share: the accept loop, limits and formats.

pub mod agent_socket;
pub mod container;
pub mod credentials_file;
mod http;
pub mod imds;
pub mod process;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::agent::AgentError;
use crate::config::AgentPlan;
use crate::credentials::CredentialStore;

/// The servers that were started.
#[derive(Default)]
pub struct StartedServers {
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub imds_addrs: Vec<std::net::SocketAddr>,
    pub container_addr: Option<std::net::SocketAddr>,
    pub container_token_file: Option<PathBuf>,
    pub agent_socket: Option<PathBuf>,
}

/// Binds every listener the plan asks for, then serves from `store` until `shutdown`.
///
/// All binds happen before any server starts, so a port in use or a bad socket path stops
/// the agent before it serves anything.
pub async fn start_servers(
    plan: &AgentPlan,
    store: Arc<CredentialStore>,
    shutdown: watch::Receiver<bool>,
) -> Result<StartedServers, AgentError> {
    let bind_err = |what: &'static str, address: String| {
        move |source: std::io::Error| AgentError::Bind {
            what,
            address,
            source,
        }
    };
    for addr in plan
        .imds
        .iter()
        .chain(plan.container.as_ref().map(|c| &c.listen))
    {
        if !addr.ip().is_loopback() {
            // Allowed, because the operator asked for it, but never quietly: these endpoints
            // hand out credentials to anyone who can connect.
            tracing::warn!(%addr, "serving credentials on a non-loopback address: anyone who can reach it can take them");
        }
    }
    let mut imds_listeners = Vec::new();
    for addr in &plan.imds {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err("the IMDS endpoint", addr.to_string()))?;
        imds_listeners.push(listener);
    }
    let container = match &plan.container {
        None => None,
        Some(c) => {
            let token = container::load_or_create_token(&c.token_file)
                .map_err(|e| AgentError::Server(e.to_string()))?;
            let listener = tokio::net::TcpListener::bind(c.listen)
                .await
                .map_err(bind_err("the container endpoint", c.listen.to_string()))?;
            Some((listener, token, c.token_file.clone()))
        }
    };
    let agent_listener = match &plan.agent_socket {
        None => None,
        Some(path) => Some((
            agent_socket::bind(path)
                .await
                .map_err(|e| AgentError::Server(e.to_string()))?,
            path.clone(),
        )),
    };
    let mut files = Vec::new();
    for f in &plan.credentials_files {
        let path = f
            .path
            .clone()
            .or_else(credentials_file::default_path)
            .ok_or_else(|| {
                AgentError::Server(
                    "cannot find the credentials file: set AWS_SHARED_CREDENTIALS_FILE or HOME"
                        .into(),
                )
            })?;
        files.push((f.role.clone(), path, f.profile.clone()));
    }

    let mut out = StartedServers::default();
    let imds_roles = plan.imds_roles.clone().or_else(|| {
        // botocore reads the whole role listing as one name: list one role unless told.
        plan.roles.first().map(|r| vec![r.name.clone()])
    });
    for listener in imds_listeners {
        if let Ok(addr) = listener.local_addr() {
            out.imds_addrs.push(addr);
        }
        let config = imds::ImdsConfig {
            hop_limit: plan.hop_limit,
            roles: imds_roles.clone(),
        };
        let store = Arc::clone(&store);
        let stop = crate::agent::shutdown_signal(shutdown.clone());
        out.tasks.push(tokio::spawn(async move {
            if let Err(e) = imds::serve_with(listener, store, config, stop).await {
                tracing::error!(error = %e, "the IMDS endpoint stopped");
            }
        }));
    }
    if let Some((listener, token, token_file)) = container {
        out.container_addr = listener.local_addr().ok();
        out.container_token_file = Some(token_file);
        let store = Arc::clone(&store);
        let stop = crate::agent::shutdown_signal(shutdown.clone());
        out.tasks.push(tokio::spawn(async move {
            if let Err(e) = container::serve(listener, store, token, stop).await {
                tracing::error!(error = %e, "the container endpoint stopped");
            }
        }));
    }
    if let Some((listener, path)) = agent_listener {
        out.agent_socket = Some(path);
        let store = Arc::clone(&store);
        let stop = crate::agent::shutdown_signal(shutdown.clone());
        out.tasks.push(tokio::spawn(async move {
            if let Err(e) = agent_socket::serve(listener, store, stop).await {
                tracing::error!(error = %e, "the agent socket stopped");
            }
        }));
    }
    for (role, path, profile) in files {
        let store = Arc::clone(&store);
        let stop = crate::agent::shutdown_signal(shutdown.clone());
        out.tasks.push(tokio::spawn(async move {
            if let Err(e) = credentials_file::run(store, role, path, profile, stop).await {
                tracing::error!(error = %e, "the credentials file writer stopped");
            }
        }));
    }
    Ok(out)
}
