//! gw's engine: compiles a YAML route DSL into an immutable [`plan::Plan`] and serves it through Pingora.
//!
//! Where things live: `config` (the YAML data model), `compile` (config → plan, all diagnostics),
//! `routing` (normalisation, matcher, rewrites), `upstream` (load balancing, health), `policy` (auth,
//! rate limits, breakers), `proxy` (the Pingora `ProxyHttp` and the server builder), `observability`
//! (metrics, access log), `discovery` (Consul, DNS and file endpoint sources), `admin` (the admin
//! listener), `explain` (`gw dry-run`), `state` (long-lived state by identity, carried from one plan's
//! runtime to the next), `reload` (hot reload: triggers, diff, restart-only checks).
pub mod compile;
pub mod config;
pub mod conftest;
pub mod diag;
pub mod discovery;
pub mod error;
pub mod explain;
#[doc(hidden)]
pub mod fuzzing;
pub mod observability;
pub mod plan;
pub mod policy;
pub mod proxy;
pub mod registration;
pub mod reload;
pub mod routing;
pub mod state;
pub mod upstream;

pub use compile::{compile, compile_file, Compiled};
