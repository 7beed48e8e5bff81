//! The one system call that no safe wrapper in our dependencies covers: attaching a new TUN
//! device to a descriptor of `/dev/net/tun` (TUNSETIFF). The only module of the crate allowed
//! `unsafe`.
//!
//! Why not the `tun-rs` crate: it attaches to an existing persistent device of the same name
//! without saying so (it has no `IFF_TUN_EXCL`), and such a device outlives the process, which
//! is exactly what the VIP interface must never do. It also brings address management and
//! platform layers this crate does not use.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// The longest interface name Linux accepts (IFNAMSIZ less the NUL).
pub(crate) const MAX_NAME: usize = libc::IFNAMSIZ - 1;

/// Opens `/dev/net/tun` and creates the TUN device `name` on it: layer 3, no packet-info
/// header, and exclusive (`EBUSY` if a device of that name exists, persistent or held by
/// another process). The device is not persistent: the kernel deletes it, with its
/// addresses and routes, when the last descriptor closes, whether the process exits, is
/// killed or crashes. The descriptor is close-on-exec (std opens with `O_CLOEXEC`), so no
/// child process (track script, notify, vtysh) can keep the device alive.
pub(crate) fn create_tun(name: &str) -> io::Result<File> {
    if name.is_empty() || name.len() > MAX_NAME || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?} (1..={MAX_NAME} bytes, no '/' or NUL)"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: `ifreq` is plain old data (integers, byte arrays and a union of them), so the
    // all-zero value is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // The name is at most MAX_NAME bytes, so the last byte of ifr_name stays NUL.
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_TUN_EXCL) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, and `req` is one, alive and
    // exclusively borrowed for the whole call; the descriptor is ours and open (owned by
    // `file`, which outlives the call). Failures come back as -1 with errno.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}
