//! BGP announcement with real FRR in namespaces (tests/src/bgp.rs): three hosts announce one
//! VIP to a router with multipath, the client's flows reach all three, and a host's route
//! follows the process that owns its VIP interface: withdrawn on its word, on SIGTERM and,
//! through the kernel, on SIGKILL, within the documented bound.

use std::net::Ipv4Addr;
use std::time::Duration;

use maas_vip_tests::bgp::{frr_available, Fabric, WITHDRAW_BOUND};
use maas_vip_tests::netns::{check_or_skip, REQUIRE_ENV};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 95, 0, 100);
const PORT: u16 = 80;
/// Sessions come up within seconds (connect retry 1 s); generous for a loaded machine.
const CONVERGE: Duration = Duration::from_secs(30);

fn ready(test: &str) -> bool {
    if !check_or_skip(test) {
        return false;
    }
    match frr_available() {
        Ok(()) => true,
        Err(why) => {
            assert_ne!(
                std::env::var(REQUIRE_ENV).as_deref(),
                Ok("1"),
                "{test}: FRR required ({REQUIRE_ENV}=1): {why}"
            );
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

#[test]
fn three_hosts_share_the_vip_by_ecmp() {
    if !ready("three_hosts_share_the_vip_by_ecmp") {
        return;
    }
    let f = Fabric::new(3);
    let holds: Vec<_> = (0..3).map(|i| f.hold(i, &[VIP])).collect();
    let _servers: Vec<_> = (0..3).map(|i| f.serve(i, PORT)).collect();
    let refs: Vec<_> = holds.iter().collect();
    let t = f.wait_next_hops(VIP, &[0, 1, 2], CONVERGE, "three announcements", &refs);
    eprintln!("three next hops at the router after {t:?}");

    // What the announce crate reads back from each host's FRR.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let vip = announce::HostPrefix::new(VIP.into());
    for (i, h) in f.hosts.iter().enumerate() {
        let v = h.frr.vtysh();
        let route = rt.block_on(v.route(vip)).expect("vtysh route");
        assert!(route.announced(), "host {i}: {route:?}");
        assert_eq!(route.advertised_to, vec![format!("10.97.{i}.1")]);
        let peers = rt.block_on(v.peers()).expect("vtysh summary");
        assert!(peers.iter().all(|p| p.established()), "host {i}: {peers:?}");
    }

    let (names, errors) = f.fetch(VIP, PORT, 90);
    eprintln!("90 connections: {names:?}, {errors} errors");
    assert_eq!(errors, 0);
    assert_eq!(names.values().sum::<u64>(), 90);
    for h in ["h0", "h1", "h2"] {
        // 30 expected each; fewer than 5 of 90 is a 1-in-10^5 draw of a fair hash.
        assert!(names.get(h).copied().unwrap_or(0) >= 5, "{h}: {names:?}");
    }
}

#[test]
fn the_route_follows_the_process_that_owns_the_vip_interface() {
    if !ready("the_route_follows_the_process_that_owns_the_vip_interface") {
        return;
    }
    let f = Fabric::new(3);
    let mut holds: Vec<_> = (0..3).map(|i| f.hold(i, &[VIP])).collect();
    let _servers: Vec<_> = (0..3).map(|i| f.serve(i, PORT)).collect();
    f.wait_next_hops(VIP, &[0, 1, 2], CONVERGE, "three announcements", &[]);

    // Withdrawn on the owner's word (carrier off): gone from the router, the VIP still local.
    holds[1].signal("USR1");
    let t = f.wait_next_hops(
        VIP,
        &[0, 2],
        WITHDRAW_BOUND,
        "withdraw (carrier off)",
        &[&holds[1]],
    );
    eprintln!("withdraw -> router dropped host 1 after {t:?}");
    assert!(f.has_vip_iface(1));
    let local = f.hosts[1]
        .ns
        .ip_output(&["-4", "-o", "addr", "show", "dev", "mvip0"]);
    assert!(String::from_utf8_lossy(&local.stdout).contains(&format!("{VIP}/32")));
    holds[1].signal("USR2");
    let t = f.wait_next_hops(VIP, &[0, 1, 2], WITHDRAW_BOUND, "re-announce", &[&holds[1]]);
    eprintln!("announce -> router added host 1 after {t:?}");

    // SIGKILL: no code of the owner runs; the kernel deletes the interface, FRR withdraws.
    holds[1].kill9();
    let t = f.wait_next_hops(VIP, &[0, 2], WITHDRAW_BOUND, "kill -9 of the owner", &[]);
    eprintln!("kill -9 -> router dropped host 1 after {t:?} (bound {WITHDRAW_BOUND:?})");
    assert!(
        !f.has_vip_iface(1),
        "the kernel deletes the VIP interface with its owner"
    );

    // New connections go to the two hosts left, none fails.
    let (names, errors) = f.fetch(VIP, PORT, 30);
    assert_eq!(errors, 0, "{names:?}");
    let hosts: Vec<&String> = names.keys().collect();
    assert_eq!(hosts, ["h0", "h2"], "{names:?}");

    // SIGTERM: withdrawn, then the owner exits.
    holds[2].signal("TERM");
    let t = f.wait_next_hops(
        VIP,
        &[0],
        WITHDRAW_BOUND,
        "SIGTERM of the owner",
        &[&holds[2]],
    );
    eprintln!("SIGTERM -> router dropped host 2 after {t:?}");
    assert!(holds[2]
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));

    // A new owner on host 1 takes over: the interface name is free again.
    let h1 = f.hold(1, &[VIP]);
    f.wait_next_hops(VIP, &[0, 1], CONVERGE, "a new owner on host 1", &[&h1]);
    let (names, errors) = f.fetch(VIP, PORT, 30);
    assert_eq!(errors, 0);
    assert_eq!(
        names.keys().cloned().collect::<Vec<_>>(),
        ["h0", "h1"],
        "{names:?}"
    );
}
