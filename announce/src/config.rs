//! `[[announce]]`: one set of VIPs announced by BGP through the host's routing daemon.
//!
//! ```toml
//! [[announce]]
//! name = "maas_region"
//! virtual_ipaddresses = ["10.0.0.100/32"]   # host prefixes only
//! interface = "maas-vip0"                   # the VIP interface maas-vip creates and owns
//! track_frontends = ["maas"]                # withdraw when one of them has no server up
//! announce_delay = "2s"
//! drain_delay = "2s"
//! daemon = "frr"
//! vtysh = "vtysh"                           # for status only
//!
//! [[announce.track_script]]
//! name = "chk_named"
//! command = ["pidof", "named"]
//! ```
//!
//! Structs only and the checks within one block; the binary checks the names of frontends
//! and the VIPs of `[[vrrp]]` blocks against these.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_spanned::Spanned;

use crate::decide::{DEFAULT_ANNOUNCE_DELAY, DEFAULT_DRAIN_DELAY};
use crate::frr::Vtysh;
use crate::{HostPrefix, Timings};

/// A problem in a block, located.
pub type Problem = Spanned<String>;

/// The VIP interface's name when `interface` is not given.
pub const DEFAULT_INTERFACE: &str = "maas-vip0";

/// One `[[announce]]` block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceConfig {
    /// Name used in logs, status and metrics.
    pub name: Spanned<String>,
    /// The VIPs, each a /32 or /128.
    pub virtual_ipaddresses: Spanned<Vec<HostPrefix>>,
    /// The VIP interface (a TUN device created at start, deleted when the process ends).
    #[serde(default = "default_interface")]
    pub interface: Spanned<String>,
    /// Frontends that must each have a server up for the VIPs to be announced.
    #[serde(default)]
    pub track_frontends: Vec<Spanned<String>>,
    /// Fit to announce for this long before announcing.
    #[serde(default = "default_announce_delay", with = "humantime_serde")]
    pub announce_delay: Duration,
    /// On SIGTERM, from the withdrawal to closing the listeners.
    #[serde(default = "default_drain_delay", with = "humantime_serde")]
    pub drain_delay: Duration,
    /// The routing daemon: "frr" (the only one today).
    #[serde(default)]
    pub daemon: Daemon,
    /// The `vtysh` program, for status.
    #[serde(default = "default_vtysh")]
    pub vtysh: PathBuf,
    /// FRR's vty socket directory, when not the default (FRR started with `--vty_socket`).
    #[serde(default)]
    pub vty_socket: Option<PathBuf>,
    /// Scripts that must pass.
    #[serde(default)]
    pub track_script: Vec<TrackScript>,
}

/// The routing daemon that exports the VIP interface's routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Daemon {
    /// FRR (zebra + bgpd), read through vtysh.
    #[default]
    Frr,
}

/// `[[announce.track_script]]`: as `[[vrrp.track_script]]` without a weight (failing
/// withdraws).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackScript {
    /// Name used in logs and status.
    pub name: Spanned<String>,
    /// Program and arguments, run directly (never through a shell).
    pub command: Spanned<Vec<String>>,
    /// Time between two runs.
    #[serde(default = "two_secs", with = "humantime_serde")]
    pub interval: Duration,
    /// A run still going after this is killed and counts as failed.
    #[serde(default = "two_secs", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes before the script counts as passing (also the first time).
    #[serde(default = "one", deserialize_with = "de_count")]
    pub rise: u32,
    /// Consecutive failures before it counts as failing.
    #[serde(default = "one", deserialize_with = "de_count")]
    pub fall: u32,
}

impl<'de> Deserialize<'de> for HostPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HostPrefix, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn default_interface() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_INTERFACE.to_string())
}
fn default_announce_delay() -> Duration {
    DEFAULT_ANNOUNCE_DELAY
}
fn default_drain_delay() -> Duration {
    DEFAULT_DRAIN_DELAY
}
fn default_vtysh() -> PathBuf {
    PathBuf::from("vtysh")
}
fn one() -> u32 {
    1
}
fn two_secs() -> Duration {
    Duration::from_secs(2)
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

impl AnnounceConfig {
    /// The machine's timings.
    pub fn timings(&self) -> Timings {
        Timings {
            announce_delay: self.announce_delay,
            drain_delay: self.drain_delay,
        }
    }

    /// How to reach FRR for status.
    pub fn vtysh(&self) -> Vtysh {
        Vtysh {
            program: self.vtysh.clone(),
            vty_socket: self.vty_socket.clone(),
            ..Vtysh::default()
        }
    }

    /// `virtual_ipaddresses`: the host prefixes put on the VIP interface and announced.
    pub fn vips(&self) -> &[HostPrefix] {
        self.virtual_ipaddresses.get_ref()
    }

    /// Checks that relate several values of this block. Returns every problem found.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.name.get_ref().is_empty() {
            out.push(Spanned::new(
                self.name.span(),
                "`name` must not be empty".into(),
            ));
        }
        let iface = self.interface.get_ref();
        if iface.is_empty()
            || iface.len() > 15
            || iface == "."
            || iface == ".."
            || iface
                .bytes()
                .any(|b| b == b'/' || b == b':' || !b.is_ascii_graphic())
        {
            out.push(Spanned::new(
                self.interface.span(),
                format!(
                    "`interface` {iface:?} is not an interface name (1 to 15 printable bytes, no '/', ':' or spaces)"
                ),
            ));
        }
        let vips = self.virtual_ipaddresses.get_ref();
        if vips.is_empty() {
            out.push(Spanned::new(
                self.virtual_ipaddresses.span(),
                "`virtual_ipaddresses` needs at least one address".into(),
            ));
        }
        for (i, v) in vips.iter().enumerate() {
            if vips[..i].contains(v) {
                out.push(Spanned::new(
                    self.virtual_ipaddresses.span(),
                    format!("VIP {v} is listed twice"),
                ));
            }
            let a = v.addr();
            let broadcast = matches!(a, std::net::IpAddr::V4(x) if x.is_broadcast());
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() || broadcast {
                out.push(Spanned::new(
                    self.virtual_ipaddresses.span(),
                    format!("{v} cannot be a VIP"),
                ));
            }
        }
        for (i, f) in self.track_frontends.iter().enumerate() {
            if self.track_frontends[..i]
                .iter()
                .any(|o| o.get_ref() == f.get_ref())
            {
                out.push(Spanned::new(
                    f.span(),
                    format!("frontend `{}` is tracked twice", f.get_ref()),
                ));
            }
        }
        for (i, ts) in self.track_script.iter().enumerate() {
            if self.track_script[..i]
                .iter()
                .any(|o| o.name.get_ref() == ts.name.get_ref())
            {
                out.push(Spanned::new(
                    ts.name.span(),
                    format!("track_script name `{}` is used twice", ts.name.get_ref()),
                ));
            }
            if ts.command.get_ref().is_empty() {
                out.push(Spanned::new(
                    ts.command.span(),
                    "`command` needs at least the program".into(),
                ));
            }
            if ts.interval.is_zero() || ts.timeout.is_zero() {
                out.push(Spanned::new(
                    ts.name.span(),
                    "track_script `interval` and `timeout` must be above 0".into(),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn defaults_and_host_prefixes() {
        let c: AnnounceConfig =
            toml::from_str("name = \"a\"\nvirtual_ipaddresses = [\"10.0.0.100\"]\n").unwrap();
        assert_eq!(c.interface.get_ref(), DEFAULT_INTERFACE);
        assert_eq!(c.timings(), Timings::default());
        assert_eq!(c.daemon, Daemon::Frr);
        assert_eq!(c.vips()[0].to_string(), "10.0.0.100/32");
        assert!(c.validate().is_empty());
        let e = toml::from_str::<AnnounceConfig>(
            "name = \"a\"\nvirtual_ipaddresses = [\"10.0.0.0/24\"]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("only host prefixes"), "{e}");
        let e = toml::from_str::<AnnounceConfig>(
            "name = \"a\"\nvirtual_ipaddresses = [\"10.0.0.1\"]\ndaemon = \"bird\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }

    #[test]
    fn validate_finds_every_problem() {
        let c: AnnounceConfig = toml::from_str(
            r#"
name = ""
virtual_ipaddresses = ["10.0.0.1", "10.0.0.1", "224.0.0.1"]
interface = "much-too-long-name0"
track_frontends = ["maas", "maas"]
[[track_script]]
name = "x"
command = []
[[track_script]]
name = "x"
command = ["true"]
"#,
        )
        .unwrap();
        let p: Vec<String> = c.validate().into_iter().map(|p| p.into_inner()).collect();
        assert_eq!(p.len(), 7, "{p:#?}");
    }
}
