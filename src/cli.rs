//! The command line. Flag names match `aws_signing_helper` where the meaning is the same
//! (`--role-arn`, `--profile-arn`, `--trust-anchor-arn`, `--region`, `--session-duration`,
//! `--endpoint`, `--role-session-name`, `--certificate`, `--private-key`, `--intermediates`),
//! so switching is a change of binary name.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Turns a SPIFFE identity (an X.509-SVID from SPIRE, or certificate files) into temporary
/// AWS credentials through IAM Roles Anywhere.
#[derive(Debug, Parser)]
#[command(name = "spiffe-aws-agent", version, propagate_version = true)]
#[command(
    after_help = "Exit status: 0 on success, 1 when fetching credentials failed, 2 for invalid flags.\n\
Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=spiffe_aws_agent=debug) for more detail."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print AWS credentials as `credential_process` JSON (for ~/.aws/config).
    ///
    /// Gets an X.509 identity (from the SPIFFE Workload API, or from --certificate and
    /// --private-key), exchanges it with IAM Roles Anywhere CreateSession, prints
    /// {"Version":1,"AccessKeyId","SecretAccessKey","SessionToken","Expiration"} on stdout and
    /// exits 0. On failure it prints one line on stderr and exits non-zero.
    #[command(after_long_help = CREDENTIAL_PROCESS_EXAMPLES)]
    CredentialProcess(Box<CredentialProcessArgs>),

    /// Run the whole flow on this machine against built-in doubles of SPIRE and Roles Anywhere.
    ///
    /// Starts a SPIFFE Workload API double (unix socket) and a Roles Anywhere double (HTTPS on
    /// loopback, verifying every signature), exchanges the `orders` SVID for credentials,
    /// prints them and the `credential_process` stanza to try it with any AWS client, then
    /// keeps the doubles running (rotating the SVID every 30 s) until Ctrl-C.
    #[cfg(feature = "dev")]
    Dev(Box<DevArgs>),
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

/// Where the X.509 identity comes from.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Identity (SPIFFE Workload API by default, or certificate files)")]
pub struct IdentityArgs {
    /// SPIFFE Workload API address: unix:///path/to/agent.sock or tcp://IP:port.
    #[arg(long, value_name = "ADDRESS", env = "SPIFFE_ENDPOINT_SOCKET")]
    pub workload_api_socket: Option<String>,

    /// Use the SVID with this SPIFFE ID (or Workload API hint) when the workload has several.
    /// Default: the first SVID, the Workload API's default.
    #[arg(long, value_name = "SPIFFE_ID", conflicts_with = "certificate")]
    pub spiffe_id: Option<String>,

    /// Seconds to wait for the Workload API.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub workload_api_timeout: u64,

    /// PEM certificate file instead of the Workload API: the leaf, optionally followed by
    /// its intermediates.
    #[arg(long, value_name = "FILE", requires = "private_key")]
    pub certificate: Option<PathBuf>,

    /// PEM private key for --certificate: PKCS#8, PKCS#1 RSA or SEC1 EC (unencrypted).
    /// RSA (2048+ bits), ECDSA P-256 and P-384 are supported.
    #[arg(long, value_name = "FILE", requires = "certificate")]
    pub private_key: Option<PathBuf>,

    /// PEM file with intermediate certificates, sent in X-Amz-X509-Chain.
    #[arg(long, value_name = "FILE", requires = "certificate")]
    pub intermediates: Option<PathBuf>,
}

/// What to ask Roles Anywhere for, and how to reach it.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "IAM Roles Anywhere")]
pub struct SessionArgs {
    /// Trust anchor ARN (its region is the default --region).
    #[arg(long, value_name = "ARN")]
    pub trust_anchor_arn: String,

    /// Profile ARN.
    #[arg(long, value_name = "ARN")]
    pub profile_arn: String,

    /// IAM role ARN to assume; it must be in the profile.
    #[arg(long, value_name = "ARN")]
    pub role_arn: String,

    /// Signing region. Default: the trust anchor ARN's region.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// Roles Anywhere endpoint, e.g. https://rolesanywhere.us-east-1.amazonaws.com or a
    /// VPC endpoint. https only. Default: https://rolesanywhere.<region>.amazonaws.com.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Extra PEM CA certificates to trust for the endpoint's TLS (added to the system roots).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// Session duration in seconds, 900..43200 (the profile may cap it lower).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub session_duration: u32,

    /// Role session name (2..64 of letters, digits and +=,.@_-). Default: the service
    /// uses the certificate's serial number.
    #[arg(long, value_name = "NAME")]
    pub role_session_name: Option<String>,

    /// Seconds to wait for Roles Anywhere.
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,
}

#[derive(Debug, Args, Clone)]
pub struct CredentialProcessArgs {
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

    /// Exchange once, print the result and exit instead of running until Ctrl-C.
    #[arg(long)]
    pub once: bool,

    /// Seconds between SVID rotations while running.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub rotate_every: u64,
}
