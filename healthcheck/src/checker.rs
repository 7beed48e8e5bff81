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
use crate::outcome::{CheckReport, CheckResult};
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
        state.record_check(CheckReport {
            result,
            duration: took,
            at: SystemTime::now(),
        });
        let jitter = rand::rng().random::<f64>();
        if let Some(h) = m.finish_check(end.into_std(), result.passed(), jitter) {
            state.set_health(h);
            log_transition(&frontend, index, h, result, took);
        } else if !result.passed() {
            let (n, of) = m.progress();
            debug!(frontend = %frontend.name, server = %state.name, reason = %result,
                check_ms = took.as_millis() as u64, "check failed ({n} of {of})");
        }
    }
    debug!(frontend = %frontend.name, server = %state.name, "health checks stop");
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
