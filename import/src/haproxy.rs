//! haproxy.cfg: sections, keywords and translation into `[[frontend]]` blocks.
//!
//! HAProxy's syntax is one keyword line at a time inside `global`, `defaults`, `frontend`,
//! `backend` and `listen` sections (others are noted as a whole). Words are split on blanks;
//! `"..."` (with `\` escapes) and `'...'` quote, `\` escapes a character, `#` starts a comment.
//!
//! A `defaults` section sets values every later proxy starts from. A frontend and the backend
//! it sends to become one `[[frontend]]`: binds, client side settings from the frontend;
//! servers, balancing, retries and checks from the backend.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use healthcheck::{CheckKind, CheckOverride, HttpMethod};
use lb::{Balance, Mode, OnDown};
use toml::Spanned;

use super::{haproxy_time, Frontend, Notes, Written};

/// A setting with the line it was set on and whether it came from a `defaults` section.
#[derive(Debug, Clone)]
struct Set<T> {
    v: T,
    line: usize,
    inherited: bool,
}

type Opt<T> = Option<Set<T>>;

/// Options of a `server` or `default-server` line that maas-vip carries.
#[derive(Debug, Clone, Default)]
struct ServerOpts {
    check: Option<bool>,
    weight: Option<u32>,
    backup: Option<bool>,
    disabled: Option<bool>,
    inter: Option<Duration>,
    fastinter: Option<Duration>,
    downinter: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
    port: Option<u16>,
    /// `on-marked-down shutdown-sessions`.
    shutdown_sessions: Option<bool>,
}

impl ServerOpts {
    fn overlay(&self, o: &ServerOpts) -> ServerOpts {
        ServerOpts {
            check: o.check.or(self.check),
            weight: o.weight.or(self.weight),
            backup: o.backup.or(self.backup),
            disabled: o.disabled.or(self.disabled),
            inter: o.inter.or(self.inter),
            fastinter: o.fastinter.or(self.fastinter),
            downinter: o.downinter.or(self.downinter),
            rise: o.rise.or(self.rise),
            fall: o.fall.or(self.fall),
            port: o.port.or(self.port),
            shutdown_sessions: o.shutdown_sessions.or(self.shutdown_sessions),
        }
    }
}

/// A server line, parsed.
#[derive(Debug, Clone)]
struct RawServer {
    name: String,
    address: SocketAddr,
    opts: ServerOpts,
}

/// Everything a proxy section (or `defaults`) can set that maas-vip carries.
#[derive(Debug, Clone, Default)]
struct Settings {
    http: Opt<bool>,
    balance: Opt<Balance>,
    hash_type: Opt<String>,
    redirect_root: Opt<String>,
    retries: Opt<u32>,
    redispatch: Opt<bool>,
    maxconn: Opt<u32>,
    timeout_connect: Opt<Duration>,
    timeout_client: Opt<Duration>,
    timeout_server: Opt<Duration>,
    timeout_tunnel: Opt<Duration>,
    timeout_check: Opt<Duration>,
    server_close: Opt<bool>,
    forwardfor: Opt<bool>,
    /// `Some(path)`: an HTTP check; `None` inside: a TCP check (`option tcp-check`).
    httpchk: Opt<Option<String>>,
    /// Method of `option httpchk` when not GET (HAProxy's default is OPTIONS).
    httpchk_method: Opt<HttpMethod>,
    expect_status: Opt<u16>,
    default_backend: Opt<String>,
    default_server: ServerOpts,
}

impl Settings {
    /// What a proxy declared after this `defaults` section starts from.
    fn inherited(&self) -> Settings {
        fn inh<T: Clone>(o: &Opt<T>) -> Opt<T> {
            o.as_ref().map(|s| Set {
                v: s.v.clone(),
                line: s.line,
                inherited: true,
            })
        }
        Settings {
            http: inh(&self.http),
            balance: inh(&self.balance),
            hash_type: inh(&self.hash_type),
            redirect_root: inh(&self.redirect_root),
            retries: inh(&self.retries),
            redispatch: inh(&self.redispatch),
            maxconn: inh(&self.maxconn),
            timeout_connect: inh(&self.timeout_connect),
            timeout_client: inh(&self.timeout_client),
            timeout_server: inh(&self.timeout_server),
            timeout_tunnel: inh(&self.timeout_tunnel),
            timeout_check: inh(&self.timeout_check),
            server_close: inh(&self.server_close),
            forwardfor: inh(&self.forwardfor),
            httpchk: inh(&self.httpchk),
            httpchk_method: inh(&self.httpchk_method),
            expect_status: inh(&self.expect_status),
            default_backend: inh(&self.default_backend),
            default_server: self.default_server.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Defaults => "defaults",
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
            Kind::Listen => "listen",
        }
    }
    fn front(self) -> bool {
        matches!(self, Kind::Frontend | Kind::Listen | Kind::Defaults)
    }
    fn back(self) -> bool {
        matches!(self, Kind::Backend | Kind::Listen | Kind::Defaults)
    }
}

/// A `frontend`, `backend` or `listen` section, read.
#[derive(Debug, Clone)]
struct Proxy {
    kind: Kind,
    name: String,
    line: usize,
    s: Settings,
    binds: Vec<SocketAddr>,
    /// Binds that terminate TLS (`ssl crt ...`), with the line of the first.
    tls_binds: Vec<SocketAddr>,
    tls_line: Option<(usize, String)>,
    /// `bind [::]:PORT v6only` (port, line): see [`v6only_notes`].
    v6only: Vec<(u16, usize)>,
    /// Line of `reqadd X-Forwarded-Proto: https` (or its `http-request set-header` form).
    forwarded_proto: Option<usize>,
    use_backend: Option<(String, usize)>,
    servers: Vec<RawServer>,
}

/// Splits one line into words. `Err` for an unterminated quote.
fn words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' => break,
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        Some(ch) => cur.push(ch),
                        None => return Err("unterminated double-quoted string".into()),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err("unterminated single-quoted string".into()),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// What the section being read is.
enum Current {
    None,
    Global,
    Other {
        keyword: String,
        line: usize,
        lines: usize,
    },
    Proxy(Box<Proxy>),
}

/// Translates a haproxy.cfg into `[[frontend]]` blocks, noting what is left behind.
pub(super) fn import(
    file: &str,
    src: &str,
    notes: &mut Notes,
) -> Result<Vec<Frontend>, (usize, String)> {
    let mut defaults = Settings::default();
    let mut proxies: Vec<Proxy> = Vec::new();
    let mut cur = Current::None;
    for (i, text) in src.lines().enumerate() {
        let line = i + 1;
        let w = words(text).map_err(|e| (line, e))?;
        let Some(kw) = w.first().map(String::as_str) else {
            continue;
        };
        let section = matches!(
            kw,
            "global"
                | "defaults"
                | "frontend"
                | "backend"
                | "listen"
                | "userlist"
                | "peers"
                | "resolvers"
                | "mailers"
                | "program"
                | "http-errors"
                | "ring"
                | "cache"
                | "log-forward"
                | "crt-store"
                | "traces"
                | "acme"
        );
        if !section {
            match &mut cur {
                Current::None => {
                    return Err((line, format!("`{kw}` outside of any section")));
                }
                Current::Global => global(file, line, &w, notes),
                Current::Other { lines, .. } => *lines += 1,
                Current::Proxy(p) => keyword(file, line, &w, p, notes),
            }
            continue;
        }
        end_section(
            file,
            std::mem::replace(&mut cur, Current::None),
            &mut defaults,
            &mut proxies,
            notes,
        );
        cur = match kw {
            "global" => Current::Global,
            "defaults" => {
                // Each defaults section starts afresh.
                if w.len() > 1 {
                    notes.at(
                        file,
                        line,
                        format!(
                            "named defaults (`{}`) are read as the defaults of what follows",
                            w[1..].join(" ")
                        ),
                    );
                }
                Current::Proxy(Box::new(Proxy {
                    kind: Kind::Defaults,
                    name: String::new(),
                    line,
                    s: Settings::default(),
                    binds: Vec::new(),
                    tls_binds: Vec::new(),
                    tls_line: None,
                    v6only: Vec::new(),
                    forwarded_proto: None,
                    use_backend: None,
                    servers: Vec::new(),
                }))
            }
            "frontend" | "backend" | "listen" => {
                let kind = match kw {
                    "frontend" => Kind::Frontend,
                    "backend" => Kind::Backend,
                    _ => Kind::Listen,
                };
                let Some(name) = w.get(1).filter(|n| !n.is_empty()) else {
                    return Err((line, format!("`{kw}` needs a name")));
                };
                let mut p = Proxy {
                    kind,
                    name: name.clone(),
                    line,
                    s: defaults.inherited(),
                    binds: Vec::new(),
                    tls_binds: Vec::new(),
                    tls_line: None,
                    v6only: Vec::new(),
                    forwarded_proto: None,
                    use_backend: None,
                    servers: Vec::new(),
                };
                match (kind, w.get(2).map(String::as_str)) {
                    (_, None) => {}
                    (_, Some("from")) => notes.at(
                        file,
                        line,
                        "`from` (named defaults) is not followed: the last defaults apply",
                    ),
                    // Old syntax: `listen NAME ADDR:PORT`.
                    (Kind::Listen | Kind::Frontend, Some(_)) => {
                        bind(file, line, &w[2..], &mut p, notes);
                    }
                    (Kind::Backend, Some(_)) | (Kind::Defaults, Some(_)) => notes.at(
                        file,
                        line,
                        format!(
                            "words after the backend name ignored: `{}`",
                            w[2..].join(" ")
                        ),
                    ),
                }
                Current::Proxy(Box::new(p))
            }
            other => Current::Other {
                keyword: other.to_string(),
                line,
                lines: 0,
            },
        };
    }
    end_section(file, cur, &mut defaults, &mut proxies, notes);
    let frontends = resolve(file, &proxies, notes);
    v6only_notes(file, &proxies, &frontends, notes);
    Ok(frontends)
}

/// HAProxy's `bind :::80 v6only` takes IPv6 clients only; maas-vip's `[::]:80` takes IPv4
/// clients too unless the file binds an IPv4 address on that port (README, "IPv6 in the
/// proxy"). With such a bind the two mean the same; without one, say how they differ.
fn v6only_notes(file: &str, proxies: &[Proxy], frontends: &[Frontend], notes: &mut Notes) {
    for (port, line) in proxies.iter().flat_map(|p| p.v6only.iter()) {
        let v4 = frontends
            .iter()
            .flat_map(|f| f.binds())
            .any(|b| b.is_ipv4() && b.port() == *port);
        if !v4 {
            notes.at(
                file,
                *line,
                format!(
                    "bind `v6only` has no maas-vip equivalent: [::]:{port} also takes IPv4 \
                     clients on port {port} (dual-stack), which HAProxy left to others; add \
                     an IPv4 bind on port {port} to another frontend to keep them apart, or \
                     bind the IPv6 VIP itself"
                ),
            );
        }
    }
}

fn end_section(
    file: &str,
    cur: Current,
    defaults: &mut Settings,
    proxies: &mut Vec<Proxy>,
    notes: &mut Notes,
) {
    match cur {
        Current::None | Current::Global => {}
        Current::Other {
            keyword,
            line,
            lines,
        } => notes.at(
            file,
            line,
            format!(
                "section `{keyword}` ({lines} line(s)) is not supported by maas-vip: not \
                 carried over"
            ),
        ),
        Current::Proxy(p) => match p.kind {
            Kind::Defaults => *defaults = p.s,
            _ => {
                if proxies.iter().any(|o| {
                    o.name == p.name
                        && (o.kind == p.kind || o.kind == Kind::Listen || p.kind == Kind::Listen)
                }) {
                    notes.at(
                        file,
                        p.line,
                        format!("a second proxy named `{}` is not carried over", p.name),
                    );
                } else {
                    proxies.push(*p);
                }
            }
        },
    }
}

/// A `global` line: nothing there maps; say why for the common ones.
fn global(file: &str, line: usize, w: &[String], notes: &mut Notes) {
    let kw = w.first().map(String::as_str).unwrap_or("");
    let why = match kw {
        "log" => "maas-vip logs through tracing to stderr (journald)",
        "chroot" | "user" | "group" | "uid" | "gid" | "daemon" | "pidfile" | "nbproc"
        | "nbthread" | "master-worker" => "the systemd unit runs maas-vip",
        "stats" => "the [admin] endpoint (/status, /metrics, server actions) replaces it",
        "maxconn" => "maas-vip limits connections per [[frontend]] (`maxconn`)",
        k if k.starts_with("ssl-") || k == "ca-base" || k == "crt-base" => {
            "maas-vip does not terminate TLS"
        }
        _ => "not supported by maas-vip",
    };
    notes.at(
        file,
        line,
        format!("global `{}` not carried over: {why}", w.join(" ")),
    );
}

fn set<T>(v: T, line: usize) -> Opt<T> {
    Some(Set {
        v,
        line,
        inherited: false,
    })
}

/// One keyword line of a `defaults`, `frontend`, `backend` or `listen` section.
fn keyword(file: &str, line: usize, w: &[String], p: &mut Proxy, notes: &mut Notes) {
    let kind = p.kind;
    let kw = w[0].as_str();
    let a1 = w.get(1).map(String::as_str).unwrap_or("");
    let a2 = w.get(2).map(String::as_str).unwrap_or("");
    let whole = w.join(" ");
    let mut note = |m: String| notes.at(file, line, m);
    let s = &mut p.s;
    // Keywords HAProxy accepts only on one side.
    let back_only = |note: &mut dyn FnMut(String)| {
        if kind == Kind::Frontend {
            note(format!(
                "HAProxy ignores `{whole}` in a frontend (it belongs to a backend): \
                 carried over as meant unless the backend sets its own"
            ));
        }
    };
    match kw {
        "mode" => match a1 {
            "http" => s.http = set(true, line),
            "tcp" => s.http = set(false, line),
            _ => note(format!("`{whole}` not supported: mode tcp or http")),
        },
        "balance" => {
            back_only(&mut note);
            match a1 {
                "roundrobin" => s.balance = set(Balance::Roundrobin, line),
                "source" => s.balance = set(Balance::Source, line),
                "first" => s.balance = set(Balance::First, line),
                "static-rr" | "leastconn" | "random" | "uri" | "url_param" | "hdr"
                | "rdp-cookie" => {
                    s.balance = set(Balance::Roundrobin, line);
                    note(format!(
                        "`{whole}` is not supported: maas-vip balances roundrobin (or source, \
                         or first)"
                    ));
                }
                _ => note(format!("`{whole}` not understood: ignored")),
            }
        }
        "hash-type" => {
            back_only(&mut note);
            s.hash_type = set(w[1..].join(" "), line);
        }
        "retries" => {
            back_only(&mut note);
            match a1.parse::<u32>() {
                Ok(n) if n <= 100 => s.retries = set(n, line),
                _ => note(format!(
                    "`{whole}` ignored: maas-vip accepts retries 0..=100"
                )),
            }
        }
        "redispatch" => {
            back_only(&mut note);
            s.redispatch = set(true, line);
        }
        "maxconn" => {
            if kind == Kind::Backend {
                note(format!(
                    "`{whole}` is not valid in a backend: ignored, as HAProxy does"
                ));
            } else {
                match a1.parse::<u64>() {
                    Ok(n) if (1..=1_000_000).contains(&n) => s.maxconn = set(n as u32, line),
                    Ok(n) if n > 1_000_000 => {
                        s.maxconn = set(1_000_000, line);
                        note(format!("`{whole}`: maas-vip's maxconn is at most 1000000"));
                    }
                    _ => note(format!(
                        "`{whole}` ignored: maas-vip's maxconn is 1..=1000000"
                    )),
                }
            }
        }
        "timeout" | "contimeout" | "clitimeout" | "srvtimeout" => {
            let (which, value) = match kw {
                "contimeout" => ("connect", a1),
                "clitimeout" => ("client", a1),
                "srvtimeout" => ("server", a1),
                _ => (a1, a2),
            };
            if kw != "timeout" {
                note(format!(
                    "`{whole}` is deprecated in HAProxy: read as `timeout {which}`"
                ));
            }
            let Some(d) = haproxy_time(value) else {
                note(format!("`{whole}`: bad time value, ignored"));
                return;
            };
            if d.is_zero() {
                note(format!(
                    "`{whole}`: 0 means no timeout in HAProxy; maas-vip's default applies"
                ));
                return;
            }
            match which {
                "connect" | "server" | "tunnel" | "check" => {
                    back_only(&mut note);
                    match which {
                        "connect" => s.timeout_connect = set(d, line),
                        "server" => s.timeout_server = set(d, line),
                        "tunnel" => s.timeout_tunnel = set(d, line),
                        _ => s.timeout_check = set(d, line),
                    }
                }
                "client" => {
                    if kind == Kind::Backend {
                        note(format!(
                            "`{whole}` is ignored in a backend, as HAProxy does"
                        ));
                    } else {
                        s.timeout_client = set(d, line);
                    }
                }
                _ => note(format!(
                    "`{whole}` is not supported by maas-vip: not carried over"
                )),
            }
        }
        "option" | "no" => {
            let (neg, opt, rest) = if kw == "no" {
                if a1 != "option" {
                    note(format!(
                        "`{whole}` is not supported by maas-vip: not carried over"
                    ));
                    return;
                }
                (true, a2, w.get(3..).unwrap_or(&[]))
            } else {
                (false, a1, w.get(2..).unwrap_or(&[]))
            };
            option(file, line, kind, neg, opt, rest, &whole, s, notes);
        }
        "http-check" => {
            back_only(&mut note);
            match (a1, a2) {
                ("expect", "status") => match w.get(3).and_then(|v| v.parse::<u16>().ok()) {
                    Some(code) if (100..=599).contains(&code) && w.len() == 4 => {
                        s.expect_status = set(code, line)
                    }
                    _ => note(format!(
                        "`{whole}` not supported: maas-vip expects one status code"
                    )),
                },
                ("send", _) => {
                    let mut it = w[2..].iter();
                    let mut extra = Vec::new();
                    while let Some(k) = it.next() {
                        match (k.as_str(), it.next()) {
                            ("uri", Some(u)) => {
                                s.httpchk = set(Some(u.clone()), line);
                            }
                            ("meth", Some(m)) if m == "GET" => {}
                            (k, v) => extra.push(format!("{k} {}", v.map_or("", String::as_str))),
                        }
                    }
                    if !extra.is_empty() {
                        note(format!(
                            "`{whole}`: `{}` not carried over (maas-vip sends a plain GET)",
                            extra.join(" ")
                        ));
                    }
                }
                _ => note(format!(
                    "`{whole}` is not supported by maas-vip: not carried over"
                )),
            }
        }
        "bind" => {
            if kind == Kind::Frontend || kind == Kind::Listen {
                bind(file, line, &w[1..], p, notes);
            } else {
                note(format!("`bind` is not valid in a {}: ignored", kind.word()));
            }
        }
        "default_backend" => {
            if kind.front() && !a1.is_empty() {
                s.default_backend = set(a1.to_string(), line);
            } else {
                note(format!("`{whole}` is not valid here: ignored"));
            }
        }
        "use_backend" => {
            if kind == Kind::Frontend || kind == Kind::Listen {
                if w.len() == 2 {
                    if p.use_backend.is_none() {
                        p.use_backend = Some((a1.to_string(), line));
                    }
                } else {
                    note(format!(
                        "`{whole}`: conditional backend choice is not supported; only the \
                         default backend's servers are carried over"
                    ));
                }
            } else {
                note(format!(
                    "`{whole}` is not valid in a {}: ignored",
                    kind.word()
                ));
            }
        }
        "server" => {
            if kind == Kind::Backend || kind == Kind::Listen {
                if let Some(srv) = server(file, line, w, &s.default_server, notes) {
                    if p.servers.iter().any(|o| o.name == srv.name) {
                        notes.at(
                            file,
                            line,
                            format!("server name `{}` is used twice: not carried over", srv.name),
                        );
                    } else {
                        p.servers.push(srv);
                    }
                }
            } else {
                note(format!(
                    "`server` is not valid in a {}: ignored",
                    kind.word()
                ));
            }
        }
        "default-server" => {
            if kind.back() {
                let (o, unsupported) = server_opts(file, line, &w[1..], notes);
                if !unsupported.is_empty() {
                    notes.at(
                        file,
                        line,
                        format!(
                            "default-server options `{}` not carried over",
                            unsupported.join(" ")
                        ),
                    );
                }
                s.default_server = s.default_server.overlay(&o);
            } else {
                note(format!(
                    "`default-server` is not valid in a {}: ignored",
                    kind.word()
                ));
            }
        }
        "redirect" | "http-request" if kw == "redirect" || a1 == "redirect" => {
            let rest = if kw == "redirect" { &w[1..] } else { &w[2..] };
            match root_redirect(rest) {
                Some(to) if kind.front() => {
                    s.redirect_root = set(to, line);
                    if rest.iter().any(|r| r == "code") {
                        note(format!(
                            "`{whole}`: the status code is maas-vip's own (redirect_root)"
                        ));
                    }
                }
                _ => note(format!(
                    "`{whole}` is not supported by maas-vip (only a redirect of `/` maps, to \
                     redirect_root): not carried over"
                )),
            }
        }
        "reqadd" | "http-request"
            if (kw == "reqadd" && forwarded_proto_https(&w[1..]))
                || (matches!(a1, "set-header" | "add-header")
                    && forwarded_proto_https(&w[2..])) =>
        {
            p.forwarded_proto = Some(line);
            note(format!(
                "`{whole}` told the regions that clients came by HTTPS to a TLS terminated \
                 here (HAProxy 2.1+ rejects `reqadd`; `http-request set-header` is its \
                 successor): with TLS passed through to the regions, they see it themselves"
            ));
        }
        "reqadd" | "reqrep" | "reqdel" | "reqirep" | "reqidel" | "rspadd" | "rsprep" | "rspdel" => {
            note(format!(
                "`{whole}` is not carried over (HAProxy 2.1+ rejects it too; maas-vip rewrites no \
             headers beyond X-Forwarded-For/-Proto)"
            ))
        }
        "log" | "capture" => note(format!(
            "`{whole}` not carried over: maas-vip writes one access-log line per connection \
             or request through tracing (journald)"
        )),
        "stats" => note(format!(
            "`{whole}` not carried over: the [admin] endpoint (/status, /metrics, server \
             actions) replaces HAProxy's stats"
        )),
        "errorfile" | "errorloc" | "errorloc302" | "errorloc303" => note(format!(
            "`{whole}` not carried over: maas-vip answers its own errors (503 when every \
             region is down)"
        )),
        _ => note(format!(
            "`{whole}` is not supported by maas-vip: not carried over"
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn option(
    file: &str,
    line: usize,
    kind: Kind,
    neg: bool,
    opt: &str,
    rest: &[String],
    whole: &str,
    s: &mut Settings,
    notes: &mut Notes,
) {
    let mut note = |m: String| notes.at(file, line, m);
    match opt {
        "redispatch" => {
            if kind == Kind::Frontend {
                note(format!(
                    "HAProxy ignores `{whole}` in a frontend (it belongs to a backend): \
                     carried over as meant unless the backend sets its own"
                ));
            }
            s.redispatch = set(!neg, line);
            if !rest.is_empty() {
                note(format!(
                    "`{whole}`: the interval is not supported: redispatch at every retry"
                ));
            }
        }
        "http-server-close" => s.server_close = set(!neg, line),
        "httpclose" | "forceclose" => {
            s.server_close = set(!neg, line);
            if !neg {
                note(format!(
                    "`{whole}` read as http-server-close: maas-vip keeps client connections alive"
                ));
            }
        }
        "http-keep-alive" => s.server_close = set(neg, line),
        "forwardfor" => {
            s.forwardfor = set(!neg, line);
            if !rest.is_empty() {
                note(format!(
                    "`{whole}`: `{}` not supported: maas-vip always sends X-Forwarded-For and \
                     X-Forwarded-Proto",
                    rest.join(" ")
                ));
            }
        }
        "httpchk" => {
            if kind == Kind::Frontend {
                note(format!(
                    "HAProxy ignores `{whole}` in a frontend: carried over as meant"
                ));
            }
            if neg {
                s.httpchk = None;
                return;
            }
            let (method, uri) = match rest {
                [] => ("OPTIONS", "/"),
                [uri] => ("OPTIONS", uri.as_str()),
                [m, uri, ..] => (m.as_str(), uri.as_str()),
            };
            match check_method(method) {
                Some(m) => s.httpchk_method = set(m, line),
                None => {
                    s.httpchk_method = set(HttpMethod::Get, line);
                    note(format!(
                        "`{whole}`: maas-vip checks with GET, HEAD or OPTIONS, not {method}: GET"
                    ));
                }
            }
            if rest.len() > 2 {
                note(format!(
                    "`{whole}`: version and headers `{}` not carried over",
                    rest[2..].join(" ")
                ));
            }
            if uri.starts_with('/')
                && !uri
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                s.httpchk = set(Some(uri.to_string()), line);
            } else {
                note(format!(
                    "`{whole}`: check path `{uri}` is not a plain path; maas-vip's default \
                     /MAAS/api/2.0/version/ is used"
                ));
                s.httpchk = set(Some("/MAAS/api/2.0/version/".to_string()), line);
            }
        }
        "tcp-check" => {
            if !neg {
                s.httpchk = set(None, line);
            }
        }
        "tcplog"
        | "httplog"
        | "dontlognull"
        | "log-health-checks"
        | "logasap"
        | "dontlog-normal"
        | "log-separate-errors"
        | "httpslog" => note(format!(
            "`{whole}` not carried over: maas-vip writes one access-log line per connection \
             or request through tracing"
        )),
        _ => note(format!(
            "`{whole}` is not supported by maas-vip: not carried over"
        )),
    }
}

/// `location X [code N] if { path / }`: the redirect of `/` that `redirect_root` does.
fn root_redirect(rest: &[String]) -> Option<String> {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let (to, cond) = match r.as_slice() {
        ["location", to, "code", _, cond @ ..] | ["location", to, cond @ ..] => (*to, cond),
        _ => return None,
    };
    let root = matches!(
        cond,
        ["if", "{", "path", "/", "}"] | ["if", "{", "path", "-m", "str", "/", "}"]
    );
    let plain = (to.starts_with('/') || to.starts_with("http://") || to.starts_with("https://"))
        && !to
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
    (root && plain).then(|| to.to_string())
}

/// HAProxy keywords of `bind` and `server` lines that take a value (so it is skipped too).
fn takes_value(k: &str) -> bool {
    matches!(
        k,
        "name"
            | "process"
            | "thread"
            | "interface"
            | "crt"
            | "crt-list"
            | "ca-file"
            | "crl-file"
            | "alpn"
            | "npn"
            | "ciphers"
            | "ciphersuites"
            | "curves"
            | "ecdhe"
            | "user"
            | "group"
            | "mode"
            | "uid"
            | "gid"
            | "backlog"
            | "maxconn"
            | "minconn"
            | "maxqueue"
            | "nice"
            | "id"
            | "mss"
            | "namespace"
            | "level"
            | "severity-output"
            | "tcp-ut"
            | "verify"
            | "sni"
            | "cookie"
            | "port"
            | "addr"
            | "slowstart"
            | "on-error"
            | "on-marked-down"
            | "on-marked-up"
            | "resolvers"
            | "init-addr"
            | "resolve-prefer"
            | "resolve-net"
            | "agent-port"
            | "agent-inter"
            | "agent-addr"
            | "agent-send"
            | "error-limit"
            | "observe"
            | "check-sni"
            | "check-alpn"
            | "source"
            | "pool-max-conn"
            | "pool-purge-delay"
            | "pool-low-conn"
            | "proto"
            | "redir"
            | "track"
            | "ws"
            | "proxy-v2-options"
            | "ssl-min-ver"
            | "ssl-max-ver"
            | "max-reuse"
            | "hash-key"
            | "log-proto"
            | "set-proxy-v2-tlv-fmt"
            | "guid"
            | "idle-ping"
            | "shard"
            | "tcp-md5sig"
            | "verifyhost"
            | "check-proto"
            | "socks4"
            | "weight"
            | "inter"
            | "fastinter"
            | "downinter"
            | "rise"
            | "fall"
    )
}

/// A `bind` line: addresses (comma separated) then options.
fn bind(file: &str, line: usize, w: &[String], p: &mut Proxy, notes: &mut Notes) {
    let Some(addrs) = w.first() else {
        notes.at(file, line, "`bind` without an address: ignored");
        return;
    };
    let mut i = 1;
    let mut unsupported = Vec::new();
    let mut tls = false;
    let mut v6only = false;
    let mut v6only_ports = Vec::new();
    while i < w.len() {
        let k = w[i].as_str();
        // `v4v6` is what maas-vip's `[::]` does anyway; `v6only` is noted once every bind
        // is known (see `v6only_notes`). Both only concern a wildcard IPv6 address.
        if k == "v4v6" || k == "v6only" {
            v6only |= k == "v6only";
            i += 1;
            continue;
        }
        let n = if takes_value(k) { 2 } else { 1 };
        let opt = w[i..(i + n).min(w.len())].join(" ");
        if k == "ssl" || k == "crt" || k == "quic" || k.starts_with("ssl-") {
            tls = true;
        }
        unsupported.push(opt);
        i += n;
    }
    let mut bind_addr = |a: &str, notes: &mut Notes| -> Result<SocketAddr, String> {
        let sa = bind_addr(a)?;
        if let IpAddr::V6(ip) = sa.ip() {
            if let Some(v4) = ip.to_ipv4_mapped() {
                let to = SocketAddr::new(v4.into(), sa.port());
                notes.at(
                    file,
                    line,
                    format!("bind `{a}` written as {to}: maas-vip takes IPv4 as IPv4"),
                );
                return Ok(to);
            }
            if ip.is_unspecified() && v6only && !v6only_ports.contains(&sa.port()) {
                v6only_ports.push(sa.port());
            }
        }
        Ok(sa)
    };
    if tls {
        // Carried over as TLS passthrough to the regions (see `tls_passthrough`).
        for a in addrs.split(',').filter(|a| !a.is_empty()) {
            match bind_addr(a, notes) {
                Ok(sa) if !p.tls_binds.contains(&sa) => p.tls_binds.push(sa),
                Ok(_) => {}
                Err(why) => notes.at(file, line, format!("bind `{a}` not carried over: {why}")),
            }
        }
        if p.tls_line.is_none() {
            p.tls_line = Some((line, w.join(" ")));
        }
        p.v6only
            .extend(v6only_ports.into_iter().map(|port| (port, line)));
        return;
    }
    if !unsupported.is_empty() {
        notes.at(
            file,
            line,
            format!("bind options `{}` not carried over", unsupported.join(" ")),
        );
    }
    for a in addrs.split(',').filter(|a| !a.is_empty()) {
        match bind_addr(a, notes) {
            Ok(sa) => {
                if !p.binds.contains(&sa) {
                    p.binds.push(sa);
                }
            }
            Err(why) => notes.at(file, line, format!("bind `{a}` not carried over: {why}")),
        }
    }
    p.v6only
        .extend(v6only_ports.into_iter().map(|port| (port, line)));
}

/// `X-Forwarded-Proto: https` as the words after `reqadd` (`X-Forwarded-Proto:\ https` is
/// one word) or after `http-request set-header` (`X-Forwarded-Proto https`), unconditional.
fn forwarded_proto_https(w: &[String]) -> bool {
    let joined = w.join(" ");
    let (name, value) = match joined.split_once(':') {
        Some((n, v)) if !n.contains(' ') => (n, v),
        _ => match joined.split_once(' ') {
            Some((n, v)) => (n, v),
            None => return false,
        },
    };
    name.trim().eq_ignore_ascii_case("x-forwarded-proto") && value.trim() == "https"
}

/// `*:80`, `:80`, `0.0.0.0:80`, `10.0.0.100:80`, `:::80`, `[::]:80`, `[2001:db8::100]:80`,
/// `ipv4@...`, `ipv6@...` (`ipv6@:80`: every IPv6 address).
fn bind_addr(a: &str) -> Result<SocketAddr, String> {
    let v6 = a.starts_with("ipv6@");
    let a = a
        .strip_prefix("ipv4@")
        .or_else(|| a.strip_prefix("ipv6@"))
        .unwrap_or(a);
    if a.contains('@') || a.starts_with('/') {
        return Err("only IP addresses are supported".into());
    }
    let (host, port) = split_host_port(a).ok_or("it needs an address and a port")?;
    let port = port_of(port)?;
    let ip = match host {
        "" | "*" if v6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        "" | "*" | "0.0.0.0" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "::" => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        h => h
            .parse::<IpAddr>()
            .map_err(|_| format!("`{h}` is not an IP address"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

fn split_host_port(a: &str) -> Option<(&str, &str)> {
    if let Some(rest) = a.strip_prefix('[') {
        let (h, p) = rest.split_once(']')?;
        return Some((h, p.strip_prefix(':')?));
    }
    a.rsplit_once(':')
}

fn port_of(p: &str) -> Result<u16, String> {
    if p.contains('-') || p.starts_with('+') {
        return Err(format!("port `{p}`: ranges and offsets are not supported"));
    }
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{p}` is not a port 1..=65535")),
    }
}

/// Options of a server line; the second value lists what is not carried over.
fn server_opts(
    file: &str,
    line: usize,
    w: &[String],
    notes: &mut Notes,
) -> (ServerOpts, Vec<String>) {
    let mut o = ServerOpts::default();
    let mut unsupported = Vec::new();
    let mut i = 0;
    while i < w.len() {
        let k = w[i].as_str();
        let v = w.get(i + 1).map(String::as_str);
        let mut used_value = takes_value(k);
        let mut bad = |what: &str| {
            notes.at(
                file,
                line,
                format!("server option `{k} {}` ignored: {what}", v.unwrap_or("")),
            )
        };
        match k {
            "check" => o.check = Some(true),
            "no-check" => o.check = Some(false),
            "backup" => o.backup = Some(true),
            "no-backup" => o.backup = Some(false),
            "disabled" => o.disabled = Some(true),
            "enabled" => o.disabled = Some(false),
            "weight" => match v.and_then(|v| v.parse::<u32>().ok()) {
                Some(n) if n <= 256 => o.weight = Some(n),
                _ => bad("weight is 0..=256"),
            },
            "inter" | "fastinter" | "downinter" => match v.and_then(haproxy_time) {
                Some(d) if d >= Duration::from_millis(10) => match k {
                    "inter" => o.inter = Some(d),
                    "fastinter" => o.fastinter = Some(d),
                    _ => o.downinter = Some(d),
                },
                _ => bad("at least 10ms"),
            },
            "port" => match v.and_then(|v| v.parse::<u16>().ok()) {
                Some(n) if n > 0 => o.port = Some(n),
                _ => bad("a port 1..=65535"),
            },
            "on-marked-down" => match v {
                Some("shutdown-sessions") => o.shutdown_sessions = Some(true),
                _ => bad("only shutdown-sessions has a maas-vip equivalent (on_down)"),
            },
            "rise" | "fall" => match v.and_then(|v| v.parse::<u32>().ok()) {
                Some(n) if (1..=1000).contains(&n) => {
                    if k == "rise" {
                        o.rise = Some(n);
                    } else {
                        o.fall = Some(n);
                    }
                }
                _ => bad("1..=1000"),
            },
            _ => {
                let n = if used_value { 2 } else { 1 };
                unsupported.push(w[i..(i + n).min(w.len())].join(" "));
                used_value = n == 2;
            }
        }
        i += if used_value { 2 } else { 1 };
    }
    (o, unsupported)
}

/// `server NAME ADDRESS[:PORT] [options]`.
fn server(
    file: &str,
    line: usize,
    w: &[String],
    defaults: &ServerOpts,
    notes: &mut Notes,
) -> Option<RawServer> {
    let (Some(name), Some(addr)) = (w.get(1).filter(|n| !n.is_empty()), w.get(2)) else {
        notes.at(file, line, "`server` needs a name and an address: ignored");
        return None;
    };
    let (o, unsupported) = server_opts(file, line, &w[3..], notes);
    let tls = unsupported
        .iter()
        .any(|u| u == "ssl" || u == "check-ssl" || u.starts_with("crt "));
    if tls {
        notes.at(
            file,
            line,
            format!(
                "server `{name}` not carried over: it talks TLS (`{}`), maas-vip talks plain \
                 TCP/HTTP to servers",
                unsupported.join(" ")
            ),
        );
        return None;
    }
    if !unsupported.is_empty() {
        notes.at(
            file,
            line,
            format!(
                "server `{name}` options `{}` not carried over",
                unsupported.join(" ")
            ),
        );
    }
    let address = match server_addr(addr) {
        Ok((a, localhost)) => {
            if localhost {
                notes.at(
                    file,
                    line,
                    format!(
                        "server `{name}`: `{addr}` written as {a} (maas-vip needs an IP address)"
                    ),
                );
            }
            a
        }
        Err(why) => {
            notes.at(
                file,
                line,
                format!("server `{name}` not carried over: {why}"),
            );
            return None;
        }
    };
    Some(RawServer {
        name: name.clone(),
        address,
        opts: defaults.overlay(&o),
    })
}

/// A server address; the flag says `localhost` was resolved.
fn server_addr(a: &str) -> Result<(SocketAddr, bool), String> {
    let a = a
        .strip_prefix("ipv4@")
        .or_else(|| a.strip_prefix("ipv6@"))
        .unwrap_or(a);
    if a.contains('@') || a.starts_with('/') {
        return Err(format!("`{a}` is not an IP address and port"));
    }
    let Some((host, port)) = split_host_port(a) else {
        return Err(format!("`{a}` has no port (maas-vip needs one)"));
    };
    if port.is_empty() {
        return Err(format!("`{a}` has no port (maas-vip needs one)"));
    }
    let port = port_of(port)?;
    let (ip, localhost) = match host {
        "localhost" => (IpAddr::V4(Ipv4Addr::LOCALHOST), true),
        h => match h.parse::<IpAddr>() {
            Ok(ip) => (ip, false),
            Err(_) => {
                return Err(format!(
                    "`{h}` is a host name; maas-vip needs an IP address"
                ))
            }
        },
    };
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!("{ip} is not a unicast address"));
    }
    Ok((SocketAddr::new(ip, port), localhost))
}

/// Picks the backend-side value: the backend's own, else one written in the frontend (which
/// HAProxy ignores but the user meant), else the defaults'.
fn back_side<T: Clone>(front: &Opt<T>, back: &Opt<T>) -> Opt<T> {
    match (front, back) {
        (_, Some(b)) if !b.inherited => Some(b.clone()),
        (Some(f), _) if !f.inherited => Some(f.clone()),
        _ => back.clone(),
    }
}

/// Frontend-side value first (explicit), then the backend's, then the defaults'.
fn either_side<T: Clone>(front: &Opt<T>, back: &Opt<T>) -> Opt<T> {
    match (front, back) {
        (Some(f), _) if !f.inherited => Some(f.clone()),
        (_, Some(b)) if !b.inherited => Some(b.clone()),
        _ => front.clone().or_else(|| back.clone()),
    }
}

/// Joins each frontend (or listen) with its backend into one `[[frontend]]`.
fn resolve(file: &str, proxies: &[Proxy], notes: &mut Notes) -> Vec<Frontend> {
    let mut out = Vec::new();
    let mut used: Vec<&str> = Vec::new();
    for f in proxies.iter().filter(|p| p.kind != Kind::Backend) {
        let backend = if f.kind == Kind::Listen
            && f.use_backend.is_none()
            && (f.s.default_backend.is_none() || !f.servers.is_empty())
        {
            Some(f)
        } else {
            let name = f.use_backend.as_ref().map(|(n, _)| n.as_str()).or(f
                .s
                .default_backend
                .as_ref()
                .map(|d| d.v.as_str()));
            match name {
                None => {
                    notes.at(
                        file,
                        f.line,
                        format!(
                            "{} `{}` has no default_backend: not carried over",
                            f.kind.word(),
                            f.name
                        ),
                    );
                    continue;
                }
                Some(n) => match proxies.iter().find(|p| p.name == n && p.kind.back()) {
                    Some(b) => Some(b),
                    None => {
                        notes.at(
                            file,
                            f.line,
                            format!(
                                "{} `{}` sends to backend `{n}`, which is not defined: not \
                                 carried over",
                                f.kind.word(),
                                f.name
                            ),
                        );
                        continue;
                    }
                },
            }
        };
        let Some(b) = backend else { continue };
        used.push(&b.name);
        if !f.binds.is_empty() || f.tls_binds.is_empty() {
            if let Some(fe) = frontend(file, f, b, notes) {
                out.push(fe);
            }
        }
        if !f.tls_binds.is_empty() {
            if let Some(fe) = tls_passthrough(file, f, b, notes) {
                out.push(fe);
            }
        }
    }
    for b in proxies.iter().filter(|p| p.kind == Kind::Backend) {
        if !used.contains(&b.name.as_str()) {
            notes.at(
                file,
                b.line,
                format!(
                    "backend `{}` is used by no frontend: not carried over",
                    b.name
                ),
            );
        }
    }
    out
}

/// MAAS 3.3+ serves HTTPS itself on this port (`maas config-tls enable`, its default).
const MAAS_TLS_PORT: u16 = 5443;

/// A frontend that terminated TLS (`bind *:443 ssl crt ...`, the MAAS TLS guide), as maas-vip
/// can carry it: maas-vip terminates no TLS, so the same binds pass TLS through (tcp mode) to
/// each region's MAAS TLS port, where the region terminates it with its own certificate. The
/// meaning of the guide's `reqadd X-Forwarded-Proto: https` (the regions know clients use
/// HTTPS) holds by itself then; X-Forwarded-For cannot be added to TLS.
fn tls_passthrough(file: &str, f: &Proxy, b: &Proxy, notes: &mut Notes) -> Option<Frontend> {
    let tcp = |p: &Proxy, line: usize| {
        let mut p = p.clone();
        p.s.http = set(false, line);
        p.s.server_close = None;
        p.s.forwardfor = None;
        p.s.redirect_root = None;
        // An HTTP check cannot speak to a TLS port: a TCP check.
        p.s.httpchk = set(None, line);
        p.s.expect_status = None;
        p
    };
    let (line, text) = f.tls_line.clone().unwrap_or((f.line, String::new()));
    let mut ft = tcp(f, line);
    ft.binds = f.tls_binds.clone();
    if !f.binds.is_empty() {
        ft.name = format!("{}-tls", f.name);
    }
    let mut bt = tcp(b, line);
    for s in &mut bt.servers {
        s.address.set_port(MAAS_TLS_PORT);
        s.opts.port = None;
    }
    let fe = frontend(file, &ft, &bt, notes)?;
    notes.at(
        file,
        line,
        format!(
            "`bind {text}` terminates TLS, which maas-vip does not: carried over as frontend \
             `{}`, mode tcp, passing TLS through to each region's port {MAAS_TLS_PORT}, where \
             MAAS 3.3+ serves HTTPS after `sudo maas config-tls enable KEY CERT` (use this \
             certificate; it must name the VIP's host name). The regions then see HTTPS \
             themselves (no X-Forwarded-Proto needed) but not the client's address (no \
             X-Forwarded-For through TLS). Before MAAS 3.3, keep a TLS terminator in front",
            fe.name()
        ),
    );
    Some(fe)
}

fn frontend(file: &str, f: &Proxy, b: &Proxy, notes: &mut Notes) -> Option<Frontend> {
    if f.binds.is_empty() {
        notes.at(
            file,
            f.line,
            format!(
                "{} `{}` has no usable bind: not carried over",
                f.kind.word(),
                f.name
            ),
        );
        return None;
    }
    let (fs, bs) = (&f.s, &b.s);
    // Backend-side values the frontend also set: say which one wins.
    let mut from_front = |what: &str, fo_line: Option<usize>, bo: Option<(usize, bool)>| {
        if let (Some(fl), Some((bl, false))) = (fo_line, bo) {
            notes.at(
                file,
                fl,
                format!(
                    "`{what}` of frontend `{}` is overridden by backend `{}` (line {bl}), as \
                     in HAProxy",
                    f.name, b.name
                ),
            );
        }
    };
    if f.kind == Kind::Frontend {
        macro_rules! clash {
            ($field:ident, $what:expr) => {
                from_front(
                    $what,
                    fs.$field.as_ref().filter(|s| !s.inherited).map(|s| s.line),
                    bs.$field.as_ref().map(|s| (s.line, s.inherited)),
                )
            };
        }
        clash!(retries, "retries");
        clash!(redispatch, "redispatch");
        clash!(timeout_connect, "timeout connect");
        clash!(timeout_server, "timeout server");
        clash!(balance, "balance");
    }
    let mode = fs.http.clone();
    if let (Some(fm), Some(bm)) = (&fs.http, &bs.http) {
        if fm.v != bm.v && f.kind == Kind::Frontend {
            notes.at(
                file,
                bm.line,
                format!(
                    "backend `{}` is in another mode than frontend `{}`: the frontend's is used",
                    b.name, f.name
                ),
            );
        }
    }
    let server_close = either_side(&fs.server_close, &bs.server_close);
    let forwardfor = either_side(&fs.forwardfor, &bs.forwardfor);
    let mut http = mode.as_ref().is_some_and(|m| m.v);
    let wants_http =
        server_close.as_ref().is_some_and(|s| s.v) || forwardfor.as_ref().is_some_and(|s| s.v);
    if !http && wants_http {
        if mode.is_none() {
            http = true;
            notes.at(
                file,
                f.line,
                format!(
                    "`{}` sets no mode (HAProxy's default is tcp) but uses HTTP options: mode \
                     http written",
                    f.name
                ),
            );
        } else {
            notes.at(
                file,
                f.line,
                format!(
                    "`{}` is mode tcp: its http-server-close/forwardfor options do nothing there",
                    f.name
                ),
            );
        }
    } else if mode.is_none() {
        notes.at(
            file,
            f.line,
            format!("`{}` sets no mode: HAProxy's default tcp written", f.name),
        );
    }
    let balance = back_side(&fs.balance, &bs.balance).map_or(Balance::Roundrobin, |b| b.v);
    let source = balance == Balance::Source;
    if let Some(h) = back_side(&fs.hash_type, &bs.hash_type) {
        let consistent = h.v.starts_with("consistent");
        notes.at(
            file,
            h.line,
            match (source, consistent) {
                (true, true) => format!(
                    "`hash-type {}`: maas-vip's balance source is always a consistent hash",
                    h.v
                ),
                (true, false) => format!(
                    "`hash-type {}` not carried over: maas-vip's balance source is always a \
                     consistent hash (a server going down moves only its own clients)",
                    h.v
                ),
                (false, _) => format!("`hash-type {}` has no effect without balance source", h.v),
            },
        );
    }
    if let (Some(b), None) = (
        back_side(&fs.balance, &bs.balance).filter(|b| b.v == Balance::Source),
        back_side(&fs.hash_type, &bs.hash_type),
    ) {
        notes.at(
            file,
            b.line,
            "`balance source` without hash-type is map-based in HAProxy; maas-vip's source is \
             a consistent hash (a server going down moves only its own clients)",
        );
    }
    let redirect_root = fs.redirect_root.as_ref().map(|r| r.v.clone());
    if let (Some(r), false) = (&fs.redirect_root, http) {
        notes.at(file, r.line, "a redirect needs mode http: not carried over");
    }
    let retries = back_side(&fs.retries, &bs.retries).map_or(3, |s| s.v);
    let redispatch = back_side(&fs.redispatch, &bs.redispatch).is_some_and(|s| s.v);
    let timeout = |fo: &Opt<Duration>, bo: &Opt<Duration>| back_side(fo, bo).map(|s| s.v);
    let timeout_connect = timeout(&fs.timeout_connect, &bs.timeout_connect);
    let timeout_server = timeout(&fs.timeout_server, &bs.timeout_server);
    let timeout_tunnel = timeout(&fs.timeout_tunnel, &bs.timeout_tunnel);
    let timeout_check = timeout(&fs.timeout_check, &bs.timeout_check);
    let timeout_client = fs.timeout_client.as_ref().map(|s| s.v);
    for (what, v, default) in [
        (
            "timeout connect",
            timeout_connect,
            lb::config::DEFAULT_TIMEOUT_CONNECT,
        ),
        (
            "timeout client",
            timeout_client,
            lb::config::DEFAULT_TIMEOUT_CLIENT,
        ),
        (
            "timeout server",
            timeout_server,
            lb::config::DEFAULT_TIMEOUT_SERVER,
        ),
    ] {
        if v.is_none() {
            notes.at(
                file,
                f.line,
                format!(
                    "`{}` has no `{what}` (HAProxy: no limit); maas-vip's default {}s applies",
                    f.name,
                    default.as_secs()
                ),
            );
        }
    }

    let mut cfg = config::blank_frontend();
    cfg.name = Spanned::new(0..0, f.name.clone());
    cfg.bind = Spanned::new(0..0, f.binds.clone());
    let mut written = Written::default();
    if http {
        cfg.mode = Mode::Http;
        cfg.http_server_close = server_close.is_some_and(|s| s.v);
        cfg.forwardfor = forwardfor.is_some_and(|s| s.v);
        cfg.redirect_root = redirect_root.map(|r| Spanned::new(0..0, r));
    }
    cfg.balance = balance;
    cfg.retries = retries;
    cfg.redispatch = redispatch;
    if let Some(m) = &fs.maxconn {
        cfg.maxconn = m.v;
        written.set("maxconn");
    }
    for (key, to, v) in [
        ("timeout_connect", &mut cfg.timeout_connect, timeout_connect),
        ("timeout_client", &mut cfg.timeout_client, timeout_client),
        ("timeout_server", &mut cfg.timeout_server, timeout_server),
        ("timeout_tunnel", &mut cfg.timeout_tunnel, timeout_tunnel),
    ] {
        if let Some(v) = v {
            *to = v;
            written.set(key);
        }
    }

    // Servers.
    let mut servers = Vec::new();
    for s in &b.servers {
        let mut srv = config::blank_server();
        srv.name = Spanned::new(0..0, s.name.clone());
        srv.address = Spanned::new(0..0, s.address.to_string());
        srv.weight = s.opts.weight.unwrap_or(1);
        srv.check = s.opts.check.unwrap_or(false);
        srv.backup = s.opts.backup.unwrap_or(false);
        srv.disabled = s.opts.disabled.unwrap_or(false);
        servers.push((s, srv));
    }
    if servers.is_empty() {
        notes.at(
            file,
            b.line,
            format!(
                "`{}` has no usable server: frontend `{}` not carried over",
                b.name, f.name
            ),
        );
        return None;
    }
    if servers.iter().all(|(_, s)| s.backup) {
        notes.at(
            file,
            b.line,
            format!(
                "`{}` has only backup servers, which HAProxy then uses as active ones: written \
                 without `backup`",
                b.name
            ),
        );
        for (_, s) in &mut servers {
            s.backup = false;
        }
    }

    // One check per frontend, from the first checked server's parameters; the servers whose
    // own differ get a `check_override`.
    let checked: Vec<&RawServer> = servers
        .iter()
        .filter(|(_, s)| s.check)
        .map(|(r, _)| *r)
        .collect();
    if let Some(first) = checked.first() {
        written.set("check");
        let c = &mut cfg.check;
        let o = &first.opts;
        let interval = o.inter.unwrap_or(Duration::from_secs(2));
        let httpchk = back_side(&fs.httpchk, &bs.httpchk);
        let http = httpchk.as_ref().is_some_and(|h| h.v.is_some());
        let expect = back_side(&fs.expect_status, &bs.expect_status);
        if expect.is_some() && !http {
            if let Some(e) = &expect {
                notes.at(
                    file,
                    e.line,
                    "`http-check expect` without `option httpchk`: ignored",
                );
            }
        }
        if http {
            c.kind = CheckKind::Http;
            c.method =
                back_side(&fs.httpchk_method, &bs.httpchk_method).map_or(HttpMethod::Get, |m| m.v);
            if let Some(path) = httpchk.and_then(|h| h.v) {
                c.path = path;
                written.set("check.path");
            }
            c.expect_status = expect.map(|e| e.v);
        } else {
            c.kind = CheckKind::Tcp;
        }
        c.interval = interval;
        c.fast_interval = o.fastinter;
        c.down_interval = o.downinter;
        // HAProxy: without `timeout check`, `inter` bounds the whole check.
        c.timeout = timeout_check
            .unwrap_or(interval)
            .max(Duration::from_millis(10));
        c.rise = o.rise.unwrap_or(2);
        c.fall = o.fall.unwrap_or(3);
        let c = &cfg.check;
        for (raw, srv) in servers.iter_mut().filter(|(_, s)| s.check) {
            let p = &raw.opts;
            let inter = p.inter.unwrap_or(Duration::from_secs(2));
            // HAProxy falls back to `inter` for fastinter and downinter.
            let fast = p.fastinter.or(c.fast_interval.map(|_| inter));
            let down = p.downinter.or(c.down_interval.map(|_| inter));
            let timeout = timeout_check
                .unwrap_or(inter)
                .max(Duration::from_millis(10));
            let differs =
                |a: Option<Duration>, b: Option<Duration>| (a != b).then_some(a).flatten();
            srv.check_override = CheckOverride {
                port: p.port,
                interval: (inter != c.interval).then_some(inter),
                fast_interval: differs(fast, c.fast_interval),
                down_interval: differs(down, c.down_interval),
                timeout: (timeout != c.timeout).then_some(timeout),
                rise: p.rise.filter(|r| *r != c.rise),
                fall: p.fall.filter(|f| *f != c.fall),
                ..CheckOverride::default()
            };
        }
    }
    if on_down(file, b, notes) {
        cfg.on_down = OnDown::ShutdownSessions;
    }
    cfg.server = servers.into_iter().map(|(_, s)| s).collect();
    Some(Frontend {
        cfg,
        file: file.to_string(),
        line: f.line,
        written,
    })
}

/// `option httpchk`'s method, if maas-vip's check can send it.
fn check_method(m: &str) -> Option<HttpMethod> {
    match m {
        "GET" => Some(HttpMethod::Get),
        "HEAD" => Some(HttpMethod::Head),
        "OPTIONS" => Some(HttpMethod::Options),
        _ => None,
    }
}

/// `on_down = "shutdown_sessions"` when the backend's servers have `on-marked-down
/// shutdown-sessions` (Patroni's pattern, on `default-server`). maas-vip sets it per
/// frontend: when only some servers have it, all get it, with a note.
fn on_down(file: &str, b: &Proxy, notes: &mut Notes) -> bool {
    let cut = b
        .servers
        .iter()
        .filter(|s| s.opts.shutdown_sessions == Some(true))
        .count();
    if cut > 0 && cut < b.servers.len() {
        notes.at(
            file,
            b.line,
            format!(
                "`on-marked-down shutdown-sessions` is on {cut} of the {} servers of `{}`:                  maas-vip's on_down is per frontend, so it applies to all",
                b.servers.len(),
                b.name
            ),
        );
    }
    cut > 0
}
