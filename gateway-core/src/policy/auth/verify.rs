//! Token verification: header pre-check, signature (via `jsonwebtoken`) and claims.
//!
//! The header is parsed first, by hand, so that `alg: none` / unknown algorithms and `crit`
//! extensions are rejected with precise reasons before any key is touched. Signature checking is
//! delegated to `jsonwebtoken::decode` with a per-key `Validation` that pins the algorithms and
//! disables its time-based checks; `exp`/`nbf`/`iss`/`aud`/required claims are then validated
//! here against an injected `now` (unix seconds), so tests control the clock.

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::error::AuthReason;
use super::identity::{ClaimPath, Identity};
use super::keys::KeyEntry;

/// Claim validation rules (compiled from settings).
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub(crate) leeway: u64,
    pub(crate) issuers: Vec<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) required: Vec<ClaimPath>,
}

/// The parts of the JOSE header that matter for key selection.
#[derive(Debug)]
pub(crate) struct TokenHeader {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<Value>,
}

/// Parses and pre-checks the header of a compact JWS.
pub(crate) fn parse_header(token: &str) -> Result<TokenHeader, AuthReason> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthReason::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| AuthReason::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| AuthReason::Malformed)?;
    if raw.crit.is_some() {
        // We understand no critical extension (RFC 7515 §4.1.11).
        return Err(AuthReason::Malformed);
    }
    let alg = raw.alg.ok_or(AuthReason::DisallowedAlg)?;
    // `none` (any case) and unknown names fail here.
    let alg = Algorithm::from_str(&alg).map_err(|_| AuthReason::DisallowedAlg)?;
    Ok(TokenHeader { alg, kid: raw.kid })
}

/// Verifies signature and claims with `key`.
pub(crate) fn verify_with_key(
    token: &str,
    header: &TokenHeader,
    key: &KeyEntry,
    rules: &ClaimRules,
    now_unix: u64,
) -> Result<Identity, AuthReason> {
    if !key.algorithms.contains(&header.alg) {
        return Err(AuthReason::DisallowedAlg);
    }
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)
        .map_err(|e| map_jwt_error(e.kind()))?;
    let claims = data.claims;
    let expires_at = check_claims(&claims, rules, now_unix)?;
    Ok(Identity {
        subject: claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string),
        claims,
        expires_at,
        kid: header.kid.clone(),
        algorithm: header.alg,
    })
}

fn map_jwt_error(kind: &ErrorKind) -> AuthReason {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthReason::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthReason::DisallowedAlg,
        ErrorKind::ExpiredSignature => AuthReason::Expired,
        ErrorKind::ImmatureSignature => AuthReason::NotYetValid,
        ErrorKind::InvalidIssuer => AuthReason::BadIssuer,
        ErrorKind::InvalidAudience => AuthReason::BadAudience,
        ErrorKind::MissingRequiredClaim(_) => AuthReason::MissingClaim,
        _ => AuthReason::Malformed,
    }
}

/// NumericDate → seconds; `Err` if present but not a non-negative number.
fn numeric_date(v: Option<&Value>) -> Result<Option<u64>, AuthReason> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                        Ok(Some(f as u64))
                    }
                    _ => Err(AuthReason::Malformed),
                }
            }
        }
        Some(_) => Err(AuthReason::Malformed),
    }
}

/// Validates time, issuer, audience and required claims. Returns `exp`.
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    rules: &ClaimRules,
    now: u64,
) -> Result<Option<u64>, AuthReason> {
    let exp = numeric_date(claims.get("exp"))?;
    if let Some(exp) = exp {
        if now > exp.saturating_add(rules.leeway) {
            return Err(AuthReason::Expired);
        }
    }
    if let Some(nbf) = numeric_date(claims.get("nbf"))? {
        if nbf > now.saturating_add(rules.leeway) {
            return Err(AuthReason::NotYetValid);
        }
    }
    if !rules.issuers.is_empty() {
        let ok = claims
            .get("iss")
            .and_then(Value::as_str)
            .is_some_and(|iss| rules.issuers.iter().any(|i| i == iss));
        if !ok {
            return Err(AuthReason::BadIssuer);
        }
    }
    if !rules.audiences.is_empty() {
        let matches = |a: &str| rules.audiences.iter().any(|x| x == a);
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => matches(a),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(matches),
            _ => false,
        };
        if !ok {
            return Err(AuthReason::BadAudience);
        }
    }
    for path in &rules.required {
        if path.lookup(claims).is_none_or(Value::is_null) {
            return Err(AuthReason::MissingClaim);
        }
    }
    Ok(exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> ClaimRules {
        ClaimRules {
            leeway: 10,
            issuers: vec!["iss-a".into(), "iss-b".into()],
            audiences: vec!["api".into()],
            required: vec![ClaimPath::parse("sub").expect("path")],
        }
    }

    fn check(v: Value, now: u64) -> Result<Option<u64>, AuthReason> {
        check_claims(v.as_object().expect("object"), &rules(), now)
    }

    #[test]
    fn time_boundaries() {
        let base = json!({"iss": "iss-a", "aud": "api", "sub": "u"});
        let with = |k: &str, v: u64| {
            let mut m = base.clone();
            m[k] = json!(v);
            m
        };
        assert_eq!(check(with("exp", 1000), 1010), Ok(Some(1000)));
        assert_eq!(check(with("exp", 1000), 1011), Err(AuthReason::Expired));
        assert!(check(with("nbf", 1010), 1000).is_ok());
        assert_eq!(check(with("nbf", 1011), 1000), Err(AuthReason::NotYetValid));
        let mut bad = base.clone();
        bad["exp"] = json!("soon");
        assert_eq!(check(bad, 0), Err(AuthReason::Malformed));
        let mut float = base.clone();
        float["exp"] = json!(1000.5);
        assert!(check(float, 1000).is_ok());
    }

    #[test]
    fn iss_aud_required() {
        assert!(check(json!({"iss": "iss-b", "aud": ["x", "api"], "sub": "u"}), 0).is_ok());
        assert_eq!(
            check(json!({"iss": "nope", "aud": "api", "sub": "u"}), 0),
            Err(AuthReason::BadIssuer)
        );
        assert_eq!(
            check(json!({"aud": "api", "sub": "u"}), 0),
            Err(AuthReason::BadIssuer)
        );
        assert_eq!(
            check(json!({"iss": "iss-a", "aud": ["x"], "sub": "u"}), 0),
            Err(AuthReason::BadAudience)
        );
        assert_eq!(
            check(json!({"iss": "iss-a", "sub": "u"}), 0),
            Err(AuthReason::BadAudience)
        );
        assert_eq!(
            check(json!({"iss": "iss-a", "aud": "api", "sub": null}), 0),
            Err(AuthReason::MissingClaim)
        );
    }

    #[test]
    fn header_prechecks() {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let tok = |h: &str| format!("{}.{}.sig", enc(h), enc("{}"));
        assert_eq!(
            parse_header(&tok(r#"{"alg":"none"}"#)).err(),
            Some(AuthReason::DisallowedAlg)
        );
        assert_eq!(
            parse_header(&tok(r#"{"alg":"NONE"}"#)).err(),
            Some(AuthReason::DisallowedAlg)
        );
        assert_eq!(
            parse_header(&tok(r#"{"typ":"JWT"}"#)).err(),
            Some(AuthReason::DisallowedAlg)
        );
        assert_eq!(
            parse_header(&tok(r#"{"alg":"HS256","crit":["x"]}"#)).err(),
            Some(AuthReason::Malformed)
        );
        assert_eq!(parse_header("a.b").err(), Some(AuthReason::Malformed));
        assert_eq!(parse_header("a.b.c.d").err(), Some(AuthReason::Malformed));
        assert_eq!(parse_header("!!!.b.c").err(), Some(AuthReason::Malformed));
        let h = parse_header(&tok(r#"{"alg":"ES256","kid":"k1"}"#)).expect("header");
        assert_eq!((h.alg, h.kid.as_deref()), (Algorithm::ES256, Some("k1")));
    }
}
