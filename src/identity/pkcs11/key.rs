//! A private key that never leaves its token: every signature is a PKCS#11 call.
//!
//! One read-only session stays open and logged in for the key's lifetime; when the token
//! says the session or the object is gone (token re-inserted, daemon restarted), the key is
//! looked up again by its CKA_ID and CKA_LABEL and checked against the certificate once more.
//!
//! RSA signs with CKM_SHA256_RSA_PKCS (or CKM_RSA_PKCS over a SHA-256 DigestInfo when the
//! token only has that); ECDSA signs our SHA-256 digest with CKM_ECDSA and the token's
//! raw `r || s` is DER-encoded, as SigV4-X509 wants. A key with CKA_ALWAYS_AUTHENTICATE
//! needs a CKU_CONTEXT_SPECIFIC login between C_SignInit and C_Sign: the user PIN with
//! `--reuse-pin`, else the PIN asked on the terminal. That uses the multi-part calls, so
//! such an ECDSA key needs a token with CKM_ECDSA_SHA256.

use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::token::{self, Pin, SlotView};
use super::{Pkcs11Error, Pkcs11Uri};
use crate::identity::key::{self, KeyKind};

/// What the key signs when it is checked against the certificate.
const CHECK_MESSAGE: &[u8] = b"spiffe-aws-agent: does this PKCS#11 key belong to the certificate?";

/// DER of DigestInfo { sha256, NULL } up to the digest, for CKM_RSA_PKCS.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// A private key in a PKCS#11 token, checked to match the certificate.
pub struct TokenKey {
    ctx: Pkcs11,
    slot: Slot,
    token: String,
    /// The URI that found the key (PIN redacted), for messages.
    shown: String,
    id: Vec<u8>,
    label: Vec<u8>,
    kind: KeyKind,
    /// The certificate's public key: RSAPublicKey DER or the uncompressed EC point.
    public_key: Vec<u8>,
    /// The token hashes and pads RSA itself (CKM_SHA256_RSA_PKCS).
    rsa_hashes: bool,
    /// The token has CKM_ECDSA_SHA256 (needed for multi-part ECDSA).
    ecdsa_hashes: bool,
    reuse_pin: bool,
    state: Mutex<State>,
}

struct State {
    open: Option<(Session, ObjectHandle, bool)>,
    pin: Pin,
    /// A context-specific PIN asked on the terminal, kept for the next signatures.
    context_pin: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("token", &self.token)
            .field("uri", &self.shown)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// Finds the private key for the certificate whose public key is `public_key`: the
    /// first of `uris` that finds any key decides; among the keys it finds, the first whose
    /// test signature verifies with the certificate's key is used.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn find(
        ctx: &Pkcs11,
        slots: &[SlotView],
        uris: &[Pkcs11Uri],
        certificate_slot: Option<Slot>,
        kind: KeyKind,
        public_key: Vec<u8>,
        reuse_pin: bool,
        mut pin: Pin,
    ) -> Result<TokenKey, Pkcs11Error> {
        let first = uris.first().ok_or(Pkcs11Error::NoUri)?;
        let candidates = token::matching(ctx, slots, first);
        let view = match candidates.as_slice() {
            [] => {
                return Err(Pkcs11Error::NoToken {
                    uri: first.to_string(),
                    present: token::present(slots),
                })
            }
            [one] => *one,
            many => *many
                .iter()
                .find(|v| Some(v.slot) == certificate_slot)
                .ok_or(Pkcs11Error::ManyTokens {
                    uri: first.to_string(),
                    count: many.len(),
                })?,
        };
        let label = view.label().to_owned();
        let session = open(ctx, view.slot, &label)?;
        token::login(&session, &view.token, &mut pin)?;
        let mechanisms = ctx.get_mechanism_list(view.slot).unwrap_or_default();
        let mut key = TokenKey {
            ctx: ctx.clone(),
            slot: view.slot,
            token: label.clone(),
            shown: first.to_string(),
            id: Vec::new(),
            label: Vec::new(),
            kind,
            public_key,
            rsa_hashes: mechanisms.contains(&MechanismType::SHA256_RSA_PKCS),
            ecdsa_hashes: mechanisms.contains(&MechanismType::ECDSA_SHA256),
            reuse_pin,
            state: Mutex::new(State {
                open: None,
                pin: Pin::new(None),
                context_pin: None,
            }),
        };
        let mut state = State {
            open: None,
            pin,
            context_pin: None,
        };
        let mut found_any = false;
        for uri in uris {
            let handles = token::find_by_uri(&session, ObjectClass::PRIVATE_KEY, uri, &label)?;
            if handles.len() > token::MAX_OBJECTS {
                return Err(Pkcs11Error::ManyKeys {
                    uri: uri.to_string(),
                });
            }
            found_any |= !handles.is_empty();
            if let Some((handle, always)) = key.pick(&session, &handles, &mut state)? {
                key.id = token::bytes_attribute(&session, handle, AttributeType::Id);
                key.label = token::bytes_attribute(&session, handle, AttributeType::Label);
                key.shown = uri.to_string();
                state.open = Some((session, handle, always));
                key.state = Mutex::new(state);
                return Ok(key);
            }
        }
        let uri = first.to_string();
        Err(if found_any {
            Pkcs11Error::KeyMismatch { uri, token: label }
        } else {
            Pkcs11Error::NoKey { uri, token: label }
        })
    }

    /// The key type (the certificate's).
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Signs `message` as Roles Anywhere verifies it: SHA-256, then PKCS#1 v1.5 or ECDSA
    /// (DER).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut retried = false;
        loop {
            if state.open.is_none() {
                let reopened = self.reopen(&mut state)?;
                state.open = Some(reopened);
            }
            let State {
                open,
                pin,
                context_pin,
            } = &mut *state;
            let Some((session, handle, always)) = open.as_ref() else {
                continue;
            };
            match self.sign_with(session, *handle, *always, message, pin, context_pin) {
                Ok(signature) => return Ok(signature),
                Err(e) => {
                    // Start from a fresh session next time (an aborted operation may linger).
                    *open = None;
                    if retried || !e.is_stale() {
                        return Err(e);
                    }
                    retried = true;
                }
            }
        }
    }

    /// Opens a new session, logs in and finds the key again by its CKA_ID and CKA_LABEL.
    fn reopen(&self, state: &mut State) -> Result<(Session, ObjectHandle, bool), Pkcs11Error> {
        let info = self
            .ctx
            .get_token_info(self.slot)
            .map_err(|source| self.failed("reading the token", source))?;
        let session = open(&self.ctx, self.slot, &self.token)?;
        token::login(&session, &info, &mut state.pin)?;
        let handles = token::find(
            &session,
            ObjectClass::PRIVATE_KEY,
            non_empty(&self.label),
            non_empty(&self.id),
            &self.token,
        )?;
        match self.pick(&session, &handles, state)? {
            Some((handle, always)) => Ok((session, handle, always)),
            None => Err(Pkcs11Error::NoKey {
                uri: self.shown.clone(),
                token: self.token.clone(),
            }),
        }
    }

    /// The first of `handles` whose type fits and whose test signature verifies with the
    /// certificate's public key, with its CKA_ALWAYS_AUTHENTICATE.
    fn pick(
        &self,
        session: &Session,
        handles: &[ObjectHandle],
        state: &mut State,
    ) -> Result<Option<(ObjectHandle, bool)>, Pkcs11Error> {
        for &handle in handles {
            let attributes = session
                .get_attributes(
                    handle,
                    &[AttributeType::KeyType, AttributeType::AlwaysAuthenticate],
                )
                .unwrap_or_default();
            let mut key_type = None;
            let mut always = false;
            for attribute in attributes {
                match attribute {
                    Attribute::KeyType(t) => key_type = Some(t),
                    Attribute::AlwaysAuthenticate(a) => always = a,
                    _ => {}
                }
            }
            let fits = match self.kind {
                KeyKind::Rsa { .. } => key_type == Some(KeyType::RSA),
                KeyKind::P256 | KeyKind::P384 => key_type == Some(KeyType::EC),
            };
            if !fits {
                continue;
            }
            let signature = self.sign_with(
                session,
                handle,
                always,
                CHECK_MESSAGE,
                &mut state.pin,
                &mut state.context_pin,
            )?;
            if key::verify(self.kind, &self.public_key, CHECK_MESSAGE, &signature) {
                return Ok(Some((handle, always)));
            }
        }
        Ok(None)
    }

    fn sign_with(
        &self,
        session: &Session,
        handle: ObjectHandle,
        always_authenticate: bool,
        message: &[u8],
        pin: &mut Pin,
        context_pin: &mut Option<Zeroizing<String>>,
    ) -> Result<Vec<u8>, Pkcs11Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        let failed = |source| self.failed("signing", source);
        // Multi-part, with the context-specific login between init and data.
        let mut in_parts = |mechanism: &Mechanism| -> Result<Vec<u8>, Pkcs11Error> {
            session.sign_init(mechanism, handle).map_err(failed)?;
            self.context_login(session, pin, context_pin)?;
            session.sign_update(message).map_err(failed)?;
            session.sign_final().map_err(failed)
        };
        match self.kind {
            KeyKind::Rsa { .. } if self.rsa_hashes => {
                if always_authenticate {
                    in_parts(&Mechanism::Sha256RsaPkcs)
                } else {
                    session
                        .sign(&Mechanism::Sha256RsaPkcs, handle, message)
                        .map_err(failed)
                }
            }
            KeyKind::Rsa { .. } => {
                if always_authenticate {
                    return Err(self.unsupported("CKM_SHA256_RSA_PKCS"));
                }
                let mut digest_info = SHA256_DIGEST_INFO.to_vec();
                digest_info.extend_from_slice(digest.as_ref());
                session
                    .sign(&Mechanism::RsaPkcs, handle, &digest_info)
                    .map_err(failed)
            }
            KeyKind::P256 | KeyKind::P384 => {
                let raw = if always_authenticate {
                    if !self.ecdsa_hashes {
                        return Err(self.unsupported("CKM_ECDSA_SHA256"));
                    }
                    in_parts(&Mechanism::EcdsaSha256)?
                } else {
                    session
                        .sign(&Mechanism::Ecdsa, handle, digest.as_ref())
                        .map_err(failed)?
                };
                key::ecdsa_der_from_raw(&raw).ok_or_else(|| Pkcs11Error::BadSignature {
                    token: self.token.clone(),
                    length: raw.len(),
                })
            }
        }
    }

    /// The CKU_CONTEXT_SPECIFIC login a CKA_ALWAYS_AUTHENTICATE key needs for each
    /// signature: the PIN asked before, else the user PIN (`--reuse-pin`), else ask.
    fn context_login(
        &self,
        session: &Session,
        pin: &mut Pin,
        context_pin: &mut Option<Zeroizing<String>>,
    ) -> Result<(), Pkcs11Error> {
        let login =
            |value: &str| session.login(UserType::ContextSpecific, Some(&AuthPin::from(value)));
        if let Some(value) = context_pin.as_ref() {
            return token::login_result(login(value), &self.token, "logging in for the key");
        }
        let mut reuse_failed = None;
        if self.reuse_pin {
            let value = pin.get(&self.token)?;
            match login(&value) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => return Ok(()),
                Err(e) => reuse_failed = Some(e),
            }
        }
        let what = format!("PIN of the private key {}", self.shown);
        let Some(value) = token::prompt(&what) else {
            return Err(match reuse_failed {
                Some(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                    Pkcs11Error::ContextPinNotUserPin {
                        uri: self.shown.clone(),
                    }
                }
                Some(source) => self.failed("logging in for the key", source),
                None => Pkcs11Error::NeedsContextPin {
                    uri: self.shown.clone(),
                },
            });
        };
        token::login_result(login(&value), &self.token, "logging in for the key")?;
        *context_pin = Some(value);
        Ok(())
    }

    fn failed(&self, operation: &'static str, source: CkError) -> Pkcs11Error {
        Pkcs11Error::Token {
            operation,
            token: self.token.clone(),
            source,
        }
    }

    fn unsupported(&self, mechanism: &'static str) -> Pkcs11Error {
        Pkcs11Error::NoMechanism {
            uri: self.shown.clone(),
            mechanism,
        }
    }
}

fn non_empty(value: &[u8]) -> Option<&[u8]> {
    (!value.is_empty()).then_some(value)
}

fn open(ctx: &Pkcs11, slot: Slot, token: &str) -> Result<Session, Pkcs11Error> {
    ctx.open_ro_session(slot)
        .map_err(|source| Pkcs11Error::Token {
            operation: "opening a session",
            token: token.to_owned(),
            source,
        })
}
