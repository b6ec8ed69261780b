//! Re-derivation of the SigV4 canonical request from the raw HTTP request the double received.
//!
//! Written independently of the agent's signer on purpose: the double must compute what the
//! real service computes from the bytes on the wire, not what the client believes it signed.

use http::HeaderMap;
use ring::digest;

/// Why the signed headers cannot be canonicalised.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum CanonicalError {
    /// A header listed in SignedHeaders is absent from the request.
    #[error("signed header '{0}' is missing from the request")]
    MissingSignedHeader(String),
    /// A signed header's value is not valid UTF-8 text.
    #[error("signed header '{0}' has a value that is not valid text")]
    BadHeaderValue(String),
}

/// AWS URI-encoding: RFC 3986 unreserved characters stay, every other byte becomes `%XX` with
/// uppercase hex. `/` is kept only when `keep_slash` (paths), never in query components.
pub(super) fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_upper(b >> 4));
            out.push(hex_upper(b & 0x0f));
        }
    }
    out
}

fn hex_upper(nibble: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(nibble & 0x0f)])
}

/// Percent-decodes a query component. A `%` not followed by two hex digits stays literal, and
/// `+` stays `+` (SigV4 query strings are not form-encoded).
pub(super) fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The decoded `(key, value)` pairs of a raw query string, in wire order. A parameter without
/// `=` has an empty value; empty segments (`a=1&&b=2`) are skipped.
pub(super) fn query_pairs(raw: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| match segment.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(segment), Vec::new()),
        })
        .collect()
}

/// Canonical query string: each key and value decoded then AWS-URI-encoded, sorted by encoded
/// key then encoded value, joined with `&`.
pub(super) fn canonical_query(raw: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(raw.unwrap_or(""))
        .into_iter()
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Canonical URI for a non-S3 service: the path as sent on the wire, URI-encoded once more
/// (slashes kept). An empty path is `/`.
pub(super) fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        "/".to_owned()
    } else {
        uri_encode(raw_path.as_bytes(), true)
    }
}

/// A header value as SigV4 canonicalises it: trimmed, inner runs of whitespace collapsed to one
/// space.
pub(super) fn normalize_header_value(v: &str) -> String {
    v.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request. `signed_headers` must already be validated as lowercase, sorted and
/// unique; repeated headers are joined with `,` in the order received.
pub(super) fn canonical_request(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    signed_headers: &[String],
    body: &[u8],
) -> Result<String, CanonicalError> {
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let mut values = Vec::new();
        for value in headers.get_all(name.as_str()) {
            let text = std::str::from_utf8(value.as_bytes())
                .map_err(|_| CanonicalError::BadHeaderValue(name.clone()))?;
            values.push(normalize_header_value(text));
        }
        if values.is_empty() {
            return Err(CanonicalError::MissingSignedHeader(name.clone()));
        }
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    Ok(format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{signed}\n{payload}",
        uri = canonical_uri(raw_path),
        query = canonical_query(raw_query),
        signed = signed_headers.join(";"),
        payload = sha256_hex(body),
    ))
}

/// `ALG\nX-Amz-Date\nscope\nhex(sha256(canonical_request))`.
pub(super) fn string_to_sign(
    algorithm: &str,
    amz_date: &str,
    scope: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{algorithm}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// Lowercase hex SHA-256.
pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn uri_encode_keeps_only_unreserved() {
        assert_eq!(uri_encode(b"AZaz09-_.~", false), "AZaz09-_.~");
        assert_eq!(uri_encode(b"a b/c:d+e=f", false), "a%20b%2Fc%3Ad%2Be%3Df");
        assert_eq!(uri_encode(b"/a b/c", true), "/a%20b/c");
        assert_eq!(uri_encode(&[0xc3, 0xa9, 0x00], false), "%C3%A9%00");
    }

    #[test]
    fn percent_decode_handles_bad_escapes_literally() {
        assert_eq!(percent_decode("a%20b"), b"a b");
        assert_eq!(percent_decode("a%2fb%2F"), b"a/b/");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%4"), b"%4");
        assert_eq!(percent_decode("%zz"), b"%zz");
        assert_eq!(percent_decode("a+b"), b"a+b");
    }

    #[test]
    fn canonical_query_sorts_and_reencodes() {
        // Order from the SigV4 test suite's "get-vanilla-query-order-key-case".
        assert_eq!(
            canonical_query(Some("Param2=value2&Param1=value1")),
            "Param1=value1&Param2=value2"
        );
        // Same key: sorted by value.
        assert_eq!(canonical_query(Some("a=z&a=b&a=m")), "a=b&a=m&a=z");
        // Uppercase sorts before lowercase (byte order).
        assert_eq!(canonical_query(Some("b=1&B=2")), "B=2&b=1");
        // Decoded then re-encoded with AWS rules; no '=' means empty value.
        assert_eq!(
            canonical_query(Some("roleArn=arn:aws:iam::1:role/x&flag&sp=a%20b")),
            "flag=&roleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx&sp=a%20b"
        );
        assert_eq!(canonical_query(None), "");
        assert_eq!(canonical_query(Some("")), "");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        assert_eq!(normalize_header_value("  a   b \t c  "), "a b c");
        assert_eq!(normalize_header_value(""), "");
    }

    #[test]
    fn canonical_request_layout() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20240101T000000Z"));
        headers.append("x-multi", HeaderValue::from_static(" one  two "));
        headers.append("x-multi", HeaderValue::from_static("three"));
        let signed = vec![
            "host".to_owned(),
            "x-amz-date".to_owned(),
            "x-multi".to_owned(),
        ];
        let got = canonical_request("POST", "/sessions", Some("b=2&a=1"), &headers, &signed, b"")
            .expect("canonical");
        let want = "POST\n/sessions\na=1&b=2\nhost:example.com\nx-amz-date:20240101T000000Z\n\
                    x-multi:one two,three\n\nhost;x-amz-date;x-multi\n\
                    e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(got, want);
    }

    #[test]
    fn missing_signed_header_is_an_error() {
        let headers = HeaderMap::new();
        let err = canonical_request("POST", "/", None, &headers, &["host".to_owned()], b"")
            .expect_err("must fail");
        assert_eq!(err, CanonicalError::MissingSignedHeader("host".to_owned()));
    }

    #[test]
    fn non_utf8_header_value_is_an_error() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-bin",
            HeaderValue::from_bytes(&[0xff, 0xfe]).expect("opaque value"),
        );
        let err = canonical_request("POST", "/", None, &headers, &["x-bin".to_owned()], b"")
            .expect_err("must fail");
        assert_eq!(err, CanonicalError::BadHeaderValue("x-bin".to_owned()));
    }
}
