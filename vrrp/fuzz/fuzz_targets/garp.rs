//! The gratuitous ARP parser: never panics, and what it accepts it can rebuild.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vrrp::arp::Garp;

fuzz_target!(|data: &[u8]| {
    if let Some(g) = Garp::parse(data) {
        assert_eq!(Garp::parse(&g.to_frame()), Some(g));
    }
});
