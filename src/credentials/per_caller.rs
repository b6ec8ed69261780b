//! Per-caller credentials: each caller gets only the roles bound to its own SVIDs, exchanged
//! with its own SVID, cached per (SPIFFE ID, role).
//!
//! A request names the calling process (its pid, uid and gid from the kernel). SPIRE attests
//! that process through the Delegated Identity API ([`DelegatedIdentity::attest`]) and says
//! which SVIDs it holds; the roles whose `spiffe_id` pattern matches one of them are the
//! caller's. Credentials live in one *pair* per (SPIFFE ID, role), built from the same parts
//! as host mode: a one-slot [`CredentialStore`] and a [`refresher::run_role`] task fed with
//! the latest SVID SPIRE gave for that SPIFFE ID. So for every pair there is one exchange in
//! flight however many callers ask, refresh happens ahead of expiry and at once when the SVID
//! rotates, and failures back off as in host mode. On top of that:
//!
//! - a pair that nobody asked for during the idle time ([`DEFAULT_IDLE`] unless configured)
//!   is dropped, credentials and task;
//! - each SPIFFE ID keeps the subscription of an attestation that issued it open: when SPIRE
//!   stops issuing the SVID (its entry was deleted), every pair of that SPIFFE ID is dropped
//!   at once; when it rotates, the pairs re-exchange with the new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::refresher::{self, Exchanger, RefreshPolicy, RoleSpec};
use super::{CredentialStore, RoleCredentials, Unavailable};
use crate::clock::Clock;
use crate::identity::delegated::{AttestError, DelegatedIdentity, PeerProcess, Subscription};
use crate::identity::watch::{Entry, Problem, Snapshot};
use crate::identity::workload_api::WorkloadApiError;
use crate::identity::SpiffeIdPattern;
use crate::metrics::Metrics;

/// How long a (SPIFFE ID, role) pair's credentials are kept, and refreshed, after the last
/// request for them. Long enough that a workload calling every few minutes never waits for
/// an exchange; short enough that workloads gone from the node stop costing CreateSessions.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(15 * 60);
/// How long a request waits for a pair's first exchange before it is told to retry (below
/// the agent-socket client's 10 s limit, so the caller reads the reason).
const FIRST_EXCHANGE_WAIT: Duration = Duration::from_secs(8);
/// How often a SPIFFE ID's subscription checks whether anyone still uses it.
const FEED_CHECK: Duration = Duration::from_secs(1);

/// A role a caller may get when one of its SVIDs matches `bound_to`.
pub struct BoundRole {
    pub name: String,
    pub role_arn: String,
    pub bound_to: SpiffeIdPattern,
    pub exchanger: Arc<dyn Exchanger>,
}

/// Why a caller gets no credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("the kernel did not report the calling process's pid, so SPIRE cannot attest it")]
    NoPid,
    #[error(transparent)]
    Attest(#[from] AttestError),
    #[error("this process ({process}) has SPIFFE ID {have}; no role is bound to it (roles are bound to {bound})")]
    NoRole {
        process: PeerProcess,
        have: String,
        bound: String,
    },
    #[error("this process ({process}) has SPIFFE ID {have}; role {role:?} needs {needs}")]
    NotBound {
        process: PeerProcess,
        role: String,
        have: String,
        needs: String,
    },
    #[error("this process has SPIFFE ID {have}, and several roles are bound to it ({roles}): pass --role NAME")]
    Ambiguous { have: String, roles: String },
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// The latest SVID SPIRE issued for one SPIFFE ID, as a one-entry [`Snapshot`] the pairs'
/// refreshers follow.
struct Subject {
    snapshot: watch::Sender<Snapshot>,
    /// Whether a subscription currently reports this SPIFFE ID's changes.
    fed: std::sync::atomic::AtomicBool,
}

struct Pair {
    store: Arc<CredentialStore>,
    /// Milliseconds since the Unix epoch (by the store's clock) of the last request.
    last_used: AtomicU64,
}

/// The per-caller cache; see the [module docs](self).
pub struct PerCallerCache {
    roles: Vec<BoundRole>,
    api: DelegatedIdentity,
    idle: Duration,
    min_remaining: Duration,
    policy: RefreshPolicy,
    clock: Arc<dyn Clock>,
    subjects: Mutex<HashMap<String, Arc<Subject>>>,
    pairs: Mutex<HashMap<(String, String), Arc<Pair>>>,
    /// Counts every Snapshot published, across subjects.
    revisions: AtomicU64,
    /// Where the pairs' refreshers and the agent socket record.
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl PerCallerCache {
    /// A cache for `roles`, attesting callers through `api`.
    pub fn new(
        roles: Vec<BoundRole>,
        api: DelegatedIdentity,
        idle: Duration,
        min_remaining: Duration,
        policy: RefreshPolicy,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(PerCallerCache {
            roles,
            api,
            idle,
            min_remaining,
            policy,
            clock,
            subjects: Mutex::new(HashMap::new()),
            pairs: Mutex::new(HashMap::new()),
            revisions: AtomicU64::new(0),
            metrics,
        })
    }

    /// Where this cache's refreshers and the agent socket record.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The SPIRE agent admin socket's address.
    pub fn spire_address(&self) -> &str {
        self.api.address()
    }

    /// Whether SPIRE's Delegated Identity API answers this agent as an authorized delegate
    /// (readiness in per-caller mode); `Err` says why not.
    pub async fn probe_spire(&self) -> Result<(), crate::identity::delegated::DelegatedError> {
        self.api.probe(Arc::clone(&self.clock)).await
    }

    /// The configured role names.
    pub fn role_names(&self) -> impl Iterator<Item = &str> {
        self.roles.iter().map(|r| r.name.as_str())
    }

    /// How many (SPIFFE ID, role) pairs are cached now.
    pub fn pair_count(&self) -> usize {
        lock(&self.pairs).len()
    }

    /// The credentials of `role` (or of the one role bound to the caller, when `None`) for
    /// the process `pid`/`uid`/`gid`, which SPIRE attests first.
    pub async fn credentials(
        self: &Arc<Self>,
        pid: Option<i32>,
        uid: u32,
        gid: u32,
        role: Option<&str>,
    ) -> Result<Arc<RoleCredentials>, Refusal> {
        let pid = pid.filter(|p| *p > 0).ok_or(Refusal::NoPid)?;
        let process = PeerProcess { pid, uid, gid };
        // Attest before anything else: a caller SPIRE does not know learns nothing, not even
        // which role names are configured.
        let (entries, subscription) = self.api.attest(process, Arc::clone(&self.clock)).await?;
        if let Some(name) = role {
            if !self.roles.iter().any(|r| r.name == name) {
                return Err(Unavailable::UnknownRole(name.to_owned()).into());
            }
        }
        let ids: Vec<&str> = entries
            .iter()
            .filter(|e| e.identity.is_ok())
            .filter_map(|e| e.spiffe_id.as_deref())
            .collect();
        let have = || {
            let all: Vec<&str> = entries
                .iter()
                .filter_map(|e| e.spiffe_id.as_deref())
                .collect();
            all.join(", ")
        };
        // The caller's (SPIFFE ID, role) candidates, its SVIDs in SPIRE's order.
        let candidates: Vec<(&str, &BoundRole)> = ids
            .iter()
            .flat_map(|id| {
                self.roles
                    .iter()
                    .filter(|r| r.bound_to.matches(id))
                    .map(move |r| (*id, r))
            })
            .collect();
        let (spiffe_id, bound) = match role {
            Some(name) => candidates
                .iter()
                .find(|(_, r)| r.name == name)
                .copied()
                .ok_or_else(|| Refusal::NotBound {
                    process,
                    role: name.to_owned(),
                    have: have(),
                    needs: self
                        .roles
                        .iter()
                        .find(|r| r.name == name)
                        .map(|r| r.bound_to.to_string())
                        .unwrap_or_default(),
                })?,
            None => {
                let mut names: Vec<&str> =
                    candidates.iter().map(|(_, r)| r.name.as_str()).collect();
                names.dedup();
                match names.as_slice() {
                    [] => {
                        return Err(Refusal::NoRole {
                            process,
                            have: have(),
                            bound: self
                                .roles
                                .iter()
                                .map(|r| format!("{} ({})", r.bound_to, r.name))
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                    [_] => candidates[0],
                    _ => {
                        return Err(Refusal::Ambiguous {
                            have: have(),
                            roles: names.join(", "),
                        })
                    }
                }
            }
        };
        self.observe(&entries, subscription, spiffe_id);
        let pair = self.pair(spiffe_id, bound);
        pair.last_used
            .store(millis(self.clock.now()), Ordering::Relaxed);
        first_credentials(&pair.store, &bound.name).await
    }

    /// Takes in what an attestation said: `serving` (the SPIFFE ID the caller is served as)
    /// and every other ID the agent already follows get their latest SVID, and the
    /// subscription stays open for those no other subscription reports on. IDs nobody is
    /// served as are not followed: a refused caller leaves nothing behind.
    fn observe(self: &Arc<Self>, entries: &[Entry], subscription: Subscription, serving: &str) {
        let mut unfed = Vec::new();
        {
            let mut subjects = lock(&self.subjects);
            for entry in entries {
                let (Some(id), Ok(identity)) = (&entry.spiffe_id, &entry.identity) else {
                    continue;
                };
                if id != serving && !subjects.contains_key(id) {
                    continue;
                }
                let subject = subjects
                    .entry(id.clone())
                    .or_insert_with(|| {
                        let (snapshot, _) = watch::channel(Snapshot::default());
                        Arc::new(Subject {
                            snapshot,
                            fed: std::sync::atomic::AtomicBool::new(false),
                        })
                    })
                    .clone();
                let same = subject.snapshot.borrow().entries.first().is_some_and(|e| {
                    e.identity
                        .as_ref()
                        .is_ok_and(|i| i.leaf_der() == identity.leaf_der())
                });
                if !same {
                    self.publish(&subject, vec![entry.clone()], None);
                }
                if !subject.fed.swap(true, Ordering::AcqRel) {
                    unfed.push((id.clone(), subject));
                }
            }
        }
        if !unfed.is_empty() {
            tokio::spawn(feed(Arc::downgrade(self), subscription, unfed));
        }
    }

    fn publish(&self, subject: &Subject, entries: Vec<Entry>, problem: Option<Problem>) {
        let revision = self.revisions.fetch_add(1, Ordering::Relaxed) + 1;
        subject.snapshot.send_replace(Snapshot {
            revision,
            entries,
            problem,
        });
    }

    /// The pair for (`spiffe_id`, `role`), started when new.
    fn pair(self: &Arc<Self>, spiffe_id: &str, role: &BoundRole) -> Arc<Pair> {
        let key = (spiffe_id.to_owned(), role.name.clone());
        let mut pairs = lock(&self.pairs);
        if let Some(pair) = pairs.get(&key) {
            return Arc::clone(pair);
        }
        let store = Arc::new(
            CredentialStore::new(
                [(role.name.clone(), role.role_arn.clone())],
                self.min_remaining,
                Arc::clone(&self.clock),
            )
            .with_metrics(Arc::clone(&self.metrics)),
        );
        let pair = Arc::new(Pair {
            store: Arc::clone(&store),
            last_used: AtomicU64::new(millis(self.clock.now())),
        });
        pairs.insert(key.clone(), Arc::clone(&pair));
        let identities = lock(&self.subjects)
            .get(spiffe_id)
            .map(|s| s.snapshot.subscribe());
        let Some(identities) = identities else {
            // Withdrawn between the attestation and now: nothing to exchange.
            pairs.remove(&key);
            return pair;
        };
        tracing::info!(spiffe_id, role = %role.name, "new caller identity: exchanging its SVID");
        let spec = RoleSpec {
            name: role.name.clone(),
            spiffe_id: Some(spiffe_id.to_owned()),
        };
        let exchanger = Arc::clone(&role.exchanger);
        let policy = self.policy.clone();
        let cache = Arc::downgrade(self);
        let watched = Arc::clone(&pair);
        let idle = self.idle;
        let clock = Arc::clone(&self.clock);
        tokio::spawn(async move {
            tokio::select! {
                _ = refresher::run_role(store, spec, identities, exchanger, policy) => {}
                _ = idle_for(&watched, idle, &*clock) => {
                    tracing::info!(spiffe_id = %key.0, role = %key.1, "idle: dropping the credentials");
                }
            }
            if let Some(cache) = cache.upgrade() {
                let mut pairs = lock(&cache.pairs);
                if pairs.get(&key).is_some_and(|p| Arc::ptr_eq(p, &watched)) {
                    pairs.remove(&key);
                }
                // A SPIFFE ID with no pair left is forgotten (its subscription closes).
                if !pairs.keys().any(|(id, _)| *id == key.0) {
                    lock(&cache.subjects).remove(&key.0);
                }
            }
        });
        pair
    }
}

/// The credentials in `store`, waiting for the first exchange of a new pair (it is in
/// flight) while it neither succeeded nor failed, at most [`FIRST_EXCHANGE_WAIT`].
async fn first_credentials(
    store: &CredentialStore,
    role: &str,
) -> Result<Arc<RoleCredentials>, Refusal> {
    let mut changes = store.subscribe();
    let deadline = tokio::time::Instant::now() + FIRST_EXCHANGE_WAIT;
    loop {
        match store.get(role) {
            Ok(creds) => return Ok(creds),
            Err(e @ Unavailable::NotReady { .. })
                if matches!(store.status(role), Some(super::Status::Starting)) =>
            {
                // A failure sets the status without a change notice: look again shortly.
                let wait = tokio::time::sleep(Duration::from_millis(50));
                if tokio::time::timeout_at(deadline, async {
                    tokio::select! {
                        _ = changes.changed() => {}
                        _ = wait => {}
                    }
                })
                .await
                .is_err()
                {
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Completes once `pair` was not asked for during `idle`.
async fn idle_for(pair: &Pair, idle: Duration, clock: &dyn Clock) {
    loop {
        let last = pair.last_used.load(Ordering::Relaxed);
        let now = millis(clock.now());
        let since = Duration::from_millis(now.saturating_sub(last));
        if since >= idle {
            return;
        }
        tokio::time::sleep(idle - since).await;
    }
}

/// Reports a subscription's changes for the SPIFFE IDs it feeds, until none is left.
async fn feed(
    cache: Weak<PerCallerCache>,
    mut subscription: Subscription,
    mut fed: Vec<(String, Arc<Subject>)>,
) {
    loop {
        // Forget the IDs the cache forgot (idle) or replaced.
        {
            let Some(cache) = cache.upgrade() else { return };
            let subjects = lock(&cache.subjects);
            fed.retain(|(id, s)| subjects.get(id).is_some_and(|c| Arc::ptr_eq(c, s)));
        }
        if fed.is_empty() {
            return;
        }
        let next = tokio::select! {
            next = subscription.next() => next,
            _ = tokio::time::sleep(FEED_CHECK) => continue,
        };
        let Some(cache) = cache.upgrade() else { return };
        match next {
            Some(Ok(entries)) => {
                let mut subjects = lock(&cache.subjects);
                fed.retain(|(id, subject)| {
                    match entries
                        .iter()
                        .find(|e| e.spiffe_id.as_deref() == Some(id.as_str()))
                    {
                        Some(entry) => {
                            let rotated = subject.snapshot.borrow().entries.first().is_none_or(|e| {
                                match (&e.identity, &entry.identity) {
                                    (Ok(a), Ok(b)) => a.leaf_der() != b.leaf_der(),
                                    _ => true,
                                }
                            });
                            if rotated {
                                tracing::info!(spiffe_id = %id, "SVID rotated");
                                cache.publish(subject, vec![entry.clone()], None);
                            }
                            true
                        }
                        None => {
                            tracing::warn!(spiffe_id = %id, "SPIRE no longer issues this SVID: dropping its credentials");
                            withdraw(&cache, &mut subjects, id, subject);
                            false
                        }
                    }
                });
            }
            Some(Err(e)) => {
                let mut subjects = lock(&cache.subjects);
                if matches!(
                    e,
                    crate::identity::delegated::DelegatedError::NotAuthorized { .. }
                ) {
                    // The delegate lost its authorization: nothing it got may be served.
                    for (id, subject) in &fed {
                        withdraw(&cache, &mut subjects, id, subject);
                    }
                } else {
                    tracing::debug!(error = %e, "a caller subscription ended");
                    for (_, subject) in &fed {
                        subject.fed.store(false, Ordering::Release);
                    }
                }
                return;
            }
            None => {
                for (_, subject) in &fed {
                    subject.fed.store(false, Ordering::Release);
                }
                return;
            }
        }
    }
}

/// SPIRE stopped issuing `id`: its pairs drop their credentials at once (the refreshers see
/// a withdrawn identity) and end (the identity channel closes).
fn withdraw(
    cache: &PerCallerCache,
    subjects: &mut HashMap<String, Arc<Subject>>,
    id: &str,
    subject: &Subject,
) {
    let reason = WorkloadApiError::NoIdentity {
        address: cache.api.address().to_owned(),
        reason: format!("SPIRE no longer issues {id}"),
    };
    cache.publish(
        subject,
        Vec::new(),
        Some(Problem::Withdrawn(Arc::new(reason))),
    );
    subjects.remove(id);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::future::Future;
    use std::os::unix::process::CommandExt as _;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::credentials::ExchangeError;
    use crate::dev::workload_api::{DelegatedIdentityDouble, Registration, SvidIssuer};
    use crate::identity::X509Identity;
    use crate::rolesanywhere::Credentials;

    const ORDERS: &str = "spiffe://example.org/service/orders";
    const REVIEWS: &str = "spiffe://example.org/service/reviews";
    const DELEGATE: &str = "spiffe://example.org/agent";

    /// Counts exchanges and hands out numbered credentials.
    struct Counting(AtomicUsize);

    impl Exchanger for Counting {
        fn exchange<'a>(
            &'a self,
            role: &'a str,
            _identity: &'a X509Identity,
        ) -> Pin<Box<dyn Future<Output = Result<Credentials, ExchangeError>> + Send + 'a>> {
            Box::pin(async move {
                let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
                // Slow enough that concurrent callers find the exchange in flight.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(Credentials {
                    access_key_id: format!("ASIA{role}{n}"),
                    secret_access_key: zeroize::Zeroizing::new("s".into()),
                    session_token: zeroize::Zeroizing::new("t".into()),
                    expiration: SystemTime::now() + Duration::from_secs(3600),
                    assumed_role_arn: None,
                    role_arn: format!("arn:aws:iam::123456789012:role/{role}"),
                })
            })
        }
    }

    /// Needs root (the workload runs as uid 2102), as the integration tests do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_callers_leave_nothing_behind_and_callers_share_one_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = SvidIssuer::from_test_intermediate().unwrap();
        let own_uid = {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata("/proc/self").unwrap().uid()
        };
        let spire = DelegatedIdentityDouble::start(
            dir.path().join("admin.sock"),
            HashMap::from([(own_uid, DELEGATE.to_owned())]),
            vec![DELEGATE.to_owned()],
            vec![Registration {
                uid: 2102,
                gid: None,
                svid: issuer.issue(REVIEWS, Duration::from_secs(3600)).unwrap(),
            }],
        )
        .await
        .unwrap();
        let exchanges = Arc::new(Counting(AtomicUsize::new(0)));
        let role = |name: &str, id: &str| BoundRole {
            name: name.into(),
            role_arn: format!("arn:aws:iam::123456789012:role/{name}"),
            bound_to: SpiffeIdPattern::Exact(id.into()),
            exchanger: Arc::clone(&exchanges) as Arc<dyn Exchanger>,
        };
        let cache = PerCallerCache::new(
            vec![role("orders", ORDERS), role("reviews", REVIEWS)],
            DelegatedIdentity::new(spire.endpoint(), Duration::from_secs(5)),
            Duration::from_secs(3600),
            Duration::from_secs(300),
            RefreshPolicy::default(),
            Arc::new(crate::clock::TokioClock::new()),
            crate::metrics::Metrics::detached(),
        );
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .uid(2102)
            .gid(2102)
            .spawn()
            .unwrap();
        let pid = Some(child.id() as i32);

        let refused = cache.credentials(pid, 2102, 2102, Some("orders")).await;
        assert!(
            matches!(&refused, Err(Refusal::NotBound { role, .. }) if role == "orders"),
            "{refused:?}"
        );
        assert_eq!(cache.pair_count(), 0);
        assert!(
            lock(&cache.subjects).is_empty(),
            "a refused caller is not followed"
        );

        let calls = (0..10).map(|_| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.credentials(pid, 2102, 2102, None).await })
        });
        let mut keys = std::collections::BTreeSet::new();
        for call in calls {
            let creds = call.await.unwrap().unwrap();
            assert_eq!(creds.spiffe_id.as_deref(), Some(REVIEWS));
            keys.insert(creds.credentials.access_key_id.clone());
        }
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(
            exchanges.0.load(Ordering::SeqCst),
            1,
            "one exchange in flight"
        );
        assert_eq!(cache.pair_count(), 1);

        let _ = child.kill();
        let _ = child.wait();
    }
}
