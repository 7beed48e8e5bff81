//! The frontends and their servers' shared state, swappable as a whole on reload, and the
//! `/status` view of it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{CheckConfig, CheckKind, CheckOverride};
use crate::passive::DownReason;
use crate::resolve::Target;
use crate::state::{Admin, Health, ServerState};

/// One server of a frontend as the checker sees it.
#[derive(Debug, Clone)]
pub struct Server {
    /// Shared with the proxy.
    pub state: Arc<ServerState>,
    /// Probe it with the frontend's check; if false it always counts as healthy.
    pub check: bool,
    /// This server's changes to the frontend's check.
    pub check_override: CheckOverride,
}

impl Server {
    /// A server probed (or not) with its frontend's check unchanged.
    pub fn new(state: Arc<ServerState>, check: bool) -> Self {
        Server {
            state,
            check,
            check_override: CheckOverride::default(),
        }
    }

    /// The same, with per-server check changes.
    pub fn with_override(mut self, check_override: CheckOverride) -> Self {
        self.check_override = check_override;
        self
    }

    /// Where checks go: the server's current address, or its port overridden; `None` while
    /// its host name has no address.
    pub fn check_target(&self) -> Option<SocketAddr> {
        let mut a = self.state.address()?;
        if let Some(p) = self.check_override.port {
            a.set_port(p);
        }
        Some(a)
    }
}

/// One frontend: its name, check and servers.
#[derive(Debug, Clone)]
pub struct Frontend {
    /// Name from the config (`[[frontend]] name`).
    pub name: String,
    /// The frontend's `check = { ... }`.
    pub check: CheckConfig,
    /// Its servers, in config order.
    pub servers: Vec<Server>,
    /// How often the host names among its servers are resolved again.
    pub resolve_interval: std::time::Duration,
}

impl Frontend {
    /// A frontend.
    pub fn new(name: impl Into<String>, check: CheckConfig, servers: Vec<Server>) -> Self {
        Frontend {
            name: name.into(),
            check,
            servers,
            resolve_interval: crate::resolve::DEFAULT_RESOLVE_INTERVAL,
        }
    }

    /// The same, with host names resolved again every `interval`.
    pub fn with_resolve_interval(mut self, interval: std::time::Duration) -> Self {
        self.resolve_interval = interval;
        self
    }

    /// The check config of one of its servers, overrides applied.
    pub fn check_for(&self, server: &Server) -> CheckConfig {
        server.check_override.apply(&self.check)
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.state.name == name)
    }

    /// Servers that take new connections now.
    pub fn available(&self) -> usize {
        self.servers
            .iter()
            .filter(|s| s.state.is_available())
            .count()
    }
}

/// Every frontend and its servers. Read lock-free; replaced as a whole by [`Registry::store`]
/// on reload (a reload keeps a server's [`ServerState`] by passing the same `Arc` again, see
/// [`Registry::server`]).
#[derive(Debug)]
pub struct Registry {
    frontends: ArcSwap<Vec<Arc<Frontend>>>,
}

impl Registry {
    /// A registry of these frontends.
    pub fn new(frontends: Vec<Frontend>) -> Self {
        Registry {
            frontends: ArcSwap::from_pointee(frontends.into_iter().map(Arc::new).collect()),
        }
    }

    /// Replace every frontend (reload). Checkers of the old ones keep running until stopped.
    pub fn store(&self, frontends: Vec<Frontend>) {
        self.frontends
            .store(Arc::new(frontends.into_iter().map(Arc::new).collect()));
    }

    /// The current frontends.
    pub fn frontends(&self) -> Arc<Vec<Arc<Frontend>>> {
        self.frontends.load_full()
    }

    /// The frontend named `name`.
    pub fn frontend(&self, name: &str) -> Option<Arc<Frontend>> {
        self.frontends
            .load()
            .iter()
            .find(|f| f.name == name)
            .cloned()
    }

    /// The state of `server` in `frontend` (admin actions; reuse across a reload).
    pub fn server(&self, frontend: &str, server: &str) -> Option<Arc<ServerState>> {
        self.frontends
            .load()
            .iter()
            .find(|f| f.name == frontend)?
            .server(server)
            .map(|s| Arc::clone(&s.state))
    }

    /// For a reload: the state of the server `name` of `frontend` if it still has `target`
    /// (the address as written), so that its health, counters, admin state and resolution
    /// carry over into the new config; `None` for a new or moved server (make a fresh
    /// [`ServerState`]).
    pub fn reuse(&self, frontend: &str, name: &str, target: &Target) -> Option<Arc<ServerState>> {
        self.server(frontend, name).filter(|s| s.target() == target)
    }

    /// For VRRP `track_backends`: `Some(true)` if at least one server of `frontend` takes new
    /// connections (healthy, neither drained nor disabled), `None` if no such frontend.
    /// Allocation-free.
    pub fn any_available(&self, frontend: &str) -> Option<bool> {
        self.frontends
            .load()
            .iter()
            .find(|f| f.name == frontend)
            .map(|f| f.servers.iter().any(|s| s.state.is_available()))
    }

    /// Everything `/status` shows.
    pub fn status(&self) -> Status {
        Status {
            frontends: self
                .frontends
                .load()
                .iter()
                .map(|f| frontend_status(f))
                .collect(),
        }
    }

    /// [`Registry::status`] as pretty JSON.
    pub fn status_json(&self) -> String {
        // A tree of strings and numbers always serializes.
        serde_json::to_string_pretty(&self.status())
            .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
    }
}

/// `GET /status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// In config order.
    pub frontends: Vec<FrontendStatus>,
}

/// One frontend in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct FrontendStatus {
    /// Its name.
    pub name: String,
    /// Servers taking new connections.
    pub servers_up: usize,
    /// All its servers.
    pub servers_total: usize,
    /// The frontend's check.
    pub check: CheckSummary,
    /// In config order.
    pub servers: Vec<ServerStatus>,
}

/// A check config in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSummary {
    /// "tcp", "http" or "postgres".
    pub kind: &'static str,
    /// HTTP method (http checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    /// The role the check logs in as (postgres checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its database (postgres checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// "primary", "standby" or "any" (postgres checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require: Option<&'static str>,
    /// Where the password is read from (postgres checks only; the password itself is never
    /// shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// HTTP path (http checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Expected status (http checks only; none: any 2xx/3xx).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// Milliseconds.
    pub interval_ms: u64,
    /// Milliseconds.
    pub fast_interval_ms: u64,
    /// Milliseconds.
    pub down_interval_ms: u64,
    /// Milliseconds.
    pub timeout_ms: u64,
    /// Successes to come up.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
    /// Consecutive proxy errors that take a server down.
    pub error_limit: u32,
    /// "mark_down" or "recheck".
    pub on_error: &'static str,
    /// Milliseconds before a server without checks taken down by errors is tried again.
    pub error_retry_ms: u64,
}

/// One server in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    /// Its name.
    pub name: String,
    /// The address as the config writes it: `ip:port` or `host:port`.
    pub address: String,
    /// For a host name, what its resolution found; absent for an IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ResolutionStatus>,
    /// "up", "down", "drain" or "maint" (admin state first, then health; a host name without
    /// an address is "down").
    pub state: &'static str,
    /// What the checks (or the proxy's errors) say: "up" or "down".
    pub health: &'static str,
    /// Why it is down: "check" (failed active checks), "errors" (consecutive proxy errors) or
    /// "unresolved" (its host name has no address); null while up.
    pub down_reason: Option<&'static str>,
    /// What the operator says: "ready", "drain" or "maint".
    pub admin: &'static str,
    /// Actively checked.
    pub check: bool,
    /// Between states after the last check: "going down 1/3", "going up 1/2"; else null.
    pub progress: Option<String>,
    /// Why it is down, for people: "down: standby (in recovery)", "down: auth failed: ...",
    /// "down: connection refused", "down: 10 consecutive errors, ..."; null while up.
    pub reason: Option<String>,
    /// The role a postgres check last saw it in: "primary" or "standby"; absent for other
    /// check kinds and before the first such check got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// The last active check; absent before the first or for unchecked servers.
    pub last_check: Option<LastCheck>,
    /// Proxy errors in a row now (any exchange that goes well sets it back to 0).
    pub consecutive_errors: u32,
    /// Consecutive errors that take it down; null when they never do (`on_error = "recheck"`).
    pub error_limit: Option<u32>,
    /// The last time consecutive errors took it down; null if never.
    pub last_ejection: Option<LastEjection>,
    /// Counters.
    pub counters: CounterStatus,
}

/// The resolution of a server's host name in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ResolutionStatus {
    /// The host name.
    pub name: String,
    /// Where connections and checks go now (`ip:port`); null: nowhere, the server is down.
    pub current_address: Option<String>,
    /// Why the last resolution failed, "unresolved: ..."; null if it succeeded.
    pub last_error: Option<String>,
    /// When the name last resolved, milliseconds since the Unix epoch; null if never.
    pub resolved_at_unix_ms: Option<u64>,
}

/// The last check of a server in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct LastCheck {
    /// True if it passed.
    pub passed: bool,
    /// Stable name: "connected", "http_ok", "http_bad_status", "refused", "connect_timeout",
    /// "response_timeout", "connect_error", "closed", "bad_response", "io_error".
    pub result: &'static str,
    /// For people: "connection refused", "wrong HTTP status 500", ...
    pub detail: String,
    /// HTTP status, if an answer came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Milliseconds, fractional.
    pub duration_ms: f64,
    /// When it finished, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// The last ejection of a server by consecutive proxy errors, in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct LastEjection {
    /// Errors in a row that took it down.
    pub errors: u32,
    /// The last of them: "refused", "connect_timeout", "connect_error", "reset",
    /// "server_timeout", "bad_response".
    pub last_error: &'static str,
    /// For people: "10 consecutive errors, last: connection refused".
    pub detail: String,
    /// When, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// The counters of a server in `/status` (see [`crate::ServerCounters`]).
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct CounterStatus {
    pub current: u64,
    pub total: u64,
    pub bytes_to_server: u64,
    pub bytes_from_server: u64,
    pub connect_failures: u64,
    pub resets: u64,
    pub timeouts: u64,
    pub retries: u64,
    pub redispatches: u64,
    pub checks: u64,
    pub check_failures: u64,
    pub transitions: u64,
    pub ejections: u64,
    pub role_changes: u64,
    pub sessions_cut: u64,
}

fn frontend_status(f: &Frontend) -> FrontendStatus {
    let c = &f.check;
    FrontendStatus {
        name: f.name.clone(),
        servers_up: f.available(),
        servers_total: f.servers.len(),
        check: CheckSummary {
            kind: c.kind.as_str(),
            method: (c.kind == CheckKind::Http).then(|| c.method.as_str()),
            user: c.user.clone().filter(|_| c.kind == CheckKind::Postgres),
            database: (c.kind == CheckKind::Postgres).then(|| c.database().to_string()),
            require: (c.kind == CheckKind::Postgres).then(|| c.require.as_str()),
            password_file: c
                .password_file
                .as_ref()
                .filter(|_| c.kind == CheckKind::Postgres)
                .map(|p| p.display().to_string()),
            path: (c.kind == CheckKind::Http).then(|| c.path.clone()),
            expect_status: c.expect_status.filter(|_| c.kind == CheckKind::Http),
            interval_ms: millis(c.interval),
            fast_interval_ms: millis(c.fast_interval()),
            down_interval_ms: millis(c.down_interval()),
            timeout_ms: millis(c.timeout),
            rise: c.rise,
            fall: c.fall,
            error_limit: c.error_limit,
            on_error: c.on_error.as_str(),
            error_retry_ms: millis(c.error_retry),
        },
        servers: f.servers.iter().map(server_status).collect(),
    }
}

fn server_status(s: &Server) -> ServerStatus {
    let st = &s.state;
    let health = st.health();
    let admin = st.admin();
    let n = &st.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let resolution = st.target().host().map(|host| {
        let r = st.resolution();
        ResolutionStatus {
            name: host.to_string(),
            current_address: r.address.map(|a| a.to_string()),
            last_error: r.error.map(|e| format!("unresolved: {e}")),
            resolved_at_unix_ms: r.resolved_at.map(unix_ms),
        }
    });
    let unresolved = st.why_down() == Some(DownReason::Unresolved);
    ServerStatus {
        name: st.name.clone(),
        address: st.target().to_string(),
        resolution,
        state: match (admin, health) {
            (Admin::Maint, _) => "maint",
            _ if unresolved => "down",
            (_, Health::Down) => "down",
            (Admin::Drain, Health::Up) => "drain",
            (Admin::Ready, Health::Up) => "up",
        },
        health: match health {
            Health::Up => "up",
            Health::Down => "down",
        },
        down_reason: st.why_down().map(DownReason::as_str),
        admin: match admin {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        },
        check: s.check,
        reason: match st.why_down() {
            None => None,
            Some(DownReason::Errors) => Some(st.last_ejection().map_or_else(
                || "down: consecutive errors".to_string(),
                |e| format!("down: {e}"),
            )),
            Some(DownReason::Check) => Some(st.last_check().map_or_else(
                || "down: check".to_string(),
                |r| format!("down: {}", r.result),
            )),
            Some(DownReason::Unresolved) => Some(format!(
                "down: unresolved: {}",
                st.resolution().error.unwrap_or_default()
            )),
        },
        role: st.role().map(|r| r.as_str()),
        progress: st
            .last_check()
            .and_then(|r| r.progress)
            .map(|p| p.to_string()),
        last_check: st.last_check().map(|r| LastCheck {
            passed: r.result.passed(),
            result: r.result.code(),
            detail: r.result.to_string(),
            http_status: r.result.http_status(),
            duration_ms: r.duration.as_secs_f64() * 1000.0,
            at_unix_ms: unix_ms(r.at),
        }),
        consecutive_errors: st.consecutive_errors(),
        error_limit: st.error_limit(),
        last_ejection: st.last_ejection().map(|e| LastEjection {
            errors: e.errors,
            last_error: e.last.code(),
            detail: e.to_string(),
            at_unix_ms: unix_ms(e.at),
        }),
        counters: CounterStatus {
            current: get(&n.current),
            total: get(&n.total),
            bytes_to_server: get(&n.bytes_to_server),
            bytes_from_server: get(&n.bytes_from_server),
            connect_failures: get(&n.connect_failures),
            resets: get(&n.resets),
            timeouts: get(&n.timeouts),
            retries: get(&n.retries),
            redispatches: get(&n.redispatches),
            checks: get(&n.checks),
            check_failures: get(&n.check_failures),
            transitions: get(&n.transitions),
            ejections: get(&n.ejections),
            role_changes: get(&n.role_changes),
            sessions_cut: get(&n.sessions_cut),
        },
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outcome::{CheckReport, CheckResult, Progress};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn registry() -> Registry {
        let r1 = Arc::new(ServerState::new("r1", addr("10.0.0.11:5240"), false));
        let r2 = Arc::new(ServerState::new("r2", addr("10.0.0.12:5240"), false));
        let r3 = Arc::new(ServerState::new("r3", addr("[fd00::13]:5240"), true));
        Registry::new(vec![Frontend::new(
            "maas",
            CheckConfig::default(),
            vec![
                Server::new(r1, true),
                Server::new(r2, true).with_override(CheckOverride {
                    port: Some(5241),
                    ..CheckOverride::default()
                }),
                Server::new(r3, false),
            ],
        )])
    }

    #[test]
    fn any_available_follows_health_and_admin() {
        let reg = registry();
        assert_eq!(reg.any_available("nope"), None);
        assert_eq!(reg.any_available("maas"), Some(true));
        let r1 = reg.server("maas", "r1").expect("r1 exists");
        let r2 = reg.server("maas", "r2").expect("r2 exists");
        r1.set_health(Health::Down);
        assert_eq!(reg.any_available("maas"), Some(true));
        r2.set_admin(Admin::Drain);
        assert_eq!(
            reg.any_available("maas"),
            Some(false),
            "r3 is maint, r2 drains"
        );
        r2.set_admin(Admin::Ready);
        assert_eq!(reg.any_available("maas"), Some(true));
    }

    #[test]
    fn store_replaces_frontends_and_keeps_shared_state() {
        let reg = registry();
        let r1 = reg.server("maas", "r1").expect("r1 exists");
        reg.store(vec![Frontend::new(
            "other",
            CheckConfig::default(),
            vec![Server::new(Arc::clone(&r1), true)],
        )]);
        assert_eq!(reg.any_available("maas"), None);
        let again = reg.server("other", "r1").expect("moved");
        assert!(Arc::ptr_eq(&r1, &again));
        let kept = reg
            .reuse("other", "r1", &Target::Addr(addr("10.0.0.11:5240")))
            .expect("same address");
        assert!(Arc::ptr_eq(&r1, &kept));
        assert!(
            reg.reuse("other", "r1", &Target::Addr(addr("10.0.0.11:5241")))
                .is_none(),
            "moved"
        );
        assert!(
            reg.reuse("maas", "r1", &Target::Addr(addr("10.0.0.11:5240")))
                .is_none(),
            "gone"
        );
        assert_eq!(reg.frontends().len(), 1);
    }

    #[test]
    fn status_shows_the_resolution_of_host_names() {
        let named = |host: &str| {
            Arc::new(ServerState::with_target(
                host,
                Target::Name {
                    host: host.into(),
                    port: 5240,
                },
                false,
            ))
        };
        let (ok, bad) = (named("maas-api-1.example"), named("nosuch.example"));
        let now = std::time::Instant::now();
        ok.set_resolution(ok.resolution().next(
            Ok(vec![addr("10.0.0.11:5240")]),
            now,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        bad.set_resolution(bad.resolution().next(
            Err("failed to lookup address information: Name or service not known".into()),
            now,
            SystemTime::now(),
        ));
        let reg = Registry::new(vec![Frontend::new(
            "maas",
            CheckConfig::default(),
            vec![Server::new(ok, true), Server::new(bad, true)],
        )]);
        let f = reg.frontend("maas").expect("maas");
        assert_eq!(f.servers[0].check_target(), Some(addr("10.0.0.11:5240")));
        assert_eq!(f.servers[1].check_target(), None);
        let v: serde_json::Value = serde_json::from_str(&reg.status_json()).expect("JSON");
        let s = &v["frontends"][0]["servers"];
        assert_eq!(s[0]["address"], "maas-api-1.example:5240");
        assert_eq!(s[0]["state"], "up");
        assert_eq!(s[0]["resolution"]["name"], "maas-api-1.example");
        assert_eq!(s[0]["resolution"]["current_address"], "10.0.0.11:5240");
        assert!(s[0]["resolution"]["last_error"].is_null());
        assert_eq!(
            s[0]["resolution"]["resolved_at_unix_ms"],
            1_700_000_000_000u64
        );
        assert_eq!(s[1]["state"], "down");
        assert_eq!(s[1]["down_reason"], "unresolved");
        assert!(s[1]["resolution"]["current_address"].is_null());
        assert_eq!(
            s[1]["resolution"]["last_error"],
            "unresolved: failed to lookup address information: Name or service not known"
        );
        assert_eq!(v["frontends"][0]["servers_up"], 1);
        assert_eq!(reg.any_available("maas"), Some(true));
    }

    #[test]
    fn check_target_uses_port_override() {
        let reg = registry();
        let f = reg.frontend("maas").expect("exists");
        assert_eq!(f.servers[0].check_target(), Some(addr("10.0.0.11:5240")));
        assert_eq!(f.servers[1].check_target(), Some(addr("10.0.0.12:5241")));
    }

    #[test]
    fn status_json_shape() {
        let reg = registry();
        let r1 = reg.server("maas", "r1").expect("r1");
        let r2 = reg.server("maas", "r2").expect("r2");
        r1.record_check(CheckReport {
            result: CheckResult::HttpOk(200),
            duration: Duration::from_micros(1500),
            at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            progress: None,
        });
        r2.record_check(CheckReport {
            result: CheckResult::Refused,
            duration: Duration::from_micros(250),
            at: SystemTime::now(),
            progress: Some(Progress {
                toward: Health::Up,
                done: 1,
                needed: 2,
            }),
        });
        r2.set_health(Health::Down);
        r1.counters.total.fetch_add(7, Ordering::Relaxed);

        let v: serde_json::Value =
            serde_json::from_str(&reg.status_json()).expect("status is JSON");
        let f = &v["frontends"][0];
        assert_eq!(f["name"], "maas");
        assert_eq!(f["servers_up"], 1);
        assert_eq!(f["servers_total"], 3);
        assert_eq!(f["check"]["kind"], "http");
        assert_eq!(f["check"]["path"], "/MAAS/api/2.0/version/");
        assert_eq!(f["check"]["interval_ms"], 2000);
        assert_eq!(f["check"]["fast_interval_ms"], 500);
        let s = &f["servers"];
        assert_eq!(s[0]["name"], "r1");
        assert_eq!(s[0]["address"], "10.0.0.11:5240");
        assert_eq!(s[0]["state"], "up");
        assert_eq!(s[0]["last_check"]["passed"], true);
        assert_eq!(s[0]["last_check"]["result"], "http_ok");
        assert_eq!(s[0]["last_check"]["http_status"], 200);
        assert_eq!(s[0]["last_check"]["duration_ms"], 1.5);
        assert_eq!(s[0]["last_check"]["at_unix_ms"], 1_700_000_000_000u64);
        assert_eq!(s[0]["counters"]["total"], 7);
        assert_eq!(s[0]["counters"]["checks"], 1);
        assert_eq!(s[1]["state"], "down");
        assert_eq!(s[1]["progress"], "going up 1/2");
        assert!(s[0]["progress"].is_null());
        assert_eq!(s[1]["last_check"]["detail"], "connection refused");
        assert_eq!(s[1]["counters"]["check_failures"], 1);
        assert_eq!(s[1]["counters"]["transitions"], 1);
        assert_eq!(s[2]["address"], "[fd00::13]:5240");
        assert_eq!(s[2]["state"], "maint");
        assert!(s[2].get("resolution").is_none(), "an IP address has none");
        assert_eq!(s[2]["check"], false);
        assert!(s[2]["last_check"].is_null());
        assert_eq!(f["check"]["error_limit"], 10);
        assert_eq!(f["check"]["on_error"], "mark_down");
        assert_eq!(f["check"]["error_retry_ms"], 10_000);
        assert_eq!(s[1]["down_reason"], "check");
        assert!(s[0]["down_reason"].is_null());
        assert_eq!(s[0]["consecutive_errors"], 0);
        assert_eq!(s[0]["error_limit"], 10);
        assert!(s[0]["last_ejection"].is_null());

        // Ten errors in a row take r1 down: /status says why, and counts it.
        r1.observe_error(crate::ProxyError::Timeout);
        for _ in 0..9 {
            r1.observe_error(crate::ProxyError::Refused);
        }
        let v: serde_json::Value =
            serde_json::from_str(&reg.status_json()).expect("status is JSON");
        let s0 = &v["frontends"][0]["servers"][0];
        assert_eq!(s0["state"], "down");
        assert_eq!(s0["down_reason"], "errors");
        assert_eq!(s0["last_ejection"]["errors"], 10);
        assert_eq!(s0["last_ejection"]["last_error"], "refused");
        assert_eq!(
            s0["last_ejection"]["detail"],
            "10 consecutive errors, last: connection refused"
        );
        assert!(s0["last_ejection"]["at_unix_ms"].as_u64() > Some(1_700_000_000_000));
        assert_eq!(s0["counters"]["ejections"], 1);
        assert_eq!(s0["counters"]["timeouts"], 1);
        assert_eq!(s0["counters"]["connect_failures"], 9);
        r1.set_health(Health::Up);

        r1.set_admin(Admin::Drain);
        let st = reg.status();
        assert_eq!(st.frontends[0].servers[0].state, "drain");
        assert_eq!(st.frontends[0].servers_up, 0);
    }
}
