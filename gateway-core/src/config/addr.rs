//! Address syntax helpers for the compiler.

/// Whether `host` looks like an IPv4 address but is not a valid dotted quad: its last dot-separated
/// label is numeric (decimal, or `0x` hex as `inet_aton` reads it), so resolvers, URL parsers
/// (WHATWG "ends in a number") and `inet_aton` treat it as an address, never as a DNS name; yet it
/// is not four decimal octets without leading zeros. Examples: `999.1.1.1`, `1.2.3`, `1.2.3.4.5`,
/// `01.2.3.4` (octal to some parsers), `0x7f.1`, `2130706433`. A valid IPv4 address or a host name
/// whose last label has a letter (`api.internal`, `10.0.0.1.nip.io`) is fine.
pub fn malformed_ipv4(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let Some(last) = host.rsplit('.').next() else {
        return false;
    };
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .or_else(|| last.strip_prefix("0X"))
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
    numeric && host.parse::<std::net::Ipv4Addr>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_lookalikes() {
        for bad in [
            "999.1.1.1",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "0x7f.1",
            "0x7F000001",
            "2130706433",
            "a.b.1",
            "1..1.1",
        ] {
            assert!(malformed_ipv4(bad), "{bad}");
        }
        for ok in [
            "1.2.3.4",
            "127.0.0.1",
            "api.internal",
            "10.0.0.1.nip.io",
            "localhost",
            "svc-1",
            "x1",
            "0xdead.example",
            "",
        ] {
            assert!(!malformed_ipv4(ok), "{ok}");
        }
    }
}
