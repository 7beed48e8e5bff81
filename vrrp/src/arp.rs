//! Gratuitous ARP frames (RFC 5227 §3 "ARP Announcement"), as keepalived sends them on
//! becoming master: an ARP request, broadcast, with sender and target protocol address both the
//! virtual address and target hardware address ff:ff:ff:ff:ff:ff.

use std::net::Ipv4Addr;

use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::{MutablePacket as _, Packet as _};

/// Length of a gratuitous ARP frame without the Ethernet padding.
pub const GARP_LEN: usize = 14 + 28;

/// A MAC address.
pub type Mac = [u8; 6];

const BROADCAST: Mac = [0xff; 6];

/// The facts of a gratuitous ARP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Garp {
    /// Ethernet source and ARP sender hardware address.
    pub mac: Mac,
    /// The announced address (sender = target).
    pub addr: Ipv4Addr,
}

impl Garp {
    /// Builds the frame.
    pub fn to_frame(&self) -> [u8; GARP_LEN] {
        let mut buf = [0u8; GARP_LEN];
        self.emit(&mut buf);
        buf
    }

    /// Writes the frame into the first [`GARP_LEN`] bytes of `buf`; returns false if it is
    /// too short.
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        let Some(mut eth) = MutableEthernetPacket::new(buf) else {
            return false;
        };
        eth.set_destination(BROADCAST.into());
        eth.set_source(self.mac.into());
        eth.set_ethertype(EtherTypes::Arp);
        let Some(mut arp) = MutableArpPacket::new(eth.payload_mut()) else {
            return false;
        };
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(ArpOperations::Request);
        arp.set_sender_hw_addr(self.mac.into());
        arp.set_sender_proto_addr(self.addr);
        arp.set_target_hw_addr(BROADCAST.into());
        arp.set_target_proto_addr(self.addr);
        true
    }

    /// Reads a frame; `None` unless it is a gratuitous ARP (request or reply whose sender and
    /// target addresses are equal).
    pub fn parse(frame: &[u8]) -> Option<Garp> {
        let eth = EthernetPacket::new(frame)?;
        if eth.get_ethertype() != EtherTypes::Arp {
            return None;
        }
        let arp = ArpPacket::new(eth.payload())?;
        if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
            || arp.get_protocol_type() != EtherTypes::Ipv4
            || arp.get_hw_addr_len() != 6
            || arp.get_proto_addr_len() != 4
        {
            return None;
        }
        let op = arp.get_operation();
        if op != ArpOperations::Request && op != ArpOperations::Reply {
            return None;
        }
        let addr = arp.get_sender_proto_addr();
        if addr != arp.get_target_proto_addr() {
            return None;
        }
        Some(Garp {
            mac: arp.get_sender_hw_addr().octets(),
            addr,
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

    /// The keepalived GARP frames of the fixture with the address their summary names.
    fn fixture() -> Vec<(Ipv4Addr, Vec<u8>)> {
        let text = include_str!("../tests/data/vrrp-frames.txt");
        let mut out = Vec::new();
        let mut want: Option<Ipv4Addr> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# Gratuitous ARP for ") {
                want = rest.split(' ').next().and_then(|a| a.parse().ok());
            } else if line.starts_with('#') || line.trim().is_empty() {
                want = None;
            } else if let Some(a) = want.take() {
                out.push((a, hex(line.trim())));
            }
        }
        out
    }

    #[test]
    fn keepalived_garps_decode_and_reencode() {
        let all = fixture();
        assert_eq!(all.len(), 4);
        for (addr, bytes) in all {
            let g = Garp::parse(&bytes).expect("a gratuitous ARP");
            assert_eq!(g.addr, addr);
            assert_eq!(g.mac, bytes[6..12]);
            assert_eq!(g.to_frame()[..], bytes[..]);
            let mut poisoned = [0xa5u8; GARP_LEN];
            assert!(g.emit(&mut poisoned));
            assert_eq!(poisoned[..], bytes[..]);
        }
    }

    #[test]
    fn not_garp_or_short_is_none() {
        let (_, bytes) = fixture().remove(0);
        for n in 0..bytes.len() {
            assert_eq!(Garp::parse(&bytes[..n]), None, "len {n}");
        }
        let mut other_target = bytes.clone();
        other_target[41] ^= 1;
        assert_eq!(Garp::parse(&other_target), None);
        let mut ipv4 = bytes.clone();
        ipv4[13] = 0x00;
        assert_eq!(Garp::parse(&ipv4), None);
        assert!(!Garp {
            mac: [0; 6],
            addr: Ipv4Addr::LOCALHOST
        }
        .emit(&mut [0u8; 20]));
    }
}
