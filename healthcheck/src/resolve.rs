//! Server addresses written as host names: parsing, and resolution at start and every
//! `resolve_interval` after (HAProxy's `init-addr libc` plus a `resolvers` section's
//! `hold valid`).
//!
//! Resolution goes through the C library (`getaddrinfo`), so `/etc/hosts`, `nsswitch.conf` and
//! `gai.conf` apply as they do for every other program on the host. What each resolution found
//! is folded into the server's [`Resolution`] by [`Resolution::next`], without I/O or clock:
//!
//! - a name that resolves keeps its current address while that address is still among the
//!   answers (as HAProxy does), else takes the first answer (the C library's preference order);
//! - a name that stops resolving keeps its last address for [`RESOLVE_HOLD`] (HAProxy's `hold
//!   nx`/`hold other` default, 30 s), so a DNS blip does not take every region down; after that,
//!   or if it never resolved, the server has no address and is DOWN with the reason
//!   (`unresolved: ...`) in `/status`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::state::ServerState;

/// How long a name that stops resolving keeps its last address (HAProxy's `hold nx` and `hold
/// other` defaults).
pub const RESOLVE_HOLD: Duration = Duration::from_secs(30);

/// How long one resolution may take before it counts as failed (HAProxy's `timeout resolve`
/// is 1 s per query; the C library may try several servers and both families).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default interval between two resolutions of a name (HAProxy's `hold valid` default).
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

/// Where a server is, as the config writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// An IP address and port (`10.0.0.11:5240`, `[fd00::11]:5240`).
    Addr(SocketAddr),
    /// A host name and port (`maas-api-1.example:5240`, `localhost:5240`).
    Name {
        /// The name, as written.
        host: String,
        port: u16,
    },
}

impl Target {
    /// Parses `host:port`, `ip:port` or `[ipv6]:port`. The error says what is expected.
    pub fn parse(s: &str) -> Result<Target, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return check_unicast(a, s).map(Target::Addr);
        }
        let expected = "expected `host:port`, `ip:port` or `[ipv6]:port`, e.g. \
                        \"maas-api-1.example:5240\"";
        let bracketed = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if s.parse::<IpAddr>().is_ok() || bracketed.is_some_and(|r| r.parse::<IpAddr>().is_ok()) {
            return Err(format!("server address `{s}` needs a port ({expected})"));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("server address `{s}` needs a port ({expected})"));
        };
        if host.starts_with('[') || host.contains(':') {
            return Err(format!("server address `{s}` is not valid ({expected})"));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(format!(
                    "server address `{s}`: port `{port}` must be 1..=65535 ({expected})"
                ))
            }
        };
        if let Err(why) = check_host_name(host) {
            return Err(format!("server address `{s}`: {why} ({expected})"));
        }
        Ok(Target::Name {
            host: host.to_string(),
            port,
        })
    }

    pub fn port(&self) -> u16 {
        match self {
            Target::Addr(a) => a.port(),
            Target::Name { port, .. } => *port,
        }
    }

    /// The host name, if it is one.
    pub fn host(&self) -> Option<&str> {
        match self {
            Target::Addr(_) => None,
            Target::Name { host, .. } => Some(host),
        }
    }

    /// Whether it names this host's loopback (`localhost`, `127.x.y.z`, `::1`): a different
    /// region on each host that runs the config.
    pub fn is_loopback(&self) -> bool {
        match self {
            Target::Addr(a) => a.ip().is_loopback(),
            Target::Name { host, .. } => {
                let h = host.trim_end_matches('.').to_ascii_lowercase();
                h == "localhost"
                    || h.ends_with(".localhost")
                    || h == "localhost.localdomain"
                    || h == "ip6-localhost"
                    || h == "ip6-loopback"
            }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => a.fmt(f),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

fn check_unicast(a: SocketAddr, s: &str) -> Result<SocketAddr, String> {
    if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
        return Err(format!(
            "server address `{s}` must be a unicast address with a port"
        ));
    }
    Ok(a)
}

/// RFC 1123 host name syntax: dot-separated labels of letters, digits and hyphens, 1..=63
/// bytes each, no hyphen at either end, 253 bytes in all; the last label is not all digits
/// (that would be a mistyped IPv4 address).
fn check_host_name(host: &str) -> Result<(), String> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() {
        return Err("the host is empty".into());
    }
    if h.len() > 253 {
        return Err("the host name is longer than 253 bytes".into());
    }
    for label in h.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("`{host}` is neither an IP address nor a host name"));
        }
    }
    if h.rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("`{host}` is not a valid IP address"));
    }
    Ok(())
}

/// What the last resolutions of a server's name found. Fixed for an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Where connections and checks go now; `None`: nowhere (the server is DOWN).
    pub address: Option<SocketAddr>,
    /// Why the last resolution failed; `None` if it succeeded.
    pub error: Option<String>,
    /// When the name last resolved (wall clock, for `/status`).
    pub resolved_at: Option<SystemTime>,
    /// Since when resolutions fail (monotonic, for [`RESOLVE_HOLD`]).
    failing_since: Option<Instant>,
}

impl Resolution {
    /// A fixed address.
    pub fn fixed(address: SocketAddr) -> Resolution {
        Resolution {
            address: Some(address),
            error: None,
            resolved_at: None,
            failing_since: None,
        }
    }

    /// A name before its first resolution.
    pub fn pending() -> Resolution {
        Resolution {
            address: None,
            error: Some("not resolved yet".into()),
            resolved_at: None,
            failing_since: None,
        }
    }

    /// The state after one more resolution that found `answer` (the addresses, in the C
    /// library's order, or why it failed) at `now`.
    pub fn next(
        &self,
        answer: Result<Vec<SocketAddr>, String>,
        now: Instant,
        wall: SystemTime,
    ) -> Resolution {
        let answer = answer.and_then(|a| {
            if a.is_empty() {
                Err("no address".to_string())
            } else {
                Ok(a)
            }
        });
        match answer {
            Ok(addrs) => {
                let address = match self.address {
                    Some(cur) if addrs.contains(&cur) => cur,
                    _ => addrs[0],
                };
                Resolution {
                    address: Some(address),
                    error: None,
                    resolved_at: Some(wall),
                    failing_since: None,
                }
            }
            Err(e) => {
                let since = self.failing_since.unwrap_or(now);
                let hold = self
                    .address
                    .filter(|_| now.saturating_duration_since(since) < RESOLVE_HOLD);
                Resolution {
                    address: hold,
                    error: Some(e),
                    resolved_at: self.resolved_at,
                    failing_since: Some(since),
                }
            }
        }
    }
}

/// Resolves `host:port` through the C library, bounded by [`RESOLVE_TIMEOUT`].
pub async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {}s",
            RESOLVE_TIMEOUT.as_secs_f64()
        )),
    }
}

/// Resolves the name of `state` (if it has one) once and publishes the result; logs when the
/// address changes or the name stops (or starts again) resolving. `frontend` is for the log.
pub async fn resolve_now(frontend: &str, state: &ServerState) {
    let Target::Name { host, port } = state.target() else {
        return;
    };
    let answer = lookup(host, *port).await;
    let before = state.resolution();
    let after = before.next(answer, Instant::now(), SystemTime::now());
    let target = state.target();
    let server = &state.name;
    match (&before.address, &after.address, &after.error) {
        (_, Some(new), None) if before.address != Some(*new) => info!(
            frontend, server = %server, %target, address = %new,
            "server {frontend}/{server}: {target} resolves to {new}{}",
            before.address.map_or(String::new(), |o| format!(" (was {o})"))
        ),
        (_, Some(held), Some(e)) if before.error.as_ref() != Some(e) => warn!(
            frontend, server = %server, %target, address = %held, cause = %e,
            "server {frontend}/{server}: {target} does not resolve ({e}); keeping {held} for up \
             to {}s", RESOLVE_HOLD.as_secs()
        ),
        (_, None, Some(e)) if before.address.is_some() || before.error.as_ref() != Some(e) => {
            warn!(
                frontend, server = %server, %target, cause = %e,
                "server {frontend}/{server} is DOWN (unresolved: {target}: {e})"
            )
        }
        _ => {}
    }
    state.set_resolution(after);
}

/// Resolves every host name among `states` at once (at start and on reload, before traffic),
/// each bounded by [`RESOLVE_TIMEOUT`].
pub async fn resolve_all(frontend: &str, states: &[Arc<ServerState>]) {
    let mut set = JoinSet::new();
    for st in states.iter().filter(|s| s.target().host().is_some()) {
        let st = Arc::clone(st);
        let fe = frontend.to_string();
        set.spawn(async move { resolve_now(&fe, &st).await });
    }
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn parse_accepts_names_and_addresses() {
        assert_eq!(
            Target::parse("10.0.0.11:5240"),
            Ok(Target::Addr(sa("10.0.0.11:5240")))
        );
        assert_eq!(
            Target::parse("[fd00::11]:5240"),
            Ok(Target::Addr(sa("[fd00::11]:5240")))
        );
        assert_eq!(
            Target::parse("maas-api-1.example:5240"),
            Ok(Target::Name {
                host: "maas-api-1.example".into(),
                port: 5240
            })
        );
        let t = Target::parse("localhost:5240").expect("localhost");
        assert_eq!(t.to_string(), "localhost:5240");
        assert!(t.is_loopback());
        assert!(Target::parse("127.0.0.2:5240")
            .expect("literal")
            .is_loopback());
        assert!(!Target::parse("maas-api-1:5240")
            .expect("name")
            .is_loopback());
    }

    #[test]
    fn parse_refuses_bad_syntax() {
        for (s, why) in [
            ("10.0.0.11", "needs a port"),
            ("maas-api-1.example", "needs a port"),
            ("fd00::11", "needs a port"),
            ("fd00::11:5240", "needs a port"),
            ("[fd00::11]", "needs a port"),
            ("maas-api-1:http", "port `http` must be 1..=65535"),
            ("maas-api-1:0", "port `0` must be 1..=65535"),
            ("maas-api-1:70000", "port `70000` must be 1..=65535"),
            ("10.0.0.300:5240", "is not a valid IP address"),
            ("maas_api:5240", "neither an IP address nor a host name"),
            ("-maas:5240", "neither an IP address nor a host name"),
            ("a..b:5240", "neither an IP address nor a host name"),
            (":5240", "the host is empty"),
            ("[fd00::11:5240", "is not valid"),
            ("0.0.0.0:5240", "must be a unicast address"),
            ("10.0.0.11:0", "must be a unicast address"),
        ] {
            let e = Target::parse(s).expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn resolution_keeps_the_current_address_while_it_is_answered() {
        let t0 = Instant::now();
        let w = SystemTime::now();
        let r = Resolution::pending().next(Ok(vec![sa("10.0.0.2:1"), sa("10.0.0.1:1")]), t0, w);
        assert_eq!(r.address, Some(sa("10.0.0.2:1")));
        assert_eq!(r.error, None);
        let r = r.next(Ok(vec![sa("10.0.0.1:1"), sa("10.0.0.2:1")]), t0, w);
        assert_eq!(r.address, Some(sa("10.0.0.2:1")), "still answered: kept");
        let r = r.next(Ok(vec![sa("10.0.0.3:1")]), t0, w);
        assert_eq!(r.address, Some(sa("10.0.0.3:1")), "moved");
    }

    #[test]
    fn a_failing_name_keeps_its_address_for_the_hold_time_only() {
        let t0 = Instant::now();
        let w = SystemTime::now();
        let never = Resolution::pending().next(Err("not found".into()), t0, w);
        assert_eq!(never.address, None, "never resolved: no address");
        assert_eq!(never.error.as_deref(), Some("not found"));

        let ok = Resolution::pending().next(Ok(vec![sa("10.0.0.1:1")]), t0, w);
        let f1 = ok.next(Err("timeout".into()), t0 + Duration::from_secs(10), w);
        assert_eq!(f1.address, Some(sa("10.0.0.1:1")), "held");
        assert_eq!(f1.error.as_deref(), Some("timeout"));
        assert_eq!(f1.resolved_at, Some(w));
        let f2 = f1.next(Err("timeout".into()), t0 + Duration::from_secs(39), w);
        assert_eq!(f2.address, Some(sa("10.0.0.1:1")), "29 s of failures: held");
        let f3 = f2.next(Err("timeout".into()), t0 + Duration::from_secs(40), w);
        assert_eq!(f3.address, None, "30 s of failures: dropped");
        let back = f3.next(Ok(vec![sa("10.0.0.9:1")]), t0 + Duration::from_secs(50), w);
        assert_eq!(back.address, Some(sa("10.0.0.9:1")));
        assert_eq!(back.error, None);
        let f4 = back.next(Ok(vec![]), t0 + Duration::from_secs(60), w);
        assert_eq!(f4.error.as_deref(), Some("no address"));
        assert_eq!(
            f4.address,
            Some(sa("10.0.0.9:1")),
            "a new failure: held again"
        );
    }
}
