//! Entry points for the fuzz targets in `fuzz/`: thin wrappers that reach private functions,
//! with no logic of their own. Compiled only with `--cfg fuzzing` (which `cargo fuzz` sets),
//! so nothing here is part of the product.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

pub use axum::body::{to_bytes, Body};
pub use axum::http;
pub use axum::response::Response;

use crate::credentials::CredentialStore;
use crate::rolesanywhere::{CreateSessionError, Credentials};
use crate::serve::RequestGuard;

/// `rolesanywhere::client::parse_success`: a 201 CreateSession body into credentials.
pub fn parse_create_session(
    status: u16,
    body: &[u8],
    role_arn: &str,
    now: SystemTime,
) -> Result<Credentials, CreateSessionError> {
    crate::rolesanywhere::parse_success(status, body, role_arn, now)
}

/// `rolesanywhere::client::map_error`: a failed CreateSession response into its error.
pub fn map_create_session_error(
    status: u16,
    header_type: Option<String>,
    body: &[u8],
    region: &str,
) -> CreateSessionError {
    crate::rolesanywhere::map_error(status, header_type, body, region)
}

/// The IMDS endpoint's tower service for a listener bound to `listen`.
#[derive(Clone)]
pub struct Imds(crate::serve::imds::ImdsService);

impl Imds {
    pub fn new(
        store: Arc<CredentialStore>,
        roles: Option<Vec<String>>,
        listen: SocketAddr,
    ) -> Self {
        Imds(crate::serve::imds::ImdsService::new(
            store,
            roles,
            RequestGuard::new(listen, Arc::from(Vec::<String>::new())),
        ))
    }

    /// Answers one request (the service is synchronous: its future is always ready).
    pub fn call(&mut self, req: http::Request<Body>) -> Response {
        let ready: std::future::Ready<Result<Response, Infallible>> =
            tower_service::Service::call(&mut self.0, req);
        match ready.into_inner() {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// The container endpoint's router for a listener bound to `listen`, accepting `token` for
/// every role in `store`.
pub struct Container(axum::Router);

impl Container {
    pub fn new(store: Arc<CredentialStore>, token: &str, listen: SocketAddr) -> Self {
        let tokens = store
            .role_names()
            .map(|r| (r.to_owned(), zeroize::Zeroizing::new(token.to_owned())))
            .collect();
        Container(crate::serve::container::router(
            store,
            tokens,
            RequestGuard::new(listen, Arc::from(Vec::<String>::new())),
        ))
    }

    /// Answers one request.
    pub async fn call(&mut self, req: http::Request<Body>) -> Response {
        match tower_service::Service::call(&mut self.0, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// `serve::request_guard`: the status refusing the request, or `None` when it may be served.
pub fn guard_refusal(
    listen: SocketAddr,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> Option<http::StatusCode> {
    RequestGuard::new(listen, Arc::from(Vec::<String>::new()))
        .refusal(uri, headers)
        .map(|r| r.status())
}

/// A response read by `serve::http::parse_response`.
pub struct ParsedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// `serve::http::parse_response` (the agent-socket client's strict HTTP/1.1 parser).
pub fn parse_http_response(bytes: &[u8]) -> Result<ParsedResponse, String> {
    crate::serve::parse_response(bytes)
        .map(|r| ParsedResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        })
        .map_err(|e| e.to_string())
}

/// `serve::credentials_file::update_profile`.
pub fn update_profile(text: &str, profile: &str, values: [&str; 3], marker: &str) -> String {
    crate::serve::credentials_file::update_profile(text, profile, values, marker)
}

/// `serve::credentials_file::clear_profile_text`.
pub fn clear_profile_text(text: &str, profile: &str) -> String {
    crate::serve::credentials_file::clear_profile_text(text, profile)
}

/// Raw bytes from a client through one connection of the IMDS endpoint, as the accept loop
/// serves it (hyper's HTTP/1.1 parser with the loop's settings, then the IMDS service); returns
/// what the endpoint wrote back, at most 1 MiB. The client half closes after `input`.
pub fn imds_over_the_wire(
    store: Arc<CredentialStore>,
    listen: SocketAddr,
    input: &[u8],
) -> Vec<u8> {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
    }
    let service = crate::serve::imds::ImdsService::new(
        store,
        None,
        RequestGuard::new(listen, Arc::from(Vec::<String>::new())),
    );
    RT.with(|rt| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let conn = crate::serve::connection_builder(std::time::Duration::from_secs(1))
                .serve_connection(TokioIo::new(server), TowerToHyperService::new(service));
            let talk = async {
                let (mut read, mut write) = tokio::io::split(&mut client);
                let send = async {
                    let _ = write.write_all(input).await;
                    let _ = write.shutdown().await;
                };
                let mut out = Vec::new();
                let receive = async {
                    let _ = (&mut read).take(1 << 20).read_to_end(&mut out).await;
                };
                tokio::join!(send, receive);
                out
            };
            let (_, out) = tokio::join!(conn, async {
                tokio::time::timeout(std::time::Duration::from_secs(5), talk)
                    .await
                    .unwrap_or_default()
            });
            out
        })
    })
}
