//! Drop-in compatibility with the real `aws_signing_helper` (aws/rolesanywhere-credential-helper
//! v1.4.0, built by `scripts/build-peers.sh`): the same command line, through both binaries,
//! against the verifying Roles Anywhere double.
//!
//! - `credential-process` with certificate files: both are accepted and print the same JSON
//!   shape, each with credentials the double issued for that call;
//! - `serve`: boto3 and the AWS CLI read credentials from both IMDS emulations and sign an STS
//!   call the STS double accepts; when CreateSession fails, ours answers 503 where the helper
//!   (still in v1.4.0) answers 200 "Success" with empty credentials.
//!
//! Both binaries trust the double's TLS certificate through `SSL_CERT_FILE` (Go's system pool
//! and `rustls-native-certs` both read it), so not even `--ca-bundle` differs.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::agent_stack::wait_for_log_value;
use common::peers::{bin, Guard};
use common::run_client;
use common::stack::Stack;
use spiffe_aws_agent::dev::aws_services::{AwsServicesConfig, AwsServicesDouble};
use spiffe_aws_agent::dev::rolesanywhere::{
    DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS, DEV_TRUST_ANCHOR_ARN,
};

const ORDERS: &str = "spiffe://example.org/service/orders";
const SESSION_NAME: &str = "compat-check";

fn ours() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_spiffe-aws-agent").into()
}

/// The shared flags: certificate files, ARNs, endpoint, region, duration, session name.
fn common_args(stack: &Stack, leaf: &str, key: &str) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--certificate".into(),
        common::cert(leaf).display().to_string(),
        "--private-key".into(),
        common::cert(key).display().to_string(),
        "--intermediates".into(),
        common::cert("intermediate-ca.pem").display().to_string(),
    ];
    args.extend(
        [
            "--trust-anchor-arn",
            DEV_TRUST_ANCHOR_ARN,
            "--profile-arn",
            DEV_PROFILE_ARN,
            "--role-arn",
            DEV_ROLE_ARN_ORDERS,
            "--region",
            "us-east-1",
            "--session-duration",
            "900",
            "--role-session-name",
            SESSION_NAME,
        ]
        .map(String::from),
    );
    args.push("--endpoint".into());
    args.push(stack.rolesanywhere.endpoint());
    args
}

/// Runs `program args` with `SSL_CERT_FILE` naming the double's TLS CA and no AWS or proxy
/// settings inherited.
async fn run(program: std::path::PathBuf, args: Vec<String>, stack: &Stack) -> Output {
    let ca = stack.ca_bundle.clone();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(program);
        cmd.args(&args);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.to_ascii_lowercase().ends_with("_proxy") {
                cmd.env_remove(k);
            }
        }
        cmd.env("SSL_CERT_FILE", ca).output().expect("run")
    })
    .await
    .expect("join")
}

fn json_of(out: &Output, who: &str) -> serde_json::Map<String, serde_json::Value> {
    assert!(
        out.status.success(),
        "{who}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{who}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    json.as_object().expect("a JSON object").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_same_command_line_same_answer_shape() {
    let stack = Stack::start(vec![]).await;
    for (leaf, key) in [
        ("orders-p256.pem", "orders-p256.key"),
        ("orders-p384.pem", "orders-p384.key"),
        ("orders-rsa2048.pem", "orders-rsa2048.key"),
    ] {
        let mut args = vec!["credential-process".to_string()];
        args.extend(common_args(&stack, leaf, key));
        let before = stack.rolesanywhere.calls().len();
        let theirs = json_of(
            &run(bin("aws_signing_helper"), args.clone(), &stack).await,
            "aws_signing_helper",
        );
        let mine = json_of(&run(ours(), args, &stack).await, "spiffe-aws-agent");

        let keys =
            |m: &serde_json::Map<String, serde_json::Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&mine), keys(&theirs), "{leaf}: the same fields");
        assert_eq!(
            keys(&mine),
            [
                "AccessKeyId",
                "Expiration",
                "SecretAccessKey",
                "SessionToken",
                "Version"
            ],
            "{leaf}"
        );
        assert_eq!(mine["Version"], 1);
        assert_eq!(theirs["Version"], 1);
        // Both were accepted by the verifying double, each with its own CreateSession.
        let calls = &stack.rolesanywhere.calls()[before..];
        assert_eq!(calls.len(), 2, "{leaf}: {calls:?}");
        assert!(calls.iter().all(|c| c.status == 201), "{leaf}: {calls:?}");
        for (who, json) in [("aws_signing_helper", &theirs), ("spiffe-aws-agent", &mine)] {
            let session = stack
                .rolesanywhere
                .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
                .unwrap_or_else(|| panic!("{who}: credentials the double issued"));
            assert_eq!(json["SecretAccessKey"], session.secret_access_key.as_str());
            assert_eq!(json["SessionToken"], session.session_token.as_str());
            assert_eq!(session.role_session_name, SESSION_NAME, "{who}");
            assert_eq!(session.role_arn, DEV_ROLE_ARN_ORDERS, "{who}");
            assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS), "{who}");
            let expiration = time::OffsetDateTime::parse(
                json["Expiration"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap_or_else(|e| panic!("{who}: Expiration is RFC 3339: {e}"));
            let left = expiration - time::OffsetDateTime::now_utc();
            assert!(
                left > time::Duration::seconds(800) && left <= time::Duration::seconds(900),
                "{who}: --session-duration 900 honoured: {left}"
            );
        }
        assert_eq!(
            calls[0].duration_seconds,
            Some(900),
            "aws_signing_helper asked for 900 s"
        );
        assert_eq!(calls[1].duration_seconds, Some(900), "we asked for 900 s");
        assert_eq!(
            calls[0].leaf_sha256_hex, calls[1].leaf_sha256_hex,
            "{leaf}: the same certificate"
        );
    }
}

/// botocore's chain (IMDS only), then STS `GetCallerIdentity` against `argv[1]`.
const BOTO3: &str = r#"
import json, sys, boto3
session = boto3.Session()
creds = session.get_credentials()
if creds is None:
    sys.exit("boto3 found no credentials")
sts = session.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1")
print(json.dumps({"method": creds.method, "key": creds.get_frozen_credentials().access_key,
                  "arn": sts.get_caller_identity()["Arn"]}))
"#;

fn imds_env(dir: &Path, endpoint: &str) -> Vec<(String, String)> {
    vec![
        (
            "AWS_CONFIG_FILE".into(),
            dir.join("no-config").display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            dir.join("no-credentials").display().to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED".into(), "false".into()),
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
            format!("{endpoint}/"),
        ),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_the_aws_cli_read_credentials_from_both_servers() {
    let stack = Stack::start(vec![]).await;
    let aws = AwsServicesDouble::start(
        AwsServicesConfig::seed(),
        stack.rolesanywhere.session_lookup(),
    )
    .await
    .expect("AWS services double");
    for (name, program) in [
        ("aws_signing_helper", bin("aws_signing_helper")),
        ("spiffe-aws-agent", ours()),
    ] {
        let args = common_args(&stack, "orders-p256.pem", "orders-p256.key");
        let (_server, endpoint) = serve(name, program, args, &stack).await;
        let env = imds_env(stack.dir.path(), &endpoint);

        // boto3 (retrying while the server makes its first CreateSession).
        let mut attempts = 0;
        let out = loop {
            let out = run_client(
                common::python(),
                vec!["-c".into(), BOTO3.into(), aws.endpoint()],
                env.clone(),
            )
            .await;
            attempts += 1;
            if out.status.success() || attempts == 20 {
                break out;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(
            out.status.success(),
            "boto3 from {name}: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(stack.dir.path().join(format!("{name}-serve.log")))
                .unwrap_or_default()
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(got["method"], "iam-role", "{name}");
        let session = stack
            .rolesanywhere
            .session_for_access_key(got["key"].as_str().unwrap())
            .unwrap_or_else(|| panic!("{name}: boto3 got credentials the double issued"));
        assert_eq!(got["arn"], session.assumed_role_arn.as_str(), "{name}");
        assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS), "{name}");

        // The AWS CLI.
        let out = run_client(
            common::aws_cli(),
            vec![
                "sts".into(),
                "get-caller-identity".into(),
                "--endpoint-url".into(),
                aws.endpoint(),
                "--output".into(),
                "json".into(),
            ],
            env,
        )
        .await;
        assert!(
            out.status.success(),
            "aws CLI from {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ident: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(ident["Arn"], session.assumed_role_arn.as_str(), "{name}");
        let last = aws.calls().pop().expect("the STS double saw the call");
        assert_eq!(last.status, 200, "{name}: {last:?}");
        assert_eq!(last.spiffe_id.as_deref(), Some(ORDERS), "{name}");
    }
}

/// Starts `program serve --port 0 ARGS` and returns it with its `http://127.0.0.1:PORT`.
async fn serve(
    name: &str,
    program: std::path::PathBuf,
    args: Vec<String>,
    stack: &Stack,
) -> (Guard, String) {
    let log = stack.dir.path().join(format!("{name}-serve.log"));
    let mut cmd = Command::new(program);
    cmd.arg("serve")
        .args(["--port", "0"])
        .args(&args)
        .env("SSL_CERT_FILE", &stack.ca_bundle)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(k);
        }
    }
    let guard = Guard::new(cmd.spawn().expect("start serve"));
    let endpoint = wait_for_log_value(&log, "AWS_EC2_METADATA_SERVICE_ENDPOINT=", '/').await;
    (guard, endpoint)
}

/// (status, body) of the IMDSv2 credentials GET for the orders role.
async fn imds_credentials(endpoint: &str) -> (u16, String) {
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let token = client
        .put(format!("{endpoint}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .expect("token")
        .text()
        .await
        .expect("token");
    let resp = client
        .get(format!(
            "{endpoint}/latest/meta-data/iam/security-credentials/orders"
        ))
        .header("X-aws-ec2-metadata-token", token)
        .send()
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_create_session_fails_ours_answers_503_and_the_helper_serves_empty_success() {
    let stack = Stack::start(vec![]).await;
    let unknown_anchor = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-00000000dead";
    let args: Vec<String> = common_args(&stack, "orders-p256.pem", "orders-p256.key")
        .into_iter()
        .map(|a| {
            if a == DEV_TRUST_ANCHOR_ARN {
                unknown_anchor.to_owned()
            } else {
                a
            }
        })
        .collect();
    let (_theirs, theirs_endpoint) = serve(
        "aws_signing_helper",
        bin("aws_signing_helper"),
        args.clone(),
        &stack,
    )
    .await;
    let (_ours, ours_endpoint) = serve("spiffe-aws-agent", ours(), args, &stack).await;

    // Ours: no credentials, a status clients retry on, and (once the first exchange has
    // failed) the reason.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = imds_credentials(&ours_endpoint).await;
        assert_eq!(status, 503, "{body}");
        if body.contains("ResourceNotFoundException") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The helper: 200 and Code "Success" around empty credentials (its handler ignores the
    // CreateSession error), which botocore then rejects as a partial credential set.
    let (status, body) = imds_credentials(&theirs_endpoint).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["Code"], "Success", "{body}");
    assert_eq!(json["AccessKeyId"], "", "{body}");
    assert_eq!(json["SecretAccessKey"], "", "{body}");
    assert!(
        stack
            .rolesanywhere
            .calls()
            .iter()
            .all(|c| c.error_type.as_deref() == Some("ResourceNotFoundException")),
        "every CreateSession was refused: {:?}",
        stack.rolesanywhere.calls()
    );
}
