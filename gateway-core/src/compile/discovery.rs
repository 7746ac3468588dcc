//! `discovery:` of an upstream: every field checked, defaults applied, the runtime [`SourceSpec`] built.
//!
//! The upstream compiler calls [`discovery`] once per upstream; `static` (or no `discovery:`) is no
//! source. Paths in diagnostics are `<base>.discovery.<field>`.
use super::Cx;
use crate::config::{DiscoveryConfig, DnsRecordConfig, Dur};
use crate::discovery::consul::service_char;
use crate::discovery::spec::{Backoff, ConsulSpec, DnsRecord, DnsSpec, FileSpec, SourceSpec};
use std::net::SocketAddr;
use std::time::Duration;

/// Default `min_interval` of DNS discovery.
pub const DNS_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default `max_interval` of DNS discovery.
pub const DNS_MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Default `interval` (shortest time between two queries) of Consul discovery.
pub const CONSUL_INTERVAL: Duration = Duration::from_secs(1);
/// Default `wait` of Consul blocking queries (Consul's own default).
pub const CONSUL_WAIT: Duration = Duration::from_secs(300);
/// Longest `wait` Consul honours.
pub const CONSUL_MAX_WAIT: Duration = Duration::from_secs(600);
/// Default polling `interval` of file discovery.
pub const FILE_INTERVAL: Duration = Duration::from_secs(5);
/// Quiet time after a change event of the endpoints file before it is read.
pub const FILE_DEBOUNCE: Duration = Duration::from_millis(100);

/// Checks `d` (at `<base>.discovery`) and returns its source, or `None` for `static`, no discovery, or
/// an error (reported to `cx`).
pub(crate) fn discovery(
    cx: &mut Cx,
    base: &str,
    d: Option<&DiscoveryConfig>,
) -> Option<SourceSpec> {
    let path = format!("{base}.discovery");
    let mut ck = Check {
        cx,
        path: &path,
        ok: true,
    };
    let spec = match d? {
        DiscoveryConfig::Static {} => return None,
        DiscoveryConfig::Dns {
            host,
            port,
            record,
            resolver,
            min_interval,
            max_interval,
        } => SourceSpec::Dns(ck.dns(
            host,
            *port,
            *record,
            resolver.as_deref(),
            *min_interval,
            *max_interval,
        )?),
        DiscoveryConfig::Consul {
            url,
            service,
            interval,
            wait,
            tag,
            datacenter,
            token,
            ca_file,
        } => {
            let min_interval = ck.duration("interval", *interval, CONSUL_INTERVAL);
            let wait = ck.duration("wait", *wait, CONSUL_WAIT);
            if wait > CONSUL_MAX_WAIT {
                ck.error(
                    "wait",
                    format!(
                        "Consul holds a blocking query at most 10m, not {}",
                        Dur(wait)
                    ),
                    None,
                );
            }
            ck.url(url);
            if service.is_empty() || !service.bytes().all(service_char) {
                ck.error(
                    "service",
                    format!("invalid Consul service name \"{service}\""),
                    Some("letters, digits, '-', '_' and '.'".into()),
                );
            }
            ck.non_empty("tag", tag.as_deref());
            ck.non_empty("datacenter", datacenter.as_deref());
            ck.non_empty("token", token.as_deref());
            if token
                .as_deref()
                .is_some_and(|t| http::HeaderValue::from_str(t).is_err())
            {
                ck.error("token", "the token is not a valid header value", None);
            }
            let https = url.starts_with("https://");
            if token.is_some() && !https && !loopback_url(url) {
                ck.cx.warning(
                    &format!("{}.token", ck.path),
                    "the Consul token is sent in clear text over http:// to a non-loopback address",
                    Some("use an https:// url".into()),
                );
            }
            let ca_file = ca_file.as_deref().map(|f| ck.ca_file(f, https));
            SourceSpec::Consul(ConsulSpec {
                url: url.trim_end_matches('/').to_string(),
                service: service.clone(),
                tag: tag.clone(),
                datacenter: datacenter.clone(),
                token: token.clone(),
                ca_file,
                wait,
                min_interval,
                backoff: Backoff::CONSUL,
            })
        }
        DiscoveryConfig::File {
            path: file,
            interval,
        } => {
            let interval = ck.duration("interval", *interval, FILE_INTERVAL);
            if file.is_empty() {
                ck.error("path", "the path is empty", None);
            }
            let resolved = ck.cx.resolve(file);
            if !file.is_empty() && !resolved.exists() {
                ck.cx.warning(
                    &format!("{}.path", ck.path),
                    format!("{} does not exist (yet); the upstream has no endpoints from it until it does", resolved.display()),
                    None,
                );
            }
            SourceSpec::File(FileSpec {
                path: resolved,
                interval,
                debounce: FILE_DEBOUNCE,
            })
        }
    };
    ck.ok.then_some(spec)
}

struct Check<'c, 'a> {
    cx: &'c mut Cx<'a>,
    path: &'c str,
    ok: bool,
}

impl Check<'_, '_> {
    fn error(&mut self, field: &str, message: impl Into<String>, hint: Option<String>) {
        self.ok = false;
        self.cx
            .error(&format!("{}.{field}", self.path), message, hint);
    }

    fn duration(&mut self, field: &str, d: Option<Dur>, default: Duration) -> Duration {
        let d = d.map_or(default, Dur::get);
        if d.is_zero() {
            self.error(field, "must be greater than zero", None);
        }
        d
    }

    fn non_empty(&mut self, field: &str, v: Option<&str>) {
        if v.is_some_and(|v| v.trim().is_empty()) {
            self.error(field, "must not be empty (leave it out instead)", None);
        }
    }

    fn url(&mut self, url: &str) {
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.parse::<http::Uri>().is_ok_and(|u| {
                u.host().is_some_and(|h| !h.is_empty())
                    && u.query().is_none()
                    && matches!(u.path(), "" | "/")
            });
        if !ok {
            self.error(
                "url",
                format!("invalid Consul URL \"{url}\""),
                Some("scheme, host and port only, e.g. http://127.0.0.1:8500".into()),
            );
        }
    }

    fn ca_file(&mut self, file: &str, https: bool) -> std::path::PathBuf {
        let p = self.cx.resolve(file);
        if !https {
            self.error("ca_file", "ca_file needs an https:// url", None);
            return p;
        }
        match std::fs::read(&p) {
            Err(e) => self.error("ca_file", format!("cannot read {}: {e}", p.display()), None),
            Ok(pem) => match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(c) if !c.is_empty() => {}
                _ => self.error(
                    "ca_file",
                    format!("{} has no PEM CERTIFICATE block", p.display()),
                    None,
                ),
            },
        }
        p
    }

    fn dns(
        &mut self,
        host: &str,
        port: Option<u16>,
        record: DnsRecordConfig,
        resolver: Option<&str>,
        min: Option<Dur>,
        max: Option<Dur>,
    ) -> Option<DnsSpec> {
        if !dns_name(host) {
            self.error(
                "host",
                format!("invalid DNS name \"{host}\""),
                Some("e.g. users.internal or _http._tcp.users.internal".into()),
            );
        }
        let record = match (record, port) {
            (DnsRecordConfig::A, Some(p)) if p != 0 => DnsRecord::A { port: p },
            (DnsRecordConfig::A, _) => {
                self.error("port", "record a needs a port (1-65535)", None);
                DnsRecord::A { port: 1 }
            }
            (DnsRecordConfig::Srv, None) => DnsRecord::Srv,
            (DnsRecordConfig::Srv, Some(_)) => {
                self.error(
                    "port",
                    "SRV records carry their own port; remove port",
                    None,
                );
                DnsRecord::Srv
            }
        };
        let resolver = resolver.and_then(|r| match r.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => Some(a),
            _ => {
                self.error(
                    "resolver",
                    format!("invalid resolver \"{r}\""),
                    Some("an IP address and port, e.g. 127.0.0.1:53 or [::1]:53".into()),
                );
                None
            }
        });
        let min_interval = self.duration("min_interval", min, DNS_MIN_INTERVAL);
        let max_interval = self.duration("max_interval", max, DNS_MAX_INTERVAL.max(min_interval));
        if max_interval < min_interval {
            self.error(
                "max_interval",
                format!(
                    "max_interval ({}) is shorter than min_interval ({})",
                    Dur(max_interval),
                    Dur(min_interval)
                ),
                None,
            );
        }
        Some(DnsSpec {
            host: host.to_string(),
            record,
            resolver,
            min_interval,
            max_interval,
        })
    }
}

/// A host name (labels of letters, digits, `-`, `_`; an optional final dot).
fn dns_name(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn loopback_url(url: &str) -> bool {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
        .is_some_and(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}
