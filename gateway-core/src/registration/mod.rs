//! Endpoints registered at run time through the admin API (`POST`/`DELETE
//! /admin/upstreams/<name>/endpoints`): one more endpoint source per upstream, `admin`.
//!
//! The registrations live in the engine's state registry ([`Registrations`], `Registry::registrations`),
//! not in a runtime, so they survive every runtime swap: discovery updates and hot reloads rebuild the
//! upstream's endpoint set with them. A reload that removes an upstream drops its registrations
//! ([`Registrations::retain`]). With `admin.state_file` they are written atomically on each change
//! ([`store`]) and re-applied at start ([`load_at_start`]).
//!
//! Combination (`docs/discovery.md`): static endpoints win on the same address, then registrations,
//! then the discovery source's set.
pub mod api;
pub mod store;

use crate::discovery::backends::{Endpoint, Origin};
use crate::discovery::DiscoveredEndpoint;
use crate::plan::Plan;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Registered endpoints by upstream name (address → weight), and where they persist.
#[derive(Default)]
pub struct Registrations {
    inner: Mutex<Inner>,
    /// Serialises the runtime rebuilds of the admin API (each one must see every earlier change).
    pub(crate) apply: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Inner {
    by_upstream: BTreeMap<String, BTreeMap<SocketAddr, u32>>,
    state_file: Option<PathBuf>,
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    /// The address is already registered (409).
    Exists,
    /// The address is not registered (404).
    Missing,
    /// The state file could not be written; the change was undone (500).
    Persist(String),
}

impl Registrations {
    /// The registered endpoints of `upstream`, sorted by address.
    pub fn get(&self, upstream: &str) -> Vec<DiscoveredEndpoint> {
        self.inner
            .lock()
            .by_upstream
            .get(upstream)
            .map(|m| {
                m.iter()
                    .map(|(a, w)| DiscoveredEndpoint::new(*a, *w))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `upstream` ever had a registration since start (its `source="admin"` gauge exists).
    pub fn knows(&self, upstream: &str) -> bool {
        self.inner.lock().by_upstream.contains_key(upstream)
    }

    /// Registers `addr` with `weight` under `upstream` and persists.
    pub fn insert(&self, upstream: &str, addr: SocketAddr, weight: u32) -> Result<(), ChangeError> {
        let mut inner = self.inner.lock();
        let set = inner.by_upstream.entry(upstream.to_string()).or_default();
        if set.contains_key(&addr) {
            return Err(ChangeError::Exists);
        }
        set.insert(addr, weight);
        if let Err(e) = inner.persist() {
            if let Some(s) = inner.by_upstream.get_mut(upstream) {
                s.remove(&addr);
            }
            return Err(ChangeError::Persist(e));
        }
        Ok(())
    }

    /// Removes `addr` from `upstream` and persists.
    pub fn remove(&self, upstream: &str, addr: SocketAddr) -> Result<u32, ChangeError> {
        let mut inner = self.inner.lock();
        let Some(weight) = inner
            .by_upstream
            .get_mut(upstream)
            .and_then(|s| s.remove(&addr))
        else {
            return Err(ChangeError::Missing);
        };
        if let Err(e) = inner.persist() {
            inner
                .by_upstream
                .entry(upstream.to_string())
                .or_default()
                .insert(addr, weight);
            return Err(ChangeError::Persist(e));
        }
        Ok(weight)
    }

    /// Drops the registrations of upstreams `plan` no longer has (and persists when that changed
    /// anything; a write failure is logged).
    pub fn retain(&self, plan: &Plan) {
        let mut inner = self.inner.lock();
        let before = inner.by_upstream.len();
        inner.by_upstream.retain(|name, set| {
            let keep = plan.upstreams.iter().any(|u| &*u.name == name);
            if !keep && !set.is_empty() {
                tracing::warn!(upstream = %name, endpoints = set.len(), "the upstream is gone: its registered endpoints are dropped");
            }
            keep
        });
        if inner.by_upstream.len() != before {
            if let Err(e) = inner.persist() {
                tracing::error!(error = %e, "cannot write admin.state_file");
            }
        }
    }

    /// Every registration, for the state file: `(upstream, address, weight)`.
    fn entries(inner: &Inner) -> Vec<store::Entry> {
        inner
            .by_upstream
            .iter()
            .flat_map(|(u, set)| {
                set.iter().map(|(a, w)| store::Entry {
                    upstream: u.clone(),
                    address: a.to_string(),
                    weight: *w,
                })
            })
            .collect()
    }
}

impl Inner {
    fn persist(&self) -> Result<(), String> {
        match &self.state_file {
            Some(p) => store::write(p, &Registrations::entries(self))
                .map_err(|e| format!("cannot write {}: {e}", p.display())),
            None => Ok(()),
        }
    }
}

/// At start: remembers `plan`'s `admin.state_file` and loads its registrations (those of upstreams
/// the plan does not have are dropped with a warning). A missing file is an empty one; an unreadable
/// or invalid file is an `Err` and the gateway refuses to start (starting without it would overwrite
/// the operator's registrations with the next change).
pub fn load_at_start(regs: &Registrations, plan: &Plan) -> Result<(), String> {
    let Some(path) = plan.admin.as_ref().and_then(|a| a.state_file.clone()) else {
        return Ok(());
    };
    let entries = store::read(&path)?;
    let mut inner = regs.inner.lock();
    for e in entries {
        if !plan.upstreams.iter().any(|u| *u.name == *e.upstream) {
            tracing::warn!(upstream = %e.upstream, address = %e.address, "state file: no such upstream; registration dropped");
            continue;
        }
        // `read` checked every address and weight
        if let Ok(addr) = e.address.parse() {
            inner
                .by_upstream
                .entry(e.upstream)
                .or_default()
                .insert(addr, e.weight);
        }
    }
    inner.state_file = Some(path);
    Ok(())
}

/// Adds the registered endpoints to an upstream's combined set: an address already there as a static
/// endpoint stays static; one found by discovery becomes the registered one (its weight). Sorted by
/// address.
pub fn with_registered(mut set: Vec<Endpoint>, registered: &[DiscoveredEndpoint]) -> Vec<Endpoint> {
    for r in registered {
        match set.iter_mut().find(|e| e.addr == r.addr) {
            Some(e) if e.origin == Origin::Static => {}
            Some(e) => {
                e.weight = r.weight;
                e.origin = Origin::Admin;
            }
            None => set.push(Endpoint {
                addr: r.addr,
                weight: r.weight,
                origin: Origin::Admin,
            }),
        }
    }
    set.sort_by_key(|e| e.addr);
    set
}

#[cfg(test)]
mod tests;
