//! Servers written as host names, in a network namespace whose /etc/hosts the test controls
//! (`ip netns exec` bind-mounts /etc/netns/NAME/hosts over /etc/hosts): the real daemon
//! resolves them at start, sends traffic to what they resolve to, follows a changed mapping
//! after re-resolution (pooled L7 connections to the old address are not reused), and shows
//! a name that does not resolve as a DOWN server with the reason in /status and `maas-vip
//! status`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use maas_vip_tests::netns::{print_logs, require, wait_for, Netns, Proc};

/// A stand-in region: HTTP/1.1 with keep-alive, answering its name to every GET.
const REGION_PY: &str = r#"
import http.server, sys
ip, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((ip, port), H).serve_forever()
"#;

/// A client: COUNT requests on one keep-alive connection, printing `{"answer": n, ...}`.
const CLIENT_PY: &str = r#"
import http.client, json, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
counts = {}
for _ in range(int(sys.argv[3])):
    try:
        c.request("GET", "/MAAS/api/2.0/machines/")
        r = c.getresponse()
        b = r.read().decode()
        k = b if r.status == 200 else "%d %s" % (r.status, b.strip())
    except Exception as e:
        k = "error " + type(e).__name__
        c.close()
        c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
    counts[k] = counts.get(k, 0) + 1
print(json.dumps(counts))
"#;

/// /etc/netns/NAME of one namespace, removed on drop.
struct EtcNetns(PathBuf);

impl EtcNetns {
    fn new(ns: &Netns) -> EtcNetns {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).expect("creating /etc/netns/NAME");
        // No name server in the namespace: a name missing from hosts fails at once.
        std::fs::write(
            dir.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .expect("resolv.conf");
        EtcNetns(dir)
    }

    /// Rewrites hosts in place: the bind mount of a running process follows the inode, so a
    /// new file renamed over it would go unseen.
    fn set_hosts(&self, text: &str) {
        std::fs::write(self.0.join("hosts"), text).expect("hosts");
    }
}

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn python(ns: &Netns, dir: &Path, script: &str, args: &[&str], log: &str) -> Proc {
    let mut a = vec!["-c", script];
    a.extend_from_slice(args);
    Proc::spawn(ns, "python3", &a, &[], dir.join(log))
}

fn run_client(ns: &Netns, count: u32) -> serde_json::Value {
    let out: Output = ns
        .command("python3")
        .args(["-c", CLIENT_PY, "127.0.0.1", "8080", &count.to_string()])
        .output()
        .expect("running the client");
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

fn status(ns: &Netns, conf: &Path) -> Option<serde_json::Value> {
    let out = ns
        .command(maas_vip_tests::maas_vip_bin())
        .args(["status", "--json", "-c"])
        .arg(conf)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn server<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    v["frontends"][0]["servers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

#[test]
#[ignore = "needs root and network namespaces: the daemon in a namespace with its own resolver"]
fn host_named_servers_follow_their_names_and_an_unresolvable_one_is_down() {
    require("host_named_servers_follow_their_names_and_an_unresolvable_one_is_down");
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = Netns::new("resolve");
    let etc = EtcNetns::new(&ns);
    etc.set_hosts("127.0.0.1 localhost\n127.0.0.11 region.test\n");
    let _a = python(
        &ns,
        dir.path(),
        REGION_PY,
        &["127.0.0.11", "5240", "A"],
        "a.log",
    );
    let _b = python(
        &ns,
        dir.path(),
        REGION_PY,
        &["127.0.0.12", "5240", "B"],
        "b.log",
    );

    let conf = dir.path().join("maas-vip.toml");
    std::fs::write(
        &conf,
        r#"
# One proxy thread: one pool of idle server connections, which the moved name must not use.
workers = 1

[[frontend]]
name = "maas"
bind = ["127.0.0.1:8080"]
mode = "http"
resolve_interval = "300ms"
check = { kind = "http", path = "/MAAS/api/2.0/version/", interval = "300ms", rise = 1, fall = 1 }

[[frontend.server]]
name = "r1"
address = "region.test:5240"

[[frontend.server]]
name = "r2"
address = "nowhere.invalid:5240"
"#,
    )
    .expect("config");
    let d = Proc::spawn(
        &ns,
        maas_vip_tests::maas_vip_bin(),
        &["run", "-c", conf.to_str().expect("utf8 path")],
        &[("RUST_LOG", "info")],
        dir.path().join("maas-vip.log"),
    );

    // At start: r1 at A, r2 down with the reason; the daemon did not refuse to start. A
    // server starts up before its first check, and that check may find A not yet listening
    // (fall 1 takes r1 down until the next one), so wait for a passed check, not just "up".
    let started = wait_for(Duration::from_secs(10), || {
        status(&ns, &conf).is_some_and(|v| {
            server(&v, "r1").is_some_and(|s| {
                s["state"] == "up"
                    && s["last_check"]["passed"] == true
                    && s["resolution"]["current_address"] == "127.0.0.11:5240"
            }) && server(&v, "r2").is_some_and(|s| s["down_reason"] == "unresolved")
        })
    });
    if started.is_none() {
        print_logs(&[&d]);
        panic!("r1 never up at 127.0.0.11, or r2 never down as unresolved");
    }
    let v = status(&ns, &conf).expect("status");
    let r2 = server(&v, "r2").expect("r2");
    assert_eq!(r2["state"], "down", "{r2:#}");
    assert_eq!(r2["address"], "nowhere.invalid:5240", "{r2:#}");
    assert_eq!(r2["resolution"]["name"], "nowhere.invalid", "{r2:#}");
    assert!(r2["resolution"]["current_address"].is_null(), "{r2:#}");
    let err = r2["resolution"]["last_error"].as_str().unwrap_or_default();
    assert!(err.starts_with("unresolved: "), "{r2:#}");
    assert_eq!(v["frontends"][0]["servers_up"], 1, "{v:#}");

    let before = run_client(&ns, 20);
    assert_eq!(before, serde_json::json!({ "A": 20 }), "before the move");

    // The name moves to B: after re-resolution every request goes there, although the
    // proxy holds idle connections to A.
    etc.set_hosts("127.0.0.1 localhost\n127.0.0.12 region.test\n");
    let moved = wait_for(Duration::from_secs(5), || {
        status(&ns, &conf).is_some_and(|v| {
            server(&v, "r1")
                .is_some_and(|s| s["resolution"]["current_address"] == "127.0.0.12:5240")
        })
    });
    if moved.is_none() {
        print_logs(&[&d]);
        panic!("region.test never re-resolved to 127.0.0.12");
    }
    eprintln!("re-resolved after {moved:?} (resolve_interval 300ms)");
    let after = run_client(&ns, 20);
    assert_eq!(after, serde_json::json!({ "B": 20 }), "after the move");

    // The human view says the same.
    let human = ns
        .command(maas_vip_tests::maas_vip_bin())
        .args(["status", "-c"])
        .arg(&conf)
        .output()
        .expect("maas-vip status");
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("region.test:5240 -> 127.0.0.12:5240"),
        "{human}"
    );
    assert!(
        human.contains("nowhere.invalid:5240 -> (none)") && human.contains("(unresolved: "),
        "{human}"
    );
    let log = d.output();
    assert!(
        log.contains("region.test:5240 resolves to 127.0.0.12:5240 (was 127.0.0.11:5240)"),
        "{log}"
    );
    assert!(
        log.contains("server maas/r2 is DOWN (unresolved: nowhere.invalid:5240: "),
        "{log}"
    );
}
