//! The L7 proxy (`mode = "http"`) against loopback hyper servers on port 0.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use maas_vip_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A body of `remaining` zero bytes in 64 KiB chunks, generated as it is read; its length is
/// announced (Content-Length) when `exact`, else it goes chunked.
struct Zeros {
    remaining: u64,
    exact: bool,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(64 * 1024);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0u8; n as usize])))))
    }
    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<ServerBody>> + Send>>
        + Send
        + Sync,
>;
type ServerBody = http_body_util::Either<Full<Bytes>, Zeros>;

fn text(s: String) -> Response<ServerBody> {
    Response::new(http_body_util::Either::Left(Full::new(Bytes::from(s))))
}

/// A hyper HTTP/1.1 server on 127.0.0.1:0; counts the connections it accepted.
async fn server(handler: Handler) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::Relaxed);
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, conns)
}

/// A server answering its name and what it saw of the request.
async fn named(name: &'static str) -> SocketAddr {
    server(Arc::new(move |req: Request<Incoming>| {
        Box::pin(async move {
            let h = req.headers();
            let get = |k: &str| {
                h.get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            text(format!(
                "{name}|xff={}|proto={}|host={}|conn={}",
                get("x-forwarded-for"),
                get("x-forwarded-proto"),
                get("host"),
                get("connection")
            ))
        })
    }))
    .await
    .0
}

type Client = hyper::client::conn::http1::SendRequest<http_body_util::Either<Empty<Bytes>, Zeros>>;

async fn client(addr: SocketAddr) -> Client {
    let s = TcpStream::connect(addr).await.expect("connect to proxy");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

fn get(path: &str) -> Request<http_body_util::Either<Empty<Bytes>, Zeros>> {
    Request::builder()
        .uri(path)
        .header("host", "maas.example")
        .body(http_body_util::Either::Left(Empty::new()))
        .expect("request")
}

async fn send(
    c: &mut Client,
    req: Request<http_body_util::Either<Empty<Bytes>, Zeros>>,
) -> (StatusCode, String) {
    c.ready().await.expect("ready");
    let resp = tokio::time::timeout(Duration::from_secs(10), c.send_request(req))
        .await
        .expect("answer in time")
        .expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn http_frontend(extra: &str, servers: &[(&str, SocketAddr)]) -> TestFrontend {
    TestFrontend::start(&format!("mode = \"http\"\n{extra}"), servers).await
}

#[tokio::test]
async fn each_request_on_one_client_connection_is_balanced() {
    let servers = [
        ("r1", named("r1").await),
        ("r2", named("r2").await),
        ("r3", named("r3").await),
    ];
    let fe = http_frontend("", &servers).await;
    let mut c = client(fe.addr).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..9 {
        let (status, body) = send(&mut c, get("/MAAS/api/2.0/version/")).await;
        assert_eq!(status, StatusCode::OK);
        let name = body.split('|').next().unwrap_or("").to_string();
        *seen.entry(name).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n == 3), "{seen:?}");
    assert_eq!(fe.frontend.counters.responses[1].load(Ordering::Relaxed), 9);
}

#[tokio::test]
async fn forwarded_headers_added_and_host_kept() {
    let fe = http_frontend("", &[("r1", named("r1").await)]).await;
    let mut c = client(fe.addr).await;
    let mut req = get("/x");
    req.headers_mut()
        .insert("x-forwarded-for", "192.0.2.1".parse().expect("value"));
    req.headers_mut()
        .insert("connection", "keep-alive".parse().expect("value"));
    let (_, body) = send(&mut c, req).await;
    assert_eq!(
        body,
        "r1|xff=192.0.2.1, 127.0.0.1|proto=http|host=maas.example|conn="
    );
}

#[tokio::test]
async fn server_connections_are_reused_unless_http_server_close() {
    let (addr, conns) = server(Arc::new(|_req| Box::pin(async { text("ok".into()) }))).await;
    let fe = http_frontend("", &[("r1", addr)]).await;
    let mut c = client(fe.addr).await;
    for _ in 0..20 {
        assert_eq!(send(&mut c, get("/")).await.0, StatusCode::OK);
    }
    assert_eq!(
        conns.load(Ordering::Relaxed),
        1,
        "server connection not reused"
    );

    let (addr, conns) = server(Arc::new(|_req| Box::pin(async { text("ok".into()) }))).await;
    let fe = http_frontend("http_server_close = true", &[("r1", addr)]).await;
    let mut c = client(fe.addr).await;
    for _ in 0..5 {
        assert_eq!(send(&mut c, get("/")).await.0, StatusCode::OK);
    }
    assert_eq!(conns.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn no_server_available_is_503() {
    let fe = http_frontend("", &[("dead", refused_addr()), ("dead2", refused_addr())]).await;
    let mut c = client(fe.addr).await;
    let (status, body) = send(&mut c, get("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Health says down: 503 at once, without trying.
    fe.servers[0].set_health(healthcheck::Health::Down);
    fe.servers[1].set_health(healthcheck::Health::Down);
    let (status, _) = send(&mut c, get("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_dead_region_costs_no_error() {
    let servers = [
        ("r1", named("r1").await),
        ("dead", refused_addr()),
        ("r3", named("r3").await),
    ];
    let fe = http_frontend("", &servers).await;
    let mut c = client(fe.addr).await;
    for _ in 0..30 {
        assert_eq!(send(&mut c, get("/")).await.0, StatusCode::OK);
    }
    assert!(fe.frontend.counters.redispatches.load(Ordering::Relaxed) > 0);
    // Counted on the server the request was redispatched away from, as in tcp mode.
    assert!(fe.servers[1].counters.redispatches.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn a_server_that_never_answers_is_504() {
    let fe = http_frontend(
        "timeout_server = \"300ms\"",
        &[("silent", silent_server().await)],
    )
    .await;
    let mut c = client(fe.addr).await;
    let t = Instant::now();
    let (status, _) = send(&mut c, get("/")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(t.elapsed() >= Duration::from_millis(280));
}

/// A server that reads a request, writes `response` and holds the connection for `hold`
/// before closing it; counts the connections it accepted.
async fn canned_server(response: &'static [u8], hold: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(response).await;
                tokio::time::sleep(hold).await;
            });
        }
    });
    (addr, n)
}

#[tokio::test]
async fn a_server_that_stalls_mid_body_is_cut_after_timeout_server() {
    let (addr, _) = canned_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst bytes",
        Duration::from_secs(30),
    )
    .await;
    let fe = http_frontend("timeout_server = \"300ms\"", &[("stalling", addr)]).await;
    let mut c = client(fe.addr).await;
    c.ready().await.expect("ready");
    let t = Instant::now();
    let resp = c.send_request(get("/")).await.expect("response head");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("the proxy ends the response instead of hanging");
    assert!(body.is_err(), "a cut response is not a complete one");
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(280), "{waited:?}");
}

/// A request body of `left` 1 KiB pieces, one every `gap`, then (unless `hang`) its end; with
/// `hang`, it never ends.
struct SlowBody {
    left: u32,
    gap: Duration,
    hang: bool,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl SlowBody {
    fn new(left: u32, gap: Duration, hang: bool) -> SlowBody {
        SlowBody {
            left,
            gap,
            hang,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl Body for SlowBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 && !self.hang {
            return Poll::Ready(None);
        }
        if self.timer.as_mut().poll(cx).is_pending() || self.left == 0 {
            return Poll::Pending;
        }
        self.left -= 1;
        let next = tokio::time::Instant::now() + self.gap;
        self.timer.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 1024])))))
    }
}

/// Sends a POST whose body is `body` through `fe` on a fresh connection.
async fn slow_post(fe: SocketAddr, body: SlowBody) -> (StatusCode, String) {
    let s = TcpStream::connect(fe).await.expect("connect to proxy");
    let (mut c, conn) = hyper::client::conn::http1::handshake::<_, SlowBody>(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/MAAS/api/2.0/boot-resources/")
        .header("host", "maas")
        .body(body)
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), c.send_request(req))
        .await
        .expect("answer in time")
        .expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A server that answers the size of the request body it read.
async fn counting_server() -> SocketAddr {
    server(Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(Ok(f)) = body.frame().await {
                n += f.data_ref().map_or(0, |d| d.len() as u64);
            }
            text(format!("{n}"))
        })
    }))
    .await
    .0
}

#[tokio::test]
async fn an_upload_longer_than_timeout_server_that_keeps_moving_goes_through() {
    let fe = http_frontend(
        "timeout_server = \"300ms\"",
        &[("r1", counting_server().await)],
    )
    .await;
    // Fifteen pieces 60 ms apart: about 900 ms, three times timeout_server.
    let body = SlowBody::new(15, Duration::from_millis(60), false);
    let t = Instant::now();
    let (status, text) = slow_post(fe.addr, body).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "15360"));
    assert!(t.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn an_upload_the_client_abandons_is_408_after_timeout_client() {
    let fe = http_frontend(
        "timeout_client = \"300ms\"",
        &[("r1", counting_server().await)],
    )
    .await;
    let (status, _) = slow_post(fe.addr, SlowBody::new(2, Duration::from_millis(10), true)).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
}

/// A server that reads the request head and resets the connection.
async fn resetting_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            seen.fetch_add(1, Ordering::Relaxed);
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    (addr, n)
}

#[tokio::test]
async fn pooled_connections_the_server_closed_are_not_used() {
    // A keep-alive region that closes each connection 50 ms after its first response, as its
    // keep-alive timeout does to an idle pooled connection.
    let (addr, conns) = canned_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::from_millis(50),
    )
    .await;
    let fe = http_frontend("", &[("r1", addr)]).await;
    let mut c = client(fe.addr).await;
    for i in 0..3 {
        let mut req = get("/MAAS/rpc/");
        // Not idempotent: it must not have been sent on a connection the server had closed.
        *req.method_mut() = Method::POST;
        let (status, body) = send(&mut c, req).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "ok"),
            "request {i}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(conns.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_server_that_resets_is_502_for_post_and_retried_for_get() {
    let (rst, hits) = resetting_server().await;
    let fe = http_frontend("", &[("rst", rst), ("r2", named("r2").await)]).await;
    let mut c = client(fe.addr).await;
    // Round robin starts at `rst`. A GET went out, the server closed before answering: the GET
    // is idempotent and has no body, so it goes again to r2.
    let (status, body) = send(&mut c, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("r2"), "{body}");
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    // A POST that reached `rst` is not resent: 502, and `rst` saw it exactly once.
    let mut got_502 = false;
    for _ in 0..3 {
        let before = hits.load(Ordering::Relaxed);
        let mut post = get("/MAAS/api/2.0/machines/");
        *post.method_mut() = Method::POST;
        let (status, body) = send(&mut c, post).await;
        if hits.load(Ordering::Relaxed) > before {
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
            assert_eq!(hits.load(Ordering::Relaxed), before + 1);
            got_502 = true;
            break;
        }
        // It was r2's turn.
        assert!(body.starts_with("r2"), "{body}");
    }
    assert!(got_502);
}

#[tokio::test]
async fn a_post_is_retried_after_a_refused_connect() {
    let fe = http_frontend("", &[("dead", refused_addr()), ("r2", named("r2").await)]).await;
    let mut c = client(fe.addr).await;
    let mut post = Request::builder()
        .method(Method::POST)
        .uri("/MAAS/api/2.0/machines/")
        .body(http_body_util::Either::Right(Zeros {
            remaining: 1000,
            exact: true,
        }))
        .expect("request");
    post.headers_mut()
        .insert("host", "maas".parse().expect("value"));
    let (status, body) = send(&mut c, post).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("r2"), "{body}");
}

#[tokio::test]
async fn redirect_of_root() {
    let fe = http_frontend("redirect_root = \"/MAAS/\"", &[("r1", named("r1").await)]).await;
    let mut c = client(fe.addr).await;
    c.ready().await.expect("ready");
    let resp = c.send_request(get("/")).await.expect("response");
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        resp.headers().get("location").map(|v| v.as_bytes()),
        Some(&b"/MAAS/"[..])
    );
    let _ = resp.into_body().collect().await;
    // Other paths go through.
    let (status, body) = send(&mut c, get("/MAAS/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("r1"));
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn large_upload_and_download_stream_with_bounded_memory() {
    const SIZE: u64 = 200 * 1024 * 1024;
    let (addr, _) = server(Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            if req.method() == Method::POST {
                let mut body = req.into_body();
                let mut n = 0u64;
                while let Some(Ok(f)) = body.frame().await {
                    if let Some(d) = f.data_ref() {
                        n += d.len() as u64;
                    }
                }
                text(format!("{n}"))
            } else {
                Response::new(http_body_util::Either::Right(Zeros {
                    remaining: SIZE,
                    exact: true,
                }))
            }
        })
    }))
    .await;
    let fe = http_frontend("", &[("r1", addr)]).await;
    let before = peak_rss_kib();
    let mut c = client(fe.addr).await;
    let mut up = Request::builder()
        .method(Method::POST)
        .uri("/MAAS/api/2.0/boot-resources/")
        .body(http_body_util::Either::Right(Zeros {
            remaining: SIZE,
            exact: true,
        }))
        .expect("request");
    up.headers_mut()
        .insert("host", "maas".parse().expect("value"));
    let (status, body) = send(&mut c, up).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, SIZE.to_string());

    c.ready().await.expect("ready");
    let resp = c.send_request(get("/image")).await.expect("response");
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Some(d) = f.expect("frame").data_ref() {
            n += d.len() as u64;
        }
    }
    assert_eq!(n, SIZE);
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;
    // Client, proxy and server share this process; buffering a body whole would add 200 MiB.
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");
}

#[tokio::test]
async fn bodies_of_unknown_length_go_chunked_both_ways_on_a_reused_connection() {
    let (addr, conns) = server(Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(Ok(f)) = body.frame().await {
                n += f.data_ref().map_or(0, |d| d.len() as u64);
            }
            Response::new(http_body_util::Either::Right(Zeros {
                remaining: 2 * n + 1,
                exact: false,
            }))
        })
    }))
    .await;
    let fe = http_frontend("", &[("r1", addr)]).await;
    let mut c = client(fe.addr).await;
    for size in [150_000u64, 0, 7] {
        let mut up = Request::builder()
            .method(Method::POST)
            .uri("/MAAS/api/2.0/files/")
            .header("host", "maas")
            .body(http_body_util::Either::Right(Zeros {
                remaining: size,
                exact: false,
            }))
            .expect("request");
        up.headers_mut().remove("content-length");
        c.ready().await.expect("ready");
        let resp = c.send_request(up).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()
                .get("transfer-encoding")
                .map(|v| v.as_bytes()),
            Some(&b"chunked"[..])
        );
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body.len() as u64, 2 * size + 1);
    }
    assert_eq!(
        conns.load(Ordering::Relaxed),
        1,
        "one server connection carried all three exchanges"
    );
}

#[tokio::test]
async fn websocket_upgrade_becomes_a_tunnel_beyond_client_and_server_timeouts() {
    // A server that accepts the upgrade and echoes afterwards.
    let (addr, _) = server(Arc::new(|mut req: Request<Incoming>| {
        Box::pin(async move {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut b = [0u8; 1024];
                    while let Ok(n) = io.read(&mut b).await {
                        if n == 0 || io.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = text(String::new());
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("upgrade", "websocket".parse().expect("value"));
            r.headers_mut()
                .insert("connection", "upgrade".parse().expect("value"));
            r
        })
    }))
    .await;
    let fe = http_frontend(
        "timeout_client = \"200ms\"\ntimeout_server = \"200ms\"\ntimeout_tunnel = \"5s\"",
        &[("ws", addr)],
    )
    .await;
    let mut s = TcpStream::connect(fe.addr).await.expect("connect");
    s.write_all(b"GET /MAAS/ws HTTP/1.1\r\nHost: maas\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.expect("response head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Pings 500 ms apart: longer than client and server timeouts.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let msg = format!("ping{i}");
        s.write_all(msg.as_bytes()).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(back, msg.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_after_timeout_client() {
    // A region that streams a large body for as long as the proxy takes it; it reports when
    // the proxy lets go of its connection.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut b = [0u8; 1024];
        let _ = s.read(&mut b).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
            .await;
        let chunk = vec![0u8; 64 * 1024];
        while s.write_all(&chunk).await.is_ok() {}
        let _ = tx.send(Instant::now());
    });
    access_log::capture();
    let fe = http_frontend(
        "timeout_client = \"300ms\"\ntimeout_server = \"30s\"",
        &[("big", addr)],
    )
    .await;
    let mut c = TcpStream::connect(fe.addr).await.expect("connect");
    let me = c.local_addr().expect("local").to_string();
    c.write_all(b"GET /big HTTP/1.1\r\nHost: maas\r\n\r\n")
        .await
        .expect("send");
    // The client reads nothing from now on.
    let t = Instant::now();
    let released = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the region's connection released within 5 s")
        .expect("region task");
    println!(
        "a client that reads nothing was cut {:?} after its request",
        released - t
    );
    let lines = access_log::wait_for(&fe.log_key(&me), 1, Duration::from_secs(5)).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        access_log::field(&lines[0], "end"),
        Some("client_timeout"),
        "{}",
        lines[0]
    );
    drop(c);
}

/// Sends `GET /` on a new client connection and returns the access-log line of it, with the
/// status line the client got.
async fn logged_get(
    fe: &TestFrontend,
    before_answer: impl Future<Output = ()>,
) -> (String, String) {
    access_log::capture();
    let mut c = TcpStream::connect(fe.addr).await.expect("connect");
    let me = c.local_addr().expect("local").to_string();
    c.write_all(b"GET / HTTP/1.1\r\nHost: maas\r\n\r\n")
        .await
        .expect("send");
    before_answer.await;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let status = String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    let lines = access_log::wait_for(&fe.log_key(&me), 1, Duration::from_secs(5)).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    (status, lines[0].clone())
}

/// The client got a 502, and its access-log `line` says so, with `end` and `retries`.
fn assert_logged_502(status: &str, line: &str, end: &str, retries: u32) {
    assert!(status.starts_with("HTTP/1.1 502"), "{status}");
    assert_eq!(access_log::field(line, "status"), Some("502"), "{line}");
    assert_eq!(access_log::field(line, "end"), Some(end), "{line}");
    let logged = retries.to_string();
    assert_eq!(
        access_log::field(line, "retries"),
        Some(&logged[..]),
        "{line}"
    );
}

#[tokio::test]
async fn a_502_for_a_server_gone_down_logs_the_retries_made() {
    let fe = http_frontend(
        "balance = \"first\"\non_down = \"shutdown_sessions\"",
        &[("dead", refused_addr()), ("silent", silent_server().await)],
    )
    .await;
    // The refused connect to `dead` is one retry; the request then waits on `silent`, which
    // goes down.
    let silent = fe.servers[1].clone();
    let (status, line) = logged_get(&fe, async move {
        let t = Instant::now();
        while silent.counters.total.load(Ordering::Relaxed) == 0 {
            assert!(t.elapsed() < Duration::from_secs(5), "never sent to silent");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        silent.set_health(healthcheck::Health::Down);
    })
    .await;
    assert_logged_502(&status, &line, "server_down", 1);
}

#[tokio::test]
async fn a_502_after_too_many_stale_pooled_connections_logs_why_and_the_retries_made() {
    // A region that answers the first request on each connection once `POOLED` connections
    // are open, and closes each connection when the next request comes on it: to the proxy,
    // every one of them is a pooled connection its server had closed.
    const POOLED: usize = 12;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let all_open = Arc::new(tokio::sync::Barrier::new(POOLED));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let all_open = all_open.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 1024];
                if !matches!(s.read(&mut b).await, Ok(n) if n > 0) {
                    return;
                }
                all_open.wait().await;
                let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if s.write_all(ok).await.is_err() {
                    return;
                }
                let _ = s.read(&mut b).await;
            });
        }
    });
    let fe = http_frontend(
        "balance = \"first\"",
        &[("dead", refused_addr()), ("closing", addr)],
    )
    .await;
    // Fill the pool: `POOLED` requests at once, each on its own server connection.
    fe.servers[0].set_health(healthcheck::Health::Down);
    let mut warm = tokio::task::JoinSet::new();
    for _ in 0..POOLED {
        let to = fe.addr;
        warm.spawn(async move {
            let mut c = client(to).await;
            send(&mut c, get("/")).await
        });
    }
    while let Some(r) = warm.join_next().await {
        let (status, body) = r.expect("warm-up request");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    // The last connections may still be on their way back into the pool.
    let pool = fe.frontend.snapshot().idle_conns[1].clone();
    let t = Instant::now();
    while pool.idle() < POOLED {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{} pooled",
            pool.idle()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One retry after the refused connect to `dead`, then one stale pooled connection after
    // another until the proxy gives up.
    fe.servers[0].set_health(healthcheck::Health::Up);
    let (status, line) = logged_get(&fe, async {}).await;
    assert_logged_502(&status, &line, "server_error", 1);
}
