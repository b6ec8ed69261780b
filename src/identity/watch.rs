//! Long-running identity sources for the agent: they publish every change of the X.509
//! identities through a `tokio::sync::watch` channel, so the refresher can re-exchange as
//! soon as an SVID rotates and stop serving credentials whose identity was withdrawn.
//!
//! The Workload API source follows SPIRE with the `spiffe` crate's `X509Source` (which
//! reconnects with backoff and reports permission withdrawal). Until the first successful
//! sync, it asks once per backoff step with a plain fetch so that the published problem is
//! the real cause ("no such socket", "no identity issued"), not "still syncing".

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use spiffe::x509_source::{MetricsErrorKind, MetricsRecorder};
use spiffe::{WorkloadApiClient, X509Source};
use tokio::sync::watch;

use super::workload_api::{classify, identity_from_svid, WorkloadApiError};
use super::{files, IdentityError, X509Identity};
use crate::backoff::Backoff;
use crate::clock::Clock;

/// How long one probe of the Workload API may take before it counts as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between probes while the Workload API is absent or issues no identity.
const PROBE_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Reconnect backoff after the Workload API stream breaks: a restarted SPIRE agent is
/// followed again within about a second of answering.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// Says when the connection to the Workload API is lost and when it is back, once each (the
/// `X509Source` reconnects on its own and keeps the last identities meanwhile; without this
/// a SPIRE outage left no trace in the log).
struct ConnectionLog {
    address: String,
    /// [`STARTING`], [`UP`] or [`DOWN`]; shared with whoever reports health.
    state: Arc<ConnectionState>,
}

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Whether the Workload API stream is up: written by the watcher, read by the admin
/// listener (health and metrics). Up only between a successful sync and the next error.
#[derive(Debug, Default)]
pub struct ConnectionState {
    state: std::sync::atomic::AtomicU8,
}

impl ConnectionState {
    /// Whether the stream is up now.
    pub fn is_up(&self) -> bool {
        self.state.load(std::sync::atomic::Ordering::Relaxed) == UP
    }
}

impl ConnectionLog {
    fn new(address: &str, state: Arc<ConnectionState>) -> Self {
        state
            .state
            .store(STARTING, std::sync::atomic::Ordering::Relaxed);
        ConnectionLog {
            address: address.to_owned(),
            state,
        }
    }

    /// The initial sync succeeded.
    fn connected(&self) {
        self.state
            .state
            .store(UP, std::sync::atomic::Ordering::Relaxed);
    }
}

impl MetricsRecorder for ConnectionLog {
    fn record_update(&self) {
        if self
            .state
            .state
            .swap(UP, std::sync::atomic::Ordering::Relaxed)
            == DOWN
        {
            tracing::info!(address = %self.address, "reconnected to the SPIFFE Workload API");
        }
    }

    fn record_reconnect(&self) {}

    fn record_error(&self, kind: MetricsErrorKind) {
        use std::sync::atomic::Ordering::Relaxed;
        use MetricsErrorKind::*;
        let lost = matches!(
            kind,
            ClientCreation | StreamConnect | StreamError | StreamEnded
        );
        if lost
            && self
                .state
                .state
                .compare_exchange(UP, DOWN, Relaxed, Relaxed)
                .is_ok()
        {
            tracing::warn!(address = %self.address, error = kind.as_str(), "lost the connection to the SPIFFE Workload API: keeping the current identities and reconnecting");
        } else {
            tracing::debug!(address = %self.address, error = kind.as_str(), "Workload API error");
        }
    }
}

/// Every identity the source currently offers.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Increases with every published change.
    pub revision: u64,
    pub entries: Vec<Entry>,
    /// Why there is nothing to use, when there is nothing.
    pub problem: Option<Problem>,
}

/// One SVID (or the file identity), validated or with the reason it is unusable.
#[derive(Clone, Debug)]
pub struct Entry {
    pub spiffe_id: Option<String>,
    pub hint: Option<String>,
    pub identity: Result<Arc<X509Identity>, Arc<IdentityError>>,
}

/// Why a snapshot offers no identity.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Problem {
    /// Not synced yet.
    #[error("connecting to the SPIFFE Workload API at {0}")]
    Connecting(String),
    /// The source is unreachable or answers with something unusable.
    #[error(transparent)]
    Unavailable(Arc<WorkloadApiError>),
    /// The Workload API withdrew the identity (PermissionDenied): stop using it.
    #[error("the identity was withdrawn: {0}")]
    Withdrawn(Arc<WorkloadApiError>),
}

/// Why a role has no identity to exchange right now.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unusable {
    #[error(transparent)]
    Source(Problem),
    #[error("no SVID with SPIFFE ID or hint {wanted:?} (offered: {offered})")]
    NoMatch { wanted: String, offered: String },
    #[error("the source offers no identity")]
    Empty,
    #[error(transparent)]
    Invalid(Arc<IdentityError>),
}

impl Snapshot {
    /// The identity a role uses: the entry whose SPIFFE ID or hint is `wanted`, else the
    /// first (the Workload API's default).
    pub fn select(&self, wanted: Option<&str>) -> Result<Arc<X509Identity>, Unusable> {
        if let Some(problem) = &self.problem {
            return Err(Unusable::Source(problem.clone()));
        }
        let entry = match wanted {
            None => self.entries.first(),
            Some(w) => {
                // A role bound to `spiffe://td/path/*` takes the first SVID below the path.
                let pattern = w
                    .ends_with("/*")
                    .then(|| super::SpiffeIdPattern::parse(w).ok())
                    .flatten();
                self.entries.iter().find(|e| {
                    e.spiffe_id.as_deref() == Some(w)
                        || e.hint.as_deref() == Some(w)
                        || pattern
                            .as_ref()
                            .zip(e.spiffe_id.as_deref())
                            .is_some_and(|(p, id)| p.matches(id))
                })
            }
        };
        match entry {
            Some(e) => e.identity.clone().map_err(Unusable::Invalid),
            None => Err(match wanted {
                Some(w) => Unusable::NoMatch {
                    wanted: w.to_owned(),
                    offered: self
                        .entries
                        .iter()
                        .filter_map(|e| e.spiffe_id.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
                None => Unusable::Empty,
            }),
        }
    }

    /// True when the source withdrew its identities.
    pub fn is_withdrawn(&self) -> bool {
        matches!(self.problem, Some(Problem::Withdrawn(_)))
    }
}

struct Publisher {
    tx: watch::Sender<Snapshot>,
    revision: u64,
}

impl Publisher {
    fn publish(&mut self, entries: Vec<Entry>, problem: Option<Problem>) {
        self.revision += 1;
        let snapshot = Snapshot {
            revision: self.revision,
            entries,
            problem,
        };
        self.tx.send_replace(snapshot);
    }
}

/// Follows the Workload API at `address`; the task runs until the receiver side is dropped.
/// The stream's state is kept in `connection`.
pub fn spawn_workload_api(
    address: String,
    clock: Arc<dyn Clock>,
    connection: Arc<ConnectionState>,
) -> (watch::Receiver<Snapshot>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Snapshot {
        revision: 0,
        entries: Vec::new(),
        problem: Some(Problem::Connecting(address.clone())),
    });
    let mut publisher = Publisher { tx, revision: 0 };
    let task = tokio::spawn(async move {
        // A local socket is cheap to probe: keep the wait short so an identity SPIRE issues
        // again (entry re-created, agent back) is picked up within seconds.
        let mut backoff = Backoff::new(Duration::from_millis(200), PROBE_MAX_BACKOFF);
        while !publisher.tx.is_closed() {
            // Ask once first: it reports the real reason when SPIRE is absent or says no.
            let probe = async {
                let client = WorkloadApiClient::connect_to(&address)
                    .await
                    .map_err(|e| classify(&address, e))?;
                client
                    .fetch_x509_context()
                    .await
                    .map_err(|e| classify(&address, e))
            };
            match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let problem = match e {
                        WorkloadApiError::NoIdentity { .. } => Problem::Withdrawn(Arc::new(e)),
                        _ => Problem::Unavailable(Arc::new(e)),
                    };
                    tracing::warn!(error = %problem, "Workload API not usable yet");
                    publisher.publish(Vec::new(), Some(problem));
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                Err(_) => {
                    publisher.publish(
                        Vec::new(),
                        Some(Problem::Unavailable(Arc::new(WorkloadApiError::Timeout {
                            address: address.clone(),
                            seconds: PROBE_TIMEOUT.as_secs(),
                        }))),
                    );
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            let connection = Arc::new(ConnectionLog::new(&address, Arc::clone(&connection)));
            let source = match X509Source::builder()
                .endpoint(&address)
                .initial_sync_timeout(PROBE_TIMEOUT)
                .reconnect_backoff(RECONNECT_MIN, RECONNECT_MAX)
                .metrics(Arc::clone(&connection) as Arc<dyn MetricsRecorder>)
                .build()
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    let e = WorkloadApiError::Unreachable {
                        address: address.clone(),
                        reason: crate::display::error_chain(&e),
                    };
                    publisher.publish(Vec::new(), Some(Problem::Unavailable(Arc::new(e))));
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            backoff.reset();
            connection.connected();
            follow(&source, &address, &*clock, &mut publisher).await;
            source.shutdown().await;
        }
    });
    (rx, task)
}

/// Publishes the source's state on every change until it closes or nobody listens.
async fn follow(source: &X509Source, address: &str, clock: &dyn Clock, publisher: &mut Publisher) {
    let mut updates = source.updated();
    loop {
        let state = source.state();
        if let Some(reason) = state.withdrawal() {
            tracing::warn!(%reason, "the Workload API withdrew the identity");
            let e = WorkloadApiError::NoIdentity {
                address: address.to_owned(),
                reason: reason.to_string(),
            };
            publisher.publish(Vec::new(), Some(Problem::Withdrawn(Arc::new(e))));
        } else {
            match state.context() {
                Ok(context) => {
                    let now = clock.now();
                    let entries = context
                        .svids()
                        .iter()
                        .map(|svid| Entry {
                            spiffe_id: Some(svid.spiffe_id().to_string()),
                            hint: svid.hint().map(str::to_owned),
                            identity: identity_from_svid(svid, now)
                                .map(Arc::new)
                                .map_err(Arc::new),
                        })
                        .collect();
                    tracing::info!(revision = state.revision(), "Workload API update");
                    publisher.publish(entries, None);
                }
                Err(e) => {
                    let e = WorkloadApiError::Unreachable {
                        address: address.to_owned(),
                        reason: crate::display::error_chain(&e),
                    };
                    publisher.publish(Vec::new(), Some(Problem::Unavailable(Arc::new(e))));
                }
            }
        }
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { return },
            _ = publisher.tx.closed() => return,
        }
    }
}

/// Certificate files, re-read when they change (polled; renewals by cert-manager or a cron
/// job are picked up without a restart).
pub fn spawn_files(
    certificate: PathBuf,
    private_key: Option<PathBuf>,
    intermediates: Option<PathBuf>,
    password: Option<files::KeyPassword>,
    poll: Duration,
    clock: Arc<dyn Clock>,
) -> (watch::Receiver<Snapshot>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Snapshot::default());
    let mut publisher = Publisher { tx, revision: 0 };
    let task = tokio::spawn(async move {
        let mut last_stamp = None;
        while !publisher.tx.is_closed() {
            let stamp = [
                Some(&certificate),
                private_key.as_ref(),
                intermediates.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect::<Vec<_>>();
            if last_stamp.as_ref() != Some(&stamp) {
                last_stamp = Some(stamp);
                let loaded = files::load_any(
                    &certificate,
                    private_key.as_deref(),
                    intermediates.as_deref(),
                    password.as_ref(),
                    clock.now(),
                );
                let entry = Entry {
                    spiffe_id: loaded
                        .as_ref()
                        .ok()
                        .and_then(|i| i.spiffe_id().map(str::to_owned)),
                    hint: None,
                    identity: loaded.map(Arc::new).map_err(Arc::new),
                };
                publisher.publish(vec![entry], None);
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = publisher.tx.closed() => return,
            }
        }
    });
    (rx, task)
}

/// A PKCS#11 identity: loaded at start, and again every `poll` while loading fails for a
/// reason that may pass (token absent, object not written yet, device error). A refused or
/// missing PIN, or a missing library, is published and not retried: retrying a wrong PIN
/// would lock the token. A certificate renewed inside the token is taken at the next start.
pub fn spawn_pkcs11(
    spec: super::pkcs11::Pkcs11Spec,
    poll: Duration,
    clock: Arc<dyn Clock>,
) -> (watch::Receiver<Snapshot>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Snapshot::default());
    let mut publisher = Publisher { tx, revision: 0 };
    let task = tokio::spawn(async move {
        loop {
            let (attempt, now) = (spec.clone(), clock.now());
            let loaded = tokio::task::spawn_blocking(move || super::pkcs11::load(&attempt, now))
                .await
                .unwrap_or_else(|e| Err(super::source::pkcs11_task_failed(e)));
            let retry = match &loaded {
                Ok(_) => false,
                Err(IdentityError::Pkcs11(e)) => e.may_pass(),
                Err(_) => false,
            };
            if let Err(e) = &loaded {
                tracing::warn!(error = %e, retry, "the PKCS#11 identity is not usable");
            }
            let entry = Entry {
                spiffe_id: loaded
                    .as_ref()
                    .ok()
                    .and_then(|i| i.spiffe_id().map(str::to_owned)),
                hint: None,
                identity: loaded.map(Arc::new).map_err(Arc::new),
            };
            publisher.publish(vec![entry], None);
            if !retry {
                publisher.tx.closed().await;
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = publisher.tx.closed() => return,
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pkcs11_identity_with_a_missing_library_is_not_retried() {
        use super::super::pkcs11::{Pkcs11Spec, Pkcs11Uri};
        let spec = Pkcs11Spec {
            library: Some("/nonexistent/libpkcs11.so".into()),
            certificate: None,
            private_key: Some(Pkcs11Uri::parse("pkcs11:object=k?pin-value=1").unwrap()),
            intermediates: None,
            reuse_pin: false,
        };
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::TokioClock::new());
        let (mut rx, task) = spawn_pkcs11(spec, Duration::from_millis(20), clock);
        rx.changed().await.unwrap();
        let first = rx.borrow().revision;
        // Twenty poll intervals: a retrying watcher would have published again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(rx.borrow().revision, first);
        let e = rx.borrow().select(None).unwrap_err().to_string();
        assert!(e.contains("cannot load the PKCS#11 library"), "{e}");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the watcher ends when nobody listens")
            .unwrap();
    }

    #[test]
    fn selection_reports_problems_and_missing_ids() {
        let s = Snapshot {
            revision: 1,
            entries: vec![],
            problem: Some(Problem::Withdrawn(Arc::new(WorkloadApiError::NoIdentity {
                address: "unix:///a".into(),
                reason: "no identity issued".into(),
            }))),
        };
        assert!(s
            .select(None)
            .unwrap_err()
            .to_string()
            .contains("withdrawn"));
        assert!(s.is_withdrawn());
        let s = Snapshot {
            revision: 2,
            entries: vec![],
            problem: None,
        };
        assert!(s
            .select(Some("spiffe://x/y"))
            .unwrap_err()
            .to_string()
            .contains("no SVID"));
    }
}
