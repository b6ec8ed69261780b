//! The agent socket: HTTP/1.1 over a unix socket, and its client.
//!
//! `credential-process --agent PATH --role NAME` is what an SDK runs every time it needs
//! credentials, so this is the path that must be fast and must not depend on SPIRE or Roles
//! Anywhere being reachable at that moment: the client connects, sends one request, reads one
//! response, and prints the body. It does not use a TLS stack, a connection pool or extra
//! threads. Access is controlled by the socket's file mode (0660: the agent's user and
//! group), so there is no token to distribute.
//!
//! `GET /v1/credentials/{role}` answers with the `credential_process` JSON
//! (`{"Version":1,"AccessKeyId","SecretAccessKey","SessionToken","Expiration"}`), 404 for an
//! unknown role, 503 while credentials are not usable; errors are one line of text.
//!
//! Two modes:
//! - **host mode** (the default): whoever may connect (mode 0660: the agent's user and
//!   group) gets every role the agent holds, like EC2's IMDS serves the instance role;
//! - **per-caller mode** (`--spire-admin-socket`): the socket is open to every local user
//!   (0666) and each connection is served as the process at the other end: the kernel names
//!   it (`SO_PEERCRED`), SPIRE attests it ([`crate::credentials::per_caller`]), and it gets
//!   only the roles bound to its own SVIDs, exchanged with its own SVID. `GET /v1/credentials`
//!   (no role) answers with the caller's one role. Refusals are 403 (no identity, or the role
//!   is not bound to it) and 409 (several roles bound: name one), with a line that says which
//!   SPIFFE ID the caller has and which the role needs.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

use super::http::{self, ParseError};
use super::memo::RoleMemos;
use crate::credentials::per_caller::PerCallerCache;
use crate::credentials::CredentialStore;

/// The socket's mode in host mode: the agent's user and group may connect, nobody else.
pub const SOCKET_MODE: u32 = 0o660;
/// The socket's mode in per-caller mode: anyone may connect; SPIRE decides what they get.
pub const PER_CALLER_SOCKET_MODE: u32 = 0o666;
/// The largest response the client accepts (a credentials document is about 1.5 KiB).
const MAX_RESPONSE: usize = 64 * 1024;
/// How long the client waits for the whole exchange.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings that choose the agent socket's path, for hints.
const SOCKET_SETTING: &str = "--agent-socket PATH (config file: [agent_socket] path)";

/// What went wrong with the agent socket, on either side.
#[derive(Debug, thiserror::Error)]
pub enum AgentSocketError {
    #[error("cannot create the directory {path} for the agent socket: {source}{}", super::runtime_dir::denied_hint(.path, .source, SOCKET_SETTING))]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists and is not a socket; refusing to replace it (remove it or choose another path for the agent socket)")]
    NotASocket { path: PathBuf },
    #[error("another process is already serving the agent socket {path}: is another spiffe-aws-agent running?")]
    InUse { path: PathBuf },
    #[error("cannot remove the stale agent socket {path}: {source}")]
    RemoveStale {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on the agent socket {path}: {source}{}", super::runtime_dir::denied_hint(.path, .source, SOCKET_SETTING))]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set mode {mode:o} on the agent socket {path}: {source}")]
    Permissions {
        path: PathBuf,
        mode: u32,
        source: std::io::Error,
    },
    #[error("no agent is listening on {path} ({source}): is `spiffe-aws-agent run` running with the agent socket on?")]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("permission denied connecting to the agent socket {path}: is this user in the socket's group?")]
    PermissionDenied { path: PathBuf },
    #[error("talking to the agent on {path} failed: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent on {path} did not answer within {} seconds", CLIENT_TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
    #[error("the agent on {path} sent a response this client cannot read ({reason}): are the agent and this command the same version?")]
    Protocol { path: PathBuf, reason: String },
    #[error("the agent has no {}: {message}", label(.role))]
    UnknownRole {
        role: Option<String>,
        message: String,
    },
    #[error("the agent has no usable credentials for {} right now: {message}", label(.role))]
    Unavailable {
        role: Option<String>,
        message: String,
    },
    #[error("the agent refused: {message}")]
    Refused { message: String },
    #[error("the agent answered HTTP {status} for {}: {message}", label(.role))]
    Status {
        role: Option<String>,
        status: u16,
        message: String,
    },
}

/// `role "NAME"`, or what a request without a role asks for.
fn label(role: &Option<String>) -> String {
    match role {
        Some(role) => format!("role {role:?}"),
        None => "the role bound to this process".to_owned(),
    }
}

/// Binds the agent socket at `path`: creates the parent directory (0755) when missing,
/// replaces a stale socket left by an agent that died, and sets `mode` ([`SOCKET_MODE`] or
/// [`PER_CALLER_SOCKET_MODE`]).
///
/// A socket some process still accepts on is not touched ([`AgentSocketError::InUse`]), and
/// neither is anything that is not a socket ([`AgentSocketError::NotASocket`]): a typo in
/// the path must not delete a file.
pub async fn bind(path: &Path, mode: u32) -> Result<UnixListener, AgentSocketError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|source| AgentSocketError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(AgentSocketError::InUse {
                        path: path.to_owned(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(|source| AgentSocketError::RemoveStale {
                        path: path.to_owned(),
                        source,
                    })?;
                    tracing::info!(path = %path.display(), "removed a stale agent socket");
                }
                // Gone in the meantime: nothing to remove.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(AgentSocketError::RemoveStale {
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
        Ok(_) => {
            return Err(AgentSocketError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| AgentSocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    if let Err(source) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        drop(listener);
        let _ = std::fs::remove_file(path);
        return Err(AgentSocketError::Permissions {
            path: path.to_owned(),
            mode,
            source,
        });
    }
    Ok(listener)
}

/// Builds the agent-socket router over `store`.
fn router(store: Arc<CredentialStore>) -> Router {
    let state = AgentSocket {
        memos: Arc::new(RoleMemos::new(store.role_names())),
        store,
    };
    Router::new()
        .route("/v1/credentials", get(which_role))
        .route("/v1/credentials/{role}", get(credentials))
        .fallback(|| async { http::text(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn(http::limit_body))
        .with_state(state)
}

/// In host mode every caller may read every role, so the caller must name one.
async fn which_role(State(state): State<AgentSocket>) -> Response {
    let roles: Vec<&str> = state.store.role_names().collect();
    http::text(
        StatusCode::CONFLICT,
        format!(
            "this agent is in host mode: pass --role NAME (one of: {})",
            roles.join(", ")
        ),
    )
}

#[derive(Clone)]
struct AgentSocket {
    store: Arc<CredentialStore>,
    /// The `credential_process` document of each role's current credentials.
    memos: Arc<RoleMemos>,
}

/// Serves the agent socket on a listener from [`bind`] until `shutdown` completes.
/// The socket file is left in place; the next [`bind`] replaces it.
pub async fn serve(
    listener: UnixListener,
    store: Arc<CredentialStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let counters = store.metrics().endpoint("agent socket");
    http::serve(listener, router(store), shutdown, counters).await
}

/// Serves the agent socket in per-caller mode: each connection is answered for the process
/// at its other end, as SPIRE attests it.
pub async fn serve_per_caller(
    listener: UnixListener,
    cache: Arc<PerCallerCache>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let counters = cache.metrics().endpoint("agent socket");
    let router = Router::new()
        .route("/v1/credentials", get(caller_credentials))
        .route("/v1/credentials/{role}", get(caller_role_credentials))
        .fallback(|| async { http::text(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn(http::limit_body))
        .with_state(cache);
    let make = move |io: &UnixStream| {
        // No credentials from the kernel: the handler refuses (no pid to attest).
        let caller = io.peer_cred().ok().map(|c| Caller {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        });
        router.clone().layer(axum::Extension(caller))
    };
    http::serve_each(listener, make, shutdown, counters).await
}

/// The process at the other end of a connection, as the kernel reported it.
#[derive(Debug, Clone, Copy)]
struct Caller {
    pid: Option<i32>,
    uid: u32,
    gid: u32,
}

async fn caller_credentials(
    State(cache): State<Arc<PerCallerCache>>,
    axum::Extension(caller): axum::Extension<Option<Caller>>,
) -> Response {
    per_caller(&cache, caller, None).await
}

async fn caller_role_credentials(
    State(cache): State<Arc<PerCallerCache>>,
    axum::Extension(caller): axum::Extension<Option<Caller>>,
    UrlPath(role): UrlPath<String>,
) -> Response {
    per_caller(&cache, caller, Some(&role)).await
}

async fn per_caller(
    cache: &Arc<PerCallerCache>,
    caller: Option<Caller>,
    role: Option<&str>,
) -> Response {
    let caller = caller.unwrap_or(Caller {
        pid: None,
        uid: u32::MAX,
        gid: u32::MAX,
    });
    match cache
        .credentials(caller.pid, caller.uid, caller.gid, role)
        .await
    {
        // Rendered per request: the memos are keyed by role, and here one role has as many
        // credential sets as SPIFFE IDs bound to it.
        Ok(creds) => http::json(
            "application/json",
            super::process::render(&creds.credentials),
        ),
        Err(refusal) => {
            use crate::credentials::per_caller::Refusal::*;
            use crate::identity::delegated::AttestError;
            let status = match &refusal {
                NoPid | NoRole { .. } | NotBound { .. } => StatusCode::FORBIDDEN,
                Attest(AttestError::Api(_)) => StatusCode::SERVICE_UNAVAILABLE,
                Attest(_) => StatusCode::FORBIDDEN,
                Ambiguous { .. } => StatusCode::CONFLICT,
                Unavailable(e) => return http::unavailable(e),
            };
            tracing::info!(pid = ?caller.pid, uid = caller.uid, reason = %refusal, "refusing a caller");
            http::text(status, refusal.to_string())
        }
    }
}

async fn credentials(State(state): State<AgentSocket>, UrlPath(role): UrlPath<String>) -> Response {
    match state.store.get(&role) {
        Ok(creds) => http::json(
            "application/json",
            state
                .memos
                .get(&role, &creds, |c| super::process::render(&c.credentials)),
        ),
        Err(e) => http::unavailable(&e),
    }
}

/// Fetches the `credential_process` JSON for `role` (or, from an agent in per-caller mode,
/// for the caller's one role when `None`) from the agent listening on `socket`.
///
/// One connection, one `GET`, `Connection: close`, and a strict reading of the answer: a
/// status line, headers, and a body exactly as long as `Content-Length` said, at most
/// 64 KiB. Needs a tokio runtime with time enabled (the whole exchange has a 10 s limit).
pub async fn fetch(socket: &Path, role: Option<&str>) -> Result<String, AgentSocketError> {
    match tokio::time::timeout(CLIENT_TIMEOUT, fetch_inner(socket, role)).await {
        Ok(result) => result,
        Err(_) => Err(AgentSocketError::Timeout {
            path: socket.to_owned(),
        }),
    }
}

async fn fetch_inner(socket: &Path, role: Option<&str>) -> Result<String, AgentSocketError> {
    let io_err = |source| AgentSocketError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).await.map_err(|source| {
        use std::io::ErrorKind::*;
        match source.kind() {
            PermissionDenied => AgentSocketError::PermissionDenied {
                path: socket.to_owned(),
            },
            _ => AgentSocketError::NotRunning {
                path: socket.to_owned(),
                source,
            },
        }
    })?;
    let path = match role {
        Some(role) => format!("/v1/credentials/{}", percent_encode(role)),
        None => "/v1/credentials".to_owned(),
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let role = role.map(str::to_owned);
    stream.write_all(request.as_bytes()).await.map_err(io_err)?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        if buf.len() > MAX_RESPONSE {
            return Err(AgentSocketError::Protocol {
                path: socket.to_owned(),
                reason: format!("the response is larger than {MAX_RESPONSE} bytes"),
            });
        }
        // Reads at most one byte past the limit, to tell "at the limit" from "over it".
        let room = MAX_RESPONSE + 1 - buf.len();
        let n = (&mut stream)
            .take(room as u64)
            .read_buf(&mut buf)
            .await
            .map_err(io_err)?;
        if n == 0 {
            break;
        }
    }
    let response =
        http::parse_response(&buf).map_err(|e: ParseError| AgentSocketError::Protocol {
            path: socket.to_owned(),
            reason: e.to_string(),
        })?;
    let message = || one_line(&response.body);
    match response.status {
        200 => String::from_utf8(response.body).map_err(|_| AgentSocketError::Protocol {
            path: socket.to_owned(),
            reason: "the body is not UTF-8".to_owned(),
        }),
        403 | 409 => Err(AgentSocketError::Refused { message: message() }),
        404 => Err(AgentSocketError::UnknownRole {
            role,
            message: message(),
        }),
        503 => Err(AgentSocketError::Unavailable {
            role,
            message: message(),
        }),
        status => Err(AgentSocketError::Status {
            role,
            status,
            message: message(),
        }),
    }
}

/// A server message made safe for one line of a terminal: printable, at most 300 chars.
fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if out.is_empty() {
        out.push_str("(no message)");
    }
    out
}

/// Percent-encodes a path segment: everything but RFC 3986 unreserved characters.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::http::testing::{creds, send, store};

    const HOUR: Duration = Duration::from_secs(3600);

    async fn start(path: &Path, store: Arc<CredentialStore>) -> tokio::sync::oneshot::Sender<()> {
        let listener = bind(path, SOCKET_MODE).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, store, async {
            let _ = rx.await;
        }));
        tx
    }

    #[tokio::test]
    async fn fetch_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let s = store(&["app", "role with/odd+chars"]);
        let c = creds(&s, "app", "ASIASOCK", HOUR);
        let expiration = http::aws_time(c.credentials.expiration);
        s.publish("app", c);
        s.publish(
            "role with/odd+chars",
            creds(&s, "role with/odd+chars", "ASIAODD", HOUR),
        );
        let _stop = start(&path, s).await;

        let body = fetch(&path, Some("app")).await.unwrap();
        assert_eq!(
            body,
            format!(
                r#"{{"Version":1,"AccessKeyId":"ASIASOCK","SecretAccessKey":"secret-ASIASOCK","SessionToken":"token-ASIASOCK","Expiration":"{expiration}"}}"#
            )
        );
        let odd = fetch(&path, Some("role with/odd+chars")).await.unwrap();
        assert!(odd.contains("ASIAODD"), "{odd}");
    }

    #[tokio::test]
    async fn host_mode_asks_for_a_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let s = store(&["app", "other"]);
        s.publish("app", creds(&s, "app", "ASIASOCK", HOUR));
        let _stop = start(&path, s).await;
        match fetch(&path, None).await {
            Err(AgentSocketError::Refused { message }) => assert_eq!(
                message,
                "this agent is in host mode: pass --role NAME (one of: app, other)"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn fetch_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let s = store(&["app", "stale"]);
        s.publish(
            "stale",
            creds(&s, "stale", "ASIASTALE", Duration::from_secs(10)),
        );
        let _stop = start(&path, s).await;

        match fetch(&path, Some("nope")).await {
            Err(AgentSocketError::UnknownRole { role, message }) => {
                assert_eq!(role.as_deref(), Some("nope"));
                assert!(message.contains("no role named"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        for role in ["app", "stale"] {
            match fetch(&path, Some(role)).await {
                Err(e @ AgentSocketError::Unavailable { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(role) && !text.contains('\n'), "{text}");
                    assert!(!text.contains("ASIASTALE"));
                }
                other => panic!("{other:?}"),
            }
        }
        let missing = dir.path().join("missing.sock");
        let err = fetch(&missing, Some("app")).await.unwrap_err();
        assert!(
            matches!(err, AgentSocketError::NotRunning { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("is `spiffe-aws-agent run` running"),
            "{err}"
        );
    }

    /// A fake agent that answers every connection with `response` and closes.
    async fn fake_agent(path: &Path, response: &'static [u8]) {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(response).await;
            }
        });
    }

    #[tokio::test]
    async fn fetch_refuses_bad_responses() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &str); 4] = [
            (b"garbage", "protocol"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "protocol",
            ),
            (
                b"HTTP/1.1 500 Internal\r\nContent-Length: 4\r\n\r\nboom",
                "status",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\xff\xfe",
                "protocol",
            ),
        ];
        for (i, (response, kind)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("fake{i}.sock"));
            fake_agent(&path, response).await;
            let err = fetch(&path, Some("app")).await.unwrap_err();
            let ok = match kind {
                "protocol" => matches!(err, AgentSocketError::Protocol { .. }),
                _ => matches!(err, AgentSocketError::Status { status: 500, .. }),
            };
            assert!(ok, "case {i}: {err:?}");
        }
        // An endless response is cut off at the limit.
        let path = dir.path().join("huge.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            if let Ok((mut conn, _)) = listener.accept().await {
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n")
                    .await;
                let chunk = vec![b'a'; 8192];
                while conn.write_all(&chunk).await.is_ok() {}
            }
        });
        let err = fetch(&path, Some("app")).await.unwrap_err();
        assert!(matches!(err, AgentSocketError::Protocol { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn socket_mode_is_0660_and_parent_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("agent.sock");
        let _listener = bind(&path, SOCKET_MODE).await.unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        // A socket whose listener is gone: what a crashed agent leaves.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = bind(&path, SOCKET_MODE).await.unwrap();
        // Now someone listens: a second agent must not steal the path.
        let err = bind(&path, SOCKET_MODE).await.unwrap_err();
        assert!(matches!(err, AgentSocketError::InUse { .. }), "{err:?}");
        drop(live);
        assert!(bind(&path, SOCKET_MODE).await.is_ok());
    }

    #[tokio::test]
    async fn regular_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        std::fs::write(&path, "precious").unwrap();
        let err = bind(&path, SOCKET_MODE).await.unwrap_err();
        assert!(
            matches!(err, AgentSocketError::NotASocket { .. }),
            "{err:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        // Nor a directory.
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            bind(&sub, SOCKET_MODE).await,
            Err(AgentSocketError::NotASocket { .. })
        ));
    }

    #[tokio::test]
    async fn server_refuses_bodies_and_unknown_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let _stop = start(&path, store(&["app"])).await;
        let conn = UnixStream::connect(&path).await.unwrap();
        let r = send(
            conn,
            "GET",
            "/v1/credentials/app",
            &[("Content-Length", "2048")],
        )
        .await;
        assert_eq!(r.status, 413);
        let conn = UnixStream::connect(&path).await.unwrap();
        assert_eq!(send(conn, "GET", "/", &[]).await.status, 404);
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(percent_encode("app-1_x.y~"), "app-1_x.y~");
        assert_eq!(percent_encode("a b/c%"), "a%20b%2Fc%25");
        assert_eq!(one_line(b"  two\nlines\r\n"), "two lines");
        assert_eq!(one_line(b""), "(no message)");
    }
}
