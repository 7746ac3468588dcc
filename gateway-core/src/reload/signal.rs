//! `SIGHUP` → reload the configuration file `gw serve` was started with. Installing the handler also
//! means `SIGHUP` never terminates the process (its default action).
use crate::proxy::Engine;
use std::sync::Arc;

/// Reloads on every `SIGHUP` until `shutdown`. A reload that is rejected keeps the running
/// configuration (see [`Engine::reload_file`]).
pub async fn sighup_loop(engine: Arc<Engine>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler: reload by SIGHUP is off");
            return;
        }
    };
    tracing::info!(file = %engine.runtime().plan.source, "SIGHUP reloads the configuration file");
    loop {
        tokio::select! {
            s = hup.recv() => if s.is_none() { return },
            _ = shutdown.changed() => return,
        }
        tracing::info!(file = %engine.runtime().plan.source, "SIGHUP: reloading the configuration");
        let _ = engine.reload_file(None).await;
    }
}
