//! `spiffe-aws-agent` against a real SPIRE server and agent (spiffe/spire v1.13.3, built by
//! `scripts/build-peers.sh`): SVIDs come from SPIRE's `unix` workload attestor, the verifying
//! Roles Anywhere double trusts the SPIRE server's bundle. Covers one-shot `credential-process`
//! with P-256 and RSA SVIDs; `run` with every channel on through SPIRE rotation, entry deletion
//! and re-creation, and a `spire-agent` restart; and the seed scenario with two workloads under
//! two uids. The times SPIRE takes are printed (run with `--nocapture` to see them).

mod common;

use std::time::{Duration, Instant};

use common::agent_stack::{AgentProcess, AgentSpec, Via, ORDERS, REVIEWS};
use common::clients::assert_orders_call_on;
use common::peers::bin;
use common::run_client;
use common::spire::{own_ids, SpireOptions, SpireStack, SPIRE_WAIT};
use common::stack::{parse_process_output, run_agent};
use spiffe_aws_agent::dev::rolesanywhere::{
    RecordedCall, DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS, DEV_ROLE_ARN_REVIEWS, DEV_TRUST_ANCHOR_ARN,
};

/// Unprivileged uids for the two-workload scenario (no account needed).
const ORDERS_UID: u32 = 41001;
const REVIEWS_UID: u32 = 41002;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

fn accepted(stack: &SpireStack) -> Vec<RecordedCall> {
    stack
        .rolesanywhere
        .calls()
        .into_iter()
        .filter(|c| c.status == 201)
        .collect()
}

/// What `spire-agent api fetch x509` gives the workload running as `uid`: the leaf DER and
/// its public key algorithm OID. Polls until SPIRE has synced the entry.
async fn fetch_svid(stack: &SpireStack, uid: u32, gid: u32) -> (Vec<u8>, String) {
    let out_dir = stack.workload_dir(&format!("fetch-{uid}"), uid, gid);
    let socket = stack.spire.workload_socket.clone();
    let deadline = Instant::now() + SPIRE_WAIT;
    loop {
        let out = {
            use std::os::unix::process::CommandExt as _;
            let mut cmd = std::process::Command::new(bin("spire-agent"));
            cmd.args(["api", "fetch", "x509", "-silent", "-socketPath"])
                .arg(&socket)
                .arg("-write")
                .arg(&out_dir);
            if uid != own_ids().0 {
                cmd.uid(uid).gid(gid);
            }
            tokio::task::spawn_blocking(move || cmd.output().expect("spire-agent api fetch"))
                .await
                .expect("join")
        };
        if out.status.success() {
            let pem = std::fs::read_to_string(out_dir.join("svid.0.pem")).expect("svid.0.pem");
            let leaf = common::stack::pem_to_der(&pem).remove(0);
            let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("leaf");
            let alg = cert.public_key().algorithm.algorithm.to_id_string();
            return (leaf, alg);
        }
        assert!(
            Instant::now() < deadline,
            "no SVID for uid {uid}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            stack.spire.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn session_args(stack: &SpireStack, role_arn: &str) -> Vec<String> {
    vec![
        "--trust-anchor-arn".into(),
        DEV_TRUST_ANCHOR_ARN.into(),
        "--profile-arn".into(),
        DEV_PROFILE_ARN.into(),
        "--role-arn".into(),
        role_arn.into(),
        "--endpoint".into(),
        stack.rolesanywhere.endpoint(),
        "--ca-bundle".into(),
        stack.ca_bundle.display().to_string(),
    ]
}

/// `spiffe-aws-agent run` for one workload with every channel on, as `uid`/`gid`.
async fn start_agent(
    stack: &SpireStack,
    name: &str,
    roles: Vec<(String, String, Option<String>)>,
    uid_gid: (u32, u32),
) -> AgentProcess {
    let dir = stack.workload_dir(name, uid_gid.0, uid_gid.1);
    let own = own_ids();
    let process = AgentProcess::spawn(AgentSpec {
        dir,
        workload_api: stack.spire.workload_endpoint(),
        endpoint: stack.rolesanywhere.endpoint(),
        ca_bundle: stack.ca_bundle.clone(),
        roles: roles.clone(),
        min_remaining_seconds: None,
        uid_gid: (uid_gid != own).then_some(uid_gid),
    })
    .await;
    for (role, _, _) in &roles {
        process.wait_for_role_within(role, SPIRE_WAIT).await;
    }
    process
}

fn orders_role() -> Vec<(String, String, Option<String>)> {
    vec![(
        "orders".into(),
        DEV_ROLE_ARN_ORDERS.into(),
        Some(ORDERS.into()),
    )]
}

/// The access key `credential-process --agent` serves now, or the failure.
async fn served_key(agent: &AgentProcess) -> Result<String, String> {
    let out = agent.credential_process("orders").await;
    if out.status.success() {
        Ok(parse_process_output(&out)["AccessKeyId"]
            .as_str()
            .expect("AccessKeyId")
            .to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Status of the IMDS credentials GET for `role`.
async fn imds_status(agent: &AgentProcess, role: &str) -> u16 {
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let token = client
        .put(format!("{}/latest/api/token", agent.imds_url))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .expect("token")
        .text()
        .await
        .expect("token text");
    client
        .get(format!(
            "{}/latest/meta-data/iam/security-credentials/{role}",
            agent.imds_url
        ))
        .header("X-aws-ec2-metadata-token", token)
        .send()
        .await
        .expect("IMDS GET")
        .status()
        .as_u16()
}

/// Polls `check` every 200 ms until it returns `Some`, up to `limit`; panics with `what`.
async fn poll<T, F, Fut>(limit: Duration, what: &str, context: impl Fn() -> String, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}:\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn context(stack: &SpireStack, agent: &AgentProcess) -> String {
    format!(
        "--- spiffe-aws-agent\n{}\n{}\n--- Roles Anywhere calls\n{:?}",
        agent.log(),
        stack.spire.logs(),
        stack.rolesanywhere.calls()
    )
}

async fn one_shot_credential_process(key_type: &'static str, expected_alg_oid: &str) {
    let stack = SpireStack::start(SpireOptions {
        workload_key_type: key_type,
        ..SpireOptions::default()
    })
    .await;
    let (uid, gid) = own_ids();
    stack.spire.create_entry(ORDERS, uid).await;
    let (leaf, alg) = fetch_svid(&stack, uid, gid).await;
    assert_eq!(alg, expected_alg_oid, "SPIRE issued a {key_type} SVID");

    let mut args = vec![
        "credential-process".to_string(),
        "--workload-api-socket".into(),
        stack.spire.workload_endpoint(),
    ];
    args.extend(session_args(&stack, DEV_ROLE_ARN_ORDERS));
    let out = run_agent(args).await;
    let json = parse_process_output(&out);
    let session = stack
        .rolesanywhere
        .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
        .expect("the double issued these credentials");
    assert_eq!(json["SecretAccessKey"], session.secret_access_key.as_str());
    assert_eq!(json["SessionToken"], session.session_token.as_str());
    assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS));
    assert_eq!(session.role_arn, DEV_ROLE_ARN_ORDERS);
    let calls = accepted(&stack);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].leaf_sha256_hex.as_deref(),
        Some(sha256_hex(&leaf).as_str()),
        "signed with the SVID SPIRE issued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_exchanges_a_p256_svid_from_spire() {
    one_shot_credential_process("ec-p256", "1.2.840.10045.2.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_exchanges_an_rsa_2048_svid_from_spire() {
    one_shot_credential_process("rsa-2048", "1.2.840.113549.1.1.1").await;
}

/// boto3's default chain, then `sts.get_caller_identity()` against `argv[1]`.
const BOTO3: &str = r#"
import json, sys, boto3
session = boto3.Session()
creds = session.get_credentials()
if creds is None:
    sys.exit("boto3 found no credentials")
sts = session.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1")
print(json.dumps({"method": creds.method, "arn": sts.get_caller_identity()["Arn"]}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_every_channel_and_follows_spire_rotation() {
    // 30 s SVIDs: the SPIRE agent rotates them at about half their life (13.5..16.5 s, then up
    // to its 5 s sync interval).
    let stack = SpireStack::start(SpireOptions {
        default_x509_svid_ttl: Duration::from_secs(30),
        ..SpireOptions::default()
    })
    .await;
    let ids = own_ids();
    stack.spire.create_entry(ORDERS, ids.0).await;
    let started = Instant::now();
    let agent = start_agent(&stack, "orders", orders_role(), ids).await;
    eprintln!("first credentials served after {:?}", started.elapsed());

    for (via, method) in [
        (Via::Imds, "iam-role"),
        (Via::Container("orders"), "container-role"),
        (Via::CredentialProcess("orders"), "custom-process"),
        (Via::CredentialsFile, "shared-credentials-file"),
    ] {
        let before = stack.aws.calls().len();
        let out = run_client(
            common::python(),
            vec!["-c".into(), BOTO3.into(), stack.aws.endpoint()],
            agent.client_env(via),
        )
        .await;
        assert!(
            out.status.success(),
            "boto3 via {via:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            context(&stack, &agent)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(got["method"], method, "{via:?}");
        assert_orders_call_on(
            &stack.aws,
            &stack.rolesanywhere,
            before,
            got["arn"].as_str().unwrap(),
            &format!("boto3 via {via:?}"),
        );
    }

    // Rotation: SPIRE issues a new leaf; the agent makes a CreateSession signed with it and
    // serves the new credentials.
    let first = accepted(&stack)[0].clone();
    let rotation_started = Instant::now();
    let (key, serial) = poll(
        Duration::from_secs(90),
        "no credentials from a rotated SVID",
        || context(&stack, &agent),
        || async {
            let key = served_key(&agent).await.ok()?;
            let session = stack.rolesanywhere.session_for_access_key(&key)?;
            (Some(&session.leaf_serial_decimal) != first.leaf_serial_decimal.as_ref())
                .then_some((key, session.leaf_serial_decimal))
        },
    )
    .await;
    eprintln!(
        "credentials from the rotated SVID served {:?} after the first check",
        rotation_started.elapsed()
    );
    let call = accepted(&stack)
        .into_iter()
        .find(|c| c.leaf_serial_decimal.as_ref() == Some(&serial))
        .expect("the CreateSession of the served key");
    assert_ne!(call.leaf_sha256_hex, first.leaf_sha256_hex, "a new leaf");
    assert_eq!(call.spiffe_id.as_deref(), Some(ORDERS));
    assert_eq!(imds_status(&agent, "orders").await, 200, "{key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_entry_withdraws_credentials_and_recreating_it_restores_them() {
    let stack = SpireStack::start(SpireOptions::default()).await;
    let ids = own_ids();
    let entry = stack.spire.create_entry(ORDERS, ids.0).await;
    let agent = start_agent(&stack, "orders", orders_role(), ids).await;
    let first_key = served_key(&agent).await.expect("served");
    assert_eq!(imds_status(&agent, "orders").await, 200);

    stack.spire.delete_entry(&entry).await;
    let deleted = Instant::now();
    let reason = poll(
        Duration::from_secs(60),
        "credentials still served after the entry was deleted",
        || context(&stack, &agent),
        || async { served_key(&agent).await.err() },
    )
    .await;
    let withdrawn_after = deleted.elapsed();
    eprintln!("credentials withdrawn {withdrawn_after:?} after `entry delete`: {reason}");
    assert!(reason.contains("orders"), "{reason}");
    assert_eq!(imds_status(&agent, "orders").await, 503);
    // SPIRE's agent syncs entries every 5 s; allow for a slow machine, not for never.
    assert!(
        withdrawn_after < Duration::from_secs(30),
        "{withdrawn_after:?}"
    );

    stack.spire.create_entry(ORDERS, ids.0).await;
    let recreated = Instant::now();
    let key = poll(
        SPIRE_WAIT,
        "no credentials after the entry was re-created",
        || context(&stack, &agent),
        || async { served_key(&agent).await.ok() },
    )
    .await;
    eprintln!(
        "credentials served again {:?} after `entry create`",
        recreated.elapsed()
    );
    assert_ne!(key, first_key, "a new session for the new SVID");
    assert_eq!(imds_status(&agent, "orders").await, 200);
    let sessions: Vec<_> = stack.rolesanywhere.issued();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_ne!(
        sessions[0].leaf_serial_decimal, sessions[1].leaf_serial_decimal,
        "the re-created entry got a new SVID"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spire_agent_restart_keeps_credentials_served_and_brings_a_new_svid() {
    let mut stack = SpireStack::start(SpireOptions::default()).await;
    let ids = own_ids();
    stack.spire.create_entry(ORDERS, ids.0).await;
    let agent = start_agent(&stack, "orders", orders_role(), ids).await;
    let first_key = served_key(&agent).await.expect("served");
    let first_serial = stack
        .rolesanywhere
        .session_for_access_key(&first_key)
        .unwrap()
        .leaf_serial_decimal;

    stack.spire.kill_agent();
    let killed = Instant::now();
    // While the SPIRE agent is down, the credentials (valid for an hour) keep being served.
    while killed.elapsed() < Duration::from_secs(8) {
        assert_eq!(
            served_key(&agent).await.as_deref(),
            Ok(first_key.as_str()),
            "{}",
            context(&stack, &agent)
        );
        assert_eq!(imds_status(&agent, "orders").await, 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    stack.spire.start_agent(None).await;
    let restarted = Instant::now();
    let key = poll(
        Duration::from_secs(90),
        "no credentials from the restarted SPIRE agent's SVID",
        || context(&stack, &agent),
        || async {
            // Never a gap: every answer along the way is credentials.
            let key = served_key(&agent).await.expect("served throughout");
            let session = stack.rolesanywhere.session_for_access_key(&key)?;
            (session.leaf_serial_decimal != first_serial).then_some(key)
        },
    )
    .await;
    eprintln!(
        "credentials from the restarted agent's SVID served {:?} after the restart",
        restarted.elapsed()
    );
    assert_ne!(key, first_key);
}

/// `scripts/lattice-call.py` with the profile of `agent`: (exit code, output).
async fn lattice(
    stack: &SpireStack,
    agent: &AgentProcess,
    profile: &'static str,
    service: &str,
) -> (i32, String) {
    common::lattice_call(
        stack.aws.endpoint(),
        profile,
        service,
        agent.client_env(Via::CredentialProcess(profile)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_with_two_workloads_attested_by_uid() {
    assert_eq!(
        own_ids().0,
        0,
        "this test runs workloads under two other uids, which needs root (as in CI)"
    );
    let stack = SpireStack::start(SpireOptions::default()).await;
    stack.spire.create_entry(ORDERS, ORDERS_UID).await;
    stack.spire.create_entry(REVIEWS, REVIEWS_UID).await;
    let orders = start_agent(&stack, "orders", orders_role(), (ORDERS_UID, ORDERS_UID)).await;
    let reviews = start_agent(
        &stack,
        "reviews",
        vec![(
            "reviews".into(),
            DEV_ROLE_ARN_REVIEWS.into(),
            Some(REVIEWS.into()),
        )],
        (REVIEWS_UID, REVIEWS_UID),
    )
    .await;

    for (agent, profile, service, allowed) in [
        (&orders, "orders", "billing", true),
        (&orders, "orders", "rates", true),
        (&reviews, "reviews", "rates", true),
        (&reviews, "reviews", "billing", false),
    ] {
        let (code, output) = lattice(&stack, agent, profile, service).await;
        if allowed {
            assert_eq!(code, 0, "{profile} -> {service}: {output}");
            assert!(output.starts_with("200 "), "{output}");
            assert!(
                output.contains(&format!("spiffe://example.org/service/{profile}")),
                "the caller's SPIFFE ID is echoed: {output}"
            );
        } else {
            assert_eq!(code, 3, "{profile} -> {service} must be denied: {output}");
            assert!(output.contains("AccessDeniedException"), "{output}");
        }
    }
    // Each workload's agent got its own uid's SVID, and exchanged it once.
    let calls = accepted(&stack);
    let mut ids: Vec<_> = calls
        .iter()
        .map(|c| (c.spiffe_id.clone(), c.role_arn.clone()))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            (
                Some(ORDERS.to_owned()),
                Some(DEV_ROLE_ARN_ORDERS.to_owned())
            ),
            (
                Some(REVIEWS.to_owned()),
                Some(DEV_ROLE_ARN_REVIEWS.to_owned())
            ),
        ],
        "{calls:?}"
    );
}
