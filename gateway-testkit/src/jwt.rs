//! Minting real JWTs for tests (with `jsonwebtoken`): HS256 from a secret, RS/PS/ES/EdDSA from
//! the workspace's fixture keys ([`fixture_keys_dir`]), their public JWKs and a JWKS body.
//!
//! ```
//! use gateway_testkit::jwt::{self, Keys};
//! use jsonwebtoken::Algorithm;
//! use serde_json::json;
//! let t = jwt::hs256(b"a-secret-of-at-least-32-bytes-long!", &json!({"sub": "u", "exp": jwt::unix_now() + 60}));
//! assert_eq!(t.split('.').count(), 3);
//! let keys = Keys::fixtures("a-secret-of-at-least-32-bytes-long!");
//! let rs = jwt::sign(Algorithm::RS256, &keys.encoding_key("rsa"), Some("k1"), &json!({"sub": "u"}));
//! let body = jwt::jwks(&[keys.jwk("rsa", Algorithm::RS256, "k1")]); // for a JwksServer
//! # let _ = (rs, body);
//! ```

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// Seconds since the Unix epoch (the clock JWT `exp`/`iat`/`nbf` use).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Signs `claims` with `alg` and `key`; `kid` goes in the header when given.
pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).expect("encode JWT")
}

/// An HS256 token (no `kid`) over `claims`, keyed with `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret),
        None,
        claims,
    )
}

/// A minimal HS256 token `{"sub": sub, "exp": now + expires_in_secs}` (negative: already expired).
pub fn hs256_for(secret: &[u8], sub: &str, expires_in_secs: i64) -> String {
    let exp = unix_now() as i64 + expires_in_secs;
    hs256(secret, &json!({ "sub": sub, "exp": exp }))
}

/// `claims` with `claim` set to `value`.
pub fn with(mut claims: Value, claim: &str, value: Value) -> Value {
    claims[claim] = value;
    claims
}

/// `claims` without `claim`.
pub fn without(mut claims: Value, claim: &str) -> Value {
    claims
        .as_object_mut()
        .expect("claims are a JSON object")
        .remove(claim);
    claims
}

/// A JWKS document `{"keys": [...]}` as text.
pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// The workspace's test key pairs (`gateway-core/tests/fixtures/keys`: `rsa`, `rsa2`, `ec`
/// (P-256), `ed` (Ed25519), each as `{name}_private.pem` / `{name}_public.pem`).
pub fn fixture_keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit lives in the workspace root")
        .join("gateway-core/tests/fixtures/keys")
}

/// Named signing keys: the PEM key pairs in a directory plus one HMAC secret.
#[derive(Debug, Clone)]
pub struct Keys {
    dir: PathBuf,
    secret: Vec<u8>,
}

impl Keys {
    /// Key pairs in `dir` (`{name}_private.pem`, `{name}_public.pem`) and the HMAC `secret`.
    pub fn new(dir: impl Into<PathBuf>, hmac_secret: impl AsRef<[u8]>) -> Self {
        Keys {
            dir: dir.into(),
            secret: hmac_secret.as_ref().to_vec(),
        }
    }

    /// The fixture key pairs ([`fixture_keys_dir`]) and the HMAC `secret`.
    pub fn fixtures(hmac_secret: impl AsRef<[u8]>) -> Self {
        Self::new(fixture_keys_dir(), hmac_secret)
    }

    /// The path of a key file, e.g. `path("rsa_public.pem")`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The bytes of a key file; panics when it cannot be read.
    pub fn read(&self, file: &str) -> Vec<u8> {
        let p = self.path(file);
        std::fs::read(&p).unwrap_or_else(|e| panic!("key file {}: {e}", p.display()))
    }

    /// The signing key `which`: `hmac` (the secret), `rsa`/`rsa2` (RSA, for RS*/PS*), `ec`
    /// (ES256) or `ed` (EdDSA), read from `{which}_private.pem`.
    pub fn encoding_key(&self, which: &str) -> EncodingKey {
        let pem = |w: &str| self.read(&format!("{w}_private.pem"));
        match which {
            "hmac" => EncodingKey::from_secret(&self.secret),
            "rsa" | "rsa2" => EncodingKey::from_rsa_pem(&pem(which)).expect("RSA private key"),
            "ec" => EncodingKey::from_ec_pem(&pem(which)).expect("EC private key"),
            "ed" => EncodingKey::from_ed_pem(&pem(which)).expect("Ed25519 private key"),
            other => panic!("unknown key {other:?} (hmac, rsa, rsa2, ec, ed)"),
        }
    }

    /// Signs `claims` with `alg` and the key `which` (see [`Self::encoding_key`]).
    pub fn sign(&self, alg: Algorithm, which: &str, kid: Option<&str>, claims: &Value) -> String {
        sign(alg, &self.encoding_key(which), kid, claims)
    }

    /// The public JWK of the key `which` (not `hmac`) with `alg` and `kid`, as JSON.
    pub fn jwk(&self, which: &str, alg: Algorithm, kid: &str) -> Value {
        if which == "ed" {
            // jsonwebtoken cannot derive an OKP JWK; the SPKI DER ends with the 32-byte key.
            let pem = String::from_utf8(self.read("ed_public.pem")).expect("PEM is text");
            let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            let der = STANDARD.decode(b64).expect("PEM base64");
            let x = URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
            return json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "kid": kid, "use": "sig"});
        }
        let mut j = Jwk::from_encoding_key(&self.encoding_key(which), alg).expect("JWK");
        j.common.key_id = Some(kid.to_string());
        serde_json::to_value(j).expect("JWK as JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    const SECRET: &str = "unit-test-secret-0123456789abcdef-xyz";

    fn claims() -> Value {
        json!({"sub": "u1", "exp": unix_now() + 60, "roles": ["a"]})
    }

    /// Verifies `token` against the JWK `kid` of the JWKS text `set`.
    fn verify_with_jwks(token: &str, set: &str, alg: Algorithm) -> Value {
        let set: JwkSet = serde_json::from_str(set).expect("JWKS parses");
        let kid = decode_header(token).expect("header").kid.expect("kid");
        let jwk = set.find(&kid).expect("kid in set");
        let key = DecodingKey::from_jwk(jwk).expect("decoding key");
        let mut v = Validation::new(alg);
        v.required_spec_claims.clear();
        decode::<Value>(token, &key, &v).expect("verifies").claims
    }

    #[test]
    fn hs256_verifies_with_the_secret_only() {
        let t = hs256(SECRET.as_bytes(), &claims());
        let h = decode_header(&t).expect("header");
        assert_eq!((h.alg, h.kid), (Algorithm::HS256, None));
        let v = Validation::new(Algorithm::HS256);
        let got =
            decode::<Value>(&t, &DecodingKey::from_secret(SECRET.as_bytes()), &v).expect("valid");
        assert_eq!(got.claims["sub"], "u1");
        assert!(decode::<Value>(&t, &DecodingKey::from_secret(b"other-secret"), &v).is_err());
        // the named `hmac` key is the same secret
        let k = Keys::fixtures(SECRET).encoding_key("hmac");
        assert_eq!(
            sign(Algorithm::HS256, &k, None, &claims())
                .split('.')
                .count(),
            3
        );
    }

    #[test]
    fn hs256_for_sets_sub_and_exp() {
        let v = Validation::new(Algorithm::HS256);
        let key = DecodingKey::from_secret(SECRET.as_bytes());
        let ok = decode::<Value>(&hs256_for(SECRET.as_bytes(), "al", 600), &key, &v).expect("ok");
        assert_eq!(ok.claims["sub"], "al");
        let exp = ok.claims["exp"].as_u64().expect("exp");
        assert!((unix_now() + 590..=unix_now() + 600).contains(&exp));
        let expired = decode::<Value>(&hs256_for(SECRET.as_bytes(), "al", -3600), &key, &v);
        assert_eq!(
            expired.map(|_| ()).map_err(|e| e.into_kind()),
            Err(jsonwebtoken::errors::ErrorKind::ExpiredSignature)
        );
    }

    #[test]
    fn fixture_keys_round_trip_through_their_jwks() {
        let keys = Keys::fixtures(SECRET);
        for (which, alg) in [
            ("rsa", Algorithm::RS256),
            ("rsa2", Algorithm::PS256),
            ("ec", Algorithm::ES256),
            ("ed", Algorithm::EdDSA),
        ] {
            let t = keys.sign(alg, which, Some(which), &claims());
            let set = jwks(&[keys.jwk(which, alg, which)]);
            assert_eq!(verify_with_jwks(&t, &set, alg)["sub"], "u1", "{which}");
        }
        // a token signed by rsa2 does not verify with rsa's JWK
        let t = sign(
            Algorithm::RS256,
            &keys.encoding_key("rsa2"),
            Some("k"),
            &claims(),
        );
        let set: JwkSet =
            serde_json::from_str(&jwks(&[keys.jwk("rsa", Algorithm::RS256, "k")])).expect("set");
        let key = DecodingKey::from_jwk(&set.keys[0]).expect("key");
        assert!(decode::<Value>(&t, &key, &Validation::new(Algorithm::RS256)).is_err());
    }

    #[test]
    fn claim_editing() {
        let c = with(claims(), "aud", json!("api"));
        assert_eq!(c["aud"], "api");
        let c = without(c, "sub");
        assert!(c.get("sub").is_none());
        assert_eq!(c["aud"], "api");
    }

    #[test]
    fn paths_and_files() {
        let keys = Keys::new(fixture_keys_dir(), SECRET);
        assert!(keys.path("rsa_public.pem").is_file());
        assert!(String::from_utf8(keys.read("ec_public.pem"))
            .expect("text")
            .starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}
