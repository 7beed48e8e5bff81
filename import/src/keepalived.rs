//! keepalived.conf: tokenizer, block tree and translation into `[[vrrp]]` blocks.
//!
//! keepalived's syntax is line based: a statement is a keyword and its arguments up to the end
//! of the line, optionally followed by a `{ ... }` block (which may open on the next line).
//! Comments start at an unquoted `#` or `!` (`\#` and `\!` escape them); strings are double
//! quoted; a `\` ending a line continues the statement on the next. `;` is accepted as a
//! statement separator as well, since configs copied from documentation often use it.

use std::net::IpAddr;
use std::time::Duration;

use toml::Spanned;
use vrrp::config::{InitialState, TrackBackends, TrackScript, V3ChecksumKey, VrrpConfig};
use vrrp::packet::Version;

use super::{keepalived_secs, Notes, Vrrp, Written};

/// Deepest block nesting accepted; keepalived's own grammar needs 3.
const MAX_DEPTH: usize = 16;

/// A statement and its block, if any.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) line: usize,
    pub(super) key: String,
    pub(super) args: Vec<String>,
    pub(super) children: Option<Vec<Node>>,
}

#[derive(Debug)]
enum Tok {
    Word(String),
    Open,
    Close,
    End,
}

/// Splits the text into words, braces and statement ends, each with its line.
fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, (usize, String)> {
    let mut toks = Vec::new();
    for (i, text) in src.lines().enumerate() {
        let line = i + 1;
        let mut cur = String::new();
        let mut in_word = false;
        let mut chars = text.chars();
        let mut continued = false;
        let flush = |toks: &mut Vec<(Tok, usize)>, cur: &mut String, in_word: &mut bool| {
            if *in_word {
                toks.push((Tok::Word(std::mem::take(cur)), line));
                *in_word = false;
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    in_word = true;
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some(ch) => cur.push(ch),
                            None => return Err((line, "unterminated quoted string".into())),
                        }
                    }
                }
                // keepalived: `\#` and `\!` are literal, a final `\` continues the line.
                '\\' => match chars.next() {
                    Some(n @ ('#' | '!')) => {
                        cur.push(n);
                        in_word = true;
                    }
                    Some(n) => {
                        cur.push('\\');
                        cur.push(n);
                        in_word = true;
                    }
                    None => continued = true,
                },
                '#' | '!' => break,
                '{' | '}' | ';' => {
                    flush(&mut toks, &mut cur, &mut in_word);
                    toks.push((
                        match c {
                            '{' => Tok::Open,
                            '}' => Tok::Close,
                            _ => Tok::End,
                        },
                        line,
                    ));
                }
                c if c.is_whitespace() => flush(&mut toks, &mut cur, &mut in_word),
                c => {
                    cur.push(c);
                    in_word = true;
                }
            }
        }
        flush(&mut toks, &mut cur, &mut in_word);
        if !continued {
            toks.push((Tok::End, line));
        }
    }
    Ok(toks)
}

/// An open block: the statement that owns it and what it holds so far.
struct Frame {
    owner: Option<Node>,
    items: Vec<Node>,
}

/// Parses the whole file into its statement tree.
pub(super) fn parse(src: &str) -> Result<Vec<Node>, (usize, String)> {
    let mut stack = vec![Frame {
        owner: None,
        items: Vec::new(),
    }];
    let mut words: Vec<String> = Vec::new();
    let mut words_line = 0;
    let finish = |words: &mut Vec<String>, line: usize| {
        let mut w = std::mem::take(words).into_iter();
        let key = w.next()?;
        Some(Node {
            line,
            key,
            args: w.collect(),
            children: None,
        })
    };
    for (tok, line) in tokenize(src)? {
        match tok {
            Tok::Word(w) => {
                if words.is_empty() {
                    words_line = line;
                }
                words.push(w);
            }
            Tok::End => {
                if let Some(n) = finish(&mut words, words_line) {
                    push(&mut stack, n);
                }
            }
            Tok::Open => {
                let owner = match finish(&mut words, words_line) {
                    Some(n) => n,
                    // `vrrp_instance X` with its `{` on the next line.
                    None => match stack.last_mut().and_then(|f| {
                        if f.items.last().is_some_and(|n| n.children.is_none()) {
                            f.items.pop()
                        } else {
                            None
                        }
                    }) {
                        Some(n) => n,
                        None => return Err((line, "`{` without a keyword before it".into())),
                    },
                };
                if stack.len() > MAX_DEPTH {
                    return Err((line, format!("blocks nested deeper than {MAX_DEPTH}")));
                }
                stack.push(Frame {
                    owner: Some(owner),
                    items: Vec::new(),
                });
            }
            Tok::Close => {
                if let Some(n) = finish(&mut words, words_line) {
                    push(&mut stack, n);
                }
                if stack.len() < 2 {
                    return Err((line, "`}` without a matching `{`".into()));
                }
                if let Some(frame) = stack.pop() {
                    if let Some(mut owner) = frame.owner {
                        owner.children = Some(frame.items);
                        push(&mut stack, owner);
                    }
                }
            }
        }
    }
    if let Some(n) = finish(&mut words, words_line) {
        push(&mut stack, n);
    }
    if stack.len() > 1 {
        let (key, line) = stack
            .last()
            .and_then(|f| f.owner.as_ref())
            .map_or((String::new(), 0), |o| (o.key.clone(), o.line));
        return Err((line, format!("the block of `{key}` is never closed")));
    }
    Ok(stack.pop().map(|f| f.items).unwrap_or_default())
}

fn push(stack: &mut [Frame], node: Node) {
    if let Some(top) = stack.last_mut() {
        top.items.push(node);
    }
}

/// Most text definitions may expand to; beyond it the file is rejected.
const MAX_EXPANDED: usize = 1 << 20;

/// keepalived's `$NAME=value` definitions, replaced where `$NAME` or `${NAME}` is used. Each
/// line stays one line, so line numbers still point into the original file.
fn expand_definitions(file: &str, src: &str, notes: &mut Notes) -> Result<String, (usize, String)> {
    if !src.lines().any(|l| l.trim_start().starts_with('$')) {
        return Ok(src.to_string());
    }
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut defs: Vec<(String, String)> = Vec::new();
    let mut out = String::with_capacity(src.len());
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start();
        if let Some((name, value)) = t.strip_prefix('$').and_then(|d| d.split_once('=')) {
            if !name.is_empty() && name.chars().all(ident) {
                notes.at(
                    file,
                    i + 1,
                    format!("definition `${name}` expanded where it is used"),
                );
                defs.retain(|(n, _)| n != name);
                defs.push((name.to_string(), value.trim().to_string()));
                out.push('\n');
                continue;
            }
        }
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, used) = match after.strip_prefix('{') {
                Some(b) => match b.split_once('}') {
                    Some((n, _)) => (n, n.len() + 2),
                    None => ("", 0),
                },
                None => {
                    let n = after.find(|c: char| !ident(c)).unwrap_or(after.len());
                    (&after[..n], n)
                }
            };
            match defs.iter().find(|(n, _)| n == name) {
                Some((_, value)) if !name.is_empty() => {
                    out.push_str(value);
                    rest = &after[used..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
            if out.len() > MAX_EXPANDED {
                return Err((i + 1, "definitions expand beyond 1 MiB".into()));
            }
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Translation.

/// A `vrrp_script` as declared.
#[derive(Debug, Clone)]
struct Script {
    line: usize,
    command: Option<String>,
    interval: Duration,
    timeout: Option<Duration>,
    weight: i32,
    rise: u32,
    fall: u32,
    used: bool,
}

/// Global defaults from `global_defs` that instances inherit.
#[derive(Debug, Default)]
struct Globals {
    version: Option<u8>,
    garp_delay: Option<Duration>,
    garp_repeat: Option<u32>,
    garp_refresh: Option<Duration>,
    garp_refresh_repeat: Option<u32>,
    script_user: Option<(String, usize)>,
    /// `v3_checksum_as_v2`: keepalived 2.4.3 sets it whatever follows the keyword
    /// (keepalived/core/global_parser.c:491), and instances start from it
    /// (keepalived/vrrp/vrrp_data.c:1032).
    v3_checksum_as_v2: bool,
}

/// Translates a keepalived.conf into `[[vrrp]]` blocks, noting what is left behind.
pub(super) fn import(
    file: &str,
    src: &str,
    notes: &mut Notes,
) -> Result<Vec<Vrrp>, (usize, String)> {
    let src = super::auth_hmac::mark_credentials(src);
    let src = expand_definitions(file, &src, notes)?;
    let tree = parse(&src)?;
    let mut globals = Globals::default();
    let mut scripts: Vec<(String, Script)> = Vec::new();
    // First pass: everything instances refer to, wherever it is in the file.
    for node in &tree {
        match node.key.as_str() {
            "global_defs" => global_defs(file, node, &mut globals, notes),
            "vrrp_script" => {
                let Some(name) = node.args.first() else {
                    notes.at(
                        file,
                        node.line,
                        "`vrrp_script` without a name: not carried over",
                    );
                    continue;
                };
                if scripts.iter().any(|(n, _)| n == name) {
                    notes.at(
                        file,
                        node.line,
                        format!("vrrp_script `{name}` is defined twice: the first one is kept"),
                    );
                    continue;
                }
                scripts.push((name.clone(), script(file, node, notes)));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for node in &tree {
        match node.key.as_str() {
            "global_defs" | "vrrp_script" => {}
            "vrrp_instance" => {
                if let Some(v) = instance(file, node, &globals, &mut scripts, notes) {
                    out.push(v);
                }
            }
            "include" => notes.at(
                file,
                node.line,
                format!(
                    "`include {}` is not followed: merge that file in and import again",
                    node.args.join(" ")
                ),
            ),
            "vrrp_sync_group" => notes.at(
                file,
                node.line,
                "`vrrp_sync_group` is not carried over: each [[vrrp]] instance runs on its own",
            ),
            "virtual_server" | "virtual_server_group" => notes.at(
                file,
                node.line,
                format!(
                    "`{}` (LVS) is not carried over: maas-vip's [[frontend]] is the proxy",
                    node.key
                ),
            ),
            k => notes.at(
                file,
                node.line,
                format!("`{k}` is not supported by maas-vip: not carried over"),
            ),
        }
    }
    for (name, s) in &scripts {
        if !s.used {
            notes.at(
                file,
                s.line,
                format!("vrrp_script `{name}` is tracked by no instance: not carried over"),
            );
        }
    }
    Ok(out)
}

fn global_defs(file: &str, node: &Node, g: &mut Globals, notes: &mut Notes) {
    for c in node.children.iter().flatten() {
        let arg = c.args.first().map(String::as_str).unwrap_or("");
        match c.key.as_str() {
            "vrrp_version" => match arg {
                "2" => g.version = Some(2),
                "3" => g.version = Some(3),
                _ => notes.at(
                    file,
                    c.line,
                    format!("vrrp_version `{arg}` ignored: 2 or 3"),
                ),
            },
            "vrrp_garp_master_delay" => match keepalived_secs(arg) {
                Some(d) => g.garp_delay = Some(d),
                None => notes.at(file, c.line, format!("bad vrrp_garp_master_delay `{arg}`")),
            },
            "vrrp_garp_master_repeat" => match arg.parse::<u32>() {
                Ok(n) => g.garp_repeat = Some(n),
                Err(_) => notes.at(file, c.line, format!("bad vrrp_garp_master_repeat `{arg}`")),
            },
            "vrrp_garp_master_refresh" => match keepalived_secs(arg) {
                Some(d) => g.garp_refresh = Some(d),
                None => notes.at(
                    file,
                    c.line,
                    format!("bad vrrp_garp_master_refresh `{arg}`"),
                ),
            },
            "vrrp_garp_master_refresh_repeat" => match arg.parse::<u32>() {
                Ok(n) => g.garp_refresh_repeat = Some(n),
                Err(_) => notes.at(
                    file,
                    c.line,
                    format!("bad vrrp_garp_master_refresh_repeat `{arg}`"),
                ),
            },
            "v3_checksum_as_v2" => g.v3_checksum_as_v2 = true,
            "router_id" => notes.at(
                file,
                c.line,
                "global_defs `router_id` is not needed: logs name the instance",
            ),
            "script_user" => {
                g.script_user = Some((arg.to_string(), c.line));
                notes.at(
                    file,
                    c.line,
                    format!(
                        "global_defs `script_user {arg}` is written commented out: maas-vip's \
                         unit grants no CAP_SETUID/CAP_SETGID, so every track script and notify \
                         would fail with EPERM (FAULT with weight 0); they run as the daemon's \
                         user instead (`pidof` needs no privilege)"
                    ),
                );
                if let Some(group) = c.args.get(1) {
                    notes.at(
                        file,
                        c.line,
                        format!(
                            "global_defs `script_user {arg} {group}`: the group is not carried \
                             over, scripts run with the user's primary group"
                        ),
                    );
                }
            }
            "enable_script_security" => notes.at(
                file,
                c.line,
                "global_defs `enable_script_security` is not needed: maas-vip runs scripts from \
                 their argv, never through a shell",
            ),
            k => notes.at(
                file,
                c.line,
                format!("global_defs `{k}` is not supported by maas-vip: not carried over"),
            ),
        }
    }
}

fn script(file: &str, node: &Node, notes: &mut Notes) -> Script {
    let mut s = Script {
        line: node.line,
        command: None,
        // keepalived's defaults.
        interval: Duration::from_secs(1),
        timeout: None,
        weight: 0,
        rise: 1,
        fall: 1,
        used: false,
    };
    for c in node.children.iter().flatten() {
        let arg = c.args.first().map(String::as_str).unwrap_or("");
        match c.key.as_str() {
            // keepalived joins the words of an unquoted script.
            "script" => s.command = Some(c.args.join(" ")),
            "interval" => match keepalived_secs(arg) {
                Some(d) if !d.is_zero() => s.interval = d,
                _ => notes.at(
                    file,
                    c.line,
                    format!("bad script interval `{arg}`: 1s kept"),
                ),
            },
            "timeout" => match keepalived_secs(arg) {
                Some(d) if !d.is_zero() => s.timeout = Some(d),
                _ => notes.at(file, c.line, format!("bad script timeout `{arg}` ignored")),
            },
            "weight" => {
                match arg.parse::<i32>() {
                    Ok(w) if (-253..=253).contains(&w) => s.weight = w,
                    _ => notes.at(
                        file,
                        c.line,
                        format!("script weight `{arg}` ignored: -253..=253"),
                    ),
                }
                if c.args.get(1).is_some_and(|a| a == "reverse") {
                    notes.at(
                        file,
                        c.line,
                        "script weight `reverse` is not supported: the weight applies as written",
                    );
                }
            }
            "rise" | "fall" => match arg.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => {
                    if c.key == "rise" {
                        s.rise = n;
                    } else {
                        s.fall = n;
                    }
                }
                _ => notes.at(file, c.line, format!("script {} `{arg}` ignored", c.key)),
            },
            "user" => notes.at(
                file,
                c.line,
                "script `user` is not carried over: track scripts run as the daemon's user",
            ),
            k => notes.at(
                file,
                c.line,
                format!("vrrp_script keyword `{k}` is not supported: not carried over"),
            ),
        }
    }
    s
}

/// A scalar statement's first argument, noting a block that does not belong there.
fn arg<'a>(file: &str, c: &'a Node, notes: &mut Notes) -> &'a str {
    if c.children.is_some() {
        notes.at(
            file,
            c.line,
            format!("the block after `{}` is not expected: ignored", c.key),
        );
    }
    c.args.first().map(String::as_str).unwrap_or("")
}

fn instance(
    file: &str,
    node: &Node,
    g: &Globals,
    scripts: &mut [(String, Script)],
    notes: &mut Notes,
) -> Option<Vrrp> {
    let Some(name) = node.args.first().filter(|n| !n.is_empty()) else {
        notes.at(
            file,
            node.line,
            "`vrrp_instance` without a name: not carried over",
        );
        return None;
    };
    // Interface, VRID and addresses are filled in below; an instance left without one is
    // not carried over.
    let mut cfg = config::blank_vrrp();
    cfg.name = Spanned::new(0..0, name.clone());
    // 0: none given yet (checked below).
    cfg.virtual_router_id = 0;
    let mut v = Vrrp {
        cfg,
        file: file.to_string(),
        line: node.line,
        written: Written::default(),
        script_user: g.script_user.clone(),
        track_script_comments: Vec::new(),
    };
    // keepalived's default version, 2, is config's too.
    if let Some(n) = g.version {
        v.set_version(n);
    }
    if let Some(d) = g.garp_delay {
        v.set_garp_master_delay(d);
    }
    if let Some(n) = g.garp_repeat {
        v.set_garp_master_repeat(n);
    }
    if let Some(d) = g.garp_refresh {
        v.cfg.garp_master_refresh = d;
    }
    if let Some(n) = g.garp_refresh_repeat {
        v.set_garp_master_refresh_repeat(n);
    }
    v.set_v3_checksum_rfc9568(g.v3_checksum_as_v2);
    let mut family = Family::default();
    let mut version_line = None;
    let mut checksum_line = None;
    let mut auth_type_pass = None;
    let mut auth_pass: Option<(String, usize)> = None;
    let mut advert: Option<(Duration, usize)> = None;
    let mut nopreempt_line = None;
    let mut auth_hmac_line = None;
    for c in node.children.iter().flatten() {
        let key = c.key.as_str();
        match key {
            "state" => match arg(file, c, notes) {
                "MASTER" => v.cfg.state = InitialState::Master,
                "BACKUP" => v.cfg.state = InitialState::Backup,
                a => notes.at(
                    file,
                    c.line,
                    format!("state `{a}` ignored: MASTER or BACKUP"),
                ),
            },
            "interface" => {
                v.cfg.interface = Spanned::new(0..0, arg(file, c, notes).to_string());
            }
            "virtual_router_id" => match arg(file, c, notes).parse::<u8>() {
                Ok(id) if id >= 1 => v.cfg.virtual_router_id = id,
                _ => notes.at(file, c.line, "virtual_router_id must be 1..=255"),
            },
            "priority" => match arg(file, c, notes).parse::<u8>() {
                Ok(p) if p >= 1 => {
                    v.cfg.priority = Spanned::new(0..0, p);
                    v.written.set("priority");
                }
                _ => notes.at(
                    file,
                    c.line,
                    "priority must be 1..=255: keepalived's default 100 applies",
                ),
            },
            "advert_int" => {
                let a = arg(file, c, notes);
                match keepalived_secs(a) {
                    Some(d) if !d.is_zero() => advert = Some((d, c.line)),
                    _ => notes.at(file, c.line, format!("bad advert_int `{a}`: 1s kept")),
                }
            }
            "version" => match arg(file, c, notes) {
                "2" => {
                    v.set_version(2);
                    version_line = Some(c.line);
                }
                "3" => v.set_version(3),
                a => notes.at(file, c.line, format!("version `{a}` ignored: 2 or 3")),
            },
            "native_ipv6" => family.native_ipv6(file, c.line, notes),
            "v3_checksum_as_v2" => {
                checksum_line = Some(c.line);
                match arg(file, c, notes) {
                    "" | "true" | "on" | "yes" => v.set_v3_checksum_rfc9568(true),
                    "false" | "off" | "no" => v.set_v3_checksum_rfc9568(false),
                    a => notes.at(
                        file,
                        c.line,
                        format!("v3_checksum_as_v2 `{a}` ignored: true or false"),
                    ),
                }
            }
            "nopreempt" => {
                v.cfg.preempt = false;
                nopreempt_line = Some(c.line);
            }
            "preempt" => v.cfg.preempt = true,
            "preempt_delay" => {
                let a = arg(file, c, notes);
                match keepalived_secs(a) {
                    Some(d) if d <= Duration::from_secs(1000) => {
                        v.cfg.preempt_delay = d;
                        v.written.set("preempt_delay");
                    }
                    _ => notes.at(
                        file,
                        c.line,
                        format!("preempt_delay `{a}` ignored: 0 to 1000 seconds"),
                    ),
                }
            }
            "garp_master_delay" => {
                let a = arg(file, c, notes);
                match keepalived_secs(a) {
                    Some(d) => v.set_garp_master_delay(d),
                    None => notes.at(file, c.line, format!("bad garp_master_delay `{a}`")),
                }
            }
            "garp_master_repeat" => {
                let a = arg(file, c, notes);
                match a.parse::<u32>() {
                    Ok(n) => v.set_garp_master_repeat(n),
                    Err(_) => notes.at(file, c.line, format!("bad garp_master_repeat `{a}`")),
                }
            }
            "garp_master_refresh" => {
                let a = arg(file, c, notes);
                match keepalived_secs(a) {
                    Some(d) => v.cfg.garp_master_refresh = d,
                    None => notes.at(file, c.line, format!("bad garp_master_refresh `{a}`")),
                }
            }
            "garp_master_refresh_repeat" => {
                let a = arg(file, c, notes);
                match a.parse::<u32>() {
                    Ok(n) => v.set_garp_master_refresh_repeat(n),
                    Err(_) => notes.at(
                        file,
                        c.line,
                        format!("bad garp_master_refresh_repeat `{a}`"),
                    ),
                }
            }
            "authentication" => {
                for a in c.children.iter().flatten() {
                    let val = a.args.first().map(String::as_str).unwrap_or("");
                    match a.key.as_str() {
                        "auth_type" => auth_type_pass = Some((val == "PASS", a.line, val)),
                        "auth_pass" => auth_pass = Some((val.to_string(), a.line)),
                        k => notes.at(
                            file,
                            a.line,
                            format!("authentication `{k}` is not supported: not carried over"),
                        ),
                    }
                }
            }
            "auth_hmac" => {
                v.cfg.auth_hmac = super::auth_hmac::parse(file, c, name, &mut v.written, notes);
                auth_hmac_line = Some(c.line);
            }
            "virtual_ipaddress" => {
                for a in c.children.iter().flatten() {
                    vip(file, a, &mut v, &mut family, notes);
                }
                if c.children.is_none() {
                    notes.at(file, c.line, "`virtual_ipaddress` without a block: ignored");
                }
            }
            "unicast_peer" => {
                for a in c.children.iter().flatten() {
                    match a.key.parse::<IpAddr>() {
                        Ok(ip)
                            if !family.admits(
                                ip,
                                file,
                                a.line,
                                &format!("unicast_peer {ip}"),
                                notes,
                            ) => {}
                        Ok(ip) if !v.cfg.unicast_peers.contains(&ip) => {
                            v.cfg.unicast_peers.push(ip)
                        }
                        Ok(_) => {}
                        Err(_) => notes.at(
                            file,
                            a.line,
                            format!(
                                "unicast_peer `{}` is not an IP address: not carried over",
                                a.key
                            ),
                        ),
                    }
                    if !a.args.is_empty() {
                        notes.at(
                            file,
                            a.line,
                            format!(
                                "unicast_peer options `{}` are not supported: not carried over",
                                a.args.join(" ")
                            ),
                        );
                    }
                }
            }
            "track_script" => {
                for a in c.children.iter().flatten() {
                    track(file, a, &mut v, scripts, notes);
                }
            }
            "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                let cmd = c.args.join(" ");
                let (argv, shell) = split_command(&cmd);
                if argv.first().is_none_or(String::is_empty) {
                    notes.at(file, c.line, format!("empty `{key}` ignored"));
                } else if notify_slot(&mut v.cfg, key).is_some_and(|n| n.is_some()) {
                    notes.at(
                        file,
                        c.line,
                        format!("`{key}` given twice: the first is kept"),
                    );
                } else {
                    let argv = if shell && key == "notify" {
                        // keepalived appends INSTANCE, name, state, priority: they reach
                        // the command as "$@" ($0 is a name, so "$1" is INSTANCE).
                        notes.at(
                            file,
                            c.line,
                            "`notify` needs a shell: run as /bin/sh -c with keepalived's \
                             arguments passed on as \"$@\"",
                        );
                        vec![
                            "/bin/sh".into(),
                            "-c".into(),
                            format!("{cmd} \"$@\""),
                            "notify".into(),
                        ]
                    } else if shell {
                        notes.at(
                            file,
                            c.line,
                            format!("`{key}` needs a shell: run as /bin/sh -c"),
                        );
                        vec!["/bin/sh".into(), "-c".into(), cmd]
                    } else {
                        argv
                    };
                    if let Some(slot) = notify_slot(&mut v.cfg, key) {
                        *slot = Some(Spanned::new(0..0, argv));
                    }
                }
            }
            "unicast_src_ip" | "mcast_src_ip" => notes.at(
                file,
                c.line,
                format!("`{key}` is not carried over: adverts go from the interface's address"),
            ),
            "virtual_ipaddress_excluded" => notes.at(
                file,
                c.line,
                "`virtual_ipaddress_excluded` is not carried over: list every address in \
                 virtual_ipaddresses (they are all advertised)",
            ),
            k => notes.at(
                file,
                c.line,
                format!(
                    "vrrp_instance keyword `{k}` is not supported by maas-vip: not carried over"
                ),
            ),
        }
    }
    family.finish(file, &mut v, version_line, checksum_line, notes);
    // Authentication.
    match (auth_type_pass, auth_pass) {
        (Some((true, _, _)), Some((pass, line))) | (None, Some((pass, line))) => {
            if v.version() == 3 {
                notes.at(
                    file,
                    line,
                    "auth_pass dropped: VRRPv3 has no authentication (RFC 9568)",
                );
            } else if pass.is_empty() {
                notes.at(file, line, "empty auth_pass ignored");
            } else {
                let mut p = pass.clone();
                while p.len() > 8 {
                    p.pop();
                }
                if p != pass {
                    notes.at(
                        file,
                        line,
                        "auth_pass longer than 8 bytes: cut to 8, as keepalived sends it",
                    );
                }
                if p.is_empty() {
                    notes.at(file, line, "auth_pass could not be cut to 8 bytes: dropped");
                } else {
                    v.cfg.auth_pass = Some(Spanned::new(0..0, p));
                }
            }
        }
        (Some((false, line, t)), _) => notes.at(
            file,
            line,
            format!(
                "auth_type `{t}` is not supported (only PASS): authentication not carried over"
            ),
        ),
        (Some((true, line, _)), None) => {
            notes.at(file, line, "auth_type PASS without auth_pass: ignored")
        }
        (None, None) => {}
    }
    if let (Some(_), Some(_), Some(line)) = (&v.cfg.auth_hmac, &v.cfg.auth_pass, auth_hmac_line) {
        notes.at(
            file,
            line,
            "auth_pass dropped: keepalived drops legacy authentication beside auth_hmac",
        );
        v.cfg.auth_pass = None;
    }
    // Advert interval: VRRPv2 counts whole seconds.
    if let Some((d, line)) = advert {
        let fixed = if v.version() == 2 && (d.subsec_nanos() != 0 || d.as_secs() > 255) {
            // Rounded up: adverts may come less often, never more often, than configured.
            let secs = (d.as_secs() + u64::from(d.subsec_nanos() != 0)).clamp(1, 255);
            notes.at(
                file,
                line,
                format!(
                    "advert_int {}s is not whole seconds 1..=255 (VRRPv2): {secs}s",
                    d.as_secs_f64()
                ),
            );
            Duration::from_secs(secs)
        } else if v.version() == 3 {
            let cs = (d.as_millis() / 10).clamp(1, 4095);
            let fixed = Duration::from_millis(cs as u64 * 10);
            if fixed != d {
                notes.at(
                    file,
                    line,
                    "advert_int rounded to centiseconds 0.01..=40.95s (VRRPv3)",
                );
            }
            fixed
        } else {
            d
        };
        v.cfg.advert_interval = Spanned::new(0..0, fixed);
    }
    if let (Some(line), InitialState::Master) = (nopreempt_line, v.cfg.state) {
        notes.at(
            file,
            line,
            "nopreempt with state MASTER: keepalived wants state BACKUP for nopreempt; check \
             the initial state",
        );
    }
    // What maas-vip cannot run without.
    let mut missing = Vec::new();
    if v.interface().is_empty() || v.interface().len() > 15 {
        missing.push("an interface name of 1 to 15 bytes");
    }
    if v.cfg.virtual_router_id == 0 {
        missing.push("a virtual_router_id");
    }
    if v.cfg.virtual_ipaddresses.get_ref().is_empty() {
        missing.push("a virtual_ipaddress");
    }
    if !missing.is_empty() {
        notes.at(
            file,
            node.line,
            format!(
                "vrrp_instance `{}` is not carried over: it needs {}",
                v.name(),
                missing.join(", ")
            ),
        );
        return None;
    }
    Some(v)
}

impl Vrrp {
    fn set_version(&mut self, n: u8) {
        self.cfg.version = Spanned::new(0..0, Version::from(n));
    }

    fn set_v3_checksum_rfc9568(&mut self, on: bool) {
        let key = if on {
            V3ChecksumKey::Rfc9568
        } else {
            V3ChecksumKey::PseudoHeader
        };
        self.cfg.v3_checksum = Spanned::new(0..0, key);
    }

    fn set_garp_master_delay(&mut self, d: Duration) {
        self.cfg.garp_master_delay = d;
        self.written.set("garp_master_delay");
    }

    fn set_garp_master_repeat(&mut self, n: u32) {
        self.cfg.garp_master_repeat = n;
        self.written.set("garp_master_repeat");
    }

    fn set_garp_master_refresh_repeat(&mut self, n: u32) {
        self.cfg.garp_master_refresh_repeat = n;
        self.written.set("garp_master_refresh_repeat");
    }
}

/// The `notify*` key of `cfg` named `key`.
fn notify_slot<'a>(
    cfg: &'a mut VrrpConfig,
    key: &str,
) -> Option<&'a mut Option<Spanned<Vec<String>>>> {
    match key {
        "notify" => Some(&mut cfg.notify),
        "notify_master" => Some(&mut cfg.notify_master),
        "notify_backup" => Some(&mut cfg.notify_backup),
        "notify_fault" => Some(&mut cfg.notify_fault),
        "notify_stop" => Some(&mut cfg.notify_stop),
        _ => None,
    }
}

fn vip(file: &str, a: &Node, v: &mut Vrrp, family: &mut Family, notes: &mut Notes) {
    // keepalived: `<address>[/<prefix>] [brd ..] [dev ..] [scope ..] [label ..]`; /32 by default.
    match vrrp::Vip::parse(&a.key) {
        Ok(ip)
            if !family.admits(
                ip.addr,
                file,
                a.line,
                &format!("virtual_ipaddress {ip}"),
                notes,
            ) => {}
        Ok(ip) => {
            let vips = v.cfg.virtual_ipaddresses.get_mut();
            match vips.iter().find(|o| o.addr == ip.addr) {
                Some(o) => notes.at(
                    file,
                    a.line,
                    format!(
                        "virtual_ipaddress {ip}: {} is already listed as {o}",
                        ip.addr
                    ),
                ),
                None => vips.push(ip),
            }
            if !a.args.is_empty() {
                notes.at(
                    file,
                    a.line,
                    format!(
                        "virtual_ipaddress options `{}` are not supported: the address is \
                         added to `{}`",
                        a.args.join(" "),
                        v.interface()
                    ),
                );
            }
        }
        Err(e) => notes.at(
            file,
            a.line,
            format!("virtual_ipaddress not carried over: {e}"),
        ),
    }
}

/// An instance's address family, decided as keepalived 2.4.3 decides it: by the first of its
/// virtual addresses, unicast peers or `native_ipv6`, in file order. What comes later of the
/// other family is ignored by keepalived with a config error ("address family must match
/// VRRP instance [..] - ignoring", keepalived/vrrp/vrrp_data.c:1232, and "MUST be of the same
/// family" for unicast peers, vrrp_data.c:1070; keepalived.conf(5): "all addresses in
/// virtual_ipaddress must be of the same family"), so it is not carried over either: the
/// running keepalived never held it.
#[derive(Debug, Default)]
struct Family {
    /// IPv6, and the line that decided it.
    decided: Option<(bool, usize)>,
    native_ipv6: Option<usize>,
}

impl Family {
    /// Whether `ip` is of the instance's family (deciding it when it is the first), noting
    /// `what` (the keyword and address) when not.
    fn admits(
        &mut self,
        ip: IpAddr,
        file: &str,
        line: usize,
        what: &str,
        notes: &mut Notes,
    ) -> bool {
        let v6 = ip.is_ipv6();
        match self.decided {
            None => {
                self.decided = Some((v6, line));
                true
            }
            Some((f, _)) if f == v6 => true,
            Some((f, at)) => {
                let name = |v6: bool| if v6 { "IPv6" } else { "IPv4" };
                notes.at(
                    file,
                    line,
                    format!(
                        "{what} is not carried over: the instance is {} (line {at}), and \
                         keepalived ignores an address of the other family (\"address family \
                         must match VRRP instance\", keepalived/vrrp/vrrp_data.c:1232); give \
                         the {} addresses a vrrp_instance (a [[vrrp]] block) of their own",
                        name(f),
                        name(v6)
                    ),
                );
                false
            }
        }
    }

    /// `native_ipv6`: IPv6 and VRRPv3 (keepalived/vrrp/vrrp_parser.c:823), refused by
    /// keepalived after an IPv4 address.
    fn native_ipv6(&mut self, file: &str, line: usize, notes: &mut Notes) {
        match self.decided {
            Some((false, at)) => notes.at(
                file,
                line,
                format!(
                    "native_ipv6 ignored: the instance is IPv4 (line {at}), and keepalived \
                     refuses it too (\"Cannot specify native_ipv6 with IPv4 addresses\")"
                ),
            ),
            _ => {
                self.decided = Some((true, line));
                self.native_ipv6 = Some(line);
            }
        }
    }

    /// The family's consequences once the instance is read: IPv6 runs VRRPv3, and
    /// `v3_checksum_as_v2` means something for VRRPv3 over IPv4 only.
    fn finish(
        &self,
        file: &str,
        v: &mut Vrrp,
        version_line: Option<usize>,
        checksum_line: Option<usize>,
        notes: &mut Notes,
    ) {
        let v6 = self.decided.is_some_and(|(f, _)| f);
        if let Some(line) = self
            .native_ipv6
            .filter(|_| !v.cfg.virtual_ipaddresses.get_ref().is_empty())
        {
            notes.at(
                file,
                line,
                "native_ipv6 is not needed: an instance whose addresses are IPv6 is IPv6 \
                 (keepalived deprecates the keyword for that reason)",
            );
        }
        if v6 {
            if let Some(line) = version_line.filter(|_| v.version() == 2) {
                notes.at(
                    file,
                    line,
                    "version 2 -> 3: the instance is IPv6, and VRRPv2 is IPv4 only (keepalived \
                     runs IPv6 instances as VRRPv3)",
                );
            }
            // keepalived.conf(5), `version`: "IPv6 instances will always use version 3".
            v.set_version(3);
            let multicast = v.cfg.unicast_peers.is_empty();
            if let Some(first) = v
                .cfg
                .virtual_ipaddresses
                .get_ref()
                .first()
                .filter(|_| multicast)
            {
                if !matches!(first.addr, IpAddr::V6(a) if a.is_unicast_link_local()) {
                    notes.at(
                        file,
                        v.line,
                        format!(
                            "vrrp_instance `{}`: the first IPv6 virtual address {first} is not \
                             link-local; RFC 9568 §5.2.9 and keepalived want one first (e.g. \
                             fe80::1/64): `maas-vip check` warns",
                            v.name()
                        ),
                    );
                }
            }
        }
        if *v.cfg.v3_checksum.get_ref() == V3ChecksumKey::Rfc9568 && (v6 || v.version() != 3) {
            if let Some(line) = checksum_line {
                notes.at(
                    file,
                    line,
                    format!(
                        "v3_checksum_as_v2 has no effect here: it concerns VRRPv3 over IPv4, and \
                         this instance is {}",
                        if v6 { "IPv6" } else { "VRRPv2" }
                    ),
                );
            }
            v.set_v3_checksum_rfc9568(false);
        }
    }
}

fn track(file: &str, a: &Node, v: &mut Vrrp, scripts: &mut [(String, Script)], notes: &mut Notes) {
    let name = a.key.as_str();
    let Some((_, s)) = scripts.iter_mut().find(|(n, _)| n == name) else {
        notes.at(
            file,
            a.line,
            format!("track_script `{name}` names no vrrp_script: not carried over"),
        );
        return;
    };
    s.used = true;
    let mut weight = s.weight;
    match (a.args.first().map(String::as_str), a.args.get(1)) {
        (None, _) => {}
        (Some("weight"), Some(w)) => match w.parse::<i32>() {
            Ok(w) if (-253..=253).contains(&w) => weight = w,
            _ => notes.at(file, a.line, format!("track_script weight `{w}` ignored")),
        },
        _ => notes.at(
            file,
            a.line,
            format!("track_script options `{}` ignored", a.args.join(" ")),
        ),
    }
    if v.cfg.track_script.iter().any(|t| t.name.get_ref() == name) {
        notes.at(
            file,
            a.line,
            format!("`{name}` is tracked twice: once kept"),
        );
        return;
    }
    let Some(cmd) = s.command.clone().filter(|c| !c.trim().is_empty()) else {
        notes.at(
            file,
            s.line,
            format!("vrrp_script `{name}` has no script: not carried over"),
        );
        return;
    };
    let (argv, shell) = split_command(&cmd);
    // `killall -0 X`: the same test without signalling (see `killall_zero`).
    let pidof = killall_zero(&cmd);
    let (argv, shell) = match &pidof {
        Some(prog) => (vec!["pidof".to_string(), prog.clone()], false),
        None => (argv, shell),
    };
    if !shell && argv.first().is_none_or(String::is_empty) {
        notes.at(
            file,
            s.line,
            format!("vrrp_script `{name}`: `{cmd}` names no program: not carried over"),
        );
        return;
    }
    if !shell && checks_haproxy(&argv) {
        // 0 (keepalived: FAULT while HAProxy is down) is replaced by a weight chosen against
        // the peers' priorities once every file is read (`super::choose_weights`).
        let w = if weight == 0 {
            0
        } else if weight > 0 {
            notes.at(
                file,
                a.line,
                format!(
                    "`{name}` raised the priority by {weight} while HAProxy ran; \
                     track_backends lowers it by {weight} while no region is reachable instead"
                ),
            );
            -weight
        } else {
            weight
        };
        if v.cfg.track_backends.is_none() {
            // The frontend is chosen once both files are read (`super::cross_checks`).
            v.cfg.track_backends = Some(TrackBackends {
                frontend: Spanned::new(0..0, String::new()),
                weight: w,
            });
        }
        notes.at(
            file,
            s.line,
            format!(
                "vrrp_script `{name}` (`{cmd}`) is dropped: maas-vip's own proxy makes it \
                 unnecessary; track_backends lowers the priority when this host can reach no \
                 region"
            ),
        );
        return;
    }
    if let Some(prog) = &pidof {
        notes.at(
            file,
            s.line,
            format!(
                "vrrp_script `{name}`: `{cmd}` becomes `pidof {prog}`: `killall -0` signals \
                 the process and needs CAP_KILL for another user's (Debian's named runs as \
                 `bind`), which maas-vip's unit does not grant, so it would fail for ever; \
                 pidof reads /proc and needs no privilege"
            ),
        );
    }
    let (command, comment) = if shell {
        notes.at(
            file,
            s.line,
            format!("vrrp_script `{name}` needs a shell: run as /bin/sh -c"),
        );
        (
            vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
            Some(
                "Needs a shell (pipes, redirections, variables...): run through /bin/sh -c.".into(),
            ),
        )
    } else {
        (argv, None)
    };
    v.cfg.track_script.push(TrackScript {
        name: Spanned::new(0..0, name.to_string()),
        command: Spanned::new(0..0, command),
        interval: s.interval,
        // keepalived: a script's timeout defaults to its interval.
        timeout: s.timeout.unwrap_or(s.interval),
        weight,
        rise: s.rise,
        fall: s.fall,
    });
    v.track_script_comments.push(comment);
}

/// `killall -0 X`, `/usr/bin/killall -0 X`, `killall -q -0 X`, each optionally followed by
/// `|| exit 1` (or any `|| exit N`, N not 0), `>/dev/null`, `2>/dev/null`, `&>/dev/null`:
/// a liveness test of the process named X. Returns X.
fn killall_zero(cmd: &str) -> Option<String> {
    let mut words: Vec<&str> = cmd.split_whitespace().collect();
    // Trailing `|| exit N`: the exit status is already non-zero without it.
    if let [.., "||", "exit", n] = words[..] {
        if n.parse::<u8>().is_ok_and(|n| n != 0) {
            words.truncate(words.len() - 3);
        }
    } else if let [.., "||", "exit"] = words[..] {
        // A bare `exit` keeps killall's status, non-zero there.
        words.truncate(words.len() - 2);
    }
    words.retain(|w| !matches!(*w, ">/dev/null" | "2>/dev/null" | "&>/dev/null" | "2>&1"));
    let (prog, rest) = words.split_first()?;
    if prog.rsplit('/').next() != Some("killall") {
        return None;
    }
    let mut zero = false;
    let mut target = None;
    for w in rest {
        match *w {
            "-0" | "-s0" | "-SIG0" => zero = true,
            "-q" | "--quiet" | "-e" | "--exact" => {}
            w if !w.starts_with('-') && target.is_none() && is_process_name(w) => {
                target = Some(w.to_string())
            }
            _ => return None,
        }
    }
    target.filter(|_| zero)
}

/// A plain process name (no shell syntax, no pattern).
fn is_process_name(w: &str) -> bool {
    !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+' | '@'))
}

/// Splits a script into argv as keepalived does (words, `'` and `"` quoting). The flag says
/// whether it needs a shell: pipes, lists, redirections, expansions, globs, assignments.
pub(super) fn split_command(cmd: &str) -> (Vec<String>, bool) {
    let mut argv = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut shell = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => {
                            shell = true;
                            break;
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(ch) => {
                            if matches!(ch, '$' | '`' | '\\') {
                                shell = true;
                            }
                            cur.push(ch);
                        }
                        None => {
                            shell = true;
                            break;
                        }
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    if argv.is_empty() && cur.contains('=') {
                        shell = true;
                    }
                    argv.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' | '\\' | '*' | '?' | '[' | ']'
            | '{' | '}' | '~' => {
                shell = true;
                cur.push(c);
                in_word = true;
            }
            '#' if !in_word => {
                shell = true;
                cur.push(c);
                in_word = true;
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        if argv.is_empty() && cur.contains('=') {
            shell = true;
        }
        argv.push(cur);
    }
    // An explicit `sh -c '...'` is already an argv.
    if shell && argv.len() == 3 && argv[1] == "-c" && is_shell(&argv[0]) {
        shell = false;
    }
    (argv, shell)
}

fn is_shell(prog: &str) -> bool {
    matches!(
        prog.rsplit('/').next().unwrap_or(prog),
        "sh" | "bash" | "dash"
    )
}

/// `killall -0 haproxy`, `pidof haproxy`, `pgrep haproxy`, `systemctl is-active haproxy`.
fn checks_haproxy(argv: &[String]) -> bool {
    let Some(prog) = argv.first() else {
        return false;
    };
    let base = prog.rsplit('/').next().unwrap_or(prog);
    let operands: Vec<&str> = argv[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    match base {
        "killall" | "pidof" | "pgrep" => operands == ["haproxy"],
        "systemctl" => {
            operands.first() == Some(&"is-active")
                && operands.len() == 2
                && matches!(operands[1], "haproxy" | "haproxy.service")
        }
        _ => false,
    }
}
