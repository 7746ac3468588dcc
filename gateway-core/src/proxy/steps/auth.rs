//! Step 4: the route's jwt policy (401 / 403). On success: the verified identity (if any) and the
//! claim headers to forward upstream.
use crate::error::GwError;
use crate::observability::AuthMetrics;
use crate::policy::auth::{Authenticator, Identity, Now, RoutePolicy};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use std::sync::Arc;

/// What a successful authentication hands on.
#[derive(Default)]
pub struct Authenticated {
    pub identity: Option<Arc<Identity>>,
    pub forward: Vec<(HeaderName, HeaderValue)>,
}

/// Verifies the request against `policy`; a failure is counted in `metrics` by reason.
pub async fn authenticate(
    auth: &Authenticator,
    policy: &RoutePolicy,
    metrics: &AuthMetrics,
    req: &RequestHeader,
) -> Result<Authenticated, GwError> {
    match auth
        .authenticate(&req.headers, req.uri.query(), policy, Now::system())
        .await
    {
        Ok(Some(id)) => Ok(Authenticated {
            forward: auth.forward_headers(&id).collect(),
            identity: Some(id),
        }),
        Ok(None) => Ok(Authenticated::default()),
        Err(e) => {
            metrics.failure(e.reason().as_str());
            Err(GwError::auth(&e))
        }
    }
}
