//! TPM 2.0 keys (cargo feature `tpm`): a swtpm simulator started by each test, RSA-2048 and
//! P-256 keys created inside it with tpm2-tools (as a TSS2 key file whose parent is the owner
//! hierarchy's storage primary, and as a persistent handle), certificates for them issued by
//! the test CA that the verifying Roles Anywhere double trusts, and `credential-process`
//! with `--private-key key.pem` / `--private-key handle:0x81…`, as aws_signing_helper takes
//! them.
//!
//! Run with `cargo test --features tpm --test tpm`; needs swtpm and tpm2-tools
//! (scripts/test.sh installs them). Without them the tests fail, they do not skip.
#![cfg(feature = "tpm")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::stack::{failure_line, parse_process_output, Stack};
use spiffe_aws_agent::dev::pki;

const ORDERS: &str = "spiffe://example.org/service/orders";

/// A swtpm simulator on two free TCP ports, killed when dropped.
struct Simulator {
    dir: tempfile::TempDir,
    child: Child,
    tcti: String,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two consecutive free ports (swtpm's server and control ports).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports");
}

impl Simulator {
    fn start() -> Simulator {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run swtpm ({e}): install swtpm (scripts/test.sh does)")
            });
        let sim = Simulator {
            dir,
            child,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sim;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("swtpm did not listen on {port}");
    }

    /// Runs a tpm2-tools command against the simulator, insisting that it worked, then
    /// flushes transient objects and sessions (there is no resource manager).
    fn tool(&self, name: &str, args: &[&str]) -> Output {
        let run = |name: &str, args: &[&str]| {
            let out = Command::new(name)
                .current_dir(self.dir.path())
                .env("TPM2TOOLS_TCTI", &self.tcti)
                .args(args)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run {name} ({e}): install tpm2-tools (scripts/test.sh does)")
                });
            assert!(
                out.status.success(),
                "{name} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out
        };
        let out = run(name, args);
        for kind in ["-t", "-l", "-s"] {
            run("tpm2_flushcontext", &[kind]);
        }
        out
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The owner hierarchy's ECC P-256 storage primary (the template TSS2 key files with
    /// parent 0x40000001 are loaded under), as `primary.ctx`.
    fn primary(&self) {
        self.tool(
            "tpm2_createprimary",
            &[
                "-Q",
                "-C",
                "o",
                "-g",
                "sha256",
                "-G",
                "ecc256:null:aes128cfb",
                "-a",
                "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt",
                "-c",
                "primary.ctx",
            ],
        );
    }

    /// A signing key of `alg` under the primary: returns (its TSS2 key file, its public key
    /// as SubjectPublicKeyInfo DER), and leaves it loaded as `NAME.ctx` for evictcontrol.
    fn key(&self, name: &str, alg: &str) -> (PathBuf, Vec<u8>) {
        let (public, private) = (format!("{name}.pub"), format!("{name}.priv"));
        let (pem, ctx, spki) = (
            format!("{name}.pem"),
            format!("{name}.ctx"),
            format!("{name}.spki.der"),
        );
        self.tool(
            "tpm2_create",
            &[
                "-Q",
                "-C",
                "primary.ctx",
                "-G",
                alg,
                "-u",
                &public,
                "-r",
                &private,
            ],
        );
        self.tool(
            "tpm2_encodeobject",
            &[
                "-C",
                "primary.ctx",
                "-u",
                &public,
                "-r",
                &private,
                "-o",
                &pem,
            ],
        );
        self.tool(
            "tpm2_load",
            &[
                "-Q",
                "-C",
                "primary.ctx",
                "-u",
                &public,
                "-r",
                &private,
                "-c",
                &ctx,
            ],
        );
        self.tool(
            "tpm2_readpublic",
            &["-Q", "-c", &ctx, "-f", "der", "-o", &spki],
        );
        (self.path(&pem), std::fs::read(self.path(&spki)).unwrap())
    }
}

impl Simulator {
    /// Restarts the simulator on the same state, serving a unix socket (what
    /// aws_signing_helper's TPM_DEVICE takes); returns the socket's path.
    fn restart_on_unix_socket(&mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let socket = self.path("tpm.sock");
        self.child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", self.path("state").display()))
            .args([
                "--server",
                &format!("type=unixio,path={}", socket.display()),
            ])
            .args([
                "--ctrl",
                &format!("type=unixio,path={}", self.path("ctrl.sock").display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm");
        for _ in 0..100 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return socket;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("swtpm did not listen on {}", socket.display());
    }
}

/// A leaf for `spki` with the orders SPIFFE ID, issued by the test intermediate CA.
fn issue(spki_der: &[u8], dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
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
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(ORDERS.try_into().unwrap())];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let spki = rcgen::SubjectPublicKeyInfo::from_der(spki_der).unwrap();
    let cert = params.signed_by(&spki, &issuer).unwrap();
    let path = dir.join(format!("{name}.crt.pem"));
    std::fs::write(&path, cert.pem()).unwrap();
    (path, cert.der().to_vec())
}

async fn credential_process(stack: &Stack, sim: &Simulator, cert: &Path, key: &str) -> Output {
    let mut args = vec![
        "credential-process".to_string(),
        "--certificate".into(),
        cert.display().to_string(),
        "--private-key".into(),
        key.into(),
        "--intermediates".into(),
        common::cert("intermediate-ca.pem").display().to_string(),
    ];
    args.extend(stack.session_args());
    let tcti = sim.tcti.clone();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
            .args(&args)
            .env("TPM2TOOLS_TCTI", tcti)
            .env_remove("TPM_DEVICE")
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .env_remove("HTTPS_PROXY")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn serial(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.tbs_certificate.serial.to_str_radix(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_keys_as_key_files_and_handles_get_credentials() {
    let stack = Stack::start(vec![]).await;
    let sim = Simulator::start();
    sim.primary();
    for (name, alg, handle) in [
        ("rsa", "rsa2048", "0x81000002"),
        ("p256", "ecc256", "0x81000003"),
    ] {
        let (pem, spki) = sim.key(name, alg);
        let (cert, der) = issue(&spki, sim.dir.path(), name);
        // The key file: loaded under the storage primary the agent re-creates.
        let out = credential_process(&stack, &sim, &cert, &pem.display().to_string()).await;
        let json = parse_process_output(&out);
        let session = stack
            .rolesanywhere
            .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
            .expect("issued by the double");
        assert_eq!(session.leaf_serial_decimal, serial(&der), "{name}");
        // The same key made persistent.
        sim.tool(
            "tpm2_evictcontrol",
            &["-Q", "-C", "o", "-c", &format!("{name}.ctx"), handle],
        );
        let out = credential_process(&stack, &sim, &cert, &format!("handle:{handle}")).await;
        let json = parse_process_output(&out);
        let session = stack
            .rolesanywhere
            .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
            .expect("issued by the double");
        assert_eq!(session.leaf_serial_decimal, serial(&der), "{name}");
    }
    assert_eq!(stack.rolesanywhere.calls().len(), 4);

    // A key that is not the certificate's, and a handle with no key: exit 2, one line.
    let (rsa_cert, _) = issue(&sim.key("other", "rsa2048").1, sim.dir.path(), "other");
    for (key, expected) in [
        ("handle:0x81000002", "does not belong to the certificate"),
        (
            "handle:0x81000009",
            "no persistent key at handle 0x81000009",
        ),
        ("handle:0x40000001", "is not a TPM handle"),
    ] {
        let out = credential_process(&stack, &sim, &rsa_cert, key).await;
        let line = failure_line(&out);
        assert!(line.contains(expected), "{key}: {line}");
        assert_eq!(out.status.code(), Some(2), "{key}: {line}");
    }
    assert_eq!(
        stack.rolesanywhere.calls().len(),
        4,
        "nothing more was sent"
    );
}

/// The real aws_signing_helper v1.4.0 signs with the same persistent key, given a terminal:
/// it opens /dev/tty before it looks at --no-tpm-key-password, so without one (an SDK running
/// credential_process from a service) it fails. `script` lends it a pseudo-terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_signing_helper_signs_with_the_same_handle_only_on_a_terminal() {
    let stack = Stack::start(vec![]).await;
    let mut sim = Simulator::start();
    sim.primary();
    let (_, spki) = sim.key("p256", "ecc256");
    let (cert, der) = issue(&spki, sim.dir.path(), "p256");
    sim.tool(
        "tpm2_evictcontrol",
        &["-Q", "-C", "o", "-c", "p256.ctx", "0x81000004"],
    );
    let socket = sim.restart_on_unix_socket();
    let mut args = vec![
        "credential-process".to_string(),
        "--certificate".into(),
        cert.display().to_string(),
        "--private-key".into(),
        "handle:0x81000004".into(),
        "--no-tpm-key-password".into(),
        "--intermediates".into(),
        common::cert("intermediate-ca.pem").display().to_string(),
    ];
    args.extend(stack.session_args());
    let at = args.iter().position(|a| a == "--ca-bundle").unwrap();
    args.drain(at..at + 2);
    let helper = common::peers::bin("aws_signing_helper");
    let command_line = std::iter::once(helper.display().to_string())
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let run = |with_terminal: bool| {
        let (socket, ca, helper, args, command_line) = (
            socket.clone(),
            stack.ca_bundle.clone(),
            helper.clone(),
            args.clone(),
            command_line.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut cmd = if with_terminal {
                let mut c = Command::new("script");
                c.args(["-qec", &command_line, "/dev/null"]);
                c
            } else {
                let mut c = Command::new(helper);
                c.args(&args);
                c
            };
            cmd.env("TPM_DEVICE", socket)
                .env("SSL_CERT_FILE", ca)
                .env_remove("HTTPS_PROXY")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
    };
    let out = run(false).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unable to read your TPM key password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(true).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json_line = text
        .lines()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from the helper: {text}"));
    let json: serde_json::Value = serde_json::from_str(json_line.trim()).unwrap();
    let session = stack
        .rolesanywhere
        .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
        .expect("issued by the double");
    assert_eq!(session.leaf_serial_decimal, serial(&der));
}
