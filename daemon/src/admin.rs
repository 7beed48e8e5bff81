//! The admin HTTP endpoint (`[admin] bind`, default 127.0.0.1:5249): `GET /status` (JSON),
//! `GET /metrics` (OpenMetrics text for Prometheus), `POST /servers/{frontend}/{server}/
//! {drain,disable,enable}` and `POST /announce/{name}/{withdraw,announce}`.
//!
//! A thin hyper wrapper: `/status` is a [`crate::status::Status`], whose frontends the
//! `healthcheck` crate builds (where they are unit-tested) and whose proxy counters, VRRP
//! instances and announce blocks are added here; `/metrics` by [`metrics`]. To add an
//! endpoint, add a line to [`ROUTES`]: `{name}` segments are captured in order (percent-decoded)
//! into the handler's `params`. A path that matches no route answers 404; one that matches only
//! with another method answers 405 with an `Allow` header. With a token configured, every
//! request needs `Authorization: Bearer <token>` first, else 401: nothing, not even which paths
//! exist, is shown without it.

mod metrics;
#[cfg(test)]
mod test_fixtures;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{debug, info, warn};

use healthcheck::{Admin, Registry};

use crate::announce::AnnounceBoard;
use crate::status::{FrontendStatus, ProxyCounters, Status, VrrpStatus};

/// Most admin connections served at once. One more is accepted by closing the oldest that
/// has not sent its request head yet; while every one is busy answering, it waits.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request head by then is dropped (a local tool or a scraper
/// sends it at once).
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the daemon shows and the endpoint acts on: the registry (which swaps its own
/// frontends on reload), the proxy frontends (swapped by the daemon on reload), and the boards
/// the VRRP instances and `[[announce]]` blocks publish on. Shared by the admin endpoint and
/// the daemon's [`crate::Handle`].
pub(crate) struct Views {
    /// Servers: state, counters, health checks.
    pub(crate) registry: Arc<Registry>,
    /// Proxy frontends: connection and HTTP counters.
    pub(crate) frontends: ArcSwap<Vec<Arc<lb::Frontend>>>,
    /// Where the VRRP instances publish their status.
    pub(crate) vrrp: vrrp::StatusBoard,
    /// The `[[announce]]` blocks: their status, and their admin actions.
    pub(crate) announce: AnnounceBoard,
}

impl Views {
    /// `GET /status`: the registry's view of frontends and servers (in config order, fields
    /// in a fixed order), each frontend with the proxy's counters added, and the VRRP
    /// instances and `[[announce]]` blocks.
    pub(crate) fn status(&self) -> Status {
        let proxies = self.frontends.load();
        Status {
            frontends: self
                .registry
                .status()
                .into_iter()
                .map(|health| FrontendStatus {
                    counters: proxies
                        .iter()
                        .find(|p| *p.name == *health.name)
                        .map(|p| ProxyCounters::from(&p.counters)),
                    health,
                })
                .collect(),
            vrrp: self.vrrp.instances().iter().map(VrrpStatus::from).collect(),
            announce: self.announce.status(),
        }
    }
}

/// What the endpoint reads and acts on, and its token.
pub(crate) struct AdminContext {
    /// What it shows.
    pub(crate) views: Arc<Views>,
    /// `[admin] token`: required as `Authorization: Bearer <token>` when set.
    pub(crate) token: Option<String>,
}

type Body = Full<Bytes>;
type Handler = fn(&Call<'_>) -> Response<Body>;

/// One routed request as a handler sees it.
struct Call<'a> {
    ctx: &'a AdminContext,
    /// The `{name}` segments of the route, in order, percent-decoded.
    params: Vec<Cow<'a, str>>,
    /// Who asked (logged with actions).
    peer: SocketAddr,
}

/// Method, path pattern (`{name}` matches one segment), handler.
const ROUTES: &[(Method, &str, Handler)] = &[
    (Method::GET, "/status", status),
    (Method::HEAD, "/status", status),
    (Method::GET, "/metrics", metrics),
    (Method::HEAD, "/metrics", metrics),
    (Method::POST, "/servers/{frontend}/{server}/drain", drain),
    (
        Method::POST,
        "/servers/{frontend}/{server}/disable",
        disable,
    ),
    (Method::POST, "/servers/{frontend}/{server}/enable", enable),
    (Method::POST, "/announce/{name}/withdraw", announce_withdraw),
    (Method::POST, "/announce/{name}/announce", announce_release),
];

/// Serve the admin endpoint on `listener` until `shutdown` turns true (or its sender is
/// dropped); requests in flight then finish. Accept errors (too many open files, ...) are
/// logged and retried after a pause: the endpoint never takes the daemon down.
///
/// Each connection carries one request (`Connection: close`). Connections that have sent
/// nothing cannot hold the endpoint: with every slot taken, a new connection closes the
/// oldest one still waiting for its request head, so an authorised request is served at once
/// whatever number of idle connections any local user opens.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<AdminContext>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Every connection being served, oldest first.
    let mut slots: Vec<Arc<Slot>> = Vec::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(cause = %e, "admin endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        slots.retain(|s| Arc::strong_count(s) > 1);
        if permits.available_permits() == 0 {
            if let Some(oldest) = slots.iter().find(|s| s.evict()) {
                debug!(peer = %oldest.peer, "admin endpoint full: closing the oldest idle connection");
            }
        }
        let permit = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return Ok(()),
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()), // never closed
            },
        };
        let local = stream.local_addr().unwrap_or(peer);
        let slot = Arc::new(Slot::new(peer));
        slots.push(Arc::clone(&slot));
        let ctx = Arc::clone(&ctx);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = {
                let slot = Arc::clone(&slot);
                service_fn(move |req| {
                    let r = if slot.start() {
                        handle(&ctx, &req, peer, local)
                    } else {
                        error(StatusCode::SERVICE_UNAVAILABLE, "closed to make room")
                    };
                    async move { Ok::<_, Infallible>(r) }
                })
            };
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let res = tokio::select! {
                r = conn.as_mut() => r,
                () = slot.evicted.notified() => return,
                () = stopped(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = res {
                debug!(%peer, cause = %e, "admin connection ended with an error");
            }
        });
    }
}

/// One admin connection, as the accept loop sees it.
struct Slot {
    peer: SocketAddr,
    /// [`Slot::WAITING`] for its request head, [`Slot::BUSY`] with it, or [`Slot::EVICTED`].
    state: AtomicU8,
    /// Told when the connection is to close to make room.
    evicted: Notify,
}

impl Slot {
    const WAITING: u8 = 0;
    const BUSY: u8 = 1;
    const EVICTED: u8 = 2;

    fn new(peer: SocketAddr) -> Slot {
        Slot {
            peer,
            state: AtomicU8::new(Slot::WAITING),
            evicted: Notify::new(),
        }
    }

    /// Marks the request head as received; false if the connection was closed to make room
    /// meanwhile.
    fn start(&self) -> bool {
        self.state
            .compare_exchange(
                Slot::WAITING,
                Slot::BUSY,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Closes the connection if it is still waiting for its request head; says whether it was.
    fn evict(&self) -> bool {
        let evicted = self
            .state
            .compare_exchange(
                Slot::WAITING,
                Slot::EVICTED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if evicted {
            self.evicted.notify_one();
        }
        evicted
    }
}

/// Resolves when `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|v| *v).await;
}

/// Authorize, then route one request that reached the endpoint at `local`. Request bodies are
/// never read (no endpoint takes one).
fn handle<B>(
    ctx: &AdminContext,
    req: &Request<B>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Response<Body> {
    if let Some(token) = &ctx.token {
        if !authorized(req.headers(), token) {
            if req.headers().contains_key(header::AUTHORIZATION) {
                warn!(%peer, method = %req.method(), path = req.uri().path(),
                    "admin request with a wrong token refused");
            } else {
                debug!(%peer, method = %req.method(), path = req.uri().path(),
                    "admin request without a token refused");
            }
            let mut r = error(StatusCode::UNAUTHORIZED, "a bearer token is required");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    } else if !matches!(*req.method(), Method::GET | Method::HEAD)
        && !same_site(req.headers(), local)
    {
        // Without a token, anything on this host may act: a browser too, on behalf of any
        // page it shows (a cross-site POST, or DNS rebinding a name to 127.0.0.1). Browsers
        // send the name they connected to as Host and the page's origin as Origin.
        warn!(%peer, method = %req.method(), path = req.uri().path(),
            host = ?req.headers().get(header::HOST), origin = ?req.headers().get(header::ORIGIN),
            "admin request from another site refused");
        return error(
            StatusCode::FORBIDDEN,
            "without a token, actions need Host (and Origin, if sent) to name this endpoint",
        );
    }
    let path = req.uri().path();
    let mut allowed: Vec<&str> = Vec::new();
    for (method, pattern, handler) in ROUTES {
        let Some(params) = match_path(pattern, path) else {
            continue;
        };
        if method == req.method() {
            let params = params.into_iter().map(percent_decode).collect();
            return handler(&Call { ctx, params, peer });
        }
        allowed.push(method.as_str());
    }
    if allowed.is_empty() {
        return error(StatusCode::NOT_FOUND, "no such endpoint");
    }
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

/// `Authorization: Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1), compared in
/// constant time so that timing does not reveal how much of a guess was right.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let Some((scheme, presented)) = v.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(presented.trim().as_bytes().ct_eq(token.as_bytes()))
}

/// Whether a request names the endpoint it reached at `local` (the open mode's defence against
/// browsers): Host is `local`'s address, or `localhost` when that is a loopback address, with
/// `local`'s port; an Origin, if sent, is `http://` and the same.
fn same_site(headers: &HeaderMap, local: SocketAddr) -> bool {
    let names_local = |authority: &str| {
        let Ok(a) = authority.parse::<http::uri::Authority>() else {
            return false;
        };
        let host = a.host();
        let host_ok = (host.eq_ignore_ascii_case("localhost") && local.ip().is_loopback())
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip == local.ip());
        host_ok && a.port_u16().unwrap_or(80) == local.port()
    };
    let host_ok = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(names_local);
    let origin_ok = match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(origin)) => origin.strip_prefix("http://").is_some_and(names_local),
        Some(Err(_)) => false,
    };
    host_ok && origin_ok
}

/// `pattern` like `/servers/{frontend}/{server}/drain` against a request path: the captured
/// segments in order, or `None`.
fn match_path<'a>(pattern: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let mut pat = pattern.split('/');
    let mut got = path.split('/');
    let mut params = Vec::new();
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(g)) if p.starts_with('{') && p.ends_with('}') && !g.is_empty() => {
                params.push(g)
            }
            (Some(p), Some(g)) if p == g => {}
            _ => return None,
        }
    }
}

/// `%XX` escapes decoded, so that names with spaces or other characters can be addressed; a
/// segment that does not decode to UTF-8 is kept as it came (and will name nothing).
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                // Two hex digits: at most 0xff.
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_or(Cow::Borrowed(s), Cow::Owned)
}

fn status(c: &Call<'_>) -> Response<Body> {
    let body = serde_json::to_string_pretty(&c.ctx.views.status())
        .unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string());
    json_response(StatusCode::OK, body)
}

fn metrics(c: &Call<'_>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(metrics::render(c.ctx))));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn drain(c: &Call<'_>) -> Response<Body> {
    set_admin(c, "drain", Admin::Drain)
}

fn disable(c: &Call<'_>) -> Response<Body> {
    set_admin(c, "disable", Admin::Maint)
}

fn enable(c: &Call<'_>) -> Response<Body> {
    set_admin(c, "enable", Admin::Ready)
}

fn announce_withdraw(c: &Call<'_>) -> Response<Body> {
    announce_action(c, "withdraw", true)
}

fn announce_release(c: &Call<'_>) -> Response<Body> {
    announce_action(c, "announce", false)
}

/// Hold the `[[announce]]` block named by the route withdrawn, or release it (it is announced
/// again once every other condition holds for `announce_delay`).
fn announce_action(c: &Call<'_>, action: &'static str, withdrawn: bool) -> Response<Body> {
    let [name] = c.params.as_slice() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "route without a name");
    };
    if !c.ctx.views.announce.set_admin_withdrawn(name, withdrawn) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no announce block `{name}`"),
        );
    }
    info!(peer = %c.peer, announce = %name, action, "admin action");
    json_response(
        StatusCode::OK,
        json!({ "announce": name, "action": action, "held_withdrawn": withdrawn }).to_string(),
    )
}

/// Set the admin state of the server named by the route; answer with its new state.
fn set_admin(c: &Call<'_>, action: &'static str, to: Admin) -> Response<Body> {
    let [frontend, server] = c.params.as_slice() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "route without names");
    };
    let Some(st) = c.ctx.views.registry.server(frontend, server) else {
        let msg = if c.ctx.views.registry.frontend(frontend).is_none() {
            format!("no frontend `{frontend}`")
        } else {
            format!("no server `{server}` in frontend `{frontend}`")
        };
        return error(StatusCode::NOT_FOUND, &msg);
    };
    let before = st.admin();
    st.set_admin(to);
    let state = healthcheck::status::server_state(&st);
    info!(peer = %c.peer, frontend = %frontend, server = %server, action,
        from = admin_name(before), state, "admin action");
    let answer = ActionAnswer {
        frontend,
        server,
        action,
        state,
        admin: admin_name(to),
        previous_admin: admin_name(before),
        current: st.counters.current.load(Ordering::Relaxed),
    };
    let body = serde_json::to_string(&answer)
        .unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string());
    json_response(StatusCode::OK, body)
}

/// The answer to a server action.
#[derive(Debug, Serialize)]
struct ActionAnswer<'a> {
    frontend: &'a str,
    server: &'a str,
    /// "drain", "disable" or "enable".
    action: &'static str,
    /// As `/status` shows it: "up", "down", "drain" or "maint".
    state: &'static str,
    /// "ready", "drain" or "maint".
    admin: &'static str,
    previous_admin: &'static str,
    /// Connections (L4) or requests (L7) still in flight to the server (those a drain waits
    /// for).
    current: u64,
}

fn admin_name(a: Admin) -> &'static str {
    match a {
        Admin::Ready => "ready",
        Admin::Drain => "drain",
        Admin::Maint => "maint",
    }
}

fn json_response(code: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(code: StatusCode, msg: &str) -> Response<Body> {
    json_response(code, json!({ "error": msg }).to_string())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use healthcheck::{Health, ServerState};
    use http_body_util::BodyExt as _;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::metrics::tests::{parse, value};
    use super::test_fixtures::{one_frontend, OneFrontend};
    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().expect("literal")
    }

    /// A context with frontend `maas` (servers `r1`, `maas api 2`) in the registry and the proxy.
    fn context(token: Option<&str>) -> (AdminContext, Vec<Arc<ServerState>>) {
        let OneFrontend {
            states,
            checked,
            proxy,
        } = one_frontend("maas api 2");
        let registry = Arc::new(Registry::new(vec![checked]));
        let ctx = AdminContext {
            views: Arc::new(Views {
                registry,
                frontends: ArcSwap::from_pointee(vec![proxy]),
                vrrp: vrrp::StatusBoard::new(),
                announce: AnnounceBoard::default(),
            }),
            token: token.map(String::from),
        };
        (ctx, states)
    }

    fn call(ctx: &AdminContext, method: Method, path: &str, auth: Option<&str>) -> Response<Body> {
        let local: SocketAddr = "127.0.0.1:5249".parse().expect("literal");
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, local.to_string());
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        handle(ctx, &req.body(()).expect("request"), peer(), local)
    }

    async fn body(r: Response<Body>) -> String {
        let b = r.into_body().collect().await.expect("full body").to_bytes();
        String::from_utf8(b.to_vec()).expect("UTF-8 body")
    }

    async fn json_body(r: Response<Body>) -> Value {
        serde_json::from_str(&body(r).await).expect("JSON body")
    }

    #[tokio::test]
    async fn token_required_when_set() {
        let (ctx, _) = context(Some(TOKEN));
        let good = format!("Bearer {TOKEN}");
        let lower = format!("bearer {TOKEN}");
        for (path, auth) in [
            ("/status", None),
            ("/status", Some("Bearer")),
            ("/status", Some("Bearer wrong-token-of-some-length")),
            ("/status", Some(&format!("Bearer {TOKEN}x")[..])),
            ("/status", Some(&format!("Basic {TOKEN}")[..])),
            ("/metrics", None),
            ("/nope", None),
            ("/servers/maas/r1/drain", None),
        ] {
            let method = if path.starts_with("/servers") {
                Method::POST
            } else {
                Method::GET
            };
            let r = call(&ctx, method, path, auth);
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} {auth:?}");
            assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        }
        let r = call(&ctx, Method::GET, "/status", Some(&good));
        assert_eq!(r.status(), StatusCode::OK);
        let r = call(&ctx, Method::GET, "/metrics", Some(&lower));
        assert_eq!(r.status(), StatusCode::OK, "the scheme is case-insensitive");
        let r = call(&ctx, Method::GET, "/nope", Some(&good));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        let (open, _) = context(None);
        let r = call(&open, Method::GET, "/status", None);
        assert_eq!(r.status(), StatusCode::OK, "no token configured: open");
    }

    #[tokio::test]
    async fn announce_actions_name_a_running_block() {
        let (ctx, _) = context(None);
        for action in ["withdraw", "announce"] {
            let path = format!("/announce/nonesuch/{action}");
            let r = call(&ctx, Method::POST, &path, None);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(body(r).await.contains("no announce block `nonesuch`"));
            let r = call(&ctx, Method::GET, &path, None);
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        }
    }

    #[tokio::test]
    async fn actions_change_the_admin_state() {
        let (ctx, states) = context(None);
        let r1 = &states[0];

        let r = call(&ctx, Method::POST, "/servers/maas/r1/drain", None);
        assert_eq!(r.status(), StatusCode::OK);
        let v = json_body(r).await;
        assert_eq!(v["state"], "drain");
        assert_eq!(v["admin"], "drain");
        assert_eq!(v["previous_admin"], "ready");
        assert_eq!(v["frontend"], "maas");
        assert_eq!(v["server"], "r1");
        assert_eq!(r1.admin(), Admin::Drain);
        assert!(
            !r1.is_available(),
            "a drained server takes no new connections"
        );

        let v = json_body(call(&ctx, Method::POST, "/servers/maas/r1/disable", None)).await;
        assert_eq!(v["state"], "maint");
        assert_eq!(r1.admin(), Admin::Maint);

        let v = json_body(call(&ctx, Method::POST, "/servers/maas/r1/enable", None)).await;
        assert_eq!(v["state"], "up");
        assert_eq!(r1.admin(), Admin::Ready);
        assert!(r1.is_available());

        // Enabled but failing its checks: shown down.
        r1.set_health(Health::Down);
        let v = json_body(call(&ctx, Method::POST, "/servers/maas/r1/enable", None)).await;
        assert_eq!(v["state"], "down");

        // Percent-encoded names.
        let v = json_body(call(
            &ctx,
            Method::POST,
            "/servers/maas/maas%20api%202/drain",
            None,
        ))
        .await;
        assert_eq!(v["server"], "maas api 2");
        assert_eq!(states[1].admin(), Admin::Drain);

        // The state shows in /status.
        let v = json_body(call(&ctx, Method::GET, "/status", None)).await;
        assert_eq!(v["frontends"][0]["servers"][1]["state"], "drain");

        for path in [
            "/servers/nope/r1/drain",
            "/servers/maas/nope/drain",
            "/servers/maas/r1/nope",
            "/servers/maas/r1",
        ] {
            let r = call(&ctx, Method::POST, path, None);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            let v = json_body(r).await;
            assert!(v["error"].is_string(), "{path}: {v}");
        }
        let v = json_body(call(&ctx, Method::POST, "/servers/nope/r1/drain", None)).await;
        assert_eq!(v["error"], "no frontend `nope`");
        let v = json_body(call(&ctx, Method::POST, "/servers/maas/nope/drain", None)).await;
        assert_eq!(v["error"], "no server `nope` in frontend `maas`");

        for action in ["drain", "disable", "enable"] {
            let path = format!("/servers/maas/r1/{action}");
            let r = call(&ctx, Method::GET, &path, None);
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_eq!(r.headers()[header::ALLOW], "POST");
        }
        assert_eq!(r1.admin(), Admin::Ready, "a GET changes nothing");
    }

    #[tokio::test]
    async fn status_has_proxy_counters_and_vrrp() {
        let (ctx, _) = context(None);
        let fe = Arc::clone(&ctx.views.frontends.load()[0]);
        fe.counters.total.fetch_add(3, Ordering::Relaxed);
        fe.counters.count_status(502);
        let v = json_body(call(&ctx, Method::GET, "/status", None)).await;
        let c = &v["frontends"][0]["counters"];
        assert_eq!(c["total"], 3);
        assert_eq!(c["current"], 0);
        assert_eq!(c["responses"]["5xx"], 1);
        assert!(v["vrrp"].is_array(), "{v}");
        // A reload swaps the proxy frontends: a frontend the proxy no longer has shows no
        // proxy counters.
        ctx.views.frontends.store(Arc::new(Vec::new()));
        let v = json_body(call(&ctx, Method::GET, "/status", None)).await;
        assert!(v["frontends"][0].get("counters").is_none(), "{v}");
    }

    #[tokio::test]
    async fn the_status_document_reads_back_as_a_status() {
        let (ctx, states) = context(None);
        states[0].set_health(Health::Down);
        states[1].counters.total.fetch_add(5, Ordering::Relaxed);
        ctx.views.frontends.load()[0]
            .counters
            .total
            .fetch_add(5, Ordering::Relaxed);
        let text = body(call(&ctx, Method::GET, "/status", None)).await;
        let st: Status = serde_json::from_str(&text).expect("a Status");
        assert_eq!(st.frontends[0].health.servers[0].state, "down");
        assert_eq!(st.frontends[0].health.servers[1].counters.total, 5);
        assert_eq!(st.frontends[0].counters.as_ref().map(|c| c.total), Some(5));
        assert_eq!(
            serde_json::to_string_pretty(&st).expect("serializes"),
            text,
            "nothing lost or reordered on the way back"
        );
    }

    #[tokio::test]
    async fn metrics_endpoint() {
        let (ctx, states) = context(None);
        states[0].counters.total.fetch_add(11, Ordering::Relaxed);
        let r = call(&ctx, Method::GET, "/metrics", None);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let samples = parse(&body(r).await);
        let r1 = [("frontend", "maas"), ("server", "r1")];
        assert_eq!(
            value(&samples, "maas_vip_server_connections_total", &r1),
            11.0
        );
        assert_eq!(
            value(
                &samples,
                "maas_vip_frontend_connections_total",
                &[("frontend", "maas")]
            ),
            0.0
        );
        let r = call(&ctx, Method::POST, "/metrics", None);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("r1"), "r1");
        assert_eq!(percent_decode("maas%20api%2d1"), "maas api-1");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "%ff", "not UTF-8: kept");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
    }

    #[test]
    fn patterns() {
        assert_eq!(match_path("/status", "/status"), Some(vec![]));
        assert_eq!(match_path("/status", "/status/"), None);
        assert_eq!(match_path("/status", "/"), None);
        assert_eq!(
            match_path("/servers/{f}/{s}/drain", "/servers/maas/r1/drain"),
            Some(vec!["maas", "r1"])
        );
        assert_eq!(
            match_path("/servers/{f}/{s}/drain", "/servers/maas//drain"),
            None
        );
        assert_eq!(
            match_path("/servers/{f}/{s}/drain", "/servers/maas/r1"),
            None
        );
    }

    async fn request(addr: SocketAddr, head: &str) -> String {
        let mut c = TcpStream::connect(addr)
            .await
            .expect("admin endpoint listens");
        c.write_all(head.as_bytes()).await.expect("send");
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut out))
            .await
            .expect("answer within 5s")
            .expect("read");
        out
    }

    #[tokio::test]
    async fn status_404_405_and_shutdown() {
        let (ctx, states) = context(None);
        states[0].set_health(Health::Down);
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("bound");
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(l, Arc::new(ctx), rx));

        let r = request(
            addr,
            "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("content-type: application/json"), "{r}");
        let body = r.split("\r\n\r\n").nth(1).expect("a body");
        let v: Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(v["frontends"][0]["servers"][0]["state"], "down");

        let r = request(
            addr,
            "GET /status?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n"),
            "a query is ignored: {r}"
        );
        let r = request(
            addr,
            "HEAD /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "HEAD has no body: {r}");

        let r = request(
            addr,
            "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let r = request(
            addr,
            &format!(
                "POST /status HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("allow: GET, HEAD"), "{r}");

        tx.send(true).expect("serve listens");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops on shutdown")
            .expect("no panic")
            .expect("no error");
    }

    #[tokio::test]
    async fn serve_over_tcp_with_token() {
        let (ctx, states) = context(Some(TOKEN));
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("bound");
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(l, Arc::new(ctx), rx));

        let r = request(
            addr,
            "POST /servers/maas/r1/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{r}");
        assert!(r.contains("www-authenticate: Bearer\r\n"), "{r}");
        assert_eq!(states[0].admin(), Admin::Ready);

        let r = request(
            addr,
            &format!(
                "POST /servers/maas/r1/drain HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert_eq!(states[0].admin(), Admin::Drain);

        let r = request(
            addr,
            &format!(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let text = r.split("\r\n\r\n").nth(1).expect("a body");
        let samples = parse(text);
        let drain = [("frontend", "maas"), ("server", "r1"), ("state", "drain")];
        assert_eq!(value(&samples, "maas_vip_server_state", &drain), 1.0);

        tx.send(true).expect("serve listens");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops on shutdown")
            .expect("no panic")
            .expect("no error");
    }

    /// Starts [`serve`] on loopback port 0 with `ctx`; returns the address, the stop sender and
    /// the task.
    async fn start(
        ctx: AdminContext,
    ) -> (
        SocketAddr,
        watch::Sender<bool>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("bound");
        let (tx, rx) = watch::channel(false);
        (addr, tx, tokio::spawn(serve(l, Arc::new(ctx), rx)))
    }

    #[tokio::test]
    async fn idle_connections_do_not_hold_off_an_authorised_request() {
        for token in [Some(TOKEN), None] {
            let (ctx, _) = context(token);
            let (addr, _tx, _task) = start(ctx).await;
            // More idle connections than the endpoint serves at once, none sending a byte.
            let mut idle = Vec::new();
            for _ in 0..70 {
                idle.push(TcpStream::connect(addr).await.expect("connect"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let t = std::time::Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(1),
                request(
                    addr,
                    &format!(
                        "GET /status HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
                    ),
                ),
            )
            .await
            .expect("answered within 1 s despite 70 idle connections");
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            println!("token {}: answered in {:?}", token.is_some(), t.elapsed());
        }
    }

    #[tokio::test]
    async fn open_mode_refuses_cross_site_state_changes() {
        let (ctx, states) = context(None);
        let (addr, _tx, _task) = start(ctx).await;
        let port = addr.port();
        let post = |host: &str, origin: Option<&str>| {
            let origin = origin
                .map(|o| format!("Origin: {o}\r\n"))
                .unwrap_or_default();
            format!(
                "POST /servers/maas/r1/drain HTTP/1.1\r\nHost: {host}\r\n{origin}\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
        };
        for (host, origin) in [
            (format!("evil.example:{port}"), Some("http://evil.example")),
            (format!("evil.example:{port}"), None),
            ("x".to_string(), None),
            (format!("127.0.0.1:{}", port + 1), None),
            (format!("127.0.0.1:{port}"), Some("http://evil.example")),
            (format!("127.0.0.1:{port}"), Some("null")),
            (format!("localhost:{port}"), Some("http://localhost")),
        ] {
            let r = request(addr, &post(&host, origin)).await;
            assert!(
                r.starts_with("HTTP/1.1 403 Forbidden\r\n"),
                "Host {host}, Origin {origin:?}: {r}"
            );
            assert_eq!(
                states[0].admin(),
                Admin::Ready,
                "Host {host}, Origin {origin:?}"
            );
        }
        // Reads stay open; the endpoint's own address, by number or as localhost, acts.
        let r = request(
            addr,
            "GET /status HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let r = request(addr, &post(&format!("127.0.0.1:{port}"), None)).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert_eq!(states[0].admin(), Admin::Drain);
        let local = format!("http://localhost:{port}");
        let r = request(addr, &post(&format!("localhost:{port}"), Some(&local))).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    }
}
