//! How an upstream's static endpoints and its discovered set combine, and the adapter that feeds the
//! combination to Pingora's load balancer through its extension point,
//! [`pingora::lb::discovery::ServiceDiscovery`].
//!
//! Rules (`docs/discovery.md`): the static endpoints are always there; the discovered set (the source's
//! last good set) is added; an address in both is one endpoint with the static weight; before the
//! source's first good set there are only the static endpoints.
use super::runner::EndpointSet;
use super::{DiscoveredEndpoint, SourceKind};
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use tokio::sync::watch;

/// Where an endpoint of the combined set comes from (`source` of `GET /admin/upstreams` and of
/// `gw_upstream_endpoints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Static,
    Discovered(SourceKind),
    /// Registered through the admin API (`crate::registration`).
    Admin,
}

impl Origin {
    /// `static`, `consul`, `dns`, `file` or `admin`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Origin::Static => "static",
            Origin::Admin => "admin",
            Origin::Discovered(k) => k.as_str(),
        }
    }
}

/// One endpoint of an upstream's combined set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    pub origin: Origin,
}

/// The combined set, sorted by address.
pub fn combine(
    static_endpoints: &[(SocketAddr, u32)],
    discovered: Option<&[DiscoveredEndpoint]>,
    kind: SourceKind,
) -> Vec<Endpoint> {
    let mut by_addr: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
    for e in discovered.unwrap_or_default() {
        by_addr.insert(
            e.addr,
            Endpoint {
                addr: e.addr,
                weight: e.weight,
                origin: Origin::Discovered(kind),
            },
        );
    }
    for &(addr, weight) in static_endpoints {
        by_addr.insert(
            addr,
            Endpoint {
                addr,
                weight: weight.max(1),
                origin: Origin::Static,
            },
        );
    }
    by_addr.into_values().collect()
}

/// A Pingora `ServiceDiscovery` over static endpoints plus a discovery runner's published set
/// ([`super::DiscoveryHandle::subscribe`]). Each backend carries its [`Origin`] in `ext`. `discover`
/// never fails: the runner already keeps the last good set.
pub struct WatchDiscovery {
    static_endpoints: Vec<(SocketAddr, u32)>,
    kind: SourceKind,
    rx: watch::Receiver<Option<EndpointSet>>,
}

impl WatchDiscovery {
    pub fn new(
        static_endpoints: Vec<(SocketAddr, u32)>,
        kind: SourceKind,
        rx: watch::Receiver<Option<EndpointSet>>,
    ) -> Box<Self> {
        Box::new(WatchDiscovery {
            static_endpoints,
            kind,
            rx,
        })
    }

    /// The combined set now.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let cur = self.rx.borrow().clone();
        combine(&self.static_endpoints, cur.as_deref(), self.kind)
    }
}

#[async_trait::async_trait]
impl ServiceDiscovery for WatchDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut set = BTreeSet::new();
        for e in self.endpoints() {
            let mut b = Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(e.addr),
                weight: e.weight as usize,
                ext: Default::default(),
            };
            b.ext.insert(e.origin);
            set.insert(b);
        }
        Ok((set, HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::lb::selection::RoundRobin;
    use pingora::lb::{Backends, LoadBalancer};

    fn ep(a: &str, w: u32) -> DiscoveredEndpoint {
        DiscoveredEndpoint::new(a.parse().unwrap(), w)
    }

    #[test]
    fn static_endpoints_stay_and_win_on_the_same_address() {
        let st = [("10.0.0.1:80".parse().unwrap(), 5)];
        let c = combine(
            &st,
            Some(&[ep("10.0.0.1:80", 2), ep("10.0.0.2:80", 3)]),
            SourceKind::Consul,
        );
        assert_eq!(
            c,
            vec![
                Endpoint {
                    addr: "10.0.0.1:80".parse().unwrap(),
                    weight: 5,
                    origin: Origin::Static
                },
                Endpoint {
                    addr: "10.0.0.2:80".parse().unwrap(),
                    weight: 3,
                    origin: Origin::Discovered(SourceKind::Consul)
                },
            ]
        );
        // before the first good set, and after an empty one: only the static endpoints
        assert_eq!(combine(&st, None, SourceKind::Dns).len(), 1);
        assert_eq!(combine(&st, Some(&[]), SourceKind::Dns).len(), 1);
        assert!(combine(&[], Some(&[]), SourceKind::Dns).is_empty());
    }

    #[tokio::test]
    async fn pingora_load_balancer_follows_the_published_set() {
        let (tx, rx) = watch::channel::<Option<EndpointSet>>(None);
        let st = vec![("127.0.0.1:1".parse().unwrap(), 1)];
        let lb: LoadBalancer<RoundRobin> = LoadBalancer::from_backends(Backends::new(
            WatchDiscovery::new(st, SourceKind::File, rx),
        ));
        lb.update().await.unwrap();
        let picks = |lb: &LoadBalancer<RoundRobin>| {
            (0..8)
                .filter_map(|_| lb.select(b"", 8).map(|b| b.addr.to_string()))
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(picks(&lb), ["127.0.0.1:1".to_string()].into());
        tx.send_replace(Some(vec![ep("127.0.0.2:2", 1)].into()));
        lb.update().await.unwrap();
        assert_eq!(
            picks(&lb),
            ["127.0.0.1:1".to_string(), "127.0.0.2:2".to_string()].into()
        );
        let origins: Vec<Origin> = lb
            .backends()
            .get_backend()
            .iter()
            .filter_map(|b| b.ext.get::<Origin>().copied())
            .collect();
        assert_eq!(
            origins,
            vec![Origin::Static, Origin::Discovered(SourceKind::File)]
        );
    }
}
