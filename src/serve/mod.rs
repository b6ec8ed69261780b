//! The ways credentials leave the agent. Each module has one output format.
//!
//! - [`process`]: `credential_process` JSON, fetched one-shot.
//! - [`imds`]: an IMDSv2-compatible endpoint (`AWS_EC2_METADATA_SERVICE_ENDPOINT`).
//! - [`container`]: the container-credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`
//!   with an authorization token).
//! - [`agent_socket`]: HTTP over a unix socket, the fast path for
//!   `credential-process --agent`, with its client.
//! - [`credentials_file`]: a profile in the shared credentials file, kept current.
//!
//! `http` holds what the HTTP endpoints share: the accept loop, limits and formats.

pub mod agent_socket;
pub mod container;
pub mod credentials_file;
mod http;
pub mod imds;
pub mod process;
