//! Tokens signed by the runner: a test key (HMAC secret or PEM private key) plus claims, signed with the
//! algorithm the route's jwt policy pins (the first one that fits the key), `exp`/`iat` from the
//! simulated clock unless the claims set them.
use super::model::{JwtSpec, KeyDecl};
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use std::path::Path;

/// A test key with its material loaded.
pub struct SigningKey {
    pub name: String,
    pub kid: Option<String>,
    material: Material,
}

enum Material {
    Hmac(Vec<u8>),
    Pem(Vec<u8>),
}

impl SigningKey {
    /// Loads `decl` (file paths resolved by `resolve`).
    pub fn load(
        decl: &KeyDecl,
        resolve: impl Fn(&Path) -> std::path::PathBuf,
    ) -> Result<Self, String> {
        let material = match (&decl.hmac, &decl.private_key) {
            (Some(s), None) => Material::Hmac(s.as_bytes().to_vec()),
            (None, Some(p)) => {
                let full = resolve(p);
                Material::Pem(
                    std::fs::read(&full)
                        .map_err(|e| format!("cannot read {}: {e}", full.display()))?,
                )
            }
            _ => return Err("a key is either hmac or private_key".into()),
        };
        Ok(SigningKey {
            name: decl.name.clone(),
            kid: decl.kid.clone(),
            material,
        })
    }

    fn encoding_key(&self, alg: Algorithm) -> Option<EncodingKey> {
        match (&self.material, alg.family()) {
            (Material::Hmac(s), AlgorithmFamily::Hmac) => Some(EncodingKey::from_secret(s)),
            (Material::Pem(p), AlgorithmFamily::Rsa) => EncodingKey::from_rsa_pem(p).ok(),
            (Material::Pem(p), AlgorithmFamily::Ec) => EncodingKey::from_ec_pem(p).ok(),
            (Material::Pem(p), AlgorithmFamily::Ed) => EncodingKey::from_ed_pem(p).ok(),
            _ => None,
        }
    }

    /// Signs `claims`. `pinned`: the algorithms of the policy that will verify the token (the first one
    /// that fits the key is used); empty → the key's usual algorithms.
    pub fn sign(
        &self,
        spec: &JwtSpec,
        pinned: &[Algorithm],
        now_secs: u64,
    ) -> Result<String, String> {
        let mut claims = spec.claims.clone();
        let exp_in = match &spec.expires_in {
            Some(s) => signed_secs(s)?,
            None => 3600,
        };
        claims
            .entry("exp")
            .or_insert_with(|| (now_secs as i64 + exp_in).into());
        claims.entry("iat").or_insert_with(|| now_secs.into());
        // `~` removes a claim (e.g. a token without `exp`)
        claims.retain(|_, v| !v.is_null());
        let candidates: Vec<Algorithm> = match &spec.algorithm {
            Some(a) => vec![a.parse().map_err(|_| format!("unknown algorithm {a:?}"))?],
            None if !pinned.is_empty() => pinned.to_vec(),
            None => vec![
                Algorithm::HS256,
                Algorithm::RS256,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ],
        };
        for alg in candidates.iter().copied() {
            let Some(key) = self.encoding_key(alg) else {
                continue;
            };
            let mut header = Header::new(alg);
            header.kid = self.kid.clone();
            if let Ok(t) = jsonwebtoken::encode(&header, &claims, &key) {
                return Ok(t);
            }
        }
        Err(format!(
            "test key {} cannot sign with {}",
            self.name,
            candidates
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// `1h`, `-5m`, `30s` → signed seconds.
pub fn signed_secs(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let d = crate::config::units::parse_duration(body)?;
    let secs = i64::try_from(d.as_secs()).map_err(|_| "duration too long".to_string())?;
    Ok(if neg { -secs } else { secs })
}
