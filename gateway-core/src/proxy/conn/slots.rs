//! Connection caps: a slot per open client connection, per listener and optionally per client IP, and
//! the process-wide count of open connections the shutdown drain waits on.
use crate::observability::Metrics;
use crate::plan::ConnectionLimits;
use prometheus::{IntCounter, IntCounterVec, Opts};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Client connections open across every listener of the process (the drain waits for zero).
#[derive(Debug, Default)]
pub struct OpenConns {
    n: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl OpenConns {
    /// Connections open now.
    pub fn count(&self) -> usize {
        self.n.load(Ordering::Acquire)
    }

    fn open(self: &Arc<Self>) -> OpenGuard {
        self.n.fetch_add(1, Ordering::AcqRel);
        OpenGuard(self.clone())
    }

    /// Waits until no connection is open, or `limit` has passed; returns whether none is open.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            if self.count() == 0 {
                return true;
            }
            if tokio::time::timeout_at(end.into(), idle).await.is_err() {
                return self.count() == 0;
            }
        }
    }
}

struct OpenGuard(Arc<OpenConns>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Why a connection was refused or closed early.
#[derive(Clone)]
pub(crate) struct ListenerCounters {
    pub rejected_listener_cap: IntCounter,
    pub rejected_ip_cap: IntCounter,
    pub header_timeout: IntCounter,
}

/// `gw_connections_rejected_total{listener, reason}` and `gw_header_timeouts_total{listener}`, registered
/// once per engine on its registry.
#[derive(Clone)]
pub struct ConnMetrics {
    rejected: IntCounterVec,
    header_timeouts: IntCounterVec,
}

impl ConnMetrics {
    /// Registers the two families on the engine's registry (unregistered copies if that fails, e.g. when
    /// they were registered already).
    pub fn register(metrics: &Metrics) -> ConnMetrics {
        let rejected = IntCounterVec::new(
            Opts::new(
                "gw_connections_rejected_total",
                "Client connections closed at accept because a connection cap was reached",
            ),
            &["listener", "reason"],
        )
        .expect("static metric definition");
        let header_timeouts = IntCounterVec::new(
            Opts::new(
                "gw_header_timeouts_total",
                "Client connections closed because the request head did not arrive within header_timeout",
            ),
            &["listener"],
        )
        .expect("static metric definition");
        let r = metrics.registry();
        let _ = r.register(Box::new(rejected.clone()));
        let _ = r.register(Box::new(header_timeouts.clone()));
        ConnMetrics {
            rejected,
            header_timeouts,
        }
    }

    pub(crate) fn listener(&self, name: &str) -> ListenerCounters {
        ListenerCounters {
            rejected_listener_cap: self.rejected.with_label_values(&[name, "listener_cap"]),
            rejected_ip_cap: self.rejected.with_label_values(&[name, "per_ip_cap"]),
            header_timeout: self.header_timeouts.with_label_values(&[name]),
        }
    }
}

/// The caps of one listener and its connections open now.
pub(crate) struct Slots {
    limits: ConnectionLimits,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    all: Arc<OpenConns>,
}

/// Why [`Slots::take`] refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    ListenerCap,
    IpCap,
}

impl Slots {
    pub(crate) fn new(limits: ConnectionLimits, all: Arc<OpenConns>) -> Arc<Self> {
        Arc::new(Slots {
            limits,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            all,
        })
    }

    /// The process-wide count this listener's connections are part of.
    pub(crate) fn all(&self) -> &Arc<OpenConns> {
        &self.all
    }

    /// A slot for a new connection from `ip`, held until the returned guard drops.
    pub(crate) fn take(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.limits.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::ListenerCap);
        }
        let ip = match (self.limits.per_ip, ip) {
            (Some(cap), Some(ip)) => {
                let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
                let n = m.entry(ip).or_insert(0);
                if *n >= cap {
                    drop(m);
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refused::IpCap);
                }
                *n += 1;
                Some(ip)
            }
            _ => None,
        };
        Ok(Slot {
            slots: self.clone(),
            ip,
            _open: self.all.open(),
        })
    }
}

/// One open connection's place under the caps.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    ip: Option<IpAddr>,
    _open: OpenGuard,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut m = self.slots.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max: usize, per_ip: Option<usize>) -> Arc<Slots> {
        Slots::new(ConnectionLimits { max, per_ip }, Arc::default())
    }

    #[test]
    fn listener_cap_refuses_beyond_max_and_frees_on_drop() {
        let s = slots(2, None);
        let a = s.take(None).expect("first");
        let _b = s.take(None).expect("second");
        assert_eq!(s.take(None).err(), Some(Refused::ListenerCap));
        assert_eq!(s.all.count(), 2);
        drop(a);
        assert!(s.take(None).is_ok());
    }

    #[test]
    fn per_ip_cap_counts_each_address_separately() {
        let s = slots(10, Some(1));
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let a = s.take(Some(x)).expect("x");
        assert_eq!(s.take(Some(x)).err(), Some(Refused::IpCap));
        let _b = s.take(Some(y)).expect("y is another client");
        drop(a);
        let _c = s.take(Some(x)).expect("x again after close");
        assert_eq!(s.per_ip.lock().unwrap().len(), 2);
        assert_eq!(s.open.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_connection_closes() {
        let s = slots(10, None);
        let a = s.take(None).expect("slot");
        let all = s.all.clone();
        let t = tokio::spawn(async move { all.wait_idle(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(a);
        assert!(t.await.unwrap());
        let _b = s.take(None).expect("slot");
        assert!(!s.all.wait_idle(Duration::from_millis(20)).await);
    }
}
