//! Routing: path normalisation, route patterns, the matcher and rewrites.
pub mod normalize;
pub mod pattern;
pub mod rewrite;
pub mod router;

pub use normalize::{normalize_path, PathError};
pub use pattern::Pattern;
pub use router::{
    Captures, HostRule, MatchOutcome, PathRule, RequestView, RouteId, RouteRule, Router,
};
