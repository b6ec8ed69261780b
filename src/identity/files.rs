//! An identity from files, with `aws_signing_helper`'s flags: `--certificate` (the leaf,
//! optionally followed by its chain), `--private-key` (PKCS#8, PKCS#1 RSA or SEC1 EC; an
//! encrypted PKCS#8 key with `--pkcs8-password`) and `--intermediates` (more chain
//! certificates). A `--certificate` without `--private-key` holds the key too: PEM with both,
//! or PKCS#12 ([`super::pkcs12`]). `--private-key handle:0x81…` or a TSS2 key file is a TPM
//! key (feature `tpm`).

use std::path::Path;
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::key::SecretBytes;
use super::{IdentityError, Origin, X509Identity};
use crate::bounded_file::{self, Links};

/// The password of an encrypted key (or of a PKCS#12 file). Wiped on drop; `Debug` never
/// shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPassword(Zeroizing<String>);

impl KeyPassword {
    pub fn new(password: String) -> Self {
        KeyPassword(Zeroizing::new(password))
    }
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for KeyPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPassword(..)")
    }
}

/// Reads and validates an identity from PEM files (an unencrypted key).
pub fn load(
    certificate: &Path,
    private_key: &Path,
    intermediates: Option<&Path>,
    now: SystemTime,
) -> Result<X509Identity, IdentityError> {
    load_any(certificate, Some(private_key), intermediates, None, now)
}

/// Reads and validates an identity from files: PEM certificate and key (encrypted PKCS#8
/// when `password` is given). With no `private_key`, as `aws_signing_helper` does, the
/// `certificate` file holds the key too: PEM with both, or PKCS#12.
pub fn load_any(
    certificate: &Path,
    private_key: Option<&Path>,
    intermediates: Option<&Path>,
    password: Option<&KeyPassword>,
    now: SystemTime,
) -> Result<X509Identity, IdentityError> {
    let single_pem = private_key.is_none() && read_certificates(certificate, "certificate").is_ok();
    let Some(private_key) = private_key.or(single_pem.then_some(certificate)) else {
        if intermediates.is_some() {
            return Err(IdentityError::Pkcs12 {
                path: certificate.display().to_string(),
                reason: "the chain must be inside the PKCS#12 file: intermediates cannot be added from another file".into(),
            });
        }
        let (chain, key) = super::pkcs12::read(certificate, password)?;
        return X509Identity::new(chain, &key, Origin::Files, now);
    };
    let chain = read_chain(certificate, intermediates)?;
    // `handle:0x81…` names a persistent TPM key, not a file.
    if let Some(handle) = private_key.to_str().filter(|k| k.starts_with("handle:")) {
        return tpm_identity(chain, now, TpmKeyRef::Handle(handle));
    }
    let key_pem = SecretBytes::new(read(private_key, "private key")?);
    if contains(&key_pem, b"-----BEGIN TSS2 PRIVATE KEY-----") {
        return tpm_identity(chain, now, TpmKeyRef::File(&key_pem, private_key));
    }
    let key = private_key_from_pem(&key_pem, private_key, password).map_err(|e| match e {
        IdentityError::NoPemBlock { path, expected, .. } if single_pem => {
            IdentityError::NoPemBlock {
                what: "certificate (given without --private-key, so it must hold the key too)",
                path,
                expected,
            }
        }
        other => other,
    })?;
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

/// Reads a PEM private key: PKCS#8, PKCS#1 RSA, SEC1 EC, or encrypted PKCS#8 (PBES2 with
/// PBKDF2 or scrypt and AES-CBC, as `openssl pkcs8 -topk8` writes it) given its password.
/// A password given for an unencrypted key is not needed and not used.
pub fn read_private_key(
    path: &Path,
    password: Option<&KeyPassword>,
) -> Result<PrivateKeyDer<'static>, IdentityError> {
    let pem = SecretBytes::new(read(path, "private key")?);
    private_key_from_pem(&pem, path, password)
}

/// The private key of a PEM file, unchecked against any certificate (unencrypted).
pub(crate) fn read_key(private_key: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    read_private_key(private_key, None)
}

/// [`read_private_key`] for a file already read.
fn private_key_from_pem(
    pem: &[u8],
    path: &Path,
    password: Option<&KeyPassword>,
) -> Result<PrivateKeyDer<'static>, IdentityError> {
    if let Some(der) = encrypted_pkcs8(pem) {
        let display = path.display().to_string();
        let Some(password) = password else {
            return Err(IdentityError::EncryptedKey { path: display });
        };
        let decrypted =
            decrypt_pkcs8(&der, password).map_err(|reason| IdentityError::KeyPassword {
                path: display,
                reason,
            })?;
        return Ok(PrivateKeyDer::Pkcs8(decrypted.into()));
    }
    parse_private_key(pem, path)
}

/// The DER of the first `ENCRYPTED PRIVATE KEY` block, if the PEM has one (rustls-pki-types
/// skips that label, so it is found here).
fn encrypted_pkcs8(pem: &[u8]) -> Option<SecretBytes> {
    const BEGIN: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &[u8] = b"-----END ENCRYPTED PRIVATE KEY-----";
    let start = find(pem, BEGIN)?;
    let end = start + find(&pem[start..], END)? + END.len();
    let (_, der) = pkcs8::der::pem::decode_vec(&pem[start..end]).ok()?;
    Some(SecretBytes::new(der))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The most PBKDF2 iterations and scrypt memory a key file may ask for: the file decides how
/// long the agent computes and how much memory it takes before the password is even checked.
/// OpenSSL writes 2,048 iterations (OpenSSL 3: 2,048; OWASP advises 600,000) and scrypt with
/// 16 MiB.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
const MAX_SCRYPT_BYTES: u64 = 256 * 1024 * 1024;

fn check_work_factor(scheme: &pkcs8::pkcs5::EncryptionScheme<'_>) -> Result<(), String> {
    use pkcs8::pkcs5::pbes2::Kdf;
    let pkcs8::pkcs5::EncryptionScheme::Pbes2(params) = scheme else {
        return Ok(()); // PBES1 is refused by decryption with its own message.
    };
    match &params.kdf {
        Kdf::Pbkdf2(p) if p.iteration_count > MAX_PBKDF2_ITERATIONS => Err(format!(
            "it asks for {} PBKDF2 iterations, more than the {MAX_PBKDF2_ITERATIONS} accepted",
            p.iteration_count
        )),
        Kdf::Scrypt(p) => {
            // scrypt takes 128 * r * N bytes (and p times the CPU).
            let bytes = 128u64
                .saturating_mul(u64::from(p.block_size))
                .saturating_mul(p.cost_parameter);
            if bytes > MAX_SCRYPT_BYTES || p.parallelization > 16 {
                Err(format!(
                    "its scrypt parameters (N={}, r={}, p={}) need more than the {} MiB accepted",
                    p.cost_parameter,
                    p.block_size,
                    p.parallelization,
                    MAX_SCRYPT_BYTES >> 20
                ))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// Decrypts an EncryptedPrivateKeyInfo; the error says why, without the password.
fn decrypt_pkcs8(der: &[u8], password: &KeyPassword) -> Result<Vec<u8>, String> {
    use pkcs8::der::Decode;
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(der)
        .map_err(|e| format!("it is not a valid encrypted PKCS#8 key ({e})"))?;
    check_work_factor(&info.encryption_algorithm)?;
    let document = info
        .decrypt(password.as_str().as_bytes())
        .map_err(|e| match e {
            pkcs8::Error::EncryptedPrivateKey(
                pkcs8::pkcs5::Error::UnsupportedAlgorithm { .. }
                | pkcs8::pkcs5::Error::AlgorithmParametersInvalid { .. }
                | pkcs8::pkcs5::Error::NoPbes1CryptSupport,
            ) => format!("its encryption is not supported ({e}); supported: PBES2 with PBKDF2 (HMAC-SHA-1/224/256/384/512) or scrypt, and AES-128/192/256-CBC"),
            // Bad padding after decryption (pkcs5 reports it as an encryption failure) or
            // garbage where the key should be: the password does not fit.
            _ => "the password is wrong (or the key is damaged)".to_owned(),
        })?;
    // A wrong password can still decrypt to bytes with valid padding: check it is PKCS#8.
    let bytes = document.as_bytes().to_vec();
    pkcs8::PrivateKeyInfo::from_der(&bytes)
        .map_err(|_| "the password is wrong (or the key is damaged)".to_owned())?;
    Ok(bytes)
}

/// The largest certificate or key file read: a PEM chain of a few certificates is a few KiB.
pub(crate) const MAX_PEM_BYTES: u64 = 1024 * 1024;

pub(crate) fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, IdentityError> {
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
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| IdentityError::NoPemBlock {
        what: "private key",
        path: path.display().to_string(),
        expected: "PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkcs8::pkcs5::{pbes2, scrypt, EncryptionScheme};

    #[test]
    fn a_key_file_cannot_ask_for_unbounded_work() {
        let (salt, iv) = ([7u8; 16], [9u8; 16]);
        let ok = pbes2::Parameters::pbkdf2_sha256_aes256cbc(600_000, &salt, &iv).unwrap();
        assert!(check_work_factor(&EncryptionScheme::Pbes2(ok)).is_ok());
        let slow = pbes2::Parameters::pbkdf2_sha256_aes256cbc(50_000_000, &salt, &iv).unwrap();
        let e = check_work_factor(&EncryptionScheme::Pbes2(slow)).unwrap_err();
        assert!(e.contains("PBKDF2 iterations"), "{e}");
        // OpenSSL's scrypt default (N=2^14, r=8: 16 MiB) passes; N=2^22 (4 GiB) does not.
        let fine = scrypt::Params::new(14, 8, 1, 32).unwrap();
        let fine = pbes2::Parameters::scrypt_aes256cbc(fine, &salt, &iv).unwrap();
        assert!(check_work_factor(&EncryptionScheme::Pbes2(fine)).is_ok());
        let huge = scrypt::Params::new(22, 8, 1, 32).unwrap();
        let huge = pbes2::Parameters::scrypt_aes256cbc(huge, &salt, &iv).unwrap();
        let e = check_work_factor(&EncryptionScheme::Pbes2(huge)).unwrap_err();
        assert!(e.contains("scrypt parameters"), "{e}");
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = KeyPassword::new("hunter2".into());
        assert_eq!(format!("{p:?}"), "KeyPassword(..)");
    }

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
