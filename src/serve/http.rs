//! What every HTTP endpoint of the agent shares: one hardened accept loop, a body limit, the
//! time format of credential documents, and the strict HTTP/1.1 response parser the
//! agent-socket client uses.
//!
//! The endpoints are local and answer tiny requests, so the loop is deliberately small:
//! HTTP/1.1 only, a header-read timeout so a client that never finishes its request does not
//! hold a connection forever, a cap on header size and on open connections, and a graceful
//! shutdown that lets in-flight requests finish for a bounded time.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;

use super::flood_memory::FloodMemory;
use crate::credentials::Unavailable;
use crate::log_limit::LogLimiter;
use crate::metrics::EndpointCounters;

/// Largest request body any endpoint accepts. No endpoint reads a body; a client sending a
/// large one is not an AWS SDK.
pub(crate) const MAX_BODY: u64 = 1024;
/// How long a client may take to send its request headers (also how long an idle
/// keep-alive connection stays open).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The same while more than half of [`MAX_CONNECTIONS`] are open.
const PRESSURE_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// hyper's read buffer, and so the largest request head (its minimum allowed value).
const MAX_HEAD: usize = 8192;
/// Open connections per listener; at the limit, the likeliest flood connection makes room.
const MAX_CONNECTIONS: usize = 4096;
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A listening socket the accept loop can take connections from (TCP or unix).
pub(crate) trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_io(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept_io(&self) -> io::Result<Self::Io> {
        let (stream, _) = self.accept().await?;
        // Responses are one small write; do not let Nagle delay them.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept_io(&self) -> io::Result<Self::Io> {
        Ok(self.accept().await?.0)
    }
}

/// What the accept loop knows about one open connection.
#[derive(Default)]
struct ConnState {
    /// Requests whose head arrived complete on it.
    requests: AtomicU64,
    /// When it last delivered a request (or opened), in ms since the loop started.
    last_active_ms: AtomicU64,
}

/// A service that marks its connection active on every request and counts its answers.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
    epoch: Instant,
    counters: EndpointCounters,
}

pin_project_lite::pin_project! {
    /// The inner service's future, counting the status of the response it yields (one
    /// atomic add; no allocation).
    struct Counted<F> {
        #[pin]
        inner: F,
        counters: EndpointCounters,
    }
}

impl<F, E> Future for Counted<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Ok(resp) = &out {
            this.counters.request(resp.status().as_u16());
        }
        std::task::Poll::Ready(out)
    }
}

impl<S, R> tower_service::Service<R> for Tracked<S>
where
    S: tower_service::Service<R, Response = Response>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        self.state
            .last_active_ms
            .store(millis_since(self.epoch), Ordering::Relaxed);
        Counted {
            inner: self.inner.call(req),
            counters: self.counters.clone(),
        }
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Which open connection to close to make room: one that never delivered a request (idle or
/// trickling its headers: what a flood holds), the oldest first; else the one idle longest.
fn shed_victim(open: &HashMap<tokio::task::Id, Arc<ConnState>>) -> Option<tokio::task::Id> {
    open.iter()
        .min_by_key(|(_, c)| {
            (
                c.requests.load(Ordering::Relaxed) > 0,
                c.last_active_ms.load(Ordering::Relaxed),
            )
        })
        .map(|(id, _)| *id)
}

/// Serves `router` on `listener` until `shutdown` completes, then drains connections.
///
/// At [`MAX_CONNECTIONS`] open connections a new one is still accepted: the connection most
/// likely held by a flood (never sent a whole request, oldest first; else idle longest) is
/// closed to make room, so clients that send requests keep being served while another local
/// process holds thousands of idle or slow connections. Above half the limit, new
/// connections get [`PRESSURE_HEADER_READ_TIMEOUT`] instead of [`HEADER_READ_TIMEOUT`].
///
/// Returns an error only when the listener itself fails in a way retrying cannot fix;
/// per-connection errors are logged at debug level and never end the server.
pub(crate) async fn serve<L, S>(
    listener: L,
    router: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
    counters: EndpointCounters,
) -> io::Result<()>
where
    L: Accept,
    S: tower_service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    serve_each(
        listener,
        move |_: &L::Io| router.clone(),
        shutdown,
        counters,
    )
    .await
}

/// [`serve`], with a service made for each connection from the connection itself (the agent
/// socket in per-caller mode learns who is calling from the socket).
pub(crate) async fn serve_each<L, S, F>(
    listener: L,
    make_service: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
    counters: EndpointCounters,
) -> io::Result<()>
where
    L: Accept,
    F: Fn(&L::Io) -> S + Send + 'static,
    S: tower_service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let what = counters.name();
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let mut open: HashMap<tokio::task::Id, Arc<ConnState>> = HashMap::new();
    let mut handles: HashMap<tokio::task::Id, tokio::task::AbortHandle> = HashMap::new();
    let mut flood = FloodMemory::default();
    let epoch = Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = conns.join_next_with_id(), if !conns.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                open.remove(&id);
                handles.remove(&id);
                if flood.observe(open.len()) {
                    open.shrink_to_fit();
                    handles.shrink_to_fit();
                }
            }
            accepted = listener.accept_io() => match accepted {
                Ok(io) => {
                    if open.len() >= MAX_CONNECTIONS {
                        if let Some(victim) = shed_victim(&open) {
                            if let Some(handle) = handles.remove(&victim) {
                                handle.abort();
                            }
                            open.remove(&victim);
                            counters.shed();
                        }
                        if SHED_LOG.admit(what) {
                            tracing::warn!(endpoint = what, "{MAX_CONNECTIONS} connections are open: closing idle ones to serve new clients (a local process may be flooding the endpoint)");
                        }
                    }
                    let header_timeout = if open.len() > MAX_CONNECTIONS / 2 {
                        PRESSURE_HEADER_READ_TIMEOUT
                    } else {
                        HEADER_READ_TIMEOUT
                    };
                    let state = Arc::new(ConnState::default());
                    state.last_active_ms.store(millis_since(epoch), Ordering::Relaxed);
                    let service = Tracked {
                        inner: make_service(&io),
                        state: Arc::clone(&state),
                        epoch,
                        counters: counters.clone(),
                    };
                    let mut closing = closing_rx.clone();
                    let handle = conns.spawn(async move {
                        let conn = connection_builder(header_timeout)
                            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
                        tokio::pin!(conn);
                        let result = tokio::select! {
                            r = conn.as_mut() => r,
                            _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        };
                        if let Err(e) = result {
                            tracing::debug!(endpoint = what, error = %e, "connection ended with an error");
                        }
                    });
                    open.insert(handle.id(), state);
                    handles.insert(handle.id(), handle);
                    flood.observe(open.len());
                }
                Err(e) => match accept_error_kind(&e) {
                    AcceptError::Ignore => {}
                    AcceptError::Backoff => {
                        counters.shed();
                        if ACCEPT_LOG.admit(what) {
                            tracing::warn!(endpoint = what, error = %e, "accept failed; retrying shortly");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    AcceptError::Fatal => return Err(e),
                },
            },
        }
    }
    let _ = closing_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            endpoint = what,
            "connections still open at shutdown; closing them"
        );
    }
    // Dropping the JoinSet aborts whatever is left.
    Ok(())
}

/// hyper's HTTP/1.1 settings for one connection: a header-read timeout and a read buffer
/// that caps the request head.
pub(crate) fn connection_builder(header_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD);
    builder
}

/// Raises this process's open-file limit to its hard limit (systemd and many shells start
/// services at a soft limit of 1024, which a local connection flood exhausts before
/// [`MAX_CONNECTIONS`] is reached). Best effort: a failure leaves the limit as it was.
pub(crate) fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Rate limits for the accept loop's own log lines.
static SHED_LOG: LogLimiter = LogLimiter::new();
static ACCEPT_LOG: LogLimiter = LogLimiter::new();
/// ... and for refused credential requests.
static REFUSAL_LOG: LogLimiter = LogLimiter::new();

enum AcceptError {
    Ignore,
    Backoff,
    Fatal,
}

fn accept_error_kind(e: &io::Error) -> AcceptError {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock => AcceptError::Ignore,
        _ => match e.raw_os_error() {
            // EMFILE, ENFILE, ENOBUFS, ENOMEM: resources run out, and come back.
            Some(24 | 23 | 105 | 12) => AcceptError::Backoff,
            _ => AcceptError::Fatal,
        },
    }
}

/// Middleware: refuses request bodies over [`MAX_BODY`] (413) and bodies of unknown length
/// (411), before any handler runs.
pub(crate) async fn limit_body(req: Request, next: Next) -> Response {
    if let Some(refusal) = body_refusal(req.headers()) {
        return refusal;
    }
    next.run(req).await
}

pub(crate) fn body_refusal(headers: &HeaderMap) -> Option<Response> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Some(text(
            StatusCode::LENGTH_REQUIRED,
            "request bodies must have a Content-Length",
        ));
    }
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let ok = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n <= MAX_BODY);
        if !ok {
            return Some(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
    }
    None
}

/// A plain-text response. Messages never contain secrets.
pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// A JSON response carrying credentials: never cached by anything in between.
pub(crate) fn json(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

pub(crate) use crate::display::aws_time;

/// 404 for an unknown role, 503 (clients retry) when credentials are not usable yet.
pub(crate) fn unavailable(e: &Unavailable) -> Response {
    match e {
        Unavailable::UnknownRole(_) => text(StatusCode::NOT_FOUND, e.to_string()),
        Unavailable::NotReady { .. } | Unavailable::ExpiringSoon { .. } => {
            let reason = e.to_string();
            if REFUSAL_LOG.admit(&reason) {
                tracing::info!(%reason, "refusing credentials requests");
            }
            let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, reason);
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            resp
        }
    }
}

/// A response read by [`parse_response`].
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header named `name` (case-insensitive).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a response could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    #[error("the response ended before its header did")]
    Truncated,
    #[error("malformed status line")]
    StatusLine,
    #[error("malformed header line")]
    Header,
    #[error("missing or invalid Content-Length")]
    ContentLength,
    #[error("the body is {got} bytes, Content-Length said {want}")]
    BodyLength { got: usize, want: usize },
}

/// Parses a complete HTTP/1.1 response (the connection was closed after it), strictly:
/// `HTTP/1.x NNN reason`, CRLF-terminated headers, a `Content-Length` that matches the body
/// exactly, no chunked encoding.
pub(crate) fn parse_response(bytes: &[u8]) -> Result<RawResponse, ParseError> {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(ParseError::Truncated)?;
    let head = std::str::from_utf8(&bytes[..head_end]).map_err(|_| ParseError::Header)?;
    let body = &bytes[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(ParseError::StatusLine)?;
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .ok_or(ParseError::StatusLine)?;
    let code = rest.get(..3).ok_or(ParseError::StatusLine)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(rest.len() == 3 || rest[3..].starts_with(' '))
    {
        return Err(ParseError::StatusLine);
    }
    let status: u16 = code.parse().map_err(|_| ParseError::StatusLine)?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(ParseError::Header)?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError::Header);
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let resp = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if resp.header("transfer-encoding").is_some() {
        return Err(ParseError::ContentLength);
    }
    let want: usize = resp
        .header("content-length")
        .ok_or(ParseError::ContentLength)?
        .parse()
        .map_err(|_| ParseError::ContentLength)?;
    if body.len() != want {
        return Err(ParseError::BodyLength {
            got: body.len(),
            want,
        });
    }
    Ok(RawResponse {
        body: body.to_vec(),
        ..resp
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! A raw HTTP client for tests: sends exactly the bytes given, so tests can send what a
    //! polite client never would.

    use super::{parse_response, RawResponse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `request` (a full request head, `Connection: close` is added) and reads the
    /// response until the server closes the connection.
    pub(crate) async fn send<S>(
        mut stream: S,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> RawResponse
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.unwrap();
        parse_response(&buf).unwrap()
    }

    /// A store with `roles` (named after themselves, ARN in account 123456789012) that
    /// refuses credentials with less than 5 minutes left, on tokio's clock.
    pub(crate) fn store(roles: &[&str]) -> std::sync::Arc<crate::credentials::CredentialStore> {
        std::sync::Arc::new(crate::credentials::CredentialStore::new(
            roles
                .iter()
                .map(|r| (r.to_string(), format!("arn:aws:iam::123456789012:role/{r}"))),
            std::time::Duration::from_secs(300),
            std::sync::Arc::new(crate::clock::TokioClock::new()),
        ))
    }

    /// Credentials for `role` in `store`, valid for `valid_for` from the store's now.
    pub(crate) fn creds(
        store: &crate::credentials::CredentialStore,
        role: &str,
        key_id: &str,
        valid_for: std::time::Duration,
    ) -> crate::credentials::RoleCredentials {
        let now = store.clock().now();
        crate::credentials::RoleCredentials::new(
            crate::rolesanywhere::Credentials {
                access_key_id: key_id.to_owned(),
                secret_access_key: zeroize::Zeroizing::new(format!("secret-{key_id}")),
                session_token: zeroize::Zeroizing::new(format!("token-{key_id}")),
                expiration: now + valid_for,
                assumed_role_arn: None,
                role_arn: store.role_arn(role).unwrap_or_default().to_owned(),
            },
            now,
            Some("spiffe://example.org/w".to_owned()),
            [7; 32],
        )
    }

    pub(crate) async fn tcp(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> RawResponse {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        send(stream, method, path, headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One local process holds 2,000 idle or slow connections (reconnecting whenever one is
    /// closed) while a client makes requests: the client is served.
    #[test]
    fn a_connection_flood_does_not_lock_clients_out() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        raise_open_file_limit();
        // The server, on its own runtime and thread, as in the agent.
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = server_rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        #[derive(Clone)]
        struct Ok200;
        impl tower_service::Service<hyper::Request<hyper::body::Incoming>> for Ok200 {
            type Response = Response;
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<Response, Self::Error>>;
            fn poll_ready(
                &mut self,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: hyper::Request<hyper::body::Incoming>) -> Self::Future {
                std::future::ready(Ok(text(StatusCode::OK, "ok")))
            }
        }
        let counters = crate::metrics::Metrics::detached().endpoint("test");
        server_rt.spawn(serve(listener, Ok200, std::future::pending(), counters));

        // The flood: half idle, half sending a header line and then nothing.
        let flood_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        for i in 0..2000 {
            flood_rt.spawn(async move {
                loop {
                    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if i % 2 == 1 {
                        let _ = s.write_all(b"GET / HTTP/1.1\r\n").await;
                    }
                    // Held until the server closes it.
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf).await;
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));

        // The client.
        let client_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (served, mut latencies) = client_rt.block_on(async move {
            let mut served = 0;
            let mut latencies = Vec::new();
            for _ in 0..300 {
                let start = Instant::now();
                let result = tokio::time::timeout(Duration::from_secs(2), async {
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                        .await?;
                    let mut buf = Vec::new();
                    s.read_to_end(&mut buf).await?;
                    Ok::<_, io::Error>(buf)
                })
                .await;
                latencies.push(start.elapsed());
                if let Ok(Ok(buf)) = result {
                    if buf.starts_with(b"HTTP/1.1 200") {
                        served += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (served, latencies)
        });
        flood_rt.shutdown_background();
        server_rt.shutdown_background();
        latencies.sort();
        let p99 = latencies[latencies.len() * 99 / 100];
        assert!(served >= 297, "served {served} of 300 requests");
        assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    }

    #[test]
    fn parses_a_strict_response() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-A: b\r\n\r\nhi").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("X-a"), Some("b"));
        assert_eq!(r.body, b"hi");
    }

    #[test]
    fn refuses_sloppy_responses() {
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\n"),
            Err(ParseError::Truncated)
        ));
        assert!(matches!(
            parse_response(b"HTTP/2 200\r\n\r\n"),
            Err(ParseError::StatusLine)
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n"),
            Err(ParseError::StatusLine)
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\nbody"),
            Err(ParseError::ContentLength)
        ));
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 0\r\n\r\n"
            ),
            Err(ParseError::ContentLength)
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhi"),
            Err(ParseError::BodyLength { got: 2, want: 5 })
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"),
            Err(ParseError::Header)
        ));
    }

    #[test]
    fn body_limits() {
        let mut h = HeaderMap::new();
        assert!(body_refusal(&h).is_none());
        h.insert(header::CONTENT_LENGTH, "1024".parse().unwrap());
        assert!(body_refusal(&h).is_none());
        h.insert(header::CONTENT_LENGTH, "1025".parse().unwrap());
        assert_eq!(
            body_refusal(&h).unwrap().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        h.insert(header::CONTENT_LENGTH, "junk".parse().unwrap());
        assert_eq!(
            body_refusal(&h).unwrap().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let mut h = HeaderMap::new();
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert_eq!(
            body_refusal(&h).unwrap().status(),
            StatusCode::LENGTH_REQUIRED
        );
    }
}
