//! What the daemon will be allowed to do, and what `check` makes of it (issue 13, point 2).
//!
//! Track scripts and notify programs run with the daemon's capabilities. Under the shipped
//! unit (conf/maas-vip.service) those are CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE
//! and nothing else, for root: so `script_user` (setuid/setgid, needing CAP_SETUID and
//! CAP_SETGID) fails every run with EPERM, and `killall -0` / `kill -0` of another user's
//! process (CAP_KILL) fails too. A weight-0 script then keeps the instance in FAULT for ever.
//!
//! Which capabilities are judged ([`Which`]): `maas-vip check --caps unit` judges against the
//! unit's set ([`UNIT_CAPABILITIES`], root); `--caps own` against this process's own
//! effective set and user. Without the flag: the process's own when systemd started it
//! (`INVOCATION_ID` is set, as for the unit's `ExecStartPre=maas-vip check`, which has exactly
//! the capabilities `ExecStart` gets, drop-ins included), the unit's otherwise (run by hand
//! before `systemctl enable`, the README's order). Someone who runs `maas-vip run` by hand
//! passes `--caps own`.

use std::fmt;

use config::{Config, Finding, Severity};

/// One Linux capability (linux/capability.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cap {
    /// Its number.
    pub(crate) bit: u8,
    /// Its name as systemd writes it.
    pub(crate) name: &'static str,
}

const CAP_SETGID: Cap = Cap::new(6, "CAP_SETGID");
const CAP_SETUID: Cap = Cap::new(7, "CAP_SETUID");
const CAP_KILL: Cap = Cap::new(5, "CAP_KILL");
const CAP_NET_BIND_SERVICE: Cap = Cap::new(10, "CAP_NET_BIND_SERVICE");
const CAP_NET_ADMIN: Cap = Cap::new(12, "CAP_NET_ADMIN");
const CAP_NET_RAW: Cap = Cap::new(13, "CAP_NET_RAW");

impl Cap {
    const fn new(bit: u8, name: &'static str) -> Cap {
        Cap { bit, name }
    }
}

/// conf/maas-vip.service's `CapabilityBoundingSet=` and `AmbientCapabilities=` (a test
/// compares them); the unit has no `User=`, so the daemon is root with these alone.
pub(crate) const UNIT_CAPABILITIES: [Cap; 3] = [CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE];

/// Whose capabilities `check` judges the config against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Which {
    /// The shipped systemd unit's: root with CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE.
    Unit,
    /// This process's own effective set and user (the daemon run by hand, or under a unit
    /// whose settings differ).
    Own,
}

impl Which {
    /// `own` when systemd started this process (`INVOCATION_ID`), else `unit`.
    pub(crate) fn auto() -> Which {
        if std::env::var_os("INVOCATION_ID").is_some() {
            Which::Own
        } else {
            Which::Unit
        }
    }
}

/// The capabilities and user the daemon will run with.
#[derive(Debug, Clone)]
pub(crate) struct Judged {
    which: Which,
    caps: u64,
    uid: u32,
    gid: u32,
}

impl Judged {
    /// The unit's set, or this process's.
    pub(crate) fn new(which: Which) -> Judged {
        match which {
            Which::Unit => Judged {
                which,
                caps: UNIT_CAPABILITIES
                    .iter()
                    .fold(0, |acc, c| acc | (1u64 << c.bit)),
                uid: 0,
                gid: 0,
            },
            Which::Own => {
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                let field = |key: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(key))
                        .map(str::trim)
                        .unwrap_or("")
                        .to_string()
                };
                // `Uid:` and `Gid:` list real, effective, saved, fs: the effective one counts.
                let id = |key: &str| {
                    field(key)
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(u32::MAX)
                };
                Judged {
                    which,
                    caps: u64::from_str_radix(&field("CapEff:"), 16).unwrap_or(0),
                    uid: id("Uid:"),
                    gid: id("Gid:"),
                }
            }
        }
    }

    fn has(&self, c: Cap) -> bool {
        self.caps & (1u64 << c.bit) != 0
    }

    fn lacking(&self, caps: &[Cap]) -> Vec<&'static str> {
        caps.iter()
            .filter(|c| !self.has(**c))
            .map(|c| c.name)
            .collect()
    }
}

impl fmt::Display for Judged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.which {
            Which::Unit => f.write_str("maas-vip.service (root with CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE only; `--caps own` judges this process instead)"),
            Which::Own => write!(
                f,
                "this process (uid {}, effective capabilities {:#x}; `--caps unit` judges the shipped unit instead)",
                self.uid, self.caps
            ),
        }
    }
}

/// `killall -0 X`, `kill -0 PID`, with or without a path: a signal-0 liveness test.
fn signal_zero(argv: &[String]) -> Option<&str> {
    let prog = argv.first()?;
    let base = prog.rsplit('/').next().unwrap_or(prog);
    let zero = argv[1..].iter().any(|a| a == "-0" || a == "-s0");
    match base {
        "killall" | "kill" if zero => Some(base),
        _ => None,
    }
}

/// What the config asks of capabilities the daemon will not have, located in the file.
pub(crate) fn findings(c: &Config, judged: &Judged) -> Vec<Finding> {
    let mut out = Vec::new();
    let at = |span: std::ops::Range<usize>| (!span.is_empty()).then_some(span);
    for v in &c.vrrp {
        if let Some(user) = &v.script_user {
            let switches = match vrrp::resolve_user(user.get_ref()) {
                Ok((uid, gid)) => (uid, gid) != (judged.uid, judged.gid),
                // Reported by the host facts already (no such user).
                Err(_) => false,
            };
            let lacking = judged.lacking(&[CAP_SETUID, CAP_SETGID]);
            if switches && !lacking.is_empty() {
                out.push(Finding {
                    severity: Severity::Error,
                    span: at(user.span()),
                    message: format!(
                        "script_user `{}`: the daemon, run by {judged}, lacks {}, so every \
                         track script and notify would fail with EPERM (a weight-0 script keeps \
                         the instance in FAULT). Remove script_user (they then run as the \
                         daemon's user; `pidof` needs no privilege), or grant {} (`systemctl \
                         edit maas-vip`: CapabilityBoundingSet= and AmbientCapabilities=)",
                        user.get_ref(),
                        lacking.join(" and "),
                        lacking.join(" ")
                    ),
                });
            }
        }
        for ts in &v.track_script {
            let argv = ts.command.get_ref();
            if let Some(prog) = signal_zero(argv) {
                if !judged.has(CAP_KILL) {
                    let target = argv.last().map(String::as_str).unwrap_or("X");
                    out.push(Finding {
                        severity: Severity::Warning,
                        span: at(ts.command.span()),
                        message: format!(
                            "track_script `{}`: `{prog} -0` signals the process, which needs \
                             CAP_KILL when another user runs it (Debian's named runs as `bind`); \
                             the daemon, run by {judged}, lacks it, so the script fails for ever \
                             there{}. Use command = [\"pidof\", \"{target}\"]",
                            ts.name.get_ref(),
                            if ts.weight == 0 {
                                " and, with weight 0, keeps the instance in FAULT"
                            } else {
                                ""
                            }
                        ),
                    });
                }
            }
        }
        let lacking = judged.lacking(&[CAP_NET_ADMIN, CAP_NET_RAW]);
        if !lacking.is_empty() {
            out.push(Finding {
                severity: Severity::Warning,
                span: at(v.name.span()),
                message: format!(
                    "vrrp `{}`: the daemon, run by {judged}, lacks {} (VIPs by netlink, \
                     adverts and gratuitous ARP on raw sockets): the instance cannot run",
                    v.name.get_ref(),
                    lacking.join(" and ")
                ),
            });
        }
    }
    if !judged.has(CAP_NET_BIND_SERVICE) {
        for f in &c.frontend {
            if let Some(b) = f.bind.get_ref().iter().find(|b| b.port() < 1024) {
                out.push(Finding {
                    severity: Severity::Warning,
                    span: at(f.bind.span()),
                    message: format!(
                        "frontend `{}`: bind {b} needs CAP_NET_BIND_SERVICE, which the daemon, \
                         run by {judged}, lacks",
                        f.name.get_ref()
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unit's capability lines, as systemd reads them (space separated, may repeat).
    fn unit_values(key: &str) -> Vec<String> {
        let unit = include_str!("../../conf/maas-vip.service");
        let mut out: Vec<String> = unit
            .lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .flat_map(|v| v.split_whitespace().map(str::to_string))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn unit_capabilities_are_the_units() {
        let mut ours: Vec<String> = UNIT_CAPABILITIES
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        ours.sort();
        assert_eq!(unit_values("CapabilityBoundingSet"), ours);
        assert_eq!(unit_values("AmbientCapabilities"), ours);
        // No User=/Group=: the daemon is root (uid 0, gid 0), as `Judged::new(Unit)` says.
        assert!(unit_values("User").is_empty() && unit_values("Group").is_empty());
    }

    fn config(extra_vrrp: &str, script: &str) -> Config {
        let text = format!(
            "[[vrrp]]\nname = \"maas_region\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
             virtual_ipaddresses = [\"10.0.0.100/24\"]\n{extra_vrrp}\n\
             [[vrrp.track_script]]\nname = \"chk_named\"\ncommand = {script}\n"
        );
        config::parse(std::path::Path::new("t.toml"), text)
            .map(|(c, _)| c)
            .unwrap_or_else(|r| panic!("{r}"))
    }

    #[test]
    fn script_user_is_an_error_under_the_unit() {
        let c = config("script_user = \"65534:65534\"", "[\"pidof\", \"named\"]");
        let f = findings(&c, &Judged::new(Which::Unit));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert!(
            f[0].message.contains("lacks CAP_SETUID and CAP_SETGID"),
            "{}",
            f[0].message
        );
        assert!(f[0].span.is_some(), "located at the value");
        // The daemon's own user (root under the unit) needs no switch.
        let c = config("script_user = \"0:0\"", "[\"pidof\", \"named\"]");
        assert!(findings(&c, &Judged::new(Which::Unit)).is_empty());
        // With the capabilities, it is fine.
        let mut all = Judged::new(Which::Unit);
        all.caps = u64::MAX;
        let c = config("script_user = \"65534:65534\"", "[\"pidof\", \"named\"]");
        assert!(findings(&c, &all).is_empty());
    }

    #[test]
    fn killall_zero_is_a_warning_without_cap_kill() {
        let c = config("", "[\"killall\", \"-0\", \"named\"]");
        let f = findings(&c, &Judged::new(Which::Unit));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].message
                .contains("Use command = [\"pidof\", \"named\"]")
                && f[0].message.contains("keeps the instance in FAULT"),
            "{}",
            f[0].message
        );
        let mut all = Judged::new(Which::Unit);
        all.caps = u64::MAX;
        assert!(findings(&c, &all).is_empty());
    }

    #[test]
    fn own_reads_this_process() {
        let j = Judged::new(Which::Own);
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1)?.parse().ok())
            .expect("uid");
        assert_eq!(j.uid, uid);
        // Unprivileged: no capability; root (CI): at least the unit's.
        if uid == 0 {
            assert!(UNIT_CAPABILITIES.iter().all(|c| j.has(*c)));
        }
    }
}
