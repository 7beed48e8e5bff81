//! `maas-vip demo --bgp`: three region hosts, each in a routed segment of its own, announce the
//! VIP by BGP through FRR to a router namespace (FRR with multipath); a client behind the
//! router is spread over all three; one host's maas-vip is killed (`kill -9`), the kernel
//! deletes its VIP interface, FRR withdraws, and the client's new connections go to the two
//! others without an error; the host's maas-vip comes back and is announced again.
//!
//! ```text
//!   client 10.124.0.2 ── router 10.124.0.1 (FRR, AS 65000, maximum-paths 16)
//!                          │ 10.125.i.1/24, one segment per host
//!          region-i 10.125.i.2 (FRR, AS 65001+i; maas-vip with [[announce]], a stand-in region)
//! ```
//!
//! Same guards as the VRRP demo ([`super::lab`]): everything lives in `mvdemo<pid>-*`
//! namespaces and a temporary directory, all removed at the end or on a signal.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::lab::{Fetcher, Netns, Proc, TempDir};
use super::poll;

const HOSTS: usize = 3;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 126, 0, 100);
const VIP_IFACE: &str = "maas-vip0";
const ZEBRA: &str = "/usr/lib/frr/zebra";
const BGPD: &str = "/usr/lib/frr/bgpd";
const VTYSH: &str = "/usr/bin/vtysh";
/// Bound on announcements (BGP sessions come up within a few seconds).
const CONVERGE: Duration = Duration::from_secs(30);
/// The documented bound on a withdrawal at the router.
const WITHDRAW_BOUND: Duration = Duration::from_secs(2);

fn host_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 125, i as u8, 2)
}

fn name(i: usize) -> String {
    format!("region-{}", i + 1)
}

/// Why the BGP demo cannot run here, if it cannot: FRR missing.
pub(super) fn frr_missing() -> Option<String> {
    [ZEBRA, BGPD, VTYSH]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} is missing: the BGP demo needs FRR (apt-get install frr)"))
}

/// The router's FRR: eBGP with every host of 10.125/16, multipath over them.
const ROUTER_FRR: &str = "\
frr defaults datacenter
hostname router
router bgp 65000
 bgp router-id 10.124.0.1
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor hosts peer-group
 neighbor hosts remote-as external
 bgp listen range 10.125.0.0/16 peer-group hosts
 address-family ipv4 unicast
  maximum-paths 16
 exit-address-family
";

/// A host's FRR: exports the connected routes of the VIP interface and nothing else (the
/// README's config for operators).
fn host_frr(i: usize) -> String {
    format!(
        "\
frr defaults datacenter
hostname {name}
route-map MAAS-VIP permit 10
 match interface {VIP_IFACE}
exit
router bgp {asn}
 bgp router-id {addr}
 neighbor 10.125.{i}.1 remote-as external
 neighbor 10.125.{i}.1 timers connect 1
 address-family ipv4 unicast
  redistribute connected route-map MAAS-VIP
  neighbor 10.125.{i}.1 route-map MAAS-VIP out
 exit-address-family
",
        name = name(i),
        asn = 65001 + i,
        addr = host_addr(i),
    )
}

/// The maas-vip.toml of host `i`: the VRRP demo's frontend over the three regions, and an
/// `[[announce]]` block instead of `[[vrrp]]`.
pub(super) fn daemon_config(i: usize, frr_dir: &Path) -> String {
    let mut s = format!(
        r#"# {name}: written by `maas-vip demo --bgp`; the other hosts differ only in vty_socket.
shutdown_grace = "2s"

[[frontend]]
name = "maas"
bind = ["0.0.0.0:80"]
mode = "http"
balance = "roundrobin"
check = {{ kind = "http", path = "{path}", interval = "1s", timeout = "1s", rise = 1, fall = 2 }}
"#,
        name = name(i),
        path = super::URL_PATH,
    );
    for k in 0..HOSTS {
        s.push_str(&format!(
            "\n[[frontend.server]]\nname = \"{}\"\naddress = \"{}:5240\"\n",
            name(k),
            host_addr(k)
        ));
    }
    s.push_str(&format!(
        r#"
[[announce]]
name = "maas_region"
virtual_ipaddresses = ["{VIP}/32"]
interface = "{VIP_IFACE}"
track_frontends = ["maas"]
announce_delay = "1s"
drain_delay = "2s"
vtysh = "{VTYSH}"
vty_socket = "{frr}"

[admin]
bind = "127.0.0.1:5249"
"#,
        frr = frr_dir.display()
    ));
    s
}

/// zebra and bgpd of one namespace.
struct Frr {
    _bgpd: Proc,
    _zebra: Proc,
}

impl Frr {
    async fn start(ns: &Netns, exe_dir: &Path, conf: &str) -> anyhow::Result<Frr> {
        std::fs::create_dir_all(exe_dir)?;
        std::fs::set_permissions(exe_dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(exe_dir.join("frr.conf"), conf)?;
        let st = std::process::Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(exe_dir)
            .status()
            .context("chown frr")?;
        if !st.success() {
            bail!(
                "chown frr:frr {} failed (is FRR installed?)",
                exe_dir.display()
            );
        }
        let d = exe_dir.to_str().context("temporary path is not UTF-8")?;
        let daemon = |prog: &str, n: &str| {
            Proc::spawn(
                ns,
                Path::new(prog),
                &[
                    "-u",
                    "frr",
                    "-g",
                    "frr",
                    "-f",
                    &format!("{d}/frr.conf"),
                    "-i",
                    &format!("{d}/{n}.pid"),
                    "-z",
                    &format!("{d}/zserv.api"),
                    "--vty_socket",
                    d,
                    "-P",
                    "0",
                    "--log",
                    "stdout",
                ],
                exe_dir.join(format!("{n}.log")),
                false,
            )
        };
        let zebra = daemon(ZEBRA, "zebra")?;
        let api = exe_dir.join("zserv.api");
        if poll(Duration::from_secs(10), || api.exists())
            .await
            .is_none()
        {
            bail!(
                "zebra did not start in {}: {}",
                ns.name(),
                zebra.log_tail(5)
            );
        }
        let bgpd = daemon(BGPD, "bgpd")?;
        Ok(Frr {
            _bgpd: bgpd,
            _zebra: zebra,
        })
    }
}

/// Everything the BGP demo started; fields drop in order (processes, then namespaces, files).
struct World {
    daemons: Vec<Option<Proc>>,
    _regions: Vec<Proc>,
    _frr: Vec<Frr>,
    client: Fetcher,
    hosts: Vec<Netns>,
    router: Netns,
    _client_ns: Netns,
    dir: TempDir,
    exe: std::path::PathBuf,
}

impl World {
    async fn build(exe: &Path, prefix: &str) -> anyhow::Result<World> {
        let dir = TempDir::create(&format!("{prefix}.maas-vip-demo-bgp"))?;
        // FRR runs as the frr user and must reach its directories.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let router = Netns::add(format!("{prefix}-router"))?;
        let client_ns = Netns::add(format!("{prefix}-client"))?;
        sysctl(&router, "net.ipv4.ip_forward=1")?;
        // Hash on ports too: one client's connections spread over every host.
        sysctl(&router, "net.ipv4.fib_multipath_hash_policy=1")?;
        router.ip(&[
            "link",
            "add",
            "cl",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            client_ns.name(),
        ])?;
        router.ip(&["addr", "add", "10.124.0.1/24", "dev", "cl"])?;
        router.ip(&["link", "set", "cl", "up"])?;
        client_ns.ip(&["addr", "add", "10.124.0.2/24", "dev", "eth0"])?;
        client_ns.ip(&["link", "set", "eth0", "up"])?;
        client_ns.ip(&["route", "add", "default", "via", "10.124.0.1"])?;
        let mut hosts = Vec::new();
        for i in 0..HOSTS {
            let ns = Netns::add(format!("{prefix}-{}", name(i)))?;
            let port = format!("h{i}");
            router.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ])?;
            router.ip(&["addr", "add", &format!("10.125.{i}.1/24"), "dev", &port])?;
            router.ip(&["link", "set", &port, "up"])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", host_addr(i)),
                "dev",
                "eth0",
            ])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            ns.ip(&["route", "add", "default", "via", &format!("10.125.{i}.1")])?;
            hosts.push(ns);
        }
        let mut frr = vec![Frr::start(&router, &dir.path().join("router"), ROUTER_FRR).await?];
        for (i, ns) in hosts.iter().enumerate() {
            frr.push(Frr::start(ns, &dir.path().join(name(i)), &host_frr(i)).await?);
        }
        let log = |n: &str, what: &str| dir.path().join(format!("{n}.{what}.log"));
        let mut regions = Vec::new();
        for (i, ns) in hosts.iter().enumerate() {
            regions.push(Proc::spawn(
                ns,
                exe,
                &[
                    "demo",
                    "region",
                    "--name",
                    &name(i),
                    "--bind",
                    "0.0.0.0:5240",
                ],
                log(&name(i), "region"),
                false,
            )?);
        }
        let client = Fetcher::spawn(&client_ns, exe, log("client", "client"))?;
        let mut w = World {
            daemons: Vec::new(),
            _regions: regions,
            _frr: frr,
            client,
            hosts,
            router,
            _client_ns: client_ns,
            dir,
            exe: exe.to_path_buf(),
        };
        for i in 0..HOSTS {
            let d = w.start_daemon(i)?;
            w.daemons.push(Some(d));
        }
        Ok(w)
    }

    fn conf_path(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("{}.toml", name(i)))
    }

    fn start_daemon(&self, i: usize) -> anyhow::Result<Proc> {
        let path = self.conf_path(i);
        let text = daemon_config(i, &self.dir.path().join(name(i)));
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        if let Err(report) = config::load(&path) {
            bail!("the generated config is refused:\n{report}");
        }
        let c = path.to_str().context("temporary path is not UTF-8")?;
        Proc::spawn(
            &self.hosts[i],
            &self.exe,
            &["run", "-c", c],
            self.dir.path().join(format!("{}.maas-vip.log", name(i))),
            false,
        )
    }

    /// The router's next hops for the VIP, as host indices.
    fn next_hops(&self) -> Vec<usize> {
        let out = self
            .router
            .run(
                Path::new("ip"),
                &["-4", "route", "show", &format!("{VIP}/32")],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        (0..HOSTS)
            .filter(|i| out.contains(&format!("via {} ", host_addr(*i))))
            .collect()
    }

    fn route_text(&self) -> String {
        self.router
            .run(Path::new("ip"), &["route", "show", &format!("{VIP}/32")])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
            .unwrap_or_default()
    }

    async fn wait_hops(&self, want: &[usize], limit: Duration) -> anyhow::Result<Duration> {
        match poll(limit, || self.next_hops() == want).await {
            Some(t) => Ok(t),
            None => bail!(
                "the router's next hops are hosts {:?}, not {want:?}, after {limit:?}:\n{}",
                self.next_hops(),
                self.route_text()
            ),
        }
    }

    /// `n` requests one after the other; the count per host that proxied them, and errors.
    async fn requests(&mut self, n: usize) -> anyhow::Result<(Vec<usize>, usize)> {
        let mut per_host = vec![0; HOSTS];
        let mut errors = 0;
        for _ in 0..n {
            let r = self.client.get(&format!("http://{VIP}/MAAS/")).await?;
            if !r.ok() {
                errors += 1;
                continue;
            }
            let via = r.via.as_deref().unwrap_or_default();
            if let Some(i) = (0..HOSTS).find(|i| host_addr(*i).to_string() == via) {
                per_host[i] += 1;
            }
        }
        Ok((per_host, errors))
    }

    fn print_spread(&self, per_host: &[usize], errors: usize) {
        let parts: Vec<String> = per_host
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{} {n}", name(i)))
            .collect();
        say!("   proxied by: {}; failed: {errors}", parts.join(", "));
    }

    async fn steps(&mut self) -> anyhow::Result<()> {
        say!("\n1. A routed fabric in namespaces: a router running FRR (BGP, multipath), a client");
        say!("   behind it, and three region hosts, each in a segment of its own (no shared LAN: VRRP");
        say!(
            "   could not span them). Each host runs FRR, a stand-in region on :5240, and maas-vip"
        );
        say!("   with this [[announce]] block (the VIP {VIP} on an interface maas-vip owns):");
        for line in daemon_config(0, &self.dir.path().join(name(0)))
            .lines()
            .skip_while(|l| !l.starts_with("[[announce]]"))
            .take_while(|l| !l.starts_with("[admin]"))
            .filter(|l| !l.is_empty())
        {
            say!("       {line}");
        }
        let t = self.wait_hops(&[0, 1, 2], CONVERGE).await?;
        say!(
            "\n2. Every host's regions answer its health checks, so every host announces. After {:.1} s the\n   router has three next hops for the VIP:\n       {}",
            t.as_secs_f64(),
            self.route_text().replace('\n', "\n       ")
        );
        let (spread, errors) = self.requests(60).await?;
        say!("\n3. 60 requests from the client, each a new connection: the router spreads them by ECMP.");
        self.print_spread(&spread, errors);
        if spread.contains(&0) || errors > 0 {
            bail!("not every host carried traffic: {spread:?}, {errors} failed");
        }

        say!("\n4. kill -9 of maas-vip on {}: no code of it runs, the kernel deletes its VIP interface", name(2));
        say!("   and FRR withdraws the route.");
        let t0 = Instant::now();
        if let Some(mut d) = self.daemons[2].take() {
            d.kill9().await;
        }
        self.wait_hops(&[0, 1], WITHDRAW_BOUND).await?;
        say!(
            "   Withdrawn at the router {:.0} ms after the kill (documented bound {} s):\n       {}",
            t0.elapsed().as_secs_f64() * 1000.0,
            WITHDRAW_BOUND.as_secs(),
            self.route_text().replace('\n', "\n       ")
        );
        let (spread, errors) = self.requests(40).await?;
        say!("   40 new requests after the withdrawal:");
        self.print_spread(&spread, errors);
        if errors > 0 || spread[2] > 0 {
            bail!("after the withdrawal: {spread:?}, {errors} failed");
        }

        say!(
            "\n5. maas-vip on {} starts again (as systemd's Restart= would): announced once its",
            name(2)
        );
        say!("   health checks pass and announce_delay has passed.");
        let t0 = Instant::now();
        self.daemons[2] = Some(self.start_daemon(2)?);
        self.wait_hops(&[0, 1, 2], CONVERGE).await?;
        say!(
            "   Back at the router after {:.1} s; `maas-vip status` on {} says:",
            t0.elapsed().as_secs_f64(),
            name(2)
        );
        // FRR's view is read every few seconds: let it be read once.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let conf = self.conf_path(2);
        let c = conf.to_str().context("temporary path is not UTF-8")?;
        let out = self.hosts[2].run(&self.exe, &["status", "-c", c])?;
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip_while(|l| !l.starts_with("ANNOUNCE"))
        {
            say!("       {line}");
        }
        let (spread, errors) = self.requests(60).await?;
        say!("   60 more requests:");
        self.print_spread(&spread, errors);
        Ok(())
    }
}

fn sysctl(ns: &Netns, kv: &str) -> anyhow::Result<()> {
    let out = ns.run(Path::new("sysctl"), &["-qw", kv])?;
    if !out.status.success() {
        bail!(
            "sysctl {kv} in {}: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Builds the fabric, runs the steps, tears it down (the daemons' log tails first on an error).
pub(super) async fn scenario(exe: &Path, prefix: &str) -> anyhow::Result<()> {
    say!(
        "maas-vip demo --bgp: three MAAS region hosts announcing one virtual IP by BGP (through FRR)\n\
         to a router that spreads clients over all of them (ECMP), in network namespaces on this\n\
         machine. Nothing outside them is touched, and all of it is removed at the end (or on Ctrl-C)."
    );
    let mut w = World::build(exe, prefix).await?;
    let result = w.steps().await;
    if result.is_err() {
        for (i, d) in w.daemons.iter().enumerate() {
            if let Some(d) = d {
                eprintln!(
                    "---- maas-vip on {} ({}), last lines:\n{}",
                    name(i),
                    d.log().display(),
                    d.log_tail(15)
                );
            }
        }
    }
    drop(w);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_pass_check() {
        let dir = std::env::temp_dir().join(format!("demo-bgp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for i in 0..HOSTS {
            let p = dir.join(format!("{}.toml", name(i)));
            std::fs::write(&p, daemon_config(i, &dir)).expect("write");
            let loaded = config::load(&p);
            assert!(
                loaded.is_ok(),
                "{}: {:?}",
                name(i),
                loaded.err().map(|e| e.to_string())
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
