//! gw's engine: compiles a YAML route DSL into an immutable [`plan::Plan`] and serves it through
//! Pingora.
//!
//! # Compile
//!
//! [`compile()`] (or [`compile_file`]) turns configuration text into a [`Compiled`]: a [`plan::Plan`]
//! when there is no error, and every [`diag::Diagnostic`] (positioned, renderable like `gw validate`).
//! [`explain::explain`] answers what `gw dry-run` prints for one request, without serving anything.
//!
//! # Four ways to embed
//!
//! From the most to the least managed (`docs/embedding.md` has the details):
//!
//! | Way | Entry point | You get |
//! |---|---|---|
//! | Full server | [`proxy::server::serve_blocking`] | Exactly `gw serve`: listeners, TLS, admin, signals |
//! | In-process | [`proxy::server::Embedded::start`] | The plan's listeners on your Tokio runtime (port 0 works) |
//! | Low level | [`proxy::server::build_engine`] + [`proxy::Gateway`] | A Pingora `ProxyHttp` for your own `Server` (`examples/embed_gateway.rs`) |
//! | Policies only | [`policies::Policies`] | gw's JWT auth, rate limits and breakers inside **your** `ProxyHttp` (`examples/embed_policies.rs`) |
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (text, compiled) = gateway_core::compile_file("gateway.yaml")?;
//! for d in &compiled.diagnostics {
//!     eprint!("{}", d.render(&text));
//! }
//! let plan = compiled.plan.ok_or("the configuration has errors")?;
//! gateway_core::proxy::server::serve_blocking(plan)?; // blocks until SIGTERM / SIGINT
//! # Ok(()) }
//! ```
//!
//! # Stability
//!
//! The documented modules are the public API: [`mod@compile`], [`diag`], [`explain`], [`plan`],
//! [`policies`], [`proxy`] (the entry points above, [`proxy::Engine`], [`proxy::admin::AdminApp`]),
//! [`reload`] (`Engine::reload`, its summary and errors) and [`Metrics`]. Modules hidden from these
//! docs are internals that the workspace's own tests, benches and fuzz targets reach into; they change
//! without notice.
//!
//! Where things live inside: `config` (the YAML data model), `compile` (config → plan, all
//! diagnostics), `routing` (normalisation, matcher, rewrites), `upstream` (load balancing, health),
//! `policy` (auth, rate limits, breakers), `proxy` (the Pingora `ProxyHttp` and the server builder),
//! `observability` (metrics, access log), `discovery` (Consul, DNS and file endpoint sources),
//! `explain` (`gw dry-run`), `state` (long-lived state by identity, carried from one plan's runtime to
//! the next), `reload` (hot reload: triggers, diff, restart-only checks).
#![warn(missing_docs)]
// every type the public API hands out can be named by its users
#![warn(unnameable_types)]

pub mod compile;
pub mod diag;
pub mod explain;
pub mod plan;
pub mod policies;
pub mod proxy;
pub mod reload;

// Internals. `pub` only because the workspace's integration tests (gateway-core/tests, tests/), benches
// and fuzz targets reach into them, or because a public type carries one of their types; hidden from
// the docs and not a stable API.
#[doc(hidden)]
pub mod config;
/// The engine of `gw test` (expectation files run offline); the CLI is its only user.
#[doc(hidden)]
pub mod conftest;
#[doc(hidden)]
pub mod discovery;
pub(crate) mod error;
#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod observability;
#[doc(hidden)]
pub mod policy;
#[doc(hidden)]
pub mod registration;
#[doc(hidden)]
pub mod routing;
#[doc(hidden)]
pub mod state;
#[doc(hidden)]
pub mod upstream;

pub use compile::{compile, compile_file, Compiled};
pub use config::load::EnvLookup;
pub use observability::Metrics;
