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
use std::time::{Duration, SystemTime};

use spiffe::{WorkloadApiClient, X509Source};
use tokio::sync::watch;

use super::workload_api::{classify, identity_from_svid};
use super::{files, X509Identity};
use crate::backoff::Backoff;

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
    pub identity: Result<Arc<X509Identity>, String>,
}

/// Why a snapshot offers no identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not synced yet, or the source is unreachable.
    Unavailable(String),
    /// The Workload API withdrew the identity (PermissionDenied): stop using it.
    Withdrawn(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unavailable(r) => write!(f, "{r}"),
            Problem::Withdrawn(r) => write!(f, "the identity was withdrawn: {r}"),
        }
    }
}

impl Snapshot {
    /// The identity a role uses: the entry whose SPIFFE ID or hint is `wanted`, else the
    /// first (the Workload API's default).
    pub fn select(&self, wanted: Option<&str>) -> Result<Arc<X509Identity>, String> {
        if let Some(problem) = &self.problem {
            return Err(problem.to_string());
        }
        let entry = match wanted {
            None => self.entries.first(),
            Some(w) => self
                .entries
                .iter()
                .find(|e| e.spiffe_id.as_deref() == Some(w) || e.hint.as_deref() == Some(w)),
        };
        match entry {
            Some(e) => e.identity.clone(),
            None => Err(match wanted {
                Some(w) => format!(
                    "no SVID with SPIFFE ID or hint {w:?} (offered: {})",
                    self.entries
                        .iter()
                        .filter_map(|e| e.spiffe_id.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "the source offers no identity".to_owned(),
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
pub fn spawn_workload_api(
    address: String,
) -> (watch::Receiver<Snapshot>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Snapshot {
        revision: 0,
        entries: Vec::new(),
        problem: Some(Problem::Unavailable(format!(
            "connecting to the SPIFFE Workload API at {address}"
        ))),
    });
    let mut publisher = Publisher { tx, revision: 0 };
    let task = tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
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
            match tokio::time::timeout(Duration::from_secs(10), probe).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let problem = match e {
                        super::workload_api::WorkloadApiError::NoIdentity { .. } => {
                            Problem::Withdrawn(e.to_string())
                        }
                        _ => Problem::Unavailable(e.to_string()),
                    };
                    tracing::warn!(error = %problem, "Workload API not usable yet");
                    publisher.publish(Vec::new(), Some(problem));
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                Err(_) => {
                    publisher.publish(
                        Vec::new(),
                        Some(Problem::Unavailable(format!(
                            "the SPIFFE Workload API at {address} did not answer within 10s"
                        ))),
                    );
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            let source = match X509Source::builder()
                .endpoint(&address)
                .initial_sync_timeout(Duration::from_secs(10))
                .build()
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    publisher.publish(Vec::new(), Some(Problem::Unavailable(e.to_string())));
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            backoff.reset();
            follow(&source, &mut publisher).await;
            source.shutdown().await;
        }
    });
    (rx, task)
}

/// Publishes the source's state on every change until it closes or nobody listens.
async fn follow(source: &X509Source, publisher: &mut Publisher) {
    let mut updates = source.updated();
    loop {
        let state = source.state();
        if let Some(reason) = state.withdrawal() {
            tracing::warn!(%reason, "the Workload API withdrew the identity");
            publisher.publish(Vec::new(), Some(Problem::Withdrawn(reason.to_string())));
        } else {
            match state.context() {
                Ok(context) => {
                    let now = SystemTime::now();
                    let entries = context
                        .svids()
                        .iter()
                        .map(|svid| Entry {
                            spiffe_id: Some(svid.spiffe_id().to_string()),
                            hint: svid.hint().map(str::to_owned),
                            identity: identity_from_svid(svid, now)
                                .map(Arc::new)
                                .map_err(|e| e.to_string()),
                        })
                        .collect();
                    tracing::info!(revision = state.revision(), "Workload API update");
                    publisher.publish(entries, None);
                }
                Err(e) => publisher.publish(Vec::new(), Some(Problem::Unavailable(e.to_string()))),
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
    private_key: PathBuf,
    intermediates: Option<PathBuf>,
    poll: Duration,
) -> (watch::Receiver<Snapshot>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Snapshot::default());
    let mut publisher = Publisher { tx, revision: 0 };
    let task = tokio::spawn(async move {
        let mut last_stamp = None;
        while !publisher.tx.is_closed() {
            let stamp = [
                Some(&certificate),
                Some(&private_key),
                intermediates.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect::<Vec<_>>();
            if last_stamp.as_ref() != Some(&stamp) {
                last_stamp = Some(stamp);
                let loaded = files::load(
                    &certificate,
                    &private_key,
                    intermediates.as_deref(),
                    SystemTime::now(),
                );
                let entry = Entry {
                    spiffe_id: loaded
                        .as_ref()
                        .ok()
                        .and_then(|i| i.spiffe_id().map(str::to_owned)),
                    hint: None,
                    identity: loaded.map(Arc::new).map_err(|e| e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_reports_problems_and_missing_ids() {
        let s = Snapshot {
            revision: 1,
            entries: vec![],
            problem: Some(Problem::Withdrawn("no identity issued".into())),
        };
        assert!(s.select(None).unwrap_err().contains("withdrawn"));
        assert!(s.is_withdrawn());
        let s = Snapshot {
            revision: 2,
            entries: vec![],
            problem: None,
        };
        assert!(s
            .select(Some("spiffe://x/y"))
            .unwrap_err()
            .contains("no SVID"));
    }
}
