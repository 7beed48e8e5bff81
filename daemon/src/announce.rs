//! The driver of one `[[announce]]` block: a thin loop around [`announce::Announcer`] that
//! feeds it the health of the tracked frontends (from the health-check registry) and the
//! verdicts of its track scripts, carries out its actions on the VIP interface
//! ([`announce::VipLink`]: carrier on = announced, off = withdrawn), publishes its status for
//! `/status` and `/metrics`, and reads back from FRR (vtysh) what bgpd made of it.
//!
//! Life cycle, as the daemon drives it: [`AnnounceRt::start`] creates the VIP interface (a
//! failure is a startup failure) once the listeners are bound; on SIGTERM
//! [`AnnounceRt::drain`] withdraws and answers once `drain_delay` has passed, when the daemon
//! closes its listeners; [`AnnounceRt::stop`], after the connections' grace, deletes the
//! interface (the VIPs stay local until then, so established connections run on). However the
//! process ends, the kernel deletes the interface with it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use announce::{Action, AnnounceConfig, Announcer, LinkError, VipLink};
use anyhow::Context;
use healthcheck::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn, Instrument as _};

use crate::status::{AnnounceStatus, FrrStatus, LinkStatus};

/// How often the tracked frontends' health is read (health checks run every few seconds).
const HEALTH_POLL: Duration = Duration::from_millis(100);
/// How often the interface is compared with the decision, and put right.
const RECONCILE: Duration = Duration::from_secs(1);
/// How often FRR is asked what it does with the VIPs (status only).
const FRR_POLL: Duration = Duration::from_secs(5);

/// Where the running blocks publish their status and take the admin endpoint's actions.
/// The daemon makes one and hands it to each block it starts and to the admin endpoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct AnnounceBoard {
    /// Every block's status, in start order: read by `/status` and `/metrics`.
    status: Arc<Mutex<Vec<AnnounceStatus>>>,
    /// The command channel of every running block, by name.
    control: Arc<Mutex<Vec<Control>>>,
}

/// A running block's name and command channel.
type Control = (String, mpsc::UnboundedSender<Cmd>);

impl AnnounceBoard {
    /// A copy of every block's status.
    pub(crate) fn status(&self) -> Vec<AnnounceStatus> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// An operator's word on block `name`: hold its VIPs withdrawn (`true`) or release them.
    /// Returns whether a block of that name runs. The hold lasts until released or until the
    /// block restarts (a changed block on reload, or the daemon).
    pub(crate) fn set_admin_withdrawn(&self, name: &str, withdrawn: bool) -> bool {
        let Ok(all) = self.control.lock() else {
            return false;
        };
        all.iter()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, tx)| tx.send(Cmd::Admin(withdrawn)).is_ok())
    }

    fn publish(&self, st: AnnounceStatus) {
        if let Ok(mut all) = self.status.lock() {
            match all.iter_mut().find(|s| s.name == st.name) {
                Some(s) => *s = st,
                None => all.push(st),
            }
        }
    }

    fn unpublish(&self, name: &str) {
        if let Ok(mut all) = self.status.lock() {
            all.retain(|s| s.name != name);
        }
    }

    /// Makes block `name` reachable by [`AnnounceBoard::set_admin_withdrawn`] through `tx`.
    fn register(&self, name: String, tx: mpsc::UnboundedSender<Cmd>) {
        if let Ok(mut all) = self.control.lock() {
            all.retain(|(n, _)| *n != name);
            all.push((name, tx));
        }
    }

    /// Drops the admin endpoint's sender of block `name`, so that the task sees its channel
    /// close once the daemon drops its own.
    fn unregister(&self, name: &str) {
        if let Ok(mut all) = self.control.lock() {
            all.retain(|(n, _)| n != name);
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    let t = t.max(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_millis(t).to_string()
}

#[derive(Debug)]
enum Cmd {
    /// Withdraw, answer when the listeners may close.
    Drain(oneshot::Sender<()>),
    /// An operator holds the VIPs withdrawn (true) or releases them.
    Admin(bool),
}

/// A running `[[announce]]` block.
pub(crate) struct AnnounceRt {
    pub(crate) cfg: AnnounceConfig,
    cmd: mpsc::UnboundedSender<Cmd>,
    task: JoinHandle<Result<(), LinkError>>,
    /// Where it publishes its status and is registered for admin actions.
    board: AnnounceBoard,
}

impl AnnounceRt {
    /// Creates the VIP interface (withdrawn) and starts deciding, publishing on `board`. Call
    /// once the listeners are bound: the machine counts them ready.
    pub(crate) async fn start(
        cfg: AnnounceConfig,
        registry: &Arc<Registry>,
        board: &AnnounceBoard,
    ) -> anyhow::Result<AnnounceRt> {
        let name = cfg.name.get_ref().clone();
        let link = VipLink::create(cfg.interface.get_ref(), cfg.vips())
            .await
            .with_context(|| format!("announce `{name}`"))?;
        info!(announce = %name, iface = %link.name(), vips = ?cfg.vips().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "VIP interface created (withdrawn)");
        let (tx, rx) = mpsc::unbounded_channel();
        let span = tracing::info_span!("announce", name = %name);
        let task = tokio::spawn(
            drive(cfg.clone(), link, registry.clone(), board.clone(), rx).instrument(span),
        );
        board.register(name, tx.clone());
        Ok(AnnounceRt {
            cfg,
            cmd: tx,
            task,
            board: board.clone(),
        })
    }

    /// Withdraws the VIPs for good; resolves once `drain_delay` has passed since the
    /// withdrawal (or at once if the task has ended).
    pub(crate) async fn drain(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Drain(tx)).is_err() {
            return;
        }
        let limit = self.cfg.drain_delay + Duration::from_secs(5);
        if tokio::time::timeout(limit, rx).await.is_err() {
            warn!(announce = %self.cfg.name.get_ref(), "drain did not finish within {limit:?}");
        }
    }

    /// Whether the task has ended (an error: the interface is gone).
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the task and deletes the VIP interface (the VIPs leave this host).
    pub(crate) async fn stop(self) -> Result<(), String> {
        let name = self.cfg.name.get_ref().clone();
        self.board.unregister(&name);
        drop(self.cmd);
        let mut task = self.task;
        let r = match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(format!("task failed: {e}")),
            Err(_) => {
                // Dropping the task (and with it the interface) is what stopping means.
                task.abort();
                Err("did not stop within 5s; aborted".to_string())
            }
        };
        self.board.unpublish(&name);
        r
    }
}

/// Aborts the background tasks it holds when dropped.
struct Aborting(Vec<JoinHandle<()>>);

impl Drop for Aborting {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Track scripts as the VRRP runner takes them (weight 0: pass or fail).
fn vrrp_script(ts: &announce::config::TrackScript) -> vrrp::TrackScript {
    vrrp::TrackScript {
        name: ts.name.clone(),
        command: ts.command.clone(),
        interval: ts.interval,
        timeout: ts.timeout,
        weight: 0,
        rise: ts.rise,
        fall: ts.fall,
    }
}

async fn drive(
    cfg: AnnounceConfig,
    link: VipLink,
    registry: Arc<Registry>,
    board: AnnounceBoard,
    mut cmd: mpsc::UnboundedReceiver<Cmd>,
) -> Result<(), LinkError> {
    let start = Instant::now();
    let frontends: Vec<String> = cfg
        .track_frontends
        .iter()
        .map(|f| f.get_ref().clone())
        .collect();
    let scripts: Vec<String> = cfg
        .track_script
        .iter()
        .map(|s| s.name.get_ref().clone())
        .collect();
    let mut m = Announcer::new(cfg.timings(), frontends.clone(), scripts.clone(), start);
    let (script_tx, mut script_rx) = mpsc::channel(16);
    let frr: Arc<Mutex<(Option<FrrStatus>, Option<String>)>> = Arc::default();
    let mut background = Aborting(
        cfg.track_script
            .iter()
            .enumerate()
            .map(|(i, ts)| {
                vrrp::spawn_track_script(i, vrrp_script(ts), None, script_tx.clone(), false)
            })
            .collect(),
    );
    background
        .0
        .push(tokio::spawn(poll_frr(cfg.clone(), frr.clone())));
    drop(script_tx);

    let mut counts = (0u64, 0u64);
    let mut drained: Option<oneshot::Sender<()>> = None;
    let mut health = tokio::time::interval(HEALTH_POLL);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconcile = tokio::time::interval(RECONCILE);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    m.set_ready(start);
    for f in &frontends {
        m.set_frontend(f, frontend_fit(&registry, f), start);
    }
    let mut link_view = None;
    loop {
        let mut acted = false;
        while let Some(a) = m.poll_action() {
            acted = true;
            let st = m.status();
            match a {
                Action::Announce => {
                    counts.0 += 1;
                    info!(reason = %st.reason, "announcing the VIPs (carrier on)");
                    if let Err(e) = link.announce().await {
                        error!(cause = %e, "announcing failed; retried in {RECONCILE:?}");
                    }
                }
                Action::Withdraw => {
                    counts.1 += 1;
                    info!(reason = %st.reason, "withdrawing the VIPs (carrier off)");
                    if let Err(e) = link.withdraw().await {
                        error!(cause = %e, "withdrawing failed; retried in {RECONCILE:?}");
                    }
                }
                Action::CloseListeners => {
                    info!("drain delay over: the listeners may close");
                    if let Some(tx) = drained.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
        if acted {
            link_view = read_link(&link).await?;
        }
        {
            let now = Instant::now();
            let st = m.status();
            let (frr_view, frr_error) = frr.lock().map(|g| g.clone()).unwrap_or_default();
            board.publish(AnnounceStatus {
                name: cfg.name.get_ref().clone(),
                interface: link.name().to_string(),
                vips: link.vips().iter().map(ToString::to_string).collect(),
                state: st.state,
                reason: st.reason.to_string(),
                why: st.reason.clone(),
                since: rfc3339(
                    SystemTime::now()
                        .checked_sub(now.saturating_duration_since(st.since))
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                ),
                for_seconds: now.saturating_duration_since(st.since).as_secs_f64(),
                announcements: counts.0,
                withdrawals: counts.1,
                link: link_view.clone(),
                frr: frr_view,
                frr_error,
            });
        }
        let deadline = m.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            c = cmd.recv() => match c {
                Some(Cmd::Drain(tx)) => {
                    if m.closed() {
                        let _ = tx.send(());
                    } else {
                        drained = Some(tx);
                        m.shutdown(Instant::now());
                    }
                }
                Some(Cmd::Admin(w)) => m.set_admin_withdrawn(w, Instant::now()),
                // The daemon is done with us: the interface goes with `link`.
                None => return Ok(()),
            },
            s = script_rx.recv() => {
                if let Some((i, good)) = s {
                    if let Some(name) = scripts.get(i) {
                        m.set_script(name, good, Instant::now());
                    }
                }
            }
            _ = health.tick() => {
                let now = Instant::now();
                for f in &frontends {
                    m.set_frontend(f, frontend_fit(&registry, f), now);
                }
            }
            _ = reconcile.tick() => {
                link_view = read_link(&link).await?;
                let want = m.status().state == announce::State::Announced;
                if let Some(v) = &link_view {
                    let offered = v.up && v.carrier && v.missing.is_empty();
                    if offered != want {
                        warn!(want_announced = want, carrier = v.carrier, missing = ?v.missing,
                            "the VIP interface differs from the decision: putting it right");
                        let r = if want { link.announce().await } else { link.withdraw().await };
                        if let Err(e) = r {
                            error!(cause = %e, "putting the VIP interface right failed");
                        }
                    }
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => m.handle_timeout(Instant::now()),
        }
    }
}

/// Whether frontend `name` has a server up whose health is known: a checked server counts
/// once its first check has run (servers start up, as in HAProxy, which is right for the
/// proxy but would announce a host whose regions were never reached).
fn frontend_fit(registry: &Registry, name: &str) -> bool {
    registry.frontend(name).is_some_and(|f| {
        f.servers
            .iter()
            .any(|s| s.state.is_available() && (!s.check || s.state.last_check().is_some()))
    })
}

/// The interface as the kernel shows it; `Err` only when it is gone (deleted by hand).
async fn read_link(link: &VipLink) -> Result<Option<LinkStatus>, LinkError> {
    match link.state().await {
        Ok(s) => Ok(Some(LinkStatus {
            up: s.up,
            carrier: s.carrier,
            missing: s.missing.iter().map(ToString::to_string).collect(),
        })),
        Err(e @ LinkError::Gone(_)) => {
            error!(cause = %e, "the VIP interface was deleted under us");
            Err(e)
        }
        Err(e) => {
            warn!(cause = %e, "reading the VIP interface failed");
            Ok(None)
        }
    }
}

/// Asks FRR every [`FRR_POLL`] what it does with the VIPs; for status only, never for the
/// decision (FRR may be down while this host is fit: its own problem to report).
async fn poll_frr(cfg: AnnounceConfig, out: Arc<Mutex<(Option<FrrStatus>, Option<String>)>>) {
    let v = cfg.vtysh();
    let mut tick = tokio::time::interval(FRR_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tick.tick().await;
        let mut routes = BTreeMap::new();
        let mut err = None;
        for vip in cfg.vips() {
            match v.route(*vip).await {
                Ok(r) => {
                    routes.insert(vip.to_string(), r);
                }
                Err(e) => {
                    err = Some(e.to_string());
                    break;
                }
            }
        }
        let peers = match (&err, v.peers().await) {
            (None, Ok(p)) => p,
            (None, Err(e)) => {
                err = Some(e.to_string());
                Vec::new()
            }
            (Some(_), _) => Vec::new(),
        };
        if err != last_error {
            if let Some(e) = &err {
                warn!(cause = %e, "cannot read FRR's view of the VIPs (status only)");
            }
            last_error = err.clone();
        }
        let view = err.is_none().then(|| FrrStatus {
            routes,
            peers,
            read_at: rfc3339(SystemTime::now()),
        });
        if let Ok(mut g) = out.lock() {
            *g = (view, err);
        }
    }
}
