//! The raw IPv4 socket of protocol 112 that adverts go out and come in on, set up as
//! keepalived does: bound to the interface, joined to 224.0.0.18 there, multicast loop off,
//! and our own IP header (TOS 0xc0, TTL 255, source = the interface's primary address).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::packet::{self, Ipv4Meta, MULTICAST_V4, PROTOCOL};

/// The raw socket, driven by tokio's datagram socket type: recv(2) and sendto(2) are the
/// same calls for a raw socket, so no unsafe registration of our own is needed.
pub(crate) struct VrrpSocket {
    fd: UdpSocket,
    src: Ipv4Addr,
    id: u16,
}

impl VrrpSocket {
    pub(crate) fn open(
        iface: &str,
        index: u32,
        src: Ipv4Addr,
        multicast: bool,
    ) -> io::Result<VrrpSocket> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(PROTOCOL))),
        )?;
        s.set_header_included_v4(true)?;
        s.bind_device(Some(iface.as_bytes()))?;
        s.set_multicast_loop_v4(false)?;
        s.set_multicast_ttl_v4(255)?;
        s.set_ttl_v4(255)?;
        s.set_tos_v4(0xc0)?;
        // Only groups joined on this socket, not every group of the host.
        s.set_multicast_all_v4(false)?;
        if multicast {
            s.set_multicast_if_v4(&src)?;
            s.join_multicast_v4_n(&MULTICAST_V4, &InterfaceIndexOrAddress::Index(index))?;
        }
        s.set_nonblocking(true)?;
        Ok(VrrpSocket {
            fd: UdpSocket::from_std(std::net::UdpSocket::from(s))?,
            src,
            id: 0,
        })
    }

    /// The source address of our adverts (the interface's primary address) changed.
    pub(crate) fn set_src(&mut self, src: Ipv4Addr, multicast: bool) -> io::Result<()> {
        if multicast {
            socket2::SockRef::from(&self.fd).set_multicast_if_v4(&src)?;
        }
        self.src = src;
        Ok(())
    }

    /// Sends one VRRP message to `dst` inside an IPv4 header of ours.
    pub(crate) fn send(&mut self, dst: Ipv4Addr, vrrp: &[u8]) -> io::Result<()> {
        self.id = self.id.wrapping_add(1);
        let frame = packet::ipv4_frame(self.src, dst, self.id, vrrp);
        self.fd
            .try_send_to(&frame, SocketAddrV4::new(dst, 0).into())
            .map(|_| ())
    }

    /// Next datagram (IP header included) and its header fields; `None` if it is not a
    /// well-formed IPv4 packet of protocol 112.
    pub(crate) async fn recv<'a>(
        &self,
        buf: &'a mut [u8],
    ) -> io::Result<Option<(Ipv4Meta, &'a [u8])>> {
        let n = self.fd.recv(buf).await?;
        let b = &buf[..n];
        Ok(Ipv4Meta::parse(b)
            .filter(|m| m.protocol == PROTOCOL)
            .map(|m| (m, m.payload(b))))
    }
}

/// Sends `repeat` gratuitous ARP frames for each address, from the interface's MAC
/// (blocking: run it off the async threads).
pub(crate) fn send_garps(iface: &str, addrs: &[Ipv4Addr], repeat: u32) -> io::Result<usize> {
    send_frames(iface, addrs, repeat, |mac, a| {
        crate::arp::Garp { mac, addr: *a }.to_frame().to_vec()
    })
}

/// Sends `repeat` rounds of one link-layer frame per address, `frame(mac, addr)` built with
/// the interface's MAC; returns how many went out.
pub(crate) fn send_frames<A>(
    iface: &str,
    addrs: &[A],
    repeat: u32,
    frame: impl Fn(crate::arp::Mac, &A) -> Vec<u8>,
) -> io::Result<usize> {
    use pnet_datalink::Channel;
    let nic = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == iface)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {iface}")))?;
    let mac = nic.mac.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{iface} has no MAC address"),
        )
    })?;
    let config = pnet_datalink::Config {
        promiscuous: false,
        read_buffer_size: 256,
        ..Default::default()
    };
    let mut tx = match pnet_datalink::channel(&nic, config)? {
        Channel::Ethernet(tx, _rx) => tx,
        _ => return Err(io::Error::other("not an Ethernet channel")),
    };
    let mut sent = 0;
    for _ in 0..repeat {
        for a in addrs {
            let frame = frame(mac.octets(), a);
            match tx.send_to(&frame, None) {
                Some(Ok(())) => sent += 1,
                Some(Err(e)) => return Err(e),
                None => return Err(io::Error::other("datalink send buffer")),
            }
        }
    }
    Ok(sent)
}
