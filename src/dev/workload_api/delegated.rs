//! A double of the SPIRE agent's Delegated Identity API (the admin socket), for per-caller
//! mode.
//!
//! It stands for a SPIRE agent (≥ 1.10) with `admin_socket_path` set, the `unix` workload
//! attestor, and registration entries whose only selector is `unix:uid:N` (optionally with
//! `unix:gid:N`). Reproduced as SPIRE does it:
//!
//! - **the delegate is authorized on every call and every update**: SPIRE attests the caller
//!   of the admin API (its pid from the socket) and needs one of its SPIFFE IDs in
//!   `authorized_delegates`. Here the caller's uid stands for its SPIFFE ID
//!   ([`DelegatedIdentityDouble::start`]'s `delegates`); a uid with none is refused with
//!   `PermissionDenied` "no identity issued", one whose ID is not authorized with
//!   `PermissionDenied` "caller not configured as an authorized delegate";
//! - **`SubscribeToX509SVIDs` with `pid`** attests that process the way the `unix` attestor
//!   does, from the real and effective ids in `/proc/PID/status`, once, when the stream
//!   opens (a process that cannot be read fails with `Internal` "workload attestation
//!   failed"); `pid` and `selectors` together, or neither, fail with `InvalidArgument`;
//!   `selectors` of the form `unix:uid:N`/`unix:gid:N` are matched directly;
//! - the stream sends the full set of SVIDs for the attested selectors first, then again on
//!   every change ([`register`](DelegatedIdentityDouble::register),
//!   [`remove`](DelegatedIdentityDouble::remove)); a workload with no entry gets an empty set,
//!   not an error (as SPIRE does), and so does one whose last entry was removed.
//!
//! Not reproduced: other selectors (k8s, docker), the other RPCs (bundles, JWT-SVIDs), which
//! answer `Unimplemented`, and SVID rotation on a timer (tests register a new SVID instead).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use super::{remove_stale_socket, SvidEntry, WorkloadApiDoubleError};

/// Code generated from `proto/spire/*.proto` by `build.rs`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::large_enum_variant
)]
pub(crate) mod pb {
    pub mod spire {
        pub mod api {
            pub mod agent {
                pub mod delegatedidentity {
                    pub mod v1 {
                        include!(concat!(
                            env!("OUT_DIR"),
                            "/spire.api.agent.delegatedidentity.v1.rs"
                        ));

                        // `build.rs` skips the derived Debug: the message carries a key.
                        impl std::fmt::Debug for X509svidWithKey {
                            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                                f.debug_struct("X509svidWithKey")
                                    .field("x509_svid", &self.x509_svid)
                                    .field("x509_svid_key", &"<redacted>")
                                    .finish()
                            }
                        }
                    }
                }
            }
            pub mod types {
                include!(concat!(env!("OUT_DIR"), "/spire.api.types.rs"));
            }
        }
    }
}

use pb::spire::api::agent::delegatedidentity::v1 as di;
use pb::spire::api::types;

/// SPIRE's message when the caller of the admin API has no registration entry.
const NO_IDENTITY_ISSUED: &str = "no identity issued";
/// SPIRE's message when none of the caller's SPIFFE IDs is an authorized delegate.
const NOT_AUTHORIZED: &str = "caller not configured as an authorized delegate";

/// A registration entry: the workloads running as `uid` (and `gid`, when given) get `svid`.
#[derive(Clone, Debug)]
pub struct Registration {
    pub uid: u32,
    pub gid: Option<u32>,
    pub svid: SvidEntry,
}

#[derive(Clone, Default)]
struct Registry {
    entries: Arc<Vec<Registration>>,
    /// uid → the SPIFFE ID a process running as it has (the delegates).
    delegates: Arc<HashMap<u32, String>>,
    authorized: Arc<Vec<String>>,
    closing: bool,
}

impl Registry {
    /// Fails like SPIRE unless the process running as `uid` is an authorized delegate.
    fn authorize(&self, uid: Option<u32>) -> Result<(), Status> {
        if self.closing {
            return Err(Status::unavailable("the SPIRE double is shutting down"));
        }
        let id = uid
            .and_then(|u| self.delegates.get(&u))
            .ok_or_else(|| Status::permission_denied(NO_IDENTITY_ISSUED))?;
        if self.authorized.contains(id) {
            Ok(())
        } else {
            Err(Status::permission_denied(NOT_AUTHORIZED))
        }
    }

    fn response(&self, uid: u32, gid: u32) -> di::SubscribeToX509sviDsResponse {
        let x509_svids = self
            .entries
            .iter()
            .filter(|e| e.uid == uid && e.gid.is_none_or(|g| g == gid))
            .map(|e| di::X509svidWithKey {
                x509_svid: Some(types::X509svid {
                    cert_chain: e.svid.chain_der.clone(),
                    id: Some(spiffe_id_proto(&e.svid.spiffe_id)),
                    expires_at: not_after(&e.svid),
                    hint: e.svid.hint.clone(),
                }),
                x509_svid_key: e.svid.key_pkcs8_der.clone(),
            })
            .collect();
        di::SubscribeToX509sviDsResponse {
            x509_svids,
            federates_with: Vec::new(),
        }
    }
}

/// `spiffe://td/path` as its parts.
fn spiffe_id_proto(id: &str) -> types::Spiffeid {
    let rest = id.strip_prefix("spiffe://").unwrap_or(id);
    let (td, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    types::Spiffeid {
        trust_domain: td.to_owned(),
        path: path.to_owned(),
    }
}

fn not_after(svid: &SvidEntry) -> i64 {
    use x509_parser::prelude::FromDer as _;
    svid.chain_der
        .first()
        .and_then(|der| x509_parser::certificate::X509Certificate::from_der(der).ok())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .unwrap_or_default()
}

/// The real uid and gid of process `pid`, from `/proc/PID/status`, as SPIRE's `unix`
/// attestor reads them.
fn process_ids(pid: i32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_ascii_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// What a subscription asks about: the ids attested from a pid, or given as selectors.
fn workload(request: &di::SubscribeToX509sviDsRequest) -> Result<(u32, u32), Status> {
    match (request.pid, request.selectors.is_empty()) {
        (0, true) => Err(Status::invalid_argument(
            "must provide either selectors or non-zero PID, but not both",
        )),
        (pid, true) => {
            process_ids(pid).ok_or_else(|| Status::internal("workload attestation failed"))
        }
        (0, false) => {
            let mut uid = None;
            let mut gid = None;
            for s in &request.selectors {
                match (s.r#type.as_str(), s.value.split_once(':')) {
                    ("unix", Some(("uid", v))) => uid = v.parse().ok(),
                    ("unix", Some(("gid", v))) => gid = v.parse().ok(),
                    _ => {}
                }
            }
            // Matching on selectors the double does not model: nothing matches.
            Ok((uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)))
        }
        _ => Err(Status::invalid_argument(
            "must provide either selectors or non-zero PID, but not both",
        )),
    }
}

struct Shared {
    state: watch::Sender<Registry>,
    subscriptions: AtomicUsize,
    /// Milliseconds to wait, after attesting, before the first answer.
    answer_delay_ms: std::sync::atomic::AtomicU64,
}

/// A running Delegated Identity double; see the [module docs](self).
pub struct DelegatedIdentityDouble {
    shared: Arc<Shared>,
    socket_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl std::fmt::Debug for DelegatedIdentityDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedIdentityDouble")
            .field("socket_path", &self.socket_path)
            .finish_non_exhaustive()
    }
}

impl DelegatedIdentityDouble {
    /// Serves on `socket_path` (a stale socket there is replaced). `delegates` gives the
    /// SPIFFE ID of the processes running as each uid that may call the API, and
    /// `authorized_delegates` is the SPIRE agent's list of the same name.
    pub async fn start(
        socket_path: impl Into<PathBuf>,
        delegates: HashMap<u32, String>,
        authorized_delegates: Vec<String>,
        entries: Vec<Registration>,
    ) -> Result<Self, WorkloadApiDoubleError> {
        let requested = socket_path.into();
        let socket_path = std::path::absolute(&requested).map_err(|source| {
            WorkloadApiDoubleError::SocketPath {
                path: requested.clone(),
                source,
            }
        })?;
        remove_stale_socket(&socket_path)?;
        let listener =
            UnixListener::bind(&socket_path).map_err(|source| WorkloadApiDoubleError::Bind {
                path: socket_path.clone(),
                source,
            })?;
        let (state, _) = watch::channel(Registry {
            entries: Arc::new(entries),
            delegates: Arc::new(delegates),
            authorized: Arc::new(authorized_delegates),
            closing: false,
        });
        let shared = Arc::new(Shared {
            state,
            subscriptions: AtomicUsize::new(0),
            answer_delay_ms: std::sync::atomic::AtomicU64::new(0),
        });
        let service = di::delegated_identity_server::DelegatedIdentityServer::new(Service {
            shared: Arc::clone(&shared),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        Ok(DelegatedIdentityDouble {
            shared,
            socket_path,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// `unix://` and the absolute socket path.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket_path.display())
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Adds an entry, or replaces the SVID of the entry for the same uid, gid and SPIFFE ID
    /// (a rotation); open subscriptions get the new set.
    pub fn register(&self, registration: Registration) {
        self.shared.state.send_modify(|state| {
            let mut entries: Vec<Registration> = state
                .entries
                .iter()
                .filter(|e| {
                    !(e.uid == registration.uid
                        && e.gid == registration.gid
                        && e.svid.spiffe_id == registration.svid.spiffe_id)
                })
                .cloned()
                .collect();
            entries.push(registration);
            state.entries = Arc::new(entries);
        });
    }

    /// Deletes every entry for `spiffe_id`; open subscriptions get the set without it.
    pub fn remove(&self, spiffe_id: &str) {
        self.shared.state.send_modify(|state| {
            let entries: Vec<Registration> = state
                .entries
                .iter()
                .filter(|e| e.svid.spiffe_id != spiffe_id)
                .cloned()
                .collect();
            state.entries = Arc::new(entries);
        });
    }

    /// Waits this long after attesting a process before sending the first answer, as a busy
    /// SPIRE agent might: lets tests end or replace the process in between.
    pub fn delay_answers(&self, delay: std::time::Duration) {
        self.shared
            .answer_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// How many subscriptions were opened (attestations asked for), refused ones included.
    pub fn subscriptions(&self) -> usize {
        self.shared.subscriptions.load(Ordering::SeqCst)
    }

    /// Ends open streams and stops the server; removes the socket.
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), server).await;
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }

    fn stop_now(&mut self) {
        self.shared.state.send_modify(|s| s.closing = true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for DelegatedIdentityDouble {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.stop_now();
            server.abort();
            let _ = std::fs::remove_file(&self.socket_path);
        }
    }
}

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl di::delegated_identity_server::DelegatedIdentity for Service {
    type SubscribeToX509SVIDsStream =
        ReceiverStream<Result<di::SubscribeToX509sviDsResponse, Status>>;

    async fn subscribe_to_x509svi_ds(
        &self,
        request: Request<di::SubscribeToX509sviDsRequest>,
    ) -> Result<Response<Self::SubscribeToX509SVIDsStream>, Status> {
        self.shared.subscriptions.fetch_add(1, Ordering::SeqCst);
        let delegate_uid = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|cred| cred.uid());
        let mut state = self.shared.state.subscribe();
        state.borrow_and_update().authorize(delegate_uid)?;
        let (uid, gid) = workload(request.get_ref())?;
        let first = state.borrow_and_update().response(uid, gid);
        let delay = self.shared.answer_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut next = Ok(first);
            loop {
                let last = next.is_err();
                if tx.send(next).await.is_err() || last {
                    return;
                }
                tokio::select! {
                    changed = state.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
                let registry = state.borrow_and_update().clone();
                next = registry
                    .authorize(delegate_uid)
                    .map(|()| registry.response(uid, gid));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
