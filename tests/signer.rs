//! The SigV4-X509 signer against known answers from an independent implementation
//! (`tests/vectors/make_sigv4x509_vectors.py`, cross-checked with openssl), and ECDSA
//! signatures checked by an independent verifier (`tests/vectors/verify_ecdsa.py`).

mod common;

use std::time::SystemTime;

use spiffe_aws_agent::identity::files;
use spiffe_aws_agent::rolesanywhere::signer::{self, Request};

fn vectors() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(common::root().join("tests/vectors/sigv4x509_rsa.json"))
        .expect("vectors file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("vectors JSON");
    json["vectors"].as_array().expect("vectors array").clone()
}

fn time_of(v: &serde_json::Value) -> SystemTime {
    let t = time::OffsetDateTime::parse(
        v["time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    SystemTime::from(t)
}

#[test]
fn rsa_signatures_match_the_independent_known_answers() {
    let vectors = vectors();
    assert!(vectors.len() >= 2);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let chain = v["chain"].as_array().unwrap();
        assert_eq!(chain.len(), 1);
        let identity = files::load(
            &common::root().join(v["certificate"].as_str().unwrap()),
            &common::root().join(v["private_key"].as_str().unwrap()),
            Some(&common::root().join(chain[0].as_str().unwrap())),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(
            identity.serial_decimal(),
            v["serial_decimal"].as_str().unwrap(),
            "{name}"
        );
        let query: Vec<(String, String)> = v["query"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_owned(),
                    p[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let signed = signer::sign(
            &Request {
                method: v["method"].as_str().unwrap(),
                host: v["host"].as_str().unwrap(),
                path: v["path"].as_str().unwrap(),
                query: &query,
                content_type: v["content_type"].as_str().unwrap(),
                body: v["body"].as_str().unwrap().as_bytes(),
            },
            v["region"].as_str().unwrap(),
            time_of(&v),
            &identity,
        )
        .unwrap();
        assert_eq!(
            signed.canonical_request,
            v["canonical_request"].as_str().unwrap(),
            "{name}: canonical request"
        );
        assert_eq!(
            signed.string_to_sign,
            v["string_to_sign"].as_str().unwrap(),
            "{name}: string to sign"
        );
        assert_eq!(
            signed.signature,
            v["signature_hex"].as_str().unwrap(),
            "{name}: signature"
        );
        let header = |n: &str| {
            signed
                .headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            header("Authorization"),
            v["authorization"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            header("X-Amz-Date"),
            v["x_amz_date"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            header("X-Amz-X509"),
            v["x_amz_x509"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            header("X-Amz-X509-Chain"),
            v["x_amz_x509_chain"].as_str().unwrap(),
            "{name}"
        );
    }
}

fn ecdsa_signature_verifies_independently(cert: &str, key: &str) {
    let identity = files::load(
        &common::cert(cert),
        &common::cert(key),
        Some(&common::cert("intermediate-ca.pem")),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(identity.key().algorithm(), "AWS4-X509-ECDSA-SHA256");
    let body = br#"{"durationSeconds":3600}"#;
    let signed = signer::sign(
        &Request {
            method: "POST",
            host: "rolesanywhere.eu-west-1.amazonaws.com",
            path: "/sessions",
            query: &[],
            content_type: "application/json",
            body,
        },
        "eu-west-1",
        SystemTime::now(),
        &identity,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sts = dir.path().join("sts");
    std::fs::write(&sts, &signed.string_to_sign).unwrap();
    let verify = |sig: &str| {
        std::process::Command::new(common::python())
            .arg(common::root().join("tests/vectors/verify_ecdsa.py"))
            .arg(common::cert(cert))
            .arg(&sts)
            .arg(sig)
            .output()
            .unwrap()
    };
    let out = verify(&signed.signature);
    assert!(
        out.status.success(),
        "{cert}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The verifier is not a rubber stamp: a different string to sign must fail.
    std::fs::write(&sts, format!("{}x", signed.string_to_sign)).unwrap();
    assert!(!verify(&signed.signature).status.success());
    assert!(signed.headers.iter().any(|(k, v)| *k == "Authorization"
        && v.starts_with(&format!(
            "AWS4-X509-ECDSA-SHA256 Credential={}/",
            identity.serial_decimal()
        ))));
}

#[test]
fn p256_signatures_verify_with_an_independent_verifier() {
    ecdsa_signature_verifies_independently("orders-p256.pem", "orders-p256.key");
}

#[test]
fn p384_signatures_use_sha256_and_verify_with_an_independent_verifier() {
    ecdsa_signature_verifies_independently("orders-p384.pem", "orders-p384.key");
}

#[test]
fn no_chain_header_without_intermediates() {
    let identity = files::load(
        &common::cert("orders-p256-direct.pem"),
        &common::cert("orders-p256-direct.key"),
        None,
        SystemTime::now(),
    )
    .unwrap();
    let signed = signer::sign(
        &Request {
            method: "POST",
            host: "h",
            path: "/sessions",
            query: &[],
            content_type: "application/json",
            body: b"{}",
        },
        "us-east-1",
        SystemTime::now(),
        &identity,
    )
    .unwrap();
    assert!(signed.headers.iter().all(|(k, _)| *k != "X-Amz-X509-Chain"));
    assert!(signed
        .canonical_request
        .contains("\ncontent-type;host;x-amz-date;x-amz-x509\n"));
}
