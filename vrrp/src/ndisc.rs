//! Unsolicited neighbour advertisements (RFC 4861 §7.2.6), the IPv6 counterpart of gratuitous
//! ARP, as keepalived sends them for each virtual IPv6 address on becoming master: from the
//! interface's MAC to 33:33:00:00:00:01, IPv6 source the virtual address itself, destination
//! ff02::1 (all nodes), hop limit 255, Override set, Solicited clear, Router set when the
//! interface forwards IPv6, and a Target Link-Layer Address option with the MAC.
//!
//! ```text
//! RFC 4861 §4.4
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|S|O|                     Reserved                            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! +                       Target Address (16)                     +
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Type 2 (TLLA) |  Length 1     |   Link-Layer Address (6) ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv6Addr;

use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNeighborAdvertPacket, NdpOptionTypes, NeighborAdvertFlags, NeighborAdvertPacket,
};
use pnet_packet::icmpv6::{self, Icmpv6Code, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet_packet::{MutablePacket as _, Packet as _};

use crate::arp::Mac;

/// Length of the ICMPv6 message: type .. target (24) and the TLLA option (8).
const ICMP_LEN: usize = 24 + 8;
/// Length of an unsolicited neighbour advertisement frame (Ethernet + IPv6 + ICMPv6).
pub const NA_LEN: usize = 14 + 40 + ICMP_LEN;

/// ff02::1, all nodes on the link (RFC 4291 §2.7.1).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The Ethernet address of ff02::1 (RFC 2464 §7: 33:33 and the low 32 bits).
const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];
/// RFC 4861 §7.1.2: neighbour discovery is sent, and only accepted, with hop limit 255.
const HOP_LIMIT: u8 = 255;

/// The facts of an unsolicited neighbour advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsolicitedNa {
    /// Ethernet source and target link-layer address.
    pub mac: Mac,
    /// The announced address: target, and IPv6 source.
    pub addr: Ipv6Addr,
    /// The Router flag (RFC 4861 §4.4): keepalived sets it when the interface forwards IPv6
    /// (`net.ipv6.conf.IFACE.forwarding`), so that hosts keep it as their default router.
    pub router: bool,
}

impl UnsolicitedNa {
    /// Builds the frame.
    pub fn to_frame(&self) -> [u8; NA_LEN] {
        let mut buf = [0u8; NA_LEN];
        self.emit(&mut buf);
        buf
    }

    /// Writes the frame into the first [`NA_LEN`] bytes of `buf`; returns false if it is too
    /// short.
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        let Some(buf) = buf.get_mut(..NA_LEN) else {
            return false;
        };
        let Some(mut eth) = MutableEthernetPacket::new(buf) else {
            return false;
        };
        eth.set_destination(ALL_NODES_MAC.into());
        eth.set_source(self.mac.into());
        eth.set_ethertype(EtherTypes::Ipv6);
        let Some(mut ip) = MutableIpv6Packet::new(eth.payload_mut()) else {
            return false;
        };
        ip.set_version(6);
        ip.set_traffic_class(0);
        ip.set_flow_label(0);
        ip.set_payload_length(ICMP_LEN as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(HOP_LIMIT);
        ip.set_source(self.addr);
        ip.set_destination(ALL_NODES);
        let Some(mut na) = MutableNeighborAdvertPacket::new(ip.payload_mut()) else {
            return false;
        };
        na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        na.set_icmpv6_code(Icmpv6Code(0));
        na.set_checksum(0);
        // RFC 4861 §7.2.6: unsolicited, so Solicited clear; Override set so that caches
        // holding the previous master's MAC take ours.
        let mut flags = NeighborAdvertFlags::Override;
        if self.router {
            flags |= NeighborAdvertFlags::Router;
        }
        na.set_flags(flags);
        na.set_reserved(0);
        na.set_target_addr(self.addr);
        // Target Link-Layer Address option, 8 bytes (length 1), after the 24 fixed bytes.
        let icmp = &mut ip.payload_mut()[..ICMP_LEN];
        icmp[24] = NdpOptionTypes::TargetLLAddr.0;
        icmp[25] = 1;
        icmp[26..32].copy_from_slice(&self.mac);
        let Some(view) = Icmpv6Packet::new(icmp) else {
            return false;
        };
        let sum = icmpv6::checksum(&view, &self.addr, &ALL_NODES);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        true
    }

    /// Reads a frame; `None` unless it is a valid unsolicited neighbour advertisement with
    /// Override set and a target link-layer address equal to the Ethernet source (checksum,
    /// hop limit 255 and code 0 checked as RFC 4861 §7.1.2 asks).
    pub fn parse(frame: &[u8]) -> Option<UnsolicitedNa> {
        let eth = EthernetPacket::new(frame)?;
        if eth.get_ethertype() != EtherTypes::Ipv6 {
            return None;
        }
        let ip = Ipv6Packet::new(eth.payload())?;
        if ip.get_version() != 6
            || ip.get_next_header() != IpNextHeaderProtocols::Icmpv6
            || ip.get_hop_limit() != HOP_LIMIT
        {
            return None;
        }
        let len = usize::from(ip.get_payload_length());
        let icmp = ip.payload().get(..len)?;
        let view = Icmpv6Packet::new(icmp)?;
        if view.get_icmpv6_type() != Icmpv6Types::NeighborAdvert
            || view.get_icmpv6_code() != Icmpv6Code(0)
            || view.get_checksum()
                != icmpv6::checksum(&view, &ip.get_source(), &ip.get_destination())
        {
            return None;
        }
        let na = NeighborAdvertPacket::new(icmp)?;
        let flags = na.get_flags();
        if flags & NeighborAdvertFlags::Solicited != 0 || flags & NeighborAdvertFlags::Override == 0
        {
            return None;
        }
        let mac: Mac = eth.get_source().octets();
        let has_tlla = na.get_options_iter().any(|o| {
            o.get_option_type() == NdpOptionTypes::TargetLLAddr
                && o.payload().get(..6) == Some(&mac)
        });
        if !has_tlla {
            return None;
        }
        Some(UnsolicitedNa {
            mac,
            addr: na.get_target_addr(),
            router: flags & NeighborAdvertFlags::Router != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("fixture is hex"))
            .collect()
    }

    /// keepalived's NA frames of the fixture with their summary line.
    fn fixture() -> Vec<(String, Vec<u8>)> {
        let text = include_str!("../tests/data/ipv6-frames.txt");
        let mut out = Vec::new();
        let mut summary: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("# Neighbor Advertisement ") {
                summary = Some(rest.to_string());
            } else if line.starts_with('#') || line.is_empty() {
                summary = None;
            } else if let Some(s) = summary.take() {
                out.push((s, hex(line)));
            }
        }
        out
    }

    fn field<'a>(summary: &'a str, key: &str) -> &'a str {
        let pat = format!(" {key}=");
        let at = summary.find(&pat).expect("field") + pat.len();
        summary[at..].split([' ', '|']).next().unwrap_or("")
    }

    #[test]
    fn keepalived_nas_decode_and_reencode() {
        let all = fixture();
        assert_eq!(all.len(), 5);
        for (s, bytes) in all {
            let na = UnsolicitedNa::parse(&bytes).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(na.addr.to_string(), field(&s, "target"), "{s}");
            assert_eq!(na.mac, bytes[6..12], "{s}");
            assert_eq!(na.router, field(&s, "flags") == "0xa0000000", "{s}");
            assert_eq!(na.to_frame()[..], bytes[..], "{s}");
            let mut poisoned = [0xa5u8; NA_LEN + 3];
            assert!(na.emit(&mut poisoned));
            assert_eq!(poisoned[..NA_LEN], bytes[..], "{s}");
            assert_eq!(
                poisoned[NA_LEN..],
                [0xa5; 3],
                "nothing written past the frame"
            );
        }
    }

    #[test]
    fn router_flag_and_fields() {
        let na = UnsolicitedNa {
            mac: [2, 0, 0, 0, 0, 1],
            addr: "2001:db8::100".parse().expect("addr"),
            router: true,
        };
        let f = na.to_frame();
        assert_eq!(f[..6], ALL_NODES_MAC);
        assert_eq!(f[14 + 7], 255, "hop limit");
        assert_eq!(f[14 + 24..14 + 40], ALL_NODES.octets());
        assert_eq!(f[14 + 40], 136, "type");
        assert_eq!(f[14 + 44], 0xa0, "R and O");
        assert_eq!(UnsolicitedNa::parse(&f), Some(na));
    }

    #[test]
    fn not_na_or_broken_is_none() {
        let (_, bytes) = fixture().remove(0);
        for n in 0..bytes.len() {
            assert_eq!(UnsolicitedNa::parse(&bytes[..n]), None, "len {n}");
        }
        let broken = |at: usize, x: u8| {
            let mut b = bytes.clone();
            b[at] ^= x;
            UnsolicitedNa::parse(&b)
        };
        assert_eq!(broken(14 + 7, 1), None, "hop limit 254");
        assert_eq!(broken(14 + 40 + 2, 1), None, "checksum");
        assert_eq!(
            broken(14 + 40 + 20, 1),
            None,
            "target changed, checksum stale"
        );
        assert_eq!(broken(14 + 40, 1), None, "type 137");
        assert_eq!(broken(12, 0x80), None, "not IPv6");
        // Solicited set (checksum refreshed): not an unsolicited advertisement.
        let mut sol = bytes.clone();
        sol[14 + 44] |= 0x40;
        sol[56..58].copy_from_slice(&[0, 0]);
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&sol[22..38]).expect("16 bytes"));
        let sum = icmpv6::checksum(
            &Icmpv6Packet::new(&sol[54..]).expect("icmp"),
            &src,
            &ALL_NODES,
        );
        sol[56..58].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(UnsolicitedNa::parse(&sol), None);
        sol[14 + 44] &= !0x40;
        assert!(UnsolicitedNa::parse(&sol).is_none(), "checksum now stale");
        assert!(!UnsolicitedNa {
            mac: [0; 6],
            addr: Ipv6Addr::LOCALHOST,
            router: false
        }
        .emit(&mut [0u8; NA_LEN - 1]));
    }
}
