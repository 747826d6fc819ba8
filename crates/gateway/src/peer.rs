//! Who is really on the other end: the client's address, through trusted proxies only.
//!
//! Behind nginx or a load balancer every TCP peer is the proxy, and the
//! client's own address travels in `X-Forwarded-For`. But that header is
//! just text a client can write: believed from anyone, it would let one
//! client pose as many (escaping a per-IP cap) or as anyone (poisoning what
//! the content service is told). So the header is read only when the TCP
//! peer is listed in `--trusted-proxy`, and then from the right: each hop
//! appends the address it saw, so the rightmost address that is not itself a
//! trusted proxy is the first one that no proxy of ours vouches for — the
//! client. Everything left of it was written by the client and is ignored.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header proxies append the address they saw to.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// A `--trusted-proxy` value that is neither an address nor a network.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or network (write e.g. 10.0.0.0/8 or 127.0.0.1)")]
pub struct BadProxy(String);

/// The proxies whose `X-Forwarded-For` is believed. Empty by default: the TCP peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Addresses and networks of the proxies in front of this gateway.
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses addresses (`127.0.0.1`, `::1`) and networks (`10.0.0.0/8`).
    pub fn parse<'a>(specs: impl IntoIterator<Item = &'a str>) -> Result<Self, BadProxy> {
        let networks = specs
            .into_iter()
            .map(|spec| {
                let spec = spec.trim();
                IpNet::from_str(spec)
                    .or_else(|_| IpAddr::from_str(spec).map(IpNet::from))
                    .map_err(|_| BadProxy(spec.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { networks })
    }

    /// Whether `ip` is one of our proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|network| network.contains(&ip))
    }

    /// Whether any proxy is configured.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The client's address: `peer` itself unless `peer` is a trusted proxy, in
    /// which case the rightmost untrusted address of `X-Forwarded-For` (or the
    /// leftmost one, if every hop is trusted). A malformed entry ends the walk
    /// at the last address known to be good.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]` or `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = IpAddr::from_str(hop) {
        return Some(canonical(ip));
    }
    let unbracketed = hop
        .strip_prefix('[')
        .and_then(|rest| rest.split(']').next());
    if let Some(ip) = unbracketed.and_then(|text| IpAddr::from_str(text).ok()) {
        return Some(canonical(ip));
    }
    let (host, _port) = hop.rsplit_once(':')?;
    IpAddr::from_str(host).ok().map(canonical)
}

/// An IPv4 client seen through a dual-stack socket (`::ffff:1.2.3.4`) is the IPv4 client.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                X_FORWARDED_FOR,
                HeaderValue::from_str(value).expect("test header"),
            );
        }
        headers
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let proxies = TrustedProxies::default();
        let headers = forwarded(&["1.2.3.4"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.5"), &headers), ip("10.0.0.5"));
    }

    #[test]
    fn an_untrusted_peer_cannot_pose_as_someone_else() {
        let proxies = TrustedProxies::parse(["10.0.0.0/8"]).expect("valid");
        let headers = forwarded(&["1.2.3.4"]);
        assert_eq!(
            proxies.client_ip(ip("192.0.2.7"), &headers),
            ip("192.0.2.7")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let proxies = TrustedProxies::parse(["10.0.0.0/8", "127.0.0.1"]).expect("valid");
        // The client wrote "6.6.6.6" itself; nginx appended what it saw.
        let headers = forwarded(&["6.6.6.6, 198.51.100.9", "10.1.1.1"]);
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), &headers),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let proxies = TrustedProxies::parse(["127.0.0.1"]).expect("valid");
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn garbage_in_the_header_stops_at_the_last_good_hop() {
        let proxies = TrustedProxies::parse(["127.0.0.1"]).expect("valid");
        let headers = forwarded(&["not-an-ip, 203.0.113.4"]);
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), &headers),
            ip("203.0.113.4")
        );
        let headers = forwarded(&["203.0.113.4, not-an-ip"]);
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), &headers),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        let proxies = TrustedProxies::parse(["127.0.0.1"]).expect("valid");
        let headers = forwarded(&["[2001:db8::1]:443"]);
        assert_eq!(
            proxies.client_ip(ip("::ffff:127.0.0.1"), &headers),
            ip("2001:db8::1")
        );
        let headers = forwarded(&["203.0.113.4:5555"]);
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), &headers),
            ip("203.0.113.4")
        );
    }

    #[test]
    fn bad_specs_are_refused_with_the_value() {
        let error = TrustedProxies::parse(["10.0.0.0/8", "proxy.local"]).expect_err("refused");
        assert!(error.to_string().contains("proxy.local"), "{error}");
    }
}
