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
    readme_credential_process_with(stack, "orders-p256.pem", "orders-p256.key")
}

/// [`readme_credential_process`] with another certificate and key from `certs/`.
fn readme_credential_process_with(stack: &Stack, certificate: &str, key: &str) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "credential-process".into(),
        "--certificate".into(),
        cert(certificate),
        "--private-key".into(),
        cert(key),
        "--intermediates".into(),
        cert("intermediate-ca.pem"),
    ];
    args.extend(readme_session_flags(stack));
    args
}

/// The README's ARN flags, in its order, and the double's endpoint.
fn readme_session_flags(stack: &Stack) -> Vec<String> {
    vec![
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
            readme_credential_process_with(
                &stack,
                "orders-rsa2048.pem",
                "orders-rsa2048.pkcs1.key",
            ),
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
            assert!(
                at > 0 && text.contains("DEBUG"),
                "the helper's log is on stdout"
            );
            theirs.stdout = text.as_bytes()[at..].to_vec();
            let log = String::from_utf8_lossy(&mine.stderr).to_lowercase();
            assert!(
                log.contains("debug"),
                "ours logs at debug level on stderr: {log}"
            );
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

/// Runs `openssl args` in `dir` (the Debian `openssl` package comes with `ca-certificates`).
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (Debian package openssl) is needed to make PKCS#12 test files");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--certificate FILE --role-arn … --trust-anchor-arn … --profile-arn …` and `extra`.
fn single_file_args(stack: &Stack, file: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "credential-process".into(),
        "--certificate".into(),
        file.display().to_string(),
    ];
    args.extend(readme_session_flags(stack));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_file_that_holds_the_key_pem_or_pkcs12() {
    let stack = Stack::start(vec![]).await;
    let trusted = Env {
        trust_double: true,
        ..Env::default()
    };
    let dir = stack.dir.path();
    let (leaf, key, chain) = (
        cert("orders-p256.pem"),
        cert("orders-p256.key"),
        cert("intermediate-ca.pem"),
    );
    // PEM with the certificate and the key in one file (a leaf the root signed directly:
    // the helper sends no chain from such a file): both take it.
    let combined = dir.join("combined.pem");
    std::fs::write(
        &combined,
        std::fs::read_to_string(cert("orders-p256-direct.pem")).unwrap()
            + &std::fs::read_to_string(cert("orders-p256-direct.key")).unwrap(),
    )
    .unwrap();
    let args = single_file_args(&stack, &combined, &[]);
    let theirs = run(
        bin("aws_signing_helper"),
        args.clone(),
        &stack,
        trusted.clone(),
    )
    .await;
    let mine = run(ours(), args, &stack, trusted.clone()).await;
    let (theirs, mine) = (
        process_json(&theirs, "aws_signing_helper"),
        process_json(&mine, "spiffe-aws-agent"),
    );
    assert_same_process_output(
        &stack,
        &theirs,
        &mine,
        None,
        "PEM certificate and key in one file",
    );

    // PKCS#12 with the chain inside: legacy (3DES/RC2, SHA-1 MAC) and current OpenSSL
    // defaults (AES-256-CBC, PBKDF2, SHA-256 MAC), with the empty password as the helper
    // opens them, and one with a password.
    for (name, extra) in [
        ("legacy.p12", vec!["-legacy", "-passout", "pass:"]),
        ("modern.p12", vec!["-passout", "pass:"]),
        ("secret.p12", vec!["-passout", "pass:s3cret"]),
    ] {
        let mut args = vec![
            "pkcs12",
            "-export",
            "-in",
            &leaf,
            "-inkey",
            &key,
            "-certfile",
            &chain,
            "-out",
            name,
        ];
        args.extend(extra);
        openssl(dir, &args);
    }
    let before = stack.rolesanywhere.calls().len();
    for (name, password) in [
        ("legacy.p12", None),
        ("modern.p12", None),
        ("secret.p12", Some("s3cret")),
    ] {
        let extra: Vec<&str> = password
            .map(|p| vec!["--pkcs8-password", p])
            .unwrap_or_default();
        let out = run(
            ours(),
            single_file_args(&stack, &dir.join(name), &extra),
            &stack,
            trusted.clone(),
        )
        .await;
        let json = process_json(&out, name);
        let session = stack
            .rolesanywhere
            .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
            .expect("issued by the double");
        assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS), "{name}");
    }
    let calls = &stack.rolesanywhere.calls()[before..];
    assert!(
        calls.len() == 3 && calls.iter().all(|c| c.status == 201),
        "the chain inside the file was sent and verified: {calls:?}"
    );
    // The helper v1.4.0 cannot use either kind: "unsupported algorithm" for legacy files
    // (its PKCS#12 keys fail its own key-type check), "unknown digest algorithm" for current
    // ones (its PKCS#12 library knows SHA-1 MACs only).
    for name in ["legacy.p12", "modern.p12"] {
        let out = run(
            bin("aws_signing_helper"),
            single_file_args(&stack, &dir.join(name), &[]),
            &stack,
            trusted.clone(),
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{name}: the helper fails");
    }
    // The diagnostic commands read them too: the leaf's data, and a signature by its key.
    let pem_data = run(
        ours(),
        vec![
            "read-certificate-data".into(),
            "--certificate".into(),
            leaf.clone(),
        ],
        &stack,
        Env::default(),
    )
    .await;
    for name in ["legacy.p12", "modern.p12"] {
        let file = dir.join(name).display().to_string();
        let out = run(
            ours(),
            vec![
                "read-certificate-data".into(),
                "--certificate".into(),
                file.clone(),
            ],
            &stack,
            Env::default(),
        )
        .await;
        assert!(
            out.status.success() && out.stdout == pem_data.stdout,
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(
            ours(),
            vec!["sign-string".into(), "--certificate".into(), file],
            &stack,
            Env::default(),
        )
        .await;
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem_key = run(
            ours(),
            vec!["sign-string".into(), "--private-key".into(), key.clone()],
            &stack,
            Env::default(),
        )
        .await;
        // The same key: RFC 6979 signatures of the same string are the same.
        assert_eq!(
            out.stdout, pem_key.stdout,
            "{name}: signed with the leaf's key"
        );
    }
    // A file that asks for an unbounded key derivation is refused before any is done.
    let slow = {
        use pkcs8::der::{Decode, Encode};
        let mut pfx = pkcs12::pfx::Pfx::from_der(&std::fs::read(dir.join("modern.p12")).unwrap())
            .expect("a PFX");
        pfx.mac_data.as_mut().expect("a MAC").iterations = i32::MAX;
        let path = dir.join("slow.p12");
        std::fs::write(&path, pfx.to_der().unwrap()).unwrap();
        path
    };
    let started = std::time::Instant::now();
    let out = run(
        ours(),
        single_file_args(&stack, &slow, &[]),
        &stack,
        trusted.clone(),
    )
    .await;
    let line = common::stack::failure_line(&out);
    assert!(line.contains("MAC iterations"), "{line}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refused at once"
    );
    // A password-protected file without the password: one line that says so.
    let out = run(
        ours(),
        single_file_args(&stack, &dir.join("secret.p12"), &[]),
        &stack,
        trusted.clone(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let line = common::stack::failure_line(&out);
    assert!(
        line.contains("protected by a password") && line.contains("--pkcs8-password"),
        "{line}"
    );
    // A wrong one.
    let out = run(
        ours(),
        single_file_args(
            &stack,
            &dir.join("secret.p12"),
            &["--pkcs8-password", "nope"],
        ),
        &stack,
        trusted.clone(),
    )
    .await;
    let line = common::stack::failure_line(&out);
    assert!(
        line.contains("password") && line.contains("wrong"),
        "{line}"
    );
    // A chain file beside a PKCS#12 file is refused, as the helper refuses it.
    let out = run(
        ours(),
        single_file_args(
            &stack,
            &dir.join("modern.p12"),
            &["--intermediates", &chain],
        ),
        &stack,
        trusted,
    )
    .await;
    let line = common::stack::failure_line(&out);
    assert!(line.contains("inside the PKCS#12 file"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_pkcs8_key_with_pkcs8_password() {
    let stack = Stack::start(vec![]).await;
    let trusted = Env {
        trust_double: true,
        ..Env::default()
    };
    let mut base = readme_credential_process(&stack);
    let key = base.iter().position(|a| a == "--private-key").unwrap() + 1;
    base[key] = cert("orders-p256.encrypted.key");
    // Without the password: one line naming the file and the flag.
    let out = run(ours(), base.clone(), &stack, trusted.clone()).await;
    let line = common::stack::failure_line(&out);
    assert!(
        line.contains("is encrypted") && line.contains("--pkcs8-password"),
        "{line}"
    );
    // With it: credentials the double issued for the orders SVID.
    let out = run(
        ours(),
        with(base.clone(), &["--pkcs8-password", "test"]),
        &stack,
        trusted.clone(),
    )
    .await;
    let json = process_json(&out, "spiffe-aws-agent");
    let session = stack
        .rolesanywhere
        .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
        .expect("issued by the double");
    assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS));
    // A wrong password: said so, no call.
    let calls = stack.rolesanywhere.calls().len();
    let out = run(
        ours(),
        with(base.clone(), &["--pkcs8-password", "wrong"]),
        &stack,
        trusted.clone(),
    )
    .await;
    let line = common::stack::failure_line(&out);
    assert!(line.contains("password is wrong"), "{line}");
    assert_eq!(stack.rolesanywhere.calls().len(), calls);
    // The helper v1.4.0 has no such flag (later releases have it).
    let out = run(
        bin("aws_signing_helper"),
        with(base, &["--pkcs8-password", "test"]),
        &stack,
        trusted,
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flag: --pkcs8-password"));
}

/// Starts `program serve --port 0 --hop-limit 1 ARGS` and returns it with its
/// `http://127.0.0.1:PORT` (both print `AWS_EC2_METADATA_SERVICE_ENDPOINT=…`).
async fn serve(
    who: &str,
    program: PathBuf,
    args: Vec<String>,
    stack: &Stack,
) -> (common::peers::Guard, String) {
    let log = stack.dir.path().join(format!("{who}-serve.log"));
    let mut cmd = Command::new(program);
    cmd.arg("serve")
        .args(["--port", "0", "--hop-limit", "1"])
        .args(&args)
        .env("SSL_CERT_FILE", &stack.ca_bundle)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(k);
        }
    }
    let guard = common::peers::Guard::new(cmd.spawn().expect("start serve"));
    let endpoint =
        common::agent_stack::wait_for_log_value(&log, "AWS_EC2_METADATA_SERVICE_ENDPOINT=", '/')
            .await;
    (guard, endpoint)
}

/// The IMDSv2 role listing and the role's credentials document.
async fn imds_document(endpoint: &str) -> (String, serde_json::Map<String, serde_json::Value>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let token = client
            .put(format!("{endpoint}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
            .send()
            .await
            .expect("token")
            .text()
            .await
            .expect("token");
        let base = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
        let listing = client
            .get(&base)
            .header("X-aws-ec2-metadata-token", &token)
            .send()
            .await
            .expect("listing")
            .text()
            .await
            .expect("listing");
        let role = listing.trim().to_owned();
        let resp = client
            .get(format!("{base}{role}"))
            .header("X-aws-ec2-metadata-token", &token)
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("body");
        let doc: Option<serde_json::Value> = serde_json::from_str(&body).ok();
        if let Some(serde_json::Value::Object(doc)) = doc {
            if status == 200 && doc.get("AccessKeyId").is_some_and(|k| k != "") {
                return (role, doc);
            }
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_port_and_hop_limit_serves_the_same_document() {
    let stack = Stack::start(vec![]).await;
    let mut args = readme_credential_process(&stack);
    args.remove(0);
    let (_theirs, theirs_endpoint) =
        serve("theirs", bin("aws_signing_helper"), args.clone(), &stack).await;
    let (_mine, mine_endpoint) = serve("mine", ours(), args, &stack).await;
    let (theirs_role, theirs) = imds_document(&theirs_endpoint).await;
    let (mine_role, mine) = imds_document(&mine_endpoint).await;
    assert_eq!(mine_role, theirs_role, "the role listing");
    let keys = |m: &serde_json::Map<String, serde_json::Value>| {
        let mut k: Vec<String> = m.keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&mine), keys(&theirs), "the same fields");
    for field in ["Code", "Type"] {
        assert_eq!(mine[field], theirs[field], "{field}");
    }
    for (who, doc) in [("theirs", &theirs), ("mine", &mine)] {
        let session = stack
            .rolesanywhere
            .session_for_access_key(doc["AccessKeyId"].as_str().unwrap())
            .unwrap_or_else(|| panic!("{who}: issued by the double: {doc:?}"));
        assert_eq!(
            doc["SecretAccessKey"],
            session.secret_access_key.as_str(),
            "{who}"
        );
        assert_eq!(doc["Token"], session.session_token.as_str(), "{who}");
        assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS), "{who}");
    }
}
