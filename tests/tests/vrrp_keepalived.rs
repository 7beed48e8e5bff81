//! Interoperation with keepalived on one namespace LAN (advert 1 s, PASS auth), both roles.
//!
//! Needs root, `ip netns` and keepalived, so the tests are `#[ignore]`d: run them as root with
//! `--include-ignored` (see the README); they fail, saying why, where they cannot run.
//! The tests of this file run one at a time.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use maas_vip_tests::maas_vip_bin;
use maas_vip_tests::netns::{require, require_tool, wait_for, Lan, Netns, Proc};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const KILL_BOUND: Duration = Duration::from_millis(4200);
const TERM_BOUND: Duration = Duration::from_millis(1200);

fn maas_vip(lan: &Lan, dir: &Path, host: usize, prio: u8, pass: &str) -> Proc {
    maas_vip_with(lan, dir, host, prio, &format!("auth_pass = \"{pass}\""))
}

fn maas_vip_with(lan: &Lan, dir: &Path, host: usize, prio: u8, extra: &str) -> Proc {
    let config = format!(
        r#"
[[vrrp]]
name = "maas_region"
interface = "eth0"
virtual_router_id = 51
priority = {prio}
advert_interval = "1s"
virtual_ipaddresses = ["{VIP}/24"]
{extra}
"#
    );
    lan.start_maas_vip(dir, host, &config)
}

fn keepalived(lan: &Lan, dir: &Path, host: usize, prio: u8, pass: &str) -> Proc {
    let auth =
        format!("authentication {{\n        auth_type PASS\n        auth_pass {pass}\n    }}");
    keepalived_with(lan, dir, host, prio, &auth, "")
}

fn keepalived_with(lan: &Lan, dir: &Path, host: usize, prio: u8, auth: &str, global: &str) -> Proc {
    let config = format!(
        r#"
global_defs {{
    router_id ka_h{host}
    {global}
}}
vrrp_instance maas_region {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {prio}
    advert_int 1
    {auth}
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
"#
    );
    lan.start_keepalived(dir, host, "keepalived", &["-G", "-P"], &config)
}

/// kill -9 every process of the namespace (keepalived's parent and its VRRP child) in one
/// kill(1), children first: a parent dying first would have its child stop cleanly.
fn kill9_all(ns: &Netns) {
    let mut pids = ns.pids();
    pids.sort_unstable_by(|a, b| b.cmp(a));
    let mut args = vec!["-KILL".to_string()];
    args.extend(pids.iter().map(|p| p.to_string()));
    let _ = std::process::Command::new("kill").args(&args).status();
}

fn holders_ok(lan: &Lan, want: &[usize], limit: Duration, what: &str, logs: &[&Proc]) -> Duration {
    lan.wait_holders(VIP, want, limit, what, logs)
}

fn assert_stable(lan: &Lan, want: &[usize], d: Duration, what: &str) {
    lan.assert_holders_stable(VIP, want, d, what);
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().to_path_buf();
    (d, p)
}

/// maas-vip at 150 preempts keepalived at 100; keepalived takes over after SIGTERM and kill -9.
#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived on a bridge of namespaces"]
fn vrrp_keepalived_backup_maas_vip_preempts() {
    let name = "vrrp_keepalived_backup_maas_vip_preempts";
    require(name);
    require_tool(name, "keepalived");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_keep, dir) = tempdir();
    let lan = Lan::new(2);
    let ka = keepalived(&lan, &dir, 1, 100, "s3cret");
    holders_ok(
        &lan,
        &[1],
        Duration::from_secs(10),
        "keepalived alone",
        &[&ka],
    );

    let mv = maas_vip(&lan, &dir, 0, 150, "s3cret");
    let t = holders_ok(
        &lan,
        &[0],
        Duration::from_secs(10),
        "maas-vip preempts",
        &[&mv, &ka],
    );
    eprintln!("maas-vip (150) preempted keepalived (100) after {t:?}");
    assert_stable(&lan, &[0], Duration::from_secs(3), "maas-vip master");
    // keepalived parsed our advert (checksum, TTL, auth, interval all accepted) and yielded.
    assert!(
        ka.output()
            .contains("Master received advert from 10.99.0.11 with higher priority 150, ours 100"),
        "{}",
        ka.output()
    );
    assert!(
        ka.output().contains("Entering BACKUP STATE"),
        "{}",
        ka.output()
    );
    assert!(!mv.output().contains("dropped advert"), "{}", mv.output());

    // SIGTERM maas-vip: priority 0, keepalived takes over after its skew time.
    let mut mv = mv;
    let termed = Instant::now();
    mv.signal("TERM");
    holders_ok(
        &lan,
        &[1],
        Duration::from_secs(5),
        "keepalived after SIGTERM",
        &[&mv, &ka],
    );
    let term = termed.elapsed();
    assert_eq!(
        mv.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );

    // Back, then kill -9.
    let mut mv = maas_vip(&lan, &dir, 0, 150, "s3cret");
    holders_ok(
        &lan,
        &[0],
        Duration::from_secs(10),
        "maas-vip preempts again",
        &[&mv, &ka],
    );
    assert_stable(&lan, &[0], Duration::from_secs(2), "maas-vip master again");
    let killed = Instant::now();
    mv.kill9();
    holders_ok(
        &lan,
        &[0, 1],
        Duration::from_secs(10),
        "keepalived after kill -9",
        &[&ka],
    );
    let kill = killed.elapsed();
    eprintln!("TAKEOVER keepalived(100) from maas-vip: SIGTERM {term:?}, kill -9 {kill:?}");
    assert!(term <= TERM_BOUND, "SIGTERM takeover {term:?}");
    assert!(kill <= KILL_BOUND, "kill -9 takeover {kill:?}");
}

/// maas-vip at 150 never claims under keepalived at 200 and takes over when it stops or dies.
#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived on a bridge of namespaces"]
fn vrrp_keepalived_master_maas_vip_backup() {
    let name = "vrrp_keepalived_master_maas_vip_backup";
    require(name);
    require_tool(name, "keepalived");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_keep, dir) = tempdir();
    let lan = Lan::new(2);
    let ka = keepalived(&lan, &dir, 1, 200, "s3cret");
    holders_ok(
        &lan,
        &[1],
        Duration::from_secs(10),
        "keepalived alone",
        &[&ka],
    );
    let mv = maas_vip(&lan, &dir, 0, 150, "s3cret");
    // Longer than its Master_Down_Interval: it must stay backup.
    assert_stable(&lan, &[1], Duration::from_secs(6), "maas-vip stays backup");
    assert!(mv.output().contains("to=BACKUP"), "{}", mv.output());
    assert!(!mv.output().contains("to=MASTER"), "{}", mv.output());

    // keepalived stops: priority 0, maas-vip takes over after its skew time.
    let mut ka = ka;
    let termed = Instant::now();
    ka.signal("TERM");
    holders_ok(
        &lan,
        &[0],
        Duration::from_secs(5),
        "maas-vip after keepalived SIGTERM",
        &[&mv, &ka],
    );
    let term = termed.elapsed();
    ka.wait_exit(Duration::from_secs(5));
    drop(ka);

    // keepalived back at 200 preempts maas-vip.
    let ka = keepalived(&lan, &dir, 1, 200, "s3cret");
    holders_ok(
        &lan,
        &[1],
        Duration::from_secs(10),
        "keepalived preempts",
        &[&mv, &ka],
    );
    assert_stable(
        &lan,
        &[1],
        Duration::from_secs(2),
        "keepalived master again",
    );
    assert!(
        mv.output()
            .contains("reason=higher priority advert from 10.99.0.12 (200)"),
        "{}",
        mv.output()
    );

    // kill -9 keepalived: maas-vip takes over after Master_Down_Interval.
    let killed = Instant::now();
    kill9_all(&lan.hosts[1].ns);
    holders_ok(
        &lan,
        &[0, 1],
        Duration::from_secs(10),
        "maas-vip after kill -9",
        &[&mv],
    );
    let kill = killed.elapsed();
    eprintln!("TAKEOVER maas-vip(150) from keepalived: SIGTERM {term:?}, kill -9 {kill:?}");
    assert!(term <= TERM_BOUND, "SIGTERM takeover {term:?}");
    assert!(kill <= KILL_BOUND, "kill -9 takeover {kill:?}");
    drop(ka);
}

/// Adverts with another password are dropped and counted; maas-vip does not yield to them.
#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived on a bridge of namespaces"]
fn vrrp_keepalived_wrong_password_rejected() {
    let name = "vrrp_keepalived_wrong_password_rejected";
    require(name);
    require_tool(name, "keepalived");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_keep, dir) = tempdir();
    let lan = Lan::new(2);
    let ka = keepalived(&lan, &dir, 1, 200, "wrongpw");
    holders_ok(
        &lan,
        &[1],
        Duration::from_secs(10),
        "keepalived alone",
        &[&ka],
    );
    let mv = maas_vip(&lan, &dir, 0, 150, "s3cret");
    // It hears no valid master, so it claims too (what keepalived does on a password mismatch).
    holders_ok(
        &lan,
        &[0, 1],
        Duration::from_secs(10),
        "maas-vip ignores the wrong password",
        &[&mv, &ka],
    );
    let counted = wait_for(Duration::from_secs(5), || {
        let out = mv.output();
        out.contains("dropped advert")
            && out.contains("reason=auth_pass")
            && out.contains("count=3")
    });
    assert!(counted.is_some(), "{}", mv.output());
    assert!(
        !mv.output().contains("reason=higher priority"),
        "{}",
        mv.output()
    );
    // The counter is in /status (and /metrics), read with the binary's own client.
    let conf = dir.join("h0.toml");
    let out = lan.hosts[0]
        .ns
        .command(maas_vip_bin())
        .args(["status", "--json", "-c", conf.to_str().expect("utf8 path")])
        .output()
        .expect("maas-vip status in the namespace");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "maas-vip status --json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rejected = v["vrrp"][0]["rejected"]["auth_pass"].as_u64();
    eprintln!("maas-vip status: vrrp rejected auth_pass = {rejected:?}");
    assert!(rejected >= Some(3), "{v}");
    drop(ka);
}

/// VRRPv3 (RFC 9568, no authentication, pseudo-header checksum) both ways with keepalived's
/// `vrrp_version 3`.
#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived on a bridge of namespaces"]
fn vrrp_keepalived_v3_interop() {
    let name = "vrrp_keepalived_v3_interop";
    require(name);
    require_tool(name, "keepalived");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_keep, dir) = tempdir();
    let lan = Lan::new(2);
    let ka = keepalived_with(&lan, &dir, 1, 100, "", "vrrp_version 3");
    holders_ok(
        &lan,
        &[1],
        Duration::from_secs(10),
        "keepalived alone",
        &[&ka],
    );
    let mv = maas_vip_with(&lan, &dir, 0, 150, "version = 3");
    holders_ok(
        &lan,
        &[0],
        Duration::from_secs(10),
        "maas-vip v3 preempts",
        &[&mv, &ka],
    );
    assert_stable(&lan, &[0], Duration::from_secs(3), "maas-vip v3 master");
    assert!(!mv.output().contains("dropped advert"), "{}", mv.output());
    let out = ka.output();
    assert!(!out.contains("checksum"), "keepalived complains: {out}");
    mv.signal("TERM");
    let t = holders_ok(
        &lan,
        &[1],
        Duration::from_secs(5),
        "keepalived v3 after SIGTERM",
        &[&mv, &ka],
    );
    assert!(t <= TERM_BOUND, "{t:?}");
}

/// Takeover figures measured in one run: a keepalived pair and a maas-vip pair, same
/// priorities (master 150, backup 100) as BASELINES.md's keepalived figures.
#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived on a bridge of namespaces"]
fn vrrp_takeover_beside_keepalived() {
    let name = "vrrp_takeover_beside_keepalived";
    require(name);
    require_tool(name, "keepalived");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_keep, dir) = tempdir();
    const ROUNDS: usize = 3;
    let mut table: Vec<(&str, Vec<Duration>, Vec<Duration>)> = Vec::new();
    for daemon in ["keepalived", "maas-vip"] {
        let lan = Lan::new(2);
        let start = |host: usize, prio: u8| -> Proc {
            if daemon == "keepalived" {
                keepalived(&lan, &dir, host, prio, "s3cret")
            } else {
                maas_vip(&lan, &dir, host, prio, "s3cret")
            }
        };
        let backup = start(1, 100);
        let (mut kills, mut terms) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for how in ["KILL", "TERM"] {
                let master = start(0, 150);
                holders_ok(
                    &lan,
                    &[0],
                    Duration::from_secs(15),
                    "master elected",
                    &[&master, &backup],
                );
                assert_stable(&lan, &[0], Duration::from_millis(1500), "master settled");
                let t0 = Instant::now();
                if how == "KILL" {
                    kill9_all(&lan.hosts[0].ns);
                    holders_ok(
                        &lan,
                        &[0, 1],
                        Duration::from_secs(10),
                        "takeover after kill -9",
                        &[&backup],
                    );
                    kills.push(t0.elapsed());
                    // The dead master's stale VIP: keepalived leaves it; remove it by hand so
                    // both daemons start the next round alike.
                    lan.hosts[0]
                        .ns
                        .ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
                } else {
                    master.signal("TERM");
                    holders_ok(
                        &lan,
                        &[1],
                        Duration::from_secs(5),
                        "takeover after SIGTERM",
                        &[&master, &backup],
                    );
                    terms.push(t0.elapsed());
                }
                drop(master);
                // Wait for the namespace to be empty before the next start.
                wait_for(Duration::from_secs(5), || lan.hosts[0].ns.pids().is_empty());
            }
        }
        table.push((daemon, kills, terms));
        drop(backup);
    }
    eprintln!("TAKEOVER TABLE (advert 1 s, master 150, backup 100; kill -9 RFC bound 3.61 s after the last advert, SIGTERM skew 0.61 s)");
    for (daemon, kills, terms) in &table {
        let fmt = |v: &Vec<Duration>| {
            v.iter()
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        eprintln!(
            "TAKEOVER {daemon:>10}: kill -9 [{}]  SIGTERM [{}]",
            fmt(kills),
            fmt(terms)
        );
    }
    let (_, kills, terms) = &table[1];
    for k in kills {
        assert!(*k <= KILL_BOUND, "maas-vip kill -9 takeover {k:?}");
    }
    for t in terms {
        assert!(*t <= TERM_BOUND, "maas-vip SIGTERM takeover {t:?}");
    }
}
