//! Key containers from files: encrypted PKCS#8 keys (`identity::files::read_private_key` with a
//! password), PKCS#12 files (`identity::pkcs12::read`, with and without a password) and
//! `read-certificate-data` (`diagnose::certificate_data::read`). Each must return a value or an
//! error, never panic, hang or take unbounded memory (the work-factor limits).
//!
//! Input: one mode byte, then the file's bytes.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spiffe_aws_agent::diagnose::certificate_data;
use spiffe_aws_agent::identity::files::{self, KeyPassword};
use spiffe_aws_agent::identity::pkcs12;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        tempfile::Builder::new()
            .prefix("fuzz-keys-")
            .tempdir_in(base)
            .unwrap()
            .keep()
            .join("input")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let path = file();
    std::fs::write(path, rest).unwrap();
    let password = KeyPassword::new("test".into());
    match mode % 4 {
        0 => {
            let _ = files::read_private_key(path, Some(&password));
        }
        1 => {
            let _ = pkcs12::read(path, None);
        }
        2 => {
            let _ = pkcs12::read(path, Some(&password));
        }
        _ => {
            if let Ok(data) = certificate_data::read(path, None) {
                let _ = certificate_data::render(&data);
            }
        }
    }
});
