//! The systemd watchdog of the real `maas-vip run`, with a fake `$NOTIFY_SOCKET` (a unix
//! datagram socket this test reads) instead of systemd: pings stop while a proxy worker thread
//! is wedged, and resume once it runs again.
//!
//! The stall is a real one: the daemon's stderr is a pipe this test does not read, so once the
//! pipe is full the worker that writes an access-log line blocks in write(2), as it would
//! behind a hung journald. Before the watchdog looked at the workers, the control runtime
//! went on pinging through such a stall.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use maas_vip_tests::maas_vip_bin;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A backend that writes `r1` to every connection and closes it.
fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"r1");
        }
    });
    addr
}

/// One connection through the proxy: whether its answer came within `limit`.
fn answered(front: SocketAddr, limit: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&front, limit) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(limit));
    let mut out = Vec::new();
    s.read_to_end(&mut out).is_ok() && out == b"r1"
}

/// Datagrams received on the notify socket, with when they came.
fn listen(sock: UnixDatagram) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if tx.send((Instant::now(), msg)).is_err() {
                return;
            }
        }
    });
    rx
}

/// The times of the `WATCHDOG=1` pings received within `d`.
fn pings_during(rx: &mpsc::Receiver<(Instant, String)>, d: Duration) -> Vec<Instant> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    while let Ok((at, msg)) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
        if msg.lines().any(|l| l == "WATCHDOG=1") {
            out.push(at);
        }
    }
    out
}

#[test]
fn a_wedged_worker_stops_the_watchdog_pings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let rx = listen(notify);
    let front = {
        let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr")
    };
    let conf = dir.path().join("maas-vip.toml");
    std::fs::write(
        &conf,
        format!(
            "workers = 1\n[[frontend]]\nname = \"maas\"\nbind = [\"{front}\"]\n\
             [[frontend.server]]\nname = \"r1\"\naddress = \"{}\"\ncheck = false\n\
             [admin]\nenabled = false\n",
            backend()
        ),
    )
    .expect("config");
    // systemd names the pid the watchdog is for; `exec` keeps the shell's.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" run -c \"$1\"")
        .arg(maas_vip_bin())
        .arg(&conf)
        .env("NOTIFY_SOCKET", &notify_path)
        // WatchdogSec=2s: a ping every second.
        .env("WATCHDOG_USEC", "2000000")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start maas-vip");
    let mut stderr = child.stderr.take().expect("stderr");
    let _daemon = Daemon(child);

    let ready = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a first notification");
    assert!(ready.1.contains("READY=1"), "{ready:?}");
    let pings = pings_during(&rx, Duration::from_millis(2500));
    assert!(
        pings.len() >= 2,
        "pings every second while healthy: {pings:?}"
    );

    // Fill the pipe with access-log lines until the worker blocks writing one.
    let mut sent = 0;
    while answered(front, Duration::from_secs(1)) {
        sent += 1;
        assert!(sent < 20_000, "the worker never blocked on its stderr");
    }
    let stalled = Instant::now();
    eprintln!("worker wedged after {sent} connections");

    // Its last beat was at most one heartbeat before the stall: once silent for a second (half
    // the watchdog interval), the pings stop.
    let pings = pings_during(&rx, Duration::from_secs(6));
    let last = pings.last().copied();
    assert!(
        pings
            .iter()
            .all(|t| *t <= stalled + Duration::from_millis(2500)),
        "pings went on through the stall: {:?} after it",
        pings
            .iter()
            .map(|t| t.duration_since(stalled))
            .collect::<Vec<_>>()
    );
    if let Some(t) = last {
        eprintln!(
            "last ping {:.2} s after the stall was seen (negative: before)",
            if t >= stalled {
                t.duration_since(stalled).as_secs_f64()
            } else {
                -stalled.duration_since(t).as_secs_f64()
            }
        );
    }

    // The worker runs again once its stderr is read: the pings resume, and the log says why
    // they had stopped.
    let (log_tx, log_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 || log_tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let pings = pings_during(&rx, Duration::from_secs(4));
    assert!(pings.len() >= 2, "pings resume: {pings:?}");
    assert!(
        answered(front, Duration::from_secs(2)),
        "the proxy serves again"
    );
    let mut log = Vec::new();
    while let Ok(b) = log_rx.recv_timeout(Duration::from_millis(500)) {
        log.extend(b);
    }
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("proxy worker proxy-0 has not run for")
            && log.contains("watchdog ping withheld"),
        "{}",
        &log[log.len().saturating_sub(3000)..]
    );
    assert!(log.contains("watchdog pings resume"));
}
