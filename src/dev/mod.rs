//! In-process test doubles that behave like the real services (cargo feature `dev`).
//!
//! - [`workload_api`]: a SPIFFE Workload API server on a unix socket.
//! - [`rolesanywhere`]: an HTTPS IAM Roles Anywhere CreateSession server that verifies every
//!   SigV4-X509 signature with its own code (it never calls the agent's signer).
//! - [`jwt`]: JWT-SVID signing (the trust domain's JWT key) and verification against a JWKS,
//!   for the Workload API double and the STS double's AssumeRoleWithWebIdentity.
//! - [`pki`]: the committed test PKI from `certs/`, compiled into the binary so
//!   `spiffe-aws-agent dev` runs from anywhere.

pub mod aws_services;
mod check;
pub mod command;
pub mod jwt;
pub mod pki;
pub mod rolesanywhere;
mod try_it;
pub mod workload_api;

/// Locks a mutex, ignoring poisoning: the doubles keep append-only records, and a panicking
/// test thread must not make every later assertion panic too.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
