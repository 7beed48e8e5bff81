//! The proxy on IPv6 (issue 16, point 5): an IPv6 client namespace reaches IPv6 stand-in
//! servers through an IPv6 VIP that maas-vip holds by VRRPv3 over IPv6, in tcp and http mode,
//! round robin and source hash; a dual-stack `[::]` listener takes IPv4 clients as IPv4
//! (hashed, forwarded and logged as the same client on an IPv4 listener).
//!
//! LAN: h0 runs maas-vip (the VIP's only router, so its master), h1 and h2 are the regions
//! (HTTP servers on `[::]:5240` that answer their name and the X-Forwarded-For they got), h3
//! is the client with eight IPv6 and eight IPv4 addresses, one client each. The listeners on
//! the VIP are bound before the VIP is held (IPV6_FREEBIND). Helpers run inside namespaces
//! are this test binary itself (`ip netns exec NS <this binary> <helper> --exact --ignored`)
//! with an env var set. Nothing is sent outside the test namespaces.
//!
//! Needs root and `ip netns`, so the tests are `#[ignore]`d: run them as root with
//! `--include-ignored` (see the README); they fail, saying why, where they cannot run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use maas_vip_tests::netns::{print_logs, require, wait_for, Lan, Proc};

const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x98, 0, 0, 0, 0, 0x100);
const VIP_LL: &str = "fe80::62";
const PREFIX: &str = "2001:db8:98::";
const SERVER_PORT: u16 = 5240;
/// Env var of the region helper (its value: the name it answers).
const NAME_ENV: &str = "MAAS_VIP_PROXY6_NAME";
/// Env var of the client helper: `src>dst` requests separated by spaces.
const REQS_ENV: &str = "MAAS_VIP_PROXY6_REQS";
/// IPv6 clients: PREFIX ::21 ..= ::28; IPv4 clients 10.99.0.31 ..= .38 (all on h3).
const CLIENTS: std::ops::RangeInclusive<u16> = 0x21..=0x28;

fn client6(i: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x98, 0, 0, 0, 0, i))
}

fn client4(i: u16) -> IpAddr {
    IpAddr::from([10, 99, 0, 31 + (i - 0x21) as u8])
}

fn config() -> String {
    let servers = format!(
        r#"
[[frontend.server]]
name = "r1"
address = "[{PREFIX}11]:{SERVER_PORT}"

[[frontend.server]]
name = "r2"
address = "[{PREFIX}12]:{SERVER_PORT}"
"#
    );
    let tcp_check =
        r#"check = { kind = "tcp", interval = "200ms", timeout = "1s", rise = 1, fall = 2 }"#;
    let http_check = r#"check = { kind = "http", path = "/check", interval = "200ms", timeout = "1s", rise = 1, fall = 2 }"#;
    let fe = |name: &str, bind: &str, mode: &str, balance: &str| {
        let check = if mode == "tcp" { tcp_check } else { http_check };
        format!(
            "\n[[frontend]]\nname = \"{name}\"\nbind = [\"{bind}\"]\nmode = \"{mode}\"\n\
             balance = \"{balance}\"\n{check}\n{servers}"
        )
    };
    let mut c = format!(
        r#"
[[vrrp]]
name = "region6"
interface = "eth0"
virtual_router_id = 62
priority = 150
version = 3
advert_interval = "1s"
virtual_ipaddresses = ["{VIP_LL}/64", "{VIP}/64"]
"#
    );
    c += &fe("tcp_rr", &format!("[{VIP}]:8001"), "tcp", "roundrobin");
    c += &fe("tcp_src", &format!("[{VIP}]:8002"), "tcp", "source");
    c += &fe("http_rr", &format!("[{VIP}]:8003"), "http", "roundrobin");
    // Dual-stack: no IPv4 bind shares port 8004.
    c += &fe("http_src", "[::]:8004", "http", "source");
    c += &fe("http_src4", "0.0.0.0:8005", "http", "source");
    c
}

/// Answers every HTTP request with `$NAME_ENV xff=<X-Forwarded-For or ->`, keeping the
/// connection open unless asked to close; does nothing without the env var.
#[test]
#[ignore = "helper, not a test: run inside a region's namespace by the IPv6 proxy test (.ci/run skips `helper_`)"]
fn helper_region() {
    let Ok(name) = std::env::var(NAME_ENV) else {
        return;
    };
    let l = std::net::TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, SERVER_PORT)))
        .expect("bind [::]:5240");
    println!("LISTENING");
    for s in l.incoming().flatten() {
        let name = name.clone();
        std::thread::spawn(move || serve_region(s, &name));
    }
}

fn serve_region(mut s: std::net::TcpStream, name: &str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end + 4);
        let header = |h: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(h).then(|| v.trim().to_string())
            })
        };
        let body = format!(
            "{name} xff={}",
            header("x-forwarded-for").unwrap_or("-".into())
        );
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if s.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Sends one `GET /` (Connection: close) per `src>dst` of `$REQS_ENV`, each from its own
/// source address, in order; prints `REPLY <src> <body>` or `REPLY <src> ERROR <why>`.
#[test]
#[ignore = "helper, not a test: run inside the client's namespace by the IPv6 proxy test (.ci/run skips `helper_`)"]
fn helper_client() {
    use socket2::{Domain, Socket, Type};
    let Ok(reqs) = std::env::var(REQS_ENV) else {
        return;
    };
    for req in reqs.split_whitespace() {
        let (src, dst) = req.split_once('>').expect("src>dst");
        let src: IpAddr = src.parse().expect("source");
        let dst: SocketAddr = dst.parse().expect("destination");
        let once = || -> std::io::Result<String> {
            let s = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
            s.bind(&SocketAddr::new(src, 0).into())?;
            s.connect_timeout(&dst.into(), Duration::from_secs(3))?;
            let mut s: std::net::TcpStream = s.into();
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n")?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)?;
            let text = String::from_utf8_lossy(&out).to_string();
            Ok(text
                .split_once("\r\n\r\n")
                .map_or(text.clone(), |(_, b)| b.to_string()))
        };
        match once() {
            Ok(body) => println!("REPLY {src} {}", body.trim()),
            Err(e) => println!("REPLY {src} ERROR {e}"),
        }
    }
}

/// Runs the client helper on h3 for `reqs`: (source, body) in order.
fn requests(lan: &Lan, reqs: &[(IpAddr, SocketAddr)]) -> Vec<(IpAddr, String)> {
    let me = std::env::current_exe().expect("test binary");
    let arg: Vec<String> = reqs.iter().map(|(s, d)| format!("{s}>{d}")).collect();
    let out = lan.hosts[3]
        .ns
        .command(&me)
        .args(["helper_client", "--exact", "--ignored", "--nocapture"])
        .env(REQS_ENV, arg.join(" "))
        .output()
        .expect("client helper");
    let text = String::from_utf8_lossy(&out.stdout);
    let got: Vec<(IpAddr, String)> = text
        .lines()
        .filter_map(|l| {
            let (src, body) = l.strip_prefix("REPLY ")?.split_once(' ')?;
            Some((src.parse().ok()?, body.to_string()))
        })
        .collect();
    assert_eq!(
        got.len(),
        reqs.len(),
        "client helper:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    got
}

/// The region that answered `body` ("r1 xff=..." -> "r1") and the X-Forwarded-For it got.
fn parse_body(body: &str) -> (&str, &str) {
    let (name, xff) = body.split_once(' ').unwrap_or((body, ""));
    (name, xff.strip_prefix("xff=").unwrap_or(xff))
}

fn regions(lan: &Lan, dir: &Path) -> Vec<Proc> {
    let me = std::env::current_exe().expect("test binary");
    [1usize, 2]
        .iter()
        .map(|&i| {
            let p = Proc::spawn(
                &lan.hosts[i].ns,
                &me,
                &["helper_region", "--exact", "--ignored", "--nocapture"],
                &[(NAME_ENV, &format!("r{i}"))],
                dir.join(format!("region-h{i}.log")),
            );
            assert!(
                wait_for(Duration::from_secs(10), || p.output().contains("LISTENING")).is_some(),
                "region on h{i}: {}",
                p.output()
            );
            p
        })
        .collect()
}

/// Every server of every frontend up in `/status`.
fn all_up(lan: &Lan, conf: &Path) -> bool {
    let Some(v) = lan.hosts[0].status_json(conf) else {
        return false;
    };
    let Some(fes) = v["frontends"].as_array() else {
        return false;
    };
    fes.len() == 5
        && fes.iter().all(|f| {
            f["servers"]
                .as_array()
                .is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["state"] == "up"))
        })
}

#[test]
#[ignore = "needs root and network namespaces: an IPv6 client, VIP and regions in namespaces"]
fn ipv6_client_through_ipv6_vip_to_ipv6_regions() {
    let name = "ipv6_client_through_ipv6_vip_to_ipv6_regions";
    require(name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let lan = Lan::new(4);
    lan.hosts[0].ns.ip(&[
        "addr",
        "add",
        &format!("{PREFIX}1/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    for i in [1u16, 2] {
        let a = format!("{PREFIX}{:x}/64", 0x10 + i);
        lan.hosts[usize::from(i)]
            .ns
            .ip(&["addr", "add", &a, "dev", "eth0", "nodad"]);
    }
    for i in CLIENTS {
        let (a6, a4) = (format!("{}/64", client6(i)), format!("{}/24", client4(i)));
        let c = &lan.hosts[3].ns;
        c.ip(&["addr", "add", &a6, "dev", "eth0", "nodad"]);
        c.ip(&["addr", "add", &a4, "dev", "eth0"]);
    }
    lan.wait_link_local(Duration::from_secs(10));
    let _regions = regions(&lan, dir);
    let mv = lan.start_maas_vip(dir, 0, &config());
    let conf = dir.join("h0.toml");
    lan.wait_holders(
        VIP,
        &[0],
        Duration::from_secs(10),
        "maas-vip holds the VIP",
        &[&mv],
    );
    if wait_for(Duration::from_secs(10), || all_up(&lan, &conf)).is_none() {
        print_logs(&[&mv]);
        panic!("servers not up: {:?}", lan.hosts[0].status_json(&conf));
    }
    let status = lan.hosts[0].status_json(&conf).expect("status");
    let addrs: BTreeSet<String> = status["frontends"][0]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter_map(|s| s["address"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        addrs,
        BTreeSet::from([format!("[{PREFIX}11]:5240"), format!("[{PREFIX}12]:5240")]),
        "/status brackets IPv6 server addresses"
    );

    let vip = |port: u16| SocketAddr::from((VIP, port));
    let me = client6(0x21);
    // Round robin, tcp and http: one client alternates over both regions.
    for (port, mode) in [(8001, "tcp"), (8003, "http")] {
        let got = requests(&lan, &vec![(me, vip(port)); 6]);
        let mut n: BTreeMap<String, usize> = BTreeMap::new();
        for (_, body) in &got {
            let (region, xff) = parse_body(body);
            *n.entry(region.to_string()).or_default() += 1;
            let want_xff = if mode == "http" {
                me.to_string()
            } else {
                "-".into()
            };
            assert_eq!(xff, want_xff, "{mode} X-Forwarded-For: {body}");
        }
        assert_eq!(
            n,
            BTreeMap::from([("r1".into(), 3), ("r2".into(), 3)]),
            "{mode} round robin: {got:?}"
        );
    }

    // Source hash, tcp and http (the latter on the dual-stack [::]): each client keeps its
    // region, the clients spread over both, and both modes agree.
    let mut by_mode: Vec<BTreeMap<IpAddr, String>> = Vec::new();
    for dst in [vip(8002), SocketAddr::from((VIP, 8004))] {
        let reqs: Vec<(IpAddr, SocketAddr)> =
            CLIENTS.flat_map(|i| [(client6(i), dst); 3]).collect();
        by_mode.push(sticky(&requests(&lan, &reqs), dst));
    }
    assert_eq!(by_mode[0], by_mode[1], "tcp and http hash alike");

    // IPv4 clients: through the dual-stack [::]:8004 (v4-mapped) and the IPv4 0.0.0.0:8005,
    // each lands on one region, the same on both, and is forwarded as its IPv4 address.
    let h0v4 = lan.hosts[0].addr;
    let mut v4: Vec<BTreeMap<IpAddr, String>> = Vec::new();
    for port in [8004, 8005] {
        let dst = SocketAddr::from((h0v4, port));
        let reqs: Vec<(IpAddr, SocketAddr)> =
            CLIENTS.flat_map(|i| [(client4(i), dst); 3]).collect();
        v4.push(sticky(&requests(&lan, &reqs), dst));
    }
    assert_eq!(
        v4[0], v4[1],
        "a v4-mapped client hashes like the same IPv4 client"
    );

    // The access log: IPv6 clients bracketed, IPv4 ones of the dual-stack listener plain.
    let log = mv.output();
    let access: Vec<&str> = log.lines().filter(|l| l.contains(" access:")).collect();
    for (fe, client) in [
        ("tcp_rr", format!("client=[{me}]:")),
        ("http_src", format!("client=[{}]:", client6(0x28))),
        ("http_src", format!("client={}:", client4(0x21))),
    ] {
        assert!(
            access
                .iter()
                .any(|l| l.contains(&format!("frontend={fe}")) && l.contains(&client)),
            "no access line of {fe} with {client}:\n{}",
            access.join("\n")
        );
    }
    assert!(
        log.contains("listening on IPv6 and IPv4 (dual-stack)") && log.contains("bind=[::]:8004"),
        "[::]:8004 is dual-stack:\n{log}"
    );
    assert!(
        !log.contains("::ffff:"),
        "a v4-mapped address was logged:\n{log}"
    );
    eprintln!(
        "IPv6 proxy: {} access lines; source hash over {} IPv6 and {} IPv4 clients: {:?} / {:?}",
        access.len(),
        by_mode[0].len(),
        v4[0].len(),
        by_mode[0],
        v4[0]
    );
}

/// Each source's region, asserting that it never changed, that both regions got clients and
/// (http: any port but 8001/8002) that X-Forwarded-For is the source itself.
fn sticky(got: &[(IpAddr, String)], dst: SocketAddr) -> BTreeMap<IpAddr, String> {
    let mut map: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (src, body) in got {
        let (region, xff) = parse_body(body);
        assert!(region == "r1" || region == "r2", "{dst}: {body}");
        if !matches!(dst.port(), 8001 | 8002) {
            assert_eq!(xff, src.to_string(), "{dst}: X-Forwarded-For of {src}");
        }
        let first = map.entry(*src).or_insert_with(|| region.to_string());
        assert_eq!(first, region, "{dst}: {src} changed regions: {got:?}");
    }
    let used: BTreeSet<&String> = map.values().collect();
    assert_eq!(
        used.len(),
        2,
        "{dst}: clients spread over both regions: {map:?}"
    );
    map
}
