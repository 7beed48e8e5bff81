//! Interface facts and virtual addresses through rtnetlink (never by running `ip`).

use std::net::{IpAddr, Ipv4Addr};

use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressProtocol,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::mpsc;

use crate::config::Vip;
use crate::VrrpError;

/// What the monitor reports about one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    /// Admin or carrier state changed (or was re-announced).
    Link {
        /// Up and running.
        up: bool,
    },
    /// An IPv4 address was removed.
    AddrDeleted(Ipv4Addr),
    /// An IPv4 address was added.
    AddrAdded(Ipv4Addr),
    /// The interface was deleted (or moved to another namespace): its index is gone for good.
    Gone,
}

/// A link's state and identity.
#[derive(Debug, Clone)]
pub(crate) struct LinkInfo {
    pub(crate) index: u32,
    pub(crate) up: bool,
}

/// The address protocol (`IFA_PROTO`, Linux 5.18+) maas-vip sets on every virtual address it
/// adds, so that what it added can be told from an administrator's addresses (the same VIP
/// configured statically among them) after it died: see [`crate::release_vips`]. `ip addr`
/// (iproute2 6.4+) shows it as `proto 0x6d`.
pub const ADDR_PROTO: u8 = 0x6d;

/// An IPv4 address on an interface as netlink describes it.
#[derive(Debug, Clone)]
pub(crate) struct Addr {
    pub(crate) addr: Ipv4Addr,
    pub(crate) prefix: u8,
    pub(crate) index: u32,
    pub(crate) secondary: bool,
    /// `IFA_PROTO`, if the kernel has one for it.
    pub(crate) proto: Option<u8>,
    msg: AddressMessage,
}

impl Addr {
    /// From a netlink message: IPv4 addresses only.
    pub(crate) fn from_msg(m: AddressMessage) -> Option<Addr> {
        if m.header.family != AddressFamily::Inet {
            return None;
        }
        let find = |local: bool| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(a)) if local => Some(*a),
                AddressAttribute::Address(IpAddr::V4(a)) if !local => Some(*a),
                _ => None,
            })
        };
        let addr = find(true).or_else(|| find(false))?;
        let proto = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Protocol(p) => Some(u8::from(*p)),
            _ => None,
        });
        Some(Addr {
            addr,
            prefix: m.header.prefix_len,
            index: m.header.index,
            secondary: m.header.flags.contains(AddressHeaderFlags::Secondary),
            proto,
            msg: m,
        })
    }
}

fn link_up(msg: &LinkMessage) -> bool {
    let f = msg.header.flags;
    f.contains(LinkFlags::Up) && (f.contains(LinkFlags::Running) || f.contains(LinkFlags::LowerUp))
}

fn nl_err<'a>(
    what: &'static str,
    iface: &'a str,
) -> impl FnOnce(rtnetlink::Error) -> VrrpError + 'a {
    move |source| VrrpError::Netlink {
        what,
        iface: iface.to_string(),
        source,
    }
}

/// Requests on one rtnetlink socket.
#[derive(Clone)]
pub(crate) struct Netlink {
    handle: Handle,
}

impl Netlink {
    pub(crate) fn new() -> Result<Netlink, VrrpError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(VrrpError::NetlinkSocket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub(crate) async fn link(&self, name: &str) -> Result<LinkInfo, VrrpError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(LinkInfo {
                index: msg.header.index,
                up: link_up(&msg),
            }),
            Ok(None) => Err(VrrpError::NoInterface(name.to_string())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => {
                Err(VrrpError::NoInterface(name.to_string()))
            }
            Err(e) => Err(nl_err("reading the interface", name)(e)),
        }
    }

    pub(crate) async fn addresses(&self, index: u32, iface: &str) -> Result<Vec<Addr>, VrrpError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl_err("listing addresses", iface))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index)
            .filter_map(Addr::from_msg)
            .collect())
    }

    /// Every IPv4 address of every interface.
    pub(crate) async fn all_addresses(&self) -> Result<Vec<Addr>, VrrpError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl_err("listing addresses", "every interface"))?;
        Ok(msgs.into_iter().filter_map(Addr::from_msg).collect())
    }

    /// The names of the interfaces, by index.
    pub(crate) async fn link_names(&self) -> Result<Vec<(u32, String)>, VrrpError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl_err("listing interfaces", "every interface"))?;
        Ok(links
            .into_iter()
            .filter_map(|l| {
                let name = l.attributes.iter().find_map(|a| match a {
                    netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })?;
                Some((l.header.index, name))
            })
            .collect())
    }

    /// Deletes one address as listed; already gone is fine.
    pub(crate) async fn delete(&self, a: &Addr, iface: &str) -> Result<bool, VrrpError> {
        match self.handle.address().del(a.msg.clone()).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code().abs() == libc::EADDRNOTAVAIL
                    || e.raw_code().abs() == libc::ENODEV =>
            {
                Ok(false)
            }
            Err(e) => Err(nl_err("removing a virtual address", iface)(e)),
        }
    }

    /// The interface's primary IPv4 address: the first non-secondary one that is not one of
    /// ours.
    pub(crate) async fn primary(
        &self,
        index: u32,
        iface: &str,
        vips: &[Vip],
    ) -> Result<Option<Ipv4Addr>, VrrpError> {
        let addrs = self.addresses(index, iface).await?;
        let theirs = || {
            addrs
                .iter()
                .filter(|a| !vips.iter().any(|v| v.addr == a.addr))
        };
        Ok(theirs()
            .find(|a| !a.secondary)
            .or_else(|| theirs().next())
            .map(|a| a.addr))
    }

    /// Adds a virtual address, marked with [`ADDR_PROTO`]; already there is fine (and stays
    /// as it was: an address someone else added is not marked ours).
    pub(crate) async fn add(&self, index: u32, iface: &str, vip: Vip) -> Result<(), VrrpError> {
        let mut req = self
            .handle
            .address()
            .add(index, IpAddr::V4(vip.addr), vip.prefix);
        req.message_mut()
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(
                ADDR_PROTO,
            )));
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::EEXIST => Ok(()),
            Err(e) => Err(nl_err("adding a virtual address", iface)(e)),
        }
    }

    /// Removes every copy of `vip` (any prefix) from the interface; returns how many.
    pub(crate) async fn remove(
        &self,
        index: u32,
        iface: &str,
        vip: Ipv4Addr,
    ) -> Result<usize, VrrpError> {
        let mut n = 0;
        for a in self.addresses(index, iface).await? {
            if a.addr == vip && self.delete(&a, iface).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Follows link and IPv4 address changes of interface `index` (like `ip monitor link address`).
pub(crate) fn monitor(index: u32) -> Result<mpsc::Receiver<LinkEvent>, VrrpError> {
    let (conn, _handle, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr])
            .map_err(VrrpError::NetlinkSocket)?;
    let conn = tokio::spawn(conn);
    let (tx, rx) = mpsc::channel(64);
    // Lives as long as `rx`: once the instance drops it, the netlink socket closes at once
    // (not at the next netlink event, which on a quiet host may never come).
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = tx.closed() => break,
                m = messages.next() => match m {
                    Some((msg, _)) => msg,
                    None => break,
                },
            };
            let Some(ev) = link_event(index, msg.payload) else {
                continue;
            };
            if tx.send(ev).await.is_err() {
                break;
            }
        }
        conn.abort();
    });
    Ok(rx)
}

/// What a netlink message says about interface `index`, if anything.
fn link_event(index: u32, payload: NetlinkPayload<RouteNetlinkMessage>) -> Option<LinkEvent> {
    let NetlinkPayload::InnerMessage(m) = payload else {
        return None;
    };
    match m {
        RouteNetlinkMessage::NewLink(l) if l.header.index == index => {
            Some(LinkEvent::Link { up: link_up(&l) })
        }
        RouteNetlinkMessage::DelLink(l) if l.header.index == index => Some(LinkEvent::Gone),
        RouteNetlinkMessage::DelAddress(a) if a.header.index == index => {
            ipv4_of(&a).map(LinkEvent::AddrDeleted)
        }
        RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
            ipv4_of(&a).map(LinkEvent::AddrAdded)
        }
        _ => None,
    }
}

fn ipv4_of(m: &AddressMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) => {
            Some(*a)
        }
        _ => None,
    })
}
