//! Response shapes of the real service: JSON error bodies with `X-Amzn-ErrorType`, and the
//! CreateSession success body; plus the random credentials the double issues.

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use ring::rand::{SecureRandom, SystemRandom};
use time::macros::format_description;
use time::OffsetDateTime;

/// An error answer: status, `X-Amzn-ErrorType` and the JSON `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ApiError {
    pub(super) status: u16,
    pub(super) error_type: String,
    pub(super) message: String,
}

impl ApiError {
    fn new(status: u16, error_type: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type: error_type.to_owned(),
            message: message.into(),
        }
    }

    /// 403: authentication or authorisation failed.
    pub(super) fn access_denied(message: impl Into<String>) -> Self {
        Self::new(403, "AccessDeniedException", message)
    }

    /// 400: the request parameters are invalid.
    pub(super) fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }

    /// 404: a trust anchor or profile does not exist.
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "ResourceNotFoundException", message)
    }

    /// 404 for paths the service does not have.
    pub(super) fn unknown_operation() -> Self {
        Self::new(404, "UnknownOperationException", "Unknown operation")
    }

    /// 405 for a method other than POST on `/sessions`.
    pub(super) fn method_not_allowed() -> Self {
        Self::new(405, "MethodNotAllowedException", "Method not allowed")
    }

    /// 413 for bodies over the limit.
    pub(super) fn too_large() -> Self {
        Self::new(413, "ValidationException", "Request body is too large")
    }

    /// 500: something broke inside the double (e.g. the RNG).
    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalServerException", message)
    }

    /// From an injected [`super::Fault::Status`].
    pub(super) fn injected(status: u16, error_type: &str, message: &str) -> Self {
        Self::new(status, error_type, message)
    }
}

/// A JSON response. Header values that are not valid (possible only for injected error types)
/// are left out rather than failing the response.
pub(super) fn json_response(
    status: u16,
    body: String,
    error_type: Option<&str>,
    request_id: &str,
) -> Response<String> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), v);
    }
    if let Some(v) = error_type.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(HeaderName::from_static("x-amzn-errortype"), v);
    }
    resp
}

/// The JSON error body and headers for `err`.
pub(super) fn error_response(err: &ApiError, request_id: &str) -> Response<String> {
    let body = serde_json::json!({ "message": err.message }).to_string();
    let mut resp = json_response(err.status, body, Some(&err.error_type), request_id);
    if err.status == 405 {
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

/// Random characters from `alphabet` (length a power of two, so `byte % len` is uniform).
pub(super) fn random_chars(
    rng: &SystemRandom,
    alphabet: &[u8],
    n: usize,
) -> Result<String, ApiError> {
    debug_assert!(alphabet.len().is_power_of_two());
    let mut bytes = vec![0u8; n];
    rng.fill(&mut bytes)
        .map_err(|_| ApiError::internal("random number generator failed"))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect())
}

/// Uppercase letters and digits 2–7, the alphabet of AWS key ids.
pub(super) const KEY_ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Base64 alphabet, as in secret access keys.
pub(super) const SECRET_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Random bytes as standard base64, for session tokens.
pub(super) fn random_base64(rng: &SystemRandom, n: usize) -> Result<String, ApiError> {
    use base64::Engine as _;
    let mut bytes = vec![0u8; n];
    rng.fill(&mut bytes)
        .map_err(|_| ApiError::internal("random number generator failed"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A random (version 4) UUID, for subject ARNs and request ids.
pub(super) fn random_uuid(rng: &SystemRandom) -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    rng.fill(&mut b)
        .map_err(|_| ApiError::internal("random number generator failed"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// `2026-11-24T21:00:00Z`, the expiration format of the real service.
pub(super) fn format_expiration(unix: i64) -> Result<String, ApiError> {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .ok_or_else(|| ApiError::internal("cannot format the expiration time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_v4_shaped_and_random() {
        let rng = SystemRandom::new();
        let a = random_uuid(&rng).expect("uuid");
        let b = random_uuid(&rng).expect("uuid");
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn expiration_format() {
        assert_eq!(
            format_expiration(1_795_554_000).expect("format"),
            "2026-11-24T21:00:00Z"
        );
    }

    #[test]
    fn error_response_shape() {
        let resp = error_response(&ApiError::access_denied("Invalid signature"), "rid");
        assert_eq!(resp.status(), 403);
        assert_eq!(
            resp.headers().get("x-amzn-errortype").map(|v| v.as_bytes()),
            Some(&b"AccessDeniedException"[..])
        );
        let body: serde_json::Value = serde_json::from_str(resp.body()).expect("json");
        assert_eq!(body["message"], "Invalid signature");
    }

    #[test]
    fn invalid_injected_values_do_not_break_the_response() {
        let resp = error_response(&ApiError::injected(1000, "bad\nvalue", "m"), "rid");
        assert_eq!(resp.status(), 500);
        assert!(resp.headers().get("x-amzn-errortype").is_none());
    }
}
