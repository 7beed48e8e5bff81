//! The probes: a TCP connect, or an HTTP/1.1 request (GET, HEAD or OPTIONS) read up to the end
//! of its headers; the PostgreSQL one is in [`crate::postgres`].
//!
//! The HTTP client is written by hand on purpose: a check sends one fixed request and reads
//! one status line, so a full client (pool, body decoding) would cost more than it brings.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::config::{CheckConfig, CheckKind};
use crate::outcome::CheckResult;

/// Most bytes of status line and headers read from a check's answer.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Something that checks a server. The network one is [`NetProbe`]; tests inject others.
pub trait Probe: Send + Sync + 'static {
    /// Check `target` as `cfg` says. Must finish within `cfg.timeout` (the driver also
    /// bounds it, a little later, as a safety net).
    fn probe(
        &self,
        target: SocketAddr,
        cfg: &CheckConfig,
    ) -> impl Future<Output = CheckResult> + Send;
}

/// Checks over the network: `kind = "tcp"` or `kind = "http"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetProbe;

impl Probe for NetProbe {
    async fn probe(&self, target: SocketAddr, cfg: &CheckConfig) -> CheckResult {
        if cfg.kind == CheckKind::Postgres {
            return CheckResult::Postgres(match cfg.postgres() {
                Some(check) => crate::postgres::probe(target, &check, cfg.timeout).await,
                // `validate` rejects such a config; should one get here, it fails as a
                // login that cannot be made.
                None => {
                    crate::postgres::PgResult::AuthFailed(crate::postgres::AuthFailure::NoPassword)
                }
            });
        }
        let deadline = Instant::now() + cfg.timeout;
        let stream = match timeout_at(deadline, TcpStream::connect(target)).await {
            Err(_) => return CheckResult::ConnectTimeout,
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return CheckResult::Refused
            }
            Ok(Err(e)) => return CheckResult::ConnectError(e.kind()),
            Ok(Ok(s)) => s,
        };
        match cfg.kind {
            CheckKind::Tcp | CheckKind::Postgres => CheckResult::Connected,
            CheckKind::Http => match timeout_at(deadline, http_check(stream, target, cfg)).await {
                Err(_) => CheckResult::ResponseTimeout,
                Ok(r) => r,
            },
        }
    }
}

async fn http_check(mut stream: TcpStream, target: SocketAddr, cfg: &CheckConfig) -> CheckResult {
    let _ = stream.set_nodelay(true);
    let req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: maas-vip-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        cfg.method.as_str(),
        cfg.path,
        target
    );
    if let Err(e) = stream.write_all(req.as_bytes()).await {
        return CheckResult::IoError(e.kind());
    }
    let mut buf = vec![0u8; MAX_RESPONSE_HEAD];
    let mut len = 0;
    loop {
        if len == buf.len() {
            // Headers too long: judge on the status line if it came whole.
            break;
        }
        match stream.read(&mut buf[len..]).await {
            Ok(0) => break,
            Ok(n) => {
                let searched_from = len.saturating_sub(3);
                len += n;
                if find(&buf[searched_from..len], b"\r\n\r\n").is_some() {
                    break;
                }
            }
            Err(e) if len == 0 => return CheckResult::IoError(e.kind()),
            // Some bytes came, then the server reset: judge on what came.
            Err(_) => break,
        }
    }
    judge(&buf[..len], cfg.expect_status)
}

/// The verdict on the first bytes of an answer.
pub(crate) fn judge(head: &[u8], expect_status: Option<u16>) -> CheckResult {
    if head.is_empty() {
        return CheckResult::Closed;
    }
    let Some(eol) = find(head, b"\n") else {
        return CheckResult::BadResponse;
    };
    match parse_status_line(&head[..eol]) {
        None => CheckResult::BadResponse,
        Some(status) => {
            let ok = match expect_status {
                Some(want) => status == want,
                None => (200..400).contains(&status),
            };
            if ok {
                CheckResult::HttpOk(status)
            } else {
                CheckResult::HttpBadStatus(status)
            }
        }
    }
}

/// `HTTP/1.x SSS[ reason]` (the `\n` already cut, a `\r` may remain) -> the status.
pub(crate) fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (minor, rest) = rest.split_first()?;
    if !minor.is_ascii_digit() {
        return None;
    }
    let rest = rest.strip_prefix(b" ")?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(rest.get(3), None | Some(b' ')) {
        return None;
    }
    let status = code
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    (100..=599).contains(&status).then_some(status)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.1 204\r"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/2 200 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 099 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 6xx OK"), None);
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH_9.6"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"HTTP/1.0 2345\r\n x";
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.random_bool(0.8) {
                        alphabet[rng.random_range(0..alphabet.len())]
                    } else {
                        rng.random()
                    }
                })
                .collect();
            let r = judge(&bytes, None);
            if let Some(s) = r.http_status() {
                assert!((100..=599).contains(&s), "{bytes:?}");
            }
        }
    }

    #[test]
    fn verdicts() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(judge(ok, None), CheckResult::HttpOk(200));
        assert_eq!(judge(ok, Some(200)), CheckResult::HttpOk(200));
        assert_eq!(judge(ok, Some(204)), CheckResult::HttpBadStatus(200));
        assert_eq!(
            judge(b"HTTP/1.1 302 Found\r\n\r\n", None),
            CheckResult::HttpOk(302)
        );
        assert_eq!(
            judge(b"HTTP/1.1 404 Not Found\r\n\r\n", None),
            CheckResult::HttpBadStatus(404)
        );
        assert_eq!(
            judge(b"HTTP/1.1 500 Internal\r\n", None),
            CheckResult::HttpBadStatus(500)
        );
        assert_eq!(judge(b"HTTP/1.1 200 OK", None), CheckResult::BadResponse);
        assert_eq!(judge(b"", None), CheckResult::Closed);
        assert_eq!(judge(b"garbage\r\n\r\n", None), CheckResult::BadResponse);
        assert!(judge(ok, None).passed());
        assert!(!CheckResult::Refused.passed());
    }

    /// tcp and http checks of an IPv6 server (on ::1): the Host header is bracketed.
    #[tokio::test]
    async fn ipv6_server_checks() {
        let l = tokio::net::TcpListener::bind("[::1]:0")
            .await
            .expect("bind ::1");
        let target = l.local_addr().expect("addr");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1024];
                    let mut len = 0;
                    while !buf[..len].ends_with(b"\r\n\r\n") {
                        match s.read(&mut buf[len..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => len += n,
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&buf[..len]).into_owned());
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        let tcp = CheckConfig {
            kind: CheckKind::Tcp,
            ..CheckConfig::default()
        };
        assert_eq!(NetProbe.probe(target, &tcp).await, CheckResult::Connected);
        let http = CheckConfig::default();
        assert_eq!(
            NetProbe.probe(target, &http).await,
            CheckResult::HttpOk(200)
        );
        let head = rx.recv().await.expect("the check's request");
        assert!(
            head.contains(&format!("\r\nHost: [::1]:{}\r\n", target.port())),
            "{head}"
        );
    }
}
