//! FRR through `vtysh`: what bgpd does with the VIPs, read from its JSON output.
//!
//! maas-vip does not configure FRR at run time: the operator's FRR config exports the
//! connected routes of the VIP interface (`redistribute connected` with a route-map matching
//! the interface), and announcing is the VIP interface's carrier (see [`crate::link`]). This
//! module reads back what bgpd made of it, for status: whether bgpd has the VIP as a locally
//! sourced, valid, best path, and to which peers it advertised it; and the state of the BGP
//! sessions. Parsing is separate from running vtysh so that it is tested on output captured
//! from FRR 8.4 (tests/fixtures).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::prefix::HostPrefix;

/// Running `vtysh` failed or its output was not what FRR prints.
#[derive(Debug, thiserror::Error)]
pub enum FrrError {
    /// vtysh could not be started.
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// vtysh did not finish in time.
    #[error("{program} -c '{command}' did not answer within {timeout:?}")]
    Timeout {
        program: String,
        command: String,
        timeout: Duration,
    },
    /// vtysh exited with an error (bgpd not running, no permission on its socket...).
    #[error("{program} -c '{command}' failed ({status}): {stderr}")]
    Failed {
        program: String,
        command: String,
        status: std::process::ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The output is not the JSON that FRR prints for that command.
    #[error("unexpected output of '{command}': {source}")]
    Parse {
        command: String,
        source: serde_json::Error,
    },
}

/// What bgpd does with one VIP.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteStatus {
    /// bgpd has a locally sourced path (from the VIP interface) for it.
    pub local: bool,
    /// That path is valid and the best: bgpd would advertise it.
    pub best: bool,
    /// Peers it was advertised to (addresses as bgpd names them).
    pub advertised_to: Vec<String>,
}

impl RouteStatus {
    /// Whether some peer has been sent the VIP.
    pub fn announced(&self) -> bool {
        self.local && self.best && !self.advertised_to.is_empty()
    }
}

#[derive(Deserialize)]
struct RouteJson {
    #[serde(default)]
    paths: Vec<PathJson>,
    #[serde(default, rename = "advertisedTo")]
    advertised_to: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct PathJson {
    #[serde(default)]
    sourced: bool,
    #[serde(default)]
    valid: bool,
    #[serde(default)]
    bestpath: Option<BestJson>,
}

#[derive(Deserialize)]
struct BestJson {
    #[serde(default)]
    overall: bool,
}

/// Parses `show bgp ipv4|ipv6 unicast PREFIX json`. FRR prints `{}` for a prefix it does not
/// have.
pub fn parse_route(json: &str) -> Result<RouteStatus, serde_json::Error> {
    let r: RouteJson = serde_json::from_str(json)?;
    let local: Vec<&PathJson> = r.paths.iter().filter(|p| p.sourced).collect();
    let best = local
        .iter()
        .any(|p| p.valid && p.bestpath.as_ref().is_some_and(|b| b.overall));
    Ok(RouteStatus {
        local: !local.is_empty(),
        best,
        // A learned path's advertisement says nothing of ours.
        advertised_to: if best {
            r.advertised_to.into_keys().collect()
        } else {
            Vec::new()
        },
    })
}

/// One BGP session as `show bgp summary json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Peer {
    /// Address (or interface, for unnumbered peers).
    pub peer: String,
    pub remote_as: u32,
    /// FSM state: "Established", "Active", "Connect", "Idle"...
    pub state: String,
    pub prefixes_sent: u32,
}

impl Peer {
    /// Whether the session is up.
    pub fn established(&self) -> bool {
        self.state == "Established"
    }
}

#[derive(Deserialize)]
struct SummaryAfJson {
    #[serde(default)]
    peers: BTreeMap<String, PeerJson>,
}

#[derive(Deserialize)]
struct PeerJson {
    #[serde(default, rename = "remoteAs")]
    remote_as: u32,
    #[serde(default)]
    state: String,
    #[serde(default, rename = "pfxSnt")]
    pfx_snt: u32,
}

/// Parses `show bgp summary json`: the sessions of every address family, each peer once.
/// Without BGP configured FRR prints `{}`.
pub fn parse_summary(json: &str) -> Result<Vec<Peer>, serde_json::Error> {
    let afs: BTreeMap<String, SummaryAfJson> = serde_json::from_str(json)?;
    let mut peers: BTreeMap<String, Peer> = BTreeMap::new();
    for af in afs.into_values() {
        for (addr, p) in af.peers {
            let e = peers.entry(addr.clone()).or_insert(Peer {
                peer: addr,
                remote_as: p.remote_as,
                state: p.state.clone(),
                prefixes_sent: 0,
            });
            e.prefixes_sent += p.pfx_snt;
        }
    }
    Ok(peers.into_values().collect())
}

/// How to reach FRR: the `vtysh` program and, for an FRR started with `--vty_socket` or
/// `-N` (a pathspace), the directory of its sockets.
#[derive(Debug, Clone)]
pub struct Vtysh {
    /// The program (default "vtysh", found on PATH).
    pub program: PathBuf,
    /// `--vty_socket DIR`, if not FRR's default.
    pub vty_socket: Option<PathBuf>,
    /// How long one command may take.
    pub timeout: Duration,
}

impl Default for Vtysh {
    fn default() -> Vtysh {
        Vtysh {
            program: PathBuf::from("vtysh"),
            vty_socket: None,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Vtysh {
    /// Runs one command (`vtysh -c COMMAND`) and returns what it printed.
    pub async fn run(&self, command: &str) -> Result<String, FrrError> {
        let program = self.program.display().to_string();
        let mut c = tokio::process::Command::new(&self.program);
        if let Some(dir) = &self.vty_socket {
            c.arg("--vty_socket").arg(dir);
        }
        c.arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = match tokio::time::timeout(self.timeout, c.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(source)) => return Err(FrrError::Spawn { program, source }),
            Err(_) => {
                return Err(FrrError::Timeout {
                    program,
                    command: command.to_string(),
                    timeout: self.timeout,
                })
            }
        };
        if !out.status.success() {
            return Err(FrrError::Failed {
                program,
                command: command.to_string(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn json<T>(
        &self,
        command: String,
        parse: impl FnOnce(&str) -> Result<T, serde_json::Error>,
    ) -> Result<T, FrrError> {
        let out = self.run(&command).await?;
        parse(&out).map_err(|source| FrrError::Parse { command, source })
    }

    /// What bgpd does with `vip`.
    pub async fn route(&self, vip: HostPrefix) -> Result<RouteStatus, FrrError> {
        let af = if vip.is_ipv6() { "ipv6" } else { "ipv4" };
        self.json(format!("show bgp {af} unicast {vip} json"), parse_route)
            .await
    }

    /// The BGP sessions, from `show bgp summary json`.
    pub async fn peers(&self) -> Result<Vec<Peer>, FrrError> {
        self.json("show bgp summary json".to_string(), parse_summary)
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn announced_route_is_local_best_and_advertised() {
        let r = parse_route(&fixture("frr84-route-announced.json")).unwrap();
        assert_eq!(
            r,
            RouteStatus {
                local: true,
                best: true,
                advertised_to: vec!["10.98.1.1".into()],
            }
        );
        assert!(r.announced());
    }

    #[test]
    fn route_without_a_peer_is_local_but_not_announced() {
        let r = parse_route(&fixture("frr84-route-no-peer.json")).unwrap();
        assert!(r.local && r.best);
        assert!(r.advertised_to.is_empty());
        assert!(!r.announced());
    }

    #[test]
    fn withdrawn_route_is_absent() {
        let r = parse_route(&fixture("frr84-route-absent.json")).unwrap();
        assert_eq!(
            r,
            RouteStatus {
                local: false,
                best: false,
                advertised_to: vec![],
            }
        );
    }

    #[test]
    fn learned_best_path_is_not_ours() {
        // Another host's announcement reflected back: not sourced here, so not announced by us.
        let json = r#"{"prefix":"10.0.0.100/32","advertisedTo":{"10.0.0.1":{}},
            "paths":[{"valid":true,"bestpath":{"overall":true},"peer":{"peerId":"10.0.0.1"}}]}"#;
        let r = parse_route(json).unwrap();
        assert!(!r.local && !r.best && !r.announced());
    }

    #[test]
    fn summary_lists_sessions() {
        let up = parse_summary(&fixture("frr84-summary-established.json")).unwrap();
        assert_eq!(
            up,
            vec![Peer {
                peer: "10.98.1.1".into(),
                remote_as: 65000,
                state: "Established".into(),
                prefixes_sent: 1,
            }]
        );
        assert!(up[0].established());
        let down = parse_summary(&fixture("frr84-summary-active.json")).unwrap();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].state, "Active");
        assert!(!down[0].established());
        assert!(parse_summary("{}").unwrap().is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_route("% Unknown command").is_err());
        assert!(parse_summary("[1,2]").is_err());
    }

    #[tokio::test]
    async fn vtysh_failures_are_reported() {
        let v = Vtysh {
            program: PathBuf::from("/nonexistent/vtysh"),
            ..Vtysh::default()
        };
        assert!(matches!(
            v.run("show version").await,
            Err(FrrError::Spawn { .. })
        ));
        // `false` stands in for a vtysh that cannot reach bgpd: it exits non-zero.
        let v = Vtysh {
            program: PathBuf::from("false"),
            ..Vtysh::default()
        };
        let e = v.peers().await.unwrap_err();
        assert!(matches!(e, FrrError::Failed { .. }), "{e}");
        // `sh -c 'exec sleep 5'` never answers within the limit (and is killed on drop).
        let v = Vtysh {
            program: PathBuf::from("sh"),
            vty_socket: None,
            timeout: Duration::from_millis(50),
        };
        assert!(matches!(
            v.run("exec sleep 5").await,
            Err(FrrError::Timeout { .. })
        ));
    }
}
