//! The per-role credential cache every server reads from.
//!
//! Each role has one slot. The refresher ([`refresher`]) is the only writer; readers (the
//! IMDS, container and agent-socket endpoints, the credentials file) take the current value
//! with one atomic load and never wait on a refresh, on SPIRE or on Roles Anywhere.
//! A reader never gets credentials with less than the configured minimum lifetime left.

pub mod per_caller;
pub mod refresher;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::identity::watch::Unusable;
use crate::metrics::Metrics;
use crate::rolesanywhere::{CreateSessionError, Credentials, ErrorClass};
use crate::webidentity::WebIdentityError;

/// Credentials for one role as the cache holds them: what CreateSession returned, and what
/// the agent knows about where and when it got them. `Debug` hides the secret and the token.
#[derive(Clone)]
pub struct RoleCredentials {
    pub credentials: Credentials,
    /// When the agent got them: IMDS's `LastUpdated`.
    pub last_updated: SystemTime,
    /// The SPIFFE ID of the SVID they were exchanged for.
    pub spiffe_id: Option<String>,
    /// SHA-256 of the leaf certificate they were exchanged for: how the refresher notices a
    /// rotated SVID.
    pub leaf_sha256: [u8; 32],
    /// Unique per published set within a store (assigned by [`CredentialStore::publish`]):
    /// lets a sink memoize what it rendered for a set without holding a pointer to it.
    generation: u64,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("credentials", &self.credentials)
            .field("spiffe_id", &self.spiffe_id)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl RoleCredentials {
    /// Wraps what CreateSession returned.
    pub fn new(
        credentials: Credentials,
        now: SystemTime,
        spiffe_id: Option<String>,
        leaf_sha256: [u8; 32],
    ) -> Self {
        RoleCredentials {
            credentials,
            last_updated: now,
            spiffe_id,
            leaf_sha256,
            generation: 0,
        }
    }

    /// Which published set this is (see the field's doc).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Why a role has no credentials to hand out right now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("no role named {0:?} is configured")]
    UnknownRole(String),
    #[error("credentials for role {role:?} are not available yet: {reason}")]
    NotReady { role: String, reason: Status },
    #[error("credentials for role {role:?} expire too soon to hand out and the refresh has not succeeded yet: {reason}")]
    ExpiringSoon { role: String, reason: Status },
}

/// Why the last refresh of a role failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// There was no identity to exchange.
    #[error(transparent)]
    Identity(Unusable),
    /// The exchange (CreateSession or AssumeRoleWithWebIdentity) failed.
    #[error(transparent)]
    Exchange(Arc<ExchangeError>),
    /// The exchange succeeded, but the credentials live too briefly to serve and refresh.
    #[error("the exchange issued credentials valid for {seconds_left} s, too few above the minimum lifetime of {min_remaining_seconds} s to serve them and refresh in time: is the profile's (or the role's) duration cap below the session duration, or the system clock off?")]
    TooShort {
        seconds_left: u64,
        min_remaining_seconds: u64,
    },
}

/// Why a role's exchange failed, whichever service the role's exchange calls: a
/// refresher only needs [`ExchangeError::class`] to schedule the retry.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    RolesAnywhere(#[from] CreateSessionError),
    #[error(transparent)]
    WebIdentity(#[from] WebIdentityError),
}

impl ExchangeError {
    /// How a refresher should treat this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            ExchangeError::RolesAnywhere(e) => e.class(),
            ExchangeError::WebIdentity(e) => e.class(),
        }
    }
}

/// What the refresher last saw for a role; surfaced in errors and health.
#[derive(Debug, Clone)]
pub enum Status {
    Starting,
    Ok,
    Failing(Failure),
    /// The identity the credentials came from was withdrawn by the Workload API.
    Withdrawn(Unusable),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Starting => f.write_str("the first exchange has not finished"),
            Status::Ok => f.write_str("no credentials"),
            Status::Failing(e) => e.fmt(f),
            Status::Withdrawn(e) => e.fmt(f),
        }
    }
}

struct Slot {
    role_arn: String,
    current: ArcSwap<Option<Arc<RoleCredentials>>>,
    status: ArcSwap<Status>,
}

/// The cache: one slot per configured role.
pub struct CredentialStore {
    slots: BTreeMap<String, Slot>,
    /// The last generation handed out by [`CredentialStore::publish`].
    generations: AtomicU64,
    min_remaining: Duration,
    clock: Arc<dyn Clock>,
    /// Bumped on every publish or clear, so writers like the credentials file react at once.
    changes: tokio::sync::watch::Sender<u64>,
    /// Where the refreshers and the endpoints reading this store record what they do.
    metrics: Arc<Metrics>,
}

impl CredentialStore {
    /// A store for `roles` (name, role ARN) that refuses credentials with less than
    /// `min_remaining` left.
    pub fn new(
        roles: impl IntoIterator<Item = (String, String)>,
        min_remaining: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let slots = roles
            .into_iter()
            .map(|(name, role_arn)| {
                (
                    name,
                    Slot {
                        role_arn,
                        current: ArcSwap::from_pointee(None),
                        status: ArcSwap::from_pointee(Status::Starting),
                    },
                )
            })
            .collect();
        let (changes, _) = tokio::sync::watch::channel(0);
        CredentialStore {
            slots,
            generations: AtomicU64::new(0),
            min_remaining,
            clock,
            changes,
            metrics: Metrics::detached(),
        }
    }

    /// This store, recording into `metrics` (by default into a handle nobody reads).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Where the refreshers and endpoints of this store record.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Configured role names, sorted.
    pub fn role_names(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    /// The role ARN of a configured role.
    pub fn role_arn(&self, role: &str) -> Option<&str> {
        self.slots.get(role).map(|s| s.role_arn.as_str())
    }

    /// The current credentials of `role`, if they have at least the minimum lifetime left.
    pub fn get(&self, role: &str) -> Result<Arc<RoleCredentials>, Unavailable> {
        let slot = self
            .slots
            .get(role)
            .ok_or_else(|| Unavailable::UnknownRole(role.to_owned()))?;
        let reason = || (**slot.status.load()).clone();
        match &**slot.current.load() {
            None => Err(Unavailable::NotReady {
                role: role.to_owned(),
                reason: reason(),
            }),
            Some(creds) => {
                let now = self.clock.now();
                let left = creds.credentials.expiration.duration_since(now);
                if left.unwrap_or_default() < self.min_remaining {
                    Err(Unavailable::ExpiringSoon {
                        role: role.to_owned(),
                        reason: reason(),
                    })
                } else {
                    Ok(Arc::clone(creds))
                }
            }
        }
    }

    /// The refresher's last word on `role`.
    pub fn status(&self, role: &str) -> Option<Status> {
        self.slots.get(role).map(|s| (**s.status.load()).clone())
    }

    /// The credentials held for `role` regardless of remaining lifetime (refresher use).
    pub fn peek(&self, role: &str) -> Option<Arc<RoleCredentials>> {
        self.slots
            .get(role)
            .and_then(|s| (**s.current.load()).clone())
    }

    /// Sets a role's credentials (the refresher's job; public for tests and tools).
    pub fn publish(&self, role: &str, mut creds: RoleCredentials) {
        if let Some(slot) = self.slots.get(role) {
            creds.generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
            slot.current.store(Arc::new(Some(Arc::new(creds))));
            slot.status.store(Arc::new(Status::Ok));
            self.changes.send_modify(|v| *v += 1);
        }
    }

    /// Waits until every role in `roles` has credentials to hand out, at most `limit`;
    /// otherwise says why the first role still missing has none. (`run --once` and `dev`
    /// start serving only when this returns.)
    pub async fn wait_ready(
        &self,
        roles: &[impl AsRef<str>],
        limit: Duration,
    ) -> Result<(), Unavailable> {
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let Some(missing) = roles.iter().find_map(|r| self.get(r.as_ref()).err()) else {
                return Ok(());
            };
            // `changed` only fails when the store is gone, which `&self` rules out.
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(missing);
            }
        }
    }

    /// A receiver that wakes up whenever any role's credentials change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn set_status(&self, role: &str, status: Status) {
        if let Some(slot) = self.slots.get(role) {
            slot.status.store(Arc::new(status));
        }
    }

    /// Drops a role's credentials: used when the identity they came from is withdrawn.
    pub(crate) fn clear(&self, role: &str, status: Status) {
        if let Some(slot) = self.slots.get(role) {
            let had = slot.current.swap(Arc::new(None)).is_some();
            slot.status.store(Arc::new(status));
            if had {
                self.changes.send_modify(|v| *v += 1);
            }
        }
    }

    /// The minimum lifetime a reader gets.
    pub fn min_remaining(&self) -> Duration {
        self.min_remaining
    }

    /// The clock this store judges expiry by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}
