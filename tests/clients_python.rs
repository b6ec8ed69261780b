//! boto3 and the AWS CLI (both from PyPI) against the running agent: each gets the orders
//! credentials through each channel (IMDS, container endpoint, `credential_process` via the
//! agent socket, credentials file) with every other channel shut off, proves which channel it
//! used, and signs an STS `GetCallerIdentity` that the STS double accepts.

mod common;

use common::agent_stack::{run_client, AgentOptions, AgentStack, Via};
use common::clients::assert_orders_call;

/// The channels, and botocore's name for the provider that reads each (`Credentials.method`,
/// and what the resolver logs as "Looking for credentials via: …").
const CHANNELS: [(Via, &str); 4] = [
    (Via::Imds, "iam-role"),
    (Via::Container("orders"), "container-role"),
    (Via::CredentialProcess("orders"), "custom-process"),
    (Via::CredentialsFile, "shared-credentials-file"),
];

/// boto3's default chain, then `sts.get_caller_identity()` against `argv[1]`.
const BOTO3: &str = r#"
import json, sys, boto3
session = boto3.Session()
creds = session.get_credentials()
if creds is None:
    sys.exit("boto3 found no credentials")
frozen = creds.get_frozen_credentials()
sts = session.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1")
ident = sts.get_caller_identity()
print(json.dumps({"method": creds.method, "access_key": frozen.access_key,
                  "arn": ident["Arn"]}))
"#;

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_signs_get_caller_identity_with_credentials_from_every_channel() {
    let stack = AgentStack::start(AgentOptions::seed()).await;
    for (via, method) in CHANNELS {
        let what = format!("boto3 via {via:?}");
        let before = stack.aws.calls().len();
        let out = run_client(
            common::python(),
            vec!["-c".into(), BOTO3.into(), stack.aws.endpoint()],
            stack.client_env(via),
        )
        .await;
        assert!(
            out.status.success(),
            "{what}: {}\nagent log:\n{}",
            text(&out),
            stack.log()
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: {e}: {}", text(&out)));
        assert_eq!(got["method"], method, "{what}: the intended channel");
        let arn = got["arn"].as_str().expect("Arn");
        let session = assert_orders_call(&stack, before, arn, &what);
        assert_eq!(got["access_key"], session.access_key_id.as_str(), "{what}");
    }
}

/// The provider botocore's resolver settled on: the last one it tried.
fn cli_method(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .filter_map(|l| l.split("Looking for credentials via: ").nth(1))
        .map(str::trim)
        .next_back()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_signs_get_caller_identity_with_credentials_from_every_channel() {
    let stack = AgentStack::start(AgentOptions::seed()).await;
    for (via, method) in CHANNELS {
        let what = format!("aws cli via {via:?}");
        let before = stack.aws.calls().len();
        let args = [
            "sts",
            "get-caller-identity",
            "--endpoint-url",
            &stack.aws.endpoint(),
            "--region",
            "us-east-1",
            "--output",
            "json",
            "--debug",
        ];
        let out = run_client(
            common::aws_cli(),
            args.iter().map(|s| s.to_string()).collect(),
            stack.client_env(via),
        )
        .await;
        assert!(
            out.status.success(),
            "{what}: {}\nagent log:\n{}",
            text(&out),
            stack.log()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            cli_method(&stderr),
            Some(method),
            "{what}: the intended channel"
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: {e}: {}", text(&out)));
        let arn = got["Arn"].as_str().expect("Arn");
        assert_orders_call(&stack, before, arn, &what);
    }
}

#[test]
fn cli_method_is_the_last_provider_tried() {
    let log = "2024 - MainThread - botocore.credentials - DEBUG - Looking for credentials via: env\n\
               x\n\
               2024 - MainThread - botocore.credentials - DEBUG - Looking for credentials via: iam-role\n\
               2024 - MainThread - botocore.credentials - INFO - Found credentials from IAM Role: orders\n";
    assert_eq!(cli_method(log), Some("iam-role"));
    assert_eq!(cli_method("nothing here"), None);
}
