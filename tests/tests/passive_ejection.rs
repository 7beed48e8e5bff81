//! Passive ejection against real loopback servers: consecutive proxy errors take a server out
//! of rotation, with or without active checks, and a timed retry (no checks) or the checks
//! bring it back.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use healthcheck::{DownReason, Health, ServerState};
use maas_vip_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `GET /` with `Connection: close`; the status code of the answer (0 if none came).
async fn get_status(fe: SocketAddr) -> u16 {
    let mut s = TcpStream::connect(fe).await.expect("connect to frontend");
    s.write_all(b"GET / HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer within 5 s");
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// An HTTP server answering every request `200 NAME`.
async fn http_named(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(serve_named(l, name));
    addr
}

async fn serve_named(l: TcpListener, name: &'static str) {
    while let Ok((mut s, _)) = l.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                name.len()
            );
            let _ = s.write_all(r.as_bytes()).await;
        });
    }
}

/// A server that accepts each connection and closes it at once, without a response.
async fn closing_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    addr
}

fn count(
    s: &ServerState,
    pick: fn(&healthcheck::ServerCounters) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    pick(&s.counters).load(Ordering::Relaxed)
}

/// Polls until `s` is `h`, at most `limit`; the time it took.
async fn until_health(s: &ServerState, h: Health, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while s.health() != h {
        assert!(
            t0.elapsed() < limit,
            "{} not {h:?} within {limit:?}",
            s.name
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t0.elapsed()
}

/// A tcp frontend over r1, which refuses (its address returned), and r2, which answers its
/// name; neither checked, `error_limit = 3`, `error_retry` as given.
async fn tcp_refused_and_live(
    error_retry: &str,
) -> (TestFrontend, SocketAddr, tokio::sync::watch::Sender<bool>) {
    let dead = refused_addr();
    let live = name_server("r2").await;
    let settings = format!(
        "mode = \"tcp\"\ncheck = {{ kind = \"tcp\", error_limit = 3, error_retry = \"{error_retry}\" }}"
    );
    let (fe, checks) = TestFrontend::start_checked(
        &settings,
        &[("r1", dead, "check = false"), ("r2", live, "check = false")],
    )
    .await;
    (fe, dead, checks)
}

#[tokio::test]
async fn tcp_an_unchecked_server_that_refuses_leaves_rotation_and_comes_back() {
    let (fe, dead, _checks) = tcp_refused_and_live("500ms").await;
    let r1 = fe.servers[0].clone();
    for _ in 0..20 {
        assert_eq!(fetch(fe.addr).await.expect("fetch"), b"r2", "redispatched");
    }
    // Round robin offers r1 every other connection: without ejection it would have been
    // tried 10 times, paying a retry each time.
    assert_eq!(
        count(&r1, |c| &c.connect_failures),
        3,
        "tried until the limit, then no more"
    );
    assert_eq!(r1.down_reason(), Some(DownReason::Errors));
    assert_eq!(count(&r1, |c| &c.ejections), 1);
    let retries = fe.frontend.counters.retries.load(Ordering::Relaxed);
    assert_eq!(retries, 3);

    // The region comes back on the same port: the timed retry puts it in rotation again.
    let l = reopen_refused(dead);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"r1").await;
        }
    });
    let took = until_health(&r1, Health::Up, Duration::from_secs(3)).await;
    eprintln!("r1 back after {took:?} (error_retry 500ms, counted from the ejection)");
    let mut seen_r1 = 0;
    for _ in 0..10 {
        if fetch(fe.addr).await.expect("fetch") == b"r1" {
            seen_r1 += 1;
        }
    }
    assert_eq!(
        seen_r1, 5,
        "back in rotation, and stays: its exchanges go well"
    );
    assert_eq!(r1.health(), Health::Up);
}

#[tokio::test]
async fn tcp_a_region_still_dead_at_its_retry_goes_out_again_at_its_first_error() {
    let (fe, _, _checks) = tcp_refused_and_live("200ms").await;
    let r1 = fe.servers[0].clone();
    for _ in 0..6 {
        fetch(fe.addr).await.expect("fetch");
    }
    assert_eq!(r1.down_reason(), Some(DownReason::Errors));
    until_health(&r1, Health::Up, Duration::from_secs(3)).await;
    for _ in 0..6 {
        assert_eq!(fetch(fe.addr).await.expect("fetch"), b"r2");
    }
    assert_eq!(
        count(&r1, |c| &c.connect_failures),
        4,
        "on probation: one more error, not error_limit"
    );
    assert_eq!(count(&r1, |c| &c.ejections), 2);
}

#[tokio::test]
async fn http_an_unchecked_server_that_closes_leaves_rotation() {
    let bad = closing_server().await;
    let live = http_named("r2").await;
    let (fe, _checks) = TestFrontend::start_checked(
        "mode = \"http\"\ncheck = { error_limit = 3, error_retry = \"1h\" }",
        &[("r1", bad, "check = false"), ("r2", live, "check = false")],
    )
    .await;
    let r1 = fe.servers[0].clone();
    for _ in 0..20 {
        // A GET without a body is resent to r2 when r1 closes: no client sees an error.
        assert_eq!(get_status(fe.addr).await, 200);
    }
    assert_eq!(count(&r1, |c| &c.resets), 3);
    assert_eq!(r1.down_reason(), Some(DownReason::Errors));
    let ej = r1.last_ejection().expect("ejected");
    assert_eq!(ej.errors, 3);
    assert_eq!(ej.last, healthcheck::ProxyError::Reset);
}

#[tokio::test]
async fn http_timeouts_count_as_errors() {
    let stuck = silent_server().await;
    let live = http_named("r2").await;
    let (fe, _checks) = TestFrontend::start_checked(
        "mode = \"http\"\ntimeout_server = \"200ms\"\ncheck = { error_limit = 2, error_retry = \"1h\" }",
        &[("r1", stuck, "check = false"), ("r2", live, "check = false")],
    )
    .await;
    let r1 = fe.servers[0].clone();
    let mut timeouts = 0;
    for _ in 0..12 {
        match get_status(fe.addr).await {
            200 => {}
            504 => timeouts += 1,
            other => panic!("status {other}"),
        }
    }
    assert_eq!(timeouts, 2, "two 504s, then r1 is out of rotation");
    assert_eq!(count(&r1, |c| &c.timeouts), 2);
    assert_eq!(r1.down_reason(), Some(DownReason::Errors));
}

#[tokio::test]
async fn a_checked_server_whose_check_passes_is_ejected_by_errors_and_checks_bring_it_back() {
    // The check goes to a port that answers; traffic to one that refuses (a region whose
    // proxy port is broken while its health endpoint lives elsewhere).
    let health = name_server("ok").await;
    let dead = refused_addr();
    let live = name_server("r2").await;
    let (fe, _checks) = TestFrontend::start_checked(
        "mode = \"tcp\"\ncheck = { kind = \"tcp\", interval = \"60s\", fast_interval = \"100ms\", \
         rise = 2, error_limit = 3 }",
        &[
            (
                "r1",
                dead,
                &format!("check_override = {{ port = {} }}", health.port()),
            ),
            ("r2", live, ""),
        ],
    )
    .await;
    let r1 = fe.servers[0].clone();
    for _ in 0..6 {
        assert_eq!(fetch(fe.addr).await.expect("fetch"), b"r2");
    }
    assert_eq!(
        r1.down_reason(),
        Some(DownReason::Errors),
        "down before any check failed"
    );
    assert_eq!(count(&r1, |c| &c.check_failures), 0);
    // Checked at once, then a fast interval later: rise = 2 good checks bring it back.
    let took = until_health(&r1, Health::Up, Duration::from_secs(2)).await;
    assert!(
        took >= Duration::from_millis(80),
        "two checks needed: {took:?}"
    );
    assert!(count(&r1, |c| &c.checks) >= 2);
    assert_eq!(count(&r1, |c| &c.transitions), 2);
}
