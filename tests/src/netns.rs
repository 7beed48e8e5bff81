//! Network namespaces for privileged tests, cleaned up by RAII: the `netlab` crate (the demo's
//! lab too) with the tests' names and what only the tests need.
//!
//! A [`Lan`] is a bridge in a namespace of its own and one namespace per host, joined by veth
//! pairs created directly between those namespaces: nothing is ever created in, or changed on,
//! the namespace the tests run in. Names are unique per process and call (pid + counter), and
//! `Drop` kills whatever still runs in a namespace before deleting it. Here a failed `ip` fails
//! the test.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether namespace tests can run here; `Err` says why not.
pub fn available() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    let probe = format!(
        "mvprobe{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    netlab::probe(&probe).map_err(|e| e.to_string())
}

/// The reason on every test that needs root and network namespaces: such tests are
/// `#[ignore]`d, so that a plain `cargo test` reports them as ignored rather than as passed, and
/// `.ci/run` runs them with `--include-ignored`.
pub const NEEDS_ROOT: &str = "needs root and network namespaces";

/// Call first in a test that needs root and network namespaces (and is `#[ignore]`d for it):
/// panics, saying why, when they are unusable here, so that such a test run with
/// `--include-ignored` on a machine without them fails instead of passing.
pub fn require(test: &str) {
    if let Err(why) = available() {
        panic!(
            "{test}: {NEEDS_ROOT}, unusable here ({why}); run the tests as root \
             (`sudo -E cargo test --workspace -- --include-ignored ...`, see the README) or \
             leave the ignored tests out"
        );
    }
}

/// Call first in a test that needs `tool` besides root: panics when it cannot be run.
pub fn require_tool(test: &str, tool: &str) {
    if let Err(e) = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        panic!("{test}: needs {tool}, which cannot be run here: {e} (.ci/run installs it)");
    }
}

/// A [`netlab::Netns`] (deleted on drop with everything still running in it) whose `ip`
/// commands fail the test.
#[derive(Debug)]
pub struct Netns(netlab::Netns);

fn unique(role: &str) -> String {
    format!(
        "mv{}-{}-{role}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn ok<T>(r: Result<T, netlab::Error>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

impl Netns {
    /// Creates `mv<pid>-<n>-<role>` with its loopback up.
    pub fn new(role: &str) -> Netns {
        Netns(ok(netlab::Netns::add(unique(role))))
    }

    /// `ip -n NAME args...`, asserting success.
    pub fn ip(&self, args: &[&str]) {
        ok(self.0.ip(args));
    }

    /// `ip -n NAME args...`, its output whatever the status.
    pub fn ip_output(&self, args: &[&str]) -> Output {
        ok(self.0.ip_output(args))
    }

    /// A veth pair: `local` here, `peer` in `other` (neither is set up).
    pub fn veth(&self, local: &str, other: &Netns, peer: &str) {
        ok(self.0.veth(local, other, peer));
    }
}

impl std::ops::Deref for Netns {
    type Target = netlab::Netns;

    fn deref(&self) -> &netlab::Netns {
        &self.0
    }
}

/// A host of a [`Lan`]: a namespace whose `eth0` is on the bridge.
#[derive(Debug)]
pub struct Host {
    /// The namespace.
    pub ns: Netns,
    /// Its address on the LAN (/24).
    pub addr: Ipv4Addr,
}

impl Host {
    /// The interface name inside the host.
    pub const IFACE: &'static str = netlab::IFACE;

    /// IPv4 addresses on eth0, as "a.b.c.d/len".
    pub fn addrs(&self) -> Vec<String> {
        self.addrs_of("inet")
    }

    /// IPv6 addresses on eth0, as "x::y/len".
    pub fn addrs6(&self) -> Vec<String> {
        self.addrs_of("inet6")
    }

    fn addrs_of(&self, family: &str) -> Vec<String> {
        self.ns.addrs(Self::IFACE, family)
    }

    /// Whether eth0 carries `addr` (any prefix), IPv4 or IPv6.
    pub fn has(&self, addr: impl Into<IpAddr>) -> bool {
        self.ns.has_addr(Self::IFACE, addr)
    }

    /// The first link-local IPv6 address on eth0 that duplicate address detection has passed
    /// (neither `tentative` nor `dadfailed`): the one VRRPv3 over IPv6 sends from.
    pub fn link_local(&self) -> Option<std::net::Ipv6Addr> {
        let out = self.ns.ip_output(&[
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            Self::IFACE,
            "scope",
            "link",
        ]);
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            if l.contains("tentative") || l.contains("dadfailed") {
                return None;
            }
            let a = l.split_whitespace().skip_while(|w| *w != "inet6").nth(1)?;
            a.split('/').next()?.parse().ok()
        })
    }

    /// `maas-vip status --json -c conf` run inside the host, parsed; `None` if it failed.
    pub fn status_json(&self, conf: &Path) -> Option<serde_json::Value> {
        let out = self
            .ns
            .command(crate::maas_vip_bin())
            .args(["status", "--json", "-c"])
            .arg(conf)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `GET path` (HTTP/1.0) on the admin endpoint at 127.0.0.1:5249 inside the namespace,
    /// with bash's /dev/tcp (no HTTP client needed there): the whole response, head included.
    pub fn admin_get(&self, path: &str) -> String {
        let out = self
            .ns
            .command("bash")
            .args([
                "-c",
                &format!(
                    "exec 3<>/dev/tcp/127.0.0.1/5249 && \
                     printf 'GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && cat <&3"
                ),
            ])
            .output()
            .expect("GET on the admin endpoint");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip link set eth0 up|down`.
    pub fn set_link(&self, up: bool) {
        self.ns.ip(&[
            "link",
            "set",
            "dev",
            Self::IFACE,
            if up { "up" } else { "down" },
        ]);
    }
}

/// A bridge and `n` hosts 10.99.0.11, .12, ... /24 on it.
#[derive(Debug)]
pub struct Lan {
    /// The hosts (dropped before the bridge).
    pub hosts: Vec<Host>,
    /// The bridge's namespace.
    pub bridge: Netns,
}

impl Lan {
    /// Builds the LAN.
    pub fn new(n: usize) -> Lan {
        let bridge = unique("br");
        let hosts: Vec<(String, Ipv4Addr)> = (0..n)
            .map(|i| {
                (
                    unique(&format!("h{i}")),
                    Ipv4Addr::new(10, 99, 0, 11 + i as u8),
                )
            })
            .collect();
        let addrs: Vec<Ipv4Addr> = hosts.iter().map(|h| h.1).collect();
        let lan = ok(netlab::Lan::build(
            bridge,
            hosts.into_iter().map(|(name, addr)| (name, addr.into())),
        ));
        Lan {
            hosts: lan
                .hosts
                .into_iter()
                .zip(addrs)
                .map(|(ns, addr)| Host {
                    ns: Netns(ns),
                    addr,
                })
                .collect(),
            bridge: Netns(lan.bridge),
        }
    }

    /// Waits until every host has a usable link-local address ([`Host::link_local`]), as
    /// IPv6 tests need before VRRPv3 or neighbour discovery can work; panics after `limit`.
    pub fn wait_link_local(&self, limit: Duration) {
        for h in &self.hosts {
            let ready = wait_for(limit, || h.link_local().is_some());
            assert!(
                ready.is_some(),
                "no usable link-local address on {}",
                h.ns.name()
            );
        }
    }

    /// Cuts host `i` off the LAN without touching its carrier (its bridge port leaves the
    /// bridge but stays up): a partition, not a link failure.
    pub fn isolate(&self, i: usize) {
        self.bridge
            .ip(&["link", "set", &netlab::Lan::port(i), "nomaster"]);
    }

    /// Puts host `i` back on the LAN (the bridge runs no STP: forwarding at once).
    pub fn rejoin(&self, i: usize) {
        self.bridge
            .ip(&["link", "set", &netlab::Lan::port(i), "master", "br0"]);
    }

    /// Indices of the hosts that carry `addr`.
    pub fn holders(&self, addr: impl Into<IpAddr>) -> Vec<usize> {
        let addr = addr.into();
        (0..self.hosts.len())
            .filter(|i| self.hosts[*i].has(addr))
            .collect()
    }

    /// Waits up to `limit` until exactly the hosts `want` carry `addr`, and returns how long
    /// that took; otherwise prints the `logs` and panics, saying `what` was awaited.
    pub fn wait_holders(
        &self,
        addr: impl Into<IpAddr>,
        want: &[usize],
        limit: Duration,
        what: &str,
        logs: &[&Proc],
    ) -> Duration {
        let addr = addr.into();
        match wait_for(limit, || self.holders(addr) == want) {
            Some(t) => t,
            None => {
                print_logs(logs);
                panic!(
                    "{what}: holders of {addr} {:?}, wanted {want:?} within {limit:?}",
                    self.holders(addr)
                );
            }
        }
    }

    /// Samples the holders of `addr` every 100 ms for `d`: each sample must be `want`.
    pub fn assert_holders_stable(
        &self,
        addr: impl Into<IpAddr>,
        want: &[usize],
        d: Duration,
        what: &str,
    ) {
        let addr = addr.into();
        let end = Instant::now() + d;
        while Instant::now() < end {
            assert_eq!(self.holders(addr), want, "{what}: holders of {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `maas-vip run` on host `i` with `config`, written to `dir/h{i}.toml`; its output
    /// goes to `dir/h{i}.log` (RUST_LOG=info).
    pub fn start_maas_vip(&self, dir: &Path, i: usize, config: &str) -> Proc {
        let bin = crate::maas_vip_bin();
        assert!(
            bin.exists(),
            "{} not built: run `cargo test --workspace` or `cargo build -p maas-vip` first",
            bin.display()
        );
        let conf = dir.join(format!("h{i}.toml"));
        std::fs::write(&conf, config).expect("config");
        Proc::spawn(
            &self.hosts[i].ns,
            bin,
            &["run", "-c", conf.to_str().expect("utf8 path")],
            &[("RUST_LOG", "info")],
            dir.join(format!("h{i}.log")),
        )
    }
}

/// Prints the output of each of `procs` (on the way to a failed assertion).
pub fn print_logs(procs: &[&Proc]) {
    for p in procs {
        eprintln!("---- {}\n{}", p.log().display(), p.output());
    }
}

impl Lan {
    /// Runs `keepalived` (the `program` given: Debian's, or a build of another version) in the
    /// foreground on host `i` with `config`, written to `dir/keepalived-h{i}.conf`, its pid
    /// files beside it and its log in `dir/keepalived-h{i}.log`; `flags` go before `-f`.
    pub fn start_keepalived(
        &self,
        dir: &Path,
        i: usize,
        program: impl AsRef<std::ffi::OsStr>,
        flags: &[&str],
        config: &str,
    ) -> Proc {
        let conf = dir.join(format!("keepalived-h{i}.conf"));
        std::fs::write(&conf, config).expect("config");
        let pid = |name: &str| -> String {
            dir.join(format!("ka-h{i}-{name}.pid"))
                .to_str()
                .expect("utf8 path")
                .to_string()
        };
        let (main, vrrp, chk) = (pid("main"), pid("vrrp"), pid("checkers"));
        let mut args = vec!["-n", "-l", "-D"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[
            "-f",
            conf.to_str().expect("utf8 path"),
            "-p",
            &main,
            "-r",
            &vrrp,
            "-c",
            &chk,
        ]);
        Proc::spawn(
            &self.hosts[i].ns,
            program,
            &args,
            &[],
            dir.join(format!("keepalived-h{i}.log")),
        )
    }
}

/// keepalived 2.4.3 as tests/peers/build-keepalived-2.4.sh leaves it (or $MAAS_VIP_KEEPALIVED24);
/// panics, saying how to build it, when it is missing.
pub fn keepalived24(test: &str) -> PathBuf {
    let p = std::env::var_os("MAAS_VIP_KEEPALIVED24")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/peers/keepalived-2.4.3/inst/sbin/keepalived")
        });
    assert!(
        p.exists(),
        "{test}: needs keepalived 2.4.3: {} not built (run tests/peers/build-keepalived-2.4.sh)",
        p.display()
    );
    p
}

/// Polls `cond` every 20 ms until it holds (`Some(elapsed)`) or `limit` passes (`None`).
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A [`netlab::Proc`] started in a namespace, its stdout and stderr in a log file; killed on
/// drop.
#[derive(Debug)]
pub struct Proc(netlab::Proc);

impl Proc {
    /// Starts `program args...` in `ns`.
    pub fn spawn(
        ns: &Netns,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        envs: &[(&str, &str)],
        log: PathBuf,
    ) -> Proc {
        let mut c = ns.command(program);
        c.args(args).envs(envs.iter().copied());
        Proc(ok(netlab::Proc::start(c, log, false)))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        self.0.kill9(Duration::from_secs(30));
    }
}

impl std::ops::Deref for Proc {
    type Target = netlab::Proc;

    fn deref(&self) -> &netlab::Proc {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut netlab::Proc {
        &mut self.0
    }
}

impl Lan {
    /// Starts tcpdump on host `host`'s eth0, writing VRRP and ARP frames to
    /// `dir/cap-{tag}.pcap` (its output in `dir/tcpdump-{tag}.log`), and waits until it listens.
    pub fn capture(&self, host: usize, dir: &Path, tag: &str) -> (Proc, PathBuf) {
        self.capture_filtered(host, dir, tag, "arp or ip proto 112")
    }

    /// [`Lan::capture`] with another tcpdump filter.
    pub fn capture_filtered(
        &self,
        host: usize,
        dir: &Path,
        tag: &str,
        filter: &str,
    ) -> (Proc, PathBuf) {
        self.start_tcpdump(host, dir, tag, filter, &[])
    }

    /// [`Lan::capture_filtered`] in immediate mode: each frame is written as it comes, for a
    /// capture stopped within a second (tcpdump otherwise hands frames over only at its
    /// buffer timeout, and a SIGINT before it loses them).
    pub fn capture_immediate(
        &self,
        host: usize,
        dir: &Path,
        tag: &str,
        filter: &str,
    ) -> (Proc, PathBuf) {
        self.start_tcpdump(host, dir, tag, filter, &["--immediate-mode"])
    }

    fn start_tcpdump(
        &self,
        host: usize,
        dir: &Path,
        tag: &str,
        filter: &str,
        flags: &[&str],
    ) -> (Proc, PathBuf) {
        let file = dir.join(format!("cap-{tag}.pcap"));
        let mut args = vec!["-i", "eth0", "-U", "-n"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-w", file.to_str().expect("utf8 path"), filter]);
        let p = Proc::spawn(
            &self.hosts[host].ns,
            "tcpdump",
            &args,
            &[],
            dir.join(format!("tcpdump-{tag}.log")),
        );
        assert!(
            wait_for(Duration::from_secs(5), || p
                .output()
                .contains("listening on"))
            .is_some(),
            "tcpdump did not start: {}",
            p.output()
        );
        (p, file)
    }
}

/// The frames of a pcap file written by `tcpdump -w` (either byte order).
pub fn pcap_frames(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap_or_default();
    let mut out = Vec::new();
    if b.len() < 24 {
        return out;
    }
    let le = b[0..4] == [0xd4, 0xc3, 0xb2, 0xa1] || b[0..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let rd = |x: &[u8]| {
        let a = [x[0], x[1], x[2], x[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut at = 24;
    while at + 16 <= b.len() {
        let incl = rd(&b[at + 8..at + 12]) as usize;
        let start = at + 16;
        if start + incl > b.len() {
            break;
        }
        out.push(b[start..start + incl].to_vec());
        at = start + incl;
    }
    out
}
