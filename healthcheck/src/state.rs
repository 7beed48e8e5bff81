//! Shared per-server state: written by the checker and the proxy, read lock-free on the hot path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;

use crate::outcome::CheckReport;

/// What the health checks say of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Takes traffic.
    Up = 0,
    /// Ejected by failed checks.
    Down = 1,
}

/// What the operator says of a server (admin endpoint, `disabled` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Admin {
    /// Normal.
    Ready = 0,
    /// No new connections; established ones finish.
    Drain = 1,
    /// Out of service (`disabled = true` or a `disable` action).
    Maint = 2,
}

/// One server of one frontend. Cheap to read from any thread: every field is an atomic.
#[derive(Debug)]
pub struct ServerState {
    /// Name from the config.
    pub name: String,
    /// Address connections go to.
    pub address: SocketAddr,
    health: AtomicU8,
    admin: AtomicU8,
    /// Woken by passive observations so the checker re-checks at once.
    recheck: Notify,
    /// Last active check, for `/status` (never read by the proxy).
    last_check: ArcSwapOption<CheckReport>,
    /// Counters for `/status` and `/metrics`.
    pub counters: ServerCounters,
}

/// Monotonic counters of one server (relaxed atomics: they are statistics, not synchronisation).
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Connections (L4) or requests (L7) now in flight to this server.
    pub current: AtomicU64,
    /// Connections (L4) or requests (L7) sent to this server.
    pub total: AtomicU64,
    /// Bytes sent to the server.
    pub bytes_to_server: AtomicU64,
    /// Bytes sent back to clients from the server.
    pub bytes_from_server: AtomicU64,
    /// Connects that were refused, timed out or failed.
    pub connect_failures: AtomicU64,
    /// Connections reset or broken by the server mid-stream.
    pub resets: AtomicU64,
    /// Retries made after a failed connect to this server.
    pub retries: AtomicU64,
    /// Connections redispatched away from this server after a failed connect.
    pub redispatches: AtomicU64,
    /// Completed active checks.
    pub checks: AtomicU64,
    /// Failed active checks.
    pub check_failures: AtomicU64,
    /// Up/down transitions.
    pub transitions: AtomicU64,
}

impl ServerState {
    /// A server that starts up (as HAProxy's do) unless `disabled`.
    pub fn new(name: impl Into<String>, address: SocketAddr, disabled: bool) -> Self {
        ServerState {
            name: name.into(),
            address,
            health: AtomicU8::new(Health::Up as u8),
            admin: AtomicU8::new(if disabled { Admin::Maint } else { Admin::Ready } as u8),
            recheck: Notify::new(),
            last_check: ArcSwapOption::empty(),
            counters: ServerCounters::default(),
        }
    }

    /// True if new connections may go to this server: healthy and neither drained nor disabled.
    #[inline]
    pub fn is_available(&self) -> bool {
        self.health.load(Ordering::Relaxed) == Health::Up as u8
            && self.admin.load(Ordering::Relaxed) == Admin::Ready as u8
    }

    /// What the checks say.
    pub fn health(&self) -> Health {
        if self.health.load(Ordering::Relaxed) == Health::Up as u8 {
            Health::Up
        } else {
            Health::Down
        }
    }

    /// Set by the checker; returns the previous value.
    pub fn set_health(&self, h: Health) -> Health {
        let prev = self.health.swap(h as u8, Ordering::Relaxed);
        if prev != h as u8 {
            self.counters.transitions.fetch_add(1, Ordering::Relaxed);
        }
        if prev == Health::Up as u8 {
            Health::Up
        } else {
            Health::Down
        }
    }

    /// What the operator says.
    pub fn admin(&self) -> Admin {
        match self.admin.load(Ordering::Relaxed) {
            0 => Admin::Ready,
            1 => Admin::Drain,
            _ => Admin::Maint,
        }
    }

    /// Set by the admin endpoint or a reload.
    pub fn set_admin(&self, a: Admin) {
        self.admin.store(a as u8, Ordering::Relaxed);
    }

    /// The proxy saw a connect to this server fail: count it and ask for a re-check at once.
    pub fn observe_connect_failure(&self) {
        self.counters
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        self.recheck.notify_one();
    }

    /// The proxy saw the server reset or break a connection: count it and ask for a re-check.
    pub fn observe_reset(&self) {
        self.counters.resets.fetch_add(1, Ordering::Relaxed);
        self.recheck.notify_one();
    }

    /// The checker finished a check: count it and keep it for `/status`.
    pub fn record_check(&self, report: CheckReport) {
        self.counters.checks.fetch_add(1, Ordering::Relaxed);
        if !report.result.passed() {
            self.counters.check_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.last_check.store(Some(Arc::new(report)));
    }

    /// The last active check, if any ran.
    pub fn last_check(&self) -> Option<CheckReport> {
        self.last_check.load().as_deref().copied()
    }

    /// Resolves when the proxy has reported a failure since the last call (for the checker).
    pub async fn recheck_requested(&self) {
        self.recheck.notified().await
    }
}
