//! The L7 proxy (`mode = "http"`): HTTP/1.1 requests balanced one by one.
//!
//! - Each request picks its server (a client's keep-alive connection does not pin one, except
//!   that `balance = "source"` maps every request of a client to the same server).
//! - Server connections are pooled per server and reused unless `http_server_close`.
//! - Bodies stream both ways; nothing is buffered whole. hyper serves the client; the server
//!   side is [`crate::upstream`], which runs in the same task (no hand-off per request).
//! - A request is resent to another server when it was never sent (refused connect, a pooled
//!   connection found closed) and, for idempotent methods without a body, when the server
//!   closed before any response byte. Never otherwise.
//! - After `101 Switching Protocols` (websocket) the two connections become a tunnel governed
//!   by `timeout_tunnel` alone.
//! - The proxy's own answers: 503 when no server is available, 502 when a server fails or sends
//!   garbage, 504 when it does not answer within `timeout_server`. A server silent for
//!   `timeout_server` in the middle of a response body has the client connection cut (its
//!   status line is gone already), logged `server_timeout`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use healthcheck::{ProxyError, ServerState};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::balance::Tried;
use crate::frontend::{Frontend, Snapshot};
use crate::upstream::{self, Conn, UpBody};

/// Serves one client connection in http mode.
pub async fn serve(fe: &Frontend, snap: &Snapshot, client: TcpStream, peer: SocketAddr) {
    // TCP_NODELAY is inherited from the listener (see `listener::bind`).
    let io = TokioIo::new(client);
    let svc = service_fn(|req: Request<Incoming>| async move {
        Ok::<_, Infallible>(handle(fe, snap, req, peer).await)
    });
    let mut builder = server_http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(snap.settings.timeout_client)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(io, svc).with_upgrades().await {
        debug!(client = %peer, frontend = %fe.name, cause = %e, "client connection ended with an error");
    }
}

/// What the access-log line of a request says.
struct Log {
    frontend: Arc<str>,
    client: SocketAddr,
    method: Method,
    uri: Uri,
    server: Option<Arc<ServerState>>,
    status: u16,
    start: Instant,
    connect: Duration,
    response: Duration,
    retries: u32,
    end: &'static str,
}

impl Log {
    fn emit(&self, bytes: u64) {
        let server = self.server.as_ref().map_or("-", |s| s.name.as_str());
        info!(target: "access", client = %self.client, frontend = %self.frontend,
            method = %self.method, path = %self.uri, status = self.status, server,
            connect_ms = ms(self.connect), response_ms = ms(self.response),
            total_ms = ms(self.start.elapsed()), bytes_out = bytes, retries = self.retries,
            end = self.end, "http");
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Response body to the client: the server's streamed body or the proxy's own short one.
/// Counts bytes and writes the access-log line when the response ends (or is dropped).
pub struct ProxyBody {
    inner: Inner,
    bytes: u64,
    log: Option<Box<Log>>,
}

enum Inner {
    Stream(UpBody),
    Full(Option<Bytes>),
}

impl ProxyBody {
    fn full(text: &'static str, log: Log) -> ProxyBody {
        ProxyBody {
            inner: Inner::Full(Some(Bytes::from_static(text.as_bytes()))),
            bytes: 0,
            log: Some(Box::new(log)),
        }
    }

    fn finish(&mut self, end: Option<&'static str>) {
        if let Some(mut log) = self.log.take() {
            if let Some(server) = &log.server {
                server.counters.current.fetch_sub(1, Ordering::Relaxed);
                server
                    .counters
                    .bytes_from_server
                    .fetch_add(self.bytes, Ordering::Relaxed);
            }
            if let Some(end) = end {
                log.end = end;
            }
            log.emit(self.bytes);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(s) => Pin::new(s).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let timed_out = e.kind() == io::ErrorKind::TimedOut;
                if let Some(s) = this.log.as_ref().and_then(|l| l.server.clone()) {
                    s.observe_error(if timed_out {
                        ProxyError::Timeout
                    } else {
                        ProxyError::Reset
                    });
                }
                this.finish(Some(if timed_out {
                    "server_timeout"
                } else {
                    "server_error"
                }));
            }
            Poll::Ready(None) => this.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Stream(s) => s.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper drops a body that is empty from the start without polling it; any other
        // dropped before its end means the client went away mid-response.
        let end = if self.is_end_stream() {
            None
        } else {
            Some("client_abort")
        };
        self.finish(end);
    }
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE) && upstream::has_token(h, header::CONNECTION, "upgrade")
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): the fixed set and those named in Connection.
/// With `upgrade`, Upgrade and `Connection: upgrade` are kept for the next hop.
fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    let mut named: [Option<HeaderName>; 4] = Default::default();
    let mut n = 0;
    for v in h.get_all(header::CONNECTION) {
        for t in v.to_str().unwrap_or("").split(',') {
            let t = t.trim();
            if t.is_empty()
                || t.eq_ignore_ascii_case("close")
                || t.eq_ignore_ascii_case("keep-alive")
                || t.eq_ignore_ascii_case("upgrade")
            {
                continue;
            }
            if let (Ok(name), true) = (HeaderName::from_bytes(t.as_bytes()), n < named.len()) {
                named[n] = Some(name);
                n += 1;
            }
        }
    }
    for name in named.into_iter().flatten() {
        h.remove(name);
    }
    let upgrade_value = if upgrade {
        h.remove(header::UPGRADE)
    } else {
        None
    };
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    if let Some(u) = upgrade_value {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn add_forwarded(h: &mut HeaderMap, peer: SocketAddr) {
    let ip = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(std::net::IpAddr::V6(v6)),
        v4 => v4,
    };
    let xff = HeaderName::from_static("x-forwarded-for");
    let value = match h.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(xff, v);
    }
    // This proxy terminates plain HTTP: the client spoke http, whatever it claims.
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn plain(status: StatusCode, text: &'static str, log: Log) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(text, log));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The proxy's own answer, counted and logged.
fn answer(
    fe: &Frontend,
    status: StatusCode,
    text: &'static str,
    mut log: Log,
) -> Response<ProxyBody> {
    log.status = status.as_u16();
    fe.counters.count_status(status.as_u16());
    plain(status, text, log)
}

async fn handle(
    fe: &Frontend,
    snap: &Snapshot,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let s = &snap.settings;
    let mut log = Log {
        frontend: fe.name.clone(),
        client: peer,
        method: req.method().clone(),
        uri: req.uri().clone(),
        server: None,
        status: 0,
        start: Instant::now(),
        connect: Duration::ZERO,
        response: Duration::ZERO,
        retries: 0,
        end: "done",
    };
    fe.counters.requests.fetch_add(1, Ordering::Relaxed);

    if let Some(target) = &s.redirect_root {
        if req.uri().path() == "/" && matches!(*req.method(), Method::GET | Method::HEAD) {
            log.end = "redirect";
            let mut r = answer(fe, StatusCode::FOUND, "", log);
            if let Ok(v) = HeaderValue::from_str(target) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return r;
        }
    }

    let upgrade = wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    {
        let h = req.headers_mut();
        strip_hop_by_hop(h, upgrade);
        if s.forwardfor {
            add_forwarded(h, peer);
        }
        if s.http_server_close && !upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    let (parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let mut head = BytesMut::new();
    let framing = upstream::encode_request(
        &parts.method,
        &parts.uri,
        &parts.headers,
        has_body,
        &mut head,
    );
    let mut body = has_body.then_some(body);
    // What may go again after it reached a server: an idempotent request without a body.
    let replayable = idempotent(&parts.method) && !has_body;

    let members = snap.pool.members();
    let mut tried = Tried::default();
    let mut previous: Option<usize> = None;
    let mut attempt = 0u32;
    // Pooled connections the server closed as the request went out do not count as attempts,
    // but are bounded.
    let mut stale = 0u32;
    let mut short_wait = Duration::ZERO;
    loop {
        let idx = snap.next_server(peer.ip(), tried, previous);
        let Some(idx) = idx else {
            log.retries = attempt;
            log.end = "no_server";
            fe.counters.no_server.fetch_add(1, Ordering::Relaxed);
            return answer(
                fe,
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: no region is available\n",
                log,
            );
        };
        let server = &members[idx].state;
        if attempt > 0 && stale == 0 {
            fe.count_retry(snap, idx, previous);
        }
        let t = Instant::now();
        let pooled = if s.http_server_close || upgrade {
            None
        } else {
            snap.pools[idx].checkout()
        };
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match Conn::connect(server.address, s.timeout_connect).await {
                Ok(conn) => conn,
                // This host's shortage (descriptors, buffers, local ports), not the server's.
                // Waited out within `timeout_connect`, then answered 503.
                Err(e) if crate::listener::is_local_shortage(&e) => {
                    if crate::listener::wait_out_shortage(&e, &mut short_wait, s.timeout_connect)
                        .await
                    {
                        continue;
                    }
                    fe.counters.local_shortage.fetch_add(1, Ordering::Relaxed);
                    log.retries = attempt;
                    log.end = "local_shortage";
                    return answer(
                        fe,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "503 Service Unavailable: the proxy is out of resources\n",
                        log,
                    );
                }
                Err(e) => {
                    server.observe_error(ProxyError::from_connect(&e));
                    tried.mark(idx);
                    previous = Some(idx);
                    if attempt >= s.retries {
                        log.retries = attempt;
                        log.end = "connect_failed";
                        fe.counters.connect_failed.fetch_add(1, Ordering::Relaxed);
                        return answer(
                            fe,
                            StatusCode::SERVICE_UNAVAILABLE,
                            "503 Service Unavailable: no region answered\n",
                            log,
                        );
                    }
                    attempt += 1;
                    continue;
                }
            },
        };
        log.connect += t.elapsed();
        let t = Instant::now();
        server.counters.total.fetch_add(1, Ordering::Relaxed);
        let sent = conn
            .send(
                &head,
                &mut body,
                framing,
                s.timeout_client,
                s.timeout_server,
            )
            .await;
        let exchanged = match sent {
            Ok(()) => tokio::time::timeout(s.timeout_server, conn.read_head(&parts.method))
                .await
                .unwrap_or(Err(upstream::Error::Timeout)),
            Err(e) => Err(e),
        };
        log.response = t.elapsed();
        let error = match exchanged {
            Ok(h) => {
                log.retries = attempt;
                let switching = h.status == StatusCode::SWITCHING_PROTOCOLS;
                if switching && client_upgrade.is_none() {
                    // A protocol switch the client did not ask for cannot be relayed.
                    server.observe_error(ProxyError::BadResponse);
                    log.end = "server_garbage";
                    return answer(fe, StatusCode::BAD_GATEWAY, "502 Bad Gateway\n", log);
                }
                server.observe_success();
                log.status = h.status.as_u16();
                fe.counters.count_status(log.status);
                let pool = (!s.http_server_close && !upgrade).then(|| snap.pools[idx].clone());
                let (up_body, switched) = UpBody::new(conn, &h, pool, s.timeout_server);
                if let (Some(client_up), Some(conn)) = (client_upgrade, switched) {
                    tokio::spawn(tunnel(client_up, conn, s.timeout_tunnel));
                }
                let mut headers = h.headers;
                strip_hop_by_hop(&mut headers, switching);
                server.counters.current.fetch_add(1, Ordering::Relaxed);
                log.server = Some(server.clone());
                log.end = if switching { "upgraded" } else { "done" };
                let mut r = Response::new(ProxyBody {
                    inner: Inner::Stream(up_body),
                    bytes: 0,
                    log: Some(Box::new(log)),
                });
                *r.status_mut() = h.status;
                *r.headers_mut() = headers;
                return r;
            }
            Err(e) => e,
        };
        let reused = conn.reused();
        drop(conn);
        debug!(client = %peer, frontend = %fe.name, server = %server.name, cause = %error,
            "request failed");
        match error {
            upstream::Error::Timeout => {
                server.observe_error(ProxyError::Timeout);
                log.retries = attempt;
                log.end = "server_timeout";
                return answer(
                    fe,
                    StatusCode::GATEWAY_TIMEOUT,
                    "504 Gateway Timeout\n",
                    log,
                );
            }
            upstream::Error::Client(e) => {
                // The client went away or fell silent mid-upload: nothing to blame the server
                // for.
                server.counters.total.fetch_sub(1, Ordering::Relaxed);
                log.retries = attempt;
                if e.kind() == io::ErrorKind::TimedOut {
                    log.end = "client_timeout";
                    return answer(
                        fe,
                        StatusCode::REQUEST_TIMEOUT,
                        "408 Request Timeout\n",
                        log,
                    );
                }
                log.end = "client_abort";
                return answer(fe, StatusCode::BAD_REQUEST, "400 Bad Request\n", log);
            }
            // The server closed a pooled connection as the request went out: the request
            // never reached it. Go again, same rules, not counted as an attempt.
            e if reused && replayable && e.closed_early() => {
                server.counters.total.fetch_sub(1, Ordering::Relaxed);
                stale += 1;
                if stale <= 8 {
                    continue;
                }
                return answer(fe, StatusCode::BAD_GATEWAY, "502 Bad Gateway\n", log);
            }
            error => {
                stale = 0;
                let garbage = matches!(error, upstream::Error::Garbage(_));
                server.observe_error(if garbage {
                    ProxyError::BadResponse
                } else {
                    ProxyError::Reset
                });
                // Closed before any response byte: an idempotent request without a body
                // may go again, to another server.
                if replayable && !garbage && attempt < s.retries {
                    tried.mark(idx);
                    previous = Some(idx);
                    attempt += 1;
                    continue;
                }
                log.retries = attempt;
                log.end = if garbage {
                    "server_garbage"
                } else {
                    "server_error"
                };
                return answer(fe, StatusCode::BAD_GATEWAY, "502 Bad Gateway\n", log);
            }
        }
    }
}

/// Copies between the upgraded client connection and the server connection (whose bytes
/// already read past the 101 response, `early`, go first) until both have closed or nothing
/// moved in either direction for `idle`.
async fn tunnel(client: hyper::upgrade::OnUpgrade, server: Conn, idle: Duration) {
    let Ok(client) = client.await else {
        return;
    };
    let (server, early) = server.into_parts();
    let (mut cr, mut cw) = tokio::io::split(TokioIo::new(client));
    if !early.is_empty() && cw.write_all(&early).await.is_err() {
        return;
    }
    let (mut sr, mut sw) = server.into_split();
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut sbuf = vec![0u8; 16 * 1024];
    let (mut c_eof, mut s_eof) = (false, false);
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    while !(c_eof && s_eof) {
        tokio::select! {
            r = cr.read(&mut cbuf), if !c_eof => match r {
                Ok(0) | Err(_) => { c_eof = true; let _ = sw.shutdown().await; }
                Ok(n) => {
                    if sw.write_all(&cbuf[..n]).await.is_err() { break; }
                    sleep.as_mut().reset(Instant::now() + idle);
                }
            },
            r = sr.read(&mut sbuf), if !s_eof => match r {
                Ok(0) | Err(_) => { s_eof = true; let _ = cw.shutdown().await; }
                Ok(n) => {
                    if cw.write_all(&sbuf[..n]).await.is_err() { break; }
                    sleep.as_mut().reset(Instant::now() + idle);
                }
            },
            () = &mut sleep => {
                debug!("tunnel idle for {idle:?}, closing");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::HOST, HeaderValue::from_static("maas"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::HOST));
    }

    #[test]
    fn upgrade_headers_survive_for_websockets() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, SocketAddr::from(([10, 0, 0, 5], 4000)));
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"10.0.0.5"[..])
        );
        add_forwarded(&mut h, SocketAddr::from(([10, 0, 0, 6], 4000)));
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"10.0.0.5, 10.0.0.6"[..])
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
    }
}
