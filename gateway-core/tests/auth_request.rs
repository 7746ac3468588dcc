//! Request-level behaviour: modes, roles/scopes, 401 vs 403 challenges, extraction, forwarding.

#[path = "auth_common/mod.rs"]
mod common;

use common::*;
use gateway_core::policy::auth::{
    AuthMode, AuthReason, Authenticator, ClaimRequirementSettings, ForwardClaim, MatchMode,
    RouteAuthSettings, RoutePolicy, TokenSources,
};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::Algorithm;
use serde_json::json;

fn auth_with(f: impl FnOnce(&mut gateway_core::policy::auth::AuthSettings)) -> Authenticator {
    let mut s = settings(hmac_source(), &[Algorithm::HS256]);
    f(&mut s);
    Authenticator::new(&s).expect("auth")
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("hv"),
    );
    h
}

fn route(mode: AuthMode, reqs: &[(&str, &[&str], MatchMode)]) -> RoutePolicy {
    RoutePolicy::new(&RouteAuthSettings {
        mode,
        require: reqs
            .iter()
            .map(|(c, v, m)| ClaimRequirementSettings {
                claim: c.to_string(),
                values: v.iter().map(|s| s.to_string()).collect(),
                match_mode: *m,
            })
            .collect(),
    })
    .expect("route")
}

fn token() -> String {
    gateway_testkit::jwt::hs256(SECRET.as_bytes(), &claims())
}

#[tokio::test]
async fn modes_required_optional_off() {
    let a = auth_with(|_| {});
    let empty = HeaderMap::new();
    // Required + missing → 401 missing_token, challenge without error attribute.
    let e = a
        .authenticate(
            &empty,
            None,
            &RoutePolicy::with_mode(AuthMode::Required),
            now(),
        )
        .await
        .expect_err("401");
    assert_eq!(e.status(), 401);
    assert_eq!(e.code(), "missing_token");
    assert_eq!(e.reason(), AuthReason::Missing);
    assert_eq!(e.www_authenticate(), r#"Bearer realm="api""#);
    assert_eq!(
        e.json_body(),
        r#"{"error":"missing_token","error_description":"authentication required"}"#
    );
    // Optional + missing → passes, no identity.
    let r = a
        .authenticate(
            &empty,
            None,
            &RoutePolicy::with_mode(AuthMode::Optional),
            now(),
        )
        .await;
    assert_eq!(r.map(|o| o.is_none()), Ok(true));
    // Optional + invalid present token → still 401.
    let e = a
        .authenticate(
            &bearer("a.b.c"),
            None,
            &RoutePolicy::with_mode(AuthMode::Optional),
            now(),
        )
        .await
        .expect_err("401");
    assert_eq!(e.status(), 401);
    assert_eq!(
        e.www_authenticate(),
        r#"Bearer realm="api", error="invalid_token", error_description="malformed token""#
    );
    // Optional + valid → identity.
    let r = a
        .authenticate(
            &bearer(&token()),
            None,
            &RoutePolicy::with_mode(AuthMode::Optional),
            now(),
        )
        .await;
    assert_eq!(
        r.ok().flatten().and_then(|i| i.subject.clone()).as_deref(),
        Some("user-1")
    );
    // Off ignores even garbage.
    let r = a
        .authenticate(
            &bearer("garbage"),
            None,
            &RoutePolicy::with_mode(AuthMode::Off),
            now(),
        )
        .await;
    assert_eq!(r.map(|o| o.is_none()), Ok(true));
}

#[tokio::test]
async fn expired_challenge_is_exact() {
    let a = auth_with(|_| {});
    let t = KEYS.sign(
        Algorithm::HS256,
        "hmac",
        None,
        &with(claims(), "exp", json!(NOW - 3600)),
    );
    let e = a
        .authenticate(
            &bearer(&t),
            None,
            &RoutePolicy::with_mode(AuthMode::Required),
            now(),
        )
        .await
        .expect_err("401");
    assert_eq!(e.status(), 401);
    assert_eq!(e.code(), "token_expired");
    assert_eq!(e.reason().as_str(), "expired");
    assert_eq!(
        e.www_authenticate(),
        r#"Bearer realm="api", error="invalid_token", error_description="token expired""#
    );
    assert_eq!(
        e.www_authenticate_value(),
        HeaderValue::from_static(
            r#"Bearer realm="api", error="invalid_token", error_description="token expired""#
        )
    );
}

#[tokio::test]
async fn roles_and_scopes() {
    let a = auth_with(|_| {});
    let h = bearer(&token());
    let ok = |r: RoutePolicy| {
        let a = &a;
        let h = &h;
        async move { a.authenticate(h, None, &r, now()).await }
    };
    use MatchMode::{AllOf, AnyOf};
    let req = AuthMode::Required;
    // roles array: any-of / all-of
    assert!(ok(route(req, &[("roles", &["admin", "writer"], AnyOf)]))
        .await
        .is_ok());
    assert!(ok(route(req, &[("roles", &["reader", "writer"], AllOf)]))
        .await
        .is_ok());
    let e = ok(route(req, &[("roles", &["reader", "admin"], AllOf)]))
        .await
        .expect_err("403");
    assert_eq!(e.status(), 403);
    assert_eq!(e.code(), "insufficient_scope");
    assert_eq!(e.reason().as_str(), "insufficient_scope");
    assert_eq!(
        e.www_authenticate(),
        r#"Bearer realm="api", error="insufficient_scope", error_description="insufficient role or scope""#
    );
    assert!(ok(route(req, &[("roles", &["admin"], AnyOf)]))
        .await
        .is_err());
    // space-separated scope string
    assert!(
        ok(route(req, &[("scope", &["write", "admin:view"], AllOf)]))
            .await
            .is_ok()
    );
    assert!(ok(route(req, &[("scope", &["delete", "read"], AnyOf)]))
        .await
        .is_ok());
    assert_eq!(
        ok(route(req, &[("scope", &["read", "delete"], AllOf)]))
            .await
            .err()
            .map(|e| e.status()),
        Some(http::StatusCode::FORBIDDEN)
    );
    // partial word is not a match
    assert!(ok(route(req, &[("scope", &["admin"], AnyOf)]))
        .await
        .is_err());
    // nested claim path
    assert!(ok(route(req, &[("realm_access.roles", &["ops"], AnyOf)]))
        .await
        .is_ok());
    assert!(ok(route(req, &[("realm_access.roles", &["dev"], AnyOf)]))
        .await
        .is_err());
    // missing claim → 403
    assert!(ok(route(req, &[("groups", &["x"], AnyOf)])).await.is_err());
    // several requirements must all hold
    assert!(ok(route(
        req,
        &[("roles", &["reader"], AnyOf), ("scope", &["read"], AnyOf)]
    ))
    .await
    .is_ok());
    assert!(ok(route(
        req,
        &[("roles", &["reader"], AnyOf), ("scope", &["nope"], AnyOf)]
    ))
    .await
    .is_err());
    // Optional route with a token lacking the role → 403 as well.
    assert_eq!(
        ok(route(AuthMode::Optional, &[("roles", &["admin"], AnyOf)]))
            .await
            .err()
            .map(|e| e.status()),
        Some(http::StatusCode::FORBIDDEN)
    );
    // Bad claim path in config.
    assert!(RoutePolicy::new(&RouteAuthSettings {
        mode: req,
        require: vec![ClaimRequirementSettings {
            claim: "a..b".into(),
            values: vec![],
            match_mode: AnyOf
        }],
    })
    .is_err());
}

#[tokio::test]
async fn cookie_and_query_sources() {
    let a = auth_with(|s| {
        s.token_sources = TokenSources {
            cookie: Some("session_jwt".into()),
            query_param: Some("access_token".into()),
            ..TokenSources::default()
        }
    });
    let t = token();
    let req = RoutePolicy::with_mode(AuthMode::Required);
    let mut h = HeaderMap::new();
    h.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!("a=1; session_jwt={t}")).expect("hv"),
    );
    assert!(a.authenticate(&h, None, &req, now()).await.is_ok());
    let q = format!("x=1&access_token={t}");
    assert!(a
        .authenticate(&HeaderMap::new(), Some(&q), &req, now())
        .await
        .is_ok());
    // Lower-case scheme is accepted.
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("bearer {t}")).expect("hv"),
    );
    assert!(a.authenticate(&h, None, &req, now()).await.is_ok());
    // Query param not configured → ignored.
    let plain = auth_with(|_| {});
    let e = plain
        .authenticate(&HeaderMap::new(), Some(&q), &req, now())
        .await
        .expect_err("missing");
    assert_eq!(e.reason(), AuthReason::Missing);
}

#[tokio::test]
async fn forwarded_claims() {
    let a = auth_with(|s| {
        s.forward_claims = vec![
            ForwardClaim {
                claim: "sub".into(),
                header: "X-User-Id".into(),
            },
            ForwardClaim {
                claim: "roles".into(),
                header: "X-User-Roles".into(),
            },
            ForwardClaim {
                claim: "realm_access.roles".into(),
                header: "X-Realm-Roles".into(),
            },
            ForwardClaim {
                claim: "name".into(),
                header: "X-User-Name".into(),
            },
            ForwardClaim {
                claim: "missing".into(),
                header: "X-Missing".into(),
            },
            ForwardClaim {
                claim: "sub".into(),
                header: "x-user-id".into(),
            },
        ]
    });
    let names: Vec<&str> = a
        .injected_header_names()
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "x-user-id",
            "x-user-roles",
            "x-realm-roles",
            "x-user-name",
            "x-missing"
        ]
    );
    // "name" contains a newline → not a valid header value → skipped.
    let t = KEYS.sign(
        Algorithm::HS256,
        "hmac",
        None,
        &with(claims(), "name", json!("evil\r\nX-Admin: 1")),
    );
    let id = a.verify(&t, now()).await.expect("ok");
    let fwd: Vec<(String, String)> = a
        .forward_headers(&id)
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(
        fwd,
        [
            ("x-user-id".to_string(), "user-1".to_string()),
            ("x-user-roles".to_string(), "reader,writer".to_string()),
            ("x-realm-roles".to_string(), "ops".to_string()),
            ("x-user-id".to_string(), "user-1".to_string()),
        ]
    );
    assert!(gateway_core::policy::auth::Authenticator::new(&{
        let mut s = settings(hmac_source(), &[Algorithm::HS256]);
        s.forward_claims = vec![ForwardClaim {
            claim: "sub".into(),
            header: "bad header".into(),
        }];
        s
    })
    .is_err());
}

#[test]
fn settings_deserialize_from_json() {
    let s: gateway_core::policy::auth::AuthSettings = serde_json::from_value(json!({
        "realm": "gw",
        "keys": {"jwks": {"location": "https://idp.example/jwks.json", "refresh_interval_ms": 60000}},
        "algorithms": ["RS256", "ES256"],
        "issuers": ["https://idp.example/"],
        "audiences": ["api"],
        "required_claims": ["exp", "sub"],
        "token_sources": {"cookie": "jwt"},
        "forward_claims": [{"claim": "sub", "header": "X-User-Id"}],
        "cache": {"capacity": 10000}
    }))
    .expect("deserialize");
    assert_eq!(s.algorithms, [Algorithm::RS256, Algorithm::ES256]);
    assert_eq!(s.leeway_secs, 30);
    assert!(Authenticator::new(&s).is_ok());
    let r: RouteAuthSettings = serde_json::from_value(json!({
        "mode": "required",
        "require": [{"claim": "scope", "values": ["read"], "match": "all_of"}]
    }))
    .expect("route");
    assert!(RoutePolicy::new(&r).is_ok());
}
