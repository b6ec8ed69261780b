//! The container endpoint's request handling (guard, body limit, routing, the
//! Authorization check, role lookup) through its router, with invariants: credentials only
//! for exactly one Authorization header equal to the token and a Host naming the listener,
//! and the secret in no other response.
#![no_main]

mod common;

use std::cell::RefCell;
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use spiffe_aws_agent::fuzz_api::{to_bytes, Container};

const LISTEN: &str = "127.0.0.1:9912";
const TOKEN: &str = "fuzz-container-token-0123456789";

thread_local! {
    static STATE: RefCell<(tokio::runtime::Runtime, Container)> = RefCell::new((
        tokio::runtime::Builder::new_current_thread().build().unwrap(),
        Container::new(common::store(), TOKEN, LISTEN.parse::<SocketAddr>().unwrap()),
    ));
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = common::request(data, TOKEN) else {
        return;
    };
    STATE.with(|state| {
        let (rt, container) = &mut *state.borrow_mut();
        let (status, body) = rt.block_on(async {
            let resp = container.call(req.request).await;
            let status = resp.status().as_u16();
            (status, to_bytes(resp.into_body(), 1 << 20).await.unwrap())
        });
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
        // The secret in a response body is a leak unless the request itself carried it (a
        // 404 names the role asked for, which may be any text).
        let contains = |hay: &[u8]| {
            hay.windows(common::SECRET.len())
                .any(|w| w == common::SECRET.as_bytes())
        };
        if contains(&body) && !contains(data) {
            assert_eq!(status, 200);
        }
        if status == 200 {
            assert!(
                common::single_host(&req.headers),
                "200 without exactly one Host"
            );
            let auth: Vec<_> = req.headers.get_all("authorization").iter().collect();
            assert!(
                auth.len() == 1 && auth[0].as_bytes() == TOKEN.as_bytes(),
                "200 without exactly the token"
            );
        }
    });
});
