//! The replay state kept across restarts, in a small text file of maas-vip's own.
//!
//! keepalived 2.4.3 persists nothing (vrrp_auth_hmac.c `next_seq`): its sequence numbers are
//! UTC timestamps, so a restarted *sender* keeps growing as long as its clock moved forward,
//! and a restarted *receiver* forgets its marks, so that in time mode a capture younger than
//! the window is accepted once after the restart (in monotonic mode, any capture). maas-vip
//! signs the same way, and can in addition keep the last sequence it sent and the last one it
//! accepted from each sender in `state_file`, so that a replay from before a restart is
//! refused whatever its age; this file is ours, since keepalived has none to follow.
//!
//! ```text
//! maas-vip auth_hmac state 1
//! sent 6b0fb8331c8b0000
//! mark 10.99.0.12 6b0fb836602c0000
//! ```
//! Sequences are 16 hex digits; marks are most recently heard first.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use super::{AuthHmac, Seq};

const MAGIC: &str = "maas-vip auth_hmac state 1";

/// An auth_hmac's replay state: what the state file holds and [`AuthHmac::restore`] takes back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayState {
    /// The last sequence sent.
    pub sent: Seq,
    /// The last sequence accepted from each sender, most recent first.
    pub marks: Vec<(IpAddr, Seq)>,
}

/// Why a state file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Cannot read or write it.
    #[error("auth_hmac state file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Not one of ours, or damaged.
    #[error("auth_hmac state file {path}, line {line}: {what}")]
    Syntax {
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

impl ReplayState {
    /// The state of `a` now.
    pub fn of(a: &AuthHmac) -> ReplayState {
        ReplayState {
            sent: a.last_sent(),
            marks: a.marks(),
        }
    }

    /// Gives it back to `a`.
    pub fn restore_into(&self, a: &mut AuthHmac) {
        a.restore(self.sent, &self.marks);
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut s = format!("{MAGIC}\nsent {}\n", self.sent);
        for (addr, seq) in &self.marks {
            s.push_str(&format!("mark {addr} {seq}\n"));
        }
        s
    }

    /// Reads the file's text; `path` is for messages.
    pub fn parse(text: &str, path: &str) -> Result<ReplayState, StateError> {
        let bad = |line: usize, what: &str| StateError::Syntax {
            path: path.to_string(),
            line,
            what: what.to_string(),
        };
        let seq = |s: &str, line: usize| -> Result<Seq, StateError> {
            if s.len() != 16 {
                return Err(bad(line, "a sequence is 16 hex digits"));
            }
            u64::from_str_radix(s, 16)
                .map(Seq)
                .map_err(|_| bad(line, "a sequence is 16 hex digits"))
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        match lines.next() {
            Some((_, l)) if l == MAGIC => {}
            _ => return Err(bad(1, "not a maas-vip auth_hmac state file")),
        }
        let mut snap = ReplayState::default();
        let mut sent = false;
        for (n, l) in lines {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [] => {}
                ["sent", s] if !sent => {
                    snap.sent = seq(s, n)?;
                    sent = true;
                }
                ["mark", a, s] => {
                    let addr: IpAddr = a.parse().map_err(|_| bad(n, "bad address"))?;
                    snap.marks.push((addr, seq(s, n)?));
                }
                _ => return Err(bad(n, "expected `sent SEQ` once, then `mark ADDRESS SEQ`")),
            }
        }
        if !sent {
            return Err(bad(1, "no `sent` line"));
        }
        Ok(snap)
    }
}

/// Reads the state file; `Ok(None)` if there is none yet.
pub fn load(path: &Path) -> Result<Option<ReplayState>, StateError> {
    let p = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => ReplayState::parse(&text, &p).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io { path: p, source }),
    }
}

/// Writes the state file whole or not at all: a temporary file beside it (mode 0600), then a
/// rename over it.
pub fn save(path: &Path, snap: &ReplayState) -> Result<(), StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| StateError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(snap.to_text().as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}
