//! gw's engine: compiles a YAML route DSL into an immutable [`plan::Plan`] and serves it through Pingora.
pub mod config;
pub mod diag;
pub mod routing;
