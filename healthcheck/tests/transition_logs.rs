//! The log lines of state changes, as HAProxy writes them. In a test binary of its own: a
//! scoped tracing subscriber misses events whose callsites other tests, on other threads,
//! register at the same time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use healthcheck::checker::spawn_frontend_with;
use healthcheck::probe::Probe;
use healthcheck::{CheckConfig, CheckResult, CheckedFrontend, Health, Server, ServerState};
use tokio::sync::watch;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

/// Collects what a tracing subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// r1 (port 5241) is refused while `fail` is set; the others always answer 200.
struct R1Fails(AtomicBool);

impl Probe for R1Fails {
    async fn probe(&self, t: SocketAddr, _: &CheckConfig) -> CheckResult {
        if t.port() == 5241 && self.0.load(Ordering::SeqCst) {
            CheckResult::Refused
        } else {
            CheckResult::Connected
        }
    }
}

async fn time_until(state: &ServerState, h: Health, limit: Duration) {
    let t0 = Instant::now();
    while state.health() != h {
        assert!(t0.elapsed() < limit, "not {h:?} within {limit:?}");
        tokio::time::sleep(MS).await;
    }
}

#[tokio::test(start_paused = true)]
async fn transitions_are_logged_as_haproxy_does() {
    let out = Capture::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let cfg = CheckConfig {
        interval: 1000 * MS,
        fast_interval: Some(100 * MS),
        timeout: 300 * MS,
        rise: 2,
        fall: 3,
        ..CheckConfig::default()
    };
    let servers = (0..3u16)
        .map(|i| {
            let a = SocketAddr::from(([127, 0, 0, 1], 5240 + i));
            Server::new(Arc::new(ServerState::new(format!("r{i}"), a, false)), true)
        })
        .collect();
    let f = Arc::new(CheckedFrontend::new("maas", cfg, servers));
    let probe = Arc::new(R1Fails(AtomicBool::new(true)));
    let s1 = Arc::clone(&f.servers[1].state);
    let (_tx, rx) = watch::channel(false);
    let _task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
    time_until(&s1, Health::Down, 1500 * MS).await;
    probe.0.store(false, Ordering::SeqCst);
    time_until(&s1, Health::Up, 2500 * MS).await;

    let text = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf8");
    for want in [
        "health check for server maas/r1 failed (connection refused, check took 0 ms), going down 1/3",
        "health check for server maas/r1 failed (connection refused, check took 0 ms), going down 2/3",
        "server maas/r1 is DOWN (connection refused, check took 0 ms), 2 of 3 servers up",
        "health check for server maas/r1 succeeded (connected, check took 0 ms), going up 1/2",
        "server maas/r1 is UP (connected, check took 0 ms), 3 of 3 servers up",
        "frontend=maas server=r1 reason=connection refused check_ms=0 servers_up=2 servers_total=3",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    assert_eq!(text.matches(" WARN ").count(), 3, "{text}");
    assert!(
        !text.contains("r0"),
        "nothing logged of a steady server: {text}"
    );
}
