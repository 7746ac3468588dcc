//! Policies: rate limits and JWT auth, checked once, referenced by handle.
use super::auth::{auth_settings, route_auth};
use super::{Broken, Cx};
use crate::config::{Config, JwtKeysConfig, PolicyConfig, RateKeyConfig, RateStoreConfig};
use crate::diag::did_you_mean;
use crate::plan::{AuthId, AuthPlan, LimitId, RateBackend, RateKey, RateLimitPlan, RedisConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PolicyHandle {
    Limit(LimitId),
    Auth(AuthId),
}

pub(crate) struct Policies {
    /// By position in `policies:`; `None` for elements that failed to deserialize.
    pub handles: Vec<Option<PolicyHandle>>,
    pub limits: Vec<Option<RateLimitPlan>>,
    pub auths: Vec<Option<AuthPlan>>,
    /// Whether a rate limit is keyed by a JWT claim (to warn on routes without auth).
    pub limit_uses_jwt: Vec<bool>,
    /// The one Redis server of the Redis-backed limits.
    pub redis: Option<RedisConfig>,
}

pub const HS_ALGS: &[&str] = &["HS256", "HS384", "HS512"];
pub const ASYM_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

pub(crate) fn policies(cfg: &Config, cx: &mut Cx) -> Policies {
    let mut out = Policies {
        handles: vec![],
        limits: vec![],
        auths: vec![],
        limit_uses_jwt: vec![],
        redis: None,
    };
    let mut stores: Vec<(usize, RedisConfig)> = Vec::new();
    for (i, p) in cfg.policies.iter().enumerate() {
        let base = format!("policies[{i}]");
        let handle = match p {
            None => None,
            Some(PolicyConfig::RateLimit(r)) => {
                let (ok, store) = check_limit(cx, &base, r);
                stores.extend(store.map(|s| (i, s)));
                out.limit_uses_jwt.push(key_uses_jwt(&r.key));
                out.limits.push(ok.then(|| RateLimitPlan {
                    name: Arc::from(r.name.as_str()),
                    window: r.window.get(),
                    max: r.max,
                    key: key_spec(&r.key),
                    scope: r.scope,
                    backend: match r.store {
                        RateStoreConfig::Local {} => RateBackend::Local,
                        RateStoreConfig::Redis { .. } => RateBackend::Redis,
                    },
                    mode: r.mode,
                    on_store_error: r.on_store_error,
                    headers: r.headers,
                }));
                Some(PolicyHandle::Limit(out.limits.len() as u32 - 1))
            }
            Some(PolicyConfig::Jwt(j)) => {
                let settings = check_jwt(cx, &base, j);
                out.auths.push(settings.map(|settings| AuthPlan {
                    name: Arc::from(j.name.as_str()),
                    settings,
                    route: route_auth(j),
                    ready_timeout: match &j.keys {
                        JwtKeysConfig::Jwks { ready_timeout, .. } => ready_timeout.get(),
                        _ => Duration::from_secs(1),
                    },
                }));
                Some(PolicyHandle::Auth(out.auths.len() as u32 - 1))
            }
        };
        out.handles.push(handle);
    }
    // the limiter talks to one Redis: every Redis-backed limit must name the same one
    let mut first_redis: Option<(usize, RedisConfig)> = None;
    for (i, rc) in stores {
        match &first_redis {
            None => {
                out.redis = Some(rc.clone());
                first_redis = Some((i, rc));
            }
            Some((j, first))
                if (&first.url, &first.topology, first.outage_share_ppm)
                    != (&rc.url, &rc.topology, rc.outage_share_ppm) =>
            {
                let line = cx.spans.value(&format!("policies[{j}].store")).line;
                cx.error(
                    &format!("policies[{i}].store"),
                    format!("all Redis-backed limits must use one Redis store; line {line} uses another"),
                    Some("point every Redis-backed limit at the same server, cluster or sentinels".into()),
                );
            }
            Some(_) => {}
        }
    }
    out
}

/// The limiter's form of a checked key (header names parsed).
fn key_spec(k: &RateKeyConfig) -> RateKey {
    match k {
        RateKeyConfig::ClientIp {} => RateKey::ClientIp,
        RateKeyConfig::JwtClaim { claim, fallback } => RateKey::JwtClaim {
            // checked by `check_key`; a limit with a bad path never reaches the plan
            claim: crate::policy::auth::ClaimPath::parse(claim)
                .unwrap_or_else(|| crate::policy::auth::ClaimPath::literal(claim)),
            fallback: *fallback,
        },
        RateKeyConfig::Header { name, fallback } => RateKey::Header {
            // checked by `check_key`; a limit with a bad name never reaches the plan
            name: http::HeaderName::from_bytes(name.as_bytes())
                .unwrap_or(http::HeaderName::from_static("x-invalid")),
            fallback: *fallback,
        },
        RateKeyConfig::Route {} => RateKey::Route,
        RateKeyConfig::Composite { parts } => {
            RateKey::Composite(parts.iter().map(key_spec).collect())
        }
    }
}

/// A key that needs a JWT claim and has no fallback for requests without one.
fn key_uses_jwt(k: &RateKeyConfig) -> bool {
    match k {
        RateKeyConfig::JwtClaim { fallback, .. } => fallback.is_none(),
        RateKeyConfig::Composite { parts } => parts.iter().any(key_uses_jwt),
        _ => false,
    }
}

/// Checks a limit; returns whether it is valid and its Redis store (if any, and valid).
fn check_limit(
    cx: &mut Cx,
    base: &str,
    r: &crate::config::RateLimitConfig,
) -> (bool, Option<RedisConfig>) {
    let before = cx.error_count();
    cx.positive(&format!("{base}.window"), r.window.get());
    if r.max == 0 {
        cx.error(
            &format!("{base}.max"),
            "max must be at least 1",
            Some("to block a route entirely, remove it instead".into()),
        );
    }
    check_key(cx, &format!("{base}.key"), &r.key);
    let store = super::store::redis_config(cx, base, &r.store);
    (cx.error_count() == before, store)
}

fn check_key(cx: &mut Cx, path: &str, k: &RateKeyConfig) {
    match k {
        RateKeyConfig::Header { name, .. } => {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                cx.error(
                    &format!("{path}.name"),
                    format!("invalid header name \"{name}\""),
                    None,
                );
            }
        }
        RateKeyConfig::JwtClaim { claim, .. } => {
            if claim.is_empty() {
                cx.error(
                    &format!("{path}.claim"),
                    "claim must not be empty",
                    Some("e.g. sub".into()),
                );
            } else if crate::policy::auth::ClaimPath::parse(claim).is_none() {
                // as for a jwt policy's `require` and `forward`: a path with an empty part
                // never matched, so every request fell back
                cx.error(
                    &format!("{path}.claim"),
                    format!("invalid claim path \"{claim}\""),
                    Some("dotted names without empty parts, e.g. sub or tenant.id".into()),
                );
            }
        }
        RateKeyConfig::Composite { parts } => {
            if parts.is_empty() {
                cx.error(path, "a composite key needs at least one part", None);
            }
            for (i, p) in parts.iter().enumerate() {
                check_key(cx, &format!("{path}.parts[{i}]"), p);
            }
        }
        RateKeyConfig::ClientIp {} | RateKeyConfig::Route {} => {}
    }
}

/// Checks a jwt policy; its authenticator settings when it is valid.
fn check_jwt(
    cx: &mut Cx,
    base: &str,
    j: &crate::config::JwtConfig,
) -> Option<crate::policy::auth::AuthSettings> {
    let before = cx.error_count();
    let keys = format!("{base}.keys");
    let (algs, allowed): (&Vec<String>, &[&str]) = match &j.keys {
        JwtKeysConfig::Hmac { secret, algorithms } => {
            if secret.is_empty() {
                cx.error(
                    &format!("{keys}.secret"),
                    "the HMAC secret is empty",
                    Some("set it from the environment: secret: ${JWT_SECRET}".into()),
                );
            } else if secret.len() < 32 {
                cx.warning(
                    &format!("{keys}.secret"),
                    format!(
                        "the HMAC secret is only {} bytes; use at least 32",
                        secret.len()
                    ),
                    None,
                );
            }
            (algorithms, HS_ALGS)
        }
        JwtKeysConfig::Pem { files, algorithms } => {
            if files.is_empty() {
                cx.error(
                    &format!("{keys}.files"),
                    "list at least one PEM key file",
                    None,
                );
            }
            for (i, f) in files.iter().enumerate() {
                let p = format!("{keys}.files[{i}].path");
                let path = cx.resolve(&f.path);
                match std::fs::read_to_string(&path) {
                    Ok(t) if t.contains("-----BEGIN") && t.contains("KEY-----") => {}
                    Ok(_) => cx.error(
                        &p,
                        format!("{} is not a PEM public key", path.display()),
                        None,
                    ),
                    Err(e) => cx.error(
                        &p,
                        format!("cannot read {}: {e}", path.display()),
                        Some(
                            "relative paths are resolved against the configuration file's folder"
                                .into(),
                        ),
                    ),
                }
            }
            if files.len() > 1 && files.iter().any(|f| f.kid.is_none()) {
                cx.error(
                    &format!("{keys}.files"),
                    "with several keys, every key needs a kid",
                    Some("tokens pick their key by the kid header".into()),
                );
            }
            (algorithms, ASYM_ALGS)
        }
        JwtKeysConfig::Jwks {
            url,
            path,
            refresh,
            ready_timeout,
            algorithms,
        } => {
            match (url, path) {
                (Some(_), Some(_)) | (None, None) => cx.error(
                    &keys,
                    "a JWKS key source needs exactly one of url or path",
                    None,
                ),
                (Some(u), None) if !(u.starts_with("https://") || u.starts_with("http://")) => cx
                    .error(
                        &format!("{keys}.url"),
                        format!("invalid JWKS URL \"{u}\""),
                        Some("use https://...".into()),
                    ),
                (None, Some(p)) => {
                    let f = cx.resolve(p);
                    if !f.is_file() {
                        cx.error(
                            &format!("{keys}.path"),
                            format!("JWKS file {} does not exist", f.display()),
                            None,
                        );
                    }
                }
                _ => {}
            }
            cx.positive(&format!("{keys}.refresh"), refresh.get());
            cx.positive(&format!("{keys}.ready_timeout"), ready_timeout.get());
            (algorithms, ASYM_ALGS)
        }
    };
    if algs.is_empty() {
        cx.error(
            &format!("{keys}.algorithms"),
            "list the accepted algorithms",
            Some(format!("one or more of {}", allowed.join(", "))),
        );
    }
    for (i, a) in algs.iter().enumerate() {
        if !allowed.contains(&a.as_str()) {
            let all: Vec<&str> = HS_ALGS.iter().chain(ASYM_ALGS).copied().collect();
            let hint = if all.contains(&a.as_str()) {
                Some(format!(
                    "{a} does not fit this key type; accepted here: {}",
                    allowed.join(", ")
                ))
            } else {
                did_you_mean(a, all.iter().copied())
            };
            cx.error(
                &format!("{keys}.algorithms[{i}]"),
                format!("algorithm \"{a}\" is not allowed for this key"),
                hint,
            );
        }
    }
    if let Some(r) = &j.require {
        if r.any_of.is_empty() && r.all_of.is_empty() {
            cx.error(
                &format!("{base}.require"),
                "require needs any_of or all_of",
                None,
            );
        }
        if r.claim.is_empty() {
            cx.error(
                &format!("{base}.require.claim"),
                "claim must not be empty",
                Some("e.g. roles, realm_access.roles or scope".into()),
            );
        } else if crate::policy::auth::ClaimPath::parse(&r.claim).is_none() {
            cx.error(
                &format!("{base}.require.claim"),
                format!("invalid claim path \"{}\"", r.claim),
                Some("dotted names without empty parts, e.g. realm_access.roles".into()),
            );
        }
    }
    for (i, f) in j.forward.iter().enumerate() {
        if crate::policy::auth::ClaimPath::parse(&f.claim).is_none() {
            cx.error(
                &format!("{base}.forward[{i}].claim"),
                format!("invalid claim path \"{}\"", f.claim),
                Some("dotted names without empty parts, e.g. sub or realm_access.roles".into()),
            );
        }
        if http::HeaderName::from_bytes(f.header.as_bytes()).is_err() {
            cx.error(
                &format!("{base}.forward[{i}].header"),
                format!("invalid header name \"{}\"", f.header),
                None,
            );
        }
    }
    if cx.error_count() != before {
        return None;
    }
    let settings = match auth_settings(j, cx) {
        Ok(s) => s,
        Err(e) => {
            cx.error(&keys, e, None);
            return None;
        }
    };
    // Build the key material exactly as the runtime will (PEM parsing, algorithm/key fit), so
    // `gw validate` fails where `gw serve` would. JWKS sources are skipped: validation stays
    // offline.
    if !matches!(j.keys, JwtKeysConfig::Jwks { .. }) {
        check_key_material(cx, base, j, &settings);
    }
    (cx.error_count() == before).then_some(settings)
}

/// Runs `Authenticator::new` on the settings and reports a failure at the policy's `keys` (or
/// `realm`), with key files named as written in the configuration.
fn check_key_material(
    cx: &mut Cx,
    base: &str,
    j: &crate::config::JwtConfig,
    settings: &crate::policy::auth::AuthSettings,
) {
    use crate::policy::auth::{Authenticator, ConfigError};
    let keys = format!("{base}.keys");
    let Err(e) = Authenticator::new(settings) else {
        return;
    };
    let (path, hint) = match &e {
        ConfigError::BadRealm => (format!("{base}.realm"), None),
        ConfigError::BadAlgorithms(_) => (
            keys,
            Some(
                "RSA keys take RS256/384/512 and PS256/384/512, EC P-256 keys ES256, \
                 EC P-384 keys ES384, Ed25519 keys EdDSA"
                    .to_string(),
            ),
        ),
        _ => (keys, None),
    };
    let mut msg = e.to_string();
    if let JwtKeysConfig::Pem { files, .. } = &j.keys {
        for f in files {
            msg = msg.replace(&cx.resolve(&f.path).display().to_string(), &f.path);
        }
    }
    cx.error(&path, msg, hint);
}

/// Resolves a list of policy names at `path`; unknown names are errors with a suggestion.
pub(crate) fn resolve_refs(
    cx: &mut Cx,
    path: &dyn std::fmt::Display,
    names: &[String],
    index: &HashMap<&str, u32>,
    pols: &Policies,
    broken: Broken,
) -> Vec<PolicyHandle> {
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        match index.get(n.as_str()) {
            Some(&idx) => {
                if let Some(h) = pols.handles[idx as usize] {
                    if out.contains(&h) {
                        cx.warning(
                            &format!("{path}[{i}]"),
                            format!("policy \"{n}\" is listed twice"),
                            None,
                        );
                    } else {
                        out.push(h);
                    }
                }
            }
            None if broken.policies => {}
            None => cx.error(
                &format!("{path}[{i}]"),
                format!("unknown policy \"{n}\""),
                did_you_mean(n, index.keys().copied())
                    .or_else(|| Some("define it under policies:".into())),
            ),
        }
    }
    out
}
