//! Passive observation: what the proxy reports of its exchanges with a server, and the record
//! kept when consecutive errors take a server down.
//!
//! The proxy reports every error ([`ServerState::observe_error`](crate::ServerState::observe_error))
//! and every exchange that went well ([`ServerState::observe_success`](crate::ServerState::observe_success)).
//! Errors in a row are counted; a success sets the count back to 0. At `error_limit` the
//! server is taken down on the spot (HAProxy's `observe layer4` + `on-error mark-down`), and
//! whatever runs its checks ([`crate::checker`]) logs it and brings it back: `rise` good
//! checks, or for a server with `check = false` a timed retry after `error_retry`.

use std::fmt;
use std::io;
use std::time::SystemTime;

/// One error the proxy saw on a server. `Copy`: it is made on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The connect was refused: nothing listens on the port.
    Refused,
    /// The connect did not finish within `timeout_connect`.
    ConnectTimeout,
    /// The connect failed otherwise (no route, host unreachable, ...).
    ConnectFailed,
    /// The server reset or closed the connection in the middle of an exchange (in http mode,
    /// before or during its response).
    Reset,
    /// The server made no progress for `timeout_server`.
    Timeout,
    /// The server answered with something that is not a valid HTTP response (http mode).
    BadResponse,
}

impl ProxyError {
    /// The kind of a failed connect.
    pub fn from_connect(e: &io::Error) -> ProxyError {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ProxyError::Refused,
            io::ErrorKind::TimedOut => ProxyError::ConnectTimeout,
            _ => ProxyError::ConnectFailed,
        }
    }

    /// Whether it happened while connecting.
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            ProxyError::Refused | ProxyError::ConnectTimeout | ProxyError::ConnectFailed
        )
    }

    /// A stable machine-readable name, for `/status`.
    pub fn code(self) -> &'static str {
        match self {
            ProxyError::Refused => "refused",
            ProxyError::ConnectTimeout => "connect_timeout",
            ProxyError::ConnectFailed => "connect_error",
            ProxyError::Reset => "reset",
            ProxyError::Timeout => "server_timeout",
            ProxyError::BadResponse => "bad_response",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyError::Refused => "connection refused",
            ProxyError::ConnectTimeout => "connect timeout",
            ProxyError::ConnectFailed => "connect error",
            ProxyError::Reset => "connection reset or closed by the server",
            ProxyError::Timeout => "server timeout",
            ProxyError::BadResponse => "invalid response",
        })
    }
}

/// Why a server is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    /// `fall` failed active checks.
    Check,
    /// `error_limit` consecutive proxy errors.
    Errors,
    /// The host name has no address (it does not resolve).
    Unresolved,
}

impl DownReason {
    /// The name used in `/status` and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DownReason::Check => "check",
            DownReason::Errors => "errors",
            DownReason::Unresolved => "unresolved",
        }
    }
}

/// The last time consecutive errors took a server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Errors in a row that did it.
    pub errors: u32,
    /// The last of them.
    pub last: ProxyError,
    /// Wall-clock time, for `/status`.
    pub at: SystemTime,
    /// Monotonic time, for the timed retry of a server without checks.
    pub since: tokio::time::Instant,
}

impl fmt::Display for Ejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} consecutive errors, last: {}", self.errors, self.last)
    }
}
