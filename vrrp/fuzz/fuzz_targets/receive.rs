//! The receive path of the state machine: any bytes from any sender, never a panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vrrp::machine::{Machine, Params, RxMeta};

fuzz_target!(|data: &[u8]| {
    let mut m = Machine::new(Params {
        vrid: 51,
        priority: 100,
        version: if data.first().is_some_and(|b| b & 1 == 1) {
            3
        } else {
            2
        },
        advert_interval: Duration::from_secs(1),
        preempt: true,
        preempt_delay: Duration::ZERO,
        auth_pass: Some(b"s3cret".to_vec()),
        vips: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))],
        primary: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        start_as_master: false,
        garp_delay: Duration::from_secs(5),
        unicast_peers: Vec::new(),
        v3_checksum: Default::default(),
    });
    let now = Instant::now();
    m.start(now);
    let meta = RxMeta {
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        dst: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
        ttl: 255,
    };
    let _ = m.handle_packet(now, meta, data);
    m.handle_timeout(now + Duration::from_secs(10));
    while m.poll_action().is_some() {}
});
