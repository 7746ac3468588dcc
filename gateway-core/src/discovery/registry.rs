//! The running discovery sources of an engine, by upstream name: started and stopped to follow the
//! plan ([`Discoveries::sync`]), read when a runtime is built ([`Discoveries::current`]), and a wake-up
//! for the engine when any published set changes ([`Discoveries::changed`]).
//!
//! Identity: upstream name + [`SourceSpec`]. A reload with the same spec keeps the running source and
//! its last good set; a changed spec starts a fresh source (the old one stops); an upstream that is gone
//! or no longer has discovery stops its source.
use super::runner::{DiscoveryHandle, EndpointSet};
use super::{build, spawn, SourceKind, SourceSpec};
use crate::observability::Metrics;
use crate::plan::Plan;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

struct Running {
    spec: SourceSpec,
    handle: DiscoveryHandle,
    forward: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// See the module docs.
#[derive(Default)]
pub struct Discoveries {
    running: Mutex<HashMap<Arc<str>, Running>>,
    changed: Arc<Notify>,
}

impl Discoveries {
    /// Makes the running sources those of `plan`. Must be called inside a Tokio runtime. A source that
    /// cannot be set up (e.g. its CA file became unreadable since validation) is logged and skipped:
    /// the upstream keeps its static endpoints.
    /// Returns the upstreams whose source was started by this call.
    pub fn sync(&self, plan: &Plan, metrics: &Metrics) -> Vec<Arc<str>> {
        let mut started = Vec::new();
        let mut running = self.running.lock();
        running.retain(|name, r| {
            plan.upstreams
                .iter()
                .any(|u| u.name == *name && u.discovery.as_ref() == Some(&r.spec))
        });
        for u in &plan.upstreams {
            let Some(spec) = &u.discovery else { continue };
            if running.contains_key(&u.name) {
                continue;
            }
            let source = match build(spec) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(upstream = %u.name, error = %e, "discovery source not started; only the static endpoints are used");
                    continue;
                }
            };
            let kind = spec.kind().as_str();
            let handle = spawn(&u.name, source, Some(metrics.discovery(&u.name, kind)));
            let mut rx = handle.subscribe();
            let notify = self.changed.clone();
            let forward = tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    notify.notify_one();
                }
            });
            started.push(u.name.clone());
            running.insert(
                u.name.clone(),
                Running {
                    spec: spec.clone(),
                    handle,
                    forward,
                },
            );
        }
        started
    }

    /// The last good set of `upstream`'s source (`None`: no source, or no good set yet).
    pub fn current(&self, upstream: &str) -> Option<EndpointSet> {
        self.running.lock().get(upstream)?.handle.current()
    }

    /// The kind of `upstream`'s running source.
    pub fn kind(&self, upstream: &str) -> Option<SourceKind> {
        self.running.lock().get(upstream).map(|r| r.spec.kind())
    }

    /// Number of running sources.
    pub fn len(&self) -> usize {
        self.running.lock().len()
    }

    /// Whether no source runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when some source published a different set since the last call (a change that happened
    /// before the call is not lost).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Waits until the sources of `upstreams` (every running source when `None`) have published a first
    /// set, at most `limit`. Returns whether they all did.
    pub async fn first_sets(&self, upstreams: Option<&[Arc<str>]>, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let all = self
                .running
                .lock()
                .iter()
                .filter(|(name, _)| upstreams.is_none_or(|u| u.contains(name)))
                .all(|(_, r)| r.handle.current().is_some());
            if all {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
