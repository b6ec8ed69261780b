//! The README's first command, `spiffe-aws-agent dev`: it must come up, exchange, and leave a
//! working `credential_process` config that a real client (boto3) can use while it runs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn dev_once_exchanges_and_prints_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .args([
            "dev",
            "--once",
            "--imds",
            "127.0.0.1:0",
            "--container",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("{\"Version\":1"))
        .expect("credentials JSON printed");
    let json: serde_json::Value = serde_json::from_str(json_line.trim()).unwrap();
    assert!(json["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert!(
        stdout.contains("x509SAN/URI = spiffe://example.org/service/orders"),
        "{stdout}"
    );
    assert!(dir.path().join("aws-config").exists());
}

#[test]
fn dev_keeps_serving_a_config_that_boto3_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .args([
            "dev",
            "--rotate-every",
            "1",
            "--imds",
            "127.0.0.1:0",
            "--container",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Ctrl-C stops") {
            break;
        }
    }
    // Wait for at least one rotation so the client uses a rotated SVID.
    for line in lines.by_ref() {
        if line.unwrap().contains("rotated the SVIDs") {
            break;
        }
    }
    let out = Command::new(common::python())
        .arg("-c")
        .arg("import boto3; c = boto3.Session(profile_name='orders').get_credentials(); print(c.method, c.access_key)")
        .env("AWS_CONFIG_FILE", dir.path().join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .output()
        .unwrap();

    // The printed commands work as printed: the AWS CLI gets the orders identity from STS,
    // orders may call billing, reviews may not (the seed scenario's auth policy).
    let printed = |needle: &str| -> Vec<String> {
        seen.lines()
            .filter(|l| l.contains(needle))
            .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
            .collect()
    };
    let run = |command: &str| Command::new("sh").arg("-c").arg(command).output().unwrap();
    let sts = printed("sts get-caller-identity");
    let lattice = printed("lattice-call.py");
    assert_eq!((sts.len(), lattice.len()), (1, 2), "{seen}");
    let sts_run = run(&sts[0]);
    let orders_run = run(&lattice[0]);
    let reviews_run = run(&lattice[1]);
    let _ = child.kill();
    let _ = child.wait();

    assert!(
        out.status.success(),
        "{seen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("custom-process ASIA"), "{text}");

    let sts_out = String::from_utf8_lossy(&sts_run.stdout);
    assert!(
        sts_run.status.success() && sts_out.contains("assumed-role/orders/"),
        "{}: {sts_out} {}",
        sts[0],
        String::from_utf8_lossy(&sts_run.stderr)
    );
    const DENIED: i32 = 3;
    let orders_out = String::from_utf8_lossy(&orders_run.stdout);
    assert_eq!(
        orders_run.status.code(),
        Some(0),
        "orders -> billing: {orders_out}"
    );
    assert!(orders_out.starts_with("200 "), "{orders_out}");
    let reviews_out = String::from_utf8_lossy(&reviews_run.stdout);
    assert_eq!(
        reviews_run.status.code(),
        Some(DENIED),
        "reviews -> billing is denied: {reviews_out}"
    );
    assert!(
        reviews_out.contains("AccessDeniedException"),
        "{reviews_out}"
    );
}

#[test]
fn dev_loads_lattice_policies_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.json");
    // The seed, turned around: billing admits reviews and no longer orders.
    std::fs::write(
        &policies,
        r#"{"billing": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
            "Action": "vpc-lattice-svcs:Invoke", "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalTag/x509SAN/URI": "spiffe://example.org/service/reviews"}}}]}}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .args([
            "dev",
            "--imds",
            "127.0.0.1:0",
            "--container",
            "127.0.0.1:0",
            "--lattice-policies",
        ])
        .arg(&policies)
        .arg("--dir")
        .arg(dir.path().join("stack"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Ctrl-C stops") {
            break;
        }
    }
    let codes: Vec<Option<i32>> = seen
        .lines()
        .filter(|l| l.contains("lattice-call.py"))
        .map(|l| {
            let command = l.split('#').next().unwrap_or_default().trim().to_owned();
            Command::new("sh")
                .arg("-c")
                .arg(command)
                .output()
                .unwrap()
                .status
                .code()
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    // The printed order is orders, then reviews.
    assert_eq!(codes, vec![Some(3), Some(0)], "{seen}");

    // A broken file stops dev with a message that names it.
    std::fs::write(&policies, "{\"billing\": {\"Statement\": 7}}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .args([
            "dev",
            "--once",
            "--imds",
            "127.0.0.1:0",
            "--container",
            "127.0.0.1:0",
            "--lattice-policies",
        ])
        .arg(&policies)
        .arg("--dir")
        .arg(dir.path().join("stack2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("billing"), "{stderr}");
}

/// `dev --per-caller` (run as root, as CI does): one agent socket, orders and reviews each get
/// their own credentials, tagged with their own SPIFFE ID, and reviews cannot take orders'.
#[test]
fn dev_per_caller_serves_each_workload_its_own_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"))
        .args(["dev", "--per-caller", "--once", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key_of = |name: &str| -> String {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} (uid ")))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}"));
        assert!(
            line.contains(&format!(
                "session tagged x509SAN/URI = spiffe://example.org/service/{name}"
            )),
            "{line}"
        );
        line.split("AccessKeyId ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap()
            .to_owned()
    };
    let orders = key_of("orders");
    let reviews = key_of("reviews");
    assert!(orders.starts_with("ASIA") && reviews.starts_with("ASIA"));
    assert_ne!(orders, reviews);
    assert!(
        stdout.contains("reviews asking for role orders is refused")
            && stdout.contains("role \"orders\" needs spiffe://example.org/service/orders"),
        "{stdout}"
    );
}
