//! auth_hmac interoperation with keepalived 2.4.3 (built by tests/peers/build-keepalived-2.4.sh,
//! which .ci/run calls) on one namespace LAN: a mixed pair signing HMAC-SHA256 trailers, both
//! roles, preemption both ways, VRRPv2 and v3; and the migration modes side by side.
//!
//! Needs root, `ip netns` and the keepalived 2.4.3 build, so the tests are `#[ignore]`d: run
//! them as root with `--include-ignored` (see the README); they fail, saying why, where they
//! cannot run.
//! The tests of this file run one at a time.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use maas_vip_tests::netns::{keepalived24, require, wait_for, Lan, Proc};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const TERM_BOUND: Duration = Duration::from_millis(1200);
const KEY_HEX: &str = "5ee0c0ffee00112233445566778899aabbccddeeff00112233445566778899aa";
/// The keys a rotation moves to.
const KEY2_HEX: &str = "2222222222222222c0ffee00112233445566778899aabbccddeeff0011223344";
const KEY3_HEX: &str = "33333333333333333333c0ffee00112233445566778899aabbccddeeff001122";

/// A key file as keepalived and maas-vip read it: `hex:` and the digits, mode 0600.
fn write_key(path: &Path, hex: &str) {
    std::fs::write(path, format!("hex:{hex}\n")).expect("key");
    let mut perm = std::fs::metadata(path).expect("key").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    std::fs::set_permissions(path, perm).expect("chmod");
}

struct Pair {
    lan: Lan,
    dir: PathBuf,
    ka: PathBuf,
    version: u8,
}

impl Pair {
    fn maas_vip(&self, prio: u8, mode: &str) -> Proc {
        self.maas_vip_with(prio, mode, "")
    }

    /// maas-vip on h0; `extra` goes in its `[vrrp.auth_hmac]` table.
    fn maas_vip_with(&self, prio: u8, mode: &str, extra: &str) -> Proc {
        let key = self.dir.join("k1");
        write_key(&key, KEY_HEX);
        let config = format!(
            r#"
[[vrrp]]
name = "maas_region"
interface = "eth0"
virtual_router_id = 51
priority = {prio}
advert_interval = "1s"
version = {version}
virtual_ipaddresses = ["{VIP}/24"]

[vrrp.auth_hmac]
keys = [{{ id = 1, key_file = "{key}" }}]
mode = "{mode}"
{extra}
"#,
            version = self.version,
            key = key.display(),
        );
        self.lan.start_maas_vip(&self.dir, 0, &config)
    }

    fn keepalived(&self, prio: u8, mode: &str) -> Proc {
        let config = format!(
            r#"
global_defs {{
    router_id ka_h1
    vrrp_version {version}
}}
vrrp_instance maas_region {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {prio}
    advert_int 1
    auth_hmac {{
        key 1 hex:{KEY_HEX}
        active_key 1
        mode {mode}
    }}
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
"#,
            version = self.version
        );
        self.lan
            .start_keepalived(&self.dir, 1, &self.ka, &[], &config)
    }

    fn holders(&self, want: &[usize], limit: Duration, what: &str, logs: &[&Proc]) -> Duration {
        self.lan.wait_holders(VIP, want, limit, what, logs)
    }
}

fn setup(test: &str, version: u8) -> (Pair, tempfile::TempDir) {
    setup_n(test, version, 2)
}

fn setup_n(test: &str, version: u8, hosts: usize) -> (Pair, tempfile::TempDir) {
    require(test);
    let ka = keepalived24(test);
    let keep = tempfile::tempdir().expect("tempdir");
    let dir = keep.path().to_path_buf();
    (
        Pair {
            lan: Lan::new(hosts),
            dir,
            ka,
            version,
        },
        keep,
    )
}

/// keepalived's complaints about trailers (vrrp.c `vrrp_auth_ext_verify`).
fn assert_keepalived_content(ka: &Proc) {
    let out = ka.output();
    for bad in [
        "authentication trailer",
        "authentication HMAC",
        "authentication key id",
        "too long",
    ] {
        assert!(!out.contains(bad), "keepalived says `{bad}`:\n{out}");
    }
}

fn both_roles(version: u8) {
    let name = format!("vrrp_keepalived_hmac_v{version}_both_roles");
    let (pair, _keep) = setup(&name, version);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // keepalived alone, then maas-vip at 150 preempts it: keepalived verified our trailer.
    let ka = pair.keepalived(100, "enforce");
    pair.holders(&[1], Duration::from_secs(10), "keepalived alone", &[&ka]);
    let mv = pair.maas_vip(150, "enforce");
    pair.holders(
        &[0],
        Duration::from_secs(10),
        "maas-vip preempts keepalived",
        &[&mv, &ka],
    );
    pair.lan
        .assert_holders_stable(VIP, &[0], Duration::from_secs(3), "maas-vip master");
    assert!(
        ka.output()
            .contains("received advert from 10.99.0.11 with higher priority 150"),
        "{}",
        ka.output()
    );
    assert_keepalived_content(&ka);
    drop(ka);
    wait_for(Duration::from_secs(5), || {
        pair.lan.hosts[1].ns.pids().is_empty()
    });

    // keepalived back at 200 preempts maas-vip: we verified its trailer.
    let mut ka = pair.keepalived(200, "enforce");
    pair.holders(
        &[1],
        Duration::from_secs(10),
        "keepalived preempts maas-vip",
        &[&mv, &ka],
    );
    assert!(
        mv.output()
            .contains("reason=higher priority advert from 10.99.0.12 (200)"),
        "{}",
        mv.output()
    );
    // keepalived stops: its signed priority-0 advert hands over within the skew time.
    let t0 = Instant::now();
    ka.signal("TERM");
    pair.holders(
        &[0],
        Duration::from_secs(5),
        "maas-vip after keepalived's priority 0",
        &[&mv, &ka],
    );
    let term = t0.elapsed();
    ka.wait_exit(Duration::from_secs(5));
    assert_keepalived_content(&ka);
    assert!(!mv.output().contains("dropped advert"), "{}", mv.output());
    eprintln!("HMAC v{version}: keepalived SIGTERM -> maas-vip master after {term:?}");
    assert!(term <= TERM_BOUND, "{term:?}");
}

#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived 2.4.3 on a bridge of namespaces"]
fn vrrp_keepalived_hmac_v2_both_roles() {
    both_roles(2);
}

#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived 2.4.3 on a bridge of namespaces"]
fn vrrp_keepalived_hmac_v3_both_roles() {
    both_roles(3);
}

/// A LAN mid-migration: maas-vip permissive (signs, takes unsigned) beside keepalived enforce,
/// then maas-vip receive-only (does not sign) beside keepalived permissive; each pair elects
/// one master. maas-vip receive-only beside keepalived enforce does not: keepalived drops our
/// unsigned adverts, which is why the sweeps go receive-only, permissive, enforce.
#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived 2.4.3 on a bridge of namespaces"]
fn vrrp_keepalived_hmac_migration_modes() {
    let name = "vrrp_keepalived_hmac_migration_modes";
    let (pair, _keep) = setup(name, 2);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (mv_mode, ka_mode, agree) in [
        ("permissive", "enforce", true),
        ("receive-only", "permissive", true),
        ("receive-only", "enforce", false),
    ] {
        let ka = pair.keepalived(100, ka_mode);
        pair.holders(&[1], Duration::from_secs(10), "keepalived alone", &[&ka]);
        let mut mv = pair.maas_vip(150, mv_mode);
        let what = format!("maas-vip {mv_mode} beside keepalived {ka_mode}");
        if agree {
            pair.holders(&[0], Duration::from_secs(10), &what, &[&mv, &ka]);
            pair.lan
                .assert_holders_stable(VIP, &[0], Duration::from_secs(2), &what);
            assert_keepalived_content(&ka);
        } else {
            // keepalived hears no valid master and keeps the VIP; maas-vip, hearing a signed
            // lower-priority master, preempts: both hold it.
            pair.holders(&[0, 1], Duration::from_secs(10), &what, &[&mv, &ka]);
            assert!(
                wait_for(Duration::from_secs(5), || ka
                    .output()
                    .contains("missing authentication trailer"))
                .is_some(),
                "{}",
                ka.output()
            );
        }
        mv.signal("TERM");
        mv.wait_exit(Duration::from_secs(5));
        drop(ka);
        wait_for(Duration::from_secs(5), || {
            pair.lan.hosts[0].ns.pids().is_empty() && pair.lan.hosts[1].ns.pids().is_empty()
        });
        // Whatever the last master left, for the next round to start alike.
        for h in &pair.lan.hosts {
            if h.has(VIP) {
                h.ns.ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
            }
        }
    }
}

/// Set (to a file of hex IPv4 packets, one a line) in the environment of the attacker.
const ATTACK_ENV: &str = "MAAS_VIP_HMAC_ATTACK";
const ATTACKER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 13);

/// The attacker: this test binary run again in h2's namespace with [`ATTACK_ENV`] set; sends
/// each packet of the file as it is (IP_HDRINCL: the source is ours to forge).
#[test]
#[ignore = "helper, not a test: run inside a namespace by vrrp_keepalived_hmac_forged_and_replayed_adverts (.ci/run skips `helper_`)"]
fn helper_hmac_attacker() {
    use socket2::{Domain, Protocol, Socket, Type};
    let Ok(file) = std::env::var(ATTACK_ENV) else {
        return;
    };
    let text = std::fs::read_to_string(file).expect("attack file");
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).expect("raw socket");
    s.set_header_included_v4(true).expect("IP_HDRINCL");
    s.bind_device(Some(b"eth0")).expect("SO_BINDTODEVICE");
    s.set_multicast_if_v4(&ATTACKER).expect("IP_MULTICAST_IF");
    let dst = socket2::SockAddr::from(std::net::SocketAddrV4::new(vrrp::packet::MULTICAST_V4, 0));
    let mut n = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let b: Vec<u8> = (0..line.len() / 2)
            .map(|i| u8::from_str_radix(&line[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        s.send_to(&b, &dst).expect("send");
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("HMAC_ATTACK_SENT {n}");
}

fn attack(pair: &Pair, packets: &[Vec<u8>]) {
    let file = pair.dir.join("attack.hex");
    let text: String = packets
        .iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect();
    std::fs::write(&file, text).expect("attack file");
    let exe = std::env::current_exe().expect("test binary");
    let out = pair.lan.hosts[2]
        .ns
        .command(&exe)
        .args([
            "helper_hmac_attacker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ATTACK_ENV, &file)
        .output()
        .expect("attacker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("HMAC_ATTACK_SENT {}", packets.len())),
        "attacker: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// maas-vip's `/status` counters of dropped adverts, by reason.
fn rejected(pair: &Pair, reason: &str) -> u64 {
    let v = pair.lan.hosts[0]
        .status_json(&pair.dir.join("h0.toml"))
        .expect("maas-vip status --json");
    v["vrrp"][0]["rejected"][reason].as_u64().unwrap_or(0)
}

/// The value of the sample `name` (of the one instance), with `reason="..."` if given.
fn metric(text: &str, name: &str, reason: Option<&str>) -> Option<u64> {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .find(|l| reason.is_none_or(|r| l.contains(&format!("reason=\"{r}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An advert of VRID 51 at priority 254 from the attacker, as an IPv4 packet; with `trailer`,
/// followed by a trailer of key 1 with a fresh timestamp and a made-up MAC.
fn forged(trailer: bool) -> Vec<u8> {
    use std::net::IpAddr;
    use vrrp::packet::{ipv4_frame, Auth, IpPair, Repr, Version, MULTICAST_V4};
    let repr = Repr {
        version: Version::V2,
        vrid: 51,
        priority: 254,
        auth: Auth::None,
        adver_int: 1,
        addresses: vec![IpAddr::V4(VIP)],
    };
    let mut msg = repr.to_bytes(&IpPair {
        src: IpAddr::V4(ATTACKER),
        dst: IpAddr::V4(MULTICAST_V4),
    });
    if trailer {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as u32;
        msg.extend_from_slice(&[1, 1, 0, 0]);
        msg.extend_from_slice(&secs.to_be_bytes());
        msg.extend_from_slice(&[0; 4]);
        msg.extend_from_slice(&[0x5a; 16]);
    }
    ipv4_frame(ATTACKER, MULTICAST_V4, 7, &msg)
}

/// Forged adverts at priority 254 without a MAC and with a bad one, and keepalived's own
/// captured adverts at priority 200 replayed at once and again after maas-vip restarted (its
/// state file carries the marks over): none moves the VIP off maas-vip (150), each is counted.
#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived 2.4.3 on a bridge of namespaces"]
fn vrrp_keepalived_hmac_forged_and_replayed_adverts() {
    let name = "vrrp_keepalived_hmac_forged_and_replayed_adverts";
    let (pair, _keep) = setup_n(name, 2, 3);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let extra = format!(
        "time_window = \"60s\"\nstate_file = \"{}\"",
        pair.dir.join("h0.hmac").display()
    );
    // keepalived (200) is master, maas-vip (150) its backup; h2 records keepalived's adverts.
    let mut ka = pair.keepalived(200, "enforce");
    pair.holders(&[1], Duration::from_secs(10), "keepalived alone", &[&ka]);
    let (mut cap, pcap) = pair.lan.capture(2, &pair.dir, "ka");
    let mut mv = pair.maas_vip_with(150, "enforce", &extra);
    assert!(
        wait_for(Duration::from_secs(10), || mv
            .output()
            .contains("to=BACKUP"))
        .is_some(),
        "{}",
        mv.output()
    );
    std::thread::sleep(Duration::from_millis(2500));
    cap.signal("TERM");
    cap.wait_exit(Duration::from_secs(5));
    let captured: Vec<Vec<u8>> = maas_vip_tests::netns::pcap_frames(&pcap)
        .into_iter()
        .filter(|f| f.len() > 34 && f[12..14] == [0x08, 0x00])
        .map(|f| f[14..].to_vec())
        .filter(|ip| ip[9] == 112 && ip[12..16] == [10, 99, 0, 12] && ip[22] == 200)
        .collect();
    assert!(captured.len() >= 2, "captured {} adverts", captured.len());
    // keepalived stops: maas-vip takes over.
    ka.signal("TERM");
    pair.holders(&[0], Duration::from_secs(5), "maas-vip master", &[&mv, &ka]);
    ka.wait_exit(Duration::from_secs(5));
    drop(ka);

    // At once: no MAC, a bad MAC, replays.
    let mut packets = vec![forged(false), forged(false), forged(true), forged(true)];
    packets.extend(captured.iter().cloned());
    attack(&pair, &packets);
    pair.lan
        .assert_holders_stable(VIP, &[0], Duration::from_secs(4), "VIP under attack");
    assert_eq!(rejected(&pair, "hmac_missing"), 2);
    assert_eq!(rejected(&pair, "hmac_bad"), 2);
    assert_eq!(rejected(&pair, "hmac_replay"), captured.len() as u64);
    // The same counts in /metrics; /status shows the settings, no key.
    let metrics = pair.lan.hosts[0].admin_get("/metrics");
    for (reason, n) in [
        ("hmac_missing", 2),
        ("hmac_bad", 2),
        ("hmac_replay", captured.len() as u64),
    ] {
        assert_eq!(
            metric(
                &metrics,
                "maas_vip_vrrp_packets_rejected_total",
                Some(reason)
            ),
            Some(n),
            "{reason}:\n{metrics}"
        );
    }
    assert_eq!(
        metric(&metrics, "maas_vip_vrrp_hmac_active_key", None),
        Some(1),
        "{metrics}"
    );
    let status = pair.lan.hosts[0]
        .status_json(&pair.dir.join("h0.toml"))
        .expect("maas-vip status --json");
    assert_eq!(
        status["vrrp"][0]["auth_hmac"],
        serde_json::json!({
            "mode": "enforce", "active_key": 1, "key_ids": [1], "anti_replay": "time",
            "time_window_secs": 60, "unsigned_accepted": 0, "clock_skew_high": 0
        })
    );
    assert!(!status.to_string().contains(&KEY_HEX[..16]), "{status}");

    // maas-vip restarts (the state file is written at stop), becomes master again alone, and
    // the same replays are refused, though younger than its window.
    mv.signal("TERM");
    assert_eq!(
        mv.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    let state = std::fs::read_to_string(pair.dir.join("h0.hmac")).expect("state file");
    assert!(state.contains("mark 10.99.0.12 "), "{state}");
    let mv = pair.maas_vip_with(150, "enforce", &extra);
    pair.holders(
        &[0],
        Duration::from_secs(10),
        "maas-vip master again",
        &[&mv],
    );
    attack(&pair, &captured);
    pair.lan.assert_holders_stable(
        VIP,
        &[0],
        Duration::from_secs(4),
        "VIP under replay after a restart",
    );
    assert_eq!(rejected(&pair, "hmac_replay"), captured.len() as u64);
    assert!(
        mv.output().contains("auth_hmac state taken back"),
        "{}",
        mv.output()
    );
    eprintln!(
        "HMAC attack: {} replays refused before and after the restart, 2 unsigned, 2 bad MACs",
        captured.len()
    );
}

/// Key rotation on reload as keepalived allows it, maas-vip (150, master) beside keepalived
/// 2.4.3 (100, backup), both reading the same key files: key 2 is added everywhere, becomes
/// the signing key everywhere, key 1 is removed everywhere, then key 2's value is changed in
/// its file; each step is a SIGHUP of both. The VIP never moves, neither side changes state,
/// keepalived never complains of a trailer. Last, keepalived raised to 200 takes over: maas-vip
/// verifies its adverts under the rotated key and dropped none.
#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived 2.4.3 on a bridge of namespaces"]
fn vrrp_keepalived_hmac_key_rotation_on_reload() {
    let name = "vrrp_keepalived_hmac_key_rotation_on_reload";
    let (pair, _keep) = setup(name, 2);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = &pair.dir;
    let key_file = |id: u8, hex: &str| {
        let path = dir.join(format!("rot{id}.key"));
        write_key(&path, hex);
        path
    };
    let k1 = key_file(1, KEY_HEX);
    let k2 = dir.join("rot2.key");
    let mv_conf = |keys: &[u8], active: u8| {
        let keys: Vec<String> = keys
            .iter()
            .map(|id| {
                format!(
                    "{{ id = {id}, key_file = \"{}\" }}",
                    dir.join(format!("rot{id}.key")).display()
                )
            })
            .collect();
        format!(
            r#"
[[vrrp]]
name = "maas_region"
interface = "eth0"
virtual_router_id = 51
priority = 150
advert_interval = "1s"
virtual_ipaddresses = ["{VIP}/24"]

[vrrp.auth_hmac]
keys = [{}]
active_key = {active}
"#,
            keys.join(", ")
        )
    };
    let ka_conf = |prio: u8, keys: &[u8], active: u8| {
        let keys: String = keys
            .iter()
            .map(|id| {
                format!(
                    "        key {id} file:{}\n",
                    dir.join(format!("rot{id}.key")).display()
                )
            })
            .collect();
        format!(
            r#"
global_defs {{
    router_id ka_h1
}}
vrrp_instance maas_region {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {prio}
    advert_int 1
    auth_hmac {{
{keys}        active_key {active}
    }}
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
"#
        )
    };
    let mv = pair.lan.start_maas_vip(dir, 0, &mv_conf(&[1], 1));
    pair.holders(&[0], Duration::from_secs(10), "maas-vip alone", &[&mv]);
    let ka = pair
        .lan
        .start_keepalived(dir, 1, &pair.ka, &[], &ka_conf(100, &[1], 1));
    assert!(
        wait_for(Duration::from_secs(10), || ka
            .output()
            .contains("Entering BACKUP STATE"))
        .is_some(),
        "{}",
        ka.output()
    );
    pair.lan
        .assert_holders_stable(VIP, &[0], Duration::from_secs(3), "before rotation");
    let transitions = |p: &Proc| p.output().matches("to=").count();
    let mv_states = transitions(&mv);

    // Both configs rewritten, both reloaded (keepalived first: it is the one that verifies),
    // then the VIP watched for longer than keepalived's master-down interval (3.6 s).
    let reload = |what: &str, mv_text: &str, ka_text: &str| {
        std::fs::write(dir.join("keepalived-h1.conf"), ka_text).expect("ka config");
        std::fs::write(dir.join("h0.toml"), mv_text).expect("mv config");
        let (ka_before, mv_before) = (
            ka.output().matches("Reloading").count(),
            mv.output().matches("reload applied").count(),
        );
        ka.signal("HUP");
        mv.signal("HUP");
        assert!(
            wait_for(Duration::from_secs(10), || {
                ka.output().matches("Reloading").count() > ka_before
                    && mv.output().matches("reload applied").count() > mv_before
            })
            .is_some(),
            "{what}: reloads not seen\n{}\n{}",
            mv.output(),
            ka.output()
        );
        pair.lan
            .assert_holders_stable(VIP, &[0], Duration::from_secs(5), what);
        assert_keepalived_content(&ka);
        assert!(
            !ka.output().contains("Entering MASTER STATE"),
            "{what}: {}",
            ka.output()
        );
        assert_eq!(transitions(&mv), mv_states, "{what}: {}", mv.output());
        assert!(
            !mv.output().contains("reload rejected"),
            "{what}: {}",
            mv.output()
        );
    };
    key_file(2, KEY2_HEX);
    reload(
        "key 2 added",
        &mv_conf(&[1, 2], 1),
        &ka_conf(100, &[1, 2], 1),
    );
    reload(
        "key 2 signs",
        &mv_conf(&[1, 2], 2),
        &ka_conf(100, &[1, 2], 2),
    );
    std::fs::remove_file(&k1).expect("rm key 1");
    reload("key 1 removed", &mv_conf(&[2], 2), &ka_conf(100, &[2], 2));
    // The value of key 2 changes in its file; the configs stay as they are.
    key_file(2, KEY3_HEX);
    reload(
        "key 2's value changed in its file",
        &mv_conf(&[2], 2),
        &ka_conf(100, &[2], 2),
    );
    assert!(
        mv.output()
            .contains("auth_hmac keys changed in their files: taken in place"),
        "{}",
        mv.output()
    );

    // keepalived at 200 preempts: maas-vip accepts its adverts signed with the new value.
    std::fs::write(dir.join("keepalived-h1.conf"), ka_conf(200, &[2], 2)).expect("ka config");
    ka.signal("HUP");
    pair.holders(
        &[1],
        Duration::from_secs(10),
        "keepalived at 200 preempts",
        &[&mv, &ka],
    );
    assert!(!mv.output().contains("dropped advert"), "{}", mv.output());
    for reason in ["hmac_bad", "hmac_unknown_key", "hmac_missing"] {
        assert_eq!(rejected(&pair, reason), 0, "{reason}");
    }
    assert!(k2.exists());
    eprintln!("HMAC rotation: 4 reloads of both peers, no VIP move, no state change");
}

/// auth_hmac over IPv6 (VRRPv3, RFC 9568) beside keepalived 2.4.3: the pseudo-header carries
/// the 16-byte link-local source. keepalived alone, then maas-vip (150) preempts it
/// (keepalived verified our trailers), keepalived restarted at 200 preempts maas-vip (we
/// verified its), and its SIGTERM hands back. Nobody drops an advert.
#[test]
#[ignore = "needs root and network namespaces: maas-vip beside keepalived 2.4.3 on a bridge of namespaces"]
fn vrrp_keepalived_hmac_ipv6() {
    use std::net::Ipv6Addr;
    let name = "vrrp_keepalived_hmac_ipv6";
    let (pair, _keep) = setup(name, 3);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const VIP_LL: &str = "fe80::51";
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 0x100);
    // Adverts go from the link-local address once duplicate address detection is done.
    pair.lan.wait_link_local(Duration::from_secs(10));
    let key = pair.dir.join("k6");
    write_key(&key, KEY_HEX);
    let mv_conf = format!(
        r#"
[[vrrp]]
name = "region6"
interface = "eth0"
virtual_router_id = 51
priority = 150
version = 3
advert_interval = "1s"
virtual_ipaddresses = ["{VIP_LL}/64", "{VIP6}/64"]

[vrrp.auth_hmac]
keys = [{{ id = 1, key_file = "{}" }}]
"#,
        key.display()
    );
    let ka = |prio: u8| {
        let conf = format!(
            r#"
global_defs {{
    router_id ka_h1
}}
vrrp_instance region6 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {prio}
    advert_int 1
    auth_hmac {{
        key 1 file:{}
        active_key 1
    }}
    virtual_ipaddress {{
        {VIP_LL}/64
        {VIP6}/64
    }}
}}
"#,
            key.display()
        );
        pair.lan
            .start_keepalived(&pair.dir, 1, &pair.ka, &[], &conf)
    };
    let holders = |want: &[usize], what: &str, logs: &[&Proc]| {
        pair.lan
            .wait_holders(VIP6, want, Duration::from_secs(10), what, logs)
    };
    let k = ka(100);
    holders(&[1], "keepalived alone", &[&k]);
    let mv = pair.lan.start_maas_vip(&pair.dir, 0, &mv_conf);
    holders(&[0], "maas-vip preempts keepalived over IPv6", &[&mv, &k]);
    pair.lan
        .assert_holders_stable(VIP6, &[0], Duration::from_secs(3), "maas-vip master (v6)");
    assert_keepalived_content(&k);
    drop(k);
    wait_for(Duration::from_secs(5), || {
        pair.lan.hosts[1].ns.pids().is_empty()
    });

    let mut k = ka(200);
    holders(
        &[1],
        "keepalived at 200 preempts maas-vip over IPv6",
        &[&mv, &k],
    );
    pair.lan
        .assert_holders_stable(VIP6, &[1], Duration::from_secs(3), "keepalived master (v6)");
    k.signal("TERM");
    holders(&[0], "maas-vip after keepalived's SIGTERM (v6)", &[&mv, &k]);
    k.wait_exit(Duration::from_secs(5));
    assert_keepalived_content(&k);
    assert!(!mv.output().contains("dropped advert"), "{}", mv.output());
    let status = pair.lan.hosts[0]
        .status_json(&pair.dir.join("h0.toml"))
        .expect("maas-vip status --json");
    let rejected = &status["vrrp"][0]["rejected"];
    for reason in [
        "hmac_bad",
        "hmac_missing",
        "hmac_unknown_key",
        "hmac_stale",
        "hmac_replay",
    ] {
        assert_eq!(rejected[reason], 0, "{reason}: {status}");
    }
    assert_eq!(
        status["vrrp"][0]["auth_hmac"]["mode"], "enforce",
        "{status}"
    );
    eprintln!("HMAC over IPv6: both roles beside keepalived 2.4.3, no advert dropped");
}
