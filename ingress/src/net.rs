//! Who is calling: the client address behind trusted proxies, and the
//! per-account allow-lists.
//!
//! `X-Forwarded-For` is believed only when the TCP peer is a configured
//! trusted proxy, and then only up to the first address that is not itself a
//! trusted proxy (reading from the right): anything further left was written
//! by the client and proves nothing. A hop that is not a bare IP address
//! (`198.51.100.9:4711`, `unknown`, `[2001:db8::7]:443`) also ends the walk:
//! it was written by a trusted proxy about its own client, so it is that
//! client, whose address we cannot read ([`Client::Unreadable`]). Skipping
//! it instead (issue 12) trusted the client-written entry to its left.

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

/// Who is calling, as far as the connection and trusted proxies tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The client's address.
    Addr(IpAddr),
    /// A trusted proxy (`via`) forwarded for a client whose address it wrote
    /// in a form that is not an IP address: no allow-list admits it.
    Unreadable { via: IpAddr },
}

impl Client {
    /// The address, if it could be read: what an allow-list checks.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Client::Addr(ip) => Some(ip),
            Client::Unreadable { .. } => None,
        }
    }

    /// Whose budget for unauthenticated work a refusal is charged to:
    /// the client's address, or for an unreadable one the proxy that
    /// forwarded it, so that writing garbage does not escape the budget
    /// (it shares the proxy's instead).
    pub fn budget_key(self) -> IpAddr {
        match self {
            Client::Addr(ip) | Client::Unreadable { via: ip } => ip,
        }
    }
}

/// The client: the peer, or, when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not a trusted proxy, or the
/// first (from the right) that is not an IP address at all.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &NetSet,
) -> Option<Client> {
    let peer = canonical(peer?.ip());
    if trusted.is_empty() || !trusted.contains(peer) {
        return Some(Client::Addr(peer));
    }
    // Header lines in order, entries in order within each: reversed, this
    // is the walk from the hop nearest to us outwards.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // `via` is the last trusted proxy seen: the one that wrote the next hop.
    let mut via = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>().map(canonical) else {
            return Some(Client::Unreadable { via });
        };
        if !trusted.contains(ip) {
            return Some(Client::Addr(ip));
        }
        via = ip;
    }
    Some(Client::Addr(via))
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
            addr("203.0.113.9")
        );
        // Through our proxy: the right-most untrusted hop.
        assert_eq!(
            client_ip(
                peer("10.1.2.3"),
                &xff("6.6.6.6, 198.51.100.1, 10.9.9.9"),
                &trusted
            ),
            addr("198.51.100.1")
        );
        // No trusted proxies configured: never read the header.
        assert_eq!(
            client_ip(peer("10.1.2.3"), &xff("198.51.100.1"), &NetSet::default()),
            addr("10.1.2.3")
        );
        // A trusted proxy without the header: the proxy itself.
        assert_eq!(
            client_ip(peer("10.1.2.3"), &HeaderMap::new(), &trusted),
            addr("10.1.2.3")
        );
    }

    fn addr(s: &str) -> Option<Client> {
        Some(Client::Addr(s.parse().unwrap()))
    }

    /// Issue 12, item 5: a hop that is not an IP address was skipped, so
    /// the client-written entry to its left was believed (and let through
    /// an allow-list). It now ends the walk as an unreadable client.
    #[test]
    fn an_unreadable_hop_is_the_client_not_a_step_over() {
        let trusted = nets(&["10.0.0.0/8"]);
        let allowed = nets(&["192.0.2.0/24"]);
        for hop in ["198.51.100.9:4711", "unknown", "[2001:db8::7]:443", ""] {
            // The client wrote the allowed address; our proxy 10.0.0.5
            // wrote the unreadable hop; the peer is the proxy 10.1.2.3.
            let h = xff(&format!("192.0.2.10, {hop}, 10.0.0.5"));
            let client = client_ip(peer("10.1.2.3"), &h, &trusted).unwrap();
            assert_eq!(
                client,
                Client::Unreadable {
                    via: "10.0.0.5".parse().unwrap()
                },
                "{hop:?}"
            );
            assert_eq!(client.ip(), None, "no allow-list admits it");
            assert!(!client.ip().is_some_and(|ip| allowed.contains(ip)));
            assert_eq!(client.budget_key(), "10.0.0.5".parse::<IpAddr>().unwrap());
        }
        // Written by the peer itself: charged to the peer.
        let h = xff("192.0.2.10, unknown");
        assert_eq!(
            client_ip(peer("10.1.2.3"), &h, &trusted),
            Some(Client::Unreadable {
                via: "10.1.2.3".parse().unwrap()
            })
        );
        // Left of the first untrusted address it is never reached.
        let h = xff("unknown, 198.51.100.1, 10.0.0.5");
        assert_eq!(
            client_ip(peer("10.1.2.3"), &h, &trusted),
            addr("198.51.100.1")
        );
        // Split over two header lines, the walk is the same.
        let mut h = xff("192.0.2.10");
        h.append("x-forwarded-for", "unknown".parse().unwrap());
        assert_eq!(
            client_ip(peer("10.1.2.3"), &h, &trusted),
            Some(Client::Unreadable {
                via: "10.1.2.3".parse().unwrap()
            })
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
