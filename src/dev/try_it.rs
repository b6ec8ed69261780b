//! What `dev` prints for a newcomer to try while it runs: lines that work as printed.
//!
//! Every line that starts with `$ ` runs in `sh` as it is, in a clean environment (no AWS CLI,
//! no region configured, any `HOME`): the first ones need nothing but this binary and `curl`;
//! each `export` carries the region and is followed by a command that uses what it set; AWS
//! CLI lines appear only when an `aws` is on `PATH`, and always name the STS double's endpoint
//! so nothing reaches real AWS; Lattice lines appear only when a Python with botocore is found.
//! Lines of one block (between headings) belong to one shell; blocks are independent.

use std::path::{Path, PathBuf};

/// What the printed lines point at.
pub(crate) struct Facts {
    pub(crate) exe: String,
    pub(crate) region: String,
    pub(crate) workload_api: String,
    pub(crate) rolesanywhere_endpoint: String,
    pub(crate) ca_bundle: PathBuf,
    pub(crate) trust_anchor_pem: PathBuf,
    pub(crate) trust_anchor_arn: String,
    pub(crate) profile_arn: String,
    pub(crate) roles: Vec<(String, String, String)>,
    pub(crate) aws_endpoint: String,
    pub(crate) imds_url: String,
    pub(crate) container_url: String,
    pub(crate) container_token: PathBuf,
    pub(crate) agent_socket: PathBuf,
    pub(crate) by_hand_socket: PathBuf,
    pub(crate) aws_config: PathBuf,
    pub(crate) credentials_file: PathBuf,
    pub(crate) aws_cli: Option<PathBuf>,
    pub(crate) python: Option<String>,
    pub(crate) lattice_script: String,
}

/// Quotes `s` for `sh` when it needs it.
pub(crate) fn sh(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._:=@%+,-".contains(&b));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn p(path: &Path) -> String {
    sh(&path.display().to_string())
}

/// The lines, ready to print.
pub(crate) fn lines(f: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |s: String| out.push(s);
    let exe = sh(&f.exe);
    let region = format!("AWS_REGION={0} AWS_DEFAULT_REGION={0}", f.region);
    let (orders, orders_arn, orders_id) = f
        .roles
        .first()
        .cloned()
        .unwrap_or_else(|| ("orders".into(), String::new(), String::new()));
    let imds_token = |base: &str| {
        format!(
            "curl -sfg -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' {base}latest/api/token"
        )
    };
    let imds_get = |base: &str, role: &str| {
        format!(
            "curl -sfg -H \"X-aws-ec2-metadata-token: $({})\" {base}latest/meta-data/iam/security-credentials/{role}",
            imds_token(base)
        )
    };
    let aws_line = |push: &mut dyn FnMut(String)| {
        if let Some(aws) = &f.aws_cli {
            push(format!(
                "  $ {} sts get-caller-identity --endpoint-url {}",
                p(aws),
                sh(&f.aws_endpoint)
            ));
        }
    };

    push("Try it with nothing but this binary and curl (each line runs as printed):".into());
    push(format!(
        "  $ {exe} credential-process --agent {} --role {orders}",
        p(&f.agent_socket)
    ));
    push(format!("  $ {}", imds_get(&sh(&f.imds_url), &orders)));
    push(format!(
        "  $ curl -sfg -H \"Authorization: $(cat {})\" {}",
        p(&f.container_token),
        sh(&f.container_url)
    ));
    push(String::new());
    push(format!(
        "Point an AWS SDK{} at the agent, one way per shell (region {}; when several are set, SDKs take the credentials file first, then the credential_process profile, the container endpoint, IMDS):",
        if f.aws_cli.is_some() { " or the AWS CLI" } else { "" },
        f.region
    ));
    push("  IMDS endpoint:".into());
    push(format!(
        "  $ export AWS_EC2_METADATA_SERVICE_ENDPOINT={} {region}",
        sh(&f.imds_url)
    ));
    push(format!(
        "  $ {}",
        imds_get("\"${AWS_EC2_METADATA_SERVICE_ENDPOINT}\"", &orders)
    ));
    aws_line(&mut push);
    push("  container endpoint:".into());
    push(format!(
        "  $ export AWS_CONTAINER_CREDENTIALS_FULL_URI={} AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={} {region}",
        sh(&f.container_url),
        p(&f.container_token)
    ));
    push("  $ curl -sfg -H \"Authorization: $(cat \"$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\")\" \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\"".into());
    aws_line(&mut push);
    push("  credential_process profile (through the agent socket):".into());
    push(format!(
        "  $ export AWS_CONFIG_FILE={} AWS_PROFILE={orders}",
        p(&f.aws_config)
    ));
    push("  $ sed -n 's/^credential_process = //p' \"$AWS_CONFIG_FILE\" | head -n 1 | sh   # what an SDK runs for the profile".into());
    aws_line(&mut push);
    push("  credentials file (profile default):".into());
    push(format!(
        "  $ export AWS_SHARED_CREDENTIALS_FILE={} {region}",
        p(&f.credentials_file)
    ));
    push("  $ grep -A 3 '^\\[default\\]' \"$AWS_SHARED_CREDENTIALS_FILE\"".into());
    aws_line(&mut push);
    push(String::new());
    push("Or paste into ~/.aws/config (works while dev runs):".into());
    push(format!("  [profile {orders}]"));
    push(format!("  region = {}", f.region));
    push(format!(
        "  credential_process = {exe} credential-process --agent {} --role {orders}",
        p(&f.agent_socket)
    ));
    push(String::new());

    match &f.python {
        Some(python) => {
            push("Call the VPC Lattice service billing as each workload (exit 0: allowed, 3: denied by its auth policy on aws:PrincipalTag/x509SAN/URI):".into());
            for (name, verdict) in [(orders.as_str(), "200: allowed"), ("reviews", "403: denied")] {
                push(format!(
                    "  $ AWS_CONFIG_FILE={} {} {} --profile {name} --service billing --endpoint {}   # {verdict}",
                    p(&f.aws_config),
                    sh(python),
                    sh(&f.lattice_script),
                    sh(&f.aws_endpoint)
                ));
            }
        }
        None => push(format!(
            "(With Python and botocore, {} calls the VPC Lattice double as orders (allowed) and reviews (denied); dev prints those lines when it finds them.)",
            f.lattice_script
        )),
    }
    push(String::new());

    push("Run the agent by hand against these doubles:".into());
    push(format!(
        "  Workload API           {}  (--workload-api-socket)",
        f.workload_api
    ));
    push(format!(
        "  Roles Anywhere         {}  (--endpoint; its TLS CA: --ca-bundle {})",
        f.rolesanywhere_endpoint,
        f.ca_bundle.display()
    ));
    push(format!("  trust anchor ARN       {}", f.trust_anchor_arn));
    push(format!(
        "  trust anchor CA        {}  (what the trust anchor holds; for inspect --trust-anchor-cert)",
        f.trust_anchor_pem.display()
    ));
    push(format!("  profile ARN            {}", f.profile_arn));
    for (name, arn, id) in &f.roles {
        push(format!("  role {name:<17} {arn}  (SVID {id})"));
    }
    push(format!(
        "  agent socket           {}",
        f.agent_socket.display()
    ));
    let session = format!(
        "--workload-api-socket {} --spiffe-id {} --trust-anchor-arn {} --profile-arn {} --role-arn {} --endpoint {} --ca-bundle {}",
        sh(&f.workload_api),
        sh(&orders_id),
        sh(&f.trust_anchor_arn),
        sh(&f.profile_arn),
        sh(&orders_arn),
        sh(&f.rolesanywhere_endpoint),
        p(&f.ca_bundle)
    );
    push(format!("  $ {exe} credential-process {session}"));
    push(format!(
        "  $ {exe} inspect --workload-api-socket {} --trust-anchor-cert {}",
        sh(&f.workload_api),
        p(&f.trust_anchor_pem)
    ));
    push("  and an agent of your own (it runs until Ctrl-C), then read from it:".into());
    push(format!(
        "    {exe} run {session} --agent-socket {}",
        p(&f.by_hand_socket)
    ));
    push(format!(
        "    {exe} credential-process --agent {} --role {orders}",
        p(&f.by_hand_socket)
    ));
    out
}

/// `aws` on `PATH`, if any (an executable file).
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A Python that can import botocore: the repository's venv (`scripts/test.sh` makes it),
/// else `python3` from `PATH` if botocore is installed for it.
pub(crate) fn python_with_botocore() -> Option<String> {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let candidates = [Some(PathBuf::from(venv)), find_on_path("python3")];
    candidates.into_iter().flatten().find_map(|python| {
        let ok = std::process::Command::new(&python)
            .args(["-c", "import botocore"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| python.display().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh("/tmp/a-b_c.sock"), "/tmp/a-b_c.sock");
        assert_eq!(sh("http://[::1]:9911/"), "'http://[::1]:9911/'");
        assert_eq!(sh("it's"), r"'it'\''s'");
        assert_eq!(sh(""), "''");
    }
}
