//! Verifies adverts captured from keepalived 2.4.3, signs byte-identical trailers, and refuses
//! forged, missing, stale and replayed ones; keys from files and credentials; the state file.

// Tests may unwrap (HELPERS.md): a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::keys::{decode_value, load_credential, load_key_file, KeyFileError};
use super::state::{self, ReplayState};
use super::*;
use crate::packet::{Ipv4Meta, Version};

/// Adverts of a keepalived 2.4.3 pair signing with auth_hmac (tests/peers/capture-hmac-fixtures.sh).
const FRAMES: &str = include_str!("../../tests/data/auth-hmac-keepalived-2.4.3.txt");

const KEY1_HEX: &str = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc";
const KEY2: &[u8] = b"maas-vip fixture key 2, 32 bytes";
const H0: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);
const H1: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 12);

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// One captured advert.
#[derive(Debug, Clone)]
struct Frame {
    version: u8,
    /// Capture time.
    at: SystemTime,
    src: Ipv4Addr,
    /// The IP payload: VRRP message and trailer.
    payload: Vec<u8>,
}

impl Frame {
    fn msg(&self) -> &[u8] {
        split_trailer(&self.payload, 4).0
    }
    fn trailer(&self) -> &[u8] {
        split_trailer(&self.payload, 4).1.expect("a trailer")
    }
    fn origin(&self) -> Origin {
        Origin {
            version: self.version.into(),
            vrid: 51,
            src: IpAddr::V4(self.src),
        }
    }
}

fn frames() -> Vec<Frame> {
    let mut out = Vec::new();
    let mut version = 0;
    let mut at = UNIX_EPOCH;
    for line in FRAMES.lines() {
        if let Some(v) = line.strip_prefix("# ---- VRRPv") {
            version = v.parse().unwrap();
        } else if let Some(rest) = line.strip_prefix("# ").filter(|_| version > 0) {
            if let Some(t) = rest.split_whitespace().find_map(|w| w.strip_prefix("t=")) {
                let (s, ns) = t.split_once('.').unwrap();
                at = UNIX_EPOCH + Duration::new(s.parse().unwrap(), ns.parse().unwrap());
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let eth = hex(line);
            let ip = &eth[14..];
            let meta = Ipv4Meta::parse(ip).expect("IPv4");
            out.push(Frame {
                version,
                at,
                src: meta.src,
                payload: meta.payload(ip).to_vec(),
            });
        }
    }
    assert_eq!(out.len(), 16, "8 adverts each of v2 and v3");
    out
}

fn keys(active: u8) -> KeySet {
    KeySet::new(
        vec![
            Key::new(1, &hex(KEY1_HEX)).unwrap(),
            Key::new(2, KEY2).unwrap(),
        ],
        active,
    )
    .unwrap()
}

fn hmac(active: u8, mode: Mode, anti_replay: AntiReplay) -> AuthHmac {
    AuthHmac::new(
        Params {
            keys: keys(active),
            mode,
            anti_replay,
        },
        0,
    )
}

const TIME5: AntiReplay = AntiReplay::Time { window: 5 };

fn key_of(src: Ipv4Addr) -> u8 {
    if src == H0 {
        1
    } else {
        2
    }
}

#[test]
fn keepalived_adverts_verify_in_order() {
    for v in [2, 3] {
        let mut a = hmac(1, Mode::Enforce, TIME5);
        let fs: Vec<Frame> = frames().into_iter().filter(|f| f.version == v).collect();
        for f in &fs {
            let r = a.verify(f.at, &f.origin(), f.msg(), Some(f.trailer()));
            match r {
                Ok(Accepted::Signed { key_id, skew }) => {
                    assert_eq!(key_id, key_of(f.src), "v{v} {f:?}");
                    assert!(skew.is_some_and(|s| s.abs() <= 1), "{skew:?}");
                }
                other => panic!("v{v}: {other:?} for {f:?}"),
            }
        }
        // Both senders are remembered, each with its last sequence.
        let marks = a.marks();
        assert_eq!(marks.len(), 2);
        assert_eq!(marks[0].0, IpAddr::V4(H1));
        // A replay of any of them, at once: refused.
        for f in &fs {
            assert_eq!(
                a.verify(f.at, &f.origin(), f.msg(), Some(f.trailer())),
                Err(Rejection::Replay),
                "v{v}"
            );
        }
        // Later than the window: stale, before any digest is computed.
        let f = &fs[0];
        assert_eq!(
            a.verify(
                f.at + Duration::from_secs(7),
                &f.origin(),
                f.msg(),
                Some(f.trailer())
            ),
            Err(Rejection::Stale)
        );
    }
}

#[test]
fn keepalived_adverts_are_laid_out_as_documented() {
    for f in frames() {
        let p = Packet::new_checked(f.msg()).unwrap();
        // The message is untouched: Count IP Addrs 1, the usual length, and the IPv4 checksum
        // covers the message alone (v2) or with the pseudo-header (v3), not the trailer.
        assert_eq!(p.count(), 1);
        assert_eq!(f.msg().len(), if f.version == 2 { 20 } else { 12 });
        let pair = crate::packet::IpPair {
            src: IpAddr::V4(f.src),
            dst: IpAddr::V4(crate::packet::MULTICAST_V4),
        };
        assert!(p.verify_checksum(&pair), "{f:?}");
        if f.version == 2 {
            assert_eq!(
                p.auth_type(),
                0,
                "no legacy authentication beside auth_hmac"
            );
        }
        let t = Trailer::new_checked(f.trailer()).unwrap();
        let r = TrailerRepr::parse(&t).unwrap();
        assert_eq!(r.ext_type, EXT_HMAC_SHA256);
        assert_eq!(r.key_id, key_of(f.src));
        // The seconds are the sender's clock; the counter is 0 (one advert per timestamp).
        let at = Seq::from_wall(f.at);
        assert!(at.secs().abs_diff(r.seq.secs()) <= 1);
        assert!(!r.seq.is_after(at), "signed before captured");
        assert_eq!(r.seq.0 & 0xffff, 0);
    }
}

#[test]
fn our_trailers_are_byte_identical_to_keepalived() {
    for f in frames() {
        let key = key_of(f.src);
        let seq = Trailer::new_checked(f.trailer()).unwrap().seq();
        let a = hmac(key, Mode::Enforce, TIME5);
        assert_eq!(
            &a.sign_with(seq, &f.origin(), f.msg())[..],
            f.trailer(),
            "{f:?}"
        );
        // And through sign(), at a clock reading that gives that sequence.
        let mut a = hmac(key, Mode::Permissive, TIME5);
        let frac = (seq.0 >> 16) & 0xffff;
        let nanos = (frac * 1_000_000_000).div_ceil(65536) as u32;
        let now = UNIX_EPOCH + Duration::new(u64::from(seq.secs()), nanos);
        assert_eq!(Seq::from_wall(now), seq);
        let t = a.sign(now, &f.origin(), f.msg()).unwrap();
        assert_eq!(&t[..], f.trailer());
        assert_eq!(a.last_sent(), seq);
    }
}

/// keepalived 2.4.3 test/auth_hmac_test.c: the vectors of the draft's appendix (VRRPv3, key
/// 00..1f, VRID 51, priority 200, sequence 0x6800000080000000).
#[test]
fn draft_appendix_vectors() {
    let key: Vec<u8> = (0u8..32).collect();
    let ks = KeySet::new(vec![Key::new(1, &key).unwrap()], 1).unwrap();
    let cases: [(&str, usize, IpAddr); 2] = [
        (
            "3133c80100644402c0000264010100006800000080000000\
             1b84bc4e8e43892dc6d98448f8ee2265",
            4,
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)),
        ),
        (
            "3133c8010064a2e9fe800000000000000000000000000100010100006800000080000000\
             c8c56146ebfd66ee10ec4d8186461b78",
            16,
            "fe80::10".parse().unwrap(),
        ),
    ];
    for (img, addr_len, src) in cases {
        let img = hex(img);
        let (msg, trailer) = split_trailer(&img, addr_len);
        let trailer = trailer.expect("trailer");
        let origin = Origin {
            version: Version::V3,
            vrid: 51,
            src,
        };
        let mut a = AuthHmac::new(
            Params {
                keys: ks.clone(),
                mode: Mode::Enforce,
                anti_replay: AntiReplay::Monotonic,
            },
            0,
        );
        assert_eq!(
            a.sign_with(Seq(0x6800000080000000), &origin, msg)[..],
            *trailer
        );
        let far = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        assert_eq!(
            a.verify(far, &origin, msg, Some(trailer)),
            Ok(Accepted::Signed {
                key_id: 1,
                skew: None
            })
        );
        // The pseudo-header binds the source and the VRID.
        let other_src = match src {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x20)),
        };
        for o in [
            Origin {
                src: other_src,
                ..origin
            },
            Origin { vrid: 52, ..origin },
            Origin {
                version: Version::V2,
                ..origin
            },
        ] {
            let mut fresh = a.clone();
            fresh.senders.clear();
            assert_eq!(
                fresh.verify(far, &o, msg, Some(trailer)),
                Err(Rejection::Bad)
            );
        }
    }
}

/// One byte flipped anywhere: only the checksum is not covered (the kernel writes it on IPv6).
#[test]
fn every_byte_but_the_checksum_is_covered() {
    let f = &frames()[0];
    let mut img = f.payload.clone();
    let msg_len = f.msg().len();
    for i in 0..img.len() {
        img[i] ^= 0x01;
        let (msg, trailer) = split_trailer(&img, 4);
        let mut a = hmac(1, Mode::Enforce, TIME5);
        let r = a.verify(f.at, &f.origin(), msg, trailer);
        let want = match i {
            6 | 7 => Ok(Accepted::Signed {
                key_id: 1,
                skew: Some(0),
            }),
            // Count IP Addrs 1 -> 0: the trailer is not found where it should be.
            3 => Err(Rejection::Missing),
            j if j == msg_len => Err(Rejection::Malformed),
            j if j == msg_len + 1 => Err(Rejection::UnknownKey),
            j if j == msg_len + 2 || j == msg_len + 3 => Err(Rejection::Malformed),
            // The seconds moved by 2^24, 2^16 or 2^8: outside the window, refused unread.
            j if (msg_len + 4..msg_len + 7).contains(&j) => Err(Rejection::Stale),
            _ => Err(Rejection::Bad),
        };
        assert_eq!(r, want, "byte {i}");
        img[i] ^= 0x01;
    }
}

#[test]
fn modes_decide_about_missing_trailers_only() {
    let f = &frames()[1];
    for (mode, unsigned) in [
        (Mode::Enforce, Err(Rejection::Missing)),
        (Mode::Permissive, Ok(Accepted::Unsigned)),
        (Mode::ReceiveOnly, Ok(Accepted::Unsigned)),
    ] {
        let mut a = hmac(1, mode, TIME5);
        assert_eq!(a.verify(f.at, &f.origin(), f.msg(), None), unsigned);
        // A trailer that is there but wrong is refused in every mode.
        let mut bad = f.trailer().to_vec();
        bad[20] ^= 0x80;
        assert_eq!(
            a.verify(f.at, &f.origin(), f.msg(), Some(&bad)),
            Err(Rejection::Bad),
            "{mode}"
        );
        // And a good one accepted.
        assert!(a
            .verify(f.at, &f.origin(), f.msg(), Some(f.trailer()))
            .is_ok());
        assert_eq!(mode.signs(), mode != Mode::ReceiveOnly);
        assert_eq!(a.trailer_len(), if mode.signs() { TRAILER_LEN } else { 0 });
        assert_eq!(
            a.sign(f.at, &f.origin(), f.msg()).is_some(),
            mode.signs(),
            "{mode}"
        );
    }
}

#[test]
fn time_window_both_ways_and_monotonic() {
    let f = &frames()[2];
    for (d, late) in [(5i64, false), (6, true), (-5, false), (-6, true)] {
        let now = if d >= 0 {
            f.at + Duration::from_secs(d as u64)
        } else {
            f.at - Duration::from_secs(d.unsigned_abs())
        };
        let mut a = hmac(1, Mode::Enforce, TIME5);
        let r = a.verify(now, &f.origin(), f.msg(), Some(f.trailer()));
        if late {
            assert_eq!(r, Err(Rejection::Stale), "{d}");
        } else {
            assert!(r.is_ok(), "{d}: {r:?}");
            let Ok(Accepted::Signed { skew: Some(s), .. }) = r else {
                unreachable!()
            };
            assert!(a.skew_is_high(s), "{s} past half of 5 s");
        }
        let mut m = hmac(1, Mode::Enforce, AntiReplay::Monotonic);
        assert_eq!(
            m.verify(now, &f.origin(), f.msg(), Some(f.trailer())),
            Ok(Accepted::Signed {
                key_id: 1,
                skew: None
            })
        );
    }
    assert_eq!(
        AntiReplay::time_for(Duration::from_secs(1)),
        AntiReplay::Time { window: 5 }
    );
    assert_eq!(
        AntiReplay::time_for(Duration::from_secs(4)),
        AntiReplay::Time { window: 12 }
    );
    assert_eq!(
        AntiReplay::time_for(Duration::from_millis(500)),
        AntiReplay::Time { window: 5 }
    );
    assert_eq!(
        AntiReplay::time_for(Duration::from_secs(255)),
        AntiReplay::Time { window: 300 }
    );
}

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

#[test]
fn sequence_grows_even_when_the_clock_does_not() {
    let mut a = hmac(1, Mode::Enforce, TIME5);
    let t = at(1_800_000_000, 500_000_000);
    let s1 = a.next_seq(t);
    assert_eq!(s1, Seq(1_800_000_000u64 << 32 | 0x8000 << 16));
    // Same reading twice: +1 on the counter.
    assert_eq!(a.next_seq(t), Seq(s1.0 + 1));
    // Clock a little back (within the window): still +1.
    assert_eq!(a.next_seq(at(1_799_999_998, 0)), Seq(s1.0 + 2));
    // Clock moved on: the clock's.
    let s = a.next_seq(at(1_800_000_001, 0));
    assert_eq!(s, Seq(1_800_000_001u64 << 32));
    // Clock stepped back by more than the window: time mode restarts from the clock.
    assert_eq!(
        a.next_seq(at(1_799_999_000, 0)),
        Seq(1_799_999_000u64 << 32)
    );
    // Monotonic mode never goes back.
    let mut m = hmac(1, Mode::Enforce, AntiReplay::Monotonic);
    let s = m.next_seq(at(1_800_000_000, 0));
    assert_eq!(m.next_seq(at(1_700_000_000, 0)), Seq(s.0 + 1));
    // The counter carries into the subseconds.
    let mut c = hmac(1, Mode::Enforce, AntiReplay::Monotonic);
    c.sent = Seq(5 << 32 | 0xffff);
    assert_eq!(c.next_seq(at(1, 0)), Seq(5 << 32 | 0x1_0000));
}

#[test]
fn serial_order_survives_the_wrap() {
    let before = Seq(0xffff_ffff_0000_0000);
    let after = Seq(0x0000_0001_0000_0000);
    assert!(after.is_after(before));
    assert!(!before.is_after(after));
    assert!(!before.is_after(before));
    // A sender across the wrap of the seconds field, verified in monotonic mode.
    let origin = Origin {
        version: Version::V3,
        vrid: 51,
        src: IpAddr::V4(H0),
    };
    let msg = frames()[8].msg().to_vec();
    let mut rx = hmac(1, Mode::Enforce, AntiReplay::Monotonic);
    let tx = hmac(1, Mode::Enforce, AntiReplay::Monotonic);
    let now = at(0, 0);
    assert!(rx
        .verify(
            now,
            &origin,
            &msg,
            Some(&tx.sign_with(before, &origin, &msg))
        )
        .is_ok());
    assert!(rx
        .verify(
            now,
            &origin,
            &msg,
            Some(&tx.sign_with(after, &origin, &msg))
        )
        .is_ok());
    assert_eq!(
        rx.verify(
            now,
            &origin,
            &msg,
            Some(&tx.sign_with(before, &origin, &msg))
        ),
        Err(Rejection::Replay)
    );
}

#[test]
fn marks_expire_in_time_mode_only() {
    let f = &frames()[9];
    let seq = Trailer::new_checked(f.trailer()).unwrap().seq();
    for (ar, want) in [
        (TIME5, Ok(())),
        (AntiReplay::Monotonic, Err(Rejection::Replay)),
    ] {
        let mut a = hmac(1, Mode::Enforce, ar);
        // A mark an hour ahead (a sender whose clock was an hour fast, then fixed).
        a.restore(Seq(0), &[(IpAddr::V4(f.src), Seq(seq.0 + (3600u64 << 32)))]);
        let r = a.verify(f.at, &f.origin(), f.msg(), Some(f.trailer()));
        assert_eq!(r.map(|_| ()), want, "{ar:?}");
    }
}

#[test]
fn multicast_remembers_four_senders_unicast_one_per_peer() {
    let msg = frames()[0].msg().to_vec();
    let tx = hmac(1, Mode::Enforce, AntiReplay::Monotonic);
    let now = at(0, 0);
    let origin = |i: u8| Origin {
        version: Version::V2,
        vrid: 51,
        src: IpAddr::V4(Ipv4Addr::new(10, 99, 0, i)),
    };
    for (peers, remembered) in [(0usize, MULTICAST_SENDERS), (6, 6)] {
        let mut rx = AuthHmac::new(tx.params().clone(), peers);
        for i in 1..=6u8 {
            let t = tx.sign_with(Seq(u64::from(i) << 32), &origin(i), &msg);
            assert!(rx.verify(now, &origin(i), &msg, Some(&t)).is_ok());
        }
        assert_eq!(rx.marks().len(), remembered);
        // The first sender's replay: refused while remembered; once evicted, its place is new.
        let t = tx.sign_with(Seq(1 << 32), &origin(1), &msg);
        let r = rx.verify(now, &origin(1), &msg, Some(&t));
        if remembered >= 6 {
            assert_eq!(r, Err(Rejection::Replay));
        } else {
            assert!(r.is_ok());
        }
    }
    // Forged adverts never take a place.
    let mut rx = hmac(1, Mode::Enforce, AntiReplay::Monotonic);
    for i in 1..=50u8 {
        let mut t = tx.sign_with(Seq(1 << 32), &origin(i), &msg);
        t[27] ^= 1;
        assert_eq!(
            rx.verify(now, &origin(i), &msg, Some(&t)),
            Err(Rejection::Bad)
        );
    }
    assert!(rx.marks().is_empty());
}

#[test]
fn rotation_make_before_break() {
    let f = frames();
    let (h0, h1) = (&f[0], &f[4 + 1]);
    // A receiver with only key 1 does not know key 2.
    let only1 = KeySet::new(vec![Key::new(1, &hex(KEY1_HEX)).unwrap()], 1).unwrap();
    let mut a = AuthHmac::new(
        Params {
            keys: only1,
            mode: Mode::Enforce,
            anti_replay: TIME5,
        },
        0,
    );
    assert!(a
        .verify(h0.at, &h0.origin(), h0.msg(), Some(h0.trailer()))
        .is_ok());
    assert_eq!(
        a.verify(h1.at, &h1.origin(), h1.msg(), Some(h1.trailer())),
        Err(Rejection::UnknownKey)
    );
    // Reload with both keys: the marks stay (h0's advert is still a replay), key 2 verifies.
    a.reconfigure(
        Params {
            keys: keys(2),
            mode: Mode::Enforce,
            anti_replay: TIME5,
        },
        0,
    );
    assert_eq!(
        a.verify(h0.at, &h0.origin(), h0.msg(), Some(h0.trailer())),
        Err(Rejection::Replay)
    );
    assert!(a
        .verify(h1.at, &h1.origin(), h1.msg(), Some(h1.trailer()))
        .is_ok());
    // And it now signs with key 2.
    let t = a.sign(h1.at, &h0.origin(), h0.msg()).unwrap();
    assert_eq!(Trailer::new_unchecked(&t[..]).key_id(), 2);
    // Another key under a known id: bad, not unknown.
    let other = KeySet::new(vec![Key::new(1, &[7u8; 32]).unwrap()], 1).unwrap();
    let mut b = AuthHmac::new(
        Params {
            keys: other,
            mode: Mode::Enforce,
            anti_replay: TIME5,
        },
        0,
    );
    assert_eq!(
        b.verify(h0.at, &h0.origin(), h0.msg(), Some(h0.trailer())),
        Err(Rejection::Bad)
    );
}

#[test]
fn split_trailer_by_length_only() {
    let f = &frames()[0];
    let (msg, t) = split_trailer(&f.payload, 4);
    assert_eq!(msg.len(), 20);
    assert_eq!(t.map(<[u8]>::len), Some(TRAILER_LEN));
    // One byte short or long: no trailer, the whole payload for the length check to refuse.
    for len in [f.payload.len() - 1, f.payload.len() + 1] {
        let mut p = f.payload.clone();
        p.resize(len, 0);
        let (m, t) = split_trailer(&p, 4);
        assert_eq!((m.len(), t), (len, None));
    }
    // An unsigned advert and garbage.
    assert_eq!(split_trailer(f.msg(), 4), (f.msg(), None));
    assert_eq!(split_trailer(&[0x21], 4), (&[0x21][..], None));
}

#[test]
fn trailer_view_and_value() {
    assert_eq!(
        Trailer::new_checked(&[0u8; 27][..]).err(),
        Some(Rejection::Malformed)
    );
    assert_eq!(
        Trailer::new_checked(&[0u8; 29][..]).err(),
        Some(Rejection::Malformed)
    );
    let r = TrailerRepr {
        ext_type: EXT_HMAC_SHA256,
        key_id: 7,
        seq: Seq(0x0102_0304_0506_0708),
    };
    let mut buf = [0xa5u8; TRAILER_LEN];
    r.emit(&mut Trailer::new_unchecked(&mut buf[..]));
    assert_eq!(
        buf[..12],
        [1, 7, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        "fields in network order"
    );
    assert_eq!(buf[12..], [0; MAC_LEN]);
    let t = Trailer::new_checked(&buf[..]).unwrap();
    assert_eq!(TrailerRepr::parse(&t), Ok(r));
    assert_eq!(r.buffer_len(), TRAILER_LEN);
    buf[0] = 2;
    assert_eq!(
        TrailerRepr::parse(&Trailer::new_unchecked(&buf[..])),
        Err(Rejection::Malformed)
    );
}

#[test]
fn keys_are_checked_and_never_shown() {
    assert_eq!(Key::new(0, &[1; 32]).err(), Some(KeyError::Id));
    for len in [0, 31, 65] {
        assert_eq!(
            Key::new(3, &vec![1; len]).err(),
            Some(KeyError::Length { id: 3, len })
        );
    }
    let k = Key::new(3, &[0x42; 64]).unwrap();
    let shown = format!("{k:?} {:?}", keys(1));
    assert!(!shown.contains("42") && !shown.contains("66"), "{shown}");
    assert!(shown.contains("id: 3, len: 64"), "{shown}");
    let a = Key::new(1, &[1; 32]).unwrap();
    assert_eq!(
        KeySet::new(vec![a.clone(), a.clone()], 1).err(),
        Some(KeyError::Duplicate(1))
    );
    assert_eq!(
        KeySet::new(vec![a.clone()], 2).err(),
        Some(KeyError::NoActive(2))
    );
    assert_eq!(KeySet::new(vec![], 1).err(), Some(KeyError::NoActive(1)));
    assert_eq!(KeySet::new(vec![a], 1).unwrap().ids(), vec![1]);
}

#[test]
fn key_values_as_keepalived_reads_them() {
    let d = |s: &[u8]| decode_value(s).map(|v| v.to_vec());
    assert_eq!(d(b"hex:0a0B ff"), Some(vec![0x0a, 0x0b, 0xff]));
    assert_eq!(d(b"hex:\t00 01\t"), Some(vec![0, 1]));
    // A lone digit before a space or the end is one byte.
    assert_eq!(d(b"hex:0 1"), Some(vec![0, 1]));
    assert_eq!(d(b"hex:abc"), Some(vec![0xab, 0x0c]));
    assert_eq!(d(b"hex:"), None);
    assert_eq!(d(b"hex:  "), None);
    assert_eq!(d(b"hex:0g"), None);
    assert_eq!(d(b"hex:zz"), None);
    // Anything else is the key itself; a NUL ends it (keepalived reads a C string).
    assert_eq!(d(b"plain text"), Some(b"plain text".to_vec()));
    assert_eq!(d(b"HEX:00"), Some(b"HEX:00".to_vec()));
    assert_eq!(d(b"ab\0cd"), Some(b"ab".to_vec()));
    assert_eq!(d(format!("hex:{KEY1_HEX}").as_bytes()), Some(hex(KEY1_HEX)));
}

fn write_mode(path: &std::path::Path, content: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn key_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k");
    // The fixture's key 2 as keepalived read it: ASCII, a newline after it.
    write_mode(&p, b"maas-vip fixture key 2, 32 bytes\n", 0o600);
    assert_eq!(load_key_file(2, &p).unwrap(), Key::new(2, KEY2).unwrap());
    write_mode(&p, format!("hex:{KEY1_HEX}\r\n\n").as_bytes(), 0o400);
    assert_eq!(
        load_key_file(1, &p).unwrap(),
        Key::new(1, &hex(KEY1_HEX)).unwrap()
    );
    // Any access for group or others: refused, and the message says what to do.
    for mode in [0o640, 0o604, 0o644, 0o620, 0o601, 0o660] {
        write_mode(&p, KEY2, mode);
        let e = load_key_file(2, &p).unwrap_err();
        assert!(
            matches!(e, KeyFileError::Exposed { mode: m, .. } if m == mode),
            "{mode:o}: {e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
    // Too large (keepalived's 139 bytes), too short, bad hex, not a file, not there.
    write_mode(&p, &[b'a'; 140], 0o600);
    assert!(matches!(
        load_key_file(1, &p),
        Err(KeyFileError::TooLarge { .. })
    ));
    write_mode(&p, &[b'a'; 139], 0o600);
    assert!(matches!(
        load_key_file(1, &p),
        Err(KeyFileError::Key {
            source: KeyError::Length { len: 139, .. },
            ..
        })
    ));
    write_mode(&p, b"short\n", 0o600);
    let e = load_key_file(1, &p).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "key file {}: key 1 is 5 bytes; keys are 32 to 64 bytes (`hex:` and 64 to 128 hex \
             digits, or 32 to 64 bytes as they are)",
            p.display()
        )
    );
    write_mode(&p, b"hex:xyz", 0o600);
    assert!(matches!(
        load_key_file(1, &p),
        Err(KeyFileError::Hex { .. })
    ));
    assert!(matches!(
        load_key_file(1, dir.path()),
        Err(KeyFileError::NotAFile { .. })
    ));
    let gone = dir.path().join("none");
    let e = load_key_file(1, &gone).unwrap_err();
    assert!(matches!(e, KeyFileError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("openssl rand -hex 32"), "{e}");
    // No message ever carries the key.
    write_mode(&p, KEY2, 0o644);
    assert!(!load_key_file(2, &p)
        .unwrap_err()
        .to_string()
        .contains("fixture"));
}

#[test]
fn credentials() {
    let dir = tempfile::tempdir().unwrap();
    write_mode(&dir.path().join("vrrp_hmac_1"), KEY2, 0o400);
    assert_eq!(
        load_credential(1, "vrrp_hmac_1", Some(dir.path())).unwrap(),
        Key::new(1, KEY2).unwrap()
    );
    let e = load_credential(1, "vrrp_hmac_1", None).unwrap_err();
    assert!(matches!(e, KeyFileError::NoCredentialsDirectory { .. }));
    assert_eq!(
        e.to_string(),
        "credential `vrrp_hmac_1`: $CREDENTIALS_DIRECTORY is not set (run under systemd with \
         LoadCredential=vrrp_hmac_1:/path/to/key in the unit)"
    );
    let e = load_credential(1, "vrrp_hmac_2", Some(dir.path())).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "credential `vrrp_hmac_2` is not in {} (is LoadCredential=vrrp_hmac_2:... in the unit?)",
            dir.path().display()
        )
    );
    for name in ["", ".", "..", "../etc/shadow", "a/b"] {
        assert!(matches!(
            load_credential(1, name, Some(dir.path())),
            Err(KeyFileError::CredentialName(_))
        ));
    }
    // The same rules as a key file.
    write_mode(&dir.path().join("open"), KEY2, 0o444);
    assert!(matches!(
        load_credential(1, "open", Some(dir.path())),
        Err(KeyFileError::Exposed { .. })
    ));
}

#[test]
fn config_table() {
    use super::config::AuthHmacConfig;
    let dir = tempfile::tempdir().unwrap();
    write_mode(
        &dir.path().join("k1"),
        format!("hex:{KEY1_HEX}\n").as_bytes(),
        0o600,
    );
    write_mode(&dir.path().join("k2"), KEY2, 0o600);
    let text = format!(
        r#"
keys = [
    {{ id = 1, key_file = "{}/k1" }},
    {{ id = 2, credential = "k2" }},
]
active_key = 2
mode = "permissive"
"#,
        dir.path().display()
    );
    let c: AuthHmacConfig = toml::from_str(&text).unwrap();
    assert!(c.validate().is_empty());
    let p = c.load(Duration::from_secs(1), Some(dir.path())).unwrap();
    assert_eq!(p.keys, keys(2));
    assert_eq!(p.mode, Mode::Permissive);
    assert_eq!(p.anti_replay, TIME5);
    // Without the credentials directory: one problem, at the credential's value.
    let problems = c.load(Duration::from_secs(1), None).unwrap_err();
    assert_eq!(problems.len(), 1);
    let span = problems[0].span();
    assert_eq!(&text[span], "\"k2\"");

    let bad = |extra: &str| -> Vec<String> {
        let c: AuthHmacConfig = toml::from_str(extra).unwrap();
        c.validate().into_iter().map(|p| p.into_inner()).collect()
    };
    assert_eq!(
        bad("keys = []"),
        vec!["`auth_hmac.keys` needs at least one key, e.g. [{ id = 1, key_file = \"/etc/maas-vip/vrrp-hmac-1.key\" }]"]
    );
    assert_eq!(
        bad("keys = [{ id = 1 }]"),
        vec!["auth_hmac key 1 needs `key_file` or `credential` (keys are never written in the config)"]
    );
    assert_eq!(
        bad(r#"keys = [{ id = 1, key_file = "a", credential = "b" }]"#),
        vec!["an auth_hmac key has `key_file` or `credential`, not both"]
    );
    assert_eq!(
        bad(r#"keys = [{ id = 1, key_file = "a" }, { id = 1, key_file = "b" }]"#),
        vec![
            "auth_hmac key id 1 is given twice",
            "with several auth_hmac keys, `active_key` says which one signs"
        ]
    );
    assert_eq!(
        bad(r#"keys = [{ id = 1, key_file = "a" }]
active_key = 2"#),
        vec!["active_key 2 is not one of the auth_hmac keys"]
    );
    assert_eq!(
        bad(r#"keys = [{ id = 1, key_file = "a" }]
anti_replay = "monotonic"
time_window = "5s""#),
        vec!["`time_window` is for anti_replay = \"time\" only"]
    );
    // Out-of-range values are refused by the parser, at their line and column.
    for (text, msg) in [
        (
            r#"keys = [{ id = 0, key_file = "a" }]"#,
            "auth_hmac key ids are 1..=255, got 0",
        ),
        (
            r#"keys = [{ id = 1, key_file = "a" }]
time_window = "301s""#,
            "time_window must be whole seconds from 1s to 300s, got 301s",
        ),
        (
            r#"keys = [{ id = 1, key_file = "a" }]
time_window = "1500ms""#,
            "time_window must be whole seconds",
        ),
        (
            r#"keys = [{ id = 1, key_file = "a" }]
mode = "strict""#,
            "unknown variant `strict`, expected one of `receive-only`, `permissive`, `enforce`",
        ),
        (
            r#"keys = [{ id = 1, key = "inline" }]"#,
            "unknown field `key`",
        ),
    ] {
        let e = toml::from_str::<AuthHmacConfig>(text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(msg), "{text}: {e}");
    }
    let c: AuthHmacConfig = toml::from_str(
        r#"keys = [{ id = 1, key_file = "a" }]
time_window = "20s""#,
    )
    .unwrap();
    assert_eq!(
        c.anti_replay(Duration::from_secs(1)),
        AntiReplay::Time { window: 20 }
    );
    assert_eq!(c.active_key(), Some(1));
}

#[test]
fn state_file_keeps_replays_out_across_restarts() {
    let f: Vec<Frame> = frames().into_iter().filter(|f| f.version == 2).collect();
    let mut a = hmac(1, Mode::Enforce, TIME5);
    for x in &f[..3] {
        assert!(a
            .verify(x.at, &x.origin(), x.msg(), Some(x.trailer()))
            .is_ok());
    }
    a.sign(f[2].at, &f[0].origin(), f[0].msg()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maas_region.hmac");
    assert!(state::load(&path).unwrap().is_none());
    state::save(&path, &ReplayState::of(&a)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let snap = state::load(&path).unwrap().unwrap();
    assert_eq!(snap, ReplayState::of(&a));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("maas-vip auth_hmac state 1\nsent 6b0fb835"),
        "{text}"
    );

    // After a restart, within the window: keepalived (no state) takes the replay once...
    let replay = &f[1];
    let later = f[2].at + Duration::from_secs(1);
    let mut fresh = hmac(1, Mode::Enforce, TIME5);
    assert!(fresh
        .verify(
            later,
            &replay.origin(),
            replay.msg(),
            Some(replay.trailer())
        )
        .is_ok());
    // ...maas-vip with its state file does not, and carries on with the next genuine one.
    let mut restarted = hmac(1, Mode::Enforce, TIME5);
    snap.restore_into(&mut restarted);
    assert_eq!(
        restarted.verify(
            later,
            &replay.origin(),
            replay.msg(),
            Some(replay.trailer())
        ),
        Err(Rejection::Replay)
    );
    assert!(restarted
        .verify(f[3].at, &f[3].origin(), f[3].msg(), Some(f[3].trailer()))
        .is_ok());
    // Its own sequence goes on from the saved one even with a clock stepped back a little.
    let s = restarted.next_seq(f[0].at);
    assert!(s.is_after(snap.sent));

    // Damaged or foreign files are refused with their line.
    for (text, line) in [
        ("something else\n", 1),
        ("maas-vip auth_hmac state 1\n", 1),
        ("maas-vip auth_hmac state 1\nsent 12\n", 2),
        (
            "maas-vip auth_hmac state 1\nsent 0000000000000001\nmark x 0000000000000001\n",
            3,
        ),
        (
            "maas-vip auth_hmac state 1\nsent 0000000000000001\nsent 0000000000000001\n",
            3,
        ),
    ] {
        match ReplayState::parse(text, "f") {
            Err(state::StateError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

mod machine {
    //! The hooks in the state machine: received adverts verified, sent ones signed, drops
    //! counted by reason.

    use super::*;
    use crate::machine::{self as m, Machine, Reject, RxMeta, State};
    use crate::packet::{IpPair, MULTICAST_V4};
    use std::time::Instant;

    /// A backup's settings at priority 100, with one virtual address.
    fn settings(vip: IpAddr) -> m::Settings {
        m::Settings {
            priority: 100,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            auth_pass: None,
            vips: vec![vip],
            garp_delay: Duration::from_secs(5),
            garp_refresh: Duration::ZERO,
            unicast_peers: Vec::new(),
            v3_checksum: Default::default(),
        }
    }

    fn backup(version: u8, mode: Mode) -> Machine {
        let mut mach = Machine::new(m::Params {
            vrid: 51,
            version: version.into(),
            primary: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 13)),
            start_as_master: false,
            settings: settings(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 100))),
        });
        mach.set_auth_hmac(Some(hmac(1, mode, TIME5)));
        mach.start(Instant::now());
        while mach.poll_action().is_some() {}
        mach
    }

    fn rx(src: Ipv4Addr) -> RxMeta {
        RxMeta {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(MULTICAST_V4),
            ttl: 255,
        }
    }

    #[test]
    fn keepalived_adverts_reach_the_machine_and_forgeries_do_not() {
        for v in [2u8, 3] {
            let fs: Vec<Frame> = frames().into_iter().filter(|f| f.version == v).collect();
            let now = Instant::now();
            let mut b = backup(v, Mode::Enforce);
            let f = &fs[0];
            assert_eq!(b.handle_packet_at(now, f.at, rx(f.src), &f.payload), Ok(()));
            assert_eq!(b.state(), State::Backup);
            // The same advert again: a replay.
            assert_eq!(
                b.handle_packet_at(now, f.at, rx(f.src), &f.payload),
                Err(Reject::HmacReplay)
            );
            // Without its trailer (a valid unsigned advert, priority 150): missing.
            assert_eq!(
                b.handle_packet_at(now, f.at, rx(f.src), f.msg()),
                Err(Reject::HmacMissing)
            );
            // Priority raised to 254 and the checksum fixed: the MAC no longer verifies.
            let mut forged = f.payload.clone();
            forged[2] = 254;
            let pair = IpPair {
                src: IpAddr::V4(f.src),
                dst: IpAddr::V4(MULTICAST_V4),
            };
            let mut pk = Packet::new_unchecked(&mut forged[..f.msg().len()]);
            pk.fill_checksum(&pair);
            assert!(Packet::new_unchecked(&forged[..f.msg().len()]).verify_checksum(&pair));
            assert_eq!(
                b.handle_packet_at(now, f.at, rx(f.src), &forged),
                Err(Reject::HmacBad)
            );
            // Plain handle_packet (no wall clock) fails closed in time mode.
            let g = &fs[1];
            assert_eq!(
                b.handle_packet(now, rx(g.src), &g.payload),
                Err(Reject::HmacStale)
            );
            assert_eq!(b.handle_packet_at(now, g.at, rx(g.src), &g.payload), Ok(()));
            let st = b.stats();
            assert_eq!(st.rx_ok, 2);
            for (r, n) in [
                (Reject::HmacReplay, 1),
                (Reject::HmacMissing, 1),
                (Reject::HmacBad, 1),
                (Reject::HmacStale, 1),
            ] {
                assert_eq!(st.rejected(r), n, "{r}");
            }
            assert_eq!(Reject::HmacBad.as_str(), "hmac_bad");
        }
    }

    /// Over IPv6 the checksum covers the trailer (keepalived's kernel computes it so, with
    /// IPV6_CHECKSUM); a checksum over the message alone is refused there.
    #[test]
    fn ipv6_checksum_covers_the_trailer() {
        use crate::packet::{Auth, Repr, Version, MULTICAST_V6};
        let ll = |last: u16| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last);
        let params = || Params {
            keys: keys(1),
            mode: Mode::Enforce,
            anti_replay: AntiReplay::Monotonic,
        };
        let mut b = Machine::new(m::Params {
            vrid: 51,
            version: Version::V3,
            primary: IpAddr::V6(ll(0x13)),
            start_as_master: false,
            settings: settings(IpAddr::V6(ll(0x51))),
        });
        b.set_auth_hmac(Some(AuthHmac::new(params(), 0)));
        let now = Instant::now();
        b.start(now);
        while b.poll_action().is_some() {}
        let pair = IpPair {
            src: IpAddr::V6(ll(0x12)),
            dst: IpAddr::V6(MULTICAST_V6),
        };
        let sender = AuthHmac::new(params(), 0);
        let origin = Origin {
            version: Version::V3,
            vrid: 51,
            src: pair.src,
        };
        let meta = RxMeta {
            src: pair.src,
            dst: pair.dst,
            ttl: 255,
        };
        for (i, seq) in [
            (0u64, Seq(0x6800_0000_0000_0000)),
            (1, Seq(0x6800_0001_0000_0000)),
        ] {
            let msg = Repr {
                version: Version::V3,
                vrid: 51,
                priority: 200 + i as u8,
                auth: Auth::None,
                adver_int: 100,
                addresses: vec![IpAddr::V6(ll(0x51))],
            }
            .to_bytes(&pair);
            let mut payload = msg.clone();
            payload.extend_from_slice(&sender.sign_with(seq, &origin, &msg));
            if i == 0 {
                // The message's own checksum, as maas-vip sent it before it followed keepalived.
                assert_eq!(b.handle_packet(now, meta, &payload), Err(Reject::Checksum));
            }
            Packet::new_unchecked(&mut payload[..]).fill_checksum(&pair);
            assert_eq!(b.handle_packet(now, meta, &payload), Ok(()), "advert {i}");
        }
        assert_eq!(b.stats().rx_ok, 2);
    }

    #[test]
    fn migration_modes_take_unsigned_adverts_and_count_them() {
        let f = &frames()[0];
        let now = Instant::now();
        for mode in [Mode::ReceiveOnly, Mode::Permissive] {
            let mut b = backup(2, mode);
            assert_eq!(b.handle_packet_at(now, f.at, rx(f.src), f.msg()), Ok(()));
            assert_eq!(b.handle_packet_at(now, f.at, rx(f.src), &f.payload), Ok(()));
            assert_eq!(b.stats().hmac_unsigned, 1, "{mode}");
            assert_eq!(b.stats().rx_ok, 2);
        }
        // Without auth_hmac, a signed advert is too long, as in keepalived without auth_hmac.
        let mut plain = backup(2, Mode::Enforce);
        plain.set_auth_hmac(None);
        assert_eq!(
            plain.handle_packet_at(now, f.at, rx(f.src), &f.payload),
            Err(Reject::Length)
        );
        assert_eq!(
            plain.handle_packet_at(now, f.at, rx(f.src), f.msg()),
            Ok(())
        );
    }

    #[test]
    fn sent_adverts_are_signed_as_keepalived_expects() {
        for v in [2u8, 3] {
            let mut b = backup(v, Mode::Enforce);
            let wall = frames()[0].at;
            let repr = b.advert(100);
            let pair = IpPair {
                src: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 13)),
                dst: IpAddr::V4(MULTICAST_V4),
            };
            let mut bytes = repr.to_bytes(&pair);
            let t = b.sign_advert(wall, &bytes).unwrap();
            bytes.extend_from_slice(&t);
            // A keepalived-like receiver (h0's settings: both keys) accepts it.
            let mut ka = hmac(1, Mode::Enforce, TIME5);
            let origin = Origin {
                version: v.into(),
                vrid: 51,
                src: pair.src,
            };
            let (msg, tr) = split_trailer(&bytes, 4);
            assert!(ka.verify(wall, &origin, msg, tr).is_ok());
            // The checksum still covers the message alone on IPv4.
            assert!(Packet::new_unchecked(msg).verify_checksum(&pair));
            // Receive-only signs nothing.
            b.auth_hmac_mut().unwrap().reconfigure(
                Params {
                    keys: keys(1),
                    mode: Mode::ReceiveOnly,
                    anti_replay: TIME5,
                },
                0,
            );
            assert!(b.sign_advert(wall, msg).is_none());
        }
    }

    #[test]
    fn config_refuses_auth_pass_beside_auth_hmac() {
        let c: crate::VrrpConfig = toml::from_str(
            r#"
            name = "maas_region"
            interface = "eth0"
            virtual_router_id = 51
            auth_pass = "s3cret"
            virtual_ipaddresses = ["10.0.0.100/24"]
            [auth_hmac]
            keys = [{ id = 1, key_file = "/etc/maas-vip/k1" }]
            "#,
        )
        .unwrap();
        let problems: Vec<String> = c.validate().into_iter().map(|p| p.into_inner()).collect();
        assert_eq!(
            problems,
            vec!["`auth_pass` and `auth_hmac` exclude each other: adverts signed with auth_hmac carry no password"]
        );
        let mut other = c.clone();
        other.auth_hmac = None;
        assert_eq!(c.changed_fields(&other), vec!["auth_hmac"]);
        assert_eq!(c.restart_reason(&other), None, "a reload, not a restart");
    }
}
