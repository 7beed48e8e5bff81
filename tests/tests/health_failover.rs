//! Health checks and the L4 proxy together, the issue's acceptance scenario in-process:
//! with `interval = "500ms"`, `rise = 2`, `fall = 2`, a region killed under load is marked
//! down within 1.5 s while clients see no failed request (but those the kill itself resets,
//! see below); brought back, it is up within 1.5 s and receives a third of new connections
//! again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use healthcheck::{CheckConfig, CheckKind, CheckedFrontend, Health, Registry, Server};
use maas_vip_tests::{fetch, health_within, TestFrontend};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A region that writes its name to every connection; can be killed and restarted.
struct Region {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Region {
    async fn start(name: &'static str, addr: SocketAddr) -> Region {
        let l = TcpListener::bind(addr).await.expect("bind loopback");
        let addr = l.local_addr().expect("bound");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(name.as_bytes()).await;
                    let _ = s.shutdown().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_region_is_ejected_without_client_errors_and_rejoins() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let r1 = Region::start("r1", any).await;
    let r2 = Region::start("r2", any).await;
    let r3 = Region::start("r3", any).await;
    let fe = TestFrontend::start("", &[("r1", r1.addr), ("r2", r2.addr), ("r3", r3.addr)]).await;

    let check = CheckConfig {
        kind: CheckKind::Tcp,
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

    // Load: four clients fetching in a loop; every answer must be a region's name.
    let running = Arc::new(AtomicBool::new(true));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (running, ok, failures, addr) =
            (running.clone(), ok.clone(), failures.clone(), fe.addr);
        load.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                match fetch(addr).await {
                    Ok(b) if b.starts_with(b"r") => ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failures.lock().expect("not poisoned").push(Instant::now());
                        0
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let s2 = Arc::clone(&fe.servers[1]);
    let killed_at = Instant::now();
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
    let failures = failures.lock().expect("not poisoned").clone();
    eprintln!("{ok} requests served, {} failed", failures.len());
    assert!(ok > 100, "load ran: {ok}");
    // Connects refused by the dead region are redispatched, so no client fails for them. The
    // one loss L4 cannot hide: a connection the region's kernel had already accepted into its
    // queue when the process died is reset after the proxy's connect succeeded. So failures
    // may happen only at the instant of the kill, at most one per client.
    assert!(failures.len() <= 4, "{} failures", failures.len());
    for t in &failures {
        let after = t.saturating_duration_since(killed_at);
        assert!(
            *t >= killed_at && after <= Duration::from_millis(100),
            "a client failed {after:?} after the kill, not at it"
        );
    }

    // Back in rotation: a third of new connections.
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for _ in 0..30 {
        *seen
            .entry(fetch(fe.addr).await.expect("fetch"))
            .or_default() += 1;
    }
    assert_eq!(seen.get(&b"r2"[..]), Some(&10), "{seen:?}");
    drop((r1, r2, r3));
}
