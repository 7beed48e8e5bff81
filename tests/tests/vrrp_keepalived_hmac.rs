//! auth_hmac interoperation with keepalived 2.4.3 (built by tests/peers/build-keepalived-2.4.sh,
//! which .ci/run calls) on one namespace LAN: a mixed pair signing HMAC-SHA256 trailers, both
//! roles, preemption both ways, VRRPv2 and v3; and the migration modes side by side.
//!
//! Needs root, `ip netns` and the keepalived 2.4.3 build; skips with a message otherwise,
//! unless MAAS_VIP_REQUIRE_NETNS=1. The tests of this file run one at a time.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use maas_vip_tests::netns::{check_or_skip, wait_for, Lan, Proc, REQUIRE_ENV};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const TERM_BOUND: Duration = Duration::from_millis(1200);
const KEY_HEX: &str = "5ee0c0ffee00112233445566778899aabbccddeeff00112233445566778899aa";

/// keepalived 2.4.3 as tests/peers/build-keepalived-2.4.sh leaves it (or $MAAS_VIP_KEEPALIVED24).
fn keepalived24(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("MAAS_VIP_KEEPALIVED24")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/peers/keepalived-2.4.3/inst/sbin/keepalived")
        });
    if p.exists() {
        return Some(p);
    }
    let why = format!(
        "{} not built (run tests/peers/build-keepalived-2.4.sh)",
        p.display()
    );
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{test}: keepalived 2.4.3 is required ({REQUIRE_ENV}=1): {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

struct Pair {
    lan: Lan,
    dir: PathBuf,
    ka: PathBuf,
    version: u8,
}

impl Pair {
    fn maas_vip(&self, prio: u8, mode: &str) -> Proc {
        let key = self.dir.join("k1");
        std::fs::write(&key, format!("hex:{KEY_HEX}\n")).expect("key");
        let mut perm = std::fs::metadata(&key).expect("key").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
        std::fs::set_permissions(&key, perm).expect("chmod");
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

fn setup(test: &str, version: u8) -> Option<(Pair, tempfile::TempDir)> {
    if !check_or_skip(test) {
        return None;
    }
    let ka = keepalived24(test)?;
    let keep = tempfile::tempdir().expect("tempdir");
    let dir = keep.path().to_path_buf();
    Some((
        Pair {
            lan: Lan::new(2),
            dir,
            ka,
            version,
        },
        keep,
    ))
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
    let Some((pair, _keep)) = setup(&name, version) else {
        return;
    };
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
fn vrrp_keepalived_hmac_v2_both_roles() {
    both_roles(2);
}

#[test]
fn vrrp_keepalived_hmac_v3_both_roles() {
    both_roles(3);
}

/// A LAN mid-migration: maas-vip permissive (signs, takes unsigned) beside keepalived enforce,
/// then maas-vip receive-only (does not sign) beside keepalived permissive; each pair elects
/// one master. maas-vip receive-only beside keepalived enforce does not: keepalived drops our
/// unsigned adverts, which is why the sweeps go receive-only, permissive, enforce.
#[test]
fn vrrp_keepalived_hmac_migration_modes() {
    let name = "vrrp_keepalived_hmac_migration_modes";
    let Some((pair, _keep)) = setup(name, 2) else {
        return;
    };
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
