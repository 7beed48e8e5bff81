//! VRRP for maas-vip: owns the virtual IPs of the MAAS region.
//!
//! # Layout
//! - [`config`]: the `[[vrrp]]` blocks of maas-vip.toml.
//!
//! This crate depends on neither the proxy nor the health checks.

pub mod config;

pub use config::{InitialState, TrackBackends, TrackScript, Vip, VrrpConfig};
