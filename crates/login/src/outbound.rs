//! Where the token service may send a request of its own, and an HTTP client that keeps to it.
//!
//! The only outbound requests are for federated issuers' documents, and an issuer URL is
//! whatever the writer of a federated credential chose. Without a limit, anyone who can write
//! one could make the server call its own loopback services, the cloud metadata endpoint or
//! the private network behind it. So a fetch refuses, unless the operator lists the network in
//! `federation-allowed-networks`:
//! - loopback (127/8, ::1), "this network" (0/8), link-local (169.254/16, fe80::/10),
//!   private (10/8, 172.16/12, 192.168/16, fc00::/7, the old fec0::/10), shared address
//!   space (100.64/10), IETF protocol assignments (192.0.0/24), benchmarking (198.18/15),
//!   documentation (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32) and discard
//!   (100::/64) addresses;
//! - and always, whatever is listed: the unspecified address (0.0.0.0, ::), multicast, and
//!   240/4 with the broadcast address.
//!
//! IPv4 carried in IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64
//! `64:ff9b::a.b.c.d` and `64:ff9b:1::/48`) is judged as the IPv4 address it carries.
//!
//! The check applies to the addresses a host name resolves to, when the client connects: the
//! client's resolver ([`FilteringResolver`]) hands the connector only permitted addresses, and
//! the connection is made to one of those, so a name that resolves to a public address once
//! and to a private one the next time (DNS rebinding) gains nothing. Hosts written as IP
//! literals never reach a resolver: [`check_url`] refuses them before the request and at each
//! redirect. Proxies from the environment are not used (a proxy would connect on our behalf to
//! an address we never see).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Redirects an issuer fetch follows at most.
const MAX_REDIRECTS: usize = 3;

/// Which addresses outbound requests may connect to.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Arc<[IpNet]>,
}

/// Why an address is refused (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restricted {
    /// Never allowed: unspecified, multicast, broadcast and reserved.
    Always(&'static str),
    /// Allowed only by `federation-allowed-networks`.
    Internal(&'static str),
}

impl Restricted {
    fn name(self) -> &'static str {
        match self {
            Self::Always(n) | Self::Internal(n) => n,
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

const ALWAYS_V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 32), "unspecified"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(240, 0, 0, 0, 4), "reserved or broadcast"),
];

const INTERNAL_V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "this network"),
    (v4(10, 0, 0, 0, 8), "private"),
    (v4(100, 64, 0, 0, 10), "shared address space"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
];

const ALWAYS_V6: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

const INTERNAL_V6: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique local"),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local"),
];

/// The IPv4 address an IPv6 address carries, for the forms that reach it: mapped
/// (`::ffff:0:0/96`), compatible (`::/96`), and NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    // `::` and `::1` are themselves, not IPv4.
    let compatible = s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1);
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    let nat64_local = s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1;
    (mapped || compatible || nat64 || nat64_local).then(tail)
}

/// Whether `ip` is in a refused range, and which.
pub fn restriction(ip: IpAddr) -> Option<Restricted> {
    match ip {
        IpAddr::V4(ip) => {
            if let Some((_, name)) = ALWAYS_V4.iter().find(|(n, _)| n.contains(&ip)) {
                return Some(Restricted::Always(name));
            }
            INTERNAL_V4
                .iter()
                .find(|(n, _)| n.contains(&ip))
                .map(|(_, name)| Restricted::Internal(name))
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = embedded_v4(ip) {
                return restriction(IpAddr::V4(v4));
            }
            if let Some((_, name)) = ALWAYS_V6.iter().find(|(n, _)| n.contains(&ip)) {
                return Some(Restricted::Always(name));
            }
            INTERNAL_V6
                .iter()
                .find(|(n, _)| n.contains(&ip))
                .map(|(_, name)| Restricted::Internal(name))
        }
    }
}

impl AddressPolicy {
    /// Refuses every restricted address except those in `allowed` (never the ones refused
    /// always).
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self {
            allowed: allowed.into(),
        }
    }

    /// `None` if a connection to `ip` is allowed, else why not.
    pub fn refusal(&self, ip: IpAddr) -> Option<Restricted> {
        let restricted = restriction(ip)?;
        let listed = |ip: &IpAddr| self.allowed.iter().any(|n| n.contains(ip));
        let carried = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        match restricted {
            Restricted::Internal(_) if listed(&ip) || carried.as_ref().is_some_and(listed) => None,
            other => Some(other),
        }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.refusal(ip).is_none()
    }
}

/// A request refused before it was sent: every address of its host is restricted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{host}` is refused: {reasons}")]
pub struct Refused {
    pub host: String,
    /// `address (why)`, for each address refused.
    pub reasons: String,
}

impl Refused {
    fn new(host: &str, refused: &[(IpAddr, Restricted)]) -> Self {
        let reasons = if refused.is_empty() {
            "it resolves to no address".to_string()
        } else {
            refused
                .iter()
                .map(|(ip, why)| format!("{ip} is {}", why.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Self {
            host: host.to_string(),
            reasons,
        }
    }

    /// The refusal somewhere in an error's chain of causes (a failed connection or redirect).
    pub fn find<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e Refused> {
        let mut current = Some(e);
        while let Some(e) = current {
            if let Some(refused) = e.downcast_ref::<Refused>() {
                return Some(refused);
            }
            current = e.source();
        }
        None
    }
}

/// Refuses a URL whose host is an IP literal in a restricted range (host names are checked
/// when resolved).
pub fn check_url(policy: &AddressPolicy, url: &reqwest::Url) -> Result<(), Refused> {
    let Some(host) = url.host_str() else {
        return Err(Refused {
            host: String::new(),
            reasons: "the url has no host".into(),
        });
    };
    // The URL parser writes every IPv4 spelling (`127.1`, `0x7f.0.0.1`, `2130706433`) as a
    // dotted quad and IPv6 in brackets, so what does not parse as an address is a name.
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let Ok(ip) = literal.unwrap_or(host).parse::<IpAddr>() else {
        return Ok(());
    };
    match policy.refusal(ip) {
        None => Ok(()),
        Some(why) => Err(Refused::new(&ip.to_string(), &[(ip, why)])),
    }
}

/// Resolves with the system resolver and passes on only the permitted addresses; a name with
/// none left fails with [`Refused`] before any connection is attempted.
#[derive(Debug, Clone)]
pub struct FilteringResolver {
    policy: AddressPolicy,
}

impl FilteringResolver {
    pub fn new(policy: AddressPolicy) -> Self {
        Self { policy }
    }

    /// The permitted addresses of `host`, or why there are none.
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let found = tokio::net::lookup_host((host, 0))
            .await
            .map_err(ResolveError::Lookup)?;
        let mut permitted = Vec::new();
        let mut refused = Vec::new();
        for addr in found {
            match self.policy.refusal(addr.ip()) {
                None => permitted.push(addr),
                Some(why) => refused.push((addr.ip(), why)),
            }
        }
        if permitted.is_empty() {
            return Err(ResolveError::Refused(Refused::new(host, &refused)));
        }
        Ok(permitted)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Lookup(std::io::Error),
    #[error(transparent)]
    Refused(Refused),
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            match this.lookup(name.as_str()).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                // Boxed as itself, so `Refused::find` recognises it in the connect error.
                Err(ResolveError::Refused(r)) => Err(Box::new(r) as _),
                Err(ResolveError::Lookup(e)) => Err(Box::new(e) as _),
            }
        })
    }
}

/// A client builder for outbound HTTPS that keeps to `policy`: the filtering resolver, no
/// proxies, and redirects only to https URLs that pass [`check_url`] (at most three).
pub fn client_builder(policy: &AddressPolicy) -> reqwest::ClientBuilder {
    let redirects = policy.clone();
    reqwest::Client::builder()
        .https_only(true)
        .no_proxy()
        .dns_resolver(Arc::new(FilteringResolver::new(policy.clone())))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            if attempt.url().scheme() != "https" {
                return attempt.error("redirect to a url that is not https");
            }
            match check_url(&redirects, attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_and_special_addresses_are_restricted() {
        let internal = [
            "127.0.0.1",
            "127.255.0.9",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.170",
            "198.18.0.1",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::a9fe:a9fe",
        ];
        for a in internal {
            assert!(
                matches!(restriction(ip(a)), Some(Restricted::Internal(_))),
                "{a}"
            );
        }
        let always = [
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "ff02::1",
            "::ffff:0.0.0.0",
            "::ffff:224.0.0.1",
        ];
        for a in always {
            assert!(
                matches!(restriction(ip(a)), Some(Restricted::Always(_))),
                "{a}"
            );
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ];
        for a in public {
            assert_eq!(restriction(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn the_operator_allows_listed_networks_but_never_the_unspecified_or_multicast() {
        let closed = AddressPolicy::default();
        assert!(!closed.permits(ip("127.0.0.1")));
        assert!(closed.permits(ip("8.8.8.8")));
        let open = AddressPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
            "::/0".parse().unwrap(),
        ]);
        assert!(open.permits(ip("127.0.0.1")));
        assert!(open.permits(ip("::ffff:127.0.0.1")));
        assert!(open.permits(ip("10.1.2.3")));
        assert!(!open.permits(ip("0.0.0.0")));
        assert!(!open.permits(ip("::")));
        assert!(!open.permits(ip("224.0.0.1")));
        let narrow = AddressPolicy::new(vec!["10.1.0.0/16".parse().unwrap()]);
        assert!(narrow.permits(ip("10.1.2.3")));
        assert!(narrow.permits(ip("::ffff:10.1.2.3")));
        assert!(!narrow.permits(ip("10.2.0.1")));
        assert!(!narrow.permits(ip("169.254.169.254")));
    }

    #[test]
    fn ip_literal_urls_are_checked_in_every_spelling() {
        let policy = AddressPolicy::default();
        for url in [
            "https://127.0.0.1:8443/",
            "https://127.1/",
            "https://0x7f.0.0.1/",
            "https://2130706433/",
            "https://[::1]/",
            "https://[::ffff:7f00:1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://169.254.169.254/metadata",
            "https://10.0.0.1/",
            "https://0.0.0.0/",
        ] {
            let url = reqwest::Url::parse(url).unwrap();
            assert!(check_url(&policy, &url).is_err(), "{url}");
        }
        for url in ["https://issuer.example/", "https://8.8.8.8/"] {
            let url = reqwest::Url::parse(url).unwrap();
            assert!(check_url(&policy, &url).is_ok(), "{url}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_by_the_resolver() {
        let resolver = FilteringResolver::new(AddressPolicy::default());
        let err = resolver.lookup("localhost").await.unwrap_err();
        let ResolveError::Refused(refused) = err else {
            panic!("{err:?}")
        };
        assert_eq!(refused.host, "localhost");
        assert!(refused.reasons.contains("loopback"), "{refused}");
        let allowed =
            FilteringResolver::new(AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]));
        let addrs = allowed.lookup("localhost").await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()));
    }
}
