//! Open-connection counting per remote address (`server.max_connections_per_ip`; loopback is
//! not counted: behind a reverse proxy on the same machine every client would share one) and
//! per user (`connection.max_per_user`), and where a request's browser `Origin` stands with
//! `server.cors_allowed_origins` (the WebSocket origin check, and whether a token carried by
//! cookie may count).

use crate::client_addr::ClientAddr;
use crate::{ApiError, App};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use herald_core::{CountGuard, CountLimiter, Identity, UserGuard};
use herald_protocol::ErrorCode;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Open connections per remote address.
pub(crate) type IpLimiter = CountLimiter<IpAddr>;
/// A connection counted against its address.
pub(crate) type IpGuard = CountGuard<IpAddr>;

/// Counts a connection from `client` against `limiter`, except a caller on this machine (a
/// loopback peer that is not a trusted proxy).
pub(crate) fn acquire_ip(
    limiter: &Arc<IpLimiter>,
    client: ClientAddr,
) -> Result<Option<IpGuard>, herald_core::AtLimit> {
    limiter.acquire(client.ip.filter(|_| !client.direct_loopback))
}

impl App {
    /// Counts a connection against its user (`connection.max_per_user`).
    pub(crate) fn count_user(&self, identity: &Identity) -> Result<Option<UserGuard>, ApiError> {
        self.shared
            .per_user
            .acquire(Some(identity.user.clone()))
            .map_err(|_| {
                self.node.stats.refused.per_user.fetch_add(1, Relaxed);
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    "this user holds as many connections as it may (connection.max_per_user)",
                )
            })
    }
}

/// How a request's `Origin` header stands with `server.cors_allowed_origins`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginStanding {
    /// No `Origin` header: not sent by a browser page on another origin.
    Absent,
    /// Named in the list.
    Listed,
    /// This node's own origin (`http://` or `https://` followed by the request's `Host`).
    Own,
    /// Admitted only by a `*` in the list.
    Wildcard,
    /// Not admitted.
    Refused,
}

impl OriginStanding {
    /// Whether a browser page from this origin may open a WebSocket.
    pub(crate) fn may_connect(self) -> bool {
        self != Self::Refused
    }

    /// Whether a token the browser attached by itself (the `herald_token` cookie) may count:
    /// only without an `Origin` or from a trusted one, so a page on another site cannot
    /// connect as its visitor. A `*` does not count.
    pub(crate) fn may_use_cookie(self) -> bool {
        matches!(self, Self::Absent | Self::Listed | Self::Own)
    }
}

/// Where a request's `Origin` stands: compared without case with each listed origin, and with
/// the node's own origin (`http://` or `https://` followed by the request's `Host`).
pub(crate) fn origin_standing(allowed: &[String], headers: &HeaderMap) -> OriginStanding {
    let Some(origin) = headers.get(header::ORIGIN).map(HeaderValue::as_bytes) else {
        return OriginStanding::Absent;
    };
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    if allowed
        .iter()
        .any(|a| a != "*" && a.as_bytes().eq_ignore_ascii_case(origin))
    {
        OriginStanding::Listed
    } else if host.is_some_and(|h| same_origin(origin, h)) {
        OriginStanding::Own
    } else if allowed.iter().any(|a| a == "*") {
        OriginStanding::Wildcard
    } else {
        OriginStanding::Refused
    }
}

/// Whether the request's `Host` names this machine by a loopback name (`localhost`, a
/// `127.0.0.0/8` address, `[::1]`), with or without a port. A page whose own origin has any
/// other host reached a loopback listener through DNS rebinding (its name now resolves to
/// 127.0.0.1), so its "same origin" proves nothing.
pub(crate) fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `origin` names the host the request was sent to: `http://` or `https://` followed
/// by `host`, without case, a default port (80, 443) written or left out on either side.
fn same_origin(origin: &[u8], host: &[u8]) -> bool {
    let (rest, default_port): (&[u8], &[u8]) = if let Some(r) = strip_scheme(origin, b"http://") {
        (r, b":80")
    } else if let Some(r) = strip_scheme(origin, b"https://") {
        (r, b":443")
    } else {
        return false;
    };
    let without_default = |b: &[u8]| {
        b.strip_suffix(default_port)
            .filter(|h| !h.is_empty())
            .unwrap_or(b)
            .to_ascii_lowercase()
    };
    !rest.is_empty() && !rest.contains(&b'/') && without_default(rest) == without_default(host)
}

/// `b` without its leading `scheme` (compared without case), if it starts with it.
fn strip_scheme<'a>(b: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let head = b.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &b[scheme.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        let host = |h: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static(h));
            host_is_loopback(&m)
        };
        for h in [
            "localhost",
            "LOCALHOST:7077",
            "127.0.0.1",
            "127.0.0.1:7077",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:7077",
        ] {
            assert!(host(h), "{h}");
        }
        for h in [
            "rebind.example:7077",
            "10.0.0.1:7077",
            "[2001:db8::1]:7077",
            "localhost.evil.example",
            "127.0.0.1.evil.example:7077",
        ] {
            assert!(!host(h), "{h}");
        }
        assert!(!host_is_loopback(&HeaderMap::new()));
    }

    #[test]
    fn counts_per_address_and_forgets_on_drop() {
        let at = |ip: IpAddr| ClientAddr {
            ip: Some(ip),
            direct_loopback: false,
        };
        let l = IpLimiter::new(2);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let a = acquire_ip(&l, at(ip)).unwrap();
        let b = acquire_ip(&l, at(ip)).unwrap();
        assert!(a.is_some() && b.is_some());
        assert!(acquire_ip(&l, at(ip)).is_err());
        assert!(acquire_ip(&l, at("203.0.113.8".parse().unwrap()))
            .unwrap()
            .is_some());
        drop(a);
        assert!(acquire_ip(&l, at(ip)).unwrap().is_some());
        // A caller on this machine, and an unknown address, are not counted; a forwarded
        // loopback address is (it is only what the client claimed).
        for _ in 0..5 {
            assert!(acquire_ip(
                &l,
                ClientAddr {
                    ip: Some("127.0.0.1".parse().unwrap()),
                    direct_loopback: true
                }
            )
            .unwrap()
            .is_none());
        }
        assert!(acquire_ip(
            &l,
            ClientAddr {
                ip: None,
                direct_loopback: false
            }
        )
        .unwrap()
        .is_none());
    }

    fn standing(allowed: &[&str], origin: Option<&str>, host: &str) -> OriginStanding {
        let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        origin_standing(&allowed, &h)
    }

    #[test]
    fn origins() {
        use OriginStanding::*;
        let host = "herald.example:7077";
        let list = ["https://app.example"];
        assert_eq!(standing(&["*"], Some("https://x"), host), Wildcard);
        assert_eq!(standing(&list, Some("https://app.example"), host), Listed);
        assert_eq!(standing(&list, Some("HTTPS://App.Example"), host), Listed);
        assert_eq!(standing(&list, Some("https://evil.example"), host), Refused);
        assert_eq!(standing(&list, None, host), Absent);
        // A listed origin is trusted even when `*` admits everyone else.
        assert_eq!(
            standing(
                &["*", "https://app.example"],
                Some("https://app.example"),
                host
            ),
            Listed
        );
        assert!(!Wildcard.may_use_cookie() && Wildcard.may_connect());
        assert!(!Refused.may_connect() && !Refused.may_use_cookie());
        assert!(Absent.may_use_cookie() && Listed.may_use_cookie() && Own.may_use_cookie());
    }

    #[test]
    fn the_nodes_own_origin_is_always_trusted() {
        use OriginStanding::*;
        for allowed in [&[][..], &["*"][..], &["https://app.example"][..]] {
            for (origin, host) in [
                ("http://herald.example:7077", "herald.example:7077"),
                ("https://Herald.Example", "herald.example"),
                ("https://herald.example", "herald.example:443"),
                ("http://herald.example:80", "herald.example"),
                ("http://127.0.0.1:7077", "127.0.0.1:7077"),
                ("http://[::1]:7077", "[::1]:7077"),
            ] {
                assert_eq!(
                    standing(allowed, Some(origin), host),
                    Own,
                    "{origin} {host}"
                );
            }
        }
        let empty: &[&str] = &[];
        for (origin, host) in [
            ("http://herald.example:7078", "herald.example:7077"),
            ("https://herald.example:80", "herald.example"),
            ("http://herald.example.evil", "herald.example"),
            ("ws://herald.example", "herald.example"),
            ("http://herald.example/x", "herald.example"),
            ("null", "herald.example"),
            ("http://", ""),
        ] {
            assert_eq!(
                standing(empty, Some(origin), host),
                Refused,
                "{origin} {host}"
            );
        }
    }
}
