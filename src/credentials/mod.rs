//! The per-role credential cache every server reads from.
//!
//! Each role has one slot. The refresher ([`refresher`]) is the only writer; readers (the
//! IMDS, container and agent-socket endpoints, the credentials file) take the current value
//! with one atomic load and never wait on a refresh, on SPIRE or on Roles Anywhere.
//! A reader never gets credentials with less than the configured minimum lifetime left.

pub mod clock;
pub mod refresher;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use zeroize::Zeroizing;

use crate::rolesanywhere::client::Credentials;
use clock::Clock;

/// The documents each channel serves for one credential set, rendered on first use and then
/// shared by every reader: the hot IMDS path copies a reference count instead of formatting
/// JSON and timestamps per request.
#[derive(Clone, Default)]
pub struct RenderCache {
    cells: [std::sync::OnceLock<axum::body::Bytes>; 4],
}

/// Which document a [`RenderCache`] cell holds.
#[derive(Debug, Clone, Copy)]
pub enum Rendered {
    ImdsLegacy = 0,
    ImdsExtended = 1,
    Container = 2,
    CredentialProcess = 3,
}

/// Credentials for one role, as served. `Debug` hides the secret and the token.
#[derive(Clone)]
pub struct RoleCredentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Zeroizing<String>,
    pub expiration: SystemTime,
    /// When the agent got them: IMDS's `LastUpdated`.
    pub last_updated: SystemTime,
    pub role_arn: String,
    /// The SPIFFE ID of the SVID they were exchanged for.
    pub spiffe_id: Option<String>,
    /// SHA-256 of the leaf certificate they were exchanged for: how the refresher notices a
    /// rotated SVID.
    pub leaf_sha256: [u8; 32],
    /// Serialized documents (they hold the secret: never logged, zeroized with the set only
    /// as far as `Bytes` allows, like any response buffer).
    pub rendered: RenderCache,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("role_arn", &self.role_arn)
            .field("spiffe_id", &self.spiffe_id)
            .finish_non_exhaustive()
    }
}

impl RoleCredentials {
    /// Wraps what CreateSession returned.
    pub fn new(
        creds: Credentials,
        now: SystemTime,
        spiffe_id: Option<String>,
        leaf_sha256: [u8; 32],
    ) -> Self {
        RoleCredentials {
            access_key_id: creds.access_key_id,
            secret_access_key: creds.secret_access_key,
            session_token: creds.session_token,
            expiration: creds.expiration,
            last_updated: now,
            role_arn: creds.role_arn,
            spiffe_id,
            leaf_sha256,
            rendered: RenderCache::default(),
        }
    }

    /// The `which` document, rendered by `render` the first time it is asked for.
    pub fn rendered(
        &self,
        which: Rendered,
        render: impl FnOnce(&Self) -> String,
    ) -> axum::body::Bytes {
        self.rendered.cells[which as usize]
            .get_or_init(|| axum::body::Bytes::from(render(self)))
            .clone()
    }
}

/// Why a role has no credentials to hand out right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("no role named {0:?} is configured")]
    UnknownRole(String),
    #[error("credentials for role {role:?} are not available yet: {reason}")]
    NotReady { role: String, reason: String },
    #[error("credentials for role {role:?} expire too soon to hand out and the refresh has not succeeded yet: {reason}")]
    ExpiringSoon { role: String, reason: String },
}

/// What the refresher last saw for a role; surfaced in errors and health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Starting,
    Ok,
    Failing(String),
    /// The identity the credentials came from was withdrawn by the Workload API.
    Withdrawn(String),
}

struct Slot {
    role_arn: String,
    current: ArcSwap<Option<Arc<RoleCredentials>>>,
    status: ArcSwap<Status>,
}

/// The cache: one slot per configured role.
pub struct CredentialStore {
    slots: BTreeMap<String, Slot>,
    min_remaining: Duration,
    clock: Arc<dyn Clock>,
    /// Bumped on every publish or clear, so writers like the credentials file react at once.
    changes: tokio::sync::watch::Sender<u64>,
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
            min_remaining,
            clock,
            changes,
        }
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
        let reason = || match &**slot.status.load() {
            Status::Starting => "the first exchange has not finished".to_owned(),
            Status::Ok => "no credentials".to_owned(),
            Status::Failing(e) | Status::Withdrawn(e) => e.clone(),
        };
        match &**slot.current.load() {
            None => Err(Unavailable::NotReady {
                role: role.to_owned(),
                reason: reason(),
            }),
            Some(creds) => {
                let now = self.clock.now();
                if creds.expiration.duration_since(now).unwrap_or_default() < self.min_remaining {
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
    pub fn publish(&self, role: &str, creds: RoleCredentials) {
        if let Some(slot) = self.slots.get(role) {
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
