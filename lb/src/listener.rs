//! Listening sockets and the accept loop.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tracing::{debug, warn};

/// Opens a listening socket on `addr` with IP_FREEBIND (IPV6_FREEBIND for IPv6), so that a
/// listener on the VIP works before this host holds the VIP (no `net.ipv4.ip_nonlocal_bind`
/// sysctl needed). An IPv6 socket opened here takes IPv6 only.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr, false, false)?)
}

/// Opens `n` listening sockets on `addr` with SO_REUSEPORT, one per worker thread: the kernel
/// spreads new connections over them, so each connection stays on one thread. `dual_stack`
/// (see [`dual_stack`]) turns IPV6_V6ONLY off on an IPv6 socket; it is ignored for IPv4.
pub fn bind_shared(
    addr: SocketAddr,
    n: usize,
    dual_stack: bool,
) -> io::Result<Vec<std::net::TcpListener>> {
    (0..n.max(1))
        .map(|_| bind_std(addr, true, dual_stack))
        .collect()
}

/// Whether the listener on `addr` also takes IPv4 clients (IPV6_V6ONLY off), given every
/// address the config binds (`binds`, all frontends). Only `[::]:port` does, and only while
/// no IPv4 address is bound on the same port: then that IPv4 listener takes IPv4, and which
/// socket gets an IPv4 client never rests on the kernel's choice between two that could (with
/// SO_REUSEPORT a dual-stack `[::]:80` and `0.0.0.0:80` can both be bound). The choice is made here, never left to the `net.ipv6.bindv6only` sysctl, so a
/// config means the same on every host: `["[::]:80"]` alone is IPv6 and IPv4 (HAProxy's
/// `bind :::80 v4v6`), `["0.0.0.0:80", "[::]:80"]` is two listeners, one per family (`v6only`
/// on the second). A specific IPv6 address takes IPv6 only either way.
pub fn dual_stack(addr: SocketAddr, binds: impl IntoIterator<Item = SocketAddr>) -> bool {
    match addr {
        SocketAddr::V6(a) if a.ip().is_unspecified() => !binds
            .into_iter()
            .any(|b| b.is_ipv4() && b.port() == a.port()),
        _ => false,
    }
}

/// The client's address as it is logged, hashed and forwarded: an IPv4 client of a
/// dual-stack listener arrives as `[::ffff:a.b.c.d]:port` and is turned back into
/// `a.b.c.d:port`, so that it is the same client as on an IPv4 listener.
pub fn client_addr(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

fn bind_std(
    addr: SocketAddr,
    reuse_port: bool,
    dual_stack: bool,
) -> io::Result<std::net::TcpListener> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
        SocketAddr::V6(_) => {
            // Set both ways: the sysctl's default is not ours to inherit.
            socket.set_only_v6(!dual_stack)?;
            socket.set_freebind_v6(true)?;
        }
    }
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one setsockopt per
    // listener instead of one per connection.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Errors of accept(2) that mean "out of a resource": waiting helps, spinning does not.
pub(crate) fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Errors of socket(2)/connect(2) that are this host's shortage (descriptors, buffers, local
/// ports), not a sign that the server is down.
pub fn is_local_shortage(e: &io::Error) -> bool {
    is_resource_exhaustion(e) || e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
}

/// Connections of this process now waiting in [`wait_out_shortage`]. While there are any,
/// every accept loop holds off: a descriptor that a closing connection frees must go to a
/// connection already accepted, or accepts would take each one as it is freed and leave every
/// accepted client waiting for a second descriptor that never comes.
static SHORTAGE_WAITERS: AtomicUsize = AtomicUsize::new(0);

/// Counts one connection in [`SHORTAGE_WAITERS`] while it lives (also if its future is dropped).
pub(crate) struct ShortageWaiter;

impl ShortageWaiter {
    pub(crate) fn new() -> ShortageWaiter {
        SHORTAGE_WAITERS.fetch_add(1, Ordering::AcqRel);
        ShortageWaiter
    }
}

impl Drop for ShortageWaiter {
    fn drop(&mut self) {
        SHORTAGE_WAITERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether accepts hold off now: connections already accepted wait for descriptors, and get
/// the next ones freed (see [`SHORTAGE_WAITERS`]).
pub(crate) fn accepts_held() -> bool {
    SHORTAGE_WAITERS.load(Ordering::Acquire) > 0
}

/// How long after the last descriptor or memory shortage accepts stay careful (see
/// [`Admission`]).
const CAREFUL_FOR: Duration = Duration::from_secs(10);

/// When this process last ran out of descriptors or memory, as [`now_ms`] (0: never).
static LAST_SHORTAGE: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since this process first asked, plus one (so that 0 can mean "never").
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Records that accept(2) or socket(2) just found no descriptor or memory.
pub(crate) fn note_shortage() {
    LAST_SHORTAGE.store(now_ms(), Ordering::Relaxed);
}

/// Whether a shortage was met within [`CAREFUL_FOR`]. One relaxed load while none ever was.
pub(crate) fn careful() -> bool {
    match LAST_SHORTAGE.load(Ordering::Relaxed) {
        0 => false,
        last => now_ms().saturating_sub(last) < CAREFUL_FOR.as_millis() as u64,
    }
}

/// Handed with each accepted connection. After a recent shortage of descriptors the accept
/// loop takes the next connection only once this one has its server socket (or has given up):
/// accepting a burst first would spend every freed descriptor on client sockets and leave each
/// of them waiting for a second one for the server that never comes (seen in CI: clients
/// queued while the process was out of descriptors had gone, and the fresh ones behind them
/// waited for `timeout_connect` and were reset). Outside such a period this holds nothing.
#[derive(Debug, Default)]
pub struct Admission(Option<oneshot::Sender<()>>);

impl Admission {
    /// Lets the accept loop go on: this connection has what it needs from the process.
    pub fn release(&mut self) {
        self.0.take();
    }
}

/// Waits out a local shortage met while connecting to a server: pauses of 5, 5, 10, 20, 40,
/// then 50 ms each (doubling the time waited so far, up to 50 ms; the last one cut to what is
/// left), until `waited` reaches `budget` (the frontend's `timeout_connect`). Returns false,
/// without sleeping, once the budget is spent: the caller then gives up.
///
/// A brief shortage (descriptors freed by connections that are closing) so costs the client a
/// little latency instead of its connection. While the shortage is the whole process's (`e` is
/// out of descriptors or memory), accepts hold off (`SHORTAGE_WAITERS`); out of local ports
/// (EADDRNOTAVAIL) concerns one server address only, and other frontends go on accepting.
pub async fn wait_out_shortage(e: &io::Error, waited: &mut Duration, budget: Duration) -> bool {
    let Some(pause) = shortage_pause(*waited, budget) else {
        return false;
    };
    pause_for_shortage(e, pause).await;
    *waited += pause;
    true
}

/// The next pause of [`wait_out_shortage`] after `waited` of `budget`; `None` once it is spent.
pub(crate) fn shortage_pause(waited: Duration, budget: Duration) -> Option<Duration> {
    let left = budget.saturating_sub(waited);
    if left.is_zero() {
        return None;
    }
    // Short pauses (at most 50 ms) so that a descriptor freed meanwhile is taken soon: accepts
    // hold off while this waits.
    Some(
        waited
            .clamp(Duration::from_millis(5), Duration::from_millis(50))
            .min(left),
    )
}

/// Sleeps one `pause` of [`wait_out_shortage`] for the shortage `e`.
pub(crate) async fn pause_for_shortage(e: &io::Error, pause: Duration) {
    let _waiter = is_resource_exhaustion(e).then(|| {
        note_shortage();
        ShortageWaiter::new()
    });
    tokio::time::sleep(pause).await;
}

/// The back-off of a listener whose accept(2) found no descriptor or memory: pauses of 5 ms,
/// doubling to 1 s, and at most one warning a second (with the count of those not logged).
/// Both accept loops use it: [`accept_loop`] and the io_uring engines'.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    next: Duration,
    last_warn: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    pub(crate) fn new() -> AcceptBackoff {
        AcceptBackoff {
            next: Duration::from_millis(5),
            last_warn: None,
            unlogged: 0,
        }
    }

    /// An accept succeeded: the next shortage starts from the shortest pause again.
    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_millis(5);
    }

    /// accept(2) on `local` failed with `e`, a shortage of descriptors or memory: notes it,
    /// warns (once a second at most) and returns how long to hold off accepting.
    pub(crate) fn exhausted(&mut self, local: Option<SocketAddr>, e: &io::Error) -> Duration {
        note_shortage();
        let now = Instant::now();
        if self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            warn!(listener = ?local, cause = %e, backoff_ms = self.next.as_millis() as u64,
                not_logged = self.unlogged, "accept failed, backing off");
            self.last_warn = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(1));
        pause
    }
}

/// Accepts connections until `shutdown` turns true, at most `limit`'s permits at once; each
/// accepted connection is handed to `handle` with its permit, which it holds until it ends,
/// and its [`Admission`], which it releases once it has its server socket.
pub async fn accept_loop<F>(
    listener: TcpListener,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit, Admission),
{
    let local = listener.local_addr().ok();
    let mut backoff = AcceptBackoff::new();
    // The admission of the last connection accepted while careful: the next accept waits for it.
    let mut admitted: Option<oneshot::Receiver<()>> = None;
    loop {
        if let Some(rx) = admitted.take() {
            tokio::select! {
                _ = rx => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
        // maxconn: with every permit taken, stop accepting; clients wait in the kernel's queue.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        // Connections already accepted wait for descriptors: they get the next ones freed.
        while accepts_held() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let peer = client_addr(peer);
                backoff.reset();
                let admission = if careful() {
                    let (tx, rx) = oneshot::channel();
                    admitted = Some(rx);
                    Admission(Some(tx))
                } else {
                    Admission(None)
                };
                handle(stream, peer, permit, admission);
            }
            Err(e) if is_resource_exhaustion(&e) => {
                // Out of file descriptors or memory: back off instead of spinning on an error
                // that the next accept would return at once.
                let pause = backoff.exhausted(local, &e);
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
            Err(e) => {
                // ECONNABORTED and the like concern one connection only.
                debug!(listener = ?local, cause = %e, "accept error");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;

    #[tokio::test(start_paused = true)]
    async fn shortage_waits_double_and_stop_within_the_budget() {
        let budget = Duration::from_millis(100);
        let start = tokio::time::Instant::now();
        let mut waited = Duration::ZERO;
        let mut pauses = Vec::new();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        while wait_out_shortage(&emfile, &mut waited, budget).await {
            pauses.push(waited);
        }
        let ms = |n| Duration::from_millis(n);
        // 5, 5, 10, 20, 40 ms, then the 20 ms left of the budget.
        assert_eq!(pauses, [ms(5), ms(10), ms(20), ms(40), ms(80), ms(100)]);
        assert_eq!(start.elapsed(), budget);
        assert!(!wait_out_shortage(&emfile, &mut waited, budget).await);
        assert_eq!(start.elapsed(), budget);
        assert_eq!(SHORTAGE_WAITERS.load(Ordering::Acquire), 0);

        // While one waits for a descriptor, accepts hold off; out of local ports, they go on.
        for (e, holds) in [
            (emfile, 1),
            (io::Error::from_raw_os_error(libc::EADDRNOTAVAIL), 0),
        ] {
            let mut w = Duration::ZERO;
            let mut wait = std::pin::pin!(wait_out_shortage(&e, &mut w, budget));
            assert!(futures::poll!(wait.as_mut()).is_pending());
            assert_eq!(SHORTAGE_WAITERS.load(Ordering::Acquire), holds, "{e}");
            assert!(wait.await);
            assert_eq!(SHORTAGE_WAITERS.load(Ordering::Acquire), 0);
        }
    }

    /// After a shortage, the loop takes the next connection only once the last one released
    /// its admission (or dropped it).
    #[tokio::test]
    async fn after_a_shortage_each_accept_waits_for_the_last_admission() {
        let l = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let addr = l.local_addr().expect("addr");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, shutdown) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(100));
        let task = tokio::spawn(accept_loop(l, limit, shutdown, move |s, _, p, a| {
            let _ = tx.send((s, p, a));
        }));
        note_shortage();
        assert!(careful());
        let wait = Duration::from_millis(300);
        let _c = [
            TcpStream::connect(addr).await.expect("connect"),
            TcpStream::connect(addr).await.expect("connect"),
        ];
        let mut first = tokio::time::timeout(wait, rx.recv())
            .await
            .expect("first accepted")
            .expect("open");
        assert!(
            tokio::time::timeout(wait, rx.recv()).await.is_err(),
            "second accepted while the first's admission was held"
        );
        first.2.release();
        let second = tokio::time::timeout(wait, rx.recv())
            .await
            .expect("second accepted once the first's admission is released")
            .expect("open");
        drop(second);
        let _c2 = TcpStream::connect(addr).await.expect("connect");
        let third = tokio::time::timeout(wait, rx.recv())
            .await
            .expect("third accepted once the second's admission is dropped")
            .expect("open");
        drop(third);
        let _ = stop.send(true);
        task.await.expect("accept loop");
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let l = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let addr = l.local_addr().expect("addr");
        let _c = TcpStream::connect(addr).await.expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        assert!(s.nodelay().expect("getsockopt"));
    }

    #[tokio::test]
    async fn shared_listeners_all_accept() {
        // Port 0 would give each socket its own port; configs always name one.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let a = SocketAddr::from(([127, 0, 0, 1], port));
        let ls = bind_shared(a, 2, false).expect("two sockets on one port (SO_REUSEPORT)");
        assert_eq!(ls.len(), 2);
        // A plain bind of the same port fails: only SO_REUSEPORT sockets share it.
        assert!(bind(a).is_err());
        drop(ls);
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("[::]:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    #[test]
    fn only_the_v6_wildcard_without_an_ipv4_twin_is_dual_stack() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let wild = a("[::]:80");
        assert!(dual_stack(wild, [wild]));
        assert!(dual_stack(wild, [wild, a("0.0.0.0:81"), a("[::1]:80")]));
        assert!(!dual_stack(wild, [wild, a("0.0.0.0:80")]));
        assert!(!dual_stack(wild, [a("10.0.0.100:80"), wild]));
        assert!(!dual_stack(
            a("[2001:db8::100]:80"),
            [a("[2001:db8::100]:80")]
        ));
        assert!(!dual_stack(a("0.0.0.0:80"), [a("0.0.0.0:80")]));
    }

    #[test]
    fn client_addr_unmaps_ipv4_and_keeps_ipv6() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(client_addr(a("[::ffff:10.0.0.5]:4000")), a("10.0.0.5:4000"));
        assert_eq!(
            client_addr(a("[2001:db8::5]:4000")),
            a("[2001:db8::5]:4000")
        );
        assert_eq!(client_addr(a("10.0.0.5:4000")), a("10.0.0.5:4000"));
        assert_eq!(a("[2001:db8::5]:4000").to_string(), "[2001:db8::5]:4000");
    }

    /// `[::]` dual-stack takes an IPv4 client, and the accept loop hands it over as IPv4.
    #[tokio::test]
    async fn dual_stack_wildcard_takes_ipv4_clients_as_ipv4() {
        let port = free_port();
        let wild = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        let mut ls = bind_shared(wild, 1, true).expect("bind [::] dual-stack");
        let l = TcpListener::from_std(ls.remove(0)).expect("tokio listener");
        assert!(!SockRef::from(&l).only_v6().expect("getsockopt"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            l,
            Arc::new(Semaphore::new(10)),
            shutdown,
            move |s, peer, _, _| {
                let _ = tx.send((s, peer));
            },
        ));
        let wait = Duration::from_secs(5);
        for dst in ["127.0.0.1", "::1"] {
            let dst: std::net::IpAddr = dst.parse().expect("ip");
            let c = TcpStream::connect((dst, port)).await.expect("connect");
            let local = c.local_addr().expect("local");
            let (_s, peer) = tokio::time::timeout(wait, rx.recv())
                .await
                .expect("accepted")
                .expect("open");
            assert_eq!(peer, local, "{dst}: the client as it is");
        }
        let _ = stop.send(true);
        task.await.expect("accept loop");
    }

    /// `[::]` IPv6-only beside `0.0.0.0` on the same port: both bind, each takes its family.
    #[tokio::test]
    async fn v6_only_wildcard_leaves_ipv4_to_its_twin() {
        let port = free_port();
        let wild = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        let four = SocketAddr::from(([0, 0, 0, 0], port));
        let v6 = bind_shared(wild, 1, false).expect("v6only");
        assert!(SockRef::from(&v6[0]).only_v6().expect("getsockopt"));
        // IPv6-only whatever net.ipv6.bindv6only says: IPv4 finds nobody.
        let refused = TcpStream::connect(("127.0.0.1", port)).await;
        assert!(refused.is_err(), "IPv4 reached an IPv6-only [::]");
        let v4 = bind_shared(four, 1, false).expect("IPv4 beside v6only [::]");
        let (l4, l6) = (
            TcpListener::from_std(v4.into_iter().next().expect("one")).expect("tokio"),
            TcpListener::from_std(v6.into_iter().next().expect("one")).expect("tokio"),
        );
        let _c4 = TcpStream::connect(("127.0.0.1", port)).await.expect("v4");
        let _c6 = TcpStream::connect(("::1", port)).await.expect("v6");
        let wait = Duration::from_secs(5);
        let (_, p4) = tokio::time::timeout(wait, l4.accept())
            .await
            .expect("v4 accepted")
            .expect("ok");
        let (_, p6) = tokio::time::timeout(wait, l6.accept())
            .await
            .expect("v6 accepted")
            .expect("ok");
        assert!(p4.is_ipv4() && p6.is_ipv6(), "{p4} {p6}");
    }

    /// IPV6_FREEBIND: an IPv6 VIP this host does not hold (yet) can be listened on.
    #[tokio::test]
    async fn ipv6_vip_not_held_is_bound() {
        let vip: SocketAddr = "[2001:db8:ffff::100]:0".parse().expect("addr");
        let vip = SocketAddr::new(vip.ip(), free_port());
        let l = bind(vip).expect("freebind on an address not held");
        assert_eq!(l.local_addr().expect("addr"), vip);
        drop(l);
        let ls = bind_shared(vip, 2, false).expect("shared, freebind");
        assert_eq!(ls.len(), 2);
    }
}
