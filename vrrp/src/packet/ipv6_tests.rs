//! VRRPv3 over IPv6 and the two VRRPv3 IPv4 checksums, against frames sent by keepalived 2.2.7
//! (tests/data/ipv6-frames.txt).

use super::*;

const FRAMES: &str = include_str!("../../tests/data/ipv6-frames.txt");

struct Frame {
    summary: String,
    bytes: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("fixture is hex"))
        .collect()
}

fn frames() -> Vec<Frame> {
    let mut out = Vec::new();
    let mut summary = String::new();
    for line in FRAMES.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix("# ") {
            summary = s.to_string();
        } else if !line.is_empty() && !line.starts_with('#') {
            out.push(Frame {
                summary: summary.clone(),
                bytes: hex(line),
            });
        }
    }
    out
}

fn field<'a>(summary: &'a str, key: &str) -> &'a str {
    let pat = format!(" {key}=");
    let at = summary.find(&pat).expect("summary has the field") + pat.len();
    summary[at..].split([' ', '|']).next().unwrap_or("")
}

/// The VRRP message of a frame, its address pair and TTL / hop limit.
fn vrrp_of(frame: &[u8]) -> Option<(IpPair, u8, Vec<u8>)> {
    let ip = &frame[14..];
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => {
            let m = Ipv4Meta::parse(ip)?;
            (m.protocol == PROTOCOL).then(|| (m.pair(), m.ttl, m.payload(ip).to_vec()))
        }
        0x86dd => {
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            let pair = IpPair {
                src: IpAddr::V6(Ipv6Addr::from(src)),
                dst: IpAddr::V6(Ipv6Addr::from(dst)),
            };
            (ip[6] == PROTOCOL).then(|| (pair, ip[7], ip[40..40 + len].to_vec()))
        }
        _ => None,
    }
}

/// (summary, pair, ttl, message) of every VRRP frame of the fixture.
fn adverts() -> Vec<(String, IpPair, u8, Vec<u8>)> {
    frames()
        .into_iter()
        .filter_map(|f| {
            let (pair, ttl, msg) = vrrp_of(&f.bytes)?;
            Some((f.summary, pair, ttl, msg))
        })
        .collect()
}

fn mode_of(summary: &str) -> V3Checksum {
    if summary.contains(" rfc9568 ") {
        V3Checksum::MessageOnly
    } else {
        V3Checksum::PseudoHeader
    }
}

fn v6_advert() -> (IpPair, Vec<u8>) {
    let (_, pair, _, msg) = adverts()
        .into_iter()
        .find(|(s, ..)| s.contains("vrid=61 prio=150"))
        .expect("keepalived's IPv6 advert");
    (pair, msg)
}

#[test]
fn fixture_has_every_kind() {
    assert_eq!(frames().len(), 15);
    let all = adverts();
    assert_eq!(all.len(), 10);
    assert_eq!(all.iter().filter(|(_, p, ..)| p.src.is_ipv6()).count(), 6);
}

#[test]
fn decodes_keepalived_ipv6_as_the_dissector_does() {
    for (s, pair, ttl, msg) in adverts() {
        // RFC 9568 §5.1.1.3, §5.1.2.3: TTL / hop limit 255.
        assert_eq!(ttl, 255, "{s}");
        let p = Packet::new_checked(&msg[..]).expect("header");
        let repr = Repr::parse_with(&p, &pair, mode_of(&s)).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(repr.version, Version::V3, "{s}");
        assert_eq!(repr.vrid.to_string(), field(&s, "vrid"), "{s}");
        assert_eq!(repr.priority.to_string(), field(&s, "prio"), "{s}");
        assert_eq!(
            repr.adver_int.to_string(),
            field(&s, "max_adver_int"),
            "{s}"
        );
        let vips: Vec<String> = repr.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(vips.join(","), field(&s, "vips"), "{s}");
        assert_eq!(
            format!("0x{:04x}", p.checksum()),
            field(&s, "checksum"),
            "{s}"
        );
        if let IpAddr::V6(src) = pair.src {
            // RFC 9568 §5.1.2.1: from the interface's link-local address, to ff02::12.
            assert_eq!(src.segments()[0] & 0xffc0, 0xfe80, "{s}");
            assert_eq!(pair.dst, IpAddr::V6(MULTICAST_V6), "{s}");
        }
    }
}

#[test]
fn reencodes_keepalived_ipv6_byte_identical_and_into_poison() {
    for (s, pair, _, msg) in adverts() {
        let mode = mode_of(&s);
        let repr = Repr::parse_with(&Packet::new_checked(&msg[..]).expect("header"), &pair, mode)
            .expect("parses");
        assert_eq!(repr.buffer_len(), msg.len(), "{s}");
        assert_eq!(repr.to_bytes_with(&pair, mode), msg, "{s}");
        let mut poisoned = vec![0xa5u8; repr.buffer_len()];
        repr.emit_with(&mut Packet::new_unchecked(&mut poisoned[..]), &pair, mode);
        assert_eq!(poisoned, msg, "{s}");
    }
}

#[test]
fn first_address_is_the_link_local_vip_when_configured() {
    let (pair, msg) = v6_advert();
    let repr = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair).expect("ok");
    assert_eq!(
        repr.addresses,
        vec![
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x61)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 0x100)),
        ]
    );
}

#[test]
fn ipv6_checksum_covers_the_pseudo_header() {
    let (pair, msg) = v6_advert();
    let p = Packet::new_checked(&msg[..]).expect("header");
    assert!(p.verify_checksum(&pair));
    // Another source, another destination: the RFC 8200 §8.1 pseudo-header changes.
    let other_src = IpPair {
        src: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        dst: pair.dst,
    };
    assert_eq!(Repr::parse(&p, &other_src), Err(WireError::Checksum));
    let unicast = IpPair {
        src: pair.src,
        dst: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)),
    };
    assert_eq!(Repr::parse(&p, &unicast), Err(WireError::Checksum));
    // The IPv4 option never applies to IPv6: the message alone does not verify.
    let mut alone = msg.clone();
    alone[6..8].copy_from_slice(&[0, 0]);
    let sum = !checksum::sum(&alone);
    alone[6..8].copy_from_slice(&sum.to_be_bytes());
    let p = Packet::new_checked(&alone[..]).expect("header");
    assert_eq!(
        Repr::parse_with(&p, &pair, V3Checksum::MessageOnly),
        Err(WireError::Checksum)
    );
}

#[test]
fn ipv6_broken_adverts_are_rejected() {
    let (pair, msg) = v6_advert();
    for n in 0..msg.len() {
        let r = Packet::new_checked(&msg[..n]).and_then(|p| Repr::parse(&p, &pair));
        assert!(r.is_err(), "len {n} accepted");
    }
    let mut long = msg.clone();
    long.extend_from_slice(&[0; 16]);
    assert_eq!(
        Repr::parse(&Packet::new_checked(&long[..]).expect("header"), &pair),
        Err(WireError::Length {
            len: 56,
            count: 2,
            expected: 40
        })
    );
    let mut flipped = msg.clone();
    flipped[2] ^= 0x01;
    assert_eq!(
        Repr::parse(&Packet::new_checked(&flipped[..]).expect("header"), &pair),
        Err(WireError::Checksum)
    );
    // IPv4-sized addresses in an IPv6 packet: a count mismatch.
    let (_, _, _, v4msg) = adverts()
        .into_iter()
        .find(|(s, ..)| s.contains("vrid=63 prio=150") && !s.contains("rfc9568"))
        .expect("keepalived's IPv4 v3 advert");
    assert!(matches!(
        Repr::parse(&Packet::new_checked(&v4msg[..]).expect("header"), &pair),
        Err(WireError::Length { .. })
    ));
}

/// keepalived's VRRPv3 IPv4 advert (pseudo-header) and the same advert summed as RFC 9568 says.
fn v4_pair_of_checksums() -> (IpPair, Vec<u8>, Vec<u8>) {
    let all = adverts();
    let find = |rfc: bool| {
        all.iter()
            .find(|(s, ..)| s.contains("vrid=63 prio=150") && s.contains(" rfc9568 ") == rfc)
            .map(|(_, p, _, m)| (*p, m.clone()))
            .expect("fixture frame")
    };
    let (pair, keepalived) = find(false);
    let (_, rfc) = find(true);
    (pair, keepalived, rfc)
}

#[test]
fn ipv4_checksum_option_emits_each_form() {
    let (pair, keepalived, rfc) = v4_pair_of_checksums();
    let repr = Repr::parse(
        &Packet::new_checked(&keepalived[..]).expect("header"),
        &pair,
    )
    .expect("keepalived's form is the default");
    assert_eq!(repr.to_bytes(&pair), keepalived);
    assert_eq!(
        repr.to_bytes_with(&pair, V3Checksum::PseudoHeader),
        keepalived
    );
    assert_eq!(repr.to_bytes_with(&pair, V3Checksum::MessageOnly), rfc);
    // Only the checksum differs.
    assert_eq!(keepalived[..6], rfc[..6]);
    assert_eq!(keepalived[8..], rfc[8..]);
}

#[test]
fn ipv4_checksum_option_on_receive_follows_keepalived() {
    let (pair, keepalived, rfc) = v4_pair_of_checksums();
    let parse =
        |b: &[u8], mode| Repr::parse_with(&Packet::new_checked(b).expect("header"), &pair, mode);
    // Default (keepalived without v3_checksum_as_v2): the pseudo-header form only.
    assert!(parse(&keepalived, V3Checksum::PseudoHeader).is_ok());
    assert_eq!(
        parse(&rfc, V3Checksum::PseudoHeader),
        Err(WireError::Checksum)
    );
    // RFC 9568 mode: both forms (keepalived with the option checks neither), nothing else.
    assert!(parse(&keepalived, V3Checksum::MessageOnly).is_ok());
    assert!(parse(&rfc, V3Checksum::MessageOnly).is_ok());
    // keepalived 2.4.3 with v3_checksum_as_v2 sends the RFC 9568 form.
    let (_, ka_pair, _, ka243) = adverts()
        .into_iter()
        .find(|(s, ..)| s.contains("ip.src=10.97.0.11"))
        .expect("keepalived 2.4.3's frame");
    let p = Packet::new_checked(&ka243[..]).expect("header");
    assert_eq!(
        Repr::parse(&p, &ka_pair),
        Err(WireError::Checksum),
        "not keepalived's default form"
    );
    let repr = Repr::parse_with(&p, &ka_pair, V3Checksum::MessageOnly).expect("RFC 9568 form");
    assert_eq!(repr.to_bytes_with(&ka_pair, V3Checksum::MessageOnly), ka243);
    let mut bad = rfc.clone();
    bad[7] ^= 0x40;
    assert_eq!(
        parse(&bad, V3Checksum::MessageOnly),
        Err(WireError::Checksum)
    );
    // VRRPv2 has no pseudo-header whatever the mode.
    let v2 = Repr {
        version: Version::V2,
        vrid: 1,
        priority: 100,
        auth: Auth::None,
        adver_int: 1,
        addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 98, 0, 163))],
    };
    assert_eq!(
        v2.to_bytes_with(&pair, V3Checksum::MessageOnly),
        v2.to_bytes(&pair)
    );
}
