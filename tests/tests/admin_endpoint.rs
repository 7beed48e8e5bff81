//! The admin endpoint of the daemon run in-process on loopback: `/metrics` parses as
//! Prometheus (OpenMetrics) text and follows the traffic, server actions steer the proxy, the
//! bearer token, and `maas-vip status` (the real binary) against it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use daemon::Listeners;
use maas_vip_tests::*;

const TOKEN: &str = "admin-test-token-0123456789";

fn config(
    front: SocketAddr,
    admin: SocketAddr,
    servers: &[(&str, SocketAddr)],
    token: Option<&str>,
) -> String {
    let mut t = format!(
        "[[frontend]]\nname = \"maas\"\nbind = [\"{front}\"]\n\
         check = {{ kind = \"tcp\", interval = \"200ms\", rise = 1, fall = 1 }}\n"
    );
    for (n, a) in servers {
        t.push_str(&format!(
            "[[frontend.server]]\nname = \"{n}\"\naddress = \"{a}\"\n"
        ));
    }
    t.push_str(&format!("[admin]\nbind = \"{admin}\"\n"));
    if let Some(tok) = token {
        t.push_str(&format!("token = \"{tok}\"\n"));
    }
    t
}

/// The daemon on `servers`, its frontend and admin endpoint on sockets bound here; with the
/// temporary directory that holds its config.
async fn start(
    servers: &[(&str, SocketAddr)],
    token: Option<&str>,
) -> (TestDaemon, SocketAddr, SocketAddr, tempfile::TempDir) {
    let (front_l, front) = loopback_listener();
    let (admin_l, admin) = loopback_listener();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = TestDaemon::start(
        &dir.path().join("maas-vip.toml"),
        &config(front, admin, servers, token),
        Listeners::new().frontend(front_l).admin(admin_l),
    )
    .await;
    (d, front, admin, dir)
}

/// One request to the admin endpoint: status code and body, or `None` if it does not answer.
fn http(admin: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

/// The samples of an OpenMetrics text body, checking the line format on the way: `# HELP`,
/// `# TYPE` before each family's samples, `name{k="v",...} value`, `# EOF` at the end.
fn parse_metrics(text: &str) -> Samples {
    assert!(text.ends_with("# EOF\n"), "no # EOF: {text}");
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| *l != "# EOF") {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            typed.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value.parse().expect("numeric value");
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("closing brace");
                let labels = inner
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        let family = if typed.get(name).map(String::as_str) == Some("gauge") {
            name
        } else {
            name.strip_suffix("_total")
                .expect("counter sample ends in _total")
        };
        assert!(
            typed.contains_key(family),
            "sample before its # TYPE: {line}"
        );
        out.push((name.to_owned(), labels, value));
    }
    out
}

fn metric(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

fn state(admin: SocketAddr, token: Option<&str>, server: usize) -> String {
    let (_, body) = http(admin, "GET", "/status", token).expect("status answers");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    v["frontends"][0]["servers"][server]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Who answers `n` connections through the proxy.
async fn spread(front: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let got = fetch(front).await.expect("proxied");
        *seen
            .entry(String::from_utf8_lossy(&got).into_owned())
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_traffic_and_actions_steer_the_proxy() {
    let r1 = name_server("r1").await;
    let r2 = name_server("r2").await;
    let (d, front, admin, _dir) = start(&[("r1", r1), ("r2", r2)], None).await;

    let seen = spread(front, 6).await;
    assert_eq!(seen.get("r1"), Some(&3), "{seen:?}");
    assert_eq!(seen.get("r2"), Some(&3), "{seen:?}");

    let (code, text) = http(admin, "GET", "/metrics", None).expect("metrics answer");
    assert_eq!(code, 200);
    let m = parse_metrics(&text);
    let r1l = [("frontend", "maas"), ("server", "r1")];
    assert_eq!(
        metric(&m, "maas_vip_server_connections_total", &r1l),
        Some(3.0)
    );
    assert_eq!(metric(&m, "maas_vip_server_up", &r1l), Some(1.0));
    wait_until("a check counted", Duration::from_secs(5), || {
        let (_, text) = http(admin, "GET", "/metrics", None).expect("metrics answer");
        let m = parse_metrics(&text);
        (metric(&m, "maas_vip_server_checks_total", &r1l).unwrap_or(0.0) >= 1.0
            && metric(&m, "maas_vip_server_check_duration_seconds", &r1l).is_some())
        .then_some(())
    })
    .await;

    // Drain r1: new connections all go to r2.
    let (code, body) = http(admin, "POST", "/servers/maas/r1/drain", None).expect("drain answers");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["state"], "drain");
    assert_eq!(state(admin, None, 0), "drain");
    let seen = spread(front, 4).await;
    assert_eq!(
        seen.get("r2"),
        Some(&4),
        "drained r1 still served: {seen:?}"
    );
    let (_, text) = http(admin, "GET", "/metrics", None).expect("metrics answer");
    let m = parse_metrics(&text);
    let mut drain = r1l.to_vec();
    drain.push(("state", "drain"));
    assert_eq!(metric(&m, "maas_vip_server_state", &drain), Some(1.0));

    // Disable r2, enable r1: all to r1.
    let (code, _) = http(admin, "POST", "/servers/maas/r2/disable", None).expect("answers");
    assert_eq!(code, 200);
    let (code, _) = http(admin, "POST", "/servers/maas/r1/enable", None).expect("answers");
    assert_eq!(code, 200);
    assert_eq!(state(admin, None, 1), "maint");
    assert_eq!(state(admin, None, 0), "up");
    let seen = spread(front, 4).await;
    assert_eq!(seen.get("r1"), Some(&4), "{seen:?}");

    // Errors.
    let (code, _) = http(admin, "POST", "/servers/maas/r9/drain", None).expect("answers");
    assert_eq!(code, 404);
    let (code, _) = http(admin, "POST", "/servers/nope/r1/drain", None).expect("answers");
    assert_eq!(code, 404);
    let (code, _) = http(admin, "GET", "/servers/maas/r1/drain", None).expect("answers");
    assert_eq!(code, 405);
    d.handle.stop().await.expect("a clean stop");
}

/// The token, the proxy's counters, and `maas-vip status` reading the admin address and token
/// from the daemon's config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_frontend_metrics_and_status_command() {
    let r1 = name_server("r1").await;
    let (d, front, admin, _dir) = start(&[("r1", r1)], Some(TOKEN)).await;
    let path = d.path.clone();
    let (code, _) = http(admin, "GET", "/status", None).expect("answers");
    assert_eq!(code, 401);
    let (code, _) =
        http(admin, "GET", "/metrics", Some("wrong-token-0123456789")).expect("answers");
    assert_eq!(code, 401);

    let seen = spread(front, 3).await;
    assert_eq!(seen.get("r1"), Some(&3), "{seen:?}");
    let f = [("frontend", "maas")];
    // Byte counters are added when a connection ends, which may be just after the client saw
    // its EOF: poll.
    let m = wait_until("bytes counted in /metrics", Duration::from_secs(5), || {
        let (code, text) = http(admin, "GET", "/metrics", Some(TOKEN)).expect("answers");
        assert_eq!(code, 200);
        let m = parse_metrics(&text);
        (metric(&m, "maas_vip_frontend_bytes_out_total", &f).unwrap_or(0.0) >= 6.0).then_some(m)
    })
    .await;
    assert_eq!(
        metric(&m, "maas_vip_frontend_connections_total", &f),
        Some(3.0)
    );

    // `maas-vip status` reads the admin address and token from the same config.
    let out = Command::new(maas_vip_bin())
        .args(["status", "-c"])
        .arg(&path)
        .output()
        .expect("run status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("FRONTEND  SERVER"), "{stdout}");
    assert!(stdout.contains("maas      r1"), "{stdout}");
    let out = Command::new(maas_vip_bin())
        .args(["status", "--json", "-c"])
        .arg(&path)
        .output()
        .expect("run status --json");
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["frontends"][0]["servers"][0]["name"], "r1");
    assert!(v["vrrp"].is_array());

    // Daemon gone: exit 1 and a message naming the address.
    d.handle.stop().await.expect("a clean stop");
    let out = Command::new(maas_vip_bin())
        .args(["status", "-c"])
        .arg(&path)
        .output()
        .expect("run status");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the admin endpoint at {admin}")),
        "{err}"
    );
}
