//! Upstreams at run time: endpoint sets, load balancing (`lb`), active health checks (`health`) and
//! passive outlier ejection (via [`crate::policy::breaker::OutlierDetector`]).
pub mod ewma;
pub mod health;
pub mod lb;
pub mod pick;
pub mod tunnel;

pub use lb::{Balancer, EndpointStats, Pick};
