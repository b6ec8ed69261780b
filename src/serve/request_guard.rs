//! Who may talk to a loopback HTTP endpoint: requests that name the endpoint itself.
//!
//! A browser on the host can reach `127.0.0.1` too. A web page can make a browser send a
//! request whose `Host` is the page's own name after pointing that name at 127.0.0.1 (DNS
//! rebinding); the same-origin policy then lets the page read the answer. Such a request
//! always carries a *name* the attacker controls, so an endpoint that answers only when
//! `Host` is its own address (or `localhost`) cannot be read that way. Proxies are refused
//! for the same reason real IMDS refuses them: a request relayed by a proxy on the host comes
//! from somewhere else. And a request whose target is a whole URL (`GET http://evil/...`,
//! what a client sends to a forward proxy) was not meant for this endpoint.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::http;

/// Headers that only a proxy adds.
const PROXY_HEADERS: [&str; 6] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "via",
    "x-forwarded-host",
    "x-client-ip",
];

/// The request checks of one listener.
#[derive(Debug, Clone)]
pub(crate) struct RequestGuard {
    listen: SocketAddr,
    /// Host names the operator allowed besides the address and `localhost` (a name the
    /// operator chose is not an attacker's rebound one).
    names: Arc<[String]>,
}

impl RequestGuard {
    /// Checks for a listener bound to `listen` (port 0 resolved) that also answers to `names`.
    pub(crate) fn new(listen: SocketAddr, names: Arc<[String]>) -> Self {
        RequestGuard { listen, names }
    }

    /// The response refusing the request, or `None` when it may be served.
    pub(crate) fn refusal(&self, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
        if uri.scheme().is_some() || uri.authority().is_some() {
            return Some(http::text(
                StatusCode::BAD_REQUEST,
                "absolute-form request targets are refused: this is not a proxy",
            ));
        }
        if headers
            .keys()
            .any(|name| PROXY_HEADERS.contains(&name.as_str()))
        {
            return Some(http::text(
                StatusCode::FORBIDDEN,
                "requests through a proxy (X-Forwarded-For, Forwarded, X-Real-IP, Via) are refused",
            ));
        }
        let mut hosts = headers.get_all(axum::http::header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(h), None) => h.to_str().ok(),
            _ => None,
        };
        if !host.is_some_and(|h| self.names_this_listener(h)) {
            return Some(http::text(
                StatusCode::FORBIDDEN,
                "the Host header must name this endpoint (its IP address or localhost)",
            ));
        }
        None
    }

    /// Whether `host` (a `Host` header value) is this listener's address, `localhost` or an
    /// allowed name,
    /// with this listener's port or none.
    fn names_this_listener(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        if port.is_some_and(|p| p != self.listen.port()) {
            return false;
        }
        let ip = self.listen.ip();
        if self.names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return true;
        }
        if name.eq_ignore_ascii_case("localhost") {
            return ip.is_loopback() || ip.is_unspecified();
        }
        match name.parse::<IpAddr>() {
            // A wildcard listener answers on every local address; an IP literal cannot be a
            // rebound name.
            Ok(named) => named == ip || (ip.is_unspecified() && named.is_ipv4() == ip.is_ipv4()),
            Err(_) => false,
        }
    }
}

/// `host[:port]` or `[v6][:port]` into the name and the port; `None` when malformed.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after {
            "" => (v6, None),
            _ => (v6, Some(after.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    (!name.is_empty()).then_some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listen: &str, uri: &str, headers: &[(&str, &str)]) -> Option<u16> {
        let names: Arc<[String]> = Arc::from(vec!["agent.internal".to_owned()]);
        let guard = RequestGuard::new(listen.parse().unwrap(), names);
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                axum::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        guard
            .refusal(&uri.parse().unwrap(), &map)
            .map(|r| r.status().as_u16())
    }

    #[test]
    fn hosts_that_name_the_listener_pass() {
        for (listen, host) in [
            ("127.0.0.1:9911", "127.0.0.1:9911"),
            ("127.0.0.1:9911", "127.0.0.1"),
            ("127.0.0.1:9911", "localhost:9911"),
            ("127.0.0.1:9911", "LOCALHOST"),
            ("[::1]:9911", "[::1]:9911"),
            ("[::1]:9911", "localhost:9911"),
            ("0.0.0.0:9911", "10.1.2.3:9911"),
            ("127.0.0.1:9911", "agent.internal:9911"),
            ("127.0.0.1:9911", "Agent.Internal"),
        ] {
            assert_eq!(
                check(listen, "/latest/api/token", &[("host", host)]),
                None,
                "{listen} {host}"
            );
        }
    }

    #[test]
    fn rebinding_names_proxies_and_absolute_targets_are_refused() {
        let l = "127.0.0.1:9911";
        for host in [
            "evil.example:9911",
            "evil.example",
            "agent.internal:80",
            "127.0.0.1:80",
            "127.0.0.2:9911",
            "[::1]:9911",
            "localhost:1",
            "127.0.0.1:",
            "127.0.0.1:99x",
            "",
        ] {
            assert_eq!(check(l, "/", &[("host", host)]), Some(403), "{host:?}");
        }
        assert_eq!(check(l, "/", &[]), Some(403), "no Host");
        assert_eq!(
            check(l, "/", &[("host", "127.0.0.1"), ("host", "evil")]),
            Some(403),
            "two Hosts"
        );
        for proxy in [
            "X-Forwarded-For",
            "Forwarded",
            "X-Real-IP",
            "Via",
            "X-Forwarded-Host",
        ] {
            assert_eq!(
                check(l, "/", &[("host", "127.0.0.1:9911"), (proxy, "1.2.3.4")]),
                Some(403),
                "{proxy}"
            );
        }
        assert_eq!(
            check(
                l,
                "http://evil.example/latest/api/token",
                &[("host", "127.0.0.1:9911")]
            ),
            Some(400)
        );
    }
}
