//! Health checks and the L7 proxy together: with `interval = "500ms"`, `rise = 2`,
//! `fall = 2`, a region killed under keep-alive load (its listener and every connection gone
//! at once) is marked down within 1.5 s and clients see no failed request at all: refused
//! connects are redispatched, and GETs that reached the dying region unanswered are resent.
//! Brought back, it is up within 1.5 s and gets a third of new requests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use healthcheck::{CheckConfig, CheckKind, CheckedFrontend, Health, Registry, Server};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use maas_vip_tests::{health_within, TestFrontend};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A keep-alive HTTP region answering its name; `kill` drops its listener and connections.
struct Region {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Region {
    async fn start(name: &'static str, addr: SocketAddr) -> Region {
        let l = TcpListener::bind(addr).await.expect("bind loopback");
        let addr = l.local_addr().expect("bound");
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the task drops them all, as a crash would.
            let mut conns = JoinSet::new();
            while let Ok((s, _)) = l.accept().await {
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<_>| async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            name.as_bytes(),
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Region { addr, task }
    }

    async fn kill(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

type Client = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn client(addr: SocketAddr) -> Client {
    let s = TcpStream::connect(addr).await.expect("connect to proxy");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn get(c: &mut Client) -> Option<Bytes> {
    c.ready().await.ok()?;
    let req = Request::builder()
        .uri("/MAAS/api/2.0/version/")
        .header("host", "maas")
        .body(Empty::new())
        .ok()?;
    let resp = c.send_request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Some(resp.into_body().collect().await.ok()?.to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_region_costs_keep_alive_http_clients_nothing() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let r1 = Region::start("r1", any).await;
    let r2 = Region::start("r2", any).await;
    let r3 = Region::start("r3", any).await;
    let fe = TestFrontend::start(
        "mode = \"http\"",
        &[("r1", r1.addr), ("r2", r2.addr), ("r3", r3.addr)],
    )
    .await;
    let check = CheckConfig {
        kind: CheckKind::Http,
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 2,
        ..CheckConfig::default()
    };
    let servers = fe
        .servers
        .iter()
        .map(|s| Server::new(Arc::clone(s), true))
        .collect();
    let registry = Registry::new(vec![CheckedFrontend::new("test", check, servers)]);
    let (_stop, rx) = watch::channel(false);
    let _checks = healthcheck::spawn(&registry, rx);

    // Load: four keep-alive clients, each on one connection to the proxy.
    let running = Arc::new(AtomicBool::new(true));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(0u64));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (running, ok, failures, addr) =
            (running.clone(), ok.clone(), failures.clone(), fe.addr);
        load.push(tokio::spawn(async move {
            let mut c = client(addr).await;
            while running.load(Ordering::Relaxed) {
                match get(&mut c).await {
                    Some(b) if b.starts_with(b"r") => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        *failures.lock().expect("not poisoned") += 1;
                        c = client(addr).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let s2 = Arc::clone(&fe.servers[1]);
    let addr = r2.kill().await;
    let took = health_within(&s2, Health::Down, Duration::from_millis(1500)).await;
    eprintln!("r2 down {took:?} after kill");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r2 = Region::start("r2", addr).await;
    let took = health_within(&s2, Health::Up, Duration::from_millis(1500)).await;
    eprintln!("r2 up {took:?} after restart");

    running.store(false, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    let ok = ok.load(Ordering::Relaxed);
    let failures = *failures.lock().expect("not poisoned");
    eprintln!("{ok} requests served, {failures} failed");
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(failures, 0, "a client saw an error");

    // Back in rotation: a third of new requests.
    let mut c = client(fe.addr).await;
    let mut seen: HashMap<Bytes, usize> = HashMap::new();
    for _ in 0..30 {
        *seen.entry(get(&mut c).await.expect("answer")).or_default() += 1;
    }
    assert_eq!(seen.get(&Bytes::from_static(b"r2")), Some(&10), "{seen:?}");
    drop((r1, r2, r3));
}
