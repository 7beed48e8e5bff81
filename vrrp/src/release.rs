//! Removing the virtual addresses a dead maas-vip left behind (`maas-vip release-vips`, the
//! unit's `ExecStopPost=`).
//!
//! A maas-vip killed with SIGKILL cannot give its VIP up, and its kernel keeps the address: each
//! SYN a client sends there before the new master's gratuitous ARP reaches it is answered with
//! a reset ("connection refused"). With the address gone, those SYNs are dropped instead and the
//! client's TCP sends them again (after 1 s, 3 s, 7 s...), by when one reaches the new master:
//! a delay, not an error.
//!
//! Which addresses are maas-vip's: those it marked with [`ADDR_PROTO`] when it added them, on
//! any interface. An address anyone else added is never touched, the same VIP configured
//! statically included (maas-vip's add found it there and left it unmarked). Kernels older than
//! 5.18 drop the mark; there the VIPs of the config's `[[vrrp]]` instances are removed from
//! their interfaces (except for an address owner, priority 255), which is what the daemon
//! itself does to them at start.

use std::net::IpAddr;

use tracing::debug;

use crate::config::VrrpConfig;
use crate::netlink::{Addr, Netlink, ADDR_PROTO};
use crate::VrrpError;

/// An address removed by [`release_vips`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The interface it was on.
    pub interface: String,
    /// The address (IPv4 or IPv6).
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

/// How [`release_vips`] knew which addresses were maas-vip's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// By the address protocol maas-vip sets ([`ADDR_PROTO`]).
    Marked,
    /// The kernel keeps no address protocol (before 5.18): the config's VIPs.
    ConfigVips,
}

/// Why [`release_vips`] did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Netlink failed.
    #[error(transparent)]
    Netlink(#[from] VrrpError),
    /// This kernel keeps no address protocol and no config was given to fall back on.
    #[error(
        "this kernel ({0}) keeps no address protocol (Linux 5.18+), so the VIPs maas-vip added \
         can only be told by the config, and none could be read"
    )]
    NeedConfig(String),
}

/// Removes the virtual addresses maas-vip added in this network namespace (see the module
/// docs). `configs` is only needed on kernels older than 5.18. Meant for when no maas-vip runs:
/// run beside a live daemon, it takes the VIP from it.
pub async fn release_vips(
    configs: Option<&[VrrpConfig]>,
) -> Result<(Ownership, Vec<Released>), ReleaseError> {
    let release = kernel_release();
    let ownership = if keeps_addr_proto(&release) {
        Ownership::Marked
    } else {
        Ownership::ConfigVips
    };
    if ownership == Ownership::ConfigVips && configs.is_none() {
        return Err(ReleaseError::NeedConfig(release));
    }
    let nl = Netlink::new()?;
    let names = nl.link_names().await?;
    let name_of = |index: u32| {
        names
            .iter()
            .find(|(i, _)| *i == index)
            .map_or_else(|| format!("#{index}"), |(_, n)| n.clone())
    };
    let addrs = nl.all_addresses().await?;
    let mut out = Vec::new();
    for a in select(&addrs, ownership, configs.unwrap_or_default(), &name_of) {
        let interface = name_of(a.index);
        if nl.delete(a, &interface).await? {
            out.push(Released {
                interface,
                addr: a.addr,
                prefix: a.prefix,
            });
        } else {
            debug!(addr = %a.addr, "already gone");
        }
    }
    Ok((ownership, out))
}

/// The addresses to remove.
fn select<'a>(
    addrs: &'a [Addr],
    ownership: Ownership,
    configs: &[VrrpConfig],
    name_of: &dyn Fn(u32) -> String,
) -> Vec<&'a Addr> {
    addrs
        .iter()
        .filter(|a| match ownership {
            Ownership::Marked => a.proto == Some(ADDR_PROTO),
            Ownership::ConfigVips => configs.iter().any(|c| {
                *c.priority.get_ref() != 255
                    && *c.interface.get_ref() == name_of(a.index)
                    && c.virtual_ipaddresses
                        .get_ref()
                        .iter()
                        .any(|v| v.addr == a.addr)
            }),
        })
        .collect()
}

/// `uname -r`.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether a kernel of this release keeps `IFA_PROTO` (Linux 5.18 added it).
fn keeps_addr_proto(release: &str) -> bool {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (nums.next().flatten(), nums.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 18),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressProtocol};
    use netlink_packet_route::AddressFamily;

    use super::*;
    use std::net::Ipv4Addr;

    fn addr(index: u32, a: [u8; 4], proto: Option<u8>) -> Addr {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.index = index;
        m.header.prefix_len = 24;
        m.attributes
            .push(AddressAttribute::Local(Ipv4Addr::from(a).into()));
        if let Some(p) = proto {
            m.attributes
                .push(AddressAttribute::Protocol(AddressProtocol::Other(p)));
        }
        Addr::from_msg(m).expect("an address")
    }

    fn config(priority: u8) -> VrrpConfig {
        toml::from_str(&format!(
            "name = \"maas\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
             priority = {priority}\nvirtual_ipaddresses = [\"10.0.0.100/24\"]"
        ))
        .expect("parses")
    }

    #[test]
    fn what_is_released() {
        let name_of = |i: u32| {
            if i == 2 {
                "eth0".to_string()
            } else {
                "eth1".to_string()
            }
        };
        let addrs = [
            addr(2, [10, 0, 0, 11], None),                 // the host's own
            addr(2, [10, 0, 0, 100], Some(ADDR_PROTO)),    // a VIP maas-vip added
            addr(3, [10, 0, 0, 100], None),                // the same VIP, an admin's
            addr(3, [192, 168, 0, 100], Some(ADDR_PROTO)), // from an older config
            addr(2, [10, 0, 0, 12], Some(1)),              // another protocol's
        ];
        let picked = |o, c: &[VrrpConfig]| -> Vec<(u32, IpAddr)> {
            select(&addrs, o, c, &name_of)
                .iter()
                .map(|a| (a.index, a.addr))
                .collect()
        };
        assert_eq!(
            picked(Ownership::Marked, &[]),
            [
                (2, Ipv4Addr::new(10, 0, 0, 100).into()),
                (3, Ipv4Addr::new(192, 168, 0, 100).into())
            ],
            "marked ones only, on any interface"
        );
        assert_eq!(
            picked(Ownership::ConfigVips, &[config(150)]),
            [(2, Ipv4Addr::new(10, 0, 0, 100).into())],
            "without marks: the config's VIPs on the config's interface"
        );
        assert!(
            picked(Ownership::ConfigVips, &[config(255)]).is_empty(),
            "an address owner's VIPs are its own"
        );
    }

    #[test]
    fn kernels_from_5_18_keep_the_mark() {
        assert!(keeps_addr_proto("6.18.44-fc-v1045"));
        assert!(keeps_addr_proto("5.18.0"));
        assert!(keeps_addr_proto("6.1.0-28-amd64"));
        assert!(!keeps_addr_proto("5.15.0-126-generic"), "Ubuntu 22.04 GA");
        assert!(!keeps_addr_proto("4.19.0"));
        assert!(!keeps_addr_proto(""), "unknown: the config decides");
    }
}
