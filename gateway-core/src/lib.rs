//! gw's engine: compiles a YAML route DSL into an immutable [`plan::Plan`] and serves it through Pingora.
pub mod compile;
pub mod config;
pub mod diag;
pub mod explain;
pub mod plan;
pub mod policy;
pub mod routing;

pub use compile::{compile, compile_file, Compiled};
