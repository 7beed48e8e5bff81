//! Fault injection (issue 7 item 3) with the real `maas-vip` binary in network namespaces:
//! a partition that heals, a track script that hangs, a daemon killed and restarted over and
//! over. (The master's link going down is `vrrp_link_down_fails_over` in vrrp_netns.rs.)
//!
//! Needs root, `ip netns`, tcpdump, ping and ps, so the tests are `#[ignore]`d: run them as
//! root with `--include-ignored` (see the README); they fail, saying why, where they cannot
//! run.
//! The tests of this file run one at a time: they measure times.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use maas_vip_tests::netns::{pcap_frames, require, wait_for, Lan, Proc};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

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
garp_master_repeat = 2
{extra}
"#
    )
}

fn start(lan: &Lan, dir: &Path, host: usize, text: &str) -> Proc {
    lan.start_maas_vip(dir, host, text)
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

/// The MAC address of eth0 in host `i`, as 6 bytes.
fn mac(lan: &Lan, i: usize) -> Vec<u8> {
    let out = lan.hosts[i].ns.ip_output(&["-o", "link", "show", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {text}"));
    hex.split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect()
}

/// The link-layer address host `i` has for the VIP in its neighbour table, if any.
fn neigh_mac(lan: &Lan, i: usize) -> Option<Vec<u8>> {
    let out = lan.hosts[i]
        .ns
        .ip_output(&["neigh", "show", &VIP.to_string(), "dev", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)?;
    hex.split(':')
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect()
}

/// Partition the master from the LAN, let both sides run their own master, heal: within one
/// advert interval exactly one master is left, and the winner re-sends gratuitous ARP, so a
/// client that resolved the VIP to the loser during the partition follows. Three rounds, at
/// different advert phases.
#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces, faults injected"]
fn vrrp_fault_partition_heals_to_one_master_with_gratuitous_arp() {
    let name = "vrrp_fault_partition_heals_to_one_master_with_gratuitous_arp";
    require(name);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    // Hosts 0 and 1 run maas-vip; host 2 is a client on host 1's side of the partition.
    let lan = Lan::new(3);
    let d0 = start(&lan, dir.path(), 0, &config(150, ""));
    let d1 = start(&lan, dir.path(), 1, &config(120, ""));
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0, &d1]);
    let (mac0, mac1) = (mac(&lan, 0), mac(&lan, 1));
    let mut heal_times = Vec::new();
    for round in 0..3 {
        lan.isolate(0);
        wait_holders(
            &lan,
            &[0, 1],
            Duration::from_secs(8),
            "split brain while partitioned",
            &[&d0, &d1],
        );
        // The client resolves the VIP: to host 1, the only master it can reach.
        let ping = lan.hosts[2]
            .ns
            .command("ping")
            .args(["-c", "1", "-W", "2", &VIP.to_string()])
            .output()
            .expect("ping");
        assert!(
            ping.status.success(),
            "client cannot reach the VIP during the partition"
        );
        assert_eq!(
            neigh_mac(&lan, 2),
            Some(mac1.clone()),
            "client ARP during the partition"
        );
        // Past host 1's second GARP burst and the neighbour table's locktime (1 s), at a
        // different advert phase each round.
        std::thread::sleep(Duration::from_millis(1600 + 300 * round));
        let (mut cap, pcap) = lan.capture(2, dir.path(), &format!("round{round}"));
        let healed = Instant::now();
        lan.rejoin(0);
        let t = wait_holders(
            &lan,
            &[0],
            Duration::from_secs(5),
            "one master after healing",
            &[&d0, &d1],
        );
        heal_times.push(t);
        // The client's entry for the VIP moves to the winner (gratuitous ARP).
        let arp = wait_for(Duration::from_secs(2), || {
            neigh_mac(&lan, 2).as_deref() == Some(&mac0[..])
        });
        let followed = arp.map(|_| healed.elapsed());
        assert_stable(&lan, &[0], Duration::from_secs(2), "after healing");
        cap.signal("INT");
        cap.wait_exit(Duration::from_secs(5));
        let garps = pcap_frames(&pcap)
            .iter()
            .filter_map(|f| vrrp::arp::Garp::parse(f))
            .filter(|g| g.addr == VIP && g.mac[..] == mac0[..])
            .count();
        eprintln!(
            "PARTITION round {round}: one master {t:?} after healing; gratuitous ARP from the winner: {garps}; client's ARP entry on the winner {:?} after healing",
            followed
        );
        assert!(
            t <= Duration::from_millis(1150),
            "two masters for {t:?} after healing (advert interval 1s)"
        );
        assert!(
            garps >= 1,
            "no gratuitous ARP from the winner after healing"
        );
        assert!(
            arp.is_some(),
            "client still resolves the VIP to {:?}, winner is {mac0:?}",
            neigh_mac(&lan, 2)
        );
    }
    eprintln!("PARTITION heal times: {heal_times:?}");
}

/// `ps` rows whose command line contains `marker`: (pid, ppid, state, elapsed seconds, args).
fn ps_matching(marker: &str) -> Vec<(u32, u32, String, u64, String)> {
    let out = std::process::Command::new("ps")
        .args(["-eo", "pid=,ppid=,stat=,etimes=,args="])
        .output()
        .expect("ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let pid = w.next()?.parse().ok()?;
            let ppid = w.next()?.parse().ok()?;
            let stat = w.next()?.to_string();
            let age = w.next()?.parse().ok()?;
            Some((pid, ppid, stat, age, w.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// A track script that hangs (and starts a grandchild that would outlive it) is killed with
/// its whole process group at its timeout, counts as failed, and leaves neither a zombie nor
/// a leftover process.
#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces, faults injected"]
fn vrrp_fault_hung_track_script_is_killed_at_its_timeout() {
    let name = "vrrp_fault_hung_track_script_is_killed_at_its_timeout";
    require(name);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    // A unique program name to find in `ps`: a link to sleep inside the test's directory.
    let sleeper = dir.path().join("hung-check-sleep");
    std::os::unix::fs::symlink(
        which("sleep").unwrap_or_else(|| PathBuf::from("/bin/sleep")),
        &sleeper,
    )
    .expect("symlink");
    let script = dir.path().join("hung-check.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{} 600 &\n{} 600\n",
            sleeper.display(),
            sleeper.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    // The sleeper, the script and the `sh -c` running it; not the daemons (their config is
    // in the same directory, under another name).
    let marker = dir
        .path()
        .join("hung-check")
        .to_str()
        .expect("utf8 path")
        .to_string();
    let flag = dir.path().join("hang");
    let lan = Lan::new(2);
    // Good while the flag is absent; hangs once it exists.
    let track = format!(
        r#"
[[vrrp.track_script]]
name = "chk_hangs"
command = ["sh", "-c", "test ! -e {flag} || exec {script}"]
interval = "2s"
timeout = "1s"
weight = -60
"#,
        flag = flag.display(),
        script = script.display()
    );
    let mut d0 = start(&lan, dir.path(), 0, &config(150, &track));
    let d1 = start(&lan, dir.path(), 1, &config(120, ""));
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0, &d1]);
    let daemon = d0.pid();

    std::fs::write(&flag, "").expect("flag");
    let hung = Instant::now();
    // Timed out = failed: 150 - 60 = 90 < 120, host 1 preempts.
    let t = wait_holders(
        &lan,
        &[1],
        Duration::from_secs(10),
        "hung script fails over",
        &[&d0, &d1],
    );
    eprintln!("HUNG SCRIPT: host 1 holds the VIP {t:?} after the script started hanging");
    assert!(
        d0.output().contains("timed out: process group killed"),
        "{}",
        d0.output()
    );
    // For 8 s (four runs of the script), nothing of it lives longer than its timeout, and the
    // daemon leaves no zombie child.
    let mut seen = 0;
    let end = Instant::now() + Duration::from_secs(8);
    while Instant::now() < end {
        for (pid, ppid, stat, age, args) in ps_matching(&marker) {
            seen += 1;
            assert!(
                !(stat.starts_with('Z') && ppid == daemon),
                "zombie child of the daemon: {pid} {args}"
            );
            if !stat.starts_with('Z') {
                // etimes is in whole seconds: timeout 1 s plus rounding.
                assert!(age <= 2, "{pid} ({args}) outlived the timeout: {age}s");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen > 0, "the hung script never ran");
    assert!(hung.elapsed() >= Duration::from_secs(8));
    // Stopping the daemon stops its scripts too.
    d0.signal("TERM");
    assert_eq!(
        d0.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    let left = wait_for(Duration::from_secs(3), || {
        ps_matching(&marker)
            .iter()
            .all(|(_, _, stat, _, _)| stat.starts_with('Z'))
    });
    assert!(
        left.is_some(),
        "left behind after stop: {:?}",
        ps_matching(&marker)
    );
    drop(d1);
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.exists())
    })
}

/// kill -9 the master and start it again ten times in quick succession: in the end the VIP is
/// on exactly one host, once, and stays there; at no moment does a host carry it twice.
#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces, faults injected"]
fn vrrp_fault_rapid_kill_and_restart() {
    let name = "vrrp_fault_rapid_kill_and_restart";
    require(name);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    let mut d0 = start(&lan, dir.path(), 0, &config(150, ""));
    let d1 = start(&lan, dir.path(), 1, &config(120, ""));
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0, &d1]);
    let copies = |i: usize| {
        let want = format!("{VIP}/");
        lan.hosts[i]
            .addrs()
            .iter()
            .filter(|a| a.starts_with(&want))
            .count()
    };
    let started = Instant::now();
    for round in 0..10 {
        d0.kill9();
        // Some restarts come right away, some after a few hundred ms (mid start-up, or just
        // after claiming).
        std::thread::sleep(Duration::from_millis([50, 300, 700][round % 3]));
        assert!(copies(0) <= 1 && copies(1) <= 1, "a VIP twice on one host");
        d0 = start(&lan, dir.path(), 0, &config(150, ""));
        std::thread::sleep(Duration::from_millis(150));
        assert!(copies(0) <= 1 && copies(1) <= 1, "a VIP twice on one host");
    }
    eprintln!("RESTARTS: 10 kill -9 + restart in {:?}", started.elapsed());
    // The last one preempts after its Master_Down_Interval (3.41 s) at most.
    let t = wait_holders(
        &lan,
        &[0],
        Duration::from_secs(8),
        "after the restarts",
        &[&d0, &d1],
    );
    eprintln!("RESTARTS: VIP on host 0 only, {t:?} after the last restart");
    assert_stable(&lan, &[0], Duration::from_secs(3), "after the restarts");
    assert_eq!(copies(0), 1);
    assert_eq!(copies(1), 0);
    assert!(d1.output().contains("to=BACKUP"));
}

/// How many descriptors the process holds.
fn open_fds(p: &Proc) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The state `/status` gives the instance `maas_region`, if any.
fn vrrp_state(lan: &Lan, i: usize, conf: &Path) -> Option<String> {
    let v = lan.hosts[i].status_json(conf)?;
    v["vrrp"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == "maas_region")?["state"]
        .as_str()
        .map(str::to_lowercase)
}

/// An interface that is missing at start (a bond or VLAN that comes up late), then present
/// without an address, then with one: the daemon keeps running, the instance shows FAULT with
/// the reason logged, and once the interface is usable it starts and takes over as its
/// priority says.
#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces, faults injected"]
fn vrrp_fault_interface_missing_at_start_waits_in_fault() {
    let name = "vrrp_fault_interface_missing_at_start_waits_in_fault";
    require(name);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    let d1 = start(&lan, dir.path(), 1, &config(100, ""));
    wait_holders(&lan, &[1], Duration::from_secs(10), "host 1 alone", &[&d1]);
    // Host 0's eth0 goes away (renamed: its address goes with it).
    let h0 = &lan.hosts[0];
    h0.ns.ip(&["link", "set", "eth0", "down"]);
    h0.ns.ip(&["link", "set", "eth0", "name", "late0"]);
    let conf0 = dir.path().join("h0.toml");
    let mut d0 = start(&lan, dir.path(), 0, &config(150, ""));
    let fault = wait_for(Duration::from_secs(10), || {
        vrrp_state(&lan, 0, &conf0).as_deref() == Some("fault")
    });
    assert!(
        fault.is_some(),
        "no FAULT in /status: {:?}\n{}",
        lan.hosts[0].status_json(&conf0),
        d0.output()
    );
    assert!(d0.running(), "daemon exited:\n{}", d0.output());
    assert!(
        d0.output().contains("interface eth0 does not exist"),
        "reason not logged:\n{}",
        d0.output()
    );
    // Back, up, but without its address: still FAULT, for the new reason.
    h0.ns.ip(&["link", "set", "late0", "name", "eth0"]);
    h0.ns.ip(&["addr", "flush", "dev", "eth0"]);
    h0.ns.ip(&["link", "set", "eth0", "up"]);
    let logged = wait_for(Duration::from_secs(5), || {
        d0.output().contains("has no IPv4 address")
    });
    assert!(
        logged.is_some(),
        "no-address reason not logged:\n{}",
        d0.output()
    );
    assert_eq!(vrrp_state(&lan, 0, &conf0).as_deref(), Some("fault"));
    // Looking again every second opens nothing that stays open.
    let before = open_fds(&d0);
    std::thread::sleep(Duration::from_secs(3));
    let after = open_fds(&d0);
    assert!(
        after <= before + 1,
        "descriptors {before} -> {after} in 3 s of waiting for an address"
    );
    assert_eq!(lan.holders(VIP), [1], "host 0 must not claim the VIP yet");
    // The address comes: host 0 starts and, priority 150 over 100, preempts.
    let addr = format!("{}/24", h0.addr);
    h0.ns.ip(&["addr", "add", &addr, "dev", "eth0"]);
    wait_holders(
        &lan,
        &[0],
        Duration::from_secs(10),
        "takeover once the interface is ready",
        &[&d0, &d1],
    );
    assert_eq!(vrrp_state(&lan, 0, &conf0).as_deref(), Some("master"));
    assert!(d0.running());
    d0.signal("TERM");
    assert!(d0.wait_exit(Duration::from_secs(10)).is_some());
    wait_holders(&lan, &[1], Duration::from_secs(5), "back to host 1", &[&d1]);
}

/// The master's interface is deleted and later created again (netplan re-creating a bond or
/// VLAN gives it a new index): the instance goes to FAULT, the backup takes over, and once
/// an interface of that name is back with its address the instance is set up on it again and
/// preempts.
#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces, faults injected"]
fn vrrp_fault_interface_deleted_and_recreated() {
    let name = "vrrp_fault_interface_deleted_and_recreated";
    require(name);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(2);
    let conf0 = dir.path().join("h0.toml");
    let mut d0 = start(&lan, dir.path(), 0, &config(150, ""));
    let d1 = start(&lan, dir.path(), 1, &config(100, ""));
    wait_holders(&lan, &[0], Duration::from_secs(10), "election", &[&d0, &d1]);
    let fds_before = open_fds(&d0);
    // Deleting eth0 deletes its veth peer, the bridge port p0, too.
    let h0 = &lan.hosts[0];
    h0.ns.ip(&["link", "del", "eth0"]);
    wait_holders(
        &lan,
        &[1],
        Duration::from_secs(6),
        "backup takes over from the host whose interface went",
        &[&d0, &d1],
    );
    let fault = wait_for(Duration::from_secs(5), || {
        vrrp_state(&lan, 0, &conf0).as_deref() == Some("fault")
    });
    assert!(fault.is_some(), "no FAULT in /status:\n{}", d0.output());
    assert!(d0.running(), "daemon exited:\n{}", d0.output());
    assert!(
        d0.output().contains("the interface was deleted"),
        "{}",
        d0.output()
    );
    // A new eth0 (a new index) on the bridge, with the host's address.
    lan.bridge.ip(&[
        "link",
        "add",
        "p0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        h0.ns.name(),
    ]);
    lan.bridge.ip(&["link", "set", "p0", "master", "br0", "up"]);
    h0.ns
        .ip(&["addr", "add", &format!("{}/24", h0.addr), "dev", "eth0"]);
    h0.ns.ip(&["link", "set", "eth0", "up"]);
    wait_holders(
        &lan,
        &[0],
        Duration::from_secs(10),
        "preemption on the re-created interface",
        &[&d0, &d1],
    );
    assert_eq!(vrrp_state(&lan, 0, &conf0).as_deref(), Some("master"));
    // The first set-up's sockets are all closed (its netlink monitor too: no event would ever
    // come for its index again).
    std::thread::sleep(Duration::from_millis(500));
    let fds_after = open_fds(&d0);
    assert!(
        fds_after <= fds_before,
        "descriptors {fds_before} before the interface went, {fds_after} after it came back"
    );
    d0.signal("TERM");
    assert!(d0.wait_exit(Duration::from_secs(10)).is_some());
    wait_holders(&lan, &[1], Duration::from_secs(5), "back to host 1", &[&d1]);
}
