//! The admin listener: health, readiness and metrics for operators, probes and Prometheus.
//! It hands out no credentials, and only reads what the agent's parts record.
//!
//! - `GET /healthz`: 200 while every long-running task of the agent (identity watcher,
//!   refreshers, servers, writers) is running, else 503 naming the one that stopped. That
//!   this answer arrives at all also shows the runtime is not wedged (one worker thread runs
//!   everything), which is what a liveness probe restarting the process should act on.
//! - `GET /readyz`: 200 only when every host-mode role has credentials to hand out now (a
//!   failing refresh with credentials still valid is ready, and says so), and, in per-caller
//!   mode, SPIRE's Delegated Identity API answers this agent as a delegate. Otherwise 503;
//!   the body names each role or part that is not ready and why.
//! - `GET /metrics`: [`Metrics`] in the OpenMetrics text format (Prometheus scrapes it).
//!
//! The listener is hardened like the others (the shared accept loop with its limits and
//! load shedding, the Host and proxy checks against DNS rebinding), never logs per request,
//! and binds loopback unless the operator explicitly allows a wider address.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};

use super::http;
use super::request_guard::RequestGuard;
use crate::credentials::per_caller::PerCallerCache;
use crate::credentials::{CredentialStore, Status};
use crate::identity::watch::ConnectionState;
use crate::metrics::Metrics;

/// Where `--admin` listens when given without an address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9913";
/// How often per-caller mode checks that SPIRE answers this agent as a delegate.
const SPIRE_PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// The content type of the metrics text (OpenMetrics 1.0, which Prometheus negotiates).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The admin listener, validated.
#[derive(Debug, Clone)]
pub struct AdminSpec {
    pub listen: SocketAddr,
}

/// What the admin listener reports on, gathered by the agent when everything has started.
pub struct AdminState {
    /// The host-mode store.
    pub store: Arc<CredentialStore>,
    /// The roles whose credentials host mode keeps (none in per-caller mode without a
    /// host-level channel: then nothing refreshes the store).
    pub host_roles: Vec<String>,
    pub per_caller: Option<Arc<PerCallerCache>>,
    /// The Workload API's address and its stream's state, when the identity comes from it.
    pub workload_api: Option<(String, Arc<ConnectionState>)>,
    /// The agent's long-running tasks, by what they do.
    pub tasks: Vec<(String, tokio::task::AbortHandle)>,
}

/// The last answer of SPIRE's Delegated Identity API to the readiness probe.
type SpireProbe = ArcSwap<Option<Result<(), String>>>;

#[derive(Clone)]
struct Admin {
    state: Arc<AdminState>,
    metrics: Arc<Metrics>,
    spire: Arc<SpireProbe>,
}

/// Whether every one of `tasks` still runs; else which one stopped.
pub fn health(tasks: &[(String, tokio::task::AbortHandle)]) -> Result<(), String> {
    match tasks.iter().find(|(_, task)| task.is_finished()) {
        None => Ok(()),
        Some((name, _)) => Err(format!("the {name} stopped")),
    }
}

/// Readiness: `Ok` with one line per part, or `Err` with the same lines, the parts that are
/// not ready saying why.
fn readiness(state: &AdminState, spire: &SpireProbe) -> Result<String, String> {
    let mut ready = true;
    let mut lines = String::new();
    for role in &state.host_roles {
        match state.store.get(role) {
            Ok(creds) => {
                let left = creds
                    .credentials
                    .expiration
                    .duration_since(state.store.clock().now())
                    .unwrap_or_default();
                let _ = write!(
                    lines,
                    "role {role}: ready, credentials expire in {} s",
                    left.as_secs()
                );
                if let Some(Status::Failing(why)) = state.store.status(role) {
                    let _ = write!(lines, "; the last refresh failed: {why}");
                }
                lines.push('\n');
            }
            Err(e) => {
                ready = false;
                let _ = writeln!(lines, "role {role}: not ready: {e}");
            }
        }
    }
    if state.per_caller.is_some() {
        match &**spire.load() {
            Some(Ok(())) => lines.push_str("per-caller mode: SPIRE's Delegated Identity API answers this agent as a delegate\n"),
            Some(Err(why)) => {
                ready = false;
                let _ = writeln!(lines, "per-caller mode: not ready: {why}");
            }
            None => {
                ready = false;
                lines.push_str("per-caller mode: not ready: SPIRE's Delegated Identity API has not been asked yet\n");
            }
        }
    }
    if ready {
        Ok(lines)
    } else {
        Err(lines)
    }
}

/// Binds the admin listener (before anything else starts, like every listener).
pub async fn bind(spec: &AdminSpec) -> Result<tokio::net::TcpListener, super::ServeError> {
    if !spec.listen.ip().is_loopback() {
        tracing::warn!(addr = %spec.listen, "the admin listener is on a non-loopback address (allowed explicitly): whoever reaches it sees role names, health and metrics");
    }
    tokio::net::TcpListener::bind(spec.listen)
        .await
        .map_err(|source| super::ServeError::Bind {
            what: "the admin listener",
            address: spec.listen,
            source,
            setting: "--admin (or listen under [admin])",
        })
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    allowed_hosts: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let guard = RequestGuard::new(listener.local_addr()?, Arc::from(allowed_hosts));
    let metrics = Arc::clone(state.store.metrics());
    let admin = Admin {
        state: Arc::new(state),
        metrics: Arc::clone(&metrics),
        spire: Arc::new(ArcSwap::from_pointee(None)),
    };
    let probe = admin.state.per_caller.clone().map(|cache| {
        let spire = Arc::clone(&admin.spire);
        tokio::spawn(probe_spire(cache, spire))
    });
    let counters = metrics.endpoint("admin");
    let served = http::serve(listener, router(admin, guard), shutdown, counters).await;
    if let Some(probe) = probe {
        probe.abort();
    }
    served
}

/// Asks SPIRE every [`SPIRE_PROBE_INTERVAL`] whether it answers this agent as a delegate.
async fn probe_spire(cache: Arc<PerCallerCache>, spire: Arc<SpireProbe>) {
    loop {
        let result = cache.probe_spire().await.map_err(|e| e.to_string());
        cache
            .metrics()
            .set_spire_admin_ready(cache.spire_address(), result.is_ok());
        spire.store(Arc::new(Some(result)));
        tokio::time::sleep(SPIRE_PROBE_INTERVAL).await;
    }
}

fn router(admin: Admin, guard: RequestGuard) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|method: Method| async move {
            if method == Method::GET || method == Method::HEAD {
                http::text(
                    StatusCode::NOT_FOUND,
                    "not found: try /healthz, /readyz or /metrics",
                )
            } else {
                http::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
        })
        .layer(middleware::from_fn(http::limit_body))
        .layer(middleware::from_fn(
            move |req: axum::extract::Request, next: middleware::Next| {
                let guard = guard.clone();
                async move {
                    match guard.refusal(req.uri(), req.headers()) {
                        Some(refusal) => refusal,
                        None => next.run(req).await,
                    }
                }
            },
        ))
        .with_state(admin)
}

async fn healthz(axum::extract::State(admin): axum::extract::State<Admin>) -> Response {
    match health(&admin.state.tasks) {
        Ok(()) => http::text(StatusCode::OK, "ok"),
        Err(why) => http::text(StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}")),
    }
}

async fn readyz(axum::extract::State(admin): axum::extract::State<Admin>) -> Response {
    match readiness(&admin.state, &admin.spire) {
        Ok(lines) => http::text(StatusCode::OK, format!("ready\n{}", lines.trim_end())),
        Err(lines) => http::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}", lines.trim_end()),
        ),
    }
}

async fn metrics(axum::extract::State(admin): axum::extract::State<Admin>) -> Response {
    let state = &admin.state;
    let now = state.store.clock().now();
    for role in &state.host_roles {
        let left = state
            .store
            .peek(role)
            .and_then(|c| c.credentials.expiration.duration_since(now).ok());
        admin.metrics.set_expiry(role, left);
    }
    if let Some((address, connection)) = &state.workload_api {
        admin
            .metrics
            .set_workload_api_connected(address, connection.is_up());
    }
    match admin.metrics.encode() {
        Ok(text) => {
            let mut resp = (StatusCode::OK, text).into_response();
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(METRICS_CONTENT_TYPE),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(_) => http::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Failure;
    use crate::serve::http::testing;

    #[tokio::test]
    async fn health_names_the_task_that_stopped() {
        let running = tokio::spawn(std::future::pending::<()>());
        let stopped = tokio::spawn(async {});
        let tasks = vec![
            ("identity watcher".to_owned(), running.abort_handle()),
            (
                "refresher of role \"orders\"".to_owned(),
                stopped.abort_handle(),
            ),
        ];
        let _ = stopped.await;
        assert_eq!(
            health(&tasks),
            Err("the refresher of role \"orders\" stopped".to_owned())
        );
        assert_eq!(health(&tasks[..1]), Ok(()));
        running.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_needs_every_role_and_says_why_one_is_not_ready() {
        let store = testing::store(&["orders", "reviews"]);
        let state = AdminState {
            store: Arc::clone(&store),
            host_roles: vec!["orders".into(), "reviews".into()],
            per_caller: None,
            workload_api: None,
            tasks: Vec::new(),
        };
        let spire = ArcSwap::from_pointee(None);
        let why = readiness(&state, &spire).unwrap_err();
        assert!(
            why.contains("role orders: not ready: credentials for role \"orders\" are not available yet: the first exchange has not finished"),
            "{why}"
        );
        store.publish(
            "orders",
            testing::creds(&store, "orders", "AKIDORDERS", Duration::from_secs(3600)),
        );
        let why = readiness(&state, &spire).unwrap_err();
        assert!(why.contains("role orders: ready") && why.contains("role reviews: not ready"));
        store.publish(
            "reviews",
            testing::creds(&store, "reviews", "AKIDREVIEWS", Duration::from_secs(3600)),
        );
        // A failing refresh with valid credentials is ready, and says so.
        store.set_status(
            "reviews",
            Status::Failing(Failure::TooShort {
                seconds_left: 1,
                min_remaining_seconds: 300,
            }),
        );
        let lines = readiness(&state, &spire).unwrap();
        assert!(
            lines.contains("role reviews: ready, credentials expire in 3600 s; the last refresh failed: the exchange issued credentials valid for 1 s"),
            "{lines}"
        );
        // Credentials with less than the minimum left are not ready.
        store.publish(
            "orders",
            testing::creds(&store, "orders", "AKIDSOON", Duration::from_secs(60)),
        );
        let why = readiness(&state, &spire).unwrap_err();
        assert!(
            why.contains("role orders: not ready: credentials for role \"orders\" expire too soon"),
            "{why}"
        );
    }
}
