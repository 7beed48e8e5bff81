//! The tokio driver: one task per `[[vrrp]]` instance, a thin loop that feeds the sans-IO
//! [`Machine`] with packets, timers, link events and track results and carries out its
//! actions on the raw socket, netlink and the datalink.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info, warn, Instrument as _};

use crate::auth_hmac::instance as hmac;
use crate::config::{InitialState, TrackScript, ValidVrrp, Vip, VrrpConfig};
use crate::machine::{Action, Machine, Params, Reason, Reject, Settings, State};
use crate::netlink::{self, LinkEvent, Netlink};
use crate::packet::{IpPair, Packet};
use crate::socket;
use crate::socket6::{self, AdvertSocket};
use crate::track;

/// Answers, for a frontend name, whether it has at least one available server (None: unknown
/// frontend).
pub type BackendsProbe = Arc<dyn Fn(&str) -> Option<bool> + Send + Sync>;

/// Why the VRRP engine could not run.
#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    /// An instance's auth_hmac keys could not be read (files, credentials).
    #[error("vrrp instance `{instance}`: {problems}")]
    Config {
        instance: String,
        /// Every problem, joined.
        problems: String,
    },
    /// Two instances share an interface and a virtual router id.
    #[error("vrrp instances `{a}` and `{b}` both use virtual_router_id {vrid} on {iface}")]
    DuplicateVrid {
        /// First instance.
        a: String,
        /// Second instance.
        b: String,
        vrid: u8,
        iface: String,
    },
    /// The interface does not exist.
    #[error("interface {0} does not exist")]
    NoInterface(String),
    /// The interface has no address of its own to send from: for IPv4 any address, for IPv6
    /// a link-local one that has passed duplicate address detection.
    #[error(
        "interface {iface} has no {what} besides the virtual ones (needed as the advert source)"
    )]
    NoAddress {
        iface: String,
        /// "IPv4 address" or "usable IPv6 link-local address".
        what: &'static str,
    },
    /// The rtnetlink socket could not be opened.
    #[error("opening a netlink socket: {0}")]
    NetlinkSocket(#[source] std::io::Error),
    /// A netlink request failed.
    #[error("{what} on {iface}: {source}")]
    Netlink {
        /// What we were doing.
        what: &'static str,
        iface: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// The raw VRRP socket could not be set up or read.
    #[error("VRRP socket on {iface}: {source} (raw sockets need CAP_NET_RAW)")]
    Socket {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    /// An instance task panicked.
    #[error("vrrp instance task failed: {0}")]
    Task(String),
}

/// What one instance looks like now, for `/status` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceStatus {
    /// `[[vrrp]] name`.
    pub name: String,
    /// The interface it runs on (whatever carries the configured name now).
    pub interface: String,
    /// `virtual_router_id`.
    pub vrid: u8,
    /// The machine's state: FAULT also while the interface is missing or has no address.
    pub state: State,
    /// Effective priority: the configured one plus track weights (what adverts carry).
    pub priority: u8,
    /// Priority as configured.
    pub configured_priority: u8,
    /// What the machine counted: adverts sent and taken, drops by reason, transitions.
    pub stats: crate::machine::Stats,
    /// auth_hmac settings (no keys), when it is on.
    pub auth_hmac: Option<crate::auth_hmac::Summary>,
}

/// Where the driver publishes what each instance looks like: the daemon makes one, hands a
/// clone to every [`run`] or [`run_with_updates`], and reads it for `/status` and `/metrics`.
/// An instance is listed from its start (in FAULT while its interface is not ready) until it
/// stops.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<Vec<InstanceStatus>>>);

impl StatusBoard {
    pub fn new() -> Self {
        StatusBoard::default()
    }

    /// A copy of every instance's status, in start order.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn publish(&self, st: InstanceStatus) {
        if let Ok(mut all) = self.0.lock() {
            match all.iter_mut().find(|s| s.name == st.name) {
                Some(s) => *s = st,
                None => all.push(st),
            }
        }
    }

    fn unpublish(&self, name: &str) {
        if let Ok(mut all) = self.0.lock() {
            all.retain(|s| s.name != name);
        }
    }
}

/// Runs every instance until `shutdown` turns true, publishing each one's status on
/// `status`; then, for each instance that is master, sends a priority-0 advert and removes the
/// VIPs, and returns.
pub async fn run(
    configs: Vec<ValidVrrp>,
    backends: BackendsProbe,
    status: StatusBoard,
    shutdown: watch::Receiver<bool>,
) -> Result<(), VrrpError> {
    run_all(
        configs.into_iter().map(|c| (c, None)).collect(),
        backends,
        status,
        shutdown,
    )
    .await
}

/// Runs one instance as [`run`] does, and applies each config sent on `updates` to it while
/// it runs, without restarting it (live reload): no priority-0 advert, the VIPs stay where
/// they are unless the new config moves them.
///
/// What changes, and when, is [`Machine::reconfigure`]'s (the machine's [`Settings`]): priority from the next advert
/// (preemption follows the RFC), VIPs added (with gratuitous ARP) and removed at once while
/// master, track scripts added, removed or changed (those restart from a good state;
/// unchanged ones keep running and keep their state), track_backends, advert interval (from
/// the next advert), password, preempt, preempt_delay, notify, garp settings and unicast
/// peers (the socket is reopened when switching between multicast and unicast).
///
/// The configs are [`ValidVrrp`]s: they were validated once, when they were read. A new
/// config that [`VrrpConfig::restart_reason`] says needs a restart (name, interface,
/// virtual_router_id, version, priority to or from 255), or whose auth_hmac keys cannot be
/// read, is logged and ignored: the instance keeps its config. Restarting it is the caller's job. A value
/// of `updates` not yet seen when the instance starts is applied at once (one equal to `cfg`
/// changes nothing), so none sent before the task first runs is lost. When every sender of
/// `updates` is gone the instance simply runs on.
pub async fn run_with_updates(
    cfg: ValidVrrp,
    backends: BackendsProbe,
    status: StatusBoard,
    shutdown: watch::Receiver<bool>,
    updates: watch::Receiver<ValidVrrp>,
) -> Result<(), VrrpError> {
    run_all(vec![(cfg, Some(updates))], backends, status, shutdown).await
}

async fn run_all(
    configs: Vec<(ValidVrrp, Option<watch::Receiver<ValidVrrp>>)>,
    backends: BackendsProbe,
    status: StatusBoard,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), VrrpError> {
    for (i, (a, _)) in configs.iter().enumerate() {
        for (b, _) in &configs[i + 1..] {
            if a.interface.get_ref() == b.interface.get_ref()
                && a.virtual_router_id == b.virtual_router_id
            {
                return Err(VrrpError::DuplicateVrid {
                    a: a.name.get_ref().clone(),
                    b: b.name.get_ref().clone(),
                    vrid: a.virtual_router_id,
                    iface: a.interface.get_ref().clone(),
                });
            }
        }
    }
    if configs.is_empty() {
        let _ = shutdown.wait_for(|s| *s).await;
        return Ok(());
    }
    let nl = Netlink::new()?;
    // Internal stop: the first instance to fail stops the others, which release their VIPs.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut set = JoinSet::new();
    for (c, updates) in configs {
        let span = tracing::info_span!(
            "vrrp",
            instance = %c.name.get_ref(),
            vrid = c.virtual_router_id,
            iface = %c.interface.get_ref()
        );
        let (nl, backends, stop) = (nl.clone(), backends.clone(), stop_rx.clone());
        let status = status.clone();
        set.spawn(
            async move {
                let (mut c, mut updates) = (c, updates);
                loop {
                    let ready = set_up_when_ready(
                        c,
                        updates,
                        nl.clone(),
                        backends.clone(),
                        status.clone(),
                        stop.clone(),
                    );
                    let Some(inst) = ready.await? else {
                        return Ok(());
                    };
                    match inst.run(stop.clone()).await? {
                        Ended::Stopped => return Ok(()),
                        // Set up again on whatever carries the name next (netplan re-creating
                        // a bond or VLAN gives it a new index).
                        Ended::InterfaceGone { cfg, updates: u } => (c, updates) = (*cfg, u),
                    }
                }
            }
            .instrument(span),
        );
    }
    let mut result = Ok(());
    loop {
        tokio::select! {
            r = shutdown.wait_for(|s| *s) => {
                let _ = r;
                let _ = stop_tx.send(true);
                break;
            }
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    error!(error = %e, "vrrp instance failed; stopping the others");
                    result = Err(e);
                    let _ = stop_tx.send(true);
                    break;
                }
                Some(Err(e)) => {
                    result = Err(VrrpError::Task(e.to_string()));
                    let _ = stop_tx.send(true);
                    break;
                }
            }
        }
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "vrrp instance failed while stopping");
                if result.is_ok() {
                    result = Err(e);
                }
            }
            Err(e) => {
                if result.is_ok() {
                    result = Err(VrrpError::Task(e.to_string()));
                }
            }
        }
    }
    result
}

struct Instance {
    name: String,
    iface: String,
    index: u32,
    cfg: ValidVrrp,
    vips: Vec<Vip>,
    primary: IpAddr,
    /// Virtual addresses that are the owner's own (priority 255): never removed.
    owned: Vec<IpAddr>,
    machine: Machine,
    sock: AdvertSocket,
    nl: Netlink,
    link_events: mpsc::Receiver<LinkEvent>,
    link_up: bool,
    backends: BackendsProbe,
    /// Where [`Instance::publish`] shows it.
    status: StatusBoard,
    backends_bad: bool,
    backends_unknown_logged: bool,
    /// The running track scripts, in config order.
    scripts: Vec<ScriptRt>,
    next_script_id: usize,
    /// `(ScriptRt::id, good)` from the script tasks.
    script_rx: mpsc::Receiver<(usize, bool)>,
    script_tx: mpsc::Sender<(usize, bool)>,
    garp: Option<JoinHandle<()>>,
    /// Notify programs still running: awaited (boundedly) at stop, so that STOP's run.
    notifies: Vec<JoinHandle<()>>,
    updates: Option<watch::Receiver<ValidVrrp>>,
    rejects: RejectLog,
    hmac_saver: hmac::Saver,
}

/// One track script and its task. Aborted on drop.
struct ScriptRt {
    cfg: TrackScript,
    /// Unique for the instance's lifetime, so that a verdict from a replaced task cannot land
    /// on its successor.
    id: usize,
    good: bool,
    task: JoinHandle<()>,
}

impl Drop for ScriptRt {
    fn drop(&mut self) {
        // The task's GroupChild kills the script's process group as it is dropped.
        self.task.abort();
    }
}

/// The machine's parameters for `cfg`.
fn params(cfg: &VrrpConfig, vips: &[Vip], primary: IpAddr) -> Params {
    Params {
        vrid: cfg.virtual_router_id,
        version: *cfg.version.get_ref(),
        primary,
        start_as_master: cfg.state == InitialState::Master,
        settings: settings(cfg, vips),
    }
}

/// What of `cfg` a running machine takes in place ([`Machine::reconfigure`]).
fn settings(cfg: &VrrpConfig, vips: &[Vip]) -> Settings {
    Settings {
        priority: *cfg.priority.get_ref(),
        advert_interval: *cfg.advert_interval.get_ref(),
        preempt: cfg.preempt,
        preempt_delay: cfg.preempt_delay,
        auth_pass: cfg
            .auth_pass
            .as_ref()
            .map(|p| p.get_ref().as_bytes().to_vec()),
        vips: vips.iter().map(|v| v.addr).collect(),
        garp_delay: cfg.garp_master_delay,
        garp_refresh: cfg.garp_master_refresh,
        unicast_peers: cfg.unicast_peers.clone(),
        v3_checksum: (*cfg.v3_checksum.get_ref()).into(),
    }
}

/// Why [`Instance::run`] returned.
enum Ended {
    /// Told to stop.
    Stopped,
    /// The interface was deleted: the instance, in FAULT, hands back its config (reloads
    /// included) to be set up again once an interface of that name is ready.
    InterfaceGone {
        cfg: Box<ValidVrrp>,
        updates: Option<watch::Receiver<ValidVrrp>>,
    },
}

/// How long a stopping instance waits for its notify programs (STOP).
const NOTIFY_AT_STOP: Duration = Duration::from_secs(5);

/// Waits for every handle (their results do not matter).
async fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// How often an instance waiting for its interface (or its address) looks again.
const WAIT_FOR_INTERFACE_EVERY: Duration = Duration::from_secs(1);

/// Sets the instance up; while its interface does not exist or has no IPv4 address of its
/// own, it is shown in FAULT (as keepalived shows an instance whose interface is missing or
/// has no address) and set-up is tried again every second, with the newest config reloads
/// sent, until it works or `stop` turns true (then `None`). The proxy and the other instances
/// run meanwhile: a bond or VLAN that comes up late does not stop the daemon. Other errors
/// (no raw socket, netlink refusing) are returned at once.
async fn set_up_when_ready(
    mut cfg: ValidVrrp,
    mut updates: Option<watch::Receiver<ValidVrrp>>,
    nl: Netlink,
    backends: BackendsProbe,
    status: StatusBoard,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<Instance>, VrrpError> {
    let mut waiting: Option<String> = None;
    loop {
        let setup = Instance::setup(
            cfg.clone(),
            updates.clone(),
            nl.clone(),
            backends.clone(),
            status.clone(),
        );
        match setup.await {
            Ok(inst) => {
                if waiting.is_some() {
                    info!("the interface is ready now; starting");
                }
                return Ok(Some(inst));
            }
            Err(e @ (VrrpError::NoInterface(_) | VrrpError::NoAddress { .. })) => {
                let why = e.to_string();
                if waiting.as_deref() != Some(why.as_str()) {
                    warn!(error = %why, "vrrp instance in FAULT until the interface is ready");
                    status.publish(InstanceStatus {
                        name: cfg.name.get_ref().clone(),
                        interface: cfg.interface.get_ref().clone(),
                        vrid: cfg.virtual_router_id,
                        state: State::Fault,
                        priority: *cfg.priority.get_ref(),
                        configured_priority: *cfg.priority.get_ref(),
                        stats: Default::default(),
                        auth_hmac: None,
                    });
                    waiting = Some(why);
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            r = stop.wait_for(|s| *s) => {
                let _ = r;
                status.unpublish(cfg.name.get_ref());
                return Ok(None);
            }
            _ = tokio::time::sleep(WAIT_FOR_INTERFACE_EVERY) => {}
            r = next_update(&mut updates) => match r {
                Some(new) => {
                    info!("new config while waiting for the interface");
                    cfg = new;
                    // Shown (and logged) again with the new config.
                    waiting = None;
                }
                None => updates = None,
            },
        }
    }
}

impl Instance {
    async fn setup(
        cfg: ValidVrrp,
        updates: Option<watch::Receiver<ValidVrrp>>,
        nl: Netlink,
        backends: BackendsProbe,
        status: StatusBoard,
    ) -> Result<Instance, VrrpError> {
        let name = cfg.name.get_ref().clone();
        let iface = cfg.interface.get_ref().clone();
        let vips = cfg.virtual_ipaddresses.get_ref().clone();
        let hmac_params = hmac::load(&cfg).map_err(|problems| VrrpError::Config {
            instance: name.clone(),
            problems,
        })?;
        let index = nl.link(&iface).await?.index;
        let owner = *cfg.priority.get_ref() == 255;
        // No address to send from: fail before subscribing to netlink events, so that waiting
        // for one (see `set_up_when_ready`) opens no monitor socket per attempt.
        let candidates: &[Vip] = if owner { &[] } else { &vips };
        let v6 = cfg.is_ipv6();
        if nl.primary(index, &iface, candidates, v6).await?.is_none() {
            return Err(no_address(iface, v6));
        }
        // Subscribe before reading the state so no change falls in between.
        let link_events = netlink::monitor(index)?;
        let link = nl.link(&iface).await?;
        if link.index != index {
            // Replaced in between: try again (the monitor follows the old index).
            return Err(VrrpError::NoInterface(iface));
        }
        // The address owner (priority 255, RFC 3768 §3) has the virtual addresses as its own:
        // they are neither stale nor ever removed, and one of them may be the primary.
        let owned: Vec<IpAddr> = if owner {
            let present = nl.addresses(link.index, &iface).await?;
            vips.iter()
                .map(|v| v.addr)
                .filter(|a| present.iter().any(|p| p.addr == *a))
                .collect()
        } else {
            Vec::new()
        };
        let not_primary: Vec<Vip> = vips
            .iter()
            .filter(|v| !owned.contains(&v.addr))
            .copied()
            .collect();
        let primary = nl
            .primary(link.index, &iface, &not_primary, v6)
            .await?
            .ok_or_else(|| no_address(iface.clone(), v6))?;
        if v6 && cfg.unicast_peers.is_empty() {
            if let Some(first) = vips.first().filter(|v| !netlink::is_link_local_v6(v.addr)) {
                // keepalived logs the same (vrrp.c, vrrp_complete_instance) and runs on.
                warn!(first = %first, "the first IPv6 virtual address should be link-local");
            }
        }
        // Stale VIPs of ours, left by a crash (kill -9), go before anything else: we are not
        // master yet, and another router may be.
        for v in vips.iter().filter(|v| !owned.contains(&v.addr)) {
            let n = nl.remove(link.index, &iface, v.addr).await?;
            if n > 0 {
                warn!(vip = %v, "removed a stale virtual address left on the interface");
            }
        }
        let sock = AdvertSocket::open(&iface, link.index, primary, cfg.unicast_peers.is_empty())
            .map_err(|source| VrrpError::Socket {
                iface: iface.clone(),
                source,
            })?;
        let mut machine = Machine::new(params(&cfg, &vips, primary));
        hmac::apply(&mut machine, &cfg, hmac_params);
        let (script_tx, script_rx) = mpsc::channel(16);
        info!(%primary, link_up = link.up, vips = ?vips.iter().map(|v| v.to_string()).collect::<Vec<_>>(), "vrrp instance set up");
        Ok(Instance {
            scripts: Vec::new(),
            next_script_id: 0,
            name,
            iface,
            index: link.index,
            vips,
            primary,
            owned,
            machine,
            sock,
            nl,
            link_events,
            link_up: link.up,
            backends,
            status,
            backends_bad: false,
            backends_unknown_logged: false,
            script_rx,
            script_tx,
            garp: None,
            notifies: Vec::new(),
            updates,
            rejects: RejectLog::new(Instant::now()),
            hmac_saver: hmac::Saver::default(),
            cfg,
        })
    }

    fn spawn_script(&mut self, ts: TrackScript) -> ScriptRt {
        let id = self.next_script_id;
        self.next_script_id += 1;
        let user = self.cfg.script_user.as_ref().map(|u| u.get_ref().clone());
        let task = track::spawn_script(id, ts.clone(), user, self.script_tx.clone());
        ScriptRt {
            cfg: ts,
            id,
            good: true,
            task,
        }
    }

    /// Applies a new config to the running instance (see [`run_with_updates`]).
    async fn reconfigure(&mut self, new: ValidVrrp) {
        if new == self.cfg {
            self.reread_keys();
            return;
        }
        if let Some(why) = self.cfg.restart_reason(&new) {
            error!(
                why,
                "new config needs a restart of the instance; it keeps running the previous one"
            );
            return;
        }
        let hmac_params = match hmac::load(&new) {
            Ok(p) => p,
            Err(problems) => {
                error!(problems = %problems, "new auth_hmac keys not usable; the instance keeps running the previous config");
                return;
            }
        };
        let now = Instant::now();
        let changed = self.cfg.changed_fields(&new);
        let old_prio = *self.cfg.priority.get_ref();
        // Switching between multicast and unicast: a socket with or without the group.
        let multicast = new.unicast_peers.is_empty();
        if multicast != self.cfg.unicast_peers.is_empty() {
            match AdvertSocket::open(&self.iface, self.index, self.primary, multicast) {
                Ok(sock) => self.sock = sock,
                Err(e) => {
                    error!(error = %e, "reopening the VRRP socket for the new unicast_peers; the instance keeps running the previous config");
                    return;
                }
            }
        }
        let new_vips = new.virtual_ipaddresses.get_ref().clone();
        // A kept address with another prefix is re-added with it (while master).
        let reprefixed: Vec<Vip> = new_vips
            .iter()
            .filter(|v| {
                self.vips
                    .iter()
                    .any(|o| o.addr == v.addr && o.prefix != v.prefix)
            })
            .copied()
            .collect();
        self.vips = new_vips;
        self.owned
            .retain(|a| self.vips.iter().any(|v| v.addr == *a));
        if self.machine.state() == State::Master {
            for v in reprefixed.iter().filter(|v| !self.owned.contains(&v.addr)) {
                if let Err(e) = self.nl.remove(self.index, &self.iface, v.addr).await {
                    error!(vip = %v, error = %e, "removing a virtual address to change its prefix");
                }
                if let Err(e) = self.nl.add(self.index, &self.iface, *v).await {
                    error!(vip = %v, error = %e, "adding a virtual address with its new prefix");
                }
            }
        }
        // Track scripts: unchanged ones keep running with their state; new or changed ones
        // start afresh (good until they fail, as at start); removed ones are stopped.
        let mut old: Vec<Option<ScriptRt>> = std::mem::take(&mut self.scripts)
            .into_iter()
            .map(Some)
            .collect();
        for ts in &new.track_script {
            let kept = old
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| o.cfg == *ts))
                .and_then(Option::take);
            let s = match kept {
                Some(s) => s,
                None => self.spawn_script(ts.clone()),
            };
            self.scripts.push(s);
        }
        drop(old);
        if new.track_backends != self.cfg.track_backends {
            self.backends_bad = false;
            self.backends_unknown_logged = false;
        }
        self.machine.reconfigure(now, settings(&new, &self.vips));
        hmac::apply(&mut self.machine, &new, hmac_params);
        self.cfg = new;
        self.probe_backends();
        let (w, f) = self.tracking();
        self.machine.set_tracking(now, w, f);
        info!(
            changed = %changed.join(","),
            priority = *self.cfg.priority.get_ref(),
            old_priority = old_prio,
            effective_priority = self.machine.priority(),
            state = %self.machine.state(),
            vips = ?self.vips.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            "config updated in place (no restart)"
        );
    }

    /// A reload that leaves the block as it was: its key files and credentials may still
    /// have changed (a key rotated in place), so they are read again and, if they differ,
    /// taken like any in-place change (sequences and marks kept, no state change).
    fn reread_keys(&mut self) {
        if self.cfg.auth_hmac.is_none() {
            return;
        }
        match hmac::load(&self.cfg) {
            Ok(p) if p.as_ref() != self.machine.auth_hmac().map(|h| h.params()) => {
                hmac::apply(&mut self.machine, &self.cfg, p);
                info!("auth_hmac keys changed in their files: taken in place (no restart)");
            }
            Ok(_) => {}
            Err(problems) => {
                error!(problems = %problems, "auth_hmac keys not usable; the instance keeps the keys it has");
            }
        }
    }

    fn not_owned(&self) -> Vec<Vip> {
        self.vips
            .iter()
            .filter(|v| !self.owned.contains(&v.addr))
            .copied()
            .collect()
    }

    /// Sum of the weights that apply and whether a weight-0 tracker fails.
    fn tracking(&self) -> (i32, bool) {
        let scripts: Vec<(i32, bool)> = self
            .scripts
            .iter()
            .map(|s| (s.cfg.weight, s.good))
            .collect();
        let backends = self
            .cfg
            .track_backends
            .as_ref()
            .map(|tb| (tb.weight, !self.backends_bad));
        combine_tracking(&scripts, backends)
    }

    fn probe_backends(&mut self) -> bool {
        let Some(tb) = &self.cfg.track_backends else {
            return false;
        };
        let frontend = tb.frontend.get_ref();
        let bad = match (self.backends)(frontend) {
            Some(up) => !up,
            None => {
                if !self.backends_unknown_logged {
                    warn!(frontend = %frontend, "track_backends names an unknown frontend; ignored");
                    self.backends_unknown_logged = true;
                }
                false
            }
        };
        if bad != self.backends_bad {
            self.backends_bad = bad;
            info!(frontend = %frontend, available = !bad, "track_backends changed");
            return true;
        }
        false
    }

    fn publish(&self) {
        self.status.publish(InstanceStatus {
            name: self.name.clone(),
            interface: self.iface.clone(),
            vrid: self.cfg.virtual_router_id,
            state: self.machine.state(),
            priority: self.machine.priority(),
            configured_priority: *self.cfg.priority.get_ref(),
            stats: self.machine.stats().clone(),
            auth_hmac: self.machine.auth_hmac().map(|h| h.params().summary()),
        });
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<Ended, VrrpError> {
        for ts in self.cfg.track_script.clone() {
            let s = self.spawn_script(ts);
            self.scripts.push(s);
        }
        let now = Instant::now();
        self.probe_backends();
        let (w, f) = self.tracking();
        self.machine.set_link(now, self.link_up);
        self.machine.set_tracking(now, w, f);
        self.machine.start(now);
        self.carry_out().await;
        let mut buf = vec![0u8; 4096];
        let mut backends_tick = tokio::time::interval(Duration::from_millis(500));
        backends_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let mut link_event = None;
        let mut recv_pause = false;
        let result = loop {
            let deadline = self
                .machine
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or(far);
            tokio::select! {
                biased;
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break Ok(Ended::Stopped);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.machine.handle_timeout(Instant::now());
                }
                r = self.sock.recv(&mut buf) => match r {
                    Ok(Some((meta, payload))) => {
                        let now = Instant::now();
                        if let Err(reason) = self.machine.handle_packet_at(now, SystemTime::now(), meta, payload) {
                            let count = self.machine.stats().rejected(reason);
                            self.rejects.rejected(now, reason, meta.src, count);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Errors queued on a raw socket (ENETDOWN while the link flaps, ...)
                        // are transient: report them and go on, after a pause so that a
                        // persistent one cannot spin.
                        if self.link_up {
                            warn!(error = %e, "receiving adverts");
                        } else {
                            debug!(error = %e, "receiving adverts on a down interface");
                        }
                        recv_pause = true;
                    }
                },
                Some(ev) = self.link_events.recv() => link_event = Some(ev),
                Some((id, good)) = self.script_rx.recv() => {
                    // A verdict from a script replaced by a reload finds no owner: dropped.
                    if let Some(s) = self.scripts.iter_mut().find(|s| s.id == id) {
                        s.good = good;
                        let script = s.cfg.name.get_ref().clone();
                        let (w, f) = self.tracking();
                        info!(script = %script, good, weight = w, fault = f, "tracking changed");
                        self.machine.set_tracking(Instant::now(), w, f);
                    }
                }
                r = next_update(&mut self.updates) => match r {
                    Some(cfg) => self.reconfigure(cfg).await,
                    None => self.updates = None,
                },
                _ = backends_tick.tick() => {
                    self.hmac_saver.tick(&self.machine, &self.cfg, Some(Instant::now()));
                    if self.probe_backends() {
                        let (w, f) = self.tracking();
                        self.machine.set_tracking(Instant::now(), w, f);
                    }
                    self.rejects.flush(Instant::now());
                }
            }
            if recv_pause {
                recv_pause = false;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Some(ev) = link_event.take() {
                if ev == LinkEvent::Gone {
                    // Its addresses went with it; FAULT stops adverts and forgets the VIPs.
                    warn!("the interface was deleted; FAULT until it is back");
                    self.link_up = false;
                    self.machine.set_link(Instant::now(), false);
                    self.carry_out().await;
                    break Ok(Ended::InterfaceGone {
                        cfg: Box::new(self.cfg.clone()),
                        updates: self.updates.take(),
                    });
                }
                self.on_link_event(ev).await;
            }
            self.carry_out().await;
        };
        self.scripts.clear();
        self.rejects.flush_now();
        // RFC 3768 §6.4.3 Shutdown: priority 0 advert, then the addresses go.
        self.machine.shutdown(Instant::now());
        self.carry_out().await;
        self.hmac_saver.tick(&self.machine, &self.cfg, None);
        if let Some(g) = self.garp.take() {
            g.abort();
        }
        // keepalived runs notify with STOP as it ends: let those (and any still running)
        // finish, within the notify timeout's reach but short of the unit's stop timeout.
        let pending = std::mem::take(&mut self.notifies);
        let all = join_all(pending);
        if tokio::time::timeout(NOTIFY_AT_STOP, all).await.is_err() {
            warn!(limit = ?NOTIFY_AT_STOP, "notify programs still running at stop: left behind");
        }
        self.status.unpublish(&self.name);
        info!("vrrp instance stopped");
        result
    }

    async fn on_link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Link { up } => {
                if up != self.link_up {
                    info!(up, "interface state changed");
                    self.link_up = up;
                    if up {
                        // The primary address may have changed while down.
                        self.refresh_primary().await;
                    }
                    self.machine.set_link(Instant::now(), up);
                }
            }
            LinkEvent::AddrDeleted(a) => {
                if self.machine.state() == State::Master {
                    if let Some(v) = self.vips.iter().find(|v| v.addr == a).copied() {
                        warn!(vip = %v, "a virtual address was removed by someone else while master; adding it back");
                        match self.nl.add(self.index, &self.iface, v).await {
                            // Neighbours may have dropped or replaced their entry meanwhile
                            // (an `ip addr del` is often followed by a flush): announce it
                            // again, as on becoming master.
                            Ok(()) => self.send_garps(vec![v.addr], self.cfg.garp_master_repeat),
                            Err(e) => error!(vip = %v, error = %e, "re-adding the virtual address"),
                        }
                    }
                }
                if a == self.primary {
                    self.refresh_primary().await;
                }
            }
            LinkEvent::AddrAdded(a) => {
                if !self.vips.iter().any(|v| v.addr == a) {
                    self.refresh_primary().await;
                }
            }
            // Handled by the run loop, which ends the instance.
            LinkEvent::Gone => {}
        }
    }

    /// Re-reads the interface's primary address; adverts follow it (DHCP renew, renumbering).
    async fn refresh_primary(&mut self) {
        match self
            .nl
            .primary(
                self.index,
                &self.iface,
                &self.not_owned(),
                self.cfg.is_ipv6(),
            )
            .await
        {
            Ok(Some(p)) if p != self.primary => {
                let multicast = self.cfg.unicast_peers.is_empty();
                match self.sock.set_src(p, multicast) {
                    Ok(()) => {
                        warn!(old = %self.primary, new = %p, "primary address changed: adverts now come from the new one");
                        self.primary = p;
                        self.machine.set_primary(p);
                    }
                    Err(e) => {
                        error!(new = %p, error = %e, "cannot send from the new primary address")
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => warn!(
                old = %self.primary,
                "no address of its own of the instance's family left on the interface; adverts keep the old source"
            ),
            Err(e) => warn!(error = %e, "re-reading the primary address"),
        }
    }

    /// Carries out the machine's actions in order.
    async fn carry_out(&mut self) {
        while let Some(a) = self.machine.poll_action() {
            match a {
                Action::SendAdvert { priority } => self.send_advert(priority),
                Action::AddVips => {
                    for v in self.vips.clone() {
                        if let Err(e) = self.nl.add(self.index, &self.iface, v).await {
                            error!(vip = %v, error = %e, "adding a virtual address");
                        }
                    }
                }
                Action::RemoveVips => {
                    for v in self
                        .vips
                        .clone()
                        .into_iter()
                        .filter(|v| !self.owned.contains(&v.addr))
                    {
                        if let Err(e) = self.nl.remove(self.index, &self.iface, v.addr).await {
                            error!(vip = %v, error = %e, "removing a virtual address");
                        }
                    }
                }
                Action::SendGarp => {
                    let all: Vec<IpAddr> = self.vips.iter().map(|v| v.addr).collect();
                    self.send_garps(all, self.cfg.garp_master_repeat);
                }
                Action::RefreshGarp => {
                    let all: Vec<IpAddr> = self.vips.iter().map(|v| v.addr).collect();
                    debug!("garp_master_refresh");
                    self.send_garps(all, self.cfg.garp_master_refresh_repeat);
                }
                Action::VipsChanged { added, removed } => {
                    for a in removed {
                        if self.owned.contains(&a) {
                            continue;
                        }
                        match self.nl.remove(self.index, &self.iface, a).await {
                            Ok(_) => info!(vip = %a, "virtual address removed by reload"),
                            Err(e) => error!(vip = %a, error = %e, "removing a virtual address"),
                        }
                    }
                    for a in &added {
                        let Some(v) = self.vips.iter().find(|v| v.addr == *a).copied() else {
                            continue;
                        };
                        match self.nl.add(self.index, &self.iface, v).await {
                            Ok(()) => info!(vip = %v, "virtual address added by reload"),
                            Err(e) => error!(vip = %v, error = %e, "adding a virtual address"),
                        }
                    }
                    if !added.is_empty() {
                        self.send_garps(added, self.cfg.garp_master_repeat);
                    }
                }
                Action::StateChanged {
                    from,
                    to,
                    reason,
                    priority,
                } => {
                    info!(from = %from, to = %to, reason = %reason, priority, "state changed");
                    self.run_notify(to, reason, priority);
                }
            }
        }
        self.publish();
    }

    /// keepalived's notify scripts for a transition to `to`: `notify` with `INSTANCE <name>
    /// <state> <priority>`, and the one of the state (`notify_master`, ...) as written. The
    /// end of the instance (Initialize by shutdown) is keepalived's STOP.
    fn run_notify(&mut self, to: State, reason: Reason, priority: u8) {
        let (state, own) = match (to, reason) {
            (State::Master, _) => ("MASTER", &self.cfg.notify_master),
            (State::Backup, _) => ("BACKUP", &self.cfg.notify_backup),
            (State::Fault, _) => ("FAULT", &self.cfg.notify_fault),
            (State::Initialize, Reason::Shutdown) => ("STOP", &self.cfg.notify_stop),
            (State::Initialize, _) => return,
        };
        let user = self.cfg.script_user.as_ref().map(|u| u.get_ref().clone());
        let mut runs = Vec::new();
        if let Some(argv) = &self.cfg.notify {
            let mut full = argv.get_ref().clone();
            full.extend(track::notify_args(&self.name, state, priority));
            runs.push(track::notify(full, user.clone()));
        }
        if let Some(argv) = own {
            runs.push(track::notify(argv.get_ref().clone(), user));
        }
        self.notifies.retain(|h| !h.is_finished());
        self.notifies.extend(runs);
    }

    fn send_advert(&mut self, priority: u8) {
        let repr = self.machine.advert(priority);
        let dsts: Vec<IpAddr> = if self.cfg.unicast_peers.is_empty() {
            vec![socket6::multicast_group(self.primary)]
        } else {
            self.cfg.unicast_peers.clone()
        };
        // auth_hmac: one trailer per advert, the same on every unicast copy.
        let mut trailer = None;
        for dst in dsts {
            let pair = IpPair {
                src: self.primary,
                dst,
            };
            let mut bytes = repr.to_bytes_with(&pair, self.machine.params().settings.v3_checksum);
            let t =
                trailer.get_or_insert_with(|| self.machine.sign_advert(SystemTime::now(), &bytes));
            if let Some(t) = t {
                bytes.extend_from_slice(t);
                if crate::auth_hmac::checksum_covers_trailer(dst) {
                    // As keepalived's kernel does with IPV6_CHECKSUM: over the whole payload.
                    Packet::new_unchecked(&mut bytes[..]).fill_checksum(&pair);
                }
            }
            if let Err(e) = self.sock.send(dst, &bytes) {
                if self.link_up {
                    warn!(%dst, error = %e, "sending an advert");
                } else {
                    debug!(%dst, error = %e, "sending an advert on a down interface");
                }
            }
        }
    }

    /// Gratuitous ARP for IPv4 addresses, unsolicited neighbour advertisements for IPv6 ones.
    fn send_garps(&mut self, addrs: Vec<IpAddr>, repeat: u32) {
        let iface = self.iface.clone();
        if repeat == 0 {
            return;
        }
        let span = tracing::Span::current();
        self.garp = Some(tokio::task::spawn_blocking(move || {
            let _g = span.enter();
            let v4: Vec<_> = addrs
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let v6: Vec<Ipv6Addr> = addrs
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V6(a) => Some(*a),
                    IpAddr::V4(_) => None,
                })
                .collect();
            if !v4.is_empty() {
                match socket::send_garps(&iface, &v4, repeat) {
                    Ok(n) => debug!(frames = n, "sent gratuitous ARP"),
                    Err(e) => warn!(error = %e, "sending gratuitous ARP"),
                }
            }
            if !v6.is_empty() {
                match socket6::send_nas(&iface, &v6, repeat) {
                    Ok(n) => debug!(frames = n, "sent unsolicited neighbour advertisements"),
                    Err(e) => warn!(error = %e, "sending unsolicited neighbour advertisements"),
                }
            }
        }));
    }
}

/// No source address for an instance of that family on `iface`.
fn no_address(iface: String, v6: bool) -> VrrpError {
    VrrpError::NoAddress {
        iface,
        what: if v6 {
            "usable IPv6 link-local address (one that passed duplicate address detection)"
        } else {
            "IPv4 address"
        },
    }
}

/// keepalived's rules for tracked objects, each given as `(weight, good)`: weight 0 failing
/// means FAULT; a positive weight is added while good, a negative one while failing. Returns
/// the sum to add to the priority and whether the instance is in FAULT.
fn combine_tracking(scripts: &[(i32, bool)], backends: Option<(i32, bool)>) -> (i32, bool) {
    let mut weight = 0;
    let mut fault = false;
    for (w, good) in scripts.iter().copied().chain(backends) {
        match (w, good) {
            (0, false) => fault = true,
            (w, true) if w > 0 => weight += w,
            (w, false) if w < 0 => weight += w,
            _ => {}
        }
    }
    (weight, fault)
}

/// The next config sent to the instance; `None` once every sender is gone; never ready
/// without a receiver.
async fn next_update(updates: &mut Option<watch::Receiver<ValidVrrp>>) -> Option<ValidVrrp> {
    match updates {
        Some(u) => match u.changed().await {
            Ok(()) => Some(u.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// Dropped adverts logged one by one, per reason, in each window.
const LOG_FIRST: u32 = 3;
/// The window after which the drops not logged are summed up in one line.
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// Rate limit of the `dropped advert` log lines, so that a flood of bad packets (a
/// misconfigured neighbour, an attack) cannot flood the journal: in each [`LOG_WINDOW`], the
/// first [`LOG_FIRST`] drops of each reason are logged with their source, the others only
/// counted, and one line at the end of the window sums them up. The metrics count every one.
struct RejectLog {
    window_start: Instant,
    logged: [u32; Reject::ALL.len()],
    suppressed: [u64; Reject::ALL.len()],
}

impl RejectLog {
    fn new(now: Instant) -> RejectLog {
        RejectLog {
            window_start: now,
            logged: [0; Reject::ALL.len()],
            suppressed: [0; Reject::ALL.len()],
        }
    }

    /// One drop; `count` is the instance's total for this reason, this one included.
    fn rejected(&mut self, now: Instant, reason: Reject, from: IpAddr, count: u64) {
        if reason == Reject::Vrid || reason == Reject::Own {
            // Other virtual routers on the LAN, and our own looped-back adverts, are normal.
            return;
        }
        self.flush(now);
        let i = reason as usize;
        if self.logged[i] < LOG_FIRST {
            self.logged[i] += 1;
            if self.logged[i] == LOG_FIRST {
                warn!(%from, reason = %reason, count, "dropped advert (more of this reason are summed up every {}s)", LOG_WINDOW.as_secs());
            } else {
                warn!(%from, reason = %reason, count, "dropped advert");
            }
        } else {
            self.suppressed[i] += 1;
        }
    }

    /// Ends the window if it is over.
    fn flush(&mut self, now: Instant) {
        if now.duration_since(self.window_start) >= LOG_WINDOW {
            self.flush_now();
            self.window_start = now;
        }
    }

    /// Sums up the drops not logged so far, if any, in one line.
    fn flush_now(&mut self) {
        let total: u64 = self.suppressed.iter().sum();
        if total > 0 {
            let by_reason: Vec<String> = Reject::ALL
                .iter()
                .zip(&self.suppressed)
                .filter(|(_, n)| **n > 0)
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            warn!(
                total,
                by_reason = %by_reason.join(","),
                "dropped adverts not logged one by one since the last summary"
            );
        }
        self.logged = [0; Reject::ALL.len()];
        self.suppressed = [0; Reject::ALL.len()];
    }
}

#[cfg(test)]
mod tests {
    use super::{combine_tracking, RejectLog, LOG_FIRST, LOG_WINDOW};
    use crate::machine::Reject;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    #[test]
    fn reject_log_is_rate_limited_per_reason_and_window() {
        let t0 = Instant::now();
        let mut log = RejectLog::new(t0);
        let from = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 66));
        for i in 0..1000u32 {
            let r = [Reject::Ttl, Reject::Checksum, Reject::Vrid][i as usize % 3];
            log.rejected(t0 + Duration::from_millis(u64::from(i)), r, from, 1);
        }
        // 3 one by one per logged reason; other routers (vrid) are never logged.
        assert_eq!(log.logged[Reject::Ttl as usize], LOG_FIRST);
        assert_eq!(log.logged[Reject::Checksum as usize], LOG_FIRST);
        assert_eq!(log.logged[Reject::Vrid as usize], 0);
        assert_eq!(log.suppressed[Reject::Ttl as usize], 334 - 3);
        assert_eq!(log.suppressed[Reject::Vrid as usize], 0);
        // A new window: the summary went out, counting starts again.
        log.rejected(
            t0 + LOG_WINDOW + Duration::from_secs(1),
            Reject::Ttl,
            from,
            1,
        );
        assert_eq!(log.logged[Reject::Ttl as usize], 1);
        assert_eq!(log.suppressed.iter().sum::<u64>(), 0);
    }

    #[test]
    fn tracking_follows_keepalived() {
        assert_eq!(combine_tracking(&[], None), (0, false));
        // Weight 0 failing: FAULT; succeeding: nothing.
        assert_eq!(combine_tracking(&[(0, false)], None), (0, true));
        assert_eq!(combine_tracking(&[(0, true)], None), (0, false));
        // Negative weights apply while failing, positive ones while good.
        assert_eq!(
            combine_tracking(&[(-30, false), (20, true)], None),
            (-10, false)
        );
        assert_eq!(
            combine_tracking(&[(-30, true), (20, false)], None),
            (0, false)
        );
        // track_backends: (-50, no live server) lowers; weight 0 means FAULT.
        assert_eq!(combine_tracking(&[], Some((-50, false))), (-50, false));
        assert_eq!(combine_tracking(&[], Some((-50, true))), (0, false));
        assert_eq!(
            combine_tracking(&[(10, true)], Some((0, false))),
            (10, true)
        );
    }
}
