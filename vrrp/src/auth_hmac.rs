//! Advert authentication with an HMAC-SHA256 trailer, on the wire as keepalived 2.4's
//! `auth_hmac` (draft-cassen-vrrp-auth-hmac), so that maas-vip and keepalived 2.4 verify each
//! other's adverts on one LAN.
//!
//! A signed advert is the VRRP message (v2 or v3, unchanged, checksum included) followed by a
//! 28-byte [`Trailer`]: a key id, a 64-bit time-based [`Seq`] and the first 16 bytes of an
//! HMAC-SHA256 over a pseudo-header (family, version, VRID, sender address), the message with
//! its checksum read as zero, and the trailer with its MAC field read as zero ([`compute_mac`]).
//!
//! [`AuthHmac`] is the sans-IO state of one instance: the keys ([`KeySet`], several for
//! rotation), the [`Mode`] (receive-only, permissive, enforce: a LAN moves to HMAC host by
//! host), the [`AntiReplay`] rule, the last sequence sent and the last one accepted from each
//! sender. Every entry point takes the wall clock (`now: SystemTime`) from the caller: the
//! sequence numbers are UTC timestamps, as keepalived's are, and that is also what keeps a
//! restarted sender's numbers growing (keepalived persists nothing; see [`state`] for what
//! maas-vip keeps on top, the receivers' marks).
//!
//! Keys come from files or systemd credentials ([`keys`]); never from the main config, and
//! they are never printed (`Debug` shows ids and lengths only).

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::packet::{Packet, Version, HEADER_LEN};

pub mod config;
pub(crate) mod instance;
pub mod keys;
pub mod state;

/// Length of the trailer after the VRRP message.
pub const TRAILER_LEN: usize = 28;
/// Length of the truncated HMAC in the trailer.
pub const MAC_LEN: usize = 16;
/// `ext_type` of HMAC-SHA256 truncated to 128 bits, the only scheme defined.
pub const EXT_HMAC_SHA256: u8 = 1;
/// Shortest key, in bytes (keepalived: a 128-bit margin against a quantum search).
pub const KEY_MIN: usize = 32;
/// Longest key, in bytes (the SHA-256 block size: keys are never pre-hashed).
pub const KEY_MAX: usize = 64;
/// Freshness window bounds, seconds (time mode).
pub const WINDOW_MIN: u32 = 1;
/// See [`WINDOW_MIN`].
pub const WINDOW_MAX: u32 = 300;
/// The default window is 3 advert intervals, but never less than this many seconds.
pub const WINDOW_FLOOR: u32 = 5;
/// Multicast senders whose last sequence is remembered (least recently used evicted).
pub const MULTICAST_SENDERS: usize = 4;

/// Length of the pseudo-header bound into the MAC.
const PSEUDO_LEN: usize = 20;
/// The VRRP checksum field, read as zero by the MAC (the kernel writes it on IPv6).
const CHECKSUM: std::ops::Range<usize> = 6..8;

mod field {
    pub(super) type Field = std::ops::Range<usize>;
    pub(super) const EXT_TYPE: usize = 0;
    pub(super) const KEY_ID: usize = 1;
    pub(super) const RESERVED: Field = 2..4;
    pub(super) const SEC: Field = 4..8;
    pub(super) const SUBSEC: Field = 8..10;
    pub(super) const CTR: Field = 10..12;
    /// What precedes the MAC: covered by it as sent.
    pub(super) const HEAD: Field = 0..12;
    pub(super) const MAC: Field = 12..28;
}

/// The authentication trailer as a checked view over its 28 bytes.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Ext Type    |    Key ID     |           Reserved            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |             Seconds (sequence bits 63..32, UTC)               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Subseconds (1/65536 s)    |            Counter            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +              HMAC-SHA256, first 128 bits (16 bytes)           +
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
/// keepalived 2.4.3 keepalived/include/vrrp_auth_hmac.h `vrrp_auth_ext_t`; it follows the
/// VRRP message (after the v2 authentication data) and is outside the IPv4 VRRP checksum.
#[derive(Debug, Clone)]
pub struct Trailer<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Trailer<T> {
    /// Wraps bytes without checking them; accessors may panic until [`Trailer::check_len`]
    /// passes.
    pub fn new_unchecked(buffer: T) -> Self {
        Trailer { buffer }
    }

    /// Wraps exactly [`TRAILER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Rejection> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// Checks the length: a trailer is exactly [`TRAILER_LEN`] bytes.
    pub fn check_len(&self) -> Result<(), Rejection> {
        if self.buffer.as_ref().len() == TRAILER_LEN {
            Ok(())
        } else {
            Err(Rejection::Malformed)
        }
    }

    /// Gives the bytes back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Scheme ([`EXT_HMAC_SHA256`]).
    pub fn ext_type(&self) -> u8 {
        self.buffer.as_ref()[field::EXT_TYPE]
    }

    /// Id of the key that signed.
    pub fn key_id(&self) -> u8 {
        self.buffer.as_ref()[field::KEY_ID]
    }

    /// Reserved field, zero on send.
    pub fn reserved(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::RESERVED])
    }

    /// The 64-bit sequence: seconds, subseconds, counter.
    pub fn seq(&self) -> Seq {
        let b = self.buffer.as_ref();
        let sec = u64::from(u32::from_be_bytes([
            b[field::SEC.start],
            b[field::SEC.start + 1],
            b[field::SEC.start + 2],
            b[field::SEC.start + 3],
        ]));
        let subsec = u64::from(be16(&b[field::SUBSEC]));
        let ctr = u64::from(be16(&b[field::CTR]));
        Seq(sec << 32 | subsec << 16 | ctr)
    }

    /// The truncated HMAC.
    pub fn mac(&self) -> &[u8] {
        &self.buffer.as_ref()[field::MAC]
    }

    /// The 12 bytes before the MAC, which the MAC covers as they are.
    pub fn head(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Trailer<T> {
    /// Sets the scheme.
    pub fn set_ext_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::EXT_TYPE] = v;
    }

    /// Sets the key id.
    pub fn set_key_id(&mut self, v: u8) {
        self.buffer.as_mut()[field::KEY_ID] = v;
    }

    /// Sets the reserved field.
    pub fn set_reserved(&mut self, v: u16) {
        self.buffer.as_mut()[field::RESERVED].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the sequence.
    pub fn set_seq(&mut self, s: Seq) {
        let b = self.buffer.as_mut();
        b[field::SEC].copy_from_slice(&((s.0 >> 32) as u32).to_be_bytes());
        b[field::SUBSEC].copy_from_slice(&((s.0 >> 16) as u16).to_be_bytes());
        b[field::CTR].copy_from_slice(&(s.0 as u16).to_be_bytes());
    }

    /// Sets the MAC (the first [`MAC_LEN`] bytes of `mac`).
    pub fn set_mac(&mut self, mac: &[u8; MAC_LEN]) {
        self.buffer.as_mut()[field::MAC].copy_from_slice(mac);
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The decoded trailer (without its MAC, which only [`AuthHmac`] can judge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailerRepr {
    /// The MAC scheme; only [`EXT_HMAC_SHA256`] verifies.
    pub ext_type: u8,
    /// Which key of the [`KeySet`] signed it.
    pub key_id: u8,
    /// Anti-replay: accepted only after the sender's last accepted one (in time mode, also within
    /// the window of now).
    pub seq: Seq,
}

impl TrailerRepr {
    /// Decodes a trailer: the scheme must be [`EXT_HMAC_SHA256`] and the reserved field zero
    /// (keepalived: MALFORMED otherwise).
    pub fn parse<T: AsRef<[u8]>>(t: &Trailer<T>) -> Result<TrailerRepr, Rejection> {
        t.check_len()?;
        if t.ext_type() != EXT_HMAC_SHA256 || t.reserved() != 0 {
            return Err(Rejection::Malformed);
        }
        Ok(TrailerRepr {
            ext_type: t.ext_type(),
            key_id: t.key_id(),
            seq: t.seq(),
        })
    }

    /// Bytes that [`TrailerRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        TRAILER_LEN
    }

    /// Writes the trailer with a zero MAC (what the MAC is computed over).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, t: &mut Trailer<T>) {
        t.set_ext_type(self.ext_type);
        t.set_key_id(self.key_id);
        t.set_reserved(0);
        t.set_seq(self.seq);
        t.set_mac(&[0; MAC_LEN]);
    }
}

/// Splits a received VRRP payload into the message and its trailer: a trailer is there when
/// the payload is exactly [`TRAILER_LEN`] bytes longer than the message that Count IP Addrs
/// implies (keepalived 2.4.3 vrrp.c `vrrp_check_packet`: Ethernet padding never reaches 28
/// bytes). Anything else is returned whole, for the usual length check to judge.
pub fn split_trailer(payload: &[u8], addr_len: usize) -> (&[u8], Option<&[u8]>) {
    let Ok(p) = Packet::new_checked(payload) else {
        return (payload, None);
    };
    let expected = p.expected_len(addr_len);
    if payload.len() == expected + TRAILER_LEN {
        let (msg, trailer) = payload.split_at(expected);
        (msg, Some(trailer))
    } else {
        (payload, None)
    }
}

/// Whether the VRRP checksum covers the trailer too: over IPv6, yes. keepalived 2.4.3 sets
/// IPV6_CHECKSUM on its socket (vrrp_if.c), so the kernel computes and verifies the checksum
/// over the whole payload it carries, message and trailer; over IPv4 keepalived computes it
/// over the message alone. (The MAC reads the checksum field as zero either way.)
pub fn checksum_covers_trailer(src: IpAddr) -> bool {
    src.is_ipv6()
}

/// The 64-bit sequence of a trailer: UTC seconds in bits 63..32, a 1/65536 s fraction in bits
/// 31..16, a counter in bits 15..0. Ordered by RFC 1982 serial arithmetic ([`Seq::is_after`]),
/// so that it survives the wrap of the seconds field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence a clock reading gives, counter zero (keepalived `clock_seq`). A time before
    /// 1970 gives 0.
    pub fn from_wall(now: SystemTime) -> Seq {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let sec = d.as_secs() as u32;
        let subsec = (u64::from(d.subsec_nanos()) << 16) / 1_000_000_000;
        Seq(u64::from(sec) << 32 | subsec << 16)
    }

    /// The seconds field.
    pub fn secs(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Whether `self` comes after `other` (serial number arithmetic on 64 bits).
    pub fn is_after(self, other: Seq) -> bool {
        (self.0.wrapping_sub(other.0) as i64) > 0
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// `a - b` in seconds, wrapping, as keepalived computes it (`(int32_t)(a - b)`).
fn secs_delta(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

fn wall_secs(now: SystemTime) -> u32 {
    Seq::from_wall(now).secs()
}

/// What the pseudo-header binds a MAC to: a signature is valid for one sender, one version and
/// one virtual router only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub version: Version,
    pub vrid: u8,
    /// The sender's address: our own when signing, the IP source when verifying.
    pub src: IpAddr,
}

impl Origin {
    /// The 20-byte pseudo-header: family (4 or 6), version, VRID, zero, then the address
    /// (IPv4 in the first 4 bytes, zeros after).
    pub fn pseudo_header(&self) -> [u8; PSEUDO_LEN] {
        let mut out = [0u8; PSEUDO_LEN];
        out[1] = u8::from(self.version);
        out[2] = self.vrid;
        match self.src {
            IpAddr::V4(a) => {
                out[0] = 4;
                out[4..8].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out[0] = 6;
                out[4..20].copy_from_slice(&a.octets());
            }
        }
        out
    }
}

/// The truncated HMAC-SHA256 of an advert: over the pseudo-header of `origin`, the VRRP
/// message `msg` with its checksum field read as zero, the 12 bytes `head` of the trailer
/// before its MAC, and 16 zero bytes in place of the MAC (keepalived 2.4.3 vrrp_auth_hmac.c
/// `pdu_hmac`). A message shorter than the VRRP header is used as it is.
pub fn compute_mac(key: &Key, origin: &Origin, msg: &[u8], head: &[u8]) -> [u8; MAC_LEN] {
    // A key of any length is a valid HMAC key: this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(&origin.pseudo_header());
    if msg.len() >= HEADER_LEN {
        mac.update(&msg[..CHECKSUM.start]);
        mac.update(&[0, 0]);
        mac.update(&msg[CHECKSUM.end..]);
    } else {
        mac.update(msg);
    }
    mac.update(head);
    mac.update(&[0; MAC_LEN]);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

/// How an instance treats the trailer (keepalived's `mode`). A LAN moves to HMAC in three
/// sweeps, each hitless: receive-only everywhere, then permissive, then enforce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Sends no trailer; verifies one when present; accepts adverts without one.
    ReceiveOnly,
    /// Signs; verifies a trailer when present; accepts adverts without one.
    Permissive,
    /// Signs; requires a valid trailer.
    #[default]
    Enforce,
}

impl Mode {
    /// Whether adverts go out signed.
    pub fn signs(self) -> bool {
        self != Mode::ReceiveOnly
    }

    /// Whether an advert without a trailer is dropped.
    pub fn requires(self) -> bool {
        self == Mode::Enforce
    }

    /// keepalived's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReceiveOnly => "receive-only",
            Mode::Permissive => "permissive",
            Mode::Enforce => "enforce",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What makes a sequence acceptable (keepalived's `anti_replay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AntiReplay {
    /// The trailer's seconds must be within `window` seconds of our clock either way, and
    /// each sender's sequence must grow. Needs clocks in sync (NTP).
    Time {
        /// Seconds, [`WINDOW_MIN`]..=[`WINDOW_MAX`].
        window: u32,
    },
    /// Each sender's sequence must grow; no clock agreement needed, no freshness either.
    Monotonic,
}

impl AntiReplay {
    /// Time mode with keepalived's default window: 3 advert intervals (whole seconds), at
    /// least [`WINDOW_FLOOR`], at most [`WINDOW_MAX`].
    pub fn time_for(advert_interval: Duration) -> AntiReplay {
        let three = 3 * advert_interval.as_secs().min(u64::from(WINDOW_MAX)) as u32;
        AntiReplay::Time {
            window: three.clamp(WINDOW_FLOOR, WINDOW_MAX),
        }
    }

    fn window(self) -> Option<u32> {
        match self {
            AntiReplay::Time { window } => Some(window),
            AntiReplay::Monotonic => None,
        }
    }
}

/// Why a key is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Ids are 1..=255.
    #[error("key id 0: ids are 1 to 255")]
    Id,
    /// Not 32 to 64 bytes.
    #[error("key {id} is {len} bytes; keys are {KEY_MIN} to {KEY_MAX} bytes")]
    Length { id: u8, len: usize },
    /// Two keys with one id.
    #[error("key id {0} is given twice")]
    Duplicate(u8),
    /// The signing key is not among the keys.
    #[error("active_key {0} is not one of the keys")]
    NoActive(u8),
}

/// One HMAC key, addressed by its id. Its bytes are wiped when it is dropped and never shown.
#[derive(Clone)]
pub struct Key {
    id: u8,
    bytes: Zeroizing<Vec<u8>>,
}

impl Key {
    /// A key of 32..=64 bytes with an id 1..=255.
    pub fn new(id: u8, bytes: &[u8]) -> Result<Key, KeyError> {
        if id == 0 {
            return Err(KeyError::Id);
        }
        if !(KEY_MIN..=KEY_MAX).contains(&bytes.len()) {
            return Err(KeyError::Length {
                id,
                len: bytes.len(),
            });
        }
        Ok(Key {
            id,
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true (keys are at least [`KEY_MIN`] bytes); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.id == other.id && bool::from(self.bytes.as_slice().ct_eq(other.bytes.as_slice()))
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Key {{ id: {}, len: {}, .. }}",
            self.id,
            self.bytes.len()
        )
    }
}

/// The keys of an instance and the one it signs with. A receiver accepts a trailer signed by
/// any of them, so rotation is make before break: add the new key everywhere, then move
/// `active_key` everywhere, then drop the old key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<Key>,
    active: u8,
}

impl KeySet {
    /// The keys (ids unique) and the id of the signing key, which must be one of them.
    pub fn new(keys: Vec<Key>, active: u8) -> Result<KeySet, KeyError> {
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(KeyError::Duplicate(k.id));
            }
        }
        if !keys.iter().any(|k| k.id == active) {
            return Err(KeyError::NoActive(active));
        }
        Ok(KeySet { keys, active })
    }

    /// The key with this id.
    pub fn get(&self, id: u8) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The signing key.
    pub fn active(&self) -> &Key {
        // `new` checked that it is there.
        self.get(self.active).unwrap_or(&self.keys[0])
    }

    /// The ids, in the order given.
    pub fn ids(&self) -> Vec<u8> {
        self.keys.iter().map(|k| k.id).collect()
    }
}

/// Why a received advert fails authentication. Small and `Copy`: this is the receive path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// No trailer, in enforce mode.
    Missing,
    /// A trailer of another scheme, or with a non-zero reserved field.
    Malformed,
    /// Signed with a key id we do not have.
    UnknownKey,
    /// The MAC does not verify: forged or altered, or another key under the same id.
    Bad,
    /// Time mode: the timestamp is outside the window (a replay, or clocks apart).
    Stale,
    /// The sequence does not grow: a replay (or a sender whose clock went back).
    Replay,
}

impl Rejection {
    /// Every reason, in counter order.
    pub const ALL: [Rejection; 6] = [
        Rejection::Missing,
        Rejection::Malformed,
        Rejection::UnknownKey,
        Rejection::Bad,
        Rejection::Stale,
        Rejection::Replay,
    ];

    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Missing => "hmac_missing",
            Rejection::Malformed => "hmac_malformed",
            Rejection::UnknownKey => "hmac_unknown_key",
            Rejection::Bad => "hmac_bad",
            Rejection::Stale => "hmac_stale",
            Rejection::Replay => "hmac_replay",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An advert that passed [`AuthHmac::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A valid trailer.
    Signed {
        /// The key that signed it.
        key_id: u8,
        /// Time mode: our clock minus the sender's, seconds (keepalived warns past half the
        /// window: see [`AuthHmac::skew_is_high`]).
        skew: Option<i32>,
    },
    /// No trailer, accepted because the mode is receive-only or permissive.
    Unsigned,
}

/// Settings of [`AuthHmac`], what a reload may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The keys and the signing one.
    pub keys: KeySet,
    /// receive-only, permissive or enforce.
    pub mode: Mode,
    /// Time window or monotonic.
    pub anti_replay: AntiReplay,
}

/// What may be shown of an instance's auth_hmac (`/status`, `/metrics`): its settings and key
/// ids, never a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// receive-only, permissive or enforce.
    pub mode: Mode,
    /// Id of the signing key.
    pub active_key: u8,
    /// Ids of every key accepted, in the order given.
    pub key_ids: Vec<u8>,
    /// Time mode: the window in seconds; `None`: monotonic.
    pub time_window: Option<u32>,
}

impl Params {
    /// The settings without the keys.
    pub fn summary(&self) -> Summary {
        Summary {
            mode: self.mode,
            active_key: self.keys.active().id(),
            key_ids: self.keys.ids(),
            time_window: self.anti_replay.window(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sender {
    addr: IpAddr,
    /// Last accepted sequence; `None`: none yet (or expired).
    mark: Option<Seq>,
    /// Least-recently-used rank; higher is more recent.
    used: u64,
}

/// The HMAC state of one instance: settings, the last sequence sent, and the last sequence
/// accepted from each sender (its "mark").
#[derive(Debug, Clone)]
pub struct AuthHmac {
    p: Params,
    sent: Seq,
    senders: Vec<Sender>,
    capacity: usize,
    clock: u64,
}

impl AuthHmac {
    /// State for an instance with `unicast_peers` peers (0: multicast). Multicast remembers
    /// [`MULTICAST_SENDERS`] senders; unicast one per peer, which the caller has checked the
    /// source against before [`AuthHmac::verify`] (as keepalived does).
    pub fn new(p: Params, unicast_peers: usize) -> AuthHmac {
        AuthHmac {
            p,
            sent: Seq(0),
            senders: Vec::new(),
            capacity: unicast_peers.max(MULTICAST_SENDERS),
            clock: 0,
        }
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    /// New settings (reload: keys rotated, mode moved), keeping the sequence sent and the
    /// marks, so that a reload opens no replay window (keepalived starts afresh on reload).
    pub fn reconfigure(&mut self, p: Params, unicast_peers: usize) {
        self.p = p;
        self.capacity = unicast_peers.max(MULTICAST_SENDERS);
        self.evict_to_capacity();
    }

    /// Bytes the trailer adds to each advert we send: [`TRAILER_LEN`], or 0 in receive-only.
    pub fn trailer_len(&self) -> usize {
        if self.p.mode.signs() {
            TRAILER_LEN
        } else {
            0
        }
    }

    /// Whether a skew reported by [`Accepted::Signed`] is past half the window (the early
    /// warning keepalived logs before adverts start failing).
    pub fn skew_is_high(&self, skew: i32) -> bool {
        self.p
            .anti_replay
            .window()
            .is_some_and(|w| skew.unsigned_abs() > w / 2)
    }

    /// The sequence of the next advert: the clock's, or the last one + 1 when the clock has
    /// not moved past it (keepalived `next_seq`). Time mode restarts from the clock when the
    /// last one is more than the window ahead of it (the clock was stepped back), since no
    /// receiver would accept those numbers.
    pub fn next_seq(&mut self, now: SystemTime) -> Seq {
        let clock = Seq::from_wall(now);
        if clock.is_after(self.sent) {
            self.sent = clock;
            return clock;
        }
        let ahead = secs_delta(self.sent.secs(), clock.secs());
        self.sent = match self.p.anti_replay.window() {
            Some(w) if ahead > w as i32 => clock,
            _ => Seq(self.sent.0.wrapping_add(1)),
        };
        self.sent
    }

    /// The last sequence sent (0 before the first).
    pub fn last_sent(&self) -> Seq {
        self.sent
    }

    /// The trailer for the VRRP message `msg` we are about to send from `origin`, with the
    /// next sequence; `None` in receive-only mode. Sign once per advert: the copies sent to
    /// each unicast peer carry the same trailer (the MAC does not cover the destination, nor
    /// the checksum that depends on it).
    pub fn sign(
        &mut self,
        now: SystemTime,
        origin: &Origin,
        msg: &[u8],
    ) -> Option<[u8; TRAILER_LEN]> {
        if !self.p.mode.signs() {
            return None;
        }
        let seq = self.next_seq(now);
        Some(self.sign_with(seq, origin, msg))
    }

    /// The trailer for `msg` with a given sequence, signed by the active key (no state
    /// changes).
    pub fn sign_with(&self, seq: Seq, origin: &Origin, msg: &[u8]) -> [u8; TRAILER_LEN] {
        let key = self.p.keys.active();
        let mut out = [0u8; TRAILER_LEN];
        let mut t = Trailer::new_unchecked(&mut out[..]);
        TrailerRepr {
            ext_type: EXT_HMAC_SHA256,
            key_id: key.id(),
            seq,
        }
        .emit(&mut t);
        let mac = compute_mac(key, origin, msg, t.head());
        t.set_mac(&mac);
        out
    }

    /// Judges a received advert: `msg` is the VRRP message, `trailer` the 28 bytes after it
    /// if any ([`split_trailer`]), `origin` our version and VRID with the packet's IP source.
    /// In keepalived's order: missing, malformed, stale (before the HMAC, so that a flood of
    /// replays costs no digest), unknown key, bad MAC (compared in constant time), replay.
    /// Only an advert that verifies moves the sender's mark, and only such an advert can take
    /// one of the [`MULTICAST_SENDERS`] places.
    pub fn verify(
        &mut self,
        now: SystemTime,
        origin: &Origin,
        msg: &[u8],
        trailer: Option<&[u8]>,
    ) -> Result<Accepted, Rejection> {
        let Some(trailer) = trailer else {
            return if self.p.mode.requires() {
                Err(Rejection::Missing)
            } else {
                Ok(Accepted::Unsigned)
            };
        };
        let t = Trailer::new_checked(trailer)?;
        let repr = TrailerRepr::parse(&t)?;
        let now_secs = wall_secs(now);
        let skew = match self.p.anti_replay.window() {
            Some(w) => {
                let d = secs_delta(now_secs, repr.seq.secs());
                if d.unsigned_abs() > w {
                    return Err(Rejection::Stale);
                }
                Some(d)
            }
            None => None,
        };
        let key = self.p.keys.get(repr.key_id).ok_or(Rejection::UnknownKey)?;
        let want = compute_mac(key, origin, msg, t.head());
        if !bool::from(want.ct_eq(t.mac())) {
            return Err(Rejection::Bad);
        }
        let window = self.p.anti_replay.window();
        let s = self.sender(origin.src);
        if let (Some(w), Some(m)) = (window, s.mark) {
            // A mark outside the window only orders packets the window already refuses:
            // expiring it lets a sender whose clock was stepped back in again.
            if secs_delta(now_secs, m.secs()).unsigned_abs() > w {
                s.mark = None;
            }
        }
        if let Some(m) = s.mark {
            if !repr.seq.is_after(m) {
                return Err(Rejection::Replay);
            }
        }
        s.mark = Some(repr.seq);
        Ok(Accepted::Signed {
            key_id: repr.key_id,
            skew,
        })
    }

    /// The place of `addr`, taken (from the least recently used) if it has none.
    fn sender(&mut self, addr: IpAddr) -> &mut Sender {
        self.clock += 1;
        let used = self.clock;
        let i = match self.senders.iter().position(|s| s.addr == addr) {
            Some(i) => i,
            None => {
                if self.senders.len() >= self.capacity {
                    self.evict_one();
                }
                self.senders.push(Sender {
                    addr,
                    mark: None,
                    used,
                });
                self.senders.len() - 1
            }
        };
        let s = &mut self.senders[i];
        s.used = used;
        s
    }

    fn evict_one(&mut self) {
        if let Some(i) = self
            .senders
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.used)
            .map(|(i, _)| i)
        {
            self.senders.swap_remove(i);
        }
    }

    fn evict_to_capacity(&mut self) {
        while self.senders.len() > self.capacity {
            self.evict_one();
        }
    }

    /// The last sequence accepted from each sender, most recently heard first.
    pub fn marks(&self) -> Vec<(IpAddr, Seq)> {
        let mut v: Vec<&Sender> = self.senders.iter().filter(|s| s.mark.is_some()).collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.used));
        v.iter()
            .filter_map(|s| s.mark.map(|m| (s.addr, m)))
            .collect()
    }

    /// Takes back a saved state (see [`state`]): the last sequence sent (only if it is after
    /// ours) and the senders' marks (most recent first, as [`AuthHmac::marks`] gives them;
    /// those beyond the capacity are dropped; a mark already known is kept if newer).
    pub fn restore(&mut self, sent: Seq, marks: &[(IpAddr, Seq)]) {
        if sent.is_after(self.sent) {
            self.sent = sent;
        }
        for (addr, seq) in marks.iter().rev() {
            let s = self.sender(*addr);
            match s.mark {
                Some(m) if !seq.is_after(m) => {}
                _ => s.mark = Some(*seq),
            }
        }
    }
}

#[cfg(test)]
mod tests;
