//! Health checks against stand-in regions on loopback (port 0): the checker marks a killed
//! region down and a restarted one up within the configured bounds, judges HTTP statuses,
//! and bounds a check that hangs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use healthcheck::{
    CheckConfig, CheckKind, CheckOverride, CheckResult, CheckedFrontend, Health, Registry, Server,
    ServerState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);
/// Allowance for scheduling on a loaded 2-core test machine, added to every bound.
const SLACK: Duration = Duration::from_millis(250);

/// What a stand-in region does with a request.
const ANSWER: u8 = 0;
const HANG: u8 = 1;

/// A stand-in region: answers every request with `status`, or accepts and never answers.
struct Region {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    mode: Arc<AtomicU8>,
    /// The last request head received.
    last_request: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl Region {
    async fn start(status: u16) -> Region {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        Region::serve(l, status)
    }

    /// Listen again on the address of a killed region.
    async fn restart(addr: SocketAddr, status: u16) -> Region {
        let l = TcpListener::bind(addr).await.expect("rebind the same port");
        Region::serve(l, status)
    }

    fn serve(l: TcpListener, status: u16) -> Region {
        let addr = l.local_addr().expect("bound");
        let status = Arc::new(AtomicU16::new(status));
        let mode = Arc::new(AtomicU8::new(ANSWER));
        let last_request = Arc::new(Mutex::new(String::new()));
        let (s, m, r) = (status.clone(), mode.clone(), last_request.clone());
        let task = tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                let (s, m, r) = (s.clone(), m.clone(), r.clone());
                tokio::spawn(async move { handle(c, &s, &m, &r).await });
            }
        });
        Region {
            addr,
            status,
            mode,
            last_request,
            task,
        }
    }

    /// Stop listening: once this returns, new connects are refused.
    async fn kill(self) -> SocketAddr {
        self.task.abort();
        // The listener is closed when the aborted task is dropped, which `await` waits for.
        let _ = self.task.await;
        self.addr
    }
}

async fn handle(mut c: TcpStream, status: &AtomicU16, mode: &AtomicU8, last: &Mutex<String>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return, // a TCP check: connect and close
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    *last.lock().expect("not poisoned") = String::from_utf8_lossy(&buf).into_owned();
    if mode.load(Ordering::SeqCst) == HANG {
        // Keep the connection open, say nothing.
        let _ = c.read(&mut chunk).await;
        std::future::pending::<()>().await;
    }
    let s = status.load(Ordering::SeqCst);
    let body = "{\"version\": \"3.5\"}";
    let resp = format!(
        "HTTP/1.1 {s} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = c.write_all(resp.as_bytes()).await;
    let _ = c.shutdown().await;
}

fn check(kind: CheckKind, interval_ms: u64, rise: u32, fall: u32) -> CheckConfig {
    CheckConfig {
        kind,
        interval: Duration::from_millis(interval_ms),
        timeout: 200 * MS,
        rise,
        fall,
        ..CheckConfig::default()
    }
}

/// A registry of one frontend "maas" over `addrs`, all checked.
fn registry(cfg: CheckConfig, addrs: &[SocketAddr]) -> Arc<Registry> {
    let servers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Server::new(
                Arc::new(ServerState::new(format!("r{}", i + 1), *a, false)),
                true,
            )
        })
        .collect();
    Arc::new(Registry::new(vec![CheckedFrontend::new(
        "maas", cfg, servers,
    )]))
}

fn state(reg: &Registry, name: &str) -> Arc<ServerState> {
    reg.server("maas", name).expect("server exists")
}

/// Time until `s` has health `h`, polled every 5ms; fails the test after `limit`.
async fn within(s: &ServerState, h: Health, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if s.health() == h {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() <= limit,
            "{} not {h:?} within {limit:?}; last check: {:?}",
            s.name,
            s.last_check()
        );
        tokio::time::sleep(5 * MS).await;
    }
}

/// Wait until `s` has completed `n` checks (bounded).
async fn checks_done(s: &ServerState, n: u64, limit: Duration) {
    let t0 = Instant::now();
    while s.counters.checks.load(Ordering::Relaxed) < n {
        assert!(
            t0.elapsed() <= limit,
            "{} did not run {n} checks in {limit:?}",
            s.name
        );
        tokio::time::sleep(5 * MS).await;
    }
}

#[tokio::test]
async fn killed_region_goes_down_within_fall_intervals_and_comes_back_within_rise() {
    let r1 = Region::start(200).await;
    let r2 = Region::start(200).await;
    let r3 = Region::start(200).await;
    let cfg = check(CheckKind::Tcp, 300, 2, 2);
    let reg = registry(cfg.clone(), &[r1.addr, r2.addr, r3.addr]);
    let (_tx, rx) = watch::channel(false);
    let _checks = healthcheck::spawn(&reg, rx);
    let s2 = state(&reg, "r2");
    checks_done(&s2, 2, 1000 * MS + SLACK).await;
    assert_eq!(s2.health(), Health::Up);

    let addr = r2.kill().await;
    let down_bound = cfg.interval * cfg.fall + cfg.timeout;
    let took = within(&s2, Health::Down, down_bound + SLACK).await;
    eprintln!("down after {took:?} (bound {down_bound:?})");
    assert_eq!(
        s2.last_check().map(|r| r.result),
        Some(CheckResult::Refused)
    );
    assert_eq!(reg.any_available("maas"), Some(true));
    assert!(state(&reg, "r1").is_available() && state(&reg, "r3").is_available());

    let _r2 = Region::restart(addr, 200).await;
    let up_bound = cfg.interval * cfg.rise;
    let took = within(&s2, Health::Up, up_bound + SLACK).await;
    eprintln!("up after {took:?} (bound {up_bound:?})");
    assert_eq!(s2.counters.transitions.load(Ordering::Relaxed), 2);
    drop((r1, r3));
}

#[tokio::test]
async fn http_check_sends_a_proper_request_and_passes_on_2xx() {
    let r = Region::start(200).await;
    let reg = registry(check(CheckKind::Http, 100, 2, 2), &[r.addr]);
    let (_tx, rx) = watch::channel(false);
    let _checks = healthcheck::spawn(&reg, rx);
    let s = state(&reg, "r1");
    checks_done(&s, 1, 500 * MS + SLACK).await;
    let report = s.last_check().expect("checked");
    assert_eq!(report.result, CheckResult::HttpOk(200));
    let req = r.last_request.lock().expect("not poisoned").clone();
    assert!(
        req.starts_with("GET /MAAS/api/2.0/version/ HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(req.contains(&format!("\r\nHost: {}\r\n", r.addr)), "{req}");
    assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
}

#[tokio::test]
async fn http_500_marks_down_and_200_brings_back() {
    let r = Region::start(200).await;
    let cfg = check(CheckKind::Http, 200, 2, 2);
    let reg = registry(cfg.clone(), &[r.addr]);
    let (_tx, rx) = watch::channel(false);
    let _checks = healthcheck::spawn(&reg, rx);
    let s = state(&reg, "r1");
    checks_done(&s, 1, 500 * MS + SLACK).await;

    r.status.store(500, Ordering::SeqCst);
    within(
        &s,
        Health::Down,
        cfg.interval * cfg.fall + cfg.timeout + SLACK,
    )
    .await;
    assert_eq!(
        s.last_check().map(|c| c.result),
        Some(CheckResult::HttpBadStatus(500))
    );
    assert_eq!(reg.any_available("maas"), Some(false));
    let status: serde_json::Value =
        serde_json::from_str(&reg.status_json()).expect("status is JSON");
    let srv = &status["frontends"][0]["servers"][0];
    assert_eq!(srv["state"], "down");
    assert_eq!(srv["last_check"]["http_status"], 500);
    assert_eq!(srv["last_check"]["detail"], "wrong HTTP status 500");

    r.status.store(200, Ordering::SeqCst);
    within(&s, Health::Up, cfg.interval * cfg.rise + SLACK).await;
}

#[tokio::test]
async fn expect_status_is_honoured() {
    // 204 passes "any 2xx/3xx" but not expect_status = 200; 302 passes by default; 404 never.
    for (answer, expect, passes) in [
        (204, None, true),
        (302, None, true),
        (404, None, false),
        (204, Some(200), false),
        (204, Some(204), true),
        (503, Some(503), true),
    ] {
        let r = Region::start(answer).await;
        let mut cfg = check(CheckKind::Http, 100, 1, 1);
        cfg.expect_status = expect;
        let reg = registry(cfg, &[r.addr]);
        let (tx, rx) = watch::channel(false);
        let checks = healthcheck::spawn(&reg, rx);
        let s = state(&reg, "r1");
        checks_done(&s, 2, 1000 * MS + SLACK).await;
        let result = s.last_check().expect("checked").result;
        assert_eq!(
            result.passed(),
            passes,
            "{answer} with expect {expect:?}: {result}"
        );
        assert_eq!(result.http_status(), Some(answer));
        assert_eq!(s.health() == Health::Up, passes);
        tx.send(true).expect("checker listens");
        tokio::time::timeout(500 * MS, checks)
            .await
            .expect("checks stop on shutdown")
            .expect("no panic");
    }
}

#[tokio::test]
async fn a_check_that_hangs_is_bounded_by_timeout() {
    let r = Region::start(200).await;
    r.mode.store(HANG, Ordering::SeqCst);
    let cfg = check(CheckKind::Http, 300, 2, 2);
    let reg = registry(cfg.clone(), &[r.addr]);
    let (_tx, rx) = watch::channel(false);
    let _checks = healthcheck::spawn(&reg, rx);
    let s = state(&reg, "r1");
    // Each hanging check costs `timeout`, and the next starts no sooner than the last ended.
    let bound = cfg.interval + (cfg.timeout + cfg.fast_interval()) * cfg.fall;
    within(&s, Health::Down, bound + SLACK).await;
    let report = s.last_check().expect("checked");
    assert_eq!(report.result, CheckResult::ResponseTimeout);
    assert!(
        report.duration >= cfg.timeout && report.duration <= cfg.timeout + 100 * MS,
        "check took {:?}",
        report.duration
    );
}

#[tokio::test]
async fn passive_failure_ejects_before_the_next_interval() {
    let r = Region::start(200).await;
    // An interval far longer than the test: only the passive re-check can find the failure.
    let mut cfg = check(CheckKind::Tcp, 60_000, 2, 2);
    cfg.fast_interval = Some(100 * MS);
    let reg = registry(cfg, &[r.addr]);
    let (_tx, rx) = watch::channel(false);
    let _checks = healthcheck::spawn(&reg, rx);
    let s = state(&reg, "r1");
    r.kill().await;
    s.observe_error(healthcheck::ProxyError::Refused);
    let took = within(&s, Health::Down, 100 * MS + SLACK).await;
    eprintln!("down {took:?} after the proxy's report");
}

#[tokio::test]
async fn per_server_port_override_sends_checks_elsewhere() {
    let traffic = Region::start(200).await;
    let health = Region::start(200).await;
    let mut cfg = check(CheckKind::Http, 100, 1, 1);
    cfg.path = "/health".into();
    let st = Arc::new(ServerState::new("r1", traffic.addr, false));
    let server = Server::new(Arc::clone(&st), true).with_override(CheckOverride {
        port: Some(health.addr.port()),
        ..CheckOverride::default()
    });
    let reg = Registry::new(vec![CheckedFrontend::new("maas", cfg, vec![server])]);
    let (_tx, rx) = watch::channel(false);
    let _checks = healthcheck::spawn(&reg, rx);
    checks_done(&st, 1, 500 * MS + SLACK).await;
    assert!(health
        .last_request
        .lock()
        .expect("ok")
        .starts_with("GET /health "));
    assert!(traffic.last_request.lock().expect("ok").is_empty());
}

/// A server that sends `reply` (maybe nothing) to each connection and closes it.
async fn replying(reply: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = l.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let _ = c.write_all(reply).await;
                let _ = c.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_check_fails_on_silence_close_and_garbage() {
    let closes = replying(b"").await;
    let ssh = replying(b"SSH-2.0-OpenSSH_9.6\r\n").await;
    let tcp_ok = replying(b"").await;
    let mut cfg = check(CheckKind::Http, 100, 1, 1);
    cfg.timeout = 500 * MS;
    let reg = registry(cfg.clone(), &[closes, ssh]);
    let tcp = registry(
        CheckConfig {
            kind: CheckKind::Tcp,
            ..cfg
        },
        &[tcp_ok],
    );
    let (_tx, rx) = watch::channel(false);
    let _a = healthcheck::spawn(&reg, rx.clone());
    let _b = healthcheck::spawn(&tcp, rx);
    for (reg, name, want) in [
        (&reg, "r1", CheckResult::Closed),
        (&reg, "r2", CheckResult::BadResponse),
        (&tcp, "r1", CheckResult::Connected),
    ] {
        let s = state(reg, name);
        checks_done(&s, 1, 500 * MS + SLACK).await;
        assert_eq!(s.last_check().map(|r| r.result), Some(want), "{name}");
        assert_eq!(s.health() == Health::Up, want.passed(), "{name}");
    }
}
