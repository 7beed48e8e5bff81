//! Live reload and a clean stop: in-process through [`daemon::Handle`] (each reload
//! acknowledged with its outcome), and on the real `maas-vip run` through SIGHUP and SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{Listeners, Reload};
use maas_vip_tests::*;

/// For the real binary only, which binds its ports itself: a port free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn config(
    front: SocketAddr,
    admin: SocketAddr,
    servers: &[(&str, SocketAddr)],
    extra: &str,
) -> String {
    let mut t = format!(
        "shutdown_grace = \"2s\"\n[[frontend]]\nname = \"maas\"\nbind = [\"{front}\"]\n\
         check = {{ kind = \"tcp\", interval = \"200ms\", rise = 1, fall = 1 }}\n{extra}\n"
    );
    for (n, a) in servers {
        t.push_str(&format!(
            "[[frontend.server]]\nname = \"{n}\"\naddress = \"{a}\"\n"
        ));
    }
    t.push_str(&format!("[admin]\nbind = \"{admin}\"\n"));
    t
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `/status` of the real binary's admin endpoint, if it answers.
fn status(admin: SocketAddr) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let body = out.split("\r\n\r\n").nth(1)?;
    serde_json::from_str(body).ok()
}

fn server_names(admin: SocketAddr) -> Vec<String> {
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
async fn reload_applies_a_new_config_keeps_connections_and_rejects_a_bad_one() {
    let r1 = echo_server(b"").await;
    let r2 = name_server("r2").await;
    let r3 = name_server("r3").await;
    let (front_l, front) = loopback_listener();
    let (admin_l, admin) = loopback_listener();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = TestDaemon::start(
        &dir.path().join("maas-vip.toml"),
        &config(front, admin, &[("r1", r1), ("r2", r2)], ""),
        Listeners::new().frontend(front_l).admin(admin_l),
    )
    .await;
    assert_eq!(d.server_names(0), ["r1", "r2"]);
    assert_eq!(d.handle.frontend_addrs("maas"), [front]);
    assert_eq!(d.handle.admin_addr(), Some(admin));

    // A long-lived connection through the proxy (round robin: first to r1, the echo server).
    let mut long = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(front).expect("connect");
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

    // Add a server: applied once the reload answers.
    let outcome = d
        .reload(&config(
            front,
            admin,
            &[("r1", r1), ("r2", r2), ("r3", r3)],
            "",
        ))
        .await;
    let Reload::Applied(summary) = outcome else {
        panic!("reload refused: {outcome:?}");
    };
    assert!(summary.contains("1 updated"), "{summary}");
    assert_eq!(d.server_names(0), ["r1", "r2", "r3"]);

    // The proxy threads are started once: a new `workers` or `io` waits for a restart, and the
    // reload says so.
    let threads = config(front, admin, &[("r1", r1), ("r2", r2), ("r3", r3)], "").replace(
        "shutdown_grace = \"2s\"\n",
        "shutdown_grace = \"2s\"\nworkers = 1\nio = \"io_uring\"\n",
    );
    let Reload::Applied(summary) = d.reload(&threads).await else {
        panic!("a reload with new workers and io refused");
    };
    assert!(
        summary.contains("; workers and io need a restart (running ")
            && summary.ends_with(" on Epoll)"),
        "{summary}"
    );

    // A broken file is rejected with the reason; the running config stays.
    let outcome = d.reload("[[frontend]]\nname = \"maas\"\nbindd = 1\n").await;
    let Reload::Rejected(why) = outcome else {
        panic!("a broken file applied: {outcome:?}");
    };
    assert!(why.contains("unknown field `bindd`"), "{why}");
    assert_eq!(d.server_names(0), ["r1", "r2", "r3"]);

    // The connection opened before both reloads still works.
    let mut b = [0u8; 6];
    long.write_all(b"after!").expect("write after reload");
    long.read_exact(&mut b).expect("echo after reload");
    assert_eq!(&b, b"after!");
    drop(long);

    d.handle.stop().await.expect("a clean stop");
    assert!(
        TcpStream::connect(front).is_err(),
        "the listener is closed once stopped"
    );
}

/// A port the daemon cannot have is a startup error, and so is a socket handed in for an
/// address the config does not bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_on_a_taken_port_or_a_stray_socket() {
    let r1 = name_server("r1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("maas-vip.toml");
    let (taken, front) = loopback_listener();
    let (admin_l, admin) = loopback_listener();
    std::fs::write(&path, config(front, admin, &[("r1", r1)], "")).expect("write");
    let start = |listeners: Listeners| {
        let path = path.clone();
        async move {
            let (file, _) = daemon::ConfigFile::load(&path).expect("a usable config");
            let (_tx, signals) = daemon::Signals::channel();
            daemon::run(file, listeners, signals).await
        }
    };
    let e = start(Listeners::new().admin(admin_l))
        .await
        .expect_err("the frontend's port is taken");
    let e = format!("{e:#}");
    assert!(
        e.contains(&format!("frontend `maas`: cannot bind {front}")),
        "{e}"
    );

    // The same port handed in works; a socket beside it that the config does not name fails.
    let (stray, at) = loopback_listener();
    let e = start(Listeners::new().frontend(taken).frontend(stray))
        .await
        .expect_err("a socket the config does not bind");
    let e = format!("{e:#}");
    assert!(
        e.contains(&format!(
            "a socket was handed in for {at}, which no frontend binds"
        )),
        "{e}"
    );
}

/// The real binary: SIGHUP reloads (the log says applied, then rejected), SIGTERM exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_stops_the_binary_with_exit_0() {
    let r1 = name_server("r1").await;
    let r2 = name_server("r2").await;
    let (front, admin) = (loopback(free_port()), loopback(free_port()));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("maas-vip.toml");
    let log = dir.path().join("maas-vip.log");
    std::fs::write(&path, config(front, admin, &[("r1", r1)], "")).expect("write");
    let child = Command::new(maas_vip_bin())
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start maas-vip");
    let mut daemon = Daemon(child);
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until_blocking("the frontend", Duration::from_secs(10), || {
        server_names(admin).len() == 1
    });

    std::fs::write(&path, config(front, admin, &[("r1", r1), ("r2", r2)], "")).expect("write");
    signal(&daemon.0, libc::SIGHUP);
    wait_until_blocking("the reload applied", Duration::from_secs(5), || {
        output().contains("reload applied")
    });
    assert_eq!(server_names(admin), ["r1", "r2"]);

    // A broken file: the log says it was rejected; the daemon runs on with the running config.
    std::fs::write(&path, "[[frontend]]\nname = \"maas\"\nbindd = 1\n").expect("write");
    signal(&daemon.0, libc::SIGHUP);
    wait_until_blocking("the reload rejected", Duration::from_secs(5), || {
        output().contains("reload rejected")
    });
    assert_eq!(server_names(admin), ["r1", "r2"]);
    assert!(
        daemon.0.try_wait().expect("wait").is_none(),
        "daemon died on a bad reload"
    );

    // SIGTERM: clean exit 0.
    signal(&daemon.0, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(st) = daemon.0.try_wait().expect("wait") {
            break st.code();
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "{}", output());
}

#[test]
fn check_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        config(
            loopback(8080),
            loopback(5249),
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
    // Dual-stack with SO_REUSEPORT, as the daemon binds `[::]:port` alone.
    let dual_l = lb::listener::bind_shared("[::]:0".parse().expect("literal"), 1, true)
        .expect("bind [::]:0")
        .pop()
        .expect("one socket");
    let port = dual_l.local_addr().expect("bound").port();
    let conf = |binds: &str| {
        format!(
            "[[frontend]]\nname = \"maas\"\nbind = [{binds}]\n\
             check = {{ kind = \"tcp\", interval = \"200ms\", rise = 1, fall = 1 }}\n\
             [[frontend.server]]\nname = \"r\"\naddress = \"{r}\"\n\
             [admin]\nenabled = false\n"
        )
    };
    let dual = format!("\"[::]:{port}\"");
    let v4 = format!("\"0.0.0.0:{port}\"");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = TestDaemon::start(
        &dir.path().join("maas-vip.toml"),
        &conf(&dual),
        Listeners::new().frontend(dual_l),
    )
    .await;
    let name_via = |ip: &str| -> String {
        let mut s = TcpStream::connect((ip, port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert_eq!(name_via("127.0.0.1"), "r", "IPv4 through [::]");
    assert_eq!(name_via("::1"), "r");

    let outcome = d.reload(&conf(&format!("{dual}, {v4}"))).await;
    let Reload::Rejected(why) = outcome else {
        panic!("the flip applied: {outcome:?}");
    };
    assert!(
        why.contains("would change from dual-stack to IPv6-only"),
        "{why}"
    );
    assert_eq!(name_via("127.0.0.1"), "r", "IPv4 still through [::]");

    // In two steps it works: [::] out, then back beside the IPv4 bind.
    for binds in [v4.clone(), format!("{dual}, {v4}")] {
        let outcome = d.reload(&conf(&binds)).await;
        assert!(
            matches!(outcome, Reload::Applied(_)),
            "{binds}: {outcome:?}"
        );
    }
    assert_eq!(name_via("127.0.0.1"), "r");
    assert_eq!(name_via("::1"), "r");
    d.handle.stop().await.expect("a clean stop");
}
