//! Loading an identity: PEM files through `identity::files::load` (written to a temporary
//! directory, since it takes paths), or DER straight into `X509Identity::new`.
//!
//! Input: one mode byte, then parts separated by the line `=====`:
//! - mode even (PEM): certificate file, private key file, and optionally an intermediates file;
//! - mode odd (DER): the private key (its kind chosen by the mode byte: PKCS#8, PKCS#1 or
//!   SEC1), then the chain, leaf first.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use spiffe_aws_agent::identity::{files, Origin, X509Identity};

const SEPARATOR: &[u8] = b"\n=====\n";

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        tempfile::Builder::new()
            .prefix("fuzz-identity-")
            .tempdir_in(base)
            .unwrap()
            .keep()
    })
}

fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while let Some(i) = data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        parts.push(&data[..i]);
        data = &data[i + SEPARATOR.len()..];
    }
    parts.push(data);
    parts
}

fn check(identity: &X509Identity) {
    // Debug never shows key material; the accessors work on whatever was accepted.
    let _ = format!("{identity:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // 2026-06-01: the test PKI in certs/ is valid then.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_272_000);
    let parts = split(rest);
    if mode % 2 == 0 {
        if parts.len() < 2 || parts.len() > 3 {
            return;
        }
        let dir = dir();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let inter = dir.join("intermediates.pem");
        std::fs::write(&cert, parts[0]).unwrap();
        std::fs::write(&key, parts[1]).unwrap();
        let inter = parts.get(2).map(|p| {
            std::fs::write(&inter, p).unwrap();
            inter
        });
        if let Ok(identity) = files::load(&cert, &key, inter.as_deref(), now) {
            check(&identity);
        }
    } else {
        let Some((key, chain)) = parts.split_first() else {
            return;
        };
        let key = key.to_vec();
        let key = match (mode / 2) % 3 {
            0 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(key)),
            _ => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(key)),
        };
        let chain = chain.iter().map(|c| c.to_vec()).collect();
        let origin = if mode & 0x80 != 0 {
            Origin::WorkloadApi
        } else {
            Origin::Files
        };
        if let Ok(identity) = X509Identity::new(chain, &key, origin, now) {
            check(&identity);
        }
    }
});
