//! An identity from PEM files, with `aws_signing_helper`'s flags: `--certificate` (the leaf,
//! optionally followed by its chain), `--private-key` (PKCS#8, PKCS#1 RSA or SEC1 EC) and
//! `--intermediates` (more chain certificates).

use std::path::Path;
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::key::SecretBytes;
use super::{IdentityError, Origin, X509Identity};
use crate::bounded_file::{self, Links};

/// Reads and validates an identity from files.
pub fn load(
    certificate: &Path,
    private_key: &Path,
    intermediates: Option<&Path>,
    now: SystemTime,
) -> Result<X509Identity, IdentityError> {
    let chain = read_chain(certificate, intermediates)?;
    // `handle:0x81…` names a persistent TPM key, not a file.
    if let Some(handle) = private_key.to_str().filter(|k| k.starts_with("handle:")) {
        return tpm_identity(chain, now, TpmKeyRef::Handle(handle));
    }
    let key_pem = SecretBytes::new(read(private_key, "private key")?);
    if contains(&key_pem, b"-----BEGIN TSS2 PRIVATE KEY-----") {
        return tpm_identity(chain, now, TpmKeyRef::File(&key_pem, private_key));
    }
    let key = parse_private_key(&key_pem, private_key)?;
    X509Identity::new(chain, &key, Origin::Files, now)
}

/// The certificates of `certificate` then of `intermediates`, DER, in file order, unchecked.
pub(crate) fn read_chain(
    certificate: &Path,
    intermediates: Option<&Path>,
) -> Result<Vec<Vec<u8>>, IdentityError> {
    let mut chain = read_certificates(certificate, "certificate")?;
    if let Some(path) = intermediates {
        chain.extend(read_certificates(path, "intermediates")?);
    }
    Ok(chain)
}

/// The private key of a PEM file, unchecked against any certificate.
pub(crate) fn read_key(private_key: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    let key_pem = SecretBytes::new(read(private_key, "private key")?);
    parse_private_key(&key_pem, private_key)
}

/// A TPM key named in `--private-key`.
#[cfg_attr(not(feature = "tpm"), allow(dead_code))]
enum TpmKeyRef<'a> {
    Handle(&'a str),
    File(&'a [u8], &'a Path),
}

#[cfg(feature = "tpm")]
fn tpm_identity(
    chain: Vec<Vec<u8>>,
    now: SystemTime,
    key: TpmKeyRef<'_>,
) -> Result<X509Identity, IdentityError> {
    use super::tpm::TpmKey;
    X509Identity::with_key(chain, Origin::Files, now, |spki| {
        let key = match key {
            TpmKeyRef::Handle(h) => TpmKey::from_handle(h, spki)?,
            TpmKeyRef::File(pem, path) => {
                TpmKey::from_key_file(pem, &path.display().to_string(), spki)?
            }
        };
        Ok(super::key::SigningKey::from_tpm(key))
    })
}

#[cfg(not(feature = "tpm"))]
fn tpm_identity(
    _chain: Vec<Vec<u8>>,
    _now: SystemTime,
    key: TpmKeyRef<'_>,
) -> Result<X509Identity, IdentityError> {
    Err(IdentityError::NoTpmSupport {
        what: match key {
            TpmKeyRef::Handle(h) => h.to_owned(),
            TpmKeyRef::File(_, path) => format!("the private key file {}", path.display()),
        },
    })
}

/// The largest certificate or key file read: a PEM chain of a few certificates is a few KiB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, IdentityError> {
    bounded_file::read(path, MAX_PEM_BYTES, Links::Follow).map_err(|source| IdentityError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM file, in order.
pub(crate) fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<Vec<u8>>, IdentityError> {
    let pem = read(path, what)?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&pem) {
        let cert = item.map_err(|e| IdentityError::MalformedCertificate {
            which: format!("{what} file {}", path.display()),
            reason: format!("bad PEM: {e}"),
        })?;
        certs.push(cert.as_ref().to_vec());
    }
    if certs.is_empty() {
        return Err(IdentityError::NoPemBlock {
            what,
            path: path.display().to_string(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn parse_private_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    // rustls-pki-types skips blocks it does not know, so an encrypted key would otherwise
    // surface as "no key found"; say what it is instead.
    if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(IdentityError::EncryptedKey {
            path: path.display().to_string(),
        });
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| IdentityError::NoPemBlock {
        what: "private key",
        path: path.display().to_string(),
        expected: "PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY",
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/certs")).join(name)
    }

    /// Without the `tpm` feature, TPM keys are named as such, not misread as files or PEM.
    #[cfg(not(feature = "tpm"))]
    #[test]
    fn tpm_keys_need_the_tpm_feature() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key.tss2.pem");
        std::fs::write(
            &key_file,
            "-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n",
        )
        .unwrap();
        for key in [Path::new("handle:0x81000002"), key_file.as_path()] {
            let e = load(&certs("orders-p256.pem"), key, None, SystemTime::now())
                .unwrap_err()
                .to_string();
            assert!(e.contains("this build has no TPM support"), "{e}");
        }
    }

    /// With it, a handle reaches the TPM (here: none), and a bad handle is refused first.
    #[cfg(feature = "tpm")]
    #[test]
    fn tpm_handles_are_checked() {
        let e = load(
            &certs("orders-p256.pem"),
            Path::new("handle:0x12"),
            None,
            SystemTime::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not a TPM handle"), "{e}");
    }
}
