//! Consul source: `GET /v1/health/service/<service>?passing=true` as a blocking query.
//!
//! Follows Consul's "Blocking Queries" guidance: each query passes the `X-Consul-Index` of the previous
//! answer as `index` and a `wait`; Consul holds it until the service's health changes or `wait` expires.
//! The index is reset to 0 (a non-blocking query) when it goes backwards or comes back as 0. Queries start
//! at most once per `min_interval` (a Consul that answers at once, e.g. after an index reset, cannot make
//! the loop spin), and after failures the source backs off `base × failures²` (capped), like Consul's own
//! watch package.
//!
//! An instance's address is `Service.Address`, or `Node.Address` when that is empty; its port
//! `Service.Port`; its weight `Service.Weights.Passing` (1 when absent). Instances with port 0 or no
//! address are skipped with a warning. An address that is a host name (Consul allows them) is resolved
//! with the system resolver each round (each name once, 16 at a time, all within [`LOOKUP_TIMEOUT`]);
//! the instance gets the first address. When a lookup fails, the name's last good
//! address is used (a DNS outage does not drop live instances); a name that never resolved is skipped
//! with a warning. The token is sent as `X-Consul-Token` and never appears in errors or logs.
use super::spec::ConsulSpec;
use super::{DiscoveredEndpoint, DiscoveryError, Source, SourceKind};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const NAME: &str = "consul";

/// How long one round waits for the host names of its instances to resolve.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Most host-name lookups one round has in flight at once.
const LOOKUPS_AT_ONCE: usize = 16;

/// Polls one Consul service; see the module docs.
pub struct ConsulSource {
    spec: ConsulSpec,
    client: reqwest::Client,
    url: String,
    index: u64,
    last_start: Option<Instant>,
    /// The last good address of every host name the previous round had.
    names: HashMap<String, IpAddr>,
}

impl ConsulSource {
    /// Builds the HTTP client (with the CA file's roots for `https://`).
    pub fn new(spec: ConsulSpec) -> Result<Self, DiscoveryError> {
        if spec.service.is_empty() || !spec.service.bytes().all(service_char) {
            return Err(DiscoveryError::Setup(format!(
                "invalid Consul service name \"{}\"",
                spec.service
            )));
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &spec.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                DiscoveryError::Setup(format!("cannot read CA file {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                DiscoveryError::Setup(format!("invalid CA file {}: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(DiscoveryError::Setup(format!(
                    "CA file {} has no certificate",
                    ca.display()
                )));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| DiscoveryError::Setup(format!("Consul HTTP client: {e}")))?;
        let url = format!(
            "{}/v1/health/service/{}",
            spec.url.trim_end_matches('/'),
            spec.service
        );
        Ok(ConsulSource {
            spec,
            client,
            url,
            index: 0,
            last_start: None,
            names: HashMap::new(),
        })
    }

    /// The index the next query will send (0: not blocking).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Takes the `X-Consul-Index` of an answer (see the module docs for the resets).
    fn take_index(&mut self, new: u64) {
        self.index = if new == 0 || new < self.index { 0 } else { new };
    }
}

/// Characters of a Consul service name that need no escaping in a URL path.
pub fn service_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "Node")]
    node: Node,
    #[serde(rename = "Service")]
    service: Service,
}

#[derive(Deserialize)]
struct Node {
    #[serde(rename = "Address", default)]
    address: String,
}

#[derive(Deserialize)]
struct Service {
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Port")]
    port: u16,
    #[serde(rename = "Weights", default)]
    weights: Option<Weights>,
}

#[derive(Deserialize)]
struct Weights {
    #[serde(rename = "Passing")]
    passing: u32,
}

/// One passing instance as Consul lists it: its address (an IP or a host name), port and weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulInstance {
    pub address: String,
    pub port: u16,
    pub weight: u32,
}

/// Parses a `/v1/health/service/<name>` answer into instances (pure). Instances with port 0 or no
/// address are skipped with a warning.
pub fn parse_instances(body: &[u8]) -> Result<Vec<ConsulInstance>, DiscoveryError> {
    let entries: Vec<Entry> =
        serde_json::from_slice(body).map_err(|e| DiscoveryError::Invalid {
            source_name: NAME,
            message: e.to_string(),
        })?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let address = if e.service.address.is_empty() {
            e.node.address
        } else {
            e.service.address
        };
        if address.is_empty() || e.service.port == 0 {
            tracing::warn!(address = %address, port = e.service.port,
                "Consul instance skipped: it has no address or its port is 0");
            continue;
        }
        out.push(ConsulInstance {
            address,
            port: e.service.port,
            weight: e.service.weights.map_or(1, |w| w.passing),
        });
    }
    Ok(out)
}

/// The endpoints of the instances whose address is an IP (pure; host names need
/// [`ConsulSource::fetch`], which resolves them).
pub fn parse_health(body: &[u8]) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError> {
    Ok(parse_instances(body)?
        .into_iter()
        .filter_map(|i| {
            let ip = i.address.parse::<IpAddr>().ok()?;
            Some(DiscoveredEndpoint::new(
                SocketAddr::new(ip, i.port),
                i.weight,
            ))
        })
        .collect())
}

/// The address host name `name` stands for this round: the lookup's answer (remembered in `names`),
/// else the last good one (a failed lookup does not drop a live instance), else none.
fn settle(
    names: &mut HashMap<String, IpAddr>,
    name: &str,
    looked_up: Result<IpAddr, String>,
) -> Option<IpAddr> {
    match looked_up {
        Ok(ip) => {
            names.insert(name.to_owned(), ip);
            Some(ip)
        }
        Err(e) => match names.get(name) {
            Some(ip) => {
                tracing::warn!(name, error = %e, last_good = %ip,
                    "Consul instance host name did not resolve; using its last address");
                Some(*ip)
            }
            None => {
                tracing::warn!(name, error = %e,
                    "Consul instance skipped: its host name does not resolve");
                None
            }
        },
    }
}

/// The first address of `name` from the system resolver, within [`LOOKUP_TIMEOUT`].
async fn lookup(name: String) -> Result<IpAddr, String> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name.as_str(), 0))).await {
        Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(mut addrs)) => addrs
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| "no address".to_string()),
    }
}

impl ConsulSource {
    /// The endpoints of `instances`, their host names resolved (see the module docs).
    async fn endpoints(&mut self, instances: Vec<ConsulInstance>) -> Vec<DiscoveredEndpoint> {
        let mut names: Vec<&str> = instances
            .iter()
            .filter(|i| i.address.parse::<IpAddr>().is_err())
            .map(|i| i.address.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        // at most LOOKUPS_AT_ONCE at a time, all within LOOKUP_TIMEOUT: a hostile or huge answer
        // cannot hold the round (or the resolver's threads) for long
        let deadline = tokio::time::Instant::now() + LOOKUP_TIMEOUT;
        let mut answers: HashMap<String, Result<IpAddr, String>> = HashMap::new();
        {
            use futures_util::stream::{self, StreamExt};
            let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut pending = stream::iter(owned.into_iter().map(|n| async move {
                let answer = lookup(n.clone()).await;
                (n, answer)
            }))
            .buffer_unordered(LOOKUPS_AT_ONCE);
            while let Ok(Some((name, answer))) =
                tokio::time::timeout_at(deadline, pending.next()).await
            {
                answers.insert(name, answer);
            }
        }
        let mut resolved: HashMap<&str, Option<IpAddr>> = HashMap::with_capacity(names.len());
        for name in &names {
            let answer = answers
                .remove(*name)
                .unwrap_or_else(|| Err(format!("no answer within {LOOKUP_TIMEOUT:?}")));
            resolved.insert(name, settle(&mut self.names, name, answer));
        }
        self.names.retain(|n, _| resolved.contains_key(n.as_str()));
        instances
            .iter()
            .filter_map(|i| {
                let ip = match i.address.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => resolved.get(i.address.as_str()).copied().flatten()?,
                };
                Some(DiscoveredEndpoint::new(
                    SocketAddr::new(ip, i.port),
                    i.weight,
                ))
            })
            .collect()
    }
}

fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]);
    s.trim().to_string()
}

#[async_trait::async_trait]
impl Source for ConsulSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Consul
    }

    async fn fetch(&mut self) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError> {
        self.last_start = Some(Instant::now());
        let s = &self.spec;
        let mut q: Vec<(&str, String)> = vec![("passing", "true".into())];
        if let Some(t) = &s.tag {
            q.push(("tag", t.clone()));
        }
        if let Some(dc) = &s.datacenter {
            q.push(("dc", dc.clone()));
        }
        if self.index > 0 {
            q.push(("index", self.index.to_string()));
            q.push(("wait", format!("{}ms", s.wait.as_millis())));
        }
        // Consul adds up to wait/16 of jitter before answering a blocking query
        let timeout = s.wait + s.wait / 16 + Duration::from_secs(10);
        let mut req = self.client.get(&self.url).query(&q).timeout(timeout);
        if let Some(t) = &s.token {
            req = req.header("X-Consul-Token", t);
        }
        let unreachable = |e: reqwest::Error| DiscoveryError::Unreachable {
            source_name: NAME,
            // the message names the URL; the token is a header and never part of it
            message: e.to_string(),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(DiscoveryError::Status {
                source_name: NAME,
                status: status.as_u16(),
                message: excerpt(&body),
            });
        }
        let instances = parse_instances(&body)?;
        // a missing index header counts as 0: the next query does not block
        self.take_index(index.unwrap_or(0));
        Ok(self.endpoints(instances).await)
    }

    async fn wait(&mut self, failures: u32) {
        let delay = if failures > 0 {
            self.spec.backoff.delay(failures)
        } else {
            let since = self.last_start.map_or(Duration::MAX, |t| t.elapsed());
            self.spec.min_interval.saturating_sub(since)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::spec::Backoff;

    fn spec() -> ConsulSpec {
        ConsulSpec {
            url: "http://127.0.0.1:1".into(),
            service: "web".into(),
            tag: None,
            datacenter: None,
            token: Some("s3cr3t-consul-token".into()),
            ca_file: None,
            wait: Duration::from_secs(1),
            min_interval: Duration::from_millis(10),
            backoff: Backoff::CONSUL,
        }
    }

    #[test]
    fn parse_uses_service_address_then_node_address_and_passing_weight() {
        let body = br#"[
          {"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"a","Service":"web","Address":"","Port":8080,"Weights":{"Passing":3,"Warning":1}},"Checks":[]},
          {"Node":{"Node":"n2","Address":"10.0.0.2"},"Service":{"ID":"b","Service":"web","Address":"fd00::7","Port":9090},"Checks":[]},
          {"Node":{"Node":"n3","Address":"10.0.0.3"},"Service":{"ID":"c","Service":"web","Address":"web.internal","Port":80}}
        ]"#;
        let set = parse_health(body).unwrap();
        assert_eq!(
            set,
            vec![
                DiscoveredEndpoint::new("10.0.0.1:8080".parse().unwrap(), 3),
                DiscoveredEndpoint::new("[fd00::7]:9090".parse().unwrap(), 1),
            ]
        );
        assert_eq!(parse_health(b"[]").unwrap(), vec![]);
        assert!(matches!(
            parse_health(b"{\"not\": \"a list\"}"),
            Err(DiscoveryError::Invalid { .. })
        ));
        assert!(matches!(
            parse_health(b"[{\"Node\":"),
            Err(DiscoveryError::Invalid { .. })
        ));
    }

    #[test]
    fn instances_keep_host_names_and_skip_port_zero_or_no_address() {
        let body = br#"[
          {"Node":{"Address":"10.0.0.1"},"Service":{"Address":"web.internal","Port":80,"Weights":{"Passing":2}}},
          {"Node":{"Address":"node-7.dc1"},"Service":{"Address":"","Port":81}},
          {"Node":{"Address":"10.0.0.3"},"Service":{"Address":"10.0.0.4","Port":0}},
          {"Node":{"Address":""},"Service":{"Address":"","Port":82}}
        ]"#;
        let i = |a: &str, port, weight| ConsulInstance {
            address: a.into(),
            port,
            weight,
        };
        assert_eq!(
            parse_instances(body).unwrap(),
            vec![i("web.internal", 80, 2), i("node-7.dc1", 81, 1)]
        );
        assert_eq!(parse_health(body).unwrap(), vec![]);
    }

    #[test]
    fn a_failed_lookup_keeps_the_last_good_address_and_a_never_resolved_name_is_left_out() {
        let mut names = HashMap::new();
        let (a, b): (IpAddr, IpAddr) = ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap());
        assert_eq!(
            settle(&mut names, "web.internal", Err("dns down".into())),
            None
        );
        assert_eq!(settle(&mut names, "web.internal", Ok(a)), Some(a));
        assert_eq!(
            settle(&mut names, "web.internal", Err("timeout".into())),
            Some(a)
        );
        assert_eq!(
            settle(&mut names, "web.internal", Ok(b)),
            Some(b),
            "a new answer wins"
        );
        assert_eq!(
            settle(&mut names, "web.internal", Err("nxdomain".into())),
            Some(b)
        );
        assert_eq!(settle(&mut names, "other", Err("nxdomain".into())), None);
    }

    #[tokio::test]
    async fn lookup_answers_localhost_and_refuses_garbage() {
        assert!(lookup("localhost".into()).await.unwrap().is_loopback());
        assert!(lookup("bad name with spaces\0".into()).await.is_err());
    }

    #[test]
    fn index_resets_when_it_goes_backwards_or_is_zero() {
        let mut s = ConsulSource::new(spec()).unwrap();
        s.take_index(10);
        assert_eq!(s.index(), 10);
        s.take_index(12);
        assert_eq!(s.index(), 12);
        s.take_index(5);
        assert_eq!(s.index(), 0);
        s.take_index(7);
        assert_eq!(s.index(), 7);
        s.take_index(0);
        assert_eq!(s.index(), 0);
    }

    #[test]
    fn bad_service_name_and_ca_file_are_setup_errors() {
        let mut bad = spec();
        bad.service = "a/b".into();
        assert!(matches!(
            ConsulSource::new(bad),
            Err(DiscoveryError::Setup(_))
        ));
        let mut bad = spec();
        bad.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            ConsulSource::new(bad),
            Err(DiscoveryError::Setup(_))
        ));
    }

    #[tokio::test]
    async fn unreachable_error_does_not_leak_the_token() {
        let mut s = ConsulSource::new(spec()).unwrap();
        let e = s.fetch().await.unwrap_err();
        assert!(matches!(e, DiscoveryError::Unreachable { .. }), "{e:?}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}
