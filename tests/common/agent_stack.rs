//! The agent binary (`spiffe-aws-agent run --config …`) with every server on, against the
//! Workload API, Roles Anywhere and AWS service doubles running in the test process.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use spiffe_aws_agent::dev::aws_services::{AwsServicesConfig, AwsServicesDouble};
use spiffe_aws_agent::dev::rolesanywhere::{
    RolesAnywhereDoubleConfig, DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS, DEV_ROLE_ARN_REVIEWS,
    DEV_TRUST_ANCHOR_ARN,
};
use spiffe_aws_agent::dev::workload_api::SvidEntry;

use super::stack::{svid_from_files, Stack};

pub const ORDERS: &str = "spiffe://example.org/service/orders";
pub const REVIEWS: &str = "spiffe://example.org/service/reviews";

/// What to start.
pub struct AgentOptions {
    pub svids: Vec<SvidEntry>,
    /// (role name, role ARN, SPIFFE ID selecting the SVID)
    pub roles: Vec<(String, String, Option<String>)>,
    pub rolesanywhere: RolesAnywhereDoubleConfig,
    pub min_remaining_seconds: Option<u64>,
}

impl AgentOptions {
    /// The seed: orders and reviews SVIDs, a role for each.
    pub fn seed() -> Self {
        AgentOptions {
            svids: vec![
                svid_from_files(ORDERS, "orders-p256.pem", "orders-p256.key", true),
                svid_from_files(REVIEWS, "reviews-p256.pem", "reviews-p256.key", true),
            ],
            roles: vec![
                (
                    "orders".into(),
                    DEV_ROLE_ARN_ORDERS.into(),
                    Some(ORDERS.into()),
                ),
                (
                    "reviews".into(),
                    DEV_ROLE_ARN_REVIEWS.into(),
                    Some(REVIEWS.into()),
                ),
            ],
            rolesanywhere: RolesAnywhereDoubleConfig::default(),
            min_remaining_seconds: None,
        }
    }
}

/// A running agent process and the doubles it talks to. Derefs to the [`AgentProcess`].
pub struct AgentStack {
    pub stack: Stack,
    pub aws: AwsServicesDouble,
    pub process: AgentProcess,
}

impl std::ops::Deref for AgentStack {
    type Target = AgentProcess;
    fn deref(&self) -> &AgentProcess {
        &self.process
    }
}

/// Waits for `marker` in the agent's log and returns `http://host:port` from the URL after it.
pub async fn wait_for_log_value(log: &std::path::Path, marker: &str, _end: char) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(i) = text.find(marker) {
            let rest = &text[i + marker.len()..];
            if let Some(url) = rest.strip_prefix("http://") {
                let hostport: String = url
                    .chars()
                    .take_while(|c| *c != '/' && !c.is_whitespace())
                    .collect();
                return format!("http://{hostport}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent never logged {marker}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl AgentStack {
    pub async fn start(options: AgentOptions) -> AgentStack {
        let stack = Stack::start_with(options.svids, options.rolesanywhere).await;
        let aws = AwsServicesDouble::start(
            AwsServicesConfig::seed(),
            stack.rolesanywhere.session_lookup(),
        )
        .await
        .expect("AWS services double");
        let process = AgentProcess::spawn(AgentSpec {
            dir: stack.dir.path().to_path_buf(),
            workload_api: stack.workload_api.endpoint(),
            endpoint: stack.rolesanywhere.endpoint(),
            ca_bundle: stack.ca_bundle.clone(),
            roles: options.roles.clone(),
            min_remaining_seconds: options.min_remaining_seconds,
            uid_gid: None,
        })
        .await;
        let agent = AgentStack {
            stack,
            aws,
            process,
        };
        for (name, _, _) in &options.roles {
            agent.wait_for_role(name).await;
        }
        agent
    }
}

/// How to start `spiffe-aws-agent run`: every server on, one `[[role]]` per role.
pub struct AgentSpec {
    /// Where the config, sockets, token and log go (must exist; writable by `uid_gid`).
    pub dir: PathBuf,
    /// `unix:///…` of the Workload API (the double, or a real SPIRE agent).
    pub workload_api: String,
    /// The Roles Anywhere endpoint and the CA bundle its TLS certificate chains to.
    pub endpoint: String,
    pub ca_bundle: PathBuf,
    /// (role name, role ARN, SPIFFE ID selecting the SVID)
    pub roles: Vec<(String, String, Option<String>)>,
    pub min_remaining_seconds: Option<u64>,
    /// Run the agent as this (uid, gid) instead of the test's own (needs root).
    pub uid_gid: Option<(u32, u32)>,
}

/// A running `spiffe-aws-agent run` process; killed on drop.
pub struct AgentProcess {
    child: Child,
    pub dir: PathBuf,
    pub imds_url: String,
    pub container_base: String,
    pub container_token_file: PathBuf,
    pub agent_socket: PathBuf,
    /// The shared credentials file the agent keeps (profile `default`, first role).
    pub credentials_file: PathBuf,
    /// An AWS config file with one `credential_process … --agent` profile per role.
    pub aws_config: PathBuf,
    pub log: PathBuf,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProcess {
    /// Writes the config and starts the agent; returns once it listens (not once it serves).
    pub async fn spawn(spec: AgentSpec) -> AgentProcess {
        let mut toml = format!(
            "workload_api_socket = \"{}\"\nendpoint = \"{}\"\nca_bundle = \"{}\"\n",
            spec.workload_api,
            spec.endpoint,
            spec.ca_bundle.display()
        );
        if let Some(m) = spec.min_remaining_seconds {
            toml.push_str(&format!("min_remaining_seconds = {m}\n"));
        }
        for (name, arn, spiffe_id) in &spec.roles {
            toml.push_str(&format!(
                "[[role]]\nname = \"{name}\"\ntrust_anchor_arn = \"{DEV_TRUST_ANCHOR_ARN}\"\nprofile_arn = \"{DEV_PROFILE_ARN}\"\nrole_arn = \"{arn}\"\n"
            ));
            if let Some(id) = spiffe_id {
                toml.push_str(&format!("spiffe_id = \"{id}\"\n"));
            }
        }
        let names: Vec<String> = spec.roles.iter().map(|r| r.0.clone()).collect();
        Self::launch(spec.dir, toml, &names, spec.uid_gid).await
    }

    /// Starts the agent with `toml` (the top-level keys and the `[[role]]`s of `roles`) plus
    /// every server; returns once it listens (not once it serves).
    pub async fn launch(
        dir: PathBuf,
        mut toml: String,
        roles: &[String],
        uid_gid: Option<(u32, u32)>,
    ) -> AgentProcess {
        let agent_socket = dir.join("spiffe-aws-agent.sock");
        let container_token_file = dir.join("container-token");
        let credentials_file = dir.join("credentials");
        let first = roles[0].clone();
        toml.push_str(&format!(
            "[imds]\nlisten = \"127.0.0.1:0\"\n[container]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[agent_socket]\npath = \"{}\"\n[[credentials_file]]\nrole = \"{first}\"\nprofile = \"default\"\npath = \"{}\"\n",
            container_token_file.display(),
            agent_socket.display(),
            credentials_file.display()
        ));
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, toml).expect("write agent.toml");

        let mut aws_config = String::new();
        for name in roles {
            aws_config.push_str(&format!(
                "[profile {name}]\nregion = us-east-1\ncredential_process = {} credential-process --agent {} --role {name}\n",
                env!("CARGO_BIN_EXE_spiffe-aws-agent"),
                agent_socket.display()
            ));
        }
        let aws_config_path = dir.join("aws-config");
        std::fs::write(&aws_config_path, aws_config).expect("write aws config");

        let log = dir.join("agent.log");
        let mut program = PathBuf::from(env!("CARGO_BIN_EXE_spiffe-aws-agent"));
        if uid_gid.is_some() {
            // The build tree may sit where the other uid cannot reach (/root is 0700): run a
            // link (or copy) of the binary from the workload's own directory.
            let local = dir.join("spiffe-aws-agent");
            if !local.exists() {
                std::fs::hard_link(&program, &local)
                    .or_else(|_| std::fs::copy(&program, &local).map(|_| ()))
                    .expect("place the agent binary in the workload dir");
            }
            program = local;
        }
        let mut cmd = Command::new(&program);
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "spiffe_aws_agent=debug")
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some((uid, gid)) = uid_gid {
            use std::os::unix::process::CommandExt as _;
            cmd.uid(uid).gid(gid).env("HOME", &dir);
        }
        let child = cmd.spawn().expect("start the agent");
        let mut process = AgentProcess {
            child,
            dir,
            imds_url: String::new(),
            container_base: String::new(),
            container_token_file,
            agent_socket,
            credentials_file,
            aws_config: aws_config_path,
            log,
        };
        // The agent binds port 0 and logs where it listens: no port can be taken in between.
        process.imds_url =
            wait_for_log_value(&process.log, "AWS_EC2_METADATA_SERVICE_ENDPOINT=", '/').await;
        process.container_base =
            wait_for_log_value(&process.log, "AWS_CONTAINER_CREDENTIALS_FULL_URI=", '/').await;
        process
    }

    /// Waits until the agent serves `role` on its socket.
    pub async fn wait_for_role(&self, role: &str) {
        self.wait_for_role_within(role, Duration::from_secs(20))
            .await;
    }

    /// Waits up to `limit` until the agent serves `role` on its socket; returns the output.
    pub async fn wait_for_role_within(&self, role: &str, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.credential_process(role).await;
            if out.status.success() {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "the agent never served {role}: {}\nlog:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `credential-process --agent … --role ROLE`, as a process.
    pub async fn credential_process(&self, role: &str) -> Output {
        let socket = self.agent_socket.clone();
        let role = role.to_owned();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
                .arg("credential-process")
                .arg("--agent")
                .arg(&socket)
                .arg("--role")
                .arg(&role)
                .output()
                .expect("run credential-process")
        })
        .await
        .expect("join")
    }

    /// The agent's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Environment for a client that must find credentials through `via` only.
    pub fn client_env(&self, via: Via) -> Vec<(String, String)> {
        let dir = &self.dir;
        let mut env = vec![
            (
                "AWS_CONFIG_FILE".to_string(),
                dir.join("no-config").display().to_string(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE".to_string(),
                dir.join("no-credentials").display().to_string(),
            ),
            ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
            ("AWS_REGION".to_string(), "us-east-1".to_string()),
            ("AWS_DEFAULT_REGION".to_string(), "us-east-1".to_string()),
        ];
        let mut set = |k: &str, v: String| {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v));
        };
        match via {
            Via::Imds => {
                set("AWS_EC2_METADATA_DISABLED", "false".into());
                set(
                    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                    format!("{}/", self.imds_url),
                );
            }
            Via::Container(role) => {
                set(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    format!("{}/v1/credentials/{role}", self.container_base),
                );
                // Each role has its own token: `<token_file>.<role>`.
                set(
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    format!("{}.{role}", self.container_token_file.display()),
                );
            }
            Via::CredentialProcess(role) => {
                set("AWS_CONFIG_FILE", self.aws_config.display().to_string());
                set("AWS_PROFILE", role.to_string());
            }
            Via::CredentialsFile => {
                set(
                    "AWS_SHARED_CREDENTIALS_FILE",
                    self.credentials_file.display().to_string(),
                );
            }
        }
        env
    }
}

/// How a client finds its credentials.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    Imds,
    Container(&'static str),
    CredentialProcess(&'static str),
    CredentialsFile,
}
