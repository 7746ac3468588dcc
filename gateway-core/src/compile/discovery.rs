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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;

    /// Compiles one upstream with `discovery` (a YAML flow mapping); returns (errors, warnings) as
    /// `path: message` strings.
    fn diags(discovery: &str) -> (Vec<String>, Vec<String>) {
        let text = format!(
            "listeners: [{{name: p, address: 127.0.0.1:18080}}]\nupstreams:\n  - name: a\n    discovery: {discovery}\nroutes:\n  - {{name: r, match: {{prefix: /}}, upstream: a}}\n"
        );
        let c = compile("/etc/gw/gw.yaml", &text, &|_| None);
        let f = |d: &crate::diag::Diagnostic| format!("{}: {}", d.path, d.message);
        (c.errors().map(f).collect(), c.warnings().map(f).collect())
    }

    fn errors(discovery: &str) -> Vec<String> {
        diags(discovery).0
    }

    /// Builds the spec directly (what the upstream compiler gets back).
    fn spec(discovery: &str) -> Option<SourceSpec> {
        let cfg: DiscoveryConfig = serde_yaml::from_str(discovery).unwrap();
        let spans = crate::config::spans::SpanIndex::build("");
        let mut d = crate::diag::Diags::new("/etc/gw/gw.yaml");
        let mut cx = Cx {
            spans: &spans,
            diags: &mut d,
            base_dir: "/etc/gw".into(),
        };
        let s = discovery_fn(&mut cx, &cfg);
        assert!(!d.has_errors(), "{discovery}");
        s
    }

    fn discovery_fn(cx: &mut Cx, d: &DiscoveryConfig) -> Option<SourceSpec> {
        discovery(cx, "upstreams[0]", Some(d))
    }

    #[test]
    fn defaults_are_applied() {
        assert_eq!(
            spec("{type: dns, host: users.internal, port: 8080}"),
            Some(SourceSpec::Dns(DnsSpec {
                host: "users.internal".into(),
                record: DnsRecord::A { port: 8080 },
                resolver: None,
                min_interval: DNS_MIN_INTERVAL,
                max_interval: DNS_MAX_INTERVAL,
            }))
        );
        let Some(SourceSpec::Consul(c)) =
            spec("{type: consul, url: \"http://127.0.0.1:8500/\", service: web}")
        else {
            panic!()
        };
        assert_eq!(c.url, "http://127.0.0.1:8500");
        assert_eq!((c.wait, c.min_interval), (CONSUL_WAIT, CONSUL_INTERVAL));
        assert_eq!(c.backoff, Backoff::CONSUL);
        assert_eq!(
            spec("{type: file, path: eps.yaml}"),
            Some(SourceSpec::File(FileSpec {
                path: "/etc/gw/eps.yaml".into(),
                interval: FILE_INTERVAL,
                debounce: FILE_DEBOUNCE,
            }))
        );
        assert_eq!(spec("{type: static}"), None);
        let Some(SourceSpec::Dns(d)) = spec(
            "{type: dns, host: _http._tcp.users.internal, record: srv, resolver: \"127.0.0.1:5353\", min_interval: 500ms, max_interval: 5s}",
        ) else {
            panic!()
        };
        assert_eq!(d.record, DnsRecord::Srv);
        assert_eq!(d.resolver, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(
            (d.min_interval, d.max_interval),
            (Duration::from_millis(500), Duration::from_secs(5))
        );
    }

    #[test]
    fn dns_errors() {
        let e = errors("{type: dns, host: users.internal}");
        assert!(
            e.iter()
                .any(|e| e.contains("discovery.port") && e.contains("needs a port")),
            "{e:?}"
        );
        let e = errors("{type: dns, host: _x._tcp.users, record: srv, port: 80}");
        assert!(e.iter().any(|e| e.contains("SRV records carry")), "{e:?}");
        let e = errors("{type: dns, host: \"bad host\", port: 80}");
        assert!(e.iter().any(|e| e.contains("discovery.host")), "{e:?}");
        let e = errors("{type: dns, host: h, port: 80, resolver: \"dns.local:53\"}");
        assert!(e.iter().any(|e| e.contains("discovery.resolver")), "{e:?}");
        let e = errors("{type: dns, host: h, port: 80, min_interval: 10s, max_interval: 5s}");
        assert!(
            e.iter().any(|e| e.contains("shorter than min_interval")),
            "{e:?}"
        );
        let e = errors("{type: dns, host: h, port: 80, min_interval: 0s}");
        assert!(
            e.iter()
                .any(|e| e.contains("min_interval: must be greater")),
            "{e:?}"
        );
        // units are explicit, and the old `interval` is gone
        assert!(!errors("{type: dns, host: h, port: 80, min_interval: 5}").is_empty());
        assert!(!errors("{type: dns, host: h, port: 80, interval: 5s}").is_empty());
        assert!(!errors("{type: dns, host: h, port: 80, record: mx}").is_empty());
    }

    #[test]
    fn consul_errors_and_warnings() {
        let e = errors("{type: consul, url: \"ftp://x\", service: web}");
        assert!(e.iter().any(|e| e.contains("discovery.url")), "{e:?}");
        let e = errors("{type: consul, url: \"http://x:8500/v1\", service: web}");
        assert!(e.iter().any(|e| e.contains("discovery.url")), "{e:?}");
        let e = errors("{type: consul, url: \"http://x:8500\", service: \"a/b\"}");
        assert!(e.iter().any(|e| e.contains("discovery.service")), "{e:?}");
        let e = errors("{type: consul, url: \"http://x:8500\", service: web, wait: 11m}");
        assert!(e.iter().any(|e| e.contains("discovery.wait")), "{e:?}");
        let e = errors("{type: consul, url: \"http://x:8500\", service: web, tag: \"\"}");
        assert!(e.iter().any(|e| e.contains("discovery.tag")), "{e:?}");
        let e = errors("{type: consul, url: \"http://x:8500\", service: web, ca_file: ca.pem}");
        assert!(e.iter().any(|e| e.contains("needs an https")), "{e:?}");
        let e = errors(
            "{type: consul, url: \"https://x:8500\", service: web, ca_file: /nonexistent/ca.pem}",
        );
        assert!(
            e.iter()
                .any(|e| e.contains("discovery.ca_file") && e.contains("cannot read")),
            "{e:?}"
        );
        let e = errors("{type: consul, url: \"http://x:8500\", service: web, token: \"a\\nb\"}");
        assert!(e.iter().any(|e| e.contains("discovery.token")), "{e:?}");
        assert!(
            !errors("{type: consul, url: \"http://x:8500\", service: web, unknown: 1}").is_empty()
        );
        // a token in clear text to a remote agent is a warning; to the local agent it is not
        let (e, w) =
            diags("{type: consul, url: \"http://consul.example:8500\", service: web, token: t0k}");
        assert!(e.is_empty(), "{e:?}");
        assert!(w.iter().any(|w| w.contains("discovery.token")), "{w:?}");
        let (_, w) =
            diags("{type: consul, url: \"http://127.0.0.1:8500\", service: web, token: t0k}");
        assert!(!w.iter().any(|w| w.contains("discovery.token")), "{w:?}");
        // and no diagnostic ever shows the token
        let (e, w) = diags("{type: consul, url: \"ftp://x\", service: web, token: s3cr3t}");
        assert!(!e.iter().chain(&w).any(|d| d.contains("s3cr3t")));
    }

    #[test]
    fn file_errors_and_warnings() {
        let (e, w) = diags("{type: file, path: /nonexistent/eps.yaml, interval: 2s}");
        assert!(e.is_empty(), "{e:?}");
        assert!(
            w.iter()
                .any(|w| w.contains("discovery.path") && w.contains("does not exist")),
            "{w:?}"
        );
        let e = errors("{type: file, path: \"\"}");
        assert!(e.iter().any(|e| e.contains("discovery.path")), "{e:?}");
        let e = errors("{type: file, path: x, interval: 0ms}");
        assert!(e.iter().any(|e| e.contains("discovery.interval")), "{e:?}");
    }
}
