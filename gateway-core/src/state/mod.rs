//! Long-lived runtime state, keyed by stable identities, so that a runtime built from a new plan finds
//! the state of the previous one: same identity → the same `Arc` (counters, breaker state, health,
//! connections carry over); changed parameters → fresh state; an identity the new plan no longer has is
//! forgotten by [`Registry::retain_only`] and dropped when the last runtime (and in-flight request)
//! holding it goes. The identity rules are the contract of hot reload; they are documented in
//! `docs/state.md` and below, per kind.
//!
//! The registry is only touched while a runtime is built (start-up, reload): one mutex, never on the
//! request path.
use crate::plan::{BreakerPlan, HealthCheckPlan, LoadBalancing, OutlierSpec, Plan, RateLimitPlan};
use crate::policy::auth::{AuthSettings, Authenticator};
use crate::policy::breaker::{CircuitBreaker, OutlierDetector};
use crate::policy::rate_limit::from_plan::Limits;
use crate::policy::rate_limit::{LocalConfig, LocalCounters, RedisClient, RedisConfig};
use crate::upstream::lb::EndpointStats;
use crate::upstream::Balancer;
use parking_lot::Mutex;
use pingora::lb::prelude::HealthRegistry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

/// Identity of an upstream's endpoint set (balancer, endpoint health, in-flight counts and response-time
/// averages): the upstream's name, its resolved endpoints with weights, the balancing algorithm and the
/// health check.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSetId {
    pub upstream: Arc<str>,
    pub endpoints: Vec<(SocketAddr, u32)>,
    pub load_balancing: LoadBalancing,
    pub health_check: Option<HealthCheckPlan>,
}

/// Identity of a circuit breaker: the upstream's name and every breaker parameter (the fallback is not
/// part of it: it is a routing decision, not breaker state).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerId {
    pub upstream: Arc<str>,
    pub settings: BreakerPlan,
}

impl BreakerId {
    pub fn new(upstream: &Arc<str>, b: &BreakerPlan) -> Self {
        BreakerId {
            upstream: upstream.clone(),
            settings: BreakerPlan {
                fallback: None,
                ..b.clone()
            },
        }
    }
}

/// Identity of an upstream's outlier detector: the endpoint set it indexes and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierId {
    pub endpoints: EndpointSetId,
    pub settings: OutlierSpec,
}

/// Identity of the rate limiter (the table of limits and the Redis fallback counters): every limit's
/// name and counting parameters (window, max, key, scope, store, mode, store-error policy, headers),
/// in plan order, and the Redis server. The local counters of each limit are kept apart, by the
/// limit's name and own parameters ([`Registry::limiter`]): a rebuilt limiter takes over the counters
/// of every unchanged limit.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterId {
    pub limits: Vec<RateLimitPlan>,
    pub redis: Option<RedisConfig>,
}

impl LimiterId {
    pub fn of(plan: &Plan) -> Self {
        LimiterId {
            limits: plan.rate_limits.clone(),
            redis: plan.rate_limit_redis.clone(),
        }
    }
}

/// A slot: the identity the state was built for, and the state.
struct Slot<I, S> {
    id: I,
    state: S,
}

#[derive(Default)]
struct Inner {
    balancers: HashMap<Arc<str>, Slot<EndpointSetId, Arc<Balancer>>>,
    /// Endpoint health of an upstream, by endpoint address; identity: the upstream's health check.
    health: HashMap<Arc<str>, Slot<Option<HealthCheckPlan>, Arc<HealthRegistry>>>,
    /// Per-endpoint counters by (upstream, address): held by the balancers that use them (weak here),
    /// so an endpoint keeps them while some runtime still has it.
    endpoint_stats: HashMap<(Arc<str>, SocketAddr), Weak<EndpointStats>>,
    breakers: HashMap<Arc<str>, Slot<BreakerId, CircuitBreaker>>,
    outliers: HashMap<Arc<str>, Slot<OutlierId, Arc<OutlierDetector>>>,
    /// By the authenticator's full settings (key source, algorithms, claims checks, ...).
    auths: Vec<Slot<AuthSettings, Arc<Authenticator>>>,
    limiter: Option<Slot<LimiterId, Arc<Limits>>>,
    /// Local counters of each limit, by limit name; identity: the limit's counting parameters.
    local_counters: HashMap<Arc<str>, Slot<RateLimitPlan, LocalCounters>>,
    /// By Redis configuration (URL and timeouts).
    redis: Vec<Slot<RedisConfig, RedisClient>>,
}

/// Long-lived state shared by the runtimes built from successive plans. See the module doc.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    /// The running discovery sources, by upstream name + source spec (their last good sets are part
    /// of the upstreams' endpoint sets; see `crate::discovery::registry`).
    pub discovery: crate::discovery::Discoveries,
    /// Endpoints registered through the admin API, by upstream name (see `crate::registration`).
    pub registrations: crate::registration::Registrations,
    /// Static endpoint addresses as resolved for the plan in force (see [`Registry::static_addr`]).
    static_addrs: Mutex<StaticAddrs>,
}

/// The static endpoint addresses resolved for one plan, by (upstream, configured address).
#[derive(Default)]
struct StaticAddrs {
    plan: Weak<Plan>,
    addrs: HashMap<(Arc<str>, String), SocketAddr>,
}

/// Looks `key` up: the state when the identity matches, else builds it with `make` and stores it.
fn by_name<I: PartialEq, S: Clone, E>(
    map: &mut HashMap<Arc<str>, Slot<I, S>>,
    name: &Arc<str>,
    id: I,
    make: impl FnOnce() -> Result<S, E>,
) -> Result<(S, bool), E> {
    if let Some(s) = map.get(name).filter(|s| s.id == id) {
        return Ok((s.state.clone(), false));
    }
    let state = make()?;
    map.insert(
        name.clone(),
        Slot {
            id,
            state: state.clone(),
        },
    );
    Ok((state, true))
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// The socket address of a static endpoint of `upstream` (`address` as configured: an IP or a
    /// host name, with a port). Resolved with `resolve` once per plan: a runtime rebuilt from the
    /// same plan (a discovery update, a registration) reuses the answer, so it neither blocks on
    /// DNS nor fails when DNS is down; a new plan (start-up, reload) resolves again, as nginx does
    /// when it loads its configuration. The lock is not held while `resolve` runs.
    pub fn static_addr<E>(
        &self,
        plan: &Arc<Plan>,
        upstream: &Arc<str>,
        address: &str,
        resolve: impl FnOnce() -> Result<SocketAddr, E>,
    ) -> Result<SocketAddr, E> {
        let key = (upstream.clone(), address.to_owned());
        {
            let mut cache = self.static_addrs.lock();
            if !std::ptr::eq(cache.plan.as_ptr(), Arc::as_ptr(plan))
                || cache.plan.strong_count() == 0
            {
                *cache = StaticAddrs {
                    plan: Arc::downgrade(plan),
                    addrs: HashMap::new(),
                };
            }
            if let Some(a) = cache.addrs.get(&key) {
                return Ok(*a);
            }
        }
        let addr = resolve()?;
        let mut cache = self.static_addrs.lock();
        if std::ptr::eq(cache.plan.as_ptr(), Arc::as_ptr(plan)) {
            cache.addrs.insert(key, addr);
        }
        Ok(addr)
    }

    /// The balancer of an endpoint set when the registry has one with exactly this identity.
    pub fn balancer_if_same(&self, id: &EndpointSetId) -> Option<Arc<Balancer>> {
        self.inner
            .lock()
            .balancers
            .get(&id.upstream)
            .filter(|s| s.id == *id)
            .map(|s| s.state.clone())
    }

    /// The balancer of an endpoint set; `bool`: freshly built.
    pub fn balancer<E>(
        &self,
        id: EndpointSetId,
        make: impl FnOnce() -> Result<Balancer, E>,
    ) -> Result<(Arc<Balancer>, bool), E> {
        let name = id.upstream.clone();
        by_name(&mut self.inner.lock().balancers, &name, id, || {
            make().map(Arc::new)
        })
    }

    /// The endpoint health registry of an upstream (health by endpoint address, shared by every
    /// endpoint set of the upstream while its health check is unchanged); `bool`: freshly built (its
    /// health check is still to be set).
    pub fn endpoint_health(
        &self,
        upstream: &Arc<str>,
        check: &Option<HealthCheckPlan>,
    ) -> (Arc<HealthRegistry>, bool) {
        by_name::<_, _, std::convert::Infallible>(
            &mut self.inner.lock().health,
            upstream,
            check.clone(),
            || Ok(crate::upstream::lb::health_registry()),
        )
        .unwrap_or_else(|e| match e {})
    }

    /// The counters (in flight, response time, failure mark) of endpoint `addr` of `upstream`: the
    /// ones a live balancer of the upstream already has for that address, else fresh ones.
    pub fn endpoint_stats(&self, upstream: &Arc<str>, addr: SocketAddr) -> Arc<EndpointStats> {
        let mut inner = self.inner.lock();
        let key = (upstream.clone(), addr);
        if let Some(s) = inner.endpoint_stats.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(EndpointStats::new(addr));
        inner.endpoint_stats.insert(key, Arc::downgrade(&s));
        s
    }

    /// The breaker of an upstream; `bool`: freshly built.
    pub fn breaker(
        &self,
        id: BreakerId,
        make: impl FnOnce() -> CircuitBreaker,
    ) -> (CircuitBreaker, bool) {
        let name = id.upstream.clone();
        by_name::<_, _, std::convert::Infallible>(
            &mut self.inner.lock().breakers,
            &name,
            id,
            || Ok(make()),
        )
        .unwrap_or_else(|e| match e {})
    }

    /// The outlier detector of an upstream: the registry's when its identity is unchanged, else
    /// `make(previous)`, where `previous` is the upstream's detector for another endpoint set with the
    /// same settings (to carry its endpoints' state over, [`OutlierDetector::successor`]).
    pub fn outlier(
        &self,
        id: OutlierId,
        make: impl FnOnce(Option<(&OutlierId, &OutlierDetector)>) -> OutlierDetector,
    ) -> Arc<OutlierDetector> {
        let name = id.endpoints.upstream.clone();
        let mut inner = self.inner.lock();
        if let Some(s) = inner.outliers.get(&name).filter(|s| s.id == id) {
            return s.state.clone();
        }
        let made = {
            let previous = inner
                .outliers
                .get(&name)
                .filter(|s| s.id.settings == id.settings)
                .map(|s| (&s.id, &*s.state));
            Arc::new(make(previous))
        };
        inner.outliers.insert(
            name,
            Slot {
                id,
                state: made.clone(),
            },
        );
        made
    }

    /// The authenticator for these settings.
    pub fn authenticator<E>(
        &self,
        settings: &AuthSettings,
        make: impl FnOnce() -> Result<Authenticator, E>,
    ) -> Result<Arc<Authenticator>, E> {
        let mut inner = self.inner.lock();
        if let Some(s) = inner.auths.iter().find(|s| s.id == *settings) {
            return Ok(s.state.clone());
        }
        let a = Arc::new(make()?);
        inner.auths.push(Slot {
            id: settings.clone(),
            state: a.clone(),
        });
        Ok(a)
    }

    /// The Redis client for this configuration.
    pub fn redis(&self, config: &RedisConfig) -> Result<RedisClient, String> {
        let mut inner = self.inner.lock();
        if let Some(s) = inner.redis.iter().find(|s| s.id == *config) {
            return Ok(s.state.clone());
        }
        let c = RedisClient::new(config.clone()).map_err(|e| e.to_string())?;
        inner.redis.push(Slot {
            id: config.clone(),
            state: c.clone(),
        });
        Ok(c)
    }

    /// The rate limiter of a plan (`None` without limits).
    pub fn limiter(&self, plan: &Plan) -> Result<Option<Arc<Limits>>, String> {
        if plan.rate_limits.is_empty() {
            return Ok(None);
        }
        let id = LimiterId::of(plan);
        if let Some(s) = self.inner.lock().limiter.as_ref().filter(|s| s.id == id) {
            return Ok(Some(s.state.clone()));
        }
        let redis = match &plan.rate_limit_redis {
            Some(rc) => Some(self.redis(rc)?),
            None => None,
        };
        // every limit keeps its local counters while its own counting parameters are unchanged
        let specs = crate::policy::rate_limit::from_plan::specs(plan);
        let counters: Vec<LocalCounters> = {
            let mut inner = self.inner.lock();
            plan.rate_limits
                .iter()
                .zip(&specs)
                .map(|(p, spec)| {
                    by_name::<_, _, std::convert::Infallible>(
                        &mut inner.local_counters,
                        &p.name,
                        p.clone(),
                        || Ok(LocalCounters::new(spec, &LocalConfig::default())),
                    )
                    .map(|(c, _)| c)
                    .unwrap_or_else(|e| match e {})
                })
                .collect()
        };
        let Some(limits) =
            crate::policy::rate_limit::from_plan::build_with_counters(plan, redis, Some(counters))?
        else {
            return Ok(None);
        };
        let limits = Arc::new(limits);
        self.inner.lock().limiter = Some(Slot {
            id,
            state: limits.clone(),
        });
        Ok(Some(limits))
    }

    /// Forgets every state `plan` does not use (by name and identity). State still held by a running
    /// runtime or an in-flight request lives on until they let go.
    pub fn retain_only(&self, plan: &Plan) {
        self.registrations.retain(plan);
        let mut inner = self.inner.lock();
        let upstream = |name: &Arc<str>| plan.upstreams.iter().find(|u| u.name == *name);
        inner.balancers.retain(|name, s| {
            upstream(name).is_some_and(|u| {
                u.load_balancing == s.id.load_balancing && u.health_check == s.id.health_check
            })
        });
        inner
            .health
            .retain(|name, s| upstream(name).is_some_and(|u| u.health_check == s.id));
        inner
            .endpoint_stats
            .retain(|(name, _), s| s.strong_count() > 0 && upstream(name).is_some());
        inner.breakers.retain(|name, s| {
            upstream(name)
                .and_then(|u| u.breaker.as_ref())
                .is_some_and(|b| BreakerId::new(name, b) == s.id)
        });
        inner.outliers.retain(|name, s| {
            upstream(name)
                .and_then(|u| u.outlier.as_ref())
                .is_some_and(|o| *o == s.id.settings)
        });
        inner
            .auths
            .retain(|s| plan.auths.iter().any(|a| a.settings == s.id));
        if inner
            .limiter
            .as_ref()
            .is_some_and(|s| s.id != LimiterId::of(plan))
        {
            inner.limiter = None;
        }
        inner
            .redis
            .retain(|s| plan.rate_limit_redis.as_ref() == Some(&s.id));
        inner.local_counters.retain(|name, s| {
            plan.rate_limits
                .iter()
                .any(|l| l.name == *name && *l == s.id)
        });
    }

    /// How many states of each kind are held (balancers, breakers, outliers, authenticators,
    /// limiters, Redis clients), for tests and diagnostics.
    pub fn counts(&self) -> [usize; 6] {
        let i = self.inner.lock();
        [
            i.balancers.len(),
            i.breakers.len(),
            i.outliers.len(),
            i.auths.len(),
            usize::from(i.limiter.is_some()),
            i.redis.len(),
        ]
    }
}

#[cfg(test)]
mod tests;
