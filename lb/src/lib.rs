//! The proxy of maas-vip: listeners, balancing, connect/retry/redispatch, the L4 copy loop and
//! the L7 (HTTP/1.1) proxy.
//!
//! # Layout
//! Data first, then what serves it; a module uses only those above it (no import cycles).
//! - [`config`]: the `[[frontend]]` blocks.
//! - [`balance`]: server pools and the pick (round robin, source hash, first).
//! - [`listener`]: binding, the accept loop and its admission control, local shortages.
//! - [`upstream`]: the server side of the http mode (requests out, responses in, idle pools).
//! - [`frontend`]: a running frontend's data: settings and pool of the current generation
//!   (swapped on reload), counters, connection limit. What both modes read.
//! - `attempts`: the connect attempts of a connection or request, without I/O (which server
//!   next, retry or redispatch, give up, retry counters), shared by both modes.
//! - [`l4`]: the tcp mode (connect, then the copy loop); [`l7`]: the http mode.
//! - `serve`: accepts a frontend's connections and hands each to [`l4`] or [`l7`].
//! - `uring`: the tcp mode on io_uring engine threads (top-level `io = "io_uring"`), beside
//!   [`l4`]'s epoll path; the same steps through `attempts` and [`l4`]'s counting and logging.
//! - [`workers`]: the worker threads the accept loops run on (and the io_uring engines).
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
mod uring;
pub mod workers;

pub use frontend::{Frontend, FrontendCounters, FrontendSnapshot, Settings};
pub use workers::{Heartbeats, Io, Workers};
