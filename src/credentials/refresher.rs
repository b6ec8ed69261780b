//! Keeps each role's credentials fresh.
//!
//! One task per role is the only thing that calls CreateSession for that role, so there is
//! never more than one exchange in flight per role (single-flight by construction), however
//! many clients read. The task exchanges:
//! - at start, as soon as the identity is available;
//! - when the SVID it used rotates (the leaf changes), without waiting;
//! - ahead of expiry, when `refresh_remaining` of the lifetime is left (a third by
//!   default), minus a random jitter of up to `jitter` of the lifetime, so a fleet started
//!   together does not refresh in step;
//! - after a failure, with exponential backoff, while readers keep the old credentials as
//!   long as they have the minimum lifetime left.
//!
//! When the Workload API withdraws the identity, the role's credentials are dropped at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{CredentialStore, ExchangeError, Failure, RoleCredentials, Status};
use crate::backoff::Backoff;
use crate::identity::watch::Snapshot;
use crate::identity::X509Identity;
use crate::rolesanywhere::{Credentials, ErrorClass};

/// One role the agent keeps credentials for.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    /// The name clients ask for (IMDS role name, `/v1/credentials/{name}`).
    pub name: String,
    /// Which SVID to exchange (SPIFFE ID or hint); `None` = the default SVID.
    pub spiffe_id: Option<String>,
}

/// Performs a role's exchange (Roles Anywhere CreateSession with the SVID, or STS
/// AssumeRoleWithWebIdentity with a JWT-SVID of the SVID's SPIFFE ID); a trait so the
/// scheduling is tested without a network.
pub trait Exchanger: Send + Sync + 'static {
    fn exchange<'a>(
        &'a self,
        role: &'a str,
        identity: &'a X509Identity,
    ) -> Pin<Box<dyn Future<Output = Result<Credentials, ExchangeError>> + Send + 'a>>;

    /// Whether a rotation of the X.509-SVID calls for a new exchange at once: yes when the
    /// SVID itself is what is exchanged. A web-identity exchange only takes the SVID's
    /// SPIFFE ID (its JWT-SVID is fetched fresh each time), so it says no.
    fn exchanges_the_svid(&self) -> bool {
        true
    }
}

/// When to refresh.
#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// Refresh when this fraction of the lifetime remains.
    pub refresh_remaining: f64,
    /// Up to this fraction of the lifetime earlier, at random.
    pub jitter: f64,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The shortest wait after Roles Anywhere throttled us: retrying at `min_backoff` would
    /// only add to the account's CreateSession rate that caused it.
    pub throttled_backoff: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            refresh_remaining: 1.0 / 3.0,
            jitter: 0.1,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            throttled_backoff: Duration::from_secs(10),
        }
    }
}

impl RefreshPolicy {
    /// When credentials issued at `issued` and expiring at `expiration` should be refreshed;
    /// `random` in [0, 1) picks the jitter.
    pub fn refresh_at(
        &self,
        issued: SystemTime,
        expiration: SystemTime,
        random: f64,
    ) -> SystemTime {
        let lifetime = expiration.duration_since(issued).unwrap_or_default();
        let ahead =
            lifetime.mul_f64(self.refresh_remaining) + lifetime.mul_f64(self.jitter * random);
        expiration.checked_sub(ahead).unwrap_or(issued)
    }
}

/// How long before credentials drop under the minimum lifetime the refresher must have
/// replaced them: a tenth of their lifetime, at most a minute.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_REFRESH_MARGIN)
}

/// See [`refresh_margin`].
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// When to refresh credentials issued `now` that expire at `expiration`: the policy's point,
/// but never later than [`refresh_margin`] before they drop under `min_remaining`. `None`
/// when they leave no such room (they cannot be served, or only for less than the margin).
pub fn next_refresh(
    policy: &RefreshPolicy,
    now: SystemTime,
    expiration: SystemTime,
    min_remaining: Duration,
    random: f64,
) -> Option<SystemTime> {
    let lifetime = expiration.duration_since(now).ok()?;
    let deadline = expiration.checked_sub(min_remaining + refresh_margin(lifetime))?;
    if deadline <= now {
        return None;
    }
    Some(policy.refresh_at(now, expiration, random).min(deadline))
}

/// How an exchange ended.
enum Exchanged {
    Done(Result<Credentials, ExchangeError>),
    /// The identity was withdrawn while the exchange ran: its result must not be served.
    Withdrawn,
}

/// Runs one exchange, abandoning it as soon as the identity is withdrawn; a result that
/// arrives after a withdrawal is discarded.
async fn exchange_unless_withdrawn(
    exchanger: &dyn Exchanger,
    role: &str,
    identity: &X509Identity,
    identities: &mut watch::Receiver<Snapshot>,
) -> Exchanged {
    let exchange = exchanger.exchange(role, identity);
    tokio::pin!(exchange);
    loop {
        tokio::select! {
            result = &mut exchange => {
                if identities.borrow().is_withdrawn() {
                    return Exchanged::Withdrawn;
                }
                return Exchanged::Done(result);
            }
            changed = identities.changed() => {
                if changed.is_err() {
                    // The source is gone; nothing can withdraw the identity any more.
                    return Exchanged::Done(exchange.await);
                }
                if identities.borrow().is_withdrawn() {
                    return Exchanged::Withdrawn;
                }
            }
        }
    }
}

/// Runs the refresh loop for `role` until the identity channel closes.
pub async fn run_role(
    store: Arc<CredentialStore>,
    role: RoleSpec,
    mut identities: watch::Receiver<Snapshot>,
    exchanger: Arc<dyn Exchanger>,
    policy: RefreshPolicy,
) {
    let clock = Arc::clone(store.clock());
    let min_remaining = store.min_remaining();
    let mut backoff = Backoff::new(policy.min_backoff, policy.max_backoff);
    let mut next_refresh_at: Option<SystemTime> = None;
    loop {
        let snapshot = identities.borrow_and_update().clone();
        let wait = match snapshot.select(role.spiffe_id.as_deref()) {
            Err(reason) => {
                if snapshot.is_withdrawn() {
                    if store.peek(&role.name).is_some() {
                        tracing::warn!(role = %role.name, %reason, "identity withdrawn: dropping its credentials");
                        store.metrics().identity_withdrawn(&role.name);
                    }
                    store.clear(&role.name, Status::Withdrawn(reason));
                } else if snapshot.problem.is_none() {
                    // The source works but offers no SVID for this role: the old one is gone.
                    store.clear(&role.name, Status::Failing(Failure::Identity(reason)));
                } else {
                    store.set_status(&role.name, Status::Failing(Failure::Identity(reason)));
                }
                None
            }
            Ok(identity) => {
                let leaf = sha256(identity.leaf_der());
                if let Some(old) = store.peek(&role.name) {
                    if old.spiffe_id.as_deref() != identity.spiffe_id() {
                        // Credentials of another identity than the one the agent now has
                        // must not outlive the change, even if the re-exchange fails.
                        tracing::warn!(role = %role.name, old = ?old.spiffe_id, new = ?identity.spiffe_id(), "the SVID's SPIFFE ID changed: dropping the old identity's credentials");
                        store.clear(&role.name, Status::Starting);
                    }
                }
                let current = store.peek(&role.name);
                let now = clock.now();
                let rotated = exchanger.exchanges_the_svid()
                    && current.as_ref().is_some_and(|c| c.leaf_sha256 != leaf);
                let due = match (&current, next_refresh_at) {
                    (None, _) => true,
                    (Some(_), Some(at)) => now >= at,
                    (Some(_), None) => true,
                };
                if rotated || due {
                    if rotated {
                        tracing::info!(role = %role.name, "SVID rotated: exchanging the new one");
                        store.metrics().svid_rotated(&role.name);
                    }
                    let revision = snapshot.revision;
                    let started = std::time::Instant::now();
                    let outcome = exchange_unless_withdrawn(
                        &*exchanger,
                        &role.name,
                        &identity,
                        &mut identities,
                    )
                    .await;
                    if let Exchanged::Done(result) = &outcome {
                        let result = result.as_ref().map(|_| ()).map_err(|e| e.class());
                        store
                            .metrics()
                            .create_session(&role.name, result, started.elapsed());
                    }
                    let wait = match outcome {
                        Exchanged::Withdrawn => Some(Duration::ZERO),
                        Exchanged::Done(Ok(creds)) => {
                            let now = clock.now();
                            let schedule = next_refresh(
                                &policy,
                                now,
                                creds.expiration,
                                min_remaining,
                                fastrand::f64(),
                            );
                            let left = creds.expiration.duration_since(now).unwrap_or_default();
                            let access_key_id = creds.access_key_id.clone();
                            if left > min_remaining {
                                store.publish(
                                    &role.name,
                                    RoleCredentials::new(
                                        creds,
                                        now,
                                        identity.spiffe_id().map(str::to_owned),
                                        leaf,
                                    ),
                                );
                            }
                            match schedule {
                                Some(at) => {
                                    tracing::info!(role = %role.name, %access_key_id, "credentials refreshed");
                                    next_refresh_at = Some(at);
                                    backoff.reset();
                                    Some(at.duration_since(clock.now()).unwrap_or_default())
                                }
                                None => {
                                    // Counted as a failure: retrying at once would get the
                                    // same short credentials, as fast as the service answers.
                                    let failure = Failure::TooShort {
                                        seconds_left: left.as_secs(),
                                        min_remaining_seconds: min_remaining.as_secs(),
                                    };
                                    tracing::warn!(role = %role.name, %failure, "unusable credentials; will retry");
                                    store.set_status(&role.name, Status::Failing(failure));
                                    next_refresh_at = None;
                                    Some(backoff.next_delay())
                                }
                            }
                        }
                        Exchanged::Done(Err(error)) => {
                            let class = error.class();
                            tracing::warn!(role = %role.name, %error, ?class, "exchange failed; will retry");
                            store.set_status(
                                &role.name,
                                Status::Failing(Failure::Exchange(Arc::new(error))),
                            );
                            let delay = backoff.next_delay();
                            Some(match class {
                                ErrorClass::Throttled => delay.max(policy.throttled_backoff),
                                _ => delay,
                            })
                        }
                    };
                    if identities.borrow().revision != revision {
                        // The identity changed while the exchange ran: look at it now.
                        Some(Duration::ZERO)
                    } else {
                        wait
                    }
                } else {
                    next_refresh_at.map(|at| at.duration_since(now).unwrap_or_default())
                }
            }
        };
        let changed = async {
            match wait {
                Some(d) => {
                    tokio::select! {
                        r = identities.changed() => r.is_ok(),
                        _ = tokio::time::sleep(d) => true,
                    }
                }
                None => identities.changed().await.is_ok(),
            }
        };
        if !changed.await {
            return;
        }
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_due_when_a_third_of_the_lifetime_remains_minus_jitter() {
        let p = RefreshPolicy::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let exp = t0 + Duration::from_secs(3600);
        let at = p.refresh_at(t0, exp, 0.0);
        let expected = t0 + Duration::from_secs(2400);
        let off = at
            .duration_since(expected)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap();
        assert!(off < Duration::from_millis(1), "{at:?} vs {expected:?}");
        let earliest = p.refresh_at(t0, exp, 0.999_999);
        assert!(
            earliest < t0 + Duration::from_secs(2400) && earliest >= t0 + Duration::from_secs(2040)
        );
        // Already-expired credentials are due at once.
        assert!(p.refresh_at(exp, t0, 0.5) <= exp);
    }
}
