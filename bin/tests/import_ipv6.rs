//! `maas-vip import` of a dual-stack keepalived.conf + haproxy.cfg, then `maas-vip check` on
//! its output, both through the binary (issue 16, point 6).

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_maas-vip");

const KEEPALIVED: &str = "\
global_defs {
    vrrp_version 3
    v3_checksum_as_v2
}
vrrp_instance region4 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    virtual_ipaddress {
        10.0.0.100/24
    }
}
vrrp_instance region6 {
    interface eth0
    virtual_router_id 61
    priority 150
    advert_int 0.1
    native_ipv6
    virtual_ipaddress {
        2001:db8::100/64
        fe80::61/64
    }
}
";

const HAPROXY: &str = "\
frontend maas
    mode tcp
    bind *:80
    bind :::80 v4v6
    bind [2001:db8::100]:8080 v6only
    default_backend regions
backend regions
    mode tcp
    server r1 [2001:db8::11]:5240 check
    server r2 10.0.0.12:5240 check
";

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(BIN).args(args).output().expect("run maas-vip")
}

#[test]
fn imported_dual_stack_config_passes_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = dir.path().join("keepalived.conf");
    let h = dir.path().join("haproxy.cfg");
    std::fs::write(&k, KEEPALIVED).expect("write");
    std::fs::write(&h, HAPROXY).expect("write");
    let out = run(&[
        "import".as_ref(),
        "--keepalived".as_ref(),
        k.as_os_str(),
        "--haproxy".as_ref(),
        h.as_os_str(),
    ]);
    let notes = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{notes}");
    let toml = String::from_utf8(out.stdout).expect("utf8");
    for want in [
        "version = 3\nv3_checksum = \"rfc9568\"",
        "virtual_ipaddresses = [\"2001:db8::100/64\", \"fe80::61/64\"]",
        "advert_interval = \"100ms\"",
        "bind = [\"0.0.0.0:80\", \"[::]:80\", \"[2001:db8::100]:8080\"]",
        "address = \"[2001:db8::11]:5240\"",
    ] {
        assert!(toml.contains(want), "{want:?} missing:\n{toml}");
    }
    assert!(
        notes.contains("the first IPv6 virtual address 2001:db8::100/64 is not link-local"),
        "{notes}"
    );
    let conf = dir.path().join("maas-vip.toml");
    std::fs::write(&conf, &toml).expect("write");
    let out = run(&["check".as_ref(), "-c".as_ref(), conf.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}\n--- config ---\n{toml}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": OK ("), "{stdout}");
    let report = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        report.contains("is not link-local"),
        "check warns about the first IPv6 address:\n{report}"
    );
}
