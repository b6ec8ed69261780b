//! `dev --once`: instead of printing lines that die with it, `dev` tries every way out of
//! the agent itself (the agent socket, IMDS, the container endpoint, the credentials file),
//! a one-shot `credential-process` exchange by hand, and `inspect` against the trust
//! anchor, and prints one line per check.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::agent::{self, OneShotPlan};
use crate::clock::Clock;
use crate::dev::rolesanywhere::RolesAnywhereDouble;
use crate::identity::IdentitySpec;
use crate::inspect::{InspectSource, InspectSpec};
use crate::rolesanywhere::Exchange;

/// What the checks need to reach.
pub(crate) struct Targets {
    pub(crate) role: String,
    pub(crate) spiffe_id: String,
    pub(crate) agent_socket: PathBuf,
    pub(crate) imds: Option<SocketAddr>,
    pub(crate) container: Option<SocketAddr>,
    pub(crate) container_token: PathBuf,
    pub(crate) credentials_file: PathBuf,
    pub(crate) workload_api: String,
    pub(crate) trust_anchor_pem: PathBuf,
}

/// One check's outcome: what was tried, and the access key it got or why it failed.
pub(crate) struct Outcome {
    pub(crate) what: String,
    pub(crate) result: Result<String, String>,
}

/// Runs every check; `exchange` is a fresh one for the by-hand `credential-process`.
pub(crate) async fn run(
    t: &Targets,
    exchange: Exchange,
    rolesanywhere: &RolesAnywhereDouble,
    clock: Arc<dyn Clock>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    let tagged = |key: &str| -> Result<String, String> {
        let session = rolesanywhere
            .session_for_access_key(key)
            .ok_or_else(|| format!("{key} was not issued by the Roles Anywhere double"))?;
        match session.spiffe_id.as_deref() {
            Some(id) if id == t.spiffe_id => {
                Ok(format!("{key}, session tagged x509SAN/URI = {id}"))
            }
            other => Err(format!(
                "{key}: session tagged x509SAN/URI = {other:?}, expected {}",
                t.spiffe_id
            )),
        }
    };
    let key_of = |json: &str| -> Result<String, String> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("not JSON ({e}): {json}"))?;
        v["AccessKeyId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no AccessKeyId in {json}"))
    };

    let result = crate::serve::agent_socket::fetch(&t.agent_socket, Some(&t.role))
        .await
        .map_err(|e| e.to_string())
        .and_then(|json| key_of(&json))
        .and_then(|k| tagged(&k));
    out.push(Outcome {
        what: format!(
            "credential-process --agent {} --role {}",
            t.agent_socket.display(),
            t.role
        ),
        result,
    });

    if let Some(addr) = t.imds {
        let result = imds(addr, &t.role)
            .await
            .and_then(|json| key_of(&json))
            .and_then(|k| tagged(&k));
        out.push(Outcome {
            what: format!("IMDS endpoint http://{addr}/ (token, then role {})", t.role),
            result,
        });
    }
    if let Some(addr) = t.container {
        let token_file = crate::serve::container::role_token_file(&t.container_token, &t.role);
        let result = match std::fs::read_to_string(&token_file) {
            Err(e) => Err(format!("cannot read {}: {e}", token_file.display())),
            Ok(token) => http(
                addr,
                &format!(
                    "GET /v1/credentials/{} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n",
                    t.role
                ),
            )
            .await
            .and_then(|json| key_of(&json))
            .and_then(|k| tagged(&k)),
        };
        out.push(Outcome {
            what: format!(
                "container endpoint http://{addr}/v1/credentials/{} with {}",
                t.role,
                token_file.display()
            ),
            result,
        });
    }
    out.push(Outcome {
        what: format!(
            "credentials file {} [default]",
            t.credentials_file.display()
        ),
        result: credentials_file_key(&t.credentials_file).and_then(|k| tagged(&k)),
    });

    let plan = OneShotPlan {
        identity: IdentitySpec::WorkloadApi {
            address: t.workload_api.clone(),
            spiffe_id: Some(t.spiffe_id.clone()),
            timeout: Duration::from_secs(10),
        },
        exchange,
    };
    let result = agent::one_shot(&plan, &*clock)
        .await
        .map_err(|e| e.to_string())
        .and_then(|creds| tagged(&creds.access_key_id));
    out.push(Outcome {
        what: "credential-process by hand (Workload API -> Roles Anywhere CreateSession)".into(),
        result,
    });

    let spec = InspectSpec {
        source: InspectSource::WorkloadApi {
            address: t.workload_api.clone(),
            spiffe_id: None,
            timeout: Duration::from_secs(10),
        },
        trust_anchor_cert: Some(t.trust_anchor_pem.clone()),
    };
    let result = match crate::inspect::inspect(&spec, clock.now()).await {
        Err(e) => Err(e.to_string()),
        Ok(report) if report.usable() => Ok(format!(
            "{} SVIDs, each chains to the trust anchor and maps to valid session tags",
            report.svids.len()
        )),
        Ok(report) => Err(report
            .svids
            .iter()
            .flat_map(|s| s.problems.iter().cloned())
            .collect::<Vec<_>>()
            .join("; ")),
    };
    out.push(Outcome {
        what: format!(
            "inspect --trust-anchor-cert {}",
            t.trust_anchor_pem.display()
        ),
        result,
    });
    out
}

/// The IMDSv2 dance: a token, then the role's credentials.
async fn imds(addr: SocketAddr, role: &str) -> Result<String, String> {
    let token = http(
        addr,
        &format!("PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .await?;
    http(
        addr,
        &format!("GET /latest/meta-data/iam/security-credentials/{role} HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// One HTTP/1.1 request to the agent; the body of a 200, else the status and body.
async fn http(addr: SocketAddr, request: &str) -> Result<String, String> {
    const MAX: u64 = 64 * 1024;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        stream
            .take(MAX)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{addr} did not answer within 10 s"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {text}"))?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status == "200" {
        Ok(body.to_owned())
    } else {
        Err(format!("HTTP {status}: {}", body.trim()))
    }
}

/// The access key of `[default]` in a credentials file.
fn credentials_file_key(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut in_default = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_default = line == "[default]";
        } else if in_default {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "aws_access_key_id" {
                    return Ok(v.trim().to_owned());
                }
            }
        }
    }
    Err(format!(
        "no aws_access_key_id in [default] of {}",
        path.display()
    ))
}
