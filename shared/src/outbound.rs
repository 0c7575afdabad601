//! The one outbound HTTP policy: every request the hub sends to a server it
//! does not run (tenant backends now, provider APIs later) goes through a
//! client built here, so that none of them can be turned against the hub.
//!
//! - **No redirect is followed.** A `3xx` comes back to the caller as it is,
//!   to classify as a failure; so an order, its signature and the tenant's
//!   `X-Auth` only ever go to the host the config names, and a `301` can
//!   never pass for a delivery.
//! - **Destinations are checked.** Loopback, private, link-local (cloud
//!   metadata), carrier-grade NAT, unspecified, multicast, reserved and
//!   documentation addresses, and IPv6 forms that embed one (IPv4-mapped,
//!   NAT64, 6to4), are refused unless a configured network covers them
//!   ([`OutboundPolicy::allowed_private`]). An address in the URL is checked
//!   before sending ([`OutboundPolicy::check_url`]); a name is checked on
//!   every address DNS returns, inside the client's resolver, so the check
//!   and the connection use the same answer (a name that rebinds to an
//!   internal address between the two cannot slip through).
//! - **No proxy from the environment:** `HTTP_PROXY` would move the
//!   destination check to the proxy's address.
//! - **Timeouts:** a connect timeout here; the caller sets each request's
//!   whole timeout (`RequestBuilder::timeout`, which covers the body).
//! - **Bounded bodies:** [`read_bounded`] reads at most N bytes of an answer,
//!   chunk by chunk, and drops the rest with the connection; nothing reads a
//!   body whole.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use url::{Host, Url};

/// How the hub talks to servers it does not run.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundPolicy {
    /// How long a TCP (and TLS) connection may take to open.
    pub connect_timeout: Duration,
    /// Special-purpose networks the config allows anyway (a backend on
    /// loopback in tests and on a laptop; an on-premises backend on
    /// `10.0.0.0/8`). Empty, the default: all of them are refused.
    pub allowed_private: Vec<IpNet>,
}

impl OutboundPolicy {
    pub fn new(allowed_private: Vec<IpNet>) -> Self {
        OutboundPolicy {
            connect_timeout: Duration::from_secs(5),
            allowed_private,
        }
    }

    /// A client builder with the policy applied. Callers add what is
    /// theirs (user agent, pool sizes) but never a redirect policy, a proxy
    /// or a resolver of their own.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .no_proxy()
            .connect_timeout(self.connect_timeout)
            .dns_resolver(Arc::new(CheckedResolver {
                policy: Arc::new(self.clone()),
            }))
    }

    /// Whether a request may go to `ip`; if not, what kind of address it is.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), &'static str> {
        let Some(kind) = special_purpose(ip) else {
            return Ok(());
        };
        let embedded = embedded_ipv4(ip).map(IpAddr::V4);
        let allowed = |a: IpAddr| self.allowed_private.iter().any(|n| n.contains(&a));
        if allowed(ip) || embedded.is_some_and(allowed) {
            Ok(())
        } else {
            Err(kind)
        }
    }

    /// The check for a URL whose host is an address (a name is checked when
    /// it resolves). Call it before sending: the client's resolver never
    /// sees an address.
    pub fn check_url(&self, url: &Url) -> Result<(), RefusedDestination> {
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(Host::Domain(_)) | None => return Ok(()),
        };
        self.check_ip(ip).map_err(|kind| RefusedDestination {
            host: ip.to_string(),
            ip,
            kind,
        })
    }
}

/// A request was not sent: its destination is an address the policy
/// refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} is a {kind} address ({ip}), refused by the outbound policy")]
pub struct RefusedDestination {
    /// The host as the URL names it.
    pub host: String,
    /// The refused address (the first, if a name resolved to several).
    pub ip: IpAddr,
    pub kind: &'static str,
}

/// The refusal inside a reqwest error, if that is why the request failed
/// (the resolver's error travels as the error's source).
pub fn refused(e: &reqwest::Error) -> Option<&RefusedDestination> {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<RefusedDestination>() {
            return Some(r);
        }
        source = s.source();
    }
    None
}

/// Resolves with the system resolver and keeps only the addresses the
/// policy allows; a name left with none fails with [`RefusedDestination`].
struct CheckedResolver {
    policy: Arc<OutboundPolicy>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let mut refused = None;
            let kept: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(kind) => {
                        refused.get_or_insert((a.ip(), kind));
                        false
                    }
                })
                .collect();
            match (kept.is_empty(), refused) {
                (true, Some((ip, kind))) => Err(Box::new(RefusedDestination { host, ip, kind })
                    as Box<dyn StdError + Send + Sync>),
                _ => Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// What kind of special-purpose address `ip` is (IANA's registries), or
/// `None` for an ordinary public address.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "unspecified",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "carrier-grade NAT",
        (127, ..) => "loopback",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // What a mapped, NAT64 or 6to4 address reaches is its IPv4 address (a
    // DNS64 resolver gives every public name a NAT64 address).
    if let Some(v4) = embedded_ipv4(IpAddr::V6(ip)) {
        return special_v4(v4);
    }
    let s = ip.segments();
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback",
        // IPv4-compatible (deprecated) and the discard prefix.
        [0, 0, 0, 0, 0, 0, _, _] | [0x100, 0, 0, 0, ..] => "reserved",
        [0x2001, 0xdb8, ..] => "documentation",
        [0x2001, 0, ..] => "Teredo",
        [0x64, 0xff9b, 1, ..] => "NAT64 local-use",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique local",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped
/// (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`).
fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

/// The first bytes of an answer's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedBody {
    /// At most the bound.
    pub bytes: Bytes,
    /// Bytes beyond the bound arrived (and were dropped with the rest).
    pub truncated: bool,
}

/// Reads at most `max` bytes of `resp`'s body, chunk by chunk, and drops
/// the rest unread (the connection goes with it, not back to the pool).
pub async fn read_bounded(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<BoundedBody, reqwest::Error> {
    let mut buf = BytesMut::with_capacity(max.min(16 * 1024));
    while let Some(chunk) = resp.chunk().await? {
        let room = max - buf.len();
        if chunk.len() >= room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok(BoundedBody {
                bytes: buf.freeze(),
                truncated: chunk.len() > room,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(BoundedBody {
        bytes: buf.freeze(),
        truncated: false,
    })
}

/// The first `max` bytes of a refused answer as one line of text (control
/// characters as spaces, trimmed), for an error message; read for at most
/// 2 s, so a server dribbling its error page cannot hold the caller.
pub async fn answer_text(resp: reqwest::Response, max: usize) -> String {
    let body = tokio::time::timeout(Duration::from_secs(2), read_bounded(resp, max))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| b.bytes)
        .unwrap_or_default();
    one_line(&body)
}

/// Bytes as one line: control characters as spaces, trimmed.
pub fn one_line(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A request error as text, with its cause, and with the URL (which may
/// carry credentials in its query) written as `url_shown_as`.
pub fn error_text(e: &reqwest::Error, url_shown_as: &str) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), url_shown_as);
    }
    if let Some(source) = StdError::source(e) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text
}

/// A `Retry-After` value: delay seconds or an IMF-fixdate (a date in the
/// past is no delay).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_to_system_time(v.trim())?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

pub(crate) fn httpdate_to_system_time(v: &str) -> Option<SystemTime> {
    // IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])?
        + 1;
    let text = format!("{}-{:02}-{}T{}Z", parts[3], month, parts[1], parts[4]);
    humantime::parse_rfc3339(&text).ok()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = SystemTime::now() + Duration::from_secs(120);
        let text = humantime::format_rfc3339_seconds(later).to_string();
        // 2026-11-28T06:50:00Z -> Sat, 28 Nov 2026 06:50:00 GMT
        let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
        let ymd: Vec<&str> = date.split('-').collect();
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let http = format!(
            "Mon, {} {} {} {} GMT",
            ymd[2],
            months[ymd[1].parse::<usize>().unwrap() - 1],
            ymd[0],
            time
        );
        let d = parse_retry_after(&http).unwrap();
        assert!(
            d > Duration::from_secs(110) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn answers_become_one_short_line() {
        let body = format!("error\r\n{}", "x".repeat(1000));
        let s = one_line(&body.as_bytes()[..512]);
        assert!(s.starts_with("error  x"));
        assert_eq!(s.chars().count(), 512);
        assert_eq!(one_line(b" \n "), "");
    }

    /// A client under the policy that allows loopback, as tests need.
    fn loopback_client() -> reqwest::Client {
        OutboundPolicy::new(vec!["127.0.0.0/8".parse().unwrap()])
            .client_builder()
            .build()
            .unwrap()
    }

    /// Serves one connection: reads the request, writes `answer`.
    fn answer_once(
        listener: tokio::net::TcpListener,
        answer: Vec<u8>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(&answer).await.unwrap();
        })
    }

    async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
        tokio::time::timeout(Duration::from_secs(10), request.send())
            .await
            .expect("answered in time")
            .unwrap()
    }

    async fn read(resp: reqwest::Response, max: usize) -> BoundedBody {
        tokio::time::timeout(Duration::from_secs(10), read_bounded(resp, max))
            .await
            .expect("read in time")
            .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_purpose_addresses_are_refused_and_public_ones_are_not() {
        let closed = OutboundPolicy::new(Vec::new());
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("192.0.2.7", "documentation"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::127.0.0.1", "reserved"),
        ] {
            assert_eq!(special_purpose(ip(addr)), Some(kind), "{addr}");
            assert_eq!(closed.check_ip(ip(addr)), Err(kind), "{addr}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2606:4700::1111",
        ] {
            assert_eq!(special_purpose(ip(public)), None, "{public}");
            assert_eq!(closed.check_ip(ip(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn allowed_networks_open_exactly_themselves() {
        let policy = OutboundPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.20.0.0/16".parse().unwrap(),
        ]);
        assert_eq!(policy.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("10.20.3.4")), Ok(()));
        assert_eq!(policy.check_ip(ip("10.21.0.1")), Err("private"));
        assert_eq!(policy.check_ip(ip("169.254.169.254")), Err("link-local"));
        assert_eq!(policy.check_ip(ip("::1")), Err("loopback"));
    }

    #[test]
    fn urls_with_refused_addresses_are_refused_and_names_wait_for_dns() {
        let closed = OutboundPolicy::new(Vec::new());
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            closed
                .check_url(&url("http://127.0.0.1:3001/orders"))
                .unwrap_err()
                .to_string(),
            "127.0.0.1 is a loopback address (127.0.0.1), refused by the outbound policy"
        );
        assert!(closed.check_url(&url("http://[::1]/orders")).is_err());
        assert!(closed.check_url(&url("http://[fe80::1]/orders")).is_err());
        assert!(closed.check_url(&url("https://8.8.8.8/orders")).is_ok());
        assert!(
            closed
                .check_url(&url("https://orders.example/orders"))
                .is_ok()
        );
    }

    /// A name that resolves to loopback is refused by the resolver, and the
    /// refusal is found in reqwest's error; nothing reaches the listener.
    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = OutboundPolicy::new(Vec::new())
            .client_builder()
            .build()
            .unwrap();
        let e = tokio::time::timeout(
            Duration::from_secs(10),
            client.get(format!("http://localhost:{port}/")).send(),
        )
        .await
        .expect("answered in time")
        .unwrap_err();
        let r = refused(&e).unwrap_or_else(|| panic!("not a refusal: {e:?}"));
        assert_eq!(r.host, "localhost");
        assert_eq!(r.kind, "loopback");
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection reached the listener");

        // Allowed, the same name connects.
        let client = loopback_client();
        let server = answer_once(
            listener,
            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".to_vec(),
        );
        let resp = send(client.get(format!("http://localhost:{port}/"))).await;
        assert_eq!(resp.status(), 204);
        server.await.unwrap();
    }

    /// Redirects come back as answers; the other host hears nothing.
    #[tokio::test]
    async fn redirects_are_answers_not_followed() {
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_port = other.local_addr().unwrap().port();
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        answer_once(
            first,
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{other_port}/x\r\ncontent-length: 0\r\n\r\n"
            )
            .into_bytes(),
        );
        let client = loopback_client();
        let resp = send(client.post(format!("http://127.0.0.1:{port}/")).body("{}")).await;
        assert_eq!(resp.status(), 307);
        let accepted = tokio::time::timeout(Duration::from_millis(200), other.accept()).await;
        assert!(accepted.is_err(), "the redirect was followed");
    }

    /// A 50 MB answer: the reader keeps the bound and hangs up; the server
    /// finds the connection closed long before it has written it all.
    #[tokio::test]
    async fn bodies_are_read_up_to_the_bound_and_the_rest_is_dropped() {
        const TOTAL: usize = 50 * 1024 * 1024;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            let head =
                format!("HTTP/1.1 500 Internal Server Error\r\ncontent-length: {TOTAL}\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            let mut written = 0;
            while written < TOTAL {
                match s.write(&chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => written += n,
                }
            }
            written
        });
        let client = loopback_client();
        let resp = send(client.get(format!("http://127.0.0.1:{port}/"))).await;
        let body = read(resp, 512).await;
        assert_eq!(body.bytes.len(), 512);
        assert!(body.truncated);
        let written = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stopped writing")
            .unwrap();
        assert!(written < TOTAL, "the whole body was sent: {written}");
    }

    #[tokio::test]
    async fn a_short_body_is_read_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        answer_once(
            listener,
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\nnope!".to_vec(),
        );
        let client = loopback_client();
        let resp = send(client.get(format!("http://127.0.0.1:{port}/"))).await;
        let body = read(resp, 512).await;
        assert_eq!(
            body,
            BoundedBody {
                bytes: Bytes::from_static(b"nope!"),
                truncated: false
            }
        );
    }
}
