//! VRRP advertisement wire format (RFC 3768 §5.1 for version 2, RFC 9568 §5.1 for version 3).
//!
//! [`Packet`] is a checked view over bytes: after [`Packet::new_checked`] no accessor panics.
//! [`Repr`] is the decoded value, with [`Repr::parse`], [`Repr::buffer_len`] and [`Repr::emit`].
//! The view covers the VRRP message only (the IP payload); the IP header is the caller's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// IPv4 multicast group of VRRP (RFC 3768 §5.2.2).
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group of VRRP, link-local scope (RFC 9568 §5.1.2.2).
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Length of the fixed header.
pub const HEADER_LEN: usize = 8;
/// Length of the VRRPv2 authentication data (RFC 3768 §5.3.10).
pub const AUTH_LEN: usize = 8;

/// Why bytes are not a valid VRRP message. Small and `Copy`: this is the receive path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the fixed header.
    #[error("truncated: shorter than the VRRP header")]
    Truncated,
    /// Version is neither 2 nor 3.
    #[error("unsupported version {0}")]
    Version(u8),
    /// Type is not ADVERTISEMENT.
    #[error("unknown type {0}")]
    Type(u8),
    /// Length disagrees with the address count (and, for v2, the authentication data).
    #[error("length {len} does not match {count} addresses (expected {expected})")]
    Length {
        /// Bytes received.
        len: usize,
        /// Count IP Addrs field.
        count: u8,
        /// Bytes that count implies.
        expected: usize,
    },
    /// Checksum does not verify.
    #[error("bad checksum")]
    Checksum,
    /// VRRPv2 carries IPv4 addresses only.
    #[error("VRRPv2 over IPv6")]
    Family,
}

/// VRRP version field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// RFC 3768.
    V2,
    /// RFC 9568 (formerly RFC 5798).
    V3,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for Version {
    fn from(v: u8) -> Self {
        match v {
            2 => Version::V2,
            3 => Version::V3,
            o => Version::Unknown(o),
        }
    }
}

impl From<Version> for u8 {
    fn from(v: Version) -> u8 {
        match v {
            Version::V2 => 2,
            Version::V3 => 3,
            Version::Unknown(o) => o,
        }
    }
}

/// VRRP type field (RFC 3768 §5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// 1: ADVERTISEMENT, the only type defined.
    Advertisement,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for Type {
    fn from(v: u8) -> Self {
        match v {
            1 => Type::Advertisement,
            o => Type::Unknown(o),
        }
    }
}

impl From<Type> for u8 {
    fn from(v: Type) -> u8 {
        match v {
            Type::Advertisement => 1,
            Type::Unknown(o) => o,
        }
    }
}

/// VRRPv2 authentication (RFC 3768 §5.3.6, §5.3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Type 0: no authentication; the 8 data bytes are sent as zeros.
    None,
    /// Type 1: simple text password, zero padded to 8 bytes.
    SimpleText([u8; AUTH_LEN]),
    /// Any other type (2 was IP AH in RFC 2338), with its data kept as received.
    Unknown(u8, [u8; AUTH_LEN]),
}

impl Auth {
    /// Type 1 from a password of at most 8 bytes (longer ones are cut, as keepalived does).
    pub fn simple(pass: &[u8]) -> Auth {
        let mut data = [0u8; AUTH_LEN];
        let n = pass.len().min(AUTH_LEN);
        data[..n].copy_from_slice(&pass[..n]);
        Auth::SimpleText(data)
    }

    /// The auth type code.
    pub fn code(&self) -> u8 {
        match self {
            Auth::None => 0,
            Auth::SimpleText(_) => 1,
            Auth::Unknown(c, _) => *c,
        }
    }

    fn data(&self) -> [u8; AUTH_LEN] {
        match self {
            Auth::None => [0; AUTH_LEN],
            Auth::SimpleText(d) | Auth::Unknown(_, d) => *d,
        }
    }
}

/// Addresses of the IP header around a VRRP message: the v3 checksum covers them, and their
/// family sets the size of the addresses in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPair {
    pub src: IpAddr,
    pub dst: IpAddr,
}

impl IpPair {
    fn addr_len(&self) -> usize {
        match self.src {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 16,
        }
    }
}

/// What the VRRPv3 checksum covers over IPv4. Over IPv6 it always covers the IPv6
/// pseudo-header (RFC 8200 §8.1, next header 112); VRRPv2 never covers one.
///
/// RFC 5798 §5.2.8 named a pseudo-header without saying whose; keepalived, Wireshark and tcpdump
/// took the IPv4 one, while Cisco and Juniper sum the VRRP message alone, which is what RFC 9568
/// §5.2.8 now specifies (keepalived's `v3_checksum_as_v2`, from 2.2.8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum V3Checksum {
    /// The IPv4 pseudo-header (source, destination, zero, protocol 112, VRRP length) is
    /// included, as keepalived does by default. Only that form is accepted, as keepalived does.
    #[default]
    PseudoHeader,
    /// The VRRP message alone (RFC 9568). Both forms are accepted: keepalived with
    /// `v3_checksum_as_v2` does not verify the checksum of a VRRPv3 IPv4 advert at all
    /// (keepalived/vrrp/vrrp.c, vrrp_check_packet), so a mixed LAN keeps working while it is
    /// switched host by host; bytes that verify in neither form are still dropped.
    MessageOnly,
}

mod field {
    pub(super) type Field = std::ops::Range<usize>;
    pub(super) const VER_TYPE: usize = 0;
    pub(super) const VRID: usize = 1;
    pub(super) const PRIORITY: usize = 2;
    pub(super) const COUNT: usize = 3;
    /// v2: auth type; v3: high nibble reserved, low nibble top of Max Adver Int.
    pub(super) const AUTH_TYPE: usize = 4;
    /// v2: advert interval in seconds.
    pub(super) const ADVER_INT: usize = 5;
    /// v3: 4 reserved bits and 12 bits of centiseconds.
    pub(super) const MAX_ADVER_INT: Field = 4..6;
    pub(super) const CHECKSUM: Field = 6..8;
    pub(super) const ADDRESSES: usize = 8;
}

/// A VRRP message as a checked view over bytes.
///
/// ```text
/// RFC 3768 §5.1 (VRRPv2)
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Auth Type   |   Adver Int   |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         IP Address (1)                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                            .                                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         IP Address (n)                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     Authentication Data (1)                   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     Authentication Data (2)                   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///
/// RFC 9568 §5.1 (VRRPv3): same first word, then
/// |(rsvd) |     Max Adver Int     |          Checksum             |
/// followed by IPv4 or IPv6 addresses and no authentication data.
/// The v2 checksum covers the VRRP message; the v3 one adds the IP pseudo-header.
/// ```
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps bytes without checking them; accessors may panic until [`Packet::check_len`] passes.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps bytes that hold at least the fixed header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the fixed header is there.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Gives the bytes back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field.
    pub fn version(&self) -> Version {
        Version::from(self.buffer.as_ref()[field::VER_TYPE] >> 4)
    }

    /// Type field.
    pub fn msg_type(&self) -> Type {
        Type::from(self.buffer.as_ref()[field::VER_TYPE] & 0x0f)
    }

    /// Virtual router identifier.
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// Priority of the sender.
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Count IP Addrs.
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// v2 auth type.
    pub fn auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_TYPE]
    }

    /// v2 advertisement interval, in seconds.
    pub fn adver_int(&self) -> u8 {
        self.buffer.as_ref()[field::ADVER_INT]
    }

    /// v3 maximum advertisement interval, in centiseconds (12 bits).
    pub fn max_adver_int(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::MAX_ADVER_INT];
        u16::from_be_bytes([b[0], b[1]]) & 0x0fff
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Length the count field implies, for addresses of `addr_len` bytes.
    pub fn expected_len(&self, addr_len: usize) -> usize {
        let auth = if self.version() == Version::V2 {
            AUTH_LEN
        } else {
            0
        };
        HEADER_LEN + usize::from(self.count()) * addr_len + auth
    }

    /// Checks that the length is exactly what the count field implies.
    pub fn check_count(&self, addr_len: usize) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        let expected = self.expected_len(addr_len);
        if len != expected {
            return Err(WireError::Length {
                len,
                count: self.count(),
                expected,
            });
        }
        Ok(())
    }

    /// The `i`th address as raw bytes, if the buffer holds it.
    pub fn address_bytes(&self, i: usize, addr_len: usize) -> Option<&[u8]> {
        let start = field::ADDRESSES + i * addr_len;
        self.buffer.as_ref().get(start..start + addr_len)
    }

    /// v2 authentication data (the 8 bytes after the addresses), if the buffer holds them.
    pub fn auth_data(&self) -> Option<[u8; AUTH_LEN]> {
        let start = field::ADDRESSES + usize::from(self.count()) * 4;
        let b = self.buffer.as_ref().get(start..start + AUTH_LEN)?;
        let mut out = [0u8; AUTH_LEN];
        out.copy_from_slice(b);
        Some(out)
    }

    /// Whether the checksum verifies; `ip` is needed for version 3 only.
    pub fn verify_checksum(&self, ip: &IpPair) -> bool {
        self.verify_checksum_with(ip, V3Checksum::default())
    }

    /// [`Packet::verify_checksum`] with the receive rule of `mode` for VRRPv3 over IPv4 (see
    /// [`V3Checksum`]).
    pub fn verify_checksum_with(&self, ip: &IpPair, mode: V3Checksum) -> bool {
        let data = self.buffer.as_ref();
        let whole = checksum::sum(data) == 0xffff;
        match self.version() {
            Version::V3 => {
                let with_pseudo = || {
                    checksum::combine(&[pseudo_header_sum(ip, data.len()), checksum::sum(data)])
                        == 0xffff
                };
                match (ip.addr_len(), mode) {
                    (4, V3Checksum::MessageOnly) => whole || with_pseudo(),
                    _ => with_pseudo(),
                }
            }
            _ => whole,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_ver_type(&mut self, version: Version, ty: Type) {
        self.buffer.as_mut()[field::VER_TYPE] = (u8::from(version) << 4) | (u8::from(ty) & 0x0f);
    }

    /// Sets the virtual router identifier.
    pub fn set_vrid(&mut self, v: u8) {
        self.buffer.as_mut()[field::VRID] = v;
    }

    /// Sets the priority.
    pub fn set_priority(&mut self, v: u8) {
        self.buffer.as_mut()[field::PRIORITY] = v;
    }

    fn set_count(&mut self, v: u8) {
        self.buffer.as_mut()[field::COUNT] = v;
    }

    fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Recomputes the checksum (after the other fields are set).
    pub fn fill_checksum(&mut self, ip: &IpPair) {
        self.fill_checksum_with(ip, V3Checksum::default());
    }

    /// [`Packet::fill_checksum`], the VRRPv3-over-IPv4 checksum computed as `mode` says.
    pub fn fill_checksum_with(&mut self, ip: &IpPair, mode: V3Checksum) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let pseudo = match (self.version(), ip.addr_len(), mode) {
            (Version::V3, 4, V3Checksum::MessageOnly) => false,
            (Version::V3, ..) => true,
            _ => false,
        };
        let sum = if pseudo {
            checksum::combine(&[pseudo_header_sum(ip, data.len()), checksum::sum(data)])
        } else {
            checksum::sum(data)
        };
        self.set_checksum(!sum);
    }
}

fn pseudo_header_sum(ip: &IpPair, len: usize) -> u16 {
    let mut buf = [0u8; 40];
    let used = match (ip.src, ip.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // RFC 768-style pseudo-header: src, dst, zero, protocol, length.
            buf[0..4].copy_from_slice(&s.octets());
            buf[4..8].copy_from_slice(&d.octets());
            buf[9] = PROTOCOL;
            buf[10..12].copy_from_slice(&(len as u16).to_be_bytes());
            12
        }
        (s, d) => {
            // RFC 8200 §8.1: src, dst, upper-layer length (32 bits), zeros, next header.
            buf[0..16].copy_from_slice(&to_v6(s).octets());
            buf[16..32].copy_from_slice(&to_v6(d).octets());
            buf[32..36].copy_from_slice(&(len as u32).to_be_bytes());
            buf[39] = PROTOCOL;
            40
        }
    };
    checksum::sum(&buf[..used])
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// RFC 1071 Internet checksum.
pub mod checksum {
    /// One's complement sum of `data` folded to 16 bits (not inverted).
    pub fn sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            acc += u32::from(*last) << 8;
        }
        fold(acc)
    }

    /// One's complement sum of partial sums.
    pub fn combine(sums: &[u16]) -> u16 {
        fold(sums.iter().map(|s| u32::from(*s)).sum())
    }

    fn fold(mut acc: u32) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }
}

/// A decoded VRRP advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    /// 2 or 3.
    pub version: Version,
    /// Virtual router identifier.
    pub vrid: u8,
    /// Sender's priority (0: the master stops).
    pub priority: u8,
    /// v2 authentication; always [`Auth::None`] for v3.
    pub auth: Auth,
    /// v2: seconds; v3: centiseconds (12 bits).
    pub adver_int: u16,
    /// The virtual addresses, all of the IP header's family.
    pub addresses: Vec<IpAddr>,
}

impl Repr {
    /// Decodes and validates a message: version, type, length, checksum, in that order.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, ip: &IpPair) -> Result<Repr, WireError> {
        Self::parse_with(packet, ip, V3Checksum::default())
    }

    /// [`Repr::parse`] with the checksum rule `mode` for VRRPv3 over IPv4.
    pub fn parse_with<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        ip: &IpPair,
        mode: V3Checksum,
    ) -> Result<Repr, WireError> {
        Self::parse_inner(packet, ip, Some(mode))
    }

    /// [`Repr::parse`] of a message whose checksum the caller has judged over more bytes
    /// than the message: over IPv6 an auth_hmac trailer is inside the checksum
    /// ([`crate::auth_hmac::checksum_covers_trailer`]).
    pub fn parse_checksum_judged<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        ip: &IpPair,
    ) -> Result<Repr, WireError> {
        Self::parse_inner(packet, ip, None)
    }

    fn parse_inner<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        ip: &IpPair,
        checksum: Option<V3Checksum>,
    ) -> Result<Repr, WireError> {
        packet.check_len()?;
        let version = packet.version();
        match version {
            Version::V2 if ip.addr_len() != 4 => return Err(WireError::Family),
            Version::V2 | Version::V3 => {}
            Version::Unknown(v) => return Err(WireError::Version(v)),
        }
        if let Type::Unknown(t) = packet.msg_type() {
            return Err(WireError::Type(t));
        }
        let addr_len = ip.addr_len();
        packet.check_count(addr_len)?;
        if let Some(mode) = checksum {
            if !packet.verify_checksum_with(ip, mode) {
                return Err(WireError::Checksum);
            }
        }
        let mut addresses = Vec::with_capacity(usize::from(packet.count()));
        for i in 0..usize::from(packet.count()) {
            let b = packet
                .address_bytes(i, addr_len)
                .ok_or(WireError::Truncated)?;
            addresses.push(ip_from_bytes(b).ok_or(WireError::Truncated)?);
        }
        let (auth, adver_int) = if version == Version::V2 {
            let data = packet.auth_data().ok_or(WireError::Truncated)?;
            let auth = match packet.auth_type() {
                0 if data == [0; AUTH_LEN] => Auth::None,
                1 => Auth::SimpleText(data),
                c => Auth::Unknown(c, data),
            };
            (auth, u16::from(packet.adver_int()))
        } else {
            (Auth::None, packet.max_adver_int())
        };
        Ok(Repr {
            version,
            vrid: packet.vrid(),
            priority: packet.priority(),
            auth,
            adver_int,
            addresses,
        })
    }

    /// Bytes that [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let per = match self.addresses.first() {
            Some(IpAddr::V6(_)) => 16,
            _ => 4,
        };
        let auth = if self.version == Version::V2 {
            AUTH_LEN
        } else {
            0
        };
        HEADER_LEN + self.addresses.len() * per + auth
    }

    /// Writes the message into `packet`, which must be exactly [`Repr::buffer_len`] long, and
    /// fills the checksum (`ip` is used for version 3 only).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>, ip: &IpPair) {
        self.emit_with(packet, ip, V3Checksum::default());
    }

    /// [`Repr::emit`] with the VRRPv3-over-IPv4 checksum computed as `mode` says.
    pub fn emit_with<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        ip: &IpPair,
        mode: V3Checksum,
    ) {
        packet.set_ver_type(self.version, Type::Advertisement);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_count(self.addresses.len().min(255) as u8);
        let buf = packet.buffer.as_mut();
        if self.version == Version::V2 {
            buf[field::AUTH_TYPE] = self.auth.code();
            buf[field::ADVER_INT] = self.adver_int.min(255) as u8;
        } else {
            buf[field::MAX_ADVER_INT].copy_from_slice(&(self.adver_int & 0x0fff).to_be_bytes());
        }
        let mut at = field::ADDRESSES;
        for a in &self.addresses {
            match a {
                IpAddr::V4(a) => {
                    buf[at..at + 4].copy_from_slice(&a.octets());
                    at += 4;
                }
                IpAddr::V6(a) => {
                    buf[at..at + 16].copy_from_slice(&a.octets());
                    at += 16;
                }
            }
        }
        if self.version == Version::V2 {
            buf[at..at + AUTH_LEN].copy_from_slice(&self.auth.data());
        }
        packet.fill_checksum_with(ip, mode);
    }

    /// Encodes into a new vector.
    pub fn to_bytes(&self, ip: &IpPair) -> Vec<u8> {
        self.to_bytes_with(ip, V3Checksum::default())
    }

    /// [`Repr::to_bytes`] with the VRRPv3-over-IPv4 checksum computed as `mode` says.
    pub fn to_bytes_with(&self, ip: &IpPair, mode: V3Checksum) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit_with(&mut Packet::new_unchecked(&mut buf[..]), ip, mode);
        buf
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => {
            let a: [u8; 4] = b.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        }
        16 => {
            let a: [u8; 16] = b.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// The IPv4 header fields the receive checks need (RFC 791), from a raw-socket read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Meta {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// 112 for VRRP.
    pub protocol: u8,
    /// Header length in bytes.
    pub header_len: usize,
    /// Total length in bytes.
    pub total_len: usize,
}

impl Ipv4Meta {
    /// Reads an IPv4 header; `None` if `b` is not one or is shorter than it says.
    pub fn parse(b: &[u8]) -> Option<Ipv4Meta> {
        if b.len() < 20 || b[0] >> 4 != 4 {
            return None;
        }
        let header_len = usize::from(b[0] & 0x0f) * 4;
        let total_len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if header_len < 20 || total_len < header_len || b.len() < total_len {
            return None;
        }
        Some(Ipv4Meta {
            src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
            dst: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
            ttl: b[8],
            protocol: b[9],
            header_len,
            total_len,
        })
    }

    /// The IP payload of `b` (the header says where it starts and ends).
    pub fn payload<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        b.get(self.header_len..self.total_len).unwrap_or(&[])
    }

    /// The address pair for checksums.
    pub fn pair(&self) -> IpPair {
        IpPair {
            src: IpAddr::V4(self.src),
            dst: IpAddr::V4(self.dst),
        }
    }
}

/// Writes an IPv4 header as keepalived sends it (TOS 0xc0, TTL 255, protocol 112, no options)
/// in front of `payload`; the kernel fills the identification and header checksum on raw
/// sockets with IP_HDRINCL, but we fill the checksum anyway so the bytes stand alone.
pub fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, id: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut b = vec![0u8; total];
    b[0] = 0x45;
    b[1] = 0xc0;
    b[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    b[4..6].copy_from_slice(&id.to_be_bytes());
    b[8] = 255;
    b[9] = PROTOCOL;
    b[12..16].copy_from_slice(&src.octets());
    b[16..20].copy_from_slice(&dst.octets());
    let sum = !checksum::sum(&b[..20]);
    b[10..12].copy_from_slice(&sum.to_be_bytes());
    b[20..].copy_from_slice(payload);
    b
}

#[cfg(test)]
mod ipv6_tests;
#[cfg(test)]
mod tests;
