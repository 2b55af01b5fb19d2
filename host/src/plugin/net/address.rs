//! Which addresses a phase's request may connect to. The host resolves every name itself and
//! checks each address it would connect to, so a name that resolves (or is made to resolve) to
//! an address inside the machine or its network is refused, whatever the name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not reached through a name, or `None` when it is a public address. Only a grant
/// that writes the address literally reaches these.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b, c, d) {
        (169, 254, 169, 254) => "a cloud metadata address",
        (0, ..) => "an unspecified or \"this network\" address",
        (127, ..) => "a loopback address",
        (10, ..) | (192, 168, ..) => "a private address",
        (172, b, ..) if (16..32).contains(&b) => "a private address",
        (100, b, ..) if (64..128).contains(&b) => "a shared (carrier-grade NAT) address",
        (169, 254, ..) => "a link-local address",
        (192, 0, 0, _) => "an IETF protocol address",
        (198, b, ..) if b == 18 || b == 19 => "a benchmarking address",
        (a, ..) if a >= 224 => "a multicast, reserved or broadcast address",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    // An IPv4 address carried in an IPv6 one reaches that IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) translates to the IPv4 address in its low 32 bits.
    if s[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return v4_kind(v4);
    }
    Some(if ip.is_unspecified() {
        "an unspecified address"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254] {
        "a cloud metadata address"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "a private (unique local) address"
    } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
        "a link-local address"
    } else if (s[0] & 0xff00) == 0xff00 {
        "a multicast address"
    } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
        // ::a.b.c.d, the deprecated IPv4-compatible form.
        "an IPv4-compatible address"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<&'static str> {
        internal_kind(s.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_named() {
        for (addr, want) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "carrier-grade"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "metadata"),
            ("64:ff9b::a00:1", "private"),
            ("fd00:ec2::254", "metadata"),
            ("fc00::1", "private"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::127.0.0.1", "IPv4-compatible"),
        ] {
            let got = kind(addr).unwrap_or_else(|| panic!("{addr} was allowed"));
            assert!(got.contains(want), "{addr}: {got}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "93.184.216.34",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "8.8.8.8",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:93.184.216.34",
        ] {
            assert_eq!(kind(addr), None, "{addr}");
        }
    }
}
