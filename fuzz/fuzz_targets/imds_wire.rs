//! Raw bytes through one IMDS connection as the accept loop serves it: hyper's own HTTP/1.1
//! request parsing (with the loop's head-size cap and timeouts) in front of the IMDS service.
//! Invariants: nothing panics, whatever comes back is an HTTP/1.x response (hyper answers an
//! HTTP/1.0 request in kind), and credentials
//! never leave without a token (a raw input cannot know one).
#![no_main]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use spiffe_aws_agent::credentials::CredentialStore;
use spiffe_aws_agent::fuzz_api::imds_over_the_wire;

fn store() -> Arc<CredentialStore> {
    static STORE: OnceLock<Arc<CredentialStore>> = OnceLock::new();
    Arc::clone(STORE.get_or_init(common::store))
}

fuzz_target!(|data: &[u8]| {
    let listen: SocketAddr = "127.0.0.1:9911".parse().unwrap();
    let out = imds_over_the_wire(store(), listen, data);
    if !out.is_empty() {
        assert!(
            out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
            "not an HTTP/1.x response"
        );
    }
    let secret = common::SECRET.as_bytes();
    assert!(
        !out.windows(secret.len()).any(|w| w == secret),
        "credentials served without a token"
    );
});
