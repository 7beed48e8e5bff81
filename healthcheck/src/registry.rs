//! The frontends and their servers' shared state, swappable as a whole on reload. Its
//! `/status` view is in [`crate::status`].

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{CheckConfig, CheckOverride};
use crate::resolve::Target;
use crate::state::ServerState;
use crate::status::FrontendHealth;

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

/// One frontend as the health checks see it: its name, check and servers (the proxy's
/// view of the same frontend is `lb::Frontend`).
#[derive(Debug, Clone)]
pub struct CheckedFrontend {
    /// Name from the config (`[[frontend]] name`).
    pub name: String,
    /// The frontend's `check = { ... }`.
    pub check: CheckConfig,
    /// Its servers, in config order.
    pub servers: Vec<Server>,
    /// How often the host names among its servers are resolved again.
    pub resolve_interval: std::time::Duration,
}

impl CheckedFrontend {
    /// A frontend with host names resolved again every
    /// [`crate::resolve::DEFAULT_RESOLVE_INTERVAL`].
    pub fn new(name: impl Into<String>, check: CheckConfig, servers: Vec<Server>) -> Self {
        CheckedFrontend {
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

/// One server as the config writes it, for [`Registry::checked_frontend`].
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// `name`.
    pub name: String,
    /// `address` as written (a host name stays a name).
    pub target: Target,
    /// `disabled`: starts in maintenance.
    pub disabled: bool,
    /// `check`: probed with the frontend's check, or always healthy.
    pub check: bool,
    /// The server's changes to the frontend's check.
    pub check_override: CheckOverride,
}

/// Every frontend and its servers. Read lock-free; replaced as a whole by [`Registry::store`]
/// on reload (a reload keeps a server's [`ServerState`] by passing the same `Arc` again, see
/// [`Registry::server`]).
#[derive(Debug)]
pub struct Registry {
    frontends: ArcSwap<Vec<Arc<CheckedFrontend>>>,
}

impl Registry {
    /// A registry of these frontends.
    pub fn new(frontends: Vec<CheckedFrontend>) -> Self {
        Registry {
            frontends: ArcSwap::from_pointee(frontends.into_iter().map(Arc::new).collect()),
        }
    }

    /// Replace every frontend (reload). Checkers of the old ones keep running until stopped.
    pub fn store(&self, frontends: Vec<CheckedFrontend>) {
        self.frontends
            .store(Arc::new(frontends.into_iter().map(Arc::new).collect()));
    }

    /// The frontends of the last [`Registry::store`] (a reload replaces them all at once).
    pub fn frontends(&self) -> Arc<Vec<Arc<CheckedFrontend>>> {
        self.frontends.load_full()
    }

    /// The frontend named `name`.
    pub fn frontend(&self, name: &str) -> Option<Arc<CheckedFrontend>> {
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

    /// Frontend `name` with `servers` as the checks will see it, for a start or a reload (pass
    /// it to [`Registry::store`] with the others): a server that frontend `name` already has
    /// with the same name and target keeps its [`ServerState`] (health, counters, admin state,
    /// resolution, see [`Registry::reuse`]); the others get a fresh one, whose host name is
    /// resolved before this returns, so that traffic and checks find its address from the
    /// start (one that does not resolve is a DOWN server, not a failure).
    pub async fn checked_frontend(
        &self,
        name: &str,
        check: CheckConfig,
        resolve_interval: std::time::Duration,
        servers: Vec<ServerSpec>,
    ) -> CheckedFrontend {
        let mut fresh = Vec::new();
        let servers = servers
            .into_iter()
            .map(|s| {
                let state = match self.reuse(name, &s.name, &s.target) {
                    Some(kept) => kept,
                    None => {
                        let st = Arc::new(ServerState::with_target(s.name, s.target, s.disabled));
                        fresh.push(Arc::clone(&st));
                        st
                    }
                };
                Server::new(state, s.check).with_override(s.check_override)
            })
            .collect();
        crate::resolve::resolve_all(name, &fresh).await;
        CheckedFrontend::new(name, check, servers).with_resolve_interval(resolve_interval)
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

    /// Every frontend as `/status` shows it, in config order.
    pub fn status(&self) -> Vec<FrontendHealth> {
        self.frontends
            .load()
            .iter()
            .map(|f| FrontendHealth::from(&**f))
            .collect()
    }

    /// `{"frontends": [...]}`: [`Registry::status`] as pretty JSON, as the `frontends` of
    /// `GET /status` without the proxy's counters.
    pub fn status_json(&self) -> String {
        // A tree of strings and numbers always serializes.
        serde_json::to_string_pretty(&serde_json::json!({ "frontends": self.status() }))
            .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::outcome::{CheckReport, CheckResult, Progress};
    use crate::state::{Admin, Health};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn registry() -> Registry {
        let r1 = Arc::new(ServerState::new("r1", addr("10.0.0.11:5240"), false));
        let r2 = Arc::new(ServerState::new("r2", addr("10.0.0.12:5240"), false));
        let r3 = Arc::new(ServerState::new("r3", addr("[fd00::13]:5240"), true));
        Registry::new(vec![CheckedFrontend::new(
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
        reg.store(vec![CheckedFrontend::new(
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

    #[tokio::test]
    async fn checked_frontend_keeps_the_state_of_kept_servers() {
        let reg = registry();
        let r1 = reg.server("maas", "r1").expect("r1");
        r1.set_health(Health::Down);
        let spec = |name: &str, a: &str| ServerSpec {
            name: name.into(),
            target: Target::Addr(addr(a)),
            disabled: false,
            check: true,
            check_override: CheckOverride::default(),
        };
        let f = reg
            .checked_frontend(
                "maas",
                CheckConfig::default(),
                Duration::from_secs(7),
                vec![
                    spec("r1", "10.0.0.11:5240"),
                    spec("r2", "10.0.0.99:5240"),
                    spec("r4", "10.0.0.14:5240"),
                ],
            )
            .await;
        assert_eq!(f.name, "maas");
        assert_eq!(f.resolve_interval, Duration::from_secs(7));
        assert!(
            Arc::ptr_eq(&f.servers[0].state, &r1),
            "kept: same name and address"
        );
        assert_eq!(
            f.servers[0].state.health(),
            Health::Down,
            "health carried over"
        );
        let r2 = reg.server("maas", "r2").expect("r2");
        assert!(
            !Arc::ptr_eq(&f.servers[1].state, &r2),
            "moved: a fresh state"
        );
        assert_eq!(f.servers[2].state.name, "r4");
        // Another frontend's server of the same name is not reused.
        let other = reg
            .checked_frontend(
                "other",
                CheckConfig::default(),
                Duration::from_secs(7),
                vec![spec("r1", "10.0.0.11:5240")],
            )
            .await;
        assert!(!Arc::ptr_eq(&other.servers[0].state, &r1));
        assert_eq!(other.servers[0].state.health(), Health::Up);
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
        let reg = Registry::new(vec![CheckedFrontend::new(
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
        assert_eq!(st[0].servers[0].state, "drain");
        assert_eq!(st[0].servers_up, 0);
    }
}
