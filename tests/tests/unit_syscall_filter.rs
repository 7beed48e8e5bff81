//! The daemon under the shipped unit's system call filter (conf/maas-vip.service:
//! `SystemCallFilter=@system-service` plus the three io_uring calls, `SystemCallErrorNumber=EPERM`),
//! built as systemd builds it by tests/peers/unit-syscall-filter.py (systemd is not PID 1 on
//! the test machines, so the unit itself cannot be started): with `io = "io_uring"` the
//! engines start and serve, the daemon reloads and stops with exit 0; with a drop-in that
//! forbids io_uring (`SystemCallFilter=~io_uring_setup ...`), io_uring_setup fails with EPERM
//! and the daemon says so and serves on epoll.
//!
//! Needs systemd-analyze (to expand @system-service) and Debian's python3-seccomp (`.ci/run`
//! installs both), so the tests are `#[ignore]`d: run them with `--include-ignored`; where
//! either is missing they fail, saying so.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_vip_tests::{maas_vip_bin, unit_filter, wait_until_blocking};

const UNIT: &str = include_str!("../../conf/maas-vip.service");
const IO_URING_LINE: &str = "SystemCallFilter=io_uring_setup io_uring_enter io_uring_register";

/// A loopback region that writes `name` to each connection and closes it.
fn name_region(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind region");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(name.as_bytes());
        }
    });
    addr
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What a client gets through the frontend at `front`, or None.
fn fetch(front: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&front, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn config(front: SocketAddr, region: SocketAddr) -> String {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    format!(
        "io = \"io_uring\"\nshutdown_grace = \"1s\"\n\
         [[frontend]]\nname = \"maas\"\nbind = [\"{front}\"]\nmode = \"tcp\"\n\
         [[frontend.server]]\nname = \"r1\"\naddress = \"{region}\"\n\
         [admin]\nbind = \"{admin}\"\n"
    )
}

/// `maas-vip run` under the filter of `unit`, logging to `log`; killed on drop.
struct Daemon(Child);

impl Daemon {
    fn start(unit: &Path, config: &Path, log: &Path) -> Daemon {
        let child = Command::new(unit_filter::script())
            .arg(unit)
            .arg("--")
            .arg(maas_vip_bin())
            .args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("start the filter script");
        Daemon(child)
    }

    /// The names of the daemon's threads (the filter script execs it: same pid).
    fn threads(&self) -> Vec<String> {
        let dir = format!("/proc/{}/task", self.0.id());
        let Ok(tasks) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .map(|c| c.trim().to_owned())
            .collect()
    }

    /// kill(1) with `sig` ("HUP", "TERM") to the daemon.
    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args(["-s", sig, &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -s {sig}: {st}");
    }

    /// SIGTERM, then the exit code within 10 s.
    fn stop(&mut self, log: &Path) -> Option<i32> {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.0.try_wait().expect("wait") {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "no exit within 10 s of SIGTERM:\n{}",
                read(log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Runs the daemon (io = "io_uring", one tcp frontend) under the filter of `unit_text`: waits
/// until it serves, then hands it to `check` with its log, reloads it, stops it and returns
/// the log.
fn run_under(unit_text: &str, check: impl FnOnce(&Daemon, &str)) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("maas-vip.service");
    std::fs::write(&unit, unit_text).expect("unit");
    let region = name_region("r1");
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = dir.path().join("maas-vip.toml");
    std::fs::write(&cfg, config(front, region)).expect("config");
    let log = dir.path().join("maas-vip.log");
    let mut daemon = Daemon::start(&unit, &cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetch(front).as_deref() != Some("r1") {
        if let Some(st) = daemon.0.try_wait().expect("wait") {
            panic!("the daemon ended ({st}) before serving:\n{}", read(&log));
        }
        assert!(
            Instant::now() < deadline,
            "not serving within 10 s:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    check(&daemon, &read(&log));
    daemon.signal("HUP");
    wait_until_blocking("the reload applied", Duration::from_secs(5), || {
        read(&log).contains("reload applied")
    });
    assert_eq!(fetch(front).as_deref(), Some("r1"), "after the reload");
    let code = daemon.stop(&log);
    let text = read(&log);
    assert_eq!(code, Some(0), "exit after SIGTERM:\n{text}");
    text
}

/// Lines of the daemon's log that say something was not permitted.
fn refusals(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| !l.starts_with("unit-syscall-filter:"))
        .filter(|l| l.contains("not permitted") || l.contains("EPERM"))
        .collect()
}

#[test]
#[ignore = "needs systemd-analyze and python3-seccomp"]
fn io_uring_engines_run_under_the_units_system_call_filter() {
    unit_filter::require("io_uring_engines_run_under_the_units_system_call_filter");
    assert!(UNIT.contains(IO_URING_LINE), "the unit's io_uring line");
    let log = run_under(UNIT, |daemon, log| {
        let threads = daemon.threads();
        assert!(
            threads.iter().any(|t| t.starts_with("proxy-uring-")),
            "no engine thread in {threads:?}:\n{log}"
        );
    });
    assert!(
        log.contains("system calls allowed, any other one gets EPERM"),
        "the filter was not applied:\n{log}"
    );
    assert!(!log.contains("gives no io_uring"), "{log}");
    assert!(refusals(&log).is_empty(), "refused under the unit:\n{log}");
}

#[test]
#[ignore = "needs systemd-analyze and python3-seccomp"]
fn where_io_uring_is_forbidden_the_daemon_says_so_and_serves_on_epoll() {
    unit_filter::require("where_io_uring_is_forbidden_the_daemon_says_so_and_serves_on_epoll");
    // As a drop-in (systemctl edit maas-vip) of a site that forbids io_uring would add it.
    let unit = UNIT.replace(
        IO_URING_LINE,
        &format!(
            "{IO_URING_LINE}\nSystemCallFilter=~io_uring_setup io_uring_enter io_uring_register"
        ),
    );
    let log = run_under(&unit, |daemon, log| {
        let threads = daemon.threads();
        assert!(
            !threads.iter().any(|t| t.starts_with("proxy-uring-")),
            "an engine thread without io_uring: {threads:?}"
        );
        assert!(
            log.contains("this host gives no io_uring: the proxy runs on epoll"),
            "no warning:\n{log}"
        );
        let warning = log
            .lines()
            .find(|l| l.contains("gives no io_uring"))
            .unwrap_or_default();
        assert!(
            warning.contains("not permitted"),
            "the warning names no cause: {warning}"
        );
    });
    assert!(
        log.contains("system calls allowed, any other one gets EPERM"),
        "the filter was not applied:\n{log}"
    );
}
