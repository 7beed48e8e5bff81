//! `GET /status`, typed: the admin endpoint serializes a [`Status`], `maas-vip status`
//! deserializes the same type. The health checks' part of each frontend is
//! [`healthcheck::status`]'s; the proxy's counters, VRRP and `[[announce]]` are added here.
//!
//! As in [`healthcheck::status`], names that are enumerations in the runtime are strings and
//! every struct deserializes with `#[serde(default)]`, so that `maas-vip status` reads what a
//! daemon of another version sends: a missing field takes its default, an unknown one is
//! ignored. Field order is the JSON's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use healthcheck::status::FrontendHealth;

/// The whole `/status` document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// Frontends and their servers, in config order.
    pub frontends: Vec<FrontendStatus>,
    /// VRRP instances, in start order.
    pub vrrp: Vec<VrrpStatus>,
    /// `[[announce]]` blocks: announced or withdrawn, why, since when, what FRR says.
    pub announce: Vec<AnnounceStatus>,
}

/// One frontend: what the health checks know of it, with the proxy's counters beside.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FrontendStatus {
    /// Name, check and servers (flattened: the same level as `counters`).
    #[serde(flatten)]
    pub health: FrontendHealth,
    /// The proxy's counters; absent while the proxy has no frontend of that name (a reload
    /// in progress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<ProxyCounters>,
}

/// A frontend's connection counters (see [`lb::FrontendCounters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyCounters {
    /// Client connections being handled now.
    pub current: u64,
    /// Client connections accepted.
    pub total: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Connections closed at once because no server was available.
    pub no_server: u64,
    /// Given up because this host stayed out of descriptors, memory or local ports.
    pub local_shortage: u64,
    /// Connections given up after every connect attempt failed.
    pub connect_failed: u64,
    /// Connect retries.
    pub retries: u64,
    /// Retries sent to another server.
    pub redispatches: u64,
    /// http mode: requests received.
    pub requests: u64,
    /// http mode: responses by status class, "1xx" .. "5xx", "other".
    pub responses: BTreeMap<String, u64>,
}

impl From<&lb::FrontendCounters> for ProxyCounters {
    fn from(c: &lb::FrontendCounters) -> Self {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyCounters {
            current: get(&c.current),
            total: get(&c.total),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            no_server: get(&c.no_server),
            local_shortage: get(&c.local_shortage),
            connect_failed: get(&c.connect_failed),
            retries: get(&c.retries),
            redispatches: get(&c.redispatches),
            requests: get(&c.requests),
            responses: ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]
                .into_iter()
                .map(String::from)
                .zip(c.responses.iter().map(get))
                .collect(),
        }
    }
}

/// One VRRP instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VrrpStatus {
    /// `[[vrrp]] name`.
    pub name: String,
    /// The interface it runs on.
    pub interface: String,
    /// `virtual_router_id`.
    pub vrid: u8,
    /// "INIT", "BACKUP", "MASTER" or "FAULT" (as keepalived and `/metrics` name them).
    pub state: String,
    /// Effective priority (configured plus track weights).
    pub priority: u8,
    /// Priority as configured.
    pub configured_priority: u8,
    /// Adverts sent.
    pub adverts_sent: u64,
    /// Adverts received and accepted.
    pub adverts_received: u64,
    /// Dropped packets by reason (every reason, zeros included).
    pub rejected: BTreeMap<String, u64>,
    /// Adverts whose virtual addresses differ from ours (accepted, as keepalived does).
    pub vip_mismatch: u64,
    /// Times it became master.
    pub became_master: u64,
    /// State changes by the state entered (every state, zeros included).
    pub transitions: BTreeMap<String, u64>,
    /// auth_hmac settings and counters; `null` when it is off. Its drops are in `rejected`
    /// (`hmac_missing`, `hmac_bad`, `hmac_replay`, ...).
    pub auth_hmac: Option<HmacStatus>,
}

/// An instance's auth_hmac: never a key, only ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HmacStatus {
    /// "enforce", "permissive" or "receive-only".
    pub mode: String,
    /// The key id adverts are signed with.
    pub active_key: u8,
    /// Every key id accepted.
    pub key_ids: Vec<u8>,
    /// "time" or "monotonic".
    pub anti_replay: String,
    /// Time mode: the freshness window, seconds.
    pub time_window_secs: Option<u32>,
    /// Adverts accepted without a trailer (receive-only, permissive: a host not signing yet).
    pub unsigned_accepted: u64,
    /// Adverts accepted with a clock skew past half the window (NTP?).
    pub clock_skew_high: u64,
}

impl From<&vrrp::InstanceStatus> for VrrpStatus {
    fn from(i: &vrrp::InstanceStatus) -> Self {
        VrrpStatus {
            name: i.name.clone(),
            interface: i.interface.clone(),
            vrid: i.vrid,
            state: i.state.as_str().into(),
            priority: i.priority,
            configured_priority: i.configured_priority,
            adverts_sent: i.stats.tx,
            adverts_received: i.stats.rx_ok,
            rejected: vrrp::machine::Reject::ALL
                .iter()
                .map(|r| (r.as_str().into(), i.stats.rejected(*r)))
                .collect(),
            vip_mismatch: i.stats.vip_mismatch,
            became_master: i.stats.became_master(),
            transitions: vrrp::machine::State::ALL
                .iter()
                .map(|st| (st.as_str().into(), i.stats.transitions[st.index()]))
                .collect(),
            auth_hmac: i.auth_hmac.as_ref().map(|h| HmacStatus {
                mode: h.mode.as_str().into(),
                active_key: h.active_key,
                key_ids: h.key_ids.clone(),
                anti_replay: if h.time_window.is_some() {
                    "time"
                } else {
                    "monotonic"
                }
                .into(),
                time_window_secs: h.time_window,
                unsigned_accepted: i.stats.hmac_unsigned,
                clock_skew_high: i.stats.hmac_skew_high,
            }),
        }
    }
}

/// One `[[announce]]` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnnounceStatus {
    /// `[[announce]] name`.
    pub name: String,
    /// The VIP interface it created.
    pub interface: String,
    /// Its VIPs, as prefixes.
    pub vips: Vec<String>,
    /// "announced" or "withdrawn".
    pub state: announce::State,
    /// Why, as a sentence.
    pub reason: String,
    /// Why, as data (`kind` and the frontend or script).
    pub why: announce::Reason,
    /// When the state last changed (RFC 3339, UTC; the start if never).
    pub since: String,
    /// Seconds since then.
    pub for_seconds: f64,
    /// Times the VIPs were announced.
    pub announcements: u64,
    /// Times they were withdrawn.
    pub withdrawals: u64,
    /// What the kernel shows of the VIP interface: carrier on means offered to FRR.
    pub link: Option<LinkStatus>,
    /// What FRR (bgpd) does with the VIPs, when vtysh could be read.
    pub frr: Option<FrrStatus>,
    /// Why FRR could not be read, if it could not.
    pub frr_error: Option<String>,
}

impl Default for AnnounceStatus {
    /// What a block shows before its first decision: withdrawn, starting.
    fn default() -> Self {
        AnnounceStatus {
            name: String::new(),
            interface: String::new(),
            vips: Vec::new(),
            state: announce::State::Withdrawn,
            reason: String::new(),
            why: announce::Reason::Starting,
            since: String::new(),
            for_seconds: 0.0,
            announcements: 0,
            withdrawals: 0,
            link: None,
            frr: None,
            frr_error: None,
        }
    }
}

/// The VIP interface of an `[[announce]]` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkStatus {
    /// Administratively up.
    pub up: bool,
    /// Carrier on: the VIPs are offered to the routing daemon.
    pub carrier: bool,
    /// VIPs missing from the interface (removed by hand; put back at the next announcement).
    pub missing: Vec<String>,
}

/// What vtysh said of an `[[announce]]` block's VIPs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FrrStatus {
    /// Per VIP: bgpd's path for it and the peers it was advertised to.
    pub routes: BTreeMap<String, announce::RouteStatus>,
    /// The BGP sessions.
    pub peers: Vec<announce::Peer>,
    /// When this was read (RFC 3339).
    pub read_at: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn vrrp_view() {
        let mut stats = vrrp::machine::Stats {
            tx: 7,
            rx_ok: 2,
            transitions: [0, 1, 1, 0],
            ..Default::default()
        };
        stats.rejected[vrrp::machine::Reject::Ttl as usize] = 4;
        let i = vrrp::InstanceStatus {
            name: "maas_region".into(),
            interface: "eth0".into(),
            vrid: 51,
            state: vrrp::machine::State::Initialize,
            priority: 80,
            configured_priority: 100,
            stats,
            auth_hmac: None,
        };
        let v = json!(VrrpStatus::from(&i));
        assert_eq!(v["name"], "maas_region");
        assert_eq!(v["interface"], "eth0");
        assert_eq!(v["vrid"], 51);
        assert_eq!(v["state"], "INIT", "keepalived's name, as in /metrics");
        assert_eq!(v["priority"], 80);
        assert_eq!(v["configured_priority"], 100);
        assert_eq!(v["adverts_sent"], 7);
        assert_eq!(v["adverts_received"], 2);
        assert_eq!(v["became_master"], 1);
        assert_eq!(v["transitions"]["MASTER"], 1);
        assert_eq!(v["transitions"]["FAULT"], 0);
        assert_eq!(v["rejected"]["ttl"], 4);
        assert_eq!(v["rejected"]["auth_pass"], 0);
        assert_eq!(
            v["rejected"].as_object().map(|m| m.len()),
            Some(vrrp::machine::Reject::ALL.len())
        );
        assert_eq!(v["rejected"]["hmac_bad"], 0);
        assert!(v["auth_hmac"].is_null());
    }

    #[test]
    fn vrrp_view_with_auth_hmac() {
        use vrrp::machine::Reject;
        let mut stats = vrrp::machine::Stats {
            hmac_unsigned: 5,
            hmac_skew_high: 1,
            ..Default::default()
        };
        stats.rejected[Reject::HmacBad as usize] = 2;
        stats.rejected[Reject::HmacReplay as usize] = 3;
        stats.rejected[Reject::HmacMissing as usize] = 4;
        let i = vrrp::InstanceStatus {
            name: "maas_region".into(),
            interface: "eth0".into(),
            vrid: 51,
            state: vrrp::machine::State::Backup,
            priority: 100,
            configured_priority: 100,
            stats,
            auth_hmac: Some(vrrp::auth_hmac::Summary {
                mode: vrrp::auth_hmac::Mode::Permissive,
                active_key: 2,
                key_ids: vec![1, 2],
                time_window: Some(5),
            }),
        };
        let v = json!(VrrpStatus::from(&i));
        assert_eq!(v["rejected"]["hmac_bad"], 2);
        assert_eq!(v["rejected"]["hmac_replay"], 3);
        assert_eq!(v["rejected"]["hmac_missing"], 4);
        assert_eq!(
            v["auth_hmac"],
            json!({
                "mode": "permissive", "active_key": 2, "key_ids": [1, 2],
                "anti_replay": "time", "time_window_secs": 5,
                "unsigned_accepted": 5, "clock_skew_high": 1
            })
        );
    }
}
