//! File source: the endpoints file (format in [`super::file_format`]), re-read when `notify` reports a
//! change of it and at least every `interval` (the fallback when change events are missed or the
//! directory cannot be watched).
//!
//! The file's *directory* is watched, not the file: an atomic replace (write a temp file, rename it over
//! the old one) changes which inode the name points to, so a watch on the old inode would go silent.
//! Events for other names in the directory are ignored. After an event the source waits `debounce` for
//! more (an in-place rewrite is a truncate then one or more writes) before reading.
use super::spec::FileSpec;
use super::{file_format, DiscoveredEndpoint, DiscoveryError, Source, SourceKind};
use notify::{RecursiveMode, Watcher};
use std::ffi::OsString;
use tokio::sync::mpsc;

/// Reads the endpoints file; see the module docs.
pub struct FileSource {
    spec: FileSpec,
    /// Kept alive for its events; `None` when watching failed (then only `interval` applies).
    watcher: Option<notify::RecommendedWatcher>,
    events: mpsc::UnboundedReceiver<()>,
}

impl FileSource {
    /// Starts watching the file's directory (failure to watch is logged, and polling remains).
    pub fn new(spec: FileSpec) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = watch(&spec, tx)
            .map_err(|e| {
                tracing::warn!(path = %spec.path.display(), error = %e,
                    "cannot watch the endpoints file; re-reading it every interval only");
            })
            .ok();
        FileSource {
            spec,
            watcher,
            events,
        }
    }

    /// Whether change notifications are active.
    pub fn is_watching(&self) -> bool {
        self.watcher.is_some()
    }
}

fn watch(
    spec: &FileSpec,
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let name: Option<OsString> = spec.path.file_name().map(Into::into);
    let dir = match spec.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if ev.kind.is_access() {
            return;
        }
        if ev.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            let _ = tx.send(());
        }
    })?;
    w.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(w)
}

#[async_trait::async_trait]
impl Source for FileSource {
    fn kind(&self) -> SourceKind {
        SourceKind::File
    }

    async fn fetch(&mut self) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError> {
        let path = &self.spec.path;
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| DiscoveryError::Io {
                path: path.clone(),
                message: e.to_string(),
            })?;
        file_format::parse(path, &text)
    }

    async fn wait(&mut self, _failures: u32) {
        // a bad file is not retried faster or slower: the next change or interval re-reads it
        tokio::select! {
            ev = self.events.recv() => {
                if ev.is_none() {
                    // the watcher is gone (cannot happen while we own it); fall back to polling
                    tokio::time::sleep(self.spec.interval).await;
                    return;
                }
                tokio::time::sleep(self.spec.debounce).await;
                while self.events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(self.spec.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn spec(path: std::path::PathBuf, interval: Duration) -> FileSpec {
        FileSpec {
            path,
            interval,
            debounce: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn change_event_wakes_the_wait_long_before_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eps.txt");
        std::fs::write(&path, "127.0.0.1:1\n").unwrap();
        let mut s = FileSource::new(spec(path.clone(), Duration::from_secs(60)));
        assert!(s.is_watching());
        assert_eq!(s.fetch().await.unwrap().len(), 1);
        let t = Instant::now();
        let writer = tokio::spawn({
            let path = path.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::fs::write(&path, "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
            }
        });
        tokio::time::timeout(Duration::from_secs(10), s.wait(0))
            .await
            .expect("no change event within 10 s");
        writer.await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(s.fetch().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn missing_file_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.yaml");
        let mut s = FileSource::new(spec(path.clone(), Duration::from_millis(10)));
        let e = s.fetch().await.unwrap_err();
        assert!(
            matches!(&e, DiscoveryError::Io { path: p, .. } if *p == path),
            "{e:?}"
        );
        // polling still returns
        tokio::time::timeout(Duration::from_secs(5), s.wait(1))
            .await
            .unwrap();
    }
}
