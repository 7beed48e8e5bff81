//! The proxy of maas-vip: listeners, balancing, connect/retry/redispatch, the L4 copy loop and
//! the L7 (HTTP/1.1) proxy.
//!
//! # Layout
//! - [`config`]: the `[[frontend]]` blocks.
//!
//! Server health comes from the `healthcheck` crate; this crate only reads it and reports
//! what it observes (failed connects, resets).

pub mod config;

pub use config::{Balance, FrontendConfig, Mode, OnDown, ServerConfig};
mod attempts;
pub mod balance;
pub mod frontend;
pub mod l4;
pub mod l7;
pub mod listener;
mod serve;
mod splice;
pub mod upstream;
pub mod workers;

pub use frontend::{Frontend, FrontendCounters, Settings, Snapshot};
pub use workers::{Heartbeats, Workers};
