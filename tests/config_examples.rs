//! The configuration examples shipped in deploy/ and in `run --help` must parse.

mod common;

use std::sync::Arc;

use spiffe_aws_agent::plan::file;
use spiffe_aws_agent::{Clock, TokioClock};

fn clock() -> Arc<dyn Clock> {
    Arc::new(TokioClock::new())
}

#[test]
fn the_example_agent_toml_parses() {
    let path = common::root().join("deploy/agent.toml.example");
    let plan = file::load(&path, &clock()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.roles.len(), 1);
    assert_eq!(plan.roles[0].name, "orders");
    assert_eq!(plan.servers.imds.len(), 1);
    assert!(plan.servers.agent_socket.is_some());
}

#[test]
fn the_daemonset_config_map_parses() {
    let yaml =
        std::fs::read_to_string(common::root().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let start = yaml.find("agent.toml: |").expect("config map entry") + "agent.toml: |".len();
    let toml: String = yaml[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    let plan = file::parse(std::path::Path::new("daemonset.yaml"), &toml, &clock())
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(
        plan.roles[0].spiffe_id.as_deref(),
        Some("spiffe://example.org/service/orders")
    );
    // Per-caller mode: every role bound, no host-level channel, no own SVID needed.
    let per_caller = plan.per_caller.expect("per-caller mode");
    assert_eq!(
        per_caller.admin_socket,
        "unix:///run/spire/admin-sockets/admin.sock"
    );
    assert!(plan.roles.iter().all(|r| r.bound_to.is_some()));
    assert!(!plan.servers.has_host_channels());
    assert!(plan.identity.is_none());
    assert!(yaml.contains("hostPID: true") && yaml.contains("authorized_delegates"));
}

#[test]
fn the_run_help_example_parses() {
    let help = spiffe_aws_agent::cli::RUN_EXAMPLES;
    let start = help.find("workload_api_socket").unwrap();
    let toml: String = help[start..]
        .lines()
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let toml = toml.replace("<uuid>", "00000000-0000-4000-8000-000000000001");
    let plan = file::parse(std::path::Path::new("help"), &toml, &clock())
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(plan.servers.credentials_files.len(), 1);
    assert!(plan.servers.container.is_some());
}
