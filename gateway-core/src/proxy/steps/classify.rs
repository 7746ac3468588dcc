//! Step 9: what a Pingora error means for the client and for upstream health — a typed [`GwError`]
//! and, when the upstream is at fault, the kind of failure (for the breaker and outlier detection).
use crate::error::GwError;
use pingora::{Error, ErrorSource, ErrorType};

/// What the outcome of the upstream exchange was, for the breaker and outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    Connect,
    Timeout,
    Other,
}

/// Classifies an error no step already typed. `upstream` names the upstream in messages.
pub fn classify(e: &Error, upstream: &str) -> (GwError, Option<UpstreamFailure>) {
    classify_parts(e.etype(), e.esource(), upstream)
}

fn classify_parts(
    etype: &ErrorType,
    source: &ErrorSource,
    upstream: &str,
) -> (GwError, Option<UpstreamFailure>) {
    match etype {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if source != &ErrorSource::Downstream =>
        {
            (
                GwError::upstream_timeout(upstream),
                Some(UpstreamFailure::Timeout),
            )
        }
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout => (
            GwError::upstream_unavailable(upstream),
            Some(UpstreamFailure::Connect),
        ),
        ErrorType::HTTPStatus(c) => (GwError::from_status(*c), None),
        _ => match source {
            ErrorSource::Upstream => (GwError::bad_gateway(upstream), Some(UpstreamFailure::Other)),
            ErrorSource::Downstream => match etype {
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => {
                    (GwError::client_closed(), None)
                }
                ErrorType::ReadTimedout => (GwError::request_timeout(), None),
                _ => (GwError::bad_request("malformed request"), None),
            },
            _ => (GwError::internal("internal error"), None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_errors_to_statuses() {
        let c = |t: ErrorType, s: ErrorSource| {
            let (e, f) = classify_parts(&t, &s, "u");
            (e.status, e.code, f)
        };
        use ErrorSource::*;
        assert_eq!(
            c(ErrorType::ConnectTimedout, Upstream),
            (504, "upstream_timeout", Some(UpstreamFailure::Timeout))
        );
        assert_eq!(
            c(ErrorType::ConnectRefused, Upstream),
            (502, "upstream_unavailable", Some(UpstreamFailure::Connect))
        );
        assert_eq!(
            c(ErrorType::ReadTimedout, Downstream),
            (408, "request_timeout", None)
        );
        assert_eq!(
            c(ErrorType::ConnectionClosed, Downstream),
            (0, "client_closed", None)
        );
        assert_eq!(
            c(ErrorType::InvalidHTTPHeader, Downstream),
            (400, "bad_request", None)
        );
        assert_eq!(
            c(ErrorType::HTTPStatus(400), Internal),
            (400, "bad_request", None)
        );
        assert_eq!(
            c(ErrorType::ReadError, Upstream),
            (502, "bad_gateway", Some(UpstreamFailure::Other))
        );
    }
}
