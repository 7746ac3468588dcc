#![no_main]
//! Fuzz target; the body lives in `gateway_core::fuzzing::traceparent_target` (shared with the stable proptests).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway_core::fuzzing::traceparent_target(data));
