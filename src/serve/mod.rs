//! The ways credentials leave the agent. Each module has one output format.
//!
//! - [`process`]: `credential_process` JSON, fetched one-shot.

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
pub async fn start_servers(
    plan: &AgentPlan,
    store: Arc<CredentialStore>,
    shutdown: watch::Receiver<bool>,
) -> Result<StartedServers, AgentError> {
    let _ = (plan, store, shutdown);
    Err(AgentError::Server(
        "the servers are not wired up yet".into(),
    ))
}
