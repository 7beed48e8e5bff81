//! `import` of keepalived's IPv6 instances and VRRPv3 keywords, and of HAProxy's IPv6 binds
//! (issue 16, point 6). Every output goes through `maas-vip check`'s own parser.

use super::*;
use config::{parse, Config};
use vrrp::packet::Version;

fn imp(k: Option<&str>, h: Option<&str>) -> Imported {
    import(
        k.map(|t| (Path::new("keepalived.conf"), t)),
        h.map(|t| (Path::new("haproxy.cfg"), t)),
    )
    .expect("imports")
}

/// Imports, then checks the output as `maas-vip check` does: it must be accepted. Returns
/// the config, the import and the check's report (its warnings).
fn valid(k: Option<&str>, h: Option<&str>) -> (Config, Imported, String) {
    let out = imp(k, h);
    match parse(Path::new("imported.toml"), out.toml.clone()) {
        Ok((c, report)) => (c, out, report.to_string()),
        Err(report) => panic!(
            "import output rejected:\n{report}\n--- output ---\n{}",
            out.toml
        ),
    }
}

fn note<'a>(out: &'a Imported, needle: &str) -> &'a str {
    out.notes
        .iter()
        .find(|n| n.contains(needle))
        .unwrap_or_else(|| {
            panic!(
                "no note contains {needle:?}; notes:\n{}",
                out.notes.join("\n")
            )
        })
}

fn no_note(out: &Imported, needle: &str) {
    assert!(
        !out.notes.iter().any(|n| n.contains(needle)),
        "a note contains {needle:?}; notes:\n{}",
        out.notes.join("\n")
    );
}

/// A keepalived.conf with `globals` in global_defs and `body` in one instance.
fn ka(globals: &str, body: &str) -> String {
    format!(
        "global_defs {{\n{globals}\n}}\nvrrp_instance region {{\n    interface eth0\n    \
         virtual_router_id 61\n    priority 150\n    advert_int 1\n{body}\n}}\n"
    )
}

fn vips(c: &Config) -> Vec<String> {
    c.vrrp[0]
        .virtual_ipaddresses
        .get_ref()
        .iter()
        .map(|v| v.to_string())
        .collect()
}

#[test]
fn ipv6_virtual_addresses_become_a_vrrpv3_block() {
    let k = ka(
        "",
        "    virtual_ipaddress {\n        fe80::61/64\n        2001:db8::100/64\n    }",
    );
    let (c, out, report) = valid(Some(&k), None);
    assert_eq!(c.vrrp.len(), 1);
    assert_eq!(vips(&c), ["fe80::61/64", "2001:db8::100/64"]);
    // keepalived.conf(5): "IPv6 instances will always use version 3".
    assert_eq!(*c.vrrp[0].version.get_ref(), Version::V3);
    assert!(out.toml.contains("version = 3\n"), "{}", out.toml);
    assert!(!report.contains("warning"), "{report}");
    no_note(&out, "virtual_ipaddress");
}

#[test]
fn an_address_of_the_other_family_is_left_out_as_keepalived_does() {
    // IPv4 first: the instance is IPv4, the IPv6 address is ignored (by keepalived too).
    let k = ka(
        "",
        "    virtual_ipaddress {\n        10.0.0.100/24\n        2001:db8::100/64\n    }",
    );
    let (c, out, _) = valid(Some(&k), None);
    assert_eq!(vips(&c), ["10.0.0.100/24"]);
    assert_eq!(*c.vrrp[0].version.get_ref(), Version::V2);
    let n = note(&out, "2001:db8::100/64 is not carried over");
    assert!(n.starts_with("keepalived.conf:11: "), "{n}");
    assert!(
        n.contains("the instance is IPv4 (line 10)") && n.contains("vrrp_data.c:1232"),
        "{n}"
    );
    // IPv6 first: the instance is IPv6 and VRRPv3, the IPv4 address is left out.
    let k = ka(
        "",
        "    virtual_ipaddress {\n        fe80::61/64\n        10.0.0.100/24\n    }",
    );
    let (c, out, _) = valid(Some(&k), None);
    assert_eq!(vips(&c), ["fe80::61/64"]);
    assert_eq!(*c.vrrp[0].version.get_ref(), Version::V3);
    note(
        &out,
        "keepalived.conf:11: virtual_ipaddress 10.0.0.100/24 is not carried over",
    );
}

#[test]
fn native_ipv6_follows_keepalived() {
    // With IPv6 addresses: not needed, noted.
    let k = ka(
        "",
        "    native_ipv6\n    virtual_ipaddress {\n        fe80::61/64\n    }",
    );
    let (c, out, _) = valid(Some(&k), None);
    assert_eq!(*c.vrrp[0].version.get_ref(), Version::V3);
    note(&out, "keepalived.conf:9: native_ipv6 is not needed");
    // After an IPv4 address: keepalived refuses it, so do we.
    let k = ka(
        "",
        "    virtual_ipaddress {\n        10.0.0.100/24\n    }\n    native_ipv6",
    );
    let (c, out, _) = valid(Some(&k), None);
    assert_eq!(*c.vrrp[0].version.get_ref(), Version::V2);
    note(
        &out,
        "keepalived.conf:12: native_ipv6 ignored: the instance is IPv4",
    );
    // Before IPv4 addresses: the instance is IPv6 and has none of its family left.
    let k = ka(
        "",
        "    native_ipv6\n    virtual_ipaddress {\n        10.0.0.100/24\n    }",
    );
    let out = imp(Some(&k), None);
    note(
        &out,
        "10.0.0.100/24 is not carried over: the instance is IPv6 (line 9)",
    );
    note(&out, "it needs a virtual_ipaddress");
    assert!(!out.toml.contains("\n[[vrrp]]\n"), "{}", out.toml);
    no_note(&out, "native_ipv6 is not needed");
}

#[test]
fn vrrp_version_3_globally_and_per_instance() {
    let body = "    virtual_ipaddress {\n        10.0.0.100/24\n    }";
    let (c, out, _) = valid(Some(&ka("    vrrp_version 3", body)), None);
    assert_eq!(*c.vrrp[0].version.get_ref(), Version::V3);
    no_note(&out, "vrrp_version");
    let (c, _, _) = valid(Some(&ka("", &format!("    version 3\n{body}"))), None);
    assert_eq!(*c.vrrp[0].version.get_ref(), Version::V3);
    // An IPv6 instance with `version 2` runs VRRPv3, as in keepalived.
    let k = ka(
        "",
        "    version 2\n    virtual_ipaddress {\n        fe80::61/64\n    }",
    );
    let (c, out, _) = valid(Some(&k), None);
    assert_eq!(*c.vrrp[0].version.get_ref(), Version::V3);
    note(
        &out,
        "keepalived.conf:9: version 2 -> 3: the instance is IPv6",
    );
    // Centisecond intervals over IPv6.
    let k = ka("", "    virtual_ipaddress {\n        fe80::61/64\n    }")
        .replace("advert_int 1", "advert_int 0.1");
    let (c, _, _) = valid(Some(&k), None);
    assert_eq!(
        *c.vrrp[0].advert_interval.get_ref(),
        Duration::from_millis(100)
    );
}

#[test]
fn v3_checksum_as_v2_becomes_the_rfc9568_checksum_on_vrrpv3_over_ipv4() {
    let v4 = "    virtual_ipaddress {\n        10.0.0.100/24\n    }";
    let (c, out, _) = valid(
        Some(&ka("    vrrp_version 3\n    v3_checksum_as_v2", v4)),
        None,
    );
    assert_eq!(
        *c.vrrp[0].v3_checksum.get_ref(),
        vrrp::config::V3ChecksumKey::Rfc9568
    );
    assert!(
        out.toml.contains("v3_checksum = \"rfc9568\""),
        "{}",
        out.toml
    );
    no_note(&out, "v3_checksum_as_v2");
    // Per instance, and turned off again per instance.
    let (c, _, _) = valid(
        Some(&ka(
            "",
            &format!("    version 3\n    v3_checksum_as_v2\n{v4}"),
        )),
        None,
    );
    assert_eq!(
        *c.vrrp[0].v3_checksum.get_ref(),
        vrrp::config::V3ChecksumKey::Rfc9568
    );
    let (c, _, _) = valid(
        Some(&ka(
            "    vrrp_version 3\n    v3_checksum_as_v2",
            &format!("    v3_checksum_as_v2 false\n{v4}"),
        )),
        None,
    );
    assert_eq!(
        *c.vrrp[0].v3_checksum.get_ref(),
        vrrp::config::V3ChecksumKey::PseudoHeader
    );
    // Global on VRRPv2 and IPv6 instances: no effect, nothing written (check would refuse).
    let (c, out, _) = valid(Some(&ka("    v3_checksum_as_v2", v4)), None);
    assert_eq!(
        *c.vrrp[0].v3_checksum.get_ref(),
        vrrp::config::V3ChecksumKey::PseudoHeader
    );
    assert!(!out.toml.contains("v3_checksum ="), "{}", out.toml);
    let v6 = "    virtual_ipaddress {\n        fe80::61/64\n    }";
    let (c, _, _) = valid(Some(&ka("    v3_checksum_as_v2", v6)), None);
    assert_eq!(
        *c.vrrp[0].v3_checksum.get_ref(),
        vrrp::config::V3ChecksumKey::PseudoHeader
    );
    // Given in a VRRPv2 instance itself: noted.
    let out = imp(Some(&ka("", &format!("    v3_checksum_as_v2\n{v4}"))), None);
    note(
        &out,
        "keepalived.conf:9: v3_checksum_as_v2 has no effect here",
    );
}

#[test]
fn ipv6_unicast_peers_of_the_instance_family() {
    let k = ka(
        "",
        "    virtual_ipaddress {\n        fe80::61/64\n    }\n    unicast_peer {\n        \
         2001:db8::12\n        10.0.0.12\n    }",
    );
    let (c, out, _) = valid(Some(&k), None);
    assert_eq!(
        c.vrrp[0].unicast_peers,
        ["2001:db8::12".parse::<IpAddr>().expect("ip")]
    );
    note(
        &out,
        "keepalived.conf:14: unicast_peer 10.0.0.12 is not carried over",
    );
}

#[test]
fn a_first_ipv6_address_that_is_not_link_local_is_noted_and_check_warns() {
    let k = ka(
        "",
        "    virtual_ipaddress {\n        2001:db8::100/64\n        fe80::61/64\n    }",
    );
    let (_, out, report) = valid(Some(&k), None);
    note(
        &out,
        "the first IPv6 virtual address 2001:db8::100/64 is not link-local",
    );
    let line = out
        .toml
        .lines()
        .position(|l| l.starts_with("virtual_ipaddresses = "))
        .expect("the key")
        + 1;
    assert!(
        report.contains(&format!(
            "warning: imported.toml:{line}:23: the first IPv6 virtual address 2001:db8::100/64 \
             is not link-local"
        )),
        "{report}"
    );
}

/// A haproxy.cfg with one frontend of `binds` (lines) to one region.
fn hap(binds: &str) -> String {
    format!(
        "frontend maas\n    mode tcp\n{binds}\n    default_backend regions\n\
         backend regions\n    mode tcp\n    server r1 [2001:db8::11]:5240 check\n"
    )
}

fn binds(c: &Config) -> Vec<String> {
    c.frontend
        .iter()
        .flat_map(|f| f.bind.get_ref().iter().map(|b| b.to_string()))
        .collect()
}

#[test]
fn haproxy_ipv6_binds() {
    for (line, want) in [
        ("    bind :::80 v4v6", "[::]:80"),
        ("    bind :::80", "[::]:80"),
        ("    bind [::]:80", "[::]:80"),
        ("    bind [2001:db8::100]:80", "[2001:db8::100]:80"),
        ("    bind ipv6@:80", "[::]:80"),
        ("    bind [2001:db8::100]:80 v4v6", "[2001:db8::100]:80"),
    ] {
        let (c, out, _) = valid(None, Some(&hap(line)));
        assert_eq!(binds(&c), [want], "{line}");
        no_note(&out, "bind options");
        no_note(&out, "v6only");
    }
    // IPv4 and IPv6 on the same port, as HAProxy configs often have them.
    let (c, _, _) = valid(None, Some(&hap("    bind *:80\n    bind :::80 v6only")));
    assert_eq!(binds(&c), ["0.0.0.0:80", "[::]:80"]);
}

#[test]
fn haproxy_v6only_alone_is_noted() {
    let (c, out, _) = valid(None, Some(&hap("    bind :::80 v6only")));
    assert_eq!(binds(&c), ["[::]:80"]);
    let n = note(&out, "bind `v6only` has no maas-vip equivalent");
    assert!(n.starts_with("haproxy.cfg:3: "), "{n}");
    // With an IPv4 bind on that port elsewhere, maas-vip's [::] takes IPv6 only: as HAProxy.
    let cfg = format!(
        "{}frontend other\n    mode tcp\n    bind 10.0.0.100:80\n    default_backend regions\n",
        hap("    bind :::80 v6only")
    );
    let (_, out, _) = valid(None, Some(&cfg));
    no_note(&out, "v6only");
}

#[test]
fn haproxy_ipv4_mapped_bind_is_written_as_ipv4() {
    let (c, out, _) = valid(None, Some(&hap("    bind [::ffff:10.0.0.100]:80")));
    assert_eq!(binds(&c), ["10.0.0.100:80"]);
    note(
        &out,
        "haproxy.cfg:3: bind `[::ffff:10.0.0.100]:80` written as 10.0.0.100:80",
    );
}

#[test]
fn a_dual_stack_region_imports_into_two_blocks_that_check_accepts() {
    let k = "vrrp_instance region4 {\n    interface eth0\n    virtual_router_id 51\n    \
             priority 150\n    virtual_ipaddress {\n        10.0.0.100/24\n    }\n}\n\
             vrrp_instance region6 {\n    interface eth0\n    virtual_router_id 61\n    \
             priority 150\n    virtual_ipaddress {\n        fe80::61/64\n        \
             2001:db8::100/64\n    }\n}\n";
    let h = hap("    bind *:80\n    bind :::80 v4v6");
    let (c, _, report) = valid(Some(k), Some(&h));
    assert_eq!(c.vrrp.len(), 2);
    assert_eq!(*c.vrrp[0].version.get_ref(), Version::V2);
    assert_eq!(*c.vrrp[1].version.get_ref(), Version::V3);
    assert!(c.vrrp[1].is_ipv6());
    assert_eq!(binds(&c), ["0.0.0.0:80", "[::]:80"]);
    assert!(!report.contains("link-local"), "{report}");
}

#[test]
fn one_vrid_for_both_families_is_noted() {
    let k = "vrrp_instance region4 {\n    interface eth0\n    virtual_router_id 51\n    \
             virtual_ipaddress {\n        10.0.0.100/24\n    }\n}\n\
             vrrp_instance region6 {\n    interface eth0\n    virtual_router_id 51\n    \
             virtual_ipaddress {\n        fe80::61/64\n    }\n}\n";
    let (c, out, _) = valid(Some(k), None);
    assert_eq!(c.vrrp.len(), 1);
    note(
        &out,
        "keepalived.conf:8: vrrp_instance `region6` is not carried over: virtual_router_id 51 \
         is already used on `eth0`, by `region4` of the other family (keepalived allows one \
         VRID per family",
    );
}
