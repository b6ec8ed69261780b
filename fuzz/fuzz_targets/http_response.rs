//! The agent-socket client's strict HTTP/1.1 response parser: never panics, and whatever it
//! accepts has a body of exactly Content-Length bytes and survives a re-serialization.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spiffe_aws_agent::fuzz_api::parse_http_response;

fuzz_target!(|data: &[u8]| {
    let Ok(resp) = parse_http_response(data) else {
        return;
    };
    assert!(resp.status <= 999);
    let length = resp
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().unwrap())
        .unwrap();
    assert_eq!(resp.body.len(), length);
    assert!(!resp
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")));
    let mut again = format!("HTTP/1.1 {:03} R\r\n", resp.status).into_bytes();
    for (n, v) in &resp.headers {
        again.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    again.extend_from_slice(b"\r\n");
    again.extend_from_slice(&resp.body);
    let reparsed = parse_http_response(&again).expect("a re-serialized response parses");
    assert_eq!(reparsed.status, resp.status);
    assert_eq!(reparsed.headers, resp.headers);
    assert_eq!(reparsed.body, resp.body);
});
