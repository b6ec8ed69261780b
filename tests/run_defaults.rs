//! What `run` does for a newcomer who gives no paths: a non-root user's socket and tokens go
//! to `$XDG_RUNTIME_DIR/spiffe-aws-agent`, and what cannot work (no runtime directory, a port
//! in use) stops the agent with the flag or key to change.

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TA: &str = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001";
const PR: &str =
    "arn:aws:rolesanywhere:us-east-1:123456789012:profile/8a9f3d2e-0000-4000-8000-000000000002";
const ROLE: &str = "arn:aws:iam::123456789012:role/orders";
/// The user a root test runs the agent as (`nobody`).
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

/// `run` with a certificate-file identity (never read before the servers start) and `extra`.
fn agent(extra: &[&str], env: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"));
    cmd.arg("run")
        .arg("--certificate")
        .arg(common::cert("orders-p256.pem"))
        .arg("--private-key")
        .arg(common::cert("orders-p256.key"))
        .args([
            "--trust-anchor-arn",
            TA,
            "--profile-arn",
            PR,
            "--role-arn",
            ROLE,
        ])
        .args(extra)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if is_root() {
        // The defaults under test are a non-root user's.
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd
}

fn failure(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_non_root_agent_puts_its_socket_and_tokens_in_its_runtime_dir() {
    let runtime = tempfile::tempdir().unwrap();
    if is_root() {
        std::os::unix::fs::chown(runtime.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let mut child = agent(
        &["--agent-socket", "--container", "127.0.0.1:0"],
        &[("XDG_RUNTIME_DIR", runtime.path())],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let dir = runtime.path().join("spiffe-aws-agent");
    let socket = dir.join("agent.sock");
    let token = dir.join("container-token.orders");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(socket.exists() && token.exists()) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the agent exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "no socket or token in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn without_a_runtime_dir_a_non_root_agent_says_which_flag_to_pass() {
    let (code, stderr) = failure(&mut agent(&["--agent-socket"], &[]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("/run/spiffe-aws-agent")
            && stderr.contains("set XDG_RUNTIME_DIR")
            && stderr.contains("--agent-socket PATH")
            && stderr.contains("[agent_socket] path"),
        "{stderr}"
    );
    let (code, stderr) = failure(&mut agent(&["--container", "127.0.0.1:0"], &[]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("set XDG_RUNTIME_DIR")
            && stderr.contains("--container-token-file FILE")
            && stderr.contains("[container] token_file"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_names_the_flag_and_key_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let scratch = tempfile::tempdir().unwrap();
    let token = scratch.path().join("token");
    let token = token.to_str().unwrap();
    for (flag, setting, key) in [
        ("--imds", "--imds IP:PORT", "[imds] listen"),
        ("--container", "--container IP:PORT", "[container] listen"),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"));
        cmd.arg("run")
            .arg("--certificate")
            .arg(common::cert("orders-p256.pem"))
            .arg("--private-key")
            .arg(common::cert("orders-p256.key"))
            .args([
                "--trust-anchor-arn",
                TA,
                "--profile-arn",
                PR,
                "--role-arn",
                ROLE,
            ])
            .args([flag, &addr, "--container-token-file", token]);
        let (code, stderr) = failure(&mut cmd);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("cannot listen on")
                && stderr.contains(&addr)
                && stderr.contains("another process listens there")
                && stderr.contains(setting)
                && stderr.contains(key),
            "{flag}: {stderr}"
        );
    }
    // serve's own flag is named too.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"));
    cmd.arg("serve")
        .arg("--certificate")
        .arg(common::cert("orders-p256.pem"))
        .arg("--private-key")
        .arg(common::cert("orders-p256.key"))
        .args([
            "--trust-anchor-arn",
            TA,
            "--profile-arn",
            PR,
            "--role-arn",
            ROLE,
        ])
        .args(["--port", &port.to_string()]);
    let (code, stderr) = failure(&mut cmd);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("serve: --port PORT"), "{stderr}");
    drop(taken);
}
