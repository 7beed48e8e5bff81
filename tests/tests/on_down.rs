//! `on_down`: what a server going down does to the connections established to it, in tcp and
//! http mode ("keep" lets them run; "shutdown_sessions" cuts them).

use std::sync::atomic::Ordering;
use std::time::Duration;

use healthcheck::Health;
use maas_vip_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(2);

/// Reads until EOF or an error, within [`LIMIT`]: true if the connection ended.
async fn ends(c: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    timeout(LIMIT, read).await.is_ok()
}

#[tokio::test]
async fn tcp_sessions_are_cut_when_their_server_goes_down_and_kept_by_default() {
    tcp_cut_or_kept(lb::Io::Epoll).await;
}

/// The same on the io_uring engines (`io = "io_uring"`).
#[tokio::test]
async fn tcp_sessions_are_cut_on_the_io_uring_engines_too() {
    tcp_cut_or_kept(lb::Io::IoUring).await;
}

async fn tcp_cut_or_kept(io: lb::Io) {
    let echo = echo_server(b"").await;
    let cut =
        TestFrontend::start_on(io, 1, "on_down = \"shutdown_sessions\"", &[("r1", echo)]).await;
    let keep = TestFrontend::start_on(io, 1, "", &[("r1", echo)]).await;
    let mut a = connect(cut.addr).await;
    let mut b = connect(keep.addr).await;
    echo_once(&mut a, b"before", LIMIT).await;
    echo_once(&mut b, b"before", LIMIT).await;

    cut.servers[0].set_health(Health::Down);
    keep.servers[0].set_health(Health::Down);
    assert!(ends(&mut a).await, "shutdown_sessions: cut at once");
    let n = &cut.servers[0].counters;
    assert_eq!(n.sessions_cut.load(Ordering::Relaxed), 1);
    assert_eq!(n.current.load(Ordering::Relaxed), 0);
    echo_once(&mut b, b"after, kept", LIMIT).await;
    assert_eq!(
        keep.servers[0]
            .counters
            .sessions_cut
            .load(Ordering::Relaxed),
        0
    );

    // Up again: new sessions, cut again at the next fall.
    cut.servers[0].set_health(Health::Up);
    let mut c = connect(cut.addr).await;
    echo_once(&mut c, b"again", LIMIT).await;
    cut.servers[0].set_health(Health::Down);
    assert!(ends(&mut c).await);
    assert_eq!(n.sessions_cut.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn an_ejection_by_errors_cuts_too() {
    let echo = echo_server(b"").await;
    let fe = TestFrontend::start(
        "on_down = \"shutdown_sessions\"\ncheck = { error_limit = 2 }",
        &[("r1", echo)],
    )
    .await;
    let mut a = connect(fe.addr).await;
    echo_once(&mut a, b"x", LIMIT).await;
    fe.servers[0].set_error_limit(Some(2));
    for _ in 0..2 {
        fe.servers[0].observe_error(healthcheck::ProxyError::Reset);
    }
    assert!(ends(&mut a).await);
}

/// An HTTP server that answers every request with `head` and `first` bytes, then waits
/// forever (a response being streamed, or one never sent when `head` is empty), echoing
/// what it reads after the head (a tunnel).
async fn stalling_http(head: &'static str, first: &'static [u8]) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if head.is_empty() {
                    std::future::pending::<()>().await;
                }
                if s.write_all(head.as_bytes()).await.is_err() || s.write_all(first).await.is_err()
                {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn read_until(c: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = timeout(LIMIT, c.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

const HTTP_CUT: &str = "mode = \"http\"\non_down = \"shutdown_sessions\"";

#[tokio::test]
async fn http_a_response_being_streamed_is_cut() {
    let srv = stalling_http(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nfirst\r\n",
    )
    .await;
    let fe = TestFrontend::start(HTTP_CUT, &[("r1", srv)]).await;
    let mut c = connect(fe.addr).await;
    c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    read_until(&mut c, b"first").await;
    fe.servers[0].set_health(Health::Down);
    assert!(ends(&mut c).await, "the stream is cut");
    assert_eq!(
        fe.servers[0].counters.sessions_cut.load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn http_a_request_waiting_for_its_answer_gets_a_502() {
    let srv = stalling_http("", b"").await;
    let fe = TestFrontend::start(HTTP_CUT, &[("r1", srv)]).await;
    let mut c = connect(fe.addr).await;
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    fe.servers[0].set_health(Health::Down);
    let got = read_until(&mut c, b"\r\n\r\n").await;
    assert!(
        got.starts_with(b"HTTP/1.1 502"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        fe.servers[0].counters.sessions_cut.load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn http_a_websocket_tunnel_is_cut() {
    let srv = stalling_http(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"",
    )
    .await;
    let fe = TestFrontend::start(HTTP_CUT, &[("r1", srv)]).await;
    let mut c = connect(fe.addr).await;
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    read_until(&mut c, b"\r\n\r\n").await;
    echo_once(&mut c, b"ping", LIMIT).await;
    fe.servers[0].set_health(Health::Down);
    assert!(ends(&mut c).await, "the tunnel is cut");
    assert_eq!(
        fe.servers[0].counters.sessions_cut.load(Ordering::Relaxed),
        1
    );
}
