//! Routing: path normalisation and the path policy, route patterns, the matcher and rewrites.
pub mod normalize;
pub mod path_policy;
pub mod pattern;
pub mod rewrite;
pub mod router;
mod trie;

pub use normalize::{normalize_path, normalize_with};
pub use path_policy::{EscapedSlashes, PathError, PathPolicy, Semicolons};
pub use pattern::Pattern;
pub use router::{
    Captures, HostRule, MatchOutcome, PathRule, RequestView, RouteId, RouteRule, Router,
};
