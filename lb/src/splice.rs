//! Zero-copy forwarding for bulk L4 transfers: splice(2) from the source socket into a pipe and
//! from the pipe into the destination socket, so the payload never enters user space.
//!
//! The only module of this crate with `unsafe`: the two syscalls, each with its SAFETY note.
//! Pipes are pooled per thread; a pipe goes back to the pool only when it is empty.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Bytes a pipe is asked to hold (the kernel rounds to pages; 64 KiB if refused).
const PIPE_SIZE: usize = 256 * 1024;
const POOL_MAX: usize = 64;

/// A non-blocking pipe used as an in-kernel buffer, with the bytes it holds.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet passed on.
    pub(crate) len: usize,
    capacity: usize,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// An empty pipe from the pool, or a new one.
    pub(crate) fn take() -> io::Result<Pipe> {
        if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
            return Ok(p);
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure (e.g. the pipe-max-size limit) is fine.
        let got = unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        let capacity = if got > 0 { got as usize } else { 64 * 1024 };
        Ok(Pipe {
            read,
            write,
            len: 0,
            capacity,
        })
    }

    /// Returns an empty pipe to the pool; a pipe still holding bytes is closed.
    pub(crate) fn give(self) {
        if self.len == 0 {
            PIPES.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_MAX {
                    p.push(self);
                }
            });
        }
    }

    /// Room left in the pipe.
    pub(crate) fn room(&self) -> usize {
        self.capacity.saturating_sub(self.len)
    }

    /// Moves what the socket `src` has (up to the room left) into the pipe. `Ok(0)` is EOF.
    pub(crate) fn fill(&mut self, src: RawFd) -> io::Result<usize> {
        let n = splice(src, self.write.as_raw_fd(), self.room())?;
        self.len += n;
        Ok(n)
    }

    /// Moves what the pipe holds into the socket `dst`.
    pub(crate) fn drain(&mut self, dst: RawFd) -> io::Result<usize> {
        let n = splice(self.read.as_raw_fd(), dst, self.len)?;
        self.len -= n.min(self.len);
        Ok(n)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (borrowed from live
    // sockets and pipes); null offsets mean "current position", as required for sockets and
    // pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn bytes_go_through_the_pipe_and_it_is_pooled_when_empty() {
        let (mut a, b) = UnixStream::pair().expect("pair");
        let (c, mut d) = UnixStream::pair().expect("pair");
        b.set_nonblocking(true).expect("nonblocking");
        c.set_nonblocking(true).expect("nonblocking");
        a.write_all(b"hello splice").expect("write");
        let mut p = Pipe::take().expect("pipe");
        assert_eq!(p.fill(b.as_raw_fd()).expect("fill"), 12);
        assert_eq!(p.len, 12);
        assert_eq!(p.drain(c.as_raw_fd()).expect("drain"), 12);
        assert_eq!(p.len, 0);
        let mut got = [0u8; 12];
        d.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hello splice");
        // Nothing more to read: EAGAIN, not EOF.
        let e = p.fill(b.as_raw_fd()).expect_err("no data");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(p.fill(b.as_raw_fd()).expect("eof"), 0);
        p.give();
        assert_eq!(PIPES.with(|p| p.borrow().len()), 1);
    }
}
