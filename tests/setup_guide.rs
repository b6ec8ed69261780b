//! docs/aws-and-spire-setup.md's commands are accepted by the real tools: every `aws` command
//! by the AWS CLI (its parameters validated, then the call sent to an address nothing listens
//! on), every `spire-server` command by SPIRE's own binary (flags parsed, then the server
//! socket found missing), and every JSON document parses.

mod common;

use std::path::Path;
use std::process::Command;

const GUIDE: &str = "docs/aws-and-spire-setup.md";

/// The commands of the guide's `sh` blocks, continuation lines joined, comments dropped.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = line.split(" # ").next().unwrap_or_default().trim_end();
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                // Redirections are the shell's, not the tool's.
                let command = current.split(" > ").next().unwrap_or_default();
                let command = command.split_whitespace().collect::<Vec<_>>().join(" ");
                if !command.is_empty() {
                    out.push(command);
                }
                current.clear();
            }
        }
    }
    out
}

/// The guide's JSON blocks.
fn json_blocks(text: &str) -> Vec<String> {
    text.split("```json\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default().to_owned())
        .collect()
}

fn run(program: &Path, args: &str, cwd: &Path, home: &Path) -> (Option<i32>, String) {
    let out = Command::new(program)
        .args(args.split(' '))
        .current_dir(cwd)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "example")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_setup_guide_commands_are_accepted_by_the_real_tools() {
    let text = std::fs::read_to_string(common::root().join(GUIDE)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    for (i, block) in json_blocks(&text).iter().enumerate() {
        serde_json::from_str::<serde_json::Value>(block)
            .unwrap_or_else(|e| panic!("{GUIDE}: JSON block #{}: {e}\n{block}", i + 1));
    }
    // Every file:// the commands read, with valid JSON in it.
    let commands = commands(&text);
    for command in &commands {
        for word in command.split(' ') {
            if let Some(name) = word.strip_prefix("file://") {
                std::fs::write(work.path().join(name), "{}").unwrap();
            }
        }
    }
    // The upstream CA the guide makes the trust anchor.
    std::fs::copy(
        common::cert("root-ca.pem"),
        work.path().join("upstream-ca.pem"),
    )
    .unwrap();
    let aws = common::aws_cli();
    let spire_server = common::peers::bin("spire-server");
    let (mut aws_count, mut spire_count, mut agent_count) = (0, 0, 0);
    for command in &commands {
        let (program, rest) = command.split_once(' ').unwrap_or((command, ""));
        match program {
            "aws" => {
                aws_count += 1;
                let args =
                    format!("{rest} --endpoint-url http://127.0.0.1:1 --cli-connect-timeout 1");
                let (code, out) = run(&aws, &args, work.path(), home.path());
                assert!(
                    code == Some(255) && out.contains("Could not connect to the endpoint URL"),
                    "{GUIDE}: `{command}` was not accepted by the AWS CLI:\n{out}"
                );
            }
            "spire-server" => {
                spire_count += 1;
                let args = format!("{rest} -socketPath /nonexistent/spire/api.sock");
                let (code, out) = run(&spire_server, &args, work.path(), home.path());
                assert!(
                    code == Some(1) && out.contains("connection error") && !out.contains("Usage"),
                    "{GUIDE}: `{command}` was not accepted by spire-server:\n{out}"
                );
            }
            "spiffe-aws-agent" => {
                agent_count += 1;
                let agent = Path::new(env!("CARGO_BIN_EXE_spiffe-aws-agent"));
                let (code, out) = run(agent, rest, work.path(), home.path());
                // Flags accepted (2 would be a usage error); no SPIRE here, so exit 1.
                assert!(
                    code == Some(1) && out.contains("SPIFFE Workload API"),
                    "{GUIDE}: `{command}`:\n{out}"
                );
            }
            _ => {}
        }
    }
    assert!(
        aws_count >= 5 && spire_count >= 4 && agent_count >= 2,
        "{commands:#?}"
    );
}

#[test]
fn the_command_reader_joins_continuations_and_drops_comments() {
    let text =
        "```sh\naws a \\\n    --b c   # note\nspire-server x > f.pem\n```\n```json\n{}\n```\n";
    assert_eq!(commands(text), ["aws a --b c", "spire-server x"]);
    assert_eq!(json_blocks(text), ["{}\n"]);
}
