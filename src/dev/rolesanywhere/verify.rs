//! Authentication checks: the `Authorization` header, `X-Amz-Date`, the presented certificates,
//! the request signature and the certificate path to a trust anchor.
//!
//! Each check returns a typed error so unit tests can assert *why* something was refused; the
//! handler maps them to the terse messages the real service sends.

use ring::signature;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::time::ASN1Time;

/// Longest path (leaf + intermediates) the double will build; real chains are 2–4 long.
const MAX_PATH_LEN: usize = 8;
/// Most intermediates accepted in `X-Amz-X509-Chain`.
pub(super) const MAX_CHAIN_CERTS: usize = 8;

/// The two SigV4-X509 algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Algorithm {
    /// `AWS4-X509-RSA-SHA256`: RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa,
    /// `AWS4-X509-ECDSA-SHA256`: ECDSA with SHA-256, ASN.1 DER signature (P-256 and P-384).
    Ecdsa,
}

impl Algorithm {
    pub(super) fn name(self) -> &'static str {
        match self {
            Algorithm::Rsa => "AWS4-X509-RSA-SHA256",
            Algorithm::Ecdsa => "AWS4-X509-ECDSA-SHA256",
        }
    }
}

/// Why an `Authorization` header or `X-Amz-Date` was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum AuthHeaderError {
    /// The algorithm is not one of the two X.509 algorithms.
    #[error("unsupported algorithm '{0}'")]
    UnsupportedAlgorithm(String),
    /// A required `key=value` component is missing.
    #[error("missing '{0}' component")]
    MissingComponent(&'static str),
    /// A component appears twice or is unknown.
    #[error("malformed component '{0}'")]
    MalformedComponent(String),
    /// `Credential` is not `serial/date/region/service/aws4_request`.
    #[error("malformed credential '{0}'")]
    MalformedCredential(String),
    /// `SignedHeaders` is empty, not lowercase, not sorted or has duplicates.
    #[error("malformed SignedHeaders '{0}'")]
    MalformedSignedHeaders(String),
    /// `Signature` is not hex.
    #[error("signature is not hex")]
    BadSignatureHex,
    /// `X-Amz-Date` is not `YYYYMMDDTHHMMSSZ`.
    #[error("X-Amz-Date '{0}' is not YYYYMMDDTHHMMSSZ")]
    BadDate(String),
}

/// A parsed `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Authorization {
    pub(super) algorithm: Algorithm,
    /// The certificate serial in decimal, as claimed.
    pub(super) serial: String,
    pub(super) date: String,
    pub(super) region: String,
    pub(super) service: String,
    pub(super) terminator: String,
    pub(super) signed_headers: Vec<String>,
    pub(super) signature: Vec<u8>,
}

impl Authorization {
    /// `YYYYMMDD/region/service/aws4_request`, as it appears in the string to sign.
    pub(super) fn scope(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.date, self.region, self.service, self.terminator
        )
    }
}

/// Parses `ALG Credential=…, SignedHeaders=…, Signature=…` (components in any order, `, ` or `,`
/// separated).
pub(super) fn parse_authorization(value: &str) -> Result<Authorization, AuthHeaderError> {
    let value = value.trim();
    let (alg, rest) = value
        .split_once(' ')
        .ok_or(AuthHeaderError::MissingComponent("Credential"))?;
    let algorithm = match alg {
        "AWS4-X509-RSA-SHA256" => Algorithm::Rsa,
        "AWS4-X509-ECDSA-SHA256" => Algorithm::Ecdsa,
        other => return Err(AuthHeaderError::UnsupportedAlgorithm(other.to_owned())),
    };
    let (mut credential, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| AuthHeaderError::MalformedComponent(part.to_owned()))?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => return Err(AuthHeaderError::MalformedComponent(part.to_owned())),
        };
        if slot.replace(v).is_some() {
            return Err(AuthHeaderError::MalformedComponent(part.to_owned()));
        }
    }
    let credential = credential.ok_or(AuthHeaderError::MissingComponent("Credential"))?;
    let signed = signed.ok_or(AuthHeaderError::MissingComponent("SignedHeaders"))?;
    let sig = sig.ok_or(AuthHeaderError::MissingComponent("Signature"))?;

    let parts: Vec<&str> = credential.split('/').collect();
    let [serial, date, region, service, terminator] = parts.as_slice() else {
        return Err(AuthHeaderError::MalformedCredential(credential.to_owned()));
    };
    if serial.is_empty() || date.is_empty() || region.is_empty() || service.is_empty() {
        return Err(AuthHeaderError::MalformedCredential(credential.to_owned()));
    }

    let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
    let well_formed = signed_headers.iter().all(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    }) && signed_headers.windows(2).all(|w| w[0] < w[1]);
    if !well_formed {
        return Err(AuthHeaderError::MalformedSignedHeaders(signed.to_owned()));
    }

    if sig.is_empty() {
        return Err(AuthHeaderError::BadSignatureHex);
    }
    let signature = hex::decode(sig).map_err(|_| AuthHeaderError::BadSignatureHex)?;

    Ok(Authorization {
        algorithm,
        serial: (*serial).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        terminator: (*terminator).to_owned(),
        signed_headers,
        signature,
    })
}

/// Parses `YYYYMMDDTHHMMSSZ` (UTC).
pub(super) fn parse_amz_date(value: &str) -> Result<OffsetDateTime, AuthHeaderError> {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    if value.len() != 16 || !value.is_ascii() {
        return Err(AuthHeaderError::BadDate(value.to_owned()));
    }
    PrimitiveDateTime::parse(value, &fmt)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| AuthHeaderError::BadDate(value.to_owned()))
}

/// Formats a time as `YYYYMMDDTHHMMSSZ`, for messages.
pub(super) fn format_amz_date(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    t.format(&fmt)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Why a presented or configured certificate is unusable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum CertError {
    /// Not a DER X.509 certificate (or trailing bytes after it).
    #[error("not a DER X.509 certificate")]
    NotX509,
}

/// Parses one DER certificate, refusing trailing bytes.
pub(super) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(CertError::NotX509),
    }
}

/// What the double learns about a leaf, verified or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LeafInfo {
    pub(super) serial_decimal: String,
    /// Lowercase hex without leading zeros: the real service's default session name.
    pub(super) serial_hex: String,
    pub(super) sha256_hex: String,
    pub(super) spiffe_id: Option<String>,
    pub(super) common_name: Option<String>,
}

/// Extracts [`LeafInfo`] from a parsed certificate and its DER.
pub(super) fn leaf_info(cert: &X509Certificate<'_>, der: &[u8]) -> LeafInfo {
    let spiffe_id = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
        });
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    LeafInfo {
        serial_decimal: cert.tbs_certificate.serial.to_str_radix(10),
        serial_hex: cert.tbs_certificate.serial.to_str_radix(16),
        sha256_hex: super::canonical::sha256_hex(der),
        spiffe_id,
        common_name,
    }
}

/// Why the request signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum SignatureError {
    /// The algorithm named in `Authorization` does not fit the leaf's key type.
    #[error("algorithm {alg} does not match the certificate's {key} key")]
    AlgorithmMismatch {
        alg: &'static str,
        key: &'static str,
    },
    /// The leaf's key is neither RSA (2048 bits or more) nor EC P-256/P-384.
    #[error("unsupported signing key")]
    UnsupportedKey,
    /// The signature does not verify.
    #[error("signature does not verify")]
    Invalid,
}

/// Verifies `signature` over `message` with the leaf's public key, using the ring algorithm the
/// SigV4-X509 algorithm and key type call for (always SHA-256, also for P-384).
pub(super) fn verify_request_signature(
    leaf: &X509Certificate<'_>,
    alg: Algorithm,
    message: &[u8],
    sig: &[u8],
) -> Result<(), SignatureError> {
    let spki = leaf.public_key();
    let key_oid = &spki.algorithm.algorithm;
    let key_bytes: &[u8] = &spki.subject_public_key.data;
    let ring_alg: &dyn signature::VerificationAlgorithm = if *key_oid == OID_PKCS1_RSAENCRYPTION {
        if alg != Algorithm::Rsa {
            return Err(SignatureError::AlgorithmMismatch {
                alg: alg.name(),
                key: "RSA",
            });
        }
        // ring refuses short keys too, but naming the reason helps whoever reads the error.
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => {}
            _ => return Err(SignatureError::UnsupportedKey),
        }
        &signature::RSA_PKCS1_2048_8192_SHA256
    } else if *key_oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        if alg != Algorithm::Ecdsa {
            return Err(SignatureError::AlgorithmMismatch {
                alg: alg.name(),
                key: "EC",
            });
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Some(c) if c == OID_NIST_EC_P384 => &signature::ECDSA_P384_SHA256_ASN1,
            _ => return Err(SignatureError::UnsupportedKey),
        }
    } else {
        return Err(SignatureError::UnsupportedKey);
    };
    signature::UnparsedPublicKey::new(ring_alg, key_bytes)
        .verify(message, sig)
        .map_err(|_| SignatureError::Invalid)
}

/// Why the certificate path was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum ChainError {
    /// Too many certificates presented.
    #[error("too many intermediate certificates")]
    TooManyIntermediates,
    /// The leaf has CA:TRUE.
    #[error("the signing certificate is a CA certificate")]
    LeafIsCa,
    /// The leaf has a key usage extension without digitalSignature.
    #[error("the signing certificate's key usage lacks digitalSignature")]
    LeafKeyUsage,
    /// An RSA key shorter than 2048 bits.
    #[error("RSA key of {0} bits is too short")]
    WeakRsaKey(usize),
    /// A certificate outside its validity period.
    #[error("certificate '{0}' is expired or not yet valid")]
    NotValidNow(String),
    /// An issuing certificate without CA:TRUE.
    #[error("issuer '{0}' is not a CA")]
    IssuerNotCa(String),
    /// An issuing certificate whose key usage lacks keyCertSign.
    #[error("issuer '{0}' may not sign certificates")]
    IssuerKeyUsage(String),
    /// An issuing certificate's pathLenConstraint is exceeded.
    #[error("path length constraint of '{0}' exceeded")]
    PathLenExceeded(String),
    /// A certificate signed with SHA-1.
    #[error("certificate '{0}' is signed with SHA-1")]
    WeakSignatureAlgorithm(String),
    /// A certificate extension could not be parsed.
    #[error("certificate '{0}' has malformed extensions")]
    BadExtension(String),
    /// No path to any certificate of the trust anchor.
    #[error("no path to the trust anchor")]
    NoPathToAnchor,
}

fn subject_of(cert: &X509Certificate<'_>) -> String {
    cert.subject().to_string()
}

/// Checks one certificate's validity period at `now` (Unix seconds).
fn check_valid_at(cert: &X509Certificate<'_>, now: ASN1Time) -> Result<(), ChainError> {
    if cert.validity().is_valid_at(now) {
        Ok(())
    } else {
        Err(ChainError::NotValidNow(subject_of(cert)))
    }
}

/// Refuses certificates signed with RSA/SHA-1 (x509-parser still verifies them for legacy use;
/// it does not verify ECDSA/SHA-1 at all).
fn check_signature_algorithm(cert: &X509Certificate<'_>) -> Result<(), ChainError> {
    let oid = &cert.signature_algorithm.algorithm;
    if *oid == OID_PKCS1_SHA1WITHRSA || *oid == OID_SHA1_WITH_RSA {
        return Err(ChainError::WeakSignatureAlgorithm(subject_of(cert)));
    }
    Ok(())
}

/// RSA keys must be at least 2048 bits.
fn check_key_strength(cert: &X509Certificate<'_>) -> Result<(), ChainError> {
    if let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed() {
        let bits = rsa.key_size();
        if bits < 2048 {
            return Err(ChainError::WeakRsaKey(bits));
        }
    }
    Ok(())
}

/// `issuer` may issue certificates with `below` intermediates under it.
fn check_issuer(issuer: &X509Certificate<'_>, below: usize) -> Result<(), ChainError> {
    let name = || subject_of(issuer);
    let bc = issuer
        .basic_constraints()
        .map_err(|_| ChainError::BadExtension(name()))?;
    let Some(bc) = bc.filter(|bc| bc.value.ca) else {
        return Err(ChainError::IssuerNotCa(name()));
    };
    if let Some(max) = bc.value.path_len_constraint {
        if below > max as usize {
            return Err(ChainError::PathLenExceeded(name()));
        }
    }
    let ku = issuer
        .key_usage()
        .map_err(|_| ChainError::BadExtension(name()))?;
    if let Some(ku) = ku {
        if !ku.value.key_cert_sign() {
            return Err(ChainError::IssuerKeyUsage(name()));
        }
    }
    check_key_strength(issuer)
}

/// `child` names `parent` as issuer and `parent`'s key signed it.
fn issued_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    child.issuer().as_raw() == parent.subject().as_raw()
        && child.verify_signature(Some(parent.public_key())).is_ok()
}

/// Builds and checks a path from `leaf` through `intermediates` (any order) to one of `anchors`
/// at `now_unix`: every signature, every validity period, CA and key-usage constraints, key
/// strength.
pub(super) fn validate_chain(
    leaf: &X509Certificate<'_>,
    intermediates: &[X509Certificate<'_>],
    anchors: &[X509Certificate<'_>],
    now_unix: i64,
) -> Result<(), ChainError> {
    if intermediates.len() > MAX_CHAIN_CERTS {
        return Err(ChainError::TooManyIntermediates);
    }
    let now = ASN1Time::from_timestamp(now_unix).map_err(|_| ChainError::NoPathToAnchor)?;

    // The leaf itself.
    let leaf_name = || subject_of(leaf);
    let bc = leaf
        .basic_constraints()
        .map_err(|_| ChainError::BadExtension(leaf_name()))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(ChainError::LeafIsCa);
    }
    let ku = leaf
        .key_usage()
        .map_err(|_| ChainError::BadExtension(leaf_name()))?;
    if ku.is_some_and(|ku| !ku.value.digital_signature()) {
        return Err(ChainError::LeafKeyUsage);
    }
    check_key_strength(leaf)?;
    check_valid_at(leaf, now)?;
    check_signature_algorithm(leaf)?;

    let mut current = leaf;
    let mut used = vec![false; intermediates.len()];
    // Number of intermediates between the leaf and the next issuer.
    for below in 0..MAX_PATH_LEN {
        // Prefer ending at an anchor: a client may also send the root in the chain.
        if let Some(anchor) = anchors.iter().find(|a| issued_by(current, a)) {
            check_issuer(anchor, below)?;
            check_valid_at(anchor, now)?;
            return Ok(());
        }
        let next = intermediates
            .iter()
            .enumerate()
            .find(|(i, c)| !used[*i] && issued_by(current, c));
        let Some((i, issuer)) = next else {
            return Err(ChainError::NoPathToAnchor);
        };
        used[i] = true;
        check_issuer(issuer, below)?;
        check_valid_at(issuer, now)?;
        check_signature_algorithm(issuer)?;
        current = issuer;
    }
    Err(ChainError::NoPathToAnchor)
}
