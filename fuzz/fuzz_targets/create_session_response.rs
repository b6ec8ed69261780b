//! The CreateSession response parsers: `parse_success` (201 bodies) and `map_error` (error
//! status, `X-Amzn-ErrorType` and body). Input: 2 bytes of status, one line of error type
//! (absent when empty), then the body. Invariants: accepted credentials are complete and
//! unexpired; every error renders and classifies.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use spiffe_aws_agent::fuzz_api::{map_create_session_error, parse_create_session};

fuzz_target!(|data: &[u8]| {
    let Some((status, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let status = u16::from_be_bytes(*status) % 1000;
    let (header, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let header = (!header.is_empty()).then(|| String::from_utf8_lossy(header).into_owned());
    // 2026-06-01T00:00:00Z: the seeds' expirations are a few hours later.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_272_000);

    match parse_create_session(201, body, "arn:aws:iam::123456789012:role/orders", now) {
        Ok(creds) => {
            assert!(!creds.access_key_id.is_empty());
            assert!(!creds.secret_access_key.is_empty());
            assert!(!creds.session_token.is_empty());
            assert!(creds.expiration > now);
            assert!(creds.expiration <= now + Duration::from_secs(13 * 3600));
            let shown = format!("{creds:?}");
            assert!(!shown.contains(creds.secret_access_key.as_str()));
            assert!(!shown.contains(creds.session_token.as_str()));
        }
        Err(e) => {
            let _ = (e.to_string(), e.class());
        }
    }
    let e = map_create_session_error(status, header, body, "us-east-1");
    let _ = (e.to_string(), format!("{e:?}"), e.class());
});
