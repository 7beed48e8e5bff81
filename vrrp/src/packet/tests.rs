//! Frames captured from keepalived 2.2.7 and tcpdump's test pcap, decoded and re-encoded.

use super::*;

const FRAMES: &str = include_str!("../../tests/data/vrrp-frames.txt");

/// One line of the fixture: the dissector's summary and the bytes.
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
    for line in FRAMES.lines() {
        let line = line.trim();
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

/// Field `key=` of a summary line.
fn field<'a>(summary: &'a str, key: &str) -> &'a str {
    let pat = format!(" {key}=");
    let at = summary.find(&pat).expect("summary has the field") + pat.len();
    summary[at..].split([' ', '|']).next().unwrap_or("")
}

/// The VRRP message of an Ethernet frame with its IP pair and TTL.
fn vrrp_of(frame: &[u8]) -> Option<(IpPair, u8, &[u8])> {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    match ethertype {
        0x0800 => {
            let m = Ipv4Meta::parse(ip)?;
            (m.protocol == PROTOCOL).then(|| (m.pair(), m.ttl, m.payload(ip)))
        }
        0x86dd => {
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            let pair = IpPair {
                src: IpAddr::V6(Ipv6Addr::from(src)),
                dst: IpAddr::V6(Ipv6Addr::from(dst)),
            };
            (ip[6] == PROTOCOL).then(|| (pair, ip[7], &ip[40..40 + len]))
        }
        _ => None,
    }
}

fn vrrp_frames() -> Vec<(Frame, IpPair, u8, Vec<u8>)> {
    frames()
        .into_iter()
        .filter_map(|f| {
            let (pair, ttl, msg) = vrrp_of(&f.bytes)?;
            let msg = msg.to_vec();
            Some((f, pair, ttl, msg))
        })
        .collect()
}

#[test]
fn fixture_has_every_kind() {
    let all = frames();
    assert_eq!(all.len(), 17);
    assert_eq!(vrrp_frames().len(), 13);
}

#[test]
fn decodes_every_frame_as_the_dissector_does() {
    for (f, pair, ttl, msg) in vrrp_frames() {
        assert_eq!(ttl, 255, "{}", f.summary);
        let repr = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair)
            .unwrap_or_else(|e| panic!("{}: {e}", f.summary));
        let s = &f.summary;
        assert_eq!(
            u8::from(repr.version).to_string(),
            field(s, "version"),
            "{s}"
        );
        assert_eq!(repr.vrid.to_string(), field(s, "vrid"), "{s}");
        assert_eq!(repr.priority.to_string(), field(s, "prio"), "{s}");
        let vips: Vec<String> = repr.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(vips.join(","), field(s, "vips"), "{s}");
        let cksum = Packet::new_unchecked(&msg[..]).checksum();
        assert_eq!(format!("0x{cksum:04x}"), field(s, "checksum"), "{s}");
        if repr.version == Version::V2 {
            assert_eq!(repr.adver_int.to_string(), field(s, "adver_int"), "{s}");
            assert_eq!(repr.auth.code().to_string(), field(s, "auth_type"), "{s}");
            if let Auth::SimpleText(d) = repr.auth {
                let pass: Vec<u8> = d.iter().copied().take_while(|b| *b != 0).collect();
                assert_eq!(String::from_utf8_lossy(&pass), field(s, "auth"), "{s}");
            }
        } else {
            assert_eq!(repr.auth, Auth::None);
            // tcpdump's v3 frames say 1000 cs (10 s), keepalived's 10 cs (advert_int 0.1).
            let want = if s.contains("src=10.0.0.91") || s.contains("src=fe80") {
                1000
            } else {
                10
            };
            assert_eq!(repr.adver_int, want, "{s}");
        }
    }
}

#[test]
fn reencodes_byte_identical() {
    for (f, pair, _, msg) in vrrp_frames() {
        let repr = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair)
            .expect("fixture parses");
        assert_eq!(repr.buffer_len(), msg.len(), "{}", f.summary);
        assert_eq!(repr.to_bytes(&pair), msg, "{}", f.summary);
    }
}

#[test]
fn emit_into_poisoned_buffer() {
    for (f, pair, _, msg) in vrrp_frames() {
        let repr = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair)
            .expect("fixture parses");
        let mut buf = vec![0xa5u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]), &pair);
        assert_eq!(buf, msg, "{}", f.summary);
    }
}

#[test]
fn keepalived_v2_frame_fields() {
    let (_, pair, _, msg) = vrrp_frames().into_iter().next().expect("first frame");
    let repr = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair).expect("ok");
    assert_eq!(
        repr,
        Repr {
            version: Version::V2,
            vrid: 51,
            priority: 150,
            auth: Auth::simple(b"s3cret"),
            adver_int: 1,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 99, 0, 100))],
        }
    );
    assert_eq!(
        pair.src,
        IpAddr::V4(Ipv4Addr::new(10, 99, 0, 11)),
        "source is the primary address"
    );
}

#[test]
fn our_ip_header_matches_keepalived() {
    // keepalived's first frame: id 4; the rest of the header must be ours byte for byte.
    let f = &frames()[0].bytes;
    let ip = &f[14..14 + 40];
    let ours = ipv4_frame(Ipv4Addr::new(10, 99, 0, 11), MULTICAST_V4, 4, &ip[20..]);
    assert_eq!(ours, ip);
}

fn first_v2() -> (IpPair, Vec<u8>) {
    let (_, pair, _, msg) = vrrp_frames().into_iter().next().expect("first frame");
    (pair, msg)
}

#[test]
fn truncated_is_rejected_never_panics() {
    let (pair, msg) = first_v2();
    for n in 0..msg.len() {
        let cut = &msg[..n];
        let r = Packet::new_checked(cut).and_then(|p| Repr::parse(&p, &pair));
        assert!(r.is_err(), "len {n} accepted");
        if n < HEADER_LEN {
            assert_eq!(r, Err(WireError::Truncated));
        }
    }
    // The view's accessors are bounded too.
    let p = Packet::new_checked(&msg[..10]).expect("header");
    assert_eq!(p.auth_data(), None);
    assert_eq!(p.address_bytes(1, 4), None);
}

#[test]
fn overlong_is_a_count_mismatch() {
    let (pair, mut msg) = first_v2();
    msg.extend_from_slice(&[0, 0, 0, 0]);
    let r = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair);
    assert_eq!(
        r,
        Err(WireError::Length {
            len: 24,
            count: 1,
            expected: 20
        })
    );
}

#[test]
fn count_mismatch_is_rejected() {
    let (pair, mut msg) = first_v2();
    msg[3] = 2;
    let r = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair);
    assert!(
        matches!(r, Err(WireError::Length { count: 2, .. })),
        "{r:?}"
    );
}

#[test]
fn bad_checksum_is_rejected() {
    let (pair, mut msg) = first_v2();
    msg[6] ^= 0x01;
    let r = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair);
    assert_eq!(r, Err(WireError::Checksum));
    // A flipped password byte breaks the checksum too.
    let (pair, mut msg) = first_v2();
    msg[12] ^= 0x20;
    let r = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair);
    assert_eq!(r, Err(WireError::Checksum));
}

#[test]
fn bad_version_and_type_are_rejected() {
    let (pair, mut msg) = first_v2();
    msg[0] = 0x41;
    let r = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair);
    assert_eq!(r, Err(WireError::Version(4)));
    assert_eq!(
        Packet::new_unchecked(&msg[..]).version(),
        Version::Unknown(4)
    );
    let (pair, mut msg) = first_v2();
    msg[0] = 0x22;
    let r = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair);
    assert_eq!(r, Err(WireError::Type(2)));
    assert_eq!(Packet::new_unchecked(&msg[..]).msg_type(), Type::Unknown(2));
}

#[test]
fn v3_checksum_needs_the_pseudo_header() {
    let (_, pair, _, msg) = vrrp_frames()
        .into_iter()
        .find(|(f, ..)| f.summary.contains("version=3 vrid=9 prio=120"))
        .expect("keepalived v3 frame");
    let p = Packet::new_checked(&msg[..]).expect("header");
    assert!(p.verify_checksum(&pair));
    let other = IpPair {
        src: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 13)),
        dst: pair.dst,
    };
    assert!(!p.verify_checksum(&other));
    assert_eq!(Repr::parse(&p, &other), Err(WireError::Checksum));
}

#[test]
fn v2_over_ipv6_is_rejected() {
    let (_, msg) = first_v2();
    let pair = IpPair {
        src: IpAddr::V6(Ipv6Addr::LOCALHOST),
        dst: IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let r = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair);
    assert_eq!(r, Err(WireError::Family));
}

#[test]
fn unknown_auth_type_is_kept() {
    let (pair, msg) = first_v2();
    let mut repr = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair).expect("ok");
    repr.auth = Auth::Unknown(2, *b"abcdefgh");
    let bytes = repr.to_bytes(&pair);
    let back = Repr::parse(&Packet::new_checked(&bytes[..]).expect("header"), &pair).expect("ok");
    assert_eq!(back.auth, Auth::Unknown(2, *b"abcdefgh"));
}

#[test]
fn ipv4_meta_rejects_short_or_lying_headers() {
    assert_eq!(Ipv4Meta::parse(&[0x45; 10]), None);
    let f = &frames()[0].bytes[14..];
    let mut lying = f.to_vec();
    lying[3] = 0xff; // total length beyond the buffer
    assert_eq!(Ipv4Meta::parse(&lying), None);
    let mut short_ihl = f.to_vec();
    short_ihl[0] = 0x44;
    assert_eq!(Ipv4Meta::parse(&short_ihl), None);
}

#[test]
fn checksum_rfc1071_example() {
    // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
    assert_eq!(
        checksum::sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0xddf2
    );
    assert_eq!(checksum::sum(&[0xff]), 0xff00);
}

#[test]
fn v3_reserved_bits_are_ignored_and_sent_as_zero() {
    // Found by the `packet` fuzz target: RFC 9568 §5.2.5 reserved bits, ignored on receipt.
    let (_, pair, _, msg) = vrrp_frames()
        .into_iter()
        .find(|(f, ..)| f.summary.contains("version=3 vrid=9 prio=120"))
        .expect("keepalived v3 frame");
    let mut odd = msg.clone();
    odd[4] |= 0x60;
    Packet::new_unchecked(&mut odd[..]).fill_checksum(&pair);
    let repr = Repr::parse(&Packet::new_checked(&odd[..]).expect("header"), &pair).expect("ok");
    assert_eq!(repr.adver_int, 10);
    assert_eq!(repr.to_bytes(&pair), msg);
}

#[test]
fn checksum_negative_zero_verifies() {
    // Found by the `packet` fuzz target: a message whose checksum is 0xffff (one's-complement
    // "negative zero") verifies; we emit 0x0000 for it.
    let msg = [
        0x21, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0x5e, 0, 0, 0,
    ];
    let pair = IpPair {
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        dst: IpAddr::V4(MULTICAST_V4),
    };
    let repr = Repr::parse(&Packet::new_checked(&msg[..]).expect("header"), &pair).expect("ok");
    let out = repr.to_bytes(&pair);
    assert_eq!(out[6..8], [0, 0]);
    assert_eq!(out[..6], msg[..6]);
    assert_eq!(out[8..], msg[8..]);
}
