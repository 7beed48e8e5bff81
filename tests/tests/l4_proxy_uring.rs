//! The L4 proxy's cases (l4_cases/cases.rs) on the io_uring path, top-level `io = "io_uring"`:
//! each case checks that the engine threads run, so a host without io_uring fails here instead
//! of passing on epoll.

/// The top-level `io` of the daemon under test.
const IO: &str = "io_uring";

include!("l4_cases/cases.rs");

/// A frontend turned to http mode by a reload keeps its listener on the engine: the
/// connections accepted there from then on go to the http proxy on the worker's runtime.
#[tokio::test]
async fn connections_of_a_frontend_now_in_http_mode_go_to_the_http_proxy() {
    let servers = [("r1", name_server("r1").await)];
    let fe = TestFrontend::start_on(lb::Io::IoUring, 1, "", &servers).await;
    assert_eq!(fetch(fe.addr).await.expect("tcp mode"), b"r1");
    let text = format!(
        "name = \"test\"\nbind = [\"127.0.0.1:1\"]\nmode = \"http\"\n\
         [[server]]\nname = \"r1\"\naddress = \"{}\"\n",
        servers[0].1
    );
    let cfg: lb::FrontendConfig = toml::from_str(&text).expect("config");
    fe.frontend.update(&cfg, fe.servers.clone());
    // The server's answer is no HTTP: the http proxy says 502 where tcp mode passed it on.
    let mut c = connect(fe.addr).await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: r1\r\n\r\n")
        .await
        .expect("write");
    let mut got = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert!(
        got.starts_with(b"HTTP/1.1 502"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let fives = fe.frontend.counters.responses[4].load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fives, 1, "counted by the http proxy");
}

/// A frontend with two listeners and maxconn 100: 99 long connections to the first are all
/// served. The second's spare accepts (armed while permits were plenty) give their permits
/// back once the frontend is out of them; only its first accept keeps one, as the epoll
/// path's accept loop does.
#[tokio::test]
async fn idle_accepts_of_one_listener_keep_no_permit_from_another() {
    let servers = [("echo", echo_server(b"").await)];
    let fe = TestFrontend::start_on(lb::Io::IoUring, 2, "maxconn = 100", &servers).await;
    let mut held = Vec::new();
    for _ in 0..99 {
        let mut c = connect(fe.addrs[0]).await;
        echo_once(&mut c, b"x", Duration::from_secs(5)).await;
        held.push(c);
    }
    let current = fe
        .frontend
        .counters
        .current
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(current, 99);
}
