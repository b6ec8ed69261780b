//! X.509 identities: a leaf certificate, its intermediates and the matching private key.
//!
//! Two sources produce them: [`workload_api`] (SPIRE, through the `spiffe` crate) and
//! [`files`] (PEM files, the `aws_signing_helper` flags). Both end in [`X509Identity::new`],
//! which checks up front everything Roles Anywhere would otherwise reject with an opaque
//! 403 (expired or not-yet-valid leaf, a CA as leaf, a key that does not match, an
//! unsupported key type), so the user learns what is wrong and what to fix.

pub mod delegated;
pub mod files;
pub mod jwt_svid;
pub mod key;
mod pattern;
pub mod pkcs11;
pub mod pkcs12;
mod source;
#[cfg(feature = "tpm")]
pub mod tpm;
pub mod watch;
pub mod workload_api;

pub use pattern::{PatternError, SpiffeIdPattern};
pub use source::{IdentitySpec, DEFAULT_WORKLOAD_API_TIMEOUT};

use std::time::SystemTime;

use ::time::OffsetDateTime;
use key::{KeyError, SigningKey};
use rustls_pki_types::PrivateKeyDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The most intermediates an identity may carry. They are sent base64-encoded in one
/// `X-Amz-X509-Chain` header; real chains have one to three.
pub const MAX_INTERMEDIATES: usize = 8;

/// Where an identity came from; decides which checks apply and how errors are worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An X.509-SVID from the SPIFFE Workload API: it must carry a SPIFFE ID (URI SAN).
    WorkloadApi,
    /// Certificate and key files given on the command line.
    Files,
}

/// Why an identity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: crate::bounded_file::FileError,
    },
    #[error("the certificate chain has {count} intermediates; at most {MAX_INTERMEDIATES} are sent (each travels in one request header)")]
    ChainTooLong { count: usize },
    #[error("the {what} file {path} holds no PEM {expected} block")]
    NoPemBlock {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("the private key file {path} is encrypted: give its password with --pkcs8-password (or decrypt it: openssl pkcs8 -in {path} -out key.pem, readable only by the agent)")]
    EncryptedKey { path: String },
    #[error("cannot decrypt the private key file {path}: {reason}")]
    KeyPassword { path: String, reason: String },
    #[error("cannot use the PKCS#12 file {path}: {reason}")]
    Pkcs12 { path: String, reason: String },
    #[error("the {which} certificate is not valid X.509: {reason}")]
    MalformedCertificate { which: String, reason: String },
    #[error("the certificate {subject} expired at {not_after} (now {now}): {hint}")]
    Expired {
        subject: String,
        not_after: String,
        now: String,
        hint: &'static str,
    },
    #[error("the certificate {subject} is not valid until {not_before} (now {now}): check the system clock")]
    NotYetValid {
        subject: String,
        not_before: String,
        now: String,
    },
    #[error("the leaf certificate {subject} is a CA certificate (basicConstraints CA:TRUE); Roles Anywhere needs an end-entity certificate")]
    LeafIsCa { subject: String },
    #[error("the X.509-SVID {subject} has no SPIFFE ID (URI SAN spiffe://…); it is not an SVID Roles Anywhere can map to a principal tag")]
    MissingSpiffeId { subject: String },
    #[error("the SVID announced as {announced} carries the SPIFFE ID {in_certificate:?} in its certificate")]
    SpiffeIdMismatch {
        announced: String,
        in_certificate: String,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    WorkloadApi(#[from] workload_api::WorkloadApiError),
    #[error(transparent)]
    Pkcs11(#[from] pkcs11::Pkcs11Error),
    #[cfg(feature = "tpm")]
    #[error(transparent)]
    Tpm(#[from] tpm::TpmError),
    #[error("{what} is a TPM key, and this build has no TPM support: build with `cargo build --features tpm` (needs libtss2-dev)")]
    NoTpmSupport { what: String },
}

/// A usable X.509 identity. Construct it with [`X509Identity::new`], which validates it.
pub struct X509Identity {
    leaf_der: Vec<u8>,
    intermediates_der: Vec<Vec<u8>>,
    key: SigningKey,
    spiffe_id: Option<String>,
    tag_attributes: Vec<(String, String)>,
    serial_decimal: String,
    subject: String,
    origin: Origin,
}

impl std::fmt::Debug for X509Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Identity")
            .field("subject", &self.subject)
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial_decimal)
            .field("intermediates", &self.intermediates_der.len())
            .field("key", &self.key)
            .field("origin", &self.origin)
            .finish()
    }
}

impl X509Identity {
    /// Validates a chain (leaf first, then intermediates) and its private key at time `now`.
    pub fn new(
        chain_der: Vec<Vec<u8>>,
        key: &PrivateKeyDer<'_>,
        origin: Origin,
        now: SystemTime,
    ) -> Result<Self, IdentityError> {
        Self::with_key(chain_der, origin, now, |spki| {
            Ok(SigningKey::from_der(key, spki)?)
        })
    }

    /// Validates a chain like [`new`](Self::new), then gets its key from `key`, given the
    /// leaf's SubjectPublicKeyInfo (DER) once the certificates passed: for keys that are
    /// not bytes, such as a key in a PKCS#11 token.
    pub fn with_key(
        chain_der: Vec<Vec<u8>>,
        origin: Origin,
        now: SystemTime,
        key: impl FnOnce(&[u8]) -> Result<SigningKey, IdentityError>,
    ) -> Result<Self, IdentityError> {
        let mut chain = chain_der.into_iter();
        let leaf_der = chain
            .next()
            .ok_or_else(|| IdentityError::MalformedCertificate {
                which: "leaf".into(),
                reason: "no certificate was given".into(),
            })?;
        let intermediates_der: Vec<Vec<u8>> = chain.collect();
        if intermediates_der.len() > MAX_INTERMEDIATES {
            return Err(IdentityError::ChainTooLong {
                count: intermediates_der.len(),
            });
        }
        for (i, der) in intermediates_der.iter().enumerate() {
            X509Certificate::from_der(der).map_err(|e| IdentityError::MalformedCertificate {
                which: format!("intermediate #{}", i + 1),
                reason: e.to_string(),
            })?;
        }

        let (_, leaf) = X509Certificate::from_der(&leaf_der).map_err(|e| {
            IdentityError::MalformedCertificate {
                which: "leaf".into(),
                reason: e.to_string(),
            }
        })?;
        let subject = display_subject(&leaf);
        check_validity(&leaf, &subject, origin, now)?;
        if leaf.is_ca() {
            return Err(IdentityError::LeafIsCa { subject });
        }
        let spiffe_id = spiffe_id_of(&leaf);
        let tag_attributes = tag_attributes(&leaf);
        if origin == Origin::WorkloadApi && spiffe_id.is_none() {
            return Err(IdentityError::MissingSpiffeId { subject });
        }
        let key = key(leaf.tbs_certificate.subject_pki.raw)?;
        let serial_decimal = leaf.tbs_certificate.serial.to_str_radix(10);
        Ok(X509Identity {
            leaf_der,
            intermediates_der,
            key,
            spiffe_id,
            tag_attributes,
            serial_decimal,
            subject,
            origin,
        })
    }

    /// The leaf certificate, DER.
    pub fn leaf_der(&self) -> &[u8] {
        &self.leaf_der
    }
    /// The intermediates to send in `X-Amz-X509-Chain`, DER, leaf excluded.
    pub fn intermediates_der(&self) -> &[Vec<u8>] {
        &self.intermediates_der
    }
    /// The private key that matches the leaf.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }
    /// The SPIFFE ID (URI SAN `spiffe://…`), when the leaf has one.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.spiffe_id.as_deref()
    }
    /// What Roles Anywhere's default attribute mapping turns into session tags, as
    /// (`x509Subject/CN`-style tag name, value): the subject's and the issuer's attributes
    /// and the first DNS and URI subject alternative names.
    pub fn tag_attributes(&self) -> &[(String, String)] {
        &self.tag_attributes
    }
    /// The leaf's serial number in decimal, as the SigV4-X509 credential scope wants it.
    pub fn serial_decimal(&self) -> &str {
        &self.serial_decimal
    }
    /// The leaf's subject, for messages.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

fn display_subject(cert: &X509Certificate<'_>) -> String {
    let subject = cert.subject().to_string();
    if subject.is_empty() {
        spiffe_id_of(cert).unwrap_or_else(|| "(empty subject)".into())
    } else {
        format!("\"{subject}\"")
    }
}

fn check_validity(
    cert: &X509Certificate<'_>,
    subject: &str,
    origin: Origin,
    now: SystemTime,
) -> Result<(), IdentityError> {
    let now_dt = OffsetDateTime::from(now);
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    if now_dt < not_before {
        return Err(IdentityError::NotYetValid {
            subject: subject.to_owned(),
            not_before: rfc3339(not_before),
            now: rfc3339(now_dt),
        });
    }
    if now_dt > not_after {
        return Err(IdentityError::Expired {
            subject: subject.to_owned(),
            not_after: rfc3339(not_after),
            now: rfc3339(now_dt),
            hint: match origin {
                Origin::WorkloadApi => "the SPIRE agent should have rotated it; is it running and can it reach its server?",
                Origin::Files => "renew the certificate, or check the system clock",
            },
        });
    }
    Ok(())
}

/// The session tags Roles Anywhere's default attribute mapping derives from a certificate,
/// as (`x509Subject/CN`-style name, value): every subject and issuer attribute, and the
/// first DNS and the first URI subject alternative name.
pub fn tag_attributes(cert: &X509Certificate<'_>) -> Vec<(String, String)> {
    use x509_parser::objects::{oid2abbrev, oid_registry};
    let mut out = Vec::new();
    for (field, name) in [
        ("x509Subject", cert.subject()),
        ("x509Issuer", cert.issuer()),
    ] {
        for attr in name.iter_attributes() {
            let (Ok(abbrev), Ok(value)) =
                (oid2abbrev(attr.attr_type(), oid_registry()), attr.as_str())
            else {
                continue;
            };
            out.push((format!("{field}/{abbrev}"), value.to_owned()));
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        if let Some(dns) = names.iter().find_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        }) {
            out.push(("x509SAN/DNS".to_owned(), dns.to_owned()));
        }
        if let Some(uri) = names.iter().find_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        }) {
            out.push(("x509SAN/URI".to_owned(), uri.to_owned()));
        }
    }
    out
}

pub(crate) fn spiffe_id_of(cert: &X509Certificate<'_>) -> Option<String> {
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some((*uri).to_owned()),
        _ => None,
    })
}

pub use crate::display::rfc3339;
