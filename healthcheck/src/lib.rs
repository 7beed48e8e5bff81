//! Health of the servers behind each frontend.
//!
//! # Layout
//! - [`config`]: the `check = { ... }` table.
//! - [`state`]: [`ServerState`], one per server, shared by the checker (writes health), the proxy
//!   (reads availability lock-free, writes counters and passive observations) and the admin
//!   endpoint (reads everything, sets drain/disable).
//!
//! This crate does not proxy anything and knows nothing of VRRP.

pub mod config;
pub mod state;

pub use config::{CheckConfig, CheckKind};
pub use state::{Admin, Health, ServerCounters, ServerState};
