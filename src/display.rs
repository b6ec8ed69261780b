//! How values are turned into text for people and for AWS clients, in one place: error
//! chains on one line (what a `credential_process` caller shows) and times the way AWS
//! writes them in credential documents.

use std::time::SystemTime;

use time::OffsetDateTime;

/// The error and its causes on one line. Transport errors hide the useful part ("No such
/// file or directory", "Connection refused") a few levels down; causes already quoted by
/// their parent are not repeated.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// `2026-11-24T21:00:00Z`: UTC, whole seconds, as AWS writes `Expiration`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// [`rfc3339`] for a `SystemTime`, clamped to what the format can carry instead of
/// panicking on times outside it.
pub(crate) fn aws_time(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let dt = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(if secs < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        // 9999-12-31T23:59:59Z, the largest time the format can carry.
        time::macros::datetime!(9999-12-31 23:59:59 UTC)
    });
    rfc3339(dt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_utc_whole_seconds_and_never_panic() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_554_000);
        assert_eq!(aws_time(t), "2026-11-24T21:00:00Z");
        assert_eq!(
            aws_time(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)),
            "9999-12-31T23:59:59Z"
        );
    }

    #[test]
    fn error_chains_name_every_new_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "connect failed: refused",
            Some(Box::new(E(
                "refused",
                Some(Box::new(E("os error 111", None))),
            ))),
        );
        assert_eq!(error_chain(&e), "connect failed: refused: os error 111");
    }
}
