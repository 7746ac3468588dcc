//! One Redis connection per runtime thread.
//!
//! A multiplexed connection (`redis` crate) runs its I/O in a driver task on the runtime that made
//! it. The store's shared connection is made once, wherever the first caller ran (in `gw serve`,
//! the background service's runtime), so every request on a proxy worker thread used to cross
//! threads twice: a wake-up of the driver's thread to write the command, another to hand the reply
//! back (two `eventfd` writes, two context switches, the reply's cache lines moving between
//! cores). Pingora runs each worker thread as its own single-threaded runtime, so a connection made
//! on that thread keeps the whole round trip on it, and the commands of the requests that thread
//! handles in one turn leave in one write.
//!
//! Each thread keeps, per store, a connection made on its own runtime (in the background: the
//! first calls of a thread use the shared connection until it is ready). An entry is dropped when
//! a call on it fails (its runtime may be gone; the next call makes a new one) or when the store
//! looks the server up again (Sentinel failover: [`RedisStore`]'s generation changes). Entries of
//! dropped stores are pruned when a thread adds one.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::redis_conn::Conn;
use super::redis_store::RedisStore;

/// A connection being made for one thread.
enum Pending {
    Connecting,
    Ready(Conn),
    /// The attempt failed; not tried again before this unix ms.
    Failed(u64),
}

struct Entry {
    store: Weak<RedisStore>,
    /// The store's generation the connection was made for.
    generation: u64,
    conn: Option<Conn>,
    pending: Option<Arc<Mutex<Pending>>>,
}

thread_local! {
    static CONNS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// This thread's connection to `store`'s server, if it is ready. Otherwise starts making one on
/// the current runtime (at most one attempt at a time per thread, none during a back-off after a
/// failed attempt) and returns `None`: the caller uses the shared connection meanwhile.
pub(crate) fn get(store: &Arc<RedisStore>, generation: u64, now_ms: u64) -> Option<Conn> {
    CONNS
        .try_with(|c| {
            let mut conns = c.borrow_mut();
            let weak = Arc::downgrade(store);
            let at = conns.iter().position(|e| Weak::ptr_eq(&e.store, &weak));
            if let Some(i) = at {
                let e = &mut conns[i];
                if e.generation == generation {
                    if let Some(conn) = &e.conn {
                        return Some(conn.clone());
                    }
                    if let Some(p) = &e.pending {
                        let mut p = p.lock();
                        match &*p {
                            Pending::Connecting => return None,
                            Pending::Failed(until) if now_ms < *until => return None,
                            Pending::Failed(_) => {}
                            Pending::Ready(_) => {
                                let Pending::Ready(conn) =
                                    std::mem::replace(&mut *p, Pending::Connecting)
                                else {
                                    unreachable!("matched Ready above")
                                };
                                drop(p);
                                e.pending = None;
                                e.conn = Some(conn.clone());
                                return Some(conn);
                            }
                        }
                    }
                }
                conns.swap_remove(i);
            }
            let pending = connect(store)?;
            conns.retain(|e| e.store.strong_count() > 0);
            conns.push(Entry {
                store: weak,
                generation,
                conn: None,
                pending: Some(pending),
            });
            None
        })
        .ok()
        .flatten()
}

/// Drops this thread's connection to `store` (a call on it failed).
pub(crate) fn forget(store: &Arc<RedisStore>) {
    let weak = Arc::downgrade(store);
    let _ = CONNS.try_with(|c| {
        c.borrow_mut().retain(|e| !Weak::ptr_eq(&e.store, &weak));
    });
}

/// Starts making a connection on the current runtime; `None` outside a runtime.
fn connect(store: &Arc<RedisStore>) -> Option<Arc<Mutex<Pending>>> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let pending = Arc::new(Mutex::new(Pending::Connecting));
    let slot = pending.clone();
    let weak = Arc::downgrade(store);
    rt.spawn(async move {
        let Some(store) = weak.upgrade() else { return };
        let made = store.connect_once().await;
        *slot.lock() = match made {
            Some(conn) => Pending::Ready(conn),
            None => Pending::Failed(super::unix_millis_now().saturating_add(store.backoff_ms())),
        };
    });
    Some(pending)
}
