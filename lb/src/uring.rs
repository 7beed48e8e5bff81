//! The tcp mode's copy loop on io_uring (`[global] io = "io_uring"`), beside the epoll one in
//! [`crate::l4`]; epoll stays the default.
//!
//! Accept, connect (retries and redispatch through `Attempts`), timeouts, the cut on
//! `on_down = "shutdown_sessions"` and the access log are the epoll path's own: only the copy of
//! an established connection moves to the ring. Each worker thread has one ring, created on the
//! first connection it copies, with a ring of provided buffers. Each socket of a connection has
//! one multishot recv that picks its buffer from that ring; each buffer received goes out to the
//! peer as one send, in order per direction, and back to the ring once it is sent. A FIN
//! received is passed on with shutdown(2) once what came before it is sent (half-close); both
//! sockets are done once both FINs are passed on.
//!
//! The completions are handled by one driver task per worker, which waits on the ring's
//! descriptor through tokio and submits what the connections queued once per turn, so the
//! bytes move without waking a connection's task: its task only waits for the end, a phase
//! change of the timeouts (the first bytes either way, a FIN), its timer (the epoll path's
//! inactivity rules, read lazily from the last activity the driver recorded) and the cut.
//!
//! Bulk data: each buffer is one copy in and one copy out, as the epoll path's copy before it
//! switches to splice(2); the ring has no splice here.
//!
//! Why the `io-uring` crate and not a runtime built on it: tokio-uring, monoio and compio each
//! bring their own runtime and !Send I/O types, so the accept loops, the http mode (hyper), the
//! timers and the watch channels would have to move onto it. The ring driven from a tokio task
//! keeps all of that unchanged, and the copy loop is small enough to write against the ring.
//!
//! `unsafe` here: the ring names memory the kernel reads and writes (the provided buffers and
//! their ring, both owned by the thread's driver, which outlives every operation), and
//! shutdown(2) on a descriptor the connection's task holds open; each block has its SAFETY note.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use crate::l4::{went_down, CopyOutcome, End, Timeouts};

/// How the worker threads move the bytes of tcp-mode connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Io {
    /// Readiness (epoll) and read/write or splice: [`crate::l4::copy_bidirectional`].
    #[default]
    Epoll,
    /// Completions (io_uring): this module.
    IoUring,
}

thread_local! {
    static MODE: std::cell::Cell<Io> = const { std::cell::Cell::new(Io::Epoll) };
    static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
}

/// Sets how connections copied on this thread move their bytes (the worker threads call it).
pub fn set_thread_io(io: Io) {
    MODE.with(|m| m.set(io));
}

/// Whether connections on this thread are copied on io_uring.
pub(crate) fn enabled() -> bool {
    MODE.with(|m| m.get()) == Io::IoUring
}

/// Provided buffers per ring (a power of two) and their size.
const NBUF: u16 = 256;
const BUF_SIZE: usize = 16 * 1024;
const BGID: u16 = 0;

// user_data: slot << 32 | generation << 8 | kind.
const RECV: u64 = 0; // + direction
const SEND: u64 = 2; // + direction
const CANCEL: u64 = 4;

fn user_data(slot: u32, gen: u32, kind: u64) -> u64 {
    (u64::from(slot) << 32) | (u64::from(gen & 0xff_ffff) << 8) | kind
}

/// The provided buffers of one ring: NBUF buffers of BUF_SIZE, and the ring of entries through
/// which they are handed to the kernel. Never freed: a ring lives as long as its thread, and
/// the kernel tears a ring down after its descriptor is closed, so memory freed with it could
/// still be written by a recv completing meanwhile.
struct Buffers {
    entries: *mut types::BufRingEntry,
    memory: *mut u8,
    tail: u16,
}

impl Buffers {
    fn new(ring: &IoUring) -> io::Result<Buffers> {
        let ring_len = usize::from(NBUF) * size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping; the result is checked.
        let entries = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if entries == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let memory = Box::into_raw(vec![0u8; usize::from(NBUF) * BUF_SIZE].into_boxed_slice());
        let mut b = Buffers {
            entries: entries.cast(),
            memory: memory.cast(),
            tail: 0,
        };
        // SAFETY: the entries are page-aligned, NBUF long and live as long as the ring (the
        // driver drops the ring first).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, NBUF, BGID, 0)?;
        }
        for bid in 0..NBUF {
            b.give(bid);
        }
        Ok(b)
    }

    fn ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < NBUF, within the allocation.
        unsafe { self.memory.add(usize::from(bid) * BUF_SIZE) }
    }

    /// Hands buffer `bid` back to the kernel.
    fn give(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (NBUF - 1));
        // SAFETY: idx < NBUF; the kernel reads an entry only once the tail passes it.
        unsafe {
            let e = &mut *self.entries.add(idx);
            e.set_addr(self.ptr(bid) as u64);
            e.set_len(BUF_SIZE as u32);
            e.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = types::BufRingEntry::tail(self.entries) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

/// One direction of a connection: received from `fds[d]`, sent to `fds[1 - d]`.
#[derive(Default)]
struct Dir {
    recv_armed: bool,
    /// Buffers received, not yet all sent: (buffer id, length).
    queue: VecDeque<(u16, u32)>,
    /// Bytes of the queue's head already sent.
    off: u32,
    sending: bool,
    eof: bool,
    shut: bool,
    bytes: u64,
}

#[derive(Default)]
struct Conn {
    gen: u32,
    in_use: bool,
    fds: [RawFd; 2],
    dirs: [Dir; 2],
    /// Operations in the ring that name this slot.
    inflight: u32,
    /// The task is gone (or done): no new operations; the slot is freed at inflight 0.
    closing: bool,
    /// The side (0 client, 1 server) whose socket failed.
    failed: Option<usize>,
    last_activity: Option<Instant>,
    /// Something the task waits for happened since it last looked.
    changed: bool,
    waker: Option<Waker>,
}

impl Conn {
    fn notify(&mut self) {
        self.changed = true;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

struct Driver {
    // Dropped before `bufs`: the kernel stops using the buffers with the ring.
    ring: IoUring,
    bufs: Buffers,
    conns: Vec<Conn>,
    free: Vec<u32>,
    /// Submissions queued since the last submit.
    queued: bool,
    /// The driver task, while it waits.
    task: Option<Waker>,
    /// Directions whose recv ended for want of a buffer: armed again as buffers come back.
    starved: VecDeque<(u32, u32, usize)>,
    now: Instant,
}

impl Driver {
    fn new() -> io::Result<Driver> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_cqsize(16 * 1024)
            .build(4096)?;
        let bufs = Buffers::new(&ring)?;
        Ok(Driver {
            ring,
            bufs,
            conns: Vec::new(),
            free: Vec::new(),
            queued: false,
            task: None,
            starved: VecDeque::new(),
            now: Instant::now(),
        })
    }

    fn push(&mut self, e: &squeue::Entry) {
        loop {
            // SAFETY: every entry names memory that outlives its operation: buffers of
            // `bufs` (returned only after the send's completion) and no other.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                break;
            }
            // Full: submit what is there (never blocks).
            if let Err(e) = self.ring.submit() {
                warn!(cause = %e, "io_uring submit failed");
            }
        }
        if !self.queued {
            self.queued = true;
            if let Some(w) = self.task.take() {
                w.wake();
            }
        }
    }

    fn arm_recv(&mut self, slot: u32, d: usize) {
        let c = &mut self.conns[slot as usize];
        c.dirs[d].recv_armed = true;
        c.inflight += 1;
        let e = opcode::RecvMulti::new(types::Fd(c.fds[d]), BGID)
            .build()
            .user_data(user_data(slot, c.gen, RECV + d as u64));
        self.push(&e);
    }

    fn send_head(&mut self, slot: u32, d: usize) {
        let c = &mut self.conns[slot as usize];
        let Some(&(bid, len)) = c.dirs[d].queue.front() else {
            return;
        };
        let off = c.dirs[d].off;
        c.dirs[d].sending = true;
        c.inflight += 1;
        // SAFETY: off < len <= BUF_SIZE.
        let ptr = unsafe { self.bufs.ptr(bid).add(off as usize) };
        let e = opcode::Send::new(types::Fd(c.fds[1 - d]), ptr, len - off)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(slot, c.gen, SEND + d as u64));
        self.push(&e);
    }

    fn give(&mut self, bid: u16) {
        self.bufs.give(bid);
        while let Some((slot, gen, d)) = self.starved.pop_front() {
            let c = &self.conns[slot as usize];
            if c.in_use && c.gen == gen && !c.closing && !c.dirs[d].eof {
                self.arm_recv(slot, d);
                break;
            }
        }
    }

    /// Passes direction `d`'s FIN on once its queue is sent.
    fn maybe_shut(&mut self, slot: u32, d: usize) {
        let c = &mut self.conns[slot as usize];
        let dir = &mut c.dirs[d];
        if !dir.eof || dir.shut || !dir.queue.is_empty() || dir.sending {
            return;
        }
        dir.shut = true;
        if c.dirs[1 - d].shut {
            // Both ways done: the sockets are closed next, and close(2) sends this FIN.
            c.notify();
        } else {
            // ENOTCONN when the peer is gone already: its side will fail.
            let _ = shutdown_write(c.fds[1 - d]);
        }
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        let slot = (ud >> 32) as u32;
        let kind = ud & 0xff;
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if !c.in_use || (c.gen & 0xff_ffff) != ((ud >> 8) as u32 & 0xff_ffff) {
            return;
        }
        let buffer = cqueue::buffer_select(flags);
        match kind {
            RECV..=1 => {
                let d = kind as usize;
                let more = cqueue::more(flags);
                if !more {
                    c.inflight -= 1;
                    c.dirs[d].recv_armed = false;
                }
                if let Some(bid) = buffer {
                    if res > 0 && !c.closing {
                        let first = c.dirs[d].bytes == 0 && c.dirs[d].queue.is_empty();
                        c.dirs[d].queue.push_back((bid, res as u32));
                        c.last_activity = Some(self.now);
                        if first {
                            c.notify();
                        }
                        let sending = c.dirs[d].sending;
                        if !sending {
                            self.send_head(slot, d);
                        }
                    } else {
                        self.give(bid);
                    }
                }
                let c = &mut self.conns[slot as usize];
                if c.closing {
                } else if res == 0 {
                    c.dirs[d].eof = true;
                    c.last_activity = Some(self.now);
                    c.notify();
                    self.maybe_shut(slot, d);
                } else if res == -libc::ENOBUFS {
                    if !more {
                        let gen = c.gen;
                        self.starved.push_back((slot, gen, d));
                    }
                } else if res < 0 {
                    c.failed.get_or_insert(d);
                    c.notify();
                } else if !more {
                    self.arm_recv(slot, d);
                }
            }
            SEND..=3 => {
                let d = (kind - SEND) as usize;
                c.inflight -= 1;
                c.dirs[d].sending = false;
                if c.closing {
                } else if res < 0 {
                    c.failed.get_or_insert(1 - d);
                    c.notify();
                } else {
                    let dir = &mut c.dirs[d];
                    dir.off += res as u32;
                    dir.bytes += res as u64;
                    c.last_activity = Some(self.now);
                    let done = match dir.queue.front() {
                        Some(&(bid, len)) if dir.off >= len => Some(bid),
                        _ => None,
                    };
                    if let Some(bid) = done {
                        dir.queue.pop_front();
                        dir.off = 0;
                        self.give(bid);
                    }
                    if self.conns[slot as usize].dirs[d].queue.is_empty() {
                        self.maybe_shut(slot, d);
                    } else {
                        self.send_head(slot, d);
                    }
                }
            }
            _ => c.inflight -= 1,
        }
        self.release(slot);
    }

    /// Frees a closing slot once nothing in the ring names it.
    fn release(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !c.in_use || !c.closing || c.inflight > 0 {
            return;
        }
        let mut bids = Vec::new();
        for dir in &mut c.dirs {
            bids.extend(dir.queue.drain(..).map(|(bid, _)| bid));
        }
        c.in_use = false;
        c.waker = None;
        self.free.push(slot);
        for bid in bids {
            self.give(bid);
        }
    }

    fn open(&mut self, client: RawFd, server: RawFd) -> u32 {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(Conn::default());
            (self.conns.len() - 1) as u32
        });
        let c = &mut self.conns[slot as usize];
        let gen = c.gen.wrapping_add(1);
        *c = Conn {
            gen,
            in_use: true,
            fds: [client, server],
            ..Conn::default()
        };
        self.arm_recv(slot, 0);
        self.arm_recv(slot, 1);
        slot
    }

    /// The task is done with `slot`: operations still in the ring are cancelled; the slot is
    /// freed when the last of them completes. The descriptors may be closed at once: an
    /// operation holds its own reference to the socket.
    fn close(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !c.in_use || c.closing {
            return;
        }
        c.closing = true;
        let gen = c.gen;
        let mut cancel = Vec::new();
        for d in 0..2 {
            if c.dirs[d].recv_armed {
                cancel.push(user_data(slot, gen, RECV + d as u64));
            }
            if c.dirs[d].sending {
                cancel.push(user_data(slot, gen, SEND + d as u64));
            }
        }
        for ud in cancel {
            self.conns[slot as usize].inflight += 1;
            let e = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(ud).all())
                .build()
                .user_data(user_data(slot, gen, CANCEL));
            self.push(&e);
        }
        self.release(slot);
    }

    /// One turn: handle every completion, then submit what that and the tasks queued; again
    /// while a submit completes at once (sends to sockets with room do), a few times at most.
    fn turn(&mut self) {
        self.now = Instant::now();
        let mut done = Vec::new();
        for _ in 0..4 {
            done.clear();
            done.extend(
                self.ring
                    .completion()
                    .map(|e| (e.user_data(), e.result(), e.flags())),
            );
            for &(ud, res, flags) in &done {
                self.complete(ud, res, flags);
            }
            if !self.queued {
                break;
            }
            self.queued = false;
            if let Err(e) = self.ring.submit() {
                warn!(cause = %e, "io_uring submit failed");
            }
        }
    }
}

fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: fd is a socket the connection's task holds open while the slot is not closing.
    if unsafe { libc::shutdown(fd, libc::SHUT_WR) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The ring's descriptor, for tokio to wait on.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The driver task of this thread: submits once per turn, handles completions, and waits on the
/// ring's descriptor (readable: completions are there) or for new submissions.
async fn drive(fd: AsyncFd<RingFd>) {
    loop {
        DRIVER.with(|d| {
            if let Some(d) = d.borrow_mut().as_mut() {
                d.turn();
            }
        });
        std::future::poll_fn(|cx: &mut Context<'_>| {
            if let Poll::Ready(Ok(mut guard)) = fd.poll_read_ready(cx) {
                guard.clear_ready();
                return Poll::Ready(());
            }
            DRIVER.with(|d| match d.borrow_mut().as_mut() {
                Some(d) if d.queued => Poll::Ready(()),
                Some(d) => {
                    d.task = Some(cx.waker().clone());
                    Poll::Pending
                }
                None => Poll::Pending,
            })
        })
        .await;
    }
}

/// This thread's driver, started on first use: false when there is no ring (io_uring disabled,
/// or a runtime whose tasks may move between threads).
fn ensure_driver() -> bool {
    DRIVER.with(|cell| {
        if cell.borrow().is_some() {
            return true;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
            return false;
        }
        let started = Driver::new().and_then(|d| {
            // SAFETY: the ring's descriptor stays open as long as this thread: the driver is
            // never dropped before the thread ends, and the task that owns `fd` with its runtime.
            let fd = unsafe {
                AsyncFd::register_with_interest(
                    RingFd(d.ring.as_raw_fd()),
                    tokio::io::Interest::READABLE,
                )
            }
            .map_err(io::Error::from)?;
            Ok((d, fd))
        });
        match started {
            Ok((d, fd)) => {
                *cell.borrow_mut() = Some(d);
                handle.spawn(drive(fd));
                true
            }
            Err(e) => {
                warn!(cause = %e, "no io_uring on this worker: copying with epoll");
                set_thread_io(Io::Epoll);
                false
            }
        }
    })
}

/// Closes the slot when the copy ends or its task is dropped.
struct Slot(u32);

impl Drop for Slot {
    fn drop(&mut self) {
        DRIVER.with(|d| {
            if let Some(d) = d.borrow_mut().as_mut() {
                d.close(self.0);
            }
        });
    }
}

/// What the task reads of its connection.
struct Seen {
    up_bytes: u64,
    down_bytes: u64,
    up_eof: bool,
    done: bool,
    failed: Option<usize>,
    last: Option<Instant>,
}

fn look(slot: u32, cx: Option<&mut Context<'_>>) -> Option<Seen> {
    DRIVER.with(|d| {
        let mut d = d.borrow_mut();
        let c = d.as_mut()?.conns.get_mut(slot as usize)?;
        // The task's wait takes the change; the timer only reads.
        if let Some(cx) = cx {
            if !c.changed {
                c.waker = Some(cx.waker().clone());
                return None;
            }
            c.changed = false;
        }
        Some(Seen {
            up_bytes: c.dirs[0].bytes,
            down_bytes: c.dirs[1].bytes,
            up_eof: c.dirs[0].eof,
            done: c.dirs[0].shut && c.dirs[1].shut,
            failed: c.failed,
            last: c.last_activity,
        })
    })
}

/// [`crate::l4::copy_bidirectional`] on this thread's ring (the epoll one when there is none).
pub async fn copy_bidirectional(
    client: &TcpStream,
    server: &TcpStream,
    timeouts: Timeouts,
    mut cut: Option<watch::Receiver<u64>>,
) -> CopyOutcome {
    if !ensure_driver() {
        return crate::l4::copy_bidirectional(client, server, timeouts, cut).await;
    }
    let start = Instant::now();
    let Some(slot) = DRIVER.with(|d| {
        d.borrow_mut()
            .as_mut()
            .map(|d| d.open(client.as_raw_fd(), server.as_raw_fd()))
    }) else {
        return crate::l4::copy_bidirectional(client, server, timeouts, cut).await;
    };
    let slot = Slot(slot);
    let deadline_of = |s: &Seen| -> (Instant, End) {
        let last = s.last.unwrap_or(start);
        if s.up_bytes > 0 && s.down_bytes > 0 {
            (last + timeouts.timeout_tunnel, End::TunnelTimeout)
        } else if s.up_bytes > 0 || s.up_eof {
            (last + timeouts.timeout_server, End::ServerTimeout)
        } else {
            (last + timeouts.timeout_client, End::ClientTimeout)
        }
    };
    let mut seen = Seen {
        up_bytes: 0,
        down_bytes: 0,
        up_eof: false,
        done: false,
        failed: None,
        last: None,
    };
    let mut first_fin: Option<End> = None;
    let sleep = tokio::time::sleep_until(deadline_of(&seen).0);
    tokio::pin!(sleep);
    let end = loop {
        tokio::select! {
            s = std::future::poll_fn(|cx| match look(slot.0, Some(cx)) {
                Some(s) => Poll::Ready(s),
                None => Poll::Pending,
            }) => {
                seen = s;
                if first_fin.is_none() {
                    let down_eof = DRIVER.with(|d| {
                        d.borrow().as_ref().is_some_and(|d| d.conns[slot.0 as usize].dirs[1].eof)
                    });
                    if seen.up_eof {
                        first_fin = Some(End::ClientClose);
                    } else if down_eof {
                        first_fin = Some(End::ServerClose);
                    }
                }
                match seen.failed {
                    Some(0) => break End::ClientError,
                    Some(_) => break End::ServerError,
                    None => {}
                }
                if seen.done {
                    break first_fin.unwrap_or(End::ClientClose);
                }
                let (deadline, _) = deadline_of(&seen);
                sleep.as_mut().reset(deadline);
            }
            () = went_down(&mut cut) => break End::ServerDown,
            () = &mut sleep => {
                if let Some(s) = look(slot.0, None) {
                    seen = s;
                }
                let (deadline, why) = deadline_of(&seen);
                if Instant::now() >= deadline {
                    break why;
                }
                sleep.as_mut().reset(deadline);
            }
        }
    };
    if let Some(s) = look(slot.0, None) {
        seen = s;
    }
    drop(slot);
    CopyOutcome {
        to_server: seen.up_bytes,
        to_client: seen.down_bytes,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const LONG: Duration = Duration::from_secs(10);

    fn timeouts(client: Duration) -> Timeouts {
        Timeouts {
            timeout_client: client,
            timeout_server: LONG,
            timeout_tunnel: LONG,
        }
    }

    /// A client, the proxy's two sockets (its accepted client and its server connection) and
    /// the server's accepted socket, all on loopback.
    async fn four() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let back = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(front.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (accepted, _) = front.accept().await.expect("accept");
        let to_server = TcpStream::connect(back.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = back.accept().await.expect("accept");
        (client, accepted, to_server, server)
    }

    #[tokio::test]
    async fn copies_both_ways_and_passes_the_half_close_on() {
        set_thread_io(Io::IoUring);
        let (mut client, accepted, to_server, mut server) = four().await;
        let copy = tokio::spawn(async move {
            copy_bidirectional(&accepted, &to_server, timeouts(LONG), None).await
        });
        client.write_all(b"request").await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        server
            .read_to_end(&mut got)
            .await
            .expect("server reads to the FIN");
        assert_eq!(got, b"request");
        // The other direction goes on after the client's FIN.
        server.write_all(b"response").await.expect("write");
        drop(server);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("client reads");
        assert_eq!(back, b"response");
        let out = tokio::time::timeout(LONG, copy)
            .await
            .expect("ends")
            .expect("task");
        assert_eq!((out.to_server, out.to_client), (7, 8));
        assert_eq!(out.end, End::ClientClose);
        assert!(ensure_driver(), "the ring ran, not the epoll fallback");
    }

    #[tokio::test]
    async fn moves_more_than_its_buffers_hold_intact() {
        set_thread_io(Io::IoUring);
        let (mut client, accepted, to_server, mut server) = four().await;
        let copy = tokio::spawn(async move {
            copy_bidirectional(&accepted, &to_server, timeouts(LONG), None).await
        });
        let body: Vec<u8> = (0..(20 * 1024 * 1024u32))
            .map(|i| (i % 251) as u8)
            .collect();
        let sent = body.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.expect("write");
            client.shutdown().await.expect("half-close");
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.expect("read");
            rest
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read");
        assert!(
            got == body,
            "{} bytes of {} arrived, in order",
            got.len(),
            body.len()
        );
        drop(server);
        assert!(writer.await.expect("writer").is_empty());
        let out = tokio::time::timeout(LONG, copy)
            .await
            .expect("ends")
            .expect("task");
        assert_eq!(out.to_server, body.len() as u64);
        assert_eq!(out.end, End::ClientClose);
    }

    #[tokio::test]
    async fn a_silent_client_times_out() {
        set_thread_io(Io::IoUring);
        let (_client, accepted, to_server, _server) = four().await;
        let started = Instant::now();
        let out = copy_bidirectional(
            &accepted,
            &to_server,
            timeouts(Duration::from_millis(200)),
            None,
        )
        .await;
        assert_eq!(out.end, End::ClientTimeout);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_server_reset_is_a_server_error() {
        set_thread_io(Io::IoUring);
        let (mut client, accepted, to_server, server) = four().await;
        let copy = tokio::spawn(async move {
            copy_bidirectional(&accepted, &to_server, timeouts(LONG), None).await
        });
        client.write_all(b"x").await.expect("write");
        SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(server);
        let out = tokio::time::timeout(LONG, copy)
            .await
            .expect("ends")
            .expect("task");
        assert_eq!(out.end, End::ServerError);
    }

    #[tokio::test]
    async fn the_cut_ends_it_and_the_slot_is_freed() {
        set_thread_io(Io::IoUring);
        let (_client, accepted, to_server, _server) = four().await;
        let (tx, rx) = watch::channel(0u64);
        let copy = tokio::spawn(async move {
            copy_bidirectional(&accepted, &to_server, timeouts(LONG), Some(rx)).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(1).expect("send");
        let out = tokio::time::timeout(LONG, copy)
            .await
            .expect("ends")
            .expect("task");
        assert_eq!(out.end, End::ServerDown);
        // Its two recvs are cancelled: the slot goes back to the free list.
        let freed = async {
            while !DRIVER.with(|d| {
                d.borrow()
                    .as_ref()
                    .is_some_and(|d| d.conns.iter().all(|c| !c.in_use))
            }) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(LONG, freed).await.expect("slot freed");
    }
}
