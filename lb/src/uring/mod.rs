//! The tcp mode on io_uring (top-level `io = "io_uring"`): one engine thread per worker, each
//! with its own ring, that accepts, connects and copies tcp-mode connections with every
//! operation on the ring and no epoll at all. One io_uring_enter(2) a turn submits what the
//! last completions asked for and waits for the next ones.
//!
//! Why apart from tokio: a ring driven from a tokio task (the first io_uring path, deleted by
//! issue 18's rule) kept every socket registered with tokio's epoll as well, so each turn paid
//! for both. Here the sockets never meet epoll. The http mode stays on tokio (hyper): a
//! connection accepted here for a frontend in http mode is handed to the worker's runtime.
//!
//! What a connection does is the epoll path's (see [`conn`]): the same attempts, timeouts,
//! half-close, cut on `shutdown_sessions`, counters and access log. maxconn is the frontend's
//! semaphore: an accept is on the ring only while a permit is held for it. Graceful stop: a
//! listener is closed on its frontend's shutdown (its accept cancelled), connections go on
//! until they end or the engine stops with the workers.
//!
//! The io-uring crate directly, not tokio-uring, monoio or compio: each brings its own runtime
//! and a task per connection; this engine needs neither (a connection is a state machine in a
//! slab), and the http mode, timers and channels stay on tokio unchanged.

mod conn;
mod ring;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tracing::{debug, warn};

use self::conn::{Conn, Next};
use self::ring::{Done, Op, Ring, Tag};
use crate::config::Mode;
use crate::frontend::Frontend;
use crate::listener;
use crate::workers::Heartbeats;

/// Submission entries per ring.
const ENTRIES: u32 = 4096;
/// How often a turn checks the connections watching their server for `shutdown_sessions`.
const CUT_CHECK: Duration = Duration::from_millis(10);
/// Accepts on the ring at once per listener, so that a burst of connections is taken in one
/// turn (one while accepts are careful after a shortage of descriptors). Each holds a maxconn
/// permit; the second and later are armed only while more than [`SPARE_PERMITS`] are free,
/// and cancelled (their permits released) once none is, so that idle accepts never keep
/// another listener's clients waiting for a permit.
const ACCEPT_DEPTH: usize = 16;
const SPARE_PERMITS: usize = 4 * ACCEPT_DEPTH;
/// The longest wait of a listener that lacks a permit or a descriptor before it looks again.
const RETRY_ACCEPT: Duration = Duration::from_millis(5);

/// What the other threads ask of an engine.
enum Command {
    Listen(Box<Listen>),
    Unlisten(u64),
    Stop,
}

/// A listener to accept on, for `fe`, as worker `worker`; `closed` is told once it is closed.
struct Listen {
    id: u64,
    fe: Arc<Frontend>,
    socket: std::net::TcpListener,
    closed: oneshot::Sender<()>,
}

/// An engine thread, seen from the others.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    tx: Arc<Mutex<mpsc::Sender<Command>>>,
    wake: Arc<OwnedFd>,
}

impl Engine {
    /// Starts engine `index` (worker `index`), beating as `beat` in `beats`; connections of
    /// frontends in http mode go to `tokio`, that worker's runtime. Fails if this kernel (or a
    /// seccomp filter) gives no io_uring.
    pub(crate) fn start(
        index: usize,
        beats: Heartbeats,
        beat: usize,
        tokio: tokio::runtime::Handle,
    ) -> io::Result<(Engine, std::thread::JoinHandle<()>)> {
        // SAFETY: eventfd(2) with flags only; the result is checked.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd just returned `fd`, owned by nobody else.
        #[allow(unsafe_code)]
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_wake = wake.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-uring-{index}"))
            .spawn(move || match Ring::new(ENTRIES) {
                Ok(ring) => {
                    let _ = ready_tx.send(Ok(()));
                    Looper::new(ring, rx, thread_wake, tokio, index, beats, beat).run();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((
                Engine {
                    tx: Arc::new(Mutex::new(tx)),
                    wake,
                },
                thread,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(io::Error::other("the io_uring thread ended at start")),
        }
    }

    fn send(&self, c: Command) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(c);
        }
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write from a live buffer to the eventfd this handle keeps open.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Accepts on `socket` for `fe` until [`Engine::unlisten`] with the id returned; the
    /// receiver is told once the socket is closed.
    pub(crate) fn listen(
        &self,
        fe: Arc<Frontend>,
        socket: std::net::TcpListener,
    ) -> (u64, oneshot::Receiver<()>) {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let (closed, rx) = oneshot::channel();
        self.send(Command::Listen(Box::new(Listen {
            id,
            fe,
            socket,
            closed,
        })));
        (id, rx)
    }

    /// Closes listener `id` (connections go on).
    pub(crate) fn unlisten(&self, id: u64) {
        self.send(Command::Unlisten(id));
    }

    /// Stops the engine: its listeners and connections are closed.
    pub(crate) fn stop(&self) {
        self.send(Command::Stop);
    }
}

/// Whether this kernel gives io_uring to this process (a seccomp filter may refuse it).
pub(crate) fn available() -> io::Result<()> {
    io_uring::IoUring::new(2).map(drop)
}

/// A listener on an engine.
struct Listener {
    id: u64,
    fe: Arc<Frontend>,
    socket: std::net::TcpListener,
    closed: Option<oneshot::Sender<()>>,
    /// Its accepts (tagged with their index as the generation).
    accepts: Vec<Pending>,
    closing: bool,
    /// After an accept that found no descriptor: not before then.
    paused_until: Option<Instant>,
    backoff: listener::AcceptBackoff,
    /// After a recent shortage: the connection last accepted, until it has its server socket.
    held_by: Option<(u32, u32)>,
}

/// One accept of a listener.
struct Pending {
    /// Where accept(2) writes the peer's address: boxed, it stays put while the accept is on
    /// the ring (and is leaked if the engine stops with it there).
    peer: Box<(libc::sockaddr_storage, libc::socklen_t)>,
    armed: bool,
    /// A cancel of it is on the ring (the frontend is out of permits).
    cancelling: bool,
    /// The maxconn permit held for it.
    permit: Option<OwnedSemaphorePermit>,
}

impl Listener {
    fn armed(&self) -> bool {
        self.accepts.iter().any(|a| a.armed)
    }
}

/// A slab of connections; a slot's generation tells its completions from those of the slot's
/// earlier connections.
#[derive(Default)]
struct Slab {
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<u32>,
}

impl Slab {
    fn vacant(&mut self) -> (u32, u32) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.gens.push(0);
            (self.conns.len() - 1) as u32
        });
        let g = &mut self.gens[slot as usize];
        *g = g.wrapping_add(1) & 0xff_ffff;
        (slot, *g)
    }

    fn get(&mut self, tag: &Tag) -> Option<&mut Conn> {
        let i = tag.slot as usize;
        if !tag.is(*self.gens.get(i)?) {
            return None;
        }
        self.conns.get_mut(i)?.as_mut()
    }

    fn take(&mut self, slot: u32) -> Option<Conn> {
        let c = self.conns.get_mut(slot as usize)?.take();
        if c.is_some() {
            self.free.push(slot);
        }
        c
    }
}

struct Looper {
    ring: Ring,
    rx: mpsc::Receiver<Command>,
    wake: Arc<OwnedFd>,
    wake_buf: Box<[u8; 8]>,
    tokio: tokio::runtime::Handle,
    worker: usize,
    beats: Heartbeats,
    beat: usize,
    last_beat: Instant,
    listeners: Vec<Option<Listener>>,
    conns: Slab,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    starved: Vec<(u32, u32)>,
    /// The connections (slot, generation) that watch their server (`shutdown_sessions`), as of
    /// the last check: only these are checked, not the whole slab.
    cuts: Vec<(u32, u32)>,
    next_cut_check: Instant,
    done: Vec<Done>,
    now: Instant,
    stop: bool,
}

impl Looper {
    fn new(
        ring: Ring,
        rx: mpsc::Receiver<Command>,
        wake: Arc<OwnedFd>,
        tokio: tokio::runtime::Handle,
        worker: usize,
        beats: Heartbeats,
        beat: usize,
    ) -> Looper {
        let now = Instant::now();
        Looper {
            ring,
            rx,
            wake,
            wake_buf: Box::new([0; 8]),
            tokio,
            worker,
            beats,
            beat,
            last_beat: now,
            listeners: Vec::new(),
            conns: Slab::default(),
            timers: BinaryHeap::new(),
            starved: Vec::new(),
            cuts: Vec::new(),
            next_cut_check: now,
            done: Vec::with_capacity(1024),
            now,
            stop: false,
        }
    }

    fn run(mut self) {
        self.arm_wake();
        self.beats.beat(self.beat);
        let mut done = std::mem::take(&mut self.done);
        while !self.stop {
            self.now = Instant::now();
            if self.now.duration_since(self.last_beat) >= Duration::from_millis(50) {
                self.beats.beat(self.beat);
                self.last_beat = self.now;
            }
            self.fire_timers();
            self.check_cuts();
            self.unstarve();
            let retry = self.arm_listeners();
            let mut wait = crate::workers::HEARTBEAT / 2;
            if let Some(Reverse((at, _, _))) = self.timers.peek() {
                wait = wait.min(at.saturating_duration_since(self.now));
            }
            if retry || !self.starved.is_empty() {
                wait = wait.min(RETRY_ACCEPT);
            }
            if !self.cuts.is_empty() {
                wait = wait.min(CUT_CHECK);
            }
            self.ring
                .submit_and_wait(wait.max(Duration::from_micros(100)));
            self.now = Instant::now();
            self.ring.reap(&mut done);
            for d in &done {
                self.complete(d);
            }
        }
        // An accept still on the ring may write into its listener's address box: those boxes
        // are leaked, the rest is closed with its owner. (The eventfd read is not on the ring:
        // the stop came through it, and it was not armed again.)
        for l in self.listeners.drain(..).flatten() {
            for a in l.accepts {
                if a.armed {
                    std::mem::forget(a.peer);
                }
            }
        }
    }

    fn arm_wake(&mut self) {
        let tag = Tag {
            slot: 0,
            gen: 0,
            op: Op::Wake,
        };
        self.ring
            .read_eventfd(self.wake.as_raw_fd(), self.wake_buf.as_mut_ptr(), tag);
    }

    fn commands(&mut self) {
        while let Ok(c) = self.rx.try_recv() {
            match c {
                Command::Listen(l) => self.add_listener(*l),
                Command::Unlisten(id) => {
                    let at = self
                        .listeners
                        .iter()
                        .position(|l| l.as_ref().is_some_and(|l| l.id == id));
                    if let Some(i) = at {
                        self.close_listener(i);
                    }
                }
                Command::Stop => self.stop = true,
            }
        }
    }

    fn add_listener(&mut self, l: Listen) {
        // Blocking mode, as the server sockets (see conn.rs): the ring waits for connections.
        if let Err(e) = l.socket.set_nonblocking(false) {
            warn!(frontend = %l.fe.name, cause = %e, "cannot take a listener");
            return;
        }
        let listener = Listener {
            id: l.id,
            fe: l.fe,
            socket: l.socket,
            closed: Some(l.closed),
            accepts: (0..ACCEPT_DEPTH)
                .map(|_| Pending {
                    peer: Box::new((zeroed_storage(), 0)),
                    armed: false,
                    cancelling: false,
                    permit: None,
                })
                .collect(),
            closing: false,
            paused_until: None,
            backoff: listener::AcceptBackoff::new(),
            held_by: None,
        };
        match self.listeners.iter().position(Option::is_none) {
            Some(i) => self.listeners[i] = Some(listener),
            None => self.listeners.push(Some(listener)),
        }
    }

    /// Closes listener `i` at once if no accept is on the ring, else once it completes.
    fn close_listener(&mut self, i: usize) {
        let Some(l) = self.listeners.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if l.armed() {
            if !l.closing {
                self.ring
                    .cancel_fd(l.socket.as_raw_fd(), listener_tag(i, 0, Op::Other));
            }
            l.closing = true;
            return;
        }
        if let Some(l) = self.listeners[i].take() {
            drop(l.socket);
            if let Some(c) = l.closed {
                let _ = c.send(());
            }
        }
    }

    /// Puts an accept on the ring for every listener that may take a connection now. Returns
    /// whether one is waiting for a permit or a descriptor (look again soon).
    fn arm_listeners(&mut self) -> bool {
        let held = listener::accepts_held();
        let depth = if listener::careful() { 1 } else { ACCEPT_DEPTH };
        let mut retry = false;
        for i in 0..self.listeners.len() {
            let Some(l) = self.listeners[i].as_mut() else {
                continue;
            };
            if l.closing {
                continue;
            }
            if l.fe.limit().available_permits() == 0 {
                // Out of permits: the idle extra accepts give theirs back.
                for (k, a) in l.accepts.iter_mut().enumerate().skip(1) {
                    if a.armed && !a.cancelling {
                        a.cancelling = true;
                        let target = listener_tag(i, k, Op::Accept);
                        self.ring.cancel(target, listener_tag(i, 0, Op::Other));
                    }
                }
            }
            if l.accepts[..depth].iter().all(|a| a.armed) {
                continue;
            }
            if let Some(held_by) = l.held_by {
                let tag = Tag {
                    slot: held_by.0,
                    gen: held_by.1,
                    op: Op::Other,
                };
                if self
                    .conns
                    .get(&tag)
                    .is_some_and(|c| c.waits_for_descriptors())
                {
                    retry = true;
                    continue;
                }
                l.held_by = None;
            }
            if held || l.paused_until.is_some_and(|t| self.now < t) {
                retry = true;
                continue;
            }
            l.paused_until = None;
            let fd = l.socket.as_raw_fd();
            let free = l.fe.limit().available_permits();
            for (k, a) in l.accepts[..depth].iter_mut().enumerate() {
                if a.armed {
                    continue;
                }
                if k > 0 && free <= SPARE_PERMITS {
                    break;
                }
                if a.permit.is_none() {
                    // maxconn: with every permit taken, clients wait in the kernel's queue.
                    match l.fe.limit().try_acquire_owned() {
                        Ok(p) => a.permit = Some(p),
                        Err(_) => {
                            retry = true;
                            break;
                        }
                    }
                }
                a.armed = true;
                let (addr, len) = &mut *a.peer;
                *len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                self.ring
                    .accept(fd, addr, len, listener_tag(i, k, Op::Accept));
            }
        }
        retry
    }

    fn complete(&mut self, d: &Done) {
        match d.tag.op {
            Op::Wake => {
                self.commands();
                if !self.stop {
                    self.arm_wake();
                }
            }
            Op::Accept => self.accepted(d),
            Op::Other if d.tag.slot == u32::MAX => {} // a listener's cancel
            _ => {
                let now = self.now;
                let next = match self.conns.get(&d.tag) {
                    Some(c) => c.on_done(&mut self.ring, d, now),
                    None => {
                        // A connection gone since: its buffer goes back all the same.
                        if let Some(bid) = d.buffer {
                            self.ring.give(bid);
                        }
                        return;
                    }
                };
                self.after(d.tag.slot, d.tag.gen, next);
            }
        }
    }

    /// What follows an event of connection `slot`.
    fn after(&mut self, slot: u32, gen: u32, next: Next) {
        let tag = Tag {
            slot,
            gen,
            op: Op::Other,
        };
        match next {
            Next::Finished => {
                if let Some(c) = self.conns.take(slot) {
                    c.finish(&mut self.ring, self.now);
                }
            }
            Next::Starved => self.starved.push((slot, gen)),
            Next::Go => {}
        }
        if let Some(c) = self.conns.get(&tag) {
            if c.new_cut() {
                self.cuts.push((slot, gen));
            }
            if let Some(at) = c.deadline() {
                if c.armed.is_none_or(|a| at < a) {
                    c.armed = Some(at);
                    self.timers.push(Reverse((at, slot, gen)));
                }
            }
        }
    }

    fn accepted(&mut self, d: &Done) {
        let i = d.tag.slot as usize;
        let Some(l) = self.listeners.get_mut(i).and_then(Option::as_mut) else {
            if d.res >= 0 {
                drop(conn::accepted(d.res));
            }
            return;
        };
        let Some(a) = l.accepts.get_mut(d.tag.gen as usize) else {
            return;
        };
        a.armed = false;
        a.cancelling = false;
        if d.res == -libc::ECANCELED {
            a.permit = None;
        }
        if d.res >= 0 {
            l.backoff.reset();
            let fd = conn::accepted(d.res);
            let (addr, len) = &*a.peer;
            let peer = peer_addr(addr, *len);
            let permit = a.permit.take();
            let fe = l.fe.clone();
            if let (Some(peer), Some(permit)) = (peer, permit) {
                if let Some(held) = self.start_conn(fe, fd, peer, permit) {
                    if let Some(l) = self.listeners[i].as_mut() {
                        l.held_by = Some(held);
                    }
                }
            }
        } else if d.res == -libc::ECANCELED && l.closing {
        } else {
            let e = io::Error::from_raw_os_error(-d.res);
            if listener::is_resource_exhaustion(&e) {
                // Out of descriptors or memory: back off instead of spinning.
                let pause = l.backoff.exhausted(l.socket.local_addr().ok(), &e);
                a.permit = None;
                l.paused_until = Some(self.now + pause);
            } else {
                // ECONNABORTED and the like concern one connection only.
                debug!(listener = ?l.socket.local_addr().ok(), cause = %e, "accept error");
            }
        }
        if self.listeners[i].as_ref().is_some_and(|l| l.closing) {
            self.close_listener(i);
        }
    }

    /// Starts a connection accepted for `fe`. Returns it if the listener is to hold off until
    /// it has its server socket (after a recent shortage of descriptors).
    fn start_conn(
        &mut self,
        fe: Arc<Frontend>,
        fd: OwnedFd,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> Option<(u32, u32)> {
        let snap = fe.snapshot();
        if snap.settings.mode == Mode::Http {
            self.hand_over(fe, fd, peer, permit);
            return None;
        }
        fe.counters.total.fetch_add(1, Ordering::Relaxed);
        fe.counters.current.fetch_add(1, Ordering::Relaxed);
        let (slot, gen) = self.conns.vacant();
        let mut c = Conn::new(slot, gen, fe, snap, fd, peer, permit, self.now);
        let next = c.attempt(&mut self.ring, self.now);
        let hold = (listener::careful() && c.waits_for_descriptors()).then_some((slot, gen));
        self.conns.conns[slot as usize] = Some(c);
        self.after(slot, gen, next);
        hold
    }

    /// A connection of a frontend in http mode goes to the worker's tokio runtime.
    fn hand_over(
        &self,
        fe: Arc<Frontend>,
        fd: OwnedFd,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let std = std::net::TcpStream::from(fd);
        if let Err(e) = std.set_nonblocking(true) {
            debug!(frontend = %fe.name, cause = %e, "cannot hand a connection over");
            return;
        }
        let worker = self.worker;
        self.tokio.spawn(async move {
            match tokio::net::TcpStream::from_std(std) {
                Ok(s) => fe.handle_accepted(s, peer, permit, worker).await,
                Err(e) => debug!(frontend = %fe.name, cause = %e, "cannot register a connection"),
            }
        });
    }

    fn fire_timers(&mut self) {
        while let Some(&Reverse((at, slot, gen))) = self.timers.peek() {
            if at > self.now {
                break;
            }
            self.timers.pop();
            let tag = Tag {
                slot,
                gen,
                op: Op::Other,
            };
            let now = self.now;
            let Some(c) = self.conns.get(&tag) else {
                continue;
            };
            if c.armed != Some(at) {
                // An older entry; the connection's earliest is still in the heap.
                continue;
            }
            c.armed = None;
            let next = c.on_timer(&mut self.ring, now);
            self.after(slot, gen, next);
        }
    }

    fn check_cuts(&mut self) {
        if self.cuts.is_empty() || self.now < self.next_cut_check {
            return;
        }
        self.next_cut_check = self.now + CUT_CHECK;
        let mut watching = std::mem::take(&mut self.cuts);
        watching.retain(|&(slot, gen)| {
            let tag = Tag {
                slot,
                gen,
                op: Op::Other,
            };
            // Gone (another generation in the slot) or no longer watching: dropped.
            let Some(c) = self.conns.get(&tag).filter(|c| c.has_cut()) else {
                return false;
            };
            let next = c.check_cut(&mut self.ring);
            let still = c.has_cut();
            self.after(slot, gen, next);
            still
        });
        // after() adds none here (each was told once), so nothing pushed meanwhile is lost.
        watching.append(&mut self.cuts);
        self.cuts = watching;
    }

    fn unstarve(&mut self) {
        if self.starved.is_empty() {
            return;
        }
        for (slot, gen) in std::mem::take(&mut self.starved) {
            let tag = Tag {
                slot,
                gen,
                op: Op::Other,
            };
            if let Some(c) = self.conns.get(&tag) {
                let next = c.unstarve(&mut self.ring);
                self.after(slot, gen, next);
            }
        }
    }
}

/// The tag of accept `k` of listener `i` (the accept's index as the generation).
fn listener_tag(i: usize, k: usize, op: Op) -> Tag {
    match op {
        // A listener's cancel names no connection.
        Op::Other => Tag {
            slot: u32::MAX,
            gen: 0,
            op,
        },
        _ => Tag {
            slot: i as u32,
            gen: k as u32,
            op,
        },
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (AF_UNSPEC) value.
    #[allow(unsafe_code)]
    unsafe {
        std::mem::zeroed()
    }
}

/// The client's address from what accept(2) wrote, as the epoll path logs and hashes it.
fn peer_addr(addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: `storage` is a sockaddr_storage (repr(transparent)), viewed as one; `addr` is
    // one too, and `len` what accept(2) wrote of it (at most its size).
    #[allow(unsafe_code)]
    let a = unsafe {
        *storage.view_as::<libc::sockaddr_storage>() = *addr;
        socket2::SockAddr::new(storage, len.min(size_of::<libc::sockaddr_storage>() as u32))
    };
    a.as_socket().map(listener::client_addr)
}
