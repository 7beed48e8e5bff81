//! The health checks' part of `GET /status`: each frontend's check and its servers' state,
//! counters, last check and resolution. The daemon adds the proxy's counters, VRRP and
//! announcements around it; `maas-vip status` reads it back with the same types.
//!
//! Names that are enumerations in the runtime (`state`, `kind`, `result`, ...) are strings
//! here, so that a client reads whatever a daemon of another version sends. For the same
//! reason every struct deserializes with `#[serde(default)]`: a field the sender did not
//! send takes its default, one this side does not know is ignored.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::CheckKind;
use crate::passive::DownReason;
use crate::registry::{CheckedFrontend, Server};
use crate::state::{Admin, Health, ServerState};

/// One frontend in `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FrontendHealth {
    /// `[[frontend]] name`.
    pub name: String,
    /// Servers taking new connections (up and neither drained nor disabled).
    pub servers_up: usize,
    /// Servers configured.
    pub servers_total: usize,
    /// The frontend's check, as configured (per-server overrides not shown).
    pub check: CheckSummary,
    /// Its servers, in config order.
    pub servers: Vec<ServerStatus>,
}

/// A check config in `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckSummary {
    /// "tcp", "http" or "postgres".
    pub kind: String,
    /// HTTP method (http checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The role the check logs in as (postgres checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its database (postgres checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// "primary", "standby" or "any" (postgres checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require: Option<String>,
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
    /// `interval` in milliseconds: between checks of a server that is up.
    pub interval_ms: u64,
    /// `fast_interval` in milliseconds: between checks of a server going up or down.
    pub fast_interval_ms: u64,
    /// `down_interval` in milliseconds: between checks of a server that is down.
    pub down_interval_ms: u64,
    /// `timeout` of one check, in milliseconds.
    pub timeout_ms: u64,
    /// Successes to come up.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
    /// Consecutive proxy errors that take a server down.
    pub error_limit: u32,
    /// "mark_down" or "recheck".
    pub on_error: String,
    /// Milliseconds before a server without checks taken down by errors is tried again.
    pub error_retry_ms: u64,
}

/// One server in `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerStatus {
    /// `[[server]] name`.
    pub name: String,
    /// The address as the config writes it: `ip:port` or `host:port`.
    pub address: String,
    /// For a host name, what its resolution found; absent for an IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ResolutionStatus>,
    /// "up", "down", "drain" or "maint" (admin state first, then health; a host name without
    /// an address is "down").
    pub state: String,
    /// What the checks (or the proxy's errors) say: "up" or "down".
    pub health: String,
    /// Why it is down: "check" (failed active checks), "errors" (consecutive proxy errors) or
    /// "unresolved" (its host name has no address); null while up.
    pub down_reason: Option<String>,
    /// What the operator says: "ready", "drain" or "maint".
    pub admin: String,
    /// Actively checked (a sender that does not say is taken to check it, as the config's
    /// default does).
    #[serde(default = "checked")]
    pub check: bool,
    /// Between states after the last check: "going down 1/3", "going up 1/2"; else null.
    pub progress: Option<String>,
    /// Why it is down, for people: "down: standby (in recovery)", "down: auth failed: ...",
    /// "down: connection refused", "down: 10 consecutive errors, ..."; null while up.
    pub reason: Option<String>,
    /// The role a postgres check last saw it in: "primary" or "standby"; absent for other
    /// check kinds and before the first such check got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The last active check; absent before the first or for unchecked servers.
    pub last_check: Option<LastCheck>,
    /// Proxy errors in a row now (any exchange that goes well sets it back to 0).
    pub consecutive_errors: u32,
    /// Consecutive errors that take it down; null when they never do (`on_error = "recheck"`).
    pub error_limit: Option<u32>,
    /// The last time consecutive errors took it down; null if never.
    pub last_ejection: Option<LastEjection>,
    /// What the proxy and the checks counted for it (carried over by a reload that keeps it).
    pub counters: ServerCountersStatus,
}

/// The resolution of a server's host name in `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResolutionStatus {
    /// The host name, as in the server's `address`.
    pub name: String,
    /// Where connections and checks go now (`ip:port`); null: nowhere, the server is down.
    pub current_address: Option<String>,
    /// Why the last resolution failed, "unresolved: ..."; null if it succeeded.
    pub last_error: Option<String>,
    /// When the name last resolved, milliseconds since the Unix epoch; null if never.
    pub resolved_at_unix_ms: Option<u64>,
}

/// The last check of a server in `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LastCheck {
    pub passed: bool,
    /// Stable name: "connected", "http_ok", "http_bad_status", "refused", "connect_timeout",
    /// "response_timeout", "connect_error", "closed", "bad_response", "io_error".
    pub result: String,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LastEjection {
    /// Errors in a row that took it down.
    pub errors: u32,
    /// The last of them: "refused", "connect_timeout", "connect_error", "reset",
    /// "server_timeout", "bad_response".
    pub last_error: String,
    /// For people: "10 consecutive errors, last: connection refused".
    pub detail: String,
    /// When, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// The counters of a server in `/status` (see [`crate::ServerCounters`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct ServerCountersStatus {
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

impl From<&CheckedFrontend> for FrontendHealth {
    fn from(f: &CheckedFrontend) -> Self {
        let c = &f.check;
        FrontendHealth {
            name: f.name.clone(),
            servers_up: f.available(),
            servers_total: f.servers.len(),
            check: CheckSummary {
                kind: c.kind.as_str().into(),
                method: (c.kind == CheckKind::Http).then(|| c.method.as_str().into()),
                user: c.user.clone().filter(|_| c.kind == CheckKind::Postgres),
                database: (c.kind == CheckKind::Postgres).then(|| c.database().to_string()),
                require: (c.kind == CheckKind::Postgres).then(|| c.require.as_str().into()),
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
                on_error: c.on_error.as_str().into(),
                error_retry_ms: millis(c.error_retry),
            },
            servers: f.servers.iter().map(ServerStatus::from).collect(),
        }
    }
}

/// A server's state as `/status` and `/metrics` show it: "maint", else "down" (failing its
/// checks, or a host name without an address), else "drain" or "up".
pub fn server_state(st: &ServerState) -> &'static str {
    let unresolved = st.why_down() == Some(DownReason::Unresolved);
    match (st.admin(), st.health()) {
        (Admin::Maint, _) => "maint",
        _ if unresolved => "down",
        (_, Health::Down) => "down",
        (Admin::Drain, Health::Up) => "drain",
        (Admin::Ready, Health::Up) => "up",
    }
}

impl From<&Server> for ServerStatus {
    fn from(s: &Server) -> Self {
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
        ServerStatus {
            name: st.name.clone(),
            address: st.target().to_string(),
            resolution,
            state: server_state(st).into(),
            health: match health {
                Health::Up => "up",
                Health::Down => "down",
            }
            .into(),
            down_reason: st.why_down().map(|r| r.as_str().into()),
            admin: match admin {
                Admin::Ready => "ready",
                Admin::Drain => "drain",
                Admin::Maint => "maint",
            }
            .into(),
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
            role: st.role().map(|r| r.as_str().into()),
            progress: st
                .last_check()
                .and_then(|r| r.progress)
                .map(|p| p.to_string()),
            last_check: st.last_check().map(|r| LastCheck {
                passed: r.result.passed(),
                result: r.result.code().into(),
                detail: r.result.to_string(),
                http_status: r.result.http_status(),
                duration_ms: r.duration.as_secs_f64() * 1000.0,
                at_unix_ms: unix_ms(r.at),
            }),
            consecutive_errors: st.consecutive_errors(),
            error_limit: st.error_limit(),
            last_ejection: st.last_ejection().map(|e| LastEjection {
                errors: e.errors,
                last_error: e.last.code().into(),
                detail: e.to_string(),
                at_unix_ms: unix_ms(e.at),
            }),
            counters: ServerCountersStatus {
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
}

fn checked() -> bool {
    true
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
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::outcome::{CheckReport, CheckResult};
    use crate::{CheckConfig, ProxyError, ServerState};

    #[test]
    fn round_trips_through_json() {
        let r1 = Arc::new(ServerState::new(
            "r1",
            "10.0.0.11:5240".parse().expect("literal"),
            false,
        ));
        r1.record_check(CheckReport {
            result: CheckResult::HttpOk(200),
            duration: Duration::from_micros(1500),
            at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            progress: None,
        });
        for _ in 0..10 {
            r1.observe_error(ProxyError::Refused);
        }
        let f = CheckedFrontend::new("maas", CheckConfig::default(), vec![Server::new(r1, true)]);
        let health = FrontendHealth::from(&f);
        assert!(health.servers[0].last_check.is_some());
        assert!(health.servers[0].last_ejection.is_some());
        let text = serde_json::to_string(&health).expect("serializes");
        let back: FrontendHealth = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, health);
        assert_eq!(serde_json::to_string(&back).expect("serializes"), text);
    }

    #[test]
    fn what_the_sender_left_out_takes_its_default() {
        let s: ServerStatus =
            serde_json::from_str(r#"{"name": "a", "unknown": [1, 2]}"#).expect("lenient");
        assert_eq!(s.name, "a");
        assert_eq!(s.state, "");
        assert_eq!(s.last_check, None);
        assert_eq!(s.counters.total, 0);
    }
}
