//! The real `maas-vip run` on loopback: live reload on SIGHUP and a clean stop on SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_vip_tests::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn config(front: u16, admin: u16, servers: &[(&str, SocketAddr)], extra: &str) -> String {
    let mut t = format!(
        "shutdown_grace = \"2s\"\n[[frontend]]\nname = \"maas\"\nbind = [\"127.0.0.1:{front}\"]\n\
         check = {{ kind = \"tcp\", interval = \"200ms\", rise = 1, fall = 1 }}\n{extra}\n"
    );
    for (n, a) in servers {
        t.push_str(&format!(
            "[[frontend.server]]\nname = \"{n}\"\naddress = \"{a}\"\n"
        ));
    }
    t.push_str(&format!("[admin]\nbind = \"127.0.0.1:{admin}\"\n"));
    t
}

fn status(admin: u16) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let body = out.split("\r\n\r\n").nth(1)?;
    serde_json::from_str(body).ok()
}

fn server_names(admin: u16) -> Vec<String> {
    status(admin)
        .and_then(|v| {
            v["frontends"][0]["servers"].as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s["name"].as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("pid");
    #[allow(unsafe_code)]
    // SAFETY: kill(2) has no memory-safety preconditions; a bad pid only returns an error.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill failed");
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_config_keeps_connections_and_rejects_a_bad_one() {
    let r1 = echo_server(b"").await;
    let r2 = name_server("r2").await;
    let r3 = name_server("r3").await;
    let (front, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("maas-vip.toml");
    std::fs::write(&path, config(front, admin, &[("r1", r1), ("r2", r2)], "")).expect("write");

    let child = Command::new(maas_vip_bin())
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start maas-vip");
    let mut daemon = Daemon(child);
    wait_for("the frontend", Duration::from_secs(10), || {
        server_names(admin).len() == 2
    });

    // A long-lived connection through the proxy (round robin: first to r1, the echo server).
    let front_addr = SocketAddr::from(([127, 0, 0, 1], front));
    let mut long = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(front_addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        s.write_all(b"before").expect("write");
        let mut b = [0u8; 6];
        s.read_exact(&mut b).expect("echo before reload");
        assert_eq!(&b, b"before");
        s
    })
    .await
    .expect("client");

    // Add a server.
    std::fs::write(
        &path,
        config(front, admin, &[("r1", r1), ("r2", r2), ("r3", r3)], ""),
    )
    .expect("write");
    signal(&daemon.0, libc::SIGHUP);
    wait_for("three servers after reload", Duration::from_secs(5), || {
        server_names(admin) == ["r1", "r2", "r3"]
    });

    // A broken file is rejected; the running config stays.
    std::fs::write(&path, "[[frontend]]\nname = \"maas\"\nbindd = 1\n").expect("write");
    signal(&daemon.0, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server_names(admin), ["r1", "r2", "r3"]);
    assert!(
        daemon.0.try_wait().expect("wait").is_none(),
        "daemon died on a bad reload"
    );

    // The connection opened before both reloads still works.
    long.write_all(b"after!").expect("write after reload");
    let mut b = [0u8; 6];
    long.read_exact(&mut b).expect("echo after reload");
    assert_eq!(&b, b"after!");
    drop(long);

    // SIGTERM: clean exit 0.
    signal(&daemon.0, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(st) = daemon.0.try_wait().expect("wait") {
            break st.code();
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn check_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        config(
            8080,
            5249,
            &[("r1", SocketAddr::from(([10, 0, 0, 11], 5240)))],
            "",
        ),
    )
    .expect("write");
    let out = Command::new(maas_vip_bin())
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(0));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[frontend]]\nname = \"maas\"\nprioirty = 1\n").expect("write");
    let out = Command::new(maas_vip_bin())
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:1: unknown field `prioirty`"),
        "{err}"
    );

    let out = Command::new(maas_vip_bin())
        .args(["check", "-c"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(2));

    let out = Command::new(maas_vip_bin())
        .arg("frobnicate")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn import_of_the_guide_setup_passes_check() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/import");
    let out = Command::new(maas_vip_bin())
        .arg("import")
        .arg("--keepalived")
        .arg(fixtures.join("guide-keepalived.conf"))
        .arg("--haproxy")
        .arg(fixtures.join("guide-haproxy.cfg"))
        .output()
        .expect("run import");
    assert_eq!(out.status.code(), Some(0));
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(
        notes.contains("HAProxy ignores `retries 3` in a frontend"),
        "{notes}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("imported.toml");
    std::fs::write(&path, &out.stdout).expect("write");
    let check = Command::new(maas_vip_bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run check");
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// `[::]` alone is dual-stack; a reload that adds an IPv4 bind on its port (which would make
/// it IPv6-only) is refused with the reason and the running listener keeps both families;
/// removing `[::]` in one reload and adding it beside the IPv4 bind in the next works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_to_flip_a_dual_stack_listener() {
    let r = name_server("r").await;
    let port = std::net::TcpListener::bind("[::]:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let admin = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("maas-vip.toml");
    let log = dir.path().join("maas-vip.log");
    let conf = |binds: &str| {
        format!(
            "[[frontend]]\nname = \"maas\"\nbind = [{binds}]\n\
             check = {{ kind = \"tcp\", interval = \"200ms\", rise = 1, fall = 1 }}\n\
             [[frontend.server]]\nname = \"r\"\naddress = \"{r}\"\n\
             [admin]\nbind = \"127.0.0.1:{admin}\"\n"
        )
    };
    let dual = format!("\"[::]:{port}\"");
    let v4 = format!("\"0.0.0.0:{port}\"");
    std::fs::write(&path, conf(&dual)).expect("write");
    let child = Command::new(maas_vip_bin())
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start maas-vip");
    let daemon = Daemon(child);
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the frontend", Duration::from_secs(10), || {
        server_names(admin).len() == 1
    });
    let name_via = |ip: &str| -> String {
        let mut s = TcpStream::connect((ip, port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    // The server comes up after its first check: wait until IPv4 gets through.
    wait_for("IPv4 through [::]", Duration::from_secs(5), || {
        name_via("127.0.0.1") == "r"
    });
    assert_eq!(name_via("::1"), "r");

    std::fs::write(&path, conf(&format!("{dual}, {v4}"))).expect("write");
    signal(&daemon.0, libc::SIGHUP);
    wait_for("the reload refused", Duration::from_secs(5), || {
        output().contains("would change from dual-stack to IPv6-only")
    });
    assert_eq!(name_via("127.0.0.1"), "r", "IPv4 still through [::]");

    // In two steps it works: [::] out, then back beside the IPv4 bind.
    for (step, binds) in [(1, v4.clone()), (2, format!("{dual}, {v4}"))] {
        std::fs::write(&path, conf(&binds)).expect("write");
        signal(&daemon.0, libc::SIGHUP);
        wait_for("the reload applied", Duration::from_secs(5), || {
            output().matches("reload applied").count() == step
        });
    }
    assert_eq!(name_via("127.0.0.1"), "r");
    assert_eq!(name_via("::1"), "r");
    assert!(
        !output().contains("reload rejected: bind 0.0.0.0"),
        "{}",
        output()
    );
}
