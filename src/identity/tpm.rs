//! TPM 2.0 keys (cargo feature `tpm`), as aws_signing_helper takes them in `--private-key`:
//! a persistent handle (`handle:0x81000002`), or a TSS2 key file (`-----BEGIN TSS2 PRIVATE
//! KEY-----`, draft-bottomley-tpm2-keys: the key wrapped by its parent, loaded into the TPM
//! for each signature). A parent that is a hierarchy (owner 0x40000001, …) is the primary
//! key made from the same ECC P-256 storage template as aws_signing_helper and
//! tpm2-openssl use; a persistent parent is used as it is.
//!
//! The TPM is reached through the TSS2 TCTI named by `TPM_DEVICE` (a device path, as
//! aws_signing_helper reads it), else `TPM2TOOLS_TCTI` / `TCTI` (e.g.
//! `swtpm:host=127.0.0.1,port=2321`), else `device:/dev/tpmrm0`. Keys with a password, and
//! policies, are not supported yet: the key is used with an empty authorization value.

use std::str::FromStr;

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, KeyDerivationFunctionScheme, Private,
    Public, PublicBuilder, PublicEccParametersBuilder, Signature, SignatureScheme,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::UnMarshall;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::Context;

use super::key::{self, KeyKind};

/// The TSS2 key file's OID for a loadable key (draft-bottomley-tpm2-keys).
const OID_LOADABLE_KEY: &str = "2.23.133.10.1.3";
/// The TCTI used when the environment names none.
const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// What the key signs when it is checked against the certificate.
const CHECK_MESSAGE: &[u8] = b"spiffe-aws-agent: does this TPM key belong to the certificate?";

/// Why a TPM key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error(
        "{0:?} is not a TPM handle: use handle:0x81000000 to handle:0x81ffffff (a persistent key)"
    )]
    BadHandle(String),
    #[error("the TSS2 key file {path} is not valid: {reason}")]
    BadKeyFile { path: String, reason: String },
    #[error("the TSS2 key file {path} uses {what}, which this version does not support")]
    Unsupported { path: String, what: &'static str },
    #[error("cannot reach the TPM through {tcti}: {source} (set TPM_DEVICE or TPM2TOOLS_TCTI)")]
    Connect {
        tcti: String,
        source: tss_esapi::Error,
    },
    #[error("the TPM has no persistent key at handle {handle:#x}: {source}")]
    NoKeyAtHandle {
        handle: u32,
        source: tss_esapi::Error,
    },
    #[error("the TPM refused {operation}: {source}")]
    Tpm {
        operation: &'static str,
        source: tss_esapi::Error,
    },
    #[error("the TPM key does not belong to the certificate (a test signature does not verify with its public key)")]
    Mismatch,
    #[error("the TPM returned a signature that does not fit the key ({0})")]
    BadSignature(&'static str),
}

impl TpmError {
    /// True when a setting is wrong (handle, key file, mismatch), not the TPM's state.
    pub fn is_setting(&self) -> bool {
        matches!(
            self,
            TpmError::BadHandle(_)
                | TpmError::BadKeyFile { .. }
                | TpmError::Unsupported { .. }
                | TpmError::NoKeyAtHandle { .. }
                | TpmError::Mismatch
        )
    }
}

/// Where the key is.
#[derive(Clone)]
enum Source {
    /// A persistent key.
    Handle(u32),
    /// A key wrapped by `parent`: its TPM2B_PUBLIC and TPM2B_PRIVATE contents.
    Wrapped {
        parent: u32,
        public: Vec<u8>,
        private: Vec<u8>,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Handle(h) => write!(f, "handle:{h:#x}"),
            Source::Wrapped { parent, .. } => write!(f, "key wrapped by {parent:#x}"),
        }
    }
}

/// A TPM key checked to match the certificate; each signature opens the TPM, loads the key
/// when it is wrapped, signs and flushes what it loaded (as aws_signing_helper does), so
/// nothing is held between the agent's hourly signatures.
pub struct TpmKey {
    source: Source,
    tcti: String,
    kind: KeyKind,
}

impl std::fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmKey")
            .field("source", &self.source)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// True when a `--private-key` value names a TPM handle.
pub fn is_handle(value: &str) -> bool {
    value.starts_with("handle:")
}

/// True when a PEM file holds a TSS2 key.
pub fn is_key_file(pem: &[u8]) -> bool {
    pem.windows(31)
        .any(|w| w == b"-----BEGIN TSS2 PRIVATE KEY----")
}

impl TpmKey {
    /// The persistent key at `handle:0x81…`, checked against the certificate's key.
    pub fn from_handle(value: &str, spki_der: &[u8]) -> Result<TpmKey, super::IdentityError> {
        let digits = value.strip_prefix("handle:").unwrap_or(value);
        let handle = u32::from_str_radix(digits.trim_start_matches("0x"), 16)
            .ok()
            .filter(|h| h >> 24 == 0x81)
            .ok_or_else(|| TpmError::BadHandle(value.to_owned()))?;
        Self::checked(Source::Handle(handle), spki_der)
    }

    /// The key in a TSS2 key file (PEM text `pem`), checked against the certificate's key.
    pub fn from_key_file(
        pem: &[u8],
        path: &str,
        spki_der: &[u8],
    ) -> Result<TpmKey, super::IdentityError> {
        let source = parse_key_file(pem, path)?;
        Self::checked(source, spki_der)
    }

    fn checked(source: Source, spki_der: &[u8]) -> Result<TpmKey, super::IdentityError> {
        let (kind, public_key) = key::certificate_key(spki_der)?;
        let key = TpmKey {
            source,
            tcti: tcti(),
            kind,
        };
        let signature = key.sign(CHECK_MESSAGE)?;
        if !key::verify(kind, &public_key, CHECK_MESSAGE, &signature) {
            return Err(TpmError::Mismatch.into());
        }
        Ok(key)
    }

    /// The key type (the certificate's).
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Signs `message` as Roles Anywhere verifies it: SHA-256, then RSASSA-PKCS1-v1_5 or
    /// ECDSA (DER).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TpmError> {
        let conf = TctiNameConf::from_str(&self.tcti).map_err(|source| TpmError::Connect {
            tcti: self.tcti.clone(),
            source,
        })?;
        let mut ctx = Context::new(conf).map_err(|source| TpmError::Connect {
            tcti: self.tcti.clone(),
            source,
        })?;
        let tpm = |operation| move |source| TpmError::Tpm { operation, source };
        let (key, loaded): (KeyHandle, Vec<ObjectHandle>) = match &self.source {
            Source::Handle(h) => (persistent(&mut ctx, *h)?.into(), Vec::new()),
            Source::Wrapped {
                parent,
                public,
                private,
            } => {
                let mut loaded = Vec::new();
                let parent_handle: KeyHandle = if parent >> 24 == 0x81 {
                    persistent(&mut ctx, *parent)?.into()
                } else {
                    let hierarchy = match *parent {
                        0x4000_0001 => Hierarchy::Owner,
                        0x4000_000b => Hierarchy::Endorsement,
                        0x4000_000c => Hierarchy::Platform,
                        _ => Hierarchy::Null,
                    };
                    let primary = ctx
                        .execute_with_nullauth_session(|c| {
                            c.create_primary(hierarchy, storage_template()?, None, None, None, None)
                        })
                        .map_err(tpm("creating the parent primary key"))?
                        .key_handle;
                    loaded.push(primary.into());
                    primary
                };
                let public =
                    Public::unmarshall(public).map_err(tpm("reading the key's public part"))?;
                let private = Private::try_from(private.clone())
                    .map_err(tpm("reading the key's private part"))?;
                let key =
                    ctx.execute_with_nullauth_session(|c| c.load(parent_handle, private, public));
                let key = match key {
                    Ok(k) => k,
                    Err(e) => {
                        flush(&mut ctx, &loaded);
                        return Err(tpm("loading the key")(e));
                    }
                };
                loaded.push(key.into());
                (key, loaded)
            }
        };
        let result = self.sign_loaded(&mut ctx, key, message);
        flush(&mut ctx, &loaded);
        result
    }

    fn sign_loaded(
        &self,
        ctx: &mut Context,
        key: KeyHandle,
        message: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let tpm = |operation| move |source| TpmError::Tpm { operation, source };
        let mut digest = ring::digest::digest(&ring::digest::SHA256, message)
            .as_ref()
            .to_vec();
        let scheme = match self.kind {
            KeyKind::Rsa { .. } => SignatureScheme::RsaSsa {
                hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
            },
            KeyKind::P256 => SignatureScheme::EcDsa {
                hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
            },
            // The TPM pairs a P-384 key with a 48-byte digest: the SHA-256 digest padded on
            // the left, which is the same number ECDSA signs.
            KeyKind::P384 => {
                let mut padded = vec![0; 16];
                padded.extend_from_slice(&digest);
                digest = padded;
                SignatureScheme::EcDsa {
                    hash_scheme: HashScheme::new(HashingAlgorithm::Sha384),
                }
            }
        };
        let validation = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(tpm("making a null ticket"))?;
        let digest = Digest::try_from(digest).map_err(tpm("taking the digest"))?;
        let signature = ctx
            .execute_with_nullauth_session(|c| c.sign(key, digest, scheme, validation))
            .map_err(tpm("signing"))?;
        match (signature, self.kind) {
            (Signature::RsaSsa(s), KeyKind::Rsa { .. }) => Ok(s.signature().value().to_vec()),
            (Signature::EcDsa(s), KeyKind::P256 | KeyKind::P384) => {
                let size = if self.kind == KeyKind::P256 { 32 } else { 48 };
                let (r, sv) = (s.signature_r().value(), s.signature_s().value());
                if r.len() > size || sv.len() > size {
                    return Err(TpmError::BadSignature("r or s longer than the curve"));
                }
                let mut raw = vec![0; 2 * size];
                raw[size - r.len()..size].copy_from_slice(r);
                raw[2 * size - sv.len()..].copy_from_slice(sv);
                key::ecdsa_der_from_raw(&raw).ok_or(TpmError::BadSignature("r || s"))
            }
            _ => Err(TpmError::BadSignature("another scheme than asked")),
        }
    }
}

fn persistent(ctx: &mut Context, handle: u32) -> Result<ObjectHandle, TpmError> {
    let tpm_handle = PersistentTpmHandle::new(handle)
        .map(TpmHandle::Persistent)
        .map_err(|source| TpmError::Tpm {
            operation: "taking the handle",
            source,
        })?;
    ctx.execute_without_session(|c| c.tr_from_tpm_public(tpm_handle))
        .map_err(|source| TpmError::NoKeyAtHandle { handle, source })
}

fn flush(ctx: &mut Context, handles: &[ObjectHandle]) {
    for handle in handles.iter().rev() {
        if let Err(e) = ctx.flush_context(*handle) {
            tracing::debug!(error = %e, "flushing a TPM object failed");
        }
    }
}

/// The TCTI configuration from the environment (see the module docs).
fn tcti() -> String {
    if let Some(device) = std::env::var("TPM_DEVICE").ok().filter(|d| !d.is_empty()) {
        return format!("device:{device}");
    }
    ["TPM2TOOLS_TCTI", "TCTI"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_TCTI.to_owned())
}

/// The ECC P-256 storage primary key template for keys whose parent is a hierarchy (the one
/// aws_signing_helper and tpm2-openssl use, with an empty unique field).
fn storage_template() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    let parameters = PublicEccParametersBuilder::new()
        .with_symmetric(SymmetricDefinitionObject::AES_128_CFB)
        .with_ecc_scheme(EccScheme::Null)
        .with_curve(EccCurve::NistP256)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .with_is_signing_key(false)
        .with_is_decryption_key(true)
        .with_restricted(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// Reads a TSS2 key file: `TPMKey ::= SEQUENCE { type OID, emptyAuth [0] BOOLEAN OPTIONAL,
/// policy [1] OPTIONAL, secret [2] OPTIONAL, authPolicy [3] OPTIONAL, parent INTEGER,
/// pubkey OCTET STRING, privkey OCTET STRING }`.
fn parse_key_file(pem: &[u8], path: &str) -> Result<Source, TpmError> {
    use base64::Engine as _;
    use x509_parser::der_parser::ber::{parse_ber, BerObjectContent};
    let bad = |reason: &str| TpmError::BadKeyFile {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let text = std::str::from_utf8(pem).map_err(|_| bad("not PEM text"))?;
    let body = text
        .split("-----BEGIN TSS2 PRIVATE KEY-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END TSS2 PRIVATE KEY-----").next())
        .ok_or_else(|| bad("no TSS2 PRIVATE KEY block"))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad("bad base64"))?;
    // BER, not DER: OpenSSL engines wrote emptyAuth TRUE as 0x01.
    let (_, sequence) = parse_ber(&der).map_err(|_| bad("not ASN.1"))?;
    let BerObjectContent::Sequence(items) = &sequence.content else {
        return Err(bad("not a SEQUENCE"));
    };
    let mut items = items.iter();
    let oid = items
        .next()
        .and_then(|o| o.as_oid().ok())
        .map(|o| o.to_id_string())
        .ok_or_else(|| bad("no key type OID"))?;
    if oid != OID_LOADABLE_KEY {
        return Err(TpmError::Unsupported {
            path: path.to_owned(),
            what: "a key type other than a loadable key (2.23.133.10.1.3)",
        });
    }
    let mut rest = items.peekable();
    while let Some(item) = rest.peek() {
        if !item.header.is_contextspecific() {
            break;
        }
        let what = match item.header.tag().0 {
            0 => None,
            1 | 3 => Some("a TPM policy"),
            2 => Some("an imported key secret"),
            _ => Some("an unknown option"),
        };
        if let Some(what) = what {
            return Err(TpmError::Unsupported {
                path: path.to_owned(),
                what,
            });
        }
        rest.next();
    }
    let parent = rest
        .next()
        .and_then(|p| p.as_u32().ok())
        .ok_or_else(|| bad("no parent handle"))?;
    let mut blob = |name: &str| {
        let bytes = rest
            .next()
            .and_then(|b| b.as_slice().ok())
            .ok_or_else(|| bad(&format!("no {name}")))?;
        // A TPM2B: a 2-byte big-endian size, then that many bytes.
        match bytes {
            [hi, lo, body @ ..] if usize::from(*hi) << 8 | usize::from(*lo) == body.len() => {
                Ok(body.to_vec())
            }
            _ => Err(bad(&format!("the {name} has a wrong length"))),
        }
    };
    let public = blob("public part")?;
    let private = blob("private part")?;
    let valid_parent = parent >> 24 == 0x81
        || matches!(
            parent,
            0x4000_0001 | 0x4000_0007 | 0x4000_000b | 0x4000_000c
        );
    if !valid_parent {
        return Err(bad(
            "the parent is neither a hierarchy nor a persistent key",
        ));
    }
    Ok(Source::Wrapped {
        parent,
        public,
        private,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_must_be_persistent() {
        for bad in ["handle:0x80000001", "handle:xyz", "handle:"] {
            let e = TpmKey::from_handle(bad, &[]).unwrap_err().to_string();
            assert!(e.contains("is not a TPM handle"), "{bad}: {e}");
        }
    }

    #[test]
    fn key_files_are_checked() {
        let pem = |der: &[u8]| {
            use base64::Engine as _;
            format!(
                "-----BEGIN TSS2 PRIVATE KEY-----\n{}\n-----END TSS2 PRIVATE KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(der)
            )
        };
        assert!(is_key_file(pem(&[0x30, 0]).as_bytes()));
        // OID 2.23.133.10.1.3, emptyAuth, parent 0x40000001, public {01 02 03}, private {}.
        let good = [
            0x30, 0x1c, 0x06, 0x06, 0x67, 0x81, 0x05, 0x0a, 0x01, 0x03, 0xa0, 0x03, 0x01, 0x01,
            0x01, 0x02, 0x04, 0x40, 0x00, 0x00, 0x01, 0x04, 0x03, 0x00, 0x01, 0x07, 0x04, 0x02,
            0x00, 0x00,
        ];
        let source = parse_key_file(pem(&good).as_bytes(), "k.pem").unwrap();
        assert!(matches!(
            source,
            Source::Wrapped { parent: 0x4000_0001, ref public, ref private }
                if public == &[7] && private.is_empty()
        ));
        let mut wrong_length = good;
        wrong_length[24] = 0x08;
        let e = parse_key_file(pem(&wrong_length).as_bytes(), "k.pem").unwrap_err();
        assert!(e.to_string().contains("wrong length"), "{e}");
        let mut policy = good;
        policy[10] = 0xa1;
        let e = parse_key_file(pem(&policy).as_bytes(), "k.pem").unwrap_err();
        assert!(e.to_string().contains("a TPM policy"), "{e}");
        let e = parse_key_file(
            b"-----BEGIN TSS2 PRIVATE KEY-----\n!!\n-----END TSS2 PRIVATE KEY-----",
            "k.pem",
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad base64"), "{e}");
    }
}
