//! `spiffe-aws-agent run` as a process against the doubles: the seed scenario signed by a
//! real client, SVID rotation, refresh before expiry, and the cache absorbing client calls.

mod common;

use std::time::{Duration, Instant};

use common::agent_stack::{AgentOptions, AgentStack, Via, ORDERS};
use common::stack::parse_process_output;
use spiffe_aws_agent::dev::workload_api::SvidIssuer;

fn accepted_calls(stack: &AgentStack) -> usize {
    stack
        .stack
        .rolesanywhere
        .calls()
        .iter()
        .filter(|c| c.status == 201)
        .count()
}

async fn lattice(stack: &AgentStack, profile: &'static str, service: &str) -> (i32, String) {
    let mut env = stack.client_env(Via::CredentialProcess(profile));
    env.push(("AWS_PROFILE".into(), profile.into()));
    common::lattice_call(stack.aws.endpoint(), profile, service, env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_orders_and_reviews_against_lattice_policies() {
    let stack = AgentStack::start(AgentOptions::seed()).await;
    for (profile, service, allowed) in [
        ("orders", "billing", true),
        ("orders", "rates", true),
        ("reviews", "rates", true),
        ("reviews", "billing", false),
    ] {
        let (code, output) = lattice(&stack, profile, service).await;
        if allowed {
            assert_eq!(code, 0, "{profile} -> {service}: {output}");
            assert!(output.starts_with("200 "), "{output}");
            let spiffe_id = format!("spiffe://example.org/service/{profile}");
            assert!(
                output.contains(&spiffe_id),
                "the caller's SPIFFE ID is echoed: {output}"
            );
        } else {
            assert_eq!(code, 3, "{profile} -> {service} must be denied: {output}");
            assert!(output.contains("AccessDeniedException"), "{output}");
        }
    }
    // The agent made one CreateSession per role, not one per call.
    assert_eq!(
        accepted_calls(&stack),
        2,
        "{:?}",
        stack.stack.rolesanywhere.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_svid_leads_to_a_new_session_signed_with_the_new_certificate() {
    let mut options = AgentOptions::seed();
    options.svids.truncate(1);
    options.roles.truncate(1);
    let stack = AgentStack::start(options).await;
    let before = parse_process_output(&stack.credential_process("orders").await);
    assert_eq!(accepted_calls(&stack), 1);

    let issuer = SvidIssuer::from_test_intermediate().unwrap();
    let rotated = issuer.issue(ORDERS, Duration::from_secs(3600)).unwrap();
    let rotated_leaf_sha = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &rotated.chain_der[0],
    ));
    stack.stack.workload_api.set_svids(vec![rotated]);

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = parse_process_output(&stack.credential_process("orders").await);
        if now["AccessKeyId"] != before["AccessKeyId"] {
            let calls = stack.stack.rolesanywhere.calls();
            let last = calls.iter().rev().find(|c| c.status == 201).unwrap();
            assert_eq!(
                last.leaf_sha256_hex.as_deref(),
                Some(rotated_leaf_sha.as_str()),
                "signed with the new leaf"
            );
            assert_eq!(accepted_calls(&stack), 2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new credentials after rotation:\n{}",
            stack.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_credentials_are_refreshed_before_they_expire() {
    let mut options = AgentOptions::seed();
    options.svids.truncate(1);
    options.roles.truncate(1);
    // 6 s credentials, handed out while at least 1 s remains: refresh at ~4 s.
    options.rolesanywhere.credential_lifetime = Some(Duration::from_secs(6));
    options.min_remaining_seconds = Some(1);
    let stack = AgentStack::start(options).await;
    let first = parse_process_output(&stack.credential_process("orders").await);
    let first_expiration = first["Expiration"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut served = vec![first["AccessKeyId"].as_str().unwrap().to_owned()];
    while Instant::now() < deadline && accepted_calls(&stack) < 3 {
        let out = stack.credential_process("orders").await;
        // Every answer along the way is usable: never an error, never expired.
        let json = parse_process_output(&out);
        let exp = time::OffsetDateTime::parse(
            json["Expiration"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            exp > time::OffsetDateTime::now_utc(),
            "served expired credentials"
        );
        let key = json["AccessKeyId"].as_str().unwrap().to_owned();
        if served.last() != Some(&key) {
            served.push(key);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        accepted_calls(&stack) >= 3,
        "refreshed twice in 15 s with 6 s credentials:\n{}",
        stack.log()
    );
    assert!(
        served.len() >= 2,
        "new credentials were served: {served:?} (first expiring {first_expiration})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_credential_process_calls_cause_no_create_session() {
    let mut options = AgentOptions::seed();
    options.svids.truncate(1);
    options.roles.truncate(1);
    let stack = AgentStack::start(options).await;
    let baseline = stack.stack.rolesanywhere.calls().len();
    let socket = stack.agent_socket.clone();
    let keys = tokio::task::spawn_blocking(move || {
        let mut keys = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
                .args(["credential-process", "--agent"])
                .arg(&socket)
                .args(["--role", "orders"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            keys.insert(json["AccessKeyId"].as_str().unwrap().to_owned());
        }
        keys
    })
    .await
    .unwrap();
    assert_eq!(keys.len(), 1, "all from the cache");
    assert_eq!(
        stack.stack.rolesanywhere.calls().len(),
        baseline,
        "no CreateSession beyond the agent's own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_identity_stops_serving_and_recovers() {
    let mut options = AgentOptions::seed();
    options.svids.truncate(1);
    options.roles.truncate(1);
    let stack = AgentStack::start(options).await;
    stack.stack.workload_api.deny();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = stack.credential_process("orders").await;
        if !out.status.success() {
            let line = String::from_utf8_lossy(&out.stderr);
            assert!(line.contains("orders"), "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still serving after withdrawal:\n{}",
            stack.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let issuer = SvidIssuer::from_test_intermediate().unwrap();
    stack.stack.workload_api.set_svids(vec![issuer
        .issue(ORDERS, Duration::from_secs(3600))
        .unwrap()]);
    stack.wait_for_role("orders").await;
}
