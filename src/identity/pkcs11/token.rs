//! Finding objects in PKCS#11 tokens and logging in, the way aws_signing_helper does
//! (following draft-woodhouse-cert-best-practice §8): a URI's token attributes pick the
//! slots, its `object` (CKA_LABEL) and `id` (CKA_ID) pick the objects; certificates are
//! looked for without logging in first, and with the PIN only when exactly one token
//! matches.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, SlotInfo, TokenInfo};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::uri::{PinSource, Pkcs11Uri};
use super::Pkcs11Error;
use crate::bounded_file::{self, Links};

/// The most objects one search looks at: a token holds a handful; a URI that matches more
/// is too broad anyway.
pub(super) const MAX_OBJECTS: usize = 64;
/// The largest PIN file read.
const MAX_PIN_FILE: u64 = 1024;

/// A PKCS#11 library, loaded and initialized once per process (C_Initialize may be called
/// only once, and the agent reloads identities).
pub(super) fn library(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = loaded.get(path) {
        return Ok(ctx.clone());
    }
    let failed = |e: CkError| Pkcs11Error::Library {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let ctx = Pkcs11::new(path).map_err(failed)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed(e)),
    }
    loaded.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

/// A slot with a token, and what the URI can match on.
pub(super) struct SlotView {
    pub(super) slot: Slot,
    pub(super) info: SlotInfo,
    pub(super) token: TokenInfo,
}

impl SlotView {
    /// The token's label, for messages.
    pub(super) fn label(&self) -> &str {
        self.token.label()
    }
}

/// Every slot that holds an initialized token (slots whose information cannot be read are
/// skipped).
pub(super) fn slots(ctx: &Pkcs11) -> Result<Vec<SlotView>, Pkcs11Error> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|source| Pkcs11Error::Token {
            operation: "listing slots",
            token: String::new(),
            source,
        })?;
    Ok(slots
        .into_iter()
        .filter_map(|slot| {
            let info = ctx.get_slot_info(slot).ok()?;
            let token = ctx.get_token_info(slot).ok()?;
            Some(SlotView { slot, info, token })
        })
        .collect())
}

/// The slots whose token matches the URI's token and slot attributes.
pub(super) fn matching<'a>(
    ctx: &Pkcs11,
    slots: &'a [SlotView],
    uri: &Pkcs11Uri,
) -> Vec<&'a SlotView> {
    // Library attributes concern the module as a whole.
    if uri.text("library-manufacturer").is_some() || uri.text("library-description").is_some() {
        let Ok(info) = ctx.get_library_info() else {
            return Vec::new();
        };
        let differs = |attr, value: &str| uri.text(attr).is_some_and(|v| v != value);
        if differs("library-manufacturer", info.manufacturer_id())
            || differs("library-description", info.library_description())
        {
            return Vec::new();
        }
    }
    slots
        .iter()
        .filter(|s| {
            let differs = |attr, value: &str| uri.text(attr).is_some_and(|v| v != value);
            !(uri.slot_id().is_some_and(|id| id != s.slot.id())
                || differs("token", s.token.label())
                || differs("manufacturer", s.token.manufacturer_id())
                || differs("model", s.token.model())
                || differs("serial", s.token.serial_number())
                || differs("slot-description", s.info.slot_description())
                || differs("slot-manufacturer", s.info.manufacturer_id()))
        })
        .collect()
}

/// The labels of the tokens present, for "no token matches" messages.
pub(super) fn present(slots: &[SlotView]) -> String {
    if slots.is_empty() {
        return "none".to_owned();
    }
    slots
        .iter()
        .map(|s| format!("{:?}", s.label()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Objects of `class` matching the URI's `object` and `id`, at most [`MAX_OBJECTS`] + 1.
pub(super) fn find_by_uri(
    session: &Session,
    class: ObjectClass,
    uri: &Pkcs11Uri,
    token: &str,
) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
    find(session, class, uri.bytes("object"), uri.bytes("id"), token)
}

/// Objects of `class` with this CKA_LABEL and CKA_ID (each when given), at most
/// [`MAX_OBJECTS`] + 1.
pub(super) fn find(
    session: &Session,
    class: ObjectClass,
    label: Option<&[u8]>,
    id: Option<&[u8]>,
    token: &str,
) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
    let mut template = vec![Attribute::Class(class)];
    if let Some(label) = label {
        template.push(Attribute::Label(label.to_vec()));
    }
    if let Some(id) = id {
        template.push(Attribute::Id(id.to_vec()));
    }
    let failed = |source| Pkcs11Error::Token {
        operation: "searching objects",
        token: token.to_owned(),
        source,
    };
    session
        .iter_objects(&template)
        .map_err(failed)?
        .take(MAX_OBJECTS + 1)
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)
}

/// One byte-string attribute of an object (empty when the token does not say).
pub(super) fn bytes_attribute(
    session: &Session,
    object: ObjectHandle,
    kind: AttributeType,
) -> Vec<u8> {
    let Ok(attributes) = session.get_attributes(object, &[kind]) else {
        return Vec::new();
    };
    attributes
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) | Attribute::Id(v) | Attribute::Label(v) => Some(v),
            _ => None,
        })
        .unwrap_or_default()
}

/// The user PIN: from the URI (`pin-value`, `pin-source`), else asked on the terminal once
/// when the agent runs interactively.
pub(super) struct Pin {
    source: Option<PinSource>,
    known: Option<Zeroizing<String>>,
}

impl Pin {
    pub(super) fn new(source: Option<&PinSource>) -> Self {
        Pin {
            source: source.cloned(),
            known: None,
        }
    }

    /// True when the URI gives a PIN (so a login may be tried without asking anyone).
    pub(super) fn is_given(&self) -> bool {
        self.source.is_some() || self.known.is_some()
    }

    /// The PIN for `token`, reading or asking for it the first time.
    pub(super) fn get(&mut self, token: &str) -> Result<Zeroizing<String>, Pkcs11Error> {
        if let Some(pin) = &self.known {
            return Ok(pin.clone());
        }
        let pin = match &self.source {
            Some(PinSource::Value(v)) => v.clone(),
            Some(PinSource::File(path)) => read_pin_file(path)?,
            None => prompt(&format!("PIN for PKCS#11 token {token:?}")).ok_or_else(|| {
                Pkcs11Error::NoPin {
                    token: token.to_owned(),
                }
            })?,
        };
        self.known = Some(pin.clone());
        Ok(pin)
    }
}

fn read_pin_file(path: &Path) -> Result<Zeroizing<String>, Pkcs11Error> {
    let failed = |reason: String| Pkcs11Error::PinFile {
        path: path.display().to_string(),
        reason,
    };
    let bytes = Zeroizing::new(
        bounded_file::read(path, MAX_PIN_FILE, Links::Follow).map_err(|e| failed(e.to_string()))?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| failed("not UTF-8".to_owned()))?;
    Ok(Zeroizing::new(
        text.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// Asks for a secret on the terminal, only when the agent runs interactively (standard
/// input is a terminal): an SDK or a service must never hang on a prompt.
pub(super) fn prompt(what: &str) -> Option<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    rpassword::prompt_password(format!("Enter the {what}: "))
        .ok()
        .map(Zeroizing::new)
}

/// Logs the session's application in to the token as the user (CKU_USER), unless the
/// token needs no login. Being logged in already is fine.
pub(super) fn login(
    session: &Session,
    token: &TokenInfo,
    pin: &mut Pin,
) -> Result<(), Pkcs11Error> {
    if !token.login_required() {
        return Ok(());
    }
    let result = if token.protected_authentication_path() {
        // A PIN pad or biometric reader: the token asks the user itself.
        session.login(UserType::User, None)
    } else {
        let value = pin.get(token.label())?;
        session.login(UserType::User, Some(&AuthPin::from(value.as_str())))
    };
    login_result(result, token.label(), "log in")
}

/// Maps a C_Login outcome to our errors.
pub(super) fn login_result(
    result: Result<(), CkError>,
    token: &str,
    operation: &'static str,
) -> Result<(), Pkcs11Error> {
    match result {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
            _,
        )) => Err(Pkcs11Error::PinIncorrect {
            token: token.to_owned(),
        }),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Error::PinLocked {
            token: token.to_owned(),
        }),
        Err(source) => Err(Pkcs11Error::Token {
            operation,
            token: token.to_owned(),
            source,
        }),
    }
}
