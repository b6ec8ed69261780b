//! `spiffe-aws-agent dev`: the whole flow on one machine.
//!
//! It starts the Workload API double (holding `orders` and `reviews` SVIDs issued from the test
//! intermediate) and the verifying Roles Anywhere double, exchanges the `orders` SVID through
//! the same code `credential-process` runs, and prints what a newcomer pastes to try any AWS
//! client against the doubles. Until Ctrl-C it rotates the SVIDs like a SPIRE agent would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{CredentialProcessArgs, DevArgs, IdentityArgs, SessionArgs};
use crate::dev::pki;
use crate::dev::rolesanywhere::{
    RolesAnywhereDouble, RolesAnywhereDoubleConfig, RolesAnywhereDoubleError, DEV_PROFILE_ARN,
    DEV_ROLE_ARN_ORDERS, DEV_TRUST_ANCHOR_ARN,
};
use crate::dev::workload_api::{SvidEntry, SvidIssuer, WorkloadApiDouble, WorkloadApiDoubleError};
use crate::serve::process::{self, ProcessError};

/// How long the SVIDs that `dev` issues live; rotation replaces them well before.
const SVID_TTL: Duration = Duration::from_secs(3600);

/// Why `dev` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot prepare the dev directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("the Workload API double failed: {0}")]
    WorkloadApi(#[from] WorkloadApiDoubleError),
    #[error("the Roles Anywhere double failed: {0}")]
    RolesAnywhere(#[from] RolesAnywhereDoubleError),
    #[error("the exchange against the doubles failed: {0}")]
    Exchange(#[from] ProcessError),
}

/// Runs the dev stack; returns after one exchange with `--once`, else at Ctrl-C.
pub async fn run(args: &DevArgs) -> Result<(), DevError> {
    let temp;
    let dir: PathBuf = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|source| DevError::Dir {
                path: d.display().to_string(),
                source,
            })?;
            d.clone()
        }
        None => {
            temp = tempfile_dir()?;
            temp.0.clone()
        }
    };

    let issuer = SvidIssuer::from_test_intermediate()?;
    let svids = issue_all(&issuer)?;
    let bundle = pem_certs(pki::ROOT_CA_PEM);
    let workload_api = WorkloadApiDouble::start(dir.join("agent.sock"), svids, bundle).await?;
    let rolesanywhere = RolesAnywhereDouble::start(RolesAnywhereDoubleConfig::default()).await?;
    let ca_bundle = dir.join("roles-anywhere-ca.pem");
    write(&ca_bundle, RolesAnywhereDouble::ca_pem())?;

    let cp_args = CredentialProcessArgs {
        agent: None,
        role: None,
        identity: IdentityArgs {
            workload_api_socket: Some(workload_api.endpoint()),
            spiffe_id: None,
            workload_api_timeout: 10,
            certificate: None,
            private_key: None,
            intermediates: None,
        },
        session: SessionArgs {
            trust_anchor_arn: Some(DEV_TRUST_ANCHOR_ARN.into()),
            profile_arn: Some(DEV_PROFILE_ARN.into()),
            role_arn: Some(DEV_ROLE_ARN_ORDERS.into()),
            region: None,
            endpoint: Some(rolesanywhere.endpoint()),
            ca_bundle: Some(ca_bundle.clone()),
            session_duration: 3600,
            role_session_name: None,
            timeout: 15,
        },
    };
    let creds = process::fetch(&cp_args).await?;
    let session = rolesanywhere.session_for_access_key(&creds.access_key_id);

    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "spiffe-aws-agent".into());
    let command_line = format!(
        "{exe} credential-process --workload-api-socket {} --trust-anchor-arn {DEV_TRUST_ANCHOR_ARN} --profile-arn {DEV_PROFILE_ARN} --role-arn {DEV_ROLE_ARN_ORDERS} --endpoint {} --ca-bundle {}",
        workload_api.endpoint(),
        rolesanywhere.endpoint(),
        ca_bundle.display()
    );
    let aws_config = dir.join("aws-config");
    write(
        &aws_config,
        &format!("[profile orders]\nregion = us-east-1\ncredential_process = {command_line}\n"),
    )?;

    println!(
        "spiffe-aws-agent dev: SPIRE and Roles Anywhere doubles are running on this machine.\n"
    );
    println!(
        "  Workload API double   {}  (SVIDs: {}, {})",
        workload_api.endpoint(),
        pki::ORDERS_SPIFFE_ID,
        pki::REVIEWS_SPIFFE_ID
    );
    println!(
        "  Roles Anywhere double {}  (TLS CA: {})",
        rolesanywhere.endpoint(),
        ca_bundle.display()
    );
    println!();
    println!("Exchanged the orders SVID for credentials (CreateSession verified by the double):");
    println!("  {}", process::render(&creds));
    if let Some(s) = &session {
        println!(
            "  assumed role: {}  (principal tag x509SAN/URI = {})",
            s.assumed_role_arn,
            s.spiffe_id.as_deref().unwrap_or("-")
        );
    }
    println!();
    println!(
        "Try it with any AWS client (the config file below holds the credential_process line):"
    );
    println!("  export AWS_CONFIG_FILE={}", aws_config.display());
    println!("  python3 -c 'import boto3; print(boto3.Session(profile_name=\"orders\").get_credentials().access_key)'");
    println!("  aws configure export-credentials --profile orders");
    println!();
    println!("or paste into ~/.aws/config:");
    println!("  [profile orders]");
    println!("  credential_process = {command_line}");

    if args.once {
        workload_api.shutdown().await;
        rolesanywhere.shutdown().await;
        return Ok(());
    }
    println!(
        "\nRotating the SVIDs every {}s; Ctrl-C stops.",
        args.rotate_every
    );
    let period = Duration::from_secs(args.rotate_every.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {
                match issue_all(&issuer) {
                    Ok(svids) => {
                        workload_api.set_svids(svids);
                        tracing::info!("rotated the SVIDs");
                        println!("rotated the SVIDs");
                    }
                    Err(e) => eprintln!("spiffe-aws-agent dev: rotation failed: {e}"),
                }
            }
        }
    }
    workload_api.shutdown().await;
    rolesanywhere.shutdown().await;
    Ok(())
}

fn issue_all(issuer: &SvidIssuer) -> Result<Vec<SvidEntry>, WorkloadApiDoubleError> {
    Ok(vec![
        issuer.issue(pki::ORDERS_SPIFFE_ID, SVID_TTL)?,
        issuer.issue(pki::REVIEWS_SPIFFE_ID, SVID_TTL)?,
    ])
}

fn pem_certs(pem: &str) -> Vec<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect()
}

fn write(path: &Path, contents: &str) -> Result<(), DevError> {
    std::fs::write(path, contents).map_err(|source| DevError::Dir {
        path: path.display().to_string(),
        source,
    })
}

/// A private temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir, DevError> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let path = base.join(format!(
            "spiffe-aws-agent-dev-{}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&path) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
                return Ok(TempDir(path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(DevError::Dir {
                    path: path.display().to_string(),
                    source,
                })
            }
        }
    }
    Err(DevError::Dir {
        path: base.display().to_string(),
        source: std::io::Error::other("no free temporary directory name"),
    })
}
