//! `[[frontend]]` blocks of maas-vip.toml and their `[[frontend.server]]` lists.

use std::net::SocketAddr;
use std::time::Duration;

use healthcheck::{CheckConfig, CheckOverride, Target};
use serde::{Deserialize, Deserializer};
use serde_spanned::Spanned;

/// A problem found in a config, located by the byte range of the value it is about.
pub type Problem = Spanned<String>;

/// One listening service and the servers it spreads connections over.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendConfig {
    /// Name used in logs, metrics and `track_backends`.
    pub name: Spanned<String>,
    /// Addresses to listen on. They may be the VIP: listeners use IP_FREEBIND.
    #[serde(default = "default_bind", deserialize_with = "de_bind")]
    pub bind: Spanned<Vec<SocketAddr>>,
    /// "tcp" (L4) or "http" (L7).
    #[serde(default)]
    pub mode: Mode,
    /// "roundrobin", "source" or "first".
    #[serde(default)]
    pub balance: Balance,
    /// What happens to established connections to a server that goes down (failed checks or
    /// consecutive errors): "keep" (default) lets them run; "shutdown_sessions" cuts them
    /// (HAProxy's `on-marked-down shutdown-sessions`), so that a database client stops
    /// writing to a demoted primary.
    #[serde(default)]
    pub on_down: OnDown,
    /// Connect attempts after the first one fails.
    #[serde(default = "default_retries", deserialize_with = "de_retries")]
    pub retries: u32,
    /// Send each retry to another server.
    #[serde(default = "yes")]
    pub redispatch: bool,
    /// Most connections handled at once; more wait in the kernel's accept queue.
    #[serde(default = "default_maxconn", deserialize_with = "de_maxconn")]
    pub maxconn: u32,
    /// Time allowed for a connect to a server.
    #[serde(default = "five_secs", with = "humantime_serde")]
    pub timeout_connect: Duration,
    /// Longest silence from the client while the proxy waits for it.
    #[serde(default = "thirty_secs", with = "humantime_serde")]
    pub timeout_client: Duration,
    /// Longest silence from the server while the proxy waits for it. The default, 900 s, is
    /// the region nginx's own `proxy_read_timeout` in front of regiond (and the charm's
    /// HAProxy `timeout server`): a shorter one cuts long API calls the region would answer.
    #[serde(default = "nine_hundred_secs", with = "humantime_serde")]
    pub timeout_server: Duration,
    /// Inactivity limit once a stream is a tunnel; replaces the client and server timeouts.
    #[serde(default = "one_hour", with = "humantime_serde")]
    pub timeout_tunnel: Duration,
    /// http mode: close the server side after each response.
    #[serde(default)]
    pub http_server_close: bool,
    /// http mode: add X-Forwarded-For and X-Forwarded-Proto.
    #[serde(default = "yes")]
    pub forwardfor: bool,
    /// http mode: answer `GET /` with a redirect here.
    #[serde(default, deserialize_with = "de_redirect")]
    pub redirect_root: Option<Spanned<String>>,
    /// Active health check of the servers that have `check = true`.
    #[serde(default)]
    pub check: CheckConfig,
    /// How often server host names are resolved again (HAProxy's `hold valid`, 10 s).
    #[serde(
        default = "default_resolve_interval",
        deserialize_with = "de_resolve_interval"
    )]
    pub resolve_interval: Duration,
    /// The servers (regions).
    #[serde(default)]
    pub server: Vec<ServerConfig>,
}

/// Proxy mode of a frontend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Layer 4: bytes copied both ways, one server per connection.
    #[default]
    Tcp,
    /// Layer 7: HTTP/1.1 requests balanced one by one.
    Http,
}

/// Balancing algorithm of a frontend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Smooth weighted round robin.
    #[default]
    Roundrobin,
    /// Consistent hash of the client address over the servers' hash keys (their addresses as
    /// written, or `hash_key`) and weights.
    Source,
    /// The first server in config order that is available (HAProxy's `first`; backups
    /// after every other): every connection goes to one server while it is up, so writes
    /// never split between two. The one for PostgreSQL.
    First,
}

/// What a server going down does to its established connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDown {
    /// They run on until either side ends them (HTTP regions: a request in flight finishes).
    #[default]
    Keep,
    /// They are cut at once (both sides reset; in http mode the server's connections are
    /// closed, idle or not).
    ShutdownSessions,
}

impl OnDown {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDown::Keep => "keep",
            OnDown::ShutdownSessions => "shutdown_sessions",
        }
    }
}

/// One server (a region controller's :5240).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Name, unique in its frontend (logs, metrics, admin actions).
    pub name: Spanned<String>,
    /// `ip:port`, `[ipv6]:port` or `host:port` (a name is resolved at start and every
    /// `resolve_interval`). Checked by [`FrontendConfig::validate`], so that a bad one is one
    /// problem, not also a missing key; see [`ServerConfig::target`].
    pub address: Spanned<String>,
    /// What `balance = "source"` hashes for this server instead of `address` (the same on
    /// every host, e.g. the region's system id). Default: `address` as written.
    #[serde(default)]
    pub hash_key: Option<Spanned<String>>,
    /// Share of the traffic, 0..=256 (HAProxy's range); 0 takes no new connections.
    #[serde(default = "default_weight", deserialize_with = "de_weight")]
    pub weight: u32,
    /// Probe with the frontend's check.
    #[serde(default = "yes")]
    pub check: bool,
    /// Used only while no other server is available (HAProxy's `backup`).
    #[serde(default)]
    pub backup: bool,
    /// Starts out of service (HAProxy's `disabled`); the admin endpoint can enable it.
    #[serde(default)]
    pub disabled: bool,
    /// This server's changes to the frontend's check, e.g. `{ port = 5241, interval = "5s" }`
    /// (HAProxy's per-server `port`, `inter`, `fastinter`, `downinter`, `rise`, `fall`).
    #[serde(default)]
    pub check_override: CheckOverride,
}

impl ServerConfig {
    /// The parsed `address`; `Err` says what is wrong (reported by `validate`).
    pub fn target(&self) -> Result<Target, String> {
        Target::parse(self.address.get_ref().trim())
    }

    /// What `balance = "source"` hashes: `hash_key`, else `address` as written (an IP
    /// address normalised: `[fd00:0::11]:5240` and `[fd00::11]:5240` are one key). Never the
    /// name: the guide names every host's own region `localhost`.
    pub fn hash_key(&self) -> String {
        match (&self.hash_key, self.target()) {
            (Some(k), _) => k.get_ref().clone(),
            (None, Ok(t)) => t.to_string(),
            (None, Err(_)) => self.address.get_ref().trim().to_string(),
        }
    }
}

impl FrontendConfig {
    /// Checks that relate several values of this block. Returns every problem found.
    pub fn validate(&self) -> Vec<Problem> {
        self.validate_with(true)
    }

    /// [`FrontendConfig::validate`], with or without [`FrontendConfig::validate_server_count`]
    /// (without: for a caller that dropped a bad `[[frontend.server]]` and already said why).
    pub fn validate_with(&self, server_count: bool) -> Vec<Problem> {
        let mut out = Vec::new();
        let name_span = self.name.span();
        if self.name.get_ref().is_empty() {
            out.push(Spanned::new(
                name_span.clone(),
                "`name` must not be empty".into(),
            ));
        }
        if self.bind.get_ref().is_empty() {
            out.push(Spanned::new(
                self.bind.span(),
                "`bind` needs at least one address, e.g. [\"0.0.0.0:80\"]".into(),
            ));
        }
        for (i, a) in self.bind.get_ref().iter().enumerate() {
            if a.port() == 0 {
                out.push(Spanned::new(
                    self.bind.span(),
                    format!("bind address {a} needs a port"),
                ));
            }
            if let Some(why) = bad_ipv6(a, "bind") {
                out.push(Spanned::new(self.bind.span(), why));
            }
            if self.bind.get_ref()[..i].contains(a) {
                out.push(Spanned::new(
                    self.bind.span(),
                    format!("bind address {a} is listed twice"),
                ));
            }
        }
        if server_count {
            out.extend(self.validate_server_count());
        }
        for (i, s) in self.server.iter().enumerate() {
            if s.name.get_ref().is_empty() {
                out.push(Spanned::new(
                    s.name.span(),
                    "server `name` must not be empty".into(),
                ));
            }
            if self.server[..i]
                .iter()
                .any(|o| o.name.get_ref() == s.name.get_ref())
            {
                out.push(Spanned::new(
                    s.name.span(),
                    format!(
                        "server name `{}` is used twice in frontend `{}`",
                        s.name.get_ref(),
                        self.name.get_ref()
                    ),
                ));
            }
            for msg in s.check_override.validate() {
                out.push(Spanned::new(
                    s.name.span(),
                    format!("server `{}`: {msg}", s.name.get_ref()),
                ));
            }
            match s.target() {
                Err(e) => out.push(Spanned::new(s.address.span(), e)),
                Ok(Target::Addr(a)) => {
                    if let Some(why) = bad_ipv6(&a, "server address") {
                        out.push(Spanned::new(s.address.span(), why));
                    }
                }
                Ok(Target::Name { .. }) => {}
            }
            if let Some(k) = &s.hash_key {
                if k.get_ref().trim().is_empty() {
                    out.push(Spanned::new(
                        k.span(),
                        "`hash_key` must not be empty".into(),
                    ));
                }
            }
        }
        for (key, d) in [
            ("timeout_connect", self.timeout_connect),
            ("timeout_client", self.timeout_client),
            ("timeout_server", self.timeout_server),
            ("timeout_tunnel", self.timeout_tunnel),
        ] {
            if d.is_zero() {
                out.push(Spanned::new(
                    name_span.clone(),
                    format!("`{key}` must be more than 0s"),
                ));
            }
        }
        for msg in self.check.validate() {
            out.push(Spanned::new(name_span.clone(), msg));
        }
        if self.mode == Mode::Tcp {
            if let Some(r) = &self.redirect_root {
                out.push(Spanned::new(
                    r.span(),
                    "`redirect_root` needs mode = \"http\"".into(),
                ));
            }
        }
        out
    }

    /// That the frontend has a server that is not a backup.
    pub fn validate_server_count(&self) -> Option<Problem> {
        let name = self.name.get_ref();
        if self.server.is_empty() {
            Some(Spanned::new(
                self.name.span(),
                format!("frontend `{name}` needs at least one [[frontend.server]]"),
            ))
        } else if self.server.iter().all(|s| s.backup) {
            Some(Spanned::new(
                self.name.span(),
                format!("frontend `{name}` has only backup servers"),
            ))
        } else {
            None
        }
    }

    /// Settings that work but likely not as meant. Returns every one found.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.balance == Balance::Source {
            for (i, s) in self.server.iter().enumerate() {
                let key = s.hash_key();
                if let Some(o) = self.server[..i].iter().find(|o| o.hash_key() == key) {
                    out.push(Spanned::new(
                        s.hash_key.as_ref().map_or(s.address.span(), |k| k.span()),
                        format!(
                            "servers `{}` and `{}` hash alike (`{key}`) under balance = \"source\": \
                             `{}` gets no client; give one a `hash_key`",
                            o.name.get_ref(),
                            s.name.get_ref(),
                            s.name.get_ref()
                        ),
                    ));
                }
                if s.target().is_ok_and(|t| t.is_loopback()) {
                    out.push(Spanned::new(
                        s.address.span(),
                        format!(
                            "server `{}` at {} is this host's loopback under balance = \"source\": \
                             a different region on each host, so clients change region after a \
                             takeover; write the region's own address (or name) as every host \
                             reaches it",
                            s.name.get_ref(),
                            s.address.get_ref()
                        ),
                    ));
                }
            }
        }
        out
    }
}

/// What is wrong with an IPv6 `addr` (a bind or a server, named by `what`), if anything:
/// an IPv4-mapped form (it means the IPv4 address, so it is written as one), a multicast
/// bind, or a link-local address without its interface (it names none on its own).
fn bad_ipv6(addr: &SocketAddr, what: &str) -> Option<String> {
    let SocketAddr::V6(a) = addr else {
        return None;
    };
    let ip = a.ip();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(format!(
            "{what} {addr} is an IPv4 address in IPv6 form: write {}",
            SocketAddr::from((v4, a.port()))
        ));
    }
    if ip.is_multicast() {
        return Some(format!("{what} {addr} is a multicast address"));
    }
    if ip.is_unicast_link_local() && a.scope_id() == 0 {
        return Some(format!(
            "{what} {addr} is link-local: give its interface index too, as [{ip}%2]:{} \
             (or use a global address)",
            a.port()
        ));
    }
    None
}

fn yes() -> bool {
    true
}
fn default_bind() -> Spanned<Vec<SocketAddr>> {
    Spanned::new(0..0, vec![SocketAddr::from(([0, 0, 0, 0], 80))])
}
fn default_retries() -> u32 {
    3
}
fn default_maxconn() -> u32 {
    10_000
}
fn default_weight() -> u32 {
    1
}
/// `timeout_connect`'s default.
pub const DEFAULT_TIMEOUT_CONNECT: Duration = Duration::from_secs(5);
/// `timeout_client`'s default.
pub const DEFAULT_TIMEOUT_CLIENT: Duration = Duration::from_secs(30);
/// `timeout_server`'s default: the region nginx's `proxy_read_timeout`.
pub const DEFAULT_TIMEOUT_SERVER: Duration = Duration::from_secs(900);

fn five_secs() -> Duration {
    DEFAULT_TIMEOUT_CONNECT
}
fn thirty_secs() -> Duration {
    DEFAULT_TIMEOUT_CLIENT
}
fn nine_hundred_secs() -> Duration {
    DEFAULT_TIMEOUT_SERVER
}
fn default_resolve_interval() -> Duration {
    healthcheck::resolve::DEFAULT_RESOLVE_INTERVAL
}

fn de_resolve_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v: Duration = humantime_serde::deserialize(d)?;
    if v < Duration::from_millis(100) || v > Duration::from_secs(86_400) {
        return Err(serde::de::Error::custom(format!(
            "resolve_interval must be 100ms..=24h, got {}",
            humantime::format_duration(v)
        )));
    }
    Ok(v)
}
fn one_hour() -> Duration {
    Duration::from_secs(3600)
}

/// `bind` as socket addresses; an IPv6 address without brackets (HAProxy's `:::80`) gets a
/// message that shows the form wanted instead of a bare "invalid socket address syntax".
fn de_bind<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<Vec<SocketAddr>>, D::Error> {
    let v = Spanned::<Vec<String>>::deserialize(d)?;
    let span = v.span();
    let mut out = Vec::new();
    for s in v.into_inner() {
        match s.parse::<SocketAddr>() {
            Ok(a) => out.push(a),
            Err(_) => {
                let hint = match s.rsplit_once(':') {
                    Some((ip, port)) if ip.contains(':') => {
                        let ip = ip.trim_matches(|c| c == '[' || c == ']');
                        let ip = if ip.is_empty() || ip == ":" { "::" } else { ip };
                        format!(": an IPv6 address goes in brackets, as \"[{ip}]:{port}\"")
                    }
                    _ => ": expected \"address:port\", e.g. \"0.0.0.0:80\" or \"[::]:80\"".into(),
                };
                return Err(serde::de::Error::custom(format!(
                    "bind address `{s}` is not valid{hint}"
                )));
            }
        }
    }
    Ok(Spanned::new(span, out))
}

fn de_retries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    match u32::try_from(v) {
        Ok(v) if v <= 100 => Ok(v),
        _ => Err(serde::de::Error::custom(format!(
            "retries must be 0..=100, got {v}"
        ))),
    }
}

fn de_maxconn<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    match u32::try_from(v) {
        Ok(v) if (1..=1_000_000).contains(&v) => Ok(v),
        _ => Err(serde::de::Error::custom(format!(
            "maxconn must be 1..=1000000, got {v}"
        ))),
    }
}

fn de_weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    match u32::try_from(v) {
        Ok(v) if v <= 256 => Ok(v),
        _ => Err(serde::de::Error::custom(format!(
            "weight must be 0..=256, got {v}"
        ))),
    }
}

fn de_redirect<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Spanned<String>>, D::Error> {
    let v = Spanned::<String>::deserialize(d)?;
    let s = v.get_ref();
    let ok = (s.starts_with('/') || s.starts_with("http://") || s.starts_with("https://"))
        && !s
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "redirect_root must be a path like \"/MAAS/\" or an http(s) URL, got `{s}`"
        )));
    }
    Ok(Some(v))
}
