//! The tokio driver of the checks: one task per checked server, grouped per frontend.
//!
//! Each server task is a thin loop around its [`HealthMachine`]: sleep until the machine's
//! deadline (or until the proxy reports a failure, or shutdown), probe, publish the report
//! and any transition in the server's [`ServerState`], log transitions as HAProxy does.
//!
//! # Lifecycle
//! [`spawn`] starts the checks of every frontend the [`Registry`] holds now;
//! [`spawn_frontend`] those of one frontend. Both stop when the `shutdown` watch turns
//! `true` or its sender is dropped. On reload, store the new frontends in the registry, stop
//! the old checkers (their own `watch`), and spawn new ones: a task starts from the health
//! its `ServerState` has, so a down server reused across a reload stays down until it
//! rises.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, error, info, warn};

use crate::machine::HealthMachine;
use crate::outcome::{CheckReport, CheckResult, Progress};
use crate::probe::{NetProbe, Probe};
use crate::registry::{Frontend, Registry};
use crate::state::Health;

/// Start the checks of every frontend in `registry` now. The handle resolves once all have
/// stopped after `shutdown` turned true (or its sender was dropped).
pub fn spawn(registry: &Registry, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    let handles: Vec<_> = registry
        .frontends()
        .iter()
        .map(|f| spawn_frontend(Arc::clone(f), shutdown.clone()))
        .collect();
    tokio::spawn(async move {
        for h in handles {
            let _ = h.await;
        }
    })
}

/// Start the checks of one frontend's servers (those with `check = true`; the others are
/// set up and left alone). Resolves once they have stopped.
pub fn spawn_frontend(frontend: Arc<Frontend>, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    spawn_frontend_with(frontend, Arc::new(NetProbe), shutdown)
}

/// [`spawn_frontend`] with another probe (tests).
pub fn spawn_frontend_with<P: Probe>(
    frontend: Arc<Frontend>,
    probe: Arc<P>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut set = JoinSet::new();
        for i in 0..frontend.servers.len() {
            if frontend.servers[i].check {
                set.spawn(run_server(
                    Arc::clone(&frontend),
                    i,
                    Arc::clone(&probe),
                    shutdown.clone(),
                ));
            } else if frontend.servers[i].state.set_health(Health::Up) == Health::Down {
                info!(frontend = %frontend.name, server = %frontend.servers[i].state.name,
                    "server {}/{} is UP (check disabled)", frontend.name, frontend.servers[i].state.name);
            }
        }
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                // A bug, not a backend failure: say so loudly; the other servers keep going.
                error!(frontend = %frontend.name, cause = %e, "health check task failed");
            }
        }
    })
}

/// Resolves when `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|v| *v).await;
}

async fn run_server<P: Probe>(
    frontend: Arc<Frontend>,
    index: usize,
    probe: Arc<P>,
    mut shutdown: watch::Receiver<bool>,
) {
    let server = &frontend.servers[index];
    let state = &server.state;
    let cfg = frontend.check_for(server);
    let target = server.check_target();
    // Spread first checks over one interval so servers are not probed in lockstep.
    let first = cfg.interval.mul_f64(rand::rng().random::<f64>());
    let mut m = HealthMachine::new(&cfg, state.health(), Instant::now().into_std(), first);
    // The probe bounds itself by `timeout`; this is the safety net should one not.
    let hard_limit = cfg.timeout + Duration::from_millis(100);
    debug!(frontend = %frontend.name, server = %state.name, %target, "health checks start");
    // A deadline is set whenever no check runs, so this loops until shutdown.
    while let Some(deadline) = m.poll_timeout() {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            () = state.recheck_requested() => {
                m.request_recheck(Instant::now().into_std());
                continue;
            }
            () = sleep_until(Instant::from_std(deadline)) => {}
        }
        let start = Instant::now();
        m.start_check(start.into_std());
        let result = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            r = timeout(hard_limit, probe.probe(target, &cfg)) => {
                r.unwrap_or(CheckResult::ResponseTimeout)
            }
        };
        let end = Instant::now();
        let took = end - start;
        let before = m.progress();
        let jitter = rand::rng().random::<f64>();
        let transition = m.finish_check(end.into_std(), result.passed(), jitter);
        state.record_check(CheckReport {
            result,
            duration: took,
            at: SystemTime::now(),
            progress: m.progress(),
        });
        if let Some(h) = transition {
            state.set_health(h);
            log_transition(&frontend, index, h, result, took);
        } else if m.progress() != before {
            log_progress(&frontend, index, m.progress(), m.health(), result, took);
        }
    }
    debug!(frontend = %frontend.name, server = %state.name, "health checks stop");
}

/// A check that moved a server towards the other state (or back) without flipping it:
/// `health check for server maas/r2 failed (connection refused, check took 0 ms), going
/// down 1/3`. Checks that change nothing (a down server still failing) are not logged.
fn log_progress(
    frontend: &Frontend,
    index: usize,
    progress: Option<Progress>,
    health: Health,
    why: CheckResult,
    took: Duration,
) {
    let name = &frontend.servers[index].state.name;
    let ms = took.as_millis() as u64;
    let now = match (progress, health) {
        (Some(p), _) => p.to_string(),
        (None, Health::Up) => "UP".to_string(),
        (None, Health::Down) => "DOWN".to_string(),
    };
    if why.passed() {
        info!(
            frontend = %frontend.name, server = %name, reason = %why, check_ms = ms,
            status = %now,
            "health check for server {}/{} succeeded ({why}, check took {ms} ms), {now}",
            frontend.name, name
        );
    } else {
        warn!(
            frontend = %frontend.name, server = %name, reason = %why, check_ms = ms,
            status = %now,
            "health check for server {}/{} failed ({why}, check took {ms} ms), {now}",
            frontend.name, name
        );
    }
}

/// `server maas/r2 is DOWN (connection refused, check took 1 ms), 2 of 3 servers up`
fn log_transition(frontend: &Frontend, index: usize, h: Health, why: CheckResult, took: Duration) {
    let name = &frontend.servers[index].state.name;
    let up = frontend.available();
    let total = frontend.servers.len();
    let ms = took.as_millis() as u64;
    match h {
        Health::Up => info!(
            frontend = %frontend.name, server = %name, reason = %why, check_ms = ms,
            servers_up = up, servers_total = total,
            "server {}/{} is UP ({why}, check took {ms} ms), {up} of {total} servers up",
            frontend.name, name
        ),
        Health::Down => warn!(
            frontend = %frontend.name, server = %name, reason = %why, check_ms = ms,
            servers_up = up, servers_total = total,
            "server {}/{} is DOWN ({why}, check took {ms} ms), {up} of {total} servers up",
            frontend.name, name
        ),
    }
    if up == 0 {
        error!(frontend = %frontend.name, "frontend {} has no server available", frontend.name);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU8, Ordering};

    use super::*;
    use crate::config::CheckConfig;
    use crate::registry::Server;
    use crate::state::ServerState;

    const MS: Duration = Duration::from_millis(1);

    /// A probe whose answer the test sets: 0 pass, 1 fail (refused), 2 hang forever.
    #[derive(Default)]
    struct Scripted(AtomicU8);

    impl Scripted {
        fn set(&self, v: u8) {
            self.0.store(v, Ordering::SeqCst);
        }
    }

    impl Probe for Scripted {
        async fn probe(&self, _: SocketAddr, _: &CheckConfig) -> CheckResult {
            match self.0.load(Ordering::SeqCst) {
                0 => CheckResult::Connected,
                1 => CheckResult::Refused,
                _ => std::future::pending().await,
            }
        }
    }

    fn cfg() -> CheckConfig {
        CheckConfig {
            interval: 1000 * MS,
            fast_interval: Some(100 * MS),
            down_interval: Some(2000 * MS),
            timeout: 300 * MS,
            rise: 2,
            fall: 3,
            ..CheckConfig::default()
        }
    }

    fn frontend(cfg: CheckConfig, check: &[bool]) -> Arc<Frontend> {
        let servers = check
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let a = SocketAddr::from(([127, 0, 0, 1], 5240 + i as u16));
                Server::new(Arc::new(ServerState::new(format!("r{i}"), a, false)), c)
            })
            .collect();
        Arc::new(Frontend::new("maas", cfg, servers))
    }

    /// Virtual time until `state` has health `h`, polled every millisecond, at most `limit`.
    async fn time_until(state: &ServerState, h: Health, limit: Duration) -> Duration {
        let t0 = Instant::now();
        while state.health() != h {
            assert!(t0.elapsed() < limit, "not {h:?} within {limit:?}");
            tokio::time::sleep(MS).await;
        }
        t0.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn down_after_fall_fast_checks_and_up_after_rise() {
        let f = frontend(cfg(), &[true]);
        let probe = Arc::new(Scripted::default());
        let (tx, rx) = watch::channel(false);
        let task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        let s = Arc::clone(&f.servers[0].state);

        // Let it settle on its regular interval, then kill the server.
        tokio::time::sleep(3000 * MS).await;
        assert_eq!(s.health(), Health::Up);
        let checks = s.counters.checks.load(Ordering::Relaxed);
        assert!(
            (2..=4).contains(&checks),
            "about one check a second, got {checks}"
        );
        probe.set(1);
        // Next regular check within `interval`, then two more at `fast_interval`.
        let took = time_until(&s, Health::Down, 1300 * MS).await;
        assert!(
            took >= 180 * MS,
            "three failures needed, down after {took:?}"
        );
        assert_eq!(s.counters.transitions.load(Ordering::Relaxed), 1);
        assert_eq!(s.last_check().map(|r| r.result), Some(CheckResult::Refused));

        // Back: first success within `down_interval`, the second at `fast_interval`.
        probe.set(0);
        let took = time_until(&s, Health::Up, 2200 * MS).await;
        assert!(took >= 90 * MS, "two successes needed, up after {took:?}");
        assert_eq!(s.counters.transitions.load(Ordering::Relaxed), 2);

        tx.send(true).expect("checker listens");
        timeout(100 * MS, task)
            .await
            .expect("stops at once")
            .expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn passive_failure_rechecks_at_once() {
        let mut c = cfg();
        c.interval = Duration::from_secs(60);
        let f = frontend(c, &[true]);
        let probe = Arc::new(Scripted::default());
        let (_tx, rx) = watch::channel(false);
        let _task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        let s = Arc::clone(&f.servers[0].state);
        tokio::time::sleep(61 * 1000 * MS).await;
        assert_eq!(s.health(), Health::Up);

        probe.set(1);
        s.observe_connect_failure();
        // At once, then two fast re-checks: far sooner than the 60s interval.
        let took = time_until(&s, Health::Down, 300 * MS).await;
        assert!(
            took >= 180 * MS,
            "two jittered fast intervals, down after {took:?}"
        );
        assert_eq!(s.counters.connect_failures.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn passive_failure_storm_is_rate_limited() {
        let mut c = cfg();
        c.interval = Duration::from_secs(60);
        let f = frontend(c, &[true]);
        let probe = Arc::new(Scripted::default());
        let (_tx, rx) = watch::channel(false);
        let _task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        let s = Arc::clone(&f.servers[0].state);
        tokio::time::sleep(61 * 1000 * MS).await;
        let before = s.counters.checks.load(Ordering::Relaxed);
        // A healthy server the proxy (wrongly) reports every millisecond for one second.
        for _ in 0..1000 {
            s.observe_reset();
            tokio::time::sleep(MS).await;
        }
        let rechecks = s.counters.checks.load(Ordering::Relaxed) - before;
        assert!(
            (5..=11).contains(&rechecks),
            "{rechecks} re-checks in one second"
        );
        assert_eq!(s.health(), Health::Up, "passive failures alone never eject");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_is_bounded_and_counts_as_failure() {
        let mut c = cfg();
        c.fall = 1;
        let f = frontend(c, &[true]);
        let probe = Arc::new(Scripted::default());
        probe.set(2);
        let (_tx, rx) = watch::channel(false);
        let _task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        let s = Arc::clone(&f.servers[0].state);
        time_until(&s, Health::Down, 1500 * MS).await;
        let r = s.last_check().expect("a check ran");
        assert_eq!(r.result, CheckResult::ResponseTimeout);
        assert!(r.duration <= 400 * MS, "{:?}", r.duration);
    }

    #[tokio::test(start_paused = true)]
    async fn unchecked_servers_stay_up_and_are_not_probed() {
        let f = frontend(cfg(), &[false, true]);
        f.servers[0].state.set_health(Health::Down); // as left by an earlier config
        let probe = Arc::new(Scripted::default());
        probe.set(1);
        let (tx, rx) = watch::channel(false);
        let task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        time_until(&f.servers[1].state, Health::Down, 1500 * MS).await;
        assert_eq!(f.servers[0].state.health(), Health::Up);
        assert_eq!(
            f.servers[0].state.counters.checks.load(Ordering::Relaxed),
            0
        );
        assert!(f.servers[0].state.last_check().is_none());
        drop(tx);
        timeout(100 * MS, task)
            .await
            .expect("a dropped sender stops the checks")
            .expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_server_kept_across_reload_stays_down_until_it_rises() {
        let f = frontend(cfg(), &[true]);
        let s = Arc::clone(&f.servers[0].state);
        s.set_health(Health::Down);
        let probe = Arc::new(Scripted::default());
        let (_tx, rx) = watch::channel(false);
        let _task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        // First check within one interval; the second (rise = 2) one fast interval later.
        let took = time_until(&s, Health::Up, 1200 * MS).await;
        assert!(s.counters.checks.load(Ordering::Relaxed) >= 2, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn spawn_covers_every_frontend() {
        let a = frontend(cfg(), &[true]);
        let reg = Registry::new(vec![(*a).clone()]);
        let (tx, rx) = watch::channel(false);
        let task = spawn(&reg, rx);
        tokio::time::sleep(1100 * MS).await;
        let s = reg.server("maas", "r0").expect("exists");
        // Nothing listens on 127.0.0.1:5240 in a paused-time unit test, or something might:
        // either way one check ran.
        assert!(s.counters.checks.load(Ordering::Relaxed) >= 1);
        tx.send(true).expect("listening");
        timeout(100 * MS, task)
            .await
            .expect("stops")
            .expect("no panic");
    }
}
