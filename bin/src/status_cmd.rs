//! `maas-vip status`: asks the running daemon's admin endpoint for `/status` and prints it for
//! a human (or as the raw JSON with `--json`).
//!
//! A plain blocking HTTP/1.1 exchange over `std::net`: one request, `Connection: close`, read to
//! the end. The answer is read into [`Status`], the type the daemon writes it from, which reads
//! leniently: a field a future (or older) daemon does not send takes its default (a text shows
//! as `-`) instead of failing, one it sends that this version does not know is ignored.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use healthcheck::status::ServerStatus;
use serde_json::Value;

use daemon::status::{AnnounceStatus, Status, VrrpStatus};

/// For the connect, and for each read and write.
const TIMEOUT: Duration = Duration::from_secs(5);
/// A `/status` larger than this is not a status.
const MAX_RESPONSE: u64 = 16 << 20;

/// Why `/status` could not be had.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// Nothing answered at the address.
    #[error(
        "cannot reach the admin endpoint at {addr}: {source} \
         (is maas-vip running, with [admin] enabled on this address?)"
    )]
    Connect {
        /// The address asked.
        addr: SocketAddr,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke or timed out.
    #[error("talking to the admin endpoint at {addr}: {source}")]
    Io {
        /// The address asked.
        addr: SocketAddr,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The endpoint wants a token we do not have or refused ours.
    #[error(
        "the admin endpoint at {addr} refused the request: {why} \
         (the daemon and this command must read the same [admin] token)"
    )]
    Unauthorized {
        /// The address asked.
        addr: SocketAddr,
        /// Token missing or wrong.
        why: &'static str,
    },
    /// Any other non-200 answer.
    #[error("the admin endpoint at {addr} answered {status}: {body}")]
    Status {
        /// The address asked.
        addr: SocketAddr,
        /// The status line's code and reason.
        status: String,
        /// What it said.
        body: String,
    },
    /// Not HTTP, or not what `/status` sends.
    #[error("the admin endpoint at {addr} sent a malformed answer: {what}")]
    Malformed {
        /// The address asked.
        addr: SocketAddr,
        /// What was wrong.
        what: String,
    },
}

/// Runs `maas-vip status`: 0 when the status was printed, 1 when the endpoint could not be
/// reached or answered with an error (the reason goes to stderr). `admin` is `[admin] bind`;
/// an unspecified address (`0.0.0.0`, `[::]`) is asked on loopback.
pub(crate) fn status_command(admin: SocketAddr, token: Option<String>, json: bool) -> ExitCode {
    let addr = reachable(admin);
    let body = match fetch_status(addr, token.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("maas-vip status: {e}");
            return ExitCode::from(1);
        }
    };
    let out = if json {
        let mut b = body;
        if !b.ends_with('\n') {
            b.push('\n');
        }
        b
    } else {
        match serde_json::from_str::<Status>(&body) {
            Ok(v) => render(&v, now_unix_ms()),
            Err(e) => {
                eprintln!(
                    "maas-vip status: {}",
                    FetchError::Malformed {
                        addr,
                        what: format!("/status is not a status document: {e}"),
                    }
                );
                return ExitCode::from(1);
            }
        }
    };
    // A closed pipe (`maas-vip status | head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    ExitCode::SUCCESS
}

/// Where to connect for a bind address: a wildcard bind listens on loopback too.
fn reachable(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(a) if a.is_unspecified() => (Ipv4Addr::LOCALHOST, bind.port()).into(),
        IpAddr::V6(a) if a.is_unspecified() => (Ipv6Addr::LOCALHOST, bind.port()).into(),
        _ => bind,
    }
}

/// `GET /status` and its body.
fn fetch_status(addr: SocketAddr, token: Option<&str>) -> Result<String, FetchError> {
    let io = |source| FetchError::Io { addr, source };
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|source| FetchError::Connect { addr, source })?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut req = format!(
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\
         User-Agent: maas-vip-status\r\nConnection: close\r\n"
    );
    if let Some(t) = token {
        // The config allows printable characters only; never let one end the header early.
        if t.contains(['\r', '\n']) {
            return Err(FetchError::Unauthorized {
                addr,
                why: "the configured token contains a line break",
            });
        }
        let _ = write!(req, "Authorization: Bearer {t}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io)?;
    let resp = parse_response(&raw).map_err(|what| FetchError::Malformed { addr, what })?;
    match resp.code {
        200 => Ok(resp.body),
        401 => Err(FetchError::Unauthorized {
            addr,
            why: if token.is_some() {
                "wrong token"
            } else {
                "it requires a token and none is configured"
            },
        }),
        _ => Err(FetchError::Status {
            addr,
            status: resp.status,
            body: error_text(&resp.body),
        }),
    }
}

/// The `error` of a JSON error answer, else the body itself (shortened).
fn error_text(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| body.chars().take(200).collect::<String>().trim().to_owned())
}

/// An HTTP/1.1 response read to its end.
#[derive(Debug, PartialEq)]
struct HttpResponse {
    /// Status code.
    code: u16,
    /// Code and reason phrase, for messages.
    status: String,
    /// The body, de-chunked.
    body: String,
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("bad status line {status_line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not HTTP/1.x: {status_line:?}"));
    }
    let code: u16 = code
        .parse()
        .map_err(|_| format!("bad status code in {status_line:?}"))?;
    let status = status_line
        .split_once(' ')
        .map_or(status_line, |(_, rest)| rest)
        .to_owned();
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let decoded;
    if chunked {
        decoded = dechunk(body)?;
        body = &decoded;
    } else if let Some(n) = length {
        body = body
            .get(..n)
            .ok_or("body shorter than its Content-Length")?;
    }
    let body = String::from_utf8(body.to_vec()).map_err(|_| "body is not UTF-8")?;
    Ok(HttpResponse { code, status, body })
}

/// A `Transfer-Encoding: chunked` body (RFC 9112 §7.1), extensions and trailers ignored.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line without end")?;
        let line = std::str::from_utf8(&b[..eol]).map_err(|_| "chunk size is not ASCII")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {hex:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = b.get(..size).ok_or("chunk cut short")?;
        out.extend_from_slice(chunk);
        b = b.get(size + 2..).ok_or("chunk without its line end")?;
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The human view of a `/status` document at wall-clock time `now_ms`.
fn render(v: &Status, now_ms: u64) -> String {
    let mut out = String::new();
    if v.frontends.is_empty() {
        out.push_str("no frontends\n");
    } else {
        let mut rows = vec![row([
            "FRONTEND",
            "SERVER",
            "ADDRESS",
            "STATE",
            "LAST CHECK",
            "CURRENT",
            "TOTAL",
        ])];
        for f in &v.frontends {
            let fname = text(&f.health.name);
            if f.health.servers.is_empty() {
                rows.push(vec![fname.clone(), "(no servers)".into()]);
            }
            for s in &f.health.servers {
                let mut state = text(&s.state);
                if let Some(p) = &s.progress {
                    let _ = write!(state, " ({p})");
                } else if s.down_reason.as_deref() == Some("errors") {
                    let why = s.last_ejection.as_ref().map_or("-", |e| &e.detail);
                    let _ = write!(state, " ({why})");
                }
                // A postgres check's finding, which decides the state: `up, primary`.
                if let Some(role) = &s.role {
                    let _ = write!(state, ", {role}");
                }
                let mut address = text(&s.address);
                if let Some(r) = &s.resolution {
                    match &r.current_address {
                        Some(a) => {
                            let _ = write!(address, " -> {a}");
                        }
                        None => address.push_str(" -> (none)"),
                    }
                    if let Some(e) = &r.last_error {
                        let _ = write!(state, " ({e})");
                    }
                }
                rows.push(vec![
                    fname.clone(),
                    text(&s.name),
                    address,
                    state,
                    last_check(s, now_ms),
                    s.counters.current.to_string(),
                    s.counters.total.to_string(),
                ]);
            }
        }
        table(&mut out, &rows);
        for f in &v.frontends {
            let _ = write!(
                out,
                "frontend {}: {} of {} servers take connections",
                text(&f.health.name),
                f.health.servers_up,
                f.health.servers_total
            );
            if let Some(c) = &f.counters {
                let _ = write!(
                    out,
                    "; {} connections now, {} since start",
                    c.current, c.total
                );
            }
            out.push('\n');
        }
    }
    out.push('\n');
    if v.vrrp.is_empty() {
        out.push_str("no VRRP instances\n");
    } else {
        let mut rows = vec![row([
            "VRRP INSTANCE",
            "INTERFACE",
            "VRID",
            "STATE",
            "PRIORITY",
            "ADVERTS SENT",
            "RECEIVED",
            "REJECTED",
            "AUTH",
        ])];
        for i in &v.vrrp {
            rows.push(vec![
                text(&i.name),
                text(&i.interface),
                i.vrid.to_string(),
                text(&i.state),
                priority(i),
                i.adverts_sent.to_string(),
                i.adverts_received.to_string(),
                rejected(&i.rejected),
                auth(i),
            ]);
        }
        table(&mut out, &rows);
    }
    if !v.announce.is_empty() {
        out.push('\n');
        let mut rows = vec![row([
            "ANNOUNCE",
            "INTERFACE",
            "VIPS",
            "STATE",
            "SINCE",
            "WHY",
            "TRANSITIONS",
            "FRR",
        ])];
        for b in &v.announce {
            rows.push(vec![
                text(&b.name),
                text(&b.interface),
                b.vips.join(","),
                state_name(b.state).into(),
                format!("{} ago", age((b.for_seconds * 1000.0) as u64)),
                text(&b.reason),
                format!("{} up, {} down", b.announcements, b.withdrawals),
                frr_summary(b),
            ]);
        }
        table(&mut out, &rows);
    }
    out
}

/// "announced" or "withdrawn", as `/status` writes them.
fn state_name(s: announce::State) -> &'static str {
    match s {
        announce::State::Announced => "announced",
        announce::State::Withdrawn => "withdrawn",
    }
}

/// What FRR says of a block's VIPs: "advertised to 10.0.0.1; 1/1 sessions up", or why it
/// could not be read.
fn frr_summary(b: &AnnounceStatus) -> String {
    let Some(frr) = &b.frr else {
        return match &b.frr_error {
            Some(e) => format!("unreadable: {e}"),
            None => "not read yet".into(),
        };
    };
    let mut to: Vec<&str> = Vec::new();
    let mut missing = 0;
    for r in frr.routes.values() {
        if r.advertised_to.is_empty() {
            missing += 1;
        }
        for a in &r.advertised_to {
            if !to.contains(&a.as_str()) {
                to.push(a);
            }
        }
    }
    let total = frr.peers.len();
    let up = frr.peers.iter().filter(|p| p.established()).count();
    let routes = if to.is_empty() {
        "not advertised".to_string()
    } else if missing > 0 {
        format!(
            "{missing} VIP(s) not advertised; others to {}",
            to.join(",")
        )
    } else {
        format!("advertised to {}", to.join(","))
    };
    format!("{routes}; {up}/{total} sessions up")
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Left-aligned columns two spaces apart; trailing blanks trimmed.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (cell, w) in r.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// A string field, or `-` when it is empty (not sent).
fn text(v: &str) -> String {
    if v.is_empty() { "-" } else { v }.to_owned()
}

/// The effective priority, followed by the configured one when track weights moved it:
/// "130 (configured 150)".
fn priority(i: &VrrpStatus) -> String {
    if i.configured_priority == i.priority {
        i.priority.to_string()
    } else {
        format!("{} (configured {})", i.priority, i.configured_priority)
    }
}

/// "ok: HTTP status 200 in 1.5ms, 2s ago", "not checked", or "-" before the first check.
fn last_check(s: &ServerStatus, now_ms: u64) -> String {
    if !s.check {
        return "not checked".into();
    }
    let Some(c) = &s.last_check else {
        return "-".into();
    };
    let verdict = if c.passed { "ok" } else { "failed" };
    format!(
        "{verdict}: {} in {}, {} ago",
        text(&c.detail),
        millis(c.duration_ms),
        age(now_ms.saturating_sub(c.at_unix_ms))
    )
}

/// 0.4ms, 12.5ms, 1.25s.
fn millis(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else {
        format!("{ms:.1}ms")
    }
}

/// <1s, 42s, 3m12s, 2h05m, 3d04h.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => "<1s".into(),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// auth_hmac as `hmac MODE key N`, with the unsigned adverts taken if any; `-` without it.
fn auth(i: &VrrpStatus) -> String {
    let Some(h) = &i.auth_hmac else {
        return "-".into();
    };
    let mut out = format!("hmac {} key {}", text(&h.mode), h.active_key);
    if h.unsigned_accepted > 0 {
        let _ = write!(out, ", unsigned={}", h.unsigned_accepted);
    }
    out
}

/// Non-zero rejection counters as `reason=n`, or `0`.
fn rejected(m: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A `/status` document written as JSON, read as `maas-vip status` reads it.
    fn doc(v: Value) -> Status {
        serde_json::from_value(v).expect("reads as a Status")
    }

    #[test]
    fn response_parsing() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .expect("parses");
        assert_eq!(
            r,
            HttpResponse {
                code: 200,
                status: "200 OK".into(),
                body: "{}".into()
            }
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!(r.body, "{\"a\":1}");
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").expect("no length");
        assert_eq!((r.code, r.body.as_str()), (404, "nope"));
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn wildcard_binds_are_asked_on_loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("literal");
        assert_eq!(reachable(a("0.0.0.0:5249")), a("127.0.0.1:5249"));
        assert_eq!(reachable(a("[::]:5249")), a("[::1]:5249"));
        assert_eq!(reachable(a("10.0.0.1:5249")), a("10.0.0.1:5249"));
    }

    #[test]
    fn host_names_show_their_address_and_why_they_have_none() {
        let v = json!({
            "frontends": [{
                "name": "maas", "servers_up": 1, "servers_total": 2,
                "servers": [
                    {
                        "name": "r1", "address": "maas-api-1.example:5240", "state": "up",
                        "resolution": { "name": "maas-api-1.example",
                            "current_address": "10.0.0.11:5240", "last_error": null },
                        "last_check": null, "counters": { "current": 0, "total": 5 }
                    },
                    {
                        "name": "r2", "address": "nosuch.example:5240", "state": "down",
                        "down_reason": "unresolved",
                        "resolution": { "name": "nosuch.example", "current_address": null,
                            "last_error": "unresolved: Name or service not known" },
                        "last_check": null, "counters": { "current": 0, "total": 0 }
                    }
                ]
            }]
        });
        let got = render(&doc(v), 0);
        let want = "\
FRONTEND  SERVER  ADDRESS                                    STATE                                         LAST CHECK  CURRENT  TOTAL
maas      r1      maas-api-1.example:5240 -> 10.0.0.11:5240  up                                            -           0        5
maas      r2      nosuch.example:5240 -> (none)              down (unresolved: Name or service not known)  -           0        0
frontend maas: 1 of 2 servers take connections

no VRRP instances
";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn table_for_humans() {
        let now = 1_700_000_010_000u64;
        let v = json!({
            "frontends": [{
                "name": "maas",
                "servers_up": 1,
                "servers_total": 3,
                "counters": { "current": 4, "total": 1234 },
                "servers": [
                    {
                        "name": "maas-api-1", "address": "10.0.0.11:5240", "state": "up",
                        "check": true, "progress": null,
                        "last_check": { "passed": true, "detail": "HTTP status 200",
                            "duration_ms": 1.5, "at_unix_ms": now - 2_000 },
                        "counters": { "current": 3, "total": 1200 }
                    },
                    {
                        "name": "maas-api-2", "address": "10.0.0.12:5240", "state": "down",
                        "check": true, "progress": "going up 1/2",
                        "last_check": { "passed": false, "detail": "connection refused",
                            "duration_ms": 0.25, "at_unix_ms": now - 200_000 },
                        "counters": { "current": 0, "total": 34 }
                    },
                    {
                        "name": "maas-api-3", "address": "10.0.0.13:5240", "state": "maint",
                        "check": false, "progress": null, "last_check": null,
                        "counters": { "current": 0, "total": 0 }
                    },
                    {
                        "name": "maas-api-4", "address": "10.0.0.14:5240", "state": "down",
                        "check": false, "progress": null, "last_check": null,
                        "down_reason": "errors",
                        "last_ejection": { "errors": 10, "last_error": "refused",
                            "detail": "10 consecutive errors, last: connection refused" },
                        "counters": { "current": 0, "total": 10 }
                    }
                ]
            }],
            "vrrp": [{
                "name": "maas_region", "interface": "eth0", "vrid": 51, "state": "MASTER",
                "priority": 150, "configured_priority": 150, "adverts_sent": 120,
                "adverts_received": 3, "rejected": { "auth_pass": 2, "ttl": 0 }
            }, {
                "name": "maas_backup", "interface": "eth1", "vrid": 52, "state": "BACKUP",
                "priority": 80, "configured_priority": 100, "adverts_sent": 0,
                "adverts_received": 40, "rejected": { "hmac_replay": 3 },
                "auth_hmac": { "mode": "permissive", "active_key": 2, "key_ids": [1, 2],
                    "unsigned_accepted": 7 }
            }]
        });
        let got = render(&doc(v), now);
        let want = "\
FRONTEND  SERVER      ADDRESS         STATE                                                   LAST CHECK                                      CURRENT  TOTAL
maas      maas-api-1  10.0.0.11:5240  up                                                      ok: HTTP status 200 in 1.5ms, 2s ago            3        1200
maas      maas-api-2  10.0.0.12:5240  down (going up 1/2)                                     failed: connection refused in 0.2ms, 3m20s ago  0        34
maas      maas-api-3  10.0.0.13:5240  maint                                                   not checked                                     0        0
maas      maas-api-4  10.0.0.14:5240  down (10 consecutive errors, last: connection refused)  not checked                                     0        10
frontend maas: 1 of 3 servers take connections; 4 connections now, 1234 since start

VRRP INSTANCE  INTERFACE  VRID  STATE   PRIORITY             ADVERTS SENT  RECEIVED  REJECTED       AUTH
maas_region    eth0       51    MASTER  150                  120           3         auth_pass=2    -
maas_backup    eth1       52    BACKUP  80 (configured 100)  0             40        hmac_replay=3  hmac permissive key 2, unsigned=7
";
        assert_eq!(got, want, "\n{got}");

        let v = json!({ "frontends": [], "vrrp": [], "announce": [{
            "name": "bgp", "interface": "maas-vip0", "vips": ["10.0.0.100/32"],
            "state": "announced", "reason": "healthy", "for_seconds": 192.4,
            "announcements": 2, "withdrawals": 1,
            "frr": { "routes": { "10.0.0.100/32": { "local": true, "best": true,
                "advertised_to": ["10.0.0.1"] } },
                "peers": [{ "peer": "10.0.0.1", "state": "Established" },
                          { "peer": "10.0.0.2", "state": "Active" }] }
        }, {
            "name": "api", "interface": "maas-vip1", "vips": ["10.0.1.100/32"],
            "state": "withdrawn", "reason": "no server of frontend api is up", "for_seconds": 3.0,
            "announcements": 0, "withdrawals": 0, "frr": null,
            "frr_error": "running vtysh: No such file or directory"
        }]});
        let got = render(&doc(v), now);
        assert!(
            got.ends_with("\
ANNOUNCE  INTERFACE  VIPS           STATE      SINCE      WHY                              TRANSITIONS   FRR
bgp       maas-vip0  10.0.0.100/32  announced  3m12s ago  healthy                          2 up, 1 down  advertised to 10.0.0.1; 1/2 sessions up
api       maas-vip1  10.0.1.100/32  withdrawn  3s ago     no server of frontend api is up  0 up, 0 down  unreadable: running vtysh: No such file or directory
"),
            "\n{got}"
        );
    }

    #[test]
    fn a_postgres_server_shows_its_role() {
        let v = json!({ "frontends": [{ "name": "db", "servers": [{
            "name": "pg2", "address": "10.0.0.22:5432", "state": "down", "check": true,
            "role": "standby",
            "last_check": { "passed": false, "detail": "standby (in recovery)" }
        }]}]});
        let got = render(&doc(v), 0);
        assert!(
            got.contains("down, standby  failed: standby (in recovery)"),
            "{got}"
        );
    }

    #[test]
    fn table_tolerates_missing_fields() {
        let got = render(&doc(json!({})), 0);
        assert_eq!(got, "no frontends\n\nno VRRP instances\n");
        let got = render(
            &doc(
                json!({ "frontends": [{ "name": "x", "servers": [{ "name": "a" }] }], "vrrp": [] }),
            ),
            0,
        );
        assert!(
            got.contains("x         a       -        -      -           0        0"),
            "{got}"
        );
        assert!(got.ends_with("\nno VRRP instances\n"), "{got}");
    }

    #[test]
    fn ages_and_durations() {
        assert_eq!(age(999), "<1s");
        assert_eq!(age(59_999), "59s");
        assert_eq!(age(61_000), "1m01s");
        assert_eq!(age(2 * 3_600_000 + 5 * 60_000), "2h05m");
        assert_eq!(age(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
        assert_eq!(millis(0.44), "0.4ms");
        assert_eq!(millis(1250.0), "1.25s");
    }

    #[test]
    fn unreachable_endpoint_is_exit_1() {
        // Bound and dropped at once: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let e = fetch_status(addr, None).expect_err("refused");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("cannot reach the admin endpoint at {addr}")),
            "{msg}"
        );
        assert_eq!(status_command(addr, None, false), ExitCode::from(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetches_from_the_admin_endpoint() {
        const TOKEN: &str = "status-test-token-0123";
        let front = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (f, addr) = (
            front.local_addr().expect("bound"),
            admin.local_addr().expect("bound"),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("maas-vip.toml");
        std::fs::write(
            &path,
            format!(
                "[[frontend]]\nname = \"maas\"\nbind = [\"{f}\"]\n\
                 [[frontend.server]]\nname = \"r1\"\naddress = \"10.0.0.11:5240\"\ncheck = false\n\
                 [admin]\nbind = \"{addr}\"\ntoken = \"{TOKEN}\"\n"
            ),
        )
        .expect("write");
        let (file, _) = daemon::ConfigFile::load(&path).expect("a usable config");
        let (_tx, signals) = daemon::Signals::channel();
        let listeners = daemon::Listeners::new().frontend(front).admin(admin);
        let handle = daemon::run(file, listeners, signals).await.expect("runs");

        let (good, none, wrong) = tokio::task::spawn_blocking(move || {
            (
                fetch_status(addr, Some(TOKEN)),
                fetch_status(addr, None),
                fetch_status(addr, Some("not-the-token-0123456")),
            )
        })
        .await
        .expect("client thread");
        let body = good.expect("status with the token");
        let v: Status = serde_json::from_str(&body).expect("a Status");
        let table = render(&v, now_unix_ms());
        assert!(
            table.contains("maas      r1      10.0.0.11:5240  up"),
            "{table}"
        );
        let none = none.expect_err("401").to_string();
        assert!(
            none.contains("refused the request: it requires a token and none is configured"),
            "{none}"
        );
        let wrong = wrong.expect_err("401").to_string();
        assert!(
            wrong.contains("refused the request: wrong token"),
            "{wrong}"
        );

        handle.stop().await.expect("a clean stop");
    }
}
