//! `sign-string` and `read-certificate-data` as `aws_signing_helper` v1.4.0 has them: the
//! same command line through both binaries (the real helper built by
//! `scripts/build-peers.sh`), the same output.
//!
//! - RSA PKCS#1 v1.5 signatures are deterministic: both outputs are compared byte for byte,
//!   for every digest and format.
//! - ECDSA signatures are randomized: both are verified with Python's `cryptography` (an
//!   independent implementation) against the key's public key over the fixed string, which
//!   the verifier computes itself.
//! - `read-certificate-data` prints the same JSON bytes.
//!
//! The helper's `sign-string` needs `--certificate` beside `--private-key` (v1.4.0 fails with
//! "undefined certificate value" without it, though it signs with the key alone); ours takes
//! the same line, and the key alone too.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::peers::bin;

fn ours() -> PathBuf {
    env!("CARGO_BIN_EXE_spiffe-aws-agent").into()
}

fn run(program: PathBuf, args: &[&str]) -> Output {
    Command::new(program).args(args).output().expect("run")
}

fn ok(out: &Output, who: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{who}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

fn path(name: &str) -> String {
    common::cert(name).display().to_string()
}

/// Verifies each hex signature of `sigs` over aws_signing_helper's fixed string for the public
/// key of the PEM certificate `cert`, hashed with `digest`; exits non-zero on a bad one.
const VERIFY: &str = r#"
import sys, hashlib
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
cert, digest, sigs = sys.argv[1], sys.argv[2], sys.argv[3:]
pub = x509.load_pem_x509_certificate(open(cert, "rb").read()).public_key()
if isinstance(pub, rsa.RSAPublicKey):
    raw = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
else:
    raw = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
msg = b"AWS Roles Anywhere Credential Helper Signing Test" + b"1" + hashlib.sha256(b"IAM RA" + raw).digest()
h = {"SHA256": hashes.SHA256(), "SHA384": hashes.SHA384(), "SHA512": hashes.SHA512()}[digest]
for s in sigs:
    sig = bytes.fromhex(s)
    if isinstance(pub, rsa.RSAPublicKey):
        pub.verify(sig, msg, padding.PKCS1v15(), h)
    else:
        pub.verify(sig, msg, ec.ECDSA(h))
print("verified", len(sigs))
"#;

fn verify(cert: &str, digest: &str, sigs: &[String]) {
    let mut args = vec!["-c".to_string(), VERIFY.into(), path(cert), digest.into()];
    args.extend(sigs.iter().cloned());
    let out = Command::new(common::python())
        .args(&args)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{cert} {digest}: a signature did not verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const DIGESTS: [&str; 3] = ["SHA256", "SHA384", "SHA512"];

#[test]
fn sign_string_rsa_is_byte_for_byte_the_helpers() {
    let cert_path = path("orders-rsa2048.pem");
    for key in ["orders-rsa2048.key", "orders-rsa2048.pkcs1.key"] {
        for digest in DIGESTS {
            for format in ["json", "text", "bin"] {
                let key_path = path(key);
                let args = [
                    "sign-string",
                    "--certificate",
                    &cert_path,
                    "--private-key",
                    &key_path,
                    "--digest",
                    digest,
                    "--format",
                    format,
                ];
                let theirs = ok(&run(bin("aws_signing_helper"), &args), "aws_signing_helper");
                let mine = ok(&run(ours(), &args), "spiffe-aws-agent");
                assert_eq!(mine, theirs, "{key} {digest} {format}");
            }
            let hex = String::from_utf8(ok(
                &run(
                    ours(),
                    &[
                        "sign-string",
                        "--private-key",
                        &path(key),
                        "--digest",
                        digest,
                        "--format",
                        "text",
                    ],
                ),
                "spiffe-aws-agent",
            ))
            .unwrap();
            verify("orders-rsa2048.pem", digest, &[hex]);
        }
    }
    // No flags but the files: JSON and SHA-256, as the helper's defaults.
    let key_path = path("orders-rsa2048.key");
    let args = [
        "sign-string",
        "--certificate",
        &cert_path,
        "--private-key",
        &key_path,
    ];
    let theirs = ok(&run(bin("aws_signing_helper"), &args), "aws_signing_helper");
    assert_eq!(ok(&run(ours(), &args), "spiffe-aws-agent"), theirs);
    assert!(
        theirs.starts_with(b"\"") && theirs.ends_with(b"\""),
        "JSON string"
    );
    // The key alone is enough here (the helper insists on a certificate it does not use).
    assert_eq!(
        ok(
            &run(ours(), &["sign-string", "--private-key", &key_path]),
            "spiffe-aws-agent"
        ),
        theirs
    );
}

#[test]
fn sign_string_ecdsa_both_verify_over_the_same_string() {
    for (cert, key) in [
        ("orders-p256.pem", "orders-p256.key"),
        ("orders-p256.pem", "orders-p256.sec1.key"),
        ("orders-p384.pem", "orders-p384.key"),
    ] {
        for digest in DIGESTS {
            let mut sigs = Vec::new();
            for program in [bin("aws_signing_helper"), ours()] {
                let (cert_path, key_path) = (path(cert), path(key));
                let out = run(
                    program.clone(),
                    &[
                        "sign-string",
                        "--certificate",
                        &cert_path,
                        "--private-key",
                        &key_path,
                        "--digest",
                        digest,
                        "--format",
                        "text",
                    ],
                );
                let hex = String::from_utf8(ok(&out, &program.display().to_string())).unwrap();
                assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex}");
                sigs.push(hex);
            }
            verify(cert, digest, &sigs);
            // The binary form is the same signature's bytes.
            let bin_out = ok(
                &run(
                    ours(),
                    &[
                        "sign-string",
                        "--private-key",
                        &path(key),
                        "--digest",
                        digest,
                        "--format",
                        "bin",
                    ],
                ),
                "spiffe-aws-agent",
            );
            assert_eq!(bin_out[0], 0x30, "an ASN.1 DER ECDSA signature");
            verify(cert, digest, &[hex::encode(&bin_out)]);
        }
    }
}

#[test]
fn sign_string_takes_an_encrypted_key_with_its_password() {
    let out = run(
        ours(),
        &[
            "sign-string",
            "--private-key",
            &path("orders-p256.encrypted.key"),
            "--pkcs8-password",
            "test",
            "--format",
            "text",
        ],
    );
    let hex = String::from_utf8(ok(&out, "spiffe-aws-agent")).unwrap();
    verify("orders-p256.pem", "SHA256", &[hex]);
    let out = run(
        ours(),
        &[
            "sign-string",
            "--private-key",
            &path("orders-p256.encrypted.key"),
            "--pkcs8-password",
            "wrong",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password is wrong"), "{err}");
}

#[test]
fn sign_string_bad_input_fails_like_the_helper() {
    // A missing key file: both exit 1, ours with one line naming the file.
    let cert_path = path("orders-p256.pem");
    for program in [bin("aws_signing_helper"), ours()] {
        let out = run(
            program.clone(),
            &[
                "sign-string",
                "--certificate",
                &cert_path,
                "--private-key",
                "/nonexistent/key.pem",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", program.display());
        assert!(out.stdout.is_empty());
    }
    let out = run(
        ours(),
        &["sign-string", "--private-key", "/nonexistent/key.pem"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/key.pem"), "{err}");
    // Values outside the helper's lists are refused by both (ours: exit 2, a bad flag).
    for (flag, value) in [("--digest", "sha256"), ("--format", "hex")] {
        let key_path = path("orders-p256.key");
        let args = [
            "sign-string",
            "--certificate",
            &cert_path,
            "--private-key",
            &key_path,
            flag,
            value,
        ];
        assert!(
            !run(bin("aws_signing_helper"), &args).status.success(),
            "{flag}"
        );
        assert_eq!(run(ours(), &args).status.code(), Some(2), "{flag}");
    }
}

#[test]
fn read_certificate_data_prints_the_helpers_json() {
    for cert in [
        "orders-rsa2048.pem",
        "orders-p256.pem",
        "orders-p384.pem",
        "orders-p256-fullchain.pem",
        "root-ca.pem",
    ] {
        let cert_path = path(cert);
        let args = ["read-certificate-data", "--certificate", &cert_path];
        let theirs = ok(&run(bin("aws_signing_helper"), &args), "aws_signing_helper");
        let mine = ok(&run(ours(), &args), "spiffe-aws-agent");
        assert_eq!(
            String::from_utf8_lossy(&mine),
            String::from_utf8_lossy(&theirs),
            "{cert}"
        );
        let json: serde_json::Value = serde_json::from_slice(&mine).unwrap();
        let key_type = json["keyType"].as_str().unwrap();
        assert!(key_type == "RSA" || key_type == "EC", "{json}");
    }
    // A file without a certificate: both fail (the helper silently, ours with the reason).
    for program in [bin("aws_signing_helper"), ours()] {
        let out = run(
            program.clone(),
            &[
                "read-certificate-data",
                "--certificate",
                &path("orders-p256.key"),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", program.display());
    }
}

#[test]
fn certificate_store_flags_say_they_are_not_on_linux() {
    let selector = "Key=x509Subject,Value=CN=orders";
    for args in [
        vec!["sign-string", "--cert-selector", selector],
        vec!["read-certificate-data", "--cert-selector", selector],
        vec![
            "read-certificate-data",
            "--certificate",
            "x.pem",
            "--system-store-name",
            "MY",
        ],
        vec![
            "sign-string",
            "--private-key",
            "k.pem",
            "--use-latest-expiring-certificate",
        ],
    ] {
        let out = run(ours(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Windows and macOS only") && err.contains("on Linux"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // The helper, on Linux, fails at run time instead.
    let out = run(
        bin("aws_signing_helper"),
        &["read-certificate-data", "--cert-selector", selector],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unable to use cert store signer on linux")
    );
}
