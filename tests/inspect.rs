//! `spiffe-aws-agent inspect` on every certificate in certs/, and on the Workload API double.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use spiffe_aws_agent::dev::pki;
use spiffe_aws_agent::dev::workload_api::{SvidIssuer, WorkloadApiDouble};

const ORDERS: &str = "spiffe://example.org/service/orders";

fn inspect(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .arg("inspect")
        .args(args)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The serial number as an independent tool reads it (Python's `cryptography`).
fn serial_by_python(cert: &Path) -> String {
    let out = Command::new(common::python())
        .arg("-c")
        .arg("import sys; from cryptography import x509; print(x509.load_pem_x509_certificate(open(sys.argv[1], 'rb').read()).serial_number)")
        .arg(cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What inspecting each certificate must find: usable, and otherwise a problem naming why.
fn expectation(name: &str) -> (bool, Option<&'static str>) {
    match name {
        "orders-p256.pem"
        | "orders-p256-direct.pem"
        | "orders-p256-fullchain.pem"
        | "orders-p384.pem"
        | "orders-p384-direct.pem"
        | "orders-rsa2048.pem"
        | "orders-rsa2048-direct.pem"
        | "reviews-p256.pem" => (true, None),
        // Roles Anywhere takes a certificate without a SPIFFE ID; inspect notes it.
        "bad-no-uri-san.pem" => (true, None),
        "bad-ca-leaf.pem" | "intermediate-ca.pem" | "root-ca.pem" => {
            (false, Some("is a CA certificate"))
        }
        "bad-expired.pem" => (false, Some("expired at 2020-01-01")),
        "bad-not-yet-valid.pem" => (false, Some("not valid until 2099-01-01")),
        "bad-ed25519.pem" => (false, Some("Ed25519 keys are not supported")),
        "bad-p521.pem" => (false, Some("ECDSA P-521 keys are not supported")),
        "bad-rsa1024.pem" => (false, Some("RSA key is 1024 bits")),
        "untrusted-orders-p256.pem" | "untrusted-root-ca.pem" | "tls-server.pem" | "tls-ca.pem" => {
            (false, Some("does not chain"))
        }
        other => panic!("certs/{other} is new: add what inspect must find in it to this test"),
    }
}

#[test]
fn inspect_reports_every_certificate_in_certs() {
    let certs = common::root().join("certs");
    let root_ca = certs.join("root-ca.pem");
    let intermediate = certs.join("intermediate-ca.pem");
    let mut names: Vec<String> = std::fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pem"))
        .collect();
    names.sort();
    assert!(names.len() >= 20, "{names:?}");
    for name in &names {
        let cert = certs.join(name);
        let key = certs.join(
            name.replace("-fullchain.pem", ".key")
                .replace(".pem", ".key"),
        );
        let mut args = vec![
            "--certificate",
            path(&cert),
            "--trust-anchor-cert",
            path(&root_ca),
            "--output",
            "json",
        ];
        if key.exists() {
            args.extend(["--private-key", path(&key)]);
        }
        // The intermediate is offered to every certificate; one issued by the root does not
        // need it, and Roles Anywhere ignores what a path does not use.
        args.extend(["--intermediates", path(&intermediate)]);
        let (code, stdout, stderr) = inspect(&args);
        let report: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{name}: {e}: {stdout} {stderr}"));
        let svid = &report["svids"][0];
        let problems: Vec<&str> = svid["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let (usable, problem) = expectation(name);
        assert_eq!(report["usable"], usable, "{name}: {problems:?}");
        assert_eq!(code, Some(if usable { 0 } else { 1 }), "{name}: {stderr}");
        if let Some(needle) = problem {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{name}: no problem contains {needle:?}: {problems:?}"
            );
        }
        // The serial as Roles Anywhere reads it: decimal, as an independent parser says.
        assert_eq!(
            svid["serial"].as_str().unwrap(),
            serial_by_python(&cert),
            "{name}"
        );
        if key.exists() && usable {
            assert_eq!(svid["private_key"], "matches the certificate", "{name}");
        }
        let tags = svid["principal_tags"].as_array().unwrap();
        let tag = |k: &str| {
            tags.iter()
                .find(|t| t["key"] == k)
                .map(|t| t["value"].as_str().unwrap().to_owned())
        };
        if name.starts_with("orders-") {
            assert_eq!(svid["spiffe_id"], ORDERS, "{name}");
            assert_eq!(tag("x509SAN/URI").as_deref(), Some(ORDERS), "{name}");
            assert!(tag("x509Issuer/CN").is_some(), "{name}: {tags:?}");
            assert_eq!(svid["trust_anchor"]["chains"], true, "{name}");
            let path = svid["trust_anchor"]["path"].as_array().unwrap();
            let via_intermediate = !name.contains("-direct");
            assert_eq!(
                path.len(),
                if via_intermediate { 3 } else { 2 },
                "{name}: {path:?}"
            );
        }
        if name == "bad-no-uri-san.pem" {
            assert!(svid["spiffe_id"].is_null());
            assert_eq!(tag("x509SAN/DNS").as_deref(), Some("orders.example.org"));
            assert!(svid["warnings"][0]
                .as_str()
                .unwrap()
                .contains("no SPIFFE ID"));
        }
    }
}

#[test]
fn inspect_checks_the_private_key_and_prints_text() {
    let cert = common::cert("orders-p256.pem");
    for (key, needle) in [
        ("bad-mismatched.key", "does not match the certificate"),
        ("orders-p256.encrypted.key", "encrypted"),
    ] {
        let (code, stdout, _) = inspect(&[
            "--certificate",
            path(&cert),
            "--private-key",
            path(&common::cert(key)),
        ]);
        assert_eq!(code, Some(1), "{key}: {stdout}");
        assert!(
            stdout.contains("PROBLEM") && stdout.contains(needle),
            "{key}: {stdout}"
        );
    }
    // Other key encodings match too.
    for (cert, key) in [
        ("orders-rsa2048.pem", "orders-rsa2048.pkcs1.key"),
        ("orders-p256.pem", "orders-p256.sec1.key"),
    ] {
        let (code, stdout, _) = inspect(&[
            "--certificate",
            path(&common::cert(cert)),
            "--private-key",
            path(&common::cert(key)),
        ]);
        assert_eq!(code, Some(0), "{stdout}");
        assert!(stdout.contains("matches the certificate"), "{stdout}");
    }
    let (code, stdout, _) = inspect(&[
        "--certificate",
        path(&common::cert("orders-p256-fullchain.pem")),
        "--trust-anchor-cert",
        path(&common::cert("root-ca.pem")),
    ]);
    assert_eq!(code, Some(0), "{stdout}");
    for needle in [
        "SVID 1 of 1: spiffe://example.org/service/orders",
        "(decimal, as Roles Anywhere uses it",
        "ECDSA P-256",
        "1 intermediate(s) sent in X-Amz-X509-Chain",
        "chains to trust anchor certificate",
        "x509SAN/URI          spiffe://example.org/service/orders",
        "usable: Roles Anywhere can exchange this SVID",
    ] {
        assert!(stdout.contains(needle), "{needle:?} in:\n{stdout}");
    }
}

#[test]
fn inspect_without_a_source_or_with_an_unreadable_file_says_so() {
    let (code, _, stderr) = inspect(&[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("nothing to inspect"), "{stderr}");
    let (code, _, stderr) = inspect(&["--certificate", "/nonexistent/cert.pem"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_every_svid_from_the_workload_api() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = SvidIssuer::from_test_intermediate().unwrap();
    // A SPIFFE ID longer than a session tag value may be: Roles Anywhere would refuse it.
    let long = format!("spiffe://example.org/{}", "x".repeat(250));
    let svids = vec![
        issuer.issue(ORDERS, Duration::from_secs(600)).unwrap(),
        issuer
            .issue(pki::REVIEWS_SPIFFE_ID, Duration::from_secs(600))
            .unwrap(),
        issuer.issue(&long, Duration::from_secs(600)).unwrap(),
    ];
    let api = WorkloadApiDouble::start(dir.path().join("api.sock"), svids, pki::root_bundle_der())
        .await
        .unwrap();
    let socket = api.endpoint();
    let run = move |extra: Vec<String>| {
        let mut args = vec![
            "--workload-api-socket".to_owned(),
            socket.clone(),
            "--output".into(),
            "json".into(),
        ];
        args.extend(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        inspect(&refs)
    };
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(vec![])
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let svids = report["svids"].as_array().unwrap();
    assert_eq!(svids.len(), 3, "{stdout}");
    assert_eq!(svids[0]["spiffe_id"], ORDERS);
    assert_eq!(svids[1]["spiffe_id"], pki::REVIEWS_SPIFFE_ID);
    for svid in &svids[..2] {
        assert_eq!(svid["problems"].as_array().unwrap().len(), 0, "{svid}");
        // Without --trust-anchor-cert: the trust domain's bundle from the Workload API.
        assert_eq!(svid["trust_anchor"]["chains"], true, "{svid}");
        assert!(svid["trust_anchor"]["anchor"]
            .as_str()
            .unwrap()
            .contains("bundle for example.org"));
        assert_eq!(svid["private_key"], "matches the certificate");
        assert_eq!(svid["chain"].as_array().unwrap().len(), 1);
    }
    let problems = svids[2]["problems"].to_string();
    assert!(
        problems.contains("x509SAN/URI") && problems.contains("more than the 256"),
        "{problems}"
    );
    assert_eq!(report["usable"], false);
    assert_eq!(code, Some(1));

    // One SVID by ID, checked against a trust anchor file that is not its CA.
    let untrusted: PathBuf = common::cert("untrusted-root-ca.pem");
    let (code, stdout, _) = tokio::task::spawn_blocking(move || {
        run(vec![
            "--spiffe-id".into(),
            ORDERS.into(),
            "--trust-anchor-cert".into(),
            untrusted.display().to_string(),
        ])
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["svids"].as_array().unwrap().len(), 1);
    assert_eq!(report["svids"][0]["trust_anchor"]["chains"], false);
    assert_eq!(code, Some(1));
    api.shutdown().await;
}
