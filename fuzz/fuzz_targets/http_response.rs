//! The http mode's response decoder toward the regions (`lb/src/upstream.rs`: head parsing,
//! framing, chunked decoding) fed arbitrary server bytes. The target is
//! `lb::upstream::fuzzing::run` (the `fuzzing` feature), which drives the decoder as the proxy
//! does but from memory, with the stream split into reads in several ways, and checks that the
//! outcome does not depend on the split, that a response judged reusable leaves its connection
//! exactly at the start of the next one (no desynchronised pool), and that the length relayed
//! to the client is the one that framed the body. `tests/tests/fuzz_regressions.rs` replays the
//! seeds and regressions through the same function.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lb::upstream::fuzzing::run(data));
