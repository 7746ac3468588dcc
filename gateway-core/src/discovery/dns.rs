//! DNS source (Envoy's STRICT_DNS semantics): resolve the name, use every answer, and re-resolve when
//! the answer's TTL expires, bounded by `min_interval` and `max_interval`.
//!
//! `record: a` asks for A and AAAA records and puts every address on the configured port. `record: srv`
//! asks for SRV records, keeps those of the lowest priority (RFC 2782), and makes each target's
//! addresses endpoints on the record's port with the record's weight (0 counts as 1); a target of `.`
//! ("no service") is skipped. Any failure, including "no such name" and an empty answer, keeps the
//! last good set; the source then retries after `min_interval × failures²`, at most `max_interval`.
//! Resolution uses `hickory-resolver` with its cache cleared before each round, so every round asks the
//! server.
use super::spec::{Backoff, DnsRecord, DnsSpec};
use super::{DiscoveredEndpoint, DiscoveryError, Source, SourceKind};
use hickory_resolver::config::{LookupIpStrategy, ResolveHosts};
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Resolves one name; see the module docs.
pub struct DnsSource {
    spec: DnsSpec,
    resolver: TokioResolver,
    /// Delay before the next round after a success (the last TTL, clamped).
    next: Duration,
}

impl DnsSource {
    /// Builds the resolver (the configured server, or the system configuration).
    pub fn new(spec: DnsSpec) -> Result<Self, DiscoveryError> {
        let setup = |e: &dyn std::fmt::Display| DiscoveryError::Setup(format!("DNS resolver: {e}"));
        let mut builder = match spec.resolver {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| setup(&e))?,
        };
        let o = builder.options_mut();
        if spec.resolver.is_some() {
            // "ask that server": not the local hosts file first
            o.use_hosts_file = ResolveHosts::Never;
        }
        o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        o.timeout = Duration::from_secs(2).min(spec.max_interval);
        o.attempts = 2;
        let resolver = builder.build().map_err(|e| setup(&e))?;
        Ok(DnsSource {
            next: spec.min_interval,
            spec,
            resolver,
        })
    }

    /// The delay the next [`Source::wait`] uses after a success.
    pub fn next_interval(&self) -> Duration {
        self.next
    }

    fn err(&self, e: impl std::fmt::Display) -> DiscoveryError {
        DiscoveryError::Dns {
            name: self.spec.host.clone(),
            message: e.to_string(),
        }
    }

    /// Every address of `name` with the smallest TTL of the answer.
    async fn addresses(&self, name: &str) -> Result<(Vec<IpAddr>, u32), DiscoveryError> {
        let l = self
            .resolver
            .lookup_ip(name)
            .await
            .map_err(|e| self.err(e))?;
        let ttl = l
            .as_lookup()
            .answers()
            .iter()
            .map(|r| r.ttl)
            .min()
            .unwrap_or(0);
        Ok((l.iter().collect(), ttl))
    }

    async fn srv(&self) -> Result<(Vec<DiscoveredEndpoint>, u32), DiscoveryError> {
        let l = self
            .resolver
            .srv_lookup(self.spec.host.as_str())
            .await
            .map_err(|e| self.err(e))?;
        let mut ttl = u32::MAX;
        let mut records = Vec::new();
        // A/AAAA records of the targets that came with the answer (dnsmasq, BIND, ... add them)
        let mut extra: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for r in l.answers() {
            if let RData::SRV(s) = &r.data {
                ttl = ttl.min(r.ttl);
                records.push(s.clone());
            }
        }
        for r in l.additionals() {
            let ip = match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            extra
                .entry(r.name.to_lowercase().to_ascii())
                .or_default()
                .push(ip);
        }
        let Some(best) = records.iter().map(|s| s.priority).min() else {
            return Err(self.err("no SRV record"));
        };
        let mut out = Vec::new();
        for s in records.iter().filter(|s| s.priority == best) {
            if s.target.is_root() {
                continue;
            }
            let target = s.target.to_lowercase().to_ascii();
            let ips = match extra.get(&target) {
                Some(ips) => ips.clone(),
                None => {
                    let (ips, t) = self.addresses(&target).await?;
                    ttl = ttl.min(t);
                    ips
                }
            };
            for ip in ips {
                out.push(DiscoveredEndpoint::new(
                    SocketAddr::new(ip, s.port),
                    u32::from(s.weight),
                ));
            }
        }
        Ok((out, ttl))
    }
}

#[async_trait::async_trait]
impl Source for DnsSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Dns
    }

    async fn fetch(&mut self) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError> {
        self.resolver.clear_cache();
        let (set, ttl) = match self.spec.record {
            DnsRecord::A { port } => {
                let (ips, ttl) = self.addresses(&self.spec.host).await?;
                let set = ips
                    .into_iter()
                    .map(|ip| DiscoveredEndpoint::new(SocketAddr::new(ip, port), 1))
                    .collect::<Vec<_>>();
                (set, ttl)
            }
            DnsRecord::Srv => self.srv().await?,
        };
        if set.is_empty() {
            return Err(self.err("the answer has no usable address"));
        }
        self.next = Duration::from_secs(u64::from(ttl))
            .clamp(self.spec.min_interval, self.spec.max_interval);
        Ok(set)
    }

    async fn wait(&mut self, failures: u32) {
        let d = if failures > 0 {
            Backoff {
                base: self.spec.min_interval,
                max: self.spec.max_interval,
            }
            .delay(failures)
        } else {
            self.next
        };
        tokio::time::sleep(d).await;
    }
}
