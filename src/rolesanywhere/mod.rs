//! IAM Roles Anywhere: the SigV4-X509 [`signer`] (pure), the CreateSession client, and the
//! exchange spec that says what one role asks for.

mod arn;
mod client;
pub mod exchange;
pub mod session_tags;
pub mod signer;

pub use arn::{ArnError, ArnField, RegionError};
pub use client::{ConfigError, CreateSessionError, Credentials, ErrorClass};
pub use exchange::{Exchange, ExchangeField, ExchangeSpec, SpecError};

// Shared with the web-identity exchange, which checks the same role ARNs and regions and
// trusts the same roots.
pub(crate) use arn::{parse_role, validate_region};
pub(crate) use client::tls_config;

#[cfg(fuzzing)]
pub(crate) use client::{map_error, parse_success};
