//! Load balancing over an upstream's endpoints, built on `pingora-load-balancing`.
//!
//! Round robin, random and consistent hashing (Ketama) are Pingora's selectors, weighted by each
//! endpoint's weight. Least-connections and fastest (lowest moving average of response time) are built on
//! top: Pingora keeps the endpoint set and its health, we keep per-endpoint counters and pick the minimum.
//! Every pick skips endpoints that are unhealthy, ejected as outliers, or already tried by this request;
//! when nothing is left the caller answers 503 — a pick never panics.
use crate::config::LoadBalancingConfig;
use pingora::lb::selection::{Consistent, Random, RoundRobin};
use pingora::lb::{discovery, Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Index of an endpoint within its upstream, carried in the Pingora backend's extensions.
#[derive(Clone, Copy, Debug)]
struct EndpointIdx(usize);

/// Live counters of one endpoint.
#[derive(Debug)]
pub struct EndpointStats {
    pub addr: SocketAddr,
    pub label: Arc<str>,
    /// Requests currently in flight to this endpoint.
    pub active: AtomicU32,
    /// Exponentially weighted moving average of response time, in microseconds (0 = no sample yet).
    pub ewma_us: AtomicU64,
}

impl EndpointStats {
    /// Folds one response time into the moving average (alpha = 0.3: recent samples dominate quickly).
    pub fn observe(&self, d: Duration) {
        let sample = d.as_micros().min(u64::MAX as u128) as u64;
        let _ = self.ewma_us.fetch_update(Relaxed, Relaxed, |old| {
            Some(
                if old == 0 {
                    sample.max(1)
                } else {
                    (old * 7 + sample * 3) / 10
                }
                .max(1),
            )
        });
    }
}

enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
    /// Pingora keeps the set and health; the pick is ours.
    LeastConnections(LoadBalancer<RoundRobin>),
    Fastest(LoadBalancer<RoundRobin>),
}

/// One upstream's balancer.
pub struct Balancer {
    selector: Selector,
    backends: Vec<Backend>,
    pub endpoints: Vec<EndpointStats>,
    rr: AtomicUsize,
}

/// The endpoint chosen for one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    pub addr: SocketAddr,
}

fn lb_from<S>(set: BTreeSet<Backend>) -> LoadBalancer<S>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let lb = LoadBalancer::from_backends(Backends::new(discovery::Static::new(set)));
    // Static discovery never blocks; run it once so the selector has the set.
    let _ = futures_now(lb.update());
    lb
}

/// Polls a future that is known to complete without waiting (static discovery).
fn futures_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

impl Balancer {
    /// Builds a balancer over resolved endpoints `(address, weight)`.
    pub fn new(kind: &LoadBalancingConfig, endpoints: &[(SocketAddr, u32)]) -> Balancer {
        let mut set = BTreeSet::new();
        let mut backends = Vec::new();
        let mut stats = Vec::new();
        for (i, (addr, weight)) in endpoints.iter().enumerate() {
            let mut b = Backend::new_with_weight(&addr.to_string(), (*weight).max(1) as usize)
                .unwrap_or_else(|_| Backend {
                    addr: pingora::protocols::l4::socket::SocketAddr::Inet(*addr),
                    weight: 1,
                    ext: Default::default(),
                });
            b.ext.insert(EndpointIdx(i));
            set.insert(b.clone());
            backends.push(b);
            stats.push(EndpointStats {
                addr: *addr,
                label: Arc::from(addr.to_string()),
                active: AtomicU32::new(0),
                ewma_us: AtomicU64::new(0),
            });
        }
        let selector = match kind {
            LoadBalancingConfig::RoundRobin {} => Selector::RoundRobin(lb_from(set)),
            LoadBalancingConfig::Random {} => Selector::Random(lb_from(set)),
            LoadBalancingConfig::ConsistentHash { .. } => Selector::Consistent(lb_from(set)),
            LoadBalancingConfig::LeastConnections {} => Selector::LeastConnections(lb_from(set)),
            LoadBalancingConfig::Fastest {} => Selector::Fastest(lb_from(set)),
        };
        Balancer {
            selector,
            backends,
            endpoints: stats,
            rr: AtomicUsize::new(0),
        }
    }

    fn backends_view(&self) -> &Backends {
        match &self.selector {
            Selector::RoundRobin(lb) | Selector::LeastConnections(lb) | Selector::Fastest(lb) => {
                lb.backends()
            }
            Selector::Random(lb) => lb.backends(),
            Selector::Consistent(lb) => lb.backends(),
        }
    }

    /// Whether the active health check currently considers endpoint `i` healthy.
    pub fn healthy(&self, i: usize) -> bool {
        self.backends
            .get(i)
            .is_some_and(|b| self.backends_view().ready(b))
    }

    /// Runs one round of active health checks (all endpoints in parallel).
    pub async fn run_health_check(&self) {
        self.backends_view().run_health_check(true).await
    }

    pub fn set_health_check(
        &mut self,
        hc: Box<dyn pingora::lb::health_check::HealthCheck + Send + Sync + 'static>,
    ) {
        match &mut self.selector {
            Selector::RoundRobin(lb) | Selector::LeastConnections(lb) | Selector::Fastest(lb) => {
                lb.set_health_check(hc)
            }
            Selector::Random(lb) => lb.set_health_check(hc),
            Selector::Consistent(lb) => lb.set_health_check(hc),
        }
    }

    /// Picks an endpoint. `key` feeds consistent hashing; `accept(i)` vetoes endpoints (already tried,
    /// ejected); unhealthy endpoints are never picked.
    pub fn pick(&self, key: &[u8], accept: impl Fn(usize) -> bool) -> Option<Pick> {
        let idx = |b: &Backend| b.ext.get::<EndpointIdx>().map(|i| i.0);
        let ok = |b: &Backend, healthy: bool| healthy && idx(b).is_some_and(&accept);
        let max = self.backends.len().max(1) * 4 + 16;
        let chosen = match &self.selector {
            Selector::RoundRobin(lb) => lb.select_with(key, max, ok).and_then(|b| idx(&b)),
            Selector::Random(lb) => lb.select_with(key, max, ok).and_then(|b| idx(&b)),
            Selector::Consistent(lb) => lb.select_with(key, max, ok).and_then(|b| idx(&b)),
            Selector::LeastConnections(_) => {
                self.pick_min(&accept, |s| s.active.load(Relaxed) as u64)
            }
            Selector::Fastest(_) => self.pick_min(&accept, |s| s.ewma_us.load(Relaxed)),
        }?;
        Some(Pick {
            index: chosen,
            addr: self.endpoints[chosen].addr,
        })
    }

    /// The acceptable healthy endpoint with the smallest score; ties rotate so equal endpoints share load.
    fn pick_min(
        &self,
        accept: &impl Fn(usize) -> bool,
        score: impl Fn(&EndpointStats) -> u64,
    ) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.rr.fetch_add(1, Relaxed) % n;
        let mut best: Option<(u64, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !accept(i) || !self.healthy(i) {
                continue;
            }
            let s = score(&self.endpoints[i]);
            if best.is_none_or(|(b, _)| s < b) {
                best = Some((s, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<(SocketAddr, u32)> {
        (0..n)
            .map(|i| (SocketAddr::from(([127, 0, 0, 1], 10_000 + i)), 1))
            .collect()
    }

    #[test]
    fn round_robin_alternates_and_respects_accept() {
        let b = Balancer::new(&LoadBalancingConfig::RoundRobin {}, &addrs(2));
        let picks: Vec<usize> = (0..4)
            .map(|_| b.pick(b"", |_| true).unwrap().index)
            .collect();
        assert_eq!(picks[0], picks[2]);
        assert_ne!(picks[0], picks[1]);
        assert_eq!(b.pick(b"", |i| i == 1).unwrap().index, 1);
        assert_eq!(b.pick(b"", |_| false), None);
    }

    #[test]
    fn least_connections_prefers_idle() {
        let b = Balancer::new(&LoadBalancingConfig::LeastConnections {}, &addrs(3));
        b.endpoints[0].active.store(5, Relaxed);
        b.endpoints[2].active.store(2, Relaxed);
        for _ in 0..5 {
            assert_eq!(b.pick(b"", |_| true).unwrap().index, 1);
        }
    }

    #[test]
    fn fastest_prefers_quick() {
        let b = Balancer::new(&LoadBalancingConfig::Fastest {}, &addrs(2));
        b.endpoints[0].observe(Duration::from_millis(50));
        b.endpoints[1].observe(Duration::from_millis(5));
        for _ in 0..5 {
            assert_eq!(b.pick(b"", |_| true).unwrap().index, 1);
        }
    }

    #[test]
    fn consistent_hash_is_sticky() {
        let b = Balancer::new(
            &LoadBalancingConfig::ConsistentHash {
                key: crate::config::HashKeyConfig::Path {},
            },
            &addrs(4),
        );
        let first = b.pick(b"user-42", |_| true).unwrap();
        for _ in 0..10 {
            assert_eq!(b.pick(b"user-42", |_| true).unwrap(), first);
        }
    }

    #[test]
    fn weights_are_respected() {
        let mut a = addrs(2);
        a[0].1 = 3;
        let b = Balancer::new(&LoadBalancingConfig::RoundRobin {}, &a);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[b.pick(b"", |_| true).unwrap().index] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }
}
