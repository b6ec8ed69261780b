//! The request guard (absolute-form targets, proxy headers, Host naming the listener) for a
//! listener address chosen by the first bytes, checked against a plain re-statement of the rule.
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use spiffe_aws_agent::fuzz_api::{guard_refusal, http};

fn listener(byte: u8) -> SocketAddr {
    let ip = match byte % 5 {
        0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        1 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        2 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        3 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
    };
    SocketAddr::new(ip, 9911)
}

/// Whether `host` names `listen`: `localhost` (loopback or wildcard listeners) or an IP
/// literal of the listener (any address of its family for a wildcard), optionally in
/// brackets, optionally with the listener's port.
fn names(listen: SocketAddr, host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((name, "")) => (name, None),
            Some((name, after)) => match after.strip_prefix(':') {
                Some(p) => (name, Some(p)),
                None => return false,
            },
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    if let Some(p) = port {
        if p.is_empty()
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u16>().ok() != Some(listen.port())
        {
            return false;
        }
    }
    let ip = listen.ip();
    if name.eq_ignore_ascii_case("localhost") {
        return ip.is_loopback() || ip.is_unspecified();
    }
    match name.parse::<IpAddr>() {
        Ok(n) => n == ip || (ip.is_unspecified() && n.is_ipv4() == ip.is_ipv4()),
        Err(_) => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let listen = listener(first);
    let Some(req) = common::request(rest, "t") else {
        return;
    };
    let refusal = guard_refusal(listen, &req.uri, &req.headers);
    let absolute = req.uri.scheme().is_some() || req.uri.authority().is_some();
    let hosts: Vec<_> = req.headers.get_all(http::header::HOST).iter().collect();
    let expected = if absolute {
        Some(400)
    } else if common::has_proxy_header(&req.headers) {
        Some(403)
    } else if hosts.len() == 1 && hosts[0].to_str().is_ok_and(|h| names(listen, h)) {
        None
    } else {
        Some(403)
    };
    assert_eq!(
        refusal.map(|s| s.as_u16()),
        expected,
        "listener {listen}, hosts {hosts:?}"
    );
});
