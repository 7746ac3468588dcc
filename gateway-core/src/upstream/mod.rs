//! Upstreams at run time: endpoint sets, load balancing (`lb`), active health checks (`health`) and
//! passive outlier ejection (via [`crate::policy::breaker::OutlierDetector`]).
pub mod health;
pub mod lb;

pub use lb::{Balancer, EndpointStats, Pick};
