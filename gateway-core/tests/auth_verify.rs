//! Verification matrix against static keys (HMAC secret and PEM public keys).

#[path = "auth_common/mod.rs"]
mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use gateway_core::policy::auth::{AuthReason, Authenticator, CacheSettings, KeySource, Now};
use jsonwebtoken::Algorithm;
use serde_json::json;

fn hmac_auth() -> Authenticator {
    Authenticator::new(&settings(hmac_source(), &[Algorithm::HS256])).expect("auth")
}

fn rsa_auth() -> Authenticator {
    Authenticator::new(&settings(
        pem_source(&[("rsa_public.pem", None)]),
        &[Algorithm::RS256, Algorithm::PS256],
    ))
    .expect("auth")
}

fn reason(a: &Authenticator, token: &str) -> Option<AuthReason> {
    a.verify_local(token, now()).err().map(|e| e.reason())
}

#[test]
fn hs256_valid_token_gives_identity() {
    let a = hmac_auth();
    let t = KEYS.sign(Algorithm::HS256, "hmac", None, &claims());
    let id = a.verify_local(&t, now()).expect("valid");
    assert_eq!(id.subject.as_deref(), Some("user-1"));
    assert_eq!(id.expires_at, Some(NOW + 600));
    assert_eq!(id.claim_str("realm_access.roles").as_deref(), Some("ops"));
    assert_eq!(id.claim_str("roles").as_deref(), Some("reader,writer"));
}

#[test]
fn every_public_key_type_verifies() {
    let cases = [
        ("rsa_public.pem", "rsa", Algorithm::RS256),
        ("rsa_public.pem", "rsa", Algorithm::RS512),
        ("rsa_public.pem", "rsa", Algorithm::PS384),
        ("ec_public.pem", "ec", Algorithm::ES256),
        ("ed_public.pem", "ed", Algorithm::EdDSA),
    ];
    for (file, key, alg) in cases {
        let a = Authenticator::new(&settings(pem_source(&[(file, None)]), &[alg])).expect("auth");
        let t = sign(alg, &KEYS.encoding_key(key), None, &claims());
        assert!(a.verify_local(&t, now()).is_ok(), "{alg:?} with {file}");
    }
}

#[test]
fn time_claims_and_leeway() {
    let a = hmac_auth();
    let k = KEYS.encoding_key("hmac");
    let tok = |c| sign(Algorithm::HS256, &k, None, &c);
    // expired long ago
    assert_eq!(
        reason(&a, &tok(with(claims(), "exp", json!(NOW - 3600)))),
        Some(AuthReason::Expired)
    );
    // expired but within leeway (30 s)
    assert_eq!(
        reason(&a, &tok(with(claims(), "exp", json!(NOW - 30)))),
        None
    );
    // just beyond leeway
    assert_eq!(
        reason(&a, &tok(with(claims(), "exp", json!(NOW - 31)))),
        Some(AuthReason::Expired)
    );
    // not yet valid
    assert_eq!(
        reason(&a, &tok(with(claims(), "nbf", json!(NOW + 3600)))),
        Some(AuthReason::NotYetValid)
    );
    // nbf within leeway / beyond
    assert_eq!(
        reason(&a, &tok(with(claims(), "nbf", json!(NOW + 30)))),
        None
    );
    assert_eq!(
        reason(&a, &tok(with(claims(), "nbf", json!(NOW + 31)))),
        Some(AuthReason::NotYetValid)
    );
    // exp of the wrong type
    assert_eq!(
        reason(&a, &tok(with(claims(), "exp", json!("tomorrow")))),
        Some(AuthReason::Malformed)
    );
    // exp required
    let mut no_exp = claims();
    no_exp.as_object_mut().map(|m| m.remove("exp"));
    assert_eq!(reason(&a, &tok(no_exp)), Some(AuthReason::MissingClaim));
    let e = a
        .verify_local(&tok(with(claims(), "exp", json!(NOW - 3600))), now())
        .expect_err("err");
    assert_eq!(e.code(), "token_expired");
    assert_eq!(e.status(), 401);
}

#[test]
fn issuer_audience_required_claims() {
    let a = hmac_auth();
    let k = KEYS.encoding_key("hmac");
    let tok = |c| sign(Algorithm::HS256, &k, None, &c);
    assert_eq!(
        reason(&a, &tok(with(claims(), "iss", json!("https://evil.test")))),
        Some(AuthReason::BadIssuer)
    );
    assert_eq!(
        reason(
            &a,
            &tok(with(claims(), "iss", json!("https://other-issuer.test")))
        ),
        None
    );
    assert_eq!(
        reason(&a, &tok(with(claims(), "aud", json!("nope")))),
        Some(AuthReason::BadAudience)
    );
    assert_eq!(
        reason(&a, &tok(with(claims(), "aud", json!(["x", "y"])))),
        Some(AuthReason::BadAudience)
    );
    assert_eq!(reason(&a, &tok(with(claims(), "aud", json!("api")))), None);
    let mut no_sub = claims();
    no_sub.as_object_mut().map(|m| m.remove("sub"));
    assert_eq!(reason(&a, &tok(no_sub)), Some(AuthReason::MissingClaim));
}

#[test]
fn bad_signatures_rejected() {
    let a = rsa_auth();
    // Signed with another RSA key.
    let t = KEYS.sign(Algorithm::RS256, "rsa2", None, &claims());
    assert_eq!(reason(&a, &t), Some(AuthReason::BadSignature));
    // HMAC with the wrong secret.
    let h = hmac_auth();
    let t = sign(
        Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(b"wrong"),
        None,
        &claims(),
    );
    assert_eq!(reason(&h, &t), Some(AuthReason::BadSignature));
    // Tampered payload with the original signature.
    let good = KEYS.sign(Algorithm::HS256, "hmac", None, &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("admin")).to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(reason(&h, &forged), Some(AuthReason::BadSignature));
    // Garbage.
    assert_eq!(reason(&h, "not-a-jwt"), Some(AuthReason::Malformed));
    assert_eq!(reason(&h, "a.b.c"), Some(AuthReason::Malformed));
}

fn alg_none_token() -> String {
    let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims().to_string());
    format!("{h}.{p}.")
}

#[test]
fn alg_none_rejected_everywhere() {
    let t = alg_none_token();
    assert_eq!(reason(&hmac_auth(), &t), Some(AuthReason::DisallowedAlg));
    assert_eq!(reason(&rsa_auth(), &t), Some(AuthReason::DisallowedAlg));
    let e = hmac_auth().verify_local(&t, now()).expect_err("err");
    assert_eq!(
        e.www_authenticate(),
        r#"Bearer realm="api", error="invalid_token", error_description="token algorithm not allowed""#
    );
}

#[test]
fn hs256_with_rsa_public_pem_as_secret_rejected() {
    let a = rsa_auth();
    let pem = KEYS.read("rsa_public.pem");
    let t = sign(
        Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(&pem),
        None,
        &claims(),
    );
    assert_eq!(reason(&a, &t), Some(AuthReason::DisallowedAlg));
}

#[test]
fn algorithm_pinned_by_configuration() {
    // Only RS256 configured: an RS512 token from the right key is rejected.
    let a = Authenticator::new(&settings(
        pem_source(&[("rsa_public.pem", None)]),
        &[Algorithm::RS256],
    ))
    .expect("auth");
    let t = KEYS.sign(Algorithm::RS512, "rsa", None, &claims());
    assert_eq!(reason(&a, &t), Some(AuthReason::DisallowedAlg));
    // HMAC source only allows HMAC algorithms.
    assert!(Authenticator::new(&settings(
        hmac_source(),
        &[Algorithm::HS256, Algorithm::RS256]
    ))
    .is_err());
    // A public key with only foreign-family algorithms is a config error.
    assert!(Authenticator::new(&settings(
        pem_source(&[("ec_public.pem", None)]),
        &[Algorithm::RS256]
    ))
    .is_err());
    // HMAC algorithms with a public key are a config error.
    assert!(Authenticator::new(&settings(
        pem_source(&[("rsa_public.pem", None)]),
        &[Algorithm::HS256]
    ))
    .is_err());
    // HS384 token against HS256-only secret.
    let h = hmac_auth();
    let t = KEYS.sign(Algorithm::HS384, "hmac", None, &claims());
    assert_eq!(reason(&h, &t), Some(AuthReason::DisallowedAlg));
}

#[test]
fn pem_keys_must_be_public_and_fit_their_curve() {
    // A private key PEM parses as an RSA decoding key in jsonwebtoken, yet nothing would ever
    // verify against it: refused at configuration time.
    let e = Authenticator::new(&settings(
        pem_source(&[("rsa_private.pem", None)]),
        &[Algorithm::RS256],
    ))
    .expect_err("private key refused");
    assert!(e.to_string().contains("PRIVATE KEY"), "{e}");
    for private in ["ec_private.pem", "ed_private.pem"] {
        assert!(Authenticator::new(&settings(
            pem_source(&[(private, None)]),
            &[Algorithm::ES256, Algorithm::EdDSA],
        ))
        .is_err());
    }
    // The fixture EC key is P-256: ES384 alone does not fit it ...
    let e = Authenticator::new(&settings(
        pem_source(&[("ec_public.pem", None)]),
        &[Algorithm::ES384],
    ))
    .expect_err("P-256 key with ES384");
    assert!(e.to_string().contains("EC P-256"), "{e}");
    // ... and with both listed, the key accepts only ES256.
    let a = Authenticator::new(&settings(
        pem_source(&[("ec_public.pem", None)]),
        &[Algorithm::ES256, Algorithm::ES384],
    ))
    .expect("auth");
    let t = KEYS.sign(Algorithm::ES256, "ec", None, &claims());
    assert!(a.verify_local(&t, now()).is_ok());
    // (jsonwebtoken cannot sign ES384 with a P-256 key: relabel an ES256 token instead.)
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES384","typ":"JWT"}"#);
    let rest = t.split_once('.').expect("jws").1;
    let t = format!("{header}.{rest}");
    assert_eq!(reason(&a, &t), Some(AuthReason::DisallowedAlg));
}

#[test]
fn kid_selection_with_several_keys() {
    let a = Authenticator::new(&settings(
        pem_source(&[
            ("rsa_public.pem", Some("r1")),
            ("rsa2_public.pem", Some("r2")),
            ("ec_public.pem", Some("e1")),
        ]),
        &[Algorithm::RS256, Algorithm::ES256],
    ))
    .expect("auth");
    assert!(a
        .verify_local(
            &KEYS.sign(Algorithm::RS256, "rsa", Some("r1"), &claims()),
            now()
        )
        .is_ok());
    assert!(a
        .verify_local(
            &KEYS.sign(Algorithm::RS256, "rsa2", Some("r2"), &claims()),
            now()
        )
        .is_ok());
    assert!(a
        .verify_local(
            &KEYS.sign(Algorithm::ES256, "ec", Some("e1"), &claims()),
            now()
        )
        .is_ok());
    // Right key, wrong kid → signature fails against the named key.
    assert_eq!(
        reason(
            &a,
            &KEYS.sign(Algorithm::RS256, "rsa", Some("r2"), &claims())
        ),
        Some(AuthReason::BadSignature)
    );
    // ES256 header against an RSA kid.
    assert_eq!(
        reason(
            &a,
            &KEYS.sign(Algorithm::ES256, "ec", Some("r1"), &claims())
        ),
        Some(AuthReason::DisallowedAlg)
    );
    assert_eq!(
        reason(&a, &KEYS.sign(Algorithm::RS256, "rsa", None, &claims())),
        Some(AuthReason::MissingKid)
    );
    assert_eq!(
        reason(
            &a,
            &KEYS.sign(Algorithm::RS256, "rsa", Some("zz"), &claims())
        ),
        Some(AuthReason::UnknownKid)
    );
    // Duplicate kids are a config error.
    assert!(Authenticator::new(&settings(
        pem_source(&[
            ("rsa_public.pem", Some("x")),
            ("rsa2_public.pem", Some("x"))
        ]),
        &[Algorithm::RS256],
    ))
    .is_err());
}

#[test]
fn single_kidless_key_accepts_tokens_without_kid() {
    let a = rsa_auth();
    assert!(a
        .verify_local(&KEYS.sign(Algorithm::RS256, "rsa", None, &claims()), now())
        .is_ok());
    assert!(a
        .verify_local(
            &KEYS.sign(Algorithm::PS256, "rsa", Some("any"), &claims()),
            now()
        )
        .is_ok());
}

#[test]
fn errors_never_leak_token_or_secret() {
    let a = hmac_auth();
    let k = KEYS.encoding_key("hmac");
    let tokens = [
        sign(
            Algorithm::HS256,
            &k,
            None,
            &with(claims(), "exp", json!(NOW - 3600)),
        ),
        sign(
            Algorithm::HS256,
            &jsonwebtoken::EncodingKey::from_secret(b"x"),
            None,
            &claims(),
        ),
        alg_none_token(),
        "garbage.token.here".to_string(),
    ];
    for t in &tokens {
        let e = a.verify_local(t, now()).expect_err("err");
        for s in [
            e.www_authenticate(),
            e.json_body(),
            e.to_string(),
            format!("{e:?}"),
        ] {
            assert!(!s.contains(t.as_str()), "token leaked in {s}");
            assert!(!s.contains(SECRET), "secret leaked in {s}");
            for part in t.split('.').filter(|p| p.len() > 8) {
                assert!(!s.contains(part), "token part leaked in {s}");
            }
        }
    }
    assert!(!format!("{a:?}").contains(SECRET));
}

#[test]
fn cache_hits_and_never_extends_validity() {
    let mut s = settings(hmac_source(), &[Algorithm::HS256]);
    s.cache = Some(CacheSettings {
        capacity: 100,
        max_ttl_secs: 300,
    });
    let a = Authenticator::new(&s).expect("auth");
    let t = KEYS.sign(
        Algorithm::HS256,
        "hmac",
        None,
        &with(claims(), "exp", json!(NOW + 10)),
    );
    let first = a.verify_local(&t, now()).expect("ok");
    let second = a.verify_local(&t, now()).expect("ok");
    assert!(
        std::sync::Arc::ptr_eq(&first, &second),
        "second verify is a cache hit"
    );
    // After exp (+ leeway) the cached entry must not make the token valid.
    let later = Now {
        unix_secs: NOW + 100,
        instant: now().instant,
    };
    assert_eq!(
        a.verify_local(&t, later).err().map(|e| e.reason()),
        Some(AuthReason::Expired)
    );
    // A forged token never hits the cache of the genuine one.
    let forged = format!("{}x", t);
    assert!(a.verify_local(&forged, now()).is_err());
}

#[test]
fn realm_is_validated() {
    let mut s = settings(hmac_source(), &[Algorithm::HS256]);
    s.realm = "bad\"realm".into();
    assert!(Authenticator::new(&s).is_err());
    s.realm = String::new();
    assert!(Authenticator::new(&s).is_err());
    assert!(Authenticator::new(&settings(
        KeySource::HmacSecret {
            secret: String::new(),
            kid: None
        },
        &[Algorithm::HS256]
    ))
    .is_err());
}
