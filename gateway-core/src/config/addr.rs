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

/// ECMA-262 alternation matching the decimal integers `1..=max` (`0..=max` with `zero`), leading zeros
/// allowed (as `str::parse` allows them).
fn uint_pattern(max: u64, zero: bool) -> String {
    let d: Vec<u32> = max
        .to_string()
        .bytes()
        .map(|b| u32::from(b - b'0'))
        .collect();
    let k = d.len();
    let mut alts = Vec::new();
    if k >= 2 {
        alts.push(format!("[1-9][0-9]{{0,{}}}", k - 2));
    }
    for i in 0..k {
        let low = if i == 0 { 1 } else { 0 };
        if d[i] > low {
            let prefix: String = d[..i].iter().map(|x| x.to_string()).collect();
            let rest = k - i - 1;
            let tail = if rest > 0 {
                format!("[0-9]{{{rest}}}")
            } else {
                String::new()
            };
            alts.push(format!("{prefix}[{low}-{}]{tail}", d[i] - 1));
        }
    }
    if max > 0 {
        alts.push(max.to_string());
    }
    if zero {
        alts.push("0".into());
    }
    format!("0*(?:{})", alts.join("|"))
}

/// A dotted quad as `Ipv4Addr::from_str` reads it: four decimal octets 0-255, no leading zeros.
fn ipv4_pattern() -> String {
    let octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])";
    format!("{octet}(?:\\.{octet}){{3}}")
}

/// An IPv6 address as `Ipv6Addr::from_str` reads it (RFC 4291 text form with `::` compression), with
/// or without a trailing embedded IPv4 address.
fn ipv6_pattern(embedded_ipv4: bool) -> String {
    let h = "[0-9A-Fa-f]{1,4}";
    let c = format!("(?:{h}:)");
    let ls32 = if embedded_ipv4 {
        format!("(?:{h}:{h}|{})", ipv4_pattern())
    } else {
        format!("{h}:{h}")
    };
    let alts = [
        format!("{c}{{6}}{ls32}"),
        format!("::{c}{{5}}{ls32}"),
        format!("(?:{h})?::{c}{{4}}{ls32}"),
        format!("(?:{c}{{0,1}}{h})?::{c}{{3}}{ls32}"),
        format!("(?:{c}{{0,2}}{h})?::{c}{{2}}{ls32}"),
        format!("(?:{c}{{0,3}}{h})?::{c}{ls32}"),
        format!("(?:{c}{{0,4}}{h})?::{ls32}"),
        format!("(?:{c}{{0,5}}{h})?::{h}"),
        format!("(?:{c}{{0,6}}{h})?::"),
    ];
    format!("(?:{})", alts.join("|"))
}

/// The ECMA-262 pattern of a socket address (listeners, admin, DNS resolver): exactly what
/// `SocketAddr::from_str` accepts (`IPv4:port` or `[IPv6%scope]:port`, port 0-65535), or a string
/// with a `${NAME}` reference.
pub fn socket_address_pattern() -> String {
    format!(
        "^(?:(?:{}|\\[{}(?:%{})?\\]):{}|{})$",
        ipv4_pattern(),
        ipv6_pattern(true),
        uint_pattern(u64::from(u32::MAX), true),
        uint_pattern(u64::from(u16::MAX), true),
        super::units::ENV_REF_PATTERN
    )
}

/// The ECMA-262 pattern of an upstream endpoint address: exactly what the compiler's
/// `endpoint_address` accepts (`host:port`, port 1-65535; the host an IP address, `[IPv6]`, or a DNS
/// name whose last label is not numeric, see [`malformed_ipv4`]), or a string with a `${NAME}`
/// reference.
pub fn endpoint_address_pattern() -> String {
    let ipv4 = ipv4_pattern();
    let label = "[A-Za-z0-9-]+";
    // a last label that `malformed_ipv4` does not call numeric: not all digits, not `0x` + hex digits
    let last = "(?:(?:[1-9][0-9]*|0[0-9]+)?[A-Za-z-][A-Za-z0-9-]*|0[A-WYZa-wyz-][A-Za-z0-9-]*|0[xX][0-9A-Fa-f]*[G-Zg-z-][A-Za-z0-9-]*)";
    let host = format!(
        "(?:{ipv4}\\]*|\\[+{ipv4}\\]+|\\[*{}\\]*|\\[*(?:{label}\\.)*{last}\\]*)",
        ipv6_pattern(false)
    );
    format!(
        "^(?:{host}:\\+?{}|{})$",
        uint_pattern(u64::from(u16::MAX), false),
        super::units::ENV_REF_PATTERN
    )
}

/// Schema of a socket address field (`schema_with`).
pub fn socket_address_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": socket_address_pattern(),
        "patternErrorMessage": "an IP address and a port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
        "examples": ["127.0.0.1:8080", "0.0.0.0:8443", "[::1]:8080"]
    })
}

/// Schema of an optional socket address field (`schema_with`): an address or null.
pub fn socket_address_or_null_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["string", "null"],
        "pattern": socket_address_pattern(),
        "patternErrorMessage": "an IP address and a port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
        "examples": ["127.0.0.1:53", "[::1]:53"]
    })
}

/// Schema of an upstream endpoint address field (`schema_with`).
pub fn endpoint_address_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": endpoint_address_pattern(),
        "patternErrorMessage": "host:port (port 1-65535), e.g. \"127.0.0.1:3001\" or \"users.internal:8080\"",
        "examples": ["127.0.0.1:3001", "users.internal:8080", "[2001:db8::7]:8080"]
    })
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
