//! The admin listener (`/healthz`, `/readyz`, `/metrics`), `--log-format json` and systemd
//! notifications, with `spiffe-aws-agent run` as a process against the doubles: healthy,
//! degraded (Roles Anywhere failing while credentials are still valid), unready (no
//! credentials yet, identity withdrawn) and per-caller mode (SPIRE's Delegated Identity API).
//! The metrics text is parsed by the Prometheus project's Python parser.

mod common;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::agent_stack::{wait_for_log_value, ORDERS, REVIEWS};
use common::stack::{svid_from_files, Stack};
use spiffe_aws_agent::dev::rolesanywhere::{
    Fault, RolesAnywhereDoubleConfig, DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS, DEV_ROLE_ARN_REVIEWS,
    DEV_TRUST_ANCHOR_ARN,
};
use spiffe_aws_agent::dev::workload_api::{DelegatedIdentityDouble, SvidIssuer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A running agent process; killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
    /// `host:port` of the admin listener.
    admin: String,
    imds: Option<String>,
    agent_socket: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// `run --config` with `config` (written to `dir`), plus `args` and `env`.
    async fn start(dir: &Path, config: &str, args: &[&str], env: &[(&str, String)]) -> Agent {
        let path = dir.join("agent.toml");
        std::fs::write(&path, config).unwrap();
        let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        argv.extend(["run".into(), "--config".into(), path.display().to_string()]);
        Agent::spawn(dir, &argv, env, config.contains("[imds]")).await
    }

    /// The agent with `args`; returns once the admin listener (and IMDS, with `imds`)
    /// listens.
    async fn spawn(dir: &Path, args: &[String], env: &[(&str, String)], imds: bool) -> Agent {
        let log = dir.join("agent.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"));
        cmd.args(args)
            .env("RUST_LOG", "spiffe_aws_agent=debug")
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("start the agent");
        let mut agent = Agent {
            child,
            log,
            admin: String::new(),
            imds: None,
            agent_socket: dir.join("spiffe-aws-agent.sock"),
        };
        agent.admin = wait_for_log_value(&agent.log, "admin listener: ", '/')
            .await
            .trim_start_matches("http://")
            .to_owned();
        if imds {
            agent.imds = Some(
                wait_for_log_value(&agent.log, "AWS_EC2_METADATA_SERVICE_ENDPOINT=", '/')
                    .await
                    .trim_start_matches("http://")
                    .to_owned(),
            );
        }
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.admin, path, &[]).await
    }

    /// Polls `path` until `done(status, body)`, at most 20 s; returns the last answer.
    async fn wait_for(&self, path: &str, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(path).await;
            if done(status, &body) {
                return (status, body);
            }
            assert!(
                Instant::now() < deadline,
                "{path} never got there; last: {status} {body}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The samples of `/metrics`, as parsed by the Prometheus Python parser.
    async fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        parse_metrics(body).await
    }
}

/// A raw `GET` (HTTP/1.1, `Connection: close`) with `Host` naming the listener unless
/// `headers` give one; returns the status and the body.
async fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Samples: (name, labels) → value.
struct Metrics(Vec<(String, HashMap<String, String>, f64)>);

impl Metrics {
    /// The value of the sample `name` whose labels include `labels`; 0 when absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map_or(0.0, |(_, _, v)| *v)
    }
}

async fn parse_metrics(text: String) -> Metrics {
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = Command::new(common::python())
            .arg(common::root().join("scripts/parse-metrics.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the parser");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (out, text)
    })
    .await
    .unwrap();
    let (out, text) = out;
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let labels = v["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            (
                v["name"].as_str().unwrap().to_owned(),
                labels,
                v["value"].as_f64().unwrap(),
            )
        })
        .collect();
    Metrics(samples)
}

/// The config of a host-mode agent with a role per `(name, ARN, SPIFFE ID)`, the IMDS
/// endpoint, the agent socket and the admin listener on loopback ports chosen by the kernel.
fn host_config(stack: &Stack, dir: &Path, roles: &[(&str, &str, &str)]) -> String {
    let mut toml = format!(
        "workload_api_socket = \"{}\"\nendpoint = \"{}\"\nca_bundle = \"{}\"\n",
        stack.workload_api.endpoint(),
        stack.rolesanywhere.endpoint(),
        stack.ca_bundle.display()
    );
    for (name, arn, id) in roles {
        toml.push_str(&format!(
            "[[role]]\nname = \"{name}\"\ntrust_anchor_arn = \"{DEV_TRUST_ANCHOR_ARN}\"\nprofile_arn = \"{DEV_PROFILE_ARN}\"\nrole_arn = \"{arn}\"\nspiffe_id = \"{id}\"\n"
        ));
    }
    toml.push_str(&format!(
        "[imds]\nlisten = \"127.0.0.1:0\"\n[agent_socket]\npath = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("spiffe-aws-agent.sock").display()
    ));
    toml
}

/// `credential-process --agent` for `role`: the secret access key and session token it got.
async fn secrets_of(agent: &Agent, role: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .arg("credential-process")
        .arg("--agent")
        .arg(&agent.agent_socket)
        .arg("--role")
        .arg(role)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        json["SecretAccessKey"].as_str().unwrap().to_owned(),
        json["SessionToken"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_then_degraded_with_metrics_that_move_and_json_logs_without_secrets() {
    let stack = Stack::start(vec![
        svid_from_files(ORDERS, "orders-p256.pem", "orders-p256.key", true),
        svid_from_files(REVIEWS, "reviews-p256.pem", "reviews-p256.key", true),
    ])
    .await;
    let dir = stack.dir.path().to_path_buf();
    let config = host_config(
        &stack,
        &dir,
        &[
            ("orders", DEV_ROLE_ARN_ORDERS, ORDERS),
            ("reviews", DEV_ROLE_ARN_REVIEWS, REVIEWS),
        ],
    );
    let agent = Agent::start(&dir, &config, &["--log-format", "json"], &[]).await;

    // Healthy: alive, and ready once both roles hold credentials.
    let (status, body) = agent.get("/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (_, body) = agent.wait_for("/readyz", |s, _| s == 200).await;
    assert!(
        body.starts_with("ready\n")
            && body.contains("role orders: ready, credentials expire in")
            && body.contains("role reviews: ready"),
        "{body}"
    );

    let m = agent.metrics().await;
    let ok = |role| [("role", role), ("outcome", "success"), ("class", "none")];
    assert_eq!(
        m.value("spiffe_aws_agent_create_session_total", &ok("orders")),
        1.0
    );
    assert_eq!(
        m.value("spiffe_aws_agent_create_session_total", &ok("reviews")),
        1.0
    );
    assert_eq!(
        m.value(
            "spiffe_aws_agent_create_session_duration_seconds_count",
            &[("role", "orders")]
        ),
        1.0
    );
    let left = m.value(
        "spiffe_aws_agent_credentials_expiry_seconds",
        &[("role", "orders")],
    );
    assert!(left > 3000.0 && left <= 3600.0, "{left}");
    let address = stack.workload_api.endpoint();
    assert_eq!(
        m.value(
            "spiffe_aws_agent_workload_api_connected",
            &[("address", address.as_str())]
        ),
        1.0
    );

    // Requests are counted per endpoint and status: three IMDS requests without a token
    // (401) and one unknown admin path (404).
    let imds = agent.imds.clone().unwrap();
    let before_401 = m.value(
        "spiffe_aws_agent_http_requests_total",
        &[("endpoint", "imds"), ("status", "401")],
    );
    for _ in 0..3 {
        let (status, _) = http_get(&imds, "/latest/meta-data/iam/security-credentials/", &[]).await;
        assert_eq!(status, 401);
    }
    let (status, _) = agent.get("/nope").await;
    assert_eq!(status, 404);
    // A Host that does not name the listener (DNS rebinding) is refused.
    let (status, _) = http_get(&agent.admin, "/metrics", &[("Host", "evil.example")]).await;
    assert_eq!(status, 403);
    let m = agent.metrics().await;
    assert_eq!(
        m.value(
            "spiffe_aws_agent_http_requests_total",
            &[("endpoint", "imds"), ("status", "401")]
        ),
        before_401 + 3.0
    );
    assert_eq!(
        m.value(
            "spiffe_aws_agent_http_requests_total",
            &[("endpoint", "admin"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "spiffe_aws_agent_http_requests_total",
            &[("endpoint", "admin"), ("status", "403")]
        ),
        1.0
    );

    // Refused requests cost no log lines: hundreds of them leave the log as it was.
    let lines_before = agent.log().lines().count();
    for i in 0..300 {
        let headers: &[(&str, &str)] = match i % 4 {
            0 => &[("Host", "rebound.example")],
            1 => &[("X-Forwarded-For", "10.0.0.1")],
            2 => &[("Content-Length", "100000")],
            _ => &[],
        };
        let (status, _) = http_get(&agent.admin, "/readyz/../x", headers).await;
        assert!([403, 404, 413].contains(&status), "{status}");
    }
    assert_eq!(agent.log().lines().count(), lines_before, "{}", agent.log());

    // Degraded: the orders SVID rotates and every CreateSession fails with 500 from now on.
    // The old credentials are still valid: still ready, the failure named, and counted.
    stack.rolesanywhere.fail_every(1);
    let issuer = SvidIssuer::from_test_intermediate().unwrap();
    stack.workload_api.set_svids(vec![
        issuer.issue(ORDERS, Duration::from_secs(3600)).unwrap(),
        svid_from_files(REVIEWS, "reviews-p256.pem", "reviews-p256.key", true),
    ]);
    let (status, body) = agent
        .wait_for("/readyz", |_, b| b.contains("the last refresh failed"))
        .await;
    assert_eq!(status, 200, "still ready on valid credentials: {body}");
    assert!(
        body.contains("role orders: ready, credentials expire in")
            && body.contains("InternalServerException"),
        "{body}"
    );
    let m = agent.metrics().await;
    let failed = m.value(
        "spiffe_aws_agent_create_session_total",
        &[
            ("role", "orders"),
            ("outcome", "error"),
            ("class", "transient"),
        ],
    );
    assert!(failed >= 1.0, "failures are counted: {failed}");
    assert_eq!(
        m.value(
            "spiffe_aws_agent_svid_rotations_total",
            &[("role", "orders")]
        ),
        1.0
    );
    let (status, _) = agent.get("/healthz").await;
    assert_eq!(status, 200, "failing refreshes are not a dead process");

    // SPIRE goes away: the connection gauge drops to 0; the credentials held stay valid, so
    // the agent stays ready (and alive).
    let Stack {
        dir: _dir,
        workload_api,
        rolesanywhere: _rolesanywhere,
        ..
    } = stack;
    workload_api.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent
        .metrics()
        .await
        .value("spiffe_aws_agent_workload_api_connected", &[])
        != 0.0
    {
        assert!(
            Instant::now() < deadline,
            "still connected?\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = agent.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(agent.get("/healthz").await.0, 200);

    // Every log line is one JSON object, and none carries a secret the agent served.
    for role in ["orders", "reviews"] {
        let (secret, token) = secrets_of(&agent, role).await;
        let log = agent.log();
        assert!(
            !log.contains(&secret) && !log.contains(&token),
            "a secret reached the log"
        );
    }
    let log = agent.log();
    let mut lines = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        lines += 1;
    }
    assert!(lines > 5, "{log}");
}

/// What a service manager's notification socket received, read as it arrives (as systemd
/// does) by a thread that ends when this is dropped.
struct NotifySocket {
    messages: Arc<Mutex<Vec<String>>>,
    /// For `NOTIFY_SOCKET`.
    address: String,
}

impl NotifySocket {
    /// Binds a datagram socket at a path in `dir`, or at an abstract name.
    fn bind(dir: &Path, abstract_name: bool) -> NotifySocket {
        let (socket, address) = if abstract_name {
            use std::os::linux::net::SocketAddrExt as _;
            let name = format!("spiffe-aws-agent-test-{}", dir.display());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
        } else {
            let path = dir.join("notify.sock");
            (
                UnixDatagram::bind(&path).unwrap(),
                path.display().to_string(),
            )
        };
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let weak = Arc::downgrade(&messages);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Some(messages) = weak.upgrade() {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
                    messages.lock().unwrap().push(text);
                }
            }
        });
        NotifySocket { messages, address }
    }

    fn received(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits up to 5 s for `message`; returns everything received.
    async fn wait_for(&self, message: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.received();
            if got.iter().any(|m| m == message) {
                return got;
            }
            assert!(Instant::now() < deadline, "no {message}: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_without_credentials_ready_with_them_unready_when_withdrawn_and_systemd_hears_it() {
    let stack = Stack::start(vec![svid_from_files(
        ORDERS,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )])
    .await;
    // The first three CreateSession calls are denied: no credentials for a few seconds.
    stack.rolesanywhere.inject(
        Fault::Status {
            status: 403,
            error_type: "AccessDeniedException".into(),
            message: "injected denial".into(),
        },
        3,
    );
    let dir = stack.dir.path().to_path_buf();
    // An abstract socket name (`@…`), as systemd may give.
    let notify = NotifySocket::bind(&dir, true);
    let config = host_config(&stack, &dir, &[("orders", DEV_ROLE_ARN_ORDERS, ORDERS)]);
    let agent = Agent::start(
        &dir,
        &config,
        &[],
        &[
            ("NOTIFY_SOCKET", notify.address.clone()),
            ("WATCHDOG_USEC", "400000".into()),
        ],
    )
    .await;

    // Not ready: the body names the role and the reason; systemd has not heard READY=1.
    let (status, body) = agent
        .wait_for("/readyz", |_, b| b.contains("AccessDeniedException"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready\n") && body.contains("role orders: not ready:"),
        "{body}"
    );
    let (status, _) = agent.get("/healthz").await;
    assert_eq!(status, 200);
    let early = notify.received();
    assert!(
        !early.iter().any(|m| m.contains("READY=1")),
        "READY=1 before credentials: {early:?}"
    );
    let m = agent.metrics().await;
    assert!(
        m.value(
            "spiffe_aws_agent_create_session_total",
            &[("role", "orders"), ("class", "configuration")]
        ) >= 1.0
    );
    assert_eq!(
        m.value(
            "spiffe_aws_agent_credentials_expiry_seconds",
            &[("role", "orders")]
        ),
        0.0
    );

    // Ready once the retries get through; then READY=1 arrives, and WATCHDOG=1 keeps coming.
    agent.wait_for("/readyz", |s, _| s == 200).await;
    let messages = notify.wait_for("READY=1").await;
    let pings_before = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let messages = notify.received();
    let pings = messages.iter().filter(|m| *m == "WATCHDOG=1").count() - pings_before;
    // Every 200 ms (half of WATCHDOG_USEC): about 7 in 1.5 s.
    assert!((4..=10).contains(&pings), "{pings} pings: {messages:?}");

    // Withdrawn: the credentials are dropped and readiness says why.
    stack.workload_api.deny();
    let (status, body) = agent.wait_for("/readyz", |s, _| s == 503).await;
    assert!(
        body.contains("role orders: not ready:") && body.contains("withdrawn"),
        "{status} {body}"
    );
    let m = agent.metrics().await;
    assert_eq!(
        m.value(
            "spiffe_aws_agent_identity_withdrawals_total",
            &[("role", "orders")]
        ),
        1.0
    );

    // SIGTERM: STOPPING=1.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    notify.wait_for("STOPPING=1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_caller_readiness_is_spire_answering_this_agent_as_a_delegate() {
    const AGENT_ID: &str = "spiffe://example.org/spiffe-aws-agent";
    let own_uid = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").unwrap().uid()
    };
    for authorized in [true, false] {
        let stack = Stack::start_with(Vec::new(), RolesAnywhereDoubleConfig::default()).await;
        let dir = stack.dir.path().to_path_buf();
        let spire = DelegatedIdentityDouble::start(
            dir.join("spire-admin.sock"),
            HashMap::from([(own_uid, AGENT_ID.to_owned())]),
            if authorized {
                vec![AGENT_ID.to_owned()]
            } else {
                Vec::new()
            },
            Vec::new(),
        )
        .await
        .unwrap();
        let notify = NotifySocket::bind(&dir, false);
        let config = format!(
            "spire_admin_socket = \"{}\"\nendpoint = \"{}\"\nca_bundle = \"{}\"\n[[role]]\nname = \"orders\"\ntrust_anchor_arn = \"{DEV_TRUST_ANCHOR_ARN}\"\nprofile_arn = \"{DEV_PROFILE_ARN}\"\nrole_arn = \"{DEV_ROLE_ARN_ORDERS}\"\nspiffe_id = \"{ORDERS}\"\n[agent_socket]\npath = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            spire.endpoint(),
            stack.rolesanywhere.endpoint(),
            stack.ca_bundle.display(),
            dir.join("spiffe-aws-agent.sock").display()
        );
        let agent = Agent::start(
            &dir,
            &config,
            &[],
            &[("NOTIFY_SOCKET", notify.address.clone())],
        )
        .await;
        let (status, body) = agent
            .wait_for("/readyz", |_, b| !b.contains("has not been asked yet"))
            .await;
        if authorized {
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("answers this agent as a delegate"), "{body}");
        } else {
            assert_eq!(status, 503, "{body}");
            assert!(
                body.contains("per-caller mode: not ready:")
                    && body.contains("authorized_delegates"),
                "{body}"
            );
        }
        let m = agent.metrics().await;
        let address = spire.endpoint();
        let sample = m.0.iter().find(|(n, l, _)| {
            n == "spiffe_aws_agent_spire_admin_api_ready" && l.get("address") == Some(&address)
        });
        assert_eq!(
            sample.map(|(_, _, v)| *v),
            Some(if authorized { 1.0 } else { 0.0 }),
            "{:?}",
            m.0
        );
        // Nothing to wait for in per-caller mode: READY=1 at once.
        notify.wait_for("READY=1").await;
    }
}

#[tokio::test]
async fn a_non_loopback_admin_address_needs_an_explicit_allowance() {
    let base = [
        "run",
        "--certificate",
        "/nonexistent.pem",
        "--private-key",
        "/nonexistent.key",
        "--trust-anchor-arn",
        DEV_TRUST_ANCHOR_ARN,
        "--profile-arn",
        DEV_PROFILE_ARN,
        "--role-arn",
        DEV_ROLE_ARN_ORDERS,
        "--imds",
        "127.0.0.1:0",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .args(base)
        .args(["--admin", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--admin 0.0.0.0:0 is not a loopback address")
            && stderr.contains("--admin-allow-remote"),
        "{stderr}"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--admin [<IP:PORT>]",
        "--admin-allow-remote",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing in run --help");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--admin-allow-remote"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_the_admin_flags_too() {
    let stack = Stack::start(Vec::new()).await;
    let dir = stack.dir.path().to_path_buf();
    let cert = |name: &str| common::cert(name).display().to_string();
    let mut args: Vec<String> = [
        "serve",
        "--port",
        "0",
        "--certificate",
        &cert("orders-p256.pem"),
        "--private-key",
        &cert("orders-p256.key"),
        "--intermediates",
        &cert("intermediate-ca.pem"),
        "--admin",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(stack.session_args());
    let agent = Agent::spawn(&dir, &args, &[], true).await;
    let (_, body) = agent.wait_for("/readyz", |s, _| s == 200).await;
    assert!(body.contains("role orders: ready"), "{body}");
    let m = agent.metrics().await;
    assert_eq!(
        m.value(
            "spiffe_aws_agent_create_session_total",
            &[("role", "orders"), ("outcome", "success")]
        ),
        1.0
    );
    // Certificate files: no Workload API connection to report, so no such sample.
    assert!(
        !m.0.iter()
            .any(|(n, _, _)| n == "spiffe_aws_agent_workload_api_connected"),
        "{:?}",
        m.0
    );
}
