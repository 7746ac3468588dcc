//! Shared helpers of the `auth_*` tests: a fixed clock, standard claims and settings, and the
//! fixture keys. Token signing, JWKs and the JWKS server come from `gateway_testkit`
//! (`jwt`, `jwks`), re-exported here.
// Each test binary includes this module and uses a part of it.
#![allow(dead_code, unused_imports)]

use std::sync::LazyLock;
use std::time::Instant;

use gateway_core::policy::auth::{AuthSettings, KeySource, Now, PemKeyFile, TokenSources};
pub use gateway_testkit::jwks::JwksServer;
use gateway_testkit::jwt::Keys;
pub use gateway_testkit::jwt::{jwks, sign, with};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

pub const NOW: u64 = 1_700_000_000;
pub const SECRET: &str = "test-hmac-secret-0123456789abcdef";

/// The fixture keys (`rsa`, `rsa2`, `ec`, `ed`; `tests/fixtures/keys`) and [`SECRET`] (`hmac`).
pub static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::fixtures(SECRET));

pub fn now() -> Now {
    Now {
        unix_secs: NOW,
        instant: Instant::now(),
    }
}

/// Standard valid claims at NOW.
pub fn claims() -> Value {
    json!({
        "sub": "user-1",
        "iss": "https://issuer.test",
        "aud": ["api", "other"],
        "exp": NOW + 600,
        "iat": NOW,
        "roles": ["reader", "writer"],
        "scope": "read write  admin:view",
        "realm_access": {"roles": ["ops"]},
        "email": "u1@example.test"
    })
}

pub fn settings(keys: KeySource, algs: &[Algorithm]) -> AuthSettings {
    AuthSettings {
        realm: "api".into(),
        keys,
        algorithms: algs.to_vec(),
        leeway_secs: 30,
        issuers: vec![
            "https://issuer.test".into(),
            "https://other-issuer.test".into(),
        ],
        audiences: vec!["api".into()],
        required_claims: vec!["exp".into(), "sub".into()],
        token_sources: TokenSources::default(),
        forward_claims: Vec::new(),
        cache: None,
    }
}

pub fn hmac_source() -> KeySource {
    KeySource::HmacSecret {
        secret: SECRET.into(),
        kid: None,
    }
}

pub fn pem_source(files: &[(&str, Option<&str>)]) -> KeySource {
    KeySource::PublicKeyPem {
        files: files
            .iter()
            .map(|(f, kid)| PemKeyFile {
                path: KEYS.path(f),
                kid: kid.map(str::to_string),
            })
            .collect(),
    }
}
