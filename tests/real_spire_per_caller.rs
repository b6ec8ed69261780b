//! Per-caller mode (`run` with `spire_admin_socket`) against a real SPIRE agent's admin socket
//! (spiffe/spire v1.13.3, built by `scripts/build-peers.sh`): the agent runs under its own uid,
//! which SPIRE registers as the delegate's SPIFFE ID listed in `authorized_delegates`; workload
//! processes under two other uids (registered as orders and reviews) call
//! `credential-process --agent SOCKET`, and SPIRE's `unix` attestor decides what each gets.
//! The times SPIRE takes are printed (run with `--nocapture` to see them).
//!
//! The tests run the agent and the workloads under other uids, so they need root (as in CI).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::agent_stack::{ORDERS, REVIEWS};
use common::spire::{own_ids, SpireOptions, SpireStack, DELEGATE_ID, SPIRE_WAIT};
use common::stack::{failure_line, parse_process_output};
use spiffe_aws_agent::dev::rolesanywhere::{
    DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS, DEV_ROLE_ARN_REVIEWS, DEV_TRUST_ANCHOR_ARN,
};

/// The agent's own uid (registered as [`DELEGATE_ID`]) and the workloads' (no accounts needed).
const AGENT_UID: u32 = 41020;
const ORDERS_UID: u32 = 41021;
const REVIEWS_UID: u32 = 41022;
/// A uid SPIRE has no entry for.
const STRANGER_UID: u32 = 41029;

/// Real SPIRE, the doubles, and `spiffe-aws-agent run` in per-caller mode as [`AGENT_UID`].
struct PerCaller {
    // Fields drop in order: the agent dies before SPIRE and the temp dir go.
    agent: Child,
    stack: SpireStack,
    /// The binary, placed where every uid can run it.
    program: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    orders_entry: String,
}

impl Drop for PerCaller {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

impl PerCaller {
    async fn start() -> PerCaller {
        Self::start_with(true).await
    }

    /// `register_delegate`: whether SPIRE has an entry giving [`AGENT_UID`] the delegate's ID.
    async fn start_with(register_delegate: bool) -> PerCaller {
        assert_eq!(
            own_ids().0,
            0,
            "these tests run the agent and workloads under other uids, which needs root (as in CI)"
        );
        let stack = SpireStack::start(SpireOptions::default()).await;
        if register_delegate {
            stack.spire.create_entry(DELEGATE_ID, AGENT_UID).await;
        }
        let orders_entry = stack.spire.create_entry(ORDERS, ORDERS_UID).await;
        stack.spire.create_entry(REVIEWS, REVIEWS_UID).await;
        stack.spire.give_admin_socket_to(AGENT_UID, AGENT_UID);

        // The build tree may sit where other uids cannot reach (/root is 0700): the agent and
        // the workloads run a link (or copy) of the binary from a directory all may traverse.
        let bin_dir = stack.spire.dir.path().join("bin");
        std::fs::create_dir(&bin_dir).expect("mkdir bin");
        std::fs::set_permissions(&bin_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let program = bin_dir.join("spiffe-aws-agent");
        let built = Path::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"));
        std::fs::hard_link(built, &program)
            .or_else(|_| std::fs::copy(built, &program).map(|_| ()))
            .expect("place the agent binary where every uid can run it");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();

        // The agent's directory is its own; workloads only pass through it to the socket.
        let dir = stack.workload_dir("agent", AGENT_UID, AGENT_UID);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("spiffe-aws-agent.sock");
        let mut toml = format!(
            "spire_admin_socket = \"unix://{}\"\nendpoint = \"{}\"\nca_bundle = \"{}\"\n",
            stack.spire.admin_socket.display(),
            stack.rolesanywhere.endpoint(),
            stack.ca_bundle.display()
        );
        for (name, arn, id) in [
            ("orders", DEV_ROLE_ARN_ORDERS, ORDERS),
            ("reviews", DEV_ROLE_ARN_REVIEWS, REVIEWS),
        ] {
            toml.push_str(&format!(
                "[[role]]\nname = \"{name}\"\ntrust_anchor_arn = \"{DEV_TRUST_ANCHOR_ARN}\"\nprofile_arn = \"{DEV_PROFILE_ARN}\"\nrole_arn = \"{arn}\"\nspiffe_id = \"{id}\"\n"
            ));
        }
        toml.push_str(&format!(
            "[agent_socket]\npath = \"{}\"\n",
            socket.display()
        ));
        let config = dir.join("agent.toml");
        std::fs::write(&config, toml).unwrap();
        let log = dir.join("agent.log");
        let agent = Command::new(&program)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "spiffe_aws_agent=debug")
            .env("HOME", &dir)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .uid(AGENT_UID)
            .gid(AGENT_UID)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the agent");
        let started = PerCaller {
            agent,
            stack,
            program,
            socket,
            log,
            orders_entry,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !started.log().contains("agent socket (per caller") {
            assert!(
                Instant::now() < deadline,
                "the agent never listened:\n{}",
                started.context()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's log, SPIRE's logs and the Roles Anywhere calls, for assertion messages.
    fn context(&self) -> String {
        format!(
            "--- spiffe-aws-agent\n{}\n{}\n--- Roles Anywhere calls\n{:?}",
            self.log(),
            self.stack.spire.logs(),
            self.stack.rolesanywhere.calls()
        )
    }

    /// `credential-process --agent SOCKET [--role ROLE]` run as `uid`.
    async fn fetch_as(&self, uid: u32, role: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.program);
        cmd.arg("credential-process")
            .arg("--agent")
            .arg(&self.socket);
        if let Some(role) = role {
            cmd.args(["--role", role]);
        }
        cmd.uid(uid).gid(uid).env_remove("SPIFFE_ENDPOINT_SOCKET");
        tokio::task::spawn_blocking(move || cmd.output().expect("run credential-process"))
            .await
            .unwrap()
    }

    /// Polls `fetch_as(uid, None)` until it succeeds (SPIRE syncs new entries to its agent
    /// every few seconds); returns the credentials and how long it took.
    async fn first_credentials(&self, uid: u32) -> (serde_json::Value, Duration) {
        let started = Instant::now();
        loop {
            let out = self.fetch_as(uid, None).await;
            if out.status.success() {
                return (parse_process_output(&out), started.elapsed());
            }
            assert!(
                started.elapsed() < SPIRE_WAIT,
                "uid {uid} never got credentials: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.context()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The SPIFFE ID Roles Anywhere recorded for the session of `access_key_id`.
    fn session_spiffe_id(&self, access_key_id: &str) -> Option<String> {
        self.stack
            .rolesanywhere
            .session_for_access_key(access_key_id)
            .and_then(|s| s.spiffe_id)
    }

    /// The accepted CreateSession calls: (SPIFFE ID, role ARN) of each, sorted.
    fn sessions(&self) -> Vec<(String, String)> {
        let mut sessions: Vec<_> = self
            .stack
            .rolesanywhere
            .calls()
            .iter()
            .filter(|c| c.status == 201)
            .map(|c| {
                (
                    c.spiffe_id.clone().unwrap_or_default(),
                    c.role_arn.clone().unwrap_or_default(),
                )
            })
            .collect();
        sessions.sort();
        sessions
    }
}

fn key(json: &serde_json::Value) -> String {
    json["AccessKeyId"]
        .as_str()
        .expect("AccessKeyId")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workload_gets_credentials_exchanged_with_its_own_spire_svid() {
    let pc = PerCaller::start().await;
    let (orders, orders_after) = pc.first_credentials(ORDERS_UID).await;
    eprintln!("orders' first credentials {orders_after:?} after the agent listened");
    let (reviews, _) = pc.first_credentials(REVIEWS_UID).await;
    assert_ne!(key(&orders), key(&reviews));
    assert_eq!(
        pc.session_spiffe_id(&key(&orders)).as_deref(),
        Some(ORDERS),
        "{}",
        pc.context()
    );
    assert_eq!(
        pc.session_spiffe_id(&key(&reviews)).as_deref(),
        Some(REVIEWS)
    );
    // Naming the own role gives the same cached credentials.
    let named = parse_process_output(&pc.fetch_as(ORDERS_UID, Some("orders")).await);
    assert_eq!(key(&named), key(&orders));

    // reviews asking for orders' role: refused, naming both IDs, without an exchange.
    let out = pc.fetch_as(REVIEWS_UID, Some("orders")).await;
    assert_eq!(out.status.code(), Some(1), "{}", pc.context());
    let line = failure_line(&out);
    assert!(
        line.contains(&format!("has SPIFFE ID {REVIEWS}"))
            && line.contains(&format!("role \"orders\" needs {ORDERS}")),
        "{line}"
    );
    assert_eq!(
        pc.sessions(),
        vec![
            (ORDERS.to_owned(), DEV_ROLE_ARN_ORDERS.to_owned()),
            (REVIEWS.to_owned(), DEV_ROLE_ARN_REVIEWS.to_owned()),
        ],
        "one CreateSession per workload, each with its own SVID"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_spire_has_no_entry_for_is_refused() {
    let pc = PerCaller::start().await;
    // Once orders is served, SPIRE has synced the entries and authorized the agent: the
    // refusal below is about the stranger, not about a SPIRE agent still starting.
    pc.first_credentials(ORDERS_UID).await;
    for role in [None, Some("orders")] {
        let out = pc.fetch_as(STRANGER_UID, role).await;
        assert_eq!(out.status.code(), Some(1), "{}", pc.context());
        let line = failure_line(&out);
        assert!(
            line.contains("SPIRE issued no SVID to this process")
                && line.contains(&format!("uid {STRANGER_UID}")),
            "{line}"
        );
    }
    assert_eq!(
        pc.sessions(),
        vec![(ORDERS.to_owned(), DEV_ROLE_ARN_ORDERS.to_owned())],
        "no exchange for the stranger"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_orders_entry_withdraws_orders_credentials_only() {
    let pc = PerCaller::start().await;
    let (orders, _) = pc.first_credentials(ORDERS_UID).await;
    let (reviews, _) = pc.first_credentials(REVIEWS_UID).await;
    let reviews_key = key(&reviews);

    pc.stack.spire.delete_entry(&pc.orders_entry).await;
    let deleted = Instant::now();
    let line = loop {
        let out = pc.fetch_as(ORDERS_UID, None).await;
        if !out.status.success() {
            break failure_line(&out);
        }
        assert_eq!(key(&parse_process_output(&out)), key(&orders));
        // reviews is served throughout, from the same session.
        let out = pc.fetch_as(REVIEWS_UID, None).await;
        assert_eq!(key(&parse_process_output(&out)), reviews_key);
        assert!(
            deleted.elapsed() < SPIRE_WAIT,
            "orders still served {SPIRE_WAIT:?} after `entry delete`:\n{}",
            pc.context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let withdrawn_after = deleted.elapsed();
    eprintln!("orders' credentials withdrawn {withdrawn_after:?} after `entry delete`: {line}");
    assert!(
        line.contains("SPIRE issued no SVID to this process")
            && line.contains(&format!("uid {ORDERS_UID}")),
        "{line}"
    );
    // The SPIRE agent syncs entries every 5 s; allow for a slow machine, not for never.
    assert!(
        withdrawn_after < Duration::from_secs(30),
        "{withdrawn_after:?}"
    );
    // It stays withdrawn, also when named, and reviews keeps its credentials.
    let out = pc.fetch_as(ORDERS_UID, Some("orders")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(failure_line(&out).contains("SPIRE issued no SVID"));
    let out = pc.fetch_as(REVIEWS_UID, None).await;
    assert_eq!(key(&parse_process_output(&out)), reviews_key);
    // The kept subscription hears of it too (about when fresh attestations do) and the
    // agent drops the cached credentials.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pc
        .log()
        .contains("SPIRE no longer issues this SVID: dropping its credentials")
    {
        assert!(
            Instant::now() < deadline,
            "the agent kept orders' credentials after SPIRE withdrew the SVID:\n{}",
            pc.context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pc.sessions(),
        vec![
            (ORDERS.to_owned(), DEV_ROLE_ARN_ORDERS.to_owned()),
            (REVIEWS.to_owned(), DEV_ROLE_ARN_REVIEWS.to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_uid_spire_does_not_register_as_the_delegate_serves_nothing() {
    let pc = PerCaller::start_with(false).await;
    // Past one SPIRE sync (5 s): the refusal is about the agent, not a SPIRE agent starting.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let out = pc.fetch_as(ORDERS_UID, None).await;
        assert_eq!(out.status.code(), Some(1), "{}", pc.context());
        let line = failure_line(&out);
        assert!(
            line.contains("refused this agent as a delegate")
                && line.contains("authorized_delegates"),
            "{line}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(pc.sessions().is_empty(), "{:?}", pc.sessions());
}
