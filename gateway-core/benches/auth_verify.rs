//! Verify cost: HS256 vs RS256 vs ES256 vs verified-token cache hit.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gateway_core::policy::auth::{
    AuthSettings, Authenticator, CacheSettings, KeySource, Now, PemKeyFile, TokenSources,
};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const NOW: u64 = 1_700_000_000;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

fn settings(keys: KeySource, alg: Algorithm, cache: bool) -> AuthSettings {
    AuthSettings {
        realm: "api".into(),
        keys,
        algorithms: vec![alg],
        leeway_secs: 30,
        issuers: vec!["https://issuer.test".into()],
        audiences: vec!["api".into()],
        required_claims: vec!["exp".into(), "sub".into()],
        token_sources: TokenSources::default(),
        forward_claims: Vec::new(),
        cache: cache.then_some(CacheSettings {
            capacity: 10_000,
            max_ttl_secs: 300,
        }),
    }
}

fn claims() -> serde_json::Value {
    json!({"sub": "user-1", "iss": "https://issuer.test", "aud": "api", "exp": NOW + 600,
           "roles": ["reader", "writer"], "scope": "read write"})
}

fn bench(c: &mut Criterion) {
    let now = Now {
        unix_secs: NOW,
        instant: Instant::now(),
    };
    let pem = |f: &str| KeySource::PublicKeyPem {
        files: vec![PemKeyFile {
            path: fixture(f),
            kid: None,
        }],
    };
    let hmac = || KeySource::HmacSecret {
        secret: "bench-secret-0123456789abcdef".into(),
        kid: None,
    };
    let hs_tok = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"bench-secret-0123456789abcdef"),
    )
    .expect("hs");
    let rs_key =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).expect("rsa"))
            .expect("rsa");
    let rs_tok = encode(&Header::new(Algorithm::RS256), &claims(), &rs_key).expect("rs");
    let es_key = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).expect("ec"))
        .expect("ec");
    let es_tok = encode(&Header::new(Algorithm::ES256), &claims(), &es_key).expect("es");

    let cases = [
        (
            "hs256_verify",
            Authenticator::new(&settings(hmac(), Algorithm::HS256, false)),
            &hs_tok,
        ),
        (
            "rs256_verify",
            Authenticator::new(&settings(pem("rsa_public.pem"), Algorithm::RS256, false)),
            &rs_tok,
        ),
        (
            "es256_verify",
            Authenticator::new(&settings(pem("ec_public.pem"), Algorithm::ES256, false)),
            &es_tok,
        ),
        (
            "hs256_cache_hit",
            Authenticator::new(&settings(hmac(), Algorithm::HS256, true)),
            &hs_tok,
        ),
        (
            "rs256_cache_hit",
            Authenticator::new(&settings(pem("rsa_public.pem"), Algorithm::RS256, true)),
            &rs_tok,
        ),
    ];
    let mut g = c.benchmark_group("jwt");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for (name, a, tok) in cases {
        let a = a.expect("auth");
        assert!(a.verify_local(tok, now).is_ok(), "{name} must verify");
        g.bench_function(name, |b| {
            b.iter(|| a.verify_local(std::hint::black_box(tok), now))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
