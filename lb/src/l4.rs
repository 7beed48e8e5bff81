//! The L4 proxy: pick a server, connect with retries and redispatch, then copy bytes both ways.
//!
//! The copy loop waits for readiness, not for data in a buffer: a buffer is taken from a
//! per-thread pool only when a socket is readable and returned as soon as what was read is
//! written, so an idle connection holds no buffer at all.
//!
//! Timeouts are inactivity limits that depend on the phase of the stream:
//! - nothing received from the client yet: `timeout_client`;
//! - the client has spoken, the server not yet: `timeout_server`;
//! - both have spoken (the stream is a tunnel): `timeout_tunnel`, as HAProxy does in TCP mode
//!   once a tunnel is established. A websocket that pings every 50 s stays up.

use std::cell::RefCell;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use healthcheck::{Health, ProxyError, ServerState};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use crate::attempts::{Attempts, GiveUp};
use crate::config::OnDown;
use crate::frontend::{Frontend, FrontendSnapshot, Settings};
use crate::listener::{self, Admission};
use crate::splice::Pipe;

/// How a proxied connection ended (the access log's `end` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed first, then the server.
    ClientClose,
    /// The server closed first, then the client.
    ServerClose,
    /// The client sent nothing for `timeout_client`.
    ClientTimeout,
    /// The server answered nothing for `timeout_server`.
    ServerTimeout,
    /// The tunnel was idle for `timeout_tunnel`.
    TunnelTimeout,
    /// Reading from or writing to the client failed (reset).
    ClientError,
    /// Reading from or writing to the server failed (reset).
    ServerError,
    /// No server was available: the client was closed at once.
    NoServer,
    /// Every connect attempt was refused or timed out.
    ConnectFailed,
    /// This host ran out of descriptors, buffers or local ports for the server connection.
    LocalShortage,
    /// The server went down and `on_down = "shutdown_sessions"` cut the connection.
    ServerDown,
}

impl End {
    /// Name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            End::ClientClose => "client_close",
            End::ServerClose => "server_close",
            End::ClientTimeout => "client_timeout",
            End::ServerTimeout => "server_timeout",
            End::TunnelTimeout => "tunnel_timeout",
            End::ClientError => "client_error",
            End::ServerError => "server_error",
            End::NoServer => "no_server",
            End::ConnectFailed => "connect_failed",
            End::LocalShortage => "local_shortage",
            End::ServerDown => "server_down",
        }
    }
}

/// Result of the connect phase.
pub struct Connected<'a> {
    /// The server socket.
    pub stream: TcpStream,
    /// The server it goes to.
    pub server: &'a ServerState,
    /// Retries it took.
    pub retries: u32,
}

/// Why no server connection could be made.
#[derive(Debug, Clone, Copy)]
pub struct ConnectError {
    /// `NoServer` or `ConnectFailed`.
    pub end: End,
    /// Retries made.
    pub retries: u32,
}

/// Connects to a server for a client at `peer`, retrying up to `retries` times; with
/// `redispatch` each retry goes at once to another available server (no turn-around delay).
/// `admission` is released as soon as the first server socket exists.
pub async fn connect<'a>(
    fe: &Frontend,
    snap: &'a FrontendSnapshot,
    peer: SocketAddr,
    admission: &mut Admission,
) -> Result<Connected<'a>, ConnectError> {
    let s = &snap.settings;
    let mut attempts = Attempts::new(s);
    loop {
        let idx = match attempts.pick(snap, &fe.counters, peer.ip()) {
            Ok(idx) => idx,
            Err(give_up) => {
                return Err(ConnectError {
                    end: give_up.into(),
                    retries: attempts.retries(),
                });
            }
        };
        let server = &*snap.servers.members()[idx].state;
        // The name lost its address since the pick: another server, not an attempt.
        let Some(address) = server.address() else {
            attempts.skip(idx);
            continue;
        };
        // socket(2) apart from connect(2): a descriptor shortage shows here, and once the
        // socket exists the accept loop may go on (see `Admission`).
        let attempt_result = match server_socket(address, true) {
            Ok(socket) => {
                admission.release();
                tokio::time::timeout(s.timeout_connect, connect_socket(socket, address)).await
            }
            Err(e) => Ok(Err(e)),
        };
        match attempt_result {
            Ok(Ok(stream)) => {
                return Ok(Connected {
                    stream,
                    server,
                    retries: attempts.retries(),
                });
            }
            // Out of descriptors, buffers or local ports: this host's shortage, not the
            // server's fault, and no other server would do better now.
            // Wait for it to pass, within `timeout_connect`, then give up.
            Ok(Err(e)) if listener::is_local_shortage(&e) => {
                if let Some(pause) = attempts.shortage(s.timeout_connect) {
                    listener::pause_for_shortage(&e, pause).await;
                    continue;
                }
                fe.counters.local_shortage.fetch_add(1, Ordering::Relaxed);
                return Err(ConnectError {
                    end: End::LocalShortage,
                    retries: attempts.retries(),
                });
            }
            failed => {
                server.observe_error(match failed {
                    Ok(Err(e)) => ProxyError::from_connect(&e),
                    _ => ProxyError::ConnectTimeout,
                });
                if !attempts.failed(idx) {
                    return Err(ConnectError {
                        end: End::ConnectFailed,
                        retries: attempts.retries(),
                    });
                }
            }
        }
    }
}

/// A socket(2) for a connection to `address`, close-on-exec, non-blocking if `nonblocking`
/// (the io_uring engine's are not), with TCP_NODELAY (set before connect(2): the same one
/// setsockopt(2) as after it, and none is left to do once connected).
pub(crate) fn server_socket(address: SocketAddr, nonblocking: bool) -> io::Result<Socket> {
    let ty = if nonblocking {
        Type::STREAM.nonblocking()
    } else {
        Type::STREAM
    };
    let socket = Socket::new(
        Domain::for_address(address),
        ty.cloexec(),
        Some(Protocol::TCP),
    )?;
    let _ = socket.set_tcp_nodelay(true);
    Ok(socket)
}

/// connect(2) on `socket`, then the reactor's registration, then the first writable readiness.
/// As tokio's own `TcpSocket::connect`, with one system call less when the connect succeeds:
/// tokio reads SO_ERROR (getsockopt(2)) after every connect, this only when the readiness says
/// the socket failed or hung up. A socket that connected reports EPOLLOUT alone; one whose
/// connect failed is closed (EPOLLHUP, with EPOLLERR), so a plain writable readiness is a
/// connected socket.
async fn connect_socket(socket: Socket, address: SocketAddr) -> io::Result<TcpStream> {
    match socket.connect(&address.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let ready = stream.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_write_closed() || ready.is_error() {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok(stream)
}

/// Handles one client connection in tcp mode, from connect to access-log line.
pub async fn proxy(
    fe: &Frontend,
    snap: &FrontendSnapshot,
    client: TcpStream,
    peer: SocketAddr,
    mut admission: Admission,
) {
    let start = Instant::now();
    // TCP_NODELAY is inherited from the listener (see `listener::bind`).
    let connected = connect(fe, snap, peer, &mut admission).await;
    drop(admission);
    let connect_time = start.elapsed();
    let conn = match connected {
        Ok(c) => c,
        Err(e) => {
            refuse(fe, &client, peer, e, connect_time, start.elapsed());
            return;
        }
    };
    let server = conn.server;
    server.counters.total.fetch_add(1, Ordering::Relaxed);
    server.counters.current.fetch_add(1, Ordering::Relaxed);
    let cut = cut_signal(snap, server);
    let idle = Idle::Phases(&snap.settings);
    let outcome = copy_bidirectional(&client, &conn.stream, idle, cut).await;
    if outcome.end == End::ServerDown {
        cut_both(&client, &conn.stream, server);
    }
    let times = (connect_time, start.elapsed());
    record(fe, server, peer, conn.retries, times, outcome);
}

/// A connection that got no server: counted, its client reset (so it does not wait; nothing
/// fails open) and logged. The caller closes `client` next.
pub(crate) fn refuse(
    fe: &Frontend,
    client: &impl AsFd,
    peer: SocketAddr,
    e: ConnectError,
    connect_time: Duration,
    total: Duration,
) {
    match e.end {
        End::NoServer => {
            fe.counters.no_server.fetch_add(1, Ordering::Relaxed);
        }
        End::LocalShortage => {}
        _ => {
            fe.counters.connect_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = SockRef::from(client).set_linger(Some(Duration::ZERO));
    info!(target: "access", client = %peer, frontend = %fe.name, server = "-",
        connect_ms = ms(connect_time), total_ms = ms(total),
        bytes_in = 0u64, bytes_out = 0u64, retries = e.retries, end = e.end.as_str(),
        "tcp");
}

/// A connection to `server` that has ended as `outcome` says: the server's and the frontend's
/// counters, what the stream says of the server (passive ejection) and the access-log line.
/// `times`: the connect time and the whole connection's.
pub(crate) fn record(
    fe: &Frontend,
    server: &ServerState,
    peer: SocketAddr,
    retries: u32,
    (connect_time, total): (Duration, Duration),
    outcome: CopyOutcome,
) {
    server.counters.current.fetch_sub(1, Ordering::Relaxed);
    server
        .counters
        .bytes_to_server
        .fetch_add(outcome.to_server, Ordering::Relaxed);
    server
        .counters
        .bytes_from_server
        .fetch_add(outcome.to_client, Ordering::Relaxed);
    fe.counters
        .bytes_in
        .fetch_add(outcome.to_server, Ordering::Relaxed);
    fe.counters
        .bytes_out
        .fetch_add(outcome.to_client, Ordering::Relaxed);
    // Its reset or silence is an error, a normal end a success, the client's doing neither.
    match outcome.end {
        End::ServerError => {
            server.observe_error(ProxyError::Reset);
        }
        End::ServerTimeout => {
            server.observe_error(ProxyError::Timeout);
        }
        End::ClientClose | End::ServerClose | End::TunnelTimeout => server.observe_success(),
        _ => {}
    }
    info!(target: "access", client = %peer, frontend = %fe.name, server = %server.name,
        connect_ms = ms(connect_time), total_ms = ms(total),
        bytes_in = outcome.to_server, bytes_out = outcome.to_client, retries = retries,
        end = outcome.end.as_str(), "tcp");
}

/// With `on_down = "shutdown_sessions"`, what tells a connection to `server` that the server
/// went down: changed at once if it is down already (it went down between the pick and now).
pub(crate) fn cut_signal(
    snap: &FrontendSnapshot,
    server: &ServerState,
) -> Option<watch::Receiver<u64>> {
    if snap.settings.on_down != OnDown::ShutdownSessions {
        return None;
    }
    let mut rx = server.down_signal();
    if server.health() == Health::Down {
        rx.mark_changed();
    }
    Some(rx)
}

/// Ends a connection cut because its server went down: both sides reset, so the client
/// knows at once (it reconnects to the server now chosen) and the old server drops the
/// session (a demoted primary rolls back what it had).
pub(crate) fn cut_both(client: &impl AsFd, server_stream: &impl AsFd, server: &ServerState) {
    for s in [SockRef::from(client), SockRef::from(server_stream)] {
        let _ = s.set_linger(Some(Duration::ZERO));
    }
    server.counters.sessions_cut.fetch_add(1, Ordering::Relaxed);
}

/// Resolves when `cut` sees the server go down; never without one.
pub(crate) async fn went_down(cut: &mut Option<watch::Receiver<u64>>) {
    match cut {
        // A dropped sender (the server's state is gone) is no reason to cut.
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// The inactivity limit of a stream by its phase, and how it ends when it is reached:
/// `timeout_client` until the client speaks, `timeout_server` once it has (`up`: bytes sent
/// to the server and whether the client's FIN came) until the server answers (`down`: bytes
/// sent to the client), then `timeout_tunnel`. Both tcp-mode paths (this copy loop and the
/// io_uring engines) time out by it.
pub(crate) fn phase_limit(s: &Settings, up: (u64, bool), down: u64) -> (Duration, End) {
    let (up_bytes, up_eof) = up;
    if up_bytes > 0 && down > 0 {
        (s.timeout_tunnel, End::TunnelTimeout)
    } else if up_bytes > 0 || up_eof {
        (s.timeout_server, End::ServerTimeout)
    } else {
        (s.timeout_client, End::ClientTimeout)
    }
}

impl From<GiveUp> for End {
    fn from(g: GiveUp) -> End {
        match g {
            GiveUp::NoServer => End::NoServer,
            GiveUp::AllFailed => End::ConnectFailed,
        }
    }
}

/// The inactivity limits of the copy loop.
#[derive(Debug, Clone, Copy)]
pub enum Idle<'a> {
    /// By phase, from the frontend's settings: `timeout_client` until the client speaks,
    /// `timeout_server` until the server answers, then `timeout_tunnel`.
    Phases(&'a Settings),
    /// One limit whichever side is silent (an http-mode tunnel's `timeout_tunnel`); its
    /// timeout ends the copy as [`End::TunnelTimeout`].
    Tunnel(Duration),
}

/// What the copy loop did.
#[derive(Debug, Clone, Copy)]
pub struct CopyOutcome {
    /// Bytes copied from the client to the server.
    pub to_server: u64,
    /// Bytes copied from the server to the client.
    pub to_client: u64,
    /// How it ended.
    pub end: End,
}

const BUF_SIZE: usize = 32 * 1024;
const POOL_MAX: usize = 128;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    BUFFERS
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

fn give_buffer(b: Box<[u8]>) {
    BUFFERS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(b);
        }
    });
}

/// Reads once. A short read (less than the buffer) almost always means the socket is drained,
/// so readiness is cleared with it: the next wait goes to epoll instead of costing one more
/// recv(2) that would only say EAGAIN. tokio clears readiness only if no newer readiness event
/// arrived since this one, so data arriving meanwhile is not missed.
fn read_drained(src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let len = buf.len();
    let mut got = None;
    let r = src.try_io(Interest::READABLE, || {
        let n = (&*SockRef::from(src)).read(buf)?;
        got = Some(n);
        if n < len && n > 0 {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match (r, got) {
        (Ok(n), _) => Ok(n),
        (Err(e), Some(n)) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
        (Err(e), _) => Err(e),
    }
}

/// Whether a read readiness says the peer's FIN has arrived (EPOLLRDHUP) without an error: a
/// read made after it that drains the socket has read everything the peer sent, as HAProxy
/// takes a short read on a socket polled with EPOLLRDHUP for the end of the stream. A reset
/// (EPOLLERR with it) is left to the next read to report.
fn fin_seen(ready: Ready) -> bool {
    ready.is_read_closed() && !ready.is_error()
}

/// One direction of the copy.
#[derive(Default)]
struct Half {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// Bulk mode: payload moves by splice(2) through this pipe.
    pipe: Option<Pipe>,
    /// Set once a read fills a whole buffer: the direction carries bulk data.
    bulk: bool,
    /// Bulk mode: the pipe took no more; reading waits until it is drained.
    paused: bool,
    /// The source sent FIN.
    eof: bool,
    /// FIN passed on to the destination (or to be, see `fin_pending`).
    shut: bool,
    /// The FIN still has to be sent with shutdown(2) unless the connection is about to close.
    fin_pending: bool,
    bytes: u64,
}

/// Progress or failure of one step; `Err(true)` is a failure on the source side,
/// `Err(false)` on the destination side.
type Step = Result<bool, bool>;

impl Half {
    fn wants_read(&self) -> bool {
        !self.eof
            && !self.paused
            && self.buf.is_none()
            && self.pipe.as_ref().is_none_or(|p| p.room() > 0)
    }

    fn pending(&self) -> bool {
        self.buf.is_some() || self.pipe.as_ref().is_some_and(|p| p.len > 0)
    }

    /// Bulk mode: splices what the source has into the pipe, then on to the destination.
    fn splice_then_write(&mut self, src: &TcpStream, dst: &TcpStream) -> Step {
        let pipe = match self.pipe.as_mut() {
            Some(p) => p,
            None => match Pipe::take() {
                Ok(p) => self.pipe.insert(p),
                Err(_) => {
                    // No pipe (out of descriptors): copying still works.
                    self.bulk = false;
                    return self.read_then_write(src, dst, false);
                }
            },
        };
        // EAGAIN from a splice into a pipe that already holds data may mean the pipe is out of
        // slots, not that the socket is empty: then readiness must stay as it is, and reading
        // pauses until the pipe is drained. Into an empty pipe, EAGAIN can only be the socket's,
        // and tokio clears its readiness.
        let had = pipe.len;
        let filled = if had == 0 {
            src.try_io(Interest::READABLE, || pipe.fill(src.as_raw_fd()))
        } else {
            pipe.fill(src.as_raw_fd())
        };
        match filled {
            Ok(0) => {
                self.eof = true;
                self.write(dst)?;
                Ok(true)
            }
            Ok(_) => {
                self.write(dst)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if had > 0 {
                    self.paused = true;
                }
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(_) => Err(true),
        }
    }

    fn done(&self) -> bool {
        self.shut
    }

    /// Reads what the source has and writes as much as the destination takes.
    /// Returns whether anything moved. `fin_seen`: the readiness that woke this read said the
    /// source had sent its FIN already (see [`fin_seen`]).
    fn read_then_write(&mut self, src: &TcpStream, dst: &TcpStream, fin_seen: bool) -> Step {
        if self.bulk {
            return self.splice_then_write(src, dst);
        }
        let mut buf = take_buffer();
        match read_drained(src, &mut buf) {
            Ok(0) => {
                give_buffer(buf);
                self.eof = true;
                self.pass_fin(dst)?;
                Ok(true)
            }
            Ok(n) => {
                // A full buffer means bulk data: the next reads go by splice.
                self.bulk = n == buf.len();
                // A short read drained the socket, and the FIN had come before it: the data
                // read was all there is, and the recv(2) that would return 0 is not made.
                self.eof = fin_seen && !self.bulk;
                self.buf = Some(buf);
                self.start = 0;
                self.end = n;
                self.write(dst)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                give_buffer(buf);
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                give_buffer(buf);
                Ok(false)
            }
            Err(_) => {
                give_buffer(buf);
                Err(true)
            }
        }
    }

    /// Writes what is pending; frees the buffer once it is all written.
    fn write(&mut self, dst: &TcpStream) -> Step {
        let mut moved = false;
        if let Some(pipe) = self.pipe.as_mut() {
            while pipe.len > 0 {
                match dst.try_io(Interest::WRITABLE, || pipe.drain(dst.as_raw_fd())) {
                    Ok(n) => {
                        self.bytes += n as u64;
                        moved = true;
                        if pipe.len == 0 {
                            self.paused = false;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(moved),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(false),
                }
            }
        }
        let Some(buf) = self.buf.as_ref() else {
            if self.eof {
                self.pass_fin(dst)?;
            }
            return Ok(moved);
        };
        while self.start < self.end {
            match dst.try_write(&buf[self.start..self.end]) {
                Ok(n) => {
                    self.start += n;
                    self.bytes += n as u64;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(moved),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(false),
            }
        }
        if let Some(b) = self.buf.take() {
            give_buffer(b);
        }
        if self.eof {
            self.pass_fin(dst)?;
        }
        Ok(true)
    }

    fn pass_fin(&mut self, _dst: &TcpStream) -> Result<(), bool> {
        if !self.pending() && !self.shut {
            self.shut = true;
            self.fin_pending = true;
        }
        Ok(())
    }

    /// Sends the FIN with shutdown(2), unless `closing`: the other direction is over too, so
    /// both sockets are closed next and close(2) sends the FIN (their receive buffers are
    /// drained, so it is a FIN, not a reset).
    fn flush_fin(&mut self, dst: &TcpStream, closing: bool) {
        if self.fin_pending {
            self.fin_pending = false;
            if !closing {
                // ENOTCONN when the peer is already gone: the write side will notice.
                let _ = SockRef::from(dst).shutdown(Shutdown::Write);
            }
        }
    }
}

/// The copy loop's read readiness: readable, or the peer's FIN or an error, and which of them.
const READ: Interest = Interest::READABLE.add(Interest::ERROR);

/// Copies both ways until both directions have ended, one side fails, or a timeout fires.
/// A FIN from one side is passed on to the other (half-close) and the other direction goes on.
/// With `cut`, it also ends (as [`End::ServerDown`]) when the server goes down.
pub async fn copy_bidirectional(
    client: &TcpStream,
    server: &TcpStream,
    idle: Idle<'_>,
    mut cut: Option<watch::Receiver<u64>>,
) -> CopyOutcome {
    let mut up = Half::default(); // client -> server
    let mut down = Half::default(); // server -> client
    let mut last_activity = Instant::now();
    let deadline_of = |up: &Half, down: &Half, last: Instant| -> (Instant, End) {
        let (limit, why) = match idle {
            Idle::Phases(s) => phase_limit(s, (up.bytes, up.eof), down.bytes),
            Idle::Tunnel(d) => (d, End::TunnelTimeout),
        };
        (last + limit, why)
    };
    // One timer, pushed back lazily: activity only moves the deadline later, so the timer is
    // reset when it fires early, or at once when a phase change brings the deadline forward.
    let mut armed = deadline_of(&up, &down, last_activity).0;
    let sleep = tokio::time::sleep_until(armed);
    tokio::pin!(sleep);
    let mut first_fin: Option<End> = None;
    let end = loop {
        if first_fin.is_none() {
            if up.eof {
                first_fin = Some(End::ClientClose);
            } else if down.eof {
                first_fin = Some(End::ServerClose);
            }
        }
        if up.done() && down.done() {
            break first_fin.unwrap_or(End::ClientClose);
        }
        let step: Step = tokio::select! {
            r = client.ready(READ), if up.wants_read() => match r {
                Ok(r) => up.read_then_write(client, server, fin_seen(r)),
                Err(_) => Err(true),
            },
            r = server.writable(), if up.pending() => match r {
                Ok(()) => up.write(server),
                Err(_) => Err(false),
            },
            r = server.ready(READ), if down.wants_read() => match r {
                Ok(r) => down
                    .read_then_write(server, client, fin_seen(r))
                    .map_err(|src| !src),
                Err(_) => Err(false),
            },
            r = client.writable(), if down.pending() => match r {
                Ok(()) => down.write(client).map_err(|src| !src),
                Err(_) => Err(true),
            },
            () = went_down(&mut cut) => break End::ServerDown,
            () = &mut sleep => {
                let (deadline, why) = deadline_of(&up, &down, last_activity);
                if Instant::now() >= deadline {
                    break why;
                }
                armed = deadline;
                sleep.as_mut().reset(deadline);
                Ok(false)
            }
        };
        // For `up`, Err(true) means the client side failed; `down`'s errors were mapped so
        // that Err(true) also means the client side.
        let closing = up.done() && down.done();
        up.flush_fin(server, closing);
        down.flush_fin(client, closing);
        match step {
            Ok(true) => {
                last_activity = Instant::now();
                let (deadline, _) = deadline_of(&up, &down, last_activity);
                if deadline < armed {
                    armed = deadline;
                    sleep.as_mut().reset(deadline);
                }
            }
            Ok(false) => {}
            Err(true) => break End::ClientError,
            Err(false) => break End::ServerError,
        }
    };
    for b in [up.buf.take(), down.buf.take()].into_iter().flatten() {
        give_buffer(b);
    }
    for p in [up.pipe.take(), down.pipe.take()].into_iter().flatten() {
        p.give();
    }
    CopyOutcome {
        to_server: up.bytes,
        to_client: down.bytes,
        end,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::FrontendConfig;

    /// A connected pair: (the end a test drives, the end the proxy holds).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    fn settings(extra: &str) -> Settings {
        let text = format!(
            "name = \"fe\"\n{extra}\n[[server]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n"
        );
        let cfg: FrontendConfig = toml::from_str(&text).expect("test config");
        Settings::from(&cfg)
    }

    #[tokio::test]
    async fn connect_socket_connects_with_nodelay_and_reports_a_refusal() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let s = connect_socket(server_socket(addr, true).expect("socket"), addr)
            .await
            .expect("connected");
        assert_eq!(s.peer_addr().expect("peer"), addr);
        assert!(
            s.nodelay().expect("getsockopt"),
            "TCP_NODELAY set before connect"
        );
        drop(l);
        let e = connect_socket(server_socket(addr, true).expect("socket"), addr)
            .await
            .expect_err("nothing listens");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    }

    /// Each FIN is passed on and the other direction goes on after it, whichever comes first.
    #[tokio::test]
    async fn each_fin_is_passed_on_and_the_other_direction_goes_on() {
        for client_first in [true, false] {
            let (mut app, proxy_client) = pair().await;
            let (proxy_server, mut srv) = pair().await;
            let s = settings("");
            let copy = tokio::spawn(async move {
                copy_bidirectional(&proxy_client, &proxy_server, Idle::Phases(&s), None).await
            });
            if client_first {
                fin_then_reply(&mut app, &mut srv).await;
            } else {
                fin_then_reply(&mut srv, &mut app).await;
            }
            let o = copy.await.expect("copy");
            let end = if client_first {
                End::ClientClose
            } else {
                End::ServerClose
            };
            assert_eq!((o.end, o.to_server, o.to_client), (end, 4, 4));
        }
    }

    /// `first` sends and closes its side; `second` reads to that FIN, then answers and closes.
    async fn fin_then_reply(first: &mut TcpStream, second: &mut TcpStream) {
        first.write_all(b"ping").await.expect("write");
        first.shutdown().await.expect("FIN");
        let mut got = Vec::new();
        second.read_to_end(&mut got).await.expect("read to the FIN");
        assert_eq!(got, b"ping");
        second
            .write_all(b"pong")
            .await
            .expect("write after the FIN");
        second.shutdown().await.expect("FIN");
        got.clear();
        first.read_to_end(&mut got).await.expect("read the answer");
        assert_eq!(got, b"pong");
    }

    /// By phase, silence from a client that never spoke is `timeout_client`; with one tunnel
    /// limit it is a tunnel timeout, after that limit.
    #[tokio::test]
    async fn idle_limits_end_as_their_phase_or_as_a_tunnel() {
        let s = settings(
            "timeout_client = \"100ms\"\ntimeout_server = \"10s\"\ntimeout_tunnel = \"10s\"",
        );
        for (idle, end) in [
            (Idle::Phases(&s), End::ClientTimeout),
            (Idle::Tunnel(Duration::from_millis(100)), End::TunnelTimeout),
        ] {
            let (_app, proxy_client) = pair().await;
            let (proxy_server, _srv) = pair().await;
            let start = Instant::now();
            let o = copy_bidirectional(&proxy_client, &proxy_server, idle, None).await;
            assert_eq!(o.end, end);
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(100) && took < Duration::from_secs(5),
                "{took:?}"
            );
        }
    }
}
