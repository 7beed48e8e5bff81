//! Wiring of the daemon: listeners, health checks, proxy, VRRP, admin endpoint, signals.
//!
//! Shutdown runs in a fixed order: VRRP first (priority 0 advert, VIPs removed, so a peer takes
//! over while this host still serves), then listeners stop accepting and established
//! connections get `shutdown_grace` to finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use healthcheck::registry::{Frontend as HealthFrontend, Registry, Server as HealthServer};
use healthcheck::ServerState;
use lb::Frontend;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::Config;

/// Resolves on SIGTERM or SIGINT. SIGHUP is caught and logged: live reload is not in this
/// version yet, and the default action of SIGHUP would kill the daemon.
pub(crate) async fn signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); return; }
            _ = int.recv() => { info!("SIGINT: stopping"); return; }
            _ = hup.recv() => {
                warn!("SIGHUP: live reload is not available in this version; restart to apply a new config");
            }
        }
    }
}

/// Runs the daemon until `shutdown` resolves, then stops in order.
pub(crate) async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Bind everything first: a port we cannot have is a startup failure, not a log line.
    let mut bound = Vec::new();
    for f in &cfg.frontend {
        let mut listeners = Vec::new();
        for addr in f.bind.get_ref() {
            let l = lb::listener::bind(*addr)
                .with_context(|| format!("frontend `{}`", f.name.get_ref()))?;
            listeners.push(l);
        }
        bound.push(listeners);
    }
    let admin_listener = if cfg.admin.enabled {
        let addr = *cfg.admin.bind.get_ref();
        Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin endpoint: cannot bind {addr}"))?,
        )
    } else {
        None
    };

    // One ServerState per server, shared by checks, proxy and admin endpoint.
    let mut frontends = Vec::new();
    let mut health = Vec::new();
    for f in &cfg.frontend {
        let states: Vec<Arc<ServerState>> = f
            .server
            .iter()
            .map(|s| {
                Arc::new(ServerState::new(
                    s.name.get_ref().clone(),
                    *s.address.get_ref(),
                    s.disabled,
                ))
            })
            .collect();
        health.push(HealthFrontend::new(
            f.name.get_ref().clone(),
            f.check.clone(),
            states
                .iter()
                .zip(&f.server)
                .map(|(st, s)| HealthServer::new(st.clone(), s.check))
                .collect(),
        ));
        frontends.push(Arc::new(Frontend::new(f, states)));
    }
    let registry = Arc::new(Registry::new(health));

    let (vrrp_stop_tx, vrrp_stop) = watch::channel(false);
    let (proxy_stop_tx, proxy_stop) = watch::channel(false);

    let checks = healthcheck::spawn(&registry, proxy_stop.clone());

    let mut proxies = JoinSet::new();
    let grace = cfg.global.shutdown_grace;
    for (fe, listeners) in frontends.iter().zip(bound) {
        info!(frontend = %fe.name, servers = fe.snapshot().pool.members().len(), "frontend up");
        proxies.spawn(fe.clone().serve(listeners, proxy_stop.clone(), grace));
    }

    let admin = admin_listener.map(|l| {
        info!(bind = ?l.local_addr().ok(), "admin endpoint up");
        tokio::spawn(crate::admin::serve(l, registry.clone(), proxy_stop.clone()))
    });

    let vrrp_task = if cfg.vrrp.is_empty() {
        None
    } else {
        let reg = registry.clone();
        let probe: vrrp::BackendsProbe = Arc::new(move |name: &str| reg.any_available(name));
        Some(tokio::spawn(vrrp::run(cfg.vrrp.clone(), probe, vrrp_stop)))
    };

    // Run until a signal, or until VRRP fails on its own.
    let mut vrrp_task = vrrp_task;
    let vrrp_failed = tokio::select! {
        _ = shutdown => None,
        r = async { match vrrp_task.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
            vrrp_task = None;
            Some(r)
        }
    };

    // 1. VRRP releases the VIP.
    let _ = vrrp_stop_tx.send(true);
    if let Some(t) = vrrp_task {
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(Ok(()))) => info!("VRRP stopped, VIPs released"),
            Ok(Ok(Err(e))) => warn!(cause = %e, "VRRP stopped with an error"),
            Ok(Err(e)) => warn!(cause = %e, "VRRP task failed"),
            Err(_) => warn!("VRRP did not stop within 5s"),
        }
    }
    // 2. Listeners close, connections drain, checks and admin stop.
    let _ = proxy_stop_tx.send(true);
    while proxies.join_next().await.is_some() {}
    let _ = tokio::time::timeout(Duration::from_secs(2), checks).await;
    if let Some(a) = admin {
        let _ = tokio::time::timeout(Duration::from_secs(1), a).await;
    }
    match vrrp_failed {
        Some(Ok(Ok(()))) | None => Ok(()),
        Some(Ok(Err(e))) => Err(anyhow::Error::new(e).context("VRRP failed")),
        Some(Err(e)) => Err(anyhow::Error::new(e).context("VRRP task failed")),
    }
}
