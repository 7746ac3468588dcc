//! Runtime specs of the discovery sources: every default applied and every field checked by the compiler
//! (`compile/discovery.rs`), so building a source from a spec never re-validates the configuration.
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One upstream's discovery source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Consul(ConsulSpec),
    Dns(DnsSpec),
    File(FileSpec),
}

impl SourceSpec {
    /// One line for `gw dry-run`: where the endpoints come from (never the token).
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::Consul(c) => format!(
                "Consul service {}{} at {}",
                c.service,
                c.tag
                    .as_ref()
                    .map_or(String::new(), |t| format!(" tagged {t}")),
                c.url
            ),
            SourceSpec::Dns(d) => match d.record {
                DnsRecord::A { port } => format!("DNS A/AAAA {}, port {port}", d.host),
                DnsRecord::Srv => format!("DNS SRV {}", d.host),
            },
            SourceSpec::File(f) => format!("file {}", f.path.display()),
        }
    }

    /// The source's kind (`source` metric label).
    pub fn kind(&self) -> super::SourceKind {
        match self {
            SourceSpec::Consul(_) => super::SourceKind::Consul,
            SourceSpec::Dns(_) => super::SourceKind::Dns,
            SourceSpec::File(_) => super::SourceKind::File,
        }
    }
}

/// Back-off after failed fetches: `base × failures²`, at most `max` (Consul's own watcher uses 5 s and
/// 180 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Consul's watcher: 5 s × failures², capped at 180 s.
    pub const CONSUL: Backoff = Backoff {
        base: Duration::from_secs(5),
        max: Duration::from_secs(180),
    };

    /// The delay after `failures` consecutive failures (zero for none).
    pub fn delay(&self, failures: u32) -> Duration {
        let f = failures.min(1 << 15);
        self.base
            .checked_mul(f * f)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// `discovery: {type: consul}`.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulSpec {
    /// `http(s)://host:port` without a trailing slash.
    pub url: String,
    pub service: String,
    pub tag: Option<String>,
    pub datacenter: Option<String>,
    /// Sent as `X-Consul-Token`; redacted from `Debug`.
    pub token: Option<String>,
    /// Extra PEM roots for `https://`.
    pub ca_file: Option<PathBuf>,
    /// `wait` of blocking queries.
    pub wait: Duration,
    /// Shortest time between the starts of two queries (rate limit of the loop).
    pub min_interval: Duration,
    pub backoff: Backoff,
}

impl fmt::Debug for ConsulSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulSpec")
            .field("url", &self.url)
            .field("service", &self.service)
            .field("tag", &self.tag)
            .field("datacenter", &self.datacenter)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("wait", &self.wait)
            .field("min_interval", &self.min_interval)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// DNS record type to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRecord {
    /// A and AAAA; every address on `port`.
    A { port: u16 },
    /// SRV; target, port and weight of each record.
    Srv,
}

/// `discovery: {type: dns}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSpec {
    pub host: String,
    pub record: DnsRecord,
    /// DNS server to ask; the system configuration when `None`.
    pub resolver: Option<SocketAddr>,
    /// Bounds of the re-resolution interval (the record TTL is clamped into them). After a failure the
    /// source backs off `min_interval × failures²`, at most `max_interval`.
    pub min_interval: Duration,
    pub max_interval: Duration,
}

/// `discovery: {type: file}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute (resolved against the configuration's directory).
    pub path: PathBuf,
    /// Re-read at least this often, whether or not a change was notified.
    pub interval: Duration,
    /// After a change notification, wait this long for more before reading (editors write in steps).
    pub debounce: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_quadratic_and_capped() {
        let b = Backoff::CONSUL;
        assert_eq!(b.delay(0), Duration::ZERO);
        assert_eq!(b.delay(1), Duration::from_secs(5));
        assert_eq!(b.delay(2), Duration::from_secs(20));
        assert_eq!(b.delay(5), Duration::from_secs(125));
        assert_eq!(b.delay(6), Duration::from_secs(180));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(180));
    }

    #[test]
    fn consul_token_is_not_in_debug() {
        let s = ConsulSpec {
            url: "http://127.0.0.1:8500".into(),
            service: "web".into(),
            tag: None,
            datacenter: None,
            token: Some("s3cr3t-token".into()),
            ca_file: None,
            wait: Duration::from_secs(1),
            min_interval: Duration::from_secs(1),
            backoff: Backoff::CONSUL,
        };
        let d = format!("{s:?}");
        assert!(!d.contains("s3cr3t"), "{d}");
        assert!(d.contains("<redacted>"));
    }
}
