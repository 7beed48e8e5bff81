//! The admin HTTP endpoint (`[admin] bind`, default 127.0.0.1:5249).
//!
//! A thin hyper wrapper: every answer is built by the `healthcheck` crate (where it is
//! unit-tested); this module only routes. To add an endpoint (`/metrics`, `POST
//! /servers/{frontend}/{server}/drain`, ...), add a line to [`ROUTES`]: `{name}` segments are
//! captured in order into the handler's `params`. A path that matches no route answers 404; one
//! that matches only with another method answers 405 with an `Allow` header.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use healthcheck::Registry;

/// Most admin connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request head by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;
type Handler = fn(&Registry, &[&str]) -> Response<Body>;

/// Method, path pattern (`{name}` matches one segment), handler.
const ROUTES: &[(Method, &str, Handler)] = &[
    (Method::GET, "/status", status),
    (Method::HEAD, "/status", status),
];

/// Serve the admin endpoint on `listener` until `shutdown` turns true (or its sender is
/// dropped); requests in flight then finish. Accept errors (too many open files, ...) are
/// logged and retried after a pause: the endpoint never takes the daemon down.
pub(crate) async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return Ok(()); // never closed
        };
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
        let registry = Arc::clone(&registry);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| {
                let r = handle(&registry, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let res = tokio::select! {
                r = conn.as_mut() => r,
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

/// Resolves when `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|v| *v).await;
}

/// Route one request.
fn handle(registry: &Registry, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let mut allowed: Vec<&str> = Vec::new();
    for (method, pattern, handler) in ROUTES {
        let Some(params) = match_path(pattern, path) else {
            continue;
        };
        if method == req.method() {
            return handler(registry, &params);
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

fn status(registry: &Registry, _: &[&str]) -> Response<Body> {
    json(StatusCode::OK, registry.status_json())
}

fn json(code: StatusCode, body: String) -> Response<Body> {
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
    json(code, serde_json::json!({ "error": msg }).to_string())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use healthcheck::{CheckConfig, Frontend, Health, Server, ServerState};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

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
        let a: SocketAddr = "10.0.0.11:5240".parse().expect("literal");
        let st = Arc::new(ServerState::new("r1", a, false));
        st.set_health(Health::Down);
        let reg = Arc::new(Registry::new(vec![Frontend::new(
            "maas",
            CheckConfig::default(),
            vec![Server::new(st, true)],
        )]));
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("bound");
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(l, reg, rx));

        let r = request(
            addr,
            "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("content-type: application/json"), "{r}");
        let body = r.split("\r\n\r\n").nth(1).expect("a body");
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
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
            "POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
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
}
