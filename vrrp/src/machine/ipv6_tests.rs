//! The machine with IPv6 addresses (VRRPv3 over IPv6, RFC 9568) and with the RFC 9568 IPv4
//! checksum: receive checks and the equal-priority tie-break, without I/O.

use std::net::Ipv6Addr;

use super::*;
use crate::packet::{MULTICAST_V4, MULTICAST_V6};

const SEC: Duration = Duration::from_secs(1);

fn ll(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last))
}

fn vip() -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 0x100))
}

fn params(priority: u8, primary: IpAddr, vips: Vec<IpAddr>) -> Params {
    Params {
        vrid: 61,
        version: Version::V3,
        primary,
        start_as_master: false,
        settings: Settings {
            priority,
            advert_interval: SEC,
            preempt: true,
            preempt_delay: Duration::ZERO,
            auth_pass: None,
            vips,
            garp_delay: Duration::from_secs(5),
            garp_refresh: Duration::ZERO,
            unicast_peers: Vec::new(),
            v3_checksum: V3Checksum::default(),
        },
    }
}

/// A master's advert as it goes on the wire, with the meta the receiver sees.
fn advert_from(m: &Machine, dst: IpAddr, ttl: u8) -> (RxMeta, Vec<u8>) {
    let pair = IpPair {
        src: m.params().primary,
        dst,
    };
    let bytes = m
        .advert(m.priority())
        .to_bytes_with(&pair, m.params().settings.v3_checksum);
    let meta = RxMeta {
        src: pair.src,
        dst,
        ttl,
    };
    (meta, bytes)
}

fn drain(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

#[test]
fn ipv6_advert_lists_ipv6_vips_and_is_accepted() {
    let t = Instant::now();
    let mut master = Machine::new(params(150, ll(1), vec![ll(0x61), vip()]));
    master.start(t);
    master.handle_timeout(t + 4 * SEC);
    assert_eq!(master.state(), State::Master);
    let (meta, bytes) = advert_from(&master, IpAddr::V6(MULTICAST_V6), 255);
    let mut backup = Machine::new(params(100, ll(2), vec![ll(0x61), vip()]));
    backup.start(t);
    assert_eq!(backup.handle_packet(t + SEC, meta, &bytes), Ok(()));
    assert_eq!(backup.stats().vip_mismatch, 0);
    // RFC 9568 §5.1.2.3 / §7.1: hop limit 255 or dropped.
    let (meta, bytes) = advert_from(&master, IpAddr::V6(MULTICAST_V6), 254);
    assert_eq!(
        backup.handle_packet(t + SEC, meta, &bytes),
        Err(Reject::Ttl)
    );
    // Our own advert looped back.
    let (mut meta, bytes) = advert_from(&master, IpAddr::V6(MULTICAST_V6), 255);
    meta.src = ll(2);
    assert_eq!(
        backup.handle_packet(t + SEC, meta, &bytes),
        Err(Reject::Own)
    );
    // A pseudo-header of another source: checksum.
    let (mut meta, bytes) = advert_from(&master, IpAddr::V6(MULTICAST_V6), 255);
    meta.src = ll(3);
    assert_eq!(
        backup.handle_packet(t + SEC, meta, &bytes),
        Err(Reject::Checksum)
    );
    assert_eq!(backup.stats().rejected(Reject::Ttl), 1);
    assert_eq!(backup.state(), State::Backup);
}

#[test]
fn ipv6_equal_priority_goes_to_the_higher_address() {
    // RFC 9568 §6.4.3: equal priority, the greater primary address wins (compared as
    // 128-bit numbers).
    let t = Instant::now();
    let mut low = Machine::new(params(100, ll(0x00ff), vec![vip()]));
    let mut high = Machine::new(params(100, ll(0x0100), vec![vip()]));
    for m in [&mut low, &mut high] {
        m.start(t);
        m.handle_timeout(t + 4 * SEC);
        assert_eq!(m.state(), State::Master);
        drain(m);
    }
    let (meta, bytes) = advert_from(&high, IpAddr::V6(MULTICAST_V6), 255);
    low.handle_packet(t + 4 * SEC, meta, &bytes)
        .expect("accepted");
    assert_eq!(low.state(), State::Backup);
    let (meta, bytes) = advert_from(&low, IpAddr::V6(MULTICAST_V6), 255);
    high.handle_packet(t + 4 * SEC, meta, &bytes)
        .expect("accepted");
    assert_eq!(high.state(), State::Master);
}

#[test]
fn rfc9568_ipv4_checksum_between_two_routers() {
    let t = Instant::now();
    let v4 = |o| IpAddr::V4(Ipv4Addr::new(10, 0, 0, o));
    let mut rfc = params(150, v4(1), vec![v4(100)]);
    rfc.settings.v3_checksum = V3Checksum::MessageOnly;
    let mut master = Machine::new(rfc.clone());
    master.start(t);
    master.handle_timeout(t + 4 * SEC);
    let (meta, bytes) = advert_from(&master, IpAddr::V4(MULTICAST_V4), 255);
    // A keepalived-default backup refuses the RFC 9568 form...
    let mut default = Machine::new(params(100, v4(2), vec![v4(100)]));
    default.start(t);
    assert_eq!(
        default.handle_packet(t + SEC, meta, &bytes),
        Err(Reject::Checksum)
    );
    // ...one set to RFC 9568 takes it, and keepalived's form too.
    rfc.primary = v4(3);
    rfc.settings.priority = 100;
    let mut other = Machine::new(rfc);
    other.start(t);
    assert_eq!(other.handle_packet(t + SEC, meta, &bytes), Ok(()));
    let mut keepalived_like = Machine::new(params(120, v4(4), vec![v4(100)]));
    keepalived_like.start(t);
    keepalived_like.handle_timeout(t + 4 * SEC);
    let (meta, bytes) = advert_from(&keepalived_like, IpAddr::V4(MULTICAST_V4), 255);
    assert_eq!(other.handle_packet(t + SEC, meta, &bytes), Ok(()));
}
