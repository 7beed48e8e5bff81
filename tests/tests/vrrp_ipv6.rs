//! VRRPv3 over IPv6 (issue 16) on a namespace LAN: a maas-vip pair (election, takeover after
//! SIGTERM and kill -9, preemption, the client's neighbour cache following the master), a
//! mixed pair with Debian's keepalived 2.2.7 in both roles, and hostile IPv6 adverts. Every
//! advert maas-vip sent is dissected by tshark at the end of each test: VRRPv3, checksum
//! good, hop limit 255, from the sender's link-local address; every unsolicited neighbour
//! advertisement likewise (checksum good, Override set).
//!
//! Helpers run inside namespaces are this test binary itself
//! (`ip netns exec NS <this binary> <helper> --exact --ignored`) with an env var set: a TCP
//! server that answers its host's name, and the hostile sender (a raw IPv6 socket). Nothing
//! is sent outside the test namespaces.
//!
//! Needs root, `ip netns`, tcpdump, tshark and keepalived, so the tests are `#[ignore]`d: run
//! them as root with `--include-ignored` (see the README); they fail, saying why, where they
//! cannot run.
//! The tests of this file run one at a time.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use maas_vip_tests::netns::{require, require_tool, wait_for, Lan, Netns, Proc};
use vrrp::packet::{IpPair, Repr, Version, MULTICAST_V6};

static SERIAL: Mutex<()> = Mutex::new(());

/// The link-local virtual address (first, as RFC 9568 §7.4 and keepalived want it).
const VIP_LL: &str = "fe80::61";
/// The global virtual address clients use.
const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 0x100);
const CLIENT: &str = "2001:db8:99::2/64";
const VRID: u8 = 61;
const PORT: u16 = 8080;
/// RFC 9568 bounds plus slack for a loaded 2-core machine, as vrrp_keepalived.rs has them.
const KILL_BOUND: Duration = Duration::from_millis(4200);
const TERM_BOUND: Duration = Duration::from_millis(1200);
/// Env var of the TCP name server helper (its value: the name it answers).
const NAME_ENV: &str = "MAAS_VIP_IPV6_NAME";
/// Env var of the hostile sender helper: "SRC,COUNT" (its link-local source, packets per
/// category).
const HOSTILE_ENV: &str = "MAAS_VIP_IPV6_HOSTILE";

/// Panics unless root, network namespaces and the tools of these tests are usable here.
fn require_tools(test: &str) {
    require(test);
    for tool in ["keepalived", "tcpdump", "tshark"] {
        require_tool(test, tool);
    }
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().to_path_buf();
    (d, p)
}

/// `n` hosts (the last one the client, with CLIENT) once every link-local address has
/// finished duplicate address detection.
fn lan(n: usize) -> Lan {
    let lan = Lan::new(n);
    lan.hosts[n - 1]
        .ns
        .ip(&["addr", "add", CLIENT, "dev", "eth0", "nodad"]);
    for h in &lan.hosts {
        let ready = wait_for(Duration::from_secs(10), || link_local(&h.ns).is_some());
        assert!(
            ready.is_some(),
            "no usable link-local address on {}",
            h.ns.name()
        );
    }
    lan
}

/// The `ip -6 -o addr show dev eth0` lines of a namespace.
fn addr_lines(ns: &Netns) -> Vec<String> {
    let out = ns.ip_output(&["-6", "-o", "addr", "show", "dev", "eth0"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The host's own link-local address, once it is no longer tentative.
fn link_local(ns: &Netns) -> Option<Ipv6Addr> {
    addr_lines(ns).iter().find_map(|l| {
        if l.contains("tentative") || !l.contains("scope link") {
            return None;
        }
        let a = l.split_whitespace().skip_while(|w| *w != "inet6").nth(1)?;
        let a: Ipv6Addr = a.split('/').next()?.parse().ok()?;
        (a.to_string() != VIP_LL).then_some(a)
    })
}

fn mac(ns: &Netns) -> String {
    let out = ns.ip_output(&["-o", "link", "show", "dev", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("a MAC")
        .to_string()
}

fn holders(lan: &Lan) -> Vec<usize> {
    lan.holders(VIP)
}

fn wait_holders(
    lan: &Lan,
    want: &[usize],
    limit: Duration,
    what: &str,
    logs: &[&Proc],
) -> Duration {
    lan.wait_holders(VIP, want, limit, what, logs)
}

fn assert_stable(lan: &Lan, want: &[usize], d: Duration, what: &str) {
    lan.assert_holders_stable(VIP, want, d, what);
}

fn config(prio: u8, extra: &str) -> String {
    config_every(prio, "1s", extra)
}

/// [`config`] with another advert interval.
fn config_every(prio: u8, advert: &str, extra: &str) -> String {
    format!(
        r#"
[[vrrp]]
name = "region6"
interface = "eth0"
virtual_router_id = {VRID}
priority = {prio}
version = 3
advert_interval = "{advert}"
virtual_ipaddresses = ["{VIP_LL}/64", "{VIP}/64"]
garp_master_delay = "2s"
garp_master_repeat = 2
{extra}
"#
    )
}

/// keepalived on `host`; files named by `prio` too, so that a restart with another priority
/// never meets the pid files of one still stopping.
fn keepalived(lan: &Lan, dir: &Path, host: usize, prio: u8) -> Proc {
    let conf = dir.join(format!("keepalived-h{host}-{prio}.conf"));
    std::fs::write(
        &conf,
        format!(
            r#"
global_defs {{
    router_id ka_h{host}
    vrrp_garp_master_repeat 2
    vrrp_garp_master_delay 2
}}
vrrp_instance region6 {{
    state BACKUP
    interface eth0
    virtual_router_id {VRID}
    priority {prio}
    advert_int 1
    virtual_ipaddress {{
        {VIP_LL}/64
        {VIP}/64
    }}
}}
"#
        ),
    )
    .expect("config");
    let p = |name: &str| -> String {
        dir.join(format!("ka-h{host}-{prio}-{name}.pid"))
            .to_str()
            .expect("utf8 path")
            .to_string()
    };
    let (main, vrrp, chk) = (p("main"), p("vrrp"), p("checkers"));
    Proc::spawn(
        &lan.hosts[host].ns,
        "keepalived",
        &[
            "-n",
            "-l",
            "-D",
            "-G",
            "-P",
            "-f",
            conf.to_str().expect("utf8 path"),
            "-p",
            &main,
            "-r",
            &vrrp,
            "-c",
            &chk,
        ],
        &[],
        dir.join(format!("keepalived-h{host}-{prio}.log")),
    )
}

/// kill -9 keepalived's processes in the namespace in one kill(1), children first (a parent
/// dying first would have its VRRP child stop cleanly), and wait until none is left.
fn kill9_keepalived(ns: &Netns) {
    let keepalived = || -> Vec<u32> {
        let mut pids: Vec<u32> = ns
            .pids()
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "keepalived")
            })
            .collect();
        pids.sort_unstable_by(|a, b| b.cmp(a));
        pids
    };
    let pids = keepalived();
    if !pids.is_empty() {
        let mut args = vec!["-KILL".to_string()];
        args.extend(pids.iter().map(|p| p.to_string()));
        let _ = std::process::Command::new("kill").args(&args).status();
    }
    let gone = wait_for(Duration::from_secs(5), || keepalived().is_empty());
    assert!(
        gone.is_some(),
        "keepalived left in {}: {:?}",
        ns.name(),
        keepalived()
    );
}

/// tcpdump on the client for VRRP and ICMPv6 neighbour advertisements.
fn capture(lan: &Lan, dir: &Path) -> (Proc, PathBuf) {
    let client = lan.hosts.len() - 1;
    lan.capture_filtered(
        client,
        dir,
        "6",
        "ip6 proto 112 or (icmp6 and ip6[40] == 136)",
    )
}

/// tshark's reading of every VRRP advert and NA in `pcap` sent from one of `macs`: panics
/// unless each is valid as the module doc says. Returns (adverts, NAs) counted.
fn dissect_all(pcap: &Path, macs: &[String]) -> (usize, usize) {
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(pcap)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            "eth.src",
            "-e",
            "ipv6.src",
            "-e",
            "ipv6.hlim",
            "-e",
            "vrrp.version",
            "-e",
            "vrrp.virt_rtr_id",
            "-e",
            "vrrp.checksum.status",
            "-e",
            "icmpv6.type",
            "-e",
            "icmpv6.checksum.status",
            "-e",
            "icmpv6.nd.na.flag",
            "-e",
            "icmpv6.nd.na.target_address",
            "-e",
            "ipv6.dst",
        ])
        .output()
        .expect("tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut adverts, mut nas) = (0, 0);
    for line in text.lines() {
        let f: Vec<&str> = line.split(';').collect();
        if f.len() < 11 || !macs.iter().any(|m| m == f[0]) {
            continue;
        }
        assert_eq!(f[2], "255", "hop limit: {line}");
        if !f[3].is_empty() {
            assert_eq!(f[3], "3", "VRRPv3: {line}");
            assert_eq!(f[4], VRID.to_string(), "{line}");
            assert_eq!(f[5], "1", "checksum status good: {line}");
            assert!(f[1].starts_with("fe80:"), "link-local source: {line}");
            adverts += 1;
        } else if f[6] == "136" && f[10] == "ff02::1" {
            // Unsolicited (ours); the kernel's solicited answers to the client go unicast.
            assert_eq!(f[7], "1", "ICMPv6 checksum good: {line}");
            assert_eq!(f[8], "0x20000000", "Override only: {line}");
            assert_eq!(f[1], f[9], "source = target: {line}");
            nas += 1;
        }
    }
    assert!(
        adverts > 0,
        "no advert from {macs:?} in the capture:\n{text}"
    );
    assert!(
        nas > 0,
        "no unsolicited NA from {macs:?} in the capture:\n{text}"
    );
    (adverts, nas)
}

/// The MAC the client's neighbour cache holds for the VIP, if any.
fn client_neigh(lan: &Lan) -> Option<String> {
    let c = &lan.hosts[lan.hosts.len() - 1].ns;
    let out = c.ip_output(&["-6", "neigh", "show", &VIP.to_string(), "dev", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string)
}

/// Pings the VIP from the client (one echo, 1 s).
fn ping(lan: &Lan) -> bool {
    let c = &lan.hosts[lan.hosts.len() - 1].ns;
    c.command("ping")
        .args(["-6", "-c", "1", "-W", "1", &VIP.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What the TCP server on the VIP answers the client (bash's /dev/tcp: no client needed).
fn tcp_name(lan: &Lan) -> String {
    let c = &lan.hosts[lan.hosts.len() - 1].ns;
    let out = c
        .command("timeout")
        .args([
            "2",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{VIP}/{PORT} && cat <&3"),
        ])
        .output()
        .expect("bash /dev/tcp");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The TCP name servers on every host but the client, listening on [::]:PORT.
fn name_servers(lan: &Lan, dir: &Path) -> Vec<Proc> {
    let me = std::env::current_exe().expect("test binary");
    (0..lan.hosts.len() - 1)
        .map(|i| {
            let p = Proc::spawn(
                &lan.hosts[i].ns,
                &me,
                &[
                    "helper_tcp_name_server",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                ],
                &[(NAME_ENV, &format!("h{i}"))],
                dir.join(format!("names-h{i}.log")),
            );
            assert!(
                wait_for(Duration::from_secs(10), || p.output().contains("LISTENING")).is_some(),
                "name server on h{i}: {}",
                p.output()
            );
            p
        })
        .collect()
}

/// Answers every connection with `$NAME_ENV` and closes it; does nothing without it.
#[test]
#[ignore = "helper, not a test: run inside a host's namespace by the IPv6 tests (.ci/run skips `helper_`)"]
fn helper_tcp_name_server() {
    use std::io::Write as _;
    let Ok(name) = std::env::var(NAME_ENV) else {
        return;
    };
    let l = std::net::TcpListener::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, PORT, 0, 0))
        .expect("bind [::]");
    println!("LISTENING");
    for s in l.incoming().flatten() {
        let mut s = s;
        let _ = s.write_all(name.as_bytes());
    }
}

/// Two hosts and a client, a capture on the client and a TCP name server on each host; the
/// tests of this file one at a time.
struct Bed {
    _serial: std::sync::MutexGuard<'static, ()>,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    lan: Lan,
    cap: Proc,
    pcap: PathBuf,
    _names: Vec<Proc>,
}

impl Bed {
    /// Panics when the tests cannot run here (see [`require_tools`]).
    fn start(test: &str) -> Bed {
        require_tools(test);
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (_tmp, dir) = tempdir();
        let lan = lan(3);
        let (cap, pcap) = capture(&lan, &dir);
        let _names = name_servers(&lan, &dir);
        Bed {
            _serial,
            _tmp,
            dir,
            lan,
            cap,
            pcap,
            _names,
        }
    }

    /// Stops the capture and dissects what the hosts `hosts` sent (see [`dissect_all`]).
    fn finish(&mut self, hosts: &[usize]) -> (usize, usize) {
        let macs: Vec<String> = hosts.iter().map(|h| mac(&self.lan.hosts[*h].ns)).collect();
        self.cap.signal("INT");
        let _ = self.cap.wait_exit(Duration::from_secs(5));
        dissect_all(&self.pcap, &macs)
    }
}

/// After a takeover by `host`: the client's cache holds `host`'s MAC within one advert
/// interval (the NAs), and the VIP answers ICMPv6 echo and TCP from `host`.
fn client_follows(lan: &Lan, host: usize, what: &str) {
    let want = mac(&lan.hosts[host].ns);
    let t = wait_for(Duration::from_secs(1), || {
        client_neigh(lan).as_deref() == Some(&want)
    });
    assert!(
        t.is_some(),
        "{what}: client's neighbour entry {:?}, wanted h{host}'s {want} within 1 s",
        client_neigh(lan)
    );
    assert!(ping(lan), "{what}: ping6 {VIP}");
    assert_eq!(
        tcp_name(lan),
        format!("h{host}"),
        "{what}: TCP through the VIP"
    );
}

fn nodad_on(lan: &Lan, host: usize) -> bool {
    let want = format!("inet6 {VIP}/64");
    addr_lines(&lan.hosts[host].ns)
        .iter()
        .any(|l| l.contains(&want) && l.contains("nodad"))
}

#[test]
#[ignore = "needs root and network namespaces: VRRPv3 over IPv6 on a bridge of namespaces"]
fn ipv6_pair_election_takeover_and_neighbour_cache() {
    let mut bed = Bed::start("ipv6_pair_election_takeover_and_neighbour_cache");
    let (lan, dir) = (&bed.lan, bed.dir.clone());
    let mut a = lan.start_maas_vip(&dir, 0, &config(150, ""));
    let b = lan.start_maas_vip(&dir, 1, &config(100, ""));
    wait_holders(lan, &[0], Duration::from_secs(10), "election", &[&a, &b]);
    assert!(
        nodad_on(lan, 0),
        "VIP added with nodad: {:?}",
        addr_lines(&lan.hosts[0].ns)
    );
    assert!(ping(lan), "ping6 {VIP} on the master");
    assert_eq!(client_neigh(lan), Some(mac(&lan.hosts[0].ns)));
    assert_eq!(tcp_name(lan), "h0");
    assert_stable(lan, &[0], Duration::from_secs(2), "master stays");

    // SIGTERM: priority 0, the backup takes over after Skew_Time.
    let t0 = Instant::now();
    a.signal("TERM");
    wait_holders(lan, &[1], TERM_BOUND, "takeover after SIGTERM", &[&a, &b]);
    let term = t0.elapsed();
    client_follows(lan, 1, "after SIGTERM");
    assert!(a.wait_exit(Duration::from_secs(5)).is_some(), "h0 stopped");

    // Back: the higher priority preempts.
    let mut a = lan.start_maas_vip(&dir, 0, &config(150, ""));
    wait_holders(lan, &[0], Duration::from_secs(10), "preemption", &[&a, &b]);
    client_follows(lan, 0, "after preemption");

    // kill -9: Master_Down_Interval on the backup.
    let t0 = Instant::now();
    a.kill9();
    let kill = wait_for(KILL_BOUND, || lan.hosts[1].has(VIP));
    let kill = kill.unwrap_or_else(|| {
        panic!(
            "takeover after kill -9 within {KILL_BOUND:?} ({:?} so far):\n{}",
            t0.elapsed(),
            b.output()
        )
    });
    client_follows(lan, 1, "after kill -9");

    // The crashed master's VIPs are stale: removed at start, then it preempts.
    assert!(nodad_on(lan, 0), "kill -9 left the VIP behind");
    let a = lan.start_maas_vip(&dir, 0, &config(150, ""));
    wait_holders(
        lan,
        &[0],
        Duration::from_secs(10),
        "preemption after kill -9",
        &[&a, &b],
    );
    assert!(
        a.output().contains("removed a stale virtual address"),
        "stale VIPs removed at start:\n{}",
        a.output()
    );
    client_follows(lan, 0, "after restart");
    drop(a);
    drop(b);
    let (adverts, nas) = bed.finish(&[0, 1]);
    assert!(nas >= 4, "NAs in bursts: {nas}");
    eprintln!(
        "maas-vip pair over IPv6: SIGTERM takeover {term:?}, kill -9 takeover {kill:?}; \
         {adverts} adverts and {nas} NAs valid in tshark"
    );
}

#[test]
#[ignore = "needs root and network namespaces: VRRPv3 over IPv6 on a bridge of namespaces"]
fn ipv6_beside_keepalived_both_roles() {
    let mut bed = Bed::start("ipv6_beside_keepalived_both_roles");
    let (lan, dir) = (&bed.lan, bed.dir.clone());

    // maas-vip master (150), keepalived backup (100): keepalived accepts our adverts.
    let ka = keepalived(lan, &dir, 1, 100);
    let mut mv = lan.start_maas_vip(&dir, 0, &config(150, ""));
    wait_holders(
        lan,
        &[0],
        Duration::from_secs(10),
        "maas-vip master",
        &[&mv, &ka],
    );
    assert_stable(lan, &[0], Duration::from_secs(3), "keepalived stays backup");
    // An unsolicited NA updates a cache entry, it creates none (RFC 4861 §7.2.5): resolve.
    assert!(ping(lan), "ping6 {VIP} on maas-vip");
    client_follows(lan, 0, "maas-vip master");
    let t0 = Instant::now();
    mv.signal("TERM");
    wait_holders(
        lan,
        &[1],
        TERM_BOUND,
        "keepalived after SIGTERM",
        &[&mv, &ka],
    );
    let term_ka = t0.elapsed();
    client_follows(lan, 1, "keepalived took over");
    let _ = mv.wait_exit(Duration::from_secs(5));
    // maas-vip preempts keepalived.
    let mut mv = lan.start_maas_vip(&dir, 0, &config(150, ""));
    wait_holders(
        lan,
        &[0],
        Duration::from_secs(10),
        "maas-vip preempts keepalived",
        &[&mv, &ka],
    );
    client_follows(lan, 0, "maas-vip preempted");
    let t0 = Instant::now();
    mv.kill9();
    wait_holders(
        lan,
        &[0, 1],
        KILL_BOUND,
        "keepalived after kill -9 (stale VIP on h0)",
        &[&mv, &ka],
    );
    let kill_ka = t0.elapsed();
    let ka_log = ka.output();
    for bad in ["Invalid", "checksum", "wrong VRRP", "invalid TTL"] {
        assert!(
            !ka_log.contains(bad),
            "keepalived complained ({bad}):\n{ka_log}"
        );
    }
    kill9_keepalived(&lan.hosts[1].ns);
    drop(ka);

    // keepalived master (150), maas-vip backup (100): we accept keepalived's adverts.
    // Both crashed: their VIPs are still on h0 and h1.
    for h in &lan.hosts[..2] {
        h.ns.ip(&["-6", "addr", "flush", "dev", "eth0", "scope", "global"]);
        let _ =
            h.ns.ip_output(&["-6", "addr", "del", &format!("{VIP_LL}/64"), "dev", "eth0"]);
    }
    wait_holders(lan, &[], Duration::from_secs(5), "clean slate", &[]);
    let ka = keepalived(lan, &dir, 1, 150);
    wait_holders(
        lan,
        &[1],
        Duration::from_secs(10),
        "keepalived master",
        &[&ka],
    );
    let mv = lan.start_maas_vip(&dir, 0, &config(100, ""));
    assert_stable(lan, &[1], Duration::from_secs(5), "maas-vip stays backup");
    assert!(
        mv.output().contains("BACKUP") && !mv.output().contains("dropped advert"),
        "maas-vip accepted keepalived's adverts:\n{}",
        mv.output()
    );
    let t0 = Instant::now();
    ka.signal("TERM");
    wait_holders(
        lan,
        &[0],
        TERM_BOUND,
        "maas-vip after keepalived's SIGTERM",
        &[&mv, &ka],
    );
    let term_mv = t0.elapsed();
    client_follows(lan, 0, "maas-vip took over from keepalived");
    std::thread::sleep(Duration::from_millis(500));
    kill9_keepalived(&lan.hosts[1].ns);
    drop(ka);
    // keepalived back at 150 preempts maas-vip.
    let ka = keepalived(lan, &dir, 1, 150);
    wait_holders(
        lan,
        &[1],
        Duration::from_secs(10),
        "keepalived preempts maas-vip",
        &[&mv, &ka],
    );
    client_follows(lan, 1, "keepalived preempted");
    drop(mv);
    drop(ka);
    let (adverts, nas) = bed.finish(&[0]);
    eprintln!(
        "beside keepalived over IPv6: keepalived took over in {term_ka:?} (SIGTERM) and \
         {kill_ka:?} (kill -9), maas-vip in {term_mv:?} (SIGTERM); {adverts} adverts and \
         {nas} NAs of maas-vip valid in tshark"
    );
}

/// Hostile categories and the reason each must be counted under.
const HOSTILE: &[(&str, &str)] = &[
    ("hop_limit_254", "ttl"),
    ("bad_checksum", "checksum"),
    ("truncated", "length"),
    ("count_too_high", "length"),
    ("v2_over_ipv6", "version"),
];
const PER_CATEGORY: usize = 200;

/// Sends the hostile adverts from the attacker's namespace; does nothing without its env var.
#[test]
#[ignore = "helper, not a test: run inside the attacker's namespace by the hostile IPv6 test (.ci/run skips `helper_`)"]
fn helper_hostile6_sender() {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let Ok(arg) = std::env::var(HOSTILE_ENV) else {
        return;
    };
    let (src, n) = arg.split_once(',').expect("SRC,COUNT");
    let src: Ipv6Addr = src.parse().expect("source");
    let n: usize = n.parse().expect("count");
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(112))).expect("raw socket");
    s.bind_device(Some(b"eth0")).expect("SO_BINDTODEVICE");
    let index = nix_index();
    s.set_multicast_if_v6(index).expect("IPV6_MULTICAST_IF");
    s.set_multicast_loop_v6(false).expect("loop");
    s.bind(&SockAddr::from(SocketAddrV6::new(src, 0, 0, index)))
        .expect("bind to our link-local address");
    let dst = SockAddr::from(SocketAddrV6::new(MULTICAST_V6, 0, 0, index));
    let pair = IpPair {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(MULTICAST_V6),
    };
    let good = Repr {
        version: Version::V3,
        vrid: VRID,
        priority: 254,
        auth: vrrp::packet::Auth::None,
        adver_int: 100,
        addresses: vec![IpAddr::V6(VIP)],
    };
    let mut sent: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..n {
        for (cat, _) in HOSTILE {
            let mut b = good.to_bytes(&pair);
            let hops = if *cat == "hop_limit_254" { 254 } else { 255 };
            s.set_multicast_hops_v6(hops).expect("hops");
            match *cat {
                "bad_checksum" => b[6] ^= 0x5a,
                "truncated" => b.truncate(12),
                "count_too_high" => {
                    b[3] = 2;
                    vrrp::packet::Packet::new_unchecked(&mut b[..]).fill_checksum(&pair);
                }
                "v2_over_ipv6" => b[0] = 0x21,
                _ => {}
            }
            s.send_to(&b, &dst).expect("send");
            *sent.entry(cat).or_default() += 1;
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let body: Vec<String> = sent.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("HOSTILE6_SENT {}", body.join(","));
}

/// eth0's index in the namespace we run in.
fn nix_index() -> u32 {
    let text = std::fs::read_to_string("/sys/class/net/eth0/ifindex").expect("eth0");
    text.trim().parse().expect("ifindex")
}

#[test]
#[ignore = "needs root and network namespaces: VRRPv3 over IPv6 on a bridge of namespaces"]
fn ipv6_hostile_adverts_dropped_and_counted() {
    let name = "ipv6_hostile_adverts_dropped_and_counted";
    require_tools(name);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_tmp, dir) = tempdir();
    let lan = &lan(2);
    let conf_text = config(100, "state = \"MASTER\"");
    let master = lan.start_maas_vip(&dir, 0, &conf_text);
    let conf = dir.join("h0.toml");
    wait_holders(lan, &[0], Duration::from_secs(10), "master", &[&master]);
    let src = link_local(&lan.hosts[1].ns).expect("attacker's link-local");
    let me = std::env::current_exe().expect("test binary");
    let out = lan.hosts[1]
        .ns
        .command(&me)
        .args([
            "helper_hostile6_sender",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(HOSTILE_ENV, format!("{src},{PER_CATEGORY}"))
        .output()
        .expect("hostile sender");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("HOSTILE6_SENT"),
        "sender failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: BTreeMap<&str, u64> = HOSTILE.iter().fold(BTreeMap::new(), |mut m, (_, r)| {
        *m.entry(*r).or_default() += PER_CATEGORY as u64;
        m
    });
    let counted = || -> BTreeMap<String, u64> {
        let v = lan.hosts[0].status_json(&conf).unwrap_or_default();
        v["vrrp"][0]["rejected"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ok = wait_for(Duration::from_secs(10), || {
        let c = counted();
        want.iter().all(|(r, n)| c.get(*r).copied() == Some(*n))
    });
    assert!(
        ok.is_some(),
        "counted {:?}, wanted {want:?}\n{}",
        counted(),
        master.output()
    );
    assert_eq!(holders(lan), [0], "the master kept the VIP");
    let v = lan.hosts[0].status_json(&conf).expect("status");
    assert_eq!(v["vrrp"][0]["state"], "MASTER", "{v}");
    eprintln!("hostile IPv6 adverts counted: {:?}", counted());
}

/// A link-local address whose duplicate address detection failed (the kernel keeps it as
/// `tentative dadfailed`) is not the advert source, though it is listed first: adverts go out
/// from the next usable link-local address (keepalived's rule; its issue history has adverts
/// failing with EINVAL from an unusable source).
#[test]
#[ignore = "needs root and network namespaces: VRRPv3 over IPv6 on a bridge of namespaces"]
fn ipv6_dadfailed_link_local_is_not_the_source() {
    let mut bed = Bed::start("ipv6_dadfailed_link_local_is_not_the_source");
    let (lan, dir) = (&bed.lan, bed.dir.clone());
    let dup = "fe80::dad";
    lan.hosts[1]
        .ns
        .ip(&["addr", "add", &format!("{dup}/64"), "dev", "eth0"]);
    let ok = wait_for(Duration::from_secs(10), || {
        link_local(&lan.hosts[1].ns).is_some() && {
            addr_lines(&lan.hosts[1].ns)
                .iter()
                .any(|l| l.contains(dup) && !l.contains("tentative"))
        }
    });
    assert!(
        ok.is_some(),
        "h1 holds {dup}: {:?}",
        addr_lines(&lan.hosts[1].ns)
    );
    lan.hosts[0]
        .ns
        .ip(&["addr", "add", &format!("{dup}/64"), "dev", "eth0"]);
    let failed = wait_for(Duration::from_secs(10), || {
        addr_lines(&lan.hosts[0].ns)
            .iter()
            .any(|l| l.contains(dup) && l.contains("dadfailed"))
    });
    assert!(
        failed.is_some(),
        "DAD failed on h0: {:?}",
        addr_lines(&lan.hosts[0].ns)
    );
    let first_ll = addr_lines(&lan.hosts[0].ns)
        .into_iter()
        .find(|l| l.contains("scope link"))
        .unwrap_or_default();
    assert!(
        first_ll.contains(dup),
        "the failed address is listed first: {first_ll}"
    );
    let own = link_local(&lan.hosts[0].ns).expect("h0's own link-local");
    assert_ne!(own.to_string(), dup);
    let mv = lan.start_maas_vip(&dir, 0, &config(150, "state = \"MASTER\""));
    wait_holders(lan, &[0], Duration::from_secs(10), "master", &[&mv]);
    let pcap = bed.pcap.clone();
    let sources = || -> Vec<String> {
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .args(["-Y", "vrrp", "-T", "fields", "-e", "ipv6.src"])
            .output()
            .expect("tshark");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    // tcpdump -U writes each frame as it comes: three adverts at 1 s.
    let three = wait_for(Duration::from_secs(6), || sources().len() >= 3);
    assert!(three.is_some(), "adverts: {:?}\n{}", sources(), mv.output());
    drop(mv);
    let srcs = sources();
    let (adverts, _) = bed.finish(&[0]);
    assert!(adverts >= 2, "adverts: {adverts}");
    assert!(
        srcs.iter().all(|s| *s == own.to_string()),
        "every advert from {own}, none from {dup}: {srcs:?}"
    );
}

/// Unsolicited NAs for `target` from `mac` in `pcap` (tshark's reading).
fn nas_for(pcap: &Path, mac: &str, target: Ipv6Addr) -> usize {
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            "eth.src",
            "-e",
            "icmpv6.type",
            "-e",
            "icmpv6.nd.na.target_address",
            "-e",
            "ipv6.dst",
        ])
        .output()
        .expect("tshark");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(';').collect();
            f.len() == 4
                && f[0] == mac
                && f[1] == "136"
                && f[2] == target.to_string()
                && f[3] == "ff02::1"
        })
        .count()
}

/// IPv6's gratuitous ARP: `garp_master_refresh` repeats the unsolicited NAs while master, and
/// a VIP someone deleted is added back with a burst of them.
#[test]
#[ignore = "needs root and network namespaces: VRRPv3 over IPv6 on a bridge of namespaces"]
fn ipv6_garp_master_refresh_and_a_burst_after_a_deleted_vip_is_re_added() {
    let mut bed =
        Bed::start("ipv6_garp_master_refresh_and_a_burst_after_a_deleted_vip_is_re_added");
    let (lan, dir) = (&bed.lan, bed.dir.clone());
    let conf = format!(
        r#"
[[vrrp]]
name = "region6"
interface = "eth0"
virtual_router_id = {VRID}
priority = 150
version = 3
advert_interval = "1s"
virtual_ipaddresses = ["{VIP_LL}/64", "{VIP}/64"]
garp_master_delay = "1s"
garp_master_repeat = 3
garp_master_refresh = "3s"
"#
    );
    let a = lan.start_maas_vip(&dir, 0, &conf);
    wait_holders(lan, &[0], Duration::from_secs(10), "election", &[&a]);
    std::thread::sleep(Duration::from_millis(10_500));
    let m = mac(&lan.hosts[0].ns);
    bed.cap.signal("INT");
    let _ = bed.cap.wait_exit(Duration::from_secs(5));
    // Two bursts of 3, then a refresh at 3, 6 and 9 s.
    let n = nas_for(&bed.pcap, &m, VIP);
    assert!(
        (6 + 3..=6 + 4).contains(&n),
        "NAs for {VIP} in 10.5 s: {n}\n{}",
        a.output()
    );

    // Deleted: added back, announced at once (a burst of 3; a refresh may fall in too).
    let (mut cap, pcap) = lan.capture_immediate(2, &dir, "readd6", "icmp6 and ip6[40] == 136");
    lan.hosts[0]
        .ns
        .ip(&["-6", "addr", "del", &format!("{VIP}/64"), "dev", "eth0"]);
    assert!(
        wait_for(Duration::from_secs(3), || lan.hosts[0].has(VIP)).is_some(),
        "VIP not re-added:\n{}",
        a.output()
    );
    std::thread::sleep(Duration::from_millis(800));
    cap.signal("INT");
    cap.wait_exit(Duration::from_secs(5));
    let n = nas_for(&pcap, &m, VIP);
    assert!(
        (3..=4).contains(&n),
        "NAs after the re-add: {n}\n{}",
        a.output()
    );
}

/// One takeover measurement: the master is stopped by `stop`, the time is until `backup`
/// holds the VIP (a crashed master may still hold it too: kill -9 leaves it behind).
fn time_takeover(
    lan: &Lan,
    backup: usize,
    limit: Duration,
    what: &str,
    stop: impl FnOnce(),
) -> Duration {
    let t0 = Instant::now();
    stop();
    if wait_for(limit, || lan.hosts[backup].has(VIP)).is_none() {
        panic!("{what}: no takeover within {limit:?} of the signal");
    }
    t0.elapsed()
}

/// Rounds of each measurement.
const ROUNDS: usize = 3;

/// Issue 16's measurement: takeover times after kill -9 and after SIGTERM of the master, in
/// one run on one LAN, for a maas-vip pair and a keepalived (Debian 2.2.7) pair on
/// VRRPv3/IPv6 at advert 1 s, and a maas-vip pair at 100 ms. The time is from the signal
/// to the backup holding the VIP (polled every 20 ms). Prints the figures; asserts only
/// RFC 9568's bounds with slack.
#[test]
#[ignore = "a measurement, needs root and network namespaces: run with --ignored --nocapture measure_ipv6 (.ci/run skips `measure_`)"]
fn measure_ipv6_takeover_times_maas_vip_and_keepalived() {
    let bed = Bed::start("measure_ipv6_takeover_times_maas_vip_and_keepalived");
    let (lan, dir) = (&bed.lan, bed.dir.clone());
    let mut figures: Vec<(String, Vec<Duration>, Vec<Duration>)> = Vec::new();

    for advert in ["1s", "100ms"] {
        let (kill_bound, term_bound) = if advert == "1s" {
            (KILL_BOUND, TERM_BOUND)
        } else {
            (Duration::from_millis(1500), Duration::from_millis(800))
        };
        let (mut kills, mut terms) = (Vec::new(), Vec::new());
        let b = lan.start_maas_vip(&dir, 1, &config_every(100, advert, ""));
        for _ in 0..ROUNDS {
            let mut a = lan.start_maas_vip(&dir, 0, &config_every(150, advert, ""));
            wait_holders(
                lan,
                &[0],
                Duration::from_secs(10),
                "maas-vip master",
                &[&a, &b],
            );
            terms.push(time_takeover(
                lan,
                1,
                term_bound,
                "maas-vip SIGTERM",
                || a.signal("TERM"),
            ));
            assert!(a.wait_exit(Duration::from_secs(5)).is_some(), "h0 stopped");
            let mut a = lan.start_maas_vip(&dir, 0, &config_every(150, advert, ""));
            wait_holders(
                lan,
                &[0],
                Duration::from_secs(10),
                "maas-vip preempts",
                &[&a, &b],
            );
            kills.push(time_takeover(
                lan,
                1,
                kill_bound,
                "maas-vip kill -9",
                || a.kill9(),
            ));
            let _ = a.wait_exit(Duration::from_secs(5));
        }
        drop(b);
        for h in &lan.hosts[..2] {
            h.ns.ip(&["-6", "addr", "flush", "dev", "eth0", "scope", "global"]);
            let _ =
                h.ns.ip_output(&["-6", "addr", "del", &format!("{VIP_LL}/64"), "dev", "eth0"]);
        }
        figures.push((format!("maas-vip pair, advert {advert}"), kills, terms));
    }

    // keepalived pair, advert 1 s. Each start of h0 has its own files (the priority names
    // them), so no pid file of a stopping keepalived is met.
    let (mut kills, mut terms) = (Vec::new(), Vec::new());
    let kb = keepalived(lan, &dir, 1, 100);
    let mut prio = 150;
    for _ in 0..ROUNDS {
        let mut ka = keepalived(lan, &dir, 0, prio);
        prio += 1;
        wait_holders(
            lan,
            &[0],
            Duration::from_secs(10),
            "keepalived master",
            &[&ka, &kb],
        );
        terms.push(time_takeover(
            lan,
            1,
            TERM_BOUND,
            "keepalived SIGTERM",
            || ka.signal("TERM"),
        ));
        let _ = ka.wait_exit(Duration::from_secs(5));
        kill9_keepalived(&lan.hosts[0].ns);
        let ka = keepalived(lan, &dir, 0, prio);
        prio += 1;
        wait_holders(
            lan,
            &[0],
            Duration::from_secs(10),
            "keepalived preempts",
            &[&ka, &kb],
        );
        kills.push(time_takeover(
            lan,
            1,
            KILL_BOUND,
            "keepalived kill -9",
            || kill9_keepalived(&lan.hosts[0].ns),
        ));
        drop(ka);
        // kill -9 left the VIPs on h0.
        lan.hosts[0]
            .ns
            .ip(&["-6", "addr", "flush", "dev", "eth0", "scope", "global"]);
        let _ = lan.hosts[0].ns.ip_output(&[
            "-6",
            "addr",
            "del",
            &format!("{VIP_LL}/64"),
            "dev",
            "eth0",
        ]);
    }
    kill9_keepalived(&lan.hosts[1].ns);
    drop(kb);
    figures.push(("keepalived 2.2.7 pair, advert 1s".into(), kills, terms));

    let ms = |d: &[Duration]| -> String {
        let v: Vec<String> = d.iter().map(|d| format!("{}", d.as_millis())).collect();
        let mut s = d.to_vec();
        s.sort();
        format!(
            "{} ms (median {} ms)",
            v.join(", "),
            s[s.len() / 2].as_millis()
        )
    };
    eprintln!("takeover over VRRPv3/IPv6 ({ROUNDS} rounds each, signal to VIP on the backup):");
    for (what, kills, terms) in &figures {
        eprintln!("  {what}: kill -9 {}; SIGTERM {}", ms(kills), ms(terms));
    }
}
