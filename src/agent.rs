//! Wires a plan into running work: the one-shot `credential-process` (identity → exchange),
//! and the long-running agent (`run`, `serve`, `update`): identity watcher → one refresher
//! per role → credential store → sinks (host mode), and in per-caller mode the agent socket
//! → per-caller cache (SPIRE's Delegated Identity API → one refresher per (SPIFFE ID, role)).
//!
//! Every listener is bound before anything else starts, so a port in use or a bad socket path
//! stops the agent at once with a clear error instead of leaving a half-started daemon.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::{Clock, TokioClock};
use crate::credentials::per_caller::{BoundRole, PerCallerCache};
use crate::credentials::refresher::{self, Exchanger, RefreshPolicy, RoleSpec};
use crate::credentials::{CredentialStore, ExchangeError, Unavailable};
use crate::identity::delegated::DelegatedIdentity;
use crate::identity::jwt_svid::SvidSelector;
use crate::identity::watch::ConnectionState;
use crate::identity::{IdentityError, IdentitySpec, SpiffeIdPattern, X509Identity};
use crate::metrics::Metrics;
use crate::rolesanywhere::{CreateSessionError, Credentials, Exchange};
use crate::serve::admin::AdminState;
use crate::serve::credentials_file::WriteState;
use crate::serve::{self, ServeError, ServersSpec};
use crate::systemd::Notifier;
use crate::webidentity::{WebIdentityError, WebIdentityExchange};

/// The shortest session Roles Anywhere issues, so the longest `min_remaining` (exclusive)
/// that can ever be met.
pub const MAX_MIN_REMAINING: Duration =
    Duration::from_secs(crate::rolesanywhere::exchange::MIN_SESSION_DURATION as u64);
/// Never hand out credentials with less than this left, unless told otherwise.
pub const DEFAULT_MIN_REMAINING: Duration = Duration::from_secs(300);
/// How long `update --once` waits for credentials.
pub const ONCE_WAIT: Duration = Duration::from_secs(60);

/// One `credential-process` call: where the identity comes from and what to exchange it for.
#[derive(Debug)]
pub struct OneShotPlan {
    pub identity: IdentitySpec,
    pub exchange: Exchange,
}

/// Why a one-shot exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Exchange(#[from] CreateSessionError),
}

/// Fetches the identity once and exchanges it.
pub async fn one_shot(plan: &OneShotPlan, clock: &dyn Clock) -> Result<Credentials, OneShotError> {
    let identity = plan.identity.fetch_once(clock).await?;
    tracing::debug!(
        subject = identity.subject(),
        spiffe_id = identity.spiffe_id(),
        serial = identity.serial_decimal(),
        "exchanging identity"
    );
    Ok(plan.exchange.run_with_retries(&identity).await?)
}

/// One `jwt-credential-process` call: which JWT-SVID, and the STS exchange.
#[derive(Debug)]
pub struct WebIdentityOneShotPlan {
    pub selector: SvidSelector,
    pub exchange: WebIdentityExchange,
}

/// Fetches a JWT-SVID and exchanges it with STS, retrying transient STS failures.
pub async fn web_identity_one_shot(
    plan: &WebIdentityOneShotPlan,
) -> Result<Credentials, WebIdentityError> {
    plan.exchange.run_with_retries(&plan.selector).await
}

/// How a role gets its credentials: Roles Anywhere with the X.509-SVID, or STS
/// AssumeRoleWithWebIdentity with a JWT-SVID of the same SPIFFE ID.
#[derive(Debug)]
pub enum RoleExchange {
    RolesAnywhere(Exchange),
    WebIdentity(WebIdentityExchange),
}

impl RoleExchange {
    /// The role the exchange assumes.
    pub fn role_arn(&self) -> &str {
        match self {
            RoleExchange::RolesAnywhere(e) => e.role_arn(),
            RoleExchange::WebIdentity(e) => e.role_arn(),
        }
    }

    /// The session length asked for, in seconds.
    pub fn session_duration(&self) -> u32 {
        match self {
            RoleExchange::RolesAnywhere(e) => e.session_duration(),
            RoleExchange::WebIdentity(e) => e.session_duration(),
        }
    }
}

impl From<Exchange> for RoleExchange {
    fn from(e: Exchange) -> Self {
        RoleExchange::RolesAnywhere(e)
    }
}

impl From<WebIdentityExchange> for RoleExchange {
    fn from(e: WebIdentityExchange) -> Self {
        RoleExchange::WebIdentity(e)
    }
}

/// One role the agent keeps fresh, validated.
#[derive(Debug)]
pub struct RolePlan {
    /// The name clients ask for.
    pub name: String,
    /// Which SVID to exchange (SPIFFE ID or hint); `None`: the default SVID.
    pub spiffe_id: Option<String>,
    /// In per-caller mode: the callers' SPIFFE IDs this role is served to.
    pub bound_to: Option<SpiffeIdPattern>,
    pub exchange: RoleExchange,
}

/// Per-caller mode: who asks SPIRE about callers, and how long unused credentials are kept.
#[derive(Debug, Clone)]
pub struct PerCallerPlan {
    /// The SPIRE agent's admin socket (`unix:///path`).
    pub admin_socket: String,
    /// A (SPIFFE ID, role) pair nobody asked for in this long is dropped.
    pub idle: Duration,
    /// How long SPIRE may take to attest a caller.
    pub attest_timeout: Duration,
}

/// Everything `run`, `serve` and `update` need, validated.
#[derive(Debug)]
pub struct AgentPlan {
    /// The agent's own identity, for the host-level channels; `None` in per-caller mode
    /// when no host-level channel is configured.
    pub identity: Option<IdentitySpec>,
    pub roles: Vec<RolePlan>,
    pub servers: ServersSpec,
    pub min_remaining: Duration,
    /// Per-caller mode for the agent socket.
    pub per_caller: Option<PerCallerPlan>,
}

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("gave up waiting after {secs} s: {0}", secs = ONCE_WAIT.as_secs())]
    NoCredentials(Unavailable),
    #[error("nothing was written: {0}")]
    NotWritten(Arc<crate::serve::credentials_file::CredentialsFileError>),
}

/// The role name clients use when only a role ARN is given: its last path part, as
/// `aws_signing_helper serve` does.
pub fn role_name_from_arn(role_arn: &str) -> String {
    role_arn.rsplit('/').next().unwrap_or(role_arn).to_owned()
}

/// A role's refresher exchanges through the role's own exchange: the SVID itself with Roles
/// Anywhere, or a fresh JWT-SVID of the SVID's SPIFFE ID with STS.
impl Exchanger for RoleExchange {
    fn exchange<'a>(
        &'a self,
        _role: &'a str,
        identity: &'a X509Identity,
    ) -> Pin<Box<dyn Future<Output = Result<Credentials, ExchangeError>> + Send + 'a>> {
        match self {
            RoleExchange::RolesAnywhere(e) => Box::pin(async move { Ok(e.run(identity).await?) }),
            RoleExchange::WebIdentity(e) => Box::pin(async move {
                let selector = match identity.spiffe_id() {
                    Some(id) => SvidSelector::SpiffeId(id.to_owned()),
                    None => SvidSelector::Default,
                };
                Ok(e.run(&selector).await?)
            }),
        }
    }

    fn exchanges_the_svid(&self) -> bool {
        matches!(self, RoleExchange::RolesAnywhere(_))
    }
}

/// The running agent's parts, for tests and for `dev`.
pub struct RunningAgent {
    pub store: Arc<CredentialStore>,
    /// The per-caller cache, in per-caller mode.
    pub per_caller: Option<Arc<PerCallerCache>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The long-running tasks by what they do (what health checks look at).
    watched: Vec<(String, tokio::task::AbortHandle)>,
    /// The roles host mode keeps fresh (none in per-caller mode without host channels).
    host_roles: Vec<String>,
    /// Where the servers actually listen (ports resolved).
    pub imds_addrs: Vec<std::net::SocketAddr>,
    pub admin_addr: Option<std::net::SocketAddr>,
    pub container_addr: Option<std::net::SocketAddr>,
    pub container_token_file: Option<PathBuf>,
    pub agent_socket: Option<PathBuf>,
    credentials_files: Vec<watch::Receiver<WriteState>>,
}

impl RunningAgent {
    /// Whether every long-running task still runs; else which one stopped.
    pub fn health(&self) -> Result<(), String> {
        serve::admin::health(&self.watched)
    }

    /// Waits until every credentials file was written once, or says why one was not.
    async fn files_written(&mut self, deadline: tokio::time::Instant) -> Result<(), AgentError> {
        for state in &mut self.credentials_files {
            let settled = tokio::time::timeout_at(
                deadline,
                state.wait_for(|s| !matches!(s, WriteState::Pending)),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|s| s.clone());
            // Timed out, or the writer stopped: report what it last did.
            let outcome = settled.unwrap_or_else(|| state.borrow().clone());
            match outcome {
                WriteState::Written => {}
                WriteState::Failed(e) => return Err(AgentError::NotWritten(e)),
                WriteState::Pending => {
                    return Err(AgentError::NotWritten(Arc::new(
                        crate::serve::credentials_file::CredentialsFileError::NeverWritten,
                    )))
                }
            }
        }
        Ok(())
    }

    /// Stops every task.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Starts the agent described by `plan` and returns at once.
pub async fn start(
    plan: AgentPlan,
    policy: RefreshPolicy,
    clock: Arc<dyn Clock>,
) -> Result<RunningAgent, AgentError> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut watched = Vec::new();
    let metrics = Metrics::new();

    let store = Arc::new(
        CredentialStore::new(
            plan.roles
                .iter()
                .map(|r| (r.name.clone(), r.exchange.role_arn().to_owned())),
            plan.min_remaining,
            Arc::clone(&clock),
        )
        .with_metrics(Arc::clone(&metrics)),
    );

    // Each role's exchange serves its host-mode refresher and its per-caller pairs alike.
    let roles: Vec<(RoleSpec, Option<SpiffeIdPattern>, Arc<dyn Exchanger>)> = plan
        .roles
        .into_iter()
        .map(|role| {
            let spec = RoleSpec {
                name: role.name,
                spiffe_id: role.spiffe_id,
            };
            let exchanger: Arc<dyn Exchanger> = Arc::new(role.exchange);
            (spec, role.bound_to, exchanger)
        })
        .collect();
    let per_caller = plan.per_caller.as_ref().map(|pc| {
        let bound = roles
            .iter()
            .filter_map(|(role, bound_to, exchanger)| {
                Some(BoundRole {
                    name: role.name.clone(),
                    role_arn: store.role_arn(&role.name)?.to_owned(),
                    bound_to: bound_to.clone()?,
                    exchanger: Arc::clone(exchanger),
                })
            })
            .collect();
        PerCallerCache::new(
            bound,
            DelegatedIdentity::new(pc.admin_socket.clone(), pc.attest_timeout),
            pc.idle,
            plan.min_remaining,
            policy.clone(),
            Arc::clone(&clock),
            Arc::clone(&metrics),
        )
    });

    // Bound first, like every listener; served once what it reports on runs.
    let admin_listener = match &plan.servers.admin {
        Some(spec) => Some(serve::admin::bind(spec).await?),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let servers = serve::start_servers(
        &plan.servers,
        Arc::clone(&store),
        per_caller.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    for (task, name) in servers.tasks.iter().zip(&servers.task_names) {
        watched.push((name.clone(), task.abort_handle()));
    }
    tasks.extend(servers.tasks);

    let mut host_roles = Vec::new();
    let mut workload_api = None;
    if let Some(identity) = &plan.identity {
        let connection = Arc::new(ConnectionState::default());
        if let IdentitySpec::WorkloadApi { address, .. } = identity {
            workload_api = Some((address.clone(), Arc::clone(&connection)));
        }
        let (identities, watcher) = identity.watch_reporting(Arc::clone(&clock), connection);
        watched.push(("identity watcher".to_owned(), watcher.abort_handle()));
        tasks.push(watcher);

        for (spec, _, exchanger) in roles {
            let store = Arc::clone(&store);
            let identities = identities.clone();
            let policy = policy.clone();
            let stop = serve::shutdown_signal(shutdown_rx.clone());
            host_roles.push(spec.name.clone());
            let name = format!("refresher of role {:?}", spec.name);
            let task = tokio::spawn(async move {
                tokio::select! {
                    _ = refresher::run_role(store, spec, identities, exchanger, policy) => {}
                    _ = stop => {}
                }
            });
            watched.push((name, task.abort_handle()));
            tasks.push(task);
        }
    }

    let host_roles_kept = host_roles.clone();
    if let Some(listener) = admin_listener {
        let state = AdminState {
            store: Arc::clone(&store),
            host_roles,
            per_caller: per_caller.clone(),
            workload_api,
            tasks: watched.clone(),
        };
        let hosts = plan.servers.allowed_hosts.clone();
        let stop = serve::shutdown_signal(shutdown_rx.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = serve::admin::serve(listener, state, hosts, stop).await {
                tracing::error!(error = %e, "the admin listener stopped");
            }
        });
        watched.push(("admin listener".to_owned(), task.abort_handle()));
        tasks.push(task);
    }

    Ok(RunningAgent {
        store,
        per_caller,
        shutdown: shutdown_tx,
        tasks,
        watched,
        host_roles: host_roles_kept,
        admin_addr,
        imds_addrs: servers.imds_addrs,
        container_addr: servers.container_addr,
        container_token_file: servers.container_token_file,
        agent_socket: servers.agent_socket,
        credentials_files: servers.credentials_files,
    })
}

/// Runs until SIGINT/SIGTERM; with `once`, until every role has credentials and the
/// credentials files were written.
pub async fn run(plan: AgentPlan, once: bool) -> Result<(), AgentError> {
    let roles: Vec<String> = plan.roles.iter().map(|r| r.name.clone()).collect();
    let per_caller = plan.per_caller.clone();
    let mut agent = start(plan, RefreshPolicy::default(), Arc::new(TokioClock::new())).await?;
    for addr in &agent.imds_addrs {
        tracing::info!(
            "IMDS endpoint: AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{}/",
            addr
        );
    }
    if let Some(addr) = &agent.container_addr {
        tracing::info!("container endpoint: AWS_CONTAINER_CREDENTIALS_FULL_URI=http://{}/v1/credentials/<role>", addr);
    }
    match (&agent.agent_socket, &per_caller) {
        (Some(path), Some(pc)) => tracing::info!(
            "agent socket (per caller, attested by SPIRE at {}; idle pairs dropped after {} s): credential-process --agent {} [--role <role>]",
            pc.admin_socket,
            pc.idle.as_secs(),
            path.display()
        ),
        (Some(path), None) => tracing::info!(
            "agent socket (host mode: every role to whoever may connect): credential-process --agent {} --role <role>",
            path.display()
        ),
        _ => {}
    }
    if let Some(addr) = &agent.admin_addr {
        tracing::info!(
            "admin listener: http://{}/healthz, /readyz and /metrics",
            addr
        );
    }
    if once {
        let deadline = tokio::time::Instant::now() + ONCE_WAIT;
        let result = match agent.store.wait_ready(&roles, ONCE_WAIT).await {
            Ok(()) => agent.files_written(deadline).await,
            Err(e) => Err(AgentError::NoCredentials(e)),
        };
        agent.shutdown().await;
        return result;
    }
    let notifier = match Notifier::from_env() {
        Ok(n) => n.map(Arc::new),
        Err(e) => {
            tracing::warn!(error = %e, "not notifying the service manager");
            None
        }
    };
    let notifying = notifier
        .as_ref()
        .map(|n| tokio::spawn(notify_service_manager(Arc::clone(n), &agent)));
    wait_for_termination().await;
    tracing::info!("shutting down");
    if let Some(n) = &notifier {
        n.notify_retrying("STOPPING=1", Duration::from_secs(1))
            .await;
    }
    if let Some(task) = notifying {
        task.abort();
    }
    agent.shutdown().await;
    Ok(())
}

/// systemd's `Type=notify` protocol: `READY=1` once every host role holds credentials (at
/// once in per-caller mode without host roles: there is nothing to wait for), then, when
/// the manager asks for a watchdog, `WATCHDOG=1` every half period while every task runs
/// (a stopped refresher or server withholds the ping, so the manager restarts the agent).
fn notify_service_manager(
    notifier: Arc<Notifier>,
    agent: &RunningAgent,
) -> impl Future<Output = ()> + Send + 'static {
    let store = Arc::clone(&agent.store);
    let watched = agent.watched.clone();
    let host_roles = agent.host_roles.clone();
    async move {
        let watchdog = crate::systemd::watchdog_interval();
        let ping = {
            let notifier = Arc::clone(&notifier);
            let watched = watched.clone();
            async move {
                let Some(every) = watchdog else {
                    return std::future::pending::<()>().await;
                };
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    match serve::admin::health(&watched) {
                        Ok(()) => notifier.notify("WATCHDOG=1"),
                        Err(why) => {
                            tracing::error!(%why, "unhealthy: withholding the watchdog ping")
                        }
                    }
                }
            }
        };
        let ready = async {
            // `wait_ready` gives up after its limit; keep waiting, systemd's start timeout
            // decides how long is too long.
            while store
                .wait_ready(&host_roles, Duration::from_secs(3600))
                .await
                .is_err()
            {}
            notifier
                .notify_retrying("READY=1", Duration::from_secs(60))
                .await;
            std::future::pending::<()>().await
        };
        tokio::join!(ping, ready);
    }
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
