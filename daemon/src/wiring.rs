//! Wiring of the daemon: listeners, health checks, proxy, VRRP, admin endpoint, the loop that
//! takes signals and [`crate::Handle`] requests, live reload.
//!
//! Shutdown runs in a fixed order: VRRP first (priority 0 advert, VIPs removed, so a peer takes
//! over while this host still serves) and, at the same time, every `[[announce]]` block's
//! VIPs withdrawn from the routing daemon; then, once the longest `drain_delay` has passed
//! (the router has moved new flows to other hosts), listeners stop accepting and established
//! connections get `shutdown_grace` to finish; last, the VIP interfaces are deleted.
//!
//! Reload (SIGHUP, or [`crate::Handle::reload`], which answers with the outcome) reads and
//! validates the file; on any error the running config stays and the reason is logged.
//! Otherwise it is applied without dropping established connections: servers are matched by
//! name and address as written (the registry keeps a kept server's health, counters and, for a
//! host name, its resolution, see `healthcheck::Registry::checked_frontend`; new names are
//! resolved before use),
//! listeners by address (a kept address keeps its sockets), VRRP instances by name (an
//! unchanged one keeps running; a changed one is updated in place — priority, VIPs, track
//! scripts, timers, auth — and restarted only when its name, interface, VRID or version change,
//! which releases its VIP first). `[[announce]]` blocks by name: an unchanged one keeps
//! running; a changed one is restarted (withdrawn, its VIP interface deleted and created again,
//! announced after `announce_delay`), which the router sees as one short withdrawal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use healthcheck::registry::{CheckedFrontend, Registry, ServerSpec};
use healthcheck::ServerState;
use lb::{Frontend, FrontendConfig, Workers};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use vrrp::ValidVrrp;

use crate::admin::{AdminContext, Views};
use crate::announce::{AnnounceBoard, AnnounceRt};
use crate::{Addrs, Command, ConfigFile, Listeners, Reload, Signal};
use config::{AdminConfig, Config};

/// The accept loops of one bind address, one per worker, stopped together.
struct ListenerTask {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The sockets' local addresses.
    addrs: Vec<SocketAddr>,
    /// An IPv6 wildcard listener that takes IPv4 too ([`lb::listener::dual_stack`]).
    dual_stack: bool,
}

struct FrontendRt {
    fe: Arc<Frontend>,
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
    /// Where it listens.
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Everything running, keyed so that a reload can tell what changed.
pub(crate) struct Daemon {
    path: PathBuf,
    cfg: Config,
    workers: Workers,
    frontends: HashMap<String, FrontendRt>,
    /// Frontends removed by a reload whose connections may still be running.
    retired: Vec<Arc<Frontend>>,
    /// The registry, the proxy frontends, and where the VRRP instances and the announce
    /// blocks publish: read by the admin endpoint and the [`crate::Handle`].
    views: Arc<Views>,
    checks: (watch::Sender<bool>, JoinHandle<()>),
    vrrp: HashMap<String, VrrpRt>,
    /// `[[announce]]` blocks, in config order.
    announce: Vec<AnnounceRt>,
    admin: Option<AdminRt>,
    /// The listeners' local addresses, as the [`crate::Handle`] tells them.
    addrs: Arc<Mutex<Addrs>>,
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

/// Frontend `cfg` as the health checks see it, its servers' states kept from the running
/// frontend of the same name where name and address are unchanged (see
/// [`Registry::checked_frontend`]).
async fn checked_frontend(registry: &Registry, cfg: &FrontendConfig) -> CheckedFrontend {
    let servers = cfg
        .server
        .iter()
        .map(|s| ServerSpec {
            name: s.name.get_ref().clone(),
            target: match s.target() {
                Ok(t) => t,
                // `check` refuses the config first; should one get here, a name that never
                // resolves keeps the server DOWN with the reason.
                Err(_) => healthcheck::Target::Name {
                    host: s.address.get_ref().clone(),
                    port: 0,
                },
            },
            disabled: s.disabled,
            check: s.check,
            check_override: s.check_override.clone(),
        })
        .collect();
    registry
        .checked_frontend(
            cfg.name.get_ref(),
            cfg.check.clone(),
            cfg.resolve_interval,
            servers,
        )
        .await
}

/// The states of `checked`'s servers, in config order (the proxy shares them).
fn states_of(checked: &CheckedFrontend) -> Vec<Arc<ServerState>> {
    checked.servers.iter().map(|s| s.state.clone()).collect()
}

fn spawn_listener(
    workers: &Workers,
    fe: &Arc<Frontend>,
    (ls, dual_stack): (Vec<std::net::TcpListener>, bool),
) -> ListenerTask {
    let (stop, rx) = watch::channel(false);
    let addrs = ls.iter().filter_map(|l| l.local_addr().ok()).collect();
    ListenerTask {
        stop,
        tasks: workers.accept(fe, ls, &rx),
        addrs,
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

/// The socket handed in for `addr`, if any (served by one worker), checked against the
/// dual-stack rule of `binds` (the whole config's); else `addr` bound here.
fn frontend_listener(
    name: &str,
    addr: SocketAddr,
    binds: &[SocketAddr],
    workers: usize,
    handed: &mut Vec<std::net::TcpListener>,
) -> anyhow::Result<(Vec<std::net::TcpListener>, bool)> {
    let Some(i) = handed
        .iter()
        .position(|l| l.local_addr().ok() == Some(addr))
    else {
        return bind_frontend(name, addr, binds, workers);
    };
    let l = handed.swap_remove(i);
    let dual = lb::listener::dual_stack(addr, binds.iter().copied());
    if addr.ip().is_unspecified() && addr.is_ipv6() {
        let v6only = socket2::SockRef::from(&l)
            .only_v6()
            .with_context(|| format!("frontend `{name}`: the socket handed in for {addr}"))?;
        if v6only == dual {
            anyhow::bail!(
                "frontend `{name}`: the socket handed in for {addr} is {}, the config makes it {}",
                if v6only { "IPv6-only" } else { "dual-stack" },
                if dual { "dual-stack" } else { "IPv6-only" },
            );
        }
    }
    l.set_nonblocking(true)
        .with_context(|| format!("frontend `{name}`: the socket handed in for {addr}"))?;
    Ok((vec![l], dual))
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

/// Starts the admin endpoint if `cfg` enables it, on `handed` (a socket bound by the caller
/// for `[admin] bind`) or on a socket bound here.
async fn spawn_admin(
    cfg: &AdminConfig,
    views: &Arc<Views>,
    handed: Option<std::net::TcpListener>,
) -> anyhow::Result<Option<AdminRt>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let addr = *cfg.bind.get_ref();
    let l = match handed {
        Some(l) => l
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(l))
            .with_context(|| format!("admin endpoint: the socket handed in for {addr}"))?,
        None => TcpListener::bind(addr)
            .await
            .with_context(|| format!("admin endpoint: cannot bind {addr}"))?,
    };
    let local = l.local_addr().unwrap_or(addr);
    info!(bind = %addr, "admin endpoint up");
    let (stop, rx) = watch::channel(false);
    let ctx = Arc::new(AdminContext {
        views: Arc::clone(views),
        token: cfg.token.as_ref().map(|t| t.get_ref().clone()),
    });
    Ok(Some(AdminRt {
        cfg: cfg.clone(),
        addr: local,
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
    pub(crate) async fn start(
        file: ConfigFile,
        listeners: Listeners,
        addrs: Arc<Mutex<Addrs>>,
    ) -> anyhow::Result<Daemon> {
        let ConfigFile { path, config: cfg } = file;
        let Listeners {
            frontends: mut handed,
            admin: handed_admin,
        } = listeners;
        let vrrp_blocks = cfg.vrrp.clone();
        warn_if_nofile_too_low(&cfg);
        let workers = Workers::start(cfg.global.workers, cfg.global.io)
            .context("starting the proxy threads")?;
        // Bind everything first: a port we cannot have is a startup failure, not a log line.
        let mut bound = Vec::new();
        let binds = all_binds(&cfg);
        for f in &cfg.frontend {
            let mut ls = Vec::new();
            for addr in f.bind.get_ref() {
                let l =
                    frontend_listener(f.name.get_ref(), *addr, &binds, workers.len(), &mut handed)?;
                ls.push((*addr, l));
            }
            bound.push(ls);
        }
        if let Some(l) = handed.first() {
            anyhow::bail!(
                "a socket was handed in for {}, which no frontend binds",
                l.local_addr()
                    .map_or_else(|e| e.to_string(), |a| a.to_string())
            );
        }
        if let Some(l) = &handed_admin {
            let at = l.local_addr().ok();
            if !cfg.admin.enabled || at != Some(*cfg.admin.bind.get_ref()) {
                anyhow::bail!(
                    "the admin socket handed in ({at:?}) is not `[admin] bind` of an enabled endpoint"
                );
            }
        }
        let registry = Arc::new(Registry::new(Vec::new()));
        let mut frontends = HashMap::new();
        let mut health = Vec::new();
        for (f, ls) in cfg.frontend.iter().zip(bound) {
            let checked = checked_frontend(&registry, f).await;
            let states = states_of(&checked);
            health.push(checked);
            let fe = Arc::new(Frontend::new(f, states.clone()));
            let listeners = ls
                .into_iter()
                .map(|(a, l)| (a, spawn_listener(&workers, &fe, l)))
                .collect();
            info!(frontend = %fe.name, servers = states.len(), mode = ?f.mode, "frontend up");
            frontends.insert(f.name.get_ref().clone(), FrontendRt { fe, listeners });
        }
        registry.store(health);
        let views = Arc::new(Views {
            registry,
            frontends: ArcSwap::from_pointee(fe_list(&frontends)),
            vrrp: vrrp::StatusBoard::new(),
            announce: AnnounceBoard::default(),
        });
        let admin = spawn_admin(&cfg.admin, &views, handed_admin).await?;
        let (checks_stop, rx) = watch::channel(false);
        let checks = (checks_stop, healthcheck::spawn(&views.registry, rx));
        let vrrp = vrrp_blocks
            .into_iter()
            .map(|v| {
                (
                    v.name.get_ref().clone(),
                    spawn_vrrp(v, &views.registry, &views.vrrp),
                )
            })
            .collect();
        // Listeners are bound: the VIPs may be announced once their frontends are fit.
        let mut announce = Vec::new();
        for a in &cfg.announce {
            announce.push(AnnounceRt::start(a.clone(), &views.registry, &views.announce).await?);
        }
        info!(threads = workers.len(), io = ?workers.io(), "proxy threads up");
        let daemon = Daemon {
            path,
            cfg,
            workers,
            frontends,
            retired: Vec::new(),
            views,
            checks,
            vrrp,
            announce,
            admin,
            addrs,
        };
        daemon.publish_addrs();
        Ok(daemon)
    }

    /// What the admin endpoint and the [`crate::Handle`] read.
    pub(crate) fn views(&self) -> Arc<Views> {
        Arc::clone(&self.views)
    }

    /// Tells the [`crate::Handle`] where the listeners are now.
    fn publish_addrs(&self) {
        if let Ok(mut a) = self.addrs.lock() {
            a.frontends = self
                .frontends
                .iter()
                .map(|(name, rt)| {
                    let mut v: Vec<SocketAddr> = rt
                        .listeners
                        .values()
                        .flat_map(|lt| lt.addrs.iter().copied())
                        .collect();
                    v.sort();
                    v.dedup();
                    (name.clone(), v)
                })
                .collect();
            a.admin = self.admin.as_ref().map(|r| r.addr);
        }
    }

    /// Re-reads the file and applies it; on any problem keeps the running config. Logged and
    /// told to systemd either way.
    async fn reload(&mut self) -> Reload {
        crate::systemd::reloading();
        let new = match ConfigFile::load(&self.path) {
            Ok((file, report)) => {
                for line in report.to_string().lines() {
                    warn!("{line}");
                }
                file.config
            }
            Err(report) => {
                for line in report.to_string().lines() {
                    error!("{line}");
                }
                let why = format!("{} error(s) in {}", report.errors(), self.path.display());
                error!("reload rejected: {why}; still running the previous config");
                crate::systemd::reloaded("reload rejected; running the previous config");
                return Reload::Rejected(format!("{why}:\n{report}"));
            }
        };
        let outcome = match self.apply(new).await {
            Ok(summary) => {
                info!("reload applied: {summary}");
                crate::systemd::reloaded("running");
                Reload::Applied(summary)
            }
            Err(e) => {
                error!("reload rejected: {e:#}; still running the previous config");
                crate::systemd::reloaded("reload rejected; running the previous config");
                Reload::Rejected(format!("{e:#}"))
            }
        };
        self.publish_addrs();
        outcome
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
            let checked = checked_frontend(&self.views.registry, f).await;
            let states = states_of(&checked);
            health.push(checked);
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
            next.insert(name, FrontendRt { fe, listeners });
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
        self.views.registry.store(health);
        self.views
            .frontends
            .store(Arc::new(fe_list(&self.frontends)));
        let (stop, rx) = watch::channel(false);
        let old_checks = std::mem::replace(
            &mut self.checks,
            (stop, healthcheck::spawn(&self.views.registry, rx)),
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
                        spawn_vrrp(v.clone(), &self.views.registry, &self.views.vrrp),
                    );
                }
                None => {
                    next_vrrp.insert(
                        name,
                        spawn_vrrp(v.clone(), &self.views.registry, &self.views.vrrp),
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
        // 6. The admin endpoint: restarted if its address or token changed.
        if admin_changed {
            if let Some(old) = self.admin.take() {
                let _ = old.stop.send(true);
                let _ = old.task.await;
            }
            match spawn_admin(&new.admin, &self.views, None).await {
                Ok(a) => self.admin = a,
                Err(e) => error!("{e:#}; the admin endpoint is off until the next reload"),
            }
        }
        let restart = self.needs_restart(&new);
        let mut new = new;
        // The proxy threads stay as started: the running config says what they are.
        new.global.workers = self.cfg.global.workers;
        new.global.io = self.cfg.global.io;
        self.cfg = new;
        Ok(format!(
            "{added} frontend(s) added, {updated} updated, {removed} removed; {} VRRP instance(s), {updated_in_place} updated in place, {restarted} restarted; {} announce block(s), {kept} kept{restart}",
            self.vrrp.len(),
            self.announce.len()
        ))
    }

    /// What a reload to `new` cannot change: the proxy threads (`workers`, `io`) are started
    /// once. Warned, and said at the end of the reload's summary ("" when nothing).
    fn needs_restart(&self, new: &Config) -> String {
        let (old, new) = (&self.cfg.global, &new.global);
        if old.workers == new.workers && old.io == new.io {
            return String::new();
        }
        let running = format!(
            "{} proxy thread(s) on {:?}",
            self.workers.len(),
            self.workers.io()
        );
        warn!(workers = new.workers, io = ?new.io, "workers and io take effect at the next \
            start; still running {running}");
        format!("; workers and io need a restart (running {running})")
    }

    /// Starts a block during a reload; a failure (the interface name taken) is logged and
    /// the block stays off until the next reload.
    async fn start_announce(&mut self, a: &announce::AnnounceConfig) {
        match AnnounceRt::start(a.clone(), &self.views.registry, &self.views.announce).await {
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

/// Runs `daemon` until a stop arrives on `signals` or `commands` (or every sender of
/// `commands` is gone), reloading on request, then stops it in order. An instance or announce
/// block that ends on its own stops it too, and is the error.
pub(crate) async fn serve(
    mut daemon: Daemon,
    mut signals: mpsc::Receiver<Signal>,
    mut commands: mpsc::Receiver<Command>,
) -> anyhow::Result<()> {
    crate::systemd::ready(&format!(
        "{} frontend(s), {} vrrp instance(s), {} announce block(s)",
        daemon.frontends.len(),
        daemon.vrrp.len(),
        daemon.announce.len()
    ));
    let watchdog = crate::systemd::spawn_watchdog(daemon.workers.heartbeats());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut signals_open = true;
    let mut failure = None;
    loop {
        tokio::select! {
            s = signals.recv(), if signals_open => match s {
                Some(Signal::Reload) => {
                    daemon.reload().await;
                }
                Some(Signal::Stop) => break,
                None => signals_open = false,
            },
            c = commands.recv() => match c {
                Some(Command::Reload(answer)) => {
                    let _ = answer.send(daemon.reload().await);
                }
                Some(Command::Stop) | None => break,
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
