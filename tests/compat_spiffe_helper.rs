//! aws-spiffe-workload-helper's command lines run unchanged: `x509-credential-process`,
//! `x509-credential-file` and `x509-credential-file-oneshot` with its flag names
//! (`--workload-api-addr`, `--aws-credentials-path`, `--force`, `--replace`, and the ARN flags
//! it shares with aws_signing_helper), against the Workload API double and the verifying
//! Roles Anywhere double. That helper is not built here (it is not on the Go module proxy's
//! list), so the expectations are its documented behaviour (its README and source, v0.0.4).

mod common;

use std::path::Path;
use std::time::Duration;

use common::peers::Guard;
use common::stack::{parse_process_output, run_agent, svid_from_files, Stack};
use spiffe_aws_agent::dev::rolesanywhere::{
    DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS, DEV_TRUST_ANCHOR_ARN,
};

const ORDERS: &str = "spiffe://example.org/service/orders";

async fn orders_stack() -> Stack {
    Stack::start(vec![svid_from_files(
        ORDERS,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )])
    .await
}

/// Its README's flags: the three ARNs, `--workload-api-addr`, plus the double's endpoint and
/// CA (its newer releases take `--endpoint` too).
fn helper_args(stack: &Stack, command: &str) -> Vec<String> {
    vec![
        command.into(),
        "--trust-anchor-arn".into(),
        DEV_TRUST_ANCHOR_ARN.into(),
        "--profile-arn".into(),
        DEV_PROFILE_ARN.into(),
        "--role-arn".into(),
        DEV_ROLE_ARN_ORDERS.into(),
        "--workload-api-addr".into(),
        stack.workload_api.endpoint(),
        "--endpoint".into(),
        stack.rolesanywhere.endpoint(),
        "--ca-bundle".into(),
        stack.ca_bundle.display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_credential_process_prints_credential_process_json() {
    let stack = orders_stack().await;
    let mut args = vec!["--debug".to_string()];
    args.extend(helper_args(&stack, "x509-credential-process"));
    args.extend(
        [
            "--session-duration",
            "900",
            "--role-session-name",
            "wl-helper",
        ]
        .map(String::from),
    );
    let out = run_agent(args).await;
    let log = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        log.contains("debug"),
        "its root --debug, before the command: {log}"
    );
    let json = parse_process_output(&out);
    let session = stack
        .rolesanywhere
        .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
        .expect("issued by the double");
    assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS));
    assert_eq!(session.role_session_name, "wl-helper");
    assert_eq!(
        stack.rolesanywhere.calls().last().unwrap().duration_seconds,
        Some(900)
    );
}

/// The `[default]` section's keys, in file order.
fn default_profile(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[default]";
        } else if inside && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    out
}

fn assert_issued(stack: &Stack, path: &Path) {
    let profile = default_profile(path);
    let get = |k: &str| {
        profile
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} in [default]: {profile:?}"))
    };
    let session = stack
        .rolesanywhere
        .session_for_access_key(&get("aws_access_key_id"))
        .expect("issued by the double");
    assert_eq!(get("aws_secret_access_key"), session.secret_access_key);
    assert_eq!(get("aws_session_token"), session.session_token);
    assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_credential_file_oneshot_with_force_and_replace() {
    let stack = orders_stack().await;
    let path = stack.dir.path().join("aws/credentials");
    let file_args = |extra: &[&str]| {
        let mut args = helper_args(&stack, "x509-credential-file-oneshot");
        args.extend([
            "--aws-credentials-path".to_string(),
            path.display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // A new file (and its directory): [default] written, mode 0600.
    let out = run_agent(file_args(&[])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_issued(&stack, &path);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Other profiles stay, unless --replace.
    let text = std::fs::read_to_string(&path).unwrap() + "[other]\naws_access_key_id = OTHER\n";
    std::fs::write(&path, text).unwrap();
    let out = run_agent(file_args(&[])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(&path).unwrap().contains("[other]"));
    let out = run_agent(file_args(&["--replace"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("[other]"),
        "--replace drops other profiles: {text}"
    );
    assert_issued(&stack, &path);

    // A file that cannot be loaded: an error without --force, overwritten with it.
    std::fs::write(&path, b"\xff\xfe\x00 not an INI file").unwrap();
    let out = run_agent(file_args(&[])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not UTF-8"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_agent(file_args(&["--force"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_issued(&stack, &path);

    // The required flag, as the helper requires it.
    let out = run_agent(helper_args(&stack, "x509-credential-file")).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--aws-credentials-path"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_credential_file_keeps_the_file_current() {
    let stack = orders_stack().await;
    let path = stack.dir.path().join("credentials");
    let mut args = helper_args(&stack, "x509-credential-file");
    args.extend([
        "--aws-credentials-path".to_string(),
        path.display().to_string(),
    ]);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"));
    cmd.args(&args)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut daemon = Guard::new(cmd.spawn().expect("start"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(daemon.exited().is_none(), "the daemon keeps running");
        assert!(std::time::Instant::now() < deadline, "the file was written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give the atomic rename a moment, then check it and that the daemon is still up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_issued(&stack, &path);
    assert!(daemon.exited().is_none(), "a daemon, not a one-shot");
    daemon.kill();
}
