//! PKCS#11 URIs (RFC 7512): which token, which object, and how to log in.
//!
//! `pkcs11:token=My%20Token;object=ra-key;id=%01?pin-value=1234`: path attributes (`;`
//! separated) narrow the token and the object, query attributes (`&` separated) carry the
//! PIN (`pin-value`, or `pin-source` naming a file) and the module (`module-path`). Values
//! are percent-encoded. A URI is a search term, not a name: [`super::token`] applies it.

use std::path::PathBuf;

use zeroize::Zeroizing;

/// The longest URI accepted: real ones are well under 1 KiB.
const MAX_URI_LEN: usize = 4096;

/// Path attributes that select a token (slot) or an object, and which of them we match on.
const PATH_ATTRIBUTES: &[&str] = &[
    "token",
    "manufacturer",
    "serial",
    "model",
    "library-manufacturer",
    "library-description",
    "library-version",
    "object",
    "type",
    "id",
    "slot-description",
    "slot-manufacturer",
    "slot-id",
];
const QUERY_ATTRIBUTES: &[&str] = &["pin-value", "pin-source", "module-name", "module-path"];
const OBJECT_TYPES: &[&str] = &["cert", "data", "private", "public", "secret-key"];

/// Why a `pkcs11:` URI cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    #[error("is not a PKCS#11 URI (it must start with \"pkcs11:\")")]
    Scheme,
    #[error("is longer than {MAX_URI_LEN} characters")]
    TooLong,
    #[error("{uri}: {attribute:?} is not a {part} attribute of RFC 7512")]
    UnknownAttribute {
        uri: String,
        attribute: String,
        part: &'static str,
    },
    #[error("{uri}: {attribute} is given twice")]
    Repeated { uri: String, attribute: String },
    #[error("{uri}: {attribute} has a bad value: {reason}")]
    BadValue {
        uri: String,
        attribute: String,
        reason: &'static str,
    },
    #[error("{uri}: pin-value and pin-source exclude each other")]
    TwoPins { uri: String },
}

/// A parsed `pkcs11:` URI. Its `Debug` and [`Display`](std::fmt::Display) never show the PIN.
#[derive(Clone)]
pub struct Pkcs11Uri {
    /// Path attributes, percent-decoded (`id` is binary; the others are UTF-8).
    path: Vec<(String, Vec<u8>)>,
    pin: Option<PinSource>,
    module_path: Option<PathBuf>,
    /// The URI as given, with any `pin-value` replaced by `***`, for messages.
    shown: String,
}

/// Where the user PIN comes from.
#[derive(Clone)]
pub enum PinSource {
    /// `pin-value`: the PIN itself.
    Value(Zeroizing<String>),
    /// `pin-source`: a file holding it (`file:` URI or plain path).
    File(PathBuf),
}

impl std::fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pkcs11Uri").field(&self.shown).finish()
    }
}

impl std::fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Pkcs11Uri {
    /// True when `s` is meant as a PKCS#11 URI rather than a file name.
    pub fn is_uri(s: &str) -> bool {
        s.get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
    }

    /// Parses `s`, checking every attribute name and value.
    pub fn parse(s: &str) -> Result<Self, UriError> {
        if !Self::is_uri(s) {
            return Err(UriError::Scheme);
        }
        if s.len() > MAX_URI_LEN {
            return Err(UriError::TooLong);
        }
        let rest = &s[7..];
        let (path_part, query_part) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let shown = redact(s);
        let bad = |attribute: &str, reason| UriError::BadValue {
            uri: shown.clone(),
            attribute: attribute.to_owned(),
            reason,
        };

        let mut path: Vec<(String, Vec<u8>)> = Vec::new();
        for item in path_part.split(';').filter(|i| !i.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| bad(item, "no '=' after the name"))?;
            let name = name.to_ascii_lowercase();
            if !PATH_ATTRIBUTES.contains(&name.as_str()) && !name.starts_with("x-") {
                return Err(UriError::UnknownAttribute {
                    uri: shown.clone(),
                    attribute: name,
                    part: "path",
                });
            }
            if path.iter().any(|(n, _)| *n == name) {
                return Err(UriError::Repeated {
                    uri: shown.clone(),
                    attribute: name,
                });
            }
            let value = percent_decode(value).ok_or_else(|| bad(&name, "bad percent-encoding"))?;
            if name != "id" && std::str::from_utf8(&value).is_err() {
                return Err(bad(&name, "not UTF-8"));
            }
            match name.as_str() {
                "type" if !OBJECT_TYPES.iter().any(|t| t.as_bytes() == value) => {
                    return Err(bad(
                        &name,
                        "must be cert, data, private, public or secret-key",
                    ))
                }
                "slot-id"
                    if std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_none() =>
                {
                    return Err(bad(&name, "must be a decimal number"))
                }
                _ => {}
            }
            path.push((name, value));
        }

        let mut pin = None;
        let mut module_path = None;
        let mut seen: Vec<String> = Vec::new();
        for item in query_part
            .unwrap_or("")
            .split('&')
            .filter(|i| !i.is_empty())
        {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| bad(item, "no '=' after the name"))?;
            let name = name.to_ascii_lowercase();
            if !QUERY_ATTRIBUTES.contains(&name.as_str()) && !name.starts_with("x-") {
                return Err(UriError::UnknownAttribute {
                    uri: shown.clone(),
                    attribute: name,
                    part: "query",
                });
            }
            if seen.contains(&name) {
                return Err(UriError::Repeated {
                    uri: shown.clone(),
                    attribute: name,
                });
            }
            seen.push(name.clone());
            let value = Zeroizing::new(
                percent_decode(value).ok_or_else(|| bad(&name, "bad percent-encoding"))?,
            );
            let text = std::str::from_utf8(&value).map_err(|_| bad(&name, "not UTF-8"))?;
            match name.as_str() {
                "pin-value" | "pin-source" if pin.is_some() => {
                    return Err(UriError::TwoPins { uri: shown.clone() })
                }
                "pin-value" => pin = Some(PinSource::Value(Zeroizing::new(text.to_owned()))),
                "pin-source" => {
                    let path = text.strip_prefix("file:").unwrap_or(text);
                    if path.is_empty() || path.starts_with('|') {
                        return Err(bad(&name, "must name a file (file:/path or /path)"));
                    }
                    pin = Some(PinSource::File(PathBuf::from(path)));
                }
                "module-path" => module_path = Some(PathBuf::from(text)),
                _ => {}
            }
        }
        Ok(Pkcs11Uri {
            path,
            pin,
            module_path,
            shown,
        })
    }

    /// A path attribute as text (every one but `id` is UTF-8).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.bytes(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A path attribute's raw bytes.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.path
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// `slot-id`, checked to be a number when parsed.
    pub fn slot_id(&self) -> Option<u64> {
        self.text("slot-id").and_then(|v| v.parse().ok())
    }

    /// Where the PIN comes from, if the URI says.
    pub fn pin(&self) -> Option<&PinSource> {
        self.pin.as_ref()
    }

    /// `module-path`: the PKCS#11 library the URI names.
    pub fn module_path(&self) -> Option<&std::path::Path> {
        self.module_path.as_deref()
    }

    /// The same URI without `object`, selecting by `id` instead: how a key is looked for
    /// again when the certificate's label did not find it (draft-woodhouse-cert-best-practice
    /// §8.2, as aws_signing_helper does).
    pub fn with_id_instead_of_label(&self, id: &[u8]) -> Self {
        let mut uri = self.clone();
        uri.path.retain(|(n, _)| n != "object" && n != "id");
        uri.path.push(("id".to_owned(), id.to_vec()));
        uri
    }
}

/// Decodes `%XX` escapes; `None` on a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// `s` with the value of every `pin-value` query attribute replaced by `***`.
fn redact(s: &str) -> String {
    let Some((head, query)) = s.split_once('?') else {
        return s.to_owned();
    };
    let query = query
        .split('&')
        .map(|item| match item.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("pin-value") => format!("{name}=***"),
            _ => item.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{head}?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_query_attributes() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=My%20Token;object=ra-key;id=%01%ff;slot-id=3?pin-value=12%334&module-path=/usr/lib/x.so",
        )
        .unwrap();
        assert_eq!(uri.text("token"), Some("My Token"));
        assert_eq!(uri.text("object"), Some("ra-key"));
        assert_eq!(uri.bytes("id"), Some(&[0x01, 0xff][..]));
        assert_eq!(uri.slot_id(), Some(3));
        assert!(matches!(uri.pin(), Some(PinSource::Value(v)) if v.as_str() == "1234"));
        assert_eq!(
            uri.module_path(),
            Some(std::path::Path::new("/usr/lib/x.so"))
        );
        let shown = uri.to_string();
        assert!(
            shown.contains("pin-value=***") && !shown.contains("12%334"),
            "{shown}"
        );
        assert!(!format!("{uri:?}").contains("1234"));
    }

    #[test]
    fn pin_source_names_a_file() {
        let uri = Pkcs11Uri::parse("pkcs11:object=k?pin-source=file:/run/pin").unwrap();
        assert!(
            matches!(uri.pin(), Some(PinSource::File(p)) if p == std::path::Path::new("/run/pin"))
        );
        let uri = Pkcs11Uri::parse("pkcs11:object=k?pin-source=/run/pin").unwrap();
        assert!(
            matches!(uri.pin(), Some(PinSource::File(p)) if p == std::path::Path::new("/run/pin"))
        );
    }

    #[test]
    fn refuses_what_rfc_7512_does_not_allow() {
        for (uri, expected) in [
            ("file:/x", "must start with"),
            ("pkcs11:colour=red", "\"colour\" is not a path attribute"),
            ("pkcs11:object=a;object=b", "object is given twice"),
            ("pkcs11:object=%zz", "bad percent-encoding"),
            ("pkcs11:object=%4", "bad percent-encoding"),
            ("pkcs11:type=key", "must be cert, data"),
            ("pkcs11:slot-id=x", "decimal"),
            ("pkcs11:object", "no '='"),
            (
                "pkcs11:object=k?pin-value=1&pin-source=/f",
                "exclude each other",
            ),
            ("pkcs11:object=k?pin=1", "\"pin\" is not a query attribute"),
            (
                "pkcs11:object=k?pin-source=|/bin/getpin",
                "must name a file",
            ),
        ] {
            let e = Pkcs11Uri::parse(uri).expect_err(uri).to_string();
            assert!(e.contains(expected), "{uri}: {e}");
        }
        assert!(
            Pkcs11Uri::parse(&format!("pkcs11:object={}", "a".repeat(5000)))
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );
        // Vendor attributes are allowed and ignored.
        assert!(Pkcs11Uri::parse("pkcs11:x-vendor=1;object=k?x-other=2").is_ok());
        assert!(Pkcs11Uri::parse("PKCS11:object=k").is_ok());
    }

    #[test]
    fn a_key_can_be_looked_for_by_the_certificate_id() {
        let uri = Pkcs11Uri::parse("pkcs11:token=t;object=cert").unwrap();
        let by_id = uri.with_id_instead_of_label(&[7]);
        assert_eq!(by_id.text("object"), None);
        assert_eq!(by_id.bytes("id"), Some(&[7][..]));
        assert_eq!(by_id.text("token"), Some("t"));
    }
}
