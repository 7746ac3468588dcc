//! Service discovery: where an upstream's dynamic endpoints come from.
//!
//! Each source ([`consul`], [`dns`], [`file`]) implements [`Source`]: one [`Source::fetch`] produces the
//! *full* endpoint set (or a typed [`DiscoveryError`]), and [`Source::wait`] waits as that source requires
//! before the next fetch (a Consul blocking query already waited on the server; DNS waits for the record
//! TTL bounded by min/max intervals; a file waits for a change notification or its polling interval).
//!
//! [`runner::spawn`] drives a source in a background task and publishes the latest *good* set through a
//! `tokio::sync::watch` channel ([`runner::DiscoveryHandle`]). A failed fetch never replaces the published
//! set: the last good set stays, the failure is counted and logged (rate-limited), and the source backs
//! off. A successful fetch that returns zero endpoints does publish an empty set (the upstream is then
//! empty, which the proxy answers with 503).
//!
//! This module knows nothing about the proxy: the runtime subscribes to a handle and merges the set
//! with the upstream's static endpoints (see `docs/discovery.md`).
pub mod backends;
pub mod consul;
pub mod dns;
pub mod file;
pub mod file_format;
pub mod ratelog;
pub mod registry;
pub mod runner;
pub mod spec;

pub use registry::Discoveries;
pub use runner::{spawn, DiscoveryHandle, EndpointSet};
pub use spec::{ConsulSpec, DnsRecord, DnsSpec, FileSpec, SourceSpec};

use std::net::SocketAddr;
use std::path::PathBuf;

/// One endpoint found by a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiscoveredEndpoint {
    pub addr: SocketAddr,
    /// Relative weight, at least 1.
    pub weight: u32,
}

/// Highest weight of an endpoint, as for static endpoints (Pingora's weighted selectors expand each
/// endpoint by its weight, so an unbounded weight from Consul or DNS would cost memory).
pub const MAX_WEIGHT: u32 = 1000;

impl DiscoveredEndpoint {
    /// An endpoint; the weight is clamped to 1..=[`MAX_WEIGHT`] (SRV records may say 0, Consul up to
    /// 65535).
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        DiscoveredEndpoint {
            addr,
            weight: weight.clamp(1, MAX_WEIGHT),
        }
    }
}

/// Sorts a set by address and merges duplicates (their weights add up), so that two fetches that found
/// the same endpoints in another order compare equal.
pub fn normalize(mut set: Vec<DiscoveredEndpoint>) -> Vec<DiscoveredEndpoint> {
    set.sort_unstable();
    let mut out: Vec<DiscoveredEndpoint> = Vec::with_capacity(set.len());
    for e in set {
        match out.last_mut() {
            Some(last) if last.addr == e.addr => {
                last.weight = last.weight.saturating_add(e.weight).min(MAX_WEIGHT)
            }
            _ => out.push(e),
        }
    }
    out
}

/// The `source` label of the discovery metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Consul,
    Dns,
    File,
}

impl SourceKind {
    /// `consul`, `dns` or `file`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SourceKind::Consul => "consul",
            SourceKind::Dns => "dns",
            SourceKind::File => "file",
        }
    }
}

/// Why a fetch produced no endpoint set. Never carries a Consul token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The server could not be reached, or the connection failed or timed out.
    #[error("{source_name} unreachable: {message}")]
    Unreachable {
        source_name: &'static str,
        message: String,
    },
    /// The server answered with an error status.
    #[error("{source_name} answered HTTP {status}: {message}")]
    Status {
        source_name: &'static str,
        status: u16,
        message: String,
    },
    /// The answer could not be understood.
    #[error("{source_name} answer is invalid: {message}")]
    Invalid {
        source_name: &'static str,
        message: String,
    },
    /// DNS resolution failed (including "no records").
    #[error("DNS resolution of {name} failed: {message}")]
    Dns { name: String, message: String },
    /// The endpoints file could not be read.
    #[error("cannot read {}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// The endpoints file is invalid at `line` (1-based).
    #[error("{}:{line}: {message}", path.display())]
    File {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The source could not be set up (bad CA file, resolver, ...).
    #[error("{0}")]
    Setup(String),
}

/// A discovery source: produces full endpoint sets.
#[async_trait::async_trait]
pub trait Source: Send + 'static {
    /// The `source` label.
    fn kind(&self) -> SourceKind;
    /// One fetch: the complete current set, or why there is none. The first call does not wait.
    async fn fetch(&mut self) -> Result<Vec<DiscoveredEndpoint>, DiscoveryError>;
    /// Waits before the next fetch. `failures` is the number of consecutive failed fetches (0 after a
    /// success), for the source's back-off.
    async fn wait(&mut self, failures: u32);
}

/// Builds the source described by `spec`.
pub fn build(spec: &SourceSpec) -> Result<Box<dyn Source>, DiscoveryError> {
    Ok(match spec {
        SourceSpec::Consul(c) => Box::new(consul::ConsulSource::new(c.clone())?),
        SourceSpec::Dns(d) => Box::new(dns::DnsSource::new(d.clone())?),
        SourceSpec::File(f) => Box::new(file::FileSource::new(f.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(a: &str, w: u32) -> DiscoveredEndpoint {
        DiscoveredEndpoint::new(a.parse().unwrap(), w)
    }

    #[test]
    fn normalize_sorts_and_merges_duplicates() {
        let set = normalize(vec![
            ep("10.0.0.2:80", 1),
            ep("10.0.0.1:80", 2),
            ep("10.0.0.2:80", 3),
        ]);
        assert_eq!(set, vec![ep("10.0.0.1:80", 2), ep("10.0.0.2:80", 4)]);
    }

    #[test]
    fn weights_are_clamped_to_1_through_1000() {
        assert_eq!(ep("[::1]:80", 0).weight, 1);
        assert_eq!(ep("[::1]:80", 65535).weight, MAX_WEIGHT);
        let set = normalize(vec![ep("10.0.0.1:80", 900), ep("10.0.0.1:80", 900)]);
        assert_eq!(set[0].weight, MAX_WEIGHT);
    }
}
