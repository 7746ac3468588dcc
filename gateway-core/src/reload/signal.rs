//! `SIGHUP` → reload the configuration file `gw serve` was started with. The signal handler itself is
//! `proxy::signals::handle_sighup`, installed before anything else runs (so `SIGHUP` never ends the
//! process); it notifies a [`Notify`] that this loop waits on. A `SIGHUP` that arrives before the loop
//! runs is kept (one pending permit) and handled when it starts.
use crate::proxy::Engine;
use std::sync::Arc;
use tokio::sync::Notify;

/// Reloads on every notification of `hangup` until `shutdown`. A reload that is rejected keeps the
/// running configuration (see [`Engine::reload_file`]). Several `SIGHUP`s during one reload give one
/// more reload after it.
pub async fn reload_on_hangup(
    engine: Arc<Engine>,
    hangup: Arc<Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tracing::info!(file = %engine.runtime().plan.source, "SIGHUP reloads the configuration file");
    loop {
        tokio::select! {
            _ = hangup.notified() => {}
            _ = shutdown.changed() => return,
        }
        tracing::info!(file = %engine.runtime().plan.source, "SIGHUP: reloading the configuration");
        let _ = engine.reload_file(None).await;
    }
}
