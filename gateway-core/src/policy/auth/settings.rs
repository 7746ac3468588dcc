//! Plain settings structs (filled by the config loader, e.g. from YAML via serde).
//!
//! Nothing here is validated; [`super::Authenticator::new`] and [`super::RoutePolicy::new`]
//! validate and pre-compile them.

use std::path::PathBuf;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// Global JWT settings for one authenticator (one issuer/key source).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Realm in `WWW-Authenticate` (printable ASCII, no `"` or `\`).
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Where verification keys come from.
    pub keys: KeySource,
    /// Allowed algorithms. HMAC sources: all must be HS*. Public keys / JWKS: each key accepts
    /// the subset matching its key type (RSA → RS*/PS*, EC → ES*, OKP → EdDSA).
    pub algorithms: Vec<Algorithm>,
    /// Leeway for `exp`/`nbf`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Accepted issuers (`iss` must equal one). Empty: `iss` not checked.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Accepted audiences (`aud` must contain any). Empty: `aud` not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Claims that must be present (top-level names or dotted paths), e.g. `["exp", "sub"]`.
    #[serde(default = "default_required")]
    pub required_claims: Vec<String>,
    /// Where to look for the token.
    #[serde(default)]
    pub token_sources: TokenSources,
    /// Claims forwarded upstream as request headers.
    #[serde(default)]
    pub forward_claims: Vec<ForwardClaim>,
    /// Verified-token cache; `None` disables it.
    #[serde(default)]
    pub cache: Option<CacheSettings>,
}

fn default_realm() -> String {
    "gateway".to_string()
}
fn default_leeway() -> u64 {
    30
}
fn default_required() -> Vec<String> {
    vec!["exp".to_string()]
}

/// Key material source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// Shared HMAC secret (raw bytes of the string).
    HmacSecret {
        /// The secret.
        secret: String,
        /// Optional key id.
        #[serde(default)]
        kid: Option<String>,
    },
    /// One or more PEM public keys (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`).
    PublicKeyPem {
        /// Key files.
        files: Vec<PemKeyFile>,
    },
    /// A JWK Set from a file or an http(s) URL.
    Jwks(JwksSettings),
}

/// A PEM public key file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemKeyFile {
    /// File path.
    pub path: PathBuf,
    /// Optional key id.
    #[serde(default)]
    pub kid: Option<String>,
}

/// JWKS source settings (all intervals in milliseconds).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSettings {
    /// `http://…`/`https://…` URL, or a file path (optionally `file://` prefixed).
    pub location: String,
    /// Periodic refresh interval.
    #[serde(default = "d_refresh")]
    pub refresh_interval_ms: u64,
    /// Retry interval while no key set was ever loaded (and after a failed periodic refresh).
    #[serde(default = "d_retry")]
    pub retry_interval_ms: u64,
    /// Minimum time between two refreshes triggered by an unknown `kid`.
    #[serde(default = "d_min_unknown")]
    pub unknown_kid_min_interval_ms: u64,
    /// Timeout of one fetch.
    #[serde(default = "d_fetch_timeout")]
    pub fetch_timeout_ms: u64,
    /// How long a request with an unknown `kid` may wait for the refresh.
    #[serde(default = "d_unknown_wait")]
    pub unknown_kid_wait_ms: u64,
}

fn d_refresh() -> u64 {
    300_000
}
fn d_retry() -> u64 {
    5_000
}
fn d_min_unknown() -> u64 {
    10_000
}
fn d_fetch_timeout() -> u64 {
    5_000
}
fn d_unknown_wait() -> u64 {
    2_000
}

impl JwksSettings {
    /// Settings with defaults for `location`.
    pub fn new(location: impl Into<String>) -> Self {
        JwksSettings {
            location: location.into(),
            refresh_interval_ms: d_refresh(),
            retry_interval_ms: d_retry(),
            unknown_kid_min_interval_ms: d_min_unknown(),
            fetch_timeout_ms: d_fetch_timeout(),
            unknown_kid_wait_ms: d_unknown_wait(),
        }
    }
}

/// Token locations, tried in order: `Authorization: Bearer`, cookie, query parameter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSources {
    /// Read `Authorization: Bearer <token>` (default true).
    #[serde(default = "d_true")]
    pub bearer_header: bool,
    /// Cookie name carrying the token.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Query parameter carrying the token.
    #[serde(default)]
    pub query_param: Option<String>,
    /// Tokens longer than this are rejected as malformed before any parsing.
    #[serde(default = "d_max_len")]
    pub max_token_len: usize,
}

fn d_true() -> bool {
    true
}
fn d_max_len() -> usize {
    8192
}

impl Default for TokenSources {
    fn default() -> Self {
        TokenSources {
            bearer_header: true,
            cookie: None,
            query_param: None,
            max_token_len: d_max_len(),
        }
    }
}

/// One forwarded claim: value of `claim` (dotted path) sent upstream as `header`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardClaim {
    /// Claim path, e.g. `sub` or `realm_access.roles`.
    pub claim: String,
    /// Header name, e.g. `X-User-Id`.
    pub header: String,
}

/// Verified-token cache settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Maximum number of cached tokens.
    pub capacity: usize,
    /// Upper bound on an entry's life (it also never outlives the token's `exp`).
    #[serde(default = "d_cache_ttl")]
    pub max_ttl_secs: u64,
}

fn d_cache_ttl() -> u64 {
    300
}

/// Per-route requirement.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthSettings {
    /// Required, optional or off.
    pub mode: AuthMode,
    /// All of these must hold (each is any-of / all-of over one claim).
    #[serde(default)]
    pub require: Vec<ClaimRequirementSettings>,
}

/// Whether a route needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A valid token is required.
    Required,
    /// A token is verified if present (an invalid present token is still a 401).
    Optional,
    /// No authentication.
    Off,
}

/// Roles/scopes required from one claim.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequirementSettings {
    /// Dotted claim path (`roles`, `realm_access.roles`, `scope`); the value may be an array of
    /// strings or a space-separated string.
    pub claim: String,
    /// Required values.
    pub values: Vec<String>,
    /// Any-of (default) or all-of.
    #[serde(default, rename = "match")]
    pub match_mode: MatchMode,
}

/// How required values are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// At least one required value present.
    #[default]
    AnyOf,
    /// Every required value present.
    AllOf,
}
