//! SigV4-X509: how a CreateSession request is signed with an X.509 certificate.
//!
//! This is AWS Signature Version 4 with the HMAC key chain replaced by the certificate's
//! private key. Given the time, the request, the certificate chain and the key, [`sign`]
//! returns the headers to send; it does no I/O and reads no clock, so it is tested with
//! known-answer vectors made by an independent tool (`tests/vectors/`).
//!
//! The steps, as the service re-derives them:
//! 1. headers `Content-Type`, `Host`, `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`), `X-Amz-X509`
//!    (base64 DER leaf) and, when there are intermediates, `X-Amz-X509-Chain`
//!    (comma-joined base64 DER, leaf excluded);
//! 2. canonical request: method, path, canonical query, canonical headers, signed headers,
//!    hex SHA-256 of the body, joined by newlines;
//! 3. string to sign: `ALG\nDATE\nYYYYMMDD/region/rolesanywhere/aws4_request\nhex(sha256(canonical request))`;
//! 4. signature over the string to sign (SHA-256, then RSA PKCS#1 v1.5 or ECDSA DER), in hex;
//! 5. `Authorization: ALG Credential=<serial decimal>/<scope>, SignedHeaders=…, Signature=…`.

use std::time::SystemTime;

use base64::Engine as _;
use time::OffsetDateTime;

use crate::identity::key::KeyError;
use crate::identity::X509Identity;

/// The signing name of the service, part of the credential scope.
pub const SERVICE: &str = "rolesanywhere";

/// The parts of an HTTP request that the signature covers.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `host` or `host:port`, exactly as sent in the `Host` header.
    pub host: &'a str,
    /// The URI path, already in its sent (escaped) form, e.g. `/sessions`.
    pub path: &'a str,
    /// Query parameters, not yet encoded.
    pub query: &'a [(String, String)],
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// A signed request: the headers to add, and the intermediate strings for diagnostics and
/// tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Header names and values to send, `Authorization` last.
    pub headers: Vec<(&'static str, String)>,
    pub canonical_request: String,
    pub string_to_sign: String,
    /// Lowercase hex.
    pub signature: String,
}

/// Signs `request` for `region` at `time` with `identity`.
pub fn sign(
    request: &Request<'_>,
    region: &str,
    time: SystemTime,
    identity: &X509Identity,
) -> Result<Signed, KeyError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (amz_date, day) = amz_dates(time);
    let x509 = b64.encode(identity.leaf_der());
    let chain = (!identity.intermediates_der().is_empty()).then(|| {
        identity
            .intermediates_der()
            .iter()
            .map(|der| b64.encode(der))
            .collect::<Vec<_>>()
            .join(",")
    });

    // Lowercase names, already in sorted order, as the canonical form requires.
    let mut headers: Vec<(&'static str, &str)> = vec![
        ("content-type", request.content_type),
        ("host", request.host),
        ("x-amz-date", &amz_date),
        ("x-amz-x509", &x509),
    ];
    if let Some(chain) = &chain {
        headers.push(("x-amz-x509-chain", chain));
    }
    let signed_headers = headers
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = canonical_request(request, &headers, &signed_headers);

    let algorithm = identity.key().algorithm();
    let scope = format!("{day}/{region}/{SERVICE}/aws4_request");
    let string_to_sign = format!(
        "{algorithm}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let signature = hex::encode(identity.key().sign(string_to_sign.as_bytes())?);
    let authorization = format!(
        "{algorithm} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        identity.serial_decimal()
    );

    let mut out = vec![
        ("Content-Type", request.content_type.to_owned()),
        ("Host", request.host.to_owned()),
        ("X-Amz-Date", amz_date.clone()),
        ("X-Amz-X509", x509.clone()),
    ];
    if let Some(chain) = chain.clone() {
        out.push(("X-Amz-X509-Chain", chain));
    }
    out.push(("Authorization", authorization));
    Ok(Signed {
        headers: out,
        canonical_request,
        string_to_sign,
        signature,
    })
}

/// `YYYYMMDDTHHMMSSZ` and `YYYYMMDD` for `time`, in UTC.
pub fn amz_dates(time: SystemTime) -> (String, String) {
    let t = OffsetDateTime::from(time);
    let day = format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day());
    let full = format!("{day}T{:02}{:02}{:02}Z", t.hour(), t.minute(), t.second());
    (full, day)
}

fn canonical_request(
    request: &Request<'_>,
    headers: &[(&'static str, &str)],
    signed_headers: &str,
) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str(request.method);
    out.push('\n');
    out.push_str(request.path);
    out.push('\n');
    out.push_str(&canonical_query(request.query));
    out.push('\n');
    for (name, value) in headers {
        out.push_str(name);
        out.push(':');
        out.push_str(&canonical_header_value(value));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(&sha256_hex(request.body));
    out
}

/// Query parameters URI-encoded and sorted by key, then value.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// SigV4 URI encoding: RFC 3986 unreserved characters stay, every other byte is `%XX`
/// with uppercase hex.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Trims the value and collapses inner runs of spaces to one, as SigV4 prescribes.
fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_encoding_keeps_only_unreserved() {
        assert_eq!(
            uri_encode("arn:aws:iam::1:role/a b~c_d.e-f"),
            "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b~c_d.e-f"
        );
        assert_eq!(uri_encode("é"), "%C3%A9");
    }

    #[test]
    fn canonical_query_sorts_by_encoded_key_then_value() {
        let q = vec![
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "z".to_string()),
            ("a".to_string(), "y".to_string()),
        ];
        assert_eq!(canonical_query(&q), "a=y&a=z&b=2");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        assert_eq!(canonical_header_value("  a   b  c "), "a b c");
    }

    #[test]
    fn amz_dates_are_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_523_696);
        assert_eq!(
            amz_dates(t),
            ("20261124T123456Z".to_string(), "20261124".to_string())
        );
    }
}
