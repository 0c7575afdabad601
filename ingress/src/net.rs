//! Who is calling: the client address behind trusted proxies, and the
//! per-account allow-lists.
//!
//! `X-Forwarded-For` is believed only when the TCP peer is a configured
//! trusted proxy, and then only up to the first address that is not itself a
//! trusted proxy (reading from the right): anything further left was written
//! by the client and proves nothing.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use warp::http::HeaderMap;

/// A set of networks.
#[derive(Debug, Clone, Default)]
pub struct NetSet(Vec<IpNet>);

impl NetSet {
    /// The networks as the config loader parsed them, IPv4-mapped IPv6
    /// ones (`::ffff:10.0.0.0/104`) as their IPv4 network, since addresses
    /// are compared in that form.
    pub fn new(nets: &[IpNet]) -> Self {
        NetSet(nets.iter().map(|n| canonical_net(*n)).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 network with a prefix covering the mapping (/96 or
/// longer) is that IPv4 network; any other network is itself.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not a trusted proxy.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &NetSet,
) -> Option<IpAddr> {
    let peer = canonical(peer?.ip());
    if trusted.is_empty() || !trusted.contains(peer) {
        return Some(peer);
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter_map(|h| h.parse::<IpAddr>().ok().map(canonical))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !trusted.contains(*hop) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(s.parse().unwrap(), 40000))
    }

    fn nets(list: &[&str]) -> NetSet {
        let parsed: Vec<IpNet> = list
            .iter()
            .map(|s| shared::config::ip_net(s).unwrap())
            .collect();
        NetSet::new(&parsed)
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        // Straight from the internet: the header is the client's own claim.
        assert_eq!(
            client_ip(peer("203.0.113.9"), &xff("198.51.100.1"), &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        // Through our proxy: the right-most untrusted hop.
        assert_eq!(
            client_ip(
                peer("10.1.2.3"),
                &xff("6.6.6.6, 198.51.100.1, 10.9.9.9"),
                &trusted
            ),
            Some("198.51.100.1".parse().unwrap())
        );
        // No trusted proxies configured: never read the header.
        assert_eq!(
            client_ip(peer("10.1.2.3"), &xff("198.51.100.1"), &NetSet::default()),
            Some("10.1.2.3".parse().unwrap())
        );
        // A trusted proxy without the header: the proxy itself.
        assert_eq!(
            client_ip(peer("10.1.2.3"), &HeaderMap::new(), &trusted),
            Some("10.1.2.3".parse().unwrap())
        );
    }

    #[test]
    fn sets_match_v4_v6_and_mapped_addresses() {
        let set = nets(&[
            "192.0.2.0/24",
            "2001:db8::/32",
            "198.51.100.7",
            "::ffff:203.0.113.0/120",
        ]);
        assert!(set.contains("192.0.2.200".parse().unwrap()));
        assert!(set.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(set.contains("2001:db8::1".parse().unwrap()));
        assert!(set.contains("198.51.100.7".parse().unwrap()));
        assert!(!set.contains("198.51.100.8".parse().unwrap()));
        assert!(!set.contains("192.0.3.1".parse().unwrap()));
        // A mapped network matches plain IPv4 clients, as they are compared.
        assert!(set.contains("203.0.113.5".parse().unwrap()));
        assert!(set.contains("::ffff:203.0.113.5".parse().unwrap()));
        assert!(!set.contains("203.0.114.5".parse().unwrap()));
    }
}
