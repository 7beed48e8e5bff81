//! The tokio driver of the checks: one task per checked server, grouped per frontend.
//!
//! Each server task is a thin loop around its [`HealthMachine`]: sleep until the machine's
//! deadline (or until the proxy reports a failure, or shutdown), probe, publish the report
//! and any transition in the server's [`ServerState`](crate::ServerState), log transitions as HAProxy does.
//! When the proxy's errors took the server down ([`crate::passive`]), the task logs it and
//! puts its machine fully down, so that `rise` good checks bring the server back.
//!
//! A server whose address is a host name also has a resolver task that resolves the name every
//! `resolve_interval` ([`crate::resolve`]).
//!
//! A server with `check = false` has a smaller task: it waits for errors to take the server
//! down, logs it, and puts it back after `error_retry`.
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
use crate::passive::DownReason;
use crate::probe::{NetProbe, Probe};
use crate::registry::{CheckedFrontend, Registry};
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
pub fn spawn_frontend(
    frontend: Arc<CheckedFrontend>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_frontend_with(frontend, Arc::new(NetProbe), shutdown)
}

/// [`spawn_frontend`] with another probe (tests).
pub fn spawn_frontend_with<P: Probe>(
    frontend: Arc<CheckedFrontend>,
    probe: Arc<P>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut set = JoinSet::new();
        for (i, server) in frontend.servers.iter().enumerate() {
            let state = &server.state;
            state.set_error_limit(frontend.check_for(server).ejection_limit());
            if state.target().host().is_some() {
                set.spawn(run_resolver(Arc::clone(&frontend), i, shutdown.clone()));
            }
            if server.check {
                set.spawn(run_server(
                    Arc::clone(&frontend),
                    i,
                    Arc::clone(&probe),
                    shutdown.clone(),
                ));
                continue;
            }
            // Down by the checks of an earlier config: no check will bring it back. Down by
            // errors: its retry below does.
            if state.down_reason() == Some(DownReason::Check) {
                state.set_health(Health::Up);
                info!(frontend = %frontend.name, server = %state.name,
                    "server {}/{} is UP (check disabled)", frontend.name, state.name);
            }
            set.spawn(run_unchecked(Arc::clone(&frontend), i, shutdown.clone()));
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
    frontend: Arc<CheckedFrontend>,
    index: usize,
    probe: Arc<P>,
    mut shutdown: watch::Receiver<bool>,
) {
    let server = &frontend.servers[index];
    let state = &server.state;
    let cfg = frontend.check_for(server);
    // Spread first checks over one interval so servers are not probed in lockstep.
    let first = cfg.interval.mul_f64(rand::rng().random::<f64>());
    let mut m = HealthMachine::new(&cfg, state.health(), Instant::now().into_std(), first);
    // The probe bounds itself by `timeout`; this is the safety net should one not.
    let hard_limit = cfg.timeout + Duration::from_millis(100);
    debug!(frontend = %frontend.name, server = %state.name, target = %state.target(),
        "health checks start");
    // A deadline is set whenever no check runs, so this loops until shutdown.
    'checks: while let Some(deadline) = m.poll_timeout() {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            () = state.recheck_requested() => {
                let now = Instant::now().into_std();
                notice_ejection(&frontend, index, &mut m, now);
                m.request_recheck(now);
                continue;
            }
            () = sleep_until(Instant::from_std(deadline)) => {}
        }
        let start = Instant::now();
        m.start_check(start.into_std());
        // Each check goes to the address the name has now; without one, it fails unprobed.
        let target = server.check_target();
        let check = async {
            match target {
                Some(t) => timeout(hard_limit, probe.probe(t, &cfg))
                    .await
                    .unwrap_or(CheckResult::ResponseTimeout),
                None => CheckResult::Unresolved,
            }
        };
        tokio::pin!(check);
        let result = loop {
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break 'checks,
                // An ejection while the probe runs is logged at once; the probe's result
                // then counts towards bringing the server back.
                () = state.recheck_requested() => {
                    notice_ejection(&frontend, index, &mut m, Instant::now().into_std());
                }
                r = &mut check => break r,
            }
        };
        let end = Instant::now();
        let took = end - start;
        let before = m.progress();
        let jitter = rand::rng().random::<f64>();
        let transition = m.finish_check(end.into_std(), result.passed(), jitter);
        if let Some(role) = result.role() {
            // A promotion, or an old primary back as a standby: worth a line of its own.
            if let Some(was) = state.record_role(role).filter(|was| *was != role) {
                warn!(frontend = %frontend.name, server = %state.name, role = role.as_str(),
                    "server {}/{} changed role: {} -> {}", frontend.name, state.name,
                    was.as_str(), role.as_str());
            }
        }
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

/// If the proxy's errors took the server down since the machine last looked, log it and put
/// the machine fully down (`rise` good checks bring the server back).
fn notice_ejection(
    frontend: &CheckedFrontend,
    index: usize,
    m: &mut HealthMachine,
    now: std::time::Instant,
) {
    let state = &frontend.servers[index].state;
    if m.health() == Health::Up && state.down_reason() == Some(DownReason::Errors) {
        m.mark_down(now);
        log_ejection(frontend, index);
    }
}

/// A server whose address is a host name: resolve it every `resolve_interval` (at once if it
/// has no address yet). Runs until shutdown.
async fn run_resolver(
    frontend: Arc<CheckedFrontend>,
    index: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let state = &frontend.servers[index].state;
    let every = frontend.resolve_interval;
    // Never tried (a server made without the start-up resolution): at once.
    let mut next = if state.resolution() == crate::resolve::Resolution::pending() {
        Instant::now()
    } else {
        Instant::now() + every
    };
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            () = sleep_until(next) => {}
        }
        next = Instant::now() + every;
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            () = crate::resolve::resolve_now(&frontend.name, state) => {}
        }
    }
}

/// A server with `check = false`: when the proxy's errors take it down, log it and put it
/// back after `error_retry` (its first error then takes it down again). Runs until shutdown.
async fn run_unchecked(
    frontend: Arc<CheckedFrontend>,
    index: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let server = &frontend.servers[index];
    let state = &server.state;
    let retry = frontend.check_for(server).error_retry;
    // Down by errors already (kept across a reload): logged by the task before this one.
    let mut logged = state.down_reason() == Some(DownReason::Errors);
    loop {
        if state.down_reason() != Some(DownReason::Errors) {
            logged = false;
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return,
                () = state.recheck_requested() => continue,
            }
        }
        if !logged {
            log_ejection(&frontend, index);
            logged = true;
        }
        let since = state.last_ejection().map_or_else(Instant::now, |e| e.since);
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            () = sleep_until(since + retry) => {}
        }
        if state.retry_after_errors() {
            let (up, total) = (frontend.available(), frontend.servers.len());
            let secs = retry.as_secs_f64();
            info!(
                frontend = %frontend.name, server = %state.name, retry_s = secs,
                servers_up = up, servers_total = total,
                "server {}/{} is UP (tried again {secs} s after errors took it down; check \
                 disabled), {up} of {total} servers up",
                frontend.name, state.name
            );
        }
    }
}

/// `server maas/r2 is DOWN (10 consecutive errors, last: connection refused), 2 of 3 servers up`
fn log_ejection(frontend: &CheckedFrontend, index: usize) {
    let state = &frontend.servers[index].state;
    let why = state
        .last_ejection()
        .map_or_else(|| "consecutive errors".to_string(), |e| e.to_string());
    let up = frontend.available();
    let total = frontend.servers.len();
    warn!(
        frontend = %frontend.name, server = %state.name, reason = %why,
        servers_up = up, servers_total = total,
        "server {}/{} is DOWN ({why}), {up} of {total} servers up",
        frontend.name, state.name
    );
    warn_if_none_left(frontend, up);
}

fn warn_if_none_left(frontend: &CheckedFrontend, up: usize) {
    if up == 0 {
        error!(frontend = %frontend.name, "frontend {} has no server available", frontend.name);
    }
}

/// A check that moved a server towards the other state (or back) without flipping it:
/// `health check for server maas/r2 failed (connection refused, check took 0 ms), going
/// down 1/3`. Checks that change nothing (a down server still failing) are not logged.
fn log_progress(
    frontend: &CheckedFrontend,
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
fn log_transition(
    frontend: &CheckedFrontend,
    index: usize,
    h: Health,
    why: CheckResult,
    took: Duration,
) {
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
    warn_if_none_left(frontend, up);
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU8, Ordering};

    use super::*;
    use crate::config::{CheckConfig, OnError};
    use crate::passive::ProxyError;
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

    fn frontend(cfg: CheckConfig, check: &[bool]) -> Arc<CheckedFrontend> {
        let servers = check
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let a = SocketAddr::from(([127, 0, 0, 1], 5240 + i as u16));
                Server::new(Arc::new(ServerState::new(format!("r{i}"), a, false)), c)
            })
            .collect();
        Arc::new(CheckedFrontend::new("maas", cfg, servers))
    }

    /// Checks of one server with `c` (interval 60s) running, settled on their interval: the
    /// server's state, the probe, and the sender that stops them.
    async fn settled(mut c: CheckConfig) -> (Arc<ServerState>, Arc<Scripted>, watch::Sender<bool>) {
        c.interval = Duration::from_secs(60);
        let f = frontend(c, &[true]);
        let probe = Arc::new(Scripted::default());
        let (tx, rx) = watch::channel(false);
        let _task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        tokio::time::sleep(61 * 1000 * MS).await;
        (Arc::clone(&f.servers[0].state), probe, tx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_without_an_address_fails_its_checks_unprobed_and_is_checked_when_it_has_one() {
        use crate::resolve::{Resolution, Target};
        let st = Arc::new(ServerState::with_target(
            "r0",
            Target::Name {
                host: "region.invalid".into(),
                port: 5240,
            },
            false,
        ));
        // As the daemon leaves it after a failed start-up resolution; the next one is an hour
        // away, so this test makes no lookup.
        let now = std::time::Instant::now();
        st.set_resolution(Resolution::pending().next(
            Err("Name or service not known".into()),
            now,
            SystemTime::now(),
        ));
        let f = Arc::new(
            CheckedFrontend::new("maas", cfg(), vec![Server::new(Arc::clone(&st), true)])
                .with_resolve_interval(Duration::from_secs(3600)),
        );
        let probe = Arc::new(Scripted::default());
        probe.set(2); // a probe would hang: none may run
        let (_tx, rx) = watch::channel(false);
        let _task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        time_until(&st, Health::Down, Duration::from_secs(5)).await;
        let last = st.last_check().expect("a check");
        assert_eq!(last.result, CheckResult::Unresolved);
        assert_eq!(last.result.code(), "unresolved");
        assert!(!st.is_available());

        // The name resolves: the checker checks the new address at once, and `rise` good
        // checks bring it up.
        probe.set(0);
        let t0 = Instant::now();
        assert!(st.set_resolution(Resolution::fixed(SocketAddr::from(([127, 0, 0, 1], 1)))));
        let took = time_until(&st, Health::Up, Duration::from_secs(5)).await;
        assert!(took < 500 * MS, "took {took:?}");
        assert!(st.is_available());
        assert!(t0.elapsed() < Duration::from_secs(1));
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
        let (s, probe, _tx) = settled(cfg()).await;
        assert_eq!(s.health(), Health::Up);

        probe.set(1);
        assert_eq!(
            s.observe_error(ProxyError::Refused),
            None,
            "one error ejects nothing"
        );
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
        c.on_error = OnError::Recheck;
        let (s, _probe, _tx) = settled(c).await;
        let before = s.counters.checks.load(Ordering::Relaxed);
        // A healthy server the proxy (wrongly) reports every millisecond for one second.
        for _ in 0..1000 {
            s.observe_error(ProxyError::Reset);
            tokio::time::sleep(MS).await;
        }
        let rechecks = s.counters.checks.load(Ordering::Relaxed) - before;
        assert!(
            (5..=11).contains(&rechecks),
            "{rechecks} re-checks in one second"
        );
        assert_eq!(
            s.health(),
            Health::Up,
            "on_error = \"recheck\": errors alone never eject"
        );
        assert_eq!(s.counters.ejections.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_take_a_checked_server_down_and_rise_checks_bring_it_back() {
        // The check passes all along: it does not see what the proxy's connections meet.
        let (s, _probe, _tx) = settled(cfg()).await;
        assert_eq!(
            s.error_limit(),
            Some(10),
            "the default, set from the config"
        );

        for i in 1..10 {
            assert_eq!(s.observe_error(ProxyError::Refused), None, "error {i}");
        }
        assert_eq!(s.health(), Health::Up, "9 errors in a row: still up");
        let ej = s
            .observe_error(ProxyError::Refused)
            .expect("the 10th ejects");
        assert_eq!((ej.errors, ej.last), (10, ProxyError::Refused));
        assert_eq!(
            s.health(),
            Health::Down,
            "down on the spot, before any check"
        );
        assert_eq!(s.down_reason(), Some(DownReason::Errors));
        assert_eq!(s.counters.ejections.load(Ordering::Relaxed), 1);
        assert_eq!(s.consecutive_errors(), 0);
        assert_eq!(s.observe_error(ProxyError::Refused), None, "down already");

        // Two good checks (rise = 2), the first at once, the second a fast interval later.
        let before = s.counters.checks.load(Ordering::Relaxed);
        let took = time_until(&s, Health::Up, 1000 * MS).await;
        assert!(took >= 90 * MS, "up after one check: {took:?}");
        assert_eq!(s.counters.checks.load(Ordering::Relaxed) - before, 2);
        assert_eq!(s.down_reason(), None);
        assert_eq!(
            s.consecutive_errors(),
            0,
            "coming up starts the count again"
        );
        assert_eq!(s.counters.transitions.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejected_checked_server_stays_down_while_its_checks_fail() {
        let mut c = cfg();
        c.error_limit = 3;
        let (s, probe, _tx) = settled(c).await;
        probe.set(1);
        for _ in 0..3 {
            s.observe_error(ProxyError::ConnectTimeout);
        }
        assert_eq!(s.down_reason(), Some(DownReason::Errors));
        tokio::time::sleep(10 * 1000 * MS).await;
        assert_eq!(s.health(), Health::Down);
        assert!(s.counters.check_failures.load(Ordering::Relaxed) >= 4);
        probe.set(0);
        time_until(&s, Health::Up, 2500 * MS).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchecked_server_taken_down_by_errors_is_retried_after_error_retry() {
        let f = frontend(cfg(), &[false]);
        let probe = Arc::new(Scripted::default());
        let (_tx, rx) = watch::channel(false);
        let _task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        let s = Arc::clone(&f.servers[0].state);
        tokio::time::sleep(MS).await;
        for _ in 0..10 {
            s.observe_error(ProxyError::Refused);
        }
        assert_eq!(s.down_reason(), Some(DownReason::Errors));
        let took = time_until(&s, Health::Up, 11 * 1000 * MS).await;
        assert!(
            took >= 9990 * MS,
            "back after error_retry (10s), not {took:?}"
        );
        assert_eq!(s.counters.checks.load(Ordering::Relaxed), 0, "never probed");

        // On probation: its first error takes it down again, for another error_retry.
        assert!(s.observe_error(ProxyError::Refused).is_some());
        assert_eq!(s.health(), Health::Down);
        let took = time_until(&s, Health::Up, 11 * 1000 * MS).await;
        assert!(took >= 9990 * MS, "{took:?}");
        // A success ends the probation.
        s.observe_success();
        for _ in 0..9 {
            assert!(s.observe_error(ProxyError::Reset).is_none());
        }
        assert_eq!(s.health(), Health::Up);
        assert_eq!(s.counters.ejections.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_the_retry_time_of_an_ejected_unchecked_server() {
        let f = frontend(cfg(), &[false]);
        let s = Arc::clone(&f.servers[0].state);
        let probe = Arc::new(Scripted::default());
        let (tx, rx) = watch::channel(false);
        let task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        tokio::time::sleep(MS).await;
        for _ in 0..10 {
            s.observe_error(ProxyError::Refused);
        }
        tokio::time::sleep(6000 * MS).await;
        // Reload: the old checkers stop, new ones start with the same state.
        tx.send(true).expect("listening");
        task.await.expect("no panic");
        assert_eq!(s.down_reason(), Some(DownReason::Errors), "still down");
        let (_tx, rx) = watch::channel(false);
        let _task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        let took = time_until(&s, Health::Up, 5000 * MS).await;
        assert!(
            took <= 4100 * MS,
            "10s after the ejection, not after the reload: {took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn on_error_recheck_leaves_an_unchecked_server_in_rotation() {
        let mut c = cfg();
        c.on_error = OnError::Recheck;
        let f = frontend(c, &[false]);
        let probe = Arc::new(Scripted::default());
        let (_tx, rx) = watch::channel(false);
        let _task = spawn_frontend_with(Arc::clone(&f), Arc::clone(&probe), rx);
        let s = Arc::clone(&f.servers[0].state);
        tokio::time::sleep(MS).await;
        assert_eq!(s.error_limit(), None);
        for _ in 0..100 {
            assert!(s.observe_error(ProxyError::Refused).is_none());
        }
        assert_eq!(s.health(), Health::Up);
        assert_eq!(s.consecutive_errors(), 100);
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
