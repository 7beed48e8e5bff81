//! The few system calls that no safe wrapper in our dependencies covers. The only module of
//! the crate allowed `unsafe`.
#![allow(unsafe_code)]

use std::io;

/// Sends `signal` to every process of the process group `pgid` (killpg(2)).
pub(crate) fn kill_process_group(pgid: u32, signal: i32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pgid out of range"))?;
    if pgid <= 1 {
        // killpg(0) is our own group and killpg(1) init's: never meant.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing pgid <= 1",
        ));
    }
    // SAFETY: killpg takes two integers and touches no memory of ours; a stale or foreign
    // group id is reported through errno (ESRCH, EPERM), never undefined behaviour.
    let rc = unsafe { libc::killpg(pgid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
