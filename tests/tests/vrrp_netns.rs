//! VRRP with the real `maas-vip` binary in network namespaces: three hosts on a bridge.
//!
//! Needs root and `ip netns`, so the tests are `#[ignore]`d: run them as root with
//! `--include-ignored` (see the README); they fail, saying why, where they cannot run.
//! The tests of this file run one at a time: they measure takeover times on a small machine.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use maas_vip_tests::maas_vip_bin;
use maas_vip_tests::netns::{pcap_frames, require, wait_for, Lan, Proc};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

/// RFC 3768 §6.1 with advert_interval 1s.
fn master_down(prio: u32) -> Duration {
    Duration::from_secs(3) + Duration::from_secs(1) * (256 - prio) / 256
}

fn skew(prio: u32) -> Duration {
    Duration::from_secs(1) * (256 - prio) / 256
}

/// The issue's bounds on this kind of machine (keepalived: 3.38 s and 0.62 s).
const KILL_BOUND: Duration = Duration::from_millis(4200);
const TERM_BOUND: Duration = Duration::from_millis(1200);

fn config(prio: u8, extra: &str) -> String {
    format!(
        r#"
[[vrrp]]
name = "maas_region"
interface = "eth0"
virtual_router_id = 51
priority = {prio}
advert_interval = "1s"
auth_pass = "s3cret"
virtual_ipaddresses = ["{VIP}/24"]
garp_master_delay = "1s"
garp_master_repeat = 3
{extra}
"#
    )
}

fn start(lan: &Lan, dir: &Path, host: usize, prio: u8, extra: &str) -> Proc {
    lan.start_maas_vip(dir, host, &config(prio, extra))
}

fn assert_stable(lan: &Lan, want: &[usize], d: Duration, what: &str) {
    lan.assert_holders_stable(VIP, want, d, what);
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

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_three_hosts_elect_fail_over_and_recover() {
    require("vrrp_three_hosts_elect_fail_over_and_recover");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(3);
    let (mut cap, pcap) = lan.capture(2, dir.path(), "h2");
    let notify_file = dir.path().join("notify.txt");
    let notify = format!(
        r#"notify = ["sh", "-c", "echo \"$@\" >> {}", "notify"]"#,
        notify_file.display()
    );
    let mut d0 = start(&lan, dir.path(), 0, 150, &notify);
    let d1 = start(&lan, dir.path(), 1, 120, "");
    let d2 = start(&lan, dir.path(), 2, 100, "");

    // Election: the highest priority after its Master_Down_Interval.
    let t = wait_holders(
        &lan,
        &[0],
        Duration::from_secs(10),
        "election",
        &[&d0, &d1, &d2],
    );
    eprintln!(
        "election: host 0 holds the VIP after {t:?} (Master_Down_Interval {:?})",
        master_down(150)
    );
    assert_stable(&lan, &[0], Duration::from_secs(3), "after election");
    assert!(d0.output().contains("to=MASTER"), "{}", d0.output());
    assert!(d1.output().contains("to=BACKUP"));

    // Gratuitous ARP on the wire, two bursts (garp_master_delay 1s, repeat 3), and adverts a
    // dissector accepts.
    cap.signal("INT");
    cap.wait_exit(Duration::from_secs(5));
    let frames = pcap_frames(&pcap);
    let garps: Vec<_> = frames
        .iter()
        .filter_map(|f| vrrp::arp::Garp::parse(f))
        .filter(|g| g.addr == VIP)
        .collect();
    assert!(
        garps.len() >= 6,
        "{} gratuitous ARP for the VIP: {garps:?}",
        garps.len()
    );
    let adverts: Vec<_> = frames
        .iter()
        .filter(|f| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == 112)
        .collect();
    assert!(!adverts.is_empty());
    assert!(
        garps.iter().all(|g| g.mac == adverts[0][6..12]),
        "GARP from the master's MAC"
    );
    let tshark = std::process::Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().expect("utf8"),
            "-Y",
            "vrrp",
            "-T",
            "fields",
        ])
        .args([
            "-e",
            "ip.src",
            "-e",
            "ip.ttl",
            "-e",
            "ip.dsfield",
            "-e",
            "vrrp.checksum.status",
        ])
        .args([
            "-e",
            "vrrp.auth_string",
            "-e",
            "vrrp.prio",
            "-e",
            "vrrp.ip_addr",
        ])
        .output();
    match tshark {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("10.99.0.11\t"))
                .collect();
            assert!(!lines.is_empty(), "tshark saw no advert: {text}");
            for l in lines {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f[1], "255", "TTL: {l}");
                assert_eq!(f[2], "0xc0", "TOS: {l}");
                assert_eq!(f[3], "1", "checksum status good: {l}");
                assert_eq!(f[4], "s3cret", "auth string: {l}");
                assert_eq!(f[5], "150", "priority: {l}");
                assert_eq!(f[6], "10.99.0.100", "address: {l}");
            }
        }
        other => panic!("tshark: {other:?}"),
    }

    // kill -9 the master: a backup holds the VIP within 3 x advert + skew (+ slack).
    let killed = Instant::now();
    d0.kill9();
    let t = wait_holders(
        &lan,
        &[0, 1],
        Duration::from_secs(10),
        "kill -9 takeover",
        &[&d1, &d2],
    );
    let takeover_kill = killed.elapsed();
    eprintln!(
        "TAKEOVER kill -9: {takeover_kill:?} (poll {t:?}; RFC bound {:?} after the last advert; issue bound {KILL_BOUND:?})",
        master_down(120)
    );
    assert!(
        takeover_kill <= KILL_BOUND,
        "kill -9 takeover took {takeover_kill:?}"
    );
    assert!(
        lan.hosts[0].has(VIP),
        "the dead master's VIP stays, as with keepalived"
    );

    // The dead one restarts: its stale VIP goes at once, then it preempts.
    let d0 = start(&lan, dir.path(), 0, 150, &notify);
    let t = wait_holders(
        &lan,
        &[1],
        Duration::from_secs(3),
        "stale VIP removed at start",
        &[&d0],
    );
    assert!(
        t < master_down(150),
        "stale VIP removed before preempting ({t:?})"
    );
    assert!(d0.output().contains("stale"), "{}", d0.output());
    wait_holders(
        &lan,
        &[0],
        Duration::from_secs(10),
        "preempt after restart",
        &[&d0, &d1],
    );
    assert_stable(&lan, &[0], Duration::from_secs(2), "after preempt");

    // SIGTERM: priority 0, the backup takes over after its skew time.
    let mut d0 = d0;
    let termed = Instant::now();
    d0.signal("TERM");
    wait_holders(
        &lan,
        &[1],
        Duration::from_secs(5),
        "SIGTERM takeover",
        &[&d0, &d1],
    );
    let takeover_term = termed.elapsed();
    eprintln!(
        "TAKEOVER SIGTERM: {takeover_term:?} (skew {:?}; issue bound {TERM_BOUND:?})",
        skew(120)
    );
    assert!(
        takeover_term <= TERM_BOUND,
        "SIGTERM takeover took {takeover_term:?}"
    );
    let st = d0
        .wait_exit(Duration::from_secs(5))
        .expect("exits after SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", d0.output());
    assert!(d0.output().contains("reason=shutdown"), "{}", d0.output());
    assert_stable(&lan, &[1], Duration::from_secs(2), "after SIGTERM");

    let notes = std::fs::read_to_string(&notify_file).unwrap_or_default();
    // keepalived's arguments: INSTANCE <name> <state> <priority>.
    assert!(
        notes.contains("INSTANCE maas_region BACKUP 150"),
        "notify: {notes}"
    );
    assert!(
        notes.contains("INSTANCE maas_region MASTER 150"),
        "notify: {notes}"
    );
    // keepalived's STOP as the instance ends (SIGTERM), run before the daemon exits.
    assert!(
        notes.contains("INSTANCE maas_region STOP 150"),
        "notify: {notes}"
    );
    drop((d1, d2));
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_track_script_failure_fails_over() {
    require("vrrp_track_script_failure_fails_over");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, "").expect("flag");
    let lan = Lan::new(2);
    let track = format!(
        r#"
[[vrrp.track_script]]
name = "chk_flag"
command = ["test", "-e", "{}"]
interval = "200ms"
timeout = "1s"
weight = 0
"#,
        flag.display()
    );
    let d0 = start(&lan, dir.path(), 0, 150, &track);
    let d1 = start(&lan, dir.path(), 1, 120, "");
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0, &d1]);

    std::fs::remove_file(&flag).expect("rm flag");
    let t = wait_holders(
        &lan,
        &[1],
        Duration::from_secs(5),
        "track script failover",
        &[&d0, &d1],
    );
    eprintln!("track script failure: host 1 holds the VIP after {t:?}");
    // One script interval, then priority 0 and the backup's skew time.
    assert!(
        t <= Duration::from_millis(200) + skew(120) + Duration::from_millis(800),
        "{t:?}"
    );
    assert!(d0.output().contains("to=FAULT"), "{}", d0.output());
    assert_stable(&lan, &[1], Duration::from_secs(2), "while the script fails");

    std::fs::write(&flag, "").expect("flag");
    wait_holders(
        &lan,
        &[0],
        Duration::from_secs(10),
        "back after the script recovers",
        &[&d0, &d1],
    );
    assert_stable(&lan, &[0], Duration::from_secs(2), "after recovery");
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_link_down_fails_over() {
    require("vrrp_link_down_fails_over");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    let d0 = start(&lan, dir.path(), 0, 150, "");
    let d1 = start(&lan, dir.path(), 1, 120, "");
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0, &d1]);

    let down = Instant::now();
    lan.hosts[0].set_link(false);
    wait_holders(
        &lan,
        &[1],
        Duration::from_secs(8),
        "link down failover",
        &[&d0, &d1],
    );
    let t = down.elapsed();
    eprintln!("link down: host 1 holds the VIP after {t:?}");
    assert!(t <= master_down(120) + Duration::from_millis(700), "{t:?}");
    assert!(
        wait_for(Duration::from_secs(2), || d0.output().contains("to=FAULT")).is_some(),
        "{}",
        d0.output()
    );

    lan.hosts[0].set_link(true);
    wait_holders(
        &lan,
        &[0],
        Duration::from_secs(10),
        "preempt after link up",
        &[&d0, &d1],
    );
    assert_stable(&lan, &[0], Duration::from_secs(2), "after link up");
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_vip_removed_by_someone_else_is_added_back() {
    require("vrrp_vip_removed_by_someone_else_is_added_back");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    let d0 = start(&lan, dir.path(), 0, 150, "");
    let d1 = start(&lan, dir.path(), 1, 120, "");
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0, &d1]);
    lan.hosts[0]
        .ns
        .ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
    let t = wait_for(Duration::from_secs(3), || lan.hosts[0].has(VIP));
    assert!(t.is_some(), "not re-added: {}", d0.output());
    eprintln!("VIP re-added {:?} after its removal", t.unwrap_or_default());
    assert!(d0.output().contains("adding it back"), "{}", d0.output());
    assert_stable(&lan, &[0], Duration::from_secs(2), "after re-adding");
    drop(d1);
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_two_instances_in_one_process() {
    require("vrrp_two_instances_in_one_process");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    let vip2 = Ipv4Addr::new(10, 99, 0, 101);
    let two = |p51: u8, p52: u8| {
        format!(
            r#"
[[vrrp]]
name = "vi_51"
interface = "eth0"
virtual_router_id = 51
priority = {p51}
virtual_ipaddresses = ["{VIP}/24"]

[[vrrp]]
name = "vi_52"
interface = "eth0"
virtual_router_id = 52
priority = {p52}
virtual_ipaddresses = ["{vip2}/24"]
"#
        )
    };
    let mut d0 = lan.start_maas_vip(dir.path(), 0, &two(150, 100));
    let d1 = lan.start_maas_vip(dir.path(), 1, &two(100, 150));
    wait_holders(&lan, &[0], Duration::from_secs(10), "vrid 51", &[&d0, &d1]);
    assert!(
        wait_for(Duration::from_secs(10), || lan.holders(vip2) == [1]).is_some(),
        "vrid 52 holders {:?}",
        lan.holders(vip2)
    );
    for _ in 0..20 {
        assert_eq!(lan.holders(VIP), [0]);
        assert_eq!(lan.holders(vip2), [1]);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d0.output().contains("instance=vi_51"));
    assert!(d0.output().contains("instance=vi_52"));
    // One SIGTERM releases only what that process held.
    d0.signal("TERM");
    wait_holders(
        &lan,
        &[1],
        Duration::from_secs(3),
        "vrid 51 after SIGTERM",
        &[&d0, &d1],
    );
    assert_eq!(lan.holders(vip2), [1]);
    assert_eq!(
        d0.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_unicast_peers() {
    require("vrrp_unicast_peers");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    let (mut cap, pcap) = lan.capture(1, dir.path(), "h1");
    let d0 = start(
        &lan,
        dir.path(),
        0,
        150,
        r#"unicast_peers = ["10.99.0.12"]"#,
    );
    let d1 = start(
        &lan,
        dir.path(),
        1,
        120,
        r#"unicast_peers = ["10.99.0.11"]"#,
    );
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0, &d1]);
    assert_stable(&lan, &[0], Duration::from_secs(2), "unicast master");
    cap.signal("INT");
    cap.wait_exit(Duration::from_secs(5));
    let adverts: Vec<Vec<u8>> = pcap_frames(&pcap)
        .into_iter()
        .filter(|f| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == 112)
        .collect();
    assert!(!adverts.is_empty());
    for f in &adverts {
        let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
        let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        let want = if src == Ipv4Addr::new(10, 99, 0, 11) {
            Ipv4Addr::new(10, 99, 0, 12)
        } else {
            Ipv4Addr::new(10, 99, 0, 11)
        };
        assert_eq!(dst, want, "unicast advert from {src}");
    }
    let mut d0 = d0;
    d0.kill9();
    let t = wait_holders(
        &lan,
        &[0, 1],
        Duration::from_secs(8),
        "unicast takeover",
        &[&d1],
    );
    assert!(t <= KILL_BOUND, "{t:?}");
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_track_backends_lowers_priority() {
    require("vrrp_track_backends_lowers_priority");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    // The only region of host 0's frontend, inside host 0: `maas-vip demo region` (the demo's
    // stand-in) on 127.0.0.1:5240. (A proxy-only maas-vip with no live server, used before,
    // reset each connection at once, and the reset could beat the tcp check's connect: the
    // check flapped and the priority with it.)
    let region = || {
        Proc::spawn(
            &lan.hosts[0].ns,
            maas_vip_bin(),
            &[
                "demo",
                "region",
                "--name",
                "region-1",
                "--bind",
                "127.0.0.1:5240",
            ],
            &[],
            dir.path().join("region.log"),
        )
    };
    let mut r = region();
    let frontend = r#"
track_backends = { frontend = "maas", weight = -50 }

[[frontend]]
name = "maas"
bind = ["127.0.0.1:8080"]
check = { kind = "tcp", interval = "200ms", timeout = "1s", rise = 1, fall = 1 }

[[frontend.server]]
name = "region-1"
address = "127.0.0.1:5240"
"#;
    let d0 = start(&lan, dir.path(), 0, 150, frontend);
    let d1 = start(&lan, dir.path(), 1, 120, "");
    wait_holders(&lan, &[0], Duration::from_secs(15), "election", &[&d0, &d1]);
    // No live region: 150 - 50 = 100 < 120, so host 1 preempts.
    r.kill9();
    let t = wait_holders(
        &lan,
        &[1],
        Duration::from_secs(10),
        "no backend",
        &[&d0, &d1],
    );
    eprintln!("track_backends: host 1 took over {t:?} after the region died");
    assert!(
        d0.output().contains("track_backends changed"),
        "{}",
        d0.output()
    );
    // The region is back: 150 again, host 0 preempts.
    let _r = region();
    wait_holders(
        &lan,
        &[0],
        Duration::from_secs(10),
        "backend back",
        &[&d0, &d1],
    );
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_partition_and_heal_one_master_within_one_interval() {
    require("vrrp_partition_and_heal_one_master_within_one_interval");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    let d0 = start(&lan, dir.path(), 0, 150, "");
    let d1 = start(&lan, dir.path(), 1, 120, "");
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0, &d1]);

    lan.isolate(0);
    wait_holders(
        &lan,
        &[0, 1],
        Duration::from_secs(8),
        "split brain while partitioned",
        &[&d0, &d1],
    );
    let (mut cap, pcap) = lan.capture(1, dir.path(), "h1");
    std::thread::sleep(Duration::from_millis(1500));
    lan.rejoin(0);
    let t = wait_holders(
        &lan,
        &[0],
        Duration::from_secs(5),
        "one master after healing",
        &[&d0, &d1],
    );
    eprintln!("partition healed: one VIP holder after {t:?}");
    assert!(
        t <= Duration::from_millis(1500),
        "two holders for {t:?} after healing"
    );
    assert_stable(&lan, &[0], Duration::from_secs(2), "after healing");
    assert!(
        d1.output()
            .contains("reason=higher priority advert from 10.99.0.11 (150)"),
        "{}",
        d1.output()
    );
    // Whichever advert crossed first: if host 0 heard host 1's (lower) one while master, it
    // re-asserted at once with an advert and gratuitous ARP (keepalived's split-brain answer).
    cap.signal("INT");
    cap.wait_exit(Duration::from_secs(5));
    let garps = pcap_frames(&pcap)
        .iter()
        .filter_map(|f| vrrp::arp::Garp::parse(f))
        .filter(|g| g.addr == VIP)
        .count();
    let reasserted = d0.output().contains("re-asserting");
    eprintln!("partition healed: host 0 re-asserted: {reasserted}, gratuitous ARP seen by host 1: {garps}");
    if reasserted {
        assert!(
            garps >= 1,
            "split-brain re-assertion without gratuitous ARP"
        );
    }
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_address_owner_claims_at_once_and_keeps_its_address() {
    require("vrrp_address_owner_claims_at_once_and_keeps_its_address");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    // The virtual address is one of host 0's own addresses (RFC 3768 §3: the IP address
    // owner, priority 255). Not its primary one: adverts come from the primary address, and a
    // backup holding that very address would drop them as martians.
    let owned = Ipv4Addr::new(10, 99, 0, 50);
    lan.hosts[0]
        .ns
        .ip(&["addr", "add", &format!("{owned}/24"), "dev", "eth0"]);
    let block = |prio: u8| {
        format!(
            r#"
[[vrrp]]
name = "owner_test"
interface = "eth0"
virtual_router_id = 52
priority = {prio}
virtual_ipaddresses = ["{owned}/24"]
"#
        )
    };
    let d1 = lan.start_maas_vip(dir.path(), 1, &block(100));
    assert!(
        wait_for(Duration::from_secs(8), || lan.holders(owned) == [0, 1]).is_some(),
        "backup claims while the owner is not running: {:?}",
        lan.holders(owned)
    );
    let started = Instant::now();
    let mut d0 = lan.start_maas_vip(dir.path(), 0, &block(255));
    assert!(
        wait_for(Duration::from_secs(3), || lan.holders(owned) == [0]).is_some(),
        "owner did not take over at once: {:?}\n{}\n{}",
        lan.holders(owned),
        d0.output(),
        d1.output()
    );
    eprintln!("owner took over {:?} after its start", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        d0.output().contains("reason=address owner"),
        "{}",
        d0.output()
    );
    d0.signal("TERM");
    assert_eq!(
        d0.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        wait_for(Duration::from_secs(3), || lan.holders(owned) == [0, 1]).is_some(),
        "backup after the owner stopped: {:?}",
        lan.holders(owned)
    );
    assert!(
        lan.hosts[0].has(owned),
        "the owner's own address is never removed"
    );
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_nopreempt_and_preempt_delay() {
    require("vrrp_nopreempt_and_preempt_delay");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(3);
    let d0 = start(&lan, dir.path(), 0, 100, "");
    wait_holders(&lan, &[0], Duration::from_secs(10), "first master", &[&d0]);
    // preempt = false at a higher priority: stays backup under a live master.
    let d1 = start(&lan, dir.path(), 1, 200, "preempt = false");
    assert_stable(&lan, &[0], Duration::from_secs(6), "nopreempt stays backup");
    assert!(d1.output().contains("to=BACKUP"), "{}", d1.output());
    drop(d1);
    // preempt_delay: takes over only after the delay.
    let joined = Instant::now();
    let d2 = start(&lan, dir.path(), 2, 150, r#"preempt_delay = "6s""#);
    let t = wait_holders(
        &lan,
        &[2],
        Duration::from_secs(12),
        "preempt after the delay",
        &[&d0, &d2],
    );
    let waited = joined.elapsed();
    eprintln!("preempt_delay 6s: took over after {waited:?} (poll {t:?})");
    assert!(
        waited >= Duration::from_secs(6),
        "preempted early: {waited:?}"
    );
    assert!(
        d2.output()
            .contains("reason=preempting lower-priority master 10.99.0.11 (100)"),
        "{}",
        d2.output()
    );
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_primary_address_change_is_followed() {
    require("vrrp_primary_address_change_is_followed");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    let d0 = start(&lan, dir.path(), 0, 150, "");
    let d1 = start(&lan, dir.path(), 1, 120, "");
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0, &d1]);
    let (mut cap, pcap) = lan.capture(1, dir.path(), "h1");
    // Renumber host 0: a new address (its own /25, so it is a primary), then the old one goes
    // (taking the VIP, a secondary of the old /24, with it: the master adds it back).
    let h0 = &lan.hosts[0].ns;
    h0.ip(&["addr", "add", "10.99.0.21/25", "dev", "eth0"]);
    h0.ip(&["addr", "del", "10.99.0.11/24", "dev", "eth0"]);
    assert!(
        wait_for(Duration::from_secs(3), || d0
            .output()
            .contains("primary address changed"))
        .is_some(),
        "{}",
        d0.output()
    );
    wait_holders(
        &lan,
        &[0],
        Duration::from_secs(3),
        "VIP back on host 0",
        &[&d0, &d1],
    );
    assert_stable(&lan, &[0], Duration::from_secs(4), "after renumbering");
    cap.signal("INT");
    cap.wait_exit(Duration::from_secs(5));
    let sources: Vec<Ipv4Addr> = pcap_frames(&pcap)
        .into_iter()
        .filter(|f| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == 112)
        .map(|f| Ipv4Addr::new(f[26], f[27], f[28], f[29]))
        .collect();
    let last = sources.last().copied();
    assert_eq!(
        last,
        Some(Ipv4Addr::new(10, 99, 0, 21)),
        "advert sources: {sources:?}"
    );
    assert!(!d1.output().contains("to=MASTER"), "{}", d1.output());
}

/// Gratuitous ARP frames for the VIP in a capture.
fn garps_for_vip(pcap: &Path) -> usize {
    pcap_frames(pcap)
        .iter()
        .filter_map(|f| vrrp::arp::Garp::parse(f))
        .filter(|g| g.addr == VIP)
        .count()
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn vrrp_garp_master_refresh_and_a_burst_after_a_deleted_vip_is_re_added() {
    require("vrrp_garp_master_refresh_and_a_burst_after_a_deleted_vip_is_re_added");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    let (mut cap, pcap) = lan.capture(1, dir.path(), "refresh");
    // keepalived's garp_master_refresh: one frame per VIP every 2 s while master.
    let d0 = start(&lan, dir.path(), 0, 150, r#"garp_master_refresh = "2s""#);
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0]);
    std::thread::sleep(Duration::from_millis(9_500));
    cap.signal("INT");
    cap.wait_exit(Duration::from_secs(5));
    // Two bursts of 3 (garp_master_delay 1s, repeat 3), then a refresh at 2, 4, 6, 8 s.
    let n = garps_for_vip(&pcap);
    assert!(
        (6 + 4..=6 + 5).contains(&n),
        "gratuitous ARPs in 9.5 s as master: {n}\n{}",
        d0.output()
    );

    // Someone deletes the VIP: maas-vip adds it back and announces it with a burst at once.
    // (Immediate mode: the capture is stopped within a second, before tcpdump's buffer
    // timeout would hand it the frames.)
    let (mut cap, pcap) = lan.capture_immediate(1, dir.path(), "readd", "arp");
    lan.hosts[0]
        .ns
        .ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
    assert!(
        wait_for(Duration::from_secs(3), || lan.hosts[0].has(VIP)).is_some(),
        "VIP not re-added:\n{}",
        d0.output()
    );
    std::thread::sleep(Duration::from_millis(700));
    cap.signal("INT");
    cap.wait_exit(Duration::from_secs(5));
    let n = garps_for_vip(&pcap);
    // A burst of 3; a refresh (1 frame) may fall in the window too.
    assert!(
        (3..=4).contains(&n),
        "gratuitous ARPs after the re-add: {n} (capture: {})\n{}",
        cap.output(),
        d0.output()
    );
    assert!(d0.output().contains("adding it back"), "{}", d0.output());
}
