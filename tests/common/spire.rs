//! A real SPIRE deployment (spiffe/spire v1.13.3, built by `scripts/build-peers.sh`) in a temp
//! dir: a server (sqlite datastore, `join_token` node attestation, in-memory CA keys, the
//! server API on a port it picks itself) and an agent (`unix` workload attestor, Workload API
//! socket, admin socket with `authorized_delegates`), plus the Roles Anywhere double trusting the
//! SPIRE server's bundle and the AWS services doubles, for tests that run `spiffe-aws-agent` as a
//! process against them. Every process is killed when the fixture drops.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spiffe_aws_agent::dev::aws_services::{AwsServicesConfig, AwsServicesDouble};
use spiffe_aws_agent::dev::rolesanywhere::{
    RolesAnywhereDouble, RolesAnywhereDoubleConfig, TrustAnchor, DEV_TRUST_ANCHOR_ARN,
};

use super::peers::{bin, Guard};

pub const TRUST_DOMAIN: &str = "example.org";
/// The SPIFFE ID the join token gives the SPIRE agent (an alias entry); workload entries hang
/// under it.
pub const NODE_ID: &str = "spiffe://example.org/node/test";
/// Listed in the SPIRE agent's `authorized_delegates`, for the Delegated Identity API.
pub const DELEGATE_ID: &str = "spiffe://example.org/spiffe-aws-agent";
/// The server's `jwt_issuer`: the `iss` of its JWT-SVIDs, the URL an OIDC discovery provider
/// would serve and IAM would register as an OIDC identity provider.
pub const JWT_ISSUER: &str = "https://oidc-discovery.example.org";
/// How long the fixture waits for SPIRE to come up or to act (generous: CI machines are slow).
pub const SPIRE_WAIT: Duration = Duration::from_secs(60);

/// What to configure.
#[derive(Clone, Debug)]
pub struct SpireOptions {
    /// The server's `default_x509_svid_ttl` (the agent rotates an SVID at about half of it).
    pub default_x509_svid_ttl: Duration,
    /// The agent's `workload_x509_svid_key_type`: `ec-p256` or `rsa-2048`.
    pub workload_key_type: &'static str,
}

impl Default for SpireOptions {
    fn default() -> Self {
        SpireOptions {
            default_x509_svid_ttl: Duration::from_secs(3600),
            workload_key_type: "ec-p256",
        }
    }
}

/// A running SPIRE server and agent.
pub struct Spire {
    // Fields drop in order: the processes die before their files go with `dir`.
    agent: Guard,
    server: Guard,
    pub dir: tempfile::TempDir,
    pub server_socket: PathBuf,
    /// The agent's Workload API socket.
    pub workload_socket: PathBuf,
    /// The agent's admin socket (Delegated Identity API).
    pub admin_socket: PathBuf,
    agent_conf: PathBuf,
    pub server_log: PathBuf,
    pub agent_log: PathBuf,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn hcl_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn server_config(spire: &Spire, d: &Path, port: u16, svid_ttl: Duration) -> String {
    format!(
        r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{server_socket}"
    trust_domain = "{TRUST_DOMAIN}"
    data_dir = "{data}"
    log_level = "DEBUG"
    log_format = "json"
    ca_key_type = "ec-p256"
    ca_ttl = "24h"
    agent_ttl = "1h"
    default_x509_svid_ttl = "{svid_ttl}"
    jwt_issuer = "{JWT_ISSUER}"
}}
plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{data}/datastore.sqlite3"
        }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
}}
"#,
        server_socket = spire.server_socket.display(),
        data = d.join("server-data").display(),
        svid_ttl = hcl_duration(svid_ttl),
    )
}

impl Spire {
    /// Starts the server, joins an agent with a fresh join token, and waits until both are
    /// healthy.
    pub async fn start(options: SpireOptions) -> Spire {
        let dir = tempfile::Builder::new()
            .prefix("spire-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path().to_path_buf();
        // Workloads under other uids must reach the Workload API socket and their own dirs.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for sub in ["server-data", "agent-data", "private", "admin"] {
            mkdir(&d.join(sub), 0o700);
        }
        mkdir(&d.join("public"), 0o755);
        let server_socket = d.join("private/server.sock");
        let workload_socket = d.join("public/api.sock");
        let admin_socket = d.join("admin/admin.sock");
        let server_conf = d.join("server.conf");
        let server_log = d.join("spire-server.log");
        let mut spire = Spire {
            agent_conf: d.join("agent.conf"),
            agent_log: d.join("spire-agent.log"),
            dir,
            agent: Guard(None),
            server: Guard(None),
            server_socket,
            workload_socket,
            admin_socket,
            server_log,
        };
        // SPIRE takes `bind_port = 0` for "unset" (8081), so the port is picked here; another
        // process may take it before the server binds, hence the retries.
        let mut port = 0;
        for attempt in 1..=5 {
            spire.server.kill();
            port = free_port();
            write(
                &server_conf,
                &server_config(&spire, &d, port, options.default_x509_svid_ttl),
            );
            spire.server = Guard::new(
                Command::new(bin("spire-server"))
                    .arg("run")
                    .arg("-config")
                    .arg(&server_conf)
                    .stdin(Stdio::null())
                    .stdout(std::fs::File::create(&spire.server_log).expect("log"))
                    .stderr(std::fs::File::create(d.join("spire-server.stderr")).expect("log"))
                    .spawn()
                    .expect("start spire-server"),
            );
            let started = match spire.wait_healthy("spire-server").await {
                Ok(()) => spire.listens_on(port).await,
                Err(e) => Err(e),
            };
            match started {
                Ok(()) => break,
                Err(e) if attempt < 5 => eprintln!("spire-server on port {port}: {e}; retrying"),
                Err(e) => panic!("{e}"),
            }
        }

        let token = spire
            .server_cli(&["token", "generate", "-spiffeID", NODE_ID, "-ttl", "600"])
            .await;
        let token = token
            .lines()
            .find_map(|l| l.strip_prefix("Token: "))
            .unwrap_or_else(|| panic!("no token in {token:?}"))
            .trim()
            .to_owned();
        let bundle = spire.bundle_pem().await;
        let bundle_path = d.join("bundle.pem");
        write(&bundle_path, &bundle);
        write(
            &spire.agent_conf,
            &format!(
                r#"agent {{
    data_dir = "{data}"
    log_level = "DEBUG"
    log_format = "json"
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{workload_socket}"
    admin_socket_path = "{admin_socket}"
    authorized_delegates = ["{DELEGATE_ID}"]
    trust_bundle_path = "{bundle_path}"
    trust_domain = "{TRUST_DOMAIN}"
    workload_x509_svid_key_type = "{key_type}"
}}
plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "disk" {{
        plugin_data {{
            directory = "{data}"
        }}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
"#,
                data = d.join("agent-data").display(),
                workload_socket = spire.workload_socket.display(),
                admin_socket = spire.admin_socket.display(),
                bundle_path = bundle_path.display(),
                key_type = options.workload_key_type,
            ),
        );
        spire.start_agent(Some(&token)).await;
        spire
    }

    /// Starts `spire-agent` (with `join_token` the first time; afterwards it re-attests with
    /// the SVID kept in its data dir) and waits until it is healthy.
    pub async fn start_agent(&mut self, join_token: Option<&str>) {
        assert!(self.agent.0.is_none(), "the SPIRE agent already runs");
        let mut cmd = Command::new(bin("spire-agent"));
        cmd.arg("run").arg("-config").arg(&self.agent_conf);
        if let Some(token) = join_token {
            cmd.arg("-joinToken").arg(token);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.agent_log)
            .expect("agent log");
        self.agent = Guard::new(
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start spire-agent"),
        );
        if let Err(e) = self.wait_healthy("spire-agent").await {
            panic!("{e}");
        }
        // The admin socket (Delegated Identity API) is there for per-caller mode.
        let deadline = Instant::now() + SPIRE_WAIT;
        while !self.admin_socket.exists() {
            assert!(
                Instant::now() < deadline,
                "no admin socket at {}:\n{}",
                self.admin_socket.display(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lets `uid`/`gid` (the delegate: an agent in per-caller mode running as its own user)
    /// reach the admin socket. SPIRE creates it with mode 0770 (root:root here), so both the
    /// directory (still 0700) and the socket become the delegate's; the SPIRE agent, as root,
    /// keeps its access, and other uids still cannot reach the socket.
    pub fn give_admin_socket_to(&self, uid: u32, gid: u32) {
        let dir = self.admin_socket.parent().expect("admin socket dir");
        for path in [dir, self.admin_socket.as_path()] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }

    /// Kills `spire-agent` (SIGKILL: no graceful shutdown).
    pub fn kill_agent(&mut self) {
        self.agent.kill();
    }

    /// `unix:///…` of the Workload API.
    pub fn workload_endpoint(&self) -> String {
        format!("unix://{}", self.workload_socket.display())
    }

    /// Runs `spire-server ARGS -socketPath …` and returns stdout; panics on failure.
    pub async fn server_cli(&self, args: &[&str]) -> String {
        let out = self.server_cli_output(args).await;
        assert!(
            out.status.success(),
            "spire-server {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn server_cli_output(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(bin("spire-server"))
            .args(args)
            .arg("-socketPath")
            .arg(&self.server_socket)
            .output()
            .await
            .expect("run spire-server")
    }

    /// The server's trust bundle (its CA certificates), PEM.
    pub async fn bundle_pem(&self) -> String {
        let pem = self.server_cli(&["bundle", "show"]).await;
        assert!(pem.contains("BEGIN CERTIFICATE"), "bundle: {pem}");
        pem
    }

    /// The trust domain's bundle in SPIFFE format (a JWKS with `x509-svid` and `jwt-svid`
    /// keys): what the OIDC discovery provider publishes the `jwt-svid` keys of.
    pub async fn bundle_jwks(&self) -> String {
        let jwks = self
            .server_cli(&["bundle", "show", "-format", "spiffe"])
            .await;
        assert!(
            jwks.contains("jwt-svid"),
            "no JWT key in the bundle: {jwks}"
        );
        jwks
    }

    /// `entry create` for `spiffe_id`, attested by `unix:uid:UID`; returns the entry id.
    pub async fn create_entry(&self, spiffe_id: &str, uid: u32) -> String {
        let selector = format!("unix:uid:{uid}");
        let out = self
            .server_cli(&[
                "entry",
                "create",
                "-parentID",
                NODE_ID,
                "-spiffeID",
                spiffe_id,
                "-selector",
                &selector,
                "-output",
                "json",
            ])
            .await;
        let json: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let result = &json["results"][0];
        assert!(
            result["status"]["code"].as_i64().unwrap_or(0) == 0,
            "entry create: {out}"
        );
        result["entry"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no entry id in {out}"))
            .to_owned()
    }

    /// `entry delete -entryID ID`.
    pub async fn delete_entry(&self, entry_id: &str) {
        self.server_cli(&["entry", "delete", "-entryID", entry_id])
            .await;
    }

    /// Both logs, for assertion messages.
    pub fn logs(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- spire-server (last lines)\n{}\n--- spire-agent (last lines)\n{}",
            tail(&self.server_log),
            tail(&self.agent_log)
        )
    }

    /// Whether the server logged its TCP listener on `port` (it exits if the bind failed).
    async fn listens_on(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + SPIRE_WAIT;
        let wanted = format!("127.0.0.1:{port}");
        loop {
            let text = std::fs::read_to_string(&self.server_log).unwrap_or_default();
            let listening = text.lines().any(|line| {
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|j| {
                    j["msg"] == "Starting Server APIs" && j["address"] == wanted.as_str()
                })
            });
            if listening {
                return Ok(());
            }
            if let Some(status) = self.server.exited() {
                self.server.0 = None;
                return Err(format!("spire-server exited ({status}):\n{}", self.logs()));
            }
            if Instant::now() > deadline {
                return Err(format!("spire-server never listened on {wanted}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_healthy(&mut self, which: &str) -> Result<(), String> {
        let deadline = Instant::now() + SPIRE_WAIT;
        loop {
            let socket = if which == "spire-server" {
                &self.server_socket
            } else {
                &self.workload_socket
            };
            let ok = tokio::process::Command::new(bin(which))
                .arg("healthcheck")
                .arg("-socketPath")
                .arg(socket)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            let guard = if which == "spire-server" {
                &mut self.server
            } else {
                &mut self.agent
            };
            if let Some(status) = guard.exited() {
                guard.0 = None;
                return Err(format!("{which} exited ({status}):\n{}", self.logs()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{which} not healthy after {SPIRE_WAIT:?}:\n{}",
                    self.logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// SPIRE plus the doubles that stand for AWS: Roles Anywhere trusting the SPIRE server's CA
/// (the way an operator makes the SPIRE bundle a trust anchor), STS and VPC Lattice.
pub struct SpireStack {
    pub aws: AwsServicesDouble,
    pub rolesanywhere: RolesAnywhereDouble,
    /// The Roles Anywhere double's TLS CA, for `--ca-bundle`.
    pub ca_bundle: PathBuf,
    pub spire: Spire,
}

impl SpireStack {
    pub async fn start(options: SpireOptions) -> SpireStack {
        Self::start_with(options, RolesAnywhereDoubleConfig::default()).await
    }

    /// `config`'s trust anchors are replaced by one: the SPIRE server's bundle under
    /// [`DEV_TRUST_ANCHOR_ARN`].
    pub async fn start_with(
        options: SpireOptions,
        mut config: RolesAnywhereDoubleConfig,
    ) -> SpireStack {
        let spire = Spire::start(options).await;
        config.trust_anchors = vec![TrustAnchor {
            arn: DEV_TRUST_ANCHOR_ARN.to_owned(),
            ca_certs_pem: spire.bundle_pem().await,
            enabled: true,
        }];
        let rolesanywhere = RolesAnywhereDouble::start(config)
            .await
            .expect("Roles Anywhere double");
        let aws =
            AwsServicesDouble::start(AwsServicesConfig::seed(), rolesanywhere.session_lookup())
                .await
                .expect("AWS services double");
        let ca_bundle = spire.dir.path().join("roles-anywhere-tls-ca.pem");
        write(&ca_bundle, RolesAnywhereDouble::ca_pem());
        SpireStack {
            aws,
            rolesanywhere,
            ca_bundle,
            spire,
        }
    }

    /// A directory for one workload, owned by `uid`/`gid`.
    pub fn workload_dir(&self, name: &str, uid: u32, gid: u32) -> PathBuf {
        let dir = self.spire.dir.path().join(name);
        mkdir(&dir, 0o700);
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown workload dir");
        dir
    }
}

/// The test process's uid and gid.
pub fn own_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the process's effective uid/gid.
    let meta = std::fs::metadata("/proc/self").expect("/proc/self");
    (meta.uid(), meta.gid())
}
