//! The VRRP decoder: never panics, and what it accepts re-encodes to bytes that decode to the
//! same value, identical but for the v3 reserved bits (RFC 9568 §5.2.5: sent as zero, ignored)
//! and a checksum of 0xffff, the other one's-complement zero, which we write as 0x0000.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use vrrp::packet::{IpPair, Ipv4Meta, Packet, Repr, Version};

fuzz_target!(|data: &[u8]| {
    let v4 = IpPair {
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        dst: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
    };
    let v6 = IpPair {
        src: IpAddr::V6(Ipv6Addr::LOCALHOST),
        dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    for pair in [v4, v6] {
        if let Ok(p) = Packet::new_checked(data) {
            if let Ok(repr) = Repr::parse(&p, &pair) {
                assert_eq!(repr.buffer_len(), data.len());
                let bytes = repr.to_bytes(&pair);
                let again = Repr::parse(&Packet::new_checked(&bytes[..]).expect("header"), &pair);
                assert_eq!(again.as_ref(), Ok(&repr));
                if repr.version == Version::V2 || data[4] & 0xf0 == 0 {
                    assert_eq!(bytes[..6], data[..6]);
                    assert_eq!(bytes[8..], data[8..]);
                    if data[6..8] != [0xff, 0xff] {
                        assert_eq!(bytes[6..8], data[6..8]);
                    }
                }
            }
        }
    }
    if let Some(m) = Ipv4Meta::parse(data) {
        let _ = m.payload(data);
    }
});
