//! Address policy: which hosts and IP addresses an image fetch may reach.
//!
//! Everything here is pure (no I/O) so it can be tested exhaustively. The fetcher applies
//! [`check_url`] to every URL it is about to request (the first one and every redirect target),
//! and [`check_ip`] to every address a host name resolves to, before connecting.
//!
//! The policy is "public unicast internet only": loopback, private, shared (CGNAT), link-local,
//! unique-local, site-local, multicast, unspecified, broadcast, reserved, benchmarking and
//! documentation addresses are refused, as are IPv6 forms that embed such an IPv4 address
//! (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`). An operator allow-list
//! (CIDRs) can open non-public ranges, e.g. `127.0.0.0/8` for local testing, except cloud metadata
//! endpoints, which are refused even when allow-listed: a broad allow-list such as `0.0.0.0/0` or
//! `169.254.0.0/16` must never expose instance credentials.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

use super::FetchError;

/// Why an address or host name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForbiddenReason {
    /// Cloud instance metadata endpoint (169.254.169.254, fd00:ec2::254, 100.100.100.200, ...)
    /// or a metadata host name. Never allowed, not even through the allow-list.
    Metadata,
    /// 127.0.0.0/8, ::1, `localhost`, `*.localhost`.
    Loopback,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16.
    Private,
    /// RFC 6598 shared address space (carrier-grade NAT) 100.64.0.0/10.
    SharedAddress,
    /// 169.254.0.0/16 and fe80::/10.
    LinkLocal,
    /// IPv6 unique-local fc00::/7.
    UniqueLocal,
    /// Deprecated IPv6 site-local fec0::/10.
    SiteLocal,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
    /// 0.0.0.0 and ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 0.0.0.0/8 ("this network").
    ThisNetwork,
    /// Reserved or special-purpose ranges: 240.0.0.0/4, 192.0.0.0/24, 192.88.99.0/24, IPv6 outside
    /// global unicast 2000::/3, Teredo and other 2001::/23 assignments, discard-only 100::/64,
    /// IPv4-compatible IPv6 and the local-use NAT64 prefix.
    Reserved,
    /// 198.18.0.0/15 (RFC 2544 benchmarking).
    Benchmarking,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// A host name that only makes sense inside a private network: single-label names and the
    /// `.internal`, `.local`, `.localdomain`, `.home.arpa` suffixes.
    InternalName,
}

impl ForbiddenReason {
    /// Stable lowercase identifier, suitable for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::SharedAddress => "shared_address",
            Self::LinkLocal => "link_local",
            Self::UniqueLocal => "unique_local",
            Self::SiteLocal => "site_local",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::ThisNetwork => "this_network",
            Self::Reserved => "reserved",
            Self::Benchmarking => "benchmarking",
            Self::Documentation => "documentation",
            Self::InternalName => "internal_name",
        }
    }
}

impl fmt::Display for ForbiddenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An address or host name refused by the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("address refused by the fetch policy: {reason}")]
pub struct Forbidden {
    /// Which rule refused it.
    pub reason: ForbiddenReason,
}

impl From<ForbiddenReason> for Forbidden {
    fn from(reason: ForbiddenReason) -> Self {
        Self { reason }
    }
}

/// Cloud metadata endpoints (IPv4): AWS/GCP/Azure/Oracle/DigitalOcean IMDS, AWS ECS task
/// metadata, Tencent Cloud, Alibaba Cloud, Oracle Cloud (legacy), Azure WireServer.
const METADATA_V4: [Ipv4Addr; 6] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 0, 23),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
    Ipv4Addr::new(168, 63, 129, 16),
];

/// Cloud metadata endpoints (IPv6): AWS IMDS (fd00:ec2::254), GCP (fd20:ce::254).
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
    Ipv6Addr::new(0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x0254),
];

/// Host names of metadata services (compared after lowercasing and stripping trailing dots).
const METADATA_NAMES: [&str; 6] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
];

/// Name suffixes that only resolve inside private networks.
const INTERNAL_SUFFIXES: [&str; 4] = [".internal", ".local", ".localdomain", ".home.arpa"];

/// Classify an IPv4 address; `None` means public unicast.
fn classify_v4(ip: Ipv4Addr) -> Option<ForbiddenReason> {
    use ForbiddenReason::*;
    if METADATA_V4.contains(&ip) {
        return Some(Metadata);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_broadcast() {
        return Some(Broadcast);
    }
    let reason = match ip.octets() {
        [0, ..] => ThisNetwork,
        [127, ..] => Loopback,
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => Private,
        [100, b, ..] if (64..=127).contains(&b) => SharedAddress,
        [169, 254, ..] => LinkLocal,
        [192, 0, 0, _] | [192, 88, 99, _] => Reserved,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => Documentation,
        [198, 18 | 19, ..] => Benchmarking,
        [224..=239, ..] => Multicast,
        [240..=255, ..] => Reserved,
        _ => return None,
    };
    Some(reason)
}

/// The IPv4 address held in the low 32 bits of an IPv6 address.
fn low_v4(seg: &[u16; 8]) -> Ipv4Addr {
    let [.., a, b] = *seg;
    Ipv4Addr::from((u32::from(a) << 16) | u32::from(b))
}

/// Classify an IPv6 address; `None` means public unicast.
fn classify_v6(ip: Ipv6Addr) -> Option<ForbiddenReason> {
    use ForbiddenReason::*;
    if METADATA_V6.contains(&ip) {
        return Some(Metadata);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    let seg = ip.segments();
    // IPv4-mapped ::ffff:a.b.c.d is the IPv4 host itself.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // IPv4-compatible ::a.b.c.d (deprecated, RFC 4291): never legitimate; report the embedded
    // address's reason when it has one.
    if seg[..6].iter().all(|&s| s == 0) {
        return Some(classify_v4(low_v4(&seg)).unwrap_or(Reserved));
    }
    // Well-known NAT64 prefix 64:ff9b::/96 (RFC 6052): the gateway connects to the embedded v4.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(low_v4(&seg));
    }
    // Local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215): site-specific translation.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
        return Some(Reserved);
    }
    // 6to4 2002:AABB:CCDD::/48 (RFC 3056) embeds the IPv4 address AA.BB.CC.DD.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::from((u32::from(seg[1]) << 16) | u32::from(seg[2]));
        return classify_v4(v4);
    }
    let reason = match seg[0] {
        0x2001 if seg[1] == 0x0db8 => Documentation,
        // 2001::/23 IETF protocol assignments, including Teredo 2001::/32 whose embedded
        // (obfuscated) IPv4 address cannot be trusted.
        0x2001 if seg[1] < 0x0200 => Reserved,
        0x3fff if seg[1] < 0x1000 => Documentation,
        0x0100 if seg[1..4] == [0, 0, 0] => Reserved,
        s if s & 0xfe00 == 0xfc00 => UniqueLocal,
        s if s & 0xffc0 == 0xfe80 => LinkLocal,
        s if s & 0xffc0 == 0xfec0 => SiteLocal,
        s if s & 0xff00 == 0xff00 => Multicast,
        // Everything outside global unicast 2000::/3 is unallocated or special.
        s if s & 0xe000 != 0x2000 => Reserved,
        _ => return None,
    };
    Some(reason)
}

/// Classify an address without considering any allow-list; `None` means public unicast.
pub fn classify_ip(ip: IpAddr) -> Option<ForbiddenReason> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Decide whether a fetch may connect to `ip`.
///
/// Public unicast addresses are always allowed. Non-public addresses are refused unless `ip` lies
/// inside one of the `allow` CIDRs (an IPv4-mapped IPv6 address also matches through its IPv4
/// form). Cloud metadata endpoints are refused even when allow-listed.
pub fn check_ip(ip: IpAddr, allow: &[IpNet]) -> Result<(), Forbidden> {
    let Some(reason) = classify_ip(ip) else {
        return Ok(());
    };
    if reason == ForbiddenReason::Metadata {
        return Err(reason.into());
    }
    let canonical = ip.to_canonical();
    if allow
        .iter()
        .any(|net| net.contains(&ip) || net.contains(&canonical))
    {
        return Ok(());
    }
    Err(reason.into())
}

/// Refuse host names that only make sense inside a private network, before any DNS lookup.
///
/// `host` is a domain name as the URL parser produced it (already lowercased and IDNA-mapped);
/// the check lowercases again and ignores trailing dots so it is also safe on raw input. Refused:
/// `localhost`, `*.localhost` (loopback), metadata service names (metadata), single-label names
/// and `*.internal`, `*.local`, `*.localdomain`, `*.home.arpa` (internal name). The allow-list does
/// not apply to names; use an IP literal inside an allow-listed range instead.
pub fn check_host_name(host: &str) -> Result<(), Forbidden> {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return Err(ForbiddenReason::Loopback.into());
    }
    if METADATA_NAMES.contains(&name.as_str()) {
        return Err(ForbiddenReason::Metadata.into());
    }
    if name.is_empty()
        || !name.contains('.')
        || name == "internal"
        || INTERNAL_SUFFIXES
            .iter()
            .any(|suffix| name.ends_with(suffix))
    {
        return Err(ForbiddenReason::InternalName.into());
    }
    Ok(())
}

/// The host of `url` as it may appear in logs and audit records: never the path, query,
/// credentials or port. IPv6 hosts keep their brackets (`[::1]`).
pub fn host_for_log(url: &Url) -> String {
    url.host_str().unwrap_or("").to_owned()
}

/// Check everything about a URL that can be checked without I/O: the scheme (http/https only),
/// the absence of credentials, the host name ([`check_host_name`]) and, for IP-literal hosts,
/// the address itself ([`check_ip`]). Names that pass still have every resolved address checked
/// by the fetcher before it connects.
///
/// The URL parser (WHATWG) has already normalised exotic IPv4 spellings (`http://2130706433/`,
/// `http://0x7f.1/`, `http://017700000001/`, full-width digits) into [`Host::Ipv4`], and the host
/// it reports is the real authority (`http://a.com@127.0.0.1/` has host `127.0.0.1`).
pub fn check_url(url: &Url, allow: &[IpNet]) -> Result<(), FetchError> {
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(FetchError::UnsupportedScheme {
                scheme: other.chars().take(32).collect(),
            })
        }
    }
    // Userinfo is never needed to fetch a public image, and `user@host` URLs are a classic way to
    // make a URL look like it points somewhere else. Refuse rather than strip.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::Credentials);
    }
    let host = host_for_log(url);
    let verdict = match url.host() {
        None => return Err(FetchError::InvalidUrl),
        Some(Host::Domain(name)) => check_host_name(name),
        Some(Host::Ipv4(v4)) => check_ip(IpAddr::V4(v4), allow),
        Some(Host::Ipv6(v6)) => check_ip(IpAddr::V6(v6), allow),
    };
    verdict.map_err(|f| FetchError::Forbidden {
        host,
        reason: f.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::ForbiddenReason::*;
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// Expected outcome of [`check_url`] for a table row.
    #[derive(Debug, PartialEq)]
    enum Want {
        Refused(ForbiddenReason),
        Scheme,
        Credentials,
        Ok,
    }

    fn judge(url: &str, allow: &[IpNet]) -> Want {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        match check_url(&parsed, allow) {
            Ok(()) => Want::Ok,
            Err(FetchError::Forbidden { reason, .. }) => Want::Refused(reason),
            Err(FetchError::UnsupportedScheme { .. }) => Want::Scheme,
            Err(FetchError::Credentials) => Want::Credentials,
            Err(other) => panic!("{url}: unexpected error {other:?}"),
        }
    }

    #[test]
    fn hostile_urls_are_refused_with_the_right_reason() {
        use Want::Refused as R;
        let table: &[(&str, Want)] = &[
            ("http://127.0.0.1/", R(Loopback)),
            ("http://127.0.0.1:8080/x?y=1", R(Loopback)),
            ("http://127.1/", R(Loopback)),
            ("http://2130706433/", R(Loopback)),
            ("http://0x7f.1/", R(Loopback)),
            ("http://0x7f000001/", R(Loopback)),
            ("http://017700000001/", R(Loopback)),
            ("http://0177.0.0.1/", R(Loopback)),
            ("http://127.0.0.1./", R(Loopback)),
            (
                "http://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
                R(Loopback),
            ),
            ("http://[::1]/", R(Loopback)),
            ("http://[0:0:0:0:0:0:0:1]/", R(Loopback)),
            ("http://localhost/", R(Loopback)),
            ("http://LOCALHOST./", R(Loopback)),
            ("http://evil.localhost/", R(Loopback)),
            ("http://0/", R(Unspecified)),
            ("http://0.0.0.0/", R(Unspecified)),
            ("http://[::]/", R(Unspecified)),
            ("http://0.1.2.3/", R(ThisNetwork)),
            ("http://10.0.0.1/", R(Private)),
            ("http://172.16.5.4/", R(Private)),
            ("http://172.31.255.255/", R(Private)),
            ("http://192.168.1.1/", R(Private)),
            ("http://100.64.0.1/", R(SharedAddress)),
            ("http://100.127.255.254/", R(SharedAddress)),
            ("http://169.254.169.254/latest/meta-data/", R(Metadata)),
            ("http://2852039166/", R(Metadata)),
            ("http://169.254.170.2/v2/credentials", R(Metadata)),
            ("http://100.100.100.200/latest/meta-data/", R(Metadata)),
            ("http://[fd00:ec2::254]/", R(Metadata)),
            (
                "http://metadata.google.internal/computeMetadata/v1/",
                R(Metadata),
            ),
            ("http://METADATA.google.internal./", R(Metadata)),
            ("http://metadata/", R(Metadata)),
            ("http://169.254.1.1/", R(LinkLocal)),
            ("http://[fe80::1]/", R(LinkLocal)),
            ("http://[fc00::1]/", R(UniqueLocal)),
            ("http://[fd12:3456:789a::1]/", R(UniqueLocal)),
            ("http://[fec0::1]/", R(SiteLocal)),
            ("http://224.0.0.1/", R(Multicast)),
            ("http://239.255.255.250/", R(Multicast)),
            ("http://[ff02::1]/", R(Multicast)),
            ("http://255.255.255.255/", R(Broadcast)),
            ("http://240.0.0.1/", R(Reserved)),
            ("http://192.0.0.8/", R(Reserved)),
            ("http://198.18.0.1/", R(Benchmarking)),
            ("http://198.19.255.255/", R(Benchmarking)),
            ("http://192.0.2.1/", R(Documentation)),
            ("http://198.51.100.7/", R(Documentation)),
            ("http://203.0.113.9/", R(Documentation)),
            ("http://[2001:db8::1]/", R(Documentation)),
            ("http://[::ffff:127.0.0.1]/", R(Loopback)),
            ("http://[::ffff:7f00:1]/", R(Loopback)),
            ("http://[::ffff:10.1.2.3]/", R(Private)),
            ("http://[::ffff:169.254.169.254]/", R(Metadata)),
            ("http://[::127.0.0.1]/", R(Loopback)),
            ("http://[::8.8.8.8]/", R(Reserved)),
            ("http://[64:ff9b::127.0.0.1]/", R(Loopback)),
            ("http://[64:ff9b::a9fe:a9fe]/", R(Metadata)),
            ("http://[64:ff9b:1::1]/", R(Reserved)),
            ("http://[2002:7f00:1::1]/", R(Loopback)),
            ("http://[2002:a9fe:a9fe::]/", R(Metadata)),
            ("http://[2002:c0a8:101::1]/", R(Private)),
            ("http://[2001::1]/", R(Reserved)),
            ("http://[100::1]/", R(Reserved)),
            ("http://[::ffff:0:7f00:1]/", R(Reserved)),
            ("http://foo.internal/", R(InternalName)),
            ("http://printer.local/", R(InternalName)),
            ("http://router.home.arpa/", R(InternalName)),
            ("http://redis:6379/", R(InternalName)),
            // The real host is what counts, not what the URL looks like.
            ("http://127.0.0.1#@example.com/", R(Loopback)),
            ("http://127.0.0.1\\@example.com/", R(Loopback)),
            ("http://127.0.0.1?@example.com/", R(Loopback)),
            ("http://example.com@127.0.0.1/", Want::Credentials),
            ("http://user:pw@example.com/", Want::Credentials),
            ("http://:pw@example.com/", Want::Credentials),
            ("file:///etc/passwd", Want::Scheme),
            ("ftp://example.com/a.png", Want::Scheme),
            ("gopher://127.0.0.1:6379/_INFO", Want::Scheme),
            ("javascript:alert(1)", Want::Scheme),
            ("ws://example.com/", Want::Scheme),
        ];
        assert!(table.len() >= 25);
        for (url, want) in table {
            assert_eq!(&judge(url, &[]), want, "{url}");
        }
    }

    #[test]
    fn public_looking_urls_are_allowed() {
        for url in [
            "http://93.184.215.14/",
            "https://8.8.8.8/a.jpg",
            "http://1.1.1.1:8080/x?y=z",
            "http://100.63.255.255/",
            "http://100.128.0.1/",
            "http://172.15.255.255/",
            "http://172.32.0.1/",
            "http://169.253.255.255/",
            "http://198.17.255.255/",
            "http://198.20.0.1/",
            "http://223.255.255.255/",
            "https://[2606:4700:4700::1111]/",
            "http://[2001:4860:4860::8888]/",
            "http://[::ffff:8.8.8.8]/",
            "http://[64:ff9b::808:808]/",
            "http://[2002:808:808::1]/",
            "https://example.com/face.jpg",
            "https://images.example.co.uk./face.jpg",
            "https://localhost.example.com/x.png",
            "https://internal.example.com/x.png",
        ] {
            assert_eq!(judge(url, &[]), Want::Ok, "{url}");
        }
    }

    #[test]
    fn numeric_ipv4_spellings_normalise_to_loopback() {
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://0177.0.0.1/",
            "http://127.0.0.1./",
        ] {
            let parsed = Url::parse(url).unwrap();
            assert_eq!(
                parsed.host(),
                Some(Host::Ipv4(Ipv4Addr::LOCALHOST)),
                "{url}"
            );
        }
        let parsed = Url::parse("http://example.com@127.0.0.1/").unwrap();
        assert_eq!(parsed.host_str(), Some("127.0.0.1"));
        let parsed = Url::parse("http://127.0.0.1#@example.com/").unwrap();
        assert_eq!(parsed.host_str(), Some("127.0.0.1"));
    }

    #[test]
    fn allow_list_opens_only_its_own_range() {
        let lo8 = [net("127.0.0.0/8")];
        let lo32 = [net("127.0.0.1/32")];
        assert_eq!(judge("http://127.0.0.1:9/", &lo8), Want::Ok);
        assert_eq!(judge("http://127.0.0.2/", &lo8), Want::Ok);
        assert_eq!(judge("http://127.0.0.1/", &lo32), Want::Ok);
        assert_eq!(judge("http://127.0.0.2/", &lo32), Want::Refused(Loopback));
        assert_eq!(judge("http://[::1]/", &lo8), Want::Refused(Loopback));
        assert_eq!(judge("http://[::1]/", &[net("::1/128")]), Want::Ok);
        // IPv4-mapped form of an allow-listed address is the same host.
        assert_eq!(judge("http://[::ffff:127.0.0.1]/", &lo32), Want::Ok);
        // ...but other embeddings are not treated as the same host.
        assert_eq!(
            judge("http://[2002:7f00:1::]/", &lo32),
            Want::Refused(Loopback)
        );
        assert_eq!(judge("http://10.1.2.3/", &lo8), Want::Refused(Private));
        assert_eq!(judge("http://10.1.2.3/", &[net("10.0.0.0/8")]), Want::Ok);
        // Names are refused regardless of the allow-list.
        assert_eq!(judge("http://localhost/", &lo8), Want::Refused(Loopback));
    }

    #[test]
    fn metadata_is_refused_even_when_allow_listed() {
        let everything = [net("0.0.0.0/0"), net("::/0")];
        for ip in [
            "169.254.169.254",
            "100.100.100.200",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                check_ip(ip, &everything),
                Err(Forbidden { reason: Metadata }),
                "{ip}"
            );
        }
        // The wide allow-list does open everything else.
        for ip in ["127.0.0.1", "10.0.0.1", "169.254.1.1", "::1", "fd00::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(check_ip(ip, &everything), Ok(()), "{ip}");
        }
    }

    #[test]
    fn check_ip_direct_boundaries() {
        let cases: &[(&str, Option<ForbiddenReason>)] = &[
            ("0.255.255.255", Some(ThisNetwork)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("126.255.255.255", None),
            ("127.255.255.255", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(Private)),
            ("192.169.0.0", None),
            ("192.0.1.255", None),
            ("192.0.3.0", None),
            ("192.88.99.1", Some(Reserved)),
            ("239.255.255.255", Some(Multicast)),
            ("255.255.255.254", Some(Reserved)),
            ("1fff:ffff::1", Some(Reserved)),
            ("2000::1", None),
            ("3ffe::1", None),
            ("3fff:fff::1", Some(Documentation)),
            ("3fff:1000::1", None),
            ("4000::1", Some(Reserved)),
            ("fbff::1", Some(Reserved)),
            ("fdff:ffff::1", Some(UniqueLocal)),
            ("febf::1", Some(LinkLocal)),
            ("feff::1", Some(SiteLocal)),
            ("ff0e::1", Some(Multicast)),
            ("2001:200::1", None),
            ("2001:1ff::1", Some(Reserved)),
            ("::2", Some(ThisNetwork)),
            ("::a00:1", Some(Private)),
        ];
        for (ip, want) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(classify_ip(ip), *want, "{ip}");
            assert_eq!(
                check_ip(ip, &[]),
                want.map_or(Ok(()), |r| Err(Forbidden { reason: r })),
                "{ip}"
            );
        }
    }

    #[test]
    fn host_name_rules() {
        for ok in [
            "example.com",
            "a.b.example",
            "cdn.localhost-images.com",
            "x.internal.example.com",
        ] {
            assert_eq!(check_host_name(ok), Ok(()), "{ok}");
        }
        for (bad, reason) in [
            ("localhost", Loopback),
            ("LocalHost..", Loopback),
            ("a.b.localhost", Loopback),
            ("metadata.google.internal", Metadata),
            ("metadata.goog", Metadata),
            ("instance-data", Metadata),
            ("corp.internal", InternalName),
            ("internal", InternalName),
            ("intranet", InternalName),
            ("", InternalName),
            (".", InternalName),
            ("nas.localdomain", InternalName),
        ] {
            assert_eq!(check_host_name(bad), Err(Forbidden { reason }), "{bad}");
        }
    }

    #[test]
    fn logged_host_has_no_path_query_or_credentials() {
        let url = Url::parse("https://Example.COM:8443/a/b.jpg?token=secret#frag").unwrap();
        assert_eq!(host_for_log(&url), "example.com");
        let url = Url::parse("http://[::1]:80/x?q").unwrap();
        assert_eq!(host_for_log(&url), "[::1]");
    }
}
