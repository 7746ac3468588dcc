//! Upstream connections for HTTP/1 upgrades (WebSocket): always a fresh one.
//!
//! Pingora 0.9.1 tears an upgraded tunnel down when the upstream's `101` is read before the upgrade
//! request's empty body has gone through its body pipe (cloudflare/pingora#946). That can only happen if
//! the upstream socket turns readable while the proxy task is still inside the poll that wrote the
//! request, i.e. if another thread drives that socket's I/O. gw runs each connection on a current-thread
//! runtime (`gw serve`, and the embedded runner), so a socket opened by the request's own task is safe —
//! but a pooled keep-alive connection opened by another thread's runtime is not (measured: 9 of 200
//! tunnels lost with two gateway threads and plain requests in between). A tunnel never returns to the
//! pool anyway, so an upgrade request gets a pool key no other request has and opens its own connection.
use pingora::upstreams::peer::HttpPeer;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Gives `peer` a pool key of its own when the request is an upgrade (`Upgrade` + `Connection: upgrade`),
/// so the connection pool never hands it a connection opened by another request.
pub fn fresh_connection_for_upgrade(peer: &mut HttpPeer, is_upgrade_request: bool) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    if is_upgrade_request {
        // the high bit keeps these keys apart from any group key set elsewhere (0 by default)
        peer.group_key = NEXT.fetch_add(1, Relaxed) | 1 << 63;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{DefaultHasher, Hash, Hasher};

    fn key(p: &HttpPeer) -> u64 {
        let mut h = DefaultHasher::new();
        p.hash(&mut h);
        h.finish()
    }

    #[test]
    fn upgrade_requests_never_share_a_pool_key() {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let plain = HttpPeer::new(addr, false, String::new());
        let mut plain2 = HttpPeer::new(addr, false, String::new());
        fresh_connection_for_upgrade(&mut plain2, false);
        assert_eq!(
            key(&plain),
            key(&plain2),
            "plain requests keep sharing the pool"
        );
        let mut a = HttpPeer::new(addr, false, String::new());
        let mut b = HttpPeer::new(addr, false, String::new());
        fresh_connection_for_upgrade(&mut a, true);
        fresh_connection_for_upgrade(&mut b, true);
        assert_ne!(key(&a), key(&plain));
        assert_ne!(key(&a), key(&b));
    }
}
