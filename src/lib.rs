//! `spiffe-aws-agent`: SPIFFE X.509-SVIDs in, AWS credentials out.
//!
//! Data flows one way: an [`identity`] source yields an X.509 identity (certificate chain and
//! private key), [`rolesanywhere`] exchanges it for temporary AWS credentials with a
//! SigV4-X509 signed CreateSession call (or [`webidentity`] exchanges a JWT-SVID with STS
//! AssumeRoleWithWebIdentity), [`credentials`] caches and refreshes them per role,
//! and [`serve`] hands them to AWS clients. [`plan`] turns flags and the config file into the
//! specs those layers take; [`agent`] wires a plan into running tasks. [`dev`] holds the
//! in-process doubles of SPIRE and Roles Anywhere used by the tests and by
//! `spiffe-aws-agent dev`.
//!
//! Dependencies point downwards only:
//! `plan`, `agent` → `serve` → `credentials` → `rolesanywhere` → `identity` → `clock`,
//! `backoff`, `display`; `credentials` → `webidentity` → `rolesanywhere`, `identity`.
#![warn(unreachable_pub)]

pub mod agent;
mod aws_http;
mod backoff;
mod bounded_file;
pub mod cli;
mod clock;
pub mod credentials;
pub mod diagnose;
mod display;
pub mod identity;
pub mod inspect;
mod log_limit;
pub mod metrics;
pub mod plan;
pub mod rolesanywhere;
pub mod serve;
pub mod systemd;
pub mod webidentity;

#[cfg(feature = "dev")]
pub mod dev;

#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzz_api;

pub use bounded_file::FileError;
pub use clock::{Clock, TokioClock};
