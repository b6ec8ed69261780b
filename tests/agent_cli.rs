//! `run`, `serve` and `update` as a user types them: aws_signing_helper's flags, a config
//! file, and the errors that must stop the agent before it starts.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::agent_stack::wait_for_log_value;
use common::stack::{failure_line, run_agent, Stack};
use spiffe_aws_agent::dev::rolesanywhere::{
    Fault, DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS, DEV_TRUST_ANCHOR_ARN,
};

/// `--certificate … --trust-anchor-arn …` as aws_signing_helper takes them.
fn helper_flags(stack: &Stack) -> Vec<String> {
    let mut args = vec![
        "--certificate".to_string(),
        common::cert("orders-p256.pem").display().to_string(),
        "--private-key".into(),
        common::cert("orders-p256.key").display().to_string(),
        "--intermediates".into(),
        common::cert("intermediate-ca.pem").display().to_string(),
    ];
    args.extend(stack.session_args());
    args
}

/// A tiny IMDSv2 client: token, then GET.
async fn imds_get(base: &str, path: &str) -> Result<(u16, String), String> {
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let token = client
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(format!("{base}{path}"))
        .header("X-aws-ec2-metadata-token", token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.map_err(|e| e.to_string())?))
}

async fn wait_for_imds(base: &str, role: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, body)) = imds_get(
            base,
            &format!("/latest/meta-data/iam/security-credentials/{role}"),
        )
        .await
        {
            return serde_json::from_str(&body).expect("IMDS JSON");
        }
        assert!(
            Instant::now() < deadline,
            "IMDS at {base} never served {role}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the agent with its log in `log`; returns the IMDS base URL it reports.
async fn spawn(args: Vec<String>, log: &std::path::Path) -> (Killed, String) {
    let child = Killed(
        Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("start"),
    );
    let base = wait_for_log_value(log, "AWS_EC2_METADATA_SERVICE_ENDPOINT=", '/').await;
    (child, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_a_drop_in_for_aws_signing_helper_serve() {
    let stack = Stack::start(vec![]).await;
    let mut args = vec!["serve".to_string(), "--port".into(), "0".into()];
    args.extend(helper_flags(&stack));
    let (_agent, base) = spawn(args, &stack.dir.path().join("agent.log")).await;
    assert!(
        base.starts_with("http://127.0.0.1:"),
        "serve binds loopback: {base}"
    );
    let doc = wait_for_imds(&base, "orders").await;
    assert_eq!(doc["Code"], "Success");
    assert_eq!(doc["Type"], "AWS-HMAC");
    let issued = stack
        .rolesanywhere
        .session_for_access_key(doc["AccessKeyId"].as_str().unwrap())
        .expect("issued by the double");
    assert_eq!(doc["Token"], issued.session_token.as_str());
    // The role list is the role ARN's last path part, as aws_signing_helper lists it.
    let (status, list) = imds_get(&base, "/latest/meta-data/iam/security-credentials/")
        .await
        .unwrap();
    assert_eq!((status, list.trim()), (200, "orders"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_once_writes_the_profile_and_keeps_the_rest() {
    let stack = Stack::start(vec![]).await;
    let file = stack.dir.path().join("credentials");
    let before = "# team credentials\n[default]\naws_access_key_id = AKIAKEEP\naws_secret_access_key = keep\n\n[other] ; comment\nregion = eu-west-1\n";
    std::fs::write(&file, before).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = vec![
        "update".to_string(),
        "--once".into(),
        "--profile".into(),
        "spiffe".into(),
    ];
    args.extend(helper_flags(&stack));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
            .args(args)
            .env("AWS_SHARED_CREDENTIALS_FILE", &file)
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
    let file = stack.dir.path().join("credentials");
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(
        after.starts_with(before),
        "the other profiles are kept byte for byte:\n{after}"
    );
    let issued = stack.rolesanywhere.issued();
    assert_eq!(issued.len(), 1);
    assert!(after.contains("[spiffe]"), "{after}");
    assert!(
        after.contains(&format!("aws_access_key_id = {}", issued[0].access_key_id)),
        "{after}"
    );
    assert!(
        after.contains(&format!("aws_session_token = {}", issued[0].session_token)),
        "{after}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_once_fails_with_the_reason_when_nothing_could_be_written() {
    let stack = Stack::start(vec![]).await;
    let dir = stack.dir.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let dangling = stack.dir.path().join("dangling");
    std::os::unix::fs::symlink(stack.dir.path().join("nowhere"), &dangling).unwrap();
    for (target, expected) in [(dir, "not a regular file"), (dangling, "symbolic link")] {
        let mut args = vec!["update".to_string(), "--once".into()];
        args.extend(helper_flags(&stack));
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
                .args(args)
                .env("AWS_SHARED_CREDENTIALS_FILE", &target)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "{expected}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr.lines().last().unwrap_or_default();
        assert!(
            line.starts_with("spiffe-aws-agent: nothing was written") && line.contains(expected),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_flags_serves_under_the_given_role_name() {
    let stack = Stack::start(vec![]).await;
    let mut args = vec![
        "run".to_string(),
        "--role-name".into(),
        "billing-writer".into(),
        "--imds".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(helper_flags(&stack));
    let (_agent, base) = spawn(args, &stack.dir.path().join("agent.log")).await;
    let doc = wait_for_imds(&base, "billing-writer").await;
    assert!(doc["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
}

/// Starts `run` with `args` and an agent socket, then asks it for `orders` through
/// `credential-process --agent` until the answer is a failure naming `expected`: what a
/// workload sees while the agent cannot get credentials.
async fn agent_explains(stack: &Stack, mut args: Vec<String>, expected: &str) -> String {
    let socket = stack.dir.path().join("spiffe-aws-agent.sock");
    args.extend([
        "--agent-socket".to_string(),
        socket.display().to_string(),
        "--imds".into(),
        "127.0.0.1:0".into(),
    ]);
    let (_agent, _) = spawn(args, &stack.dir.path().join("agent.log")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run_agent(vec![
            "credential-process".into(),
            "--agent".into(),
            socket.display().to_string(),
            "--role".into(),
            "orders".into(),
        ])
        .await;
        if !out.status.success() {
            let line = failure_line(&out);
            if line.contains(expected) {
                return line;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never explained {expected:?}; last answer: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_spire_the_agent_runs_and_says_why_it_has_no_credentials() {
    let stack = Stack::start(vec![]).await;
    let missing = stack.dir.path().join("no-spire-agent.sock");
    let mut args = vec![
        "run".to_string(),
        "--workload-api-socket".into(),
        format!("unix://{}", missing.display()),
    ];
    args.extend(stack.session_args());
    let line = agent_explains(&stack, args, "cannot reach the SPIFFE Workload API").await;
    assert!(
        line.contains("no usable credentials for role \"orders\""),
        "{line}"
    );
    assert!(line.contains("No such file"), "{line}");
    assert!(
        stack.rolesanywhere.calls().is_empty(),
        "nothing to exchange"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roles_anywhere_rejection_reaches_agent_clients() {
    let stack = Stack::start(vec![]).await;
    stack.rolesanywhere.inject(
        Fault::Status {
            status: 403,
            error_type: "AccessDeniedException".into(),
            message: "Untrusted signing certificate".into(),
        },
        1000,
    );
    let mut args = vec!["run".to_string()];
    args.extend(helper_flags(&stack));
    let line = agent_explains(
        &stack,
        args,
        "AccessDeniedException: Untrusted signing certificate",
    )
    .await;
    assert!(
        line.contains("trust anchor"),
        "the hint comes along: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_given_to_run_is_explained_to_clients() {
    let stack = Stack::start(vec![]).await;
    let mut args = vec![
        "run".to_string(),
        "--certificate".into(),
        common::cert("bad-expired.pem").display().to_string(),
        "--private-key".into(),
        common::cert("bad-expired.key").display().to_string(),
    ];
    args.extend(stack.session_args());
    agent_explains(&stack, args, "expired at 2020-01-01T00:00:00Z").await;
    assert!(
        stack.rolesanywhere.calls().is_empty(),
        "an expired certificate is never sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_imds_on_ipv6_loopback() {
    let stack = Stack::start(vec![]).await;
    let mut args = vec!["run".to_string(), "--imds".into(), "[::1]:0".into()];
    args.extend(helper_flags(&stack));
    let (_agent, base) = spawn(args, &stack.dir.path().join("agent.log")).await;
    assert!(base.starts_with("http://[::1]:"), "{base}");
    let doc = wait_for_imds(&base, "orders").await;
    assert_eq!(doc["Code"], "Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_stops_the_agent_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "workload_api_socket = \"unix:///tmp/nowhere.sock\"\n[imds]\n\n[[role]]\nname = \"orders\"\ntrust_anchor_arn = \"{DEV_TRUST_ANCHOR_ARN}\"\nprofile_arn = \"{DEV_PROFILE_ARN}\"\nrole_arn = \"{}\"\nsession_duration = 100000\n",
            DEV_ROLE_ARN_ORDERS
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = run_agent(vec![
        "run".into(),
        "--config".into(),
        config.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let line = failure_line(&out);
    assert!(
        line.contains("agent.toml:9: role \"orders\" session_duration:"),
        "{line}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails before starting anything"
    );

    let out = run_agent(vec![
        "run".into(),
        "--config".into(),
        dir.path().join("missing.toml").display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(failure_line(&out).contains("cannot read the config file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_stops_the_agent_at_once() {
    let stack = Stack::start(vec![]).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut args = vec![
        "run".to_string(),
        "--imds".into(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(helper_flags(&stack));
    let out = run_agent(args).await;
    assert_eq!(out.status.code(), Some(1));
    let line = failure_line(&out);
    assert!(
        line.contains(&format!(
            "cannot listen on the IMDS endpoint 127.0.0.1:{port}"
        )),
        "{line}"
    );
    assert!(stack.rolesanywhere.calls().is_empty(), "nothing started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_a_server_is_a_usage_error() {
    let stack = Stack::start(vec![]).await;
    let mut args = vec!["run".to_string()];
    args.extend(helper_flags(&stack));
    let out = run_agent(args).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(failure_line(&out).contains("no server chosen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_worker_thread_count_is_a_usage_error_not_a_panic() {
    let stack = Stack::start(vec![]).await;
    let mut args = vec!["run".to_string(), "--imds".into(), "127.0.0.1:0".into()];
    args.extend(helper_flags(&stack));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
            .args(args)
            .env("TOKIO_WORKER_THREADS", "many")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        failure_line(&out).contains("TOKIO_WORKER_THREADS=\"many\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_does_not_flood_the_log() {
    let stack = Stack::start(vec![]).await;
    let missing = stack.dir.path().join("no-spire-agent.sock");
    let log = stack.dir.path().join("agent.log");
    let mut args = vec![
        "run".to_string(),
        "--workload-api-socket".into(),
        format!("unix://{}", missing.display()),
        "--imds".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(
        stack
            .session_args()
            .into_iter()
            .filter(|a| !a.starts_with("--workload")),
    );
    let (_agent, base) = spawn(args, &log).await;
    let lines_before = std::fs::read_to_string(&log).unwrap().lines().count();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = client
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "600")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // 4,000 refused credential requests (the role has no credentials: 503 each) ...
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut unavailable = 0;
            for _ in 0..500 {
                let resp = client
                    .get(format!(
                        "{base}/latest/meta-data/iam/security-credentials/orders"
                    ))
                    .header("X-aws-ec2-metadata-token", &token)
                    .send()
                    .await
                    .unwrap();
                if resp.status() == 503 {
                    unavailable += 1;
                }
            }
            unavailable
        }));
    }
    let mut unavailable = 0;
    for t in tasks {
        unavailable += t.await.unwrap();
    }
    assert_eq!(unavailable, 4000, "every request was refused");
    // ... and 2,000 connections opened and dropped.
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    for _ in 0..2000 {
        drop(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let added = text.lines().count() - lines_before;
    assert!(added <= 20, "{added} log lines for the flood:\n{text}");
    assert!(
        text.contains("refusing credentials requests"),
        "the first refusal is still logged:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spire_restart_is_logged_and_followed_within_two_seconds() {
    use spiffe_aws_agent::dev::pki;
    use spiffe_aws_agent::dev::workload_api::{SvidIssuer, WorkloadApiDouble};
    let stack = Stack::start(vec![]).await;
    let issuer = SvidIssuer::from_test_intermediate().unwrap();
    let socket = stack.dir.path().join("spire-agent.sock");
    let orders = "spiffe://example.org/service/orders";
    let spire = WorkloadApiDouble::start(
        &socket,
        vec![issuer.issue(orders, Duration::from_secs(3600)).unwrap()],
        pki::root_bundle_der(),
    )
    .await
    .unwrap();
    let log = stack.dir.path().join("agent.log");
    let mut args = vec![
        "run".to_string(),
        "--workload-api-socket".into(),
        format!("unix://{}", socket.display()),
        "--imds".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(stack.session_args());
    let (_agent, base) = spawn(args, &log).await;
    let first = wait_for_imds(&base, "orders").await;

    // SPIRE goes away: logged once, credentials still served.
    spire.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("lost the connection to the SPIFFE Workload API")
    {
        assert!(Instant::now() < deadline, "the outage was never logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = wait_for_imds(&base, "orders").await;
    assert_eq!(during["AccessKeyId"], first["AccessKeyId"], "kept serving");

    // SPIRE is back with a new SVID: followed within 2 s.
    let _spire = WorkloadApiDouble::start(
        &socket,
        vec![issuer.issue(orders, Duration::from_secs(3600)).unwrap()],
        pki::root_bundle_der(),
    )
    .await
    .unwrap();
    let back = Instant::now();
    loop {
        let now = wait_for_imds(&base, "orders").await;
        if now["AccessKeyId"] != first["AccessKeyId"] {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "the new SVID was not exchanged within 2 s:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("reconnected to the SPIFFE Workload API"),
        "{text}"
    );
    assert_eq!(
        text.matches("lost the connection").count(),
        1,
        "one line for the outage:\n{text}"
    );
}

/// The agent's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Lets this test process hold `n` sockets.
fn allow_open_files(n: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed by pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(limit.rlim_max >= n, "the hard open-file limit is below {n}");
        limit.rlim_cur = limit.rlim_cur.max(n);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_taken_by_a_connection_flood_is_given_back_after_it() {
    const FLOOD: usize = 2_000;
    allow_open_files(FLOOD as u64 + 512);
    let stack = Stack::start(vec![]).await;
    let mut args = vec!["serve".to_string(), "--port".into(), "0".into()];
    args.extend(helper_flags(&stack));
    let (agent, base) = spawn(args, &stack.dir.path().join("agent.log")).await;
    wait_for_imds(&base, "orders").await;
    let pid = agent.0.id();
    let start = rss_kib(pid);

    // 2,000 connections, each mid-way through a request head (hyper holds a read buffer for
    // each), held for a second, then closed.
    let addr = base.trim_start_matches("http://").to_string();
    let during = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let flood: Vec<std::net::TcpStream> = (0..FLOOD)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(&addr).expect("connect");
                s.write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
                    .expect("write");
                s
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let during = rss_kib(pid);
        drop(flood);
        during
    })
    .await
    .unwrap();
    assert!(
        during > start + 8 * 1024,
        "the flood should have cost the agent memory: {start} KiB before, {during} KiB during"
    );

    // Once the connections are gone the memory goes back, within a few seconds.
    let allowance = 4 * 1024;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut end = rss_kib(pid);
    while end > start + allowance && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        end = rss_kib(pid);
    }
    assert!(
        end <= start + allowance,
        "RSS {start} KiB before a {FLOOD}-connection flood, {during} KiB during, {end} KiB after"
    );
    eprintln!("RSS: {start} KiB before the flood, {during} KiB during, {end} KiB after");
    // And the agent still serves.
    wait_for_imds(&base, "orders").await;
}
