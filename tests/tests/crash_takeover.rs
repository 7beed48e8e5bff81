//! A kill -9 of the VRRP master, seen by a client, without and with `maas-vip release-vips`
//! (what the unit's `ExecStopPost=` runs) right after the kill.
//!
//! Without it the dead master's kernel keeps the VIP and resets every connection until the
//! new master's gratuitous ARP reaches the client: refused connections. With it the VIP leaves
//! the dead host at once, the client's SYNs go unanswered and are retransmitted, and one
//! reaches the new master: delayed requests instead. Also: it removes only the addresses
//! maas-vip added.
//!
//! Needs root, `ip netns` and curl (the client), so the tests are `#[ignore]`d: run them as
//! root with `--include-ignored` (see the README); they fail, saying why, where they cannot
//! run.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use maas_vip_tests::maas_vip_bin;
use maas_vip_tests::netns::{require, wait_for, Host, Lan, Netns, Proc};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
/// A request every PACE, each in its own curl.
const PACE: Duration = Duration::from_millis(100);
/// Slower than this is "delayed" (an answer takes a few ms here).
const DELAYED: Duration = Duration::from_millis(500);

fn config(host: &Host, priority: u8) -> String {
    format!(
        r#"shutdown_grace = "1s"
[[vrrp]]
name = "maas_region"
interface = "eth0"
virtual_router_id = 51
priority = {priority}
advert_interval = "1s"
virtual_ipaddresses = ["{VIP}/24"]

[[frontend]]
name = "maas"
bind = ["{VIP}:80"]
mode = "http"
check = {{ kind = "http", path = "/", interval = "1s", timeout = "1s" }}

[[frontend.server]]
name = "r0"
address = "10.99.0.11:5240"

[[frontend.server]]
name = "r1"
address = "10.99.0.12:5240"

[admin]
enabled = false
# {addr}
"#,
        addr = host.addr
    )
}

/// `maas-vip release-vips` in `ns` with the unit's capabilities only (root, bounding and
/// ambient sets of CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE, no new privileges).
fn release_vips(ns: &Netns, conf: &Path) -> Output {
    let caps = "-all,+net_admin,+net_raw,+net_bind_service";
    ns.command("setpriv")
        .args([
            "--no-new-privs",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            &format!("--bounding-set={caps}"),
            "--",
        ])
        .arg(maas_vip_bin())
        .args(["release-vips", "-c"])
        .arg(conf)
        .env("SERVICE_RESULT", "signal")
        .env("EXIT_CODE", "killed")
        .env("EXIT_STATUS", "KILL")
        .output()
        .expect("run release-vips")
}

/// One client request: curl in the client's namespace.
struct Request {
    sent: Instant,
    child: Child,
}

/// How a request ended.
#[derive(Debug, Clone)]
struct Done {
    sent: Instant,
    took: Duration,
    /// HTTP status, 0 if none.
    status: u16,
    /// curl's exit code (7: could not connect, e.g. refused; 28: timed out).
    curl: i32,
    /// The address of the proxy that forwarded it (the stand-in region says).
    via: String,
}

fn curl(client: &Netns) -> Request {
    let child = client
        .command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--connect-timeout",
            "10",
            "--max-time",
            "12",
            "-w",
            "%{http_code} %header{x-demo-proxy}",
            &format!("http://{VIP}/"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl");
    Request {
        sent: Instant::now(),
        child,
    }
}

fn finish(r: Request) -> Done {
    let out = r.child.wait_with_output().expect("curl ends");
    let took = r.sent.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = text.split_whitespace();
    Done {
        sent: r.sent,
        took,
        status: w.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        curl: out.status.code().unwrap_or(-1),
        via: w.next().unwrap_or("").to_string(),
    }
}

/// What the client saw of one kill -9.
#[derive(Debug)]
struct Takeover {
    /// From the kill to the first answer through the new master.
    takeover: Duration,
    /// Requests sent from the kill until that answer.
    sent: usize,
    refused: usize,
    failed: usize,
    delayed: usize,
    slowest: Duration,
}

/// Requests every PACE from `client` while `kill` runs (at the start) until 1 s after the first
/// answer through `new_master`; then waits for the rest.
fn watch_kill(client: &Netns, new_master: Ipv4Addr, kill: impl FnOnce()) -> Takeover {
    let killed = Instant::now();
    kill();
    let mut pending: Vec<Request> = Vec::new();
    let mut done: Vec<Done> = Vec::new();
    let mut switched: Option<Instant> = None;
    let mut next = Instant::now();
    while switched.is_none_or(|t| t.elapsed() < Duration::from_secs(1))
        && killed.elapsed() < Duration::from_secs(20)
    {
        if Instant::now() >= next {
            pending.push(curl(client));
            next += PACE;
        }
        let mut i = 0;
        while i < pending.len() {
            if matches!(pending[i].child.try_wait(), Ok(Some(_))) {
                let d = finish(pending.swap_remove(i));
                if switched.is_none() && d.status == 200 && d.via == new_master.to_string() {
                    switched = Some(d.sent + d.took);
                }
                done.push(d);
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done.extend(pending.into_iter().map(finish));
    let switched = switched.expect("an answer through the new master within 20 s");
    let during: Vec<&Done> = done.iter().filter(|d| d.sent < switched).collect();
    let failed: Vec<&&Done> = during.iter().filter(|d| d.status != 200).collect();
    Takeover {
        takeover: switched - killed,
        sent: during.len(),
        refused: failed.iter().filter(|d| d.curl == 7).count(),
        failed: failed.len(),
        delayed: during
            .iter()
            .filter(|d| d.status == 200 && d.took > DELAYED)
            .count(),
        slowest: during
            .iter()
            .filter(|d| d.status == 200)
            .map(|d| d.took)
            .max()
            .unwrap_or_default(),
    }
}

fn report(what: &str, t: &Takeover) {
    eprintln!(
        "{what}: takeover {:.2} s; of {} requests sent meanwhile {} failed ({} refused), {} \
         delayed (slowest {:.2} s)",
        t.takeover.as_secs_f64(),
        t.sent,
        t.failed,
        t.refused,
        t.delayed,
        t.slowest.as_secs_f64()
    );
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn a_kill_9_costs_refused_connections_unless_the_vip_is_released() {
    require("a_kill_9_costs_refused_connections_unless_the_vip_is_released");
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(3);
    let client = &lan.hosts[2].ns;
    let bin = maas_vip_bin();
    let _regions: Vec<Proc> = (0..2)
        .map(|i| {
            Proc::spawn(
                &lan.hosts[i].ns,
                &bin,
                &[
                    "demo",
                    "region",
                    "--name",
                    &format!("r{i}"),
                    "--bind",
                    "0.0.0.0:5240",
                ],
                &[],
                dir.path().join(format!("region{i}.log")),
            )
        })
        .collect();
    let conf0 = config(&lan.hosts[0], 150);
    let mut d0 = lan.start_maas_vip(dir.path(), 0, &conf0);
    let d1 = lan.start_maas_vip(dir.path(), 1, &config(&lan.hosts[1], 100));
    lan.wait_holders(VIP, &[0], Duration::from_secs(15), "election", &[&d0, &d1]);
    let serves = |host: Ipv4Addr| {
        wait_for(Duration::from_secs(10), || {
            let d = finish(curl(client));
            d.status == 200 && d.via == host.to_string()
        })
    };
    assert!(serves(lan.hosts[0].addr).is_some(), "h0 serves the VIP");

    // Before: nothing removes the VIP of the dead master.
    let before = watch_kill(client, lan.hosts[1].addr, || d0.kill9());
    report("kill -9 alone", &before);
    assert!(
        lan.hosts[0].has(VIP),
        "the dead master's kernel keeps the VIP"
    );

    // Back to h0 as master (preemption), then the same kill with release-vips after it.
    d0 = lan.start_maas_vip(dir.path(), 0, &conf0);
    lan.wait_holders(
        VIP,
        &[0],
        Duration::from_secs(15),
        "preemption",
        &[&d0, &d1],
    );
    assert!(
        serves(lan.hosts[0].addr).is_some(),
        "h0 serves the VIP again"
    );
    // An address of the administrator's own on the same interface.
    lan.hosts[0]
        .ns
        .ip(&["addr", "add", "10.99.0.201/24", "dev", "eth0"]);
    let conf_path = dir.path().join("h0.toml");
    let mut released = None;
    let after = watch_kill(client, lan.hosts[1].addr, || {
        d0.kill9();
        released = Some(release_vips(&lan.hosts[0].ns, &conf_path));
    });
    report("kill -9, then release-vips", &after);
    let out = released.expect("release-vips ran");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "release-vips: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("removed 10.99.0.100/24 from eth0 (marked as maas-vip's) (maas-vip ended: signal: killed KILL)"),
        "{text}"
    );
    let left = lan.hosts[0].addrs();
    assert_eq!(
        left,
        ["10.99.0.11/24", "10.99.0.201/24"],
        "only the VIP went"
    );

    assert!(
        before.refused >= 5,
        "without release: refused connections: {before:?}"
    );
    assert!(
        after.failed <= 1,
        "with release: at most a request sent between the kill and the release fails: {after:?}"
    );
    assert!(
        after.delayed >= 5,
        "with release: delayed instead: {after:?}"
    );
}

#[test]
#[ignore = "needs root and network namespaces: VRRP hosts on a bridge of namespaces"]
fn release_vips_leaves_addresses_maas_vip_did_not_add() {
    require("release_vips_leaves_addresses_maas_vip_did_not_add");
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new(1);
    let h = &lan.hosts[0];
    let conf = config(h, 150).replace("priority = 150", "priority = 150\nstate = \"MASTER\"");
    let mut d = lan.start_maas_vip(dir.path(), 0, &conf);
    lan.wait_holders(VIP, &[0], Duration::from_secs(10), "claim", &[&d]);
    // The same VIP configured statically as well (another prefix), and another address.
    h.ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"]);
    h.ns.ip(&["addr", "add", "10.99.0.201/24", "dev", "eth0"]);
    d.kill9();
    let out = release_vips(&h.ns, &dir.path().join("h0.toml"));
    assert!(out.status.success(), "{out:?}");
    let mut left = h.addrs();
    left.sort();
    assert_eq!(
        left,
        ["10.99.0.100/32", "10.99.0.11/24", "10.99.0.201/24"],
        "the VIP maas-vip added went; the administrator's copy and addresses stayed"
    );
    // Nothing more to do: still success.
    let again = release_vips(&h.ns, &dir.path().join("h0.toml"));
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("no virtual address left to remove"),
        "{again:?}"
    );
}
