//! The IMDS endpoint's request handling (guard, body limits, token table, routing, TTL
//! parsing, role lookup) through its tower service, with invariants: credentials only with a
//! valid token and a Host naming the listener, proxied requests always refused.
#![no_main]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use spiffe_aws_agent::credentials::CredentialStore;
use spiffe_aws_agent::fuzz_api::{http, Body, Imds};

const LISTEN: &str = "127.0.0.1:9911";

fn store() -> Arc<CredentialStore> {
    static STORE: OnceLock<Arc<CredentialStore>> = OnceLock::new();
    Arc::clone(STORE.get_or_init(common::store))
}

fn token(imds: &mut Imds) -> String {
    let req = http::Request::put("/latest/api/token")
        .header("host", LISTEN)
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .body(Body::empty())
        .unwrap();
    let resp = imds.call(req);
    assert_eq!(resp.status(), 200);
    thread_local! {
        static RT: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().build().unwrap();
    }
    let body = RT
        .with(|rt| {
            rt.block_on(spiffe_aws_agent::fuzz_api::to_bytes(
                resp.into_body(),
                1 << 16,
            ))
        })
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let listen: SocketAddr = LISTEN.parse().unwrap();
    let mut imds = Imds::new(store(), None, listen);
    let token = token(&mut imds);
    let Some(req) = common::request(data, &token) else {
        return;
    };
    let resp = imds.call(req.request);
    let status = resp.status().as_u16();
    assert!(
        [200, 400, 401, 403, 404, 405, 411, 413, 503].contains(&status),
        "unexpected status {status}"
    );
    if common::has_proxy_header(&req.headers) {
        assert!(
            status == 400 || status == 403,
            "proxied request got {status}"
        );
    }
    if status == 200 {
        assert!(
            common::single_host(&req.headers),
            "200 without exactly one Host"
        );
        assert!(req.uri.scheme().is_none() && req.uri.authority().is_none());
        if req.uri.path() != "/latest/api/token" {
            let ok = req
                .headers
                .get_all("x-aws-ec2-metadata-token")
                .iter()
                .any(|v| v.as_bytes() == token.as_bytes());
            assert!(ok, "200 for {} without the token", req.uri);
        } else {
            assert_eq!(req.method, http::Method::PUT);
        }
    }
});
