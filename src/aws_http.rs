//! One HTTP exchange with an AWS service, as both AWS clients make it (Roles Anywhere's
//! CreateSession in [`crate::rolesanywhere`], STS's AssumeRoleWithWebIdentity in
//! [`crate::webidentity`]): send, read a bounded body, and sort what went wrong into the few
//! cases that matter to a caller, so the same network problem reads the same in both.

/// The longest session either service issues (12 h), plus the clock skew allowed on top.
const LONGEST_SESSION: std::time::Duration = std::time::Duration::from_secs(43_200);
const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(3600);

/// Reads a credentials expiration (RFC 3339, as both services write it) found at `field`,
/// refusing one already past or further away than any session lasts: either means a wrong
/// clock here or a broken answer, and serving such credentials would fail or never refresh.
pub(crate) fn checked_expiration(
    text: &str,
    field: &str,
    now: std::time::SystemTime,
) -> Result<std::time::SystemTime, String> {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{field} {text:?} is not RFC 3339 ({e})"))?;
    let expiration = std::time::SystemTime::from(parsed);
    if expiration <= now {
        return Err(format!(
            "the credentials expired already ({text}); check the system clock"
        ));
    }
    if expiration > now + LONGEST_SESSION + CLOCK_SKEW {
        return Err(format!(
            "{field} {text} is further away than any session lasts; check the system clock"
        ));
    }
    Ok(expiration)
}

/// A whole response: status, headers and a body of bounded size.
pub(crate) struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// Why no whole response came back.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The client's timeout fired.
    TimedOut,
    /// The endpoint's TLS certificate was refused: retrying will not help.
    UntrustedCertificate { reason: String },
    /// No connection, or it broke before a response began.
    Unreachable { reason: String },
    /// A response began but its body could not be read, or was larger than allowed.
    BadBody { status: u16, reason: String },
}

/// Sends `request` and reads the response, refusing a body over `max_body` bytes.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    max_body: usize,
) -> Result<Response, Failure> {
    let mut response = request.send().await.map_err(|e| failure(&e, None))?;
    let status = response.status().as_u16();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failure(&e, Some(status)))?
    {
        if body.len() + chunk.len() > max_body {
            return Err(Failure::BadBody {
                status,
                reason: format!("the body is larger than {max_body} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A transport error while sending (`status` None) or while reading the body.
fn failure(e: &reqwest::Error, status: Option<u16>) -> Failure {
    if e.is_timeout() {
        return Failure::TimedOut;
    }
    // reqwest's own top line repeats the URL; the causes say what went wrong.
    let reason = match std::error::Error::source(e) {
        Some(cause) => crate::display::error_chain(cause),
        None => crate::display::error_chain(e),
    };
    match status {
        None if refused_certificate(e) => Failure::UntrustedCertificate { reason },
        None => Failure::Unreachable { reason },
        Some(status) => Failure::BadBody { status, reason },
    }
}

/// Whether the TLS handshake failed because the endpoint's certificate was refused.
///
/// rustls' error reaches us wrapped in an `io::Error`, whose `source()` skips the error it
/// wraps, so each `io::Error` in the chain is opened with `get_ref()`.
fn refused_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if matches!(
            err.downcast_ref::<rustls::Error>(),
            Some(
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
            )
        ) {
            return true;
        }
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_certificate_error_is_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(wrapped);
        assert!(refused_certificate(&outer));
        let other =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert!(!refused_certificate(&other));
    }
}
