//! Authentication / authorization failures and configuration errors.
//!
//! An [`AuthError`] carries everything the proxy needs to answer the client: the HTTP status
//! (401 or 403), the machine-readable error code for the JSON body, a *safe* description (a
//! static string: it never contains the token, a key or a secret), a low-cardinality reason label
//! for metrics, and the exact `WWW-Authenticate` challenge (RFC 6750 §3).

use std::sync::Arc;

use http::HeaderValue;

/// Why a request was rejected; `as_str` is the metrics label (bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthReason {
    /// No token was presented.
    Missing,
    /// Token present but not a well-formed JWT (bad base64/JSON/shape, bad claim types, too long).
    Malformed,
    /// `exp` is in the past (beyond leeway).
    Expired,
    /// `nbf` is in the future (beyond leeway).
    NotYetValid,
    /// Signature did not verify with the selected key.
    BadSignature,
    /// `iss` missing or not one of the configured issuers.
    BadIssuer,
    /// `aud` missing or none of the configured audiences.
    BadAudience,
    /// Header `kid` names no configured key (also after a JWKS refresh).
    UnknownKid,
    /// Token has no `kid` and the key set does not have a single kid-less key.
    MissingKid,
    /// Header `alg` is `none`, unknown, or not allowed for the selected key.
    DisallowedAlg,
    /// A configured required claim is absent.
    MissingClaim,
    /// No key material is loaded yet (JWKS never fetched successfully).
    KeysUnavailable,
    /// Token valid but lacks the required roles/scopes (403).
    InsufficientScope,
}

impl AuthReason {
    /// Metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthReason::Missing => "missing",
            AuthReason::Malformed => "malformed",
            AuthReason::Expired => "expired",
            AuthReason::NotYetValid => "not_yet_valid",
            AuthReason::BadSignature => "bad_signature",
            AuthReason::BadIssuer => "bad_issuer",
            AuthReason::BadAudience => "bad_audience",
            AuthReason::UnknownKid => "unknown_kid",
            AuthReason::MissingKid => "missing_kid",
            AuthReason::DisallowedAlg => "disallowed_alg",
            AuthReason::MissingClaim => "missing_claim",
            AuthReason::KeysUnavailable => "keys_unavailable",
            AuthReason::InsufficientScope => "insufficient_scope",
        }
    }

    /// Safe, static description (goes into `error_description` and the JSON body).
    pub const fn description(self) -> &'static str {
        match self {
            AuthReason::Missing => "authentication required",
            AuthReason::Malformed => "malformed token",
            AuthReason::Expired => "token expired",
            AuthReason::NotYetValid => "token not yet valid",
            AuthReason::BadSignature => "invalid token signature",
            AuthReason::BadIssuer => "invalid token issuer",
            AuthReason::BadAudience => "invalid token audience",
            AuthReason::UnknownKid => "unknown signing key",
            AuthReason::MissingKid => "token has no key id",
            AuthReason::DisallowedAlg => "token algorithm not allowed",
            AuthReason::MissingClaim => "token lacks a required claim",
            AuthReason::KeysUnavailable => "signing keys unavailable",
            AuthReason::InsufficientScope => "insufficient role or scope",
        }
    }
}

/// A rejected request. Cheap to build (one `Arc` clone of the realm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    reason: AuthReason,
    realm: Arc<str>,
}

impl AuthError {
    /// Builds an error for `reason` in `realm` (realm is validated at config time).
    pub fn new(reason: AuthReason, realm: Arc<str>) -> Self {
        AuthError { reason, realm }
    }

    /// Reason (metrics label via [`AuthReason::as_str`]).
    pub fn reason(&self) -> AuthReason {
        self.reason
    }

    /// HTTP status: 403 for insufficient scope, 401 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self.reason {
            AuthReason::InsufficientScope => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }

    /// Error code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self.reason {
            AuthReason::Missing => "missing_token",
            AuthReason::Expired => "token_expired",
            AuthReason::InsufficientScope => "insufficient_scope",
            _ => "invalid_token",
        }
    }

    /// Safe description (never contains token or key material).
    pub fn description(&self) -> &'static str {
        self.reason.description()
    }

    /// The RFC 6750 `error` attribute, `None` for a missing token.
    fn challenge_error(&self) -> Option<&'static str> {
        match self.reason {
            AuthReason::Missing => None,
            AuthReason::InsufficientScope => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }

    /// Exact `WWW-Authenticate` value.
    pub fn www_authenticate(&self) -> String {
        match self.challenge_error() {
            None => format!("Bearer realm=\"{}\"", self.realm),
            Some(err) => format!(
                "Bearer realm=\"{}\", error=\"{}\", error_description=\"{}\"",
                self.realm,
                err,
                self.description()
            ),
        }
    }

    /// `WWW-Authenticate` as a header value (realm is validated, so this never falls back in
    /// practice; the fallback is a bare `Bearer`).
    pub fn www_authenticate_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.www_authenticate())
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// JSON body: `{"error":"<code>","error_description":"<desc>"}`.
    pub fn json_body(&self) -> String {
        serde_json::json!({ "error": self.code(), "error_description": self.description() })
            .to_string()
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.description(), self.reason.as_str())
    }
}

impl std::error::Error for AuthError {}

/// Invalid settings or unusable key material, reported when the authenticator is built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Realm contains characters that cannot appear in a quoted-string.
    #[error("invalid realm: must be printable ASCII without '\"' or '\\'")]
    BadRealm,
    /// No algorithm configured, or algorithms incompatible with the key source.
    #[error("invalid algorithms: {0}")]
    BadAlgorithms(String),
    /// A key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    KeyFile {
        /// File path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// A key could not be parsed.
    #[error("invalid key {what}: {detail}")]
    BadKey {
        /// Which key (path or kid).
        what: String,
        /// Parser message.
        detail: String,
    },
    /// Duplicate key id in the static configuration.
    #[error("duplicate kid {0:?}")]
    DuplicateKid(String),
    /// Bad claim path or forwarded header name.
    #[error("invalid setting {0}")]
    BadSetting(String),
    /// HTTP client could not be built.
    #[error("http client: {0}")]
    HttpClient(String),
}

/// A JWKS fetch failure (logged; the last good key set is kept).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Transport or HTTP status error.
    #[error("fetch failed: {0}")]
    Transport(String),
    /// Timed out.
    #[error("fetch timed out")]
    Timeout,
    /// Body is not a JWKS or holds no usable key.
    #[error("bad jwks: {0}")]
    Parse(String),
}
