//! A routed fabric of network namespaces with real FRR, for the BGP announcement tests.
//!
//! ```text
//!   client 10.96.0.2 ── 10.96.0.1 router (FRR bgpd, AS 65000, maximum-paths 16, L4 hash)
//!                                 │ 10.97.i.1/24, one link and subnet per host
//!                  host i 10.97.i.2 (FRR bgpd, AS 65001+i; `mvlab hold` owns mvip0 + VIP)
//! ```
//!
//! Each host is in a segment of its own (the leaf-spine case VRRP cannot cover) and peers
//! with the router by eBGP. The host's FRR exports only the connected routes of the VIP
//! interface [`VIP_IFACE`], the config README.md gives operators. Names come from
//! [`Netns::new`] (pid + counter), every daemon runs in the foreground under a [`Proc`], and
//! everything is killed and deleted on drop: hosts first, then the router and the client.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::netns::{print_logs, wait_for, Netns, Proc};

/// The VIP interface the host programs create and the hosts' FRR exports.
pub const VIP_IFACE: &str = "mvip0";

/// The `mvlab` helper built beside the test binaries (tests/src/bin/mvlab.rs).
pub fn mvlab_bin() -> PathBuf {
    // Cargo builds the package's binaries for its integration tests.
    crate::target_bin("mvlab", "run the tests of maas-vip-tests through cargo")
}

/// Whether FRR is installed (zebra, bgpd, vtysh as Debian ships them).
pub fn frr_available() -> Result<(), String> {
    for p in [FRR_ZEBRA, FRR_BGPD, "/usr/bin/vtysh"] {
        if !Path::new(p).exists() {
            return Err(format!("{p} missing (apt-get install frr)"));
        }
    }
    Ok(())
}

const FRR_ZEBRA: &str = "/usr/lib/frr/zebra";
const FRR_BGPD: &str = "/usr/lib/frr/bgpd";

/// zebra and bgpd of one namespace, with their sockets, pid files and logs in `dir`.
#[derive(Debug)]
pub struct Frr {
    bgpd: Proc,
    zebra: Proc,
    /// Where the vty sockets, the config and the logs are.
    pub dir: PathBuf,
    ns: String,
}

impl Frr {
    /// Starts zebra and bgpd in `ns` with `config` (an frr.conf), and waits until vtysh
    /// reaches both.
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Frr {
        std::fs::create_dir_all(dir).expect("frr dir");
        std::fs::write(dir.join("frr.conf"), config).expect("frr.conf");
        // The daemons drop to the frr user: the directory must be theirs.
        let st = Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(st.success(), "chown frr {}", dir.display());
        let d = dir.to_str().expect("utf8 path");
        let daemon = |prog: &str, name: &str| {
            Proc::spawn(
                ns,
                prog,
                &[
                    "-u",
                    "frr",
                    "-g",
                    "frr",
                    "-f",
                    &format!("{d}/frr.conf"),
                    "-i",
                    &format!("{d}/{name}.pid"),
                    "-z",
                    &format!("{d}/zserv.api"),
                    "--vty_socket",
                    d,
                    "-P",
                    "0",
                    "--log",
                    "stdout",
                ],
                &[],
                dir.join(format!("{name}.log")),
            )
        };
        let zebra = daemon(FRR_ZEBRA, "zebra");
        assert!(
            wait_for(Duration::from_secs(10), || dir.join("zserv.api").exists()).is_some(),
            "zebra did not start: {}",
            zebra.output()
        );
        let bgpd = daemon(FRR_BGPD, "bgpd");
        let frr = Frr {
            bgpd,
            zebra,
            dir: dir.to_path_buf(),
            ns: ns.name().to_string(),
        };
        assert!(
            wait_for(Duration::from_secs(10), || frr
                .try_vtysh("show bgp summary json")
                .is_some())
            .is_some(),
            "bgpd did not start: {}\n{}",
            frr.bgpd.output(),
            frr.zebra.output()
        );
        frr
    }

    /// `vtysh -c command` against these daemons; `None` if it failed.
    pub fn try_vtysh(&self, command: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(["-c", command])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `vtysh` settings for the `announce` crate's FRR reader.
    pub fn vtysh(&self) -> announce::Vtysh {
        announce::Vtysh {
            vty_socket: Some(self.dir.clone()),
            ..announce::Vtysh::default()
        }
    }

    /// Both daemons' logs.
    pub fn logs(&self) -> String {
        format!(
            "---- zebra\n{}\n---- bgpd\n{}",
            self.zebra.output(),
            self.bgpd.output()
        )
    }
}

/// A region host of the fabric.
#[derive(Debug)]
pub struct BgpHost {
    /// Its FRR (dropped before the namespace).
    pub frr: Frr,
    /// The namespace.
    pub ns: Netns,
    /// Its address on its link to the router (the next hop the router learns).
    pub addr: Ipv4Addr,
}

/// The router, the client and `n` hosts.
#[derive(Debug)]
pub struct Fabric {
    /// The hosts (dropped first).
    pub hosts: Vec<BgpHost>,
    /// The router's FRR.
    pub router_frr: Frr,
    /// The router.
    pub router: Netns,
    /// The client, behind the router.
    pub client: Netns,
    /// Configs, sockets and logs (inside `_tmp`).
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// How soon the router drops a host's next hop once the host withdraws or its owner process
/// dies (SIGKILL included): the kernel deletes the VIP interface at once, and FRR on the host
/// and on the router take about 0.15 s between them (FRR 8.4, measured by
/// `withdrawal_times_stay_within_the_bound`), up to 1 s when the withdrawal follows an
/// announcement by less than a second. The rest is margin for a loaded machine.
pub const WITHDRAW_BOUND: Duration = Duration::from_secs(2);

/// What a run of client connections got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Answers by host name ("h0"...).
    pub names: BTreeMap<String, u64>,
    /// Connections that failed or got no answer.
    pub errors: u64,
    /// The failures by kind ("ConnectionRefused", "TimedOut"...).
    pub error_kinds: BTreeMap<String, u64>,
    /// Each failure: when its connection started and ended, and its kind.
    pub failures: Vec<Failure>,
}

/// One failed connection of a [`Tally`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When the client started connecting.
    pub start: SystemTime,
    /// When it gave up.
    pub end: SystemTime,
    /// "ConnectionReset", "TimedOut", "empty"...
    pub kind: String,
}

impl Failure {
    /// Whether the connection was open at some moment between `from` and `to`.
    pub fn overlaps(&self, from: SystemTime, to: SystemTime) -> bool {
        self.start <= to && self.end >= from
    }
}

impl Tally {
    fn parse(out: &str) -> Tally {
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("mvlab output {out:?}: {e}"));
        let map = |k: &str| -> BTreeMap<String, u64> {
            v[k].as_object()
                .into_iter()
                .flatten()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        };
        let ms =
            |v: &serde_json::Value| UNIX_EPOCH + Duration::from_millis(v.as_u64().unwrap_or(0));
        let failures = v["failures"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| Failure {
                start: ms(&f[0]),
                end: ms(&f[1]),
                kind: f[2].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        Tally {
            names: map("names"),
            errors: v["errors"].as_u64().unwrap_or(u64::MAX),
            error_kinds: map("error_kinds"),
            failures,
        }
    }

    /// The tally of a finished [`Fabric::hammer`].
    pub fn of(hammer: &mut Proc) -> Tally {
        let st = hammer.wait_exit(Duration::from_secs(30));
        assert!(
            st.is_some_and(|s| s.success()),
            "hammer: {}",
            hammer.output()
        );
        let out = hammer.output();
        let last = out.lines().last().unwrap_or_default().to_string();
        Tally::parse(&last)
    }

    /// The hosts that answered, by name.
    pub fn hosts(&self) -> Vec<&str> {
        self.names.keys().map(String::as_str).collect()
    }

    /// The hosts that answered, from answers "h{i}/r{k}" (the real daemon's stand-in
    /// regions), sorted.
    pub fn via_hosts(&self) -> Vec<&str> {
        self.parts(0)
    }

    /// The regions that answered ("r1"...), whichever host they were reached through.
    pub fn regions(&self) -> Vec<&str> {
        self.parts(1)
    }

    fn parts(&self, i: usize) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .names
            .keys()
            .filter_map(|n| n.split('/').nth(i))
            .collect();
        v.dedup();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Connections that got an answer.
    pub fn answered(&self) -> u64 {
        self.names.values().sum()
    }
}

/// The stand-in regions of a host listen on 127.0.0.1:REGION_PORT+k.
pub const REGION_PORT: u16 = 5240;

/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 2);

fn sysctl(ns: &Netns, kv: &str) {
    let st = ns
        .command("sysctl")
        .args(["-qw", kv])
        .status()
        .expect("sysctl");
    assert!(st.success(), "sysctl {kv} in {}", ns.name());
}

impl Fabric {
    /// Builds the namespaces and links and starts FRR everywhere (configs, sockets and logs
    /// in a temporary directory). Does not wait for the sessions:
    /// [`wait_next_hops`](Self::wait_next_hops) does.
    pub fn new(n: usize) -> Fabric {
        assert!(n <= 200);
        let tmp = tempfile::Builder::new()
            .prefix("mv-bgp")
            .tempdir()
            .expect("temp dir");
        // The FRR daemons run as the frr user and must reach their directories.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        let dir = tmp.path();
        let router = Netns::new("bgpr");
        let client = Netns::new("bgpc");
        sysctl(&router, "net.ipv4.ip_forward=1");
        // Hash on ports too (policy 1): one client's flows spread over every host.
        sysctl(&router, "net.ipv4.fib_multipath_hash_policy=1");
        router.veth("cl", &client, "eth0");
        router.ip(&["addr", "add", "10.96.0.1/24", "dev", "cl"]);
        router.ip(&["link", "set", "cl", "up"]);
        client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"]);
        client.ip(&["link", "set", "eth0", "up"]);
        client.ip(&["route", "add", "default", "via", "10.96.0.1"]);

        let mut host_ns = Vec::new();
        for i in 0..n {
            let ns = Netns::new(&format!("bgph{i}"));
            let port = format!("h{i}");
            router.veth(&port, &ns, "eth0");
            router.ip(&["addr", "add", &format!("10.97.{i}.1/24"), "dev", &port]);
            router.ip(&["link", "set", &port, "up"]);
            let addr = Ipv4Addr::new(10, 97, i as u8, 2);
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
            ns.ip(&["route", "add", "default", "via", &format!("10.97.{i}.1")]);
            host_ns.push((ns, addr));
        }

        let router_frr = Frr::start(&router, &dir.join("router"), ROUTER_FRR);
        let hosts = host_ns
            .into_iter()
            .enumerate()
            .map(|(i, (ns, addr))| {
                let conf = host_frr_conf(i, addr);
                let frr = Frr::start(&ns, &dir.join(format!("h{i}")), &conf);
                BgpHost { frr, ns, addr }
            })
            .collect();
        Fabric {
            hosts,
            router_frr,
            router,
            client,
            dir: dir.to_path_buf(),
            _tmp: tmp,
        }
    }

    /// The router's next hops for `vip`, as host indices (sorted).
    pub fn next_hops(&self, vip: Ipv4Addr) -> Vec<usize> {
        let out = self
            .router
            .ip_output(&["-j", "route", "show", &format!("{vip}/32")]);
        let routes: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let mut gws = Vec::new();
        for r in routes.as_array().into_iter().flatten() {
            if let Some(g) = r.get("gateway").and_then(|g| g.as_str()) {
                gws.push(g.to_string());
            }
            for nh in r
                .get("nexthops")
                .and_then(|n| n.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(g) = nh.get("gateway").and_then(|g| g.as_str()) {
                    gws.push(g.to_string());
                }
            }
        }
        let mut idx: Vec<usize> = (0..self.hosts.len())
            .filter(|i| gws.contains(&self.hosts[*i].addr.to_string()))
            .collect();
        idx.sort_unstable();
        idx
    }

    /// Waits up to `limit` until the router's next hops for `vip` are exactly the hosts
    /// `want`, and returns how long that took; otherwise panics with the routing state and
    /// the logs of `procs`.
    pub fn wait_next_hops(
        &self,
        vip: Ipv4Addr,
        want: &[usize],
        limit: Duration,
        what: &str,
        procs: &[&Proc],
    ) -> Duration {
        match wait_for(limit, || self.next_hops(vip) == want) {
            Some(t) => t,
            None => {
                print_logs(procs);
                eprintln!(
                    "---- router bgp\n{}",
                    self.router_frr
                        .try_vtysh("show bgp ipv4 unicast")
                        .unwrap_or_default()
                );
                panic!(
                    "{what}: router's next hops for {vip} are hosts {:?}, wanted {want:?} within {limit:?}",
                    self.next_hops(vip)
                );
            }
        }
    }

    /// Starts `mvlab host` on host `i`: a listener on `port` answering "h{i}", the VIP
    /// interface with `vip`, the announce machine with `drain` as its drain delay; waits until
    /// it has announced.
    pub fn host(&self, i: usize, vip: Ipv4Addr, port: u16, drain: Duration) -> Proc {
        let args = [
            "host".to_string(),
            VIP_IFACE.to_string(),
            format!("{vip}/32"),
            port.to_string(),
            format!("h{i}"),
            drain.as_millis().to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = Proc::spawn(
            &self.hosts[i].ns,
            mvlab_bin(),
            &args,
            &[],
            self.dir.join(format!("host-h{i}.log")),
        );
        assert!(
            wait_for(Duration::from_secs(10), || p.output().contains("ready")).is_some(),
            "mvlab host on host {i} did not start: {}",
            p.output()
        );
        p
    }

    /// Starts the stand-in regions of host `i`: `mvlab serve` on 127.0.0.1:5240+k answering
    /// "h{i}/r{k}" for k in 1..=`n`. Every host has regions of the same names, so a
    /// consistent hash picks the same region name whichever host computes it.
    pub fn regions(&self, i: usize, n: usize) -> Vec<Proc> {
        self.regions_of(i, n, "serve")
    }

    /// [`Fabric::regions`] answering HTTP (`mvlab http`), for wrk.
    pub fn http_regions(&self, i: usize, n: usize) -> Vec<Proc> {
        self.regions_of(i, n, "http")
    }

    fn regions_of(&self, i: usize, n: usize, how: &str) -> Vec<Proc> {
        let procs: Vec<Proc> = (1..=n)
            .map(|k| {
                Proc::spawn(
                    &self.hosts[i].ns,
                    mvlab_bin(),
                    &[
                        how,
                        &format!("127.0.0.1:{}", REGION_PORT + k as u16),
                        &format!("h{i}/r{k}"),
                    ],
                    &[],
                    self.dir.join(format!("region-h{i}-r{k}.log")),
                )
            })
            .collect();
        for p in &procs {
            assert!(
                wait_for(Duration::from_secs(10), || p.output().contains("serving")).is_some(),
                "region on host {i} did not start: {}",
                p.output()
            );
        }
        procs
    }

    /// The config of the real daemon on host `i`: frontend `maas` on :`port` over
    /// [`Fabric::regions`] (`regions` of them, TCP checks every 200 ms, fall 1), `balance`, and
    /// an `[[announce]]` block of `vip` on [`VIP_IFACE`] tracking it, with `drain` as its
    /// drain delay, reading this host's FRR.
    pub fn daemon_config(
        &self,
        i: usize,
        vip: Ipv4Addr,
        port: u16,
        regions: usize,
        balance: &str,
        drain: Duration,
    ) -> String {
        let mut c = format!(
            r#"shutdown_grace = "2s"
workers = 1

[[frontend]]
name = "maas"
bind = ["0.0.0.0:{port}"]
balance = "{balance}"
check = {{ kind = "tcp", interval = "200ms", timeout = "500ms", rise = 1, fall = 1 }}
"#
        );
        for k in 1..=regions {
            c.push_str(&format!(
                "\n[[frontend.server]]\nname = \"r{k}\"\naddress = \"127.0.0.1:{}\"\n",
                REGION_PORT + k as u16
            ));
        }
        c.push_str(&format!(
            r#"
[[announce]]
name = "bgp"
virtual_ipaddresses = ["{vip}/32"]
interface = "{VIP_IFACE}"
track_frontends = ["maas"]
announce_delay = "200ms"
drain_delay = "{drain_ms}ms"
vtysh = "/usr/bin/vtysh"
vty_socket = "{frr}"
"#,
            drain_ms = drain.as_millis(),
            frr = self.hosts[i].frr.dir.display(),
        ));
        c
    }

    /// Runs `maas-vip run` on host `i` with `config` (written beside its FRR's files) and
    /// waits until it has announced (its log says so).
    pub fn daemon(&self, i: usize, config: &str) -> Proc {
        let bin = crate::maas_vip_bin();
        let conf = self.daemon_conf_path(i);
        std::fs::write(&conf, config).expect("config");
        let p = Proc::spawn(
            &self.hosts[i].ns,
            bin,
            &["run", "-c", conf.to_str().expect("utf8 path")],
            &[("RUST_LOG", "info")],
            self.dir.join(format!("maas-vip-h{i}.log")),
        );
        assert!(
            wait_for(Duration::from_secs(20), || p
                .output()
                .contains("announcing the VIPs"))
            .is_some(),
            "maas-vip on host {i} did not announce: {}",
            p.output()
        );
        p
    }

    /// Where host `i`'s daemon config is.
    pub fn daemon_conf_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("maas-vip-h{i}.toml"))
    }

    /// The `announce` entry of `maas-vip status --json` on host `i`, or `None`.
    pub fn announce_status(&self, i: usize) -> Option<serde_json::Value> {
        let out = self.hosts[i]
            .ns
            .command(crate::maas_vip_bin())
            .args(["status", "--json", "-c"])
            .arg(self.daemon_conf_path(i))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get("announce")?.get(0).cloned()
    }

    /// `count` connections from the client to `vip:port`, one after the other.
    pub fn fetch(&self, vip: Ipv4Addr, port: u16, count: usize) -> Tally {
        let out = self
            .client
            .command(mvlab_bin())
            .args(["fetch", &format!("{vip}:{port}"), &count.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("running mvlab fetch");
        assert!(
            out.status.success(),
            "mvlab fetch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tally::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// Starts connecting from the client to `vip:port` as fast as it can for `d`; read the
    /// result with [`Tally::of`] once it has exited.
    pub fn hammer(&self, vip: Ipv4Addr, port: u16, d: Duration) -> Proc {
        Proc::spawn(
            &self.client,
            mvlab_bin(),
            &[
                "hammer",
                &format!("{vip}:{port}"),
                &d.as_millis().to_string(),
            ],
            &[],
            self.dir.join("hammer.log"),
        )
    }

    /// Whether host `i` has the VIP interface.
    pub fn has_vip_iface(&self, i: usize) -> bool {
        self.hosts[i]
            .ns
            .ip_output(&["link", "show", "dev", VIP_IFACE])
            .status
            .success()
    }
}

/// The router: eBGP with any host of 10.97/16 (dynamic neighbours, each host its own AS),
/// multipath over all of them.
const ROUTER_FRR: &str = "\
frr defaults datacenter
hostname router
router bgp 65000
 bgp router-id 10.96.0.1
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor hosts peer-group
 neighbor hosts remote-as external
 bgp listen range 10.97.0.0/16 peer-group hosts
 address-family ipv4 unicast
  maximum-paths 16
 exit-address-family
";

/// A host: exports the connected routes of the VIP interface and nothing else, accepts
/// nothing (FRR's default eBGP policy check drops what no `in` route-map allows).
fn host_frr_conf(i: usize, addr: Ipv4Addr) -> String {
    format!(
        "\
frr defaults datacenter
hostname h{i}
route-map MAAS-VIP permit 10
 match interface {VIP_IFACE}
exit
router bgp {asn}
 bgp router-id {addr}
 neighbor 10.97.{i}.1 remote-as external
 neighbor 10.97.{i}.1 timers connect 1
 address-family ipv4 unicast
  redistribute connected route-map MAAS-VIP
  neighbor 10.97.{i}.1 route-map MAAS-VIP out
 exit-address-family
",
        asn = 65001 + i
    )
}
