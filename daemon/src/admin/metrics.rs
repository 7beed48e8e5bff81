//! `GET /metrics`: every counter of the proxy, the health checks and VRRP in the OpenMetrics
//! text format (which Prometheus scrapes natively), encoded by `prometheus-client`.
//!
//! Nothing here is registered ahead of time or kept between scrapes: a scrape takes a snapshot
//! of the current frontends (so a reload shows at once), reads their relaxed atomics through a
//! [`Collector`], and drops it. The proxy's hot path only ever bumps those atomics.
//!
//! Counters carry the `_total` suffix (added by the encoder); every series has the prefix
//! `maas_vip_`. Labels: `frontend` and `server` on proxy and server series, `instance`, `vrid`
//! and `interface` on VRRP series, plus `code`, `state` or `reason` where a series is split.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use healthcheck::{DownReason, Health, ServerState};
use vrrp::machine::{Reject, State};

use super::AdminContext;

/// What `GET /metrics` answers with (Prometheus negotiates nothing else from us).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Status classes of `maas_vip_frontend_http_responses_total`, in the order of
/// `lb::FrontendCounters::responses`.
const CODES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
/// Values of the `state` label of `maas_vip_server_state`.
const SERVER_STATES: [&str; 4] = ["up", "down", "drain", "maint"];
/// Values of the `reason` label of `maas_vip_server_down`.
const DOWN_REASONS: [&str; 3] = ["check", "errors", "unresolved"];
/// Roles of `server_pg_role`.
const PG_ROLES: [&str; 2] = ["primary", "standby"];

/// The whole `/metrics` body for the current state of `ctx`.
pub(crate) fn render(ctx: &AdminContext) -> String {
    render_scrape(Scrape {
        proxies: ctx.views.frontends.load_full(),
        checked: ctx.views.registry.frontends(),
        vrrp: ctx.views.vrrp.instances(),
        announce: ctx.views.announce.status(),
    })
}

fn render_scrape(scrape: Scrape) -> String {
    let mut registry = Registry::with_prefix("maas_vip");
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing into a String cannot fail; the collector itself never returns an error but
    // the writer's.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(cause = %e, "encoding /metrics failed");
    }
    out
}

/// What one scrape reads, taken at its start.
#[derive(Debug)]
struct Scrape {
    /// Proxy frontends (connection and HTTP counters).
    proxies: Arc<Vec<Arc<lb::Frontend>>>,
    /// Frontends as the health checks see them (server states and counters).
    checked: Arc<Vec<Arc<healthcheck::CheckedFrontend>>>,
    /// VRRP instances.
    vrrp: Vec<vrrp::InstanceStatus>,
    /// `[[announce]]` blocks.
    announce: Vec<crate::status::AnnounceStatus>,
}

type Labels = Vec<(&'static str, String)>;

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_proxies(&mut enc)?;
        self.encode_servers(&mut enc)?;
        self.encode_vrrp(&mut enc)?;
        self.encode_announce(&mut enc)
    }
}

impl Scrape {
    fn encode_proxies(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fes: Vec<(Labels, &lb::FrontendCounters)> = self
            .proxies
            .iter()
            .map(|f| (vec![("frontend", escape(&f.name))], &f.counters))
            .collect();
        let rows = |pick: fn(&lb::FrontendCounters) -> &AtomicU64| {
            fes.iter().map(move |(l, c)| (l.as_slice(), get(pick(c))))
        };
        gauges(
            enc,
            "frontend_current_connections",
            "Client connections being handled now.",
            rows(|c| &c.current),
        )?;
        counters(
            enc,
            "frontend_connections",
            "Client connections accepted.",
            rows(|c| &c.total),
        )?;
        counters(
            enc,
            "frontend_bytes_in",
            "Bytes received from clients.",
            rows(|c| &c.bytes_in),
        )?;
        counters(
            enc,
            "frontend_bytes_out",
            "Bytes sent to clients.",
            rows(|c| &c.bytes_out),
        )?;
        counters(
            enc,
            "frontend_connect_failures",
            "Client connections (L4) or requests (L7) given up after every connect attempt failed.",
            rows(|c| &c.connect_failed),
        )?;
        counters(
            enc,
            "frontend_no_server",
            "Client connections closed (L4) or answered 503 (L7) because no server was available.",
            rows(|c| &c.no_server),
        )?;
        counters(
            enc,
            "frontend_local_shortage",
            "Client connections closed (L4) or answered 503 (L7) because this host stayed out of \
             descriptors, memory or local ports for timeout_connect.",
            rows(|c| &c.local_shortage),
        )?;
        counters(
            enc,
            "frontend_retries",
            "Connect attempts retried after a failure.",
            rows(|c| &c.retries),
        )?;
        counters(
            enc,
            "frontend_redispatches",
            "Retries sent to another server.",
            rows(|c| &c.redispatches),
        )?;
        counters(
            enc,
            "frontend_http_requests",
            "HTTP requests received (http mode).",
            rows(|c| &c.requests),
        )?;
        counters(
            enc,
            "frontend_http_responses",
            "HTTP responses sent to clients by status class (http mode).",
            fes.iter().flat_map(|(l, c)| {
                CODES
                    .iter()
                    .zip(&c.responses)
                    .map(move |(code, n)| ((l.as_slice(), [("code", *code)]), get(n)))
            }),
        )?;
        let available: Vec<(Labels, usize)> = self
            .checked
            .iter()
            .map(|f| (vec![("frontend", escape(&f.name))], f.available()))
            .collect();
        gauges(
            enc,
            "frontend_servers_available",
            "Servers that take new connections: healthy and neither drained nor disabled.",
            available.iter().map(|(l, n)| (l.as_slice(), *n as u64)),
        )
    }

    fn encode_servers(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let servers: Vec<(Labels, &ServerState)> = self
            .checked
            .iter()
            .flat_map(|f| {
                let frontend = escape(&f.name);
                f.servers.iter().map(move |s| {
                    let labels = vec![
                        ("frontend", frontend.clone()),
                        ("server", escape(&s.state.name)),
                    ];
                    (labels, &*s.state)
                })
            })
            .collect();
        let rows = |pick: fn(&healthcheck::ServerCounters) -> &AtomicU64| {
            servers
                .iter()
                .map(move |(l, s)| (l.as_slice(), get(pick(&s.counters))))
        };
        gauges(
            enc,
            "server_up",
            "1 if the health checks say the server is up (whatever its admin state), else 0.",
            servers
                .iter()
                .map(|(l, s)| (l.as_slice(), u64::from(s.health() == Health::Up))),
        )?;
        gauges(
            enc,
            "server_state",
            "1 for the server's state as /status shows it (up, down, drain, maint), 0 for the others.",
            servers.iter().flat_map(|(l, s)| {
                let now = healthcheck::status::server_state(s);
                SERVER_STATES
                    .iter()
                    .map(move |st| ((l.as_slice(), [("state", *st)]), u64::from(*st == now)))
            }),
        )?;
        gauges(
            enc,
            "server_current_connections",
            "Connections (L4) or requests (L7) in flight to the server.",
            rows(|c| &c.current),
        )?;
        counters(
            enc,
            "server_connections",
            "Connections (L4) or requests (L7) sent to the server.",
            rows(|c| &c.total),
        )?;
        counters(
            enc,
            "server_bytes_sent",
            "Bytes sent to the server.",
            rows(|c| &c.bytes_to_server),
        )?;
        counters(
            enc,
            "server_bytes_received",
            "Bytes received from the server.",
            rows(|c| &c.bytes_from_server),
        )?;
        counters(
            enc,
            "server_connect_failures",
            "Connects to the server refused, timed out or failed.",
            rows(|c| &c.connect_failures),
        )?;
        counters(
            enc,
            "server_resets",
            "Connections reset or broken by the server mid-stream.",
            rows(|c| &c.resets),
        )?;
        counters(
            enc,
            "server_timeouts",
            "Connections (L4) or requests (L7) on which the server made no progress for timeout_server.",
            rows(|c| &c.timeouts),
        )?;
        counters(
            enc,
            "server_retries",
            "Retries made after a failed connect to the server.",
            rows(|c| &c.retries),
        )?;
        counters(
            enc,
            "server_redispatches",
            "Connections sent to another server after a failed connect to this one.",
            rows(|c| &c.redispatches),
        )?;
        counters(
            enc,
            "server_checks",
            "Active health checks completed.",
            rows(|c| &c.checks),
        )?;
        counters(
            enc,
            "server_check_failures",
            "Active health checks failed.",
            rows(|c| &c.check_failures),
        )?;
        gauges(
            enc,
            "server_check_duration_seconds",
            "Duration of the last active health check (absent before the first).",
            servers.iter().filter_map(|(l, s)| {
                s.last_check()
                    .map(|r| (l.as_slice(), r.duration.as_secs_f64()))
            }),
        )?;
        counters(
            enc,
            "server_transitions",
            "Changes between up and down.",
            rows(|c| &c.transitions),
        )?;
        gauges(
            enc,
            "server_down",
            "1 for why the server is down (check: failed active checks, errors: error_limit \
             consecutive proxy errors, unresolved: its host name has no address), 0 for the \
             others; all 0 while it is up.",
            servers.iter().flat_map(|(l, s)| {
                let now = s.why_down().map(DownReason::as_str);
                DOWN_REASONS
                    .iter()
                    .map(move |r| ((l.as_slice(), [("reason", *r)]), u64::from(now == Some(*r))))
            }),
        )?;
        gauges(
            enc,
            "server_consecutive_errors",
            "Proxy errors in a row on the server now (any exchange that goes well resets it).",
            servers
                .iter()
                .map(|(l, s)| (l.as_slice(), u64::from(s.consecutive_errors()))),
        )?;
        counters(
            enc,
            "server_ejections",
            "Times error_limit consecutive proxy errors took the server down.",
            rows(|c| &c.ejections),
        )?;
        counters(
            enc,
            "server_sessions_cut",
            "Established connections cut because the server went down (on_down = \"shutdown_sessions\").",
            rows(|c| &c.sessions_cut),
        )?;
        gauges(
            enc,
            "server_pg_role",
            "1 for the role a postgres check last saw the server in (primary, standby), 0 for \
             the other; absent for other checks and before a postgres check got that far.",
            servers.iter().flat_map(|(l, s)| {
                let now = s.role().map(|r| r.as_str());
                PG_ROLES
                    .iter()
                    .filter(move |_| now.is_some())
                    .map(move |r| ((l.as_slice(), [("role", *r)]), u64::from(now == Some(*r))))
            }),
        )?;
        counters(
            enc,
            "server_pg_role_changes",
            "Times a postgres check found the server in another role than the check before \
             (a promotion, a demotion).",
            rows(|c| &c.role_changes),
        )
    }

    fn encode_vrrp(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let inst: Vec<(Labels, &vrrp::InstanceStatus)> = self
            .vrrp
            .iter()
            .map(|i| {
                let labels = vec![
                    ("instance", escape(&i.name)),
                    ("vrid", i.vrid.to_string()),
                    ("interface", escape(&i.interface)),
                ];
                (labels, i)
            })
            .collect();
        gauges(
            enc,
            "vrrp_state",
            "1 for the instance's current state (INIT, BACKUP, MASTER, FAULT), 0 for the others.",
            per_state(&inst, |i, st| u64::from(st == i.state)),
        )?;
        gauges(
            enc,
            "vrrp_configured_priority",
            "Priority as configured.",
            inst.iter()
                .map(|(l, i)| (l.as_slice(), u64::from(i.configured_priority))),
        )?;
        gauges(
            enc,
            "vrrp_effective_priority",
            "Priority advertised now: the configured one plus track weights.",
            inst.iter()
                .map(|(l, i)| (l.as_slice(), u64::from(i.priority))),
        )?;
        counters(
            enc,
            "vrrp_adverts_sent",
            "Advertisements sent.",
            inst.iter().map(|(l, i)| (l.as_slice(), i.stats.tx)),
        )?;
        counters(
            enc,
            "vrrp_adverts_received",
            "Advertisements received and accepted.",
            inst.iter().map(|(l, i)| (l.as_slice(), i.stats.rx_ok)),
        )?;
        counters(
            enc,
            "vrrp_packets_rejected",
            "Received VRRP packets dropped, by reason.",
            inst.iter().flat_map(|(l, i)| {
                Reject::ALL.iter().map(move |r| {
                    (
                        (l.as_slice(), [("reason", r.as_str())]),
                        i.stats.rejected(*r),
                    )
                })
            }),
        )?;
        counters(
            enc,
            "vrrp_vip_mismatch",
            "Accepted advertisements whose address list differs from ours.",
            inst.iter()
                .map(|(l, i)| (l.as_slice(), i.stats.vip_mismatch)),
        )?;
        counters(
            enc,
            "vrrp_master_transitions",
            "Transitions to MASTER.",
            inst.iter()
                .map(|(l, i)| (l.as_slice(), i.stats.became_master())),
        )?;
        counters(
            enc,
            "vrrp_transitions",
            "State changes, by the state entered.",
            per_state(&inst, |i, st| i.stats.transitions[st.index()]),
        )?;
        // auth_hmac: its drops are reasons of vrrp_packets_rejected (hmac_bad, ...).
        let hmac: Vec<&(Labels, &vrrp::InstanceStatus)> =
            inst.iter().filter(|(_, i)| i.auth_hmac.is_some()).collect();
        gauges(
            enc,
            "vrrp_hmac_active_key",
            "auth_hmac: id of the key this instance signs with (the same on every host once a rotation is done).",
            hmac.iter().map(|(l, i)| {
                (
                    l.as_slice(),
                    i.auth_hmac.as_ref().map_or(0, |h| u64::from(h.active_key)),
                )
            }),
        )?;
        counters(
            enc,
            "vrrp_hmac_unsigned_accepted",
            "auth_hmac receive-only or permissive: adverts accepted without a trailer (a host that does not sign yet).",
            hmac.iter().map(|(l, i)| (l.as_slice(), i.stats.hmac_unsigned)),
        )?;
        counters(
            enc,
            "vrrp_hmac_clock_skew_high",
            "auth_hmac time mode: adverts accepted with a clock skew past half the window (check NTP).",
            hmac.iter().map(|(l, i)| (l.as_slice(), i.stats.hmac_skew_high)),
        )
    }
}

impl Scrape {
    fn encode_announce(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let blocks: Vec<(Labels, &crate::status::AnnounceStatus)> = self
            .announce
            .iter()
            .map(|a| {
                let labels = vec![
                    ("announce", escape(&a.name)),
                    ("interface", escape(&a.interface)),
                ];
                (labels, a)
            })
            .collect();
        gauges(
            enc,
            "announce_announced",
            "1 while the block's VIPs are offered to the routing daemon (VIP interface carrier on), 0 while withdrawn.",
            blocks.iter().map(|(l, a)| {
                (
                    l.as_slice(),
                    u64::from(a.state == announce::State::Announced),
                )
            }),
        )?;
        counters(
            enc,
            "announce_transitions",
            "Announcements and withdrawals, by the state entered.",
            blocks.iter().flat_map(|(l, a)| {
                [("announced", a.announcements), ("withdrawn", a.withdrawals)]
                    .into_iter()
                    .map(move |(st, n)| ((l.as_slice(), [("state", st)]), n))
            }),
        )?;
        gauges(
            enc,
            "announce_state_seconds",
            "Seconds since the block last changed state (or started).",
            blocks.iter().map(|(l, a)| (l.as_slice(), a.for_seconds)),
        )
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// One counter family: the encoder appends `_total` to `name`.
fn counters<L: EncodeLabelSet, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// An instance's labels plus one `state` label.
type StateLabels<'a> = (
    &'a [(&'static str, String)],
    [(&'static str, &'static str); 1],
);

/// One row per instance and state: the instance's labels plus `state`, and `f`'s value.
fn per_state<'a>(
    inst: &'a [(Labels, &'a vrrp::InstanceStatus)],
    f: impl Fn(&vrrp::InstanceStatus, State) -> u64 + Copy + 'a,
) -> impl Iterator<Item = (StateLabels<'a>, u64)> + 'a {
    inst.iter().flat_map(move |(l, i)| {
        State::ALL
            .iter()
            .map(move |st| ((l.as_slice(), [("state", st.as_str())]), f(i, *st)))
    })
}

/// One gauge family.
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A label value as the text format wants it: `prometheus-client` writes values verbatim, and
/// names come from the config, where nothing forbids `"` or `\`.
fn escape(v: &str) -> String {
    if !v.contains(['\\', '"', '\n']) {
        return v.to_owned();
    }
    let mut out = String::with_capacity(v.len() + 2);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use healthcheck::{Admin, CheckConfig, CheckReport, CheckResult, ProxyError, Server};
    use vrrp::machine::Stats;

    use super::super::test_fixtures::{one_frontend, OneFrontend};
    use super::*;

    /// One parsed sample line.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct Sample {
        pub(crate) name: String,
        pub(crate) labels: BTreeMap<String, String>,
        pub(crate) value: f64,
    }

    /// Parses the OpenMetrics text strictly enough to catch a malformed line: every sample
    /// belongs to a family declared by `# TYPE` before it, label values are quoted and
    /// escaped, the body ends with `# EOF`.
    pub(crate) fn parse(text: &str) -> Vec<Sample> {
        assert!(text.ends_with("# EOF\n"), "ends with # EOF: {text}");
        let mut families: BTreeMap<String, String> = BTreeMap::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if line == "# EOF" {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(
                    ["counter", "gauge"].contains(&kind),
                    "unexpected type: {line}"
                );
                assert!(
                    families.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "family declared twice: {name}"
                );
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unknown comment: {line}");
            out.push(parse_sample(line));
            let s = out.last().expect("just pushed");
            let family = match families.get(&s.name) {
                Some(k) => {
                    assert_eq!(k, "gauge", "{line}");
                    &s.name
                }
                None => {
                    let base = s.name.strip_suffix("_total").expect("a counter");
                    assert_eq!(
                        families.get(base).map(String::as_str),
                        Some("counter"),
                        "{line}"
                    );
                    base
                }
            };
            assert!(family.starts_with("maas_vip_"), "{line}");
        }
        out
    }

    fn parse_sample(line: &str) -> Sample {
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices();
            loop {
                let (start, _) = chars.next().expect("label or }");
                if r[start..].starts_with('}') {
                    rest = &r[start + 1..];
                    break;
                }
                let eq = r[start..].find("=\"").expect("key=\"") + start;
                let key = r[start..eq].trim_start_matches(',').to_owned();
                // Skip past `="`.
                while chars.next().map(|(i, _)| i) != Some(eq + 1) {}
                let mut value = String::new();
                loop {
                    match chars.next().expect("closing quote") {
                        (_, '"') => break,
                        (_, '\\') => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c}: {line}"),
                        },
                        (_, c) => value.push(c),
                    }
                }
                assert!(labels.insert(key, value).is_none(), "label twice: {line}");
            }
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("space before the value: {line}"));
        Sample {
            name: name.to_owned(),
            labels,
            value: value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}")),
        }
    }

    /// The value of the one sample `name` whose labels include `want`.
    pub(crate) fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
        found[0].value
    }

    fn scrape() -> (Scrape, Arc<lb::Frontend>, Vec<Arc<ServerState>>) {
        let OneFrontend {
            states,
            checked,
            proxy: fe,
        } = one_frontend("r\"2\\");
        let mut stats = Stats {
            tx: 12,
            rx_ok: 3,
            transitions: [0, 1, 1, 0],
            ..Stats::default()
        };
        stats.rejected[Reject::AuthPass as usize] = 2;
        stats.rejected[Reject::HmacReplay as usize] = 6;
        stats.hmac_unsigned = 9;
        let snap = Scrape {
            proxies: Arc::new(vec![fe.clone()]),
            checked: Arc::new(vec![Arc::new(checked)]),
            vrrp: vec![vrrp::InstanceStatus {
                name: "maas_region".into(),
                interface: "eth0".into(),
                vrid: 51,
                state: State::Master,
                priority: 130,
                configured_priority: 150,
                stats,
                auth_hmac: Some(vrrp::auth_hmac::Summary {
                    mode: vrrp::auth_hmac::Mode::Enforce,
                    active_key: 2,
                    key_ids: vec![1, 2],
                    time_window: None,
                }),
            }],
            announce: vec![crate::status::AnnounceStatus {
                name: "bgp".into(),
                interface: "maas-vip0".into(),
                vips: vec!["10.0.0.100/32".into()],
                state: announce::State::Announced,
                reason: "healthy".into(),
                why: announce::Reason::Healthy,
                since: "2026-01-01T00:00:00.000Z".into(),
                for_seconds: 12.5,
                announcements: 2,
                withdrawals: 1,
                link: None,
                frr: None,
                frr_error: None,
            }],
        };
        (snap, fe, states)
    }

    #[test]
    fn text_parses_and_shows_every_series() {
        let (snap, _, _) = scrape();
        let text = render_scrape(snap);
        let samples = parse(&text);
        let names: std::collections::BTreeSet<&str> =
            samples.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "maas_vip_frontend_current_connections",
            "maas_vip_frontend_connections_total",
            "maas_vip_frontend_bytes_in_total",
            "maas_vip_frontend_bytes_out_total",
            "maas_vip_frontend_connect_failures_total",
            "maas_vip_frontend_no_server_total",
            "maas_vip_frontend_local_shortage_total",
            "maas_vip_frontend_retries_total",
            "maas_vip_frontend_redispatches_total",
            "maas_vip_frontend_http_requests_total",
            "maas_vip_frontend_http_responses_total",
            "maas_vip_frontend_servers_available",
            "maas_vip_server_up",
            "maas_vip_server_state",
            "maas_vip_server_current_connections",
            "maas_vip_server_connections_total",
            "maas_vip_server_bytes_sent_total",
            "maas_vip_server_bytes_received_total",
            "maas_vip_server_connect_failures_total",
            "maas_vip_server_resets_total",
            "maas_vip_server_timeouts_total",
            "maas_vip_server_down",
            "maas_vip_server_consecutive_errors",
            "maas_vip_server_ejections_total",
            "maas_vip_server_retries_total",
            "maas_vip_server_redispatches_total",
            "maas_vip_server_checks_total",
            "maas_vip_server_check_failures_total",
            "maas_vip_server_transitions_total",
            "maas_vip_vrrp_state",
            "maas_vip_vrrp_configured_priority",
            "maas_vip_vrrp_effective_priority",
            "maas_vip_vrrp_adverts_sent_total",
            "maas_vip_vrrp_adverts_received_total",
            "maas_vip_vrrp_packets_rejected_total",
            "maas_vip_vrrp_vip_mismatch_total",
            "maas_vip_vrrp_master_transitions_total",
            "maas_vip_vrrp_transitions_total",
            "maas_vip_vrrp_hmac_active_key",
            "maas_vip_vrrp_hmac_unsigned_accepted_total",
            "maas_vip_vrrp_hmac_clock_skew_high_total",
            "maas_vip_announce_announced",
            "maas_vip_announce_transitions_total",
            "maas_vip_announce_state_seconds",
        ] {
            assert!(names.contains(want), "{want} missing from:\n{text}");
        }
        // Label names are exactly these.
        for s in &samples {
            let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            let expected: &[&str] = if s.name.starts_with("maas_vip_frontend_http_responses") {
                &["code", "frontend"]
            } else if s.name.starts_with("maas_vip_frontend_") {
                &["frontend"]
            } else if s.name == "maas_vip_server_state" {
                &["frontend", "server", "state"]
            } else if s.name == "maas_vip_server_down" {
                &["frontend", "reason", "server"]
            } else if s.name.starts_with("maas_vip_server_") {
                &["frontend", "server"]
            } else if s.name == "maas_vip_vrrp_state" || s.name == "maas_vip_vrrp_transitions_total"
            {
                &["instance", "interface", "state", "vrid"]
            } else if s.name == "maas_vip_vrrp_packets_rejected_total" {
                &["instance", "interface", "reason", "vrid"]
            } else if s.name == "maas_vip_announce_transitions_total" {
                &["announce", "interface", "state"]
            } else if s.name.starts_with("maas_vip_announce_") {
                &["announce", "interface"]
            } else {
                &["instance", "interface", "vrid"]
            };
            assert_eq!(keys, expected, "{s:?}");
        }
        // No check has run yet: no duration.
        assert!(!names.contains("maas_vip_server_check_duration_seconds"));
        // A name with a quote and a backslash survives the round trip.
        let r2 = [("frontend", "maas"), ("server", "r\"2\\")];
        assert_eq!(value(&samples, "maas_vip_server_up", &r2), 1.0);

        let vr = [
            ("instance", "maas_region"),
            ("vrid", "51"),
            ("interface", "eth0"),
        ];
        // One series per state of the instance: `name` with `state="..."` beside `vr`.
        let per_state = |name: &str, s: &str| {
            let mut l = vr.to_vec();
            l.push(("state", s));
            value(&samples, name, &l)
        };
        let bgp = [("announce", "bgp"), ("interface", "maas-vip0")];
        assert_eq!(value(&samples, "maas_vip_announce_announced", &bgp), 1.0);
        assert_eq!(
            value(&samples, "maas_vip_announce_state_seconds", &bgp),
            12.5
        );
        for (st, n) in [("announced", 2.0), ("withdrawn", 1.0)] {
            let mut l = bgp.to_vec();
            l.push(("state", st));
            assert_eq!(
                value(&samples, "maas_vip_announce_transitions_total", &l),
                n
            );
        }
        let state = |s: &str| per_state("maas_vip_vrrp_state", s);
        assert_eq!(state("MASTER"), 1.0);
        assert_eq!(state("BACKUP"), 0.0);
        assert_eq!(state("INIT"), 0.0);
        assert_eq!(state("FAULT"), 0.0);
        assert_eq!(
            value(&samples, "maas_vip_vrrp_effective_priority", &vr),
            130.0
        );
        assert_eq!(
            value(&samples, "maas_vip_vrrp_configured_priority", &vr),
            150.0
        );
        assert_eq!(
            value(&samples, "maas_vip_vrrp_adverts_sent_total", &vr),
            12.0
        );
        assert_eq!(
            value(&samples, "maas_vip_vrrp_adverts_received_total", &vr),
            3.0
        );
        let mut auth = vr.to_vec();
        auth.push(("reason", "auth_pass"));
        assert_eq!(
            value(&samples, "maas_vip_vrrp_packets_rejected_total", &auth),
            2.0
        );
        let rejected: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == "maas_vip_vrrp_packets_rejected_total")
            .collect();
        assert_eq!(rejected.len(), Reject::ALL.len(), "every reason, zeros too");
        let mut replay = vr.to_vec();
        replay.push(("reason", "hmac_replay"));
        assert_eq!(
            value(&samples, "maas_vip_vrrp_packets_rejected_total", &replay),
            6.0
        );
        assert_eq!(value(&samples, "maas_vip_vrrp_hmac_active_key", &vr), 2.0);
        assert_eq!(
            value(&samples, "maas_vip_vrrp_hmac_unsigned_accepted_total", &vr),
            9.0
        );
        assert_eq!(
            value(&samples, "maas_vip_vrrp_master_transitions_total", &vr),
            1.0
        );
        let entered = |s: &str| per_state("maas_vip_vrrp_transitions_total", s);
        assert_eq!(entered("BACKUP"), 1.0);
        assert_eq!(entered("MASTER"), 1.0);
        assert_eq!(entered("FAULT"), 0.0);
        assert_eq!(entered("INIT"), 0.0);
    }

    #[test]
    fn values_follow_the_counters() {
        let (snap, fe, states) = scrape();
        let f = [("frontend", "maas")];
        let r1 = [("frontend", "maas"), ("server", "r1")];
        let before = parse(&render_scrape(Scrape {
            proxies: snap.proxies.clone(),
            checked: snap.checked.clone(),
            vrrp: Vec::new(),
            announce: Vec::new(),
        }));
        assert_eq!(
            value(&before, "maas_vip_frontend_connections_total", &f),
            0.0
        );
        assert_eq!(
            value(&before, "maas_vip_frontend_servers_available", &f),
            2.0
        );

        let c = &fe.counters;
        c.total.fetch_add(5, Ordering::Relaxed);
        c.current.fetch_add(2, Ordering::Relaxed);
        c.bytes_in.fetch_add(1000, Ordering::Relaxed);
        c.bytes_out
            .fetch_add(u64::from(u32::MAX) + 1, Ordering::Relaxed);
        c.no_server.fetch_add(1, Ordering::Relaxed);
        c.local_shortage.fetch_add(7, Ordering::Relaxed);
        c.connect_failed.fetch_add(4, Ordering::Relaxed);
        c.retries.fetch_add(6, Ordering::Relaxed);
        c.redispatches.fetch_add(3, Ordering::Relaxed);
        c.requests.fetch_add(9, Ordering::Relaxed);
        c.count_status(200);
        c.count_status(204);
        c.count_status(503);
        c.count_status(42);
        let s = &states[0];
        let n = &s.counters;
        n.current.fetch_add(1, Ordering::Relaxed);
        n.total.fetch_add(8, Ordering::Relaxed);
        n.bytes_to_server.fetch_add(10, Ordering::Relaxed);
        n.bytes_from_server.fetch_add(20, Ordering::Relaxed);
        n.retries.fetch_add(2, Ordering::Relaxed);
        n.redispatches.fetch_add(1, Ordering::Relaxed);
        s.observe_error(ProxyError::Refused);
        s.observe_error(ProxyError::Reset);
        s.observe_error(ProxyError::Timeout);
        s.record_check(CheckReport {
            result: CheckResult::Refused,
            duration: Duration::from_millis(250),
            at: SystemTime::now(),
            progress: None,
        });
        s.set_health(Health::Down);
        states[1].set_admin(Admin::Drain);

        let snap2 = Scrape {
            proxies: snap.proxies.clone(),
            checked: snap.checked.clone(),
            vrrp: Vec::new(),
            announce: Vec::new(),
        };
        let after = parse(&render_scrape(snap));
        let v = |name: &str, l: &[(&str, &str)]| value(&after, name, l);
        assert_eq!(v("maas_vip_frontend_connections_total", &f), 5.0);
        assert_eq!(v("maas_vip_frontend_current_connections", &f), 2.0);
        assert_eq!(v("maas_vip_frontend_bytes_in_total", &f), 1000.0);
        assert_eq!(v("maas_vip_frontend_bytes_out_total", &f), 4294967296.0);
        assert_eq!(v("maas_vip_frontend_no_server_total", &f), 1.0);
        assert_eq!(v("maas_vip_frontend_local_shortage_total", &f), 7.0);
        assert_eq!(v("maas_vip_frontend_connect_failures_total", &f), 4.0);
        assert_eq!(v("maas_vip_frontend_retries_total", &f), 6.0);
        assert_eq!(v("maas_vip_frontend_redispatches_total", &f), 3.0);
        assert_eq!(v("maas_vip_frontend_http_requests_total", &f), 9.0);
        let code = |c: &str| {
            v(
                "maas_vip_frontend_http_responses_total",
                &[f[0], ("code", c)],
            )
        };
        assert_eq!(code("2xx"), 2.0);
        assert_eq!(code("5xx"), 1.0);
        assert_eq!(code("other"), 1.0);
        assert_eq!(code("1xx"), 0.0);
        assert_eq!(v("maas_vip_frontend_servers_available", &f), 0.0);

        assert_eq!(v("maas_vip_server_up", &r1), 0.0);
        let state = |l: &[(&str, &str)], s: &str| {
            let mut l = l.to_vec();
            l.push(("state", s));
            v("maas_vip_server_state", &l)
        };
        assert_eq!(state(&r1, "down"), 1.0);
        assert_eq!(state(&r1, "up"), 0.0);
        let r2 = [("frontend", "maas"), ("server", "r\"2\\")];
        assert_eq!(state(&r2, "drain"), 1.0);
        assert_eq!(v("maas_vip_server_up", &r2), 1.0, "drained but healthy");
        assert_eq!(v("maas_vip_server_current_connections", &r1), 1.0);
        assert_eq!(v("maas_vip_server_connections_total", &r1), 8.0);
        assert_eq!(v("maas_vip_server_bytes_sent_total", &r1), 10.0);
        assert_eq!(v("maas_vip_server_bytes_received_total", &r1), 20.0);
        assert_eq!(v("maas_vip_server_connect_failures_total", &r1), 1.0);
        assert_eq!(v("maas_vip_server_resets_total", &r1), 1.0);
        assert_eq!(v("maas_vip_server_timeouts_total", &r1), 1.0);
        assert_eq!(v("maas_vip_server_consecutive_errors", &r1), 3.0);
        assert_eq!(v("maas_vip_server_ejections_total", &r1), 0.0);
        let down = |l: &[(&str, &str)], r: &str| {
            let mut l = l.to_vec();
            l.push(("reason", r));
            v("maas_vip_server_down", &l)
        };
        assert_eq!(down(&r1, "check"), 1.0);
        assert_eq!(down(&r1, "errors"), 0.0);
        assert_eq!(down(&r2, "check"), 0.0, "up");
        assert_eq!(down(&r2, "errors"), 0.0, "up");
        // Errors take r2 down: the reason and the counter say so.
        for _ in 0..10 {
            states[1].observe_error(ProxyError::Refused);
        }
        let again = parse(&render_scrape(snap2));
        let v2 = |name: &str, l: &[(&str, &str)]| value(&again, name, l);
        let mut errors = r2.to_vec();
        errors.push(("reason", "errors"));
        assert_eq!(v2("maas_vip_server_down", &errors), 1.0);
        assert_eq!(v2("maas_vip_server_ejections_total", &r2), 1.0);
        assert_eq!(v2("maas_vip_server_consecutive_errors", &r2), 0.0);
        assert_eq!(v("maas_vip_server_retries_total", &r1), 2.0);
        assert_eq!(v("maas_vip_server_redispatches_total", &r1), 1.0);
        assert_eq!(v("maas_vip_server_checks_total", &r1), 1.0);
        assert_eq!(v("maas_vip_server_check_failures_total", &r1), 1.0);
        assert_eq!(v("maas_vip_server_check_duration_seconds", &r1), 0.25);
        assert_eq!(v("maas_vip_server_transitions_total", &r1), 1.0);
        assert!(
            !after.iter().any(|s| s.name.starts_with("maas_vip_vrrp_")
                && s.labels.contains_key("instance")
                && s.labels["instance"] != "maas_region"),
            "only the instance given"
        );
    }

    #[test]
    fn an_unresolved_server_is_down_as_in_status() {
        let named = Arc::new(ServerState::with_target(
            "r1",
            healthcheck::Target::Name {
                host: "nosuch.example".into(),
                port: 5240,
            },
            false,
        ));
        named.set_resolution(named.resolution().next(
            Err("Name or service not known".into()),
            std::time::Instant::now(),
            SystemTime::now(),
        ));
        let checked = healthcheck::CheckedFrontend::new(
            "maas",
            CheckConfig::default(),
            vec![Server::new(named.clone(), true)],
        );
        let status = healthcheck::status::FrontendHealth::from(&checked);
        assert_eq!(status.servers[0].state, "down", "/status");
        let samples = parse(&render_scrape(Scrape {
            proxies: Arc::new(Vec::new()),
            checked: Arc::new(vec![Arc::new(checked)]),
            vrrp: Vec::new(),
            announce: Vec::new(),
        }));
        let r1 = [("frontend", "maas"), ("server", "r1")];
        let with = |k: &'static str, v: &'static str| {
            let mut l = r1.to_vec();
            l.push((k, v));
            l
        };
        assert_eq!(
            value(&samples, "maas_vip_server_state", &with("state", "down")),
            1.0
        );
        assert_eq!(
            value(&samples, "maas_vip_server_state", &with("state", "up")),
            0.0
        );
        assert_eq!(
            value(
                &samples,
                "maas_vip_server_down",
                &with("reason", "unresolved")
            ),
            1.0
        );
    }

    #[test]
    fn escape_label_values() {
        assert_eq!(escape("maas-api-1"), "maas-api-1");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
