//! `sign-string`: signs `aws_signing_helper`'s fixed test string with a private key and prints
//! the signature, so an operator can check that a key works with a digest before pointing
//! Roles Anywhere at it.
//!
//! As in `aws_signing_helper` v1.4.0 the string is not read from stdin: it is
//! `"AWS Roles Anywhere Credential Helper Signing Test" || "1" || SHA256("IAM RA" || public
//! key)`, where the public key is the PKCS#1 `RSAPublicKey` DER (RSA) or the uncompressed EC
//! point. The message is hashed with `--digest` and signed: PKCS#1 v1.5 for RSA
//! (deterministic), ECDSA with an ASN.1 DER signature for P-256 and P-384 (a digest longer
//! than the curve is cut to its leftmost bits, as FIPS 186 and Go do). Output: `json` (the hex
//! signature as a JSON string), `text` (hex) or `bin` (raw bytes), without a newline.

use std::path::Path;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;

use super::DiagnoseError;
use crate::identity::files::{self, KeyPassword};
use crate::identity::key::KeyError;
use crate::identity::pkcs12;

/// The fixed string's prefix and version, as `aws_signing_helper` signs them.
const FIXED_PREFIX: &str = "AWS Roles Anywhere Credential Helper Signing Test";
const FIXED_VERSION: u16 = 1;

/// The hash applied to the string before signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha256,
    Sha384,
    Sha512,
}

/// How the signature is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lowercase hex in a JSON string: `"3045…"`.
    Json,
    /// Lowercase hex.
    Text,
    /// The signature bytes.
    Bin,
}

/// A private key that can sign with any of the three digests (the agent's own
/// [`SigningKey`](crate::identity::key::SigningKey) signs SHA-256 only, as Roles Anywhere
/// wants).
pub enum AnyDigestKey {
    Rsa(RsaKeyPair),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl std::fmt::Debug for AnyDigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AnyDigestKey::Rsa(_) => "AnyDigestKey::Rsa(..)",
            AnyDigestKey::P256(_) => "AnyDigestKey::P256(..)",
            AnyDigestKey::P384(_) => "AnyDigestKey::P384(..)",
        })
    }
}

impl AnyDigestKey {
    /// Parses a PKCS#8, PKCS#1 or SEC1 key of a supported type.
    pub fn from_der(key: &PrivateKeyDer<'_>) -> Result<Self, KeyError> {
        use p256::pkcs8::DecodePrivateKey;
        let unsupported = || KeyError::UnsupportedType("this key type (or curve)".into());
        match key {
            PrivateKeyDer::Pkcs8(der) => {
                let der = der.secret_pkcs8_der();
                if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
                    return Ok(AnyDigestKey::Rsa(pair));
                }
                if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
                    return Ok(AnyDigestKey::P256(k));
                }
                if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_der(der) {
                    return Ok(AnyDigestKey::P384(k));
                }
                Err(unsupported())
            }
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map(AnyDigestKey::Rsa)
                .map_err(|_| KeyError::Malformed {
                    format: "PKCS#1 RSA",
                }),
            PrivateKeyDer::Sec1(der) => {
                let der = der.secret_sec1_der();
                if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
                    return Ok(AnyDigestKey::P256(k.into()));
                }
                if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
                    return Ok(AnyDigestKey::P384(k.into()));
                }
                Err(unsupported())
            }
            _ => Err(unsupported()),
        }
    }

    /// The public key as the fixed string embeds it: `RSAPublicKey` DER or the uncompressed
    /// EC point.
    pub fn public_key_bytes(&self) -> Vec<u8> {
        match self {
            AnyDigestKey::Rsa(pair) => pair.public_key().as_ref().to_vec(),
            AnyDigestKey::P256(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            AnyDigestKey::P384(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        }
    }

    /// Hashes `message` with `digest` and signs the hash.
    pub fn sign(&self, message: &[u8], digest: Digest) -> Result<Vec<u8>, KeyError> {
        let failed = || KeyError::Signing("signing the test string failed");
        match self {
            AnyDigestKey::Rsa(pair) => {
                let padding = match digest {
                    Digest::Sha256 => &signature::RSA_PKCS1_SHA256,
                    Digest::Sha384 => &signature::RSA_PKCS1_SHA384,
                    Digest::Sha512 => &signature::RSA_PKCS1_SHA512,
                };
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &SystemRandom::new(), message, &mut sig)
                    .map_err(|_| failed())?;
                Ok(sig)
            }
            AnyDigestKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k
                    .sign_prehash(&hash(message, digest))
                    .map_err(|_| failed())?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            AnyDigestKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k
                    .sign_prehash(&hash(message, digest))
                    .map_err(|_| failed())?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }
}

fn hash(message: &[u8], digest: Digest) -> Vec<u8> {
    let algorithm = match digest {
        Digest::Sha256 => &ring::digest::SHA256,
        Digest::Sha384 => &ring::digest::SHA384,
        Digest::Sha512 => &ring::digest::SHA512,
    };
    ring::digest::digest(algorithm, message).as_ref().to_vec()
}

/// The string `aws_signing_helper` signs for a key with this public key.
pub fn fixed_string(public_key: &[u8]) -> Vec<u8> {
    let mut suffix_input = b"IAM RA".to_vec();
    suffix_input.extend_from_slice(public_key);
    let suffix = ring::digest::digest(&ring::digest::SHA256, &suffix_input);
    let mut out = format!("{FIXED_PREFIX}{FIXED_VERSION}").into_bytes();
    out.extend_from_slice(suffix.as_ref());
    out
}

/// Where the key comes from: `--private-key`, else the `--certificate` file (PEM holding the
/// key too, or PKCS#12), as `aws_signing_helper` finds it.
pub fn load_key(
    private_key: Option<&Path>,
    certificate: Option<&Path>,
    password: Option<&KeyPassword>,
) -> Result<AnyDigestKey, DiagnoseError> {
    let der = match (private_key, certificate) {
        (Some(path), certificate) => {
            // As aws_signing_helper, a certificate given beside the key must be readable,
            // though only the key signs.
            if let Some(cert) = certificate {
                super::certificate_data::read(cert, password)?;
            }
            files::read_private_key(path, password)?
        }
        (None, Some(path)) => match files::read_private_key(path, password) {
            Ok(der) => der,
            // Not PEM with a key: a PKCS#12 file, or the PEM error stands.
            Err(pem_error) => match pkcs12::read(path, password) {
                Ok((_, der)) => der,
                Err(_) => return Err(pem_error.into()),
            },
        },
        (None, None) => return Err(DiagnoseError::NoKey),
    };
    Ok(AnyDigestKey::from_der(&der)?)
}

/// Signs the fixed string and renders the signature.
pub fn run(key: &AnyDigestKey, digest: Digest, format: Format) -> Result<Vec<u8>, DiagnoseError> {
    let signature = key.sign(&fixed_string(&key.public_key_bytes()), digest)?;
    Ok(render(&signature, format))
}

/// The signature in `format`, exactly as `aws_signing_helper` prints it (no newline).
pub fn render(signature: &[u8], format: Format) -> Vec<u8> {
    match format {
        Format::Text => hex::encode(signature).into_bytes(),
        Format::Json => format!("\"{}\"", hex::encode(signature)).into_bytes(),
        Format::Bin => signature.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_string_layout() {
        let s = fixed_string(b"\x04abc");
        let prefix = b"AWS Roles Anywhere Credential Helper Signing Test1";
        assert_eq!(&s[..prefix.len()], prefix);
        let expected = ring::digest::digest(&ring::digest::SHA256, b"IAM RA\x04abc");
        assert_eq!(&s[prefix.len()..], expected.as_ref());
    }

    #[test]
    fn formats() {
        assert_eq!(render(&[0xab, 0x01], Format::Text), b"ab01");
        assert_eq!(render(&[0xab, 0x01], Format::Json), b"\"ab01\"");
        assert_eq!(render(&[0xab, 0x01], Format::Bin), [0xab, 0x01]);
    }
}
