//! `spiffe-aws-agent inspect`: what IAM Roles Anywhere will see in an identity, before
//! anything is sent to AWS.
//!
//! For each SVID of the configured source (the Workload API, or certificate files) it reports
//! the SPIFFE ID, the serial number in decimal (the SigV4-X509 credential and the default
//! role session name), validity, key type, the chain sent in `X-Amz-X509-Chain`, the principal
//! tags of Roles Anywhere's default attribute mapping (subject and issuer attributes, the
//! first DNS and URI SAN; values checked against the service's limits by
//! [`crate::rolesanywhere::session_tags`], the same check the exchange makes) and whether the
//! chain leads to a trust anchor certificate. Problems are findings, not errors: an expired
//! certificate is reported like everything else, and [`Report::usable`] says whether Roles
//! Anywhere would accept every SVID shown.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ::time::OffsetDateTime;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::display::rfc3339;
use crate::identity::key::{self, SigningKey};
use crate::identity::workload_api::{self, WorkloadApiError};
use crate::identity::{files, IdentityError, MAX_INTERMEDIATES};
use crate::rolesanywhere::session_tags;

/// Where the certificates to inspect come from.
#[derive(Debug, Clone)]
pub enum InspectSource {
    /// Every SVID the Workload API gives this process (or the one with this ID or hint).
    WorkloadApi {
        address: String,
        spiffe_id: Option<String>,
        timeout: Duration,
    },
    /// A certificate file (the leaf, optionally followed by its chain), with or without its
    /// key.
    Files {
        certificate: PathBuf,
        private_key: Option<PathBuf>,
        intermediates: Option<PathBuf>,
    },
}

/// What to inspect and against which trust anchor.
#[derive(Debug, Clone)]
pub struct InspectSpec {
    pub source: InspectSource,
    /// PEM CA certificates a Roles Anywhere trust anchor holds. Without it, Workload API
    /// SVIDs are checked against the bundle of their own trust domain.
    pub trust_anchor_cert: Option<PathBuf>,
}

/// Why nothing could be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    WorkloadApi(#[from] WorkloadApiError),
    #[error("the certificate {which} is not valid X.509: {reason}")]
    Malformed { which: String, reason: String },
}

/// Everything found, for text or JSON output.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where the certificates came from.
    pub source: String,
    pub svids: Vec<SvidReport>,
}

impl Report {
    /// Whether every SVID shown has no problem (what `inspect`'s exit status reports).
    pub fn usable(&self) -> bool {
        !self.svids.is_empty() && self.svids.iter().all(|s| s.problems.is_empty())
    }
}

/// One certificate (an SVID) and its chain.
#[derive(Debug, Serialize)]
pub struct SvidReport {
    pub spiffe_id: Option<String>,
    /// The Workload API's hint for this SVID, when it sent one.
    pub hint: Option<String>,
    pub subject: String,
    pub issuer: String,
    /// Decimal, as Roles Anywhere uses it (SigV4-X509 credential, default session name).
    pub serial: String,
    pub serial_hex: String,
    pub not_before: String,
    pub not_after: String,
    /// `valid`, `expired` or `not yet valid`, at the time of the inspection.
    pub validity: &'static str,
    /// e.g. `ECDSA P-256`, or what Roles Anywhere would refuse.
    pub key_type: String,
    /// Whether the private key matches the certificate; `None` when no key was given.
    pub private_key: Option<String>,
    /// The intermediates sent in `X-Amz-X509-Chain`, leaf excluded.
    pub chain: Vec<ChainCert>,
    /// `aws:PrincipalTag/<key>` = value, with the reason a value would fail CreateSession.
    pub principal_tags: Vec<PrincipalTag>,
    /// The session's source identity: the subject's CN.
    pub source_identity: Option<String>,
    pub trust_anchor: Option<AnchorCheck>,
    /// What would make Roles Anywhere (or this agent) refuse the certificate.
    pub problems: Vec<String>,
    /// What works but may surprise (e.g. no SPIFFE ID in a certificate file).
    pub warnings: Vec<String>,
}

/// One intermediate certificate.
#[derive(Debug, Serialize)]
pub struct ChainCert {
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    pub ca: bool,
}

/// One session tag.
#[derive(Debug, Serialize)]
pub struct PrincipalTag {
    pub key: String,
    pub value: String,
    pub problem: Option<String>,
}

/// Whether the chain leads to the trust anchor.
#[derive(Debug, Serialize)]
pub struct AnchorCheck {
    /// What was checked against (a file, or the Workload API's bundle).
    pub anchor: String,
    pub chains: bool,
    /// Subjects from the leaf up to the anchor when it chains, as far as it got otherwise.
    pub path: Vec<String>,
    pub problem: Option<String>,
}

/// Inspects the source at time `now`.
pub async fn inspect(spec: &InspectSpec, now: SystemTime) -> Result<Report, InspectError> {
    let anchors = match &spec.trust_anchor_cert {
        Some(path) => Some((
            format!("trust anchor certificate {}", path.display()),
            files::read_certificates(path, "trust anchor certificate")?,
        )),
        None => None,
    };
    match &spec.source {
        InspectSource::Files {
            certificate,
            private_key,
            intermediates,
        } => {
            let chain = files::read_chain(certificate, intermediates.as_deref())?;
            let key = private_key.as_deref().map(files::read_key);
            let input = Input {
                chain: &chain,
                key: key.as_ref(),
                hint: None,
                from_workload_api: false,
                anchors: anchors.as_ref().map(|(n, c)| (n.as_str(), c.as_slice())),
            };
            Ok(Report {
                source: format!("certificate file {}", certificate.display()),
                svids: vec![inspect_one(&input, now)?],
            })
        }
        InspectSource::WorkloadApi {
            address,
            spiffe_id,
            timeout,
        } => {
            let context = workload_api::fetch_context(address, *timeout).await?;
            let svids: Vec<_> = context.svids().iter().map(|s| s.as_ref().clone()).collect();
            let chosen: Vec<&spiffe::X509Svid> = match spiffe_id {
                None => svids.iter().collect(),
                Some(_) => vec![workload_api::select(address, &svids, spiffe_id.as_deref())?],
            };
            let mut out = Vec::new();
            for svid in chosen {
                let chain: Vec<Vec<u8>> = svid
                    .cert_chain()
                    .iter()
                    .map(|c| c.as_bytes().to_vec())
                    .collect();
                let key: Result<PrivateKeyDer<'static>, IdentityError> = Ok(PrivateKeyDer::Pkcs8(
                    PrivatePkcs8KeyDer::from(svid.private_key().as_bytes().to_vec()),
                ));
                let bundle: Option<(String, Vec<Vec<u8>>)> = match &anchors {
                    Some(_) => None,
                    None => context
                        .bundle_set()
                        .get(svid.spiffe_id().trust_domain())
                        .map(|b| {
                            (
                                format!(
                                    "the Workload API's bundle for {}",
                                    svid.spiffe_id().trust_domain()
                                ),
                                b.authorities()
                                    .iter()
                                    .map(|c| c.as_bytes().to_vec())
                                    .collect(),
                            )
                        }),
                };
                let anchors = anchors.as_ref().or(bundle.as_ref());
                let input = Input {
                    chain: &chain,
                    key: Some(&key),
                    hint: svid.hint(),
                    from_workload_api: true,
                    anchors: anchors.map(|(n, c)| (n.as_str(), c.as_slice())),
                };
                out.push(inspect_one(&input, now)?);
            }
            Ok(Report {
                source: format!("SPIFFE Workload API at {address}"),
                svids: out,
            })
        }
    }
}

/// One certificate chain to inspect.
struct Input<'a> {
    /// Leaf first.
    chain: &'a [Vec<u8>],
    key: Option<&'a Result<PrivateKeyDer<'static>, IdentityError>>,
    hint: Option<&'a str>,
    from_workload_api: bool,
    anchors: Option<(&'a str, &'a [Vec<u8>])>,
}

fn parse<'a>(der: &'a [u8], which: &str) -> Result<X509Certificate<'a>, InspectError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| InspectError::Malformed {
            which: which.to_owned(),
            reason: e.to_string(),
        })
}

fn inspect_one(input: &Input<'_>, now: SystemTime) -> Result<SvidReport, InspectError> {
    let (leaf_der, rest) = input
        .chain
        .split_first()
        .ok_or_else(|| InspectError::Malformed {
            which: "leaf".into(),
            reason: "no certificate was given".into(),
        })?;
    let leaf = parse(leaf_der, "leaf")?;
    let intermediates = rest
        .iter()
        .enumerate()
        .map(|(i, der)| parse(der, &format!("intermediate #{}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let now_dt = OffsetDateTime::from(now);

    let spiffe_id = crate::identity::spiffe_id_of(&leaf);
    if spiffe_id.is_none() {
        let what = "no SPIFFE ID (URI SAN spiffe://…): sessions get no SPIFFE ID in aws:PrincipalTag/x509SAN/URI";
        if input.from_workload_api {
            problems.push(what.to_owned());
        } else {
            warnings.push(what.to_owned());
        }
    }
    let leaf_validity = validity(&leaf, now_dt);
    match leaf_validity {
        "expired" => problems.push(format!(
            "expired at {} (now {})",
            rfc3339(leaf.validity().not_after.to_datetime()),
            rfc3339(now_dt)
        )),
        "not yet valid" => problems.push(format!(
            "not valid until {} (now {}): check the system clock",
            rfc3339(leaf.validity().not_before.to_datetime()),
            rfc3339(now_dt)
        )),
        _ => {}
    }
    if leaf.is_ca() {
        problems.push(
            "it is a CA certificate (basicConstraints CA:TRUE); Roles Anywhere needs an end-entity certificate"
                .into(),
        );
    }
    let spki = leaf.tbs_certificate.subject_pki.raw;
    let key_type = match key::public_key_kind(spki) {
        Ok(kind) => kind.to_string(),
        Err(e) => {
            problems.push(e.to_string());
            match e {
                key::KeyError::UnsupportedType(t) => format!("{t} (not accepted)"),
                key::KeyError::RsaTooSmall(bits) => format!("RSA-{bits} (too small)"),
                other => other.to_string(),
            }
        }
    };
    let private_key = input.key.map(|key| match key {
        Ok(der) => match SigningKey::from_der(der, spki) {
            Ok(_) => "matches the certificate".to_owned(),
            Err(e) => {
                problems.push(format!("private key: {e}"));
                format!("unusable: {e}")
            }
        },
        Err(e) => {
            problems.push(e.to_string());
            format!("unreadable: {e}")
        }
    });
    if intermediates.len() > MAX_INTERMEDIATES {
        problems.push(format!(
            "the chain has {} intermediates; at most {MAX_INTERMEDIATES} are sent",
            intermediates.len()
        ));
    }
    let mut chain = Vec::new();
    for (i, cert) in intermediates.iter().enumerate() {
        if !cert.is_ca() {
            problems.push(format!(
                "intermediate #{} ({}) is not a CA certificate",
                i + 1,
                name(cert)
            ));
        }
        if validity(cert, now_dt) != "valid" {
            problems.push(format!(
                "intermediate #{} ({}) is {}",
                i + 1,
                name(cert),
                validity(cert, now_dt)
            ));
        }
        chain.push(ChainCert {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after: rfc3339(cert.validity().not_after.to_datetime()),
            ca: cert.is_ca(),
        });
    }
    let principal_tags: Vec<PrincipalTag> = crate::identity::tag_attributes(&leaf)
        .into_iter()
        .map(|(key, value)| {
            let problem = session_tags::problem(&value).map(|p| p.to_string());
            if let Some(p) = &problem {
                problems.push(format!(
                    "aws:PrincipalTag/{key} = {value:?} cannot be a session tag ({p}): CreateSession would fail"
                ));
            }
            PrincipalTag {
                key,
                value,
                problem,
            }
        })
        .collect();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        if san
            .value
            .general_names
            .iter()
            .any(|n| matches!(n, GeneralName::DirectoryName(_)))
        {
            warnings.push(
                "the certificate has a directory name SAN: Roles Anywhere maps the first one to x509SAN/Name, which this inspection does not show"
                    .into(),
            );
        }
    }
    let source_identity = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let trust_anchor = match input.anchors {
        None => None,
        Some((label, anchors)) => {
            let anchors = anchors
                .iter()
                .enumerate()
                .map(|(i, der)| parse(der, &format!("trust anchor #{}", i + 1)))
                .collect::<Result<Vec<_>, _>>()?;
            let check = chain_to_anchor(&leaf, &intermediates, &anchors, now_dt, label);
            if let Some(p) = &check.problem {
                problems.push(format!("{label}: {p}"));
            }
            Some(check)
        }
    };
    let serial = &leaf.tbs_certificate.serial;
    Ok(SvidReport {
        spiffe_id,
        hint: input.hint.filter(|h| !h.is_empty()).map(str::to_owned),
        subject: leaf.subject().to_string(),
        issuer: leaf.issuer().to_string(),
        serial: serial.to_str_radix(10),
        serial_hex: serial.to_str_radix(16),
        not_before: rfc3339(leaf.validity().not_before.to_datetime()),
        not_after: rfc3339(leaf.validity().not_after.to_datetime()),
        validity: leaf_validity,
        key_type,
        private_key,
        chain,
        principal_tags,
        source_identity,
        trust_anchor,
        problems,
        warnings,
    })
}

fn validity(cert: &X509Certificate<'_>, now: OffsetDateTime) -> &'static str {
    if now < cert.validity().not_before.to_datetime() {
        "not yet valid"
    } else if now > cert.validity().not_after.to_datetime() {
        "expired"
    } else {
        "valid"
    }
}

fn name(cert: &X509Certificate<'_>) -> String {
    let s = cert.subject().to_string();
    if s.is_empty() {
        crate::identity::spiffe_id_of(cert).unwrap_or_else(|| "(empty subject)".into())
    } else {
        s
    }
}

/// Follows issuers from the leaf through the given intermediates (in any order) to one of
/// `anchors`, verifying each signature, as Roles Anywhere builds the path.
fn chain_to_anchor<'c>(
    leaf: &'c X509Certificate<'c>,
    intermediates: &'c [X509Certificate<'c>],
    anchors: &[X509Certificate<'_>],
    now: OffsetDateTime,
    label: &str,
) -> AnchorCheck {
    let mut path = vec![name(leaf)];
    let mut used = vec![false; intermediates.len()];
    let mut current = leaf;
    let fail = |path: Vec<String>, problem: String| AnchorCheck {
        anchor: label.to_owned(),
        chains: false,
        path,
        problem: Some(problem),
    };
    for _ in 0..=intermediates.len() {
        let issued_by = |issuer: &X509Certificate<'_>| {
            issuer.subject().as_raw() == current.issuer().as_raw()
                && current.verify_signature(Some(issuer.public_key())).is_ok()
        };
        if let Some(anchor) = anchors.iter().find(|a| issued_by(a)) {
            path.push(name(anchor));
            if validity(anchor, now) != "valid" {
                return fail(
                    path,
                    format!("the anchor {} is {}", name(anchor), validity(anchor, now)),
                );
            }
            return AnchorCheck {
                anchor: label.to_owned(),
                chains: true,
                path,
                problem: None,
            };
        }
        let next = intermediates
            .iter()
            .enumerate()
            .find(|(i, c)| !used[*i] && issued_by(c));
        match next {
            Some((i, cert)) => {
                used[i] = true;
                path.push(name(cert));
                current = cert;
            }
            None => {
                let named = anchors
                    .iter()
                    .chain(intermediates.iter())
                    .any(|c| c.subject().as_raw() == current.issuer().as_raw());
                let why = if named {
                    "the certificate named as its issuer did not sign it"
                } else {
                    "neither the chain nor the trust anchor holds its issuer"
                };
                return fail(
                    path,
                    format!(
                        "does not chain: {} was issued by \"{}\", and {why}",
                        name(current),
                        current.issuer()
                    ),
                );
            }
        }
    }
    fail(path, "does not chain: the chain loops".into())
}

/// The report as text, one SVID after another.
pub fn render_text(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let count = report.svids.len();
    let _ = writeln!(
        out,
        "{} SVID{} from the {}",
        count,
        if count == 1 { "" } else { "s" },
        report.source
    );
    for (i, s) in report.svids.iter().enumerate() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "SVID {} of {count}: {}",
            i + 1,
            s.spiffe_id.as_deref().unwrap_or("(no SPIFFE ID)")
        );
        let row = |out: &mut String, k: &str, v: &str| {
            let _ = writeln!(out, "  {k:<17}{v}");
        };
        if let Some(h) = &s.hint {
            row(&mut out, "hint", h);
        }
        row(&mut out, "subject", &s.subject);
        row(&mut out, "issuer", &s.issuer);
        row(
            &mut out,
            "serial",
            &format!(
                "{} (decimal, as Roles Anywhere uses it; hex {})",
                s.serial, s.serial_hex
            ),
        );
        row(
            &mut out,
            "validity",
            &format!("{} .. {} ({})", s.not_before, s.not_after, s.validity),
        );
        row(&mut out, "key", &s.key_type);
        if let Some(k) = &s.private_key {
            row(&mut out, "private key", k);
        }
        if s.chain.is_empty() {
            row(
                &mut out,
                "chain",
                "no intermediates (empty X-Amz-X509-Chain)",
            );
        } else {
            row(
                &mut out,
                "chain",
                &format!(
                    "{} intermediate(s) sent in X-Amz-X509-Chain:",
                    s.chain.len()
                ),
            );
            for c in &s.chain {
                let _ = writeln!(
                    out,
                    "                     {} (issuer {}; until {}{})",
                    c.subject,
                    c.issuer,
                    c.not_after,
                    if c.ca { "" } else { "; NOT a CA" }
                );
            }
        }
        if let Some(a) = &s.trust_anchor {
            let verdict = if a.chains {
                format!("chains to {}: {}", a.anchor, a.path.join(" -> "))
            } else {
                format!(
                    "DOES NOT chain to {}: {}",
                    a.anchor,
                    a.problem.as_deref().unwrap_or_default()
                )
            };
            row(&mut out, "trust anchor", &verdict);
        }
        let _ = writeln!(
            out,
            "  principal tags (aws:PrincipalTag/…, default attribute mapping):"
        );
        for t in &s.principal_tags {
            let _ = write!(out, "    {:<21}{}", t.key, t.value);
            if let Some(p) = &t.problem {
                let _ = write!(out, "   <- REFUSED: {p}");
            }
            let _ = writeln!(out);
        }
        if let Some(si) = &s.source_identity {
            row(
                &mut out,
                "source identity",
                &format!("{si} (the subject CN)"),
            );
        }
        for w in &s.warnings {
            row(&mut out, "note", w);
        }
        if s.problems.is_empty() {
            row(
                &mut out,
                "verdict",
                "usable: Roles Anywhere can exchange this SVID",
            );
        } else {
            for p in &s.problems {
                row(&mut out, "PROBLEM", p);
            }
        }
    }
    out
}

/// The report as pretty JSON.
pub fn render_json(report: &Report) -> String {
    #[derive(Serialize)]
    struct WithVerdict<'a> {
        usable: bool,
        #[serde(flatten)]
        report: &'a Report,
    }
    serde_json::to_string_pretty(&WithVerdict {
        usable: report.usable(),
        report,
    })
    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
