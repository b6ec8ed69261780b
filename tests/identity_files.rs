//! Identities from PEM files: every supported encoding loads, every bad input is refused
//! with a message that names the problem.

mod common;

use std::time::SystemTime;

use spiffe_aws_agent::identity::key::{KeyError, KeyKind};
use spiffe_aws_agent::identity::{files, IdentityError, X509Identity};

fn load(cert: &str, key: &str, intermediates: Option<&str>) -> Result<X509Identity, IdentityError> {
    files::load(
        &common::cert(cert),
        &common::cert(key),
        intermediates.map(common::cert).as_deref(),
        SystemTime::now(),
    )
}

#[test]
fn loads_each_key_type_and_encoding() {
    for (cert, key, kind) in [
        (
            "orders-rsa2048.pem",
            "orders-rsa2048.key",
            KeyKind::Rsa { bits: 2048 },
        ),
        (
            "orders-rsa2048.pem",
            "orders-rsa2048.pkcs1.key",
            KeyKind::Rsa { bits: 2048 },
        ),
        ("orders-p256.pem", "orders-p256.key", KeyKind::P256),
        ("orders-p256.pem", "orders-p256.sec1.key", KeyKind::P256),
        ("orders-p384.pem", "orders-p384.key", KeyKind::P384),
    ] {
        let id =
            load(cert, key, Some("intermediate-ca.pem")).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(id.key().kind(), kind, "{key}");
        assert_eq!(id.spiffe_id(), Some("spiffe://example.org/service/orders"));
        assert_eq!(id.intermediates_der().len(), 1);
    }
}

#[test]
fn a_certificate_file_may_hold_the_whole_chain() {
    let id = load("orders-p256-fullchain.pem", "orders-p256.key", None).unwrap();
    assert_eq!(id.intermediates_der().len(), 1);
    let direct = load("orders-p256-direct.pem", "orders-p256-direct.key", None).unwrap();
    assert!(direct.intermediates_der().is_empty());
}

fn err(cert: &str, key: &str) -> String {
    load(cert, key, None)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn refuses_bad_inputs_with_a_message_naming_the_problem() {
    let cases = [
        (
            "bad-expired.pem",
            "bad-expired.key",
            "expired at 2020-01-01T00:00:00Z",
        ),
        (
            "bad-not-yet-valid.pem",
            "bad-not-yet-valid.key",
            "not valid until 2099-01-01T00:00:00Z",
        ),
        ("bad-ca-leaf.pem", "bad-ca-leaf.key", "is a CA certificate"),
        (
            "orders-p256.pem",
            "bad-mismatched.key",
            "does not match the certificate",
        ),
        (
            "orders-p256.pem",
            "orders-rsa2048.key",
            "does not match the certificate",
        ),
        (
            "orders-rsa2048.pem",
            "orders-p256.key",
            "does not match the certificate",
        ),
        (
            "orders-p256.pem",
            "orders-p384.key",
            "does not match the certificate",
        ),
        ("bad-rsa1024.pem", "bad-rsa1024.key", "RSA key is 1024 bits"),
        (
            "bad-ed25519.pem",
            "bad-ed25519.key",
            "Ed25519 keys are not supported",
        ),
        (
            "bad-p521.pem",
            "bad-p521.key",
            "ECDSA P-521 keys are not supported",
        ),
        (
            "orders-p256.pem",
            "orders-p256.encrypted.key",
            "is encrypted",
        ),
        (
            "orders-p256.key",
            "orders-p256.key",
            "no PEM CERTIFICATE block",
        ),
        ("orders-p256.pem", "orders-p256.pem", "no PEM PRIVATE KEY"),
        (
            "does-not-exist.pem",
            "orders-p256.key",
            "cannot read the certificate file",
        ),
    ];
    for (cert, key, expected) in cases {
        let message = err(cert, key);
        assert!(
            message.contains(expected),
            "{cert} + {key}: {message:?} lacks {expected:?}"
        );
        assert!(!message.contains('\n'), "one line: {message:?}");
    }
}

#[test]
fn a_file_identity_needs_no_spiffe_id_but_a_workload_api_one_does() {
    let id = load("bad-no-uri-san.pem", "bad-no-uri-san.key", None).unwrap();
    assert_eq!(id.spiffe_id(), None);
}

#[test]
fn garbage_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = files::load(
        &garbage,
        &common::cert("orders-p256.key"),
        None,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not valid X.509"), "{e}");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = files::load(
        &common::cert("orders-p256.pem"),
        &garbage,
        None,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(e, IdentityError::Key(KeyError::Malformed { .. })),
        "{e}"
    );
}

#[test]
fn debug_output_never_shows_key_material() {
    let id = load("orders-p256.pem", "orders-p256.sec1.key", None).unwrap();
    let shown = format!("{id:?}");
    assert!(shown.contains("P256"), "{shown}");
    let key_pem = std::fs::read_to_string(common::cert("orders-p256.sec1.key")).unwrap();
    let b64_line = key_pem.lines().nth(1).unwrap();
    assert!(!shown.contains(b64_line));
}

#[test]
fn special_files_and_long_chains_are_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.pem");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for bad in [
        fifo.as_path(),
        std::path::Path::new("/dev/zero"),
        dir.path(),
    ] {
        let e = files::load(
            bad,
            &common::cert("orders-p256.key"),
            None,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
    // 500 intermediates would become one enormous header: refused before any call.
    let one = std::fs::read_to_string(common::cert("intermediate-ca.pem")).unwrap();
    let chain = dir.path().join("chain.pem");
    std::fs::write(&chain, one.repeat(500)).unwrap();
    let e = files::load(
        &common::cert("orders-p256.pem"),
        &common::cert("orders-p256.key"),
        Some(&chain),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(e, IdentityError::ChainTooLong { count: 500 }),
        "{e}"
    );
}

/// Encrypted PKCS#8 keys as `openssl pkcs8 -topk8` writes them, in the variants
/// aws_signing_helper's later releases read: PBKDF2 with HMAC-SHA-256/384/512 and scrypt,
/// AES-128/192/256-CBC.
#[test]
fn encrypted_pkcs8_variants_from_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let key = common::cert("orders-p256.key");
    for (name, args) in [
        (
            "sha512-aes128",
            vec!["-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA512"],
        ),
        (
            "sha384-aes192",
            vec!["-v2", "aes-192-cbc", "-v2prf", "hmacWithSHA384"],
        ),
        (
            "sha256-aes256",
            vec!["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA256"],
        ),
        ("scrypt", vec!["-scrypt"]),
    ] {
        let out_path = dir.path().join(format!("{name}.key"));
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["pkcs8", "-topk8", "-in"])
            .arg(&key)
            .args(["-passout", "pass:pw", "-out"])
            .arg(&out_path)
            .args(&args);
        let out = cmd.output().expect("openssl");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let password = files::KeyPassword::new("pw".into());
        let id = files::load_any(
            &common::cert("orders-p256.pem"),
            Some(&out_path),
            None,
            Some(&password),
            SystemTime::now(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(id.key().kind(), KeyKind::P256, "{name}");
        let wrong = files::KeyPassword::new("nope".into());
        let e = files::load_any(
            &common::cert("orders-p256.pem"),
            Some(&out_path),
            None,
            Some(&wrong),
            SystemTime::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("password is wrong"), "{name}: {e}");
    }
}

#[test]
fn a_certificate_without_its_key_says_which_flag_is_missing() {
    let e = files::load_any(
        &common::cert("orders-p256.pem"),
        None,
        None,
        None,
        SystemTime::now(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("without --private-key, so it must hold the key too")
            && e.contains("PRIVATE KEY"),
        "{e}"
    );
}
