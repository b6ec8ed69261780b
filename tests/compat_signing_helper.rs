//! Drop-in parity with `aws_signing_helper` (v1.4.0, built by `scripts/build-peers.sh`): each
//! applicable command line of its documented usage (the README of
//! aws/rolesanywhere-credential-helper) runs unchanged through our binary against the
//! verifying Roles Anywhere double, and through the real helper, and the outputs are compared
//! field by field.
//!
//! Not here: `serve` (tests/peer_signing_helper.rs), `sign-string` and
//! `read-certificate-data` (tests/signing_helper_diagnostics.rs); certificate stores, PKCS#11
//! and TPM keys, which the README documents but this build does not take on Linux.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::peers::bin;
use common::stack::Stack;
use spiffe_aws_agent::dev::rolesanywhere::{
    DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS, DEV_TRUST_ANCHOR_ARN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORDERS: &str = "spiffe://example.org/service/orders";

fn ours() -> PathBuf {
    env!("CARGO_BIN_EXE_spiffe-aws-agent").into()
}

fn cert(name: &str) -> String {
    common::cert(name).display().to_string()
}

/// How a command runs: trust for the double's TLS certificate, and extra environment.
#[derive(Clone, Default)]
struct Env {
    /// `SSL_CERT_FILE` naming the double's CA (both binaries read it); else the system's.
    trust_double: bool,
    vars: Vec<(String, String)>,
}

/// Runs `program args` with no inherited AWS or proxy settings.
async fn run(program: PathBuf, args: Vec<String>, stack: &Stack, env: Env) -> Output {
    let ca = stack.ca_bundle.clone();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(program);
        cmd.args(&args);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_")
                || k.to_ascii_lowercase().ends_with("_proxy")
                || k == "SSL_CERT_FILE"
                || k == "SSL_CERT_DIR"
                || k == "SPIFFE_ENDPOINT_SOCKET"
            {
                cmd.env_remove(k);
            }
        }
        if env.trust_double {
            cmd.env("SSL_CERT_FILE", ca);
        }
        cmd.envs(env.vars);
        cmd.output().expect("run")
    })
    .await
    .expect("join")
}

/// The README's credential-process example: certificate, key, role, trust anchor, profile
/// (plus the double's endpoint and the chain, which a real trust anchor also needs).
fn readme_credential_process(stack: &Stack) -> Vec<String> {
    vec![
        "credential-process".into(),
        "--certificate".into(),
        cert("orders-p256.pem"),
        "--private-key".into(),
        cert("orders-p256.key"),
        "--intermediates".into(),
        cert("intermediate-ca.pem"),
        "--role-arn".into(),
        DEV_ROLE_ARN_ORDERS.into(),
        "--trust-anchor-arn".into(),
        DEV_TRUST_ANCHOR_ARN.into(),
        "--profile-arn".into(),
        DEV_PROFILE_ARN.into(),
        "--endpoint".into(),
        stack.rolesanywhere.endpoint(),
    ]
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The credential_process JSON of a successful run.
fn process_json(out: &Output, who: &str) -> serde_json::Map<String, serde_json::Value> {
    assert!(
        out.status.success(),
        "{who}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{who}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    v.as_object().expect("object").clone()
}

/// Field by field: the same keys, Version 1, and credentials the double issued to each for
/// the orders SVID, role and `session_name` (when given), with expirations of the same
/// session length.
fn assert_same_process_output(
    stack: &Stack,
    theirs: &serde_json::Map<String, serde_json::Value>,
    mine: &serde_json::Map<String, serde_json::Value>,
    session_name: Option<&str>,
    what: &str,
) {
    let keys =
        |m: &serde_json::Map<String, serde_json::Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(mine), keys(theirs), "{what}: the same fields");
    assert_eq!(mine["Version"], theirs["Version"], "{what}");
    let mut expirations = Vec::new();
    for (who, json) in [("aws_signing_helper", theirs), ("spiffe-aws-agent", mine)] {
        let session = stack
            .rolesanywhere
            .session_for_access_key(json["AccessKeyId"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("{what}: {who}: credentials the double issued: {json:?}"));
        assert_eq!(
            json["SecretAccessKey"],
            session.secret_access_key.as_str(),
            "{what}: {who}"
        );
        assert_eq!(
            json["SessionToken"],
            session.session_token.as_str(),
            "{what}: {who}"
        );
        assert_eq!(session.role_arn, DEV_ROLE_ARN_ORDERS, "{what}: {who}");
        assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS), "{what}: {who}");
        if let Some(name) = session_name {
            assert_eq!(session.role_session_name, name, "{what}: {who}");
        }
        let expiration = time::OffsetDateTime::parse(
            json["Expiration"].as_str().unwrap_or_default(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{what}: {who}: Expiration is RFC 3339: {e}"));
        expirations.push(expiration);
    }
    let apart = (expirations[0] - expirations[1]).abs();
    assert!(
        apart < time::Duration::seconds(60),
        "{what}: same session length: {expirations:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_command_lines_of_the_readme() {
    let stack = Stack::start(vec![]).await;
    let trusted = Env {
        trust_double: true,
        ..Env::default()
    };
    let base = readme_credential_process(&stack);
    // The README's line, then with each optional flag it documents.
    let cases: Vec<(&str, Vec<String>, Option<&str>)> = vec![
        ("the README example", base.clone(), None),
        ("--debug", with(base.clone(), &["--debug"]), None),
        ("--with-proxy", with(base.clone(), &["--with-proxy"]), None),
        (
            "--region",
            with(base.clone(), &["--region", "us-east-1"]),
            None,
        ),
        (
            "--session-duration",
            with(base.clone(), &["--session-duration", "900"]),
            None,
        ),
        (
            "--role-session-name",
            with(base.clone(), &["--role-session-name", "compat-suite"]),
            Some("compat-suite"),
        ),
        (
            "RSA key, PKCS#1",
            vec![
                "credential-process".into(),
                "--certificate".into(),
                cert("orders-rsa2048.pem"),
                "--private-key".into(),
                cert("orders-rsa2048.pkcs1.key"),
                "--intermediates".into(),
                cert("intermediate-ca.pem"),
                "--role-arn".into(),
                DEV_ROLE_ARN_ORDERS.into(),
                "--trust-anchor-arn".into(),
                DEV_TRUST_ANCHOR_ARN.into(),
                "--profile-arn".into(),
                DEV_PROFILE_ARN.into(),
                "--endpoint".into(),
                stack.rolesanywhere.endpoint(),
            ],
            None,
        ),
    ];
    for (what, args, session_name) in cases {
        let mut theirs = run(
            bin("aws_signing_helper"),
            args.clone(),
            &stack,
            trusted.clone(),
        )
        .await;
        let mine = run(ours(), args, &stack, trusted.clone()).await;
        if what == "--debug" {
            // The helper writes the SDK's debug log to stdout, before the JSON (an SDK
            // reading credential_process output then fails to parse it); ours logs to stderr.
            let text = String::from_utf8_lossy(&theirs.stdout).to_string();
            let at = text.rfind("{\"Version\"").expect("the JSON after the log");
            assert!(at > 0 && text.contains("DEBUG"), "the helper's log is on stdout");
            theirs.stdout = text[at..].as_bytes().to_vec();
            let log = String::from_utf8_lossy(&mine.stderr).to_lowercase();
            assert!(log.contains("debug"), "ours logs at debug level on stderr: {log}");
        }
        let (theirs, mine) = (
            process_json(&theirs, "aws_signing_helper"),
            process_json(&mine, "spiffe-aws-agent"),
        );
        assert_same_process_output(&stack, &theirs, &mine, session_name, what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_verify_ssl_accepts_an_untrusted_endpoint_in_both_and_only_with_the_flag() {
    let stack = Stack::start(vec![]).await;
    let untrusted = Env::default();
    let base = readme_credential_process(&stack);
    // Without the flag, neither trusts the double's private CA.
    for program in [bin("aws_signing_helper"), ours()] {
        let out = run(program.clone(), base.clone(), &stack, untrusted.clone()).await;
        assert!(
            !out.status.success(),
            "{}: refused an untrusted endpoint",
            program.display()
        );
    }
    let ours_refused = run(ours(), base.clone(), &stack, untrusted.clone()).await;
    let line = String::from_utf8_lossy(&ours_refused.stderr);
    assert!(line.contains("certificate"), "{line}");
    // With it, both accept it; ours warns on stderr and still prints only the JSON on stdout.
    let args = with(base, &["--no-verify-ssl"]);
    let theirs = run(
        bin("aws_signing_helper"),
        args.clone(),
        &stack,
        untrusted.clone(),
    )
    .await;
    let mine_out = run(ours(), args, &stack, untrusted).await;
    let warning = String::from_utf8_lossy(&mine_out.stderr);
    assert!(
        warning.contains("--no-verify-ssl") && warning.contains("not verified"),
        "{warning}"
    );
    let (theirs, mine) = (
        process_json(&theirs, "aws_signing_helper"),
        process_json(&mine_out, "spiffe-aws-agent"),
    );
    assert_same_process_output(&stack, &theirs, &mine, None, "--no-verify-ssl");
}

/// A CONNECT proxy on loopback that records each CONNECT target and tunnels every one to
/// `upstream` (the double), whatever host was asked for.
async fn connect_proxy(upstream: std::net::SocketAddr) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                if !head.starts_with("CONNECT ") {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                }
                record.lock().unwrap().push(target);
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fips_and_dualstack_endpoints_are_the_helpers_and_sign_for_the_region() {
    let stack = Stack::start(vec![]).await;
    let port: u16 = stack
        .rolesanywhere
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the double's port");
    let (proxy, seen) = connect_proxy(([127, 0, 0, 1], port).into()).await;
    // No --endpoint: the variant picks the host; the proxy carries it to the double, whose
    // certificate names localhost (hence --no-verify-ssl), and which refuses any credential
    // scope but us-east-1.
    let args: Vec<String> = [
        "credential-process",
        "--certificate",
        &cert("orders-p256.pem"),
        "--private-key",
        &cert("orders-p256.key"),
        "--intermediates",
        &cert("intermediate-ca.pem"),
        "--role-arn",
        DEV_ROLE_ARN_ORDERS,
        "--trust-anchor-arn",
        DEV_TRUST_ANCHOR_ARN,
        "--profile-arn",
        DEV_PROFILE_ARN,
        "--with-proxy",
        "--no-verify-ssl",
    ]
    .map(String::from)
    .to_vec();
    for (fips, dualstack, host) in [
        (
            "true",
            "false",
            "rolesanywhere-fips.us-east-1.amazonaws.com:443",
        ),
        ("false", "true", "rolesanywhere.us-east-1.api.aws:443"),
        ("true", "true", "rolesanywhere-fips.us-east-1.api.aws:443"),
        (
            "false",
            "false",
            "rolesanywhere.us-east-1.amazonaws.com:443",
        ),
    ] {
        let env = Env {
            trust_double: false,
            vars: vec![
                ("HTTPS_PROXY".into(), proxy.clone()),
                ("AWS_USE_FIPS_ENDPOINT".into(), fips.into()),
                ("AWS_USE_DUALSTACK_ENDPOINT".into(), dualstack.into()),
            ],
        };
        let what = format!("fips={fips} dualstack={dualstack}");
        let before = stack.rolesanywhere.calls().len();
        let theirs = run(bin("aws_signing_helper"), args.clone(), &stack, env.clone()).await;
        let mine = run(ours(), args.clone(), &stack, env).await;
        let targets = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(targets, [host, host], "{what}: both went to {host}");
        let (theirs, mine) = (
            process_json(&theirs, "aws_signing_helper"),
            process_json(&mine, "spiffe-aws-agent"),
        );
        assert_same_process_output(&stack, &theirs, &mine, None, &what);
        let calls = &stack.rolesanywhere.calls()[before..];
        assert!(
            calls.len() == 2 && calls.iter().all(|c| c.status == 201),
            "{what}: the double verified both signatures (scope us-east-1): {calls:?}"
        );
    }
    // A value the SDKs refuse is refused here too, before any call.
    let env = Env {
        trust_double: false,
        vars: vec![("AWS_USE_FIPS_ENDPOINT".into(), "yes".into())],
    };
    let out = run(ours(), args, &stack, env).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AWS_USE_FIPS_ENDPOINT=\"yes\" must be true or false"),
        "{err}"
    );
}

/// The `[profile]` section of an INI file, key to value (comments skipped).
fn profile_of(path: &Path, profile: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{profile}]");
        } else if inside && !line.starts_with('#') && !line.starts_with(';') {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_once_writes_the_same_profile() {
    let stack = Stack::start(vec![]).await;
    let mut files = Vec::new();
    for (who, program) in [("theirs", bin("aws_signing_helper")), ("mine", ours())] {
        let path = stack.dir.path().join(format!("credentials-{who}"));
        std::fs::write(&path, "[keep]\naws_access_key_id = KEEP\n").unwrap();
        let mut args = readme_credential_process(&stack);
        args[0] = "update".into();
        args.extend(["--profile", "compat", "--once"].map(String::from));
        let env = Env {
            trust_double: true,
            vars: vec![(
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                path.display().to_string(),
            )],
        };
        let out = run(program, args, &stack, env).await;
        assert!(
            out.status.success(),
            "{who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        files.push(path);
    }
    let (theirs, mine) = (
        profile_of(&files[0], "compat"),
        profile_of(&files[1], "compat"),
    );
    assert_eq!(
        mine.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same keys in [compat]"
    );
    for (who, p) in [("theirs", &theirs), ("mine", &mine)] {
        let session = stack
            .rolesanywhere
            .session_for_access_key(&p["aws_access_key_id"])
            .unwrap_or_else(|| panic!("{who}: issued by the double: {p:?}"));
        assert_eq!(
            p["aws_secret_access_key"], session.secret_access_key,
            "{who}"
        );
        assert_eq!(p["aws_session_token"], session.session_token, "{who}");
    }
    for path in &files {
        assert_eq!(
            profile_of(path, "keep")["aws_access_key_id"],
            "KEEP",
            "other profiles kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_prints_one_line() {
    let stack = Stack::start(vec![]).await;
    for program in [bin("aws_signing_helper"), ours()] {
        let out = run(
            program.clone(),
            vec!["version".into()],
            &stack,
            Env::default(),
        )
        .await;
        assert!(out.status.success(), "{}", program.display());
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.trim().lines().count(), 1, "{text}");
    }
}
