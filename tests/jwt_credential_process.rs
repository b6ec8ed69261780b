//! `spiffe-aws-agent jwt-credential-process`, run as a process against the Workload API double
//! (which mints JWT-SVIDs) and the STS double's AssumeRoleWithWebIdentity (which verifies them
//! against the trust domain's JWKS), and boto3 and the AWS CLI resolving credentials through
//! it.

mod common;

use std::time::Duration;

use common::jwt_stack::{JwtStack, AUDIENCE, ORDERS, REVIEWS};
use common::stack::{failure_line, parse_process_output, run_agent, svid_from_files};
use spiffe_aws_agent::dev::aws_services::WebIdentityFault;
use spiffe_aws_agent::dev::rolesanywhere::{DEV_ROLE_ARN_ORDERS, DEV_ROLE_ARN_REVIEWS};
use spiffe_aws_agent::dev::workload_api::SvidEntry;

fn orders() -> SvidEntry {
    svid_from_files(ORDERS, "orders-p256.pem", "orders-p256.key", true)
}

fn reviews_with_hint(hint: &str) -> SvidEntry {
    let chain = std::fs::read_to_string(common::cert("reviews-p256.pem")).unwrap();
    let key = std::fs::read_to_string(common::cert("reviews-p256.key")).unwrap();
    SvidEntry::from_pem(REVIEWS, &chain, &key, hint).unwrap()
}

/// The printed credentials are exactly the ones STS issued, for `role_arn`.
fn assert_issued(stack: &JwtStack, json: &serde_json::Value, role_arn: &str, session_name: &str) {
    let sessions = stack.aws.web_identity_sessions();
    let session = sessions
        .iter()
        .find(|s| s.access_key_id == json["AccessKeyId"].as_str().unwrap())
        .expect("the STS double issued these credentials");
    assert_eq!(json["SecretAccessKey"], session.secret_access_key.as_str());
    assert_eq!(json["SessionToken"], session.session_token.as_str());
    assert_eq!(session.role_arn, role_arn);
    assert_eq!(session.role_session_name, session_name);
    let expiration = time::OffsetDateTime::parse(
        json["Expiration"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let issued = time::OffsetDateTime::from(session.expiration);
    assert!((expiration - issued).whole_seconds().abs() <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_a_fresh_jwt_svid_with_sts_for_the_role() {
    let stack = JwtStack::start(vec![orders()]).await;
    let out = stack.run(&[]).await;
    let json = parse_process_output(&out);
    assert_issued(
        &stack,
        &json,
        DEV_ROLE_ARN_ORDERS,
        "example.org.service.orders",
    );
    assert_eq!(
        stack.workload_api.jwt_svid_requests(),
        vec![(vec![AUDIENCE.to_owned()], String::new())],
        "one FetchJWTSVID for the audience, the default SVID"
    );
    // A second run fetches a new JWT-SVID: none is kept.
    let out = stack
        .run(&[
            "--role-session-name",
            "batch-7",
            "--session-duration",
            "900",
        ])
        .await;
    let json = parse_process_output(&out);
    assert_issued(&stack, &json, DEV_ROLE_ARN_ORDERS, "batch-7");
    assert_eq!(stack.workload_api.jwt_svid_requests().len(), 2);
    let session = stack.aws.web_identity_sessions().pop().unwrap();
    let lifetime = session
        .expiration
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(lifetime <= Duration::from_secs(900) && lifetime > Duration::from_secs(880));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_the_svid_by_spiffe_id_or_hint() {
    let stack = JwtStack::start(vec![orders(), reviews_with_hint("internal")]).await;
    // By SPIFFE ID: asked of the Workload API, so only that SVID is minted.
    let mut args = stack.args(DEV_ROLE_ARN_REVIEWS);
    args.extend(["--spiffe-id".to_string(), REVIEWS.to_string()]);
    let json = parse_process_output(&run_agent(args).await);
    assert_issued(
        &stack,
        &json,
        DEV_ROLE_ARN_REVIEWS,
        "example.org.service.reviews",
    );
    assert_eq!(
        stack.workload_api.jwt_svid_requests().last().unwrap().1,
        REVIEWS
    );
    // By hint (aws-spiffe-workload-helper's flag), and by hint through --spiffe-id.
    for flag in ["--hint", "--spiffe-id"] {
        let mut args = stack.args(DEV_ROLE_ARN_REVIEWS);
        args.extend([flag.to_string(), "internal".to_string()]);
        let json = parse_process_output(&run_agent(args).await);
        assert_issued(
            &stack,
            &json,
            DEV_ROLE_ARN_REVIEWS,
            "example.org.service.reviews",
        );
    }
    // No such SPIFFE ID (SPIRE says "no identity issued"): say what there is.
    let line = failure_line(
        &stack
            .run(&["--spiffe-id", "spiffe://example.org/service/other"])
            .await,
    );
    assert!(
        line.contains("no SVID with SPIFFE ID or hint \"spiffe://example.org/service/other\"; it offers: spiffe://example.org/service/orders, spiffe://example.org/service/reviews (hint"),
        "{line}"
    );
    // No such hint: say what there is.
    let line = failure_line(&stack.run(&["--hint", "nope"]).await);
    assert!(
        line.contains("\"nope\"") && line.contains(&format!("{REVIEWS} (hint \"internal\")")),
        "{line}"
    );
    // The orders SVID presented for the reviews role: the trust policy refuses it.
    let out = run_agent(stack.args(DEV_ROLE_ARN_REVIEWS)).await;
    assert_eq!(out.status.code(), Some(1));
    let line = failure_line(&out);
    assert!(
        line.contains("STS denied the role (AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity)")
            && line.contains("trust policy"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sts_refusal_is_one_clear_line() {
    let stack = JwtStack::start(vec![orders()]).await;

    // An audience the provider does not list.
    let mut args = stack.args(DEV_ROLE_ARN_ORDERS);
    let at = args.iter().position(|a| a == AUDIENCE).unwrap();
    args[at] = "other-audience".into();
    let line = failure_line(&run_agent(args).await);
    assert!(
        line.contains("STS refused the JWT-SVID (InvalidIdentityToken: Incorrect token audience)")
            && line.contains("client ID"),
        "{line}"
    );

    // STS's clock is ahead of the token's lifetime.
    stack
        .aws
        .set_web_identity_clock_ahead(Duration::from_secs(600));
    let line = failure_line(&stack.run(&["--timeout", "2"]).await);
    assert!(
        line.contains("STS says the JWT-SVID expired (ExpiredTokenException: Token expired:")
            && line.contains("clocks"),
        "{line}"
    );
    stack.aws.set_web_identity_clock_ahead(Duration::ZERO);

    // The trust domain's JWT key rotated and STS still has the old JWKS: bad signature.
    stack.workload_api.rotate_jwt_authority().unwrap();
    let line = failure_line(&stack.run(&[]).await);
    assert!(
        line.contains("STS refused the JWT-SVID (InvalidIdentityToken: The signature of the web identity token could not be verified"),
        "{line}"
    );
    // Once STS has the new keys (as after it refetches the JWKS), it works again.
    stack.aws.add_oidc_provider(common::jwt_stack::provider(
        spiffe_aws_agent::dev::workload_api::DEV_JWT_ISSUER,
        stack.workload_api.jwt_bundle(),
    ));
    parse_process_output(&stack.run(&[]).await);

    // Tokens from an issuer IAM does not know.
    stack
        .workload_api
        .set_jwt_issuer(Some("https://elsewhere.example.com"));
    let line = failure_line(&stack.run(&[]).await);
    assert!(
        line.contains(
            "No OpenIDConnect provider found in your account for https://elsewhere.example.com"
        ),
        "{line}"
    );
    stack
        .workload_api
        .set_jwt_issuer(Some(spiffe_aws_agent::dev::workload_api::DEV_JWT_ISSUER));

    // A role that does not trust the provider at all.
    let out = run_agent(stack.args("arn:aws:iam::123456789012:role/other")).await;
    assert!(failure_line(&out).contains("AccessDenied"));

    // An expired JWT-SVID from the Workload API is caught before STS is called.
    let calls = stack.aws.web_identity_calls();
    stack
        .workload_api
        .set_jwt_validity(Duration::from_secs(600), Duration::from_secs(300));
    let line = failure_line(&stack.run(&[]).await);
    assert!(
        line.contains("sent a JWT-SVID that expired at") && line.contains("clocks"),
        "{line}"
    );
    assert_eq!(stack.aws.web_identity_calls(), calls, "STS not called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_transient_sts_failures_within_the_timeout_with_a_fresh_token_each_time() {
    let stack = JwtStack::start(vec![orders()]).await;
    stack
        .aws
        .fail_web_identity(WebIdentityFault::Unavailable, 2);
    let json = parse_process_output(&stack.run(&[]).await);
    assert_issued(
        &stack,
        &json,
        DEV_ROLE_ARN_ORDERS,
        "example.org.service.orders",
    );
    assert_eq!(stack.aws.web_identity_calls(), 3);
    assert_eq!(stack.workload_api.jwt_svid_requests().len(), 3);

    stack.aws.fail_web_identity(WebIdentityFault::Throttling, 1);
    parse_process_output(&stack.run(&[]).await);
    assert_eq!(stack.aws.web_identity_calls(), 5);

    // Down for longer than --timeout: the last failure, in time.
    stack
        .aws
        .fail_web_identity(WebIdentityFault::Unavailable, 1000);
    let started = std::time::Instant::now();
    let out = stack.run(&["--timeout", "2"]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    let line = failure_line(&out);
    assert!(
        line.contains("STS failed (HTTP 503 ServiceUnavailable: Service is unavailable)"),
        "{line}"
    );
    assert!(stack.aws.web_identity_calls() > 6, "retried");

    // An answer larger than any real one is not read to the end.
    stack
        .aws
        .fail_web_identity(WebIdentityFault::HugeBody, 1000);
    let line = failure_line(&stack.run(&["--timeout", "1"]).await);
    assert!(
        line.contains(
            "STS sent an unusable response (HTTP 200): the body is larger than 65536 bytes"
        ),
        "{line}"
    );

    // The STS double's certificate without its CA: refused at once, not retried.
    let mut args: Vec<String> = stack.args(DEV_ROLE_ARN_ORDERS)[..9].to_vec();
    assert_eq!(args[7], "--endpoint");
    args.extend(["--timeout".to_string(), "10".to_string()]);
    let started = std::time::Instant::now();
    let out = run_agent(args).await;
    assert!(started.elapsed() < Duration::from_secs(5), "not retried");
    let line = failure_line(&out);
    assert!(
        line.contains("presented a TLS certificate this agent does not trust"),
        "{line}"
    );
    stack
        .aws
        .fail_web_identity(WebIdentityFault::Unavailable, 0);

    // Configuration errors are not retried.
    stack
        .aws
        .fail_web_identity(WebIdentityFault::Unavailable, 0);
    let before = stack.aws.web_identity_calls();
    let out = run_agent(stack.args("arn:aws:iam::123456789012:role/other")).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stack.aws.web_identity_calls(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_and_flag_problems() {
    let stack = JwtStack::start(vec![]).await;
    let out = stack.run(&[]).await;
    assert_eq!(out.status.code(), Some(1));
    let line = failure_line(&out);
    assert!(line.contains("issued no identity"), "{line}");

    let gone = stack.dir.path().join("gone.sock");
    let out = run_agent(vec![
        "jwt-credential-process".into(),
        "--workload-api-socket".into(),
        format!("unix://{}", gone.display()),
        "--audience".into(),
        AUDIENCE.into(),
        "--role-arn".into(),
        DEV_ROLE_ARN_ORDERS.into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(failure_line(&out).contains("cannot reach the SPIFFE Workload API"));

    for (extra, code, expected) in [
        (
            &["--session-duration", "899"][..],
            2,
            "--session-duration 899 is out of range",
        ),
        (
            &["--endpoint", "http://127.0.0.1:1"],
            2,
            "--endpoint \"http://127.0.0.1:1\" is not a usable STS endpoint: only https://",
        ),
        (
            &["--role-session-name", "a b"],
            2,
            "--role-session-name \"a b\" is not a valid role session name",
        ),
        (
            &["--region", "mars"],
            2,
            "--region \"mars\" is not a valid region",
        ),
    ] {
        let mut args: Vec<String> = stack.args(DEV_ROLE_ARN_ORDERS)[..7].to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = run_agent(args).await;
        assert_eq!(out.status.code(), Some(code), "{extra:?}");
        let line = failure_line(&out);
        assert!(line.contains(expected), "{extra:?}: {line}");
    }
    let out = run_agent(vec![
        "jwt-credential-process".into(),
        "--audience".into(),
        AUDIENCE.into(),
        "--role-arn".into(),
        DEV_ROLE_ARN_ORDERS.into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(failure_line(&out).contains("no SPIFFE Workload API address"));
}

const RESOLVE: &str = r#"
import json, sys, boto3
session = boto3.Session(profile_name="orders")
creds = session.get_credentials()
frozen = creds.get_frozen_credentials()
sts = session.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1")
print(json.dumps({"method": creds.method, "access_key": frozen.access_key,
                  "arn": sts.get_caller_identity()["Arn"]}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_the_aws_cli_use_credentials_from_jwt_credential_process() {
    let stack = JwtStack::start(vec![orders()]).await;
    let mut command = vec![env!("CARGO_BIN_EXE_spiffe-aws-agent").to_string()];
    command.extend(stack.args(DEV_ROLE_ARN_ORDERS));
    let config = stack.dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[profile orders]\nregion = us-east-1\ncredential_process = {}\n",
            command.join(" ")
        ),
    )
    .unwrap();
    let env = vec![
        ("AWS_CONFIG_FILE".to_string(), config.display().to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_string(),
            stack.dir.path().join("none").display().to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
    ];
    let assumed = "arn:aws:sts::123456789012:assumed-role/orders/example.org.service.orders";

    let out = common::run_client(
        common::python(),
        vec!["-c".into(), RESOLVE.into(), stack.aws.endpoint()],
        env.clone(),
    )
    .await;
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["method"], "custom-process");
    assert_eq!(
        got["arn"], assumed,
        "GetCallerIdentity signed with the issued keys"
    );
    let sessions = stack.aws.web_identity_sessions();
    assert_eq!(got["access_key"], sessions[0].access_key_id.as_str());

    let out = common::run_client(
        common::aws_cli(),
        vec![
            "sts".into(),
            "get-caller-identity".into(),
            "--profile".into(),
            "orders".into(),
            "--endpoint-url".into(),
            stack.aws.endpoint(),
            "--output".into(),
            "json".into(),
        ],
        env,
    )
    .await;
    assert!(
        out.status.success(),
        "aws cli: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["Arn"], assumed);
}
