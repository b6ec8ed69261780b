//! IAM Roles Anywhere: the SigV4-X509 [`signer`] (pure) and the CreateSession client.

pub mod signer;
