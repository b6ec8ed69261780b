//! The web-identity path against a real SPIRE server and agent (spiffe/spire v1.13.3): the
//! SPIRE agent mints the JWT-SVID (`FetchJWTSVID`, `unix` workload attestor), and the STS
//! double trusts the SPIRE server's JWT keys, taken the two ways an operator can: the
//! server's bundle in SPIFFE format (`spire-server bundle show -format spiffe`, what the OIDC
//! discovery provider publishes) and the Workload API's `FetchJWTBundles`.

mod common;

use std::time::{Duration, Instant};

use common::agent_stack::{AgentProcess, Via};
use common::jwt_stack::{provider, AUDIENCE, ORDERS};
use common::spire::{own_ids, SpireOptions, SpireStack, JWT_ISSUER, SPIRE_WAIT};
use common::stack::{failure_line, parse_process_output, run_agent};
use spiffe_aws_agent::dev::rolesanywhere::DEV_ROLE_ARN_ORDERS;

/// Waits until SPIRE issues this process a JWT-SVID (the entry reached the agent).
async fn wait_for_jwt_svid(stack: &SpireStack) {
    let deadline = Instant::now() + SPIRE_WAIT;
    loop {
        let fetched = async {
            let client = spiffe::WorkloadApiClient::connect_to(stack.spire.workload_endpoint())
                .await
                .ok()?;
            client.fetch_all_jwt_svids([AUDIENCE], None).await.ok()
        }
        .await;
        if fetched.is_some_and(|svids| !svids.is_empty()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "SPIRE issued no JWT-SVID:\n{}",
            stack.spire.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn args(stack: &SpireStack, audience: &str) -> Vec<String> {
    vec![
        "jwt-credential-process".into(),
        "--workload-api-socket".into(),
        stack.spire.workload_endpoint(),
        "--audience".into(),
        audience.into(),
        "--role-arn".into(),
        DEV_ROLE_ARN_ORDERS.into(),
        "--endpoint".into(),
        stack.aws.https_endpoint(),
        "--ca-bundle".into(),
        stack.ca_bundle.display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_credential_process_and_run_with_jwt_svids_from_spire() {
    let stack = SpireStack::start(SpireOptions::default()).await;
    let (uid, _) = own_ids();
    stack.spire.create_entry(ORDERS, uid).await;
    let started = Instant::now();
    wait_for_jwt_svid(&stack).await;
    println!("SPIRE issued a JWT-SVID after {:?}", started.elapsed());

    // The server's bundle in SPIFFE format: its jwt-svid keys verify the agent's tokens.
    stack
        .aws
        .add_oidc_provider(provider(JWT_ISSUER, stack.spire.bundle_jwks().await));
    let out = run_agent(args(&stack, AUDIENCE)).await;
    let json = parse_process_output(&out);
    let session = stack
        .aws
        .web_identity_sessions()
        .into_iter()
        .find(|s| s.access_key_id == json["AccessKeyId"].as_str().unwrap())
        .expect("STS issued these credentials");
    assert_eq!(session.role_arn, DEV_ROLE_ARN_ORDERS);
    assert_eq!(session.role_session_name, "example.org.service.orders");

    // The Workload API's FetchJWTBundles serves the same keys.
    let client = spiffe::WorkloadApiClient::connect_to(stack.spire.workload_endpoint())
        .await
        .unwrap();
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    let bundle = bundles.get(&td).expect("the trust domain's JWT bundle");
    let keys: Vec<serde_json::Value> = bundle
        .jwt_authorities()
        .map(|a| serde_json::from_slice(a.jwk_json()).unwrap())
        .collect();
    let jwks = serde_json::json!({ "keys": keys }).to_string();
    stack.aws.add_oidc_provider(provider(JWT_ISSUER, jwks));
    parse_process_output(&run_agent(args(&stack, AUDIENCE)).await);

    // Asked by SPIFFE ID: SPIRE mints that one; an ID the workload does not have is refused
    // the way the Workload API double refuses it.
    let mut by_id = args(&stack, AUDIENCE);
    by_id.extend(["--spiffe-id".to_string(), ORDERS.to_string()]);
    parse_process_output(&run_agent(by_id).await);
    let mut other = args(&stack, AUDIENCE);
    other.extend([
        "--spiffe-id".to_string(),
        "spiffe://example.org/service/other".to_string(),
    ]);
    let line = failure_line(&run_agent(other).await);
    println!("SPIRE on an ID the workload does not have: {line}");
    assert!(
        line.contains("has no SVID with SPIFFE ID or hint \"spiffe://example.org/service/other\"; it offers: spiffe://example.org/service/orders"),
        "{line}"
    );

    // How long one jwt-credential-process takes against SPIRE and the STS double.
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        parse_process_output(&run_agent(args(&stack, AUDIENCE)).await);
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "jwt-credential-process with SPIRE: median {:?} of 5 (min {:?}, max {:?})",
        times[2], times[0], times[4]
    );

    // SPIRE mints for any audience; STS refuses one the provider does not list.
    let line = failure_line(&run_agent(args(&stack, "someone-else")).await);
    assert!(line.contains("Incorrect token audience"), "{line}");

    // The agent keeps a web-identity role fresh from SPIRE's JWT-SVIDs and serves it.
    let dir = stack.spire.dir.path().join("agent-jwt");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        "workload_api_socket = \"{}\"\nsts_endpoint = \"{}\"\nca_bundle = \"{}\"\n[[role]]\nname = \"orders\"\nexchange = \"web-identity\"\naudience = \"{AUDIENCE}\"\nrole_arn = \"{DEV_ROLE_ARN_ORDERS}\"\n",
        stack.spire.workload_endpoint(),
        stack.aws.https_endpoint(),
        stack.ca_bundle.display(),
    );
    let agent = AgentProcess::launch(dir, toml, &["orders".to_string()], None).await;
    agent.wait_for_role_within("orders", SPIRE_WAIT).await;
    let out = common::run_client(
        common::python(),
        vec![
            "-c".into(),
            "import sys, boto3; print(boto3.client('sts', endpoint_url=sys.argv[1], region_name='us-east-1').get_caller_identity()['Arn'])".into(),
            stack.aws.endpoint(),
        ],
        agent.client_env(Via::Imds),
    )
    .await;
    assert!(
        out.status.success(),
        "boto3 via IMDS: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "arn:aws:sts::123456789012:assumed-role/orders/example.org.service.orders"
    );
}
