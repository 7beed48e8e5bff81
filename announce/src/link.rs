//! The VIP interface: a TUN device that this process creates, holds open and so owns.
//!
//! Fate sharing comes from the kernel, not from any code of ours that might not run: a TUN
//! device that is not persistent exists only while a descriptor of it is open, so when the
//! process ends, however it ends (exit, SIGTERM, SIGKILL, a crash, the systemd watchdog's
//! SIGABRT), the kernel deletes the device with its addresses and routes, and the routing
//! daemon, which exports only the routes of this device, withdraws them at once.
//!
//! Announcing and withdrawing while the process lives is the carrier: carrier on, the routing
//! daemon sees the connected routes of the device and exports them; carrier off, it sees the
//! device down and withdraws them (FRR zebra does so for any interface; BIRD's `protocol
//! direct` with `check link yes`). The addresses stay on the device while it is withdrawn, so
//! the VIP stays local: connections that the router still sends during a drain, and the
//! established ones, keep working.

use std::fs::File;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkFlags, LinkMessage,
};
use rtnetlink::{Handle, LinkUnspec};

use crate::prefix::HostPrefix;
use crate::sys;

/// What failed while setting up or driving the VIP interface.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// `/dev/net/tun` could not be opened or the device not created.
    #[error("creating the VIP interface {iface}: {error}{hint}")]
    Create {
        iface: String,
        /// What the kernel said (in the message, not a `source`: printed once).
        error: std::io::Error,
        /// A sentence on the likely cause, or empty.
        hint: &'static str,
    },
    /// The rtnetlink socket could not be opened.
    #[error("opening an rtnetlink socket: {0}")]
    NetlinkSocket(std::io::Error),
    /// A netlink request failed.
    #[error("{what} on {iface}: {source}")]
    Netlink {
        /// What was asked.
        what: &'static str,
        iface: String,
        source: rtnetlink::Error,
    },
    /// The device vanished although we hold it (deleted by hand: `ip link del`).
    #[error("the VIP interface {0} is gone")]
    Gone(String),
}

/// The VIP interface as the kernel shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Administratively up.
    pub up: bool,
    /// Carrier on (the routing daemon sees the device running: announced).
    pub carrier: bool,
    /// The VIPs that are on the device.
    pub present: Vec<HostPrefix>,
    /// The configured VIPs that are not (removed by someone else).
    pub missing: Vec<HostPrefix>,
}

impl LinkState {
    /// Whether the routing daemon is being offered every VIP.
    pub fn offered(&self) -> bool {
        self.up && self.carrier && self.missing.is_empty()
    }
}

/// The VIP interface. Dropping it (or the process ending) deletes the device.
#[derive(Debug)]
pub struct VipLink {
    name: String,
    index: u32,
    vips: Vec<HostPrefix>,
    handle: Handle,
    // Declared last: dropped after everything else, and with it the device.
    _tun: File,
}

impl VipLink {
    /// Creates the device `name` with `vips` on it, up but withdrawn (carrier off): the
    /// routing daemon sees nothing to export until [`announce`](Self::announce).
    /// Fails with `EBUSY` (and a hint) when an interface of that name exists.
    /// Needs CAP_NET_ADMIN and `/dev/net/tun`. Call from a tokio runtime.
    pub async fn create(name: &str, vips: &[HostPrefix]) -> Result<VipLink, LinkError> {
        let tun = sys::create_tun(name).map_err(|error| {
            let hint = match error.raw_os_error() {
                Some(libc::EBUSY) => {
                    " (an interface of that name exists: another maas-vip, or a device left by hand)"
                }
                Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
                    " (no /dev/net/tun: load the tun module; under systemd allow the device, see DeviceAllow=)"
                }
                Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
                Some(libc::EACCES) => {
                    " (/dev/net/tun must be readable and writable by this user: its mode, or DeviceAllow=/dev/net/tun rw under systemd)"
                }
                _ => "",
            };
            LinkError::Create {
                iface: name.to_string(),
                error,
                hint,
            }
        })?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::NetlinkSocket)?;
        tokio::spawn(conn);
        let mut link = VipLink {
            name: name.to_string(),
            index: 0,
            vips: vips.to_vec(),
            handle,
            _tun: tun,
        };
        link.index = link.get().await?.header.index;
        link.configure().await?;
        Ok(link)
    }

    async fn configure(&self) -> Result<(), LinkError> {
        // No IPv6 link-local address: the device carries VIPs only, and nothing should try
        // to send through it (router solicitations, MLD). Best effort: a kernel booted with
        // ipv6.disable=1 refuses the attribute.
        let no_ll = LinkUnspec::new_with_index(self.index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        if let Err(e) = self.handle.link().set(no_ll).execute().await {
            tracing::debug!(iface = %self.name, cause = %e, "addrgenmode none refused");
        }
        // Carrier off before up and before the addresses: the routing daemon never sees a
        // running device with VIPs before we decide to announce.
        self.set_carrier(false).await?;
        let up = LinkUnspec::new_with_index(self.index).up().build();
        self.handle
            .link()
            .set(up)
            .execute()
            .await
            .map_err(self.nl_err("setting the interface up"))?;
        self.add_missing(&self.vips).await
    }

    async fn add_missing(&self, vips: &[HostPrefix]) -> Result<(), LinkError> {
        for vip in vips {
            let mut req = self
                .handle
                .address()
                .add(self.index, vip.addr(), vip.prefix_len());
            if vip.is_ipv6() {
                // No duplicate address detection, so the VIP is never tentative (unusable),
                // withdrawn or not. The kernel already skips DAD on a NOARP device such as a
                // TUN; the flag says so rather than relying on it.
                req.message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            match req.execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::EEXIST => {}
                Err(e) => return Err(self.nl_err("adding a VIP")(e)),
            }
        }
        Ok(())
    }

    fn nl_err(&self, what: &'static str) -> impl FnOnce(rtnetlink::Error) -> LinkError + '_ {
        move |source| LinkError::Netlink {
            what,
            iface: self.name.clone(),
            source,
        }
    }

    async fn get(&self) -> Result<LinkMessage, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(self.name.clone())
            .execute();
        match links.try_next().await {
            Ok(Some(m)) if self.index == 0 || m.header.index == self.index => Ok(m),
            Ok(_) => Err(LinkError::Gone(self.name.clone())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => {
                Err(LinkError::Gone(self.name.clone()))
            }
            Err(e) => Err(self.nl_err("reading the interface")(e)),
        }
    }

    async fn set_carrier(&self, on: bool) -> Result<(), LinkError> {
        let msg = LinkUnspec::new_with_index(self.index).carrier(on).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(self.nl_err(if on {
                "announcing (carrier on)"
            } else {
                "withdrawing (carrier off)"
            }))
    }

    /// Offers the VIPs to the routing daemon (carrier on), putting back any VIP that someone
    /// removed from the device.
    pub async fn announce(&self) -> Result<(), LinkError> {
        let state = self.state().await?;
        self.add_missing(&state.missing).await?;
        self.set_carrier(true).await
    }

    /// Withdraws the VIPs from the routing daemon (carrier off); they stay local.
    pub async fn withdraw(&self) -> Result<(), LinkError> {
        self.set_carrier(false).await
    }

    /// The device as the kernel shows it.
    pub async fn state(&self) -> Result<LinkState, LinkError> {
        let link = self.get().await?;
        let flags = link.header.flags;
        let carrier = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Carrier(c) => Some(*c != 0),
                _ => None,
            })
            .unwrap_or(flags.contains(LinkFlags::LowerUp));
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute()
            .try_collect()
            .await
            .map_err(self.nl_err("listing addresses"))?;
        let on_link: Vec<IpAddr> = addrs
            .iter()
            .filter(|m| m.header.index == self.index)
            .filter_map(|m| {
                m.attributes
                    .iter()
                    .find_map(|a| match a {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    })
                    .or_else(|| {
                        m.attributes.iter().find_map(|a| match a {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })
            })
            .collect();
        let (present, missing) = self.vips.iter().partition(|v| on_link.contains(&v.addr()));
        Ok(LinkState {
            up: flags.contains(LinkFlags::Up),
            carrier,
            present,
            missing,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel's interface index (`ifindex`), for netlink requests.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The VIPs it carries.
    pub fn vips(&self) -> &[HostPrefix] {
        &self.vips
    }
}
