//! Gratuitous ARP decoder (`vrrp::arp::Garp::parse`): whatever decodes re-encodes to a frame
//! that decodes to the same value, and `emit` never writes past a short buffer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vrrp::arp::{Garp, GARP_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(g) = Garp::parse(data) {
        assert!(data.len() >= GARP_LEN);
        // ARP over Ethernet (0x0806), Ethernet hardware (1), IPv4 (0x0800), 6- and 4-byte
        // addresses: the decoder accepts nothing else.
        assert_eq!(data[12..14], [0x08, 0x06]);
        assert_eq!(data[14..20], [0x00, 0x01, 0x08, 0x00, 6, 4]);
        let frame = g.to_frame();
        assert_eq!(Garp::parse(&frame), Some(g));
        let mut poisoned = [0xa5u8; GARP_LEN + 4];
        assert!(g.emit(&mut poisoned));
        assert_eq!(poisoned[..GARP_LEN], frame[..]);
        assert_eq!(poisoned[GARP_LEN..], [0xa5; 4]);
    }
    // Emitting into a buffer as long as the input: false when short, never a panic.
    let g = Garp {
        mac: [2, 0, 0, 0, 0, 1],
        addr: std::net::Ipv4Addr::new(10, 0, 0, 100),
    };
    let mut buf = vec![0u8; data.len().min(64)];
    assert_eq!(g.emit(&mut buf), buf.len() >= GARP_LEN);
});
