//! Policies that run per request: authentication (`auth`), rate limiting (`rate_limit`) and circuit
//! breaking (`breaker`). Each is plain Rust with its own doc and tests; the proxy only sequences them.
pub mod auth;
pub mod breaker;
pub mod rate_limit;
