//! The admin endpoint of the real `maas-vip run` on loopback: `/metrics` parses as Prometheus
//! (OpenMetrics) text and follows the traffic, server actions steer the proxy, the bearer
//! token, and `maas-vip status`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_vip_tests::*;

const TOKEN: &str = "admin-test-token-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn config(front: u16, admin: u16, servers: &[(&str, SocketAddr)], token: Option<&str>) -> String {
    let mut t = format!(
        "[[frontend]]\nname = \"maas\"\nbind = [\"127.0.0.1:{front}\"]\n\
         check = {{ kind = \"tcp\", interval = \"200ms\", rise = 1, fall = 1 }}\n"
    );
    for (n, a) in servers {
        t.push_str(&format!(
            "[[frontend.server]]\nname = \"{n}\"\naddress = \"{a}\"\n"
        ));
    }
    t.push_str(&format!("[admin]\nbind = \"127.0.0.1:{admin}\"\n"));
    if let Some(tok) = token {
        t.push_str(&format!("token = \"{tok}\"\n"));
    }
    t
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(path: &std::path::Path) -> Daemon {
    let child = Command::new(maas_vip_bin())
        .args(["run", "-c"])
        .arg(path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start maas-vip");
    Daemon(child)
}

/// One request to the admin endpoint: status code and body, or `None` if it does not answer.
fn http(admin: u16, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n{auth}Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
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

fn state(admin: u16, token: Option<&str>, server: usize) -> String {
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
    let (front, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("maas-vip.toml");
    std::fs::write(&path, config(front, admin, &[("r1", r1), ("r2", r2)], None)).expect("write");
    let _daemon = start(&path);
    wait_for("the admin endpoint", Duration::from_secs(10), || {
        http(admin, "GET", "/status", None).is_some()
    });
    let front = SocketAddr::from(([127, 0, 0, 1], front));

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
    wait_for("a check counted", Duration::from_secs(5), || {
        let (_, text) = http(admin, "GET", "/metrics", None).expect("metrics answer");
        let m = parse_metrics(&text);
        metric(&m, "maas_vip_server_checks_total", &r1l).unwrap_or(0.0) >= 1.0
            && metric(&m, "maas_vip_server_check_duration_seconds", &r1l).is_some()
    });

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
}

/// Needs the daemon to serve `admin::serve_ctx` (token and proxy counters) and `main.rs` to
/// have the `status` subcommand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_frontend_metrics_and_status_command() {
    let r1 = name_server("r1").await;
    let (front, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("maas-vip.toml");
    std::fs::write(&path, config(front, admin, &[("r1", r1)], Some(TOKEN))).expect("write");
    let mut daemon = start(&path);
    wait_for("the admin endpoint", Duration::from_secs(10), || {
        http(admin, "GET", "/status", Some(TOKEN)).map(|(c, _)| c) == Some(200)
    });
    let (code, _) = http(admin, "GET", "/status", None).expect("answers");
    assert_eq!(code, 401);
    let (code, _) =
        http(admin, "GET", "/metrics", Some("wrong-token-0123456789")).expect("answers");
    assert_eq!(code, 401);

    let front = SocketAddr::from(([127, 0, 0, 1], front));
    let seen = spread(front, 3).await;
    assert_eq!(seen.get("r1"), Some(&3), "{seen:?}");
    let f = [("frontend", "maas")];
    // Byte counters are added when a connection ends, which may be just after the client saw
    // its EOF: poll.
    let mut m = Default::default();
    wait_for("bytes counted in /metrics", Duration::from_secs(5), || {
        let (code, text) = http(admin, "GET", "/metrics", Some(TOKEN)).expect("answers");
        assert_eq!(code, 200);
        m = parse_metrics(&text);
        metric(&m, "maas_vip_frontend_bytes_out_total", &f).unwrap_or(0.0) >= 6.0
    });
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
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
    let out = Command::new(maas_vip_bin())
        .args(["status", "-c"])
        .arg(&path)
        .output()
        .expect("run status");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach the admin endpoint at 127.0.0.1:{admin}"
        )),
        "{err}"
    );
}
