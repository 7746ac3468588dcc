//! The named steps of the request chain, each a plain function with a small typed result, called in
//! order by the `ProxyHttp` sequencer in [`super`]. A step never writes a response: it returns
//! `Err(GwError)` (or a breaker decision) and the sequencer hands that to [`super::respond`].
//!
//! | step | module | may answer |
//! |---|---|---|
//! | request id, client IP | [`request_id`] | — |
//! | trace context | [`trace`] | — |
//! | head size, normalise, match, rewrite | [`route`] | 431, 400, 404, 405 |
//! | body size | [`body_limit`] | 413 |
//! | auth | [`auth`] | 401, 403 |
//! | rate limits | [`limits`] | 429 |
//! | circuit breaker | [`breaker`] | fallback, 503 |
//! | endpoint pick | [`pick`] | 503 |
//! | forwarded headers | [`forward_headers`] | 400 |
//! | error classification | [`classify`] | 400, 408, 502, 504, ... |
pub mod auth;
pub mod body_limit;
pub mod breaker;
pub mod classify;
pub mod forward_headers;
pub mod limit_headers;
pub mod limits;
pub mod pick;
pub mod request_id;
pub mod route;
pub mod trace;
