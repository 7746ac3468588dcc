//! Bounded cache of verified tokens → `Arc<Identity>`.
//!
//! Keyed by a 64-bit SipHash of the token with a random per-process key (`RandomState`), and the
//! full token is stored and compared on lookup, so a hash collision is only a miss. An entry
//! lives until `min(exp, inserted + max_ttl)` (it never outlives the token) and is dropped if the
//! key set generation changed since it was verified (key rotation / removal takes effect at once).
//! 16 shards, each a `parking_lot::Mutex<HashMap>` held only for the map operation. When a shard
//! is full, expired/stale entries are swept; if it is still full one arbitrary entry is evicted.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::Mutex;

use super::identity::Identity;

const SHARDS: usize = 16;

struct Entry {
    token: Box<str>,
    identity: Arc<Identity>,
    valid_until: u64,
    generation: u64,
}

/// The verified-token cache.
pub(crate) struct TokenCache {
    shards: Vec<Mutex<HashMap<u64, Entry>>>,
    per_shard: usize,
    max_ttl: u64,
    hasher: std::collections::hash_map::RandomState,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize, max_ttl_secs: u64) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            max_ttl: max_ttl_secs,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn slot(&self, token: &str) -> (u64, &Mutex<HashMap<u64, Entry>>) {
        let h = self.hasher.hash_one(token);
        (h, &self.shards[(h as usize) % SHARDS])
    }

    pub(crate) fn get(&self, token: &str, now: u64, generation: u64) -> Option<Arc<Identity>> {
        let (h, shard) = self.slot(token);
        let mut map = shard.lock();
        let e = map.get(&h)?;
        if &*e.token != token {
            return None;
        }
        if now < e.valid_until && e.generation == generation {
            return Some(e.identity.clone());
        }
        map.remove(&h);
        None
    }

    pub(crate) fn insert(&self, token: &str, identity: Arc<Identity>, now: u64, generation: u64) {
        let mut valid_until = now.saturating_add(self.max_ttl);
        if let Some(exp) = identity.expires_at {
            valid_until = valid_until.min(exp);
        }
        if valid_until <= now {
            return;
        }
        let (h, shard) = self.slot(token);
        let mut map = shard.lock();
        if map.len() >= self.per_shard && !map.contains_key(&h) {
            map.retain(|_, e| e.valid_until > now && e.generation == generation);
            if map.len() >= self.per_shard {
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            h,
            Entry {
                token: token.into(),
                identity,
                valid_until,
                generation,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(exp: Option<u64>) -> Arc<Identity> {
        Arc::new(Identity {
            subject: Some("u".into()),
            claims: serde_json::Map::new(),
            expires_at: exp,
            kid: None,
            algorithm: jsonwebtoken::Algorithm::HS256,
        })
    }

    #[test]
    fn entries_never_outlive_exp_or_ttl() {
        let c = TokenCache::new(100, 60);
        c.insert("t1", ident(Some(1010)), 1000, 1);
        assert!(c.get("t1", 1009, 1).is_some());
        assert!(c.get("t1", 1010, 1).is_none());
        c.insert("t2", ident(None), 1000, 1);
        assert!(c.get("t2", 1059, 1).is_some());
        assert!(c.get("t2", 1060, 1).is_none());
        // Already expired: not inserted.
        c.insert("t3", ident(Some(900)), 1000, 1);
        assert!(c.get("t3", 1000, 1).is_none());
    }

    #[test]
    fn generation_change_invalidates() {
        let c = TokenCache::new(100, 60);
        c.insert("t", ident(None), 0, 1);
        assert!(c.get("t", 1, 2).is_none());
        assert!(c.get("t", 1, 1).is_none(), "stale entry removed");
    }

    #[test]
    fn bounded() {
        let c = TokenCache::new(32, 600);
        for i in 0..1000 {
            c.insert(&format!("tok{i}"), ident(None), 0, 1);
        }
        assert!(c.len() <= 32, "len {}", c.len());
        assert!(c.get("tok999", 1, 1).is_some());
        assert!(c.get("other", 1, 1).is_none());
    }
}
