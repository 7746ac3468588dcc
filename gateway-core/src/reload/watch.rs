//! `server.reload.watch: true`: reload when the configuration file changes on disk.
//!
//! The file's folder is watched (editors and deploy tools often write a temporary file and rename it
//! over the original, which a watch on the file itself would lose). Events for the file are
//! debounced: the file is read only once it has been quiet for `server.reload.debounce`, so a
//! write-rename sequence or a file being written in several steps gives one reload of the final
//! content. A read whose content equals the configuration in force (same hash) does nothing; a file
//! that does not compile is rejected like any reload (logged, counted) and never applied.
use crate::proxy::Engine;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Starts the watcher when the running plan has `server.reload.watch: true`; it ends with
/// `shutdown`.
pub fn spawn(
    engine: &Arc<Engine>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let plan = engine.runtime().plan.clone();
    if !plan.server.reload.watch {
        return None;
    }
    let path = PathBuf::from(&plan.source);
    Some(tokio::spawn(watch_file(
        engine.clone(),
        path,
        plan.server.reload.debounce,
        shutdown,
    )))
}

/// Watches `path` until `shutdown`; see the module doc.
pub async fn watch_file(
    engine: Arc<Engine>,
    path: PathBuf,
    debounce: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let name = path.file_name().map(|n| n.to_os_string());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let ours = match &ev {
            Ok(e) => e
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name),
            Err(_) => true,
        };
        if ours && !matches!(&ev, Ok(e) if e.kind.is_access()) {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the configuration file: reload on change is off");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::error!(error = %e, dir = %dir.display(), "cannot watch the configuration folder: reload on change is off");
        return;
    }
    tracing::info!(file = %path.display(), "watching the configuration file");
    loop {
        tokio::select! {
            ev = rx.recv() => if ev.is_none() { return },
            _ = shutdown.changed() => return,
        }
        // debounce: wait until no event came for `debounce`
        loop {
            tokio::select! {
                _ = tokio::time::sleep(debounce) => break,
                ev = rx.recv() => if ev.is_none() { return },
                _ = shutdown.changed() => return,
            }
        }
        if unchanged(&engine, &path).await {
            continue;
        }
        tracing::info!(file = %path.display(), "configuration file changed: reloading");
        let _ = engine.reload_file(Some(&path.to_string_lossy())).await;
    }
}

/// Whether the file's text is the configuration in force (or cannot be read now: it was removed or
/// is being replaced; the next event tells).
async fn unchanged(engine: &Engine, path: &Path) -> bool {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => crate::compile::config_hash(&text) == engine.runtime().plan.config_hash,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "configuration file not readable: not reloading");
            true
        }
    }
}
