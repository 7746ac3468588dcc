//! Load balancing over an upstream's endpoints, built on `pingora-load-balancing`.
//!
//! Round robin, random and consistent hashing (Ketama) are Pingora's selectors, weighted by each
//! endpoint's weight. Least-connections and fastest (lowest peak-EWMA response time, see
//! [`super::ewma`]) are built on top: Pingora keeps the endpoint set and its health, we keep per-endpoint
//! counters and pick the minimum. The staged pick of one attempt (tried / ejected / recently failed) is
//! [`Balancer::pick_attempt`] in [`super::pick`]; when nothing is left the caller answers 503 — a pick
//! never panics.
use super::ewma::PeakEwma;
use super::pick::FailMark;
use crate::plan::LoadBalancing;
use pingora::lb::prelude::HealthRegistry;
use pingora::lb::selection::{Consistent, Random, RoundRobin};
use pingora::lb::{discovery, Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Peak-EWMA estimate of response time (the `fastest` balancer's measure).
    pub ewma: PeakEwma,
    /// Recent connect failure (skipped by first attempts for a short hold).
    pub failed: FailMark,
}

impl EndpointStats {
    /// Fresh counters for the endpoint at `addr`.
    pub fn new(addr: SocketAddr) -> EndpointStats {
        EndpointStats {
            addr,
            label: Arc::from(addr.to_string()),
            active: AtomicU32::new(0),
            ewma: PeakEwma::default(),
            failed: FailMark::default(),
        }
    }

    /// Records a successful attempt that took `d` (now): feeds the response-time estimate and clears a
    /// recent-failure mark.
    pub fn observe(&self, d: Duration) {
        self.observe_at(d, Instant::now())
    }

    /// [`EndpointStats::observe`] at a given instant.
    pub fn observe_at(&self, d: Duration, now: Instant) {
        self.ewma.observe(d, now);
        self.failed.clear();
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
    /// Per-endpoint counters; shared with the balancers of later endpoint sets of the same upstream
    /// that keep the endpoint (see [`Balancer::with_state`]).
    pub endpoints: Vec<Arc<EndpointStats>>,
    /// Start of the score scan (least-connections, fastest), so ties rotate.
    rr: AtomicUsize,
    /// Rotation over the remaining candidates when the selector's step lands on a filtered-out endpoint.
    spill: AtomicUsize,
}

/// The endpoint chosen for one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    pub addr: SocketAddr,
}

fn lb_from<S>(set: BTreeSet<Backend>, health: &Arc<HealthRegistry>) -> LoadBalancer<S>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let lb = LoadBalancer::from_backends(Backends::new_with_health_registry(
        discovery::Static::new(set),
        health.clone(),
    ));
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

/// A health registry whose endpoints are identified by address alone: balancers built over it share
/// each endpoint's health (and its consecutive-check counters) by address, whatever its weight or
/// position. Pingora's `HealthRegistry` checks the union of the endpoints of every live balancer over
/// it, once per endpoint.
pub fn health_registry() -> Arc<HealthRegistry> {
    Arc::new(HealthRegistry::with_equivalence(|b: &Backend| {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        b.addr.hash(&mut h);
        h.finish()
    }))
}

impl Balancer {
    /// Builds a balancer over resolved endpoints `(address, weight)` with fresh state (its own health
    /// registry, fresh counters).
    pub fn new(kind: &LoadBalancing, endpoints: &[(SocketAddr, u32)]) -> Balancer {
        Balancer::with_state(kind, endpoints, &health_registry(), &|a| {
            Arc::new(EndpointStats::new(a))
        })
    }

    /// Builds a balancer over resolved endpoints `(address, weight)` whose per-endpoint state comes from
    /// outside: endpoint health from `health` (shared by address with every balancer over the same
    /// registry; its health check is set on the registry), counters (in flight, response time, failure
    /// mark) from `stats`. A reload that changes an upstream's endpoint set passes the previous set's
    /// registry and counters, so the endpoints that remain keep them.
    pub fn with_state(
        kind: &LoadBalancing,
        endpoints: &[(SocketAddr, u32)],
        health: &Arc<HealthRegistry>,
        stats: &dyn Fn(SocketAddr) -> Arc<EndpointStats>,
    ) -> Balancer {
        let mut set = BTreeSet::new();
        let mut backends = Vec::new();
        let mut per_endpoint = Vec::new();
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
            per_endpoint.push(stats(*addr));
        }
        let selector = match kind {
            LoadBalancing::RoundRobin => Selector::RoundRobin(lb_from(set, health)),
            LoadBalancing::Random => Selector::Random(lb_from(set, health)),
            LoadBalancing::ConsistentHash(_) => Selector::Consistent(lb_from(set, health)),
            LoadBalancing::LeastConnections => Selector::LeastConnections(lb_from(set, health)),
            LoadBalancing::Fastest => Selector::Fastest(lb_from(set, health)),
        };
        Balancer {
            selector,
            backends,
            endpoints: per_endpoint,
            rr: AtomicUsize::new(0),
            spill: AtomicUsize::new(0),
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

    /// Picks an endpoint in one stage: `accept(i)` vetoes endpoints; unhealthy endpoints are never
    /// picked. Requests should use [`Balancer::pick_attempt`], which stages the filters and keeps the
    /// rotation even.
    pub fn pick(&self, key: &[u8], accept: impl Fn(usize) -> bool) -> Option<Pick> {
        let i = self.select(key, &accept, true, Instant::now())?;
        Some(Pick {
            index: i,
            addr: self.endpoints[i].addr,
        })
    }

    /// One selection among the healthy endpoints that `ok` accepts. `first`: the request's first attempt,
    /// which takes one step of the selector's own rotation; otherwise (retries) and when that step lands
    /// on a rejected endpoint, the spill rotation spreads picks by weight over the accepted ones.
    pub(super) fn select(
        &self,
        key: &[u8],
        ok: &dyn Fn(usize) -> bool,
        first: bool,
        now: Instant,
    ) -> Option<usize> {
        let idx = |b: &Backend| b.ext.get::<EndpointIdx>().map(|i| i.0);
        let good = |i: usize| i < self.endpoints.len() && ok(i) && self.healthy(i);
        let max = self.backends.len().max(1) * 4 + 16;
        match &self.selector {
            Selector::RoundRobin(lb) => {
                // exactly one step of Pingora's counter per first attempt, whatever is filtered
                let natural = if first {
                    lb.select_with(key, 1, |_, _| true)
                        .and_then(|b| idx(&b))
                        .filter(|&i| good(i))
                } else {
                    None
                };
                natural.or_else(|| self.spill(&good))
            }
            // random and ring walks keep no shared position: filtering inside them is fair
            Selector::Random(lb) => lb
                .select_with(key, max, |b, h| h && idx(b).is_some_and(good))
                .and_then(|b| idx(&b))
                .or_else(|| self.spill(&good)),
            Selector::Consistent(lb) => lb
                .select_with(key, max, |b, h| h && idx(b).is_some_and(good))
                .and_then(|b| idx(&b))
                .or_else(|| self.spill(&good)),
            Selector::LeastConnections(_) => {
                self.pick_min(&good, |s| f64::from(s.active.load(Relaxed)))
            }
            Selector::Fastest(_) => self.pick_min(&good, |s| {
                s.ewma.cost_ns(now) * f64::from(s.active.load(Relaxed).saturating_add(1))
            }),
        }
    }

    /// Weighted rotation over the endpoints `good` accepts.
    fn spill(&self, good: &dyn Fn(usize) -> bool) -> Option<usize> {
        let weight = |i: usize| self.backends[i].weight.max(1) as u64;
        let total: u64 = (0..self.endpoints.len())
            .filter(|&i| good(i))
            .map(weight)
            .sum();
        if total == 0 {
            return None;
        }
        let mut t = self.spill.fetch_add(1, Relaxed) as u64 % total;
        for i in (0..self.endpoints.len()).filter(|&i| good(i)) {
            if t < weight(i) {
                return Some(i);
            }
            t -= weight(i);
        }
        None
    }

    /// The accepted endpoint with the smallest score; ties rotate so equal endpoints share load.
    fn pick_min(
        &self,
        good: &dyn Fn(usize) -> bool,
        score: impl Fn(&EndpointStats) -> f64,
    ) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.rr.fetch_add(1, Relaxed) % n;
        let mut best: Option<(f64, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !good(i) {
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
        let b = Balancer::new(&LoadBalancing::RoundRobin, &addrs(2));
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
        let b = Balancer::new(&LoadBalancing::LeastConnections, &addrs(3));
        b.endpoints[0].active.store(5, Relaxed);
        b.endpoints[2].active.store(2, Relaxed);
        for _ in 0..5 {
            assert_eq!(b.pick(b"", |_| true).unwrap().index, 1);
        }
    }

    #[test]
    fn fastest_prefers_quick() {
        let b = Balancer::new(&LoadBalancing::Fastest, &addrs(2));
        b.endpoints[0].observe(Duration::from_millis(50));
        b.endpoints[1].observe(Duration::from_millis(5));
        for _ in 0..5 {
            assert_eq!(b.pick(b"", |_| true).unwrap().index, 1);
        }
    }

    /// Sequential requests on a simulated clock: each takes the picked endpoint's latency.
    fn simulate(b: &Balancer, lat: [Duration; 2], n: usize, now: &mut Instant) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let i = b.pick_attempt(b"", &[], |_| false, *now).unwrap().index;
                *now += lat[i];
                b.endpoints[i].observe_at(lat[i], *now);
                i
            })
            .collect()
    }

    #[test]
    fn fastest_follows_a_swap_at_once() {
        let b = Balancer::new(&LoadBalancing::Fastest, &addrs(2));
        let (slow, fast) = (Duration::from_millis(50), Duration::from_millis(2));
        let mut now = Instant::now();
        let before = simulate(&b, [slow, fast], 40, &mut now);
        assert!(
            before.iter().filter(|&&i| i == 1).count() >= 38,
            "{before:?}"
        );
        let after = simulate(&b, [fast, slow], 120, &mut now);
        // one request finds B slow, every later one goes to A
        assert_eq!(after.iter().filter(|&&i| i == 0).count(), 119, "{after:?}");
        assert!(after[1..].iter().all(|&i| i == 0), "{after:?}");
    }

    #[test]
    fn fastest_remeasures_a_stale_endpoint_after_decay() {
        let b = Balancer::new(&LoadBalancing::Fastest, &addrs(2));
        let (slow, fast) = (Duration::from_millis(50), Duration::from_millis(2));
        let mut now = Instant::now();
        simulate(&b, [slow, fast], 10, &mut now);
        // A got fast while unpicked; B stays at 2 ms. A is re-measured after DECAY · ln(50 / 2) ≈ 16 s
        let start = now;
        let a_fast = Duration::from_micros(500);
        let mut first_a = None;
        while now < start + Duration::from_secs(30) {
            if simulate(&b, [a_fast, fast], 1, &mut now)[0] == 0 {
                first_a = Some(now - start);
                break;
            }
        }
        let t = first_a.expect("re-measured");
        let expected = super::super::ewma::DECAY.mul_f64(25f64.ln());
        assert!(
            t > expected - Duration::from_millis(500) && t < expected + Duration::from_millis(500),
            "{t:?} vs {expected:?}"
        );
        // and then keeps it, being faster now
        let next = simulate(&b, [a_fast, fast], 50, &mut now);
        assert!(next.iter().filter(|&&i| i == 0).count() >= 45, "{next:?}");
    }

    #[test]
    fn consistent_hash_is_sticky() {
        let b = Balancer::new(
            &LoadBalancing::ConsistentHash(crate::plan::HashKey::Path),
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
        let b = Balancer::new(&LoadBalancing::RoundRobin, &a);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[b.pick(b"", |_| true).unwrap().index] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }
}
