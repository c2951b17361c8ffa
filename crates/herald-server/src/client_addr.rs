//! Who a request comes from, behind a reverse proxy (`server.trusted_proxies`).
//!
//! For a request whose TCP peer is a trusted proxy, the client is the right-most address of
//! `X-Forwarded-For` (all its header lines, in order) that is not itself a trusted proxy: each
//! proxy appends the address it received the request from, so everything left of the first
//! untrusted hop was written by someone Herald cannot vouch for. If every listed address is
//! trusted, the left-most is the client; an entry that is not an address ends the walk there,
//! and the request counts as coming from the last trusted hop. With `server.client_ip_header =
//! "x-real-ip"` the single address in `X-Real-IP` is used instead. From any other peer these
//! headers are ignored.
//!
//! Every per-address limit, log line and the Telegram login limit use the resolved address.
//! Loopback callers are trusted in two places (they are not counted per address, and the
//! key-less API answers them): both need a loopback peer that is *not* a trusted proxy, so a
//! local nginx in front does not make every visitor "loopback".

use crate::App;
use axum::http::HeaderMap;
use std::net::IpAddr;

/// The trusted proxies, parsed once: addresses and CIDR blocks.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8`, `127.0.0.1`, `::1`, `fd00::/8`; every bad entry is reported.
    pub(crate) fn parse(list: &[String]) -> Result<Self, Vec<String>> {
        let mut nets = Vec::with_capacity(list.len());
        let mut problems = Vec::new();
        for entry in list {
            match parse_net(entry) {
                Some(net) => nets.push(net),
                None => problems.push(format!(
                    "server.trusted_proxies: {entry:?} is not an address or a CIDR block (e.g. \"10.0.0.0/8\")"
                )),
            }
        }
        if problems.is_empty() {
            Ok(Self(nets))
        } else {
            Err(problems)
        }
    }

    /// Whether `ip` is a trusted proxy.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|&(net, bits)| in_net(ip, net, bits))
    }
}

fn parse_net(entry: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match entry.trim().split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (entry.trim(), None),
    };
    let ip = canonical(addr.parse::<IpAddr>().ok()?);
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Where a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr {
    /// The client's address: the forwarded one behind a trusted proxy, else the peer's.
    pub ip: Option<IpAddr>,
    /// Whether the TCP peer is loopback and not a trusted proxy: a caller on this machine.
    pub direct_loopback: bool,
}

/// Resolves the client of a request from `peer` through `trusted` proxies (module docs).
pub(crate) fn resolve(
    trusted: &TrustedProxies,
    real_ip_header: bool,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> ClientAddr {
    let Some(peer) = peer else {
        return ClientAddr {
            ip: None,
            direct_loopback: false,
        };
    };
    if !trusted.contains(peer) {
        return ClientAddr {
            ip: Some(peer),
            direct_loopback: peer.is_loopback(),
        };
    }
    let forwarded = if real_ip_header {
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .map(canonical)
    } else {
        from_forwarded_for(trusted, headers)
    };
    ClientAddr {
        ip: Some(forwarded.unwrap_or(peer)),
        direct_loopback: false,
    }
}

/// The right-most untrusted address of `X-Forwarded-For` (module docs).
fn from_forwarded_for(trusted: &TrustedProxies, headers: &HeaderMap) -> Option<IpAddr> {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut last_trusted = None;
    for entry in entries.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>().map(canonical) else {
            break;
        };
        if !trusted.contains(ip) {
            return Some(ip);
        }
        last_trusted = Some(ip);
    }
    last_trusted
}

impl App {
    /// Where a request with TCP peer `peer` comes from.
    pub(crate) fn client_addr(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> ClientAddr {
        resolve(
            &self.shared.trusted_proxies,
            self.server
                .client_ip_header
                .eq_ignore_ascii_case("x-real-ip"),
            peer,
            headers,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        h.insert("x-real-ip", HeaderValue::from_static("198.51.100.9"));
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_right_most_untrusted_forwarded_address_is_the_client() {
        let t = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        let via = |xff: &[&'static str]| resolve(&t, false, ip("127.0.0.1"), &headers(xff));
        assert_eq!(via(&["203.0.113.5"]).ip, ip("203.0.113.5"));
        // A forged left part is passed over: the proxy appended what it saw.
        assert_eq!(via(&["1.2.3.4, 203.0.113.5"]).ip, ip("203.0.113.5"));
        assert_eq!(
            via(&["1.2.3.4", "203.0.113.5, 10.1.2.3"]).ip,
            ip("203.0.113.5")
        );
        // A forged loopback gains nothing: it is the client's claim, and not direct.
        let forged = via(&["127.0.0.1"]);
        assert_eq!(forged.ip, ip("127.0.0.1"));
        assert!(!forged.direct_loopback);
        // Not an address: the walk stops at the last trusted hop.
        assert_eq!(via(&["203.0.113.5, junk, 10.0.0.1"]).ip, ip("10.0.0.1"));
        // No header: the proxy itself, not a direct loopback caller.
        let bare = via(&[]);
        assert_eq!((bare.ip, bare.direct_loopback), (ip("127.0.0.1"), false));
        // X-Real-IP only when configured.
        let real = resolve(&t, true, ip("127.0.0.1"), &headers(&["203.0.113.5"]));
        assert_eq!(real.ip, ip("198.51.100.9"));
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        let direct = resolve(&t, false, ip("127.0.0.1"), &headers(&["203.0.113.5"]));
        assert_eq!((direct.ip, direct.direct_loopback), (ip("127.0.0.1"), true));
        let outside = resolve(&t, true, ip("192.0.2.7"), &headers(&["203.0.113.5"]));
        assert_eq!(
            (outside.ip, outside.direct_loopback),
            (ip("192.0.2.7"), false)
        );
        let none = TrustedProxies::default();
        assert_eq!(
            resolve(&none, false, ip("10.0.0.1"), &headers(&["1.1.1.1"])).ip,
            ip("10.0.0.1")
        );
    }

    #[test]
    fn cidr_blocks_parse_and_match() {
        let t = TrustedProxies::parse(&["fd00::/8".into(), "192.168.0.0/16".into()]).unwrap();
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(t.contains("::ffff:192.168.4.4".parse().unwrap()));
        assert!(!t.contains("192.169.0.1".parse().unwrap()));
        let errs = TrustedProxies::parse(&["10.0.0.0/33".into(), "nope".into()]).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(TrustedProxies::parse(&["0.0.0.0/0".into()])
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }
}
