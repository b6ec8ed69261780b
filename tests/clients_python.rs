//! boto3 and the AWS CLI (both from PyPI) against the running agent: each gets the orders
//! credentials through each channel (IMDS, container endpoint, `credential_process` via the
//! agent socket, credentials file) with every other channel shut off, proves which channel it
//! used, and signs an STS `GetCallerIdentity` that the STS double accepts.

mod common;

use std::time::Duration;

use common::agent_stack::{AgentOptions, AgentStack, Via};
use common::clients::assert_orders_call;
use common::run_client;

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

/// The container token file is read by the agent and by its clients
/// (`AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`), which send its bytes as the `Authorization`
/// header. botocore refuses a token with a line break, so a file written with `echo` (a
/// trailing newline) would break every client: the agent refuses it at startup with a message
/// that says how to write it, instead of trimming it and serving clients that cannot call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_with_a_trailing_newline_is_refused_by_boto3_so_the_agent_refuses_it() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    // The agent's token base path; role orders' token is `<base>.orders`.
    let token_base = dir.path().join("container-token");
    let token_file = dir.path().join("container-token.orders");
    std::fs::write(&token_file, "tok3n\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // botocore reads the file as it is and refuses it before any request.
    // Nothing connects to this port: botocore fails before any request, and the agent
    // fails on the token before it binds.
    let port = 9;
    let env = vec![
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string(),
            format!("http://127.0.0.1:{port}/v1/credentials/orders"),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".to_string(),
            token_file.display().to_string(),
        ),
        (
            "AWS_CONFIG_FILE".to_string(),
            dir.path().join("none").display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_string(),
            dir.path().join("none").display().to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
    ];
    let script = "import boto3; boto3.Session().get_credentials()";
    let out = run_client(common::python(), vec!["-c".into(), script.into()], env).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a legal header value"),
        "{}",
        text(&out)
    );

    // The agent stops at startup, before serving anything, and says how to fix the file.
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "workload_api_socket = \"unix://{}\"\n\
             [[role]]\nname = \"orders\"\n\
             trust_anchor_arn = \"{}\"\nprofile_arn = \"{}\"\nrole_arn = \"{}\"\n\
             [container]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            dir.path().join("no-spire.sock").display(),
            spiffe_aws_agent::dev::rolesanywhere::DEV_TRUST_ANCHOR_ARN,
            spiffe_aws_agent::dev::rolesanywhere::DEV_PROFILE_ARN,
            spiffe_aws_agent::dev::rolesanywhere::DEV_ROLE_ARN_ORDERS,
            token_base.display()
        ),
    )
    .unwrap();
    let agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent");
    let out = tokio::time::timeout(Duration::from_secs(20), agent.wait_with_output())
        .await
        .expect("the agent must stop at startup, not serve this token file")
        .expect("agent output");
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&token_file.display().to_string())
            && stderr.contains("line break")
            && stderr.contains("printf '%s'"),
        "{}",
        text(&out)
    );
}
