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
//! `Service.Port`; its weight `Service.Weights.Passing` (1 when absent). Instances whose address is not an
//! IP (Consul allows host names there) or whose port is 0 are skipped with a warning. The token is sent
//! as `X-Consul-Token` and never appears in errors or logs.
use super::spec::ConsulSpec;
use super::{DiscoveredEndpoint, DiscoveryError, Source, SourceKind};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const NAME: &str = "consul";

/// Polls one Consul service; see the module docs.
pub struct ConsulSource {
    spec: ConsulSpec,
    client: reqwest::Client,
    url: String,
    index: u64,
    last_start: Option<Instant>,
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

/// Parses a `/v1/health/service/<name>` answer into endpoints (pure; also used by tests).
pub fn parse_health(body: &[u8]) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError> {
    let entries: Vec<Entry> =
        serde_json::from_slice(body).map_err(|e| DiscoveryError::Invalid {
            source_name: NAME,
            message: e.to_string(),
        })?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let host = if e.service.address.is_empty() {
            &e.node.address
        } else {
            &e.service.address
        };
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) if e.service.port != 0 => ip,
            _ => {
                tracing::warn!(address = %host, port = e.service.port,
                    "Consul instance skipped: the address must be an IP and the port not 0");
                continue;
            }
        };
        let weight = e.service.weights.map_or(1, |w| w.passing);
        out.push(DiscoveredEndpoint::new(
            SocketAddr::new(ip, e.service.port),
            weight,
        ));
    }
    Ok(out)
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
        let set = parse_health(&body)?;
        // a missing index header counts as 0: the next query does not block
        self.take_index(index.unwrap_or(0));
        Ok(set)
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
