//! VRRP for maas-vip: owns the virtual IPs of the MAAS region.
//!
//! # Layout
//! - [`config`]: the `[[vrrp]]` blocks of maas-vip.toml, and [`ValidVrrp`], a block that
//!   validated: what the driver runs.
//! - [`packet`]: the VRRP advertisement on the wire (v2, v3), checked views and values.
//! - [`auth_hmac`]: keepalived 2.4's HMAC-SHA256 advert trailer: signing, verifying, anti-replay,
//!   keys from files and systemd credentials.
//! - [`arp`]: gratuitous ARP frames.
//! - [`ndisc`]: unsolicited neighbour advertisements (the IPv6 gratuitous ARP).
//! - [`machine`]: the sans-IO state machine of RFC 3768 §6 (time in, actions out).
//! - [`run`]: the Linux driver: raw socket of protocol 112 (IPv4, or IPv6 with ancillary
//!   data), VIPs and link state through rtnetlink, gratuitous ARP and unsolicited neighbour
//!   advertisements through the datalink, track scripts, notify;
//!   [`run_with_updates`]: one instance that takes new configs while it runs (live reload).
//! - [`release_vips`]: removes the VIPs a dead maas-vip left (the unit's `ExecStopPost=`).
//!
//! This crate depends on neither the proxy nor the health checks: `track_backends` asks the
//! binary through a [`BackendsProbe`].
//!
//! # What it is not
//! - One family per instance: IPv4 (VRRPv2 or v3) or IPv6 (VRRPv3, RFC 9568), as keepalived.
//! - No virtual MAC (keepalived's `use_vmac`), no sync groups.
//! - Not a general keepalived: one `[[vrrp]]` block is one `vrrp_instance`, and what the MAAS
//!   guide uses is what is implemented.

pub mod arp;
pub mod auth_hmac;
pub mod config;
mod driver;
pub mod machine;
pub mod ndisc;
mod netlink;
pub mod packet;
mod release;
mod socket;
mod socket6;
mod sys;
mod track;

pub use config::{
    InitialState, InvalidVrrp, TrackBackends, TrackScript, ValidVrrp, Vip, VrrpConfig,
};
pub use driver::{run, run_with_updates, BackendsProbe, InstanceStatus, StatusBoard, VrrpError};
pub use netlink::ADDR_PROTO;
pub use release::{release_vips, Ownership, ReleaseError, Released};
pub use track::{resolve_user, spawn_track_script};
