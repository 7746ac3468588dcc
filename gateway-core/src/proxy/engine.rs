//! [`Engine`]: what every request and every reload shares (the current runtime, the state registry,
//! metrics, the access log, readiness), how a new plan or a discovered endpoint set is swapped in,
//! and the health-check loop.
use super::runtime;
use crate::observability::{AccessLog, Metrics};
use crate::plan::Plan;
use crate::state::Registry;
use arc_swap::ArcSwap;
use runtime::{Runtime, StartError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long start-up waits for the first endpoint sets of the discovery sources before serving (an
/// upstream whose source has not answered yet serves its static endpoints meanwhile).
pub const DISCOVERY_FIRST_SETS: std::time::Duration = std::time::Duration::from_secs(5);

/// Shared by every request and every reload: the current runtime, the state registry it was built
/// from, metrics, the access log, readiness.
pub struct Engine {
    /// The runtime new requests use ([`Engine::runtime`]); swapped by reloads.
    pub current: ArcSwap<Runtime>,
    /// Long-lived state by identity; every runtime of this engine is built from it. Internal (the
    /// discovery tests read it).
    #[doc(hidden)]
    pub registry: Registry,
    /// The Prometheus registry (`metrics.render()` is the text format).
    pub metrics: Metrics,
    /// The access log (call `flush()` before exiting).
    pub access_log: AccessLog,
    /// OTLP span export (`observability.tracing.otlp`), `None` when off.
    pub otlp: Option<crate::observability::otlp::OtlpExport>,
    /// Set once listeners are bound and the first health checks and key fetches are done.
    pub ready: AtomicBool,
    /// Hot reload: one at a time, metrics, TLS certificates ([`Engine::reload`]).
    pub(crate) reloader: crate::reload::Reloader,
}

impl Engine {
    /// The current runtime; a request keeps the one it started with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load_full()
    }
    /// Whether warm-up is done (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Builds a runtime for `plan` from this engine's registry (state with an unchanged identity
    /// carries over), warms it up (first health checks of new endpoint sets, key fetches, Redis), then
    /// swaps it in atomically: requests in flight finish on the runtime they started with, the next
    /// request uses the new one. State the new plan no longer uses is forgotten by the registry and
    /// dropped when the old runtime's last request ends. On `Err` nothing changed. Listeners, the
    /// admin listener and the access log are not rebuilt (they stay as started).
    pub async fn swap(&self, plan: Plan) -> Result<(), StartError> {
        let plan = Arc::new(plan);
        // new or changed sources start now; the runtime is built with their first sets when they come
        // within the start-up bound (else they arrive through `discovery_loop`), unchanged ones keep theirs
        let started = self.registry.discovery.sync(&plan, &self.metrics);
        if !started.is_empty() {
            self.registry
                .discovery
                .first_sets(Some(&started), DISCOVERY_FIRST_SETS)
                .await;
        }
        let rt = Runtime::build(plan.clone(), &self.metrics, &self.registry)?;
        rt.warm_up().await;
        self.current.store(Arc::new(rt));
        self.registry.retain_only(&plan);
        self.runtime().prune_series(&self.metrics);
        Ok(())
    }

    /// Starts the plan's discovery sources, waits for their first sets (at most `limit`) and rebuilds
    /// the runtime with them. Call inside the Tokio runtime that will serve, before warm-up.
    pub async fn start_discovery(&self, limit: Duration) {
        let plan = self.runtime().plan.clone();
        self.registry.discovery.sync(&plan, &self.metrics);
        if self.registry.discovery.is_empty() {
            return;
        }
        if !self.registry.discovery.first_sets(None, limit).await {
            tracing::warn!("some discovery sources have no endpoints yet; their upstreams use their static endpoints until they do");
        }
        self.rebuild_for_discovery().await;
    }

    /// Rebuilds the runtime whenever a discovery source publishes a different set, until `shutdown`:
    /// same plan, the upstream's new endpoint set (a fresh balancer, first health-checked), everything
    /// else carried over by the registry. Requests in flight finish on the runtime they started with,
    /// so a removed endpoint gets no new request and its in-flight requests complete.
    pub async fn discovery_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.registry.discovery.changed() => {}
                _ = shutdown.changed() => break,
            }
            self.rebuild_for_discovery().await;
        }
    }

    async fn rebuild_for_discovery(&self) {
        // not while a reload builds from the registry (see `Reloader::exclusive`)
        let _one = self.reloader.exclusive().await;
        let old = self.runtime();
        let rt = match Runtime::build(old.plan.clone(), &self.metrics, &self.registry) {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot apply discovered endpoints; keeping the current ones");
                return;
            }
        };
        rt.check_discovered().await;
        // a reload that swapped meanwhile built its runtime with the current sets already: keep it
        let prev = self.current.compare_and_swap(&old, Arc::new(rt));
        if !Arc::ptr_eq(&prev, &old) {
            tracing::debug!("discovered endpoints: a reload swapped the runtime first");
        }
        self.runtime().prune_endpoint_series(&self.metrics);
    }

    /// Runs active health checks until `shutdown`, at each upstream's interval, always over the
    /// current runtime's upstreams (so it follows [`Engine::swap`]). A check that is still running when
    /// it is due again is not started twice. On shutdown it also flushes the OTLP span export (at most
    /// 2 s), so spans still batched are sent before the process ends.
    pub async fn health_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        use std::collections::HashMap;
        // by balancer (shared across runtimes while its identity is unchanged)
        let mut due: HashMap<usize, (Instant, Option<tokio::task::JoinHandle<()>>)> =
            HashMap::new();
        loop {
            let rt = self.runtime();
            let now = Instant::now();
            let mut next = now + Duration::from_secs(1);
            let mut live = Vec::new();
            for (u, plan) in rt.upstreams.iter().zip(&rt.plan.upstreams) {
                let Some(hc) = &plan.health_check else {
                    continue;
                };
                let key = Arc::as_ptr(&u.balancer) as usize;
                live.push(key);
                // the first check of a set runs in warm-up; the loop starts one interval later
                let (at, task) = due.entry(key).or_insert((now + hc.interval, None));
                let running = task.as_ref().is_some_and(|t| !t.is_finished());
                if *at <= now && !running {
                    let b = u.balancer.clone();
                    *task = Some(tokio::spawn(async move { b.run_health_check().await }));
                    *at = now + hc.interval;
                }
                next = next.min((*at).max(now + Duration::from_millis(10)));
            }
            due.retain(|k, (_, t)| {
                let keep = live.contains(k);
                if let (false, Some(t)) = (keep, t) {
                    t.abort();
                }
                keep
            });
            drop(rt);
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = shutdown.changed() => break,
            }
        }
        for (_, (_, t)) in due {
            if let Some(t) = t {
                t.abort();
            }
        }
        // graceful shutdown: spans still batched go out now (bounded), not lost with the process
        if self.otlp.is_some() {
            let engine = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(x) = &engine.otlp {
                    x.flush(Duration::from_secs(2));
                }
            })
            .await;
        }
    }
}
