//! Keys and certificates in PKCS#11 tokens (HSMs, smart cards, SoftHSM), named by
//! `pkcs11:` URIs (RFC 7512) in `--certificate` and `--private-key`, as aws_signing_helper
//! takes them:
//!
//! - `--certificate 'pkcs11:token=T;object=ra?pin-value=1234'`: the certificate is found in
//!   the token, and the key with the same URI (then by the certificate's CKA_ID when the
//!   label finds none); the intermediates are the token's certificates that issued it,
//!   unless `--intermediates` names a file.
//! - `--certificate cert.pem --private-key 'pkcs11:…'`: only the key is in the token.
//! - `--private-key 'pkcs11:…'` alone: the certificate is looked for with the key's URI.
//!
//! The library is `--pkcs11-lib`, else the URI's `module-path`, else p11-kit's proxy
//! (which reaches every provider registered with p11-kit). The user PIN comes from the
//! URI's `pin-value` or `pin-source` (a file), or is asked on the terminal when the agent
//! runs interactively. `--reuse-pin` uses it again for keys with CKA_ALWAYS_AUTHENTICATE.
//! A key is used only after a test signature verified with the certificate's public key.

mod key;
mod token;
pub mod uri;

use std::path::PathBuf;
use std::time::SystemTime;

use cryptoki::context::Pkcs11;
use cryptoki::object::{AttributeType, ObjectClass};
use cryptoki::slot::Slot;
use x509_parser::prelude::{FromDer, X509Certificate};

pub use key::TokenKey;
pub use uri::{Pkcs11Uri, UriError};

use super::key::SigningKey;
use super::{files, IdentityError, Origin, X509Identity, MAX_INTERMEDIATES};
use token::{Pin, SlotView};

/// The library used without `--pkcs11-lib` or `module-path`: p11-kit's proxy module.
pub const DEFAULT_LIBRARY: &str = "p11-kit-proxy.so";

/// Where the certificate of a PKCS#11 identity is.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// A PEM file (the leaf, optionally followed by its chain).
    File(PathBuf),
    /// An object in a token.
    Token(Pkcs11Uri),
}

/// A PKCS#11 identity, as the flags give it. At least one of `certificate` (as a token
/// URI) and `private_key` names a token object.
#[derive(Debug, Clone)]
pub struct Pkcs11Spec {
    /// `--pkcs11-lib`.
    pub library: Option<PathBuf>,
    pub certificate: Option<CertificateSource>,
    pub private_key: Option<Pkcs11Uri>,
    pub intermediates: Option<PathBuf>,
    /// `--reuse-pin`: log in to CKA_ALWAYS_AUTHENTICATE keys with the user PIN.
    pub reuse_pin: bool,
}

/// Why a PKCS#11 identity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("no pkcs11: URI was given for the certificate or the private key")]
    NoUri,
    #[error("cannot load the PKCS#11 library {path}: {reason} (name the provider's module with --pkcs11-lib)")]
    Library { path: String, reason: String },
    #[error("no PKCS#11 token matches {uri} (tokens present: {present})")]
    NoToken { uri: String, present: String },
    #[error("{count} PKCS#11 tokens match {uri}: add token=, serial= or slot-id= to pick one")]
    ManyTokens { uri: String, count: usize },
    #[error("no certificate matches {uri} in token {tokens}")]
    NoCertificate { uri: String, tokens: String },
    #[error("{count} certificates match {uri}: add object= or id= to pick one")]
    ManyCertificates { uri: String, count: usize },
    #[error("no private key matches {uri} in token {token:?}")]
    NoKey { uri: String, token: String },
    #[error(
        "more than {} private keys match {uri}: add object= or id= to pick one",
        token::MAX_OBJECTS
    )]
    ManyKeys { uri: String },
    #[error("the private keys matching {uri} in token {token:?} do not belong to the certificate (a test signature does not verify with its public key)")]
    KeyMismatch { uri: String, token: String },
    #[error("the PIN for PKCS#11 token {token:?} is incorrect")]
    PinIncorrect { token: String },
    #[error("the PIN for PKCS#11 token {token:?} is locked after too many wrong attempts: unlock it with the SO PIN")]
    PinLocked { token: String },
    #[error("PKCS#11 token {token:?} needs its PIN: add ?pin-value=… or ?pin-source=FILE to the URI, or run interactively to be asked")]
    NoPin { token: String },
    #[error("cannot read the PIN file {path}: {reason}")]
    PinFile { path: String, reason: String },
    #[error("the private key {uri} asks for its PIN at every signature (CKA_ALWAYS_AUTHENTICATE): pass --reuse-pin when that PIN is the user PIN, or run interactively to be asked")]
    NeedsContextPin { uri: String },
    #[error("the private key {uri} asks for its own PIN at every signature, and it is not the user PIN (--reuse-pin): run interactively to be asked")]
    ContextPinNotUserPin { uri: String },
    #[error("the private key {uri} asks for its PIN at every signature, which needs {mechanism}; the token does not offer it")]
    NoMechanism {
        uri: String,
        mechanism: &'static str,
    },
    #[error("PKCS#11 token {token:?} returned an ECDSA signature of {length} bytes, not r || s")]
    BadSignature { token: String, length: usize },
    #[error("the PKCS#11 call was interrupted: {0}")]
    Interrupted(String),
    #[error("PKCS#11 {operation} failed on token {token:?}: {source}")]
    Token {
        operation: &'static str,
        token: String,
        source: cryptoki::error::Error,
    },
}

impl Pkcs11Error {
    /// True when a setting is wrong (library, URI, PIN): retrying cannot help, and a
    /// long-running agent must not retry a wrong PIN into a locked token.
    pub fn is_setting(&self) -> bool {
        !matches!(
            self,
            Pkcs11Error::Token { .. }
                | Pkcs11Error::BadSignature { .. }
                | Pkcs11Error::Interrupted(_)
        )
    }

    /// True when trying again later may succeed (the token may be plugged in, the object
    /// written, the device recover) without risk: never after a PIN was refused or is
    /// missing (retrying a wrong PIN locks tokens), nor when the library or a mechanism is
    /// missing.
    pub fn may_pass(&self) -> bool {
        !matches!(
            self,
            Pkcs11Error::NoUri
                | Pkcs11Error::Library { .. }
                | Pkcs11Error::PinIncorrect { .. }
                | Pkcs11Error::PinLocked { .. }
                | Pkcs11Error::NoPin { .. }
                | Pkcs11Error::PinFile { .. }
                | Pkcs11Error::NeedsContextPin { .. }
                | Pkcs11Error::ContextPinNotUserPin { .. }
                | Pkcs11Error::NoMechanism { .. }
        )
    }

    /// True when the token lost the session or the object (re-inserted, reset): worth
    /// one more try with a new session.
    fn is_stale(&self) -> bool {
        use cryptoki::error::{Error, RvError::*};
        matches!(
            self,
            Pkcs11Error::Token {
                source: Error::Pkcs11(
                    SessionHandleInvalid
                        | SessionClosed
                        | DeviceRemoved
                        | TokenNotPresent
                        | UserNotLoggedIn
                        | ObjectHandleInvalid
                        | KeyHandleInvalid
                        | DeviceError,
                    _
                ),
                ..
            }
        )
    }
}

/// A certificate found in a token.
struct FoundCertificate {
    slot: Slot,
    der: Vec<u8>,
    id: Vec<u8>,
}

/// Loads and validates a PKCS#11 identity: the certificate (file or token), its chain, and
/// the key in the token, checked with a test signature. Blocking: it talks to the token and
/// may ask for a PIN.
pub fn load(spec: &Pkcs11Spec, now: SystemTime) -> Result<X509Identity, IdentityError> {
    let certificate_uri = match &spec.certificate {
        Some(CertificateSource::Token(uri)) => Some(uri),
        _ => None,
    };
    let key_uri = spec
        .private_key
        .as_ref()
        .or(certificate_uri)
        .ok_or(Pkcs11Error::NoUri)?;
    let library = spec
        .library
        .clone()
        .or_else(|| key_uri.module_path().map(PathBuf::from))
        .or_else(|| {
            certificate_uri
                .and_then(|u| u.module_path())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LIBRARY));
    let ctx = token::library(&library)?;
    let slots = token::slots(&ctx)?;
    let mut pin = Pin::new(
        key_uri
            .pin()
            .or_else(|| certificate_uri.and_then(|u| u.pin())),
    );

    let (mut chain, found) = match &spec.certificate {
        Some(CertificateSource::File(path)) => {
            (files::read_certificates(path, "certificate")?, None)
        }
        Some(CertificateSource::Token(uri)) => {
            let found = find_certificate(&ctx, &slots, uri, &mut pin)?;
            (vec![found.der.clone()], Some(found))
        }
        None => {
            let found = find_certificate(&ctx, &slots, key_uri, &mut pin)?;
            (vec![found.der.clone()], Some(found))
        }
    };
    if let Some(path) = &spec.intermediates {
        chain.extend(files::read_certificates(path, "intermediates")?);
    } else if let Some(found) = &found {
        chain.extend(issuers_in_token(&ctx, found));
    }

    // Without --private-key the key is looked for with the certificate's URI, then (when
    // that named a label) by the certificate's CKA_ID.
    let mut key_uris = vec![key_uri.clone()];
    if spec.private_key.is_none() {
        if let Some(found) = found.as_ref().filter(|f| !f.id.is_empty()) {
            if key_uri.bytes("object").is_some() {
                key_uris.push(key_uri.with_id_instead_of_label(&found.id));
            }
        }
    }
    let certificate_slot = found.as_ref().map(|f| f.slot);
    X509Identity::with_key(chain, Origin::Files, now, |spki| {
        let (kind, public_key) = super::key::certificate_key(spki)?;
        let key = TokenKey::find(
            &ctx,
            &slots,
            &key_uris,
            certificate_slot,
            kind,
            public_key,
            spec.reuse_pin,
            pin,
        )?;
        Ok(SigningKey::from_token(key))
    })
}

/// The one certificate the URI matches: searched without logging in, then, when nothing
/// was found, exactly one token matches and the URI gives a PIN, after logging in.
fn find_certificate(
    ctx: &Pkcs11,
    slots: &[SlotView],
    uri: &Pkcs11Uri,
    pin: &mut Pin,
) -> Result<FoundCertificate, Pkcs11Error> {
    let candidates = token::matching(ctx, slots, uri);
    if candidates.is_empty() {
        return Err(Pkcs11Error::NoToken {
            uri: uri.to_string(),
            present: token::present(slots),
        });
    }
    let mut found = Vec::new();
    for view in &candidates {
        if let Ok(session) = ctx.open_ro_session(view.slot) {
            found.extend(certificates_in(&session, view, uri)?);
        }
    }
    if let ([view], true, true) = (candidates.as_slice(), found.is_empty(), pin.is_given()) {
        let session = ctx
            .open_ro_session(view.slot)
            .map_err(|source| Pkcs11Error::Token {
                operation: "opening a session",
                token: view.label().to_owned(),
                source,
            })?;
        token::login(&session, &view.token, pin)?;
        found = certificates_in(&session, view, uri)?;
    }
    match found.len() {
        0 => Err(Pkcs11Error::NoCertificate {
            uri: uri.to_string(),
            tokens: candidates
                .iter()
                .map(|v| format!("{:?}", v.label()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
        1 => Ok(found.remove(0)),
        count => Err(Pkcs11Error::ManyCertificates {
            uri: uri.to_string(),
            count,
        }),
    }
}

fn certificates_in(
    session: &cryptoki::session::Session,
    view: &SlotView,
    uri: &Pkcs11Uri,
) -> Result<Vec<FoundCertificate>, Pkcs11Error> {
    let handles = token::find_by_uri(session, ObjectClass::CERTIFICATE, uri, view.label())?;
    Ok(handles
        .into_iter()
        .map(|handle| FoundCertificate {
            slot: view.slot,
            der: token::bytes_attribute(session, handle, AttributeType::Value),
            id: token::bytes_attribute(session, handle, AttributeType::Id),
        })
        .collect())
}

/// The certificates in the leaf's token that issued it, in order up to (not including) a
/// self-signed root, at most [`MAX_INTERMEDIATES`]: what aws_signing_helper sends as the
/// chain when the certificate comes from a token.
fn issuers_in_token(ctx: &Pkcs11, leaf: &FoundCertificate) -> Vec<Vec<u8>> {
    let Ok(session) = ctx.open_ro_session(leaf.slot) else {
        return Vec::new();
    };
    let Ok(handles) = token::find(&session, ObjectClass::CERTIFICATE, None, None, "") else {
        return Vec::new();
    };
    let all: Vec<Vec<u8>> = handles
        .into_iter()
        .map(|h| token::bytes_attribute(&session, h, AttributeType::Value))
        .collect();
    let parsed: Vec<(&Vec<u8>, X509Certificate<'_>)> = all
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| (der, c)))
        .collect();
    let mut chain = Vec::new();
    let Ok((_, mut current)) = X509Certificate::from_der(&leaf.der) else {
        return chain;
    };
    while chain.len() < MAX_INTERMEDIATES {
        let issuer = current.issuer().as_raw();
        let next = parsed.iter().find(|(der, c)| {
            c.subject().as_raw() == issuer
                && c.subject().as_raw() != c.issuer().as_raw()
                && **der != leaf.der
                && !chain.contains(*der)
        });
        let Some((der, cert)) = next else { break };
        chain.push((*der).clone());
        current = cert.clone();
    }
    chain
}
