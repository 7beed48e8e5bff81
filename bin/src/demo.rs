//! `maas-vip demo`: a self-contained try-out on one machine (needs root).
//!
//! It builds a LAN of network namespaces (a bridge, three region hosts and a client), runs on
//! each region host a stand-in region (HTTP on :5240 answering its name) and this very binary
//! as `maas-vip run` with a generated config (VRRP priorities 150/100/50, the VIP on :80 in
//! http mode over the three regions), then shows in plain words: the election, how requests
//! spread, a failover after SIGKILL of the master (followed by `maas-vip release-vips`, as the
//! unit's `ExecStopPost=` runs it) with the takeover time and the failed and delayed requests
//! the client saw, and preemption when the old master comes back.
//!
//! Nothing is created in or sent from the namespace the demo starts in (see [`lab`]). Every
//! namespace, process and temporary file is owned by a guard whose `Drop` removes it; SIGINT,
//! SIGTERM and SIGHUP cancel the run, which drops the guards. Children run in process groups
//! of their own, so a Ctrl-C on the terminal reaches the demo only and it stops them itself.
//! Every wait polls against a deadline.
//!
//! The stand-in region and the client are hidden subcommands of this binary (`maas-vip demo
//! region|client`, see [`helpers`]) run inside their namespaces with `ip netns exec`.

mod helpers;
mod lab;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

use helpers::Reply;
use lab::{Fetcher, Lan, Proc, TempDir, IFACE};

/// `maas-vip demo` and its internal helpers.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Announce the VIP by BGP through FRR (three routed hosts, ECMP at a router) instead of
    /// VRRP on a LAN. Needs FRR installed (apt-get install frr).
    #[arg(long)]
    bgp: bool,
    #[command(subcommand)]
    helper: Option<Helper>,
}

/// Programs the demo runs inside its namespaces (hidden from --help).
#[derive(Debug, Subcommand)]
enum Helper {
    /// A stand-in region: answers every HTTP request with its name.
    #[command(hide = true)]
    Region {
        /// The name it answers.
        #[arg(long)]
        name: String,
        /// Where it listens.
        #[arg(long)]
        bind: SocketAddr,
    },
    /// Reads URLs on stdin, fetches each, prints one JSON line per URL.
    #[command(hide = true)]
    Client,
}

/// A region host of the demo.
struct Region {
    name: &'static str,
    addr: Ipv4Addr,
    priority: u8,
}

const REGIONS: [Region; 3] = [
    Region {
        name: "region-1",
        addr: Ipv4Addr::new(10, 123, 0, 11),
        priority: 150,
    },
    Region {
        name: "region-2",
        addr: Ipv4Addr::new(10, 123, 0, 12),
        priority: 100,
    },
    Region {
        name: "region-3",
        addr: Ipv4Addr::new(10, 123, 0, 13),
        priority: 50,
    },
];
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 123, 0, 200);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 123, 0, 100);
const URL_PATH: &str = "/MAAS/api/2.0/version/";
const ADMIN_STATUS: &str = "http://127.0.0.1:5249/status";
/// The client loop sends a request every PACE.
const PACE: Duration = Duration::from_millis(100);
/// How long the client keeps going once the switch it waits for is seen.
const SETTLE: Duration = Duration::from_secs(1);
/// Bound on each phase that waits for VRRP (Master_Down_Interval is about 3.4 s here).
const PHASE_LIMIT: Duration = Duration::from_secs(15);

/// Prints a line to stdout, ignoring a closed stdout (the demo still cleans up).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

// After `say!`, which it uses.
mod bgp;

/// Entry point of `maas-vip demo` (and of its hidden helpers).
pub(crate) fn run(args: DemoArgs) -> ExitCode {
    match args.helper {
        Some(Helper::Region { name, bind }) => helpers::region(&name, bind),
        Some(Helper::Client) => helpers::client(),
        None => demo(args.bgp),
    }
}

fn demo(bgp: bool) -> ExitCode {
    if !lab::is_root() {
        eprintln!(
            "maas-vip demo needs root: it creates network namespaces, a bridge and veth pairs \
             (and touches nothing outside them). Run: sudo maas-vip demo"
        );
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("maas-vip demo: cannot find this program's path: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("maas-vip demo: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if bgp {
        if let Some(why) = bgp::frr_missing() {
            eprintln!("maas-vip demo --bgp: {why}");
            return ExitCode::from(2);
        }
    }
    rt.block_on(guarded(exe, bgp))
}

/// Installs the signal handlers, then runs the scenario until it ends or a signal cancels it.
async fn guarded(exe: PathBuf, bgp: bool) -> ExitCode {
    // Handlers first: from here on a signal cancels the run and the guards clean up.
    let handlers = (|| {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })();
    let (mut int, mut term, mut hup) = match handlers {
        Ok(h) => h,
        Err(e) => {
            eprintln!("maas-vip demo: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = lab::probe_netns() {
        eprintln!(
            "maas-vip demo: network namespaces are unusable here ({e:#}). It needs `ip` \
             (iproute2) and a kernel that allows `ip netns add` (in a container: --privileged)."
        );
        return ExitCode::from(2);
    }
    let leftovers = lab::remove_leftovers();
    if leftovers > 0 {
        say!("(removed {leftovers} namespace(s) left behind by an earlier demo that was killed)\n");
    }
    let started = Instant::now();
    let prefix = lab::run_prefix();
    let mut run: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>> = if bgp {
        Box::pin(bgp::scenario(&exe, &prefix))
    } else {
        Box::pin(scenario(&exe, &prefix))
    };
    let outcome = tokio::select! {
        r = &mut run => Ok(r),
        _ = int.recv() => Err(("SIGINT", 130)),
        _ = term.recv() => Err(("SIGTERM", 143)),
        _ = hup.recv() => Err(("SIGHUP", 129)),
    };
    if let Err((name, _)) = outcome {
        say!("\n{name}: stopping every process and removing the namespaces...");
    }
    // Dropping an unfinished run drops its guards: processes, namespaces, files.
    drop(run);
    let left = lab::namespaces_with_prefix(&format!("{prefix}-"));
    let gone = if left.is_empty() {
        "every namespace, process and temporary file is gone."
    } else {
        eprintln!(
            "maas-vip demo: could not remove namespace(s) {}; try `ip netns del NAME`",
            left.join(" ")
        );
        "but some namespaces are left (above)."
    };
    match outcome {
        Ok(Ok(())) => {
            say!("\nDone in {:.1} s; {gone}", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("maas-vip demo failed: {e:#}");
            say!("Cleaned up; {gone}");
            ExitCode::from(1)
        }
        Err((_, code)) => {
            say!("Cleaned up; {gone}");
            ExitCode::from(code)
        }
    }
}

/// The region host's maas-vip.toml.
fn daemon_config(me: &Region) -> String {
    let mut s = format!(
        r#"# {name}: written by `maas-vip demo`; the other hosts differ only in `priority`.
shutdown_grace = "2s"

[[vrrp]]
name = "maas_region"
interface = "{IFACE}"
virtual_router_id = 51
priority = {prio}
advert_interval = "1s"
auth_pass = "demo"
virtual_ipaddresses = ["{VIP}/24"]

[[frontend]]
name = "maas"
bind = ["{VIP}:80"]
mode = "http"
balance = "roundrobin"
retries = 3
redispatch = true
check = {{ kind = "http", path = "{URL_PATH}", interval = "1s", timeout = "1s", rise = 2, fall = 2 }}
"#,
        name = me.name,
        prio = me.priority,
    );
    for r in &REGIONS {
        s.push_str(&format!(
            "\n[[frontend.server]]\nname = \"{}\"\naddress = \"{}:5240\"\n",
            r.name, r.addr
        ));
    }
    s.push_str("\n[admin]\nbind = \"127.0.0.1:5249\"\n");
    s
}

/// Builds the lab, runs the steps, and tears the lab down (also when a step fails: the log
/// tails of the daemons are printed first).
async fn scenario(exe: &Path, prefix: &str) -> anyhow::Result<()> {
    say!(
        "maas-vip demo: three MAAS region hosts sharing one virtual IP, and a client, in network\n\
         namespaces on this machine. Nothing outside them is touched, and all of it is removed\n\
         at the end (or on Ctrl-C)."
    );
    let mut w = World::build(exe, prefix)?;
    let result = w.steps().await;
    if result.is_err() {
        for (i, d) in w.daemons.iter().enumerate() {
            if let Some(d) = d {
                eprintln!(
                    "---- maas-vip on {} ({}), last lines:\n{}",
                    REGIONS[i].name,
                    d.log().display(),
                    d.log_tail(15)
                );
            }
        }
    }
    drop(w);
    result
}

/// One request of a client loop.
struct Sample {
    /// When it was sent, from the start of the phase.
    sent: Duration,
    /// When the answer (or the failure) came, from the start of the phase.
    at: Duration,
    reply: Reply,
}

/// An answer slower than this is "delayed" (one takes a few ms on this LAN).
const DELAYED: Duration = Duration::from_millis(500);

/// What became of the requests of one stretch of a phase.
#[derive(Debug, Default)]
struct Tally {
    all: usize,
    failed: usize,
    delayed: usize,
    /// The slowest answer.
    slowest: Duration,
}

/// What a client loop saw.
struct Watched {
    samples: Vec<Sample>,
    /// When the first answer the phase waits for came.
    switched: Option<Duration>,
    /// The VIP holders (indices into REGIONS) each time they changed, from the start of the phase.
    holders: Vec<(Duration, Vec<usize>)>,
}

impl Watched {
    /// The requests sent before the switch (the first answer it waits for).
    fn until_switch(&self) -> Tally {
        Self::count(
            self.samples
                .iter()
                .filter(|s| self.switched.is_none_or(|t| s.sent < t)),
        )
    }

    /// The requests sent from the switch on.
    fn after_switch(&self) -> Tally {
        Self::count(
            self.samples
                .iter()
                .filter(|s| self.switched.is_some_and(|t| s.sent >= t)),
        )
    }

    fn count<'a>(samples: impl Iterator<Item = &'a Sample>) -> Tally {
        samples.fold(Tally::default(), |mut t, s| {
            let took = s.at.saturating_sub(s.sent);
            t.all += 1;
            if !s.reply.ok() {
                t.failed += 1;
            } else {
                t.slowest = t.slowest.max(took);
                if took > DELAYED {
                    t.delayed += 1;
                }
            }
            t
        })
    }

    /// The first failure's reason.
    fn first_error(&self) -> Option<String> {
        self.samples.iter().find(|s| !s.reply.ok()).map(|s| {
            s.reply
                .error
                .clone()
                .unwrap_or_else(|| format!("HTTP {:?}", s.reply.status))
        })
    }

    /// When the holders first satisfied `cond`.
    fn holders_when(&self, cond: impl Fn(&[usize]) -> bool) -> Option<Duration> {
        self.holders.iter().find(|(_, h)| cond(h)).map(|(t, _)| *t)
    }
}

/// Everything the demo started. Fields drop in order: processes, then namespaces, then files.
struct World {
    /// Per region host: a client helper in its namespace, to read its maas-vip's /status.
    admins: Vec<Fetcher>,
    /// Per region host: its maas-vip (None while killed).
    daemons: Vec<Option<Proc>>,
    /// Per region host: its stand-in region (held for its Drop).
    _regions: Vec<Proc>,
    /// The client helper in the client's namespace.
    client: Fetcher,
    lan: Lan,
    dir: TempDir,
    exe: PathBuf,
    /// When the daemons were started.
    daemons_started: Instant,
}

impl World {
    fn build(exe: &Path, prefix: &str) -> anyhow::Result<World> {
        let dir = TempDir::create(&format!("{prefix}.maas-vip-demo"))?;
        let mut machines: Vec<(&'static str, Ipv4Addr)> =
            REGIONS.iter().map(|r| (r.name, r.addr)).collect();
        machines.push(("client", CLIENT));
        let lan = Lan::build(prefix, &machines).context("building the namespaces")?;
        say!("\n1. A LAN 10.123.0.0/24 on a bridge, in namespaces {prefix}-*:");
        for r in &REGIONS {
            say!(
                "     {:<9} {:<12}  stand-in region on :5240 (answers its name), maas-vip with priority {}",
                r.name,
                r.addr,
                r.priority
            );
        }
        say!("     {:<9} {:<12}  sends the requests", "client", CLIENT);
        say!(
            "   The VRRP master holds the virtual IP {VIP}; its maas-vip spreads http://{VIP}/\n   \
             over the three regions' :5240. The config of {} (the others differ only in priority):",
            REGIONS[0].name
        );
        let conf = |r: &Region| dir.path().join(format!("{}.toml", r.name));
        for r in &REGIONS {
            let path = conf(r);
            let text = daemon_config(r);
            std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
            if let Err(report) = config::load(&path) {
                bail!("the generated config is refused:\n{report}");
            }
            if r.priority == REGIONS[0].priority {
                for line in text.lines() {
                    say!("       {line}");
                }
            }
        }
        let log = |name: &str, what: &str| dir.path().join(format!("{name}.{what}.log"));
        let mut regions = Vec::new();
        let mut daemons = Vec::new();
        let mut admins = Vec::new();
        for (r, m) in REGIONS.iter().zip(&lan.machines) {
            regions.push(Proc::spawn(
                m,
                exe,
                &["demo", "region", "--name", r.name, "--bind", "0.0.0.0:5240"],
                log(r.name, "region"),
                false,
            )?);
        }
        for (r, m) in REGIONS.iter().zip(&lan.machines) {
            let c = conf(r);
            let c = c
                .to_str()
                .context("temporary directory path is not UTF-8")?;
            daemons.push(Some(Proc::spawn(
                m,
                exe,
                &["run", "-c", c],
                log(r.name, "maas-vip"),
                false,
            )?));
            admins.push(Fetcher::spawn(m, exe, log(r.name, "admin"))?);
        }
        let daemons_started = Instant::now();
        let client_ns = &lan.machines[REGIONS.len()];
        let client = Fetcher::spawn(client_ns, exe, log("client", "client"))?;
        Ok(World {
            admins,
            daemons,
            _regions: regions,
            client,
            lan,
            dir,
            exe: exe.to_path_buf(),
            daemons_started,
        })
    }

    /// Indices of the region hosts that carry the VIP.
    fn holders(&self) -> Vec<usize> {
        (0..REGIONS.len())
            .filter(|i| self.lan.machines[*i].has_addr(IFACE, VIP))
            .collect()
    }

    /// The VRRP state and effective priority from a host's /status, None if maas-vip does not
    /// answer there.
    async fn vrrp_state(&mut self, host: usize) -> Option<(String, u64)> {
        let reply = self.admins[host].get(ADMIN_STATUS).await.ok()?;
        if !reply.ok() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
        let i = v.get("vrrp")?.get(0)?;
        Some((
            i.get("state")?.as_str()?.to_string(),
            i.get("priority")?.as_u64()?,
        ))
    }

    /// Prints each host's VRRP state (from its /status) and whether it holds the VIP; returns
    /// the names of the hosts in MASTER state.
    async fn print_roles(&mut self) -> Vec<&'static str> {
        let holders = self.holders();
        let mut masters = Vec::new();
        for (i, r) in REGIONS.iter().enumerate() {
            let role = match self.vrrp_state(i).await {
                Some((state, prio)) => {
                    if state == "MASTER" {
                        masters.push(r.name);
                    }
                    format!("{state:<7} priority {prio:<4}")
                }
                None => "maas-vip not running ".to_string(),
            };
            let vip = if holders.contains(&i) {
                format!("has {VIP} on {IFACE}")
            } else {
                String::new()
            };
            let line = format!("     {:<9} {:<12}  {role}  {vip}", r.name, r.addr);
            say!("{}", line.trim_end());
        }
        masters
    }

    fn url() -> String {
        format!("http://{VIP}{URL_PATH}")
    }

    /// Runs the client loop: a request every PACE, each sent without waiting for the ones
    /// before (a request held up across a takeover does not hold up the next), the VIP holders
    /// sampled before each. Stops sending SETTLE after the first reply for which `switched`
    /// holds once the holders satisfy `holders_done`, or at PHASE_LIMIT, then waits for the
    /// requests still out.
    async fn watch(
        &mut self,
        since: Instant,
        switched: impl Fn(&Reply) -> bool,
        holders_done: impl Fn(&[usize]) -> bool,
    ) -> anyhow::Result<Watched> {
        let mut w = Watched {
            samples: Vec::new(),
            switched: None,
            holders: Vec::new(),
        };
        let url = Self::url();
        let mut out: BTreeMap<u64, Duration> = BTreeMap::new();
        let mut next = tokio::time::Instant::now();
        let mut sending = true;
        while sending || !out.is_empty() {
            tokio::select! {
                () = tokio::time::sleep_until(next), if sending => {
                    let h = self.holders();
                    if w.holders.last().is_none_or(|(_, last)| *last != h) {
                        w.holders.push((since.elapsed(), h.clone()));
                    }
                    let id = self.client.send(&url).await?;
                    out.insert(id, since.elapsed());
                    next += PACE;
                    let at = since.elapsed();
                    if w.switched.is_some_and(|t| at >= t + SETTLE && holders_done(&h))
                        || at >= PHASE_LIMIT
                    {
                        sending = false;
                    }
                }
                r = self.client.recv() => {
                    let reply = r?;
                    let at = since.elapsed();
                    let Some(sent) = out.remove(&reply.id) else { continue };
                    if w.switched.is_none() && switched(&reply) {
                        w.switched = Some(at);
                    }
                    w.samples.push(Sample { sent, at, reply });
                }
            }
        }
        w.samples.sort_by_key(|s| s.sent);
        Ok(w)
    }

    fn via_is(reply: &Reply, host: usize) -> bool {
        reply.ok() && reply.via.as_deref() == Some(&REGIONS[host].addr.to_string())
    }

    fn name_of_via(reply: &Reply) -> &'static str {
        REGIONS
            .iter()
            .find(|r| reply.via.as_deref() == Some(&r.addr.to_string()))
            .map_or("an unknown host", |r| r.name)
    }

    async fn steps(&mut self) -> anyhow::Result<()> {
        // 2. Election.
        say!("\n2. Election: every maas-vip starts as BACKUP and listens for adverts (VRRP, every 1 s).");
        if poll(PHASE_LIMIT, || self.holders().len() == 1)
            .await
            .is_none()
        {
            bail!(
                "no single VIP holder within {PHASE_LIMIT:?} (holders: {:?})",
                self.holders()
            );
        }
        let t = self.daemons_started.elapsed();
        // /status may lag the address by a moment.
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.masters().await.len() != 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        say!(
            "   after {:.2} s (no advert heard for 3 x 1 s + skew: the highest priority speaks first):",
            t.as_secs_f64()
        );
        let masters = self.print_roles().await;
        let holder = self.holders();
        let master = match (masters.as_slice(), holder.as_slice()) {
            ([m], [h]) if *m == REGIONS[*h].name => *m,
            _ => bail!("masters by /status {masters:?}, VIP on {holder:?}: they should agree"),
        };
        say!("   Master: {master} (it holds the VIP; the others are BACKUP)");
        if master != REGIONS[0].name {
            bail!(
                "{master} was elected, but {} has the highest priority",
                REGIONS[0].name
            );
        }

        // 3. Spread.
        let url = Self::url();
        let ready = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.client.get(&url).await?;
            if r.ok() {
                break;
            }
            if Instant::now() >= ready {
                bail!(
                    "the client got no answer from {url} within 10 s: {}",
                    r.error.unwrap_or_default()
                );
            }
            tokio::time::sleep(PACE).await;
        }
        say!("\n3. 30 requests from the client (10.123.0.200) to {url}:");
        let mut by_region: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_proxy: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut failed = 0;
        for _ in 0..30 {
            let r = self.client.get(&url).await?;
            if r.ok() {
                *by_region.entry(r.body.trim().to_string()).or_default() += 1;
                *by_proxy.entry(Self::name_of_via(&r)).or_default() += 1;
            } else {
                failed += 1;
            }
        }
        for (region, n) in &by_region {
            say!("     answered by {region:<9} {n:>3}  {}", "#".repeat(*n));
        }
        if failed > 0 {
            say!("     failed            {failed:>3}");
        }
        let proxies: Vec<String> = by_proxy
            .iter()
            .map(|(p, n)| format!("{n} through {p}"))
            .collect();
        say!(
            "   Every request went through the master's proxy ({}); mode = \"http\" with\n   \
             balance = \"roundrobin\" hands each request to the next region.",
            proxies.join(", ")
        );

        // 4. Failover.
        say!(
            "\n4. Failover: the client sends a request every {} ms. After 1 s, maas-vip on {master} is\n   \
             killed with SIGKILL, as in a crash (no goodbye advert).",
            PACE.as_millis()
        );
        let before = self.watch(Instant::now(), |_| true, |_| true).await?;
        let ok_before = before.samples.iter().filter(|s| s.reply.ok()).count();
        say!(
            "   {ok_before} of {} requests answered; now: kill -9 maas-vip on {master}",
            before.samples.len()
        );
        let killed = Instant::now();
        if let Some(d) = self.daemons[0].as_mut() {
            d.kill9().await;
        }
        self.daemons[0] = None;
        // What the unit's ExecStopPost= does under systemd once the main process is gone,
        // however it ended.
        let conf = self.dir.path().join(format!("{master}.toml"));
        let conf = conf
            .to_str()
            .context("temporary directory path is not UTF-8")?;
        let released = self.lan.machines[0].run(&self.exe, &["release-vips", "-c", conf])?;
        let gone = !self.lan.machines[0].has_addr(IFACE, VIP);
        say!(
            "   +{:.2} s  as systemd would (ExecStopPost=), `maas-vip release-vips` ran on {master}: {}",
            killed.elapsed().as_secs_f64(),
            if released.status.success() && gone {
                format!("{VIP} is no longer on {master}")
            } else {
                format!(
                    "it failed ({}): {}",
                    released.status,
                    String::from_utf8_lossy(&released.stderr).trim()
                )
            }
        );
        let w = self
            .watch(
                killed,
                |r| r.ok() && !Self::via_is(r, 0),
                |h| h.iter().any(|i| *i != 0),
            )
            .await?;
        let Some(takeover) = w.switched else {
            bail!("no answer through another host within {PHASE_LIMIT:?} of the kill");
        };
        let first = w
            .samples
            .iter()
            .find(|s| s.at == takeover)
            .map_or("another host", |s| Self::name_of_via(&s.reply));
        let mut events = vec![(takeover, format!("first answer through {first}'s proxy"))];
        if let Some((t, h)) = w.holders.iter().find(|(_, h)| h.iter().any(|i| *i != 0)) {
            let who: Vec<&str> = h
                .iter()
                .filter(|i| **i != 0)
                .map(|i| REGIONS[*i].name)
                .collect();
            events.push((*t, format!("{} holds the VIP (seen here)", who.join(", "))));
        }
        events.sort();
        for (t, what) in events {
            say!("   +{:.2} s  {what}", t.as_secs_f64());
        }
        let during = w.until_switch();
        let after = w.after_switch();
        say!(
            "   Takeover time: {:.2} s (from the kill to the client's first answer via the new master)",
            takeover.as_secs_f64()
        );
        say!(
            "   Failed requests during the switch: {} of {} (then {} of {} failed)",
            during.failed,
            during.all,
            after.failed,
            after.all
        );
        say!(
            "   Delayed requests during the switch: {} of {} (answered after more than {} ms, the slowest after {:.2} s)",
            during.delayed,
            during.all,
            DELAYED.as_millis(),
            during.slowest.as_secs_f64()
        );
        say!(
            "   The client kept sending to {master} until the new master's gratuitous ARP reached it.\n   \
             With the VIP gone from {master}, its kernel drops those SYNs instead of refusing them,\n   \
             and the client's TCP sends each again (after 1 s, 3 s, ...) until a copy reaches the new\n   \
             master: a delay, not an error. VRRP's part is the Master_Down_Interval of the next\n   \
             priority, 3 x 1 s + (256 - {}) / 256 s = {:.2} s, counted from {master}'s last advert\n   \
             (sent up to 1 s before the kill).",
            REGIONS[1].priority,
            3.0 + f64::from(256 - u16::from(REGIONS[1].priority)) / 256.0
        );
        if let Some(e) = w.first_error() {
            say!("   The first failed request failed with \"{e}\".");
        }
        say!("   Now:");
        let masters = self.print_roles().await;
        say!("   Master: {}", masters.join(", "));

        // 5. Preemption.
        say!(
            "\n5. {master} comes back: its maas-vip starts again while the client keeps going. Since\n   \
             150 > 100 (preempt = true) it takes the VIP back."
        );
        let restarted = Instant::now();
        self.daemons[0] = Some(Proc::spawn(
            &self.lan.machines[0],
            &self.exe,
            &["run", "-c", conf],
            self.dir.path().join(format!("{master}.maas-vip.log")),
            false,
        )?);
        let w = self
            .watch(restarted, |r| Self::via_is(r, 0), |h| h == [0])
            .await?;
        if let Some(t) = w.holders_when(|h| h == [0]) {
            say!(
                "   +{:.2} s  {master} holds the VIP again, and only it (the other master stepped down)",
                t.as_secs_f64()
            );
        }
        let Some(back) = w.switched else {
            bail!("no answer through {master} within {PHASE_LIMIT:?} of its restart");
        };
        say!(
            "   +{:.2} s  first answer through {master}'s proxy",
            back.as_secs_f64()
        );
        let back_tally = Watched::count(w.samples.iter());
        let why = match w.first_error() {
            None => "both proxies were up while the VIP moved".to_string(),
            Some(e) => format!("the first with \"{e}\""),
        };
        say!(
            "   Failed requests during the switch back: {} of {} ({why}); delayed: {}",
            back_tally.failed,
            back_tally.all,
            back_tally.delayed
        );
        say!("   Now:");
        let masters = self.print_roles().await;
        say!("   Master again: {}", masters.join(", "));

        // 6. Stop.
        say!(
            "\n6. Stopping: SIGTERM to each maas-vip (the master first sends a priority 0 advert and\n   \
             drops the VIP), then the stand-in regions and helpers; then the namespaces go."
        );
        let stop = Instant::now();
        for d in self.daemons.iter().flatten() {
            d.signal("TERM");
        }
        for (i, d) in self.daemons.iter_mut().enumerate() {
            let Some(d) = d else { continue };
            let left = Duration::from_secs(5).saturating_sub(stop.elapsed());
            match d.wait_exit(left).await {
                Some(st) => say!(
                    "     maas-vip on {} exited with {} after {:.2} s",
                    REGIONS[i].name,
                    st.code()
                        .map_or_else(|| st.to_string(), |c| format!("status {c}")),
                    stop.elapsed().as_secs_f64()
                ),
                None => say!(
                    "     maas-vip on {} still runs after 5 s: killed",
                    REGIONS[i].name
                ),
            }
        }
        Ok(())
    }

    /// The hosts in MASTER state by /status.
    async fn masters(&mut self) -> Vec<&'static str> {
        let mut masters = Vec::new();
        for (i, r) in REGIONS.iter().enumerate() {
            if self.vrrp_state(i).await.is_some_and(|(s, _)| s == "MASTER") {
                masters.push(r.name);
            }
        }
        masters
    }
}

/// Polls `cond` every 20 ms until it holds (the time it took) or `limit` passes (None).
async fn poll(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_pass_check() {
        let dir = std::env::temp_dir().join(format!("demo-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for r in &REGIONS {
            let p = dir.join(format!("{}.toml", r.name));
            std::fs::write(&p, daemon_config(r)).expect("write");
            let loaded = config::load(&p);
            assert!(
                loaded.is_ok(),
                "{}: {:?}",
                r.name,
                loaded.err().map(|e| e.to_string())
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
