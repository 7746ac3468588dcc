//! JWKS: fetch at start, readiness, unknown-kid refresh (rate limited), outages, file source.

#[path = "auth_common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use gateway_core::policy::auth::{AuthReason, Authenticator, JwksSettings, KeySource, Now};
use jsonwebtoken::Algorithm;

fn jwks_settings(location: String) -> JwksSettings {
    JwksSettings {
        refresh_interval_ms: 3_600_000,
        retry_interval_ms: 50,
        unknown_kid_min_interval_ms: 10_000,
        fetch_timeout_ms: 1_000,
        unknown_kid_wait_ms: 2_000,
        ..JwksSettings::new(location)
    }
}

fn jwks_auth(location: String) -> Authenticator {
    Authenticator::new(&settings(
        KeySource::Jwks(jwks_settings(location)),
        &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
    ))
    .expect("auth")
}

fn at(base: Now, secs: u64) -> Now {
    Now {
        unix_secs: base.unix_secs,
        instant: base.instant + Duration::from_secs(secs),
    }
}

#[tokio::test]
async fn fetch_at_start_then_verify() {
    let server = JwksServer::start(jwks(&[
        KEYS.jwk("rsa", Algorithm::RS256, "k1"),
        KEYS.jwk("ed", Algorithm::EdDSA, "k-ed"),
    ]))
    .await;
    let a = jwks_auth(server.url());
    a.start();
    assert!(a.ready(Duration::from_secs(5)).await);
    assert_eq!(a.key_set().len(), 2);
    let t = KEYS.sign(Algorithm::RS256, "rsa", Some("k1"), &claims());
    assert!(a.verify(&t, now()).await.is_ok());
    let t = KEYS.sign(Algorithm::EdDSA, "ed", Some("k-ed"), &claims());
    assert!(a.verify(&t, now()).await.is_ok());
    // Several keys: token without kid is rejected.
    let t = KEYS.sign(Algorithm::RS256, "rsa", None, &claims());
    assert_eq!(
        a.verify(&t, now()).await.err().map(|e| e.reason()),
        Some(AuthReason::MissingKid)
    );
    // JWK alg pins the algorithm: the RSA key is RS256 only, even though PS256 would be RSA.
    let t = KEYS.sign(Algorithm::PS256, "rsa", Some("k1"), &claims());
    assert_eq!(
        a.verify(&t, now()).await.err().map(|e| e.reason()),
        Some(AuthReason::DisallowedAlg)
    );
    // HS256 forged with the RSA public key's PEM as secret.
    let pem = KEYS.read("rsa_public.pem");
    let t = sign(
        Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(&pem),
        Some("k1"),
        &claims(),
    );
    assert_eq!(
        a.verify(&t, now()).await.err().map(|e| e.reason()),
        Some(AuthReason::DisallowedAlg)
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_kid_triggers_rate_limited_refresh() {
    let server = JwksServer::start(jwks(&[KEYS.jwk("rsa", Algorithm::RS256, "k1")])).await;
    let a = jwks_auth(server.url());
    a.start();
    assert!(a.ready(Duration::from_secs(5)).await);
    let base = now();
    let hits_after_start = server.hits();

    // Key k2 is published after start: the first token naming it triggers a refresh.
    server.set_body(jwks(&[
        KEYS.jwk("rsa", Algorithm::RS256, "k1"),
        KEYS.jwk("rsa2", Algorithm::RS256, "k2"),
    ]));
    let t2 = KEYS.sign(Algorithm::RS256, "rsa2", Some("k2"), &claims());
    assert!(
        a.verify_local(&t2, base).is_err(),
        "not known before the refresh"
    );
    let id = a.verify(&t2, base).await.expect("verified after refresh");
    assert_eq!(id.kid.as_deref(), Some("k2"));
    assert_eq!(server.hits(), hits_after_start + 1);

    // k3 appears 1 s later: the refresh is rate limited → unknown_kid, no fetch.
    server.set_body(jwks(&[
        KEYS.jwk("rsa", Algorithm::RS256, "k1"),
        KEYS.jwk("rsa2", Algorithm::RS256, "k2"),
        KEYS.jwk("ec", Algorithm::ES256, "k3"),
    ]));
    let t3 = KEYS.sign(Algorithm::ES256, "ec", Some("k3"), &claims());
    let e = a.verify(&t3, at(base, 1)).await.expect_err("rate limited");
    assert_eq!(e.reason(), AuthReason::UnknownKid);
    assert_eq!(e.code(), "invalid_token");
    assert_eq!(server.hits(), hits_after_start + 1);
    // Random kids do not cause fetches either.
    let junk = KEYS.sign(Algorithm::RS256, "rsa", Some("junk"), &claims());
    assert!(a.verify(&junk, at(base, 2)).await.is_err());
    assert_eq!(server.hits(), hits_after_start + 1);

    // After the minimum interval, the refresh happens and k3 verifies.
    assert!(a.verify(&t3, at(base, 11)).await.is_ok());
    assert_eq!(server.hits(), hits_after_start + 2);
    // Old keys still fine.
    assert!(a
        .verify(
            &KEYS.sign(Algorithm::RS256, "rsa", Some("k1"), &claims()),
            at(base, 12)
        )
        .await
        .is_ok());
    server.stop().await;
}

#[tokio::test]
async fn server_down_at_start_then_up_then_down_again() {
    // Nothing listens on the server's port yet, so the first fetches fail.
    let mut server = JwksServer::down_at(jwks(&[KEYS.jwk("rsa", Algorithm::RS256, "k1")]));
    let url = format!("http://{}/jwks", server.addr());
    let a = jwks_auth(url);
    a.start();
    assert!(
        !a.ready(Duration::from_millis(300)).await,
        "no keys while the server is down"
    );
    let t = KEYS.sign(Algorithm::RS256, "rsa", Some("k1"), &claims());
    let e = a.verify(&t, now()).await.expect_err("no keys");
    assert_eq!(e.reason(), AuthReason::KeysUnavailable);
    assert_eq!(e.status(), 401);

    // The server comes up: the background retry loads the keys.
    server.up().await;
    assert!(
        a.ready(Duration::from_secs(10)).await,
        "keys loaded once the server is up"
    );
    assert!(a.verify(&t, now()).await.is_ok());

    // The server goes down: refresh fails, the last good key set still verifies.
    server.down().await;
    assert!(a.refresh_keys().await.is_err());
    assert_eq!(a.key_set().len(), 1);
    assert!(a.verify(&t, now()).await.is_ok());
    // An unknown kid during the outage fails cleanly (bounded wait).
    let t9 = KEYS.sign(Algorithm::RS256, "rsa", Some("k9"), &claims());
    assert_eq!(
        a.verify(&t9, now()).await.err().map(|e| e.reason()),
        Some(AuthReason::UnknownKid)
    );
}

#[tokio::test]
async fn bad_jwks_body_keeps_last_good_set() {
    let server = JwksServer::start(jwks(&[KEYS.jwk("rsa", Algorithm::RS256, "k1")])).await;
    let a = jwks_auth(server.url());
    assert!(a.refresh_keys().await.is_ok());
    let gen = a.key_set().len();
    server.set_body("{not json");
    assert!(a.refresh_keys().await.is_err());
    server.set_body(r#"{"keys":[]}"#);
    assert!(a.refresh_keys().await.is_err());
    assert_eq!(a.key_set().len(), gen);
    let t = KEYS.sign(Algorithm::RS256, "rsa", Some("k1"), &claims());
    assert!(a.verify(&t, now()).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn jwks_from_file() {
    let dir = std::env::temp_dir().join(format!("auth-jwks-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks(&[KEYS.jwk("ec", Algorithm::ES256, "e1")])).expect("write");
    let a = jwks_auth(path.display().to_string());
    a.start();
    assert!(a.ready(Duration::from_secs(5)).await);
    let t = KEYS.sign(Algorithm::ES256, "ec", Some("e1"), &claims());
    assert!(a.verify(&t, now()).await.is_ok());
    // Rotation through the file: e2 appears, unknown kid triggers a re-read.
    std::fs::write(
        &path,
        jwks(&[
            KEYS.jwk("ec", Algorithm::ES256, "e1"),
            KEYS.jwk("ed", Algorithm::EdDSA, "e2"),
        ]),
    )
    .expect("write");
    let t2 = KEYS.sign(Algorithm::EdDSA, "ed", Some("e2"), &claims());
    assert!(a.verify(&t2, now()).await.is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn jwks_rejects_hmac_algorithms_in_config() {
    let s = settings(
        KeySource::Jwks(JwksSettings::new("http://127.0.0.1:9/x")),
        &[Algorithm::HS256],
    );
    assert!(Authenticator::new(&s).is_err());
}
