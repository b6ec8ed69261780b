//! The long-running agent (`run`, `serve`, `update`): identity watcher -> one refresher per
//! role -> credential store -> servers.
//!
//! Every listener is bound before anything else starts, so a port in use or a bad socket path
//! stops the agent at once with a clear error instead of leaving a half-started daemon.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cli::{RunArgs, ServeArgs, SessionArgs, UpdateArgs};
use crate::config::{self, AgentPlan, ConfigError, ContainerPlan, CredentialsFilePlan, RolePlan};
use crate::credentials::clock::TokioClock;
use crate::credentials::refresher::{self, Exchanger, RefreshPolicy, RoleSpec};
use crate::credentials::CredentialStore;
use crate::identity::watch::{spawn_files, spawn_workload_api, Snapshot};
use crate::identity::X509Identity;
use crate::rolesanywhere::client::Credentials;
use crate::serve::credentials_file;
use crate::serve::process::{Exchange, IdentityPlan, ProcessError};

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Flags(#[from] ProcessError),
    #[error("no server chosen: pass --imds, --container, --agent-socket or --credentials-profile (or use a --config file)")]
    NoServer,
    #[error("invalid --role-name {0:?}: use 1 to 64 letters, digits and +=,.@_-")]
    RoleName(String),
    #[error("cannot listen on {what} {address}: {source}")]
    Bind {
        what: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Server(String),
    #[error("gave up waiting after 60 s: {0}")]
    NoCredentials(crate::credentials::Unavailable),
}

impl AgentError {
    /// 2 for configuration mistakes, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Config(_) | AgentError::NoServer | AgentError::RoleName(_) => 2,
            AgentError::Flags(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// The role name clients use when only a role ARN is given: its last path part, as
/// `aws_signing_helper serve` does.
pub fn role_name_from_arn(role_arn: &str) -> String {
    role_arn.rsplit('/').next().unwrap_or(role_arn).to_owned()
}

fn single_role(
    identity: &crate::cli::IdentityArgs,
    session: &SessionArgs,
    name: Option<&str>,
) -> Result<(IdentityPlan, RolePlan), AgentError> {
    let exchange = Exchange::new(session)?;
    let identity_plan = IdentityPlan::new(identity)?;
    let role_arn = session.role_arn.clone().unwrap_or_default();
    let name = name
        .map(str::to_owned)
        .unwrap_or_else(|| role_name_from_arn(&role_arn));
    if !config::valid_role_name(&name) {
        return Err(AgentError::RoleName(name));
    }
    Ok((
        identity_plan,
        RolePlan {
            name,
            spiffe_id: identity.spiffe_id.clone(),
            role_arn,
            exchange,
        },
    ))
}

/// `run`: a config file, or one role from flags.
pub fn plan_run(args: &RunArgs) -> Result<AgentPlan, AgentError> {
    if let Some(path) = &args.config {
        return Ok(config::load(path)?);
    }
    let (identity, role) = single_role(&args.identity, &args.session, args.role_name.as_deref())?;
    let mut imds = Vec::new();
    for a in &args.imds {
        imds.push(config::parse_listen(a).map_err(|m| ConfigError::flag(format!("--imds: {m}")))?);
    }
    let container = match &args.container {
        None => None,
        Some(a) => Some(ContainerPlan {
            listen: config::parse_listen(a)
                .map_err(|m| ConfigError::flag(format!("--container: {m}")))?,
            token_file: args.container_token_file.clone(),
        }),
    };
    let credentials_files = match &args.credentials_profile {
        None => vec![],
        Some(profile) => {
            credentials_file::validate_profile(profile)
                .map_err(|e| ConfigError::flag(format!("--credentials-profile: {e}")))?;
            vec![CredentialsFilePlan {
                role: role.name.clone(),
                profile: profile.clone(),
                path: None,
            }]
        }
    };
    let min_remaining = config::check_min_remaining(args.min_remaining)
        .map_err(|m| ConfigError::flag(format!("--min-remaining {m}")))?;
    let plan = AgentPlan {
        identity,
        roles: vec![role],
        imds,
        container,
        agent_socket: args.agent_socket.clone(),
        credentials_files,
        min_remaining,
        hop_limit: None,
        imds_roles: None,
    };
    if !plan.has_server() {
        return Err(AgentError::NoServer);
    }
    Ok(plan)
}

/// `serve`: IMDS on 127.0.0.1:port for one role.
pub fn plan_serve(args: &ServeArgs) -> Result<AgentPlan, AgentError> {
    let (identity, role) = single_role(&args.identity, &args.session, None)?;
    Ok(AgentPlan {
        identity,
        roles: vec![role],
        imds: vec![std::net::SocketAddr::from(([127, 0, 0, 1], args.port))],
        container: None,
        agent_socket: None,
        credentials_files: vec![],
        min_remaining: config::DEFAULT_MIN_REMAINING,
        hop_limit: Some(args.hop_limit),
        imds_roles: None,
    })
}

/// `update`: the credentials file for one role.
pub fn plan_update(args: &UpdateArgs) -> Result<AgentPlan, AgentError> {
    let (identity, role) = single_role(&args.identity, &args.session, None)?;
    credentials_file::validate_profile(&args.profile)
        .map_err(|e| ConfigError::flag(format!("--profile: {e}")))?;
    Ok(AgentPlan {
        identity,
        credentials_files: vec![CredentialsFilePlan {
            role: role.name.clone(),
            profile: args.profile.clone(),
            path: None,
        }],
        roles: vec![role],
        imds: vec![],
        container: None,
        agent_socket: None,
        min_remaining: config::DEFAULT_MIN_REMAINING,
        hop_limit: None,
        imds_roles: None,
    })
}

/// CreateSession for each configured role.
struct RoleExchanges(HashMap<String, Exchange>);

impl Exchanger for RoleExchanges {
    fn exchange<'a>(
        &'a self,
        role: &'a str,
        identity: &'a X509Identity,
    ) -> Pin<Box<dyn Future<Output = Result<Credentials, String>> + Send + 'a>> {
        Box::pin(async move {
            match self.0.get(role) {
                Some(exchange) => exchange.run(identity).await.map_err(|e| e.to_string()),
                None => Err(format!("no role named {role:?}")),
            }
        })
    }
}

/// The running agent's parts, for tests and for `dev`.
pub struct RunningAgent {
    pub store: Arc<CredentialStore>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where the servers actually listen (ports resolved).
    pub imds_addrs: Vec<std::net::SocketAddr>,
    pub container_addr: Option<std::net::SocketAddr>,
    pub container_token_file: Option<PathBuf>,
    pub agent_socket: Option<PathBuf>,
}

impl RunningAgent {
    /// Stops every task.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// A future that completes when `rx` turns true.
pub(crate) async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Starts the agent described by `plan` and returns at once.
pub async fn start(plan: AgentPlan, policy: RefreshPolicy) -> Result<RunningAgent, AgentError> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let clock = Arc::new(TokioClock::new());
    let store = Arc::new(CredentialStore::new(
        plan.roles
            .iter()
            .map(|r| (r.name.clone(), r.role_arn.clone())),
        plan.min_remaining,
        clock,
    ));

    let servers =
        crate::serve::start_servers(&plan, Arc::clone(&store), shutdown_rx.clone()).await?;
    tasks.extend(servers.tasks);

    let (identities, watcher): (watch::Receiver<Snapshot>, _) = match &plan.identity {
        IdentityPlan::Files {
            certificate,
            private_key,
            intermediates,
        } => spawn_files(
            certificate.clone(),
            private_key.clone(),
            intermediates.clone(),
            Duration::from_secs(30),
        ),
        IdentityPlan::WorkloadApi { address, .. } => spawn_workload_api(address.clone()),
    };
    tasks.push(watcher);

    let mut exchanges = HashMap::new();
    let mut specs = Vec::new();
    for role in plan.roles {
        specs.push(RoleSpec {
            name: role.name.clone(),
            spiffe_id: role.spiffe_id.clone(),
        });
        exchanges.insert(role.name, role.exchange);
    }
    let exchanger: Arc<dyn Exchanger> = Arc::new(RoleExchanges(exchanges));
    for spec in specs {
        let store = Arc::clone(&store);
        let identities = identities.clone();
        let exchanger = Arc::clone(&exchanger);
        let policy = policy.clone();
        let stop = shutdown_signal(shutdown_rx.clone());
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = refresher::run_role(store, spec, identities, exchanger, policy) => {}
                _ = stop => {}
            }
        }));
    }

    Ok(RunningAgent {
        store,
        shutdown: shutdown_tx,
        tasks,
        imds_addrs: servers.imds_addrs,
        container_addr: servers.container_addr,
        container_token_file: servers.container_token_file,
        agent_socket: servers.agent_socket,
    })
}

/// Runs until SIGINT/SIGTERM; with `once`, until every credentials file was written once.
pub async fn run(plan: AgentPlan, once: bool) -> Result<(), AgentError> {
    let roles: Vec<String> = plan.roles.iter().map(|r| r.name.clone()).collect();
    let agent = start(plan, RefreshPolicy::default()).await?;
    for addr in &agent.imds_addrs {
        tracing::info!(
            "IMDS endpoint: AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{}/",
            addr
        );
    }
    if let Some(addr) = &agent.container_addr {
        tracing::info!("container endpoint: AWS_CONTAINER_CREDENTIALS_FULL_URI=http://{}/v1/credentials/<role>", addr);
    }
    if let Some(path) = &agent.agent_socket {
        tracing::info!(
            "agent socket: credential-process --agent {} --role <role>",
            path.display()
        );
    }
    if once {
        let result = agent
            .store
            .wait_ready(&roles, Duration::from_secs(60))
            .await
            .map_err(AgentError::NoCredentials);
        // Give the credentials-file writers a moment to write what just arrived.
        tokio::time::sleep(Duration::from_millis(300)).await;
        agent.shutdown().await;
        return result;
    }
    wait_for_termination().await;
    tracing::info!("shutting down");
    agent.shutdown().await;
    Ok(())
}

async fn wait_for_termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
