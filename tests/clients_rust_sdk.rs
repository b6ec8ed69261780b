//! The AWS SDK for Rust (`aws-config` providers, `aws-sdk-sts`) against the running agent:
//! each channel's provider, built explicitly and alone, gets the orders credentials, and STS
//! `GetCallerIdentity` signed with them is accepted by the STS double.
//!
//! IMDS, `credential_process` and the credentials file run in this process, configured
//! through the providers' builders. The container provider reads its URI and token from the
//! process environment only (`ProviderConfig`'s environment override is crate-private in
//! aws-config 1.x), and tests run on parallel threads, so that one runs in a child process:
//! this test binary re-run with `--exact` on the same test and the container variables set
//! for the child alone.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::ecs::EcsCredentialsProvider;
use aws_config::imds;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::ProvideCredentials;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_sts::config::{Region, SharedHttpClient};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use common::agent_stack::{AgentOptions, AgentStack, Via};
use common::clients::assert_orders_call;
use common::run_client;

/// Set for the child run: the STS endpoint to call.
const CHILD_STS_ENDPOINT: &str = "SPIFFE_AWS_AGENT_TEST_CHILD_STS_ENDPOINT";
/// The line the child prints its result on.
const CHILD_RESULT: &str = "rust-sdk-container-result: ";
/// This test's name, for the child run.
const TEST_NAME: &str = "rust_sdk_signs_get_caller_identity_with_credentials_from_every_channel";

/// The SDK's hyper client with rustls on ring (the tree already has ring; this avoids aws-lc).
fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

fn provider_config() -> ProviderConfig {
    ProviderConfig::without_region()
        .with_region(Some(Region::new("us-east-1")))
        .with_http_client(http_client())
}

/// What one channel gave: the key the provider returned, when the SDK thinks it expires
/// (Unix seconds), the sources the SDK recorded on the credentials (`AwsCredentialFeature`s,
/// what it reports in its user agent), and the ARN `GetCallerIdentity` answered with
/// credentials from it.
struct Outcome {
    access_key_id: String,
    expiry: Option<u64>,
    features: Vec<String>,
    arn: String,
}

async fn sts_via(provider: impl ProvideCredentials + 'static, endpoint: &str) -> Outcome {
    let creds = provider
        .provide_credentials()
        .await
        .unwrap_or_else(|e| panic!("provide_credentials: {e:?}"));
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .http_client(http_client())
        .credentials_provider(provider)
        .build();
    let ident = aws_sdk_sts::Client::from_conf(conf)
        .get_caller_identity()
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetCallerIdentity: {e:?}"));
    Outcome {
        access_key_id: creds.access_key_id().to_owned(),
        expiry: creds.expiry().map(unix_seconds),
        features: creds
            .get_property::<Vec<AwsCredentialFeature>>()
            .map(|v| v.iter().map(|f| format!("{f:?}")).collect())
            .unwrap_or_default(),
        arn: ident.arn().unwrap_or_default().to_owned(),
    }
}

fn profile_provider(
    kind: EnvConfigFileKind,
    path: &std::path::Path,
    profile: &str,
) -> impl ProvideCredentials {
    ProfileFileCredentialsProvider::builder()
        .configure(&provider_config())
        .profile_files(EnvConfigFiles::builder().with_file(kind, path).build())
        .profile_name(profile)
        .build()
}

/// The child's part: the container provider, configured by this process's environment.
async fn container_child(endpoint: &str) {
    let provider = EcsCredentialsProvider::builder()
        .configure(&provider_config())
        .build();
    let got = sts_via(provider, endpoint).await;
    println!(
        "{CHILD_RESULT}{}",
        serde_json::json!({
            "access_key_id": got.access_key_id,
            "expiry": got.expiry,
            "features": got.features,
            "arn": got.arn,
        })
    );
}

/// Runs the container channel in a child process (see the module docs).
async fn container_in_child(stack: &AgentStack) -> Outcome {
    let exe = std::env::current_exe().expect("current test binary");
    let mut env = stack.client_env(Via::Container("orders"));
    env.push((CHILD_STS_ENDPOINT.into(), stack.aws.endpoint()));
    let out = run_client(
        exe,
        vec![
            TEST_NAME.into(),
            "--exact".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ],
        env,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child: exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split(CHILD_RESULT).nth(1))
        .unwrap_or_else(|| panic!("child printed no result: {stdout}"));
    let got: serde_json::Value = serde_json::from_str(line).expect("child result JSON");
    let field = |k: &str| got[k].as_str().expect(k).to_owned();
    Outcome {
        access_key_id: field("access_key_id"),
        expiry: got["expiry"].as_u64(),
        features: got["features"]
            .as_array()
            .expect("features")
            .iter()
            .map(|f| f.as_str().expect("feature").to_owned())
            .collect(),
        arn: field("arn"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_signs_get_caller_identity_with_credentials_from_every_channel() {
    if let Ok(endpoint) = std::env::var(CHILD_STS_ENDPOINT) {
        return container_child(&endpoint).await;
    }
    let stack = AgentStack::start(AgentOptions::seed()).await;
    let endpoint = stack.aws.endpoint();

    for channel in [
        "imds",
        "container",
        "credential_process",
        "credentials file",
    ] {
        let before = stack.aws.calls().len();
        let (got, expected_features) = match channel {
            "imds" => {
                let client = imds::Client::builder()
                    .configure(&provider_config())
                    .endpoint(&stack.imds_url)
                    .expect("IMDS endpoint")
                    .build();
                let provider = ImdsCredentialsProvider::builder()
                    .configure(&provider_config())
                    .imds_client(client)
                    .build();
                (sts_via(provider, &endpoint).await, &["CredentialsImds"][..])
            }
            "container" => (container_in_child(&stack).await, &["CredentialsHttp"][..]),
            "credential_process" => {
                let provider =
                    profile_provider(EnvConfigFileKind::Config, &stack.aws_config, "orders");
                (
                    sts_via(provider, &endpoint).await,
                    &["CredentialsProcess", "CredentialsProfile"][..],
                )
            }
            _ => {
                let provider = profile_provider(
                    EnvConfigFileKind::Credentials,
                    &stack.credentials_file,
                    "default",
                );
                (
                    sts_via(provider, &endpoint).await,
                    &["CredentialsProfile"][..],
                )
            }
        };
        let what = format!("rust sdk via {channel}");
        assert_eq!(
            got.features, expected_features,
            "{what}: the intended channel"
        );
        let session = assert_orders_call(&stack, before, &got.arn, &what);
        assert_eq!(got.access_key_id, session.access_key_id, "{what}");
        // The shared credentials file has no expiration field the SDK reads: its
        // credentials are static to it, and the agent must rewrite the file ahead of expiry.
        let expected_expiry =
            (channel != "credentials file").then(|| unix_seconds(session.expiration));
        assert_eq!(
            got.expiry, expected_expiry,
            "{what}: the SDK read the expiration Roles Anywhere set"
        );
    }
}
