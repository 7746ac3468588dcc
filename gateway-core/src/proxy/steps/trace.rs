//! Step 1b: W3C Trace Context (<https://www.w3.org/TR/trace-context/>). A valid client `traceparent`
//! is joined: its trace id is kept and gw's own span (a fresh span id) becomes the parent of the
//! upstream's, with the client's sampled flag; its `tracestate` goes upstream unchanged. An absent or
//! invalid `traceparent` (version `ff`, bad length, non-lowercase-hex, all-zero trace or parent id, a
//! second `traceparent` line) starts a new trace, sampled; the client's header never goes upstream as
//! it came, and its `tracestate` (which belongs to the discarded trace) is dropped.
//!
//! Versions above `00` are parsed by the spec's rules for unknown versions: at least 55 characters,
//! the version-00 fields in place, then the end of the header or a `-`. gw always sends version `00`.
//! The parser is ours: a fixed-layout check of 55 bytes, no allocation.
use crate::error::GwError;
use http::{HeaderMap, HeaderValue};
use pingora::http::RequestHeader;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::cell::RefCell;

/// Length of a version-00 `traceparent`: `vv-<32 hex>-<16 hex>-ff`.
pub const TRACEPARENT_LEN: usize = 55;

/// The fields gw uses from a valid client `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The client's span: the parent of gw's.
    pub span_id: [u8; 8],
    /// The sampled flag (bit 0 of the flags).
    pub sampled: bool,
}

/// Parses one `traceparent` value; `None` when the spec says to ignore it (and restart the trace).
pub fn parse(v: &[u8]) -> Option<Parent> {
    if v.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = hex_byte(v[0], v[1])?;
    if version == 0xff || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    // version 00 is exactly 55 characters; a later version may carry more fields after a '-'
    if (version == 0 && v.len() != TRACEPARENT_LEN)
        || (v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-')
    {
        return None;
    }
    let mut trace_id = [0u8; 16];
    decode(&v[3..35], &mut trace_id)?;
    let mut span_id = [0u8; 8];
    decode(&v[36..52], &mut span_id)?;
    let flags = hex_byte(v[53], v[54])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// This request's place in a trace: the trace id, gw's span id and the one `traceparent` sent
/// upstream. Built by [`context`]; about 100 bytes, no heap.
#[derive(Debug, Clone)]
pub struct TraceContext {
    /// `00-<trace id>-<gw's span id>-<flags>`, ASCII.
    header: [u8; TRACEPARENT_LEN],
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// The client's span, `None` when gw started the trace.
    parent: Option<[u8; 8]>,
    sampled: bool,
}

impl TraceContext {
    fn new(trace_id: [u8; 16], span_id: [u8; 8], parent: Option<[u8; 8]>, sampled: bool) -> Self {
        let mut header = *b"00-00000000000000000000000000000000-0000000000000000-00";
        encode(&trace_id, &mut header[3..35]);
        encode(&span_id, &mut header[36..52]);
        header[54] = if sampled { b'1' } else { b'0' };
        TraceContext {
            header,
            trace_id,
            span_id,
            parent,
            sampled,
        }
    }

    /// The trace id as 32 lowercase hex digits (the access log's `trace_id`).
    pub fn trace_id_hex(&self) -> &str {
        // only ASCII hex is ever written
        std::str::from_utf8(&self.header[3..35]).unwrap_or("")
    }
    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }
    /// gw's span id: the parent of the upstream's span.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }
    /// The client's span id, `None` when gw started the trace.
    pub fn parent_span_id(&self) -> Option<[u8; 8]> {
        self.parent
    }
    /// Whether the trace is sampled (the flag sent upstream).
    pub fn sampled(&self) -> bool {
        self.sampled
    }
    /// Whether the client's `traceparent` was joined (else gw started a new trace).
    pub fn joined(&self) -> bool {
        self.parent.is_some()
    }
    /// The `traceparent` value sent upstream.
    pub fn traceparent(&self) -> &str {
        std::str::from_utf8(&self.header).unwrap_or("")
    }
}

/// Joins the client's trace when its one `traceparent` is valid, else starts a new (sampled) one;
/// either way gw gets a fresh span id.
pub fn context(h: &HeaderMap) -> TraceContext {
    let mut lines = h.get_all("traceparent").iter();
    let parent = match (lines.next(), lines.next()) {
        (Some(v), None) => parse(v.as_bytes()),
        _ => None,
    };
    let (span_id, fresh_trace) = random_ids();
    match parent {
        Some(p) => TraceContext::new(p.trace_id, span_id, Some(p.span_id), p.sampled),
        None => TraceContext::new(fresh_trace, span_id, None, true),
    }
}

/// Sets `traceparent` on the request sent upstream (replacing whatever the client sent) and drops
/// the client's `tracestate` when gw started a new trace (a joined trace keeps it as it came).
pub fn apply(up: &mut RequestHeader, t: &TraceContext) -> Result<(), GwError> {
    let v = HeaderValue::from_bytes(&t.header)
        .map_err(|_| GwError::internal("could not build traceparent"))?;
    up.insert_header("traceparent", v)
        .map_err(|_| GwError::internal("could not set traceparent"))?;
    if !t.joined() {
        up.remove_header("tracestate");
    }
    Ok(())
}

thread_local! {
    /// A fast non-cryptographic generator per thread, seeded from the OS: trace and span ids need to
    /// be unique, not secret.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A non-zero span id and a non-zero trace id.
fn random_ids() -> ([u8; 8], [u8; 16]) {
    RNG.with(|r| {
        let mut r = r.borrow_mut();
        let span = r.random::<u64>().max(1);
        let trace = r.random::<u128>().max(1);
        (span.to_be_bytes(), trace.to_be_bytes())
    })
}

/// Lowercase hex only (the spec rejects uppercase).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some(hex_digit(hi)? << 4 | hex_digit(lo)?)
}

fn decode(hex: &[u8], out: &mut [u8]) -> Option<()> {
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = hex_byte(pair[0], pair[1])?;
    }
    Some(())
}

fn encode(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = HEX[(b >> 4) as usize];
        o[1] = HEX[(b & 15) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let p = parse(VALID.as_bytes()).unwrap();
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.trace_id[15], 0x36);
        assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(p.sampled);
        let unsampled = VALID.replace("-01", "-00");
        assert!(!parse(unsampled.as_bytes()).unwrap().sampled);
        // unknown flag bits are ignored, the sampled bit read
        assert!(
            parse(VALID.replace("-01", "-03").as_bytes())
                .unwrap()
                .sampled
        );
        assert!(
            !parse(VALID.replace("-01", "-fe").as_bytes())
                .unwrap()
                .sampled
        );
    }

    #[test]
    fn rejects_what_the_spec_says_to_ignore() {
        let bad = [
            // version ff is invalid
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            // version 00 must be exactly 55 characters
            format!("{VALID}-extra"),
            format!("{VALID}0"),
            VALID[..54].to_string(),
            String::new(),
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_string(),
            // uppercase or non-hex
            VALID.to_uppercase(),
            VALID.replace("4bf9", "4BF9"),
            VALID.replace("00f0", "00g0"),
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            VALID.replace("-01", "-0x"),
            // separators
            VALID.replacen('-', "_", 1),
            VALID.replace("-00f0", "_00f0"),
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0".to_string(),
            // a later version: more than 55 characters need a '-' at 55
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x".to_string(),
        ];
        for b in &bad {
            assert_eq!(parse(b.as_bytes()), None, "{b:?}");
        }
    }

    #[test]
    fn later_versions_parse_by_the_version_00_layout() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(parse(v.as_bytes()).unwrap().sampled);
        let more = format!("{v}-what-the-future-brings");
        assert_eq!(parse(more.as_bytes()), parse(v.as_bytes()));
    }

    #[test]
    fn joins_a_valid_trace_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(VALID));
        let t = context(&h);
        assert!(t.joined());
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(&t.traceparent()[36..52], "00f067aa0ba902b7");
        assert_ne!(t.span_id(), [0; 8]);
        assert_eq!(t.parent_span_id().unwrap()[1], 0xf0);
        let tp = t.traceparent();
        assert_eq!(tp.len(), TRACEPARENT_LEN);
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(tp.ends_with("-01"));
        // what gw sends parses back to its own span
        let back = parse(tp.as_bytes()).unwrap();
        assert_eq!(back.span_id, t.span_id());
        // unsampled stays unsampled
        h.insert(
            "traceparent",
            HeaderValue::from_str(&VALID.replace("-01", "-00")).unwrap(),
        );
        let t = context(&h);
        assert!(!t.sampled());
        assert!(t.traceparent().ends_with("-00"));
    }

    #[test]
    fn starts_a_new_trace_when_absent_invalid_or_repeated() {
        let t = context(&HeaderMap::new());
        assert!(!t.joined() && t.sampled());
        assert_ne!(t.trace_id(), [0; 16]);
        assert!(parse(t.traceparent().as_bytes()).is_some());
        assert_ne!(context(&HeaderMap::new()).trace_id(), t.trace_id());
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        assert!(!context(&h).joined());
        // two lines: which one would be meant is unknowable
        h.insert("traceparent", HeaderValue::from_static(VALID));
        h.append("traceparent", HeaderValue::from_static(VALID));
        let t = context(&h);
        assert!(!t.joined());
        assert_ne!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn apply_replaces_traceparent_and_keeps_tracestate_only_when_joined() {
        let mut up = RequestHeader::build("GET", b"/", None).unwrap();
        up.insert_header("traceparent", VALID).unwrap();
        up.insert_header("tracestate", "vendor=1").unwrap();
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(VALID));
        let joined = context(&h);
        apply(&mut up, &joined).unwrap();
        assert_eq!(up.headers["traceparent"], joined.traceparent());
        assert_eq!(up.headers["tracestate"], "vendor=1");
        up.insert_header("traceparent", "ff-bogus").unwrap();
        let fresh = context(&HeaderMap::new());
        apply(&mut up, &fresh).unwrap();
        assert_eq!(up.headers.get_all("traceparent").iter().count(), 1);
        assert_eq!(up.headers["traceparent"], fresh.traceparent());
        assert!(up.headers.get("tracestate").is_none());
    }
}
