//! IAM Roles Anywhere: the SigV4-X509 [`signer`] (pure) and the CreateSession client.

pub mod arn;
pub mod client;
pub mod signer;
