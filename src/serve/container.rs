//! The container-credentials endpoint, as ECS and EKS Pod Identity offer it: clients set
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/v1/credentials/ROLE` and
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN` (or `…_TOKEN_FILE`), and send the token verbatim in
//! `Authorization`. The response is
//! `{"AccessKeyId","SecretAccessKey","Token","Expiration","RoleArn"}`.
//!
//! The token is the only thing between any local process and the credentials, so it is
//! compared in constant time, kept in a file only its owner can read, and never logged.
//!
//! Each role has its own token, in its own file: role `R`'s is `<token_file>.R` (for the
//! default `/run/spiffe-aws-agent/container-token`, `/run/spiffe-aws-agent/container-token.orders`).
//! A workload given one role's token file (mounted alone into its container) can read that
//! role and no other: `/v1/credentials/R` accepts only `R`'s token. This is still a
//! host-level channel: whoever can read a token file or reach the port with it gets the role.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use serde::Serialize;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::http;
use super::memo::RoleMemos;
use super::private_file::write_private_file;
use super::request_guard::RequestGuard;
use crate::bounded_file::{self, FileError, Links};
use crate::credentials::{CredentialStore, RoleCredentials};

/// Tokens longer than this are not tokens anyone meant to write.
const MAX_TOKEN_FILE: u64 = 4096;

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ContainerTokenError {
    #[error("cannot read the container authorization token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the container authorization token file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("the container authorization token file {path} is a symbolic link: give the path of the file itself")]
    Symlink { path: PathBuf },
    #[error("the container authorization token file {path} belongs to uid {owner}, not to the agent's uid {me}: another user could have chosen the token")]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error("the container authorization token file {path} has mode {mode:04o}: it must not be readable or writable by group or others (chmod 600 it)")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the container authorization token file {path} is empty: put a token in it, or delete it to have one generated")]
    Empty { path: PathBuf },
    #[error("the container authorization token file {path} is larger than {MAX_TOKEN_FILE} bytes")]
    TooLarge { path: PathBuf },
    #[error("the container authorization token in {path} must be printable ASCII (it is sent as an HTTP header)")]
    NotPrintable { path: PathBuf },
    #[error("the container authorization token file {path} has whitespace or a line break around the token: AWS SDKs and the AWS CLI send the file's contents as the Authorization header byte for byte and refuse a line break, so write the token alone (printf '%s' TOKEN > FILE)")]
    Whitespace { path: PathBuf },
    #[error("cannot create the container authorization token file {path}: {source}{}", super::runtime_dir::denied_hint(.path, .source, "--container-token-file FILE (config file: [container] token_file)"))]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the system random number generator failed; cannot generate a container authorization token")]
    Random,
}

/// The token file of `role`: `<base>.<role>` (role names are a safe alphabet).
pub fn role_token_file(base: &Path, role: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".");
    name.push(role);
    PathBuf::from(name)
}

/// Reads or creates each role's token ([`load_or_create_token`] on [`role_token_file`]).
pub fn load_or_create_role_tokens<'a>(
    base: &Path,
    roles: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<String, Zeroizing<String>>, ContainerTokenError> {
    roles
        .into_iter()
        .map(|role| {
            Ok((
                role.to_owned(),
                load_or_create_token(&role_token_file(base, role))?,
            ))
        })
        .collect()
}

/// Reads the token from `path`, or generates one and writes it there (mode 0600) when the
/// file does not exist.
///
/// An existing file is refused when group or others may read or write it (the token would
/// not be a secret), when it is empty or blank, when the token has whitespace around it (a
/// trailing newline too: clients read the same file and send it verbatim, and botocore and
/// aws-config refuse a header value with a line break), or when it holds anything but
/// printable ASCII. A new token is 32 random bytes in base64url; it is written to a
/// temporary file created exclusively with mode 0600, synced, then renamed into place, so a
/// reader never sees a partial token.
pub fn load_or_create_token(path: &Path) -> Result<Zeroizing<String>, ContainerTokenError> {
    // Not through a link: whoever can replace the path with a link to a file of theirs would
    // choose the token (or learn which file the agent reads).
    match bounded_file::open_regular(path, Links::Refuse) {
        Ok(file) => read_token(path, file),
        Err(FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => create_token(path),
        Err(FileError::NotRegular) => Err(ContainerTokenError::NotAFile {
            path: path.to_owned(),
        }),
        Err(FileError::Symlink) => Err(ContainerTokenError::Symlink {
            path: path.to_owned(),
        }),
        Err(FileError::Io(source)) => Err(ContainerTokenError::Read {
            path: path.to_owned(),
            source,
        }),
        Err(FileError::TooLarge { .. }) => Err(ContainerTokenError::TooLarge {
            path: path.to_owned(),
        }),
    }
}

fn read_token(path: &Path, file: fs::File) -> Result<Zeroizing<String>, ContainerTokenError> {
    let read_err = |source| ContainerTokenError::Read {
        path: path.to_owned(),
        source,
    };
    // Checked on the open handle, so the file judged is the file read.
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(ContainerTokenError::NotAFile {
            path: path.to_owned(),
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(ContainerTokenError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ContainerTokenError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut raw = Zeroizing::new(Vec::new());
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_end(&mut raw)
        .map_err(read_err)?;
    if raw.len() as u64 > MAX_TOKEN_FILE {
        return Err(ContainerTokenError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::str::from_utf8(&raw).map_err(|_| ContainerTokenError::NotPrintable {
        path: path.to_owned(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ContainerTokenError::Empty {
            path: path.to_owned(),
        });
    }
    if token.len() != text.len() {
        return Err(ContainerTokenError::Whitespace {
            path: path.to_owned(),
        });
    }
    if !token.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ContainerTokenError::NotPrintable {
            path: path.to_owned(),
        });
    }
    Ok(Zeroizing::new(token.to_owned()))
}

fn create_token(path: &Path) -> Result<Zeroizing<String>, ContainerTokenError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    ring::rand::SystemRandom::new()
        .fill(&mut raw[..])
        .map_err(|_| ContainerTokenError::Random)?;
    let token = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..]));
    write_private_file(path, token.as_bytes()).map_err(|source| ContainerTokenError::Write {
        path: path.to_owned(),
        source,
    })?;
    tracing::info!(path = %path.display(), "generated a container authorization token");
    Ok(token)
}

/// Builds the container-credentials router over `store`, accepting each role's own token on
/// requests `guard` lets through.
pub(crate) fn router(
    store: Arc<CredentialStore>,
    tokens: HashMap<String, Zeroizing<String>>,
    guard: RequestGuard,
) -> Router {
    let state = Container {
        memos: Arc::new(RoleMemos::new(store.role_names())),
        store,
        tokens: Arc::new(tokens),
    };
    Router::new()
        .route("/v1/credentials/{role}", get(credentials))
        .fallback(|| async { http::text(StatusCode::NOT_FOUND, "not found") })
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
        .with_state(state)
}

/// Serves container credentials on an already-bound listener until `shutdown` completes.
/// `tokens` maps each role to the one token that may read it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<CredentialStore>,
    tokens: HashMap<String, Zeroizing<String>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_for_hosts(listener, store, tokens, Vec::new(), shutdown).await
}

/// [`serve`], also answering requests whose `Host` is one of `allowed_hosts`.
pub(crate) async fn serve_for_hosts(
    listener: tokio::net::TcpListener,
    store: Arc<CredentialStore>,
    tokens: HashMap<String, Zeroizing<String>>,
    allowed_hosts: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let guard = RequestGuard::new(listener.local_addr()?, Arc::from(allowed_hosts));
    let counters = store.metrics().endpoint("container");
    http::serve(listener, router(store, tokens, guard), shutdown, counters).await
}

#[derive(Clone)]
struct Container {
    store: Arc<CredentialStore>,
    tokens: Arc<HashMap<String, Zeroizing<String>>>,
    memos: Arc<RoleMemos>,
}

/// Whether `headers` carry exactly the token, compared in constant time (the length of the
/// token is not a secret; its bytes are).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => bool::from(v.as_bytes().ct_eq(token.as_bytes())),
        // None, or several: a request with two Authorization headers is not one we trust.
        _ => false,
    }
}

/// The container credentials document.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Document<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
    role_arn: &'a str,
}

fn render(creds: &RoleCredentials) -> String {
    let c = &creds.credentials;
    let doc = Document {
        access_key_id: &c.access_key_id,
        secret_access_key: &c.secret_access_key,
        token: &c.session_token,
        expiration: http::aws_time(c.expiration),
        role_arn: &c.role_arn,
    };
    serde_json::to_string(&doc).unwrap_or_default()
}

async fn credentials(
    State(state): State<Container>,
    headers: HeaderMap,
    UrlPath(role): UrlPath<String>,
) -> Response {
    // 401, not 403: the request did not prove who it is (there is one principal, the
    // token holder), which is what 401 means. The SDKs treat both as a failed fetch, and
    // no WWW-Authenticate challenge is sent because no scheme would help.
    // An unknown role has no token, so it is refused like a wrong token: no enumeration.
    let token_ok = state
        .tokens
        .get(&role)
        .is_some_and(|token| authorized(&headers, token));
    if !token_ok {
        return http::text(
            StatusCode::UNAUTHORIZED,
            "missing or wrong Authorization: set AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE to this role's token file (<token_file>.<role>)",
        );
    }
    match state.store.get(&role) {
        Ok(creds) => http::json("application/json", state.memos.get(&role, &creds, render)),
        Err(e) => http::unavailable(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::http::testing::{creds, store, tcp};
    use std::net::SocketAddr;
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    const HOUR: Duration = Duration::from_secs(3600);

    async fn start(
        store: Arc<CredentialStore>,
        token: &str,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let tokens = store
            .role_names()
            .map(|r| {
                (
                    r.to_owned(),
                    Zeroizing::new(format!("{token}{}", suffix(r))),
                )
            })
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, store, tokens, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    /// Role `app` has the token as given; every other role the token plus `-<role>`.
    fn suffix(role: &str) -> String {
        if role == "app" {
            String::new()
        } else {
            format!("-{role}")
        }
    }

    #[tokio::test]
    async fn a_foreign_host_or_a_proxy_header_is_refused_even_with_the_token() {
        let s = store(&["app"]);
        s.publish("app", creds(&s, "app", "ASIACONT", HOUR));
        let (addr, _stop) = start(s, "sekrit-token").await;
        let auth = ("Authorization", "sekrit-token");
        // `send` names the endpoint as `localhost`; a second Host is a foreign one.
        let r = tcp(
            addr,
            "GET",
            "/v1/credentials/app",
            &[auth, ("Host", "evil.example")],
        )
        .await;
        assert_eq!(r.status, 403);
        let r = tcp(
            addr,
            "GET",
            "/v1/credentials/app",
            &[auth, ("X-Forwarded-For", "1.2.3.4")],
        )
        .await;
        assert_eq!(r.status, 403);
        let r = tcp(addr, "GET", "/v1/credentials/app", &[auth]).await;
        assert_eq!(r.status, 200);
    }

    #[tokio::test]
    async fn serves_the_published_credentials_with_the_token() {
        let s = store(&["app"]);
        let c = creds(&s, "app", "ASIACONT", HOUR);
        let expiration = http::aws_time(c.credentials.expiration);
        s.publish("app", c);
        let (addr, _stop) = start(s, "sekrit-token").await;
        let r = tcp(
            addr,
            "GET",
            "/v1/credentials/app",
            &[("Authorization", "sekrit-token")],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(doc["AccessKeyId"], "ASIACONT");
        assert_eq!(doc["SecretAccessKey"], "secret-ASIACONT");
        assert_eq!(doc["Token"], "token-ASIACONT");
        assert_eq!(doc["Expiration"], expiration.as_str());
        assert_eq!(doc["RoleArn"], "arn:aws:iam::123456789012:role/app");
        assert_eq!(doc.as_object().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn refuses_missing_or_wrong_tokens() {
        let s = store(&["app"]);
        s.publish("app", creds(&s, "app", "ASIACONT", HOUR));
        let (addr, _stop) = start(s, "sekrit-token").await;
        let path = "/v1/credentials/app";
        assert_eq!(tcp(addr, "GET", path, &[]).await.status, 401);
        for wrong in [
            "sekrit-toke",
            "sekrit-token2",
            "SEKRIT-TOKEN",
            "Bearer sekrit-token",
            "",
        ] {
            let r = tcp(addr, "GET", path, &[("Authorization", wrong)]).await;
            assert_eq!(r.status, 401, "{wrong:?}");
            assert!(!String::from_utf8_lossy(&r.body).contains("ASIACONT"));
        }
        let twice = tcp(
            addr,
            "GET",
            path,
            &[("Authorization", "sekrit-token"), ("Authorization", "x")],
        )
        .await;
        assert_eq!(twice.status, 401);
        // The token is checked before the role is looked up: no role enumeration.
        assert_eq!(
            tcp(addr, "GET", "/v1/credentials/nope", &[]).await.status,
            401
        );
    }

    #[tokio::test]
    async fn unknown_role_404_unavailable_503() {
        let s = store(&["app", "stale"]);
        s.publish(
            "stale",
            creds(&s, "stale", "ASIASTALE", Duration::from_secs(60)),
        );
        let (addr, _stop) = start(s, "t").await;
        let auth = [("Authorization", "t")];
        // An unknown role has no token: 401, like a wrong token (no role enumeration).
        assert_eq!(
            tcp(addr, "GET", "/v1/credentials/nope", &auth).await.status,
            401
        );
        assert_eq!(
            tcp(addr, "GET", "/v1/credentials/app", &auth).await.status,
            503
        );
        let r = tcp(
            addr,
            "GET",
            "/v1/credentials/stale",
            &[("Authorization", "t-stale")],
        )
        .await;
        assert_eq!(r.status, 503);
        assert!(!String::from_utf8_lossy(&r.body).contains("ASIASTALE"));
        assert_eq!(tcp(addr, "GET", "/other", &auth).await.status, 404);
        assert_eq!(
            tcp(
                addr,
                "GET",
                "/v1/credentials/app",
                &[("Authorization", "t"), ("Content-Length", "5000")]
            )
            .await
            .status,
            413
        );
    }

    #[tokio::test]
    async fn each_role_takes_only_its_own_token() {
        let s = store(&["app", "other"]);
        s.publish("app", creds(&s, "app", "ASIAAPP", HOUR));
        s.publish("other", creds(&s, "other", "ASIAOTHER", HOUR));
        let (addr, _stop) = start(s, "tok").await;
        let get = |path: &'static str, token: &'static str| async move {
            tcp(addr, "GET", path, &[("Authorization", token)]).await
        };
        assert_eq!(get("/v1/credentials/app", "tok").await.status, 200);
        assert_eq!(get("/v1/credentials/other", "tok-other").await.status, 200);
        // app's token does not open other, nor the reverse.
        let r = get("/v1/credentials/other", "tok").await;
        assert_eq!(r.status, 401);
        assert!(!String::from_utf8_lossy(&r.body).contains("ASIAOTHER"));
        assert_eq!(get("/v1/credentials/app", "tok-other").await.status, 401);
    }

    #[test]
    fn role_token_files_are_named_after_the_role() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("container-token");
        let tokens = load_or_create_role_tokens(&base, ["orders", "reviews"]).unwrap();
        assert_ne!(*tokens["orders"], *tokens["reviews"]);
        assert_eq!(
            fs::read_to_string(dir.path().join("container-token.orders")).unwrap(),
            *tokens["orders"]
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("container-token.reviews")).unwrap(),
            *tokens["reviews"]
        );
    }

    #[test]
    fn constant_time_check_accepts_only_the_exact_token() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "abc"));
        h.insert(header::AUTHORIZATION, "abc".parse().unwrap());
        assert!(authorized(&h, "abc"));
        assert!(!authorized(&h, "abcd"));
        assert!(!authorized(&h, "ab"));
        assert!(!authorized(&h, "abC"));
    }

    #[test]
    fn creates_a_private_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("container-token");
        let token = load_or_create_token(&path).unwrap();
        assert!(token.len() >= 43);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), *token);
        // Read back, the same token.
        assert_eq!(*load_or_create_token(&path).unwrap(), *token);
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn refuses_a_linked_or_foreign_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::write(&real, "chosen-by-someone").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("token");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = load_or_create_token(&link).unwrap_err();
        assert!(matches!(err, ContainerTokenError::Symlink { .. }), "{err}");
        // Owned by another user (the tests run as root in CI, which may chown).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&real, Some(4242), None).unwrap();
            let err = load_or_create_token(&real).unwrap_err();
            assert!(
                matches!(err, ContainerTokenError::Owner { owner: 4242, .. }),
                "{err}"
            );
        }
        // A FIFO is refused at once instead of waiting for a writer.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = load_or_create_token(&fifo).unwrap_err();
        assert!(matches!(err, ContainerTokenError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn reads_an_existing_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "my-token").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(*load_or_create_token(&path).unwrap(), "my-token");
    }

    /// Clients read the same file and send its bytes as the header; botocore and aws-config
    /// refuse a line break, so a token the agent accepted would fail in every client.
    #[test]
    fn refuses_whitespace_around_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        for text in ["my-token\n", "my-token\r\n", "  my-token", "my-token "] {
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = load_or_create_token(&path).unwrap_err();
            assert!(
                matches!(err, ContainerTokenError::Whitespace { .. }),
                "{text:?}: {err}"
            );
            assert!(err.to_string().contains("printf '%s'"), "{err}");
        }
    }

    #[test]
    fn refuses_unsafe_or_useless_token_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "my-token").unwrap();
        for mode in [0o644, 0o604, 0o640, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = load_or_create_token(&path).unwrap_err();
            assert!(
                matches!(err, ContainerTokenError::Permissions { .. }),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"));
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, " \n").unwrap();
        assert!(matches!(
            load_or_create_token(&path),
            Err(ContainerTokenError::Empty { .. })
        ));
        fs::write(&path, "a\u{1}b").unwrap();
        assert!(matches!(
            load_or_create_token(&path),
            Err(ContainerTokenError::NotPrintable { .. })
        ));
        fs::write(&path, vec![b'a'; 5000]).unwrap();
        assert!(matches!(
            load_or_create_token(&path),
            Err(ContainerTokenError::TooLarge { .. })
        ));
        assert!(matches!(
            load_or_create_token(dir.path()),
            Err(ContainerTokenError::NotAFile { .. })
        ));
    }
}
