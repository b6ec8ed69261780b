//! The doubles, started in the test process, and the agent binary run against them as a
//! separate process, the way an AWS SDK runs it.

use std::path::PathBuf;
use std::process::Output;

use spiffe_aws_agent::dev::pki;
use spiffe_aws_agent::dev::rolesanywhere::{
    RolesAnywhereDouble, RolesAnywhereDoubleConfig, DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS,
    DEV_TRUST_ANCHOR_ARN,
};
use spiffe_aws_agent::dev::workload_api::{SvidEntry, WorkloadApiDouble};

/// A Workload API double and a Roles Anywhere double, with files in a temp dir.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub workload_api: WorkloadApiDouble,
    pub rolesanywhere: RolesAnywhereDouble,
    /// The double's TLS CA, for `--ca-bundle`.
    pub ca_bundle: PathBuf,
}

impl Stack {
    pub async fn start(svids: Vec<SvidEntry>) -> Stack {
        Self::start_with(svids, RolesAnywhereDoubleConfig::default()).await
    }

    pub async fn start_with(svids: Vec<SvidEntry>, config: RolesAnywhereDoubleConfig) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let bundle = pki::root_bundle_der();
        let workload_api = WorkloadApiDouble::start(dir.path().join("agent.sock"), svids, bundle)
            .await
            .expect("workload API double");
        let rolesanywhere = RolesAnywhereDouble::start(config)
            .await
            .expect("roles anywhere double");
        let ca_bundle = dir.path().join("tls-ca.pem");
        std::fs::write(&ca_bundle, RolesAnywhereDouble::ca_pem()).expect("write CA bundle");
        Stack {
            dir,
            workload_api,
            rolesanywhere,
            ca_bundle,
        }
    }

    /// The Roles Anywhere flags for the dev trust anchor, profile and the orders role.
    pub fn session_args(&self) -> Vec<String> {
        vec![
            "--trust-anchor-arn".into(),
            DEV_TRUST_ANCHOR_ARN.into(),
            "--profile-arn".into(),
            DEV_PROFILE_ARN.into(),
            "--role-arn".into(),
            DEV_ROLE_ARN_ORDERS.into(),
            "--endpoint".into(),
            self.rolesanywhere.endpoint(),
            "--ca-bundle".into(),
            self.ca_bundle.display().to_string(),
        ]
    }

    /// `credential-process` with the Workload API source plus `extra` flags.
    pub async fn credential_process_wl(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "credential-process".to_string(),
            "--workload-api-socket".into(),
            self.workload_api.endpoint(),
        ];
        args.extend(self.session_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        run_agent(args).await
    }
}

/// Runs the agent binary with `args` (no SPIFFE_ENDPOINT_SOCKET inherited).
pub async fn run_agent(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
            .args(&args)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .output()
            .expect("run spiffe-aws-agent")
    })
    .await
    .expect("join")
}

/// Every certificate in a PEM text, DER.
pub fn pem_to_der(pem: &str) -> Vec<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.expect("PEM cert").as_ref().to_vec())
        .collect()
}

/// An SVID from `certs/` files: `leaf` (+ the intermediate when `with_intermediate`).
pub fn svid_from_files(
    spiffe_id: &str,
    leaf: &str,
    key: &str,
    with_intermediate: bool,
) -> SvidEntry {
    let mut chain = std::fs::read_to_string(super::cert(leaf)).expect("leaf");
    if with_intermediate {
        chain.push_str(
            &std::fs::read_to_string(super::cert("intermediate-ca.pem")).expect("intermediate"),
        );
    }
    let key = std::fs::read_to_string(super::cert(key)).expect("key");
    SvidEntry::from_pem(spiffe_id, &chain, &key, "").expect("SvidEntry")
}

/// Parses the `credential_process` JSON on stdout, asserting its shape.
pub fn parse_process_output(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(json["Version"], 1);
    for key in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(
            json[key].as_str().is_some_and(|s| !s.is_empty()),
            "{key} missing in {json}"
        );
    }
    let keys: Vec<&String> = json.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 5, "exactly the documented fields: {keys:?}");
    json
}

/// The one stderr line of a failed run.
pub fn failure_line(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
    lines[0].to_owned()
}
