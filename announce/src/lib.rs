//! Announcing the region VIP by BGP through a routing daemon the site already runs, so that
//! every healthy host carries traffic (ECMP at the router) instead of one VRRP master.
//!
//! maas-vip speaks no BGP itself. It owns a VIP interface; the routing daemon (FRR) exports
//! the connected routes of that interface and nothing else; and announcing is switching the
//! interface's carrier on. The interface is a TUN device held open by this process, so the
//! kernel deletes it, and the daemon withdraws the route, whenever the process ends, SIGKILL
//! included: fate sharing without any code of ours having to run.
//!
//! # Layout
//! - [`decide`]: the sans-IO machine: given the health of the tracked frontends, track
//!   scripts, an operator's word and shutdown, whether to announce, why, since when; and the
//!   drain sequence (withdraw, `drain_delay`, close listeners).
//! - [`link`]: the VIP interface (TUN device, addresses, carrier) through rtnetlink.
//! - [`frr`]: reading back from FRR (`vtysh ... json`) what bgpd does with the VIPs and the
//!   state of its sessions.
//! - [`HostPrefix`]: a VIP as a /32 or /128.
//! - [`config`]: the `[[announce]]` block and the checks within it.
//!
//! # What it is not
//! - Not a BGP speaker and not an FRR configurator: the operator's FRR config says what is
//!   exported to whom (README, "Announcing the VIP by BGP"); this crate never writes it.
//! - Not the driver: the loop that feeds the machine with the health of the daemon's
//!   frontends and carries out its actions is the daemon's (daemon/src/announce.rs).

pub mod config;
pub mod decide;
pub mod frr;
pub mod link;
mod prefix;
mod sys;

pub use config::AnnounceConfig;
pub use decide::{Action, Announcer, Reason, State, Status, Timings};
pub use frr::{FrrError, Peer, RouteStatus, Vtysh};
pub use link::{LinkError, LinkState, VipLink};
pub use prefix::{HostPrefix, PrefixError};
