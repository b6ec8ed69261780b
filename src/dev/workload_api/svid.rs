//! The X.509-SVIDs the double hands out: loaded from PEM ([`SvidEntry::from_pem`]) or minted on
//! the fly ([`SvidIssuer`]) so tests can rotate identities without touching files.

use std::fmt;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use super::WorkloadApiDoubleError;

/// How far back a fresh SVID's `notBefore` is set, like SPIRE's backdating, so a peer whose
/// clock runs slightly behind still accepts a certificate issued a moment ago.
const BACKDATE: Duration = Duration::from_secs(60);

/// One identity the double serves: an X.509-SVID chain and its private key.
///
/// The fields are public so tests can build deliberately broken entries (a key that does not
/// match the leaf, an empty chain, a SPIFFE ID that disagrees with the URI SAN): the double
/// serves whatever it is given, exactly as a misbehaving agent would.
///
/// The key is zeroized when the entry is dropped, and [`fmt::Debug`] never prints it. Because
/// of the `Drop` impl, struct-update syntax (`SvidEntry { hint, ..other }`) does not compile;
/// clone the entry and assign the field instead.
#[derive(Clone)]
pub struct SvidEntry {
    /// The SPIFFE ID announced next to the SVID (normally the leaf's URI SAN).
    pub spiffe_id: String,
    /// DER certificates, leaf first, then intermediates (no root: roots belong in the bundle).
    pub chain_der: Vec<Vec<u8>>,
    /// The leaf's private key as unencrypted PKCS#8 DER, as the Workload API sends it.
    pub key_pkcs8_der: Vec<u8>,
    /// Operator hint used to tell several SVIDs apart; empty means none.
    pub hint: String,
}

impl SvidEntry {
    /// Loads an entry from PEM: `chain_pem` holds the leaf first, then any intermediates;
    /// `key_pem` may be PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1
    /// (`RSA PRIVATE KEY`) and is re-wrapped as PKCS#8, because that is the only key encoding
    /// the Workload API carries.
    ///
    /// Every certificate must parse as X.509, but the key is not checked against the leaf and
    /// the SPIFFE ID is not checked against the URI SAN, so tests can serve mismatches on
    /// purpose.
    pub fn from_pem(
        spiffe_id: &str,
        chain_pem: &str,
        key_pem: &str,
        hint: &str,
    ) -> Result<Self, WorkloadApiDoubleError> {
        let chain_der = certificates_from_pem(chain_pem).map_err(|reason| {
            WorkloadApiDoubleError::CertificatePem {
                spiffe_id: spiffe_id.to_owned(),
                reason,
            }
        })?;
        let key = key_pem_to_pkcs8(key_pem).map_err(|reason| WorkloadApiDoubleError::KeyPem {
            spiffe_id: spiffe_id.to_owned(),
            reason,
        })?;
        Ok(Self {
            spiffe_id: spiffe_id.to_owned(),
            chain_der,
            key_pkcs8_der: key.to_vec(),
            hint: hint.to_owned(),
        })
    }

    /// The chain as the Workload API's `x509_svid` field carries it: DER certificates
    /// concatenated, leaf first.
    pub(super) fn concatenated_chain(&self) -> Vec<u8> {
        self.chain_der.concat()
    }
}

impl fmt::Debug for SvidEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidEntry")
            .field("spiffe_id", &self.spiffe_id)
            .field("hint", &self.hint)
            .field("chain_len", &self.chain_der.len())
            .field("key_pkcs8_der", &"<redacted>")
            .finish()
    }
}

impl Drop for SvidEntry {
    fn drop(&mut self) {
        self.key_pkcs8_der.zeroize();
    }
}

/// Mints P-256 X.509-SVIDs signed by a CA (normally the test intermediate), so a test can
/// rotate an identity by issuing a new SVID and calling
/// [`WorkloadApiDouble::set_svids`](super::WorkloadApiDouble::set_svids).
///
/// The leaf profile follows what SPIRE issues: `CA:FALSE`, key usage `digitalSignature`
/// (critical), extended key usage `serverAuth` and `clientAuth`, exactly one URI SAN (the
/// SPIFFE ID), a random positive 128-bit serial, an authority key identifier, and a
/// `notBefore` backdated by 60 seconds.
pub struct SvidIssuer {
    issuer: Issuer<'static, KeyPair>,
    ca_der: Vec<u8>,
}

impl SvidIssuer {
    /// An issuer backed by the committed test intermediate CA
    /// ([`crate::dev::pki::INTERMEDIATE_CA_PEM`]); its SVIDs chain to
    /// [`crate::dev::pki::ROOT_CA_PEM`].
    pub fn from_test_intermediate() -> Result<Self, WorkloadApiDoubleError> {
        Self::from_ca_pem(
            crate::dev::pki::INTERMEDIATE_CA_PEM,
            crate::dev::pki::INTERMEDIATE_CA_KEY_PEM,
        )
    }

    /// An issuer backed by any CA certificate and key in PEM. The CA certificate is appended
    /// to every issued chain, so pass an intermediate (a root belongs in the bundle only).
    pub fn from_ca_pem(
        ca_cert_pem: &str,
        ca_key_pem: &str,
    ) -> Result<Self, WorkloadApiDoubleError> {
        let mut certs = certificates_from_pem(ca_cert_pem)
            .map_err(|reason| WorkloadApiDoubleError::IssuerCa { reason })?;
        if certs.len() != 1 {
            return Err(WorkloadApiDoubleError::IssuerCa {
                reason: format!("expected one CA certificate, found {}", certs.len()),
            });
        }
        let ca_der = certs.remove(0);
        let key_der = key_pem_to_pkcs8(ca_key_pem)
            .map_err(|reason| WorkloadApiDoubleError::IssuerCa { reason })?;
        let key = KeyPair::try_from(key_der.as_slice()).map_err(|e| {
            WorkloadApiDoubleError::IssuerCa {
                reason: format!("the CA key is not usable for signing: {e}"),
            }
        })?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.as_slice()), key)
            .map_err(|e| WorkloadApiDoubleError::IssuerCa {
                reason: format!("the CA certificate is not usable: {e}"),
            })?;
        Ok(Self { issuer, ca_der })
    }

    /// Issues a fresh SVID for `spiffe_id`, valid from 60 seconds ago until `ttl` from now.
    /// The chain is `[leaf, issuing CA]` and the key is a new P-256 key in PKCS#8 DER.
    pub fn issue(
        &self,
        spiffe_id: &str,
        ttl: Duration,
    ) -> Result<SvidEntry, WorkloadApiDoubleError> {
        let issue_err = |source| WorkloadApiDoubleError::Issue {
            spiffe_id: spiffe_id.to_owned(),
            source,
        };
        spiffe::SpiffeId::new(spiffe_id).map_err(|e| WorkloadApiDoubleError::InvalidSpiffeId {
            spiffe_id: spiffe_id.to_owned(),
            reason: e.to_string(),
        })?;
        let now = OffsetDateTime::now_utc();
        let not_after = time::Duration::try_from(ttl)
            .ok()
            .and_then(|ttl| now.checked_add(ttl))
            .ok_or(WorkloadApiDoubleError::Ttl { ttl })?;
        let not_before = now
            .checked_sub(time::Duration::seconds(BACKDATE.as_secs() as i64))
            .ok_or(WorkloadApiDoubleError::Ttl { ttl })?;

        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationName, "SPIRE");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            spiffe_id
                .try_into()
                .map_err(|e: rcgen::Error| issue_err(e))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(issue_err)?;
        let leaf = params.signed_by(&key, &self.issuer).map_err(issue_err)?;
        Ok(SvidEntry {
            spiffe_id: spiffe_id.to_owned(),
            chain_der: vec![leaf.der().to_vec(), self.ca_der.clone()],
            key_pkcs8_der: key.serialize_der(),
            hint: String::new(),
        })
    }
}

impl fmt::Debug for SvidIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidIssuer")
            .field("ca_der_len", &self.ca_der.len())
            .finish_non_exhaustive()
    }
}

/// A random positive serial of 16 bytes; the first byte is kept in 0x01..=0x7f so the DER
/// INTEGER is exactly 16 bytes and never negative.
fn random_serial() -> Result<SerialNumber, WorkloadApiDoubleError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| WorkloadApiDoubleError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Every `CERTIFICATE` block in `pem`, in order, each checked to be X.509.
fn certificates_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut certs = Vec::new();
    for (index, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let cert = cert.map_err(|e| format!("certificate {index} is not valid PEM: {e}"))?;
        x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| format!("certificate {index} is not valid X.509: {e}"))?;
        certs.push(cert.as_ref().to_vec());
    }
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".to_owned());
    }
    Ok(certs)
}

/// Decodes a private key PEM block and returns it as PKCS#8 DER.
///
/// Error messages are fixed strings: a PEM parser's message can quote the offending input,
/// and the input here is a private key.
fn key_pem_to_pkcs8(pem: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        "no readable PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block found".to_owned()
    })?;
    match &key {
        PrivateKeyDer::Pkcs8(k) => Ok(Zeroizing::new(k.secret_pkcs8_der().to_vec())),
        PrivateKeyDer::Sec1(k) => sec1_to_pkcs8(k.secret_sec1_der()).map_err(str::to_owned),
        PrivateKeyDer::Pkcs1(k) => Ok(pkcs1_to_pkcs8(k.secret_pkcs1_der())),
        _ => Err("unsupported private key encoding".to_owned()),
    }
}

/// DER OID content of id-ecPublicKey (1.2.840.10045.2.1).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER OID content of rsaEncryption (1.2.840.113549.1.1.1).
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Wraps a SEC1 `ECPrivateKey` in a PKCS#8 `PrivateKeyInfo` (RFC 5915 section 2, RFC 5958).
///
/// The curve moves from the SEC1 `parameters` field to the PKCS#8 algorithm identifier and is
/// dropped from the inner structure, because strict parsers (ring) reject it there.
pub(super) fn sec1_to_pkcs8(sec1_der: &[u8]) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    use sec1::der::{Decode, Encode};

    let key = sec1::EcPrivateKey::from_der(sec1_der)
        .map_err(|_| "the EC PRIVATE KEY block is not a valid SEC1 key")?;
    let curve = key
        .parameters
        .and_then(|p| p.named_curve())
        .ok_or("the EC PRIVATE KEY names no curve, so it cannot be converted to PKCS#8")?;
    let inner = sec1::EcPrivateKey {
        private_key: key.private_key,
        parameters: None,
        public_key: key.public_key,
    };
    let inner_der = Zeroizing::new(
        inner
            .to_der()
            .map_err(|_| "the EC PRIVATE KEY could not be re-encoded")?,
    );
    let algorithm = der_tlv(
        0x30,
        &[
            der_tlv(0x06, OID_EC_PUBLIC_KEY),
            der_tlv(0x06, curve.as_bytes()),
        ]
        .concat(),
    );
    Ok(private_key_info(&algorithm, &inner_der))
}

/// Wraps a PKCS#1 `RSAPrivateKey` in a PKCS#8 `PrivateKeyInfo`.
fn pkcs1_to_pkcs8(pkcs1_der: &[u8]) -> Zeroizing<Vec<u8>> {
    let algorithm = der_tlv(
        0x30,
        &[der_tlv(0x06, OID_RSA_ENCRYPTION), vec![0x05, 0x00]].concat(),
    );
    private_key_info(&algorithm, pkcs1_der)
}

/// `PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, privateKey OCTET STRING }`.
fn private_key_info(algorithm: &[u8], private_key: &[u8]) -> Zeroizing<Vec<u8>> {
    let octets = Zeroizing::new(der_tlv(0x04, private_key));
    let mut body = Zeroizing::new(Vec::with_capacity(octets.len() + algorithm.len() + 3));
    body.extend_from_slice(&[0x02, 0x01, 0x00]);
    body.extend_from_slice(algorithm);
    body.extend_from_slice(&octets);
    Zeroizing::new(der_tlv(0x30, &body))
}

/// One DER tag-length-value with a definite length.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let len_bytes = len.to_be_bytes();
        let skip = len_bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (len_bytes.len() - skip) as u8);
        out.extend_from_slice(&len_bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}
