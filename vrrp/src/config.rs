//! `[[vrrp]]` blocks of maas-vip.toml.
//!
//! Ranges that depend on one value alone are checked while deserializing, so the TOML parser
//! reports them with the value's line and column. Checks that relate several values run in
//! `VrrpConfig::validate` and point at the value concerned through its [`Spanned`] span.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_spanned::Spanned;

pub use crate::auth_hmac::config::AuthHmacConfig;
use crate::packet::{V3Checksum, Version};

/// A problem found in a config, located by the byte range of the value it is about.
pub type Problem = Spanned<String>;

/// A `[[vrrp]]` block that passed `VrrpConfig::validate`, made only by
/// `ValidVrrp::try_from(block)`: the form [`crate::run`] and [`crate::run_with_updates`] take,
/// so that the driver never checks a block again. Read it through `Deref`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidVrrp(VrrpConfig);

/// A `[[vrrp]]` block that `VrrpConfig::validate` refused, with every problem found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("vrrp instance `{instance}`: {}", join_problems(.problems))]
pub struct InvalidVrrp {
    /// The block's `name`.
    pub instance: String,
    /// What is wrong, each located in the file.
    pub problems: Vec<Problem>,
}

/// The problems' messages in one line, `; ` between them.
pub(crate) fn join_problems(problems: &[Problem]) -> String {
    let all: Vec<&str> = problems.iter().map(|p| p.get_ref().as_str()).collect();
    all.join("; ")
}

impl TryFrom<VrrpConfig> for ValidVrrp {
    type Error = InvalidVrrp;

    fn try_from(block: VrrpConfig) -> Result<ValidVrrp, InvalidVrrp> {
        let problems = block.validate();
        if problems.is_empty() {
            Ok(ValidVrrp(block))
        } else {
            Err(InvalidVrrp {
                instance: block.name.get_ref().clone(),
                problems,
            })
        }
    }
}

impl std::ops::Deref for ValidVrrp {
    type Target = VrrpConfig;

    fn deref(&self) -> &VrrpConfig {
        &self.0
    }
}

impl From<ValidVrrp> for VrrpConfig {
    fn from(v: ValidVrrp) -> VrrpConfig {
        v.0
    }
}

/// One VRRP instance (keepalived's `vrrp_instance`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpConfig {
    /// Instance name, used in logs, metrics and notify arguments.
    pub name: Spanned<String>,
    /// Interface the adverts are sent on and the VIPs are added to.
    pub interface: Spanned<String>,
    /// Virtual router identifier, 1..=255.
    #[serde(deserialize_with = "de_vrid")]
    pub virtual_router_id: u8,
    /// Priority 1..=254, 255 only for the owner of the addresses. keepalived's default: 100.
    #[serde(default = "default_priority", deserialize_with = "de_priority")]
    pub priority: Spanned<u8>,
    /// Initial state: "BACKUP" (default) or "MASTER" (keepalived's `state`). A router that
    /// starts as MASTER sends its first advert at once instead of waiting Master_Down_Interval.
    #[serde(default)]
    pub state: InitialState,
    /// Advertisement interval; whole seconds 1..=255 for VRRPv2, 10ms..=40.95s for VRRPv3.
    #[serde(default = "default_advert", deserialize_with = "de_spanned_duration")]
    pub advert_interval: Spanned<Duration>,
    /// Protocol version: `version = 2` (RFC 3768) or `3` (RFC 9568); never
    /// [`Version::Unknown`].
    #[serde(default = "default_version", deserialize_with = "de_version")]
    pub version: Spanned<Version>,
    /// Take over from a lower-priority master (false = keepalived's `nopreempt`).
    #[serde(default = "yes")]
    pub preempt: bool,
    /// Delay before preempting a lower-priority master, 0..=1000s.
    #[serde(default, with = "humantime_serde")]
    pub preempt_delay: Duration,
    /// VRRPv2 simple text password (auth type 1), at most 8 bytes.
    #[serde(default, deserialize_with = "de_auth_pass")]
    pub auth_pass: Option<Spanned<String>>,
    /// Virtual addresses with their prefix length, e.g. "10.0.0.100/24"; all IPv4, or all IPv6
    /// with `version = 3` (then the first one should be link-local, as keepalived warns).
    #[serde(deserialize_with = "de_vips")]
    pub virtual_ipaddresses: Spanned<Vec<Vip>>,
    /// Send adverts by unicast to these peers instead of multicast to 224.0.0.18 (ff02::12
    /// over IPv6); of the virtual addresses' family.
    #[serde(default)]
    pub unicast_peers: Vec<IpAddr>,
    /// Delay before the second burst of gratuitous ARP after becoming master.
    #[serde(default = "default_garp_delay", with = "humantime_serde")]
    pub garp_master_delay: Duration,
    /// Gratuitous ARP frames per VIP in each burst.
    #[serde(default = "default_garp_repeat")]
    pub garp_master_repeat: u32,
    /// keepalived's `garp_master_refresh`: while master, gratuitous ARP (IPv6: unsolicited
    /// neighbour advertisements) this often, for switches and hosts that forget; "0s" (the
    /// default, keepalived's): none.
    #[serde(default, with = "humantime_serde")]
    pub garp_master_refresh: Duration,
    /// Frames per VIP in each refresh (keepalived's `garp_master_refresh_repeat`, default 1).
    #[serde(default = "default_refresh_repeat")]
    pub garp_master_refresh_repeat: u32,
    /// Lower the priority when the named frontend has no live server.
    #[serde(default)]
    pub track_backends: Option<TrackBackends>,
    /// Program run (argv, no shell) on each transition with keepalived's arguments:
    /// `INSTANCE <name> <state> <priority>`.
    #[serde(default)]
    pub notify: Option<Spanned<Vec<String>>>,
    /// Run (argv, no extra arguments, as keepalived) on becoming MASTER.
    #[serde(default)]
    pub notify_master: Option<Spanned<Vec<String>>>,
    /// Run on becoming BACKUP.
    #[serde(default)]
    pub notify_backup: Option<Spanned<Vec<String>>>,
    /// Run on entering FAULT.
    #[serde(default)]
    pub notify_fault: Option<Spanned<Vec<String>>>,
    /// Run when the instance stops (keepalived's STOP).
    #[serde(default)]
    pub notify_stop: Option<Spanned<Vec<String>>>,
    /// Scripts whose result moves the priority or puts the instance in FAULT.
    #[serde(default)]
    pub track_script: Vec<TrackScript>,
    /// Run track scripts and `notify` as this user (keepalived's `script_user`): a name from
    /// /etc/passwd (with its primary group) or a numeric "uid" / "uid:gid". Default: the
    /// daemon's own user.
    #[serde(default)]
    pub script_user: Option<Spanned<String>>,
    /// keepalived 2.4's HMAC-SHA256 advert authentication (see [`crate::auth_hmac::config`]).
    #[serde(default)]
    pub auth_hmac: Option<AuthHmacConfig>,
    /// What the VRRPv3 checksum covers over IPv4: "pseudo_header" (default, keepalived's
    /// default, Wireshark's) or "rfc9568" (the VRRP message alone: RFC 9568, Cisco, Juniper,
    /// keepalived's `v3_checksum_as_v2`). Only for `version = 3` with IPv4 addresses.
    #[serde(default = "default_v3_checksum")]
    pub v3_checksum: Spanned<V3ChecksumKey>,
}

/// The values of `v3_checksum`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum V3ChecksumKey {
    /// The IPv4 pseudo-header is included ([`V3Checksum::PseudoHeader`]).
    #[default]
    PseudoHeader,
    /// The VRRP message alone ([`V3Checksum::MessageOnly`]).
    Rfc9568,
}

impl From<V3ChecksumKey> for V3Checksum {
    fn from(k: V3ChecksumKey) -> V3Checksum {
        match k {
            V3ChecksumKey::PseudoHeader => V3Checksum::PseudoHeader,
            V3ChecksumKey::Rfc9568 => V3Checksum::MessageOnly,
        }
    }
}

/// keepalived's `state` keyword.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InitialState {
    /// Wait Master_Down_Interval for a master before claiming (RFC 3768 §6.4.1).
    #[default]
    Backup,
    /// Claim at once.
    Master,
}

/// A virtual address with the prefix it is added with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vip {
    pub addr: IpAddr,
    /// Prefix length, 0..=32 (IPv4) or 0..=128 (IPv6); the whole address (32, 128) when the
    /// config gives none, as keepalived does.
    pub prefix: u8,
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4 only; [`Vip::parse`] takes both families, as `virtual_ipaddresses` and `maas-vip
/// import` do.
impl std::str::FromStr for Vip {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let addr = s.split('/').next().unwrap_or(s);
        if addr.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(format!(
                "`{s}` is not an IPv4 address (expected e.g. \"10.0.0.100/24\")"
            ));
        }
        Vip::parse(s)
    }
}

impl Vip {
    /// An IPv4 or IPv6 address with an optional prefix length: "10.0.0.100/24",
    /// "2001:db8::100/64", "fe80::61" (then /32 or /128, as keepalived).
    pub fn parse(s: &str) -> Result<Vip, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!(
                "`{s}` is not an IP address (expected e.g. \"10.0.0.100/24\" or \"2001:db8::100/64\")"
            )
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("`{s}`: prefix length must be 0..={max}")),
            },
        };
        let broadcast = matches!(addr, IpAddr::V4(a) if a.is_broadcast());
        if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() || broadcast {
            return Err(format!("`{s}` cannot be a virtual address"));
        }
        Ok(Vip { addr, prefix })
    }
}

/// `track_backends = { frontend = "maas", weight = -50 }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackBackends {
    /// Name of a `[[frontend]]` of the same config.
    pub frontend: Spanned<String>,
    /// Added to the priority while that frontend has no live server; 0 means FAULT instead.
    #[serde(default = "default_backends_weight", deserialize_with = "de_weight")]
    pub weight: i32,
}

/// `[[vrrp.track_script]]` (keepalived's `vrrp_script` + `track_script`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackScript {
    /// Name used in logs.
    pub name: Spanned<String>,
    /// Program and arguments, run directly (never through a shell).
    pub command: Spanned<Vec<String>>,
    /// Time between two runs.
    #[serde(default = "two_secs", with = "humantime_serde")]
    pub interval: Duration,
    /// A run still going after this is killed (its whole process group) and counts as failed.
    #[serde(default = "two_secs", with = "humantime_serde")]
    pub timeout: Duration,
    /// 0: failing puts the instance in FAULT; otherwise added to the priority while failing
    /// (negative) or while succeeding (positive), as keepalived does.
    #[serde(default, deserialize_with = "de_weight")]
    pub weight: i32,
    /// Consecutive successes before the script counts as good.
    #[serde(default = "one", deserialize_with = "de_count")]
    pub rise: u32,
    /// Consecutive failures before the script counts as failed.
    #[serde(default = "one", deserialize_with = "de_count")]
    pub fall: u32,
}

impl VrrpConfig {
    /// Why `new` cannot be applied to a running instance of `self` (see
    /// [`crate::run_with_updates`]) and the instance must be restarted instead; `None`: it
    /// can be updated in place. A new name, interface, virtual_router_id or version is
    /// another router; the address owner (priority 255) keeps addresses of its own.
    pub fn restart_reason(&self, new: &VrrpConfig) -> Option<&'static str> {
        if self.name != new.name {
            Some("name changed")
        } else if self.interface != new.interface {
            Some("interface changed")
        } else if self.virtual_router_id != new.virtual_router_id {
            Some("virtual_router_id changed")
        } else if self.version != new.version {
            Some("version changed")
        } else if self.is_ipv6() != new.is_ipv6() {
            // Another socket, another source address: another virtual router (RFC 9568 §1).
            Some("address family changed")
        } else if (*self.priority.get_ref() == 255) != (*new.priority.get_ref() == 255) {
            Some("priority moved to or from 255 (address owner)")
        } else {
            None
        }
    }

    /// The keys whose values differ between `self` and `new`, for logs.
    pub fn changed_fields(&self, new: &VrrpConfig) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut diff = |changed: bool, key: &'static str| {
            if changed {
                out.push(key);
            }
        };
        diff(self.name != new.name, "name");
        diff(self.interface != new.interface, "interface");
        diff(
            self.virtual_router_id != new.virtual_router_id,
            "virtual_router_id",
        );
        diff(self.priority != new.priority, "priority");
        diff(self.state != new.state, "state");
        diff(
            self.advert_interval != new.advert_interval,
            "advert_interval",
        );
        diff(self.version != new.version, "version");
        diff(self.preempt != new.preempt, "preempt");
        diff(self.preempt_delay != new.preempt_delay, "preempt_delay");
        diff(self.auth_pass != new.auth_pass, "auth_pass");
        diff(
            self.virtual_ipaddresses != new.virtual_ipaddresses,
            "virtual_ipaddresses",
        );
        diff(self.unicast_peers != new.unicast_peers, "unicast_peers");
        diff(
            self.garp_master_delay != new.garp_master_delay,
            "garp_master_delay",
        );
        diff(
            self.garp_master_repeat != new.garp_master_repeat,
            "garp_master_repeat",
        );
        diff(self.track_backends != new.track_backends, "track_backends");
        diff(
            self.garp_master_refresh != new.garp_master_refresh,
            "garp_master_refresh",
        );
        diff(
            self.garp_master_refresh_repeat != new.garp_master_refresh_repeat,
            "garp_master_refresh_repeat",
        );
        diff(self.notify != new.notify, "notify");
        diff(
            self.notify_master != new.notify_master
                || self.notify_backup != new.notify_backup
                || self.notify_fault != new.notify_fault
                || self.notify_stop != new.notify_stop,
            "notify_master/backup/fault/stop",
        );
        diff(self.track_script != new.track_script, "track_script");
        diff(self.auth_hmac != new.auth_hmac, "auth_hmac");
        diff(self.v3_checksum != new.v3_checksum, "v3_checksum");
        out
    }

    /// The notify programs that are set, each with its key: `notify`, `notify_master`, ...
    pub fn notify_programs(&self) -> impl Iterator<Item = (&'static str, &Spanned<Vec<String>>)> {
        [
            ("notify", &self.notify),
            ("notify_master", &self.notify_master),
            ("notify_backup", &self.notify_backup),
            ("notify_fault", &self.notify_fault),
            ("notify_stop", &self.notify_stop),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    }

    /// Checks that relate several values of this block. Returns every problem found.
    pub(crate) fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let err = |out: &mut Vec<Problem>, span: std::ops::Range<usize>, msg: String| {
            out.push(Spanned::new(span, msg))
        };
        if self.name.get_ref().is_empty() {
            err(
                &mut out,
                self.name.span(),
                "`name` must not be empty".into(),
            );
        }
        if self.interface.get_ref().is_empty() || self.interface.get_ref().len() > 15 {
            err(
                &mut out,
                self.interface.span(),
                "`interface` must be an interface name of 1 to 15 bytes".into(),
            );
        }
        let adv = *self.advert_interval.get_ref();
        match *self.version.get_ref() {
            Version::V2 => {
                if adv.subsec_nanos() != 0 || adv.as_secs() == 0 || adv.as_secs() > 255 {
                    err(
                        &mut out,
                        self.advert_interval.span(),
                        format!(
                            "`advert_interval` is {}: VRRPv2 needs whole seconds from 1s to 255s",
                            humantime::format_duration(adv)
                        ),
                    );
                }
            }
            _ => {
                let cs = adv.as_millis() / 10;
                if !adv.as_millis().is_multiple_of(10) || cs == 0 || cs > 4095 {
                    err(
                        &mut out,
                        self.advert_interval.span(),
                        format!(
                            "`advert_interval` is {}: VRRPv3 needs centiseconds from 10ms to 40.95s",
                            humantime::format_duration(adv)
                        ),
                    );
                }
                if let Some(pass) = &self.auth_pass {
                    err(
                        &mut out,
                        pass.span(),
                        "`auth_pass` is VRRPv2 only (RFC 9568 removed authentication)".into(),
                    );
                }
            }
        }
        if let Some(h) = &self.auth_hmac {
            out.extend(h.validate());
            if let Some(pass) = &self.auth_pass {
                // keepalived drops the password with a config error; we refuse the pair.
                err(
                    &mut out,
                    pass.span(),
                    "`auth_pass` and `auth_hmac` exclude each other: adverts signed with auth_hmac carry no password".into(),
                );
            }
        }
        if self.preempt_delay > Duration::from_secs(1000) {
            err(
                &mut out,
                self.name.span(),
                "`preempt_delay` must be at most 1000s".into(),
            );
        }
        if self.virtual_ipaddresses.get_ref().is_empty() {
            err(
                &mut out,
                self.virtual_ipaddresses.span(),
                "`virtual_ipaddresses` needs at least one address".into(),
            );
        }
        self.validate_families(&mut out);
        for (key, notify) in self.notify_programs() {
            if notify.get_ref().is_empty() || notify.get_ref()[0].is_empty() {
                err(
                    &mut out,
                    notify.span(),
                    format!("`{key}` must be a program and its arguments, e.g. [\"/usr/local/bin/vip-notify\"]"),
                );
            }
        }
        let mut names: Vec<&Spanned<String>> = Vec::new();
        for ts in &self.track_script {
            if names.iter().any(|n| n.get_ref() == ts.name.get_ref()) {
                err(
                    &mut out,
                    ts.name.span(),
                    format!("track_script name `{}` is used twice", ts.name.get_ref()),
                );
            }
            names.push(&ts.name);
            if ts.command.get_ref().is_empty() || ts.command.get_ref()[0].is_empty() {
                err(
                    &mut out,
                    ts.command.span(),
                    "`command` must be a program and its arguments, e.g. [\"pidof\", \"named\"]"
                        .into(),
                );
            }
            if ts.interval.is_zero() || ts.timeout.is_zero() {
                err(
                    &mut out,
                    ts.name.span(),
                    "`interval` and `timeout` must be more than 0s".into(),
                );
            }
        }
        out
    }

    /// What is allowed but deserves a look (`maas-vip check` prints them as warnings): an
    /// IPv6 instance (VRRPv3: without it, an error says so) whose first address is not
    /// link-local. RFC 9568 §5.2.9 wants the first
    /// address of an IPv6 advert link-local; keepalived logs "the first IPv6 VIP address
    /// should be link local" (and refuses it under `vrrp_strict`), for multicast instances
    /// only (keepalived/vrrp/vrrp.c, vrrp_complete_instance); the daemon logs it too.
    pub fn warnings(&self) -> Vec<Problem> {
        let vips = &self.virtual_ipaddresses;
        match vips.get_ref().first() {
            Some(first)
                if matches!(first.addr, IpAddr::V6(a) if !a.is_unicast_link_local())
                    && !vips.get_ref().iter().any(|v| !v.addr.is_ipv6())
                    && self.unicast_peers.is_empty()
                    && *self.version.get_ref() == Version::V3 =>
            {
                vec![Spanned::new(
                    vips.span(),
                    format!(
                        "the first IPv6 virtual address {first} is not link-local: RFC 9568 and keepalived want a link-local address first (e.g. \"fe80::1/64\"), and keepalived in strict mode refuses the instance"
                    ),
                )]
            }
            _ => Vec::new(),
        }
    }

    /// The address family of this instance: that of its first virtual address (IPv4 when
    /// there is none), as keepalived decides it.
    pub fn is_ipv6(&self) -> bool {
        self.virtual_ipaddresses
            .get_ref()
            .first()
            .is_some_and(|v| v.addr.is_ipv6())
    }

    /// An instance is IPv4 or IPv6 (RFC 9568 §1: separate virtual routers per family), and
    /// VRRPv2 is IPv4 only. keepalived ignores a VIP of the other family with an error; here
    /// the config is refused.
    fn validate_families(&self, out: &mut Vec<Problem>) {
        let vips = &self.virtual_ipaddresses;
        let v6 = self.is_ipv6();
        if let Some(odd) = vips.get_ref().iter().find(|v| v.addr.is_ipv6() != v6) {
            out.push(Spanned::new(
                vips.span(),
                format!(
                    "`virtual_ipaddresses` mixes IPv4 and IPv6 ({} and {odd}): an instance's addresses are all IPv4 or all IPv6; use one [[vrrp]] block per family",
                    vips.get_ref()[0]
                ),
            ));
        }
        if v6 && *self.version.get_ref() != Version::V3 {
            out.push(Spanned::new(
                if self.version.span().is_empty() {
                    vips.span()
                } else {
                    self.version.span()
                },
                "IPv6 virtual addresses need `version = 3` (VRRPv2 is IPv4 only)".into(),
            ));
        }
        if *self.v3_checksum.get_ref() == V3ChecksumKey::Rfc9568
            && (v6 || *self.version.get_ref() != Version::V3)
        {
            out.push(Spanned::new(
                self.v3_checksum.span(),
                "`v3_checksum = \"rfc9568\"` applies to VRRPv3 over IPv4 only (`version = 3` with IPv4 addresses); VRRPv2 and IPv6 have one checksum rule each".into(),
            ));
        }
        if let Some(p) = self.unicast_peers.iter().find(|p| p.is_ipv6() != v6) {
            out.push(Spanned::new(
                vips.span(),
                format!(
                    "unicast peer {p} is not of the virtual addresses' family ({})",
                    if v6 { "IPv6" } else { "IPv4" }
                ),
            ));
        }
    }
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn two_secs() -> Duration {
    Duration::from_secs(2)
}
fn default_v3_checksum() -> Spanned<V3ChecksumKey> {
    Spanned::new(0..0, V3ChecksumKey::default())
}

fn default_priority() -> Spanned<u8> {
    Spanned::new(0..0, 100)
}
fn default_advert() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(1))
}
fn default_version() -> Spanned<Version> {
    Spanned::new(0..0, Version::V2)
}
fn default_garp_delay() -> Duration {
    Duration::from_secs(5)
}
fn default_garp_repeat() -> u32 {
    5
}
fn default_refresh_repeat() -> u32 {
    1
}
fn default_backends_weight() -> i32 {
    -50
}

fn de_vrid<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = i64::deserialize(d)?;
    match u8::try_from(v) {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(serde::de::Error::custom(format!(
            "virtual_router_id must be 1..=255, got {v}"
        ))),
    }
}

fn de_priority<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<u8>, D::Error> {
    let v = Spanned::<i64>::deserialize(d)?;
    match u8::try_from(*v.get_ref()) {
        Ok(p) if p >= 1 => Ok(Spanned::new(v.span(), p)),
        _ => Err(serde::de::Error::custom(format!(
            "priority must be 1..=254 (255 only for the address owner), got {}",
            v.get_ref()
        ))),
    }
}

/// `version = 2|3`, the integer, into [`Version`].
fn de_version<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<Version>, D::Error> {
    let v = Spanned::<i64>::deserialize(d)?;
    match *v.get_ref() {
        2 => Ok(Spanned::new(v.span(), Version::V2)),
        3 => Ok(Spanned::new(v.span(), Version::V3)),
        other => Err(serde::de::Error::custom(format!(
            "version must be 2 or 3, got {other}"
        ))),
    }
}

fn de_weight<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let v = i64::deserialize(d)?;
    if (-253..=253).contains(&v) {
        Ok(v as i32)
    } else {
        Err(serde::de::Error::custom(format!(
            "weight must be -253..=253, got {v}"
        )))
    }
}

fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    match u32::try_from(v) {
        Ok(v) if (1..=1000).contains(&v) => Ok(v),
        _ => Err(serde::de::Error::custom(format!(
            "expected a count from 1 to 1000, got {v}"
        ))),
    }
}

fn de_auth_pass<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Spanned<String>>, D::Error> {
    let v = Spanned::<String>::deserialize(d)?;
    let len = v.get_ref().len();
    if len == 0 || len > 8 {
        return Err(serde::de::Error::custom(format!(
            "auth_pass must be 1 to 8 bytes (VRRPv2 simple text), got {len}"
        )));
    }
    Ok(Some(v))
}

fn de_vips<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<Vec<Vip>>, D::Error> {
    let v = Spanned::<Vec<String>>::deserialize(d)?;
    let span = v.span();
    let mut vips: Vec<Vip> = Vec::new();
    for s in v.into_inner() {
        let vip = Vip::parse(&s).map_err(serde::de::Error::custom)?;
        if vips.iter().any(|x| x.addr == vip.addr) {
            return Err(serde::de::Error::custom(format!(
                "virtual address {} is listed twice",
                vip.addr
            )));
        }
        vips.push(vip);
    }
    Ok(Spanned::new(span, vips))
}

/// A duration string with units ("1s", "200ms") that keeps its location for later checks.
fn de_spanned_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<Duration>, D::Error> {
    let v = Spanned::<String>::deserialize(d)?;
    let dur = humantime::parse_duration(v.get_ref()).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{}` is not a duration ({e}); expected e.g. \"1s\" or \"200ms\"",
            v.get_ref()
        ))
    })?;
    Ok(Spanned::new(v.span(), dur))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_parsing() {
        assert_eq!(
            "10.0.0.100/24".parse::<Vip>(),
            Ok(Vip {
                addr: IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 100)),
                prefix: 24
            })
        );
        assert_eq!("10.0.0.100".parse::<Vip>().map(|v| v.prefix), Ok(32));
        assert!("10.0.0.100/33".parse::<Vip>().is_err());
        assert!("224.0.0.18/32".parse::<Vip>().is_err());
        // FromStr stays IPv4 (the importer's rule); Vip::parse, used by the config, takes both.
        assert!("fe80::1/64".parse::<Vip>().is_err());
        assert_eq!(
            Vip::parse("fe80::1/64").map(|v| v.to_string()),
            Ok("fe80::1/64".to_string())
        );
        assert_eq!(Vip::parse("2001:db8::100").map(|v| v.prefix), Ok(128));
        assert!(Vip::parse("2001:db8::100/129").is_err());
        for bad in ["ff02::12", "::", "::1", "127.0.0.1", "255.255.255.255"] {
            assert!(Vip::parse(bad).is_err(), "{bad}");
        }
    }

    fn problems(body: &str) -> Vec<String> {
        let c: VrrpConfig = toml::from_str(&format!(
            "name = \"v6\"\ninterface = \"eth0\"\nvirtual_router_id = 61\n{body}"
        ))
        .expect("parses");
        c.validate().into_iter().map(|p| p.into_inner()).collect()
    }

    #[test]
    fn a_first_ipv6_address_that_is_not_link_local_is_a_warning() {
        let warnings = |vips: &str| -> Vec<String> {
            let c: VrrpConfig = toml::from_str(&format!(
                "name = \"v6\"\ninterface = \"eth0\"\nvirtual_router_id = 61\nversion = 3\nvirtual_ipaddresses = {vips}"
            ))
            .expect("parses");
            c.warnings().into_iter().map(|p| p.into_inner()).collect()
        };
        let w = warnings(r#"["2001:db8::100/64", "fe80::61/64"]"#);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("the first IPv6 virtual address 2001:db8::100/64 is not link-local"),
            "{w:?}"
        );
        assert!(warnings(r#"["fe80::61/64", "2001:db8::100/64"]"#).is_empty());
        assert!(warnings(r#"["10.0.0.100/24"]"#).is_empty());
        // keepalived and the daemon say nothing for unicast instances.
        let c: VrrpConfig = toml::from_str(
            "name = \"v6\"\ninterface = \"eth0\"\nvirtual_router_id = 61\nversion = 3\nvirtual_ipaddresses = [\"2001:db8::100/64\"]\nunicast_peers = [\"2001:db8::12\"]",
        )
        .expect("parses");
        assert!(c.warnings().is_empty());
        // A mix, or IPv6 without VRRPv3, is an error of its own (validate), not also this.
        let c: VrrpConfig = toml::from_str(
            "name = \"v6\"\ninterface = \"eth0\"\nvirtual_router_id = 61\nvirtual_ipaddresses = [\"2001:db8::100/64\"]",
        )
        .expect("parses");
        assert!(c.warnings().is_empty());
        assert!(warnings(r#"["2001:db8::100/64", "10.0.0.100/24"]"#).is_empty());
    }

    #[test]
    fn families_are_not_mixed_and_ipv6_is_version_3() {
        assert!(problems(
            "version = 3\nvirtual_ipaddresses = [\"fe80::61/64\", \"2001:db8::100/64\"]"
        )
        .is_empty());
        assert_eq!(
            problems("virtual_ipaddresses = [\"2001:db8::100/64\"]"),
            ["IPv6 virtual addresses need `version = 3` (VRRPv2 is IPv4 only)"]
        );
        let mixed =
            problems("version = 3\nvirtual_ipaddresses = [\"10.0.0.100/24\", \"fe80::61/64\"]");
        assert_eq!(mixed.len(), 1, "{mixed:?}");
        assert!(
            mixed[0].contains("mixes IPv4 and IPv6 (10.0.0.100/24 and fe80::61/64)"),
            "{mixed:?}"
        );
        let peer = problems(
            "version = 3\nvirtual_ipaddresses = [\"fe80::61/64\"]\nunicast_peers = [\"10.0.0.2\"]",
        );
        assert_eq!(peer.len(), 1, "{peer:?}");
        assert!(
            peer[0].starts_with("unicast peer 10.0.0.2 is not"),
            "{peer:?}"
        );
    }

    #[test]
    fn v3_checksum_is_for_vrrpv3_over_ipv4() {
        let v4 = "virtual_ipaddresses = [\"10.0.0.100/24\"]";
        assert!(problems(&format!("version = 3\nv3_checksum = \"rfc9568\"\n{v4}")).is_empty());
        assert!(problems(&format!(
            "version = 3\nv3_checksum = \"pseudo_header\"\n{v4}"
        ))
        .is_empty());
        let why = "`v3_checksum = \"rfc9568\"` applies to VRRPv3 over IPv4 only";
        for body in [
            format!("v3_checksum = \"rfc9568\"\n{v4}"),
            "version = 3\nv3_checksum = \"rfc9568\"\nvirtual_ipaddresses = [\"fe80::61/64\"]"
                .to_string(),
        ] {
            let got = problems(&body);
            assert!(got.len() == 1 && got[0].starts_with(why), "{body}: {got:?}");
        }
        let bad = toml::from_str::<VrrpConfig>(&format!(
            "name = \"a\"\ninterface = \"eth0\"\nvirtual_router_id = 1\nv3_checksum = \"cisco\"\n{v4}"
        ))
        .expect_err("an unknown form is refused");
        assert!(bad.to_string().contains("pseudo_header"), "{bad}");
        let c: VrrpConfig = toml::from_str(&format!(
            "name = \"a\"\ninterface = \"eth0\"\nvirtual_router_id = 1\nversion = 3\nv3_checksum = \"rfc9568\"\n{v4}"
        ))
        .expect("parses");
        assert_eq!(
            V3Checksum::from(*c.v3_checksum.get_ref()),
            V3Checksum::MessageOnly
        );
    }

    #[test]
    fn what_needs_a_restart() {
        let base = r#"
            name = "maas_region"
            interface = "eth0"
            virtual_router_id = 51
            priority = 150
            virtual_ipaddresses = ["10.0.0.100/24"]
            "#;
        let old: VrrpConfig = toml::from_str(base).expect("parses");
        let with = |from: &str, to: &str| -> VrrpConfig {
            toml::from_str(&base.replace(from, to)).expect("parses")
        };
        // Updated in place.
        for (from, to) in [
            ("priority = 150", "priority = 90"),
            ("\"10.0.0.100/24\"", "\"10.0.0.101/24\", \"10.0.0.102/25\""),
            ("priority = 150", "priority = 150\nadvert_interval = \"3s\""),
            ("priority = 150", "priority = 150\nauth_pass = \"x\""),
            (
                "priority = 150",
                "priority = 150\nv3_checksum = \"rfc9568\"",
            ),
        ] {
            let new = with(from, to);
            assert_eq!(old.restart_reason(&new), None, "{to}");
            assert_eq!(old.changed_fields(&new).len(), 1, "{to}");
        }
        // Restarted.
        for (from, to, why) in [
            ("maas_region", "other", "name changed"),
            ("eth0", "eth1", "interface changed"),
            ("= 51", "= 52", "virtual_router_id changed"),
            (
                "priority = 150",
                "priority = 150\nversion = 3",
                "version changed",
            ),
            (
                "priority = 150",
                "priority = 255",
                "priority moved to or from 255 (address owner)",
            ),
        ] {
            assert_eq!(old.restart_reason(&with(from, to)), Some(why));
        }
        let v3 = with("priority = 150", "priority = 150\nversion = 3");
        let v6 = toml::from_str::<VrrpConfig>(
            &base
                .replace("priority = 150", "priority = 150\nversion = 3")
                .replace("\"10.0.0.100/24\"", "\"fe80::61/64\""),
        )
        .expect("parses");
        assert_eq!(v3.restart_reason(&v6), Some("address family changed"));
        // Spans (where a value sits in the file) are not changes.
        let moved: VrrpConfig = toml::from_str(&format!("\n\n{base}")).expect("parses");
        assert!(old.changed_fields(&moved).is_empty());
        assert_eq!(old, moved);
    }

    #[test]
    fn version_is_the_integer_2_or_3() {
        let block = |v: &str| {
            toml::from_str::<VrrpConfig>(&format!(
                "name = \"a\"\ninterface = \"eth0\"\nvirtual_router_id = 1\nvirtual_ipaddresses = [\"10.0.0.100/24\"]\n{v}"
            ))
        };
        let version = |v: &str| block(v).map(|c| *c.version.get_ref());
        assert_eq!(version("").expect("default"), Version::V2);
        assert_eq!(version("version = 2").expect("2"), Version::V2);
        assert_eq!(version("version = 3").expect("3"), Version::V3);
        for (bad, got) in [
            ("version = 4", "4"),
            ("version = 0", "0"),
            ("version = -3", "-3"),
        ] {
            let e = block(bad).expect_err(bad).to_string();
            assert!(
                e.contains(&format!("version must be 2 or 3, got {got}")) && e.contains("line 5"),
                "{bad}: {e}"
            );
        }
        assert!(
            block("version = \"3\"").is_err(),
            "a string is not a version"
        );
    }

    #[test]
    fn only_a_block_that_validates_becomes_a_valid_vrrp() {
        let block = |body: &str| -> VrrpConfig {
            toml::from_str(&format!(
                "name = \"maas_region\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n{body}"
            ))
            .expect("parses")
        };
        let good = block("virtual_ipaddresses = [\"10.0.0.100/24\"]");
        let valid = ValidVrrp::try_from(good.clone()).expect("validates");
        assert_eq!(*valid, good);
        assert_eq!(VrrpConfig::from(valid), good);
        let bad = block("advert_interval = \"1500ms\"\nvirtual_ipaddresses = []");
        let e = ValidVrrp::try_from(bad.clone()).expect_err("refused");
        assert_eq!(e.instance, "maas_region");
        assert_eq!(e.problems, bad.validate());
        assert_eq!(e.problems.len(), 2, "{e}");
        assert_eq!(
            e.to_string(),
            "vrrp instance `maas_region`: `advert_interval` is 1s 500ms: VRRPv2 needs whole seconds from 1s to 255s; `virtual_ipaddresses` needs at least one address"
        );
    }

    #[test]
    fn defaults_follow_keepalived() {
        let c: VrrpConfig = toml::from_str(
            r#"
            name = "maas_region"
            interface = "eth0"
            virtual_router_id = 51
            virtual_ipaddresses = ["10.0.0.100/24"]
            "#,
        )
        .expect("minimal block parses");
        assert_eq!(*c.priority.get_ref(), 100);
        assert_eq!(*c.advert_interval.get_ref(), Duration::from_secs(1));
        assert!(c.preempt);
        assert_eq!(c.garp_master_repeat, 5);
        assert!(c.validate().is_empty());
    }
}
