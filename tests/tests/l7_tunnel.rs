//! Websocket tunnels in http mode (issue 20, section 1): `timeout_tunnel` bounds silence
//! whatever either direction is doing, and a tunnel is a connection like any other until it
//! ends (it holds its `maxconn` slot, counts in `current`, and gets its access-log line).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use maas_vip_tests::access_log::{self, field};
use maas_vip_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const UPGRADE: &[u8] = b"GET /MAAS/ws HTTP/1.1\r\nHost: maas\r\nConnection: Upgrade\r\n\
    Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

/// Reads a request or response head off `s`; returns it and the bytes read past it.
async fn read_head(s: &mut TcpStream) -> (Vec<u8>, Vec<u8>) {
    let mut data = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = data.split_off(i + 4);
            return (data, rest);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("head in time")
            .expect("read");
        assert!(n > 0, "closed before the end of a head");
        data.extend_from_slice(&b[..n]);
    }
}

/// A region that accepts one websocket upgrade per connection, answers 101 with `welcome`
/// in the same write, then echoes until the proxy closes.
async fn echo_ws_region() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (_, early) = read_head(&mut s).await;
                let mut first = SWITCHING.to_vec();
                first.extend_from_slice(b"welcome");
                first.extend_from_slice(&early);
                if s.write_all(&first).await.is_err() {
                    return;
                }
                let mut b = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&b[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Reads exactly `n` bytes within 5 s.
async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut out))
        .await
        .expect("bytes in time")
        .expect("read");
    out
}

async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_holds_its_connection_slot_and_is_logged_when_it_ends() {
    access_log::capture();
    let fe = TestFrontend::start(
        "mode = \"http\"\nmaxconn = 1\ntimeout_tunnel = \"30s\"",
        &[("ws", echo_ws_region().await)],
    )
    .await;
    let mut ws = connect(fe.addr).await;
    let me = ws.local_addr().expect("local").to_string();
    // The first frame goes in the same write as the upgrade request.
    let mut first = UPGRADE.to_vec();
    first.extend_from_slice(b"hello");
    ws.write_all(&first).await.expect("send");
    let (head, mut got) = read_head(&mut ws).await;
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let want = b"welcomehello";
    got.extend(read_n(&mut ws, want.len() - got.len()).await);
    assert_eq!(got, want, "early bytes both ways");
    ws.write_all(b"ping").await.expect("send");
    assert_eq!(read_n(&mut ws, 4).await, b"ping");

    let counters = &fe.frontend.counters;
    assert_eq!(
        counters.current.load(Ordering::Relaxed),
        1,
        "the tunnel counts"
    );
    assert_eq!(
        fe.servers[0].counters.current.load(Ordering::Relaxed),
        1,
        "and on its server (what a drain waits for)"
    );
    assert!(
        !fe.frontend.drain(Duration::from_millis(50)).await,
        "a graceful stop waits for the tunnel"
    );
    // The tunnel keeps no config generation alive (the frontend's and this one only): its
    // server pools are not held across reloads.
    assert_eq!(std::sync::Arc::strong_count(&fe.frontend.snapshot()), 2);

    // maxconn = 1: a second client waits while the tunnel lives.
    let mut other = connect(fe.addr).await;
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut b = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), other.read(&mut b)).await;
    assert!(
        early.is_err(),
        "served beyond maxconn while a tunnel holds the slot"
    );

    drop(ws);
    until("the tunnel's end", Duration::from_secs(5), || {
        fe.servers[0].counters.current.load(Ordering::Relaxed) == 0
    })
    .await;
    let lines = access_log::wait_for(&fe.log_key(&me), 1, Duration::from_secs(5)).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(field(line, "status"), Some("101"), "{line}");
    assert_eq!(field(line, "end"), Some("client_close"), "{line}");
    // Beyond the heads: "hello" + "ping" up, "welcome" + "hello" + "ping" down.
    assert_eq!(field(line, "bytes_in"), Some("9"), "{line}");
    assert_eq!(field(line, "bytes_out"), Some("16"), "{line}");

    // The slot is free: the waiting client is served (the region answers it with a 101 it
    // did not ask for, which the proxy turns into a 502).
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut out))
        .await
        .expect("served once the tunnel ended")
        .expect("read");
    assert!(
        out.starts_with(b"HTTP/1.1 502"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

/// Whether the peer of `s` has closed its side (POLLRDHUP), without reading what `s` holds.
fn peer_closed(s: &TcpStream) -> bool {
    let mut fds = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout.
    #[allow(unsafe_code)]
    let n = unsafe { libc::poll(&mut fds, 1, 0) };
    n == 1 && fds.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_blocked_on_a_server_that_never_reads_ends_after_timeout_tunnel() {
    // A region that accepts the upgrade, then never reads again; it hands its socket over.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let region = l.local_addr().expect("addr");
    let (tx, mut rx) = mpsc::channel(1);
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let _ = read_head(&mut s).await;
            let _ = s.write_all(SWITCHING).await;
            let _ = tx.send(s).await;
        }
    });
    access_log::capture();
    let fe = TestFrontend::start(
        "mode = \"http\"\ntimeout_client = \"30s\"\ntimeout_server = \"30s\"\n\
         timeout_tunnel = \"500ms\"",
        &[("deaf", region)],
    )
    .await;
    let mut ws = connect(fe.addr).await;
    let me = ws.local_addr().expect("local").to_string();
    ws.write_all(UPGRADE).await.expect("send");
    let (head, _) = read_head(&mut ws).await;
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let server_side = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("region accepted")
        .expect("socket");

    // Send until the region's buffers and the proxy's are full (a write that makes no
    // progress for 200 ms), then leave.
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0usize;
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), ws.write(&chunk)).await {
        sent += n;
        assert!(sent < 1 << 30, "the region's buffers never filled");
    }
    drop(ws);
    let t = Instant::now();
    until(
        "the proxy closing the region's connection",
        Duration::from_secs(5),
        || peer_closed(&server_side),
    )
    .await;
    let took = t.elapsed();
    println!("sent {sent} bytes; the stalled tunnel was closed {took:?} after the client left");
    let lines = access_log::wait_for(&fe.log_key(&me), 1, Duration::from_secs(5)).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        field(&lines[0], "end"),
        Some("tunnel_timeout"),
        "{}",
        lines[0]
    );
    until("the tunnel uncounted", Duration::from_secs(2), || {
        fe.frontend.counters.current.load(Ordering::Relaxed) == 0
    })
    .await;
}
