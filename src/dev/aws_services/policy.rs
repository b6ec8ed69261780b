//! VPC Lattice auth policies: the subset of IAM policy syntax that matters for SPIFFE-based
//! service-to-service authorization, evaluated on the caller's `aws:PrincipalTag/x509SAN/URI`.
//!
//! Why a subset that refuses the rest: a policy file the double silently half-understood would
//! make tests pass that production would fail. Anything outside the subset (other condition
//! keys, `NotAction`, specific principals, resource ARNs) is a load error naming the service and
//! the problem, instead of being ignored.
//!
//! Supported: `Effect` Allow/Deny; `Principal` `"*"` (anyone, including unsigned callers) or
//! `{"AWS": "*"}` (any authenticated caller); `Action` `vpc-lattice-svcs:Invoke`, `*` or any
//! wildcard pattern (matched case-insensitively like IAM); `Resource` `"*"`; `Condition` with
//! `StringEquals`, `StringNotEquals`, `StringLike`, `StringNotLike` on
//! `aws:PrincipalTag/x509SAN/URI` with a string or a list of strings. Evaluation is IAM's:
//! an explicit Deny wins, otherwise an Allow is needed, otherwise the request is denied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// The condition key the double can evaluate (compared case-insensitively, as IAM does).
pub const PRINCIPAL_TAG_URI_KEY: &str = "aws:PrincipalTag/x509SAN/URI";
/// The one action a Lattice auth policy governs for service invocation.
pub const INVOKE_ACTION: &str = "vpc-lattice-svcs:Invoke";

/// The outcome of evaluating a service's auth policy for one caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A statement allows the call and none denies it.
    Allow,
    /// A Deny statement matched (it wins over any Allow).
    ExplicitDeny,
    /// No statement allows the call.
    ImplicitDeny,
    /// No such Lattice service is configured.
    UnknownService,
}

/// Why a policy document could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read the Lattice policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("the Lattice policy file {path} is not valid JSON: {source}")]
    Json {
        /// The file (empty when parsing a string).
        path: PathBuf,
        /// Where and why parsing failed.
        source: serde_json::Error,
    },
    /// The top level is not an object of service name to policy document.
    #[error(
        "the Lattice policy file must be a JSON object mapping service names to policy \
         documents, like {{\"billing\": {{\"Statement\": [...]}}}}"
    )]
    NotAnObject,
    /// One service's name or policy is unusable.
    #[error("Lattice service '{service}': {problem}")]
    Service {
        /// The service name as written in the file.
        service: String,
        /// What is wrong and, where useful, what is supported instead.
        problem: String,
    },
}

/// Auth policies by Lattice service name. The set of names is also the set of services the
/// Lattice double serves.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    services: BTreeMap<String, AuthPolicy>,
}

/// One service's parsed auth policy.
#[derive(Clone, Debug)]
struct AuthPolicy {
    statements: Vec<Statement>,
}

#[derive(Clone, Debug)]
struct Statement {
    effect: Effect,
    principal: PrincipalMatch,
    /// Lowercased action patterns.
    actions: Vec<String>,
    /// All must hold.
    conditions: Vec<Condition>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PrincipalMatch {
    /// `"*"`: every caller, signed or not.
    Anyone,
    /// `{"AWS": "*"}`: every authenticated caller.
    Authenticated,
}

/// The IAM condition operators supported (`String…` in policy text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Equals,
    NotEquals,
    Like,
    NotLike,
}

impl Operator {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "StringEquals" => Self::Equals,
            "StringNotEquals" => Self::NotEquals,
            "StringLike" => Self::Like,
            "StringNotLike" => Self::NotLike,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
struct Condition {
    operator: Operator,
    values: Vec<String>,
}

impl Condition {
    /// IAM semantics for a single-valued key: any value matching satisfies a positive operator;
    /// a negated operator holds when no value matches, including when the key is absent.
    fn holds(&self, actual: Option<&str>) -> bool {
        let any = |f: &dyn Fn(&str, &str) -> bool| {
            actual.is_some_and(|a| self.values.iter().any(|v| f(v, a)))
        };
        match self.operator {
            Operator::Equals => any(&|v, a| v == a),
            Operator::NotEquals => !any(&|v, a| v == a),
            Operator::Like => any(&|v, a| glob_match(v, a)),
            Operator::NotLike => !any(&|v, a| glob_match(v, a)),
        }
    }
}

/// Who is calling, as far as policy evaluation is concerned.
#[derive(Clone, Copy, Debug)]
pub(super) enum Caller<'a> {
    /// An unsigned request.
    Anonymous,
    /// A SigV4-authenticated caller and its `x509SAN/URI` principal tag, if the session has one.
    Authenticated(Option<&'a str>),
}

impl Policies {
    /// The built-in scenario: `billing` allows only `spiffe://example.org/service/orders`;
    /// `rates` allows `orders` and `reviews`.
    pub fn seed() -> Self {
        // The seed document is a constant checked by the tests; an empty set is only the
        // theoretical fallback.
        Self::from_value(&Self::seed_document()).unwrap_or_default()
    }

    /// The seed as a policy-file document, a starting point for custom files.
    pub fn seed_document() -> Value {
        let allow = |uris: Value| {
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": INVOKE_ACTION,
                    "Resource": "*",
                    "Condition": {"StringEquals": {PRINCIPAL_TAG_URI_KEY: uris}}
                }]
            })
        };
        json!({
            "billing": allow(json!("spiffe://example.org/service/orders")),
            "rates": allow(json!([
                "spiffe://example.org/service/orders",
                "spiffe://example.org/service/reviews"
            ])),
        })
    }

    /// Parses a policy file's text: `{"<service>": <policy document>, ...}`.
    pub fn from_json_str(text: &str) -> Result<Self, PolicyError> {
        let value: Value = serde_json::from_str(text).map_err(|source| PolicyError::Json {
            path: PathBuf::new(),
            source,
        })?;
        Self::from_value(&value)
    }

    /// Parses an already decoded policy file.
    pub fn from_value(value: &Value) -> Result<Self, PolicyError> {
        let Value::Object(map) = value else {
            return Err(PolicyError::NotAnObject);
        };
        let mut services = BTreeMap::new();
        for (name, doc) in map {
            let fail = |problem: String| PolicyError::Service {
                service: name.clone(),
                problem,
            };
            validate_service_name(name).map_err(fail)?;
            let policy = parse_policy(doc).map_err(fail)?;
            services.insert(name.clone(), policy);
        }
        Ok(Self { services })
    }

    /// Adds or replaces one service's policy document.
    pub fn insert(&mut self, service: &str, document: &Value) -> Result<(), PolicyError> {
        let fail = |problem: String| PolicyError::Service {
            service: service.to_owned(),
            problem,
        };
        validate_service_name(service).map_err(fail)?;
        let policy = parse_policy(document).map_err(fail)?;
        self.services.insert(service.to_owned(), policy);
        Ok(())
    }

    /// Whether the double serves this Lattice service.
    pub fn contains(&self, service: &str) -> bool {
        self.services.contains_key(service)
    }

    /// The configured service names, sorted.
    pub fn services(&self) -> Vec<&str> {
        self.services.keys().map(String::as_str).collect()
    }

    /// Evaluates `vpc-lattice-svcs:Invoke` on `service` for an authenticated caller whose
    /// `aws:PrincipalTag/x509SAN/URI` is `principal_tag_uri` (absent when the session has no
    /// SPIFFE ID).
    pub fn evaluate(&self, service: &str, principal_tag_uri: Option<&str>) -> Decision {
        self.evaluate_caller(service, Caller::Authenticated(principal_tag_uri))
    }

    pub(super) fn evaluate_caller(&self, service: &str, caller: Caller<'_>) -> Decision {
        let Some(policy) = self.services.get(service) else {
            return Decision::UnknownService;
        };
        let tag = match caller {
            Caller::Anonymous => None,
            Caller::Authenticated(tag) => tag,
        };
        let mut allowed = false;
        for st in &policy.statements {
            let principal_ok = match (st.principal, caller) {
                (PrincipalMatch::Anyone, _) => true,
                (PrincipalMatch::Authenticated, Caller::Authenticated(_)) => true,
                (PrincipalMatch::Authenticated, Caller::Anonymous) => false,
            };
            let action_ok = st
                .actions
                .iter()
                .any(|a| glob_match(a, &INVOKE_ACTION.to_ascii_lowercase()));
            if !(principal_ok && action_ok && st.conditions.iter().all(|c| c.holds(tag))) {
                continue;
            }
            match st.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow => allowed = true,
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

/// Reads and parses a policy file (see [`Policies::from_value`] for the format).
pub fn load_policies(path: impl AsRef<Path>) -> Result<Policies, PolicyError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|source| PolicyError::Json {
        path: path.to_owned(),
        source,
    })?;
    Policies::from_value(&value)
}

/// Service names are routed from the first Host label up to `-` or `.`, so they must be
/// lowercase letters and digits only.
fn validate_service_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(
            "service names must be non-empty lowercase letters and digits (the Host label before \
             the first '-' or '.' selects the service)"
                .to_owned(),
        );
    }
    Ok(())
}

fn parse_policy(doc: &Value) -> Result<AuthPolicy, String> {
    let Value::Object(doc) = doc else {
        return Err("the policy must be a JSON object with a \"Statement\"".to_owned());
    };
    for key in doc.keys() {
        if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
            return Err(format!(
                "unsupported policy element \"{key}\" (supported: Version, Id, Statement)"
            ));
        }
    }
    if let Some(version) = doc.get("Version") {
        if version != "2012-10-17" && version != "2008-10-17" {
            return Err(format!("unsupported policy Version {version}"));
        }
    }
    let statements = match doc.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => return Err("\"Statement\" must be an object or a list of objects".to_owned()),
        None => return Err("the policy has no \"Statement\"".to_owned()),
    };
    let statements = statements
        .into_iter()
        .enumerate()
        .map(|(i, st)| parse_statement(st).map_err(|e| format!("statement {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AuthPolicy { statements })
}

fn parse_statement(st: &Value) -> Result<Statement, String> {
    let Value::Object(st) = st else {
        return Err("must be a JSON object".to_owned());
    };
    for key in st.keys() {
        if !matches!(
            key.as_str(),
            "Sid" | "Effect" | "Principal" | "Action" | "Resource" | "Condition"
        ) {
            return Err(format!(
                "unsupported element \"{key}\" (supported: Sid, Effect, Principal, Action, \
                 Resource, Condition)"
            ));
        }
    }
    let effect = match st.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        other => {
            return Err(format!(
                "\"Effect\" must be \"Allow\" or \"Deny\", got {}",
                other.map_or_else(|| "nothing".to_owned(), |s| format!("\"{s}\""))
            ))
        }
    };
    let principal = parse_principal(st.get("Principal"))?;
    let actions = string_or_list(st.get("Action"), "Action")?
        .into_iter()
        .map(|a| a.to_ascii_lowercase())
        .collect();
    let resources = string_or_list(st.get("Resource"), "Resource")?;
    if let Some(r) = resources.iter().find(|r| r.as_str() != "*") {
        return Err(format!(
            "Resource \"{r}\" is not supported; the double only evaluates \"Resource\": \"*\""
        ));
    }
    let conditions = match st.get("Condition") {
        None => Vec::new(),
        Some(Value::Object(block)) => parse_conditions(block)?,
        Some(_) => return Err("\"Condition\" must be a JSON object".to_owned()),
    };
    Ok(Statement {
        effect,
        principal,
        actions,
        conditions,
    })
}

fn parse_principal(p: Option<&Value>) -> Result<PrincipalMatch, String> {
    let unsupported = || {
        "\"Principal\" must be \"*\" or {\"AWS\": \"*\"} (specific principals are not supported; \
         use a Condition on aws:PrincipalTag/x509SAN/URI)"
            .to_owned()
    };
    match p {
        Some(Value::String(s)) if s == "*" => Ok(PrincipalMatch::Anyone),
        Some(Value::Object(m)) if m.len() == 1 => {
            let list = string_or_list(m.get("AWS"), "Principal.AWS").map_err(|_| unsupported())?;
            if list.iter().all(|s| s == "*") {
                Ok(PrincipalMatch::Authenticated)
            } else {
                Err(unsupported())
            }
        }
        None => Err("the statement has no \"Principal\"".to_owned()),
        Some(_) => Err(unsupported()),
    }
}

fn parse_conditions(block: &Map<String, Value>) -> Result<Vec<Condition>, String> {
    let mut out = Vec::new();
    for (op_name, keys) in block {
        let operator = Operator::parse(op_name).ok_or_else(|| {
            format!(
                "condition operator \"{op_name}\" is not supported (supported: StringEquals, \
                 StringNotEquals, StringLike, StringNotLike)"
            )
        })?;
        let Value::Object(keys) = keys else {
            return Err(format!("condition \"{op_name}\" must map keys to values"));
        };
        if keys.is_empty() {
            return Err(format!("condition \"{op_name}\" names no key"));
        }
        for (key, values) in keys {
            if !key.eq_ignore_ascii_case(PRINCIPAL_TAG_URI_KEY) {
                return Err(format!(
                    "condition key \"{key}\" is not supported (only {PRINCIPAL_TAG_URI_KEY})"
                ));
            }
            let values = string_or_list(Some(values), &format!("{op_name}.{key}"))?;
            out.push(Condition { operator, values });
        }
    }
    Ok(out)
}

/// A required element that is a string or a non-empty list of strings.
fn string_or_list(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("\"{what}\" must hold only strings, got {i}"))
            })
            .collect(),
        Some(other) => Err(format!(
            "\"{what}\" must be a string or a non-empty list of strings, got {other}"
        )),
        None => Err(format!("the statement has no \"{what}\"")),
    }
}

/// IAM `StringLike` matching: `*` is any run of characters (also empty), `?` exactly one.
pub(super) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}
