//! VRRP advertisement decoder: `Ipv4Meta::parse` (the raw-socket read), `Repr::parse` over IPv4
//! and IPv6 address pairs, and the state machine's receive checks and the timeout that follows
//! (Master_Down_Timer running out after whatever the packet did).
//!
//! Invariants, for every input the decoder accepts:
//! - re-encoding gives bytes of the same length that decode to the same value;
//! - `emit` into a poisoned buffer writes exactly what `to_bytes` gives;
//! - the re-encoded bytes equal the input except where the format lets two encodings mean the
//!   same: the checksum (0x0000 and 0xffff are both a zero in one's complement) and, in v3, the
//!   four reserved bits.
//!
//! Each input is tried as it is and again with its checksum filled in, so the fuzzer gets past
//! the checksum to the fields behind it. The seeds are IPv4 packets (the Ethernet header of the
//! captured frames cut off), so the as-is pass covers the raw-socket path too.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vrrp::machine::{Machine, Params, RxMeta, Settings};
use vrrp::packet::{IpPair, Ipv4Meta, Packet, Repr, Version, HEADER_LEN};

fn v4_pair() -> IpPair {
    IpPair {
        src: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 11)),
        dst: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
    }
}

fn v6_pair() -> IpPair {
    IpPair {
        src: IpAddr::V6(Ipv6Addr::new(
            0xfe80, 0, 0, 0, 0xd6ca, 0x6dff, 0xfe66, 0xcf60,
        )),
        dst: IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)),
    }
}

/// Decodes `payload`; if it decodes, checks the round-trip invariants.
fn round_trip(payload: &[u8], ip: &IpPair) {
    let Ok(packet) = Packet::new_checked(payload) else {
        assert!(payload.len() < HEADER_LEN);
        return;
    };
    // The accessors never panic after new_checked.
    let _ = (
        packet.version(),
        packet.msg_type(),
        packet.vrid(),
        packet.priority(),
        packet.count(),
        packet.auth_type(),
        packet.adver_int(),
        packet.max_adver_int(),
        packet.checksum(),
        packet.auth_data(),
        packet.address_bytes(usize::from(packet.count()), 16),
    );
    let Ok(repr) = Repr::parse(&packet, ip) else {
        return;
    };
    assert!(packet.verify_checksum(ip));
    assert_eq!(repr.buffer_len(), payload.len(), "{repr:?}");
    let bytes = repr.to_bytes(ip);
    let again = Repr::parse(
        &Packet::new_checked(&bytes[..]).expect("re-encoded header"),
        ip,
    )
    .expect("re-encoded bytes decode");
    assert_eq!(again, repr);

    let mut poisoned = vec![0xa5u8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut poisoned[..]), ip);
    assert_eq!(poisoned, bytes);

    // Byte for byte, but for the checksum and the v3 reserved bits.
    assert_eq!(bytes[..4], payload[..4]);
    match repr.version {
        Version::V2 => assert_eq!(bytes[4..6], payload[4..6]),
        _ => {
            assert_eq!(bytes[4] & 0x0f, payload[4] & 0x0f);
            assert_eq!(bytes[5], payload[5]);
        }
    }
    assert_eq!(bytes[8..], payload[8..]);
}

/// The receive path of a router (version from the packet, PASS auth for v2).
fn machine(meta: RxMeta, payload: &[u8]) {
    let version = match payload.first() {
        Some(b) if b >> 4 == 3 => Version::V3,
        _ => Version::V2,
    };
    let mut m = Machine::new(Params {
        vrid: 51,
        version,
        primary: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)),
        start_as_master: false,
        settings: Settings {
            priority: 150,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            auth_pass: (version == Version::V2).then(|| b"s3cret".to_vec()),
            vips: vec![IpAddr::V4(Ipv4Addr::new(10, 99, 0, 100))],
            garp_delay: Duration::from_secs(5),
            garp_refresh: Duration::ZERO,
            unicast_peers: Vec::new(),
            v3_checksum: Default::default(),
        },
    });
    let now = Instant::now();
    m.start(now);
    let _ = m.handle_packet(now, meta, payload);
    let _ = m.poll_timeout();
    while m.poll_action().is_some() {}
    // Past any Master_Down_Interval the packet can set (a v3 advert's interval is at most
    // 40.95 s): the timers it left armed fire.
    m.handle_timeout(now + Duration::from_secs(1000));
    while m.poll_action().is_some() {}
}

fn one(data: &[u8]) {
    // As read from the raw socket: an IPv4 header, then VRRP.
    if let Some(meta) = Ipv4Meta::parse(data) {
        assert!(meta.header_len >= 20 && meta.header_len <= meta.total_len);
        assert!(meta.total_len <= data.len());
        let payload = meta.payload(data);
        round_trip(payload, &meta.pair());
        machine(
            RxMeta {
                src: IpAddr::V4(meta.src),
                dst: IpAddr::V4(meta.dst),
                ttl: meta.ttl,
            },
            payload,
        );
    }
    // As a bare VRRP message, over either family.
    round_trip(data, &v4_pair());
    round_trip(data, &v6_pair());
}

/// `data` with the VRRP checksum filled in for `ip` (the whole of `data` is the message).
fn with_checksum(data: &[u8], ip: &IpPair) -> Vec<u8> {
    let mut b = data.to_vec();
    if b.len() >= HEADER_LEN {
        Packet::new_unchecked(&mut b[..]).fill_checksum(ip);
    }
    b
}

fuzz_target!(|data: &[u8]| {
    one(data);
    // Past the checksum: as a bare message over each family, and behind its IPv4 header.
    round_trip(&with_checksum(data, &v4_pair()), &v4_pair());
    round_trip(&with_checksum(data, &v6_pair()), &v6_pair());
    if let Some(meta) = Ipv4Meta::parse(data) {
        let mut b = data.to_vec();
        let range = meta.header_len..meta.total_len;
        let fixed = with_checksum(&b[range.clone()], &meta.pair());
        b[range].copy_from_slice(&fixed);
        one(&b);
    }
});
