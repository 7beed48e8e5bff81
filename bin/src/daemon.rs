//! Wiring of the daemon: listeners, health checks, proxy, VRRP, admin endpoint, signals,
//! live reload.
//!
//! Shutdown runs in a fixed order: VRRP first (priority 0 advert, VIPs removed, so a peer takes
//! over while this host still serves) and, at the same time, every `[[announce]]` block's
//! VIPs withdrawn from the routing daemon; then, once the longest `drain_delay` has passed
//! (the router has moved new flows to other hosts), listeners stop accepting and established
//! connections get `shutdown_grace` to finish; last, the VIP interfaces are deleted.
//!
//! Reload (SIGHUP) reads and validates the file; on any error the running config stays and the
//! reason is logged. Otherwise it is applied without dropping established connections:
//! servers are matched by name and address as written (a kept server keeps its health,
//! counters and, for a host name, its resolution; new names are resolved before use),
//! listeners by address (a kept address keeps its sockets), VRRP instances by name (an
//! unchanged one keeps running; a changed one is updated in place — priority, VIPs, track
//! scripts, timers, auth — and restarted only when its name, interface, VRID or version change,
//! which releases its VIP first). `[[announce]]` blocks by name: an unchanged one keeps
//! running; a changed one is restarted (withdrawn, its VIP interface deleted and created again,
//! announced after `announce_delay`), which the router sees as one short withdrawal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use healthcheck::registry::{CheckedFrontend, Registry, Server as HealthServer};
use healthcheck::ServerState;
use lb::{Frontend, FrontendConfig, Workers};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use vrrp::ValidVrrp;

use crate::admin::AdminContext;
use crate::announce::{AnnounceBoard, AnnounceRt};
use config::{AdminConfig, Config};

/// What the signal task asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGHUP: re-read the config.
    Reload,
    /// SIGTERM or SIGINT: stop.
    Stop,
}

/// Forwards SIGHUP, SIGTERM and SIGINT to `tx`.
pub(crate) fn signals(tx: mpsc::Sender<Signal>) -> anyhow::Result<JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = term.recv() => { info!("SIGTERM: stopping"); Signal::Stop }
                _ = int.recv() => { info!("SIGINT: stopping"); Signal::Stop }
                _ = hup.recv() => { info!("SIGHUP: reloading the config"); Signal::Reload }
            };
            if tx.send(s).await.is_err() {
                return;
            }
        }
    }))
}

/// The accept loops of one bind address, one per worker, stopped together.
struct ListenerTask {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// An IPv6 wildcard listener that takes IPv4 too ([`lb::listener::dual_stack`]).
    dual_stack: bool,
}

struct FrontendRt {
    fe: Arc<Frontend>,
    states: Vec<Arc<ServerState>>,
    listeners: HashMap<SocketAddr, ListenerTask>,
}

struct VrrpRt {
    cfg: ValidVrrp,
    stop: watch::Sender<bool>,
    /// New configs for the running instance (live reload without restart).
    updates: watch::Sender<ValidVrrp>,
    task: JoinHandle<Result<(), vrrp::VrrpError>>,
}

struct AdminRt {
    cfg: AdminConfig,
    ctx: Arc<AdminContext>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Everything running, keyed so that a reload can tell what changed.
struct Daemon {
    path: PathBuf,
    cfg: Config,
    workers: Workers,
    frontends: HashMap<String, FrontendRt>,
    /// Frontends removed by a reload whose connections may still be running.
    retired: Vec<Arc<Frontend>>,
    registry: Arc<Registry>,
    checks: (watch::Sender<bool>, JoinHandle<()>),
    vrrp: HashMap<String, VrrpRt>,
    /// Where the VRRP instances publish their status (read by the admin endpoint).
    vrrp_status: vrrp::StatusBoard,
    /// `[[announce]]` blocks, in config order.
    announce: Vec<AnnounceRt>,
    /// Where they publish their status and take admin actions.
    announce_board: AnnounceBoard,
    admin: Option<AdminRt>,
}

/// The soft RLIMIT_NOFILE, from /proc/self/limits.
fn nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Each proxied connection takes two descriptors: warn when `maxconn` cannot be reached, since
/// clients beyond what the limit allows are then reset instead of queued.
fn warn_if_nofile_too_low(cfg: &Config) {
    let needed: u64 = cfg
        .frontend
        .iter()
        .map(|f| 2 * u64::from(f.maxconn))
        .sum::<u64>()
        + 64;
    if let Some(limit) = nofile_limit() {
        if needed > limit {
            warn!(
                rlimit_nofile = limit,
                needed,
                "the frontends' maxconn needs {needed} file descriptors (2 per connection) but \
                 RLIMIT_NOFILE is {limit}: raise it (LimitNOFILE= in the unit, ulimit -n) or \
                 lower maxconn"
            );
        }
    }
}

fn fe_list(frontends: &HashMap<String, FrontendRt>) -> Vec<Arc<Frontend>> {
    let mut v: Vec<Arc<Frontend>> = frontends.values().map(|r| r.fe.clone()).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Server states for `cfg`, reusing those of `old` with the same name and address as written
/// (a kept host name keeps its resolution). New host names are resolved before this returns,
/// so traffic and checks find their addresses from the start; one that does not resolve is a
/// DOWN server, not a failure.
async fn server_states(cfg: &FrontendConfig, old: Option<&FrontendRt>) -> Vec<Arc<ServerState>> {
    let mut fresh = Vec::new();
    let states = cfg
        .server
        .iter()
        .map(|s| {
            let target = match s.target() {
                Ok(t) => t,
                // `check` refuses the config first; should one get here, a name that never
                // resolves keeps the server DOWN with the reason.
                Err(_) => healthcheck::Target::Name {
                    host: s.address.get_ref().clone(),
                    port: 0,
                },
            };
            let kept = old.and_then(|o| {
                o.states
                    .iter()
                    .find(|st| st.name == *s.name.get_ref() && *st.target() == target)
            });
            match kept {
                Some(st) => st.clone(),
                None => {
                    let st = Arc::new(ServerState::with_target(
                        s.name.get_ref().clone(),
                        target,
                        s.disabled,
                    ));
                    fresh.push(st.clone());
                    st
                }
            }
        })
        .collect();
    healthcheck::resolve::resolve_all(cfg.name.get_ref(), &fresh).await;
    states
}

fn health_frontend(cfg: &FrontendConfig, states: &[Arc<ServerState>]) -> CheckedFrontend {
    CheckedFrontend::with_resolve_interval(
        CheckedFrontend::new(
            cfg.name.get_ref().clone(),
            cfg.check.clone(),
            states
                .iter()
                .zip(&cfg.server)
                .map(|(st, s)| {
                    HealthServer::new(st.clone(), s.check).with_override(s.check_override.clone())
                })
                .collect(),
        ),
        cfg.resolve_interval,
    )
}

fn spawn_listener(
    workers: &Workers,
    fe: &Arc<Frontend>,
    (ls, dual_stack): (Vec<std::net::TcpListener>, bool),
) -> ListenerTask {
    let (stop, rx) = watch::channel(false);
    ListenerTask {
        stop,
        tasks: workers.accept(fe, ls, &rx),
        dual_stack,
    }
}

/// Every address the frontends of `cfg` bind.
fn all_binds(cfg: &Config) -> Vec<SocketAddr> {
    cfg.frontend
        .iter()
        .flat_map(|f| f.bind.get_ref().iter().copied())
        .collect()
}

/// Binds `addr` for frontend `name` on every worker, dual-stack or not as `binds` (the
/// whole config's) decide; the flag comes back with the sockets.
fn bind_frontend(
    name: &str,
    addr: SocketAddr,
    binds: &[SocketAddr],
    workers: usize,
) -> anyhow::Result<(Vec<std::net::TcpListener>, bool)> {
    let dual = lb::listener::dual_stack(addr, binds.iter().copied());
    let ls = lb::listener::bind_shared(addr, workers, dual)
        .with_context(|| format!("frontend `{name}`: cannot bind {addr}"))?;
    if dual {
        info!(frontend = name, bind = %addr, "listening on IPv6 and IPv4 (dual-stack)");
    }
    Ok((ls, dual))
}

fn spawn_vrrp(cfg: ValidVrrp, registry: &Arc<Registry>, status: &vrrp::StatusBoard) -> VrrpRt {
    let (stop, rx) = watch::channel(false);
    let reg = registry.clone();
    let probe: vrrp::BackendsProbe = Arc::new(move |name: &str| reg.any_available(name));
    let (updates, updates_rx) = watch::channel(cfg.clone());
    let run = vrrp::run_with_updates(cfg.clone(), probe, status.clone(), rx, updates_rx);
    VrrpRt {
        task: tokio::spawn(run),
        cfg,
        stop,
        updates,
    }
}

/// What the admin endpoint reads besides the config: the registry and the proxy frontends,
/// and the boards VRRP and the announce blocks publish on.
struct AdminInputs<'a> {
    registry: &'a Arc<Registry>,
    frontends: Vec<Arc<Frontend>>,
    vrrp: &'a vrrp::StatusBoard,
    announce: &'a AnnounceBoard,
}

async fn spawn_admin(
    cfg: &AdminConfig,
    inputs: AdminInputs<'_>,
) -> anyhow::Result<Option<AdminRt>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let addr = *cfg.bind.get_ref();
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin endpoint: cannot bind {addr}"))?;
    info!(bind = %addr, "admin endpoint up");
    let (stop, rx) = watch::channel(false);
    let ctx = Arc::new(AdminContext {
        registry: inputs.registry.clone(),
        frontends: ArcSwap::from_pointee(inputs.frontends),
        token: cfg.token.as_ref().map(|t| t.get_ref().clone()),
        vrrp: inputs.vrrp.clone(),
        announce: inputs.announce.clone(),
    });
    Ok(Some(AdminRt {
        cfg: cfg.clone(),
        ctx: ctx.clone(),
        stop,
        task: tokio::spawn(crate::admin::serve(l, ctx, rx)),
    }))
}

async fn stop_vrrp(name: &str, v: VrrpRt) {
    let _ = v.stop.send(true);
    match tokio::time::timeout(Duration::from_secs(5), v.task).await {
        Ok(Ok(Ok(()))) => info!(instance = name, "VRRP instance stopped, VIPs released"),
        Ok(Ok(Err(e))) => warn!(instance = name, cause = %e, "VRRP instance stopped with an error"),
        Ok(Err(e)) => warn!(instance = name, cause = %e, "VRRP task failed"),
        Err(_) => warn!(instance = name, "VRRP instance did not stop within 5s"),
    }
}

impl Daemon {
    async fn start(path: PathBuf, cfg: Config) -> anyhow::Result<Daemon> {
        let vrrp_blocks = cfg.vrrp.clone();
        warn_if_nofile_too_low(&cfg);
        let workers = Workers::start(cfg.global.workers).context("starting the proxy threads")?;
        // Bind everything first: a port we cannot have is a startup failure, not a log line.
        let mut bound = Vec::new();
        let binds = all_binds(&cfg);
        for f in &cfg.frontend {
            let mut ls = Vec::new();
            for addr in f.bind.get_ref() {
                let l = bind_frontend(f.name.get_ref(), *addr, &binds, workers.len())?;
                ls.push((*addr, l));
            }
            bound.push(ls);
        }
        let mut frontends = HashMap::new();
        let mut health = Vec::new();
        for (f, ls) in cfg.frontend.iter().zip(bound) {
            let states = server_states(f, None).await;
            health.push(health_frontend(f, &states));
            let fe = Arc::new(Frontend::new(f, states.clone()));
            let listeners = ls
                .into_iter()
                .map(|(a, l)| (a, spawn_listener(&workers, &fe, l)))
                .collect();
            info!(frontend = %fe.name, servers = states.len(), mode = ?f.mode, "frontend up");
            frontends.insert(
                f.name.get_ref().clone(),
                FrontendRt {
                    fe,
                    states,
                    listeners,
                },
            );
        }
        let registry = Arc::new(Registry::new(health));
        let vrrp_status = vrrp::StatusBoard::new();
        let announce_board = AnnounceBoard::default();
        let admin = spawn_admin(
            &cfg.admin,
            AdminInputs {
                registry: &registry,
                frontends: fe_list(&frontends),
                vrrp: &vrrp_status,
                announce: &announce_board,
            },
        )
        .await?;
        let (checks_stop, rx) = watch::channel(false);
        let checks = (checks_stop, healthcheck::spawn(&registry, rx));
        let vrrp = vrrp_blocks
            .into_iter()
            .map(|v| {
                (
                    v.name.get_ref().clone(),
                    spawn_vrrp(v, &registry, &vrrp_status),
                )
            })
            .collect();
        // Listeners are bound: the VIPs may be announced once their frontends are fit.
        let mut announce = Vec::new();
        for a in &cfg.announce {
            announce.push(AnnounceRt::start(a.clone(), &registry, &announce_board).await?);
        }
        info!(threads = workers.len(), "proxy threads up");
        Ok(Daemon {
            path,
            cfg,
            workers,
            frontends,
            retired: Vec::new(),
            registry,
            checks,
            vrrp,
            vrrp_status,
            announce,
            announce_board,
            admin,
        })
    }

    /// Re-reads the file and applies it; on any problem keeps the running config.
    async fn reload(&mut self) {
        crate::systemd::reloading();
        let loaded = config::load(&self.path);
        let new = match config::read_keys(loaded, config::KeyReader::Daemon) {
            Ok((c, report)) => {
                for line in report.to_string().lines() {
                    warn!("{line}");
                }
                c
            }
            Err(report) => {
                for line in report.to_string().lines() {
                    error!("{line}");
                }
                error!(
                    "reload rejected: {} error(s) in {}; still running the previous config",
                    report.errors(),
                    self.path.display()
                );
                crate::systemd::reloaded("reload rejected; running the previous config");
                return;
            }
        };
        match self.apply(new).await {
            Ok(summary) => {
                info!("reload applied: {summary}");
                crate::systemd::reloaded("running");
            }
            Err(e) => {
                error!("reload rejected: {e:#}; still running the previous config");
                crate::systemd::reloaded("reload rejected; running the previous config");
            }
        }
    }

    async fn apply(&mut self, new: Config) -> anyhow::Result<String> {
        let new_vrrp = new.vrrp.clone();
        // 1. Bind the new addresses first; failing here changes nothing.
        let mut fresh: HashMap<(String, SocketAddr), (Vec<std::net::TcpListener>, bool)> =
            HashMap::new();
        let binds = all_binds(&new);
        for f in &new.frontend {
            let old = self.frontends.get(f.name.get_ref());
            for addr in f.bind.get_ref() {
                let held_by_any = self
                    .frontends
                    .values()
                    .any(|o| o.listeners.contains_key(addr));
                if let Some(held) = old.and_then(|o| o.listeners.get(addr)) {
                    // IPV6_V6ONLY cannot change once a socket is bound, and replacing the
                    // socket in place would drop the connections in its accept queue.
                    if held.dual_stack != lb::listener::dual_stack(*addr, binds.iter().copied()) {
                        anyhow::bail!(
                            "bind {addr} would change from {} (an IPv4 bind on port {} was {}); \
                             remove it in one reload, add it back in the next",
                            if held.dual_stack {
                                "dual-stack to IPv6-only"
                            } else {
                                "IPv6-only to dual-stack"
                            },
                            addr.port(),
                            if held.dual_stack { "added" } else { "removed" },
                        );
                    }
                    continue;
                }
                if held_by_any {
                    anyhow::bail!(
                        "bind {addr} moves between frontends; remove it in one reload, add it in the next"
                    );
                }
                let l = bind_frontend(f.name.get_ref(), *addr, &binds, self.workers.len())?;
                fresh.insert((f.name.get_ref().clone(), *addr), l);
            }
        }
        let key = |a: &AdminConfig| {
            (
                a.enabled,
                *a.bind.get_ref(),
                a.token.as_ref().map(|t| t.get_ref().clone()),
            )
        };
        let admin_changed = self.admin.as_ref().map(|a| key(&a.cfg)) != Some(key(&new.admin))
            && (new.admin.enabled || self.admin.is_some());

        // 2. Frontends: update kept ones, start new ones, stop removed ones.
        let (mut added, mut updated, mut removed) = (0, 0, 0);
        let mut health = Vec::new();
        let mut next = HashMap::new();
        for f in &new.frontend {
            let name = f.name.get_ref().clone();
            let mut old = self.frontends.remove(&name);
            let states = server_states(f, old.as_ref()).await;
            health.push(health_frontend(f, &states));
            let (fe, mut listeners) = match old.take() {
                Some(o) => {
                    o.fe.update(f, states.clone());
                    updated += 1;
                    (o.fe, o.listeners)
                }
                None => {
                    added += 1;
                    (Arc::new(Frontend::new(f, states.clone())), HashMap::new())
                }
            };
            // Listeners no longer wanted stop accepting; their connections go on.
            listeners.retain(|addr, lt| {
                let keep = f.bind.get_ref().contains(addr);
                if !keep {
                    let _ = lt.stop.send(true);
                }
                keep
            });
            for addr in f.bind.get_ref() {
                if let Some(l) = fresh.remove(&(name.clone(), *addr)) {
                    listeners.insert(*addr, spawn_listener(&self.workers, &fe, l));
                }
            }
            next.insert(
                name,
                FrontendRt {
                    fe,
                    states,
                    listeners,
                },
            );
        }
        for (_, old) in self.frontends.drain() {
            removed += 1;
            for lt in old.listeners.values() {
                let _ = lt.stop.send(true);
            }
            info!(frontend = %old.fe.name, in_flight = old.fe.in_flight(),
                "frontend removed; its connections finish on their own");
            self.retired.push(old.fe);
        }
        self.retired.retain(|fe| fe.in_flight() > 0);
        self.frontends = next;

        // 3. Checks follow the new registry; health carries over in the kept ServerStates.
        self.registry.store(health);
        let (stop, rx) = watch::channel(false);
        let old_checks = std::mem::replace(
            &mut self.checks,
            (stop, healthcheck::spawn(&self.registry, rx)),
        );
        let _ = old_checks.0.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), old_checks.1).await;

        // 4. VRRP instances by name: unchanged ones keep running, changed ones are updated in
        // place (no priority 0, the VIP stays) unless the change needs a restart.
        let (mut restarted, mut updated_in_place) = (0, 0);
        let mut next_vrrp = HashMap::new();
        for v in &new_vrrp {
            let name = v.name.get_ref().clone();
            match self.vrrp.remove(&name) {
                Some(rt) if rt.cfg == *v && !rt.task.is_finished() => {
                    // The block is the same, its auth_hmac key files may not be: the instance
                    // reads them again (and changes nothing if they are the same).
                    if v.auth_hmac.is_some() {
                        rt.updates.send_replace(v.clone());
                    }
                    next_vrrp.insert(name, rt);
                }
                Some(mut rt) if rt.cfg.restart_reason(v).is_none() && !rt.task.is_finished() => {
                    info!(instance = %name, changed = %rt.cfg.changed_fields(v).join(","),
                        "VRRP instance changed: updating it in place");
                    rt.updates.send_replace(v.clone());
                    rt.cfg = v.clone();
                    updated_in_place += 1;
                    next_vrrp.insert(name, rt);
                }
                Some(rt) => {
                    let why = rt.cfg.restart_reason(v).unwrap_or("its task ended");
                    info!(instance = %name, why, "VRRP instance changed: restarting it");
                    stop_vrrp(&name, rt).await;
                    restarted += 1;
                    next_vrrp.insert(
                        name,
                        spawn_vrrp(v.clone(), &self.registry, &self.vrrp_status),
                    );
                }
                None => {
                    next_vrrp.insert(
                        name,
                        spawn_vrrp(v.clone(), &self.registry, &self.vrrp_status),
                    );
                }
            }
        }
        for (name, rt) in self.vrrp.drain() {
            info!(instance = %name, "VRRP instance removed");
            stop_vrrp(&name, rt).await;
        }
        self.vrrp = next_vrrp;
        // 5. Announce blocks by name: unchanged ones keep running, others restart.
        let mut kept = 0;
        let mut old: Vec<AnnounceRt> = std::mem::take(&mut self.announce);
        for a in &new.announce {
            match old
                .iter()
                .position(|o| o.cfg.name.get_ref() == a.name.get_ref())
            {
                Some(i) if old[i].cfg == *a && !old[i].is_finished() => {
                    kept += 1;
                    self.announce.push(old.remove(i));
                }
                Some(i) => {
                    let o = old.remove(i);
                    info!(announce = %a.name.get_ref(), "announce block changed: restarting it");
                    if let Err(e) = o.stop().await {
                        warn!(announce = %a.name.get_ref(), cause = %e, "stopping it");
                    }
                    self.start_announce(a).await;
                }
                None => self.start_announce(a).await,
            }
        }
        for o in old {
            info!(announce = %o.cfg.name.get_ref(), "announce block removed: withdrawn");
            let _ = o.stop().await;
        }
        // 6. The admin endpoint: restarted if its address or token changed, else told the new
        // frontends.
        if admin_changed {
            if let Some(old) = self.admin.take() {
                let _ = old.stop.send(true);
                let _ = old.task.await;
            }
            let inputs = AdminInputs {
                registry: &self.registry,
                frontends: fe_list(&self.frontends),
                vrrp: &self.vrrp_status,
                announce: &self.announce_board,
            };
            match spawn_admin(&new.admin, inputs).await {
                Ok(a) => self.admin = a,
                Err(e) => error!("{e:#}; the admin endpoint is off until the next reload"),
            }
        } else if let Some(a) = &self.admin {
            a.ctx.frontends.store(Arc::new(fe_list(&self.frontends)));
        }
        self.cfg = new;
        Ok(format!(
            "{added} frontend(s) added, {updated} updated, {removed} removed; {} VRRP instance(s), {updated_in_place} updated in place, {restarted} restarted; {} announce block(s), {kept} kept",
            self.vrrp.len(),
            self.announce.len()
        ))
    }

    /// Starts a block during a reload; a failure (the interface name taken) is logged and
    /// the block stays off until the next reload.
    async fn start_announce(&mut self, a: &announce::AnnounceConfig) {
        match AnnounceRt::start(a.clone(), &self.registry, &self.announce_board).await {
            Ok(rt) => self.announce.push(rt),
            Err(e) => error!("{e:#}; this block stays withdrawn until the next reload"),
        }
    }

    /// Stops in order: VRRP and announcements (withdrawn, then the drain delay), listeners,
    /// connections (up to the grace period), checks, VIP interfaces, admin.
    async fn stop(mut self) {
        crate::systemd::stopping();
        let vrrp: Vec<(String, VrrpRt)> = self.vrrp.drain().collect();
        let vrrp_done = futures::future::join_all(
            vrrp.into_iter()
                .map(|(name, rt)| async move { stop_vrrp(&name, rt).await }),
        );
        let drained = futures::future::join_all(self.announce.iter().map(AnnounceRt::drain));
        futures::future::join(vrrp_done, drained).await;
        for rt in self.frontends.values() {
            for lt in rt.listeners.values() {
                let _ = lt.stop.send(true);
            }
        }
        for rt in self.frontends.values_mut() {
            for (_, lt) in rt.listeners.drain() {
                for t in lt.tasks {
                    let _ = t.await;
                }
            }
        }
        let grace = self.cfg.global.shutdown_grace;
        let all: Vec<Arc<Frontend>> = self
            .frontends
            .values()
            .map(|r| r.fe.clone())
            .chain(self.retired.iter().cloned())
            .collect();
        futures::future::join_all(all.iter().map(|fe| fe.drain(grace))).await;
        let _ = self.checks.0.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.checks.1).await;
        for a in self.announce.drain(..) {
            let name = a.cfg.name.get_ref().clone();
            if let Err(e) = a.stop().await {
                warn!(announce = %name, cause = %e, "stopping the announce block");
            }
        }
        if let Some(a) = self.admin.take() {
            let _ = a.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(1), a.task).await;
        }
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    }

    /// An announce block whose task ended on its own (its VIP interface was deleted).
    async fn failed_announce(&mut self) -> Option<String> {
        let i = self.announce.iter().position(AnnounceRt::is_finished)?;
        let rt = self.announce.remove(i);
        let name = rt.cfg.name.get_ref().clone();
        let why = rt.stop().await.err().unwrap_or_else(|| "ended".into());
        Some(format!("announce `{name}`: {why}"))
    }

    /// A VRRP instance that ended on its own (it runs until told to stop), with why.
    async fn failed_vrrp(&mut self) -> Option<String> {
        let name = self
            .vrrp
            .iter()
            .find(|(_, rt)| rt.task.is_finished())
            .map(|(n, _)| n.clone())?;
        let rt = self.vrrp.remove(&name)?;
        let why = match rt.task.await {
            Ok(Ok(())) => "ended without being asked to".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("task failed: {e}"),
        };
        Some(format!("VRRP instance `{name}`: {why}"))
    }
}

/// Runs the daemon until SIGTERM/SIGINT arrive on `signals`, reloading on SIGHUP.
pub(crate) async fn run(
    path: PathBuf,
    cfg: Config,
    mut signals: mpsc::Receiver<Signal>,
) -> anyhow::Result<()> {
    let mut daemon = Daemon::start(path, cfg).await?;
    crate::systemd::ready(&format!(
        "{} frontend(s), {} vrrp instance(s), {} announce block(s)",
        daemon.frontends.len(),
        daemon.vrrp.len(),
        daemon.announce.len()
    ));
    let watchdog = crate::systemd::spawn_watchdog(daemon.workers.heartbeats());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut failure = None;
    loop {
        tokio::select! {
            s = signals.recv() => match s {
                Some(Signal::Reload) => daemon.reload().await,
                Some(Signal::Stop) | None => break,
            },
            _ = tick.tick() => {
                if let Some(why) = daemon.failed_vrrp().await {
                    failure = Some(why);
                    break;
                }
                if let Some(why) = daemon.failed_announce().await {
                    failure = Some(why);
                    break;
                }
            }
        }
    }
    daemon.stop().await;
    if let Some(w) = watchdog {
        w.abort();
    }
    match failure {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!(why)),
    }
}
