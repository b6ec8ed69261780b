//! Per-caller mode (`run` with `spire_admin_socket`) as a process: workload processes under
//! their own uids share one agent socket, SPIRE (the Delegated Identity double) attests each
//! by its pid, and each gets only the roles bound to its own SVID, exchanged with that SVID.
//!
//! The tests spawn workloads under other uids, so they need root (CI runs them as root).

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::stack::{failure_line, parse_process_output, svid_from_files, Stack};
use spiffe_aws_agent::dev::aws_services::{AwsServicesConfig, AwsServicesDouble};
use spiffe_aws_agent::dev::rolesanywhere::{
    RolesAnywhereDoubleConfig, DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS, DEV_ROLE_ARN_REVIEWS,
    DEV_TRUST_ANCHOR_ARN,
};
use spiffe_aws_agent::dev::workload_api::{DelegatedIdentityDouble, Registration, SvidEntry};

const ORDERS: &str = "spiffe://example.org/service/orders";
const REVIEWS: &str = "spiffe://example.org/service/reviews";
const AGENT_ID: &str = "spiffe://example.org/spiffe-aws-agent";
const ORDERS_UID: u32 = 2101;
const REVIEWS_UID: u32 = 2102;
const STRANGER_UID: u32 = 2199;

fn orders_svid() -> SvidEntry {
    svid_from_files(ORDERS, "orders-p256.pem", "orders-p256.key", true)
}

fn reviews_svid() -> SvidEntry {
    svid_from_files(REVIEWS, "reviews-p256.pem", "reviews-p256.key", true)
}

fn registration(uid: u32, svid: SvidEntry) -> Registration {
    Registration {
        uid,
        gid: None,
        svid,
    }
}

/// The agent in per-caller mode and the doubles it talks to.
struct PerCallerStack {
    stack: Stack,
    spire: DelegatedIdentityDouble,
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Drop for PerCallerStack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PerCallerStack {
    /// `roles`: (name, role ARN, spiffe_id pattern).
    async fn start(roles: &[(&str, &str, &str)], extra: &str) -> PerCallerStack {
        Self::start_authorizing(roles, extra, vec![AGENT_ID.to_owned()]).await
    }

    /// `authorized`: the SPIRE agent's `authorized_delegates`.
    async fn start_authorizing(
        roles: &[(&str, &str, &str)],
        extra: &str,
        authorized: Vec<String>,
    ) -> PerCallerStack {
        Self::start_full(
            roles,
            extra,
            authorized,
            RolesAnywhereDoubleConfig::default(),
        )
        .await
    }

    async fn start_full(
        roles: &[(&str, &str, &str)],
        extra: &str,
        authorized: Vec<String>,
        rolesanywhere: RolesAnywhereDoubleConfig,
    ) -> PerCallerStack {
        assert_others_can_run(std::path::Path::new(env!("CARGO_BIN_EXE_spiffe-aws-agent")));
        let stack = Stack::start_with(Vec::new(), rolesanywhere).await;
        let dir = stack.dir.path().to_path_buf();
        // Workloads under other uids must reach the socket and the binary's paths.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spire = DelegatedIdentityDouble::start(
            dir.join("spire-admin.sock"),
            HashMap::from([(0, AGENT_ID.to_owned())]),
            authorized,
            vec![
                registration(ORDERS_UID, orders_svid()),
                registration(REVIEWS_UID, reviews_svid()),
            ],
        )
        .await
        .expect("Delegated Identity double");
        let socket = dir.join("spiffe-aws-agent.sock");
        let mut toml = format!(
            "spire_admin_socket = \"{}\"\nendpoint = \"{}\"\nca_bundle = \"{}\"\n{extra}",
            spire.endpoint(),
            stack.rolesanywhere.endpoint(),
            stack.ca_bundle.display()
        );
        for (name, arn, pattern) in roles {
            toml.push_str(&format!(
                "[[role]]\nname = \"{name}\"\ntrust_anchor_arn = \"{DEV_TRUST_ANCHOR_ARN}\"\nprofile_arn = \"{DEV_PROFILE_ARN}\"\nrole_arn = \"{arn}\"\nspiffe_id = \"{pattern}\"\n"
            ));
        }
        toml.push_str(&format!(
            "[agent_socket]\npath = \"{}\"\n",
            socket.display()
        ));
        let config = dir.join("agent.toml");
        std::fs::write(&config, toml).unwrap();
        let log = dir.join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "spiffe_aws_agent=debug")
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the agent");
        let started = PerCallerStack {
            stack,
            spire,
            child,
            socket,
            log,
        };
        started.wait_for_log("agent socket (per caller").await;
        started
    }

    fn seed() -> [(&'static str, &'static str, &'static str); 2] {
        [
            ("orders", DEV_ROLE_ARN_ORDERS, ORDERS),
            ("reviews", DEV_ROLE_ARN_REVIEWS, REVIEWS),
        ]
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_for_log(&self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(marker) {
            assert!(
                Instant::now() < deadline,
                "the agent never logged {marker:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `credential-process --agent SOCKET [--role ROLE]` run as `uid`.
    async fn fetch_as(&self, uid: u32, role: Option<&str>) -> Output {
        let socket = self.socket.clone();
        let role = role.map(str::to_owned);
        tokio::task::spawn_blocking(move || credential_process_as(&socket, uid, role.as_deref()))
            .await
            .unwrap()
    }

    /// The accepted CreateSession calls: (SPIFFE ID, role ARN) of each.
    fn sessions(&self) -> Vec<(String, String)> {
        self.stack
            .rolesanywhere
            .calls()
            .iter()
            .filter(|c| c.status == 201)
            .map(|c| {
                (
                    c.spiffe_id.clone().unwrap_or_default(),
                    c.role_arn.clone().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// Workloads run the binary under other uids: every directory above it must let them pass.
fn assert_others_can_run(binary: &std::path::Path) {
    for dir in binary.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        assert!(
            mode & 0o001 != 0,
            "{} (mode {mode:o}) keeps other uids from running {}: per-caller tests run workloads as uids {ORDERS_UID}/{REVIEWS_UID}; build in a directory others can traverse",
            dir.display(),
            binary.display()
        );
    }
}

fn credential_process_as(socket: &std::path::Path, uid: u32, role: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"));
    cmd.arg("credential-process").arg("--agent").arg(socket);
    if let Some(role) = role {
        cmd.args(["--role", role]);
    }
    cmd.uid(uid)
        .gid(uid)
        .output()
        .expect("run credential-process")
}

/// The SPIFFE ID Roles Anywhere recorded for the session of `access_key_id`.
fn session_spiffe_id(stack: &PerCallerStack, access_key_id: &str) -> Option<String> {
    stack
        .stack
        .rolesanywhere
        .session_for_access_key(access_key_id)
        .and_then(|s| s.spiffe_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workload_gets_its_own_role_exchanged_with_its_own_svid() {
    let stack = PerCallerStack::start(&PerCallerStack::seed(), "").await;
    let orders = parse_process_output(&stack.fetch_as(ORDERS_UID, None).await);
    let reviews = parse_process_output(&stack.fetch_as(REVIEWS_UID, None).await);
    let orders_key = orders["AccessKeyId"].as_str().unwrap();
    let reviews_key = reviews["AccessKeyId"].as_str().unwrap();
    assert_ne!(orders_key, reviews_key);
    assert_eq!(
        session_spiffe_id(&stack, orders_key).as_deref(),
        Some(ORDERS)
    );
    assert_eq!(
        session_spiffe_id(&stack, reviews_key).as_deref(),
        Some(REVIEWS)
    );
    // Naming the own role gives the same cached credentials.
    let named = parse_process_output(&stack.fetch_as(ORDERS_UID, Some("orders")).await);
    assert_eq!(named["AccessKeyId"], orders["AccessKeyId"]);
    let mut sessions = stack.sessions();
    sessions.sort();
    assert_eq!(
        sessions,
        vec![
            (ORDERS.to_owned(), DEV_ROLE_ARN_ORDERS.to_owned()),
            (REVIEWS.to_owned(), DEV_ROLE_ARN_REVIEWS.to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_bound_to_another_spiffe_id_is_refused_with_both_ids() {
    let stack = PerCallerStack::start(&PerCallerStack::seed(), "").await;
    let out = stack.fetch_as(REVIEWS_UID, Some("orders")).await;
    assert_eq!(out.status.code(), Some(1));
    let line = failure_line(&out);
    assert!(
        line.contains(&format!("has SPIFFE ID {REVIEWS}"))
            && line.contains(&format!("role \"orders\" needs {ORDERS}")),
        "{line}"
    );
    assert!(
        stack.sessions().iter().all(|(id, _)| id != REVIEWS),
        "no exchange for a refused caller: {:?}",
        stack.sessions()
    );
    // An unknown role is refused too, without attesting anyone's credentials.
    let out = stack.fetch_as(REVIEWS_UID, Some("nope")).await;
    assert!(failure_line(&out).contains("no role named \"nope\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_spire_does_not_attest_is_refused() {
    let stack = PerCallerStack::start(&PerCallerStack::seed(), "").await;
    // A role name that is not configured gets the same answer: an unattested caller cannot
    // probe which role names exist.
    for role in [None, Some("orders"), Some("no-such-role")] {
        let out = stack.fetch_as(STRANGER_UID, role).await;
        assert_eq!(out.status.code(), Some(1));
        let line = failure_line(&out);
        assert!(
            line.contains("SPIRE issued no SVID to this process")
                && line.contains(&format!("uid {STRANGER_UID}")),
            "{line}"
        );
    }
    assert!(stack.sessions().is_empty(), "{:?}", stack.sessions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_spire_does_not_authorize_as_a_delegate_serves_nothing_and_says_why() {
    let stack = PerCallerStack::start_authorizing(
        &PerCallerStack::seed(),
        "",
        vec!["spiffe://example.org/someone-else".to_owned()],
    )
    .await;
    let out = stack.fetch_as(ORDERS_UID, None).await;
    assert_eq!(out.status.code(), Some(1));
    let line = failure_line(&out);
    assert!(
        line.contains("refused this agent as a delegate")
            && line.contains("caller not configured as an authorized delegate")
            && line.contains("authorized_delegates"),
        "{line}"
    );
    assert!(stack.sessions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_serves_many_workloads_each_with_its_own_session() {
    let stack = PerCallerStack::start(
        &[(
            "services",
            DEV_ROLE_ARN_ORDERS,
            "spiffe://example.org/service/*",
        )],
        "",
    )
    .await;
    let orders = parse_process_output(&stack.fetch_as(ORDERS_UID, None).await);
    let reviews = parse_process_output(&stack.fetch_as(REVIEWS_UID, Some("services")).await);
    assert_eq!(
        session_spiffe_id(&stack, orders["AccessKeyId"].as_str().unwrap()).as_deref(),
        Some(ORDERS)
    );
    assert_eq!(
        session_spiffe_id(&stack, reviews["AccessKeyId"].as_str().unwrap()).as_deref(),
        Some(REVIEWS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_entry_withdraws_that_workloads_credentials_only() {
    let stack = PerCallerStack::start(&PerCallerStack::seed(), "").await;
    let orders_before = parse_process_output(&stack.fetch_as(ORDERS_UID, None).await);
    let reviews_before = parse_process_output(&stack.fetch_as(REVIEWS_UID, None).await);

    stack.spire.remove(ORDERS);
    // The agent hears it on the subscription it kept, and drops orders' credentials at once.
    stack
        .wait_for_log("SPIRE no longer issues this SVID: dropping its credentials")
        .await;
    let line = failure_line(&stack.fetch_as(ORDERS_UID, None).await);
    assert!(line.contains("SPIRE issued no SVID"), "{line}");
    // reviews is unaffected: the same credentials, no new exchange.
    let reviews_after = parse_process_output(&stack.fetch_as(REVIEWS_UID, None).await);
    assert_eq!(reviews_after["AccessKeyId"], reviews_before["AccessKeyId"]);

    // Registered again, orders gets new credentials: the old ones were dropped, not kept.
    stack
        .spire
        .register(registration(ORDERS_UID, orders_svid()));
    let orders_after = parse_process_output(&stack.fetch_as(ORDERS_UID, None).await);
    assert_ne!(orders_after["AccessKeyId"], orders_before["AccessKeyId"]);
    let orders_sessions = stack
        .sessions()
        .iter()
        .filter(|(id, _)| id == ORDERS)
        .count();
    assert_eq!(orders_sessions, 2, "{:?}", stack.sessions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_from_each_workload_make_one_create_session_per_pair() {
    let stack = PerCallerStack::start(&PerCallerStack::seed(), "").await;
    let mut workers = Vec::new();
    for (uid, role) in [(ORDERS_UID, "orders"), (REVIEWS_UID, "reviews")] {
        let socket = stack.socket.clone();
        workers.push(tokio::task::spawn_blocking(move || {
            let mut keys = std::collections::BTreeSet::new();
            for i in 0..1000 {
                // Half name the role, half let the agent pick the caller's one role.
                let out = credential_process_as(&socket, uid, (i % 2 == 0).then_some(role));
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                keys.insert(json["AccessKeyId"].as_str().unwrap().to_owned());
            }
            keys
        }));
    }
    for worker in workers {
        assert_eq!(worker.await.unwrap().len(), 1, "all from the cache");
    }
    let mut sessions = stack.sessions();
    sessions.sort();
    assert_eq!(
        sessions,
        vec![
            (ORDERS.to_owned(), DEV_ROLE_ARN_ORDERS.to_owned()),
            (REVIEWS.to_owned(), DEV_ROLE_ARN_REVIEWS.to_owned()),
        ],
        "one CreateSession per (SPIFFE ID, role)"
    );
    assert!(
        stack.spire.subscriptions() >= 2000,
        "every call was attested"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_unused_for_the_idle_time_are_dropped() {
    let stack =
        PerCallerStack::start(&PerCallerStack::seed(), "per_caller_idle_seconds = 1\n").await;
    let first = parse_process_output(&stack.fetch_as(ORDERS_UID, None).await);
    stack.wait_for_log("idle: dropping the credentials").await;
    let second = parse_process_output(&stack.fetch_as(ORDERS_UID, None).await);
    assert_ne!(
        first["AccessKeyId"], second["AccessKeyId"],
        "a new exchange after idling"
    );
}

/// The seed scenario through per-caller mode: the Lattice double's auth policies see each
/// workload's own SPIFFE ID. The Python client runs as root (the venv lives under /root), and
/// its `credential_process` runs as the workload's uid (setpriv), so the agent attests the
/// workload, not the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_against_lattice_policies_through_per_caller_mode() {
    let stack = PerCallerStack::start(&PerCallerStack::seed(), "").await;
    let aws = AwsServicesDouble::start(
        AwsServicesConfig::seed(),
        stack.stack.rolesanywhere.session_lookup(),
    )
    .await
    .expect("AWS services double");
    let dir = stack.stack.dir.path();
    let mut config = String::new();
    for (profile, uid) in [("orders", ORDERS_UID), ("reviews", REVIEWS_UID)] {
        config.push_str(&format!(
            "[profile {profile}]\nregion = us-east-1\ncredential_process = setpriv --reuid={uid} --regid={uid} --clear-groups {} credential-process --agent {}\n",
            env!("CARGO_BIN_EXE_spiffe-aws-agent"),
            stack.socket.display()
        ));
    }
    let config_path = dir.join("aws-config");
    std::fs::write(&config_path, config).unwrap();
    for (profile, service, allowed) in [
        ("orders", "billing", true),
        ("orders", "rates", true),
        ("reviews", "rates", true),
        ("reviews", "billing", false),
    ] {
        let env = vec![
            (
                "AWS_CONFIG_FILE".to_owned(),
                config_path.display().to_string(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
                dir.join("none").display().to_string(),
            ),
            ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
            ("AWS_PROFILE".to_owned(), profile.to_owned()),
        ];
        let out = common::run_client(
            common::python(),
            vec![
                common::root()
                    .join("scripts/lattice-call.py")
                    .display()
                    .to_string(),
                "--profile".into(),
                profile.into(),
                "--service".into(),
                service.into(),
                "--endpoint".into(),
                aws.endpoint(),
            ],
            env,
        )
        .await;
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if allowed {
            assert_eq!(
                out.status.code(),
                Some(0),
                "{profile} -> {service}: {output}"
            );
            assert!(output.starts_with("200 "), "{output}");
            assert!(
                output.contains(&format!("spiffe://example.org/service/{profile}")),
                "{output}"
            );
        } else {
            assert_eq!(
                out.status.code(),
                Some(3),
                "{profile} -> {service}: {output}"
            );
            assert!(output.contains("AccessDeniedException"), "{output}");
        }
    }
    assert_eq!(stack.sessions().len(), 2, "{:?}", stack.sessions());
}

/// The pid check: SPIRE attested the process, but it ended before the answer came back, so
/// the pid may already name another process. The agent refuses instead of trusting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_ends_during_attestation_is_refused() {
    use spiffe_aws_agent::identity::delegated::{AttestError, DelegatedIdentity, PeerProcess};

    let dir = tempfile::tempdir().unwrap();
    let spire = DelegatedIdentityDouble::start(
        dir.path().join("admin.sock"),
        HashMap::from([(0, AGENT_ID.to_owned())]),
        vec![AGENT_ID.to_owned()],
        vec![registration(ORDERS_UID, orders_svid())],
    )
    .await
    .unwrap();
    let api = DelegatedIdentity::new(spire.endpoint(), Duration::from_secs(5));
    let clock: std::sync::Arc<dyn spiffe_aws_agent::Clock> =
        std::sync::Arc::new(spiffe_aws_agent::TokioClock::new());
    let spawn = || {
        Command::new("sleep")
            .arg("0.3")
            .uid(ORDERS_UID)
            .gid(ORDERS_UID)
            .spawn()
            .unwrap()
    };
    let process = |child: &Child| PeerProcess {
        pid: child.id() as i32,
        uid: ORDERS_UID,
        gid: ORDERS_UID,
    };

    // Answered while the process lives: attested as orders.
    let mut child = spawn();
    let (entries, _) = api.attest(process(&child), clock.clone()).await.unwrap();
    assert_eq!(entries[0].spiffe_id.as_deref(), Some(ORDERS));
    child.wait().unwrap();

    // Answered after it ended: refused.
    spire.delay_answers(Duration::from_millis(800));
    let mut child = spawn();
    let caller = process(&child);
    let reaper = std::thread::spawn(move || child.wait());
    match api.attest(caller, clock.clone()).await {
        Err(e @ AttestError::PidReused { .. }) => {
            assert!(e.to_string().contains("pid was reused"), "{e}")
        }
        Ok(_) => panic!("a process gone during attestation was accepted"),
        Err(e) => panic!("{e}"),
    }
    reaper.join().unwrap().unwrap();
}

/// SPIRE rotates orders' SVID: the agent hears it on the subscription it kept and exchanges
/// the new SVID at once, before orders asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_svid_is_exchanged_without_waiting_for_a_caller() {
    let stack = PerCallerStack::start(&PerCallerStack::seed(), "").await;
    let before = parse_process_output(&stack.fetch_as(ORDERS_UID, None).await);
    let issuer = spiffe_aws_agent::dev::workload_api::SvidIssuer::from_test_intermediate().unwrap();
    let rotated = issuer.issue(ORDERS, Duration::from_secs(3600)).unwrap();
    let rotated_leaf = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &rotated.chain_der[0],
    ));
    stack.spire.register(registration(ORDERS_UID, rotated));
    let deadline = Instant::now() + Duration::from_secs(15);
    while stack
        .sessions()
        .iter()
        .filter(|(id, _)| id == ORDERS)
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no exchange after rotation:\n{}",
            stack.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = stack.stack.rolesanywhere.calls();
    let last = calls.iter().rev().find(|c| c.status == 201).unwrap();
    assert_eq!(last.leaf_sha256_hex.as_deref(), Some(rotated_leaf.as_str()));
    let after = parse_process_output(&stack.fetch_as(ORDERS_UID, None).await);
    assert_ne!(after["AccessKeyId"], before["AccessKeyId"]);
}

/// Short-lived credentials are refreshed ahead of expiry while a workload keeps asking, and
/// it is never handed expired ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_use_are_refreshed_before_they_expire() {
    let rolesanywhere = RolesAnywhereDoubleConfig {
        credential_lifetime: Some(Duration::from_secs(6)),
        ..RolesAnywhereDoubleConfig::default()
    };
    let stack = PerCallerStack::start_full(
        &PerCallerStack::seed(),
        "min_remaining_seconds = 1\n",
        vec![AGENT_ID.to_owned()],
        rolesanywhere,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut keys = std::collections::BTreeSet::new();
    while Instant::now() < deadline
        && stack
            .sessions()
            .iter()
            .filter(|(id, _)| id == ORDERS)
            .count()
            < 3
    {
        let json = parse_process_output(&stack.fetch_as(ORDERS_UID, None).await);
        let exp = time::OffsetDateTime::parse(
            json["Expiration"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            exp > time::OffsetDateTime::now_utc(),
            "served expired credentials"
        );
        keys.insert(json["AccessKeyId"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let orders_sessions = stack
        .sessions()
        .iter()
        .filter(|(id, _)| id == ORDERS)
        .count();
    assert!(
        orders_sessions >= 3,
        "refreshed twice in 15 s:\n{}",
        stack.log()
    );
    assert!(keys.len() >= 2, "new credentials were served: {keys:?}");
    // reviews never asked: no session for it.
    assert!(stack.sessions().iter().all(|(id, _)| id != REVIEWS));
}
