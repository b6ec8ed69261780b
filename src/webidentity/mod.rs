//! STS `AssumeRoleWithWebIdentity` with a JWT-SVID: the exchange for roles whose trust policy
//! names the SPIRE trust domain's OIDC identity provider (SPIRE's OIDC discovery provider
//! registered in IAM) instead of a Roles Anywhere trust anchor.
//!
//! `client` speaks the unsigned STS Query API and reads its XML; [`exchange`] holds the
//! per-role spec and the validated exchange, which fetches a fresh JWT-SVID from the
//! Workload API (`identity::jwt_svid`) for every call: JWT-SVIDs live minutes and are bearer
//! tokens, so none is kept.

mod client;
pub mod exchange;

pub use client::AssumeRoleError;
pub use exchange::{
    WebIdentityError, WebIdentityExchange, WebIdentityField, WebIdentitySpec, WebIdentitySpecError,
};
