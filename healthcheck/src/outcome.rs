//! What one active check found: a small `Copy` result and the report kept for `/status`.

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use crate::postgres::PgResult;
use crate::state::Health;

/// Result of one active check. `Copy` and allocation-free: it is made on every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// TCP check: the connect succeeded.
    Connected,
    /// HTTP check: the status passed (`expect_status`, or any 2xx/3xx).
    HttpOk(u16),
    /// HTTP check: the server answered with a status that fails.
    HttpBadStatus(u16),
    /// The connect was refused: nothing listens on the port (region stopped).
    Refused,
    /// The connect did not finish within the check's timeout (host down, packets dropped).
    ConnectTimeout,
    /// Connected, but no complete status line and headers within the timeout (regiond hung).
    ResponseTimeout,
    /// The connect failed otherwise (no route, host unreachable, ...).
    ConnectError(io::ErrorKind),
    /// The server closed the connection before sending a status line.
    Closed,
    /// The answer is not an HTTP/1.x status line, or its headers exceed the read limit.
    BadResponse,
    /// Reading or writing failed after the connect (a reset, for one).
    IoError(io::ErrorKind),
    /// What a postgres check found (its own connect failures included).
    Postgres(PgResult),
    /// Not probed: the server's host name has no address.
    Unresolved,
}

impl CheckResult {
    /// True if the check passed.
    pub fn passed(self) -> bool {
        match self {
            CheckResult::Connected | CheckResult::HttpOk(_) => true,
            CheckResult::Postgres(r) => r.passed(),
            _ => false,
        }
    }

    /// The role a postgres check saw the server in, if it got that far.
    pub fn role(self) -> Option<crate::postgres::Role> {
        match self {
            CheckResult::Postgres(r) => r.role(),
            _ => None,
        }
    }

    /// A stable machine-readable name, for `/status` and metrics labels.
    pub fn code(self) -> &'static str {
        match self {
            CheckResult::Connected => "connected",
            CheckResult::HttpOk(_) => "http_ok",
            CheckResult::HttpBadStatus(_) => "http_bad_status",
            CheckResult::Refused => "refused",
            CheckResult::ConnectTimeout => "connect_timeout",
            CheckResult::ResponseTimeout => "response_timeout",
            CheckResult::ConnectError(_) => "connect_error",
            CheckResult::Closed => "closed",
            CheckResult::BadResponse => "bad_response",
            CheckResult::IoError(_) => "io_error",
            CheckResult::Postgres(r) => r.code(),
            CheckResult::Unresolved => "unresolved",
        }
    }

    /// HTTP status of the answer, if there was one.
    pub fn http_status(self) -> Option<u16> {
        match self {
            CheckResult::HttpOk(s) | CheckResult::HttpBadStatus(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Connected => f.write_str("connected"),
            CheckResult::HttpOk(s) => write!(f, "HTTP status {s}"),
            CheckResult::HttpBadStatus(s) => write!(f, "wrong HTTP status {s}"),
            CheckResult::Refused => f.write_str("connection refused"),
            CheckResult::ConnectTimeout => f.write_str("connect timeout"),
            CheckResult::ResponseTimeout => f.write_str("timeout waiting for response"),
            CheckResult::ConnectError(k) => write!(f, "connect error: {k}"),
            CheckResult::Closed => f.write_str("connection closed before response"),
            CheckResult::BadResponse => f.write_str("invalid HTTP response"),
            CheckResult::IoError(k) => write!(f, "I/O error: {k}"),
            CheckResult::Postgres(r) => r.fmt(f),
            CheckResult::Unresolved => f.write_str("host name not resolved"),
        }
    }
}

/// The last check of a server, as kept in [`crate::ServerState`] for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckReport {
    /// What the check found.
    pub result: CheckResult,
    /// From the start of the connect to the verdict.
    pub duration: Duration,
    /// Wall-clock time the check finished.
    pub at: SystemTime,
    /// After this check: how far the server is towards the other state; `None` when fully
    /// up or fully down.
    pub progress: Option<Progress>,
}

/// A server between states, as HAProxy's `UP 1/3` (one failure of three seen on the way
/// down) or `DOWN 1/2` (one success of two seen on the way up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The state the server is heading to.
    pub toward: Health,
    /// Checks seen that lead there.
    pub done: u32,
    /// Checks needed (`fall` going down, `rise` going up).
    pub needed: u32,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.toward {
            Health::Up => "going up",
            Health::Down => "going down",
        };
        write!(f, "{dir} {}/{}", self.done, self.needed)
    }
}
