//! What `deploy/` ships is checked by the tools that will consume it: the systemd unit by
//! `systemd-analyze verify` (and `security`) and its sysusers entry by `systemd-sysusers`, each
//! against a scratch root holding the binary where the unit expects it (a check that prints any
//! diagnostic fails, since systemd only warns and skips the line for an unknown key or a bad
//! value); the Kubernetes manifests and the Helm chart's render by the Kubernetes schemas
//! (`kubernetes-validate --strict`, offline) and `helm lint`; the image built by
//! `scripts/build-image.sh` by unpacking it with `umoci` and running its binary from the
//! unpacked root file system (chroot, as the image's user) against the doubles.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use spiffe_aws_agent::dev::pki;
use spiffe_aws_agent::dev::rolesanywhere::{
    RolesAnywhereDouble, RolesAnywhereDoubleConfig, DEV_PROFILE_ARN, DEV_ROLE_ARN_ORDERS,
    DEV_TRUST_ANCHOR_ARN,
};
use spiffe_aws_agent::dev::workload_api::WorkloadApiDouble;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    common::root()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/test.sh installs it)"))
}

// ---- systemd ----------------------------------------------------------------------------

const UNIT: &str = "spiffe-aws-agent.service";

/// The directory holding the distribution's units (sysinit.target etc.), which `verify`
/// needs inside the root it is given.
fn system_units_dir() -> PathBuf {
    ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("sysinit.target").exists())
        .expect("systemd's units (sysinit.target) are installed (scripts/test.sh installs systemd)")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(link, target).unwrap();
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The `ExecStart=` command line of `unit`, split on whitespace (the unit uses no quoting).
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has ExecStart=");
    line.split_whitespace().map(String::from).collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    unit.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// A scratch root with the system's units, `unit_text` as the unit in /etc/systemd/system and
/// the agent binary at the path its ExecStart names (when `with_binary`).
fn scratch_root(unit_text: &str, with_binary: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let units = system_units_dir();
    copy_dir(&units, &root.path().join(units.strip_prefix("/").unwrap()));
    let etc = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join(UNIT), unit_text).unwrap();
    if with_binary {
        let exe = &exec_start(unit_text)[0];
        let target = root.path().join(exe.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_spiffe-aws-agent"), &target).unwrap();
    }
    root
}

/// `systemd-analyze verify` on the unit inside `root`: Ok, or the diagnostics it printed.
fn verify_unit(root: &Path) -> Result<(), String> {
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("--man=no")
        .arg(UNIT));
    let said = text(&out);
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("exit {:?}: {said}", out.status.code()))
    }
}

fn shipped_unit() -> String {
    std::fs::read_to_string(repo().join("deploy/systemd").join(UNIT)).unwrap()
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = shipped_unit();
    let root = scratch_root(&unit, true);
    verify_unit(root.path()).unwrap_or_else(|e| panic!("systemd-analyze verify: {e}"));

    // The agent tells systemd when it is ready and pets the watchdog.
    assert_eq!(unit_value(&unit, "Type"), Some("notify"));
    assert!(
        unit_value(&unit, "WatchdogSec").is_some(),
        "no WatchdogSec="
    );
    let args = exec_start(&unit);
    assert!(
        args.iter().any(|a| a == "--admin"),
        "ExecStart has no --admin: {args:?}"
    );
    assert_agent_accepts(&args);
}

/// The agent's own command-line parser accepts `argv` (the program, then its arguments), so a
/// renamed or removed flag breaks this test rather than a deployment.
fn assert_agent_accepts<S: AsRef<str>>(argv: &[S]) {
    use clap::Parser as _;
    let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    if let Err(e) = spiffe_aws_agent::cli::Cli::try_parse_from(&argv) {
        panic!("the agent refuses {argv:?}:\n{e}");
    }
}

#[test]
fn systemd_unit_is_hardened() {
    // Overall exposure as `systemd-analyze security` rates it, 0 (best) to 10; the unit is at
    // 1.5 and a change that loosens it past 2.0 fails here. (--threshold is in tenths.)
    let root = scratch_root(&shipped_unit(), true);
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(format!("--root={}", root.path().display()))
        .arg(UNIT));
    assert!(
        out.status.success(),
        "systemd-analyze security:\n{}",
        text(&out)
    );
}

#[test]
fn a_broken_unit_fails_the_verification() {
    let unit = shipped_unit();
    // The binary not where ExecStart says.
    let root = scratch_root(&unit, false);
    let err = verify_unit(root.path()).unwrap_err();
    assert!(err.contains("not executable"), "{err}");
    // A misspelt key and a bad value: systemd only warns and skips the line, still exit 0.
    for (from, to, expect) in [
        ("WatchdogSec=", "WatchDogSec=", "Unknown key"),
        ("Type=notify", "Type=notfy", "Failed to parse service type"),
    ] {
        let broken = unit.replacen(from, to, 1);
        assert_ne!(broken, unit);
        let root = scratch_root(&broken, true);
        let err = verify_unit(root.path()).unwrap_err();
        assert!(err.contains(expect), "{err}");
    }
}

#[test]
fn sysusers_entry_creates_the_unit_user_and_the_group_workloads_join() {
    let unit = shipped_unit();
    let user = unit_value(&unit, "User").expect("User=");
    let group = unit_value(&unit, "Group").expect("Group=");
    assert!(
        unit_value(&unit, "DynamicUser").is_none(),
        "a dynamic user's group cannot be joined by workloads"
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let out = run(Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo().join("deploy/systemd/spiffe-aws-agent.sysusers")));
    assert!(out.status.success(), "systemd-sysusers:\n{}", text(&out));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let groups = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("no user {user} in\n{passwd}"));
    let fields: Vec<&str> = entry.split(':').collect();
    let gid = groups
        .lines()
        .find(|l| l.starts_with(&format!("{group}:")))
        .unwrap_or_else(|| panic!("no group {group} in\n{groups}"))
        .split(':')
        .nth(2)
        .unwrap();
    assert_eq!(fields[3], gid, "the user's primary group is {group}");
    // A system user that cannot log in.
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "{entry}");
    assert!(fields[6].ends_with("nologin"), "{entry}");
}

#[test]
fn readme_install_puts_the_binary_where_the_unit_runs_it() {
    // `cargo install --root R` installs R/bin/spiffe-aws-agent.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let install = readme
        .lines()
        .find(|l| l.trim_start().starts_with("cargo install --path ."))
        .expect("README has a `cargo install --path .` line");
    let words: Vec<&str> = install.split_whitespace().collect();
    let root = words
        .iter()
        .position(|w| *w == "--root")
        .map(|i| words[i + 1])
        .expect("the README's cargo install names --root");
    assert_eq!(
        exec_start(&shipped_unit())[0],
        format!("{root}/bin/spiffe-aws-agent"),
        "README: {install}"
    );
}

// ---- Kubernetes and Helm ----------------------------------------------------------------

/// The oldest and the newest Kubernetes versions the manifests are validated against (the
/// newest is the last that kubernetes-validate bundles schemas for).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30", "1.37"];

fn kubernetes_validate() -> PathBuf {
    let tool = common::python().with_file_name("kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: run scripts/test.sh (it installs tests/requirements.txt into the venv)",
        tool.display()
    );
    tool
}

/// `kubernetes-validate --strict` (unknown fields are errors) for every version in
/// [`KUBERNETES_VERSIONS`]: Ok, or what it said.
fn validate_manifests(files: &[PathBuf]) -> Result<(), String> {
    for version in KUBERNETES_VERSIONS {
        let out = run(Command::new(kubernetes_validate())
            .args(["--strict", "--quiet", "--kubernetes-version", version])
            .args(files));
        if !out.status.success() {
            return Err(format!("Kubernetes {version}: {}", text(&out)));
        }
    }
    Ok(())
}

fn plain_manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of a YAML stream, as JSON (PyYAML from the venv does the YAML).
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let out = run(Command::new(common::python())
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
         print(json.dumps(docs))",
        )
        .arg(path));
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// What every agent DaemonSet (plain or rendered) must have.
fn assert_agent_daemonset(ds: &serde_json::Value, image: &str) {
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(pod["tolerations"].as_array().is_some_and(|t| !t.is_empty()));
    let agent = &pod["containers"][0];
    assert_eq!(agent["image"], image);
    let args: Vec<&str> = agent["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_agent_accepts(&[&["spiffe-aws-agent"], args.as_slice()].concat());
    let admin = args
        .iter()
        .find_map(|a| a.strip_prefix("--admin="))
        .unwrap_or_else(|| panic!("no --admin in {args:?}"));
    let port: u16 = admin.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(agent["ports"][0]["containerPort"], port);
    assert_eq!(agent["ports"][0]["name"], "admin");
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(agent[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(agent[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let uid = &agent["securityContext"]["runAsUser"];
    assert_eq!(agent["securityContext"]["runAsNonRoot"], true);
    assert!(agent["resources"]["requests"]["memory"].is_string());
    // The hostPath socket directory is the kubelet's (root, 0755) until the init container
    // hands it to the agent's uid.
    let init = &pod["initContainers"][0]["command"];
    let script = init[init.as_array().unwrap().len() - 1].as_str().unwrap();
    assert!(
        script.contains(&format!("chown {uid}:")),
        "the init container does not chown to {uid}: {script}"
    );
}

/// The agent.toml of a ConfigMap, parsed as the agent parses it.
fn parse_config_map(cm: &serde_json::Value) -> spiffe_aws_agent::agent::AgentPlan {
    let toml = cm["data"]["agent.toml"].as_str().expect("agent.toml");
    let clock: std::sync::Arc<dyn spiffe_aws_agent::Clock> =
        std::sync::Arc::new(spiffe_aws_agent::TokioClock::new());
    spiffe_aws_agent::plan::file::parse(Path::new("agent.toml"), toml, &clock)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

#[test]
fn kubernetes_manifests_are_valid() {
    let files = plain_manifests();
    assert!(files.len() >= 2, "{files:?}");
    validate_manifests(&files).unwrap_or_else(|e| panic!("{e}"));

    let docs = yaml_documents(&repo().join("deploy/kubernetes/daemonset.yaml"));
    assert_eq!(
        find(&docs, "Namespace")["metadata"]["name"],
        "spiffe-aws-agent"
    );
    find(&docs, "ServiceAccount");
    assert_agent_daemonset(
        find(&docs, "DaemonSet"),
        &format!("spiffe-aws-agent:{VERSION}"),
    );
    let plan = parse_config_map(find(&docs, "ConfigMap"));
    assert!(plan.per_caller.is_some());

    let workload = yaml_documents(&repo().join("deploy/kubernetes/example-workload.yaml"));
    let pod = find(&workload, "Pod");
    assert_eq!(pod["spec"]["serviceAccountName"], "orders");
    let config = find(&workload, "ConfigMap")["data"]["config"]
        .as_str()
        .unwrap();
    assert!(config.contains("credential-process --agent /run/spiffe-aws-agent/agent.sock"));
}

#[test]
fn an_invalid_manifest_fails_the_validation() {
    let dir = tempfile::tempdir().unwrap();
    let daemonset =
        std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    for (from, to, expect) in [
        // A misspelt field (strict validation).
        (
            "readOnlyRootFilesystem",
            "readOnlyRootFileSystem",
            "readOnlyRootFileSystem",
        ),
        // A value of the wrong type.
        (
            "containerPort: 9913",
            "containerPort: admin",
            "containerPort",
        ),
    ] {
        let broken = daemonset.replacen(from, to, 1);
        assert_ne!(broken, daemonset);
        let file = dir.path().join("broken.yaml");
        std::fs::write(&file, broken).unwrap();
        let err = validate_manifests(&[file]).unwrap_err();
        assert!(err.contains(expect), "{err}");
    }
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/spiffe-aws-agent")
}

fn helm(args: &[&str]) -> Output {
    run(Command::new(common::peers::bin("helm")).args(args))
}

#[test]
fn helm_chart_lints_and_renders_valid_manifests() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let values = format!("{chart}/ci/example-values.yaml");
    let out = helm(&["lint", "--strict", chart, "--values", &values]);
    assert!(out.status.success(), "helm lint:\n{}", text(&out));

    let out = helm(&[
        "template",
        "aws",
        chart,
        "--namespace",
        "spiffe-aws-agent",
        "--values",
        &values,
    ]);
    assert!(out.status.success(), "helm template:\n{}", text(&out));
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(&rendered, &out.stdout).unwrap();
    validate_manifests(std::slice::from_ref(&rendered)).unwrap_or_else(|e| panic!("{e}"));

    let docs = yaml_documents(&rendered);
    let ds = find(&docs, "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], "spiffe-aws-agent");
    assert_agent_daemonset(
        ds,
        &format!("registry.example.com/spiffe-aws-agent:{VERSION}"),
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["securityContext"]["supplementalGroups"],
        serde_json::json!([1500]),
        "the group that reaches SPIRE's admin socket"
    );
    let sa = find(&docs, "ServiceAccount")["metadata"]["name"].clone();
    assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], sa);

    // The values became an agent.toml the agent accepts, in per-caller mode.
    let plan = parse_config_map(find(&docs, "ConfigMap"));
    let per_caller = plan.per_caller.expect("per-caller mode");
    assert_eq!(
        per_caller.admin_socket,
        "unix:///run/spire/admin-sockets/admin.sock"
    );
    let names: Vec<&str> = plan.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["orders", "services"]);
    assert_eq!(
        plan.roles[1].spiffe_id.as_deref(),
        Some("spiffe://example.org/service/*")
    );
    assert!(plan.roles.iter().all(|r| r.bound_to.is_some()));
}

#[test]
fn helm_chart_refuses_values_without_roles_or_arns() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let out = helm(&["template", "aws", chart]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("roles needs at least one role"),
        "{}",
        text(&out)
    );
    let out = helm(&[
        "template",
        "aws",
        chart,
        "--set",
        "roles[0].name=orders,roles[0].roleArn=arn:aws:iam::123456789012:role/orders,roles[0].spiffeId=spiffe://example.org/service/orders",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("trustAnchorArn"), "{}", text(&out));
}

#[test]
fn image_tags_and_chart_version_follow_the_crate_version() {
    let chart = std::fs::read_to_string(chart().join("Chart.yaml")).unwrap();
    assert!(
        chart.contains(&format!("\nversion: {VERSION}\n")),
        "{chart}"
    );
    assert!(
        chart.contains(&format!("\nappVersion: \"{VERSION}\"\n")),
        "{chart}"
    );
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("org.opencontainers.image.version=\"{VERSION}\"")),
        "Dockerfile label"
    );
    for file in plain_manifests() {
        let yaml = std::fs::read_to_string(&file).unwrap();
        for line in yaml.lines().filter(|l| l.contains("spiffe-aws-agent:")) {
            let line = line.trim_start_matches([' ', '#']);
            if line.starts_with("image:") || line.starts_with("COPY") {
                assert!(
                    line.contains(&format!("spiffe-aws-agent:{VERSION}")),
                    "{}: {line}",
                    file.display()
                );
            }
        }
    }
}

// ---- the container image ----------------------------------------------------------------

/// `target/image` (scripts/build-image.sh), unpacked by umoci into a runtime bundle:
/// `bundle/rootfs` and `bundle/config.json` (the OCI runtime config derived from the image's).
fn unpack_image(bundle: &Path) -> serde_json::Value {
    let layout = repo().join("target/image");
    assert!(
        layout.join("index.json").exists(),
        "{} is missing: run scripts/build-image.sh (scripts/test.sh does)",
        layout.display()
    );
    let out = run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{VERSION}", layout.display()))
        .arg(bundle));
    assert!(out.status.success(), "umoci unpack:\n{}", text(&out));
    serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap()
}

/// Runs `argv` (the image's entrypoint and arguments) inside `rootfs` as `uid:gid`.
fn run_in(rootfs: &Path, uid: u64, gid: u64, argv: &[String]) -> Output {
    run(Command::new("chroot")
        .arg(format!("--userspec={uid}:{gid}"))
        .arg(rootfs)
        .args(argv)
        .env_clear()
        // chroot is found on this PATH; inside the root it is the image's (/usr/local/bin).
        .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_its_static_binary_from_its_own_root_file_system() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "unpacking the image and chroot need root (as in CI)"
    );
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let config = unpack_image(&bundle);
    let rootfs = bundle.join("rootfs");

    // The image's process: the agent as 10001:10001, its default command `run --config ...`.
    let process = &config["process"];
    assert_eq!(process["user"]["uid"], 10001);
    assert_eq!(process["user"]["gid"], 10001);
    let args: Vec<String> = process["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[..2], ["/usr/local/bin/spiffe-aws-agent", "run"]);
    let entrypoint = args[0].clone();

    // Nothing in the image but the binary and a few files: no loader, no shared library.
    let binary = rootfs.join(entrypoint.trim_start_matches('/'));
    let headers = run(Command::new("readelf").arg("-l").arg(&binary));
    assert!(headers.status.success(), "{}", text(&headers));
    assert!(
        !text(&headers).contains("program interpreter"),
        "the image's binary is dynamically linked"
    );
    for file in [
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/nsswitch.conf",
    ] {
        assert!(rootfs.join(file).is_file(), "{file} missing from the image");
    }
    assert!(!rootfs.join("bin/sh").exists() && !rootfs.join("lib").exists());

    let out = run_in(
        &rootfs,
        10001,
        10001,
        &[entrypoint.clone(), "--version".into()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(VERSION), "{}", text(&out));

    // One exchange from inside the image's root: the Workload API double's socket and the
    // Roles Anywhere double's CA are placed in the root as a runtime would mount them, the
    // double is reached as `localhost` through the image's static glibc (its built-in files
    // service and the /etc/hosts a runtime provides), over rustls, as uid 10001.
    std::fs::write(rootfs.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let spire_dir = rootfs.join("run/spire");
    std::fs::create_dir_all(&spire_dir).unwrap();
    let svids = vec![common::stack::svid_from_files(
        pki::ORDERS_SPIFFE_ID,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )];
    let workload_api =
        WorkloadApiDouble::start(spire_dir.join("agent.sock"), svids, pki::root_bundle_der())
            .await
            .expect("workload API double");
    let rolesanywhere = RolesAnywhereDouble::start(RolesAnywhereDoubleConfig::default())
        .await
        .expect("roles anywhere double");
    std::fs::write(rootfs.join("run/ra-ca.pem"), RolesAnywhereDouble::ca_pem()).unwrap();
    for path in [rootfs.join("run"), spire_dir.clone()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        spire_dir.join("agent.sock"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    assert!(rolesanywhere.endpoint().starts_with("https://localhost:"));
    let argv: Vec<String> = [
        entrypoint.as_str(),
        "credential-process",
        "--workload-api-socket",
        "unix:///run/spire/agent.sock",
        "--trust-anchor-arn",
        DEV_TRUST_ANCHOR_ARN,
        "--profile-arn",
        DEV_PROFILE_ARN,
        "--role-arn",
        DEV_ROLE_ARN_ORDERS,
        "--endpoint",
        &rolesanywhere.endpoint(),
        "--ca-bundle",
        "/run/ra-ca.pem",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let exchange = |rootfs: PathBuf| {
        let argv = argv.clone();
        let rolesanywhere = &rolesanywhere;
        async move {
            let out = tokio::task::spawn_blocking(move || run_in(&rootfs, 10001, 10001, &argv))
                .await
                .unwrap();
            let json = common::stack::parse_process_output(&out);
            let key = json["AccessKeyId"].as_str().unwrap();
            let session = rolesanywhere
                .session_for_access_key(key)
                .expect("the double issued these credentials");
            assert_eq!(session.spiffe_id.as_deref(), Some(pki::ORDERS_SPIFFE_ID));
        }
    };
    exchange(rootfs.clone()).await;
    assert!(workload_api.fetch_x509_svid_calls() > 0);

    // And through the static glibc's built-in dns service: no /etc/hosts, a resolv.conf
    // naming a resolver on 127.0.0.1 that answers every A query with 127.0.0.1.
    std::fs::remove_file(rootfs.join("etc/hosts")).unwrap();
    std::fs::write(rootfs.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let resolver = tokio::net::UdpSocket::bind("127.0.0.1:53")
        .await
        .expect("a DNS responder on 127.0.0.1:53 (root, and no local resolver on the port)");
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = answered.clone();
    let responder = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = resolver.recv_from(&mut buf).await {
            if let Some(reply) = dns_reply_loopback(&buf[..n]) {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = resolver.send_to(&reply, peer).await;
            }
        }
    });
    exchange(rootfs.clone()).await;
    responder.abort();
    assert!(
        answered.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no DNS query was made"
    );
}

/// A DNS reply to `query` (one question): for type A, one answer 127.0.0.1; otherwise none.
fn dns_reply_loopback(query: &[u8]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += usize::from(query[end]) + 1;
    }
    let question = query.get(12..end + 5)?;
    let qtype = u16::from_be_bytes([query[end + 1], query[end + 2]]);
    let answers: u16 = if qtype == 1 { 1 } else { 0 };
    let mut reply = Vec::with_capacity(64);
    reply.extend_from_slice(&query[..2]); // the query's id
    reply.extend_from_slice(&[0x81, 0x80, 0, 1]); // response, recursion; one question
    reply.extend_from_slice(&answers.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if qtype == 1 {
        // Name (pointer to the question), type A, class IN, TTL 60, 4 bytes, 127.0.0.1.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(reply)
}
