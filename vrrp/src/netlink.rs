//! Interface facts and virtual addresses through rtnetlink (never by running `ip`).

use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
    AddressScope,
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
    /// An address was removed.
    AddrDeleted(IpAddr),
    /// An address was added, or changed (an IPv6 one that finished duplicate address
    /// detection is announced again without its tentative flag).
    AddrAdded(IpAddr),
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

/// An address on an interface as netlink describes it.
#[derive(Debug, Clone)]
pub(crate) struct Addr {
    pub(crate) addr: IpAddr,
    pub(crate) prefix: u8,
    pub(crate) index: u32,
    pub(crate) secondary: bool,
    /// IPv6 duplicate address detection not finished (tentative) or failed (dadfailed, which
    /// the kernel reports together with tentative): not usable as a source.
    pub(crate) tentative: bool,
    /// Link scope: for IPv6, a link-local address (fe80::/10).
    pub(crate) link_scope: bool,
    /// `IFA_PROTO`, if the kernel has one for it.
    pub(crate) proto: Option<u8>,
    msg: AddressMessage,
}

impl Addr {
    /// From a netlink message: IPv4 and IPv6 addresses.
    pub(crate) fn from_msg(m: AddressMessage) -> Option<Addr> {
        if !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
            return None;
        }
        let addr = address_of(&m)?;
        let proto = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Protocol(p) => Some(u8::from(*p)),
            _ => None,
        });
        // IFA_FLAGS (32 bits) when the kernel sends it, else the header's 8.
        let flags = m
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Flags(f) => Some(*f),
                _ => None,
            })
            .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(m.header.flags.bits())));
        Some(Addr {
            addr,
            prefix: m.header.prefix_len,
            index: m.header.index,
            secondary: flags.contains(AddressFlags::Secondary),
            tentative: flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed),
            link_scope: m.header.scope == AddressScope::Link,
            proto,
            msg: m,
        })
    }
}

/// The address of a netlink address message: IFA_LOCAL, else IFA_ADDRESS (IPv6 sends only
/// the latter; on a point-to-point IPv4 link it is the peer's).
fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(a) => Some(*a),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(a) => Some(*a),
            _ => None,
        })
    })
}

/// The source of adverts among `addrs`, excluding `vips`: for IPv4 the primary address
/// (the first non-secondary one, else the first); for IPv6 the first link-local one (RFC
/// 9568 §5.1.2.1), as keepalived takes it. Tentative and DAD-failed addresses are skipped,
/// as keepalived's netlink filter does: the kernel would not send from them.
pub(crate) fn pick_source(addrs: &[Addr], vips: &[Vip], v6: bool) -> Option<IpAddr> {
    let theirs = || {
        addrs.iter().filter(move |a| {
            a.addr.is_ipv6() == v6 && !a.tentative && !vips.iter().any(|v| v.addr == a.addr)
        })
    };
    let found = if v6 {
        theirs().find(|a| a.link_scope || is_link_local_v6(a.addr))
    } else {
        theirs().find(|a| !a.secondary).or_else(|| theirs().next())
    };
    found.map(|a| a.addr)
}

/// fe80::/10.
pub(crate) fn is_link_local_v6(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
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

    /// Every address (IPv4 and IPv6) of every interface.
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

    /// The source of our adverts on the interface, of the family `v6` says (see
    /// [`pick_source`]): an address that is not one of `vips`.
    pub(crate) async fn primary(
        &self,
        index: u32,
        iface: &str,
        vips: &[Vip],
        v6: bool,
    ) -> Result<Option<IpAddr>, VrrpError> {
        let addrs = self.addresses(index, iface).await?;
        Ok(pick_source(&addrs, vips, v6))
    }

    /// Adds a virtual address, marked with [`ADDR_PROTO`]; already there is fine (and stays
    /// as it was: an address someone else added is not marked ours). An IPv6 one is added
    /// with `nodad`, as keepalived does: usable at once on takeover, and never left
    /// `dadfailed` by a peer that still holds it during a split brain (VRRP is the duplicate
    /// detection here).
    pub(crate) async fn add(&self, index: u32, iface: &str, vip: Vip) -> Result<(), VrrpError> {
        let mut req = self.handle.address().add(index, vip.addr, vip.prefix);
        let m = req.message_mut();
        m.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(
                ADDR_PROTO,
            )));
        if vip.addr.is_ipv6() {
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
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
        vip: IpAddr,
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

/// Follows link and address changes of interface `index` (like `ip monitor link address`).
pub(crate) fn monitor(index: u32) -> Result<mpsc::Receiver<LinkEvent>, VrrpError> {
    let (conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
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
            address_of(&a).map(LinkEvent::AddrDeleted)
        }
        RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
            address_of(&a).map(LinkEvent::AddrAdded)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::address::AddressHeader;

    fn addr(a: &str, scope: AddressScope, flags: AddressFlags) -> Addr {
        let ip: IpAddr = a.parse().expect("address");
        let mut msg = AddressMessage::default();
        msg.header = AddressHeader {
            family: if ip.is_ipv6() {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            },
            scope,
            ..Default::default()
        };
        msg.attributes.push(AddressAttribute::Address(ip));
        msg.attributes.push(AddressAttribute::Flags(flags));
        Addr::from_msg(msg).expect("an address")
    }

    fn vip(a: &str) -> Vip {
        Vip::parse(a).expect("vip")
    }

    #[test]
    fn ipv6_source_is_the_first_usable_link_local() {
        let none = AddressFlags::empty();
        let addrs = vec![
            addr("2001:db8::5", AddressScope::Universe, none),
            // A static link-local still in DAD, one whose DAD failed (the kernel keeps
            // tentative with dadfailed; dadfailed alone is refused too), then our own VIP.
            addr("fe80::5", AddressScope::Link, AddressFlags::Tentative),
            addr(
                "fe80::6",
                AddressScope::Link,
                AddressFlags::Tentative | AddressFlags::Dadfailed,
            ),
            addr("fe80::7", AddressScope::Link, AddressFlags::Dadfailed),
            addr("fe80::61", AddressScope::Link, AddressFlags::Nodad),
            addr(
                "fe80::8c8c:99ff:fe68:20f0",
                AddressScope::Link,
                AddressFlags::Permanent,
            ),
            addr("10.0.0.1", AddressScope::Universe, none),
        ];
        let vips = [vip("fe80::61/64"), vip("2001:db8::100/64")];
        assert_eq!(
            pick_source(&addrs, &vips, true),
            Some("fe80::8c8c:99ff:fe68:20f0".parse().expect("addr"))
        );
        // Only tentative ones left: no source (the instance waits, as for a missing IPv4).
        assert_eq!(pick_source(&addrs[..5], &vips, true), None);
        // The IPv4 rule is unchanged and never picks an IPv6 address.
        assert_eq!(
            pick_source(&addrs, &[], false),
            Some("10.0.0.1".parse().expect("addr"))
        );
    }

    #[test]
    fn ipv4_primary_skips_secondaries_and_vips() {
        let addrs = vec![
            addr("10.0.0.100", AddressScope::Universe, AddressFlags::empty()),
            addr("10.0.0.9", AddressScope::Universe, AddressFlags::Secondary),
            addr("10.0.0.1", AddressScope::Universe, AddressFlags::Permanent),
        ];
        assert_eq!(
            pick_source(&addrs, &[vip("10.0.0.100/24")], false),
            Some("10.0.0.1".parse().expect("addr"))
        );
        assert_eq!(
            pick_source(&addrs[..2], &[vip("10.0.0.100/24")], false),
            Some("10.0.0.9".parse().expect("addr"))
        );
    }
}
