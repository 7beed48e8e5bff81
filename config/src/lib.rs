//! maas-vip.toml: its schema, loading with located errors, and the checks across blocks.
//!
//! The file is parsed once into a spanned document, then each block (`[[vrrp]]`,
//! `[[frontend]]`, `[[announce]]`, `[admin]`, top-level keys) is deserialized on its own, so one
//! bad block does not hide the problems of the others. Inside a block, a key that fails is set
//! aside and the block parsed again, so every bad key is reported, each with its line and column.
//!
//! # Layout
//!
//! - The schema of the file as a whole lives here: [`Config`], the top-level keys
//!   ([`GlobalConfig`]), `[admin]` ([`AdminConfig`]) and their defaults as constants
//!   ([`DEFAULT_ADMIN_BIND`], [`DEFAULT_SHUTDOWN_GRACE`]).
//! - The schema of each block stays with the crate that runs it, re-exported here:
//!   [`FrontendConfig`] (`lb`, with its `DEFAULT_TIMEOUT_*`), [`VrrpConfig`] (`vrrp`),
//!   [`AnnounceConfig`] (`announce`). Their checks within a block are theirs too.
//! - Here: [`load`] / [`parse`] into a [`Report`] of located [`Finding`]s, the checks across
//!   blocks (unique names, [`binds_overlap`], [`admin_overlaps`], tracked frontends that exist),
//!   facts of the host as warnings, and [`read_keys`] for the auth_hmac keys.
//! - [`blank_frontend`], [`blank_server`], [`blank_vrrp`]: blocks at the defaults [`parse`]
//!   gives, for a caller that builds a config (`import`).
//!
//! Not here: reading keepalived.conf or haproxy.cfg (the `import` crate, which writes a file this
//! crate accepts and shares its rules), and anything that runs a config (the `maas-vip` daemon).

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use announce::AnnounceConfig;
pub use lb::FrontendConfig;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
pub use vrrp::{ValidVrrp, VrrpConfig};

/// `[admin] bind` when not given: loopback only, so no token is needed.
pub const DEFAULT_ADMIN_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5249);

/// `shutdown_grace` when not given: how long established connections may run on after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Whether two frontend binds clash: the same port and family, and the same address or either
/// one the unspecified address of the family.
pub fn binds_overlap(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        && a.is_ipv4() == b.is_ipv4()
}

/// Whether the admin endpoint's address clashes with a frontend bind: the same port, and the
/// same address or a frontend bound to an unspecified address of either family (a frontend's
/// `[::]` is dual-stack).
pub fn admin_overlaps(admin: &SocketAddr, frontend_bind: &SocketAddr) -> bool {
    frontend_bind.port() == admin.port()
        && (frontend_bind.ip() == admin.ip() || frontend_bind.ip().is_unspecified())
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// VRRP instances, validated: the driver takes them as they are.
    pub vrrp: Vec<ValidVrrp>,
    /// Proxy frontends.
    pub frontend: Vec<FrontendConfig>,
    /// VIPs announced by BGP through the host's routing daemon.
    pub announce: Vec<AnnounceConfig>,
    /// Admin endpoint.
    pub admin: AdminConfig,
    /// Daemon-wide settings.
    pub global: GlobalConfig,
}

/// A block as a file gives it with only its required keys, blank: every other key holds the
/// default [`parse`] gives it, the block's own serde default, so that a caller that builds a
/// config (`import`) starts from the very defaults a file read back gets, and a new key needs
/// no second default. `required` is TOML text, a constant.
fn blank<T: DeserializeOwned>(required: &'static str) -> T {
    let doc = DeTable::parse(required).expect("a constant, valid TOML");
    let span = doc.span();
    T::deserialize(ValueDeserializer::from(Spanned::new(
        span,
        DeValue::Table(doc.into_inner()),
    )))
    .expect("a constant the block accepts")
}

/// A `[[frontend]]` with an empty `name`, config's default `bind` and no server: every other
/// key at its default.
pub fn blank_frontend() -> FrontendConfig {
    blank("name = \"\"")
}

/// A `[[frontend.server]]` with an empty `name` and `address`: every other key at its default.
pub fn blank_server() -> lb::ServerConfig {
    blank("name = \"\"\naddress = \"\"")
}

/// A `[[vrrp]]` with an empty `name` and `interface`, `virtual_router_id = 1` and no address
/// (so [`ValidVrrp::try_from`] refuses it until they are given): every other key at its
/// default.
pub fn blank_vrrp() -> VrrpConfig {
    blank("name = \"\"\ninterface = \"\"\nvirtual_router_id = 1\nvirtual_ipaddresses = []")
}

/// `[admin]`: on by default at 127.0.0.1:5249.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the endpoint at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address of the endpoint.
    #[serde(default = "default_admin_bind")]
    pub bind: Spanned<SocketAddr>,
    /// Bearer token required on every request (`Authorization: Bearer <token>`); required when
    /// `bind` is not a loopback address.
    #[serde(default)]
    pub token: Option<Spanned<String>>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            bind: default_admin_bind(),
            token: None,
        }
    }
}

/// Top-level keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// How long established connections may run on after SIGTERM.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Threads that run the proxy, each with its own listening sockets (SO_REUSEPORT); 0: one
    /// per CPU.
    #[serde(default, deserialize_with = "de_workers")]
    pub workers: usize,
    /// How tcp-mode connections are run: `"epoll"` (readiness, the default) or `"io_uring"`
    /// (an io_uring engine thread per worker; epoll where the host refuses io_uring). Read at
    /// start, as `workers`.
    #[serde(default)]
    pub io: lb::Io,
}

fn de_workers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = i64::deserialize(d)?;
    match usize::try_from(v) {
        Ok(n) if n <= 256 => Ok(n),
        _ => Err(serde::de::Error::custom(format!(
            "workers must be 0 (one per CPU) to 256, got {v}"
        ))),
    }
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            shutdown_grace: default_grace(),
            workers: 0,
            io: lb::Io::default(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_admin_bind() -> Spanned<SocketAddr> {
    Spanned::new(0..0, DEFAULT_ADMIN_BIND)
}
fn default_grace() -> Duration {
    DEFAULT_SHUTDOWN_GRACE
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// Usable, but a fact of this host or a risky setting deserves a look.
    Warning,
}

/// One finding, located in the file.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Byte range in the file, if known.
    pub span: Option<Range<usize>>,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Every finding of one file, with what is needed to print them located.
#[derive(Debug)]
pub struct Report {
    /// The file.
    pub path: PathBuf,
    source: String,
    /// Findings in file order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Adds findings made outside this crate (the daemon's capability checks), kept in file order.
    pub fn add(&mut self, findings: Vec<Finding>) {
        self.findings.extend(findings);
        self.findings
            .sort_by_key(|f| f.span.as_ref().map_or(0, |s| s.start));
    }

    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
}

/// 1-based line and column of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let kind = match finding.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            match &finding.span {
                Some(span) => {
                    let (line, col) = line_col(&self.source, span.start);
                    writeln!(
                        f,
                        "{kind}: {}:{line}:{col}: {}",
                        self.path.display(),
                        finding.message
                    )?;
                    if let Some(text) = self.source.lines().nth(line - 1) {
                        let width = self.source[span.clone()]
                            .lines()
                            .next()
                            .map_or(1, |l| l.chars().count().max(1));
                        writeln!(f, "  {line:>4} | {text}")?;
                        writeln!(f, "       | {}{}", " ".repeat(col - 1), "^".repeat(width))?;
                    }
                }
                None => writeln!(f, "{kind}: {}: {}", self.path.display(), finding.message)?,
            }
        }
        Ok(())
    }
}

/// Reads and validates a config file. `Err` carries the report when there is any error;
/// `Ok` carries the config and the warnings.
pub fn load(path: &Path) -> Result<(Config, Report), Report> {
    let source = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            return Err(Report {
                path: path.to_owned(),
                source: String::new(),
                findings: vec![Finding {
                    severity: Severity::Error,
                    span: None,
                    message: format!("cannot read the file: {e}"),
                }],
            })
        }
    };
    match parse(path, source) {
        Ok((c, mut report)) => {
            if let Some(w) = world_readable_secret(path, &c) {
                report.findings.insert(0, w);
            }
            Ok((c, report))
        }
        Err(r) => Err(r),
    }
}

/// Who reads the auth_hmac keys, which decides what an unset `$CREDENTIALS_DIRECTORY` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyReader {
    /// `check` run by hand: only systemd sets `$CREDENTIALS_DIRECTORY`, so a credential is
    /// out of sight (a warning); the unit's `ExecStartPre=` check does see it.
    Check,
    /// The daemon (start, reload): every key must be there.
    Daemon,
}

/// Reads the auth_hmac keys of every `[[vrrp]]` block of a loaded config. A key file that is
/// missing, open to group or others, or holds no usable key, and a credential that is not
/// there, are errors located at their `key_file` or `credential` value, each saying how to fix
/// it. The keys themselves are dropped at once (the daemon's instances read them again).
pub fn read_keys(
    loaded: Result<(Config, Report), Report>,
    reader: KeyReader,
) -> Result<(Config, Report), Report> {
    use vrrp::auth_hmac::keys::{credentials_directory, KeyFileError, CREDENTIALS_DIRECTORY};
    let (c, mut report) = loaded?;
    let creds = credentials_directory();
    for h in c.vrrp.iter().filter_map(|v| v.auth_hmac.as_ref()) {
        for key in h.read_keys(creds.as_deref()) {
            let span = located(key.span());
            let Err(e) = key.get_ref() else { continue };
            let finding = match (e, reader) {
                (KeyFileError::NoCredentialsDirectory { name }, KeyReader::Check) => Finding {
                    severity: Severity::Warning,
                    span,
                    message: format!(
                        "credential `{name}` not checked: ${CREDENTIALS_DIRECTORY} is not set \
                         (systemd sets it for the unit, whose ExecStartPre= check reads it; \
                         here: {CREDENTIALS_DIRECTORY}=/dir/holding/{name} maas-vip check)"
                    ),
                },
                _ => Finding {
                    severity: Severity::Error,
                    span,
                    message: e.to_string(),
                },
            };
            report.findings.push(finding);
        }
    }
    report
        .findings
        .sort_by_key(|f| f.span.as_ref().map_or(0, |s| s.start));
    if report.has_errors() {
        Err(report)
    } else {
        Ok((c, report))
    }
}

/// A config that holds a secret (`auth_pass`, the admin `token`) should not be readable by
/// every user of the host: a warning, as `check` judges the file, not the host.
fn world_readable_secret(path: &Path, c: &Config) -> Option<Finding> {
    use std::os::unix::fs::PermissionsExt;
    let secret = if c.vrrp.iter().any(|v| v.auth_pass.is_some()) {
        "auth_pass"
    } else if c.admin.token.is_some() {
        "the admin token"
    } else {
        return None;
    };
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| Finding {
        severity: Severity::Warning,
        span: None,
        message: format!(
            "the file holds {secret} and every user can read it (mode {:o}): chmod o-r it",
            mode & 0o777
        ),
    })
}

/// Validates config text as if read from `path`.
pub fn parse(path: &Path, source: String) -> Result<(Config, Report), Report> {
    let mut findings = Vec::new();
    let mut config = parse_inner(&source, &mut findings);
    if let Some(c) = &mut config {
        host_facts(c, &mut findings);
    }
    findings.sort_by_key(|f| f.span.as_ref().map_or(0, |s| s.start));
    let report = Report {
        path: path.to_owned(),
        source,
        findings,
    };
    match config {
        Some(c) if !report.has_errors() => Ok((c, report)),
        _ => Err(report),
    }
}

fn error(findings: &mut Vec<Finding>, span: Option<Range<usize>>, message: String) {
    findings.push(Finding {
        severity: Severity::Error,
        span,
        message,
    });
}

fn parse_inner(source: &str, findings: &mut Vec<Finding>) -> Option<Config> {
    let doc = match DeTable::parse(source) {
        Ok(d) => d,
        Err(e) => {
            error(findings, e.span(), e.message().to_string());
            return None;
        }
    };
    let doc_span = doc.span();
    let mut root = doc.into_inner();
    let mut vrrp = Vec::new();
    let mut frontend = Vec::new();
    let mut announce = Vec::new();
    // Per frontend: whether a bad `[[frontend.server]]` was set aside (its count would mislead).
    let mut frontend_dropped = Vec::new();
    let mut admin = AdminConfig::default();
    let mut globals = DeTable::new();
    let mut ok = true;

    for (key, value) in std::mem::take(&mut root) {
        match key.get_ref().as_ref() {
            "vrrp" => {
                ok &= blocks::<VrrpConfig>(value, "vrrp", &mut vrrp, &mut Vec::new(), findings);
            }
            "frontend" => {
                ok &= blocks::<FrontendConfig>(
                    value,
                    "frontend",
                    &mut frontend,
                    &mut frontend_dropped,
                    findings,
                );
            }
            "announce" => {
                ok &= blocks::<AnnounceConfig>(
                    value,
                    "announce",
                    &mut announce,
                    &mut Vec::new(),
                    findings,
                );
            }
            "admin" => match block::<AdminConfig>(value, "[admin]", findings) {
                Some(a) => admin = a,
                None => ok = false,
            },
            _ => {
                globals.insert(key, value);
            }
        }
    }
    let global = match block::<GlobalConfig>(
        Spanned::new(doc_span, DeValue::Table(globals)),
        "top level",
        findings,
    ) {
        Some(g) => g,
        None => {
            ok = false;
            GlobalConfig::default()
        }
    };

    // Checks within blocks. A `[[vrrp]]` block is validated here once, into the type the
    // driver takes without checking it again; the raw blocks stay for the checks across
    // blocks, so that a block with its own errors is still compared with the others.
    let mut valid_vrrp = Vec::with_capacity(vrrp.len());
    for v in &vrrp {
        match ValidVrrp::try_from(v.clone()) {
            Ok(valid) => valid_vrrp.push(valid),
            Err(invalid) => {
                for p in invalid.problems {
                    error(findings, located(p.span()), p.into_inner());
                }
            }
        }
        for p in v.warnings() {
            findings.push(Finding {
                severity: Severity::Warning,
                span: located(p.span()),
                message: p.into_inner(),
            });
        }
    }
    for (f, dropped) in frontend.iter().zip(&frontend_dropped) {
        for p in f.validate_with(!dropped) {
            error(findings, located(p.span()), p.into_inner());
        }
        for p in f.warnings() {
            findings.push(Finding {
                severity: Severity::Warning,
                span: located(p.span()),
                message: p.into_inner(),
            });
        }
    }
    for a in &announce {
        for p in a.validate() {
            error(findings, located(p.span()), p.into_inner());
        }
    }
    // Checks across blocks.
    let mut names = HashSet::new();
    for v in &vrrp {
        if !names.insert(v.name.get_ref().as_str()) {
            error(
                findings,
                located(v.name.span()),
                format!("vrrp name `{}` is used twice", v.name.get_ref()),
            );
        }
    }
    let mut ids = HashSet::new();
    for v in &vrrp {
        if !ids.insert((v.interface.get_ref().as_str(), v.virtual_router_id)) {
            error(
                findings,
                located(v.interface.span()),
                format!(
                    "virtual_router_id {} is used twice on interface `{}`",
                    v.virtual_router_id,
                    v.interface.get_ref()
                ),
            );
        }
    }
    let mut names = HashSet::new();
    for f in &frontend {
        if !names.insert(f.name.get_ref().as_str()) {
            error(
                findings,
                located(f.name.span()),
                format!("frontend name `{}` is used twice", f.name.get_ref()),
            );
        }
    }
    let mut binds: Vec<(SocketAddr, &str)> = Vec::new();
    for f in &frontend {
        for b in f.bind.get_ref() {
            let clash = binds.iter().find(|(o, _)| binds_overlap(o, b));
            if let Some((o, name)) = clash {
                error(
                    findings,
                    located(f.bind.span()),
                    format!("bind {b} overlaps {o} of frontend `{name}`"),
                );
            }
            binds.push((*b, f.name.get_ref()));
        }
    }
    for v in &vrrp {
        if let Some(tb) = &v.track_backends {
            if !frontend
                .iter()
                .any(|f| f.name.get_ref() == tb.frontend.get_ref())
            {
                error(
                    findings,
                    located(tb.frontend.span()),
                    format!(
                        "track_backends names frontend `{}`, which this file does not define",
                        tb.frontend.get_ref()
                    ),
                );
            }
        }
    }
    check_announce(&announce, &vrrp, &frontend, findings);
    if admin.enabled && !admin.bind.get_ref().ip().is_loopback() && admin.token.is_none() {
        error(
            findings,
            located(admin.bind.span()),
            format!(
                "admin bind {} is not loopback: set `token` too, or anyone who reaches it can drain servers",
                admin.bind.get_ref()
            ),
        );
    }
    if let Some(t) = &admin.token {
        if t.get_ref().len() < 16 || t.get_ref().bytes().any(|b| !b.is_ascii_graphic()) {
            error(
                findings,
                located(t.span()),
                "admin `token` must be at least 16 printable characters without spaces".into(),
            );
        }
    }
    if admin.enabled {
        if let Some((_, name)) = binds
            .iter()
            .find(|(b, _)| admin_overlaps(admin.bind.get_ref(), b))
        {
            error(
                findings,
                located(admin.bind.span()),
                format!("admin bind overlaps a bind of frontend `{name}`"),
            );
        }
    }
    if !ok {
        return None;
    }
    vrrp_host_facts(&vrrp, findings);
    Some(Config {
        vrrp: valid_vrrp,
        frontend,
        announce,
        admin,
        global,
    })
}

/// `[[announce]]` against the other blocks: unique names and interfaces, tracked frontends
/// that exist, and no VIP both announced and held by VRRP (they may coexist for different
/// VIPs: a VIP has one owner).
fn check_announce(
    announce: &[AnnounceConfig],
    vrrp: &[VrrpConfig],
    frontend: &[FrontendConfig],
    findings: &mut Vec<Finding>,
) {
    for (i, a) in announce.iter().enumerate() {
        let earlier = &announce[..i];
        if earlier.iter().any(|o| o.name.get_ref() == a.name.get_ref()) {
            error(
                findings,
                located(a.name.span()),
                format!("announce name `{}` is used twice", a.name.get_ref()),
            );
        }
        if let Some(o) = earlier
            .iter()
            .find(|o| o.interface.get_ref() == a.interface.get_ref())
        {
            error(
                findings,
                located(a.interface.span()).or(located(a.name.span())),
                format!(
                    "interface `{}` is already the VIP interface of announce `{}`: give each block its own",
                    a.interface.get_ref(),
                    o.name.get_ref()
                ),
            );
        }
        if let Some(v) = vrrp
            .iter()
            .find(|v| v.interface.get_ref() == a.interface.get_ref())
        {
            error(
                findings,
                located(a.interface.span()).or(located(a.name.span())),
                format!(
                    "interface `{}` is the VRRP interface of `{}`: the VIP interface is one maas-vip creates, give it a name of its own",
                    a.interface.get_ref(),
                    v.name.get_ref()
                ),
            );
        }
        for f in &a.track_frontends {
            if !frontend.iter().any(|x| x.name.get_ref() == f.get_ref()) {
                error(
                    findings,
                    located(f.span()),
                    format!(
                        "track_frontends names frontend `{}`, which this file does not define",
                        f.get_ref()
                    ),
                );
            }
        }
        for vip in a.vips() {
            let in_vrrp = vrrp.iter().find(|v| {
                v.virtual_ipaddresses
                    .get_ref()
                    .iter()
                    .any(|x| x.addr == vip.addr())
            });
            if let Some(v) = in_vrrp {
                error(
                    findings,
                    located(a.virtual_ipaddresses.span()),
                    format!(
                        "VIP {} is also a virtual address of vrrp `{}`: a VIP is either announced or held by VRRP",
                        vip.addr(),
                        v.name.get_ref()
                    ),
                );
            }
            if let Some(o) = earlier.iter().find(|o| o.vips().contains(vip)) {
                error(
                    findings,
                    located(a.virtual_ipaddresses.span()),
                    format!("VIP {vip} is also announced by `{}`", o.name.get_ref()),
                );
            }
        }
    }
}

/// Default values carry the empty span 0..0: no location to show for those.
fn located(span: Range<usize>) -> Option<Range<usize>> {
    if span.is_empty() {
        None
    } else {
        Some(span)
    }
}

/// Deserializes an array of tables, each element on its own. Returns false on any error.
/// `dropped` gets, per element pushed to `out`, whether a table inside it was set aside.
fn blocks<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    what: &str,
    out: &mut Vec<T>,
    dropped: &mut Vec<bool>,
    findings: &mut Vec<Finding>,
) -> bool {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => {
            let mut ok = true;
            for item in items {
                match block_dropping::<T>(item, &format!("[[{what}]]"), findings) {
                    (Some(t), d) => {
                        out.push(t);
                        dropped.push(d);
                    }
                    (None, _) => ok = false,
                }
            }
            ok
        }
        _ => {
            error(
                findings,
                Some(span),
                format!("`{what}` must be written as [[{what}]] blocks"),
            );
            false
        }
    }
}

/// Deserializes one block, reporting every bad key (see [`block_dropping`]).
fn block<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    what: &str,
    findings: &mut Vec<Finding>,
) -> Option<T> {
    block_dropping(value, what, findings).0
}

/// Deserializes one block, reporting every bad key once: after an error, the key holding the
/// bad value is removed and the block tried again, so later keys are checked too. A required
/// key removed so is not reported again as missing: the table that lacks it is set aside
/// instead (an element of an array of tables, such as one `[[frontend.server]]`, so that the
/// others are still checked) and the second value says so; or, for the block itself, the
/// block is given up once its other keys are checked.
fn block_dropping<T: DeserializeOwned>(
    mut value: Spanned<DeValue<'_>>,
    what: &str,
    findings: &mut Vec<Finding>,
) -> (Option<T>, bool) {
    let mut removed: Vec<(Range<usize>, String)> = Vec::new();
    let mut dropped = false;
    // Bounded: each round removes one key or table.
    for _ in 0..64 {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            // With bad keys set aside, what remains is still checked (the caller knows the
            // file has errors from the findings).
            Ok(t) => return (Some(t), dropped),
            Err(e) => {
                let span = e.span();
                let message = e.message().to_string();
                let already = missing_field(&message).and_then(|field| {
                    let at = span.clone()?;
                    removed
                        .iter()
                        .any(|(table, key)| *table == at && key == field)
                        .then_some(at)
                });
                if let Some(at) = already {
                    if at == value.span() || !remove_table_at(&mut value, &at) {
                        return (None, dropped);
                    }
                    dropped = true;
                    continue;
                }
                let message = if span.is_none() {
                    format!("{what}: {message}")
                } else {
                    message
                };
                error(findings, span.clone(), message);
                match span.and_then(|s| remove_key_at(&mut value, &s)) {
                    Some(r) => removed.push(r),
                    None => return (None, dropped),
                }
            }
        }
    }
    (None, dropped)
}

/// The field of serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Removes the innermost key whose key or value covers `span`. Returns the span of the table
/// it was in and its name, if one was removed. Containers are searched whatever their own
/// span (an array of tables has no span covering its tables).
fn remove_key_at(
    value: &mut Spanned<DeValue<'_>>,
    span: &Range<usize>,
) -> Option<(Range<usize>, String)> {
    let covers = |outer: &Range<usize>| outer.start <= span.start && span.end <= outer.end;
    let table_span = value.span();
    match value.get_mut() {
        DeValue::Table(table) => {
            let mut hit = None;
            for (k, v) in table.iter_mut() {
                if covers(&k.span()) {
                    hit = Some(k.clone());
                    break;
                }
                if matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)) {
                    if let Some(r) = remove_key_at(v, span) {
                        return Some(r);
                    }
                }
                if covers(&v.span()) {
                    hit = Some(k.clone());
                    break;
                }
            }
            let k = hit?;
            table
                .remove(&k)
                .map(|_| (table_span, k.get_ref().to_string()))
        }
        DeValue::Array(items) => items.iter_mut().find_map(|v| remove_key_at(v, span)),
        _ => None,
    }
}

/// Removes the element of an array of tables whose span is `span`. Returns whether it did.
fn remove_table_at(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    match value.get_mut() {
        DeValue::Table(table) => table.iter_mut().any(|(_, v)| remove_table_at(v, span)),
        DeValue::Array(items) => {
            if items.iter().any(|v| v.span() == *span) {
                let all = std::mem::replace(items, std::iter::empty().collect());
                *items = all.into_iter().filter(|v| v.span() != *span).collect();
                return true;
            }
            items.iter_mut().any(|v| remove_table_at(v, span))
        }
        _ => false,
    }
}

/// Facts of the host this runs on: warnings, never errors (`check` judges the file alone).
/// Reads the password files of postgres checks on the way.
fn host_facts(c: &mut Config, findings: &mut Vec<Finding>) {
    for f in &mut c.frontend {
        let Some(path) = f.check.password_file.clone() else {
            continue;
        };
        let span = located(f.name.span());
        let mut warn = |message: String| {
            findings.push(Finding {
                severity: Severity::Warning,
                span: span.clone(),
                message,
            })
        };
        // The error names the file and what is wrong with it, never its content.
        if let Err(e) = f.check.load_password() {
            warn(format!(
                "{e}: the postgres check will log in without a password"
            ));
            continue;
        }
        match healthcheck::postgres::password_file_warning(&path) {
            Ok(Some(w)) => warn(w),
            Ok(None) => {}
            Err(e) => warn(format!("password file {}: {e}", path.display())),
        }
    }
}

/// Host facts of the `[[vrrp]]` blocks, valid or not (a bad `script_user` is worth saying
/// even in a block with another error).
fn vrrp_host_facts(vrrp: &[VrrpConfig], findings: &mut Vec<Finding>) {
    for v in vrrp {
        if let Some(user) = &v.script_user {
            if let Err(e) = vrrp::resolve_user(user.get_ref()) {
                findings.push(Finding {
                    severity: Severity::Warning,
                    span: located(user.span()),
                    message: format!("{e}: track scripts and notify would fail"),
                });
            }
        }
        let iface = v.interface.get_ref();
        if !Path::new("/sys/class/net").join(iface).exists() {
            findings.push(Finding {
                severity: Severity::Warning,
                span: located(v.interface.span()),
                message: format!("interface `{iface}` does not exist on this host"),
            });
        }
    }
}

#[cfg(test)]
mod tests;
