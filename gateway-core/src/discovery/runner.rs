//! Drives a [`Source`] in a background task and publishes its latest good endpoint set.
use super::ratelog::LogLimiter;
use super::{normalize, DiscoveredEndpoint, Source};
use crate::observability::metrics::DiscoveryMetrics;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// An endpoint set as published: sorted by address, one entry per address.
pub type EndpointSet = Arc<[DiscoveredEndpoint]>;

/// How often a persisting failure is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// The running discovery of one upstream. Dropping it stops the task.
#[derive(Debug)]
pub struct DiscoveryHandle {
    rx: watch::Receiver<Option<EndpointSet>>,
    task: JoinHandle<()>,
}

impl DiscoveryHandle {
    /// The latest good set; `None` until the first successful fetch.
    pub fn current(&self) -> Option<EndpointSet> {
        self.rx.borrow().clone()
    }

    /// A receiver notified whenever the published set changes (not on fetches that found the same set).
    pub fn subscribe(&self) -> watch::Receiver<Option<EndpointSet>> {
        self.rx.clone()
    }
}

impl Drop for DiscoveryHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts discovery for `upstream` on the current Tokio runtime: fetch, publish when the set changed,
/// wait as the source says, repeat. A failed fetch keeps the published set, counts, logs (at most every
/// 30 s per upstream) and makes the source back off.
pub fn spawn(
    upstream: &str,
    source: Box<dyn Source>,
    metrics: Option<DiscoveryMetrics>,
) -> DiscoveryHandle {
    let (tx, rx) = watch::channel(None);
    let upstream = upstream.to_string();
    let task = tokio::spawn(run(upstream, source, metrics, tx));
    DiscoveryHandle { rx, task }
}

async fn run(
    upstream: String,
    mut source: Box<dyn Source>,
    metrics: Option<DiscoveryMetrics>,
    tx: watch::Sender<Option<EndpointSet>>,
) {
    let kind = source.kind().as_str();
    let mut failures: u32 = 0;
    let mut log = LogLimiter::new(LOG_EVERY);
    loop {
        match source.fetch().await {
            Ok(set) => {
                let set = normalize(set);
                if let Some(m) = &metrics {
                    m.success(SystemTime::now(), set.len());
                }
                if failures > 0 {
                    tracing::info!(upstream = %upstream, source = kind, failures, "discovery recovered");
                    log.reset();
                }
                failures = 0;
                let changed = tx.send_if_modified(|cur| {
                    if cur.as_deref() == Some(set.as_slice()) {
                        return false;
                    }
                    *cur = Some(set.as_slice().into());
                    true
                });
                if changed {
                    tracing::info!(upstream = %upstream, source = kind, endpoints = set.len(), "discovered endpoints changed");
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if let Some(m) = &metrics {
                    m.failure();
                }
                if let Some(skipped) = log.allow(Instant::now()) {
                    tracing::warn!(
                        upstream = %upstream,
                        source = kind,
                        failures,
                        not_logged = skipped,
                        error = %e,
                        "discovery failed; keeping the last good endpoints"
                    );
                }
            }
        }
        source.wait(failures).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{DiscoveryError, SourceKind};
    use crate::observability::Metrics;
    use std::collections::VecDeque;

    /// A scripted source (this tests the runner, not a source).
    struct Script(VecDeque<Result<Vec<DiscoveredEndpoint>, DiscoveryError>>);

    #[async_trait::async_trait]
    impl Source for Script {
        fn kind(&self) -> SourceKind {
            SourceKind::File
        }
        async fn fetch(&mut self) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError> {
            match self.0.pop_front() {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }
        async fn wait(&mut self, _failures: u32) {}
    }

    fn ep(a: &str) -> DiscoveredEndpoint {
        DiscoveredEndpoint::new(a.parse().unwrap(), 1)
    }

    #[tokio::test]
    async fn keeps_last_good_set_on_errors_and_publishes_empty_success() {
        let err = || Err(DiscoveryError::Setup("boom".into()));
        let m = Metrics::new().unwrap();
        let h = spawn(
            "u",
            Box::new(Script(VecDeque::from(vec![
                err(),
                Ok(vec![ep("10.0.0.2:80"), ep("10.0.0.1:80")]),
                err(),
                err(),
                Ok(vec![ep("10.0.0.1:80"), ep("10.0.0.2:80")]),
                err(),
            ]))),
            Some(m.discovery("u", "file")),
        );
        let mut rx = h.subscribe();
        // the first publication is the first success, sorted
        rx.wait_for(|s| s.is_some()).await.unwrap();
        assert_eq!(
            h.current().unwrap().as_ref(),
            &[ep("10.0.0.1:80"), ep("10.0.0.2:80")]
        );
        // wait until the script is consumed, then the set is still the last good one
        let deadline = Instant::now() + Duration::from_secs(5);
        while !m
            .render()
            .contains(r#"result="failure",source="file",upstream="u"} 4"#)
        {
            assert!(Instant::now() < deadline, "{}", m.render());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(h.current().unwrap().len(), 2);
        assert!(m
            .render()
            .contains(r#"result="success",source="file",upstream="u"} 2"#));
        assert!(m
            .render()
            .contains(r#"gw_upstream_endpoints{source="file",upstream="u"} 2"#));

        let h2 = spawn(
            "v",
            Box::new(Script(VecDeque::from(vec![
                Ok(vec![ep("10.0.0.1:80")]),
                Ok(vec![]),
            ]))),
            None,
        );
        let mut rx2 = h2.subscribe();
        rx2.wait_for(|s| s.as_ref().is_some_and(|s| s.is_empty()))
            .await
            .unwrap();
        drop(rx);
    }
}
