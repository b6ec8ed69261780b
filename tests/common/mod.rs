//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod agent_stack;
pub mod clients;
pub mod jwt_stack;
pub mod peers;
pub mod spire;
pub mod stack;

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `certs/`.
pub fn cert(name: &str) -> PathBuf {
    root().join("certs").join(name)
}

/// The Python with the test tools (boto3, cryptography): `SPIFFE_AWS_AGENT_TEST_PYTHON`,
/// else the repository's `.venv` made by `scripts/test.sh`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SPIFFE_AWS_AGENT_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh (it creates the venv with boto3 and cryptography)",
        venv.display()
    );
    venv
}

/// The AWS CLI (v1, from PyPI) installed beside [`python`].
pub fn aws_cli() -> PathBuf {
    let aws = python().with_file_name("aws");
    assert!(
        aws.exists(),
        "{} is missing: run scripts/test.sh (it installs awscli into the venv)",
        aws.display()
    );
    aws
}

/// Runs `program args` with only `env` for AWS settings: every inherited `AWS_*` and
/// `SPIFFE_ENDPOINT_SOCKET` is removed, so a client finds credentials only where a test
/// points it.
pub async fn run_client(
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(program);
        cmd.args(&args);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k == "SPIFFE_ENDPOINT_SOCKET" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env);
        cmd.output().expect("run client")
    })
    .await
    .expect("join")
}

/// Calls the Lattice service `service` of the AWS services double at `endpoint` as `profile`
/// with `scripts/lattice-call.py` (botocore-resolved, botocore-signed) and `env`; returns the
/// exit status (-1 when killed) and stdout followed by stderr.
pub async fn lattice_call(
    endpoint: String,
    profile: &str,
    service: &str,
    env: Vec<(String, String)>,
) -> (i32, String) {
    let out = run_client(
        python(),
        vec![
            root().join("scripts/lattice-call.py").display().to_string(),
            "--profile".into(),
            profile.into(),
            "--service".into(),
            service.into(),
            "--endpoint".into(),
            endpoint,
        ],
        env,
    )
    .await;
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
