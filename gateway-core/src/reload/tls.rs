//! Certificates of TLS listeners that a reload can replace without a restart.
//!
//! Pingora 0.9.1's rustls listener builds one `ServerConfig` per listener when the server starts
//! (`TlsSettings::build`) and never rebuilds it, but it accepts a certificate resolver
//! (`TlsSettings::set_cert_resolver`) that rustls asks on every handshake. `gw serve` installs a
//! [`CertResolver`] per TLS listener; a reload loads the listener's certificate and key files again
//! (new paths or new file contents) and swaps them in: handshakes after the swap present the new
//! certificate, established connections keep theirs. ALPN (HTTP/2 on/off) and TLS on/off are fixed
//! in the `ServerConfig` and need a restart.
use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use std::path::Path;
use std::sync::Arc;

/// A listener's current certificate chain and key, swappable.
pub struct CertResolver {
    key: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Loads the certificate chain and key files.
    pub fn load(cert: &Path, key: &Path) -> Result<CertResolver, String> {
        Ok(CertResolver {
            key: ArcSwap::from(load_key(cert, key)?),
        })
    }

    /// Whether `k` differs from the certificate in use (by the DER of the chain).
    pub fn differs(&self, k: &CertifiedKey) -> bool {
        self.key.load().cert != k.cert
    }

    /// Presents `k` from the next handshake on.
    pub fn replace(&self, k: Arc<CertifiedKey>) {
        self.key.store(k);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.load_full())
    }
}

/// Reads and checks a PEM certificate chain and private key (the key must match the certificate).
pub fn load_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    pingora::tls::install_default_crypto_provider();
    let provider = pingora::tls::CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider".to_string())?;
    let (certs, pk) =
        pingora::tls::load_certs_and_key_files(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "no certificate in {} or no private key in {}",
                    cert.display(),
                    key.display()
                )
            })?;
    CertifiedKey::from_der(certs, pk, provider)
        .map(Arc::new)
        .map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()))
}
