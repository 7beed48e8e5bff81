//! VRRP for maas-vip: owns the virtual IPs of the MAAS region.
//!
//! # Layout
//! - [`config`]: the `[[vrrp]]` blocks of maas-vip.toml.
//! - [`packet`]: the VRRP advertisement on the wire (v2, v3), checked views and values.
//! - [`arp`]: gratuitous ARP frames.
//! - [`machine`]: the sans-IO state machine of RFC 3768 §6.
//!
//! This crate depends on neither the proxy nor the health checks.

pub mod arp;
pub mod config;
pub mod machine;
pub mod packet;

pub use config::{InitialState, TrackBackends, TrackScript, Vip, VrrpConfig};
