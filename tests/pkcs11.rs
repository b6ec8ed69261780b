//! PKCS#11 keys: a SoftHSM2 token made by each test in a temp dir, RSA-2048, P-256 and P-384 keys
//! generated inside it (they never exist outside), certificates for them issued by the test
//! CA that the verifying Roles Anywhere double trusts, and `credential-process` / `update`
//! with `pkcs11:` URIs, as aws_signing_helper takes them. The same command lines run through
//! the real aws_signing_helper (built with cgo, so with its PKCS#11 support).
//!
//! Needs SoftHSM2 and OpenSC's pkcs11-tool (scripts/test.sh installs them); without them the
//! tests fail, they do not skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::stack::{failure_line, parse_process_output, Stack};
use spiffe_aws_agent::dev::pki;

const SOFTHSM_LIB: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234";
const SO_PIN: &str = "123456";
const ORDERS: &str = "spiffe://example.org/service/orders";

/// A SoftHSM2 token in its own directory (its own SOFTHSM2_CONF), so tests run in parallel.
struct Token {
    dir: tempfile::TempDir,
    conf: PathBuf,
    label: String,
}

/// Runs a tool of the token's environment and insists that it worked.
fn must(out: std::io::Result<Output>, what: &str) -> Output {
    let out = out.unwrap_or_else(|e| {
        panic!("{what}: cannot run it ({e}): install softhsm2 and opensc (scripts/test.sh does)")
    });
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Token {
    fn new(label: &str) -> Token {
        assert!(
            Path::new(SOFTHSM_LIB).exists(),
            "{SOFTHSM_LIB} is missing: install softhsm2 (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let token = Token {
            dir,
            conf,
            label: label.to_owned(),
        };
        must(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &token.conf)
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", SO_PIN, "--pin", PIN])
                .output(),
            "softhsm2-util --init-token",
        );
        token
    }

    fn tool(&self, args: &[&str]) -> Output {
        must(
            Command::new("pkcs11-tool")
                .env("SOFTHSM2_CONF", &self.conf)
                .args(["--module", SOFTHSM_LIB, "--token-label", &self.label])
                .args(args)
                .output(),
            &format!("pkcs11-tool {args:?}"),
        )
    }

    /// Generates a key pair in the token; returns its public key (SubjectPublicKeyInfo DER).
    /// At most one P-384 key per token.
    fn keypair(&self, label: &str, id: &str, key_type: &str, always_authenticate: bool) -> Vec<u8> {
        let mut args = vec![
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            label,
            "--id",
            id,
            "--usage-sign",
        ];
        if always_authenticate {
            args.push("--always-auth");
        }
        self.tool(&args);
        if key_type == "EC:secp384r1" {
            // pkcs11-tool 0.23 cannot export a P-384 public key ("cannot create EVP_PKEY"):
            // wrap its EC_POINT (DER OCTET STRING of the uncompressed point) ourselves.
            let listing = self.tool(&["--list-objects", "--type", "pubkey", "--label", label]);
            let listing = String::from_utf8_lossy(&listing.stdout).to_string();
            // pkcs11-tool lists every public key whatever --label says: take the (only)
            // P-384 point, 0x61 bytes long.
            let point = listing
                .lines()
                .filter_map(|l| l.trim().strip_prefix("EC_POINT:"))
                .map(|h| hex::decode(h.trim()).unwrap())
                .find(|p| p.starts_with(&[0x04, 0x61]))
                .unwrap_or_else(|| panic!("no P-384 EC_POINT in {listing}"));
            let point = point
                .strip_prefix(&[0x04, 0x61][..])
                .expect("DER OCTET STRING");
            let mut spki = hex::decode("3076301006072a8648ce3d020106052b81040022036200").unwrap();
            spki.extend_from_slice(point);
            return spki;
        }
        let out = self.dir.path().join(format!("{label}.pub.der"));
        let out_arg = out.display().to_string();
        self.tool(&[
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            label,
            "--output-file",
            &out_arg,
        ]);
        std::fs::read(&out).unwrap()
    }

    /// Stores a certificate (DER) in the token.
    fn store_certificate(&self, label: &str, id: &str, der: &[u8]) {
        let file = self.dir.path().join(format!("{label}.crt.der"));
        std::fs::write(&file, der).unwrap();
        let file_arg = file.display().to_string();
        self.tool(&[
            "--login",
            "--pin",
            PIN,
            "--write-object",
            &file_arg,
            "--type",
            "cert",
            "--label",
            label,
            "--id",
            id,
        ]);
    }

    /// A key pair and its certificate (issued by the test intermediate CA) under one label
    /// and id, as a provisioning tool leaves them. Returns the certificate (DER).
    fn identity(
        &self,
        label: &str,
        id: &str,
        key_type: &str,
        always_authenticate: bool,
    ) -> Vec<u8> {
        let spki = self.keypair(label, id, key_type, always_authenticate);
        let cert = issue(&spki, label);
        self.store_certificate(label, id, &cert);
        cert
    }

    /// A `pkcs11:` URI for `object` in this token, with the PIN.
    fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={};object={object}?pin-value={PIN}",
            self.label
        )
    }
}

/// A leaf for `spki` with the orders SPIFFE ID, issued by the test intermediate CA.
fn issue(spki_der: &[u8], common_name: &str) -> Vec<u8> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_der = common::stack::pem_to_der(pki::INTERMEDIATE_CA_PEM).remove(0);
    let ca_key = KeyPair::from_pem(pki::INTERMEDIATE_CA_KEY_PEM).unwrap();
    let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), ca_key).unwrap();
    let mut params = CertificateParams::default();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(1);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "SPIRE");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(ORDERS.try_into().unwrap())];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let spki = rcgen::SubjectPublicKeyInfo::from_der(spki_der).unwrap();
    params.signed_by(&spki, &issuer).unwrap().der().to_vec()
}

/// Runs `binary` with `args` in the token's environment, without a terminal on stdin (so
/// nothing may prompt).
async fn run(binary: PathBuf, token: &Token, args: Vec<String>) -> Output {
    let conf = token.conf.clone();
    tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(&args)
            .env("SOFTHSM2_CONF", conf)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .output()
            .expect("run")
    })
    .await
    .unwrap()
}

fn agent() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
}

/// `credential-process` flags: `identity` then the double's session flags.
fn credential_process(stack: &Stack, identity: &[&str]) -> Vec<String> {
    let mut args = vec!["credential-process".to_string()];
    args.extend(identity.iter().map(|s| s.to_string()));
    args.extend(stack.session_args());
    args
}

/// Asserts that the double issued `json`'s credentials for `leaf`, with the intermediate in
/// the chain it verified.
fn assert_issued_for(stack: &Stack, json: &serde_json::Value, leaf: &[u8]) {
    let session = stack
        .rolesanywhere
        .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
        .expect("the double issued these credentials");
    let serial = x509_parser::parse_x509_certificate(leaf)
        .unwrap()
        .1
        .tbs_certificate
        .serial
        .to_str_radix(10);
    assert_eq!(session.leaf_serial_decimal, serial);
    assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_p256_and_p384_keys_in_a_token_get_credentials() {
    let stack = Stack::start(vec![]).await;
    let token = Token::new("ra-token");
    let rsa = token.identity("orders-rsa", "01", "rsa:2048", false);
    let p256 = token.identity("orders-p256", "02", "EC:prime256v1", false);
    let p384 = token.identity("orders-p384", "03", "EC:secp384r1", false);
    // The intermediate CA in the token too: the chain is built from the token.
    let intermediate = common::stack::pem_to_der(pki::INTERMEDIATE_CA_PEM).remove(0);
    token.store_certificate("intermediate", "ca", &intermediate);
    let lib = ["--pkcs11-lib", SOFTHSM_LIB];

    for (object, leaf) in [
        ("orders-rsa", &rsa),
        ("orders-p256", &p256),
        ("orders-p384", &p384),
    ] {
        let uri = token.uri(object);
        // The certificate from the token, the key found with the same URI.
        let out = run(
            agent(),
            &token,
            credential_process(
                &stack,
                &[&["--certificate", uri.as_str()][..], &lib[..]].concat(),
            ),
        )
        .await;
        let json = parse_process_output(&out);
        assert_issued_for(&stack, &json, leaf);

        // Only the key's URI: the certificate is looked for with it.
        let out = run(
            agent(),
            &token,
            credential_process(
                &stack,
                &[&["--private-key", uri.as_str()][..], &lib[..]].concat(),
            ),
        )
        .await;
        assert_issued_for(&stack, &parse_process_output(&out), leaf);

        // The certificate from a file, the key in the token (found by id alone).
        let pem = stack.dir.path().join(format!("{object}.pem"));
        std::fs::write(&pem, pem_certificate(leaf)).unwrap();
        let id = match object {
            "orders-rsa" => "%01",
            "orders-p256" => "%02",
            _ => "%03",
        };
        let key_uri = format!("pkcs11:token=ra-token;id={id}?pin-value={PIN}");
        let (pem, intermediates) = (
            pem.display().to_string(),
            common::cert("intermediate-ca.pem").display().to_string(),
        );
        let out = run(
            agent(),
            &token,
            credential_process(
                &stack,
                &[
                    "--certificate",
                    pem.as_str(),
                    "--intermediates",
                    intermediates.as_str(),
                    "--private-key",
                    key_uri.as_str(),
                    "--pkcs11-lib",
                    SOFTHSM_LIB,
                ],
            ),
        )
        .await;
        assert_issued_for(&stack, &parse_process_output(&out), leaf);
    }
    let calls = stack.rolesanywhere.calls();
    assert_eq!(calls.len(), 9, "{calls:?}");
    assert!(calls.iter().all(|c| c.status == 201), "{calls:?}");

    // The long-running path: `update --once` loads the identity through the watcher.
    let file = stack.dir.path().join("credentials");
    let mut args = vec![
        "update".to_string(),
        "--once".into(),
        "--profile".into(),
        "hsm".into(),
        "--certificate".into(),
        token.uri("orders-p256"),
        "--pkcs11-lib".into(),
        SOFTHSM_LIB.into(),
    ];
    args.extend(stack.session_args());
    let conf = token.conf.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(agent())
            .args(args)
            .env("SOFTHSM2_CONF", conf)
            .env("AWS_SHARED_CREDENTIALS_FILE", &file)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(stack.dir.path().join("credentials")).unwrap();
    let issued = stack.rolesanywhere.issued();
    let last = issued.last().unwrap();
    assert!(
        written.contains("[hsm]") && written.contains(&last.access_key_id),
        "{written}"
    );
    assert_eq!(last.leaf_serial_decimal, {
        let (_, c) = x509_parser::parse_x509_certificate(&p256).unwrap();
        c.tbs_certificate.serial.to_str_radix(10)
    });
}

fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_settings_fail_with_a_clear_line_and_exit_2() {
    let stack = Stack::start(vec![]).await;
    let token = Token::new("ra-token");
    token.identity("orders-p256", "02", "EC:prime256v1", false);
    let lib = SOFTHSM_LIB;
    let wrong_pin = "pkcs11:token=ra-token;object=orders-p256?pin-value=9999".to_string();
    let missing = token.uri("no-such-object");
    let good = token.uri("orders-p256");
    let pin_file = stack.dir.path().join("pin");
    std::fs::write(&pin_file, "1111\n").unwrap();
    let wrong_pin_file = format!(
        "pkcs11:token=ra-token;object=orders-p256?pin-source=file:{}",
        pin_file.display()
    );
    let cert_file = common::cert("orders-p256.pem").display().to_string();
    let key_file = common::cert("orders-p256.key").display().to_string();
    let (wrong_pin, wrong_pin_file) = (wrong_pin.as_str(), wrong_pin_file.as_str());
    let (missing, good) = (missing.as_str(), good.as_str());
    let (cert_file, key_file) = (cert_file.as_str(), key_file.as_str());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--private-key", wrong_pin, "--pkcs11-lib", lib],
            "the PIN for PKCS#11 token \"ra-token\" is incorrect",
        ),
        (
            vec!["--private-key", wrong_pin_file, "--pkcs11-lib", lib],
            "is incorrect",
        ),
        (
            vec!["--certificate", missing, "--pkcs11-lib", lib],
            "no certificate matches pkcs11:token=ra-token;object=no-such-object?pin-value=*** in token \"ra-token\"",
        ),
        (
            vec!["--certificate", "pkcs11:token=other?pin-value=1", "--pkcs11-lib", lib],
            "no PKCS#11 token matches pkcs11:token=other?pin-value=*** (tokens present: \"ra-token\")",
        ),
        (
            vec!["--certificate", good, "--pkcs11-lib", "/nonexistent/libpkcs11.so"],
            "cannot load the PKCS#11 library /nonexistent/libpkcs11.so",
        ),
        (
            vec!["--certificate", "pkcs11:object=a;colour=red", "--pkcs11-lib", lib],
            "--certificate pkcs11:object=a;colour=red: \"colour\" is not a path attribute",
        ),
        (
            vec![
                "--certificate",
                cert_file,
                "--private-key",
                key_file,
                "--pkcs11-lib",
                lib,
            ],
            "--pkcs11-lib only applies to PKCS#11 keys",
        ),
        (
            vec!["--certificate", good, "--private-key", key_file],
            "--private-key must be in the token too",
        ),
    ];
    for (identity, expected) in cases {
        let out = run(agent(), &token, credential_process(&stack, &identity)).await;
        let line = failure_line(&out);
        assert_eq!(out.status.code(), Some(2), "{identity:?}: {line}");
        assert!(line.contains(expected), "{identity:?}: {line}");
        assert!(
            !line.contains("9999") && !line.contains("1111"),
            "no PIN in {line}"
        );
    }
    assert!(stack.rolesanywhere.calls().is_empty(), "nothing was signed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_wants_its_pin_at_every_signature_needs_reuse_pin() {
    let stack = Stack::start(vec![]).await;
    let token = Token::new("ra-token");
    let leaf = token.identity("always", "03", "rsa:2048", true);
    let uri = token.uri("always");
    let intermediates = common::cert("intermediate-ca.pem").display().to_string();
    let flags = [
        "--certificate",
        uri.as_str(),
        "--intermediates",
        intermediates.as_str(),
        "--pkcs11-lib",
        SOFTHSM_LIB,
    ];
    let out = run(agent(), &token, credential_process(&stack, &flags)).await;
    let line = failure_line(&out);
    assert_eq!(out.status.code(), Some(2), "{line}");
    assert!(
        line.contains("CKA_ALWAYS_AUTHENTICATE") && line.contains("--reuse-pin"),
        "{line}"
    );
    let out = run(
        agent(),
        &token,
        credential_process(&stack, &[&flags[..], &["--reuse-pin"]].concat()),
    )
    .await;
    assert_issued_for(&stack, &parse_process_output(&out), &leaf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_signing_helper_takes_the_same_command_lines() {
    let stack = Stack::start(vec![]).await;
    let token = Token::new("ra-token");
    let rsa = token.identity("orders-rsa", "01", "rsa:2048", false);
    let p256 = token.identity("orders-p256", "02", "EC:prime256v1", false);
    let helper = common::peers::bin("aws_signing_helper");
    let intermediates = common::cert("intermediate-ca.pem").display().to_string();
    for (object, leaf) in [("orders-rsa", &rsa), ("orders-p256", &p256)] {
        let uri = token.uri(object);
        let identity = [
            "--certificate",
            uri.as_str(),
            "--intermediates",
            intermediates.as_str(),
            "--pkcs11-lib",
            SOFTHSM_LIB,
        ];
        for binary in [helper.clone(), agent()] {
            let mut args = credential_process(&stack, &identity);
            // The helper has no --ca-bundle: both trust the double's CA through SSL_CERT_FILE.
            let at = args.iter().position(|a| a == "--ca-bundle").unwrap();
            args.drain(at..at + 2);
            let conf = token.conf.clone();
            let ca = stack.ca_bundle.clone();
            let out = tokio::task::spawn_blocking(move || {
                Command::new(&binary)
                    .args(&args)
                    .env("SOFTHSM2_CONF", conf)
                    .env("SSL_CERT_FILE", ca)
                    .env_remove("HTTPS_PROXY")
                    .stdin(Stdio::null())
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let json = parse_process_output(&out);
            assert_issued_for(&stack, &json, leaf);
        }
    }
}
