//! Step 3: the body size limit — by `Content-Length` before anything is read, and counted as a
//! streamed body arrives (413).
use crate::error::GwError;
use http::HeaderMap;

/// Refuses a request whose declared `Content-Length` is over `max`.
pub fn check_declared(max: Option<u64>, h: &HeaderMap) -> Result<(), GwError> {
    let Some(max) = max else { return Ok(()) };
    let declared = h
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(GwError::payload_too_large(max));
    }
    Ok(())
}

/// Adds a received chunk to `seen`; an error once the total passes `max`.
pub fn count(seen: &mut u64, chunk: usize, max: Option<u64>) -> Result<(), GwError> {
    *seen += chunk as u64;
    match max {
        Some(max) if *seen > max => Err(GwError::payload_too_large(max)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_and_streamed() {
        let mut h = HeaderMap::new();
        h.insert("content-length", "11".parse().unwrap());
        assert_eq!(check_declared(Some(10), &h).unwrap_err().status, 413);
        assert!(check_declared(Some(11), &h).is_ok());
        assert!(check_declared(None, &h).is_ok());
        let mut seen = 0;
        assert!(count(&mut seen, 6, Some(10)).is_ok());
        assert_eq!(count(&mut seen, 5, Some(10)).unwrap_err().status, 413);
    }
}
