//! Outbound URL safety. A webhook URL may only point at public addresses (unless the operator
//! allows private ones), so a subscriber cannot use Wharf to reach loopback, the private
//! network or a cloud metadata service; and, when the operator sets an egress allow-list,
//! only at addresses in it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where outbound connections (webhooks, polls, mail) may go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    /// Loopback and private addresses are reachable too (local testing).
    pub allow_private: bool,
    /// When set, only addresses in these networks are reachable, whatever else allows.
    pub only: Option<Vec<Network>>,
}

impl Egress {
    /// Why `ip` may not be reached, if it may not.
    pub fn refuses(&self, ip: IpAddr) -> Option<String> {
        if let Some(only) = &self.only
            && !only.iter().any(|n| n.contains(ip))
        {
            return Some(format!("{ip} is outside the server's egress allow-list"));
        }
        (!self.allow_private && !is_public(ip))
            .then(|| format!("{ip} is a loopback, private, link-local or metadata address"))
    }

    /// Why none of `addrs` may be reached or, if some may, nothing; no address is refused.
    pub fn refuses_all(&self, addrs: &[IpAddr]) -> Option<String> {
        if addrs.is_empty() {
            return Some("the host has no addresses".into());
        }
        addrs.iter().find_map(|ip| self.refuses(*ip))
    }
}

/// The address `url` names literally, if it names one rather than a host name (host names
/// are checked where they resolve).
pub fn literal_address(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

/// A network in CIDR notation (`127.0.0.0/8`, `::1/128`; a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    a[..whole] == b[..whole]
        && (rest == 0 || {
            let mask = 0xffu8 << (8 - rest);
            a[whole] & mask == b[whole] & mask
        })
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or a network such as 127.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has a prefix length outside 0..={max}"))?,
        };
        Ok(Network { addr, prefix })
    }
}

/// Whether `ip` is a routable public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, includes fd00:ec2::254 (metadata)
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 can reach private IPv4
                || (s[0] == 0x2002) // 6to4 embeds an IPv4 address
                || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32 embeds an IPv4 address
                || s[..6] == [0; 6] // IPv4-compatible ::a.b.c.d (deprecated)
                || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0) // SIIT ::ffff:0:a.b.c.d
                || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only 100::/64
                || v6 == Ipv6Addr::from([0, 0, 0, 0, 0, 0, 0, 1]))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the metadata service
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // carrier-grade NAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn an_egress_allow_list_admits_only_its_networks() {
        let loopback = Egress {
            allow_private: true,
            only: Some(vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]),
        };
        for ok in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(loopback.refuses(ok.parse().unwrap()), None, "{ok}");
        }
        for refused in ["8.8.8.8", "10.0.0.1", "::2", "128.0.0.1"] {
            assert!(
                loopback.refuses(refused.parse().unwrap()).is_some(),
                "{refused}"
            );
        }
        let private_refused = Egress {
            allow_private: false,
            only: loopback.only.clone(),
        };
        assert!(
            private_refused
                .refuses("127.0.0.1".parse().unwrap())
                .is_some()
        );
        let open = Egress::default();
        assert_eq!(open.refuses("8.8.8.8".parse().unwrap()), None);
        assert!(open.refuses_all(&[]).is_some());
        let odd: Network = "10.0.0.0/9".parse().unwrap();
        assert!(odd.contains("10.127.255.255".parse().unwrap()));
        assert!(!odd.contains("10.128.0.0".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("example.com".parse::<Network>().is_err());
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_not_public() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::",
            "224.0.0.1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:0:7f00:1",
            "::ffff:0:8.8.8.8",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "100::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(!is_public(ip), "{bad} must not be public");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            let ip: IpAddr = good.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(is_public(ip), "{good} is public");
        }
    }
}
