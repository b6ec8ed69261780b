//! `spiffe-aws-agent run` with `exchange = "web-identity"` roles: the agent keeps them fresh
//! with STS AssumeRoleWithWebIdentity (a fresh JWT-SVID of the role's SPIFFE ID each time)
//! and serves them on every channel, to boto3 through IMDS and the container endpoint, to the
//! AWS CLI through a `credential_process … --agent` profile, and to `credential-process --agent`.

mod common;

use std::time::{Duration, Instant};

use common::agent_stack::{AgentProcess, Via};
use common::jwt_stack::{JwtStack, AUDIENCE, ORDERS, REVIEWS};
use common::stack::{parse_process_output, svid_from_files};
use spiffe_aws_agent::dev::rolesanywhere::{DEV_ROLE_ARN_ORDERS, DEV_ROLE_ARN_REVIEWS};

const CALLER: &str = r#"
import json, sys, boto3
session = boto3.Session()
sts = session.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1")
frozen = session.get_credentials().get_frozen_credentials()
print(json.dumps({"access_key": frozen.access_key, "arn": sts.get_caller_identity()["Arn"]}))
"#;

async fn caller_identity(stack: &JwtStack, agent: &AgentProcess, via: Via) -> serde_json::Value {
    let out = common::run_client(
        common::python(),
        vec!["-c".into(), CALLER.into(), stack.aws.endpoint()],
        agent.client_env(via),
    )
    .await;
    assert!(
        out.status.success(),
        "boto3 via {via:?}: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sessions_for(stack: &JwtStack, role_arn: &str) -> usize {
    stack
        .aws
        .web_identity_sessions()
        .iter()
        .filter(|s| s.role_arn == role_arn)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_keeps_web_identity_roles_fresh_and_serves_them_on_every_channel() {
    let stack = JwtStack::start(vec![
        svid_from_files(ORDERS, "orders-p256.pem", "orders-p256.key", true),
        svid_from_files(REVIEWS, "reviews-p256.pem", "reviews-p256.key", true),
    ])
    .await;
    // Short sessions, so the refresh happens within the test.
    stack
        .aws
        .set_web_identity_session_ttl(Some(Duration::from_secs(20)));
    let mut toml = format!(
        "workload_api_socket = \"{}\"\nsts_endpoint = \"{}\"\nca_bundle = \"{}\"\nmin_remaining_seconds = 5\n",
        stack.workload_api.endpoint(),
        stack.aws.https_endpoint(),
        stack.ca_bundle.display()
    );
    for (name, arn, id) in [
        ("orders", DEV_ROLE_ARN_ORDERS, ORDERS),
        ("reviews", DEV_ROLE_ARN_REVIEWS, REVIEWS),
        ("other", "arn:aws:iam::123456789012:role/other", ORDERS),
    ] {
        toml.push_str(&format!(
            "[[role]]\nname = \"{name}\"\nexchange = \"web-identity\"\naudience = \"{AUDIENCE}\"\nrole_arn = \"{arn}\"\nspiffe_id = \"{id}\"\n"
        ));
    }
    let agent = AgentProcess::launch(
        stack.dir.path().to_path_buf(),
        toml,
        &[
            "orders".to_string(),
            "reviews".to_string(),
            "other".to_string(),
        ],
        None,
    )
    .await;
    agent.wait_for_role("orders").await;
    agent.wait_for_role("reviews").await;

    // First (long before the 20 s sessions are due for refresh): an X.509-SVID rotation does
    // not call for a new AssumeRoleWithWebIdentity (only the
    // SPIFFE ID matters, and it did not change).
    let before = sessions_for(&stack, DEV_ROLE_ARN_ORDERS);
    let fetches = stack.workload_api.fetch_x509_svid_calls();
    stack.workload_api.set_svids(vec![
        svid_from_files(ORDERS, "orders-p384.pem", "orders-p384.key", true),
        svid_from_files(REVIEWS, "reviews-p256.pem", "reviews-p256.key", true),
    ]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fetches,
        stack.workload_api.fetch_x509_svid_calls(),
        "same stream"
    );
    assert_eq!(sessions_for(&stack, DEV_ROLE_ARN_ORDERS), before);

    // A role whose trust policy does not name the provider: clients are told why.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = agent.credential_process("other").await;
        assert!(!out.status.success(), "other must not be served");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if stderr.contains("STS denied the role (AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity)") {
            break;
        }
        assert!(Instant::now() < deadline, "{stderr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each role's JWT-SVID was asked for by its SPIFFE ID, for the audience.
    let requests = stack.workload_api.jwt_svid_requests();
    for id in [ORDERS, REVIEWS] {
        assert!(
            requests
                .iter()
                .any(|(aud, sid)| aud == &vec![AUDIENCE.to_owned()] && sid == id),
            "{requests:?}"
        );
    }

    // IMDS serves the first role, the container endpoint each role with its token.
    let got = caller_identity(&stack, &agent, Via::Imds).await;
    assert_eq!(
        got["arn"],
        "arn:aws:sts::123456789012:assumed-role/orders/example.org.service.orders"
    );
    let got = caller_identity(&stack, &agent, Via::Container("reviews")).await;
    assert_eq!(
        got["arn"],
        "arn:aws:sts::123456789012:assumed-role/reviews/example.org.service.reviews"
    );
    // The AWS CLI, through a `credential_process = … --agent` profile.
    let out = common::run_client(
        common::aws_cli(),
        vec![
            "sts".into(),
            "get-caller-identity".into(),
            "--endpoint-url".into(),
            stack.aws.endpoint(),
            "--output".into(),
            "json".into(),
        ],
        agent.client_env(Via::CredentialProcess("reviews")),
    )
    .await;
    assert!(
        out.status.success(),
        "aws sts get-caller-identity: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got["Arn"],
        "arn:aws:sts::123456789012:assumed-role/reviews/example.org.service.reviews"
    );
    let json = parse_process_output(&agent.credential_process("orders").await);
    let issued = stack.aws.web_identity_sessions();
    assert!(issued
        .iter()
        .any(|s| s.access_key_id == json["AccessKeyId"].as_str().unwrap()));

    // Before the 20 s sessions drop under the 5 s minimum, the agent refreshes them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sessions_for(&stack, DEV_ROLE_ARN_ORDERS) == before {
        assert!(Instant::now() < deadline, "no refresh:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let json = parse_process_output(
        &agent
            .wait_for_role_within("orders", Duration::from_secs(5))
            .await,
    );
    let newest = stack
        .aws
        .web_identity_sessions()
        .into_iter()
        .rfind(|s| s.role_arn == DEV_ROLE_ARN_ORDERS)
        .unwrap();
    // The socket serves the new credentials once published.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut served = json["AccessKeyId"].as_str().unwrap().to_owned();
    while served != newest.access_key_id {
        assert!(
            Instant::now() < deadline,
            "the refreshed credentials are not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        served = parse_process_output(&agent.credential_process("orders").await)["AccessKeyId"]
            .as_str()
            .unwrap()
            .to_owned();
    }

    // The Workload API withdraws the identity: the roles' credentials go at once.
    stack.workload_api.deny();
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.credential_process("orders").await.status.success() {
        assert!(Instant::now() < deadline, "still served after withdrawal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mistakes_of_web_identity_roles_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[role]]\nname = \"a\"\nexchange = \"web-identity\"\nrole_arn = \"arn:aws:iam::123456789012:role/a\"\n",
            "role \"a\" audience: is required",
        ),
        (
            "[[role]]\nname = \"a\"\nexchange = \"web-identity\"\naudience = \"x\"\ntrust_anchor_arn = \"t\"\nrole_arn = \"arn:aws:iam::123456789012:role/a\"\n",
            "role \"a\" trust_anchor_arn: does not apply to exchange = \"web-identity\" roles",
        ),
        (
            "[[role]]\nname = \"a\"\nexchange = \"sideways\"\nrole_arn = \"arn:aws:iam::123456789012:role/a\"\n",
            "role \"a\" exchange: \"sideways\" is not an exchange",
        ),
        (
            "[[role]]\nname = \"a\"\nrole_arn = \"arn:aws:iam::123456789012:role/a\"\n",
            "role \"a\" trust_anchor_arn: is required",
        ),
        (
            "[[role]]\nname = \"a\"\nexchange = \"web-identity\"\naudience = \"x\"\nsession_duration = 60\nrole_arn = \"arn:aws:iam::123456789012:role/a\"\n",
            "role \"a\" session_duration: 60 is out of range: STS issues sessions",
        ),
    ];
    for (roles, expected) in cases {
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            format!("workload_api_socket = \"unix:///tmp/x.sock\"\n{roles}[agent_socket]\npath = \"/tmp/a.sock\"\n"),
        )
        .unwrap();
        let out = common::stack::run_agent(vec![
            "run".into(),
            "--config".into(),
            path.display().to_string(),
        ])
        .await;
        assert_eq!(out.status.code(), Some(2), "{roles}");
        let line = common::stack::failure_line(&out);
        assert!(
            line.contains("agent.toml:") && line.contains(expected),
            "{line}"
        );
    }
    // Per-caller mode serves callers' own SVIDs: the agent cannot fetch their JWT-SVIDs.
    let path = dir.path().join("per-caller.toml");
    std::fs::write(
        &path,
        "workload_api_socket = \"unix:///tmp/x.sock\"\nspire_admin_socket = \"unix:///tmp/admin.sock\"\n[[role]]\nname = \"a\"\nexchange = \"web-identity\"\naudience = \"x\"\nspiffe_id = \"spiffe://example.org/a\"\nrole_arn = \"arn:aws:iam::123456789012:role/a\"\n[agent_socket]\n",
    )
    .unwrap();
    let out = common::stack::run_agent(vec![
        "run".into(),
        "--config".into(),
        path.display().to_string(),
    ])
    .await;
    let line = common::stack::failure_line(&out);
    assert!(
        line.contains(
            "role \"a\" exchange: \"web-identity\" roles cannot be served in per-caller mode"
        ),
        "{line}"
    );

    // Certificate files cannot give JWT-SVIDs.
    let path = dir.path().join("files.toml");
    std::fs::write(
        &path,
        "certificate = \"/c.pem\"\nprivate_key = \"/k.pem\"\n[[role]]\nname = \"a\"\nexchange = \"web-identity\"\naudience = \"x\"\nrole_arn = \"arn:aws:iam::123456789012:role/a\"\n[agent_socket]\n",
    )
    .unwrap();
    let out = common::stack::run_agent(vec![
        "run".into(),
        "--config".into(),
        path.display().to_string(),
    ])
    .await;
    let line = common::stack::failure_line(&out);
    assert!(line.contains("needs the SPIFFE Workload API"), "{line}");
}
