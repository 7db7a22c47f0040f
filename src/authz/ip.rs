//! The `ip` match field: an address or a CIDR network.
//!
//! Dual-stack listeners report IPv4 clients as IPv4-mapped IPv6 addresses
//! (`::ffff:10.1.2.3`). Both sides are normalised to plain IPv4 so that
//! `ip = "10.0.0.0/8"` and `ip = "::ffff:10.0.0.0/104"` mean the same thing
//! whatever the socket family.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address (a host network).
pub(crate) fn parse_net(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(net) => net.trunc(),
        Err(_) => match s.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => return Err(format!("invalid address or CIDR {s:?}")),
        },
    };
    Ok(canonical_net(net))
}

/// An IPv4-mapped IPv6 network (`::ffff:a.b.c.d/96+n`) as the IPv4 network it
/// stands for; anything else unchanged.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(n);
            }
        }
    }
    net
}

/// True if `ip` lies in `net`, comparing IPv4-mapped addresses as IPv4.
pub(crate) fn contains(net: &IpNet, ip: IpAddr) -> bool {
    net.contains(&ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_addresses() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.9.9.9/8", "10.1.2.3", true),
            ("192.168.1.5", "192.168.1.5", true),
            ("192.168.1.5", "192.168.1.6", false),
            ("192.168.1.5", "::ffff:192.168.1.5", true),
            ("2001:db8::/32", "2001:db8::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("2001:db8::/32", "10.1.2.3", false),
            ("::ffff:10.0.0.0/104", "10.200.0.1", true),
            ("::ffff:10.0.0.0/104", "11.0.0.1", false),
            ("::1", "::1", true),
            ("::1", "127.0.0.1", false),
            ("0.0.0.0/0", "::ffff:1.2.3.4", true),
            ("::/0", "1.2.3.4", false),
        ];
        for &(net, ip, want) in cases {
            let n = parse_net(net).unwrap();
            assert_eq!(contains(&n, ip.parse().unwrap()), want, "{net} ∋ {ip}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "10.0.0.0/33", "10.0.0", "example.com", "10.0.0.0/8/8"] {
            assert!(parse_net(bad).is_err(), "{bad}");
        }
    }
}
