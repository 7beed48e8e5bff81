//! Health of the servers behind each frontend.
//!
//! # Layout
//! - [`config`]: the `check = { ... }` table and per-server [`CheckOverride`]s.
//! - [`state`]: [`ServerState`], one per server, shared by the checker (writes health), the proxy
//!   (reads availability lock-free, writes counters and passive observations) and the admin
//!   endpoint (reads everything, sets drain/disable).
//! - [`machine`]: the rise/fall state machine and check schedule of one server, sans-IO.
//! - [`passive`]: what the proxy reports of its exchanges, and ejection by consecutive errors.
//! - [`probe`]: the TCP and HTTP probes.
//! - [`postgres`]: the PostgreSQL probe (`kind = "postgres"`: a login, then the role: primary
//!   or standby, kept in [`ServerState::role`]).
//! - [`checker`]: the tokio tasks that run the probes and publish the results.
//! - [`registry`]: every frontend and its servers, swapped whole on reload.
//! - [`status`]: the `/status` view of them (Serialize and Deserialize: the daemon writes it,
//!   `maas-vip status` reads it).
//! - [`resolve`]: server addresses written as host names, resolved at start and re-resolved
//!   every `resolve_interval`.
//!
//! # Behaviour
//! Servers start up (as HAProxy's). A fully up server goes down after `fall` consecutive
//! failed checks; a down one comes back after `rise` consecutive good ones. While a server is
//! between the two it is checked every `fast_interval` (default: a quarter of `interval`, at
//! least 100ms), once down every `down_interval` (default: `interval`). Intervals are counted
//! from the start of a check and shortened by up to 10% at random so that servers drift
//! apart; first checks are spread over one interval. Each error the proxy reports (a refused
//! or failed connect, a reset, a timeout, an invalid response) makes the server's checker probe
//! it at once, at most every 100ms, so a region dying between two checks is ejected after
//! `fall` fast checks instead of `fall` intervals. `error_limit` errors in a row (10) take a
//! server down on the spot, checked or not (HAProxy's `observe layer4` with `on-error
//! mark-down`; see [`passive`]): a checked one comes back after `rise` good checks, one with
//! `check = false` is tried again after `error_retry`. `on_error = "recheck"` keeps only the
//! re-check. Servers drained or in maintenance are still checked, so `/status` tells whether
//! they may be enabled again.
//! A server may change its frontend's check with a [`CheckOverride`] (port, intervals,
//! timeout, rise, fall), as HAProxy's `server` lines do.
//!
//! # Use
//! ```no_run
//! # use std::sync::Arc;
//! # use healthcheck::*;
//! # async fn f() {
//! let r1 = Arc::new(ServerState::new("r1", "10.0.0.11:5240".parse().expect("literal"), false));
//! // The proxy gets the same `Arc<ServerState>`s and reads `is_available()`.
//! let registry = Arc::new(Registry::new(vec![CheckedFrontend::new(
//!     "maas",
//!     CheckConfig::default(),
//!     vec![Server::new(r1, true)],
//! )]));
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! let checks = healthcheck::spawn(&registry, shutdown);
//! assert_eq!(registry.any_available("maas"), Some(true)); // for VRRP track_backends
//! let json = registry.status_json(); // for GET /status
//! stop.send(true).ok();
//! checks.await.ok();
//! # }
//! ```
//!
//! This crate does not proxy anything and knows nothing of VRRP.

pub mod checker;
pub mod config;
pub mod machine;
pub mod outcome;
pub mod passive;
pub mod postgres;
pub mod probe;
pub mod registry;
pub mod resolve;
pub mod state;
pub mod status;

pub use checker::{spawn, spawn_frontend};
pub use config::{CheckConfig, CheckKind, CheckOverride, HttpMethod, OnError};
pub use outcome::{CheckReport, CheckResult, Progress};
pub use passive::{DownReason, Ejection, ProxyError};
pub use registry::{CheckedFrontend, Registry, Server, ServerSpec};
pub use resolve::{Resolution, Target};
pub use state::{Admin, Health, ServerCounters, ServerState};
