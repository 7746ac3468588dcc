//! Shared test helpers: fixture keys, token signing, settings, a tiny JWKS HTTP server.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use gateway_core::policy::auth::{AuthSettings, KeySource, Now, PemKeyFile, TokenSources};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const NOW: u64 = 1_700_000_000;
pub const SECRET: &str = "test-hmac-secret-0123456789abcdef";

pub fn now() -> Now {
    Now {
        unix_secs: NOW,
        instant: Instant::now(),
    }
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

pub fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

/// Encoding key for a private fixture (`rsa`, `rsa2`, `ec`, `ed`) or the HMAC secret (`hmac`).
pub fn enc_key(which: &str) -> EncodingKey {
    match which {
        "hmac" => EncodingKey::from_secret(SECRET.as_bytes()),
        "rsa" | "rsa2" => {
            EncodingKey::from_rsa_pem(&read_fixture(&format!("{which}_private.pem"))).expect("rsa")
        }
        "ec" => EncodingKey::from_ec_pem(&read_fixture("ec_private.pem")).expect("ec"),
        "ed" => EncodingKey::from_ed_pem(&read_fixture("ed_private.pem")).expect("ed"),
        other => panic!("unknown key {other}"),
    }
}

pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).expect("encode")
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

pub fn with(mut v: Value, k: &str, x: Value) -> Value {
    v[k] = x;
    v
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
                path: fixture(f),
                kid: kid.map(str::to_string),
            })
            .collect(),
    }
}

/// JWK (public) for a private fixture, with kid.
pub fn jwk(which: &str, alg: Algorithm, kid: &str) -> Value {
    if which == "ed" {
        // jsonwebtoken cannot derive an OKP JWK; the SPKI DER ends with the 32-byte public key.
        use base64::Engine;
        let pem = String::from_utf8(read_fixture("ed_public.pem")).expect("utf8");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("b64");
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
        return json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "kid": kid, "use": "sig"});
    }
    let mut j = Jwk::from_encoding_key(&enc_key(which), alg).expect("jwk");
    j.common.key_id = Some(kid.to_string());
    serde_json::to_value(j).expect("jwk json")
}

pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// A minimal HTTP/1.1 server answering every request with the current JWKS body.
pub struct JwksServer {
    pub addr: std::net::SocketAddr,
    pub body: Arc<parking_lot::Mutex<String>>,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::with_listener(listener, body)
    }

    pub async fn start_on(addr: std::net::SocketAddr, body: String) -> Self {
        let listener = TcpListener::bind(addr).await.expect("rebind");
        Self::with_listener(listener, body)
    }

    fn with_listener(listener: TcpListener, body: String) -> Self {
        let addr = listener.local_addr().expect("addr");
        let body = Arc::new(parking_lot::Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (b, h) = (b.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = b.lock().clone();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                        body.len(),
                        body
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        JwksServer {
            addr,
            body,
            hits,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub fn set_body(&self, body: String) {
        *self.body.lock() = body;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
