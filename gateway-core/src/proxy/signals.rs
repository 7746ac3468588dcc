//! Process signals for `gw serve`: SIGTERM/SIGINT drain gracefully and exit as soon as no client
//! connection is left; SIGHUP never kills the process: it reloads the configuration (`crate::reload`).
use super::conn::OpenConns;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::Arc;
use std::time::Duration;

/// SIGTERM and SIGINT both drain gracefully: Pingora stops the listeners, open connections finish their
/// requests (bounded by the grace period), and once none is open the process exits without waiting out
/// the rest of the grace period.
pub struct GracefulSignals {
    /// Connections still open; the drain is over when this reaches zero.
    pub open: Arc<OpenConns>,
    /// Runs right before an early exit (e.g. flush the access log).
    pub before_exit: Arc<dyn Fn() + Send + Sync>,
}

#[async_trait]
impl ShutdownSignalWatch for GracefulSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            std::future::pending::<()>().await;
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        self.exit_when_drained();
        ShutdownSignal::GracefulTerminate
    }
}

impl GracefulSignals {
    /// Pingora sleeps the whole grace period after a graceful terminate (`Server::run`); watch the open
    /// connections from a thread of our own and end the process once the last one has closed.
    fn exit_when_drained(&self) {
        let open = self.open.clone();
        let before_exit = self.before_exit.clone();
        let spawned = std::thread::Builder::new()
            .name("gw-drain".into())
            .spawn(move || {
                // give Pingora a moment to stop its listeners (no new connection after this)
                std::thread::sleep(Duration::from_millis(50));
                while open.count() > 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                tracing::info!("drained: no client connection left, exiting");
                before_exit();
                std::process::exit(0);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot watch the drain ({e}); waiting the whole grace period");
        }
    }
}

/// Installs the SIGHUP handler before anything else runs, on a thread of its own (so a SIGHUP during
/// start-up cannot kill the process either). Every SIGHUP calls `on_hangup`.
pub fn handle_sighup(on_hangup: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    std::thread::Builder::new()
        .name("gw-sighup".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let mut hup = match signal(SignalKind::hangup()) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while hup.recv().await.is_some() {
                    on_hangup();
                }
            });
        })?;
    ready_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("SIGHUP thread ended")))
}
