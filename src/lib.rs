//! `spiffe-aws-agent`: SPIFFE X.509-SVIDs in, AWS credentials out.
//!
//! Data flows one way: an [`identity`] source yields an X.509 identity (certificate chain and
//! private key), [`rolesanywhere`] exchanges it for temporary AWS credentials with a
//! SigV4-X509 signed CreateSession call, and [`serve`] hands the credentials to AWS clients.
//! [`dev`] holds the in-process doubles of SPIRE and Roles Anywhere used by the tests and by
//! `spiffe-aws-agent dev`.

pub mod agent;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod display;
pub mod identity;
pub mod rolesanywhere;
pub mod serve;

#[cfg(feature = "dev")]
pub mod dev;
