//! The README's first command, `spiffe-aws-agent dev`: it must come up, exchange, and leave a
//! working `credential_process` config that a real client (boto3) can use while it runs.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

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
    // --once prints no lines to try (they would be dead): it tried them itself.
    assert!(!stdout.contains("$ "), "{stdout}");
    let checks: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  ok ")).collect();
    assert_eq!(checks.len(), 6, "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for needle in [
        "IMDS endpoint",
        "container endpoint",
        "credentials file",
        "credential-process by hand",
        "inspect --trust-anchor-cert",
    ] {
        assert!(
            checks.iter().any(|c| c.contains(needle)),
            "{needle}: {stdout}"
        );
    }
}

/// A directory holding only the tools the printed lines may use (no `aws`, no `python3`).
fn clean_bin() -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    for tool in ["sh", "curl", "cat", "sed", "head", "grep"] {
        let found = ["/usr/bin", "/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
    }
    bin
}

/// Starts `dev` with exactly `env` and reads its output up to "Ctrl-C stops".
fn start_dev(dir: &Path, env: &[(&str, String)]) -> (Child, String) {
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
        .arg(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Ctrl-C stops") {
            break;
        }
    }
    // Keep draining so dev never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, seen)
}

/// The printed `$ ` lines, in blocks: the lines under one heading share a shell.
fn blocks(seen: &str) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut current = Vec::new();
    for line in seen.lines() {
        match line.trim_start().strip_prefix("$ ") {
            Some(command) => current.push(command.to_owned()),
            None => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn sh(script: &str, env: &[(&str, String)]) -> std::process::Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// Runs every printed line as printed; Lattice lines must exit as their comment says
/// (0 allowed, 3 denied), every other block must succeed.
fn run_printed(seen: &str, env: &[(&str, String)]) -> Vec<(String, String)> {
    let mut ran = Vec::new();
    for block in blocks(seen) {
        if block[0].contains("lattice-call.py") {
            for line in &block {
                let expected = if line.contains("# 403") { 3 } else { 0 };
                let out = sh(line, env);
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                assert_eq!(out.status.code(), Some(expected), "{line}\n{stdout}");
                ran.push((line.clone(), stdout));
            }
            continue;
        }
        let script = format!("set -e\n{}", block.join("\n"));
        let out = sh(&script, env);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{script}\nstdout: {stdout}\nstderr: {}\n--- dev printed:\n{seen}",
            String::from_utf8_lossy(&out.stderr)
        );
        ran.push((script, stdout));
    }
    ran
}

/// The newcomer's path: `dev`'s lines in a clean environment (no AWS CLI on PATH, no region
/// configured, HOME empty) all work as printed, the exports carry the region, and the
/// pasted `~/.aws/config` stanza works for a real AWS CLI.
#[test]
fn dev_prints_lines_that_work_in_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let bin = clean_bin();
    let env = [
        ("PATH", bin.path().display().to_string()),
        ("HOME", home.path().display().to_string()),
    ];
    let (mut child, seen) = start_dev(dir.path(), &env);

    assert!(
        !seen.contains("sts get-caller-identity"),
        "no aws on PATH, no AWS CLI lines:\n{seen}"
    );
    let exports: Vec<&str> = seen.lines().filter(|l| l.contains("$ export ")).collect();
    assert_eq!(exports.len(), 4, "{seen}");
    for export in &exports {
        assert!(
            export.contains("AWS_REGION=us-east-1") || export.contains("AWS_CONFIG_FILE="),
            "{export}"
        );
    }
    for needle in [
        "trust anchor ARN       arn:aws:rolesanywhere:us-east-1:",
        "profile ARN            arn:aws:rolesanywhere:us-east-1:",
        "role orders",
        "--ca-bundle",
        "agent socket           ",
        "region = us-east-1",
    ] {
        assert!(seen.contains(needle), "{needle:?} missing:\n{seen}");
    }
    let ran = run_printed(&seen, &env);
    // The first block (binary and curl only) and the exports' commands got credentials.
    let with_keys = ran.iter().filter(|(_, out)| out.contains("ASIA")).count();
    assert!(with_keys >= 5, "{ran:?}");
    assert!(ran
        .iter()
        .any(|(_, out)| out.contains("usable: Roles Anywhere can exchange")));

    // Each export (and the pasted stanza) is enough for a real AWS CLI: region included.
    let aws = common::aws_cli();
    let aws_endpoint = seen
        .lines()
        .find_map(|l| l.trim().strip_prefix("AWS services double    "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let check = format!(
        "{} sts get-caller-identity --endpoint-url {aws_endpoint}",
        aws.display()
    );
    for export in &exports {
        let export = export.trim().strip_prefix("$ ").unwrap();
        let out = sh(&format!("{export}\n{check}"), &env);
        assert!(
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("assumed-role/orders/"),
            "{export}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stanza: String = seen
        .lines()
        .skip_while(|l| !l.starts_with("Or paste into ~/.aws/config"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::write(home.path().join(".aws/config"), &stanza).unwrap();
    let out = sh(&format!("{check} --profile orders"), &env);
    assert!(
        out.status.success(),
        "{stanza}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The agent run by hand against the doubles, as printed.
    let run_line = seen
        .lines()
        .find(|l| l.starts_with("    ") && l.contains(" run --workload-api-socket"))
        .expect("a run line")
        .trim()
        .to_owned();
    let read_line = seen
        .lines()
        .find(|l| l.starts_with("    ") && l.contains("by-hand.sock --role orders"))
        .expect("a line that reads from it")
        .trim()
        .to_owned();
    let mut by_hand = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {run_line}"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let got = loop {
        let out = sh(&read_line, &env);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{run_line}\n{read_line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = by_hand.kill();
    let _ = by_hand.wait();
    let _ = child.kill();
    let _ = child.wait();
    assert!(got.contains("\"AccessKeyId\":\"ASIA"), "{got}");
}

/// With an AWS CLI on PATH, dev adds AWS CLI lines, and they work as printed too (against
/// the STS double, never real AWS); and a config file boto3 resolves stays served.
#[test]
fn dev_keeps_serving_a_config_that_boto3_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let bin = clean_bin();
    let venv_bin = common::aws_cli().parent().unwrap().to_owned();
    let env = [
        (
            "PATH",
            format!("{}:{}", venv_bin.display(), bin.path().display()),
        ),
        ("HOME", home.path().display().to_string()),
    ];
    let (mut child, seen) = start_dev(dir.path(), &env);
    // Let one rotation pass so clients use a rotated SVID's credentials.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = Command::new(common::python())
        .arg("-c")
        .arg("import boto3; c = boto3.Session(profile_name='orders').get_credentials(); print(c.method, c.access_key)")
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", dir.path().join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .output()
        .unwrap();
    let aws_lines = seen
        .lines()
        .filter(|l| l.contains("sts get-caller-identity --endpoint-url http://127.0.0.1:"))
        .count();
    assert_eq!(aws_lines, 4, "one AWS CLI line per way:\n{seen}");
    assert_eq!(
        seen.lines()
            .filter(|l| l.contains("lattice-call.py"))
            .count(),
        2,
        "{seen}"
    );
    let ran = run_printed(&seen, &env);
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("custom-process ASIA"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sts = ran
        .iter()
        .filter(|(script, out)| {
            script.contains("sts get-caller-identity") && out.contains("assumed-role/orders/")
        })
        .count();
    assert_eq!(sts, 4, "{ran:?}");
    let denied = ran.iter().any(|(line, out)| {
        line.contains("--profile reviews") && out.contains("AccessDeniedException")
    });
    assert!(denied, "{ran:?}");
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
            let command = l.split('#').next().unwrap_or_default().trim();
            let command = command.strip_prefix("$ ").unwrap_or(command).to_owned();
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
