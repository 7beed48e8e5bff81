//! auth_hmac decoders (vrrp/src/auth_hmac.rs): the trailer after a VRRP message
//! (`split_trailer`, `Trailer`, `TrailerRepr`), `AuthHmac::verify` of what arrives, the key
//! file value (`keys::decode_value`) and the replay state file (`state::ReplayState::parse`).
//!
//! Invariants beyond "no panic":
//! - `split_trailer` cuts the payload in two that join back to it, the second exactly 28 bytes;
//! - a trailer that parses re-emits, into a poisoned buffer, to the same bytes (MAC put back);
//! - `verify` of arbitrary bytes never accepts them as signed; an advert signed with the key
//!   verifies, and the same advert with any byte the MAC covers changed (the input picks which
//!   and how) is refused;
//! - a state file that parses prints to a text that parses to the same state.
//!
//! Input: byte 0 picks where a mutation goes, byte 1 its XOR mask; the rest is the payload
//! (a VRRP message, maybe with a trailer), also tried as key file value and state file text.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use vrrp::auth_hmac::keys::decode_value;
use vrrp::auth_hmac::state::ReplayState;
use vrrp::auth_hmac::{
    split_trailer, AntiReplay, AuthHmac, Key, KeySet, Mode, Origin, Params, Seq, Trailer,
    TrailerRepr, TRAILER_LEN,
};
use vrrp::packet::Version;

const KEY: &[u8; 32] = b"maas-vip fuzz key, 32 bytes long";

fn auth(mode: Mode) -> AuthHmac {
    let keys = KeySet::new(vec![Key::new(1, KEY).expect("key")], 1).expect("key set");
    AuthHmac::new(
        Params {
            keys,
            mode,
            anti_replay: AntiReplay::Time { window: 5 },
        },
        0,
    )
}

fn origin() -> Origin {
    Origin {
        version: Version::V2,
        vrid: 51,
        src: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 12)),
    }
}

fn trailer(t: &[u8]) {
    let view = Trailer::new_checked(t).expect("28 bytes");
    let _ = (
        view.ext_type(),
        view.key_id(),
        view.reserved(),
        view.seq(),
        view.mac(),
    );
    let Ok(repr) = TrailerRepr::parse(&view) else {
        return;
    };
    assert_eq!(repr.buffer_len(), TRAILER_LEN);
    let mut out = [0xa5u8; TRAILER_LEN];
    let mut w = Trailer::new_unchecked(&mut out[..]);
    repr.emit(&mut w);
    let mut mac = [0u8; 16];
    mac.copy_from_slice(view.mac());
    w.set_mac(&mac);
    assert_eq!(&out[..], t);
}

fuzz_target!(|data: &[u8]| {
    let (pick, mask, payload) = match data {
        [p, m, rest @ ..] => (*p, *m, rest),
        _ => return,
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for addr_len in [4, 16] {
        let (msg, t) = split_trailer(payload, addr_len);
        match t {
            Some(t) => {
                assert_eq!(t.len(), TRAILER_LEN);
                assert_eq!([msg, t].concat(), payload);
                trailer(t);
            }
            None => assert_eq!(msg, payload),
        }
        // Whatever came, it is not a valid signature of ours (the MAC is 128 bits).
        for mode in [Mode::Enforce, Mode::Permissive, Mode::ReceiveOnly] {
            let r = auth(mode).verify(now, &origin(), msg, t);
            assert!(
                !matches!(r, Ok(vrrp::auth_hmac::Accepted::Signed { .. })),
                "forged input accepted: {r:?}"
            );
        }
    }
    if payload.len() >= TRAILER_LEN {
        trailer(&payload[..TRAILER_LEN]);
    }

    // The payload as a message we sign, then verify as received, then altered.
    let a = auth(Mode::Enforce);
    let mut b = auth(Mode::Enforce);
    let seq = Seq::from_wall(now);
    let signed = a.sign_with(seq, &origin(), payload);
    assert!(b.verify(now, &origin(), payload, Some(&signed)).is_ok());
    if mask != 0 {
        let mut all = [payload, &signed[..]].concat();
        let i = usize::from(pick) % all.len();
        // The MAC reads the checksum field (bytes 6..8 of the message) as zero.
        let checksum = payload.len() >= 8 && (6..8).contains(&i);
        all[i] ^= mask;
        let (m, t) = all.split_at(payload.len());
        let mut c = auth(Mode::Enforce);
        let r = c.verify(now, &origin(), m, Some(t));
        assert_eq!(r.is_ok(), checksum, "byte {i} ^ {mask:#x}: {r:?}");
    }

    let _ = decode_value(payload);
    if let Ok(text) = std::str::from_utf8(payload) {
        if let Ok(snap) = ReplayState::parse(text, "fuzz") {
            let again = ReplayState::parse(&snap.to_text(), "fuzz").expect("printed state parses");
            assert_eq!(again, snap);
        }
    }
});
