//! One small request's round trip on loopback, straight to a server and through the proxy, in
//! tcp and http mode. Client, proxy and server share one current-thread runtime, so each figure
//! is the whole CPU cost of a round trip on one core, and the difference between the two is
//! what the proxy adds per request (its two extra sockets' syscalls and its own code), without
//! wrk, nginx or the scheduler of a shared 2-core machine in the way.
//!
//! `cargo bench -p maas-vip-benches --bench roundtrip`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use healthcheck::ServerState;
use lb::{Frontend, FrontendConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const REQUEST: &[u8] = b"GET /MAAS/api/2.0/version/ HTTP/1.1\r\nHost: maas\r\n\r\n";

/// A loopback server that runs `conn` on each connection it accepts.
async fn server<F, Fut>(conn: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(conn(s));
        }
    });
    addr
}

/// Echoes whatever the connection sends.
async fn echo(mut s: TcpStream) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Answers every request (a head ending in an empty line, no body) with [`RESPONSE`].
async fn answer(mut s: TcpStream) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 4096];
    while let Ok(n) = s.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.drain(..end + 4);
            if s.write_all(RESPONSE).await.is_err() {
                return;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response with a Content-Length body; `buf` keeps what follows it.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            if buf.len() >= end + 4 + len {
                buf.drain(..end + 4 + len);
                return;
            }
        }
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A maas-vip frontend on 127.0.0.1:0 in front of `server`, without health checks.
fn frontend(mode: &str, server: SocketAddr, stop: watch::Receiver<bool>) -> SocketAddr {
    let text = format!(
        "name = \"bench\"\nbind = [\"127.0.0.1:1\"]\nmode = \"{mode}\"\n\
         [[server]]\nname = \"r1\"\naddress = \"{server}\"\ncheck = false\n"
    );
    let cfg: FrontendConfig = toml::from_str(&text).expect("frontend config");
    let state = Arc::new(ServerState::new("r1", server, false));
    let fe = Arc::new(Frontend::new(&cfg, vec![state]));
    let listener = lb::listener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(fe.serve(vec![listener], stop, Duration::from_secs(1)));
    addr
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_stop, stop) = watch::channel(false);
    let (echo, web) = rt.block_on(async { (server(echo).await, server(answer).await) });
    let (tcp_fe, http_fe) = rt.block_on(async {
        (
            frontend("tcp", echo, stop.clone()),
            frontend("http", web, stop.clone()),
        )
    });

    let mut g = c.benchmark_group("roundtrip");
    for (label, target) in [("tcp 64 B/direct", echo), ("tcp 64 B/maas-vip", tcp_fe)] {
        let mut s = rt.block_on(connect(target));
        g.bench_function(label, |b| {
            b.iter_custom(|iters| tcp_rounds(&rt, &mut s, iters))
        });
    }
    for (label, target) in [("http GET/direct", web), ("http GET/maas-vip", http_fe)] {
        let mut s = rt.block_on(connect(target));
        g.bench_function(label, |b| {
            b.iter_custom(|iters| http_rounds(&rt, &mut s, iters))
        });
    }
    g.finish();
}

fn tcp_rounds(rt: &Runtime, s: &mut TcpStream, iters: u64) -> Duration {
    rt.block_on(async {
        let msg = [7u8; 64];
        let mut back = [0u8; 64];
        let start = Instant::now();
        for _ in 0..iters {
            s.write_all(&msg).await.expect("write");
            s.read_exact(&mut back).await.expect("echo");
            black_box(&back);
        }
        start.elapsed()
    })
}

fn http_rounds(rt: &Runtime, s: &mut TcpStream, iters: u64) -> Duration {
    rt.block_on(async {
        let mut buf = Vec::with_capacity(4096);
        let start = Instant::now();
        for _ in 0..iters {
            s.write_all(REQUEST).await.expect("write");
            read_response(s, &mut buf).await;
        }
        start.elapsed()
    })
}

criterion_group!(benches, bench);
criterion_main!(benches);
