//! Shared per-server state: written by the checker and the proxy, read lock-free on the hot path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{watch, Notify};

use crate::outcome::CheckReport;
use crate::passive::{DownReason, Ejection, ProxyError};
use crate::postgres::Role;
use crate::resolve::{Resolution, Target};

/// Values of [`ServerState`]'s `health`: up, or down and why. Only 0 takes traffic, so the hot
/// path compares with one constant.
const UP: u8 = 0;
const DOWN_BY_CHECKS: u8 = 1;
const DOWN_BY_ERRORS: u8 = 2;

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
    /// Takes new connections when its health allows.
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
    /// The address as the config writes it: an IP address or a host name, with the port.
    target: Target,
    /// Where connections and checks go now (a name's last resolution).
    resolution: ArcSwap<Resolution>,
    /// Whether `resolution` has an address: read on the hot path instead of the `ArcSwap`.
    resolved: AtomicBool,
    /// [`UP`], [`DOWN_BY_CHECKS`] or [`DOWN_BY_ERRORS`].
    health: AtomicU8,
    admin: AtomicU8,
    /// Woken by passive observations so the checker re-checks at once (and sees an ejection).
    recheck: Notify,
    /// Last active check, for `/status` (never read by the proxy).
    last_check: ArcSwapOption<CheckReport>,
    /// Proxy errors in a row; any exchange that goes well sets it back to 0.
    consecutive_errors: AtomicU32,
    /// Consecutive errors that take the server down; 0: never (`on_error = "recheck"`). Set
    /// by the checker from the config.
    error_limit: AtomicU32,
    /// The last time errors took the server down, for the log, `/status` and the timed retry.
    last_ejection: ArcSwapOption<Ejection>,
    /// The role a postgres check last saw: 0 none yet, else [`Role`] + 1.
    role: AtomicU8,
    /// Counts the times the server went down, so that connections to it can be cut
    /// (`on_down = "shutdown_sessions"`) without polling.
    downs: watch::Sender<u64>,
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
    /// Connections reset or broken by the server mid-stream (in http mode also invalid
    /// responses and closes before one).
    pub resets: AtomicU64,
    /// Connections (L4) or requests (L7) on which the server made no progress for
    /// `timeout_server`.
    pub timeouts: AtomicU64,
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
    /// Times `error_limit` consecutive proxy errors took the server down.
    pub ejections: AtomicU64,
    /// Times a postgres check found the server in another role than the check before
    /// (a promotion, or a primary come back as a standby).
    pub role_changes: AtomicU64,
    /// Established connections cut because the server went down (`on_down =
    /// "shutdown_sessions"`).
    pub sessions_cut: AtomicU64,
}

impl ServerState {
    /// A server at a fixed address that starts up (as HAProxy's do) unless `disabled`.
    pub fn new(name: impl Into<String>, address: SocketAddr, disabled: bool) -> Self {
        Self::with_target(name, Target::Addr(address), disabled)
    }

    /// A server at `target`; a host name has no address until [`ServerState::set_resolution`]
    /// gives it one (see [`crate::resolve`]).
    pub fn with_target(name: impl Into<String>, target: Target, disabled: bool) -> Self {
        let resolution = match &target {
            Target::Addr(a) => Resolution::fixed(*a),
            Target::Name { .. } => Resolution::pending(),
        };
        ServerState {
            name: name.into(),
            resolved: AtomicBool::new(resolution.address.is_some()),
            resolution: ArcSwap::from_pointee(resolution),
            target,
            health: AtomicU8::new(UP),
            admin: AtomicU8::new(if disabled { Admin::Maint } else { Admin::Ready } as u8),
            recheck: Notify::new(),
            last_check: ArcSwapOption::empty(),
            consecutive_errors: AtomicU32::new(0),
            error_limit: AtomicU32::new(crate::CheckConfig::default().error_limit),
            last_ejection: ArcSwapOption::empty(),
            role: AtomicU8::new(0),
            downs: watch::Sender::new(0),
            counters: ServerCounters::default(),
        }
    }

    /// True if new connections may go to this server: healthy, neither drained nor disabled,
    /// and with an address.
    #[inline]
    pub fn is_available(&self) -> bool {
        self.health.load(Ordering::Relaxed) == UP
            && self.admin.load(Ordering::Relaxed) == Admin::Ready as u8
            && self.resolved.load(Ordering::Relaxed)
    }

    /// The address as the config writes it.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Where connections and checks go now; `None` while a host name has no address.
    #[inline]
    pub fn address(&self) -> Option<SocketAddr> {
        self.resolution.load().address
    }

    /// The last resolution of the name (for an IP address: that address, fixed).
    pub fn resolution(&self) -> Resolution {
        Resolution::clone(&self.resolution.load())
    }

    /// Publishes a new resolution; returns whether the address changed (the checker then
    /// checks the new one at once). Ignored for a fixed address.
    pub fn set_resolution(&self, r: Resolution) -> bool {
        if matches!(self.target, Target::Addr(_)) {
            return false;
        }
        let changed = self.resolution.load().address != r.address;
        self.resolved.store(r.address.is_some(), Ordering::Relaxed);
        self.resolution.store(Arc::new(r));
        if changed {
            self.recheck.notify_one();
        }
        changed
    }

    /// What the checks (or the proxy's errors) say.
    pub fn health(&self) -> Health {
        if self.health.load(Ordering::Relaxed) == UP {
            Health::Up
        } else {
            Health::Down
        }
    }

    /// Why the server is down for `/status` and metrics; `None` while up. A host name without
    /// an address is down whatever its checks say, so that comes first.
    pub fn why_down(&self) -> Option<DownReason> {
        if !self.resolved.load(Ordering::Relaxed) {
            return Some(DownReason::Unresolved);
        }
        self.down_reason()
    }

    /// Why the checks or the proxy's errors put the server down; `None` while they say up
    /// (see [`ServerState::why_down`] for the resolution too).
    pub fn down_reason(&self) -> Option<DownReason> {
        match self.health.load(Ordering::Relaxed) {
            UP => None,
            DOWN_BY_ERRORS => Some(DownReason::Errors),
            _ => Some(DownReason::Check),
        }
    }

    /// Set by the checker (down: by checks); returns the previous value. Coming up starts the
    /// error count again.
    pub fn set_health(&self, h: Health) -> Health {
        let new = match h {
            Health::Up => UP,
            Health::Down => DOWN_BY_CHECKS,
        };
        let prev = self.health.swap(new, Ordering::Relaxed);
        if (prev == UP) != (new == UP) {
            self.counters.transitions.fetch_add(1, Ordering::Relaxed);
            if new == UP {
                self.consecutive_errors.store(0, Ordering::Relaxed);
            } else {
                self.downs.send_modify(|n| *n += 1);
            }
        }
        if prev == UP {
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

    /// The proxy saw this server fail: count it, take the server down if that makes
    /// `error_limit` errors in a row, and ask for a re-check at once. Returns the ejection if
    /// this call made it.
    pub fn observe_error(&self, e: ProxyError) -> Option<Ejection> {
        let c = &self.counters;
        match e {
            _ if e.is_connect() => &c.connect_failures,
            ProxyError::Timeout => &c.timeouts,
            _ => &c.resets,
        }
        .fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.error_limit.load(Ordering::Relaxed);
        let ejected = (limit != 0
            && n >= limit
            && self
                .health
                .compare_exchange(UP, DOWN_BY_ERRORS, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok())
        .then(|| {
            // Errors of exchanges still in flight count towards the next ejection only.
            self.consecutive_errors.store(0, Ordering::Relaxed);
            c.transitions.fetch_add(1, Ordering::Relaxed);
            c.ejections.fetch_add(1, Ordering::Relaxed);
            let ej = Ejection {
                errors: n,
                last: e,
                at: SystemTime::now(),
                since: tokio::time::Instant::now(),
            };
            self.last_ejection.store(Some(Arc::new(ej)));
            self.downs.send_modify(|n| *n += 1);
            ej
        });
        self.recheck.notify_one();
        ejected
    }

    /// The proxy finished an exchange with this server that went well: errors in a row start
    /// from 0 again. One relaxed load when there were none (the usual case).
    #[inline]
    pub fn observe_success(&self) {
        if self.consecutive_errors.load(Ordering::Relaxed) != 0 {
            self.consecutive_errors.store(0, Ordering::Relaxed);
        }
    }

    /// Proxy errors in a row now.
    pub fn consecutive_errors(&self) -> u32 {
        self.consecutive_errors.load(Ordering::Relaxed)
    }

    /// Consecutive errors that take the server down (`None`: never). Set by the checker from
    /// the frontend's check and the server's override.
    pub fn set_error_limit(&self, limit: Option<u32>) {
        self.error_limit
            .store(limit.unwrap_or(0), Ordering::Relaxed);
    }

    /// See [`ServerState::set_error_limit`].
    pub fn error_limit(&self) -> Option<u32> {
        Some(self.error_limit.load(Ordering::Relaxed)).filter(|l| *l != 0)
    }

    /// The last time errors took the server down, if ever.
    pub fn last_ejection(&self) -> Option<Ejection> {
        self.last_ejection.load().as_deref().copied()
    }

    /// The timed retry of a server without checks: back in rotation if errors had taken it
    /// down, on probation (its next error takes it down again). Returns whether it was down
    /// by errors.
    pub fn retry_after_errors(&self) -> bool {
        if self
            .health
            .compare_exchange(DOWN_BY_ERRORS, UP, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.counters.transitions.fetch_add(1, Ordering::Relaxed);
        let limit = self.error_limit.load(Ordering::Relaxed);
        self.consecutive_errors
            .store(limit.saturating_sub(1), Ordering::Relaxed);
        true
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

    /// A receiver that sees a change each time the server goes down (by checks or by
    /// errors) from now on: a connection that should not outlive its server waits on it.
    pub fn down_signal(&self) -> watch::Receiver<u64> {
        self.downs.subscribe()
    }

    /// A postgres check saw the server in `role`: keep it, and count a change from the role
    /// seen before (the first sighting is no change). Returns the role seen before.
    pub fn record_role(&self, role: Role) -> Option<Role> {
        let new = match role {
            Role::Primary => 1,
            Role::Standby => 2,
        };
        let prev = self.role.swap(new, Ordering::Relaxed);
        if prev != 0 && prev != new {
            self.counters.role_changes.fetch_add(1, Ordering::Relaxed);
        }
        role_of(prev)
    }

    /// The role a postgres check last saw the server in; `None` before any did.
    pub fn role(&self) -> Option<Role> {
        role_of(self.role.load(Ordering::Relaxed))
    }

    /// Resolves when the proxy has reported a failure since the last call (for the checker).
    pub async fn recheck_requested(&self) {
        self.recheck.notified().await
    }
}

fn role_of(v: u8) -> Option<Role> {
    match v {
        1 => Some(Role::Primary),
        2 => Some(Role::Standby),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ServerState {
        ServerState::new("r1", SocketAddr::from(([10, 0, 0, 11], 5240)), false)
    }

    #[test]
    fn only_errors_in_a_row_eject() {
        let s = state();
        for _ in 0..9 {
            assert!(s.observe_error(ProxyError::Reset).is_none());
        }
        s.observe_success();
        assert_eq!(s.consecutive_errors(), 0);
        for _ in 0..9 {
            assert!(s.observe_error(ProxyError::BadResponse).is_none());
        }
        assert!(s.is_available(), "never 10 in a row");
        assert!(s.observe_error(ProxyError::Timeout).is_some());
        assert!(!s.is_available());
        assert_eq!(s.counters.resets.load(Ordering::Relaxed), 18);
        assert_eq!(s.counters.timeouts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_server_down_by_checks_is_not_ejected_nor_retried() {
        let s = state();
        s.set_error_limit(Some(1));
        s.set_health(Health::Down);
        assert!(s.observe_error(ProxyError::Refused).is_none());
        assert_eq!(s.down_reason(), Some(DownReason::Check));
        assert!(
            !s.retry_after_errors(),
            "only a server down by errors is retried"
        );
        assert_eq!(s.counters.ejections.load(Ordering::Relaxed), 0);
        assert_eq!(s.counters.transitions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn going_down_signals_and_roles_are_counted() {
        let s = state();
        let mut rx = s.down_signal();
        s.set_health(Health::Down);
        assert!(rx.has_changed().expect("sender alive"));
        rx.borrow_and_update();
        s.set_health(Health::Down);
        assert!(!rx.has_changed().expect("sender alive"), "down already");
        s.set_health(Health::Up);
        assert!(
            !rx.has_changed().expect("sender alive"),
            "coming up cuts nothing"
        );
        s.set_error_limit(Some(1));
        s.observe_error(ProxyError::Refused);
        assert!(rx.has_changed().expect("sender alive"), "an ejection too");

        assert_eq!(s.role(), None);
        assert_eq!(s.record_role(Role::Primary), None);
        assert_eq!(s.record_role(Role::Primary), Some(Role::Primary));
        assert_eq!(s.counters.role_changes.load(Ordering::Relaxed), 0);
        assert_eq!(s.record_role(Role::Standby), Some(Role::Primary));
        assert_eq!(s.role(), Some(Role::Standby));
        assert_eq!(s.counters.role_changes.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_host_name_without_an_address_is_down_whatever_its_checks_say() {
        use crate::resolve::{Resolution, Target};
        let s = ServerState::with_target(
            "r1",
            Target::Name {
                host: "maas-api-1.example".into(),
                port: 5240,
            },
            false,
        );
        assert_eq!(s.address(), None);
        assert!(!s.is_available());
        assert_eq!(s.why_down(), Some(DownReason::Unresolved));
        assert_eq!(s.down_reason(), None, "the checks have nothing against it");
        let at = SocketAddr::from(([10, 0, 0, 11], 5240));
        assert!(s.set_resolution(Resolution::fixed(at)), "changed");
        assert!(s.is_available());
        assert_eq!(s.address(), Some(at));
        assert_eq!(s.why_down(), None);
        assert!(!s.set_resolution(Resolution::fixed(at)), "unchanged");
        let gone = s.resolution().next(
            Err("Name or service not known".into()),
            std::time::Instant::now() + crate::resolve::RESOLVE_HOLD * 2,
            SystemTime::now(),
        );
        // The first failure starts the hold: still there.
        assert!(!s.set_resolution(gone.clone()));
        assert!(s.is_available());
        // A fixed address ignores resolutions.
        let fixed = state();
        assert!(!fixed.set_resolution(Resolution::pending()));
        assert!(fixed.is_available());
    }

    #[test]
    fn without_a_limit_errors_only_count() {
        let s = state();
        s.set_error_limit(None);
        for _ in 0..50 {
            assert!(s.observe_error(ProxyError::Refused).is_none());
        }
        assert!(s.is_available());
        assert_eq!(s.error_limit(), None);
        assert_eq!(s.counters.connect_failures.load(Ordering::Relaxed), 50);
    }
}
