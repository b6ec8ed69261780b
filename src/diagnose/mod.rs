//! `aws_signing_helper`'s diagnostic commands, with its names, flags and output formats
//! (v1.4.0): `sign-string` ([`sign_string`]: sign the helper's fixed test string with a key,
//! to check a key and a digest) and `read-certificate-data` ([`certificate_data`]: the
//! JSON the SDK-side signers of Roles Anywhere read from a certificate).
//!
//! Both read only files; nothing here talks to the network.

pub mod certificate_data;
pub mod sign_string;

use crate::identity::key::KeyError;
use crate::identity::IdentityError;

/// Why a diagnostic command failed.
#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no key: give --private-key FILE (or a --certificate file that holds the key: PEM with both, or PKCS#12)")]
    NoKey,
    #[error("the certificate file {path} is not a usable certificate: {reason}")]
    Certificate { path: String, reason: String },
}
