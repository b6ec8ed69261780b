//! The refresher's schedule, driven by paused tokio time with a counting fake exchanger:
//! no test sleeps for real.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use spiffe_aws_agent::credentials::refresher::{run_role, Exchanger, RefreshPolicy, RoleSpec};
use spiffe_aws_agent::credentials::{CredentialStore, ExchangeError, Status, Unavailable};
use spiffe_aws_agent::identity::watch::{Entry, Problem, Snapshot};
use spiffe_aws_agent::identity::workload_api::WorkloadApiError;
use spiffe_aws_agent::identity::{files, X509Identity};
use spiffe_aws_agent::rolesanywhere::{CreateSessionError, Credentials};
use spiffe_aws_agent::{Clock, TokioClock};
use tokio::sync::watch;
use zeroize::Zeroizing;

const LIFETIME: Duration = Duration::from_secs(3600);

/// Issues credentials valid for `LIFETIME` from the (virtual) now, or fails while told to.
struct FakeExchanger {
    clock: Arc<TokioClock>,
    calls: AtomicUsize,
    failures_left: AtomicUsize,
    /// Fail as Roles Anywhere does when it throttles, instead of with a 500.
    throttle: std::sync::atomic::AtomicBool,
    /// Lifetime of the credentials issued, in seconds.
    lifetime_secs: std::sync::atomic::AtomicU64,
    /// How long one exchange takes, in milliseconds.
    delay_ms: std::sync::atomic::AtomicU64,
    seen_leaves: Mutex<Vec<String>>,
}

impl Exchanger for FakeExchanger {
    fn exchange<'a>(
        &'a self,
        _role: &'a str,
        identity: &'a X509Identity,
    ) -> Pin<Box<dyn Future<Output = Result<Credentials, ExchangeError>> + Send + 'a>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.seen_leaves
                .lock()
                .unwrap()
                .push(identity.serial_decimal().to_owned());
            // Simulate a network round trip.
            tokio::time::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))).await;
            if self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                if self.throttle.load(Ordering::SeqCst) {
                    return Err(CreateSessionError::Throttled {
                        error_type: "ThrottlingException".into(),
                        message: "Rate exceeded".into(),
                    }
                    .into());
                }
                return Err(CreateSessionError::Server {
                    status: 500,
                    error_type: "InternalServerError".into(),
                    message: "boom".into(),
                }
                .into());
            }
            Ok(Credentials {
                access_key_id: format!("ASIAFAKE{n:08}"),
                secret_access_key: Zeroizing::new("secret".into()),
                session_token: Zeroizing::new("token".into()),
                expiration: self.clock.now()
                    + Duration::from_secs(self.lifetime_secs.load(Ordering::SeqCst)),
                assumed_role_arn: None,
                role_arn: "arn:aws:iam::123456789012:role/orders".into(),
            })
        })
    }
}

fn identity(name: &str) -> Arc<X509Identity> {
    Arc::new(
        files::load(
            &common::cert(&format!("{name}.pem")),
            &common::cert(&format!("{name}.key")),
            None,
            SystemTime::now(),
        )
        .unwrap(),
    )
}

fn snapshot(revision: u64, ids: &[Arc<X509Identity>]) -> Snapshot {
    Snapshot {
        revision,
        entries: ids
            .iter()
            .map(|i| Entry {
                spiffe_id: i.spiffe_id().map(str::to_owned),
                hint: None,
                identity: Ok(Arc::clone(i)),
            })
            .collect(),
        problem: None,
    }
}

struct Harness {
    store: Arc<CredentialStore>,
    exchanger: Arc<FakeExchanger>,
    tx: watch::Sender<Snapshot>,
}

fn start(initial: Snapshot, failures: usize) -> Harness {
    start_with(initial, failures, LIFETIME, Duration::from_secs(300))
}

fn start_with(
    initial: Snapshot,
    failures: usize,
    lifetime: Duration,
    min_remaining: Duration,
) -> Harness {
    let clock = Arc::new(TokioClock::new());
    let store = Arc::new(CredentialStore::new(
        [(
            "orders".to_string(),
            "arn:aws:iam::123456789012:role/orders".to_string(),
        )],
        min_remaining,
        clock.clone(),
    ));
    let exchanger = Arc::new(FakeExchanger {
        clock,
        calls: AtomicUsize::new(0),
        failures_left: AtomicUsize::new(failures),
        throttle: Default::default(),
        lifetime_secs: lifetime.as_secs().into(),
        delay_ms: 50.into(),
        seen_leaves: Mutex::new(Vec::new()),
    });
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(run_role(
        Arc::clone(&store),
        RoleSpec {
            name: "orders".into(),
            spiffe_id: None,
        },
        rx,
        exchanger.clone(),
        RefreshPolicy::default(),
    ));
    Harness {
        store,
        exchanger,
        tx,
    }
}

impl Harness {
    fn calls(&self) -> usize {
        self.exchanger.calls.load(Ordering::SeqCst)
    }
}

/// Lets the spawned task run and virtual time pass.
async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn exchanges_at_start_then_refreshes_when_a_third_of_the_lifetime_remains() {
    let h = start(snapshot(1, &[identity("orders-p256")]), 0);
    advance(Duration::from_secs(1)).await;
    assert_eq!(h.calls(), 1);
    let first = h.store.get("orders").unwrap();
    // Earliest refresh with maximum jitter: 60 - 20 - 6 = 34 minutes after issue.
    advance(Duration::from_secs(33 * 60)).await;
    assert_eq!(
        h.calls(),
        1,
        "no refresh before two thirds of the lifetime minus jitter"
    );
    // Latest: 40 minutes.
    advance(Duration::from_secs(7 * 60 + 2)).await;
    assert_eq!(
        h.calls(),
        2,
        "refreshed by the time a third of the lifetime remains"
    );
    let second = h.store.get("orders").unwrap();
    assert_ne!(
        first.credentials.access_key_id,
        second.credentials.access_key_id
    );
    // And again, one exchange per refresh, never more: after 220 minutes in all, with a
    // refresh every 34 to 40 minutes (jitter), there were 1 + 220/40 to 1 + 220/34 exchanges.
    advance(Duration::from_secs(3 * 3600)).await;
    let calls = h.calls();
    assert!((6..=7).contains(&calls), "{calls} exchanges in 220 minutes");
}

#[tokio::test(start_paused = true)]
async fn readers_never_wait_and_there_is_one_exchange_in_flight() {
    let h = start(snapshot(1, &[identity("orders-p256")]), 0);
    // While the first exchange is in flight, readers get an immediate answer.
    let early = h.store.get("orders");
    assert!(
        matches!(early, Err(Unavailable::NotReady { .. })),
        "{early:?}"
    );
    advance(Duration::from_secs(1)).await;
    // Many readers, one exchange.
    for _ in 0..1000 {
        h.store.get("orders").unwrap();
    }
    assert_eq!(h.calls(), 1);
    assert!(matches!(
        h.store.get("billing"),
        Err(Unavailable::UnknownRole(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_rotated_svid_is_exchanged_promptly() {
    let h = start(snapshot(1, &[identity("orders-p256")]), 0);
    advance(Duration::from_secs(1)).await;
    let before = h.store.get("orders").unwrap();
    h.tx.send_replace(snapshot(2, &[identity("orders-p384")]));
    advance(Duration::from_millis(200)).await;
    assert_eq!(h.calls(), 2, "re-exchanged right after the rotation");
    let after = h.store.get("orders").unwrap();
    assert_ne!(
        before.credentials.access_key_id,
        after.credentials.access_key_id
    );
    assert_ne!(before.leaf_sha256, after.leaf_sha256);
    let seen = h.exchanger.seen_leaves.lock().unwrap().clone();
    assert_eq!(seen[1], identity("orders-p384").serial_decimal());
    // The same SVID again (a bundle-only update) causes no exchange.
    h.tx.send_replace(snapshot(3, &[identity("orders-p384")]));
    advance(Duration::from_millis(200)).await;
    assert_eq!(h.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_withdrawn_identity_stops_the_credentials_at_once() {
    let h = start(snapshot(1, &[identity("orders-p256")]), 0);
    advance(Duration::from_secs(1)).await;
    assert!(h.store.get("orders").is_ok());
    h.tx.send_replace(Snapshot {
        revision: 2,
        entries: vec![],
        problem: Some(Problem::Withdrawn(Arc::new(WorkloadApiError::NoIdentity {
            address: "unix:///spire.sock".into(),
            reason: "no identity issued".into(),
        }))),
    });
    advance(Duration::from_millis(10)).await;
    assert!(h.store.get("orders").is_err());
    assert!(matches!(
        h.store.status("orders"),
        Some(Status::Withdrawn(_))
    ));
    // Recovery.
    h.tx.send_replace(snapshot(3, &[identity("orders-p256")]));
    advance(Duration::from_secs(1)).await;
    assert!(h.store.get("orders").is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_source_keeps_serving_until_expiry_unlike_a_withdrawal() {
    let h = start(snapshot(1, &[identity("orders-p256")]), 0);
    advance(Duration::from_secs(1)).await;
    let before = h.store.get("orders").unwrap();
    // SPIRE goes away: not a withdrawal, so valid credentials stay served.
    h.tx.send_replace(Snapshot {
        revision: 2,
        entries: vec![],
        problem: Some(Problem::Unavailable(Arc::new(
            WorkloadApiError::Unreachable {
                address: "unix:///spire.sock".into(),
                reason: "connection refused".into(),
            },
        ))),
    });
    advance(Duration::from_secs(60)).await;
    assert_eq!(
        h.store.get("orders").unwrap().credentials.access_key_id,
        before.credentials.access_key_id
    );
    assert!(matches!(h.store.status("orders"), Some(Status::Failing(_))));
    assert_eq!(h.calls(), 1, "no exchange without an identity");
    // And they stop once fewer than the minimum 5 minutes remain.
    advance(Duration::from_secs(3600 - 60 - 300)).await;
    let e = h.store.get("orders").unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot reach the SPIFFE Workload API"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_recover() {
    let h = start(snapshot(1, &[identity("orders-p256")]), 3);
    advance(Duration::from_millis(100)).await;
    assert_eq!(h.calls(), 1);
    let e = h.store.get("orders").unwrap_err();
    assert!(e.to_string().contains("HTTP 500"), "{e}");
    // Backoff 1s, 2s, 4s (each with up to half of it random): not a hot loop.
    advance(Duration::from_millis(400)).await;
    assert_eq!(h.calls(), 1, "no immediate retry");
    advance(Duration::from_secs(10)).await;
    assert_eq!(h.calls(), 4);
    assert!(h.store.get("orders").is_ok());
}

#[tokio::test(start_paused = true)]
async fn throttling_backs_off_longer_than_a_server_error() {
    let h = start(snapshot(1, &[identity("orders-p256")]), 0);
    h.exchanger.throttle.store(true, Ordering::SeqCst);
    h.exchanger.failures_left.store(3, Ordering::SeqCst);
    advance(Duration::from_millis(100)).await;
    assert_eq!(h.calls(), 1);
    let e = h.store.get("orders").unwrap_err();
    assert!(e.to_string().contains("ThrottlingException"), "{e}");
    // A 500 is retried within 1 s; throttling waits at least 10 s each time.
    advance(Duration::from_secs(9)).await;
    assert_eq!(h.calls(), 1, "no retry before the throttled backoff");
    advance(Duration::from_secs(2)).await;
    assert_eq!(h.calls(), 2);
    advance(Duration::from_secs(25)).await;
    assert_eq!(h.calls(), 4, "retries keep coming, at least 10 s apart");
    assert!(h.store.get("orders").is_ok());
}

#[tokio::test(start_paused = true)]
async fn credentials_close_to_expiry_are_not_handed_out() {
    // Every refresh fails after the first exchange.
    let h = start(snapshot(1, &[identity("orders-p256")]), 0);
    advance(Duration::from_secs(1)).await;
    h.exchanger
        .failures_left
        .store(usize::MAX, Ordering::SeqCst);
    advance(Duration::from_secs(3600 - 301 - 1)).await;
    assert!(
        h.store.get("orders").is_ok(),
        "still more than 5 minutes left"
    );
    advance(Duration::from_secs(3)).await;
    let e = h.store.get("orders").unwrap_err();
    assert!(matches!(e, Unavailable::ExpiringSoon { .. }), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn a_large_minimum_lifetime_never_leaves_a_gap() {
    // 900 s sessions, nothing handed out with under 600 s left: the refresh must come
    // before 600 s remain, not at a third of the lifetime (300 s).
    let h = start_with(
        snapshot(1, &[identity("orders-p256")]),
        0,
        Duration::from_secs(900),
        Duration::from_secs(600),
    );
    advance(Duration::from_secs(1)).await;
    let mut refused = 0;
    for _ in 0..(2 * 3600) {
        if h.store.get("orders").is_err() {
            refused += 1;
        }
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(refused, 0, "every poll over two hours was served");
    assert!(
        h.calls() >= 2 * 3600 / 300,
        "refreshed every ~4 min: {}",
        h.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn credentials_too_short_to_serve_are_a_failure_with_backoff_not_a_storm() {
    // The service caps sessions below the minimum lifetime: nothing can ever be served.
    let h = start_with(
        snapshot(1, &[identity("orders-p256")]),
        0,
        Duration::from_secs(200),
        Duration::from_secs(300),
    );
    advance(Duration::from_secs(15)).await;
    // Backoff 1, 2, 4, 8 s (each at least half): at most 5 calls in 15 s, not hundreds.
    assert!((2..=5).contains(&h.calls()), "{} calls", h.calls());
    let e = h.store.get("orders").unwrap_err();
    assert!(
        e.to_string().contains("valid for 199 s") || e.to_string().contains("valid for 200 s"),
        "{e}"
    );
    assert!(matches!(h.store.status("orders"), Some(Status::Failing(_))));
}

#[tokio::test(start_paused = true)]
async fn a_withdrawal_during_a_slow_exchange_wins_and_its_result_is_discarded() {
    let h = start(snapshot(1, &[identity("orders-p256")]), 0);
    advance(Duration::from_secs(1)).await;
    assert!(h.store.get("orders").is_ok());
    // The SVID rotates and the exchange for it hangs for 30 s.
    h.exchanger.delay_ms.store(30_000, Ordering::SeqCst);
    h.tx.send_replace(snapshot(2, &[identity("orders-p384")]));
    advance(Duration::from_secs(1)).await;
    assert_eq!(h.calls(), 2, "the exchange for the new SVID is running");
    // Meanwhile SPIRE withdraws the identity.
    h.tx.send_replace(Snapshot {
        revision: 3,
        entries: vec![],
        problem: Some(Problem::Withdrawn(Arc::new(WorkloadApiError::NoIdentity {
            address: "unix:///spire.sock".into(),
            reason: "no identity issued".into(),
        }))),
    });
    advance(Duration::from_millis(100)).await;
    assert!(h.store.get("orders").is_err(), "withdrawn within 0.1 s");
    advance(Duration::from_secs(60)).await;
    assert!(
        h.store.peek("orders").is_none(),
        "nothing published after the withdrawal"
    );
    assert!(matches!(
        h.store.status("orders"),
        Some(Status::Withdrawn(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_new_spiffe_id_drops_the_old_identitys_credentials_even_if_the_exchange_fails() {
    // A role without spiffe_id follows the default SVID.
    let h = start(snapshot(1, &[identity("orders-p256")]), 0);
    advance(Duration::from_secs(1)).await;
    assert_eq!(
        h.store.get("orders").unwrap().spiffe_id.as_deref(),
        identity("orders-p256").spiffe_id()
    );
    h.exchanger
        .failures_left
        .store(usize::MAX, Ordering::SeqCst);
    h.tx.send_replace(snapshot(2, &[identity("reviews-p256")]));
    advance(Duration::from_secs(5)).await;
    assert!(h.calls() >= 2);
    assert!(
        h.store.peek("orders").is_none(),
        "credentials of the old SPIFFE ID are gone"
    );
}
