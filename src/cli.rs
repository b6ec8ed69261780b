//! The command line. Flag names match `aws_signing_helper` where the meaning is the same
//! (`--role-arn`, `--profile-arn`, `--trust-anchor-arn`, `--region`, `--session-duration`,
//! `--endpoint`, `--role-session-name`, `--certificate`, `--private-key`, `--intermediates`),
//! so switching is a change of binary name.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::identity::files::KeyPassword;
use crate::identity::DEFAULT_WORKLOAD_API_TIMEOUT;
use crate::rolesanywhere::exchange::{DEFAULT_SESSION_DURATION, DEFAULT_TIMEOUT};
use crate::serve::{DEFAULT_CONTAINER_LISTEN, DEFAULT_IMDS_LISTEN, DEFAULT_PROFILE};

/// Turns a SPIFFE identity (an X.509-SVID from SPIRE, or certificate files) into temporary
/// AWS credentials through IAM Roles Anywhere, or a JWT-SVID through STS
/// AssumeRoleWithWebIdentity.
#[derive(Debug, Parser)]
#[command(name = "spiffe-aws-agent", version, propagate_version = true)]
#[command(
    after_help = "Exit status: 0 on success, 1 when fetching credentials failed, 2 for invalid flags.\n\
Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=spiffe_aws_agent=debug) for more detail."
)]
pub struct Cli {
    /// `--debug` before the command, as aws-spiffe-workload-helper's root flag (the same as
    /// `--debug` after it).
    #[arg(long = "debug", hide = true)]
    pub debug_before_command: bool,

    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr: text, or json (one JSON object per line). Secrets are never
    /// logged in either.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The admin listener: health, readiness and metrics (`run` and `serve`).
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Health and metrics")]
pub struct AdminArgs {
    /// Serve GET /healthz (liveness), /readyz (credentials held for every role) and /metrics
    /// (Prometheus) on this address; without a value, 127.0.0.1:9913. Off by default (with
    /// --config: the file's [admin] section, which this flag replaces). Loopback only unless
    /// --admin-allow-remote.
    #[arg(long, value_name = "IP:PORT", num_args = 0..=1, default_missing_value = crate::serve::admin::DEFAULT_ADMIN_LISTEN)]
    pub admin: Option<String>,

    /// Let --admin listen on a non-loopback address, e.g. 0.0.0.0:9913 for Kubernetes
    /// probes and Prometheus scrapes: whoever reaches it sees role names, health and
    /// metrics (never credentials).
    #[arg(long, requires = "admin")]
    pub admin_allow_remote: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print AWS credentials as `credential_process` JSON (for ~/.aws/config).
    ///
    /// Gets an X.509 identity (from the SPIFFE Workload API, or from --certificate and
    /// --private-key), exchanges it with IAM Roles Anywhere CreateSession, prints
    /// {"Version":1,"AccessKeyId","SecretAccessKey","SessionToken","Expiration"} on stdout and
    /// exits 0. On failure it prints one line on stderr and exits non-zero.
    ///
    /// Also runs as `x509-credential-process` (aws-spiffe-workload-helper's name, with its
    /// flags: --workload-api-addr is --workload-api-socket).
    #[command(after_long_help = CREDENTIAL_PROCESS_EXAMPLES, visible_alias = "x509-credential-process")]
    CredentialProcess(Box<CredentialProcessArgs>),

    /// Print AWS credentials from a JWT-SVID as `credential_process` JSON (STS
    /// AssumeRoleWithWebIdentity).
    ///
    /// Fetches a JWT-SVID for --audience from the SPIFFE Workload API and exchanges it with
    /// STS AssumeRoleWithWebIdentity for --role-arn; the role trusts the IAM OIDC identity
    /// provider of the SPIRE trust domain (the SPIRE OIDC discovery provider's issuer, with the
    /// audience as a client ID). Prints
    /// {"Version":1,"AccessKeyId","SecretAccessKey","SessionToken","Expiration"} on stdout and
    /// exits 0; on failure one line on stderr and a non-zero exit. Takes the flags of
    /// aws-spiffe-workload-helper's jwt-credential-process.
    #[command(after_long_help = JWT_CREDENTIAL_PROCESS_EXAMPLES)]
    JwtCredentialProcess(Box<JwtCredentialProcessArgs>),

    /// Run the agent: keep credentials for one or more roles fresh and serve them.
    ///
    /// Exchanges at start, refreshes in the background before expiry (and at once when the
    /// SVID rotates), and serves through the IMDSv2-style endpoint, the container-credentials
    /// endpoint, a unix socket for `credential-process --agent`, and the credentials file.
    /// Clients never wait on SPIRE or Roles Anywhere; Roles Anywhere sees one CreateSession
    /// per role per refresh.
    ///
    /// Host mode (the default): these channels are host-level. Whoever reaches the IMDS or
    /// container endpoint, the socket or the file gets the host's roles, as EC2's IMDS serves
    /// the instance role (the container endpoint takes one token per role, in
    /// <token-file>.<role>). Per-caller mode (--spire-admin-socket, for shared nodes): the
    /// agent socket serves each calling process only the roles bound to its own SVIDs,
    /// exchanged with its own SVID; the TCP endpoints stay off unless configured, and are
    /// host-level even then.
    #[command(after_long_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),

    /// Serve credentials on an IMDSv2-style endpoint (drop-in for `aws_signing_helper serve`).
    ///
    /// Clients use it with AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9911/.
    Serve(Box<ServeArgs>),

    /// Keep a profile in the credentials file current (drop-in for `aws_signing_helper update`).
    ///
    /// Writes ~/.aws/credentials (or AWS_SHARED_CREDENTIALS_FILE) atomically with mode 0600,
    /// keeping every other profile and comment.
    Update(Box<UpdateArgs>),

    /// Show what IAM Roles Anywhere will see in an identity, without calling AWS.
    ///
    /// For each SVID from the Workload API (the same flags and SPIFFE_ENDPOINT_SOCKET as the
    /// other commands), or for --certificate (with or without --private-key): the SPIFFE ID,
    /// the serial number in decimal, validity, key type, the chain, the principal tags Roles
    /// Anywhere's default mapping derives (x509SAN/URI, x509Subject/CN, x509Issuer/CN, ...)
    /// with the service's limits checked, and whether the chain leads to --trust-anchor-cert
    /// (else, for Workload API SVIDs, to their trust domain's bundle). Exit status: 0 when
    /// every SVID shown is usable, 1 when one has a problem or nothing could be read, 2 for
    /// invalid flags.
    Inspect(Box<InspectArgs>),

    /// Print the version (as `aws_signing_helper version`).
    Version,

    /// Keep the default profile of a credentials file current (as aws-spiffe-workload-helper
    /// `x509-credential-file`; the same as `update --profile default` on that file).
    ///
    /// Unlike that helper, a failed exchange is retried with backoff instead of ending the
    /// daemon, and the file is written atomically with mode 0600, other profiles kept.
    X509CredentialFile(Box<X509CredentialFileArgs>),

    /// Write the default profile of a credentials file once and exit (as
    /// aws-spiffe-workload-helper `x509-credential-file-oneshot`).
    X509CredentialFileOneshot(Box<X509CredentialFileArgs>),

    /// Sign aws_signing_helper's fixed test string with a private key (as
    /// `aws_signing_helper sign-string`), to check a key and a digest.
    ///
    /// The string is "AWS Roles Anywhere Credential Helper Signing Test" || "1" ||
    /// SHA256("IAM RA" || public key) (the key's PKCS#1 RSAPublicKey DER or uncompressed EC
    /// point); stdin is not read. RSA signs PKCS#1 v1.5, ECDSA an ASN.1 DER signature. The
    /// key comes from --private-key, else from the --certificate file (PEM holding the key,
    /// or PKCS#12). Printed without a newline.
    SignString(Box<SignStringArgs>),

    /// Print a certificate's data as JSON (as `aws_signing_helper read-certificate-data`).
    ///
    /// {"keyType":"RSA"|"EC","certificateData":<base64 DER>,"serialNumber":<decimal>,
    /// "supportedAlgorithms":[...]} for the file's first PEM certificate (or a PKCS#12
    /// file's end-entity certificate), printed without a newline.
    ReadCertificateData(Box<ReadCertificateDataArgs>),

    /// Run the whole flow on this machine: doubles of SPIRE, Roles Anywhere, STS and VPC
    /// Lattice, and the agent with every server on.
    ///
    /// The Workload API double (unix socket) holds `orders` and `reviews` SVIDs; the Roles
    /// Anywhere double (HTTPS on loopback) verifies every signature; the STS and Lattice
    /// doubles (one HTTP listener) accept only SigV4 requests signed with credentials it
    /// issued. The agent keeps a role per SVID fresh and serves them by IMDS, the container
    /// endpoint, its socket and a credentials file. `dev` prints commands to try each way
    /// (with nothing but this binary and curl; AWS CLI lines when `aws` is on PATH), and what
    /// to pass to run `credential-process` or `run` by hand against the doubles. SVIDs rotate
    /// every 30 s until Ctrl-C; `dev --once` runs every check itself, prints the results and
    /// exits.
    #[cfg(feature = "dev")]
    Dev(Box<DevArgs>),

    /// (Not in this build: it was built without the `dev` feature.)
    #[cfg(not(feature = "dev"))]
    #[command(hide = true, disable_help_flag = true)]
    Dev {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        ignored: Vec<String>,
    },
}

const CREDENTIAL_PROCESS_EXAMPLES: &str = "\
Examples:

  In ~/.aws/config, with SPIRE (the agent socket from SPIFFE_ENDPOINT_SOCKET or the flag):

    [profile orders]
    credential_process = spiffe-aws-agent credential-process \\
        --workload-api-socket unix:///run/spire/agent/public/api.sock \\
        --trust-anchor-arn arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/<uuid> \\
        --profile-arn arn:aws:rolesanywhere:us-east-1:123456789012:profile/<uuid> \\
        --role-arn arn:aws:iam::123456789012:role/orders

  (credential_process must be on one line in the real file.)

  With certificate files, as aws_signing_helper takes them:

    spiffe-aws-agent credential-process --certificate cert.pem --private-key key.pem \\
        --intermediates chain.pem --trust-anchor-arn ... --profile-arn ... --role-arn ...";

const JWT_CREDENTIAL_PROCESS_EXAMPLES: &str = "\
Examples:

  In ~/.aws/config (credential_process on one line in the real file):

    [profile orders]
    credential_process = spiffe-aws-agent jwt-credential-process \\
        --workload-api-socket unix:///run/spire/agent/public/api.sock \\
        --audience sts.amazonaws.com --region us-east-1 \\
        --role-arn arn:aws:iam::123456789012:role/orders

  The role's trust policy: Principal {\"Federated\": \"arn:aws:iam::123456789012:oidc-provider/<issuer host>\"},
  Action sts:AssumeRoleWithWebIdentity, Condition StringEquals <issuer host>:aud = the audience
  and <issuer host>:sub = the workload's SPIFFE ID.

  Several SVIDs: pick one with --spiffe-id spiffe://example.org/service/orders (or --hint).";

/// Shown by `run --help`.
pub const RUN_EXAMPLES: &str = "\
Examples:

  One role from flags, every server on:
    spiffe-aws-agent run --trust-anchor-arn ARN --profile-arn ARN --role-arn ARN \\
        --imds --container --agent-socket --credentials-profile default

  Then, in clients (host mode: these channels serve the host's roles to whoever reaches them):
    AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9911/
    AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9912/v1/credentials/<role>
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/run/spiffe-aws-agent/container-token.<role>
    credential_process = spiffe-aws-agent credential-process --agent /run/spiffe-aws-agent/agent.sock --role <role>

  Per-caller mode on a shared node (each process gets only its own SVID's roles):
    spire_admin_socket = \"unix:///run/spire/agent/admin/admin.sock\"
    per_caller_idle_seconds = 900          # drop a caller identity's credentials when unused
    [[role]]
    name = \"services\"
    spiffe_id = \"spiffe://example.org/service/*\"   # required: who may have this role
    ...
    [agent_socket]
    path = \"/run/spiffe-aws-agent/agent.sock\"
  and in the workloads: credential_process = spiffe-aws-agent credential-process --agent /run/spiffe-aws-agent/agent.sock

  Several roles: a TOML file (run --config agent.toml):
    workload_api_socket = \"unix:///run/spire/agent/public/api.sock\"
    [[role]]
    name = \"orders\"
    trust_anchor_arn = \"arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/<uuid>\"
    profile_arn = \"arn:aws:rolesanywhere:us-east-1:123456789012:profile/<uuid>\"
    role_arn = \"arn:aws:iam::123456789012:role/orders\"
    spiffe_id = \"spiffe://example.org/service/orders\"   # optional: which SVID
    [[role]]                           # STS AssumeRoleWithWebIdentity with a JWT-SVID
    name = \"uploads\"
    exchange = \"web-identity\"
    audience = \"sts.amazonaws.com\"     # a client ID of the trust domain's IAM OIDC provider
    role_arn = \"arn:aws:iam::123456789012:role/uploads\"
    [imds]
    listen = [\"127.0.0.1:9911\"]
    [container]
    token_file = \"/run/spiffe-aws-agent/container-token\"   # role R's token: <token_file>.R
    [agent_socket]
    path = \"/run/spiffe-aws-agent/agent.sock\"
    [[credentials_file]]
    role = \"orders\"
    profile = \"default\"";

/// Where the X.509 identity comes from.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Identity (SPIFFE Workload API by default, or certificate files)")]
pub struct IdentityArgs {
    /// SPIFFE Workload API address: unix:///path/to/agent.sock or tcp://IP:port.
    /// (--workload-api-addr, aws-spiffe-workload-helper's name, is the same flag.)
    #[arg(
        long,
        value_name = "ADDRESS",
        env = "SPIFFE_ENDPOINT_SOCKET",
        visible_alias = "workload-api-addr"
    )]
    pub workload_api_socket: Option<String>,

    /// Use the SVID with this SPIFFE ID (or Workload API hint) when the workload has several.
    /// Default: the first SVID, the Workload API's default.
    #[arg(long, value_name = "SPIFFE_ID", conflicts_with = "certificate")]
    pub spiffe_id: Option<String>,

    /// Seconds to wait for the Workload API.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_WORKLOAD_API_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=300))]
    pub workload_api_timeout: u64,

    /// Certificate file instead of the Workload API: PEM (the leaf, optionally followed by
    /// its intermediates). Without --private-key, as aws_signing_helper takes it, the file
    /// holds the key too: PEM with both, or PKCS#12 (.p12/.pfx, opened with the empty
    /// password unless --pkcs8-password is given; its chain comes from the file). Or a
    /// PKCS#11 URI (RFC 7512) of a certificate in a token, e.g.
    /// 'pkcs11:token=ra;object=orders?pin-value=1234': the key is then found with the same
    /// URI unless --private-key names it.
    #[arg(long, value_name = "FILE|URI")]
    pub certificate: Option<PathBuf>,

    /// PEM private key for --certificate: PKCS#8, PKCS#1 RSA or SEC1 EC, or encrypted
    /// PKCS#8 with --pkcs8-password. Or a PKCS#11 URI of a key in a token (the certificate
    /// may then be a file, a URI, or omitted: it is looked for with the key's URI). RSA
    /// (2048+ bits), ECDSA P-256 and P-384 are supported.
    #[arg(long, value_name = "FILE|URI")]
    pub private_key: Option<PathBuf>,

    /// Password of an encrypted PKCS#8 --private-key (PBES2: PBKDF2 or scrypt, AES-CBC), or
    /// of a PKCS#12 --certificate.
    #[arg(long, value_name = "PASSWORD", requires = "certificate", value_parser = parse_password)]
    pub pkcs8_password: Option<KeyPassword>,

    /// PEM file with intermediate certificates, sent in X-Amz-X509-Chain.
    #[arg(long, value_name = "FILE")]
    pub intermediates: Option<PathBuf>,

    /// PKCS#11 provider library for pkcs11: URIs (default: the URI's module-path, else
    /// p11-kit-proxy.so, which reaches every provider registered with p11-kit).
    #[arg(long, value_name = "LIB")]
    pub pkcs11_lib: Option<PathBuf>,

    /// For a PKCS#11 key that asks for a PIN at every signature (CKA_ALWAYS_AUTHENTICATE):
    /// give it the token's user PIN instead of asking on the terminal.
    #[arg(long)]
    pub reuse_pin: bool,
}

/// A password flag's value, kept out of `Debug` output.
fn parse_password(s: &str) -> Result<KeyPassword, String> {
    Ok(KeyPassword::new(s.to_owned()))
}

/// What to ask Roles Anywhere for, and how to reach it.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "IAM Roles Anywhere")]
pub struct SessionArgs {
    /// Trust anchor ARN (its region is the default --region). Required unless --agent or --config.
    #[arg(long, value_name = "ARN")]
    pub trust_anchor_arn: Option<String>,

    /// Profile ARN. Required unless --agent or --config.
    #[arg(long, value_name = "ARN")]
    pub profile_arn: Option<String>,

    /// IAM role ARN to assume; it must be in the profile. Required unless --agent or --config.
    #[arg(long, value_name = "ARN")]
    pub role_arn: Option<String>,

    /// Signing region. Default: the trust anchor ARN's region.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// Roles Anywhere endpoint, e.g. https://rolesanywhere.us-east-1.amazonaws.com or a
    /// VPC endpoint. https only. Default: https://rolesanywhere.<region>.amazonaws.com, or as
    /// the AWS SDKs choose with AWS_USE_FIPS_ENDPOINT=true (rolesanywhere-fips.<region>.…)
    /// and AWS_USE_DUALSTACK_ENDPOINT=true (….<region>.api.aws); the signing region stays
    /// the region.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Extra PEM CA certificates to trust for the endpoint's TLS (added to the system roots).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// Session duration in seconds, 900..43200 (the profile may cap it lower).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SESSION_DURATION)]
    pub session_duration: u32,

    /// Role session name (2..64 of letters, digits and +=,.@_-). Default: the service
    /// uses the certificate's serial number.
    #[arg(long, value_name = "NAME")]
    pub role_session_name: Option<String>,

    /// Seconds to wait for Roles Anywhere.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,

    #[command(flatten)]
    pub compat: HelperCompatArgs,
}

/// `aws_signing_helper` flags taken so that its command lines run unchanged: the ones that
/// mean the same here, and the ones this build cannot honour, which fail with the reason
/// instead of clap's "unexpected argument".
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "aws_signing_helper compatibility")]
pub struct HelperCompatArgs {
    /// Log the signing process at debug level (as RUST_LOG=spiffe_aws_agent=debug; secrets
    /// are never logged).
    #[arg(long)]
    pub debug: bool,

    /// Accepted for compatibility: proxies from HTTPS_PROXY/HTTP_PROXY/NO_PROXY are always
    /// honoured here (aws_signing_helper honours them only with this flag).
    #[arg(long)]
    pub with_proxy: bool,

    /// Not supported: certificate stores are Windows and macOS only; on Linux give
    /// --certificate and --private-key.
    #[arg(long, value_name = "SELECTOR", hide = true)]
    pub cert_selector: Option<String>,
    /// Not supported (Windows certificate store).
    #[arg(long, value_name = "NAME", hide = true)]
    pub system_store_name: Option<String>,
    /// Not supported (certificate stores).
    #[arg(long, hide = true)]
    pub use_latest_expiring_certificate: bool,
    /// Not supported yet: TPM keys with a password.
    #[arg(long, value_name = "PASSWORD", hide = true)]
    pub tpm_key_password: Option<String>,
    /// Accepted for compatibility: TPM keys are used with an empty authorization value.
    #[arg(long, hide = true)]
    pub no_tpm_key_password: bool,
    /// Do not verify the Roles Anywhere endpoint's TLS certificate (as aws_signing_helper's
    /// flag; a warning is logged at every start). Anyone on the network path can then read
    /// the credentials: prefer --ca-bundle for a private CA or TLS-inspecting proxy.
    #[arg(long)]
    pub no_verify_ssl: bool,
}

impl HelperCompatArgs {
    /// The first flag given that this build cannot honour, and why.
    pub fn unsupported(&self) -> Option<(&'static str, &'static str)> {
        const STORES: &str = "certificate stores exist on Windows and macOS only; on Linux give --certificate and --private-key (PEM files)";
        if self.cert_selector.is_some() {
            return Some(("--cert-selector", STORES));
        }
        if self.system_store_name.is_some() {
            return Some(("--system-store-name", STORES));
        }
        if self.use_latest_expiring_certificate {
            return Some(("--use-latest-expiring-certificate", STORES));
        }
        if self.tpm_key_password.is_some() {
            return Some((
                "--tpm-key-password",
                "TPM keys with a password are not supported by this version (keys with an empty authorization value are)",
            ));
        }
        None
    }
}

#[derive(Debug, Args, Clone)]
pub struct CredentialProcessArgs {
    /// Read the credentials from a running agent's socket (`spiffe-aws-agent run`) instead of
    /// exchanging: one local round trip, no CreateSession. Needs --role, unless the agent is
    /// in per-caller mode and one role is bound to this process's SPIFFE ID.
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["certificate", "private_key", "workload_api_socket", "spiffe_id"])]
    pub agent: Option<PathBuf>,

    /// The agent's role name to read (with --agent).
    #[arg(long, value_name = "NAME", requires = "agent")]
    pub role: Option<String>,

    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// `sign-string`'s output format (aws_signing_helper's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignatureFormat {
    /// The hex signature as a JSON string.
    #[value(name = "json")]
    Json,
    /// The hex signature.
    #[value(name = "text")]
    Text,
    /// The raw signature bytes.
    #[value(name = "bin")]
    Bin,
}

/// `sign-string`'s digest (aws_signing_helper's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignatureDigest {
    #[value(name = "SHA256")]
    Sha256,
    #[value(name = "SHA384")]
    Sha384,
    #[value(name = "SHA512")]
    Sha512,
}

/// `aws_signing_helper sign-string` compatible flags.
#[derive(Debug, Args, Clone)]
pub struct SignStringArgs {
    /// PEM private key (PKCS#8, PKCS#1 RSA, SEC1 EC, or encrypted PKCS#8 with
    /// --pkcs8-password).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["certificate", "cert_selector"])]
    pub private_key: Option<PathBuf>,

    /// Without --private-key: a file holding the key (PEM with the key, or PKCS#12).
    #[arg(long, value_name = "FILE")]
    pub certificate: Option<PathBuf>,

    /// Password of an encrypted PKCS#8 key or a PKCS#12 file.
    #[arg(long, value_name = "PASSWORD", value_parser = parse_password)]
    pub pkcs8_password: Option<KeyPassword>,

    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: SignatureFormat,

    /// Digest of the string that is signed.
    #[arg(long, value_enum, default_value = "SHA256")]
    pub digest: SignatureDigest,

    #[command(flatten)]
    pub compat: HelperCompatArgs,
}

/// `aws_signing_helper read-certificate-data` compatible flags.
#[derive(Debug, Args, Clone)]
pub struct ReadCertificateDataArgs {
    /// Certificate file: PEM (the first certificate is read) or PKCS#12.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["cert_selector"])]
    pub certificate: Option<PathBuf>,

    /// Password of a PKCS#12 file (default: the empty password).
    #[arg(long, value_name = "PASSWORD", value_parser = parse_password)]
    pub pkcs8_password: Option<KeyPassword>,

    #[command(flatten)]
    pub compat: HelperCompatArgs,
}

/// `jwt-credential-process`: a JWT-SVID for STS AssumeRoleWithWebIdentity.
#[derive(Debug, Args, Clone)]
pub struct JwtCredentialProcessArgs {
    /// SPIFFE Workload API address: unix:///path/to/agent.sock or tcp://IP:port.
    #[arg(
        long,
        visible_alias = "workload-api-addr",
        value_name = "ADDRESS",
        env = "SPIFFE_ENDPOINT_SOCKET"
    )]
    pub workload_api_socket: Option<String>,

    /// Seconds to wait for the Workload API.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_WORKLOAD_API_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=300))]
    pub workload_api_timeout: u64,

    /// The JWT-SVID's audience: a client ID of the IAM OIDC identity provider (often
    /// sts.amazonaws.com).
    #[arg(long, value_name = "AUDIENCE")]
    pub audience: String,

    /// IAM role ARN to assume; its trust policy must trust the OIDC identity provider.
    #[arg(long, value_name = "ARN")]
    pub role_arn: String,

    /// Use the JWT-SVID of this SPIFFE ID (or Workload API hint) when the workload has
    /// several. Default: the first, the Workload API's default.
    #[arg(long, value_name = "SPIFFE_ID", conflicts_with = "hint")]
    pub spiffe_id: Option<String>,

    /// Use the JWT-SVID with this Workload API hint (as aws-spiffe-workload-helper's --hint).
    #[arg(long, value_name = "HINT")]
    pub hint: Option<String>,

    /// STS region: the regional endpoint https://sts.<region>.amazonaws.com. Default: the
    /// global endpoint https://sts.amazonaws.com.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// STS endpoint URL (https only), e.g. a VPC endpoint. Overrides --region's endpoint.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Extra PEM CA certificates to trust for the endpoint's TLS (added to the system roots).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// Session duration in seconds, 900..43200 (the role's maximum session duration caps it).
    #[arg(long, value_name = "SECONDS", default_value_t = crate::webidentity::exchange::DEFAULT_SESSION_DURATION)]
    pub session_duration: u32,

    /// Role session name (2..64 of letters, digits and +=,.@_-). Default: the SPIFFE ID
    /// without spiffe://, slashes as dots (its last 64 characters).
    #[arg(long, visible_alias = "session-name", value_name = "NAME")]
    pub role_session_name: Option<String>,

    /// Seconds the exchange (with retries of transient STS failures) may take.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::webidentity::exchange::DEFAULT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,

    /// Log at debug level (as RUST_LOG=spiffe_aws_agent=debug; tokens and secrets are never
    /// logged).
    #[arg(long)]
    pub debug: bool,
}

/// Servers and roles of the long-running agent.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// TOML config file with any number of roles and the servers to start (see the docs of
    /// `spiffe-aws-agent run --help`). Without it, one role comes from the flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["trust_anchor_arn", "profile_arn", "role_arn", "certificate"])]
    pub config: Option<PathBuf>,

    /// Name clients use for the role given by flags. Default: the role ARN's last path part.
    #[arg(long, value_name = "NAME")]
    pub role_name: Option<String>,

    /// Start the IMDSv2-style endpoint on this address (repeatable; IPv6 as [::1]:9911).
    #[arg(long, value_name = "IP:PORT", num_args = 0..=1, default_missing_value = DEFAULT_IMDS_LISTEN)]
    pub imds: Vec<String>,

    /// IP TTL / IPv6 hop limit of the IMDS endpoint's responses, 1..255 (as `serve
    /// --hop-limit`; 1 keeps them on this host). Default: the system's.
    #[arg(long, value_name = "HOPS", requires = "imds", value_parser = clap::value_parser!(u32).range(1..=255))]
    pub hop_limit: Option<u32>,

    /// Start the container-credentials endpoint on this address.
    #[arg(long, value_name = "IP:PORT", num_args = 0..=1, default_missing_value = DEFAULT_CONTAINER_LISTEN)]
    pub container: Option<String>,

    /// Token file base for the container endpoint: role R's token is FILE.R (read, or
    /// created 0600 when missing). Default: /run/spiffe-aws-agent/container-token, or
    /// $XDG_RUNTIME_DIR/spiffe-aws-agent/container-token for a non-root user.
    #[arg(long, value_name = "FILE")]
    pub container_token_file: Option<PathBuf>,

    /// Serve credentials on this unix socket (for `credential-process --agent`). Default:
    /// /run/spiffe-aws-agent/agent.sock, or $XDG_RUNTIME_DIR/spiffe-aws-agent/agent.sock for
    /// a non-root user.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub agent_socket: Option<Option<PathBuf>>,

    /// Keep this profile in the shared credentials file current.
    #[arg(long, value_name = "PROFILE", num_args = 0..=1, default_missing_value = DEFAULT_PROFILE)]
    pub credentials_profile: Option<String>,

    /// Never hand out credentials with less than this many seconds left.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::agent::DEFAULT_MIN_REMAINING.as_secs())]
    pub min_remaining: u64,

    /// A host name the IMDS, container and admin endpoints also answer to (repeatable). They answer
    /// only requests whose Host is their IP address or localhost, so a web page cannot read
    /// them through DNS rebinding; name here any other name your clients use.
    #[arg(long, value_name = "NAME")]
    pub allowed_host: Vec<String>,

    /// Per-caller mode: the SPIRE agent's admin socket (unix:///path). The agent socket then
    /// serves each calling process only the roles bound to its own SVIDs (SPIRE attests the
    /// caller's pid through the Delegated Identity API; this agent's SPIFFE ID must be in the
    /// SPIRE agent's authorized_delegates), and the role needs --spiffe-id (an ID, or
    /// spiffe://td/path/* for every ID below a path). Without it: host mode.
    #[arg(long, value_name = "ADDRESS", requires = "agent_socket")]
    pub spire_admin_socket: Option<String>,

    /// Per-caller mode: drop a caller identity's credentials after this many seconds
    /// without a request.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::credentials::per_caller::DEFAULT_IDLE.as_secs(), requires = "spire_admin_socket")]
    pub per_caller_idle: u64,

    #[command(flatten)]
    pub admin: AdminArgs,

    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// What `inspect` reads and checks.
#[derive(Debug, Args, Clone)]
pub struct InspectArgs {
    /// SPIFFE Workload API address: unix:///path/to/agent.sock or tcp://IP:port.
    #[arg(long, value_name = "ADDRESS", env = "SPIFFE_ENDPOINT_SOCKET")]
    pub workload_api_socket: Option<String>,

    /// Only the SVID with this SPIFFE ID (or Workload API hint). Default: every SVID.
    #[arg(long, value_name = "SPIFFE_ID")]
    pub spiffe_id: Option<String>,

    /// Seconds to wait for the Workload API.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_WORKLOAD_API_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=300))]
    pub workload_api_timeout: u64,

    /// PEM certificate file instead of the Workload API: the leaf, optionally followed by
    /// its intermediates.
    #[arg(long, value_name = "FILE")]
    pub certificate: Option<PathBuf>,

    /// PEM private key of --certificate, to check that it matches (optional).
    #[arg(long, value_name = "FILE", requires = "certificate")]
    pub private_key: Option<PathBuf>,

    /// PEM file with intermediate certificates, as sent in X-Amz-X509-Chain.
    #[arg(long, value_name = "FILE", requires = "certificate")]
    pub intermediates: Option<PathBuf>,

    /// PEM CA certificate(s) of the Roles Anywhere trust anchor: check that each chain leads
    /// to it (every signature verified).
    #[arg(long, value_name = "FILE")]
    pub trust_anchor_cert: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = InspectOutput::Text)]
    pub output: InspectOutput,
}

/// `inspect --output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectOutput {
    Text,
    Json,
}

/// `aws_signing_helper serve` compatible flags.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Port of the IMDSv2-style endpoint on 127.0.0.1.
    #[arg(long, default_value_t = crate::serve::DEFAULT_IMDS_PORT)]
    pub port: u16,

    /// IP TTL (IPv4) / hop limit (IPv6) of the endpoint's responses; 1 keeps them on this
    /// host.
    #[arg(long, value_name = "HOPS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=255))]
    pub hop_limit: u32,

    #[command(flatten)]
    pub admin: AdminArgs,

    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// aws-spiffe-workload-helper `x509-credential-file[-oneshot]` compatible flags.
#[derive(Debug, Args, Clone)]
pub struct X509CredentialFileArgs {
    /// The credentials file to write (its `default` profile).
    #[arg(long, value_name = "FILE")]
    pub aws_credentials_path: PathBuf,

    /// If the existing file cannot be loaded (not text, not a regular file), replace it
    /// instead of failing.
    #[arg(long)]
    pub force: bool,

    /// Start from an empty file: every profile this command does not write is removed.
    #[arg(long)]
    pub replace: bool,

    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// `aws_signing_helper update` compatible flags.
#[derive(Debug, Args, Clone)]
pub struct UpdateArgs {
    /// Profile to write in the credentials file.
    #[arg(long, default_value = DEFAULT_PROFILE)]
    pub profile: String,

    /// Write once and exit instead of keeping the profile current.
    #[arg(long)]
    pub once: bool,

    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[cfg(feature = "dev")]
#[derive(Debug, Args, Clone)]
pub struct DevArgs {
    /// Directory for the doubles' socket and files (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Try every channel once (agent socket, IMDS, container endpoint, credentials file, a
    /// one-shot exchange, inspect), print one line per check and exit (1 if one failed)
    /// instead of running until Ctrl-C.
    #[arg(long)]
    pub once: bool,

    /// Seconds between SVID rotations while running.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub rotate_every: u64,

    /// Make every Nth CreateSession call to the Roles Anywhere double fail with 500
    /// (fault injection, e.g. for a soak test of the agents' retries).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub fail_every: Option<u64>,

    /// Address of the agent's IMDSv2-style endpoint (port 0: any free port).
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_IMDS_LISTEN)]
    pub imds: String,

    /// Address of the agent's container-credentials endpoint (port 0: any free port).
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_CONTAINER_LISTEN)]
    pub container: String,

    /// Run the agent in per-caller mode: a double of the SPIRE agent's admin socket attests
    /// each caller of the agent socket, and orders and reviews (processes under uids 2101 and
    /// 2102 when run as root; else this user is orders) each get their own credentials from
    /// one agent. The host-level endpoints stay off.
    #[arg(long)]
    pub per_caller: bool,

    /// VPC Lattice auth policies for the Lattice double, as JSON in IAM policy syntax:
    /// {"billing": {"Version": "2012-10-17", "Statement": [...]}, ...}, conditions on
    /// aws:PrincipalTag/x509SAN/URI. Default: billing allows orders only, rates allows
    /// orders and reviews.
    #[arg(long, value_name = "FILE")]
    pub lattice_policies: Option<PathBuf>,
}
