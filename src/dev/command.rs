//! `spiffe-aws-agent dev`: the whole flow on one machine.
//!
//! It starts the Workload API double (holding `orders` and `reviews` SVIDs issued from the test
//! intermediate), the verifying Roles Anywhere double and the STS + VPC Lattice doubles, then
//! runs the agent in-process against them with every server on, and prints what a newcomer
//! pastes to try any AWS client. Until Ctrl-C it rotates the SVIDs like a SPIRE agent would;
//! the agent notices and re-exchanges on its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{self, AgentError, AgentPlan, PerCallerPlan, RolePlan};
use crate::cli::DevArgs;
use crate::clock::{Clock, TokioClock};
use crate::credentials::per_caller::DEFAULT_IDLE;
use crate::credentials::refresher::RefreshPolicy;
use crate::credentials::Unavailable;
use crate::dev::aws_services::{AwsServicesConfig, AwsServicesDouble, AwsServicesError};
use crate::dev::pki;
use crate::dev::rolesanywhere::{
    RolesAnywhereDouble, RolesAnywhereDoubleConfig, RolesAnywhereDoubleError, DEV_PROFILE_ARN,
    DEV_ROLE_ARN_ORDERS, DEV_ROLE_ARN_REVIEWS, DEV_TRUST_ANCHOR_ARN,
};
use crate::dev::workload_api::{
    DelegatedIdentityDouble, Registration, SvidEntry, SvidIssuer, WorkloadApiDouble,
    WorkloadApiDoubleError,
};
use crate::dev::{check, try_it};
use crate::identity::delegated::DEFAULT_ATTEST_TIMEOUT;
use crate::identity::SpiffeIdPattern;
use crate::identity::{IdentitySpec, DEFAULT_WORKLOAD_API_TIMEOUT};
use crate::plan::{Location, PlanError};
use crate::rolesanywhere::{Exchange, ExchangeSpec, SpecError};
use crate::serve::{ContainerSpec, CredentialsFileSpec, ServersSpec};

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
    #[error("the AWS services double failed: {0}")]
    AwsServices(#[from] AwsServicesError),
    #[error(transparent)]
    Setting(#[from] PlanError),
    #[error("cannot load the Lattice policies: {0}")]
    LatticePolicies(#[source] crate::dev::aws_services::PolicyError),
    #[error(transparent)]
    Exchange(#[from] SpecError),
    #[error("the agent failed: {0}")]
    Agent(#[from] AgentError),
    #[error("the agent got no credentials: {0}")]
    NoCredentials(#[from] Unavailable),
    #[error("{0} of the checks failed (see above)")]
    ChecksFailed(usize),
}

impl DevError {
    /// 2 for a bad flag (nothing was started), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DevError::Setting(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the dev stack; returns after the first exchange with `--once`, else at Ctrl-C.
pub async fn run(args: &DevArgs) -> Result<(), DevError> {
    // Kept alive until `run` returns; removed then.
    let temp;
    let dir: PathBuf = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|source| DevError::Dir {
                path: d.display().to_string(),
                source,
            })?;
            d.canonicalize().unwrap_or_else(|_| d.clone())
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("spiffe-aws-agent-dev-")
                .tempdir()
                .map_err(|source| DevError::Dir {
                    path: std::env::temp_dir().display().to_string(),
                    source,
                })?;
            temp.path().to_path_buf()
        }
    };
    let listen = |flag, value: &str| {
        crate::plan::parse_listen(value)
            .map_err(|problem| PlanError::new(Location::Flag(flag), problem))
    };
    let imds_addr = listen("--imds", &args.imds)?;
    let container_addr = listen("--container", &args.container)?;

    // The doubles.
    let issuer = SvidIssuer::from_test_intermediate()?;
    let workload_api = WorkloadApiDouble::start(
        dir.join("spire-agent.sock"),
        issue_all(&issuer)?,
        pki::root_bundle_der(),
    )
    .await?;
    let rolesanywhere = RolesAnywhereDouble::start(RolesAnywhereDoubleConfig::default()).await?;
    let mut aws_config = AwsServicesConfig::seed();
    if let Some(path) = &args.lattice_policies {
        aws_config.policies =
            crate::dev::aws_services::load_policies(path).map_err(DevError::LatticePolicies)?;
    }
    let region = aws_config.region.clone();
    let aws = AwsServicesDouble::start(aws_config, rolesanywhere.session_lookup()).await?;
    let ca_bundle = dir.join("roles-anywhere-ca.pem");
    write(&ca_bundle, RolesAnywhereDouble::ca_pem())?;

    if args.per_caller {
        let doubles = Doubles {
            workload_api,
            rolesanywhere,
            aws,
            ca_bundle,
        };
        return per_caller(args, &dir, &issuer, doubles).await;
    }

    // The agent, configured as a user would: a role per SVID.
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let role = |name: &str, arn: &str, spiffe_id: &str| -> Result<RolePlan, DevError> {
        let spec = ExchangeSpec {
            endpoint: Some(rolesanywhere.endpoint()),
            ca_bundle: Some(ca_bundle.clone()),
            ..ExchangeSpec::new(DEV_TRUST_ANCHOR_ARN, DEV_PROFILE_ARN, arn)
        };
        Ok(RolePlan {
            name: name.into(),
            spiffe_id: Some(spiffe_id.into()),
            bound_to: None,
            exchange: Exchange::new(&spec, Arc::clone(&clock))?.into(),
        })
    };
    let agent_socket = dir.join("agent.sock");
    let credentials_file = dir.join("credentials");
    let plan = AgentPlan {
        identity: Some(IdentitySpec::WorkloadApi {
            address: workload_api.endpoint(),
            spiffe_id: None,
            timeout: DEFAULT_WORKLOAD_API_TIMEOUT,
        }),
        roles: vec![
            role("orders", DEV_ROLE_ARN_ORDERS, pki::ORDERS_SPIFFE_ID)?,
            role("reviews", DEV_ROLE_ARN_REVIEWS, pki::REVIEWS_SPIFFE_ID)?,
        ],
        servers: ServersSpec {
            imds: vec![imds_addr],
            imds_roles: Some(vec!["orders".into()]),
            hop_limit: None,
            container: Some(ContainerSpec {
                listen: container_addr,
                token_file: dir.join("container-token"),
            }),
            agent_socket: Some(agent_socket.clone()),
            credentials_files: vec![CredentialsFileSpec {
                role: "orders".into(),
                profile: "default".into(),
                path: Some(credentials_file.clone()),
            }],
            allowed_hosts: Vec::new(),
            admin: None,
        },
        min_remaining: agent::DEFAULT_MIN_REMAINING,
        per_caller: None,
    };
    let check_clock = Arc::clone(&clock);
    let running = agent::start(plan, RefreshPolicy::default(), clock).await?;
    running
        .store
        .wait_ready(&["orders", "reviews"], Duration::from_secs(30))
        .await?;
    let creds = running.store.get("orders")?;

    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "spiffe-aws-agent".into());
    let aws_config = dir.join("aws-config");
    let mut config_text = String::new();
    for name in ["orders", "reviews"] {
        config_text.push_str(&format!(
            "[profile {name}]\nregion = {region}\ncredential_process = {} credential-process --agent {} --role {name}\n",
            try_it::sh(&exe),
            try_it::sh(&agent_socket.display().to_string())
        ));
    }
    write(&aws_config, &config_text)?;
    let trust_anchor_pem = dir.join("trust-anchor.pem");
    write(&trust_anchor_pem, pki::ROOT_CA_PEM)?;

    let imds_url = running
        .imds_addrs
        .first()
        .map(|a| format!("http://{a}/"))
        .unwrap_or_default();
    let container_url = running
        .container_addr
        .map(|a| format!("http://{a}/v1/credentials/orders"))
        .unwrap_or_default();
    let aws_endpoint = aws.endpoint();

    println!("spiffe-aws-agent dev: SPIRE, Roles Anywhere, STS and VPC Lattice doubles and the agent are running.\n");
    println!(
        "  Workload API double    {}  (SVIDs {} and {})",
        workload_api.endpoint(),
        pki::ORDERS_SPIFFE_ID,
        pki::REVIEWS_SPIFFE_ID
    );
    println!(
        "  Roles Anywhere double  {}  (verifies every SigV4-X509 signature)",
        rolesanywhere.endpoint()
    );
    println!("  AWS services double    {aws_endpoint}  (STS GetCallerIdentity; VPC Lattice services billing and rates; region {region})");
    println!();
    println!("The agent exchanged each SVID for credentials; role orders:");
    println!("  {}", crate::serve::process::render(&creds.credentials));
    if let Some(s) = rolesanywhere.session_for_access_key(&creds.credentials.access_key_id) {
        println!(
            "  assumed role: {}  (principal tag x509SAN/URI = {})",
            s.assumed_role_arn,
            s.spiffe_id.as_deref().unwrap_or("-")
        );
    }
    println!();

    if args.once {
        // Lines printed now would be dead when dev exits: try them instead.
        let targets = check::Targets {
            role: "orders".into(),
            spiffe_id: pki::ORDERS_SPIFFE_ID.into(),
            agent_socket: agent_socket.clone(),
            imds: running.imds_addrs.first().copied(),
            container: running.container_addr,
            container_token: dir.join("container-token"),
            credentials_file: credentials_file.clone(),
            workload_api: workload_api.endpoint(),
            trust_anchor_pem: trust_anchor_pem.clone(),
        };
        let by_hand = Exchange::new(
            &ExchangeSpec {
                endpoint: Some(rolesanywhere.endpoint()),
                ca_bundle: Some(ca_bundle.clone()),
                ..ExchangeSpec::new(DEV_TRUST_ANCHOR_ARN, DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS)
            },
            Arc::clone(&check_clock),
        )?;
        let outcomes =
            check::run(&targets, by_hand, &rolesanywhere, Arc::clone(&check_clock)).await;
        println!("Checks (dev --once tries every way out of the agent, then stops):");
        let mut failed = 0;
        for o in &outcomes {
            match &o.result {
                Ok(detail) => println!("  ok    {}: {detail}", o.what),
                Err(why) => {
                    failed += 1;
                    println!("  FAIL  {}: {why}", o.what);
                }
            }
        }
        println!(
            "{} of {} checks passed. Run `dev` without --once to keep the stack up and try each line yourself.",
            outcomes.len() - failed,
            outcomes.len()
        );
        running.shutdown().await;
        aws.shutdown().await;
        workload_api.shutdown().await;
        rolesanywhere.shutdown().await;
        return match failed {
            0 => Ok(()),
            n => Err(DevError::ChecksFailed(n)),
        };
    }

    let facts = try_it::Facts {
        exe: exe.clone(),
        region: region.clone(),
        workload_api: workload_api.endpoint(),
        rolesanywhere_endpoint: rolesanywhere.endpoint(),
        ca_bundle: ca_bundle.clone(),
        trust_anchor_pem,
        trust_anchor_arn: DEV_TRUST_ANCHOR_ARN.into(),
        profile_arn: DEV_PROFILE_ARN.into(),
        roles: vec![
            (
                "orders".into(),
                DEV_ROLE_ARN_ORDERS.into(),
                pki::ORDERS_SPIFFE_ID.into(),
            ),
            (
                "reviews".into(),
                DEV_ROLE_ARN_REVIEWS.into(),
                pki::REVIEWS_SPIFFE_ID.into(),
            ),
        ],
        aws_endpoint,
        imds_url,
        container_url,
        container_token: dir.join("container-token.orders"),
        agent_socket: agent_socket.clone(),
        by_hand_socket: dir.join("by-hand.sock"),
        aws_config,
        credentials_file,
        aws_cli: try_it::find_on_path("aws"),
        python: try_it::python_with_botocore(),
        lattice_script: concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lattice-call.py").into(),
    };
    for line in try_it::lines(&facts) {
        println!("{line}");
    }

    // After the first exchanges, so start-up is not what fails.
    if let Some(n) = args.fail_every {
        rolesanywhere.fail_every(n);
        println!("\nThe Roles Anywhere double fails one CreateSession call in {n} with 500.");
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
                        println!("rotated the SVIDs");
                    }
                    Err(e) => eprintln!("spiffe-aws-agent dev: rotation failed: {e}"),
                }
            }
        }
    }
    running.shutdown().await;
    aws.shutdown().await;
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

fn write(path: &Path, contents: &str) -> Result<(), DevError> {
    std::fs::write(path, contents).map_err(|source| DevError::Dir {
        path: path.display().to_string(),
        source,
    })
}

/// The doubles `dev` starts in either mode.
struct Doubles {
    workload_api: WorkloadApiDouble,
    rolesanywhere: RolesAnywhereDouble,
    aws: AwsServicesDouble,
    ca_bundle: PathBuf,
}

impl Doubles {
    async fn shutdown(self) {
        self.aws.shutdown().await;
        self.workload_api.shutdown().await;
        self.rolesanywhere.shutdown().await;
    }
}

/// The uids `dev --per-caller` registers orders and reviews for when it runs as root.
pub const DEV_ORDERS_UID: u32 = 2101;
/// See [`DEV_ORDERS_UID`].
pub const DEV_REVIEWS_UID: u32 = 2102;
/// The SPIFFE ID the Delegated Identity double gives the agent (the authorized delegate).
const DEV_AGENT_SPIFFE_ID: &str = "spiffe://example.org/spiffe-aws-agent";

/// `dev --per-caller`: the agent socket in per-caller mode, attested by the Delegated
/// Identity double; `dev` calls it as orders and as reviews and prints what each got.
async fn per_caller(
    args: &DevArgs,
    dir: &Path,
    issuer: &SvidIssuer,
    doubles: Doubles,
) -> Result<(), DevError> {
    use std::os::unix::fs::MetadataExt as _;

    // This process's effective uid: the owner of /proc/self.
    let own_uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    let root = own_uid == 0;
    let (orders_uid, reviews_uid) = if root {
        (DEV_ORDERS_UID, Some(DEV_REVIEWS_UID))
    } else {
        (own_uid, None)
    };
    let mut registrations = vec![Registration {
        uid: orders_uid,
        gid: None,
        svid: issuer.issue(pki::ORDERS_SPIFFE_ID, SVID_TTL)?,
    }];
    if let Some(uid) = reviews_uid {
        registrations.push(Registration {
            uid,
            gid: None,
            svid: issuer.issue(pki::REVIEWS_SPIFFE_ID, SVID_TTL)?,
        });
    }
    let spire = DelegatedIdentityDouble::start(
        dir.join("spire-admin.sock"),
        HashMap::from([(own_uid, DEV_AGENT_SPIFFE_ID.to_owned())]),
        vec![DEV_AGENT_SPIFFE_ID.to_owned()],
        registrations,
    )
    .await?;
    if root {
        // Workloads under other uids must reach the socket.
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }

    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let role = |name: &str, arn: &str, spiffe_id: &str| -> Result<RolePlan, DevError> {
        let spec = ExchangeSpec {
            endpoint: Some(doubles.rolesanywhere.endpoint()),
            ca_bundle: Some(doubles.ca_bundle.clone()),
            ..ExchangeSpec::new(DEV_TRUST_ANCHOR_ARN, DEV_PROFILE_ARN, arn)
        };
        Ok(RolePlan {
            name: name.into(),
            spiffe_id: Some(spiffe_id.into()),
            bound_to: Some(SpiffeIdPattern::Exact(spiffe_id.into())),
            exchange: Exchange::new(&spec, Arc::clone(&clock))?.into(),
        })
    };
    let agent_socket = dir.join("agent.sock");
    let plan = AgentPlan {
        identity: None,
        roles: vec![
            role("orders", DEV_ROLE_ARN_ORDERS, pki::ORDERS_SPIFFE_ID)?,
            role("reviews", DEV_ROLE_ARN_REVIEWS, pki::REVIEWS_SPIFFE_ID)?,
        ],
        servers: ServersSpec {
            agent_socket: Some(agent_socket.clone()),
            ..ServersSpec::default()
        },
        min_remaining: agent::DEFAULT_MIN_REMAINING,
        per_caller: Some(PerCallerPlan {
            admin_socket: spire.endpoint(),
            idle: DEFAULT_IDLE,
            attest_timeout: DEFAULT_ATTEST_TIMEOUT,
        }),
    };
    let running = agent::start(plan, RefreshPolicy::default(), clock).await?;

    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "spiffe-aws-agent".into());
    let as_uid = |uid: u32| {
        if root {
            format!("setpriv --reuid={uid} --regid={uid} --clear-groups ")
        } else {
            String::new()
        }
    };
    let aws_config = dir.join("aws-config");
    let mut config_text = String::new();
    let mut callers = vec![("orders", orders_uid)];
    if let Some(uid) = reviews_uid {
        callers.push(("reviews", uid));
    }
    for (name, uid) in &callers {
        config_text.push_str(&format!(
            "[profile {name}]\nregion = us-east-1\ncredential_process = {}{exe} credential-process --agent {}\n",
            as_uid(*uid),
            agent_socket.display()
        ));
    }
    write(&aws_config, &config_text)?;

    println!("spiffe-aws-agent dev --per-caller: one agent socket; each process gets the roles bound to its own SVID.\n");
    println!(
        "  SPIRE admin socket double  {}  (Delegated Identity API; the agent, uid {own_uid}, is its authorized delegate)",
        spire.endpoint()
    );
    for (name, uid) in &callers {
        println!("    uid {uid} is registered as spiffe://example.org/service/{name}");
    }
    println!(
        "  Roles Anywhere double      {}",
        doubles.rolesanywhere.endpoint()
    );
    println!("  agent socket               {}", agent_socket.display());
    println!();
    for (name, uid) in &callers {
        let out = call_as(&exe, &agent_socket, *uid, root, None).await;
        match out {
            Ok(json) => {
                let key = serde_json::from_str::<serde_json::Value>(&json)
                    .ok()
                    .and_then(|v| v["AccessKeyId"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let tag = doubles
                    .rolesanywhere
                    .session_for_access_key(&key)
                    .and_then(|s| s.spiffe_id)
                    .unwrap_or_else(|| "-".into());
                println!("{name} (uid {uid}) got its own credentials: AccessKeyId {key}, session tagged x509SAN/URI = {tag}");
            }
            Err(line) => println!("{name} (uid {uid}): {line}"),
        }
    }
    if let Some(uid) = reviews_uid {
        match call_as(&exe, &agent_socket, uid, root, Some("orders")).await {
            Ok(_) => println!("reviews asking for role orders: served (unexpected)"),
            Err(line) => println!("reviews asking for role orders is refused: {line}"),
        }
    } else {
        println!(
            "(reviews needs a second uid: run dev --per-caller as root to see both workloads.)"
        );
    }
    println!();
    let python = try_it::python_with_botocore();
    let lattice_script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lattice-call.py");
    let config_env = format!("AWS_CONFIG_FILE={}", aws_config.display());
    let aws_endpoint = doubles.aws.endpoint();
    println!("Try it:");
    for (name, uid) in &callers {
        println!(
            "  $ {}{exe} credential-process --agent {}",
            as_uid(*uid),
            agent_socket.display()
        );
        let verdict = if *name == "orders" {
            "200: allowed"
        } else {
            "403: denied"
        };
        if let Some(python) = &python {
            println!("  $ {config_env} {python} {lattice_script} --profile {name} --service billing --endpoint {aws_endpoint}   # {verdict}");
        }
    }

    if !args.once {
        println!("\nCtrl-C stops.");
        let _ = tokio::signal::ctrl_c().await;
    }
    running.shutdown().await;
    spire.shutdown().await;
    doubles.shutdown().await;
    Ok(())
}

/// `credential-process --agent` as `uid` (when `root`, else as this user): the JSON, or the
/// refusal line.
async fn call_as(
    exe: &str,
    socket: &Path,
    uid: u32,
    root: bool,
    role: Option<&str>,
) -> Result<String, String> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("credential-process").arg("--agent").arg(socket);
    if let Some(role) = role {
        cmd.args(["--role", role]);
    }
    if root {
        cmd.uid(uid).gid(uid);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
