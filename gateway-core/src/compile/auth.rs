//! JWT policies: the translation of a `jwt` policy into the authenticator's settings (paths resolved,
//! algorithms parsed, defaults applied). Runs once, in the compiler; start-up uses the result as is.
use super::Cx;
use crate::config::{JwtConfig, JwtKeysConfig, JwtMode};
use crate::policy::auth::{
    AuthMode, AuthSettings, CacheSettings, ClaimRequirementSettings, ForwardClaim, JwksSettings,
    KeySource, MatchMode, PemKeyFile, RouteAuthSettings, TokenSources,
};
use std::str::FromStr;

/// Maps the configuration of a jwt policy onto the authenticator's settings.
pub(crate) fn auth_settings(c: &JwtConfig, cx: &Cx) -> Result<AuthSettings, String> {
    let resolve = |p: &str| cx.resolve(p);
    let (keys, algs, cache) = match &c.keys {
        JwtKeysConfig::Hmac { secret, algorithms } => (
            KeySource::HmacSecret {
                secret: secret.clone(),
                kid: None,
            },
            algorithms,
            // HS256 verification (~3 µs: base64, JSON, HMAC) costs more than a cache hit (~0.2 µs); a
            // changed secret builds a new authenticator (the state registry keys it by its settings),
            // so cached tokens never survive a key change
            Some(CacheSettings {
                capacity: 100_000,
                max_ttl_secs: 300,
            }),
        ),
        JwtKeysConfig::Pem { files, algorithms } => (
            KeySource::PublicKeyPem {
                files: files
                    .iter()
                    .map(|f| PemKeyFile {
                        path: resolve(&f.path),
                        kid: f.kid.clone(),
                    })
                    .collect(),
            },
            algorithms,
            Some(CacheSettings {
                capacity: 100_000,
                max_ttl_secs: 300,
            }),
        ),
        JwtKeysConfig::Jwks {
            url,
            path,
            refresh,
            algorithms,
            ..
        } => {
            let location = match (url, path) {
                (Some(u), _) => u.clone(),
                (None, Some(p)) => resolve(p).to_string_lossy().into_owned(),
                (None, None) => return Err("a JWKS source needs url or path".into()),
            };
            let mut j = JwksSettings::new(location);
            j.refresh_interval_ms = refresh.get().as_millis() as u64;
            (
                KeySource::Jwks(j),
                algorithms,
                Some(CacheSettings {
                    capacity: 100_000,
                    max_ttl_secs: 300,
                }),
            )
        }
    };
    let mut algorithms = Vec::new();
    for a in algs {
        algorithms.push(
            jsonwebtoken::Algorithm::from_str(a).map_err(|_| format!("unknown algorithm {a}"))?,
        );
    }
    let mut required = vec!["exp".to_string()];
    required.extend(c.required_claims.iter().cloned());
    required.dedup();
    Ok(AuthSettings {
        realm: c.realm.clone(),
        keys,
        algorithms,
        leeway_secs: c.leeway.get().as_secs(),
        issuers: c.issuer.clone(),
        audiences: c.audience.clone(),
        required_claims: required,
        token_sources: TokenSources {
            bearer_header: true,
            cookie: c.token_from.cookie.clone(),
            query_param: c.token_from.query.clone(),
            ..TokenSources::default()
        },
        forward_claims: c
            .forward
            .iter()
            .map(|f| ForwardClaim {
                claim: f.claim.clone(),
                header: f.header.clone(),
            })
            .collect(),
        cache,
    })
}

pub(crate) fn route_auth(c: &JwtConfig) -> RouteAuthSettings {
    let mut require = Vec::new();
    if let Some(r) = &c.require {
        if !r.any_of.is_empty() {
            require.push(ClaimRequirementSettings {
                claim: r.claim.clone(),
                values: r.any_of.clone(),
                match_mode: MatchMode::AnyOf,
            });
        }
        if !r.all_of.is_empty() {
            require.push(ClaimRequirementSettings {
                claim: r.claim.clone(),
                values: r.all_of.clone(),
                match_mode: MatchMode::AllOf,
            });
        }
    }
    RouteAuthSettings {
        mode: if c.mode == JwtMode::Optional {
            AuthMode::Optional
        } else {
            AuthMode::Required
        },
        require,
    }
}
