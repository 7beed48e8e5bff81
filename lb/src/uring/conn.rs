//! One tcp-mode connection on an engine thread, from its accept to its access-log line: the
//! same steps and rules as [`crate::l4::proxy`], as a state machine fed by completions.
//!
//! - Connect: [`Attempts`] picks the server (retries, redispatch, skips, local shortages), a
//!   socket is connected on the ring with `timeout_connect` linked to it.
//! - Copy: each socket has one multishot recv into the provided buffers; each buffer received
//!   goes out to the other socket as one send, in order, and back to the kernel once sent. At
//!   most [`MAX_QUEUED`] buffers wait per direction: past that, the recv is cancelled and armed
//!   again once the queue has drained (the epoll path's read-when-written rule). A FIN received
//!   is passed on with shutdown(2) once what came before it is sent; both passed on ends it.
//! - Timeouts: the epoll path's phases (`timeout_client`, `timeout_server`, `timeout_tunnel`)
//!   from the last activity, read lazily when the engine's timer for this connection fires.
//! - End: every operation still on the ring is cancelled; once the last has completed, the
//!   sockets are closed and the counters and the log line written ([`crate::l4::record`]).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use healthcheck::ProxyError;
use io_uring::types::Timespec;
use socket2::{SockAddr, SockRef};
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::ring::{Done, Op, Ring, Tag};
use crate::attempts::Attempts;
use crate::frontend::{Frontend, FrontendSnapshot};
use crate::l4::{self, ConnectError, CopyOutcome, End};
use crate::listener::{self, ShortageWaiter};

/// Buffers received and not yet sent, per direction, beyond which its recv is stopped.
const MAX_QUEUED: usize = 4;

/// The address and limit of a connect on the ring: boxed, so they stay put while the kernel
/// reads them (at submission).
struct ConnectArgs {
    addr: SockAddr,
    limit: Timespec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A connect is on the ring.
    Connecting,
    /// Waiting out a local shortage until then, before the next attempt.
    Shortage(Instant),
    /// Both sockets are copied.
    Copying,
}

/// One direction: received from socket `d`, sent to the other.
#[derive(Default)]
struct Dir {
    /// Buffers received, not yet all sent: (buffer id, length).
    queue: VecDeque<(u16, u32)>,
    /// Bytes of the queue's head already sent.
    off: u32,
    recv_armed: bool,
    /// A cancel of the recv is on the ring (the queue is full).
    recv_stopping: bool,
    /// The recv ended for want of a provided buffer: armed again once one is back.
    starved: bool,
    sending: bool,
    /// The source sent its FIN.
    eof: bool,
    /// The FIN is passed on.
    shut: bool,
    /// Bytes sent to the destination.
    bytes: u64,
}

/// What the engine is to do with a connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Keep it.
    Go,
    /// A direction ran out of provided buffers: arm it again once there are some.
    Starved,
    /// It has ended and nothing on the ring names it: [`Conn::finish`] it.
    Finished,
}

/// One connection.
pub(super) struct Conn {
    slot: u32,
    gen: u32,
    fe: Arc<Frontend>,
    snap: Arc<FrontendSnapshot>,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    client: OwnedFd,
    server: Option<OwnedFd>,
    attempts: Attempts,
    /// The server of the connect on the ring, then of the copy.
    idx: Option<usize>,
    connect: Option<Box<ConnectArgs>>,
    phase: Phase,
    /// Held while waiting out a shortage of descriptors or memory: accepts hold off meanwhile.
    shortage: Option<ShortageWaiter>,
    start: Instant,
    connect_time: Duration,
    dirs: [Dir; 2],
    /// Operations on the ring that name this connection.
    inflight: u32,
    last_activity: Instant,
    /// The earliest deadline the engine's timer holds for this connection.
    pub(super) armed: Option<Instant>,
    cut: Option<watch::Receiver<u64>>,
    /// The engine has been told of `cut` (see [`Conn::new_cut`]).
    cut_told: bool,
    first_fin: Option<End>,
    end: Option<End>,
    /// Reset both sockets at the end (a cut on `shutdown_sessions`).
    reset: bool,
}

impl Conn {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        slot: u32,
        gen: u32,
        fe: Arc<Frontend>,
        snap: Arc<FrontendSnapshot>,
        client: OwnedFd,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        now: Instant,
    ) -> Conn {
        let attempts = Attempts::new(&snap.settings);
        Conn {
            slot,
            gen,
            fe,
            snap,
            peer,
            _permit: permit,
            client,
            server: None,
            attempts,
            idx: None,
            connect: None,
            phase: Phase::Connecting,
            shortage: None,
            start: now,
            connect_time: Duration::ZERO,
            dirs: [Dir::default(), Dir::default()],
            inflight: 0,
            last_activity: now,
            armed: None,
            cut: None,
            cut_told: false,
            first_fin: None,
            end: None,
            reset: false,
        }
    }

    fn tag(&self, op: Op) -> Tag {
        Tag {
            slot: self.slot,
            gen: self.gen,
            op,
        }
    }

    /// Whether it waits out a descriptor shortage (the accept that took it holds off).
    pub(super) fn waits_for_descriptors(&self) -> bool {
        self.shortage.is_some()
    }

    /// Whether it has started to watch its server since last asked (once connected, with
    /// `on_down = "shutdown_sessions"`): the engine then checks it with the others.
    pub(super) fn new_cut(&mut self) -> bool {
        let new = self.cut.is_some() && !self.cut_told;
        self.cut_told |= new;
        new
    }

    /// Whether it watches its server for `on_down = "shutdown_sessions"`.
    pub(super) fn has_cut(&self) -> bool {
        self.cut.is_some() && self.end.is_none()
    }

    /// The next connect attempt, or the end if none is left.
    pub(super) fn attempt(&mut self, ring: &mut Ring, now: Instant) -> Next {
        self.shortage = None;
        let snap = self.snap.clone();
        let s = &snap.settings;
        loop {
            let idx = match self.attempts.pick(&snap, &self.fe.counters, self.peer.ip()) {
                Ok(idx) => idx,
                Err(give_up) => return self.end_with(ring, give_up.into()),
            };
            let server = &*snap.servers.members()[idx].state;
            // The name lost its address since the pick: another server, not an attempt.
            let Some(address) = server.address() else {
                self.attempts.skip(idx);
                continue;
            };
            // Blocking mode (no O_NONBLOCK), as in the io_uring floor: the ring waits for
            // readiness itself, and no plain call here reads or writes the socket.
            match l4::server_socket(address, false) {
                Ok(socket) => {
                    let args = Box::new(ConnectArgs {
                        addr: SockAddr::from(address),
                        limit: timespec(s.timeout_connect),
                    });
                    let fd = OwnedFd::from(socket);
                    ring.connect(
                        fd.as_raw_fd(),
                        &args.addr,
                        &args.limit,
                        self.tag(Op::Connect),
                    );
                    self.inflight += 2;
                    self.server = Some(fd);
                    self.connect = Some(args);
                    self.idx = Some(idx);
                    self.phase = Phase::Connecting;
                    return Next::Go;
                }
                Err(e) if listener::is_local_shortage(&e) => return self.shortage(ring, &e, now),
                Err(e) => {
                    server.observe_error(ProxyError::from_connect(&e));
                    if !self.attempts.failed(idx) {
                        return self.end_with(ring, End::ConnectFailed);
                    }
                }
            }
        }
    }

    /// Out of descriptors, buffers or local ports: this host's shortage, not the server's
    /// fault, and no other server would do better now. Waited out within `timeout_connect`.
    fn shortage(&mut self, ring: &mut Ring, e: &io::Error, now: Instant) -> Next {
        match self.attempts.shortage(self.snap.settings.timeout_connect) {
            Some(pause) => {
                if listener::is_resource_exhaustion(e) {
                    listener::note_shortage();
                    self.shortage = Some(ShortageWaiter::new());
                }
                self.phase = Phase::Shortage(now + pause);
                Next::Go
            }
            None => {
                self.fe
                    .counters
                    .local_shortage
                    .fetch_add(1, Ordering::Relaxed);
                self.end_with(ring, End::LocalShortage)
            }
        }
    }

    /// When its timer should fire next, if it has one.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.end.is_some() {
            return None;
        }
        match self.phase {
            Phase::Connecting => None,
            Phase::Shortage(until) => Some(until),
            Phase::Copying => Some(self.idle_deadline().0),
        }
    }

    /// The epoll path's inactivity rule ([`l4::phase_limit`]) from the last activity.
    fn idle_deadline(&self) -> (Instant, End) {
        let (up, down) = (&self.dirs[0], &self.dirs[1]);
        let (limit, why) = l4::phase_limit(&self.snap.settings, (up.bytes, up.eof), down.bytes);
        (self.last_activity + limit, why)
    }

    /// Its timer fired at `now`.
    pub(super) fn on_timer(&mut self, ring: &mut Ring, now: Instant) -> Next {
        if self.end.is_some() {
            return self.next();
        }
        match self.phase {
            Phase::Shortage(until) if now >= until => self.attempt(ring, now),
            Phase::Copying => {
                let (deadline, why) = self.idle_deadline();
                if now >= deadline {
                    return self.end_with(ring, why);
                }
                Next::Go
            }
            _ => Next::Go,
        }
    }

    /// With `shutdown_sessions`: ends it if its server went down.
    pub(super) fn check_cut(&mut self, ring: &mut Ring) -> Next {
        let Some(rx) = self.cut.as_mut() else {
            return Next::Go;
        };
        match rx.has_changed() {
            Ok(true) => {
                self.reset = true;
                self.end_with(ring, End::ServerDown)
            }
            Ok(false) => Next::Go,
            // A dropped sender (the server's state is gone) is no reason to cut.
            Err(_) => {
                self.cut = None;
                Next::Go
            }
        }
    }

    /// A completion of one of its operations.
    pub(super) fn on_done(&mut self, ring: &mut Ring, d: &Done, now: Instant) -> Next {
        match d.tag.op {
            Op::Connect => {
                self.inflight -= 1;
                self.connected(ring, d.res, now)
            }
            Op::Recv(dir) => {
                if !d.more {
                    self.inflight -= 1;
                }
                self.received(ring, usize::from(dir), d, now)
            }
            Op::Send(dir) => {
                self.inflight -= 1;
                self.sent(ring, usize::from(dir), d.res, now)
            }
            Op::ConnectTimeout | Op::Other | Op::Accept | Op::Wake => {
                self.inflight = self.inflight.saturating_sub(1);
                self.next()
            }
        }
    }

    fn connected(&mut self, ring: &mut Ring, res: i32, now: Instant) -> Next {
        self.connect = None;
        if self.end.is_some() {
            return self.next();
        }
        let Some(idx) = self.idx else {
            return self.next();
        };
        let snap = self.snap.clone();
        let server = &*snap.servers.members()[idx].state;
        if res >= 0 {
            self.connect_time = now.saturating_duration_since(self.start);
            server.counters.total.fetch_add(1, Ordering::Relaxed);
            server.counters.current.fetch_add(1, Ordering::Relaxed);
            self.cut = l4::cut_signal(&snap, server);
            self.phase = Phase::Copying;
            self.last_activity = now;
            self.arm_recv(ring, 0);
            self.arm_recv(ring, 1);
            return Next::Go;
        }
        self.server = None;
        self.idx = None;
        // ECANCELED: the linked `timeout_connect` fired first.
        let e = io::Error::from_raw_os_error(-res);
        if res != -libc::ECANCELED && listener::is_local_shortage(&e) {
            return self.shortage(ring, &e, now);
        }
        server.observe_error(if res == -libc::ECANCELED {
            ProxyError::ConnectTimeout
        } else {
            ProxyError::from_connect(&e)
        });
        if !self.attempts.failed(idx) {
            return self.end_with(ring, End::ConnectFailed);
        }
        self.attempt(ring, now)
    }

    fn fd(&self, side: usize) -> RawFd {
        if side == 0 {
            self.client.as_raw_fd()
        } else {
            self.server.as_ref().map_or(-1, AsRawFd::as_raw_fd)
        }
    }

    fn arm_recv(&mut self, ring: &mut Ring, d: usize) {
        let dir = &mut self.dirs[d];
        if dir.recv_armed || dir.eof || dir.queue.len() >= MAX_QUEUED || self.end.is_some() {
            return;
        }
        dir.recv_armed = true;
        dir.starved = false;
        self.inflight += 1;
        ring.recv(self.fd(d), self.tag(Op::Recv(d as u8)));
    }

    /// A direction that had run out of provided buffers tries again.
    pub(super) fn unstarve(&mut self, ring: &mut Ring) -> Next {
        for d in 0..2 {
            if self.dirs[d].starved {
                self.arm_recv(ring, d);
            }
        }
        Next::Go
    }

    fn received(&mut self, ring: &mut Ring, d: usize, done: &Done, now: Instant) -> Next {
        if !done.more {
            let dir = &mut self.dirs[d];
            dir.recv_armed = false;
            dir.recv_stopping = false;
        }
        if self.end.is_some() {
            if let Some(bid) = done.buffer {
                ring.give(bid);
            }
            return self.next();
        }
        match (done.res, done.buffer) {
            (n, Some(bid)) if n > 0 => {
                self.last_activity = now;
                self.dirs[d].queue.push_back((bid, n as u32));
                if !self.dirs[d].sending {
                    self.send_head(ring, d);
                }
                let dir = &mut self.dirs[d];
                if dir.queue.len() >= MAX_QUEUED && dir.recv_armed && !dir.recv_stopping {
                    dir.recv_stopping = true;
                    self.inflight += 1;
                    ring.cancel(self.tag(Op::Recv(d as u8)), self.tag(Op::Other));
                } else if !done.more {
                    self.arm_recv(ring, d);
                }
                Next::Go
            }
            (n, buffer) if n >= 0 => {
                // 0: the FIN (a multishot recv ends with it).
                if let Some(bid) = buffer {
                    ring.give(bid);
                }
                self.last_activity = now;
                self.dirs[d].eof = true;
                self.first_fin.get_or_insert(if d == 0 {
                    End::ClientClose
                } else {
                    End::ServerClose
                });
                self.maybe_shut(ring, d)
            }
            (e, _) if e == -libc::ENOBUFS => {
                self.dirs[d].starved = true;
                Next::Starved
            }
            (e, _) if e == -libc::ECANCELED => {
                // Stopped with a full queue: armed again as it drains.
                if self.dirs[d].queue.is_empty() {
                    self.arm_recv(ring, d);
                }
                Next::Go
            }
            _ => self.end_with(
                ring,
                if d == 0 {
                    End::ClientError
                } else {
                    End::ServerError
                },
            ),
        }
    }

    fn send_head(&mut self, ring: &mut Ring, d: usize) {
        let Some(&(bid, len)) = self.dirs[d].queue.front() else {
            return;
        };
        let off = self.dirs[d].off;
        self.dirs[d].sending = true;
        self.inflight += 1;
        ring.send(self.fd(1 - d), bid, off, len, self.tag(Op::Send(d as u8)));
    }

    fn sent(&mut self, ring: &mut Ring, d: usize, res: i32, now: Instant) -> Next {
        self.dirs[d].sending = false;
        if self.end.is_some() {
            return self.next();
        }
        if res < 0 {
            return self.end_with(
                ring,
                if d == 0 {
                    End::ServerError
                } else {
                    End::ClientError
                },
            );
        }
        self.last_activity = now;
        let dir = &mut self.dirs[d];
        dir.off += res as u32;
        dir.bytes += res as u64;
        if let Some(&(bid, len)) = dir.queue.front() {
            if dir.off >= len {
                dir.queue.pop_front();
                dir.off = 0;
                ring.give(bid);
            }
        }
        if self.dirs[d].queue.is_empty() {
            self.arm_recv(ring, d);
            return self.maybe_shut(ring, d);
        }
        self.send_head(ring, d);
        if self.dirs[d].queue.len() < MAX_QUEUED / 2 {
            self.arm_recv(ring, d);
        }
        Next::Go
    }

    /// Passes direction `d`'s FIN on once all it received is sent.
    fn maybe_shut(&mut self, ring: &mut Ring, d: usize) -> Next {
        let dir = &mut self.dirs[d];
        if !dir.eof || dir.shut || dir.sending || !dir.queue.is_empty() {
            return Next::Go;
        }
        dir.shut = true;
        if self.dirs[1 - d].shut {
            // Both ways done: close(2) sends this FIN.
            let end = self.first_fin.unwrap_or(End::ClientClose);
            return self.end_with(ring, end);
        }
        // A direct shutdown(2): the FIN leaves in this turn, not at the next submit.
        // ENOTCONN when the peer is gone already: its side will fail.
        if let Some(dst) = if d == 0 {
            self.server.as_ref()
        } else {
            Some(&self.client)
        } {
            let _ = SockRef::from(dst).shutdown(std::net::Shutdown::Write);
        }
        Next::Go
    }

    /// Ends it as `end`: what is still on the ring is cancelled.
    fn end_with(&mut self, ring: &mut Ring, end: End) -> Next {
        if self.end.is_none() {
            self.end = Some(end);
            self.shortage = None;
            if self.inflight > 0 {
                for side in 0..2 {
                    let fd = self.fd(side);
                    if fd >= 0 {
                        self.inflight += 1;
                        ring.cancel_fd(fd, self.tag(Op::Other));
                    }
                }
            }
        }
        self.next()
    }

    fn next(&self) -> Next {
        if self.end.is_some() && self.inflight == 0 {
            Next::Finished
        } else {
            Next::Go
        }
    }

    /// Gives back the buffers it still holds (a connection ended mid-copy).
    fn give_back(&mut self, ring: &mut Ring) {
        for dir in &mut self.dirs {
            for (bid, _) in dir.queue.drain(..) {
                ring.give(bid);
            }
        }
    }

    /// Closes it, counts it and writes its access-log line.
    pub(super) fn finish(mut self, ring: &mut Ring, now: Instant) {
        self.give_back(ring);
        let end = self.end.unwrap_or(End::ClientError);
        let total = now.saturating_duration_since(self.start);
        let copied = self.phase == Phase::Copying;
        match (self.idx, copied) {
            (Some(idx), true) => {
                let snap = self.snap.clone();
                let server = &*snap.servers.members()[idx].state;
                if self.reset {
                    if let Some(s) = &self.server {
                        l4::cut_both(&self.client, s, server);
                    }
                }
                let outcome = CopyOutcome {
                    to_server: self.dirs[0].bytes,
                    to_client: self.dirs[1].bytes,
                    end,
                };
                drop(self.server.take());
                l4::record(
                    &self.fe,
                    server,
                    self.peer,
                    self.attempts.retries(),
                    (self.connect_time, total),
                    outcome,
                );
            }
            _ => {
                drop(self.server.take());
                let e = ConnectError {
                    end,
                    retries: self.attempts.retries(),
                };
                let connect_time = total;
                l4::refuse(&self.fe, &self.client, self.peer, e, connect_time, total);
            }
        }
        self.fe.counters.current.fetch_sub(1, Ordering::Relaxed);
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos())
}

/// Takes ownership of a descriptor accept(2) returned.
pub(super) fn accepted(fd: i32) -> OwnedFd {
    debug_assert!(fd >= 0);
    // SAFETY: accept(2) just returned `fd`, a new descriptor that nothing else owns.
    #[allow(unsafe_code)]
    unsafe {
        OwnedFd::from_raw_fd(fd)
    }
}
