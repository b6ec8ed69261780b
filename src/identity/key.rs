//! Private keys that can sign SigV4-X509 requests.
//!
//! Roles Anywhere accepts RSA (2048 bits and up, PKCS#1 v1.5) and ECDSA on P-256 or P-384
//! (ASN.1 DER signatures). Every algorithm signs a **SHA-256** digest of the string to sign,
//! including P-384: that is what the service verifies. ring cannot sign P-384 with SHA-256
//! (it only pairs P-384 with SHA-384), so P-384 signing uses RustCrypto's `p384`; RSA and
//! P-256 use ring.
//!
//! Keys arrive as PKCS#8 (SPIRE and most tools), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
//! (`EC PRIVATE KEY`). Anything else is rejected with an error that names what was found.

use p384::ecdsa::signature::hazmat::PrehashSigner;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use zeroize::Zeroizing;

/// The SigV4-X509 algorithm names, as they appear in the Authorization header.
pub const ALG_RSA: &str = "AWS4-X509-RSA-SHA256";
/// See [`ALG_RSA`].
pub const ALG_ECDSA: &str = "AWS4-X509-ECDSA-SHA256";

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_ED448: &str = "1.3.101.113";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";
const OID_SECP256K1: &str = "1.3.132.0.10";

/// Why a private key cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the private key is not valid {format} DER")]
    Malformed { format: &'static str },
    #[error("{0} keys are not supported: Roles Anywhere accepts RSA (2048+ bits), ECDSA P-256 and P-384")]
    UnsupportedType(String),
    #[error("the RSA key is {0} bits; Roles Anywhere requires at least 2048")]
    RsaTooSmall(usize),
    #[error("the private key does not match the certificate's public key")]
    Mismatch,
    #[error("the private key could not sign: {0}")]
    Signing(&'static str),
    #[error("the private key could not sign: {0}")]
    Token(String),
}

/// The kind of key, for messages and algorithm selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    P256,
    P384,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyKind::P256 => f.write_str("ECDSA P-256"),
            KeyKind::P384 => f.write_str("ECDSA P-384"),
        }
    }
}

/// A private key ready to sign. Its `Debug` output never shows key material; the p384 key
/// zeroizes itself on drop and ring keeps its own copies private.
pub struct SigningKey {
    inner: Inner,
    kind: KeyKind,
}

enum Inner {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
    P384(p384::ecdsa::SigningKey),
    /// A key in a PKCS#11 token; the token signs.
    Token(Box<super::pkcs11::TokenKey>),
    /// A key in a TPM; the TPM signs.
    #[cfg(feature = "tpm")]
    Tpm(Box<super::tpm::TpmKey>),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a private key in any supported encoding and checks it against the certificate's
    /// SubjectPublicKeyInfo (DER), so a wrong key is reported here and not as an opaque
    /// "invalid signature" from the service.
    pub fn from_der(key: &PrivateKeyDer<'_>, cert_spki_der: &[u8]) -> Result<Self, KeyError> {
        let spki = parse_spki(cert_spki_der)?;
        let kind = spki.kind()?;
        let inner = match (key, kind) {
            (PrivateKeyDer::Pkcs8(der), _) => Self::pkcs8(der.secret_pkcs8_der(), kind)?,
            (PrivateKeyDer::Pkcs1(der), KeyKind::Rsa { .. }) => {
                Inner::Rsa(RsaKeyPair::from_der(der.secret_pkcs1_der()).map_err(|_| {
                    KeyError::Malformed {
                        format: "PKCS#1 RSA",
                    }
                })?)
            }
            (PrivateKeyDer::Sec1(der), KeyKind::P256 | KeyKind::P384) => {
                Self::sec1(der.secret_sec1_der(), kind, &spki.public_key)?
            }
            // A PKCS#1 key with an EC certificate, or a SEC1 key with an RSA certificate.
            _ => return Err(KeyError::Mismatch),
        };
        let key = SigningKey { inner, kind };
        if key.public_key_bytes() != spki.public_key {
            return Err(KeyError::Mismatch);
        }
        Ok(key)
    }

    /// A key that stays in its PKCS#11 token (already checked against the certificate).
    pub fn from_token(key: super::pkcs11::TokenKey) -> Self {
        SigningKey {
            kind: key.kind(),
            inner: Inner::Token(Box::new(key)),
        }
    }

    /// A key that stays in a TPM (already checked against the certificate).
    #[cfg(feature = "tpm")]
    pub fn from_tpm(key: super::tpm::TpmKey) -> Self {
        SigningKey {
            kind: key.kind(),
            inner: Inner::Tpm(Box::new(key)),
        }
    }

    fn pkcs8(der: &[u8], kind: KeyKind) -> Result<Inner, KeyError> {
        let algorithm = pkcs8_algorithm(der)?;
        let found = match algorithm.as_str() {
            OID_RSA_ENCRYPTION => "RSA",
            OID_EC_PUBLIC_KEY => "EC",
            OID_ED25519 => return Err(KeyError::UnsupportedType("Ed25519".into())),
            OID_ED448 => return Err(KeyError::UnsupportedType("Ed448".into())),
            other => return Err(KeyError::UnsupportedType(format!("key algorithm {other}"))),
        };
        match (found, kind) {
            ("RSA", KeyKind::Rsa { .. }) => {
                RsaKeyPair::from_pkcs8(der)
                    .map(Inner::Rsa)
                    .map_err(|_| KeyError::Malformed {
                        format: "PKCS#8 RSA",
                    })
            }
            ("EC", KeyKind::P256) => EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                der,
                &SystemRandom::new(),
            )
            .map(Inner::P256)
            // ring also fails here when the key's curve is not P-256: that is a mismatch.
            .map_err(|_| KeyError::Mismatch),
            ("EC", KeyKind::P384) => {
                use p384::pkcs8::DecodePrivateKey;
                p384::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(Inner::P384)
                    .map_err(|_| KeyError::Mismatch)
            }
            _ => Err(KeyError::Mismatch),
        }
    }

    fn sec1(der: &[u8], kind: KeyKind, cert_point: &[u8]) -> Result<Inner, KeyError> {
        use sec1::der::Decode;
        let malformed = KeyError::Malformed { format: "SEC1 EC" };
        let parsed = sec1::EcPrivateKey::from_der(der).map_err(|_| malformed.clone())?;
        if let Some(params) = parsed.parameters {
            let curve = params.named_curve().map(|oid| oid.to_string());
            let expected = match kind {
                KeyKind::P256 => OID_P256,
                _ => OID_P384,
            };
            if curve.as_deref() != Some(expected) {
                return Err(KeyError::Mismatch);
            }
        }
        match kind {
            // ring wants the public point too; the certificate's is the one that matters.
            KeyKind::P256 => EcdsaKeyPair::from_private_key_and_public_key(
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                parsed.private_key,
                cert_point,
                &SystemRandom::new(),
            )
            .map(Inner::P256)
            .map_err(|_| KeyError::Mismatch),
            _ => p384::ecdsa::SigningKey::from_slice(parsed.private_key)
                .map(Inner::P384)
                .map_err(|_| malformed),
        }
    }

    /// What kind of key this is.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The SigV4-X509 algorithm name for this key.
    pub fn algorithm(&self) -> &'static str {
        match self.kind {
            KeyKind::Rsa { .. } => ALG_RSA,
            KeyKind::P256 | KeyKind::P384 => ALG_ECDSA,
        }
    }

    /// Signs `message` the way Roles Anywhere verifies it: SHA-256 digest, then PKCS#1 v1.5
    /// (RSA, deterministic) or ECDSA with an ASN.1 DER signature.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut sig,
                )
                .map_err(|_| KeyError::Signing("RSA PKCS#1 v1.5 signing failed"))?;
                Ok(sig)
            }
            Inner::P256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| KeyError::Signing("ECDSA P-256 signing failed")),
            Inner::P384(key) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, message);
                let sig: p384::ecdsa::Signature = key
                    .sign_prehash(digest.as_ref())
                    .map_err(|_| KeyError::Signing("ECDSA P-384 signing failed"))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Inner::Token(key) => {
                blocking(|| key.sign(message)).map_err(|e| KeyError::Token(e.to_string()))
            }
            #[cfg(feature = "tpm")]
            Inner::Tpm(key) => {
                blocking(|| key.sign(message)).map_err(|e| KeyError::Token(e.to_string()))
            }
        }
    }

    /// The public key in the form the certificate's SubjectPublicKeyInfo carries it
    /// (RSAPublicKey DER, or the uncompressed EC point).
    fn public_key_bytes(&self) -> Vec<u8> {
        match &self.inner {
            Inner::Rsa(pair) => pair.public_key().as_ref().to_vec(),
            Inner::P256(pair) => pair.public_key().as_ref().to_vec(),
            Inner::P384(key) => key
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            // Checked by a test signature when it was found.
            Inner::Token(_) => Vec::new(),
            #[cfg(feature = "tpm")]
            Inner::Tpm(_) => Vec::new(),
        }
    }
}

/// The key type of a certificate's SubjectPublicKeyInfo (DER), or why Roles Anywhere would
/// refuse it (`inspect` reports it without needing the private key).
pub fn public_key_kind(cert_spki_der: &[u8]) -> Result<KeyKind, KeyError> {
    parse_spki(cert_spki_der)?.kind()
}

/// Runs a signature by a device. A token or a TPM may take a while (a smart card: hundreds
/// of ms): on the agent's multi-threaded runtime, the other tasks move off this thread
/// meanwhile.
fn blocking<T>(sign: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(sign)
        }
        _ => sign(),
    }
}

/// The kind and public key (RSAPublicKey DER, or the uncompressed EC point) of a
/// certificate's SubjectPublicKeyInfo, refusing what Roles Anywhere refuses.
pub(crate) fn certificate_key(spki_der: &[u8]) -> Result<(KeyKind, Vec<u8>), KeyError> {
    let spki = parse_spki(spki_der)?;
    Ok((spki.kind()?, spki.public_key))
}

/// True when `signature` over `message` verifies with `public_key` the way Roles Anywhere
/// verifies it (SHA-256; PKCS#1 v1.5 or ECDSA DER).
pub(crate) fn verify(kind: KeyKind, public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let algorithm: &'static dyn signature::VerificationAlgorithm = match kind {
        KeyKind::Rsa { .. } => &signature::RSA_PKCS1_2048_8192_SHA256,
        KeyKind::P256 => &signature::ECDSA_P256_SHA256_ASN1,
        KeyKind::P384 => &signature::ECDSA_P384_SHA256_ASN1,
    };
    signature::UnparsedPublicKey::new(algorithm, public_key)
        .verify(message, signature)
        .is_ok()
}

/// The parts of a certificate's SubjectPublicKeyInfo that decide the key type.
struct Spki {
    algorithm: String,
    curve: Option<String>,
    public_key: Vec<u8>,
}

impl Spki {
    fn kind(&self) -> Result<KeyKind, KeyError> {
        match (self.algorithm.as_str(), self.curve.as_deref()) {
            (OID_RSA_ENCRYPTION, _) => {
                let bits = rsa_modulus_bits(&self.public_key).ok_or(KeyError::Malformed {
                    format: "certificate RSA public key",
                })?;
                if bits < 2048 {
                    return Err(KeyError::RsaTooSmall(bits));
                }
                Ok(KeyKind::Rsa { bits })
            }
            (OID_EC_PUBLIC_KEY, Some(OID_P256)) => Ok(KeyKind::P256),
            (OID_EC_PUBLIC_KEY, Some(OID_P384)) => Ok(KeyKind::P384),
            (OID_EC_PUBLIC_KEY, Some(OID_P521)) => {
                Err(KeyError::UnsupportedType("ECDSA P-521".into()))
            }
            (OID_EC_PUBLIC_KEY, Some(OID_SECP256K1)) => {
                Err(KeyError::UnsupportedType("ECDSA secp256k1".into()))
            }
            (OID_EC_PUBLIC_KEY, other) => Err(KeyError::UnsupportedType(format!(
                "ECDSA on curve {}",
                other.unwrap_or("(unnamed)")
            ))),
            (OID_ED25519, _) => Err(KeyError::UnsupportedType("Ed25519".into())),
            (OID_ED448, _) => Err(KeyError::UnsupportedType("Ed448".into())),
            (other, _) => Err(KeyError::UnsupportedType(format!(
                "public key algorithm {other}"
            ))),
        }
    }
}

fn parse_spki(der: &[u8]) -> Result<Spki, KeyError> {
    use x509_parser::prelude::FromDer;
    let malformed = KeyError::Malformed {
        format: "certificate public key",
    };
    let (_, spki) =
        x509_parser::x509::SubjectPublicKeyInfo::from_der(der).map_err(|_| malformed.clone())?;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    Ok(Spki {
        algorithm: spki.algorithm.algorithm.to_id_string(),
        curve,
        public_key: spki.subject_public_key.data.to_vec(),
    })
}

/// Bit length of the modulus in an RSAPublicKey DER.
fn rsa_modulus_bits(rsa_public_key_der: &[u8]) -> Option<usize> {
    use x509_parser::der_parser::ber::BerObjectContent;
    use x509_parser::der_parser::der::parse_der;
    let (_, seq) = parse_der(rsa_public_key_der).ok()?;
    let items = match &seq.content {
        BerObjectContent::Sequence(items) => items,
        _ => return None,
    };
    let modulus = items.first()?.as_slice().ok()?;
    let first_nonzero = modulus.iter().position(|b| *b != 0)?;
    let significant = &modulus[first_nonzero..];
    Some(significant.len() * 8 - significant[0].leading_zeros() as usize)
}

/// The algorithm OID of a PKCS#8 PrivateKeyInfo, so unsupported key types (Ed25519 …) get
/// named instead of failing as "malformed".
fn pkcs8_algorithm(der: &[u8]) -> Result<String, KeyError> {
    use x509_parser::der_parser::ber::BerObjectContent;
    use x509_parser::der_parser::der::parse_der;
    let malformed = || KeyError::Malformed { format: "PKCS#8" };
    let (_, seq) = parse_der(der).map_err(|_| malformed())?;
    let BerObjectContent::Sequence(items) = &seq.content else {
        return Err(malformed());
    };
    let BerObjectContent::Sequence(alg) = &items.get(1).ok_or_else(malformed)?.content else {
        return Err(malformed());
    };
    let oid = alg
        .first()
        .ok_or_else(malformed)?
        .as_oid()
        .map_err(|_| malformed())?;
    Ok(oid.to_id_string())
}

/// Holds raw key bytes read from a file or a socket and wipes them when dropped.
pub type SecretBytes = Zeroizing<Vec<u8>>;

/// `r || s` (each the curve's size) as a DER `Ecdsa-Sig-Value`; `None` for an odd or
/// implausible length.
pub(crate) fn ecdsa_der_from_raw(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 2 * 66 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = der_integer(r);
    body.extend(der_integer(s));
    let mut out = vec![0x30];
    push_length(&mut out, body.len());
    out.extend(body);
    Some(out)
}

/// A non-negative big-endian integer as DER: minimal, with a 0 byte when the top bit is set.
fn der_integer(value: &[u8]) -> Vec<u8> {
    let start = value.iter().position(|b| *b != 0).unwrap_or(value.len());
    let mut digits = value[start..].to_vec();
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        digits.insert(0, 0);
    }
    let mut out = vec![0x02];
    push_length(&mut out, digits.len());
    out.extend(digits);
    out
}

fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.extend([0x81, len as u8]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair};

    #[test]
    fn raw_ecdsa_signatures_become_der_that_verifies() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        // Many signatures, so leading zeros and high bits in r and s both occur.
        for i in 0..200u32 {
            let message = i.to_be_bytes();
            let raw = pair.sign(&rng, &message).unwrap();
            let der = ecdsa_der_from_raw(raw.as_ref()).unwrap();
            signature::UnparsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_ASN1,
                pair.public_key().as_ref(),
            )
            .verify(&message, &der)
            .unwrap_or_else(|_| panic!("signature {i} does not verify as DER"));
        }
    }

    #[test]
    fn der_integers_are_minimal() {
        assert_eq!(der_integer(&[0, 0, 1]), vec![2, 1, 1]);
        assert_eq!(der_integer(&[0, 0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(der_integer(&[0, 0]), vec![2, 1, 0]);
        assert_eq!(ecdsa_der_from_raw(&[1, 2, 3]), None);
        assert_eq!(ecdsa_der_from_raw(&[]), None);
        // P-521 sized: the sequence needs a long-form length.
        let der = ecdsa_der_from_raw(&[0xff; 132]).unwrap();
        assert_eq!(&der[..3], &[0x30, 0x81, 138]);
    }
}
