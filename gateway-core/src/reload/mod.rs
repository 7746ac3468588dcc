//! Hot reload: a new plan replaces the running one without a restart and without failing a request.
//!
//! Every trigger ends in [`Engine::reload`] (a plan) or [`Engine::reload_file`] (read → compile with
//! the compiler of `gw validate` → reload): `POST /admin/reload` ([`crate::proxy::admin`]), `SIGHUP`
//! to `gw serve` ([`signal`], installed by `proxy::signals::handle_sighup`), `server.reload.watch` (`watch`) and embedders. A reload:
//!
//! 1. waits for any other reload to finish (one at a time; the lock is never taken on the request
//!    path);
//! 2. refuses a plan that changes what was fixed at start-up ([`diff::restart_needed`]);
//! 3. loads the certificates of TLS listeners (`tls`);
//! 4. builds the new runtime from the state registry (state with an unchanged identity carries
//!    over, see `docs/state.md`), warms it up and swaps it in ([`Engine::swap`]);
//! 5. logs one line with the diff ([`ReloadSummary`]) and counts the result in
//!    `gw_config_reloads_total{result}`; on any error the running configuration stays, untouched.
//!
//! `docs/reload.md` is the operator's view.
pub mod diff;
pub mod signal;
pub(crate) mod tls;
pub(crate) mod watch;

pub use diff::{Changes, ReloadSummary};

use crate::diag::Diagnostic;
use crate::observability::{Metrics, ReloadMetrics};
use crate::plan::Plan;
use crate::proxy::runtime::StartError;
use crate::proxy::Engine;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::SystemTime;
use tls::CertResolver;

/// Why a reload was not applied. The running configuration is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("cannot read {file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        reason: String,
    },
    /// The file does not compile; `diagnostics` as `gw validate --format json` prints them.
    #[error("{file} has {} error(s)", .diagnostics.iter().filter(|d| d.is_error()).count())]
    Invalid {
        /// The file.
        file: String,
        /// Errors and warnings.
        diagnostics: Vec<Diagnostic>,
    },
    /// The plan changes what only a restart can change.
    #[error("{}", .0.join("; "))]
    RestartNeeded(Vec<String>),
    /// A TLS listener's certificate or key cannot be loaded.
    #[error("listener {listener}: {reason}")]
    Certificate {
        /// The listener's name.
        listener: String,
        /// What is wrong.
        reason: String,
    },
    /// The runtime could not be built (e.g. an endpoint's host does not resolve).
    #[error("{0}")]
    Build(#[from] StartError),
}

impl ReloadError {
    /// The admin API's status: 409 for a change that needs a restart, 422 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ReloadError::RestartNeeded(_) => 409,
            _ => 422,
        }
    }

    /// Short machine-readable kind: `unreadable`, `invalid_config`, `restart_needed`,
    /// `certificate`, `build_failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReloadError::Read { .. } => "unreadable",
            ReloadError::Invalid { .. } => "invalid_config",
            ReloadError::RestartNeeded(_) => "restart_needed",
            ReloadError::Certificate { .. } => "certificate",
            ReloadError::Build(_) => "build_failed",
        }
    }

    /// The admin API's JSON body: `{"result":"rejected","error":kind,"message":...,
    /// "diagnostics":[...]}` (diagnostics in the shape of `gw validate --format json`), plus
    /// `"restart_needed":[...]` for a change that needs a restart.
    pub fn to_json(&self) -> serde_json::Value {
        let diagnostics = match self {
            ReloadError::Invalid { diagnostics, .. } => crate::diag::to_json(diagnostics),
            _ => serde_json::json!([]),
        };
        let mut v = serde_json::json!({
            "result": "rejected",
            "error": self.kind(),
            "message": self.to_string(),
            "diagnostics": diagnostics,
        });
        if let ReloadError::RestartNeeded(list) = self {
            v["restart_needed"] = serde_json::json!(list);
        }
        v
    }
}

/// The reload side of an [`Engine`]: the one-at-a-time lock, the reload metrics, and the
/// certificate resolvers of the TLS listeners `gw serve` started.
pub(crate) struct Reloader {
    lock: tokio::sync::Mutex<()>,
    metrics: ReloadMetrics,
    certs: Mutex<Vec<(String, Arc<CertResolver>)>>,
}

impl Reloader {
    /// Records `plan` as the configuration in force (`gw_config_hash`).
    pub fn new(metrics: &Metrics, plan: &Plan) -> Reloader {
        let m = metrics.reload();
        m.in_force(&plan.config_hash, SystemTime::now());
        Reloader {
            lock: Default::default(),
            metrics: m,
            certs: Default::default(),
        }
    }

    /// Holds off reloads (and other runtime rebuilds that take it) until the guard drops: whoever
    /// builds a runtime from the registry must not interleave with a reload, or the registry's slots
    /// could end up holding the state of the plan that lost the race.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Registers the certificate resolver of a TLS listener, so that reloads refresh it.
    pub fn register_cert(&self, listener: &str, resolver: Arc<CertResolver>) {
        self.certs.lock().push((listener.to_string(), resolver));
    }

    /// Loads the certificates `plan` names for the registered listeners; those that differ from the
    /// ones in use, to be swapped in once the plan is.
    fn load_certs(&self, plan: &Plan) -> Result<Vec<CertSwap>, ReloadError> {
        let certs = self.certs.lock().clone();
        let mut out = Vec::new();
        for (name, resolver) in certs {
            let Some(tls) = plan
                .listeners
                .iter()
                .find(|l| l.name == name)
                .and_then(|l| l.tls.as_ref())
            else {
                continue; // refused as a restart-only change before this runs
            };
            let key =
                tls::load_key(&tls.cert, &tls.key).map_err(|reason| ReloadError::Certificate {
                    listener: name.clone(),
                    reason,
                })?;
            if resolver.differs(&key) {
                out.push(CertSwap {
                    listener: name,
                    resolver,
                    key,
                });
            }
        }
        Ok(out)
    }

    fn applied(&self, s: &ReloadSummary, diagnostics: &[Diagnostic]) {
        for d in diagnostics {
            tracing::warn!(
                "config reload: {}:{}:{}: warning: {}",
                d.file,
                d.line,
                d.column,
                d.message
            );
        }
        self.metrics.success(SystemTime::now());
        self.metrics.in_force(&s.hash, SystemTime::now());
        tracing::info!("config reloaded from {}: {s}", s.source);
    }

    fn rejected(&self, e: &ReloadError) {
        self.metrics.failure();
        match e {
            ReloadError::Invalid { diagnostics, .. } => {
                for d in diagnostics.iter().filter(|d| d.is_error()) {
                    tracing::error!(
                        "config reload rejected, keeping the running configuration: {}:{}:{}: {}",
                        d.file,
                        d.line,
                        d.column,
                        d.message
                    );
                }
            }
            e => tracing::error!("config reload rejected, keeping the running configuration: {e}"),
        }
    }
}

struct CertSwap {
    listener: String,
    resolver: Arc<CertResolver>,
    key: Arc<pingora::tls::sign::CertifiedKey>,
}

impl Engine {
    /// Applies `plan` in place of the running one: refuses a change that needs a restart, builds the
    /// new runtime (state with an unchanged identity carries over), warms it up, swaps it in
    /// atomically (requests in flight finish on the runtime they started with), refreshes TLS
    /// certificates, logs one line with the diff and counts the result. One reload at a time; on
    /// `Err` nothing changed.
    pub async fn reload(&self, plan: Plan) -> Result<ReloadSummary, ReloadError> {
        let _one = self.reloader.lock.lock().await;
        let r = self.reload_locked(plan).await;
        match &r {
            Ok(s) => self.reloader.applied(s, &[]),
            Err(e) => self.reloader.rejected(e),
        }
        r
    }

    /// Reads `path` (default: the file the running plan was compiled from), compiles it exactly like
    /// `gw validate` (process environment for `${VAR}`), and applies it like [`Engine::reload`]. A
    /// file with errors is rejected with every diagnostic (each logged on one line with
    /// `file:line:col`).
    pub async fn reload_file(&self, path: Option<&str>) -> Result<ReloadSummary, ReloadError> {
        let _one = self.reloader.lock.lock().await;
        let path = path.map_or_else(|| self.runtime().plan.source.clone(), str::to_string);
        let r = match compile_file(path).await {
            Ok((plan, warnings)) => self.reload_locked(plan).await.map(|s| (s, warnings)),
            Err(e) => Err(e),
        };
        match r {
            Ok((s, warnings)) => {
                self.reloader.applied(&s, &warnings);
                Ok(s)
            }
            Err(e) => {
                self.reloader.rejected(&e);
                Err(e)
            }
        }
    }

    async fn reload_locked(&self, plan: Plan) -> Result<ReloadSummary, ReloadError> {
        let old = self.runtime();
        let restart = diff::restart_needed(&old.plan, &plan);
        if !restart.is_empty() {
            return Err(ReloadError::RestartNeeded(restart));
        }
        let certs = self.reloader.load_certs(&plan)?;
        let mut summary = ReloadSummary::between(&old.plan, &plan);
        drop(old);
        self.swap(plan).await?;
        for c in certs {
            c.resolver.replace(c.key);
            summary.certificates.push(c.listener);
        }
        Ok(summary)
    }
}

/// Reads and compiles a file off the async threads (a large configuration takes tens of ms).
async fn compile_file(path: String) -> Result<(Plan, Vec<Diagnostic>), ReloadError> {
    let r = tokio::task::spawn_blocking(move || {
        // exactly what `gw validate` and `gw serve` run
        let (_, c) = crate::compile::compile_file(&path).map_err(|e| ReloadError::Read {
            file: path.clone(),
            reason: e.to_string(),
        })?;
        match c.plan {
            Some(p) => Ok((p, c.diagnostics)),
            None => Err(ReloadError::Invalid {
                file: path,
                diagnostics: c.diagnostics,
            }),
        }
    })
    .await;
    r.unwrap_or_else(|e| {
        Err(ReloadError::Read {
            file: String::new(),
            reason: format!("the compiler task failed: {e}"),
        })
    })
}

/// The reload triggers of `gw serve`, as a Pingora background service: `SIGHUP` (the handler of
/// `proxy::signals::handle_sighup` notifies `hangup`), and the file watch when
/// `server.reload.watch` is on.
pub(crate) struct Triggers {
    pub engine: Arc<Engine>,
    pub hangup: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Triggers {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        let w = watch::spawn(&self.engine, shutdown.clone());
        signal::reload_on_hangup(self.engine.clone(), self.hangup.clone(), shutdown).await;
        if let Some(w) = w {
            w.abort();
        }
    }
}

#[cfg(test)]
mod tests;
