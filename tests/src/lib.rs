//! Support for maas-vip's integration tests: loopback servers on port 0, frontends and the
//! whole daemon ([`TestDaemon`]) run in-process, the path of the `maas-vip` binary for tests
//! that run the real daemon, network namespaces ([`netns`]) and real PostgreSQL servers
//! ([`postgres`]).

pub mod bgp;
pub mod netns;
pub mod postgres;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use healthcheck::ServerState;
use lb::{Frontend, FrontendConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The `maas-vip` binary built by `cargo test --workspace` (or `$MAAS_VIP_BIN`).
pub fn maas_vip_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MAAS_VIP_BIN") {
        return PathBuf::from(p);
    }
    // `cargo test --workspace` builds it (bin/tests/cli.rs makes cargo build the binary);
    // `cargo test -p maas-vip-tests` alone does not, so say how to get it.
    target_bin(
        "maas-vip",
        "run `cargo test --workspace` or `cargo build -p maas-vip` first",
    )
}

/// `name` in the target directory of the running test (`target/<profile>/deps/<test>` ->
/// `target/<profile>/<name>`); panics with `how` to build it when it is missing.
pub fn target_bin(name: &str, how: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: {how}", bin.display());
    bin
}

/// A loopback server that writes its name to every connection and closes it.
pub async fn name_server(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Writes `what` to `c` and reads it back (from an echoing server) within `limit`.
pub async fn echo_once(c: &mut TcpStream, what: &[u8], limit: Duration) {
    c.write_all(what).await.expect("write");
    let mut back = vec![0u8; what.len()];
    tokio::time::timeout(limit, c.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, what);
}

/// A loopback server that echoes what it reads until EOF, then writes `tail` and closes.
pub async fn echo_server(tail: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.write_all(tail).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A loopback server that accepts and then never reads nor writes (holds connections open).
pub async fn silent_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

/// An address on which nothing listens: connects are refused. The port stays bound (without
/// `listen`, without SO_REUSEADDR) for the life of the test process, so no other test's
/// listener can be given it: a port bound and released could come back to another test's server
/// and answer.
pub fn refused_addr() -> SocketAddr {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = s
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet address");
    REFUSED.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    addr
}

/// The sockets behind [`refused_addr`], bound and not listening.
static REFUSED: std::sync::Mutex<Vec<socket2::Socket>> = std::sync::Mutex::new(Vec::new());

/// A server coming back on a [`refused_addr`]: its held socket starts listening.
pub fn reopen_refused(addr: SocketAddr) -> TcpListener {
    let mut held = REFUSED.lock().unwrap_or_else(|e| e.into_inner());
    let i = held
        .iter()
        .position(|s| s.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr))
        .expect("an address from refused_addr()");
    let s = held.swap_remove(i);
    s.listen(128).expect("listen");
    s.set_nonblocking(true).expect("nonblocking");
    TcpListener::from_std(s.into()).expect("tokio listener")
}

/// A listener whose accept queue is full, so further SYNs are dropped and connects hang until
/// they time out. Keep the returned values alive for as long as the address is used.
pub fn blackhole_addr() -> (SocketAddr, socket2::Socket, std::net::TcpStream) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    s.listen(0).expect("listen");
    let addr = s
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet address");
    // Fill the one-entry queue; nobody ever accepts.
    let filler = std::net::TcpStream::connect(addr).expect("filler connect");
    (addr, s, filler)
}

/// A listening socket on 127.0.0.1, port 0, and the address it got: for a config to name and
/// [`daemon::Listeners`] to hand over.
pub fn loopback_listener() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("bound");
    (l, addr)
}

/// The daemon run in-process from a config file, on sockets handed over.
pub struct TestDaemon {
    /// The running daemon.
    pub handle: daemon::Handle,
    /// Where its config is (rewrite it, then [`daemon::Handle::reload`]).
    pub path: PathBuf,
}

impl TestDaemon {
    /// Writes `config` to `path` and runs the daemon on it with `listeners`; panics with the
    /// config's report if it is refused.
    pub async fn start(path: &Path, config: &str, listeners: daemon::Listeners) -> TestDaemon {
        std::fs::write(path, config).expect("write the config");
        let file = match daemon::ConfigFile::load(path) {
            Ok((file, _warnings)) => file,
            Err(report) => panic!("config refused:\n{report}\n{config}"),
        };
        let (_no_signals, signals) = daemon::Signals::channel();
        let handle = daemon::run(file, listeners, signals)
            .await
            .expect("the daemon starts");
        TestDaemon {
            handle,
            path: path.to_path_buf(),
        }
    }

    /// Writes `config` and reloads it; the outcome, once applied or rejected.
    pub async fn reload(&self, config: &str) -> daemon::Reload {
        std::fs::write(&self.path, config).expect("write the config");
        self.handle.reload().await
    }

    /// The names of the servers of frontend `i`, as `/status` shows them.
    pub fn server_names(&self, i: usize) -> Vec<String> {
        self.handle
            .status()
            .frontends
            .get(i)
            .map(|f| f.health.servers.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `limit`; fails the test naming
/// `what` when it does not.
pub async fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_until`] for a blocking caller (a test driving the real binary from a thread).
pub fn wait_until_blocking(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A frontend running in-process on 127.0.0.1:<port 0>.
pub struct TestFrontend {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// With [`TestFrontend::start_on`]: every listener's address (`addr` is the first).
    pub addrs: Vec<SocketAddr>,
    /// The frontend (counters, snapshot).
    pub frontend: Arc<Frontend>,
    /// Server states in config order (set health/admin from tests).
    pub servers: Vec<Arc<ServerState>>,
    /// The frontend's name, unique in the test binary (`test-N`).
    pub name: String,
    stop: watch::Sender<bool>,
    /// The worker threads of [`TestFrontend::start_on`], stopped on drop.
    workers: Option<lb::Workers>,
}

impl Drop for TestFrontend {
    fn drop(&mut self) {
        if let Some(w) = self.workers.take() {
            w.stop();
        }
    }
}

impl TestFrontend {
    /// Starts a frontend from the body of a `[[frontend]]` block (without `bind`) and servers.
    pub async fn start(settings: &str, servers: &[(&str, SocketAddr)]) -> TestFrontend {
        let servers: Vec<_> = servers.iter().map(|(n, a)| (*n, *a, "")).collect();
        Self::start_cfg(&Self::config(settings, &servers)).await
    }

    /// [`TestFrontend::start`] on one worker thread of its own that runs tcp-mode connections
    /// as `io` says (the daemon's `io`), accepting on `listeners` loopback sockets (as a
    /// frontend with that many binds); panics if the io_uring engine was asked for and did not
    /// start.
    pub async fn start_on(
        io: lb::Io,
        listeners: usize,
        settings: &str,
        servers: &[(&str, SocketAddr)],
    ) -> TestFrontend {
        let servers: Vec<_> = servers.iter().map(|(n, a)| (*n, *a, "")).collect();
        let (frontend, states) = Self::frontend_of(&Self::config(settings, &servers));
        let workers = lb::Workers::start(1, io).expect("worker threads");
        assert_eq!(workers.io(), io, "the workers run as asked");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners: Vec<std::net::TcpListener> = (0..listeners.max(1))
            .map(|_| {
                lb::listener::bind_shared(any, 1, false)
                    .expect("bind")
                    .remove(0)
            })
            .collect();
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr"))
            .collect();
        let (stop, rx) = watch::channel(false);
        let _ = workers.accept(&frontend, listeners, &rx);
        TestFrontend {
            addr: addrs[0],
            addrs,
            name: frontend.name.to_string(),
            frontend,
            servers: states,
            stop,
            workers: Some(workers),
        }
    }

    /// [`TestFrontend::start`] with more keys per server (`"check = false"`, ...), and the
    /// frontend's health checks running as the daemon runs them, until `checks` is dropped.
    pub async fn start_checked(
        settings: &str,
        servers: &[(&str, SocketAddr, &str)],
    ) -> (TestFrontend, watch::Sender<bool>) {
        let cfg = Self::config(settings, servers);
        let fe = Self::start_cfg(&cfg).await;
        let health = healthcheck::CheckedFrontend::new(
            &fe.name,
            cfg.check.clone(),
            fe.servers
                .iter()
                .zip(&cfg.server)
                .map(|(st, s)| {
                    healthcheck::Server::new(st.clone(), s.check)
                        .with_override(s.check_override.clone())
                })
                .collect(),
        );
        let (checks, rx) = watch::channel(false);
        healthcheck::spawn_frontend(Arc::new(health), rx);
        (fe, checks)
    }

    /// The config of a frontend named `test-N` (N counts the frontends of the test binary):
    /// one client address can reach two frontends at once, so its access-log lines are told
    /// apart by the name too ([`TestFrontend::log_key`]).
    fn config(settings: &str, servers: &[(&str, SocketAddr, &str)]) -> FrontendConfig {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut text = format!("name = \"test-{n}\"\nbind = [\"127.0.0.1:1\"]\n{settings}\n");
        for (name, addr, extra) in servers {
            text.push_str(&format!(
                "[[server]]\nname = \"{name}\"\naddress = \"{addr}\"\n{extra}\n"
            ));
        }
        toml::from_str(&text).expect("test frontend config")
    }

    /// The frontend of `cfg` and its servers' states, not serving yet.
    fn frontend_of(cfg: &FrontendConfig) -> (Arc<Frontend>, Vec<Arc<ServerState>>) {
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let states: Vec<Arc<ServerState>> = cfg
            .server
            .iter()
            .map(|s| {
                Arc::new(ServerState::with_target(
                    s.name.get_ref().clone(),
                    s.target().expect("test server address"),
                    s.disabled,
                ))
            })
            .collect();
        (Arc::new(Frontend::new(cfg, states.clone())), states)
    }

    async fn start_cfg(cfg: &FrontendConfig) -> TestFrontend {
        let (frontend, states) = Self::frontend_of(cfg);
        let listener = lb::listener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = watch::channel(false);
        tokio::spawn(
            frontend
                .clone()
                .serve(vec![listener], rx, Duration::from_secs(1)),
        );
        TestFrontend {
            addr,
            addrs: vec![addr],
            name: frontend.name.to_string(),
            frontend,
            servers: states,
            stop,
            workers: None,
        }
    }

    /// What names the access-log lines of one connection from `client` (`ip:port`) to this
    /// frontend: the kernel may give the same client port to connections to two frontends of
    /// one test binary, so the client address alone is not unique.
    pub fn log_key(&self, client: &str) -> String {
        format!("client={client} frontend={}", self.name)
    }

    /// Stops accepting.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Connects from `source` (any 127/8 address) and reads until EOF, bounded by 5 s.
pub async fn fetch_from(target: SocketAddr, source: [u8; 4]) -> std::io::Result<Vec<u8>> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((source, 0)))?;
    let mut s = sock.connect(target).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "fetch timed out"))??;
    Ok(out)
}

/// Connects and reads until EOF, bounded by 5 s.
pub async fn fetch(target: SocketAddr) -> std::io::Result<Vec<u8>> {
    fetch_from(target, [127, 0, 0, 1]).await
}

/// Opens a plain client connection.
pub async fn connect(target: SocketAddr) -> TcpStream {
    TcpStream::connect(target)
        .await
        .expect("connect to frontend")
}

/// Waits until `s` reports `h`, failing the test after `limit`; returns how long it took.
pub async fn health_within(s: &ServerState, h: healthcheck::Health, limit: Duration) -> Duration {
    let t0 = tokio::time::Instant::now();
    while s.health() != h {
        assert!(
            t0.elapsed() <= limit,
            "{} not {h:?} within {limit:?}",
            s.name
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t0.elapsed()
}

/// The shipped unit's system call filter for a process the tests start:
/// tests/peers/unit-syscall-filter.py builds the seccomp filter systemd builds from a unit's
/// `SystemCallFilter=` / `SystemCallErrorNumber=` and execs a command under it.
pub mod unit_filter {
    use std::path::PathBuf;
    use std::process::Command;

    /// The script: `script() UNIT_FILE -- COMMAND [ARG...]`.
    pub fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/unit-syscall-filter.py")
    }

    /// Call first in a test that uses [`script`]: panics, saying why, unless it can run here
    /// (systemd-analyze expands the unit's groups; Debian's python3-seccomp builds the filter).
    pub fn require(test: &str) {
        let analyzer = Command::new("systemd-analyze").arg("--version").output();
        assert!(
            analyzer.is_ok_and(|o| o.status.success()),
            "{test}: needs systemd-analyze (Debian's systemd package; .ci/run installs it)"
        );
        match Command::new("/usr/bin/python3")
            .args(["-c", "import seccomp"])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "{test}: needs python3-seccomp for /usr/bin/python3 (.ci/run installs it): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("{test}: cannot run /usr/bin/python3: {e}"),
        }
    }
}

/// The access log (`target: "access"`) of frontends run in-process, captured once per test
/// binary: a global tracing subscriber that keeps each access-log line as text.
pub mod access_log {
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static INSTALLED: OnceLock<()> = OnceLock::new();

    struct Sink;

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let text = String::from_utf8_lossy(buf);
            if let Ok(mut lines) = LINES.lock() {
                lines.extend(text.lines().map(str::to_owned));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Starts capturing (idempotent). Call it before the traffic whose lines a test reads.
    pub fn capture() {
        INSTALLED.get_or_init(|| {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("access=info"))
                .with_writer(|| Sink)
                .with_ansi(false)
                .try_init();
        });
    }

    /// The access-log lines that contain `needle` (for one connection: [`super::TestFrontend::log_key`]).
    pub fn lines(needle: &str) -> Vec<String> {
        LINES
            .lock()
            .map(|l| l.iter().filter(|l| l.contains(needle)).cloned().collect())
            .unwrap_or_default()
    }

    /// Waits up to `limit` for `n` lines naming `needle`, and returns them.
    pub async fn wait_for(needle: &str, n: usize, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let got = lines(needle);
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The value of `key=` in a log line (quotes removed), if present.
    pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
        let pat = format!(" {key}=");
        let at = line.find(&pat)? + pat.len();
        let rest = &line[at..];
        let rest = rest.strip_prefix('"').map_or(rest, |r| r);
        let end = rest.find(['"', ' ']).unwrap_or(rest.len());
        Some(&rest[..end])
    }
}
