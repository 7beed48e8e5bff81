//! VRRP for maas-vip: owns the virtual IPs of the MAAS region.
//!
//! # Layout
//! - [`config`]: the `[[vrrp]]` blocks of maas-vip.toml.
//! - [`packet`]: the VRRP advertisement on the wire (v2, v3), checked views and values.
//! - [`arp`]: gratuitous ARP frames.
//!
//! This crate depends on neither the proxy nor the health checks.

pub mod arp;
pub mod config;
pub mod packet;

pub use config::{InitialState, TrackBackends, TrackScript, Vip, VrrpConfig};
