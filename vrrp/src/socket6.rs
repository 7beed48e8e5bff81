//! The raw IPv6 socket of protocol 112 for VRRPv3 over IPv6 (RFC 9568 §5.1.2), and
//! [`AdvertSocket`], which the driver uses for either family.
//!
//! Set up as keepalived does (keepalived/vrrp/vrrp.c `open_vrrp_read_socket`,
//! `open_vrrp_send_socket`): bound to the interface, ff02::12 joined there (multicast mode),
//! only joined groups delivered, multicast loop off, hop limit 255 for multicast and unicast,
//! traffic class 0xc0, and the received hop limit and destination as ancillary data
//! (IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO), since a raw IPv6 socket delivers no IPv6 header.
//!
//! Unlike keepalived, IPV6_CHECKSUM is not set: with it the kernel would drop adverts with a
//! bad checksum before we see them, and they could not be counted by reason. The checksum is
//! computed (with the pseudo-header of the source we put in IPV6_PKTINFO) and verified by
//! [`crate::packet`].

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn6,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::machine::RxMeta;
use crate::packet::{MULTICAST_V6, PROTOCOL};
use crate::socket::VrrpSocket;

/// The raw IPv6 socket, driven through tokio's datagram socket type as [`VrrpSocket`] is.
pub(crate) struct VrrpSocket6 {
    fd: UdpSocket,
    index: u32,
    src: Ipv6Addr,
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl VrrpSocket6 {
    pub(crate) fn open(
        iface: &str,
        index: u32,
        src: Ipv6Addr,
        multicast: bool,
    ) -> io::Result<VrrpSocket6> {
        let s = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(i32::from(PROTOCOL))),
        )?;
        s.bind_device(Some(iface.as_bytes()))?;
        s.set_multicast_loop_v6(false)?;
        // RFC 9568 §5.1.2.3: hop limit 255, multicast or not.
        s.set_multicast_hops_v6(255)?;
        s.set_unicast_hops_v6(255)?;
        s.set_tclass_v6(0xc0)?;
        s.set_multicast_all_v6(false)?;
        setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).map_err(nix_err)?;
        setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).map_err(nix_err)?;
        if multicast {
            s.set_multicast_if_v6(index)?;
            s.join_multicast_v6(&MULTICAST_V6, index)?;
        }
        s.set_nonblocking(true)?;
        Ok(VrrpSocket6 {
            fd: UdpSocket::from_std(std::net::UdpSocket::from(s))?,
            index,
            src,
        })
    }

    /// The source of our adverts (the interface's link-local address) changed.
    pub(crate) fn set_src(&mut self, src: Ipv6Addr) {
        self.src = src;
    }

    /// Sends one VRRP message (its checksum already filled for our source and `dst`) from our
    /// link-local address out of our interface.
    pub(crate) fn send(&self, dst: Ipv6Addr, vrrp: &[u8]) -> io::Result<()> {
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: self.src.octets(),
            },
            ipi6_ifindex: self.index,
        };
        let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, self.index));
        let fd = self.fd.as_raw_fd();
        self.fd.try_io(Interest::WRITABLE, || {
            sendmsg(
                fd,
                &[IoSlice::new(vrrp)],
                &[ControlMessage::Ipv6PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&to),
            )
            .map(|_| ())
            .map_err(nix_err)
        })
    }

    /// Next datagram: the header fields the receive checks need and the VRRP message.
    /// `None` when the hop limit or the destination did not come with it (then it cannot be
    /// checked, and is not used).
    pub(crate) async fn recv<'a>(
        &self,
        buf: &'a mut [u8],
    ) -> io::Result<Option<(RxMeta, &'a [u8])>> {
        let fd = self.fd.as_raw_fd();
        let mut cmsg = nix::cmsg_space!(libc::c_int, libc::in6_pktinfo);
        let (n, meta) = self
            .fd
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(buf)];
                let msg = recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
                    .map_err(nix_err)?;
                let src = msg.address.map(|a| a.ip());
                let (mut hops, mut dst) = (None, None);
                for c in msg.cmsgs().map_err(nix_err)? {
                    match c {
                        ControlMessageOwned::Ipv6HopLimit(h) => hops = u8::try_from(h).ok(),
                        ControlMessageOwned::Ipv6PacketInfo(i) => {
                            dst = Some(Ipv6Addr::from(i.ipi6_addr.s6_addr))
                        }
                        _ => {}
                    }
                }
                let meta = match (src, dst, hops) {
                    (Some(src), Some(dst), Some(ttl)) => Some(RxMeta {
                        src: IpAddr::V6(src),
                        dst: IpAddr::V6(dst),
                        ttl,
                    }),
                    _ => None,
                };
                Ok((msg.bytes, meta))
            })
            .await?;
        Ok(meta.map(|m| (m, &buf[..n])))
    }
}

/// The advert socket of one instance: IPv4 (our own IP header) or IPv6 (ancillary data).
pub(crate) enum AdvertSocket {
    V4(VrrpSocket),
    V6(VrrpSocket6),
}

impl AdvertSocket {
    /// Opens the socket of `src`'s family.
    pub(crate) fn open(
        iface: &str,
        index: u32,
        src: IpAddr,
        multicast: bool,
    ) -> io::Result<AdvertSocket> {
        Ok(match src {
            IpAddr::V4(s) => AdvertSocket::V4(VrrpSocket::open(iface, index, s, multicast)?),
            IpAddr::V6(s) => AdvertSocket::V6(VrrpSocket6::open(iface, index, s, multicast)?),
        })
    }

    /// A new source address (of the socket's family).
    pub(crate) fn set_src(&mut self, src: IpAddr, multicast: bool) -> io::Result<()> {
        match (self, src) {
            (AdvertSocket::V4(s), IpAddr::V4(a)) => s.set_src(a, multicast),
            (AdvertSocket::V6(s), IpAddr::V6(a)) => {
                s.set_src(a);
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "source address of the other family",
            )),
        }
    }

    /// Sends one VRRP message to `dst` (of the socket's family).
    pub(crate) fn send(&mut self, dst: IpAddr, vrrp: &[u8]) -> io::Result<()> {
        match (self, dst) {
            (AdvertSocket::V4(s), IpAddr::V4(d)) => s.send(d, vrrp),
            (AdvertSocket::V6(s), IpAddr::V6(d)) => s.send(d, vrrp),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "destination of the other family",
            )),
        }
    }

    /// Next advert with its header fields; `None` for a datagram that is not one we can check.
    pub(crate) async fn recv<'a>(
        &self,
        buf: &'a mut [u8],
    ) -> io::Result<Option<(RxMeta, &'a [u8])>> {
        match self {
            AdvertSocket::V4(s) => Ok(s.recv(buf).await?.map(|(m, p)| {
                (
                    RxMeta {
                        src: IpAddr::V4(m.src),
                        dst: IpAddr::V4(m.dst),
                        ttl: m.ttl,
                    },
                    p,
                )
            })),
            AdvertSocket::V6(s) => s.recv(buf).await,
        }
    }
}

/// The multicast destination of adverts of `src`'s family.
pub(crate) fn multicast_group(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => IpAddr::V4(crate::packet::MULTICAST_V4),
        IpAddr::V6(_) => IpAddr::V6(MULTICAST_V6),
    }
}

/// Sends `repeat` unsolicited neighbour advertisements for each address from the interface's
/// MAC, with the Router flag when the interface forwards IPv6, as keepalived does
/// (blocking: run it off the async threads).
pub(crate) fn send_nas(iface: &str, addrs: &[Ipv6Addr], repeat: u32) -> io::Result<usize> {
    let router = forwards_ipv6(iface);
    crate::socket::send_frames(iface, addrs, repeat, |mac, a| {
        crate::ndisc::UnsolicitedNa {
            mac,
            addr: *a,
            router,
        }
        .to_frame()
        .to_vec()
    })
}

/// `net.ipv6.conf.IFACE.forwarding` of the network namespace we run in (keepalived's
/// `set_ipv6_forwarding`); false when it cannot be read.
fn forwards_ipv6(iface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"))
        .map(|v| v.trim() != "0")
        .unwrap_or(false)
}
