//! The rendered text read back through `config::parse` is the config the importer built:
//! every key it leaves out is one whose default is config's own.

use std::path::Path;

use super::{build, render, Built};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/import");

fn fixture(name: &str) -> String {
    let path = Path::new(FIXTURES).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Builds, renders and parses back; the blocks must be equal, key by key.
fn round_trip(keepalived: Option<&str>, haproxy: Option<&str>) -> Built {
    let k = keepalived.map(|t| (Path::new("keepalived.conf"), t));
    let h = haproxy.map(|t| (Path::new("haproxy.cfg"), t));
    let built: Built = build(k, h, &[], &|_| None).expect("builds");
    let toml = render::render(k, h, &built);
    let (c, _) = config::parse(Path::new("imported.toml"), toml.clone())
        .unwrap_or_else(|r| panic!("rejected:\n{r}\n{toml}"));
    assert_eq!(c.vrrp.len(), built.vrrps.len(), "{toml}");
    for (read, v) in c.vrrp.iter().zip(&built.vrrps) {
        assert_eq!(**read, v.cfg, "vrrp `{}`:\n{toml}", v.name());
    }
    assert_eq!(c.frontend.len(), built.frontends.len(), "{toml}");
    for (read, f) in c.frontend.iter().zip(&built.frontends) {
        assert_eq!(*read, f.cfg, "frontend `{}`:\n{toml}", f.name());
    }
    assert_eq!(c.admin.enabled, built.admin.enabled, "{toml}");
    assert_eq!(c.admin.bind, built.admin.bind, "{toml}");
    assert!(c.announce.is_empty());
    built
}

#[test]
fn every_fixture_reads_back_as_built() {
    let guide_k = fixture("guide-keepalived.conf");
    let guide_h = fixture("guide-haproxy.cfg");
    round_trip(Some(&guide_k), Some(&guide_h));
    let variants_k = fixture("variants-keepalived.conf");
    round_trip(Some(&variants_k), Some(&fixture("variants-haproxy.cfg")));
    round_trip(Some(&variants_k), None);
    for cfg in [
        "httpchk.cfg",
        "listen.cfg",
        "patroni-haproxy.cfg",
        "tls-haproxy.cfg",
        "variants-haproxy.cfg",
    ] {
        round_trip(None, Some(&fixture(cfg)));
        let both = round_trip(Some(&guide_k), Some(&fixture(cfg)));
        assert!(
            !both.frontends.is_empty() && !both.vrrps.is_empty(),
            "{cfg}"
        );
    }
}

#[test]
fn ipv6_auth_hmac_and_globals_read_back_as_built() {
    let conf = r#"
global_defs {
    vrrp_garp_master_delay 2
    vrrp_garp_master_repeat 3
    vrrp_garp_master_refresh 60
    vrrp_garp_master_refresh_repeat 2
    script_user nobody
}
vrrp_script chk_named {
    script "pidof named | grep -q ."
    interval 3
    weight -20
}
vrrp_instance v4 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 2
    nopreempt
    preempt_delay 10
    notify_master "/usr/local/bin/up.sh"
    notify "/usr/local/bin/notify.sh"
    auth_hmac {
        key 1 file:/etc/keepalived/k1
        key 2 file:${_ENV CREDENTIALS_DIRECTORY}/k2
        active_key 2
        mode permissive
        time_window 10
    }
    virtual_ipaddress {
        10.0.0.100/24
    }
    unicast_peer {
        10.0.0.2
    }
    track_script {
        chk_named
    }
}
vrrp_instance v6 {
    interface eth0
    virtual_router_id 52
    advert_int 0.5
    virtual_ipaddress {
        fe80::1/64
        2001:db8::100/64
    }
}
"#;
    let built = round_trip(Some(conf), None);
    let [v4, v6] = &built.vrrps[..] else {
        panic!("two instances: {:?}", built.notes)
    };
    assert!(v4.cfg.auth_hmac.is_some() && v4.written.has("auth_hmac.mode"));
    assert!(v4.cfg.notify.is_some() && v4.cfg.notify_master.is_some());
    assert_eq!(v4.cfg.track_script.len(), 1);
    assert!(v4.script_user.is_some() && v4.cfg.script_user.is_none());
    assert!(v6.cfg.is_ipv6());
}

#[test]
fn output_that_check_refuses_says_so_in_a_note() {
    // A link-local bind without its interface: carried over as written, refused by
    // `maas-vip check`, and the note says so.
    let cfg = "frontend f\n    mode tcp\n    bind [fe80::1]:80\n    default_backend b\n\
               backend b\n    server s1 10.0.0.1:5240\n";
    let out = super::import(None, Some((Path::new("haproxy.cfg"), cfg))).expect("imports");
    assert!(
        out.notes
            .iter()
            .any(|n| n.starts_with("`maas-vip check` refuses the result: ")
                && n.contains("link-local")),
        "{}",
        out.toml
    );
    assert!(out
        .toml
        .contains("#   `maas-vip check` refuses the result: "));
}
