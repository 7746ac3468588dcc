//! The data model of a test file (`gw test`): what a user writes, deserialized section by section so
//! that every mistake gets its own positioned diagnostic (unknown fields are denied everywhere).
use crate::config::Dur;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// The top-level sections of a test file.
pub const SECTIONS: &[&str] = &["env", "clock", "keys", "defaults", "cases"];

/// `clock:` — where the simulated clock starts for every case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSpec {
    /// RFC 3339 instant, e.g. `2026-01-01T00:00:00Z` (the default).
    pub start: String,
}

/// `keys:` — a signing key the cases can sign tokens with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDecl {
    /// Name used by `request.jwt.key`.
    pub name: String,
    /// An HMAC secret (HS256/384/512).
    #[serde(default)]
    pub hmac: Option<String>,
    /// A PEM private key file (RSA, EC P-256/P-384 or Ed25519), relative to the test file.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The matching PEM public key file: needed when the key `verifies` a policy.
    #[serde(default)]
    pub public_key: Option<PathBuf>,
    /// `kid` put in the token header (and given to the substituted key).
    #[serde(default)]
    pub kid: Option<String>,
    /// jwt policies of the configuration that verify with this key instead of their configured
    /// keys during the test run (for JWKS URLs and public keys whose private half is not at hand).
    #[serde(default)]
    pub verifies: Vec<String>,
}

/// `defaults:` — request fields applied to every case (a case's own values win; headers merge).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
}

/// One test case: a request and what must happen to it (`expect`), or a sequence of `steps`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub request: RequestSpec,
    /// Send the request this many times (shorthand for one step).
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Simulated time between two repeats (default 0).
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub expect: Option<Expect>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One step of a sequence: advance the clock, send the request `repeat` times, check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Simulated time that passes before this step.
    #[serde(default)]
    pub advance: Option<Dur>,
    #[serde(default)]
    pub repeat: Option<u32>,
    #[serde(default)]
    pub interval: Option<Dur>,
    pub expect: Expect,
}

/// The request of a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Default `GET` (or `defaults.method`).
    #[serde(default)]
    pub method: Option<String>,
    /// Path with optional query string, exactly as a client sends it.
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The connecting address (default `127.0.0.1`, or `defaults.client_ip`).
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
    /// A token signed by the runner, sent as `Authorization: Bearer ...`.
    #[serde(default)]
    pub jwt: Option<JwtSpec>,
    /// A literal token, sent as `Authorization: Bearer ...`.
    #[serde(default)]
    pub token: Option<String>,
}

/// A token to sign: claims plus the name of a test key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    pub key: String,
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Force an algorithm (default: the first one the route's policy pins that fits the key).
    #[serde(default)]
    pub algorithm: Option<String>,
    /// `exp` relative to the simulated now, e.g. `1h` or `-5m` (default `1h`; an `exp` claim wins).
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// What a case checks. Only the fields given are checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The matched route's name, or `none`.
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub upstream: Option<String>,
    /// Path and query sent upstream after the rewrite.
    #[serde(default)]
    pub upstream_path: Option<String>,
    /// `Host` sent upstream.
    #[serde(default)]
    pub upstream_host: Option<String>,
    /// The status of the gateway's own answer, or `proxy` when the request goes upstream.
    #[serde(default)]
    pub status: Option<StatusExpect>,
    /// The error code of the gateway's own answer (`no_route`, `rate_limited`, `missing_token`, ...).
    #[serde(default)]
    pub error: Option<String>,
    /// Names of the configuration's policies that run, in order.
    #[serde(default)]
    pub policies: Option<Vec<String>>,
    /// The rate limits checked, in order, with their keys and quotas.
    #[serde(default)]
    pub limits: Option<Vec<LimitExpect>>,
    /// Headers of the request sent upstream (`~` = must be absent), e.g. forwarded claims.
    #[serde(default)]
    pub upstream_headers: Option<BTreeMap<String, Option<String>>>,
    /// Headers the gateway puts on its answer (`~` = must be absent): `RateLimit`, `Retry-After`,
    /// `WWW-Authenticate`, `Allow`, ...
    #[serde(default)]
    pub headers: Option<BTreeMap<String, Option<String>>>,
    /// `accept`, `anonymous`, `none` (no auth ran), or the rejection reason (`missing`, `expired`,
    /// `bad_signature`, `insufficient_scope`, ...).
    #[serde(default)]
    pub auth: Option<String>,
    /// In a repeated step: the first `admitted` requests go through, every later one gets 429.
    #[serde(default)]
    pub admitted: Option<u32>,
}

/// One rate limit a request is checked against.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitExpect {
    /// The rate_limit policy's name.
    pub policy: String,
    /// The counter key, e.g. `r:auth-login|ip:203.0.113.7`.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub max: Option<u64>,
    #[serde(default)]
    pub window: Option<Dur>,
    /// Whole units left after this request.
    #[serde(default)]
    pub remaining: Option<u64>,
}

/// `status:` — a local answer's status code, or `proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusExpect {
    /// Forwarded upstream.
    Proxy,
    /// Answered by the gateway with this status.
    Local(u16),
}

impl fmt::Display for StatusExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusExpect::Proxy => f.write_str("proxy"),
            StatusExpect::Local(s) => write!(f, "{s}"),
        }
    }
}

impl<'de> Deserialize<'de> for StatusExpect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusExpect;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code (100-599) or \"proxy\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusExpect, E> {
                match u16::try_from(v) {
                    Ok(s) if (100..=599).contains(&s) => Ok(StatusExpect::Local(s)),
                    _ => Err(E::custom(format!("status {v} is not between 100 and 599"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusExpect, E> {
                Err(E::custom(format!("status {v} is not between 100 and 599")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusExpect, E> {
                match v {
                    "proxy" => Ok(StatusExpect::Proxy),
                    _ => Err(E::custom(format!(
                        "status {v:?}: write a status code (e.g. 429) or \"proxy\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}
