//! botocore (what boto3 and the AWS CLI use) resolves credentials from each server: the
//! IMDS endpoint, the container endpoint and the credentials file.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spiffe_aws_agent::credentials::{CredentialStore, RoleCredentials};
use spiffe_aws_agent::rolesanywhere::Credentials;
use spiffe_aws_agent::serve::{container, credentials_file, imds};
use spiffe_aws_agent::{Clock as _, TokioClock};

const RESOLVE: &str = r#"
import json, botocore.session
c = botocore.session.get_session().get_credentials()
f = c.get_frozen_credentials()
print(json.dumps({"method": c.method, "access_key": f.access_key,
                  "secret_key": f.secret_key, "token": f.token}))
"#;

fn store() -> Arc<CredentialStore> {
    let clock = Arc::new(TokioClock::new());
    let now = clock.now();
    let store = Arc::new(CredentialStore::new(
        [(
            "app".to_owned(),
            "arn:aws:iam::123456789012:role/app".to_owned(),
        )],
        Duration::from_secs(300),
        clock,
    ));
    store.publish(
        "app",
        RoleCredentials::new(
            Credentials {
                access_key_id: "ASIABOTOCORE".into(),
                secret_access_key: "botocore-secret".to_owned().into(),
                session_token: "botocore-token".to_owned().into(),
                expiration: now + Duration::from_secs(3600),
                assumed_role_arn: None,
                role_arn: "arn:aws:iam::123456789012:role/app".into(),
            },
            now,
            None,
            [0; 32],
        ),
    );
    store
}

/// Runs botocore's default chain with only `env` set (and no config or credentials file
/// unless `env` names one), and returns what it resolved.
async fn resolve(dir: &Path, env: Vec<(&'static str, String)>) -> serde_json::Value {
    let python = common::python();
    let missing = dir.join("missing");
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(python);
        cmd.arg("-c").arg(RESOLVE);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_CONFIG_FILE", &missing)
            .env("AWS_SHARED_CREDENTIALS_FILE", &missing);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "botocore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_resolved(got: &serde_json::Value, method: &str) {
    assert_eq!(got["method"], method, "{got}");
    assert_eq!(got["access_key"], "ASIABOTOCORE");
    assert_eq!(got["secret_key"], "botocore-secret");
    assert_eq!(got["token"], "botocore-token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn botocore_reads_the_imds_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(imds::serve(listener, store(), std::future::pending()));
    let got = resolve(
        dir.path(),
        vec![(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://{addr}"),
        )],
    )
    .await;
    assert_resolved(&got, "iam-role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn botocore_reads_the_container_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = container::load_or_create_role_tokens(&dir.path().join("token"), ["app"]).unwrap();
    let token = tokens["app"].clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(container::serve(
        listener,
        store(),
        tokens,
        std::future::pending(),
    ));
    let got = resolve(
        dir.path(),
        vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://{addr}/v1/credentials/app"),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ],
    )
    .await;
    assert_resolved(&got, "container-role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn botocore_reads_the_credentials_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    std::fs::write(
        &path,
        "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = x\n",
    )
    .unwrap();
    let store = store();
    let creds = store.get("app").unwrap();
    credentials_file::write_profile(&path, "spiffe", &creds).unwrap();
    let got = resolve(
        dir.path(),
        vec![
            ("AWS_SHARED_CREDENTIALS_FILE", path.display().to_string()),
            ("AWS_PROFILE", "spiffe".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ],
    )
    .await;
    assert_resolved(&got, "shared-credentials-file");
}
