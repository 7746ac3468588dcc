//! Key material: static keys (HMAC secret, PEM public keys) and JWKS (file or http(s) URL).
//!
//! Every key carries the list of algorithms it accepts, computed from the configured algorithm
//! list intersected with the key's own family (and the JWK's `alg`/`crv` when present). The
//! token's header never widens that list, so an HS256 token can never be checked against an RSA
//! key. Keys are selected by `kid`; a token without `kid` uses the single kid-less key.
//!
//! JWKS key sets live in an `ArcSwap<KeySet>`: the hot path does one lock-free load. A background
//! tokio task refreshes on an interval (retrying sooner while failing); a token naming an unknown
//! `kid` may trigger a rate-limited, single-flight refresh. A failed refresh keeps the last good
//! set. A refresh whose body is byte-identical to the previous one does not swap the set (so the
//! generation, which invalidates the verified-token cache, only moves on real changes).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::error::{AuthReason, ConfigError, FetchError};
use super::settings::{JwksSettings, KeySource, PemKeyFile};

/// Largest JWKS body accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// One verification key with its pinned algorithms.
pub(crate) struct KeyEntry {
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
    pub(crate) algorithms: Vec<Algorithm>,
    /// Signature-only validation (claims are checked by `verify.rs` with an injected clock).
    pub(crate) validation: Validation,
}

impl KeyEntry {
    fn new(kid: Option<String>, key: DecodingKey, algorithms: Vec<Algorithm>) -> Self {
        // Callers never pass an empty list; if they did, jsonwebtoken rejects every token.
        let first = algorithms.first().copied().unwrap_or(Algorithm::RS256);
        let mut validation = Validation::new(first);
        validation.algorithms = algorithms.clone();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        KeyEntry {
            kid,
            key,
            algorithms,
            validation,
        }
    }
}

/// An immutable set of keys. `generation` changes whenever the set is replaced by a different one.
pub struct KeySet {
    pub(crate) entries: Vec<KeyEntry>,
    pub(crate) generation: u64,
    body_hash: u64,
}

impl KeySet {
    pub(crate) fn empty() -> Self {
        KeySet {
            entries: Vec::new(),
            generation: 0,
            body_hash: 0,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Key ids present (for diagnostics).
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|e| e.kid.as_deref())
    }

    /// Selects the key for a token header `kid` (linear scan: key sets are small).
    pub(crate) fn select(&self, kid: Option<&str>) -> Result<&KeyEntry, AuthReason> {
        if self.entries.is_empty() {
            return Err(AuthReason::KeysUnavailable);
        }
        match kid {
            Some(k) => {
                if let Some(e) = self.entries.iter().find(|e| e.kid.as_deref() == Some(k)) {
                    return Ok(e);
                }
                // A single key configured without kid is the default for every token.
                match self.entries.as_slice() {
                    [only] if only.kid.is_none() => Ok(only),
                    _ => Err(AuthReason::UnknownKid),
                }
            }
            None => {
                let mut kidless = self.entries.iter().filter(|e| e.kid.is_none());
                match (kidless.next(), kidless.next()) {
                    (Some(e), None) => Ok(e),
                    _ => Err(AuthReason::MissingKid),
                }
            }
        }
    }
}

/// The configured algorithms that apply to a key of `family`.
fn algs_for(configured: &[Algorithm], family: jsonwebtoken::AlgorithmFamily) -> Vec<Algorithm> {
    configured
        .iter()
        .copied()
        .filter(|a| a.family() == family)
        .collect()
}

/// Builds the static key set for HMAC / PEM sources. Returns `None` for JWKS.
pub(crate) fn static_keys(
    source: &KeySource,
    configured: &[Algorithm],
) -> Result<Option<KeySet>, ConfigError> {
    if configured.is_empty() {
        return Err(ConfigError::BadAlgorithms("no algorithm configured".into()));
    }
    let entries = match source {
        KeySource::HmacSecret { secret, kid } => {
            if let Some(a) = configured
                .iter()
                .find(|a| a.family() != jsonwebtoken::AlgorithmFamily::Hmac)
            {
                return Err(ConfigError::BadAlgorithms(format!(
                    "{a:?} is not an HMAC algorithm but the key is an HMAC secret"
                )));
            }
            if secret.is_empty() {
                return Err(ConfigError::BadKey {
                    what: "hmac secret".into(),
                    detail: "empty".into(),
                });
            }
            let key = DecodingKey::from_secret(secret.as_bytes());
            vec![KeyEntry::new(kid.clone(), key, configured.to_vec())]
        }
        KeySource::PublicKeyPem { files } => {
            if configured
                .iter()
                .any(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
            {
                return Err(ConfigError::BadAlgorithms(
                    "HMAC algorithms cannot be used with public keys".into(),
                ));
            }
            if files.is_empty() {
                return Err(ConfigError::BadKey {
                    what: "public_key_pem".into(),
                    detail: "no files".into(),
                });
            }
            let mut entries: Vec<KeyEntry> = Vec::with_capacity(files.len());
            for f in files {
                let entry = load_pem(f, configured)?;
                if let Some(k) = &entry.kid {
                    if entries.iter().any(|e| e.kid.as_deref() == Some(k)) {
                        return Err(ConfigError::DuplicateKid(k.clone()));
                    }
                }
                entries.push(entry);
            }
            entries
        }
        KeySource::Jwks(_) => {
            if configured
                .iter()
                .any(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
            {
                return Err(ConfigError::BadAlgorithms(
                    "HMAC algorithms cannot be used with a JWKS".into(),
                ));
            }
            return Ok(None);
        }
    };
    Ok(Some(KeySet {
        entries,
        generation: 1,
        body_hash: 0,
    }))
}

fn load_pem(f: &PemKeyFile, configured: &[Algorithm]) -> Result<KeyEntry, ConfigError> {
    let what = f.path.display().to_string();
    let bytes = std::fs::read(&f.path).map_err(|source| ConfigError::KeyFile {
        path: what.clone(),
        source,
    })?;
    // jsonwebtoken parses an RSA *private* key PEM as a decoding key without complaint, but no
    // signature ever verifies against it: refuse private keys outright.
    if let Some(label) = pem_label(&bytes).filter(|l| l.contains("PRIVATE")) {
        return Err(ConfigError::BadKey {
            what,
            detail: format!(
                "the file holds a {label}, not a public key (extract it with \
                 `openssl pkey -in <file> -pubout`)"
            ),
        });
    }
    let key = DecodingKey::from_rsa_pem(&bytes)
        .or_else(|_| DecodingKey::from_ec_pem(&bytes))
        .or_else(|_| DecodingKey::from_ed_pem(&bytes))
        .map_err(|e| ConfigError::BadKey {
            what: what.clone(),
            detail: e.to_string(),
        })?;
    let mut algs = algs_for(configured, key.family());
    let family = match key.family() {
        jsonwebtoken::AlgorithmFamily::Rsa => "RSA",
        jsonwebtoken::AlgorithmFamily::Ec => {
            // The public point's length gives the curve (uncompressed or compressed form), so
            // a P-256 key is never paired with ES384 (every token would then fail at runtime).
            let fits = match key.as_bytes().len() {
                65 | 33 => Some(Algorithm::ES256),
                97 | 49 => Some(Algorithm::ES384),
                _ => None,
            };
            algs.retain(|a| Some(*a) == fits);
            match fits {
                Some(Algorithm::ES256) => "EC P-256",
                Some(_) => "EC P-384",
                None => "EC",
            }
        }
        jsonwebtoken::AlgorithmFamily::Ed => "Ed25519",
        jsonwebtoken::AlgorithmFamily::Hmac => "HMAC",
    };
    if algs.is_empty() {
        let list: Vec<String> = configured.iter().map(|a| format!("{a:?}")).collect();
        return Err(ConfigError::BadAlgorithms(format!(
            "the {family} key in {what} fits none of the configured algorithms ({})",
            list.join(", ")
        )));
    }
    Ok(KeyEntry::new(f.kid.clone(), key, algs))
}

/// The label of the first PEM block (`PUBLIC KEY`, `RSA PRIVATE KEY`, ...).
fn pem_label(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let rest = &text[text.find("-----BEGIN ")? + "-----BEGIN ".len()..];
    Some(rest[..rest.find("-----")?].trim().to_string())
}

/// Parses a JWKS body into a key set. Unusable keys (encryption keys, unsupported types, no
/// allowed algorithm) are skipped; an empty result is an error.
pub(crate) fn parse_jwks(
    body: &[u8],
    configured: &[Algorithm],
) -> Result<Vec<KeyEntry>, FetchError> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| FetchError::Parse(e.to_string()))?;
    let mut entries: Vec<KeyEntry> = Vec::with_capacity(raw.keys.len());
    for value in raw.keys {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(j) => j,
            Err(e) => {
                tracing::debug!(error = %e, "skipping unsupported JWK");
                continue;
            }
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let key = match DecodingKey::from_jwk(&jwk) {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(error = %e, kid = ?jwk.common.key_id, "skipping unusable JWK");
                continue;
            }
        };
        let mut algs = algs_for(configured, key.family());
        if let AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm {
            let fits = match ec.curve {
                EllipticCurve::P256 => Some(Algorithm::ES256),
                EllipticCurve::P384 => Some(Algorithm::ES384),
                _ => None,
            };
            algs.retain(|a| Some(*a) == fits);
        }
        if let Some(ka) = jwk.common.key_algorithm {
            match Algorithm::from_str(&ka.to_string()) {
                Ok(pinned) => algs.retain(|a| *a == pinned),
                Err(_) => algs.clear(),
            }
        }
        if algs.is_empty() {
            continue;
        }
        let kid = jwk.common.key_id.clone();
        if let Some(k) = &kid {
            if entries.iter().any(|e| e.kid.as_deref() == Some(k)) {
                tracing::warn!(kid = %k, "duplicate kid in JWKS, keeping the first");
                continue;
            }
        }
        entries.push(KeyEntry::new(kid, key, algs));
    }
    if entries.is_empty() {
        return Err(FetchError::Parse("no usable signing key".into()));
    }
    Ok(entries)
}

enum Location {
    Url(String),
    File(PathBuf),
}

/// A JWKS-backed key store.
pub(crate) struct JwksSource {
    location: Location,
    client: Option<reqwest::Client>,
    algorithms: Vec<Algorithm>,
    refresh_interval: Duration,
    retry_interval: Duration,
    unknown_kid_min_interval: Duration,
    fetch_timeout: Duration,
    unknown_kid_wait: Duration,
    keys: ArcSwap<KeySet>,
    next_generation: AtomicU64,
    loaded: tokio::sync::watch::Sender<bool>,
    /// Single-flight for fetches (async mutex; only taken off the hot path).
    refresh_lock: tokio::sync::Mutex<()>,
    /// Last on-demand (unknown kid) refresh; the lock is never held across an await.
    last_on_demand: parking_lot::Mutex<Option<Instant>>,
    task: parking_lot::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for JwksSource {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

impl JwksSource {
    pub(crate) fn new(s: &JwksSettings, algorithms: &[Algorithm]) -> Result<Self, ConfigError> {
        let loc = s.location.trim();
        let (location, client) = if loc.starts_with("http://") || loc.starts_with("https://") {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(s.fetch_timeout_ms.max(1)))
                .build()
                .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
            (Location::Url(loc.to_string()), Some(client))
        } else {
            let path = loc.strip_prefix("file://").unwrap_or(loc);
            if path.is_empty() {
                return Err(ConfigError::BadSetting("jwks location is empty".into()));
            }
            (Location::File(PathBuf::from(path)), None)
        };
        let (loaded, _) = tokio::sync::watch::channel(false);
        Ok(JwksSource {
            location,
            client,
            algorithms: algorithms.to_vec(),
            refresh_interval: Duration::from_millis(s.refresh_interval_ms.max(1)),
            retry_interval: Duration::from_millis(s.retry_interval_ms.max(1)),
            unknown_kid_min_interval: Duration::from_millis(s.unknown_kid_min_interval_ms),
            fetch_timeout: Duration::from_millis(s.fetch_timeout_ms.max(1)),
            unknown_kid_wait: Duration::from_millis(s.unknown_kid_wait_ms),
            keys: ArcSwap::from_pointee(KeySet::empty()),
            next_generation: AtomicU64::new(1),
            loaded,
            refresh_lock: tokio::sync::Mutex::new(()),
            last_on_demand: parking_lot::Mutex::new(None),
            task: parking_lot::Mutex::new(None),
        })
    }

    pub(crate) fn keys(&self) -> &ArcSwap<KeySet> {
        &self.keys
    }

    async fn fetch_body(&self) -> Result<Vec<u8>, FetchError> {
        match (&self.location, &self.client) {
            (Location::Url(url), Some(client)) => {
                let resp = client
                    .get(url)
                    .header(http::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| {
                        if e.is_timeout() {
                            FetchError::Timeout
                        } else {
                            FetchError::Transport(e.without_url().to_string())
                        }
                    })?;
                if !resp.status().is_success() {
                    return Err(FetchError::Transport(format!("status {}", resp.status())));
                }
                if resp
                    .content_length()
                    .is_some_and(|l| l > MAX_JWKS_BYTES as u64)
                {
                    return Err(FetchError::Parse("body too large".into()));
                }
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| FetchError::Transport(e.without_url().to_string()))?;
                Ok(body.to_vec())
            }
            (Location::File(path), _) => {
                tokio::time::timeout(self.fetch_timeout, tokio::fs::read(path))
                    .await
                    .map_err(|_| FetchError::Timeout)?
                    .map_err(|e| FetchError::Transport(e.to_string()))
            }
            (Location::Url(_), None) => Err(FetchError::Transport("no http client".into())),
        }
    }

    /// Fetches and swaps in the key set. Serialized with other refreshes.
    pub(crate) async fn refresh(&self) -> Result<(), FetchError> {
        let _guard = self.refresh_lock.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Result<(), FetchError> {
        let body = self.fetch_body().await?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(FetchError::Parse("body too large".into()));
        }
        let mut h = DefaultHasher::new();
        body.hash(&mut h);
        let body_hash = h.finish();
        let current = self.keys.load();
        if !current.entries.is_empty() && current.body_hash == body_hash {
            return Ok(());
        }
        let entries = parse_jwks(&body, &self.algorithms)?;
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        tracing::info!(keys = entries.len(), generation, "JWKS key set updated");
        self.keys.store(Arc::new(KeySet {
            entries,
            generation,
            body_hash,
        }));
        self.loaded.send_replace(true);
        Ok(())
    }

    /// Called after a token named an unknown kid with key-set `seen_generation`. Returns true
    /// when the key set changed (the caller should retry). Rate limited by
    /// `unknown_kid_min_interval` (measured with the injected `now`) and bounded by
    /// `unknown_kid_wait`.
    pub(crate) async fn refresh_for_unknown_kid(&self, seen_generation: u64, now: Instant) -> bool {
        let attempt = async {
            let _guard = self.refresh_lock.lock().await;
            if self.keys.load().generation != seen_generation {
                return true;
            }
            {
                let mut last = self.last_on_demand.lock();
                if let Some(t) = *last {
                    if now.saturating_duration_since(t) < self.unknown_kid_min_interval {
                        return false;
                    }
                }
                *last = Some(now);
            }
            match self.refresh_locked().await {
                Ok(()) => self.keys.load().generation != seen_generation,
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS refresh for unknown kid failed");
                    false
                }
            }
        };
        tokio::time::timeout(self.unknown_kid_wait, attempt)
            .await
            .unwrap_or(false)
    }

    /// Waits until a key set has been loaded, at most `timeout`.
    pub(crate) async fn ready(&self, timeout: Duration) -> bool {
        let mut rx = self.loaded.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|v| *v)).await;
        matches!(res, Ok(Ok(_)))
    }

    /// Starts the background refresh loop (idempotent). Needs a tokio runtime.
    pub(crate) fn start(self: &Arc<Self>) {
        let mut task = self.task.lock();
        if task.is_some() {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let handle = tokio::spawn(async move {
            loop {
                let Some(src) = weak.upgrade() else { return };
                let delay = match src.refresh().await {
                    Ok(()) => src.refresh_interval,
                    Err(e) => {
                        tracing::warn!(error = %e, "JWKS refresh failed; keeping last good key set");
                        src.retry_interval.min(src.refresh_interval)
                    }
                };
                drop(src);
                tokio::time::sleep(delay).await;
            }
        });
        *task = Some(handle.abort_handle());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::AlgorithmFamily;

    fn entry(kid: Option<&str>) -> KeyEntry {
        KeyEntry::new(
            kid.map(str::to_string),
            DecodingKey::from_secret(b"k"),
            vec![Algorithm::HS256],
        )
    }

    fn set(entries: Vec<KeyEntry>) -> KeySet {
        KeySet {
            entries,
            generation: 1,
            body_hash: 0,
        }
    }

    #[test]
    fn selection_rules() {
        let single = set(vec![entry(None)]);
        assert!(single.select(None).is_ok());
        assert!(single.select(Some("anything")).is_ok());

        let kids = set(vec![entry(Some("a")), entry(Some("b"))]);
        assert_eq!(
            kids.select(Some("b")).ok().and_then(|e| e.kid.as_deref()),
            Some("b")
        );
        assert_eq!(kids.select(Some("c")).err(), Some(AuthReason::UnknownKid));
        assert_eq!(kids.select(None).err(), Some(AuthReason::MissingKid));

        let two_kidless = set(vec![entry(None), entry(None)]);
        assert_eq!(two_kidless.select(None).err(), Some(AuthReason::MissingKid));

        let mixed = set(vec![entry(Some("a")), entry(None)]);
        assert!(mixed.select(None).is_ok());
        assert_eq!(mixed.select(Some("z")).err(), Some(AuthReason::UnknownKid));

        assert_eq!(
            KeySet::empty().select(None).err(),
            Some(AuthReason::KeysUnavailable)
        );
    }

    #[test]
    fn jwks_parsing_filters_keys() {
        let body = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"h"},
            {"kty":"EC","crv":"P-256","use":"enc","kid":"e","x":"AA","y":"AA"},
            {"kty":"weird","kid":"w"}
        ]}"#;
        // Only the oct key could parse, and no HMAC alg is configured -> no usable key.
        assert!(parse_jwks(body, &[Algorithm::RS256]).is_err());
        let ok = parse_jwks(body, &[Algorithm::HS256]).unwrap_or_default();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].key.family(), AlgorithmFamily::Hmac);
        assert!(parse_jwks(b"not json", &[Algorithm::RS256]).is_err());
        assert!(parse_jwks(br#"{"keys":[]}"#, &[Algorithm::RS256]).is_err());
    }

    #[test]
    fn hmac_source_rejects_non_hmac_algs() {
        let src = KeySource::HmacSecret {
            secret: "s".into(),
            kid: None,
        };
        assert!(static_keys(&src, &[Algorithm::HS256, Algorithm::RS256]).is_err());
        assert!(static_keys(&src, &[]).is_err());
        assert!(static_keys(&src, &[Algorithm::HS256, Algorithm::HS512]).is_ok());
    }
}
