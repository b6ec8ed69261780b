//! boto3, a real AWS client, configured with `credential_process = spiffe-aws-agent
//! credential-process …` in its config file, resolves exactly the credentials the Roles
//! Anywhere double issued.

mod common;

use common::stack::{svid_from_files, Stack};

const RESOLVE: &str = r#"
import json, boto3
session = boto3.Session(profile_name="orders")
creds = session.get_credentials()
frozen = creds.get_frozen_credentials()
print(json.dumps({"method": creds.method, "access_key": frozen.access_key,
                  "secret_key": frozen.secret_key, "token": frozen.token}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_resolves_the_issued_credentials_through_credential_process() {
    let stack = Stack::start(vec![svid_from_files(
        "spiffe://example.org/service/orders",
        "orders-p384.pem",
        "orders-p384.key",
        true,
    )])
    .await;
    let mut command = vec![
        env!("CARGO_BIN_EXE_spiffe-aws-agent").to_string(),
        "credential-process".into(),
        "--workload-api-socket".into(),
        stack.workload_api.endpoint(),
    ];
    command.extend(stack.session_args());
    let config = stack.dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[profile orders]\nregion = us-east-1\ncredential_process = {}\n",
            command.join(" ")
        ),
    )
    .unwrap();

    let missing = stack.dir.path().join("no-credentials-file");
    let env = vec![
        ("AWS_CONFIG_FILE".to_string(), config.display().to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_string(),
            missing.display().to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
    ];
    let out = common::run_client(common::python(), vec!["-c".into(), RESOLVE.into()], env).await;
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["method"], "custom-process");
    let issued = stack.rolesanywhere.issued();
    assert_eq!(issued.len(), 1, "one CreateSession");
    assert_eq!(got["access_key"], issued[0].access_key_id.as_str());
    assert_eq!(got["secret_key"], issued[0].secret_access_key.as_str());
    assert_eq!(got["token"], issued[0].session_token.as_str());
}
