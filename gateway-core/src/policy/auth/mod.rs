//! JWT authentication and role/scope authorization for the gateway.
//!
//! Build one [`Authenticator`] per key configuration from [`AuthSettings`], call
//! [`Authenticator::start`] (spawns the JWKS refresh task; no-op for static keys) and optionally
//! `ready(timeout).await`. Per request: [`Authenticator::authenticate`] with the request headers,
//! query string and the route's [`RoutePolicy`]; on `Err(e)` the gateway answers
//! `crate::error::GwError::auth(&e)` (`e.status()`, `WWW-Authenticate: e.www_authenticate()`, the
//! gateway's JSON error body) through its one response writer; `e.json_body()` is an RFC 6750-style
//! body for embedders that answer themselves. On `Ok(Some(identity))`,
//! strip client copies of [`Authenticator::injected_header_names`] (on every route) and add
//! [`Authenticator::forward_headers`].
//!
//! Files: `settings.rs` (config structs), `keys.rs` (key material, JWKS), `verify.rs` (header,
//! signature, claims), `extract.rs` (token location), `policy.rs` (route mode, roles/scopes),
//! `identity.rs` (verified identity, claim paths), `cache.rs` (verified-token cache),
//! `error.rs` (errors and challenges).

mod cache;
mod error;
mod extract;
mod identity;
mod keys;
mod policy;
mod settings;
mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName, HeaderValue};

pub use error::{AuthError, AuthReason, ConfigError, FetchError};
pub use identity::{ClaimPath, Identity};
pub use keys::KeySet;
pub use policy::{AuthMode, ClaimRequirement, MatchMode, RoutePolicy};
pub use settings::{
    AuthSettings, CacheSettings, ClaimRequirementSettings, ForwardClaim, JwksSettings, KeySource,
    PemKeyFile, RouteAuthSettings, TokenSources,
};

/// The current time, injected by the caller (tests use fixed values).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Wall clock, unix seconds (for `exp`/`nbf` and the cache).
    pub unix_secs: u64,
    /// Monotonic clock (for JWKS refresh rate limiting).
    pub instant: Instant,
}

impl Now {
    /// The real current time.
    pub fn system() -> Self {
        let unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Now {
            unix_secs,
            instant: Instant::now(),
        }
    }
}

enum Keys {
    Static(ArcSwap<KeySet>),
    Jwks(Arc<keys::JwksSource>),
}

impl Keys {
    fn load(&self) -> arc_swap::Guard<Arc<KeySet>> {
        match self {
            Keys::Static(set) => set.load(),
            Keys::Jwks(src) => src.keys().load(),
        }
    }
}

/// JWT verifier + token extraction + forwarded-claim headers for one key configuration.
pub struct Authenticator {
    realm: Arc<str>,
    extractor: extract::TokenExtractor,
    keys: Keys,
    rules: verify::ClaimRules,
    cache: Option<cache::TokenCache>,
    forward: Vec<(ClaimPath, HeaderName)>,
    injected: Vec<HeaderName>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

fn valid_realm(r: &str) -> bool {
    !r.is_empty()
        && r.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Authenticator {
    /// Validates settings and loads static keys (reads PEM files synchronously). JWKS sources
    /// start empty: call [`Authenticator::start`] inside a tokio runtime.
    pub fn new(s: &AuthSettings) -> Result<Self, ConfigError> {
        if !valid_realm(&s.realm) {
            return Err(ConfigError::BadRealm);
        }
        let keys = match keys::static_keys(&s.keys, &s.algorithms)? {
            Some(set) => Keys::Static(ArcSwap::from_pointee(set)),
            None => match &s.keys {
                KeySource::Jwks(j) => {
                    Keys::Jwks(Arc::new(keys::JwksSource::new(j, &s.algorithms)?))
                }
                _ => return Err(ConfigError::BadSetting("key source".into())),
            },
        };
        let required = s
            .required_claims
            .iter()
            .map(|c| {
                ClaimPath::parse(c)
                    .ok_or_else(|| ConfigError::BadSetting(format!("required claim {c:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut forward = Vec::with_capacity(s.forward_claims.len());
        let mut injected: Vec<HeaderName> = Vec::new();
        for f in &s.forward_claims {
            let path = ClaimPath::parse(&f.claim)
                .ok_or_else(|| ConfigError::BadSetting(format!("forwarded claim {:?}", f.claim)))?;
            let name = HeaderName::from_bytes(f.header.as_bytes())
                .map_err(|_| ConfigError::BadSetting(format!("header name {:?}", f.header)))?;
            if !injected.contains(&name) {
                injected.push(name.clone());
            }
            forward.push((path, name));
        }
        Ok(Authenticator {
            realm: Arc::from(s.realm.as_str()),
            extractor: extract::TokenExtractor::new(&s.token_sources),
            keys,
            rules: verify::ClaimRules {
                leeway: s.leeway_secs,
                issuers: s.issuers.clone(),
                audiences: s.audiences.clone(),
                required,
            },
            cache: s
                .cache
                .as_ref()
                .filter(|c| c.capacity > 0)
                .map(|c| cache::TokenCache::new(c.capacity, c.max_ttl_secs)),
            forward,
            injected,
        })
    }

    /// Starts the JWKS background refresh (first fetch immediately). Idempotent; no-op for
    /// static keys. Must be called within a tokio runtime.
    pub fn start(&self) {
        if let Keys::Jwks(src) = &self.keys {
            src.start();
        }
    }

    /// Waits until keys are available (static keys: immediately), at most `timeout`.
    pub async fn ready(&self, timeout: Duration) -> bool {
        match &self.keys {
            Keys::Static(_) => true,
            Keys::Jwks(src) => src.ready(timeout).await,
        }
    }

    /// Forces a JWKS fetch now (no-op for static keys). On error the last good set is kept.
    pub async fn refresh_keys(&self) -> Result<(), FetchError> {
        match &self.keys {
            Keys::Static(_) => Ok(()),
            Keys::Jwks(src) => src.refresh().await,
        }
    }

    /// The current key set (diagnostics).
    pub fn key_set(&self) -> Arc<KeySet> {
        self.keys.load().clone()
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn err(&self, reason: AuthReason) -> AuthError {
        AuthError::new(reason, self.realm.clone())
    }

    /// Finds the token in the request (borrowed, no allocation).
    pub fn extract<'a>(
        &self,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> Result<Option<&'a str>, AuthError> {
        self.extractor
            .extract(headers, query)
            .map_err(|r| self.err(r))
    }

    /// Synchronous verification against the currently loaded keys (cache first). Never awaits
    /// and never refreshes; returns the key-set generation used alongside the result.
    fn verify_local_gen(&self, token: &str, now: Now) -> (Result<Arc<Identity>, AuthReason>, u64) {
        let set = self.keys.load();
        let generation = set.generation;
        if let Some(c) = &self.cache {
            if let Some(id) = c.get(token, now.unix_secs, generation) {
                return (Ok(id), generation);
            }
        }
        let res = verify::parse_header(token).and_then(|header| {
            let key = set.select(header.kid.as_deref())?;
            verify::verify_with_key(token, &header, key, &self.rules, now.unix_secs)
        });
        let res = res.map(|id| {
            let id = Arc::new(id);
            if let Some(c) = &self.cache {
                c.insert(token, id.clone(), now.unix_secs, generation);
            }
            id
        });
        (res, generation)
    }

    /// Verifies `token` with the loaded keys only (the hot path; no await, no refresh).
    pub fn verify_local(&self, token: &str, now: Now) -> Result<Arc<Identity>, AuthError> {
        self.verify_local_gen(token, now).0.map_err(|r| self.err(r))
    }

    /// Verifies `token`. If it names an unknown `kid` (or no JWKS was loaded yet), a
    /// rate-limited JWKS refresh is awaited (bounded by `unknown_kid_wait_ms`) and the
    /// verification retried once.
    pub async fn verify(&self, token: &str, now: Now) -> Result<Arc<Identity>, AuthError> {
        let (res, generation) = self.verify_local_gen(token, now);
        match (res, &self.keys) {
            (Err(AuthReason::UnknownKid | AuthReason::KeysUnavailable), Keys::Jwks(src)) => {
                let changed = src.refresh_for_unknown_kid(generation, now.instant).await;
                if changed {
                    self.verify_local(token, now)
                } else {
                    let reason = if src.keys().load().is_empty() {
                        AuthReason::KeysUnavailable
                    } else {
                        AuthReason::UnknownKid
                    };
                    Err(self.err(reason))
                }
            }
            (res, _) => res.map_err(|r| self.err(r)),
        }
    }

    /// Checks the route's role/scope requirements (403 `insufficient_scope` on failure).
    pub fn authorize(&self, identity: &Identity, route: &RoutePolicy) -> Result<(), AuthError> {
        route.check(identity).map_err(|r| self.err(r))
    }

    /// Full request check for a route: extraction, verification and authorization.
    ///
    /// * `Off`: `Ok(None)` without looking at the request.
    /// * `Optional`: no token → `Ok(None)`; a present token must be valid (else 401) and satisfy
    ///   the requirements (else 403).
    /// * `Required`: no token → 401 `missing_token`.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        route: &RoutePolicy,
        now: Now,
    ) -> Result<Option<Arc<Identity>>, AuthError> {
        if route.mode == AuthMode::Off {
            return Ok(None);
        }
        let Some(token) = self.extract(headers, query)? else {
            return match route.mode {
                AuthMode::Required => Err(self.err(AuthReason::Missing)),
                _ => Ok(None),
            };
        };
        let identity = self.verify(token, now).await?;
        self.authorize(&identity, route)?;
        Ok(Some(identity))
    }

    /// Headers to add upstream for `identity` (values that aren't valid header values, and
    /// absent claims, are skipped). Arrays are joined with `,`.
    pub fn forward_headers<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'a {
        self.forward.iter().filter_map(move |(path, name)| {
            let v = identity.claim_str_at(path)?;
            let hv = HeaderValue::from_str(&v).ok()?;
            Some((name.clone(), hv))
        })
    }

    /// Names of all headers this authenticator injects: the gateway must remove client-sent
    /// copies of these on every route (including `Off` routes and anonymous requests).
    pub fn injected_header_names(&self) -> &[HeaderName] {
        &self.injected
    }
}
