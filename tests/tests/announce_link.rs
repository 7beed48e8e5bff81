//! The VIP interface of the `announce` crate in a namespace of its own, driven by `mvlab host`:
//! what the kernel shows of it (TUN, addresses, carrier, no link-local), IPv6 VIPs usable at
//! once, one owner per name, and the device gone with its owner.

use std::time::Duration;

use maas_vip_tests::bgp::{mvlab_bin, VIP_IFACE};
use maas_vip_tests::netns::{require, wait_for, Netns, Proc};

fn link(ns: &Netns) -> String {
    String::from_utf8_lossy(
        &ns.ip_output(&["-d", "link", "show", "dev", VIP_IFACE])
            .stdout,
    )
    .into_owned()
}

fn addrs(ns: &Netns) -> String {
    String::from_utf8_lossy(&ns.ip_output(&["addr", "show", "dev", VIP_IFACE]).stdout).into_owned()
}

fn host(ns: &Netns, dir: &std::path::Path, tag: &str, vip: &str, port: &str) -> Proc {
    Proc::spawn(
        ns,
        mvlab_bin(),
        &["host", VIP_IFACE, vip, port, "h", "0"],
        &[],
        dir.join(format!("{tag}.log")),
    )
}

#[test]
#[ignore = "needs root and network namespaces: a TUN VIP interface in a namespace of its own"]
fn the_vip_interface_is_a_tun_owned_by_one_process() {
    require("the_vip_interface_is_a_tun_owned_by_one_process");
    let dir = tempfile::tempdir().expect("temp dir");
    let ns = Netns::new("vipl");
    let mut owner = host(&ns, dir.path(), "owner", "2001:db8::100/128", "8080");
    assert!(
        wait_for(Duration::from_secs(10), || owner.output().contains("ready")).is_some(),
        "{}",
        owner.output()
    );
    assert!(
        wait_for(Duration::from_secs(5), || owner
            .output()
            .contains("link offered=true"))
        .is_some(),
        "the crate reads its own state back: {}",
        owner.output()
    );
    let l = link(&ns);
    assert!(l.contains("tun type tun pi off"), "{l}");
    assert!(l.contains("persist off"), "never persistent: {l}");
    assert!(l.contains("addrgenmode none"), "{l}");
    assert!(l.contains("LOWER_UP"), "announced = carrier on: {l}");
    let a = addrs(&ns);
    assert!(a.contains("inet6 2001:db8::100/128"), "{a}");
    assert!(
        !a.contains("tentative"),
        "no DAD: usable while withdrawn: {a}"
    );
    assert!(!a.contains("fe80:"), "no link-local address: {a}");

    // Withdrawn: carrier off, the address stays.
    owner.signal("USR1");
    assert!(
        wait_for(Duration::from_secs(5), || link(&ns).contains("NO-CARRIER")).is_some(),
        "{}",
        link(&ns)
    );
    assert!(addrs(&ns).contains("2001:db8::100/128"));
    assert!(
        wait_for(Duration::from_secs(5), || owner
            .output()
            .contains("link offered=false"))
        .is_some(),
        "{}",
        owner.output()
    );

    // One owner per name: a second one is refused and says why.
    let mut second = host(&ns, dir.path(), "second", "10.95.0.100/32", "8081");
    let st = second.wait_exit(Duration::from_secs(10));
    assert!(st.is_some_and(|s| !s.success()), "{}", second.output());
    assert!(
        second.output().contains("an interface of that name exists"),
        "{}",
        second.output()
    );
    assert!(
        addrs(&ns).contains("2001:db8::100/128"),
        "the owner's device untouched"
    );

    // Gone with its owner, SIGKILL included.
    owner.kill9();
    assert!(
        wait_for(Duration::from_secs(5), || !ns
            .ip_output(&["link", "show", "dev", VIP_IFACE])
            .status
            .success())
        .is_some(),
        "{}",
        link(&ns)
    );
    // ...and the name is free again.
    let again = host(&ns, dir.path(), "again", "10.95.0.100/32", "8082");
    assert!(
        wait_for(Duration::from_secs(10), || again.output().contains("ready")).is_some(),
        "{}",
        again.output()
    );
}
