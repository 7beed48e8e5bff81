// The L4 proxy's cases, included by l4_proxy.rs (`IO` = "epoll") and l4_proxy_uring.rs
// (`IO` = "io_uring"): each test file runs every case on one of the two paths.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use daemon::status::ProxyCounters;
use daemon::Listeners;
use healthcheck::status::ServerCountersStatus;
use maas_vip_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The daemon with one frontend, `test`, on a loopback socket handed over.
struct Proxy {
    daemon: TestDaemon,
    /// Where clients connect.
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// The frontend with the keys `settings` and `servers`, none health-checked (each always
    /// counts as healthy).
    async fn start(settings: &str, servers: &[(&str, SocketAddr)]) -> Proxy {
        let text: String = servers
            .iter()
            .map(|(n, a)| {
                format!("[[frontend.server]]\nname = \"{n}\"\naddress = \"{a}\"\ncheck = false\n")
            })
            .collect();
        Proxy::with_servers(settings, &text).await
    }

    /// The frontend with the keys `settings`, then `servers` as `[[frontend.server]]` blocks.
    async fn with_servers(settings: &str, servers: &str) -> Proxy {
        let (l, addr) = loopback_listener();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "io = \"{IO}\"\n[admin]\nenabled = false\n\
             [[frontend]]\nname = \"test\"\nbind = [\"{addr}\"]\n{settings}\n{servers}"
        );
        let daemon = TestDaemon::start(
            &dir.path().join("maas-vip.toml"),
            &config,
            Listeners::new().frontend(l),
        )
        .await;
        assert_eq!(
            uring_threads() > 0,
            IO == "io_uring",
            "io = {IO}: the io_uring engine threads run only on that path"
        );
        Proxy {
            daemon,
            addr,
            _dir: dir,
        }
    }

    /// The frontend's counters now.
    fn counters(&self) -> ProxyCounters {
        let st = self.daemon.handle.status();
        st.frontends[0]
            .counters
            .clone()
            .expect("the proxy runs `test`")
    }

    /// Server `i`'s counters now.
    fn server(&self, i: usize) -> ServerCountersStatus {
        self.daemon.handle.status().frontends[0].health.servers[i]
            .counters
            .clone()
    }
}

/// The io_uring engine threads of this process (named `proxy-uring-N`).
fn uring_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("proxy-uring"))
                })
                .count()
        })
        .unwrap_or(0)
}

async fn tally(fe: &Proxy, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let body = fetch(fe.addr).await.expect("request through the proxy");
        *seen
            .entry(String::from_utf8_lossy(&body).into_owned())
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn round_robin_spreads_30_requests_10_10_10() {
    let servers = [
        ("r1", name_server("r1").await),
        ("r2", name_server("r2").await),
        ("r3", name_server("r3").await),
    ];
    let fe = Proxy::start("", &servers).await;
    let seen = tally(&fe, 30).await;
    assert_eq!(seen.get("r1"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("r2"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("r3"), Some(&10), "{seen:?}");
}

#[tokio::test]
async fn weights_are_honoured() {
    let servers = [
        ("r1", name_server("r1").await),
        ("r2", name_server("r2").await),
    ];
    let text = format!(
        "[[frontend.server]]\nname = \"r1\"\naddress = \"{}\"\nweight = 3\ncheck = false\n\
         [[frontend.server]]\nname = \"r2\"\naddress = \"{}\"\ncheck = false\n",
        servers[0].1, servers[1].1
    );
    let fe = Proxy::with_servers("", &text).await;
    let seen = tally(&fe, 40).await;
    assert_eq!(seen.get("r1"), Some(&30), "{seen:?}");
    assert_eq!(seen.get("r2"), Some(&10), "{seen:?}");
}

#[tokio::test]
async fn source_balancing_sticks_each_client_to_one_region() {
    let servers = [
        ("r1", name_server("r1").await),
        ("r2", name_server("r2").await),
        ("r3", name_server("r3").await),
    ];
    let fe = Proxy::start("balance = \"source\"", &servers).await;
    let mut regions_used = HashMap::new();
    for client in 2..=21u8 {
        let first = fetch_from(fe.addr, [127, 0, 0, client])
            .await
            .expect("request");
        for _ in 0..4 {
            let again = fetch_from(fe.addr, [127, 0, 0, client])
                .await
                .expect("request");
            assert_eq!(again, first, "client 127.0.0.{client} moved");
        }
        *regions_used.entry(first).or_insert(0) += 1;
    }
    // 20 clients over 3 regions: every region gets some.
    assert_eq!(regions_used.len(), 3, "{regions_used:?}");
}

#[tokio::test]
async fn a_dead_region_costs_no_client_error() {
    let servers = [
        ("r1", name_server("r1").await),
        ("dead", refused_addr()),
        ("r3", name_server("r3").await),
    ];
    let fe = Proxy::start("", &servers).await;
    let seen = tally(&fe, 30).await;
    assert_eq!(
        seen.get("r1").copied().unwrap_or(0) + seen.get("r3").copied().unwrap_or(0),
        30,
        "{seen:?}"
    );
    let c = fe.counters();
    assert!(c.redispatches > 0);
    assert_eq!(c.connect_failed, 0);
    assert!(fe.server(1).connect_failures > 0);
}

#[tokio::test]
async fn without_redispatch_a_retry_stays_on_the_same_server() {
    let servers = [("dead", refused_addr()), ("r2", name_server("r2").await)];
    let fe = Proxy::start("redispatch = false\nretries = 2", &servers).await;
    // Round robin starts at `dead`: three attempts there, then the client is closed.
    let body = fetch(fe.addr).await.unwrap_or_default();
    assert!(body.is_empty());
    assert_eq!(fe.server(0).connect_failures, 3);
    assert_eq!(fe.counters().connect_failed, 1);
}

#[tokio::test]
async fn connect_timeout_then_redispatch() {
    let (hole, _l, _filler) = blackhole_addr();
    let servers = [("hole", hole), ("r2", name_server("r2").await)];
    let fe = Proxy::start("timeout_connect = \"300ms\"", &servers).await;
    let t = Instant::now();
    let body = fetch(fe.addr).await.expect("request");
    assert_eq!(body, b"r2");
    let took = t.elapsed();
    // First pick is `hole`: one connect timeout, then at once to r2.
    assert!(took >= Duration::from_millis(280), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    assert_eq!(fe.server(0).connect_failures, 1);
}

#[tokio::test]
async fn every_server_down_closes_the_client_at_once() {
    // Its check goes to a port nothing listens on: DOWN after the first.
    let text = format!(
        "[[frontend.server]]\nname = \"r1\"\naddress = \"{}\"\ncheck_override = {{ port = {} }}\n",
        name_server("r1").await,
        refused_addr().port()
    );
    let fe = Proxy::with_servers(
        "check = { kind = \"tcp\", interval = \"100ms\", rise = 1, fall = 1 }",
        &text,
    )
    .await;
    wait_until("r1 down", Duration::from_secs(5), || {
        let st = fe.daemon.handle.status();
        (st.frontends[0].health.servers[0].state == "down").then_some(())
    })
    .await;
    let t = Instant::now();
    let r = fetch(fe.addr).await;
    // Closed (or reset) at once; nothing fails open.
    assert!(r.map(|b| b.is_empty()).unwrap_or(true));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(fe.counters().no_server, 1);
}

#[tokio::test]
async fn half_close_is_passed_on_and_the_other_direction_continues() {
    let servers = [("echo", echo_server(b"<end>").await)];
    let fe = Proxy::start("", &servers).await;
    let mut c = connect(fe.addr).await;
    c.write_all(b"hello ").await.expect("write");
    c.write_all(b"world").await.expect("write");
    // Our FIN reaches the server, which answers after it.
    c.shutdown().await.expect("shutdown write");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(got, b"hello world<end>");
}

#[tokio::test]
async fn large_transfer_both_ways() {
    let servers = [("echo", echo_server(b"").await)];
    let fe = Proxy::start("", &servers).await;
    let c = connect(fe.addr).await;
    let (mut r, mut w) = c.into_split();
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expect = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write");
        w.shutdown().await.expect("shutdown");
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("read");
    writer.await.expect("writer");
    assert!(got == expect, "corrupted: {} bytes back", got.len());
    // Counted when the connection ends, which may be just after the client saw its EOF.
    let want = expect.len() as u64;
    wait_until("bytes_in counted", Duration::from_secs(5), || {
        (fe.counters().bytes_in == want).then_some(())
    })
    .await;
}

/// How long until the proxy closes `c` (its next read returns nothing), within 5 s.
async fn closed_by_the_proxy(c: &mut tokio::net::TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("closed by the proxy in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "data where the proxy should have closed");
    t.elapsed()
}

#[tokio::test]
async fn client_idle_timeout() {
    let servers = [("silent", silent_server().await)];
    let fe = Proxy::start("timeout_client = \"300ms\"", &servers).await;
    let mut c = connect(fe.addr).await;
    let took = closed_by_the_proxy(&mut c).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn server_idle_timeout() {
    let servers = [("silent", silent_server().await)];
    let fe = Proxy::start(
        "timeout_client = \"10s\"\ntimeout_server = \"400ms\"",
        &servers,
    )
    .await;
    let mut c = connect(fe.addr).await;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
    let took = closed_by_the_proxy(&mut c).await;
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn tunnel_outlives_client_and_server_timeouts_then_times_out() {
    let servers = [("echo", echo_server(b"").await)];
    let fe = Proxy::start(
        "timeout_client = \"200ms\"\ntimeout_server = \"200ms\"\ntimeout_tunnel = \"1200ms\"",
        &servers,
    )
    .await;
    let mut c = connect(fe.addr).await;
    let mut buf = [0u8; 4];
    // A ping every 500 ms: longer than client/server timeouts, shorter than the tunnel's.
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        c.write_all(b"ping").await.expect("write");
        c.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"ping");
    }
    // Then silence: closed after the tunnel timeout.
    let took = closed_by_the_proxy(&mut c).await;
    assert!(took >= Duration::from_millis(1000), "{took:?}");
}

#[tokio::test]
async fn maxconn_queues_connections_beyond_the_limit() {
    let servers = [("echo", echo_server(b"").await)];
    let fe = Proxy::start("maxconn = 1", &servers).await;
    let mut first = connect(fe.addr).await;
    first.write_all(b"a").await.expect("write");
    let mut b = [0u8; 1];
    first.read_exact(&mut b).await.expect("served");
    // The second waits (accepted by the kernel, not by the proxy) until the first ends.
    let mut second = connect(fe.addr).await;
    second.write_all(b"b").await.expect("write");
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read_exact(&mut b)).await;
    assert!(waited.is_err(), "second connection served beyond maxconn");
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut b))
        .await
        .expect("served once the first ended")
        .expect("read");
    assert_eq!(&b, b"b");
}

#[tokio::test]
async fn a_server_that_resets_mid_stream_is_counted() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut b = [0u8; 4];
            let _ = s.read(&mut b).await;
            let _ = s.write_all(b"partial").await;
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s); // RST
        }
    });
    let fe = Proxy::start("", &[("rst", addr)]).await;
    let mut c = connect(fe.addr).await;
    c.write_all(b"go").await.expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
    wait_until("the reset counted", Duration::from_secs(2), || {
        (fe.server(0).resets > 0).then_some(())
    })
    .await;
    assert_eq!(fe.server(0).resets, 1);
}

#[tokio::test]
async fn stopping_closes_the_listener() {
    let servers = [("r1", name_server("r1").await)];
    let fe = Proxy::start("", &servers).await;
    assert_eq!(fetch(fe.addr).await.expect("served"), b"r1");
    let addr = fe.addr;
    fe.daemon.handle.stop().await.expect("a clean stop");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "listener still open after stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback server that, on a connection whose first byte is `f`, writes without end (until
/// the peer goes), counting the bytes written in `written`; any other connection is echoed.
async fn flood_or_echo_server(written: std::sync::Arc<std::sync::atomic::AtomicU64>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let written = written.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                if buf[..n].first() == Some(&b'f') {
                    let chunk = vec![b'x'; 64 * 1024];
                    while s.write_all(&chunk).await.is_ok() {
                        written.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    return;
                }
                let mut n = n;
                while n > 0 && s.write_all(&buf[..n]).await.is_ok() {
                    n = s.read(&mut buf).await.unwrap_or(0);
                }
            });
        }
    });
    addr
}

/// A client that stops reading holds its server back (the proxy keeps a bounded amount of
/// its data, so the server's writes stall), and other connections go on meanwhile: a stalled
/// client takes no buffer another connection needs.
#[tokio::test]
async fn a_client_that_stops_reading_stalls_its_server_and_no_other_connection() {
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let servers = [("r1", flood_or_echo_server(written.clone()).await)];
    let fe = Proxy::start("", &servers).await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut c = connect(fe.addr).await;
        c.write_all(b"f").await.expect("write");
        stalled.push(c);
    }
    // The servers' writes stop once the sockets' buffers and the proxy's are full.
    let read = || written.load(std::sync::atomic::Ordering::Relaxed);
    let mut last = read();
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = read();
        if now == last && now > 0 {
            break;
        }
        assert!(Instant::now() < give_up, "the flooding servers never stalled");
        last = now;
    }
    // Four loopback connections' socket buffers hold a few MiB each; the proxy adds a bounded
    // amount per connection, not all the flood.
    assert!(last < 256 * 1024 * 1024, "{last} bytes written before the stall");
    for i in 0..3 {
        let mut c = connect(fe.addr).await;
        // An echo while four clients stall.
        echo_once(&mut c, format!("hello {i}").as_bytes(), Duration::from_secs(5)).await;
    }
    // A stalled client that reads again gets the flood, in order.
    let mut got = vec![0u8; 1024 * 1024];
    tokio::time::timeout(Duration::from_secs(10), stalled[0].read_exact(&mut got))
        .await
        .expect("the flood resumes")
        .expect("read");
    assert!(got.iter().all(|&b| b == b'x'));
}
