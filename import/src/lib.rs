//! `maas-vip import`: an equivalent maas-vip.toml for an existing keepalived.conf + haproxy.cfg.
//!
//! Each file is parsed into its own small syntax tree (`keepalived.rs`, `haproxy.rs`) and
//! translated into `config`'s own blocks ([`config::VrrpConfig`], [`config::FrontendConfig`],
//! [`config::AdminConfig`]), which start from config's defaults. They are fitted to the rules
//! that `maas-vip check` enforces across blocks (unique names, non-overlapping binds, the
//! admin port), rendered as TOML text, and that text is read back by [`config::parse`]: what
//! it would refuse becomes a note too. Everything that is not carried over, or is changed on
//! the way, is a note naming its file and line: the notes come back to the caller (for stderr)
//! and head the TOML as comments. Nothing is dropped silently.
//!
//! The parsers are total: any text gives either a result or an [`ImportError`] naming the file
//! and line, never a panic; nesting is bounded.
//!
//! # Layout
//!
//! - This crate sits on top of `config` (the `maas-vip-config` package) and has no model of its
//!   own: a block being imported is config's type plus a side record of what the output needs
//!   besides (file and line for notes, the keys the source set, comments). The defaults are
//!   config's: each block starts as [`config::blank_frontend`], [`config::blank_server`] or
//!   [`config::blank_vrrp`] (the blocks' own serde defaults), the notes name
//!   `config::DEFAULT_ADMIN_BIND` and `lb`'s `DEFAULT_TIMEOUT_*`. So are the rules across
//!   blocks ([`config::binds_overlap`], [`config::admin_overlaps`], and [`config::parse`] on
//!   the result).
//! - `keepalived`, `haproxy` (and `auth_hmac`, keepalived 2.4's block): one parser and
//!   translator per source file; `render`: the blocks as TOML; this file: the side records,
//!   the fitting across blocks and the failover weights.
//! - Not here: reading files and printing (the `maas-vip import` command in `bin/`).
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{AdminConfig, FrontendConfig, Severity, VrrpConfig};
use lb::ServerConfig;
use toml::Spanned;

mod auth_hmac;
mod haproxy;
#[cfg(test)]
mod ipv6_tests;
mod keepalived;
#[cfg(test)]
mod patroni_tests;
mod render;
#[cfg(test)]
mod roundtrip_tests;
#[cfg(test)]
mod tests;

/// What `import` produced.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The maas-vip.toml text, notes included as comments at the top.
    pub toml: String,
    /// Everything not carried over or changed on the way, each as `file:line: what and why`.
    pub notes: Vec<String>,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file that its own program would reject too.
    #[error("{}:{line}: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Neither file was given.
    #[error("nothing to import: give --keepalived FILE, --haproxy FILE or both")]
    NothingToImport,
    /// A file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One importer: file name (for notes), text, notes -> items, or a syntax error's line and text.
type Importer<T> = fn(&str, &str, &mut Notes) -> Result<Vec<T>, (usize, String)>;

/// Runs one importer on a given file (none given: nothing), its syntax errors located.
fn read_with<T>(
    input: Option<(&Path, &str)>,
    notes: &mut Notes,
    importer: Importer<T>,
) -> Result<Vec<T>, ImportError> {
    let Some((path, text)) = input else {
        return Ok(Vec::new());
    };
    importer(&path.display().to_string(), text, notes).map_err(|(line, message)| {
        ImportError::Syntax {
            file: path.to_owned(),
            line,
            message,
        }
    })
}

/// Translates the given files (path for messages, text) into maas-vip.toml text.
/// Looks nothing up on the host: `localhost` servers stay 127.0.0.1 (see [`import_with`]).
pub fn import(
    keepalived: Option<(&Path, &str)>,
    haproxy: Option<(&Path, &str)>,
) -> Result<Imported, ImportError> {
    import_with(keepalived, haproxy, &[], &|_| None)
}

/// This host's address toward another host, as the kernel's routing would choose it.
type LocalAddr<'a> = &'a dyn Fn(IpAddr) -> Option<IpAddr>;

/// The source address the kernel picks to reach `peer` (a UDP socket connected, nothing
/// sent): this host's address on the regions' network.
pub fn route_source(peer: IpAddr) -> Option<IpAddr> {
    let any = match peer {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let sock = std::net::UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    sock.connect(SocketAddr::new(peer, 9)).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// [`import`], with the other hosts' keepalived.conf files (`--peer-keepalived`), read only
/// for their priorities, so that the weights written fail this host over to them, and
/// `local`, which finds this host's address for a `localhost` server under `balance source`.
pub fn import_with(
    keepalived: Option<(&Path, &str)>,
    haproxy: Option<(&Path, &str)>,
    peers: &[(&Path, &str)],
    local: LocalAddr<'_>,
) -> Result<Imported, ImportError> {
    let mut built = build(keepalived, haproxy, peers, local)?;
    let mut toml = render::render(keepalived, haproxy, &built);
    // The last word is `maas-vip check`'s: what it would refuse (values carried over as the
    // source gave them) is said in the notes too, not left for the first start to find.
    if let Err(report) = config::parse(Path::new("maas-vip.toml"), toml.clone()) {
        let before = built.notes.len();
        for f in report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
        {
            let note = one_line(&format!(
                "`maas-vip check` refuses the result: {}; fix it before use",
                f.message
            ));
            if !built.notes.contains(&note) {
                built.notes.push(note);
            }
        }
        if built.notes.len() != before {
            toml = render::render(keepalived, haproxy, &built);
        }
    }
    Ok(Imported {
        toml,
        notes: built.notes,
    })
}

/// What the importer built: `config`'s own blocks with their side records, in output order,
/// and the notes, final.
#[derive(Debug)]
struct Built {
    vrrps: Vec<Vrrp>,
    frontends: Vec<Frontend>,
    admin: AdminConfig,
    notes: Vec<String>,
}

/// Reads the files into `config`'s blocks and fits them to the rules across blocks.
fn build(
    keepalived: Option<(&Path, &str)>,
    haproxy: Option<(&Path, &str)>,
    peers: &[(&Path, &str)],
    local: LocalAddr<'_>,
) -> Result<Built, ImportError> {
    if keepalived.is_none() && haproxy.is_none() {
        return Err(ImportError::NothingToImport);
    }
    let mut notes = Notes::default();
    let mut frontends = read_with(haproxy, &mut notes, haproxy::import)?;
    for f in frontends
        .iter_mut()
        .filter(|f| f.cfg.balance == lb::Balance::Source)
    {
        localhost_to_region_address(f, local, &mut notes);
    }
    let mut vrrps = read_with(keepalived, &mut notes, keepalived::import)?;
    let mut peer_priorities = Vec::new();
    for p in peers {
        // Their own notes are about their files: not this host's config.
        let mut ignored = Notes::default();
        for v in read_with(Some(*p), &mut ignored, keepalived::import)? {
            peer_priorities.push(PeerPriority {
                file: p.0.display().to_string(),
                interface: v.interface().to_string(),
                vrid: v.cfg.virtual_router_id,
                // The peer runs keepalived: its default when unset.
                priority: if v.written.has("priority") {
                    *v.cfg.priority.get_ref()
                } else {
                    KEEPALIVED_PRIORITY
                },
            });
        }
    }
    let admin = cross_checks(&mut frontends, &mut vrrps, &mut notes);
    choose_weights(&mut vrrps, &peer_priorities, &mut notes);
    let files: Vec<String> = [keepalived, haproxy]
        .iter()
        .flatten()
        .map(|(p, _)| p.display().to_string())
        .collect();
    Ok(Built {
        vrrps,
        frontends,
        admin,
        notes: notes.finish(&files),
    })
}

/// Notes collected while importing, each with the place it is about.
#[derive(Debug, Default)]
struct Notes(Vec<(Option<(String, usize)>, String)>);

impl Notes {
    /// `file:line: message`, with control characters made harmless for a TOML comment.
    fn at(&mut self, file: &str, line: usize, message: impl fmt::Display) {
        let text = one_line(&format!("{file}:{line}: {message}"));
        self.0.push((Some((file.to_string(), line)), text));
    }

    /// A note about the result as a whole.
    fn general(&mut self, message: impl fmt::Display) {
        self.0.push((None, one_line(&message.to_string())));
    }

    /// In file order (files as given, then line), general notes last, each once.
    fn finish(mut self, files: &[String]) -> Vec<String> {
        let rank = |place: &Option<(String, usize)>| match place {
            Some((f, line)) => (
                files.iter().position(|g| g == f).unwrap_or(files.len()),
                *line,
            ),
            None => (usize::MAX, 0),
        };
        self.0.sort_by_key(|(place, _)| rank(place));
        let mut seen = std::collections::HashSet::new();
        self.0
            .into_iter()
            .filter_map(|(_, text)| seen.insert(text.clone()).then_some(text))
            .collect()
    }
}

/// Replaces control characters so the text fits one comment line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The blocks being imported: `config`'s own types (their defaults are config's), each with the
// little the output records besides: where it came from, and which keys the source set.

/// The keys a source file set, by their maas-vip.toml name: the render writes those, and
/// leaves out a key whose value is config's default because nothing set it.
#[derive(Debug, Clone, Default)]
struct Written(Vec<&'static str>);

impl Written {
    fn set(&mut self, key: &'static str) {
        if !self.has(key) {
            self.0.push(key);
        }
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains(&key)
    }
}

/// One `[[vrrp]]` block: `config`'s [`VrrpConfig`], within the ranges it accepts.
#[derive(Debug, Clone)]
struct Vrrp {
    cfg: VrrpConfig,
    /// The keepalived.conf and line of its `vrrp_instance`, for notes.
    file: String,
    line: usize,
    /// `priority`, `preempt_delay`, `garp_master_*`, `auth_hmac.mode` when keepalived.conf
    /// gave them.
    written: Written,
    /// keepalived's global `script_user` and its line: written commented out, so not in
    /// `cfg` (see `render_vrrp`).
    script_user: Option<(String, usize)>,
    /// A comment above each `[[vrrp.track_script]]` of `cfg`, by index.
    track_script_comments: Vec<Option<String>>,
}

impl Vrrp {
    /// The instance's name.
    fn name(&self) -> &str {
        self.cfg.name.get_ref()
    }

    /// Its interface.
    fn interface(&self) -> &str {
        self.cfg.interface.get_ref()
    }

    /// Its protocol version, 2 or 3.
    fn version(&self) -> u8 {
        (*self.cfg.version.get_ref()).into()
    }
}

/// One `[[frontend]]` block: `lb`'s [`FrontendConfig`], within the ranges it accepts.
#[derive(Debug, Clone)]
struct Frontend {
    cfg: FrontendConfig,
    /// The haproxy.cfg and line of its section, for notes.
    file: String,
    line: usize,
    /// `maxconn` and the `timeout_*` haproxy.cfg gave; `check` when a server is checked,
    /// `check.path` when `option httpchk` names one.
    written: Written,
}

impl Frontend {
    /// The frontend's name.
    fn name(&self) -> &str {
        self.cfg.name.get_ref()
    }

    /// Its binds.
    fn binds(&self) -> &[SocketAddr] {
        self.cfg.bind.get_ref()
    }
}

/// A server's address as the importer writes it, `ip:port` (never a host name).
fn server_addr(s: &ServerConfig) -> Option<SocketAddr> {
    s.address.get_ref().parse().ok()
}

/// The guide's `server localhost localhost:5240` under `balance source`: maas-vip's source
/// hash keys on the server's address, and 127.0.0.1 is another region on each host, so after
/// a takeover every client would land on another region. It is written as this host's own
/// address toward the other regions (the same region under the same address in every host's
/// config), or left out if that address is listed already; without another region to find
/// the address by, it stays, with a note.
fn localhost_to_region_address(f: &mut Frontend, local: LocalAddr<'_>, notes: &mut Notes) {
    let others: Vec<IpAddr> = f
        .cfg
        .server
        .iter()
        .filter_map(server_addr)
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback())
        .collect();
    let mut drop = Vec::new();
    for (i, s) in f.cfg.server.iter_mut().enumerate() {
        let Some(mut address) = server_addr(s).filter(|a| a.ip().is_loopback()) else {
            continue;
        };
        let name = s.name.get_ref();
        let mine = others
            .iter()
            .find(|ip| ip.is_ipv4() == address.is_ipv4())
            .and_then(|peer| local(*peer));
        match mine {
            Some(ip) if others.contains(&ip) => {
                drop.push(i);
                notes.at(
                    &f.file,
                    f.line,
                    format!(
                        "server `{name}` ({address}) is left out: it is this host's region, \
                         listed by its address {ip} already"
                    ),
                );
            }
            Some(ip) => {
                let old = address;
                address.set_ip(ip);
                notes.at(
                    &f.file,
                    f.line,
                    format!(
                        "server `{name}` ({old}) written as {address}, this host's address \
                         toward the other regions: balance source hashes the address, and \
                         127.0.0.1 is another region on each host, so after a takeover clients \
                         would change region; check that it is this host's region address"
                    ),
                );
                s.address = Spanned::new(0..0, address.to_string());
            }
            None => notes.at(
                &f.file,
                f.line,
                format!(
                    "server `{name}` stays {address}: balance source hashes the address, and \
                     127.0.0.1 is another region on each host, so clients change region when \
                     the VIP moves; write this host's region address instead"
                ),
            ),
        }
    }
    for i in drop.into_iter().rev() {
        f.cfg.server.remove(i);
    }
}

/// keepalived's default priority, assumed for a peer whose priority is not known.
const KEEPALIVED_PRIORITY: u8 = 100;

/// A peer's priority for one virtual router, from its keepalived.conf.
#[derive(Debug, Clone)]
struct PeerPriority {
    file: String,
    interface: String,
    vrid: u8,
    priority: u8,
}

/// Weights that make this host fail over (issue 13, point 3): an equal-priority backup does
/// not preempt (RFC 3768 §6.4.2 takes over only from a lower priority), so a weight that
/// brings this host down to a peer's priority leaves the VIP where it is. `track_backends`
/// (and every negative track script weight) must take the priority strictly below the lowest
/// peer priority: those of `peers` for this VRID, keepalived's default 100 when no peer file
/// gives one. Weight-0 track scripts keep keepalived's meaning, FAULT.
fn choose_weights(vrrps: &mut [Vrrp], peers: &[PeerPriority], notes: &mut Notes) {
    for v in vrrps.iter_mut() {
        // What maas-vip runs with: unset, config's default.
        let prio = *v.cfg.priority.get_ref();
        if prio == 255 {
            continue;
        }
        let known: Vec<&PeerPriority> = peers
            .iter()
            .filter(|p| p.vrid == v.cfg.virtual_router_id && p.interface == v.interface())
            .collect();
        let (lowest, from) = match known.iter().min_by_key(|p| p.priority) {
            Some(p) => (
                p.priority,
                format!("the lowest peer priority ({}, {})", p.priority, p.file),
            ),
            None => (
                KEEPALIVED_PRIORITY,
                format!(
                    "keepalived's default priority {KEEPALIVED_PRIORITY}, assumed for the peers \
                     (give their files with --peer-keepalived to use theirs)"
                ),
            ),
        };
        // Strictly below the lowest peer; at least -1; the priority stays at least 1.
        let needed =
            -(i32::from(prio) - i32::from(lowest) + 1).clamp(1, (i32::from(prio) - 1).max(1));
        let name = v.cfg.name.get_ref();
        if let Some(w) = v.cfg.track_backends.as_mut().map(|t| &mut t.weight) {
            let chosen = if *w == 0 { needed } else { (*w).min(needed) };
            let why = if *w == 0 {
                "keepalived's weight 0 would put the instance in FAULT while HAProxy is down; \
                 maas-vip lowers the priority instead, so that a host that reaches no region \
                 yields the VIP to one that does, and the VIP stays up somewhere when no host \
                 reaches any (every host in FAULT would leave it nowhere)"
                    .to_string()
            } else if chosen != *w {
                format!(
                    "the weight {w} would leave {}, not below it, and an equal or higher \
                     priority keeps the VIP here",
                    i32::from(prio) + *w
                )
            } else {
                "as written".to_string()
            };
            notes.at(
                &v.file,
                v.line,
                format!(
                    "vrrp_instance `{}`: track_backends weight {chosen}: priority {prio} - {} = \
                     {} is below {from}, so this host fails over when it can reach no region; {why}",
                    name,
                    -chosen,
                    i32::from(prio) + chosen
                ),
            );
            *w = chosen;
        }
        for t in v.cfg.track_script.iter_mut() {
            if t.weight == 0 {
                notes.at(
                    &v.file,
                    v.line,
                    format!(
                        "track_script `{}` keeps weight 0: failing puts the instance in FAULT, \
                         as in keepalived, and the VIP moves to a peer",
                        t.name.get_ref()
                    ),
                );
            } else if t.weight < 0 && t.weight > needed {
                notes.at(
                    &v.file,
                    v.line,
                    format!(
                        "track_script `{}` weight {} -> {needed}: priority {prio} - {} = {} would \
                         not be below {from}, so the VIP would stay here while it fails \
                         (keepalived behaved the same)",
                        t.name.get_ref(),
                        t.weight,
                        -t.weight,
                        i32::from(prio) + t.weight
                    ),
                );
                t.weight = needed;
            }
        }
    }
}

/// Default address of the admin endpoint.
const ADMIN: SocketAddr = config::DEFAULT_ADMIN_BIND;

/// Applies the rules `maas-vip check` enforces across blocks, dropping what would break them
/// with a note. Returns the admin address to write when the default one clashes.
fn cross_checks(
    frontends: &mut Vec<Frontend>,
    vrrps: &mut Vec<Vrrp>,
    notes: &mut Notes,
) -> AdminConfig {
    // Frontends: unique names, binds that do not overlap.
    let mut kept: Vec<Frontend> = Vec::new();
    for mut f in std::mem::take(frontends) {
        if kept.iter().any(|k| k.name() == f.name()) {
            notes.at(
                &f.file,
                f.line,
                format!(
                    "a second frontend named `{}` is not carried over (names must be unique)",
                    f.name()
                ),
            );
            continue;
        }
        let mut binds = Vec::new();
        for b in f.binds().to_vec() {
            let clash = kept
                .iter()
                .flat_map(|k| k.binds().iter().map(move |o| (o, k.name())))
                .chain(binds.iter().map(|o| (o, f.name())))
                .find(|(o, _)| config::binds_overlap(o, &b));
            match clash {
                Some((o, name)) => notes.at(
                    &f.file,
                    f.line,
                    format!(
                        "bind {b} of `{}` overlaps {o} of `{name}`: not carried over",
                        f.name()
                    ),
                ),
                None => binds.push(b),
            }
        }
        if binds.is_empty() {
            notes.at(
                &f.file,
                f.line,
                format!(
                    "frontend `{}` is not carried over: none of its binds remains",
                    f.name()
                ),
            );
            continue;
        }
        f.cfg.bind = Spanned::new(0..0, binds);
        kept.push(f);
    }
    *frontends = kept;

    // The admin endpoint listens on config's DEFAULT_ADMIN_BIND unless told otherwise.
    let admin_clashes = |a: &SocketAddr| {
        frontends
            .iter()
            .flat_map(|f| f.binds())
            .any(|b| config::admin_overlaps(a, b))
    };
    let mut admin = AdminConfig::default();
    if admin_clashes(&ADMIN) {
        // Else the first free one of the 50 ports above it.
        let free = (ADMIN.port() + 1..=ADMIN.port() + 50)
            .map(|p| SocketAddr::new(ADMIN.ip(), p))
            .find(|a| !admin_clashes(a));
        match free {
            Some(a) => {
                notes.general(format!(
                    "a frontend binds port {}, the admin endpoint's default: [admin] moved to {a}",
                    ADMIN.port()
                ));
                admin.bind = Spanned::new(0..0, a);
            }
            None => {
                notes.general(format!(
                    "a frontend binds port {}, the admin endpoint's default: [admin] disabled",
                    ADMIN.port()
                ));
                admin.enabled = false;
            }
        }
    }

    // VRRP: unique names and (interface, VRID) pairs; track_backends needs a frontend.
    let mut kept: Vec<Vrrp> = Vec::new();
    let target = frontends
        .iter()
        .find(|f| f.binds().iter().any(|b| b.port() == 80))
        .or(frontends.first())
        .map(|f| f.name().to_string());
    for mut v in std::mem::take(vrrps) {
        if kept.iter().any(|k| k.name() == v.name()) {
            notes.at(
                &v.file,
                v.line,
                format!(
                    "a second vrrp_instance named `{}` is not carried over",
                    v.name()
                ),
            );
            continue;
        }
        if let Some(k) = kept.iter().find(|k| {
            k.interface() == v.interface() && k.cfg.virtual_router_id == v.cfg.virtual_router_id
        }) {
            // keepalived runs an IPv4 and an IPv6 router of one VRID side by side (RFC 9568
            // §1: separate virtual routers); maas-vip keys its instances by interface and VRID.
            let families = if k.cfg.is_ipv6() != v.cfg.is_ipv6() {
                format!(
                    ", by `{}` of the other family (keepalived allows one VRID per family, \
                     maas-vip one per interface): give it another virtual_router_id on every \
                     host",
                    k.name()
                )
            } else {
                String::new()
            };
            notes.at(
                &v.file,
                v.line,
                format!(
                    "vrrp_instance `{}` is not carried over: virtual_router_id {} is already \
                     used on `{}`{families}",
                    v.name(),
                    v.cfg.virtual_router_id,
                    v.interface()
                ),
            );
            continue;
        }
        if v.cfg.track_backends.is_some() && target.is_none() {
            v.cfg.track_backends = None;
            notes.at(
                &v.file,
                v.line,
                format!(
                    "vrrp_instance `{}`: no frontend was imported, so no track_backends \
                     replaces the HAProxy check script; add `track_backends = {{ frontend = \
                     \"...\", weight = -N }}` once the config has a [[frontend]], N taking the \
                     priority strictly below the lowest peer's",
                    v.name()
                ),
            );
        }
        kept.push(v);
    }
    *vrrps = kept;
    if let Some(t) = &target {
        if frontends.len() > 1 && vrrps.iter().any(|v| v.cfg.track_backends.is_some()) {
            notes.general(format!(
                "track_backends follows frontend `{t}` (of {} imported); change it if another \
                 one matters more",
                frontends.len()
            ));
        }
        for tb in vrrps
            .iter_mut()
            .filter_map(|v| v.cfg.track_backends.as_mut())
        {
            tb.frontend = Spanned::new(0..0, t.clone());
        }
    }
    admin
}

// ---------------------------------------------------------------------------------------------
// Values as TOML text (the blocks are written by `render`).

/// A TOML basic string, escaped by the toml crate.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML array of strings.
fn q_list<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| q(s.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

/// A duration as maas-vip writes it: the largest unit that keeps it exact.
fn dur(d: Duration) -> String {
    let s = if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        let secs = d.as_secs();
        if secs == 0 {
            "0s".to_string()
        } else if secs.is_multiple_of(3600) {
            format!("{}h", secs / 3600)
        } else if secs.is_multiple_of(60) {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        }
    };
    q(&s)
}

// ---------------------------------------------------------------------------------------------
// Values shared by both parsers.

/// keepalived's seconds: a decimal number such as `2`, `0.5` or `1.25`, at most 1000000.
fn keepalived_secs(s: &str) -> Option<Duration> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty()
        || int.len() > 7
        || frac.len() > 6
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let micros: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    if secs > 1_000_000 {
        return None;
    }
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// HAProxy's time: a number with an optional unit (`us`, `ms`, `s`, `m`, `h`, `d`); a bare
/// number is milliseconds. At most 2^31-1 ms, HAProxy's own limit.
fn haproxy_time(s: &str) -> Option<Duration> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    if num.is_empty() || num.len() > 12 {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "" | "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86_400)?),
        _ => return None,
    };
    (d <= Duration::from_millis(i32::MAX as u64)).then_some(d)
}
