//! The ring of one engine thread and the memory the kernel reads and writes through it: the
//! provided buffers that received data lands in. Every `unsafe` of the io_uring engine is here,
//! each with its SAFETY note; the rest of the engine builds entries from the safe calls below.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};
use tracing::warn;

/// Provided buffers per ring (a power of two, at most 2^15) and their size: 8 MiB per thread,
/// of which only the pages written are resident.
pub(super) const NBUF: u16 = 256;
pub(super) const BUF_SIZE: usize = 32 * 1024;
const BGID: u16 = 0;

/// What a completion is about: a slot (connection or listener), its generation (a completion
/// for a slot reused since is ignored) and the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tag {
    pub(super) slot: u32,
    pub(super) gen: u32,
    pub(super) op: Op,
}

/// The operations the engine puts on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// accept(2) on a listener (slot: the listener's).
    Accept,
    /// A read of the engine's eventfd: commands are waiting.
    Wake,
    /// connect(2) of a connection's server socket.
    Connect,
    /// The limit linked to `Connect` (`timeout_connect`).
    ConnectTimeout,
    /// The multishot recv of direction 0 (client to server) or 1.
    Recv(u8),
    /// A send of direction 0 or 1.
    Send(u8),
    /// Whatever needs no answer: cancels.
    Other,
}

impl Op {
    fn code(self) -> u64 {
        match self {
            Op::Accept => 1,
            Op::Wake => 2,
            Op::Connect => 3,
            Op::ConnectTimeout => 4,
            Op::Recv(d) => 5 + u64::from(d & 1),
            Op::Send(d) => 7 + u64::from(d & 1),
            Op::Other => 9,
        }
    }

    fn from_code(c: u64) -> Op {
        match c {
            1 => Op::Accept,
            2 => Op::Wake,
            3 => Op::Connect,
            4 => Op::ConnectTimeout,
            5 | 6 => Op::Recv((c - 5) as u8),
            7 | 8 => Op::Send((c - 7) as u8),
            _ => Op::Other,
        }
    }
}

impl Tag {
    fn encode(self) -> u64 {
        (u64::from(self.slot) << 32) | (u64::from(self.gen & 0xff_ffff) << 8) | self.op.code()
    }

    fn decode(v: u64) -> Tag {
        Tag {
            slot: (v >> 32) as u32,
            gen: ((v >> 8) & 0xff_ffff) as u32,
            op: Op::from_code(v & 0xff),
        }
    }

    /// Whether this tag names generation `gen` of its slot (generations wrap at 24 bits).
    pub(super) fn is(&self, gen: u32) -> bool {
        self.gen == gen & 0xff_ffff
    }
}

/// One completion.
#[derive(Debug, Clone, Copy)]
pub(super) struct Done {
    pub(super) tag: Tag,
    pub(super) res: i32,
    /// More completions follow for this operation (multishot).
    pub(super) more: bool,
    /// The provided buffer the data landed in.
    pub(super) buffer: Option<u16>,
}

/// The ring and its buffers.
pub(super) struct Ring {
    // Declared first, so dropped first: the kernel stops using the buffers with the ring.
    ring: IoUring,
    entries: *mut types::BufRingEntry,
    /// NBUF buffers of BUF_SIZE, written by the kernel: only ever named by raw pointers, never
    /// borrowed. Never freed, as the mapping above.
    memory: *mut u8,
    tail: u16,
    /// Entries pushed since the last submit.
    queued: usize,
}

impl Ring {
    /// A ring of `entries` submissions, with the buffer ring registered.
    pub(super) fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(entries * 4)
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(entries * 4).build(entries))?;
        let ring_len = usize::from(NBUF) * size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping (page-aligned, as the kernel wants the buffer
        // ring); the result is checked. It is never unmapped: a registered buffer ring must
        // outlive the ring, and this one lives as long as its thread.
        let entries_ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if entries_ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping is NBUF entries long and stays mapped (see above).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries_ptr as u64, NBUF, BGID, 0)?;
        }
        let mut r = Ring {
            ring,
            entries: entries_ptr.cast(),
            memory: Box::into_raw(vec![0u8; usize::from(NBUF) * BUF_SIZE].into_boxed_slice())
                .cast(),
            tail: 0,
            queued: 0,
        };
        for bid in 0..NBUF {
            r.give(bid);
        }
        Ok(r)
    }

    /// Where byte `off` of buffer `bid` is (both kept in range).
    fn at(&self, bid: u16, off: u32) -> *mut u8 {
        let at = usize::from(bid % NBUF) * BUF_SIZE + (off as usize).min(BUF_SIZE);
        // SAFETY: at <= NBUF * BUF_SIZE, within the allocation or one past its end.
        unsafe { self.memory.add(at) }
    }

    /// Hands buffer `bid` back to the kernel for the next recv.
    pub(super) fn give(&mut self, bid: u16) {
        let bid = bid % NBUF;
        let idx = usize::from(self.tail & (NBUF - 1));
        let addr = self.at(bid, 0) as u64;
        // SAFETY: idx < NBUF, within the mapping; the kernel reads an entry only once the tail
        // (stored with Release after it is written) has passed it.
        unsafe {
            let e = &mut *self.entries.add(idx);
            e.set_addr(addr);
            e.set_len(BUF_SIZE as u32);
            e.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = types::BufRingEntry::tail(self.entries).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every entry built by this module names only memory that outlives its
            // operation: the provided buffers (given back only after the send that reads them
            // has completed), and the boxed addresses and limits of `Accept`/`Connect`, which
            // their owners keep until the operation's last completion (see each builder).
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                self.queued += 1;
                return;
            }
            // Full: hand what is there to the kernel (never blocks) and go again.
            if let Err(err) = self.ring.submit() {
                warn!(cause = %err, "io_uring submit failed");
                return;
            }
            self.queued = 0;
        }
    }

    /// accept(2) on `fd`; the peer's address goes to `addr` (its length to `len`). The caller
    /// keeps both, boxed, until the accept's completion.
    pub(super) fn accept(
        &mut self,
        fd: RawFd,
        addr: *mut libc::sockaddr_storage,
        len: *mut libc::socklen_t,
        tag: Tag,
    ) {
        let e = opcode::Accept::new(types::Fd(fd), addr.cast(), len)
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(tag.encode());
        self.push(e);
    }

    /// connect(2) of `fd` to `addr`, given up after `limit` (the timeout's completion is tagged
    /// [`Op::ConnectTimeout`]). The caller keeps `addr` and `limit`, boxed, until both
    /// completions have come.
    pub(super) fn connect(
        &mut self,
        fd: RawFd,
        addr: &socket2::SockAddr,
        limit: &types::Timespec,
        tag: Tag,
    ) {
        let e = opcode::Connect::new(types::Fd(fd), addr.as_ptr().cast(), addr.len())
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(tag.encode());
        self.push(e);
        let t = opcode::LinkTimeout::new(limit).build().user_data(
            Tag {
                op: Op::ConnectTimeout,
                ..tag
            }
            .encode(),
        );
        self.push(t);
    }

    /// A multishot recv on `fd` into the provided buffers.
    pub(super) fn recv(&mut self, fd: RawFd, tag: Tag) {
        let e = opcode::RecvMulti::new(types::Fd(fd), BGID)
            .build()
            .user_data(tag.encode());
        self.push(e);
    }

    /// Sends bytes `start..end` of buffer `bid` to `fd`. The buffer is not given back before
    /// this completes.
    pub(super) fn send(&mut self, fd: RawFd, bid: u16, start: u32, end: u32, tag: Tag) {
        let end = end.min(BUF_SIZE as u32);
        let start = start.min(end);
        let e = opcode::Send::new(types::Fd(fd), self.at(bid, start), end - start)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(tag.encode());
        self.push(e);
    }

    /// Cancels every operation on `fd`; they complete with ECANCELED.
    pub(super) fn cancel_fd(&mut self, fd: RawFd, tag: Tag) {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data(tag.encode());
        self.push(e);
    }

    /// Cancels the operation tagged `target`.
    pub(super) fn cancel(&mut self, target: Tag, tag: Tag) {
        let e = opcode::AsyncCancel::new(target.encode())
            .build()
            .user_data(tag.encode());
        self.push(e);
    }

    /// A read of 8 bytes from the eventfd `fd` into `buf`, which the caller keeps, boxed,
    /// until it completes.
    pub(super) fn read_eventfd(&mut self, fd: RawFd, buf: *mut u8, tag: Tag) {
        let e = opcode::Read::new(types::Fd(fd), buf, 8)
            .build()
            .user_data(tag.encode());
        self.push(e);
    }

    /// Submits what was pushed and waits up to `limit` for at least one completion.
    pub(super) fn submit_and_wait(&mut self, limit: Duration) {
        let ts = types::Timespec::new()
            .sec(limit.as_secs())
            .nsec(limit.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            // ETIME: the limit passed; EINTR: a signal; EBUSY: completions to reap first.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) => {}
            Err(e) => {
                warn!(cause = %e, "io_uring wait failed");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.queued = 0;
    }

    /// The completions waiting, into `out` (emptied first).
    pub(super) fn reap(&mut self, out: &mut Vec<Done>) {
        out.clear();
        out.extend(self.ring.completion().map(|c| Done {
            tag: Tag::decode(c.user_data()),
            res: c.result(),
            more: io_uring::cqueue::more(c.flags()),
            buffer: io_uring::cqueue::buffer_select(c.flags()),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for op in [
            Op::Accept,
            Op::Wake,
            Op::Connect,
            Op::ConnectTimeout,
            Op::Recv(0),
            Op::Recv(1),
            Op::Send(0),
            Op::Send(1),
            Op::Other,
        ] {
            let t = Tag {
                slot: 70_000,
                gen: 0x0123_4567,
                op,
            };
            let back = Tag::decode(t.encode());
            assert_eq!((back.slot, back.op), (t.slot, t.op));
            assert!(back.is(t.gen), "{op:?}");
            assert!(!back.is(t.gen + 1));
        }
    }
}
