//! The PostgreSQL check: log in as a check user and ask the server whether it is in recovery.
//!
//! A region's `database_host` names one host, so a promotion leaves every region writing to a
//! dead or demoted primary unless something in front of PostgreSQL follows the primary. This
//! check is that something's eyes: it speaks the frontend/backend protocol (version 3.0) far
//! enough to learn the role of the server and no further.
//!
//! # The exchange
//! 1. StartupMessage (`user`, `database`, `application_name = maas-vip-check`), no TLS.
//! 2. Authentication as the server asks: trust (none), MD5 or SCRAM-SHA-256 (without channel
//!    binding, which needs TLS). A cleartext password is never sent: nothing here encrypts the
//!    connection, so the server's request for one fails the check instead.
//! 3. The role: PostgreSQL 14 and later report `in_hot_standby` in a ParameterStatus before the
//!    first ReadyForQuery, and it is `RecoveryInProgress()` as `pg_is_in_recovery()` is, so
//!    one round trip suffices. Older servers, or `PgCheck::always_query`, get
//!    `SELECT pg_is_in_recovery()` as a simple query.
//! 4. Terminate, then the write side is shut, so the server logs no broken connection.
//!
//! [`Exchange`] is that conversation without I/O: it takes the bytes the server sent and gives
//! the bytes to send and, at the end, a [`PgResult`]. [`exchange`] drives it over any async
//! stream; [`probe`] connects and bounds the whole by a timeout, as the TCP and HTTP probes of
//! [`crate::probe`] do, and returns a result of the same shape as their
//! [`crate::CheckResult`]: `Copy`, with [`PgResult::passed`], a stable
//! [`PgResult::code`] and a `Display` for logs and `/status`.
//!
//! The messages themselves are read and written by the `postgres-protocol` crate (rust-postgres'
//! wire layer, which also carries the MD5 and SCRAM client computations); this module only
//! decides which message may come when, and what it means for the check.
//!
//! # Secrets
//! The password lives in a [`Password`], whose `Debug` and `Display` print `<redacted>`; it is
//! never part of a result, an error or a log line. The server's error message (which names the
//! user, never the password) is logged at debug level.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{self, Message};
use postgres_protocol::message::frontend;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::outcome::CheckResult;

/// Largest message accepted from the server. Those a check sees (authentication requests,
/// parameter statuses, one row, errors) are far smaller; more means this is not PostgreSQL.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The query asked when the server did not report `in_hot_standby` at startup.
pub const RECOVERY_QUERY: &str = "SELECT pg_is_in_recovery()";

/// `application_name` of the check's sessions, so that a DBA sees them for what they are in
/// `pg_stat_activity` and in the server's log.
pub const APPLICATION_NAME: &str = "maas-vip-check";

/// Which role passes the check (`require = "primary" | "standby" | "any"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    /// Only a server that accepts writes (not in recovery): the one a database frontend wants.
    #[default]
    Primary,
    /// Only a server in recovery (a hot standby), for read-only frontends.
    Standby,
    /// Either: the server must only be up and let the check user in.
    Any,
}

impl Require {
    /// Whether a server in `role` passes.
    pub fn accepts(self, role: Role) -> bool {
        matches!(
            (self, role),
            (Require::Any, _)
                | (Require::Primary, Role::Primary)
                | (Require::Standby, Role::Standby)
        )
    }

    /// The config value: `"primary"`, `"standby"` or `"any"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Require::Primary => "primary",
            Require::Standby => "standby",
            Require::Any => "any",
        }
    }
}

impl fmt::Display for Require {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The role a server was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Not in recovery: accepts writes.
    Primary,
    /// In recovery (`pg_is_in_recovery()` is true): a hot standby, read-only.
    Standby,
}

impl Role {
    /// `"primary"` or `"standby"`, for `/status` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Primary => f.write_str("primary"),
            Role::Standby => f.write_str("standby (in recovery)"),
        }
    }
}

/// A SQLSTATE error code (five characters of `0-9A-Z`), as the server sent it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl SqlState {
    /// `28P01`: the password is wrong.
    pub const INVALID_PASSWORD: SqlState = SqlState(*b"28P01");
    /// `28000`: no `pg_hba.conf` line lets the user in, or the role does not exist.
    pub const INVALID_AUTHORIZATION: SqlState = SqlState(*b"28000");
    /// `57P03`: the server is starting, shutting down, or a standby without hot_standby.
    pub const CANNOT_CONNECT_NOW: SqlState = SqlState(*b"57P03");
    /// `3D000`: the database does not exist.
    pub const INVALID_CATALOG_NAME: SqlState = SqlState(*b"3D000");
    /// `53300`: `max_connections` reached.
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState(*b"53300");

    /// The code if `bytes` is one.
    pub fn parse(bytes: &[u8]) -> Option<SqlState> {
        let code: [u8; 5] = bytes.try_into().ok()?;
        code.iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            .then_some(SqlState(code))
    }

    /// The five characters.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and letters get in (`parse`), so this never fails.
        std::str::from_utf8(&self.0).unwrap_or("?????")
    }

    /// Class 28, "invalid authorization specification": the server refused the login.
    pub fn is_auth_failure(&self) -> bool {
        self.0.starts_with(b"28")
    }

    /// PostgreSQL's name of the condition, for the codes a check meets.
    pub fn name(&self) -> Option<&'static str> {
        Some(match &self.0 {
            b"28P01" => "invalid_password",
            b"28000" => "invalid_authorization_specification",
            b"57P03" => "cannot_connect_now",
            b"57P01" => "admin_shutdown",
            b"57P02" => "crash_shutdown",
            b"3D000" => "invalid_catalog_name",
            b"53300" => "too_many_connections",
            b"53200" => "out_of_memory",
            b"42501" => "insufficient_privilege",
            b"42883" => "undefined_function",
            b"08P01" => "protocol_violation",
            b"0A000" => "feature_not_supported",
            _ => return None,
        })
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{} {n}", self.as_str()),
            None => f.write_str(self.as_str()),
        }
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.as_str())
    }
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// The server refused it (SQLSTATE class 28): a wrong password, no `pg_hba.conf` line, a
    /// role that does not exist or may not log in.
    Rejected(SqlState),
    /// The server asks for a password and the check has none.
    NoPassword,
    /// The server asks for the password in clear text, which the check does not send over a
    /// connection nothing encrypts.
    Cleartext,
    /// The server asks for a method the check does not speak (Kerberos, GSSAPI, SSPI, ...:
    /// the number is the protocol's `AuthenticationRequest` code).
    Unsupported(u32),
    /// The server offers SASL without `SCRAM-SHA-256` (`-PLUS` alone needs TLS).
    NoSaslMechanism,
    /// The server's SCRAM messages do not verify: it does not know the password either, so
    /// it is not the server it claims to be.
    ScramServer,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthFailure::Rejected(s) => write!(f, "rejected by the server ({s})"),
            AuthFailure::NoPassword => {
                f.write_str("the server asks for a password and the check has none")
            }
            AuthFailure::Cleartext => f.write_str(
                "the server asks for a cleartext password, never sent over an unencrypted connection",
            ),
            AuthFailure::Unsupported(code) => {
                let name = match code {
                    2 => "Kerberos V5",
                    6 => "SCM credentials",
                    7 | 8 => "GSSAPI",
                    9 => "SSPI",
                    _ => "unknown",
                };
                write!(f, "unsupported authentication method {code} ({name})")
            }
            AuthFailure::NoSaslMechanism => {
                f.write_str("the server offers no SASL mechanism but SCRAM-SHA-256-PLUS (TLS)")
            }
            AuthFailure::ScramServer => f.write_str("the server's SCRAM proof does not verify"),
        }
    }
}

/// How an answer showed that the peer does not speak PostgreSQL's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// The answer starts with `HTTP/`.
    Http,
    /// A message of this type is not one a server sends at that point.
    Unexpected(u8),
    /// A message's length field is below 4 or above [`MAX_MESSAGE`].
    Length(u32),
    /// A message of this type whose body does not parse.
    Malformed(u8),
    /// The answer to [`RECOVERY_QUERY`] is not one boolean.
    BadAnswer,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Http => f.write_str("an HTTP server answered"),
            ProtocolError::Unexpected(t) => write!(f, "unexpected message type {}", Tag(*t)),
            ProtocolError::Length(n) => write!(f, "message length {n} out of bounds"),
            ProtocolError::Malformed(t) => write!(f, "malformed message of type {}", Tag(*t)),
            ProtocolError::BadAnswer => f.write_str("no boolean answer to pg_is_in_recovery()"),
        }
    }
}

/// A message type byte, printed as `'R'` when printable, else `0x15`.
struct Tag(u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "{:#04x}", self.0)
        }
    }
}

/// Result of one PostgreSQL check. `Copy` and allocation-free, as [`CheckResult`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgResult {
    /// Logged in; the server is in a role that `require` accepts.
    Up(Role),
    /// Logged in; the server is in a role that `require` does not accept.
    WrongRole {
        /// The role found.
        role: Role,
        /// The role wanted.
        require: Require,
    },
    /// The login failed.
    AuthFailed(AuthFailure),
    /// The server answered with an error other than a refused login (starting up, too many
    /// connections, no such database, ...).
    ServerError(SqlState),
    /// The peer answered, but not as PostgreSQL does.
    NotPostgres(ProtocolError),
    /// The connect was refused: nothing listens on the port.
    Refused,
    /// The connect did not finish within the timeout.
    ConnectTimeout,
    /// The connect failed otherwise (no route, host unreachable, ...).
    ConnectError(io::ErrorKind),
    /// Connected, but the exchange did not finish within the timeout.
    Timeout,
    /// The server closed the connection before the check was done.
    Closed,
    /// Reading or writing failed after the connect.
    IoError(io::ErrorKind),
}

impl PgResult {
    /// True if the check passed.
    pub fn passed(self) -> bool {
        matches!(self, PgResult::Up(_))
    }

    /// The role the server was seen in, if the check got that far.
    pub fn role(self) -> Option<Role> {
        match self {
            PgResult::Up(role) | PgResult::WrongRole { role, .. } => Some(role),
            _ => None,
        }
    }

    /// True if no PostgreSQL conversation took place for want of a connection.
    pub fn is_unreachable(self) -> bool {
        matches!(
            self,
            PgResult::Refused | PgResult::ConnectTimeout | PgResult::ConnectError(_)
        )
    }

    /// A stable machine-readable name, for `/status` and metrics labels; the failures that
    /// every check kind shares have the codes of [`CheckResult`].
    pub fn code(self) -> &'static str {
        match self {
            PgResult::Up(_) => "pg_up",
            PgResult::WrongRole { .. } => "pg_wrong_role",
            PgResult::AuthFailed(_) => "pg_auth_failed",
            PgResult::ServerError(_) => "pg_server_error",
            PgResult::NotPostgres(_) => "pg_protocol_error",
            other => other.shared().map_or("unknown", CheckResult::code),
        }
    }

    /// The [`CheckResult`] of the failures every check kind shares.
    fn shared(self) -> Option<CheckResult> {
        Some(match self {
            PgResult::Refused => CheckResult::Refused,
            PgResult::ConnectTimeout => CheckResult::ConnectTimeout,
            PgResult::ConnectError(k) => CheckResult::ConnectError(k),
            PgResult::Timeout => CheckResult::ResponseTimeout,
            PgResult::Closed => CheckResult::Closed,
            PgResult::IoError(k) => CheckResult::IoError(k),
            _ => return None,
        })
    }

    fn from_connect_failure(r: CheckResult) -> PgResult {
        match r {
            CheckResult::Refused => PgResult::Refused,
            CheckResult::ConnectError(k) => PgResult::ConnectError(k),
            _ => PgResult::ConnectTimeout,
        }
    }
}

impl fmt::Display for PgResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgResult::Up(role) | PgResult::WrongRole { role, .. } => role.fmt(f),
            PgResult::AuthFailed(why) => write!(f, "auth failed: {why}"),
            PgResult::ServerError(s) => write!(f, "server error {s}"),
            PgResult::NotPostgres(why) => write!(f, "not PostgreSQL: {why}"),
            PgResult::Timeout => f.write_str("timeout waiting for PostgreSQL"),
            PgResult::Closed => f.write_str("connection closed before the check was done"),
            other => match other.shared() {
                Some(r) => r.fmt(f),
                None => f.write_str("unknown"),
            },
        }
    }
}

/// A password, kept out of every `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Box<[u8]>);

impl Password {
    /// A password from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Password {
        Password(bytes.into().into_boxed_slice())
    }

    /// Reads a password file: its whole content, less one final line ending (`\n` or
    /// `\r\n`). An empty file, or one of several lines, is an error (it is likely the wrong
    /// file: a pgpass file has one line per server).
    pub fn from_file(path: &Path) -> Result<Password, PasswordFileError> {
        let err = |kind| PasswordFileError {
            path: path.to_path_buf(),
            kind,
        };
        let mut bytes = std::fs::read(path).map_err(|e| err(PasswordFileErrorKind::Io(e)))?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(err(PasswordFileErrorKind::Empty));
        }
        if bytes.iter().any(|&b| b == b'\n' || b == b'\r') {
            return Err(err(PasswordFileErrorKind::SeveralLines));
        }
        Ok(Password::new(bytes))
    }

    /// The bytes, for the authentication exchange alone.
    fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A password file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("password file {}: {kind}", path.display())]
pub struct PasswordFileError {
    pub path: PathBuf,
    /// What is wrong with it.
    pub kind: PasswordFileErrorKind,
}

/// What is wrong with a password file.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileErrorKind {
    /// It cannot be read.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// It holds nothing but perhaps a line ending.
    #[error("empty")]
    Empty,
    /// It holds more than one line.
    #[error("more than one line (the file holds the password alone)")]
    SeveralLines,
}

/// A warning when every user of the host may read the password file (mode `o+r`); `Ok(None)`
/// when only its owner and group may. For `maas-vip check`.
pub fn password_file_warning(path: &Path) -> io::Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    Ok((mode & 0o004 != 0).then(|| {
        format!(
            "password file {} is readable by every user (mode {:04o}); chmod 600 or 640 it",
            path.display(),
            mode & 0o7777
        )
    }))
}

/// What a check logs in as, and what it wants to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgCheck {
    user: String,
    database: String,
    password: Option<Password>,
    require: Require,
    always_query: bool,
}

/// A user or database name the protocol cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgCheckError {
    /// The user name is empty.
    #[error("postgres check `user` must not be empty")]
    EmptyUser,
    /// A name holds a NUL byte.
    #[error("postgres check `{0}` must not contain a NUL character")]
    Nul(&'static str),
}

impl PgCheck {
    /// Log in as `user` to `database` (PostgreSQL's default database is the user's name),
    /// without a password, requiring a primary.
    pub fn new(user: &str, database: &str) -> Result<PgCheck, PgCheckError> {
        if user.is_empty() {
            return Err(PgCheckError::EmptyUser);
        }
        if user.contains('\0') {
            return Err(PgCheckError::Nul("user"));
        }
        if database.contains('\0') {
            return Err(PgCheckError::Nul("database"));
        }
        let database = if database.is_empty() { user } else { database };
        Ok(PgCheck {
            user: user.to_string(),
            database: database.to_string(),
            password: None,
            require: Require::default(),
            always_query: false,
        })
    }

    /// The password to answer MD5 and SCRAM requests with.
    pub fn with_password(mut self, password: Password) -> PgCheck {
        self.password = Some(password);
        self
    }

    /// The role that passes.
    pub fn with_require(mut self, require: Require) -> PgCheck {
        self.require = require;
        self
    }

    /// Ask `pg_is_in_recovery()` even when the server reported `in_hot_standby` at startup
    /// (a pooler in between may report a pooled server's startup value): one round trip more.
    pub fn with_always_query(mut self, always: bool) -> PgCheck {
        self.always_query = always;
        self
    }

    /// The user the check logs in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The database the check connects to.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The role that passes.
    pub fn require(&self) -> Require {
        self.require
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// StartupMessage sent; authentication requests until AuthenticationOk.
    Auth,
    /// Logged in; parameter statuses and BackendKeyData until ReadyForQuery.
    Startup,
    /// [`RECOVERY_QUERY`] sent; its row until ReadyForQuery.
    Query,
    /// The result is known.
    Done,
}

/// One check's conversation, without I/O.
///
/// Send [`Exchange::take_output`] to the server, feed what comes back to
/// [`Exchange::received`], and when that returns a result send the output one last time (it
/// holds the Terminate, if the check got far enough to owe one) and close. If the server
/// closes first, [`Exchange::closed`] gives the result.
pub struct Exchange<'a> {
    check: &'a PgCheck,
    phase: Phase,
    input: BytesMut,
    output: BytesMut,
    scram: Option<sasl::ScramSha256>,
    /// `in_hot_standby` as reported at startup.
    startup_role: Option<Role>,
    /// The answer to [`RECOVERY_QUERY`].
    query_role: Option<Role>,
    /// An error the server reported in the query phase, returned at the next ReadyForQuery.
    query_error: Option<SqlState>,
    /// The server ended the session with a FATAL error: no Terminate is owed.
    fatal: bool,
    server_message: Option<String>,
}

impl<'a> Exchange<'a> {
    /// A conversation whose StartupMessage is ready in the output.
    pub fn new(check: &'a PgCheck) -> Exchange<'a> {
        let mut x = Exchange {
            check,
            phase: Phase::Auth,
            input: BytesMut::new(),
            output: BytesMut::new(),
            scram: None,
            startup_role: None,
            query_role: None,
            query_error: None,
            fatal: false,
            server_message: None,
        };
        let params = [
            ("user", check.user.as_str()),
            ("database", check.database.as_str()),
            ("application_name", APPLICATION_NAME),
        ];
        // PgCheck::new let no NUL in; the only failure is a name over 2 GiB.
        if frontend::startup_message(params, &mut x.output).is_err() {
            x.output.clear();
            x.phase = Phase::Done;
        }
        x
    }

    /// The bytes to send now (empty if none).
    pub fn take_output(&mut self) -> BytesMut {
        self.output.split()
    }

    /// The message of the last ErrorResponse, for a debug log line. It never holds the
    /// password: PostgreSQL does not echo it.
    pub fn server_message(&self) -> Option<&str> {
        self.server_message.as_deref()
    }

    /// Bytes from the server; `Some` once the check's result is known.
    pub fn received(&mut self, bytes: &[u8]) -> Option<PgResult> {
        if self.phase == Phase::Done {
            return None;
        }
        self.input.extend_from_slice(bytes);
        loop {
            let header = match backend::Header::parse(&self.input) {
                Ok(Some(h)) => h,
                Ok(None) => return None,
                // A length below 4.
                Err(_) => return self.fail(ProtocolError::Length(length_field(&self.input))),
            };
            if self.phase == Phase::Auth && self.input.starts_with(b"HTTP/") {
                return self.fail(ProtocolError::Http);
            }
            let tag = header.tag();
            if !self.expects(tag) {
                return self.fail(ProtocolError::Unexpected(tag));
            }
            let len = length_field(&self.input);
            if len as usize > MAX_MESSAGE {
                return self.fail(ProtocolError::Length(len));
            }
            if self.input.len() < len as usize + 1 {
                return None;
            }
            if tag == backend::AUTHENTICATION_TAG && len >= 8 {
                // The parser knows no request codes but its own: read the code first.
                let code = u32::from_be_bytes([
                    self.input[5],
                    self.input[6],
                    self.input[7],
                    self.input[8],
                ]);
                if !matches!(code, 0 | 3 | 5 | 10 | 11 | 12) {
                    return self.done(PgResult::AuthFailed(AuthFailure::Unsupported(code)));
                }
            }
            let msg = match Message::parse(&mut self.input) {
                Ok(Some(m)) => m,
                Ok(None) => return None,
                Err(_) => return self.fail(ProtocolError::Malformed(tag)),
            };
            if let Some(result) = self.handle(msg, tag) {
                return self.done(result);
            }
        }
    }

    /// The server closed the connection: the result, unless one was already returned.
    pub fn closed(&mut self) -> PgResult {
        let r = match self.query_error {
            Some(code) => PgResult::ServerError(code),
            None => PgResult::Closed,
        };
        self.phase = Phase::Done;
        r
    }

    /// Message types a server may send in the current phase.
    fn expects(&self, tag: u8) -> bool {
        use backend::*;
        let always = [ERROR_RESPONSE_TAG, NOTICE_RESPONSE_TAG];
        always.contains(&tag)
            || match self.phase {
                Phase::Auth => tag == AUTHENTICATION_TAG,
                Phase::Startup => [
                    PARAMETER_STATUS_TAG,
                    BACKEND_KEY_DATA_TAG,
                    READY_FOR_QUERY_TAG,
                ]
                .contains(&tag),
                Phase::Query => [
                    ROW_DESCRIPTION_TAG,
                    DATA_ROW_TAG,
                    COMMAND_COMPLETE_TAG,
                    EMPTY_QUERY_RESPONSE_TAG,
                    PARAMETER_STATUS_TAG,
                    READY_FOR_QUERY_TAG,
                ]
                .contains(&tag),
                Phase::Done => false,
            }
    }

    /// One whole message; `Some` when it settles the check.
    fn handle(&mut self, msg: Message, tag: u8) -> Option<PgResult> {
        let malformed = PgResult::NotPostgres(ProtocolError::Malformed(tag));
        match msg {
            Message::NoticeResponse(_) => None,
            Message::ErrorResponse(body) => {
                let mut code = None;
                let mut fields = body.fields();
                loop {
                    match fields.next() {
                        Ok(Some(f)) if f.type_() == b'C' => code = SqlState::parse(f.value_bytes()),
                        Ok(Some(f)) if f.type_() == b'M' => {
                            self.server_message =
                                Some(String::from_utf8_lossy(f.value_bytes()).into_owned());
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return Some(malformed),
                    }
                }
                let Some(code) = code else {
                    return Some(malformed);
                };
                match self.phase {
                    // An ERROR: the server still sends ReadyForQuery, then gets a Terminate.
                    Phase::Query => {
                        self.query_error = Some(code);
                        None
                    }
                    // Before ReadyForQuery every error is FATAL: the server closes.
                    _ => {
                        self.fatal = true;
                        Some(if code.is_auth_failure() {
                            PgResult::AuthFailed(AuthFailure::Rejected(code))
                        } else {
                            PgResult::ServerError(code)
                        })
                    }
                }
            }
            Message::AuthenticationOk => {
                if self.scram.is_some() {
                    // A server that skips SASLFinal has not proven it knows the password.
                    return Some(PgResult::AuthFailed(AuthFailure::ScramServer));
                }
                self.phase = Phase::Startup;
                None
            }
            Message::AuthenticationCleartextPassword => {
                Some(PgResult::AuthFailed(AuthFailure::Cleartext))
            }
            Message::AuthenticationMd5Password(body) => {
                let Some(password) = &self.check.password else {
                    return Some(PgResult::AuthFailed(AuthFailure::NoPassword));
                };
                let hash = md5_hash(self.check.user.as_bytes(), password.expose(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut self.output)
                    .err()
                    .map(|e| PgResult::IoError(e.kind()))
            }
            Message::AuthenticationSasl(body) => {
                let Some(password) = &self.check.password else {
                    return Some(PgResult::AuthFailed(AuthFailure::NoPassword));
                };
                if self.scram.is_some() {
                    return Some(PgResult::NotPostgres(ProtocolError::Unexpected(tag)));
                }
                let mut offered = false;
                let mut mechanisms = body.mechanisms();
                loop {
                    match mechanisms.next() {
                        Ok(Some(m)) => offered |= m == sasl::SCRAM_SHA_256,
                        Ok(None) => break,
                        Err(_) => return Some(malformed),
                    }
                }
                if !offered {
                    return Some(PgResult::AuthFailed(AuthFailure::NoSaslMechanism));
                }
                // No TLS, so no channel binding: the gs2 header says "n" (client does not
                // support it), as libpq says without TLS.
                let scram =
                    sasl::ScramSha256::new(password.expose(), sasl::ChannelBinding::unsupported());
                let sent = frontend::sasl_initial_response(
                    sasl::SCRAM_SHA_256,
                    scram.message(),
                    &mut self.output,
                );
                self.scram = Some(scram);
                sent.err().map(|e| PgResult::IoError(e.kind()))
            }
            Message::AuthenticationSaslContinue(body) => {
                let Some(scram) = &mut self.scram else {
                    return Some(PgResult::NotPostgres(ProtocolError::Unexpected(tag)));
                };
                if scram.update(body.data()).is_err() {
                    return Some(PgResult::AuthFailed(AuthFailure::ScramServer));
                }
                frontend::sasl_response(scram.message(), &mut self.output)
                    .err()
                    .map(|e| PgResult::IoError(e.kind()))
            }
            Message::AuthenticationSaslFinal(body) => {
                let Some(mut scram) = self.scram.take() else {
                    return Some(PgResult::NotPostgres(ProtocolError::Unexpected(tag)));
                };
                scram
                    .finish(body.data())
                    .is_err()
                    .then_some(PgResult::AuthFailed(AuthFailure::ScramServer))
            }
            Message::ParameterStatus(body) => {
                if self.phase == Phase::Startup && body.name().ok() == Some("in_hot_standby") {
                    self.startup_role = match body.value() {
                        Ok("on") => Some(Role::Standby),
                        Ok("off") => Some(Role::Primary),
                        _ => return Some(malformed),
                    };
                }
                None
            }
            Message::BackendKeyData(_)
            | Message::RowDescription(_)
            | Message::CommandComplete(_) => None,
            Message::DataRow(body) => {
                if self.query_role.is_some() {
                    return Some(PgResult::NotPostgres(ProtocolError::BadAnswer));
                }
                self.query_role = recovery_answer(&body);
                self.query_role
                    .is_none()
                    .then_some(PgResult::NotPostgres(ProtocolError::BadAnswer))
            }
            Message::EmptyQueryResponse => Some(PgResult::NotPostgres(ProtocolError::BadAnswer)),
            Message::ReadyForQuery(_) => self.ready(),
            // `expects` lets no other type through.
            _ => Some(PgResult::NotPostgres(ProtocolError::Unexpected(tag))),
        }
    }

    /// ReadyForQuery: ask, or judge.
    fn ready(&mut self) -> Option<PgResult> {
        if self.phase == Phase::Startup {
            if let (Some(role), false) = (self.startup_role, self.check.always_query) {
                return Some(self.verdict(role));
            }
            self.phase = Phase::Query;
            return frontend::query(RECOVERY_QUERY, &mut self.output)
                .err()
                .map(|e| PgResult::IoError(e.kind()));
        }
        if let Some(code) = self.query_error {
            return Some(PgResult::ServerError(code));
        }
        Some(match self.query_role {
            Some(role) => self.verdict(role),
            None => PgResult::NotPostgres(ProtocolError::BadAnswer),
        })
    }

    fn verdict(&self, role: Role) -> PgResult {
        let require = self.check.require;
        if require.accepts(role) {
            PgResult::Up(role)
        } else {
            PgResult::WrongRole { role, require }
        }
    }

    fn fail(&mut self, why: ProtocolError) -> Option<PgResult> {
        self.done(PgResult::NotPostgres(why))
    }

    /// The end: a Terminate is owed once logged in, unless the server ended the session
    /// itself (before login the server takes a bare close without a log line, which is what
    /// psql does too), and nothing else is sent.
    fn done(&mut self, result: PgResult) -> Option<PgResult> {
        self.output.clear();
        if matches!(self.phase, Phase::Startup | Phase::Query) && !self.fatal {
            frontend::terminate(&mut self.output);
        }
        self.phase = Phase::Done;
        Some(result)
    }
}

/// The length field of the message at the start of `buf` (at least 5 bytes).
fn length_field(buf: &[u8]) -> u32 {
    buf.get(1..5)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `pg_is_in_recovery()`'s one column in text format: `t` or `f`.
fn recovery_answer(row: &backend::DataRowBody) -> Option<Role> {
    let mut ranges = row.ranges();
    let first = ranges.next().ok()??;
    if !matches!(ranges.next(), Ok(None)) {
        return None;
    }
    match row.buffer().get(first?)? {
        b"t" => Some(Role::Standby),
        b"f" => Some(Role::Primary),
        _ => None,
    }
}

/// Runs one check over `stream` (connected to the server), not bounded in time: the caller
/// bounds it, as [`probe`] does.
pub async fn exchange<S>(mut stream: S, check: &PgCheck) -> PgResult
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut x = Exchange::new(check);
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let out = x.take_output();
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out).await {
                return PgResult::IoError(e.kind());
            }
        }
        let n = match stream.read(&mut buf).await {
            Ok(0) => return x.closed(),
            Ok(n) => n,
            Err(e) => return PgResult::IoError(e.kind()),
        };
        if let Some(result) = x.received(&buf[..n]) {
            if let Some(message) = x.server_message() {
                tracing::debug!(result = %result, server_message = message, "postgres check");
            }
            let last = x.take_output();
            // The verdict stands whether or not the Terminate gets through.
            if !last.is_empty() {
                let _ = stream.write_all(&last).await;
            }
            let _ = stream.shutdown().await;
            return result;
        }
    }
}

/// Connects to `target` and runs one check, all within `timeout`.
pub async fn probe(target: SocketAddr, check: &PgCheck, timeout: Duration) -> PgResult {
    let deadline = Instant::now() + timeout;
    let stream = match connect(target, deadline).await {
        Ok(s) => s,
        Err(r) => return PgResult::from_connect_failure(r),
    };
    let _ = stream.set_nodelay(true);
    let result = timeout_at(deadline, exchange(stream, check))
        .await
        .unwrap_or(PgResult::Timeout);
    tracing::trace!(server = %target, result = %result, "postgres check done");
    result
}

/// A TCP connect bounded by `deadline`; its failure as the TCP check reports it.
async fn connect(target: SocketAddr, deadline: Instant) -> Result<TcpStream, CheckResult> {
    match timeout_at(deadline, TcpStream::connect(target)).await {
        Err(_) => Err(CheckResult::ConnectTimeout),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Err(CheckResult::Refused),
        Ok(Err(e)) => Err(CheckResult::ConnectError(e.kind())),
        Ok(Ok(s)) => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend message: tag, length, body.
    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn auth(code: u32, rest: &[u8]) -> Vec<u8> {
        let mut b = code.to_be_bytes().to_vec();
        b.extend_from_slice(rest);
        msg(b'R', &b)
    }

    fn param(name: &str, value: &str) -> Vec<u8> {
        msg(b'S', format!("{name}\0{value}\0").as_bytes())
    }

    fn error(code: &str, message: &str) -> Vec<u8> {
        msg(
            b'E',
            format!("SFATAL\0VFATAL\0C{code}\0M{message}\0\0").as_bytes(),
        )
    }

    fn ready() -> Vec<u8> {
        msg(b'Z', b"I")
    }

    /// What PostgreSQL 15 sends after AuthenticationOk (abridged), then ReadyForQuery.
    fn startup(in_hot_standby: Option<&str>) -> Vec<u8> {
        let mut v = auth(0, b"");
        v.extend(param("server_version", "15.18 (Debian 15.18-0+deb12u1)"));
        if let Some(h) = in_hot_standby {
            v.extend(param("in_hot_standby", h));
        }
        v.extend(param("DateStyle", "ISO, MDY"));
        v.extend(msg(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]));
        v.extend(ready());
        v
    }

    fn row_description() -> Vec<u8> {
        let mut b = 1u16.to_be_bytes().to_vec();
        b.extend_from_slice(b"pg_is_in_recovery\0");
        b.extend_from_slice(&0u32.to_be_bytes()); // table oid
        b.extend_from_slice(&0u16.to_be_bytes()); // column
        b.extend_from_slice(&16u32.to_be_bytes()); // bool
        b.extend_from_slice(&1u16.to_be_bytes()); // size
        b.extend_from_slice(&(-1i32).to_be_bytes()); // modifier
        b.extend_from_slice(&0u16.to_be_bytes()); // text
        msg(b'T', &b)
    }

    fn data_row(cols: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = (cols.len() as u16).to_be_bytes().to_vec();
        for c in cols {
            match c {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        msg(b'D', &b)
    }

    fn answer(value: &[u8]) -> Vec<u8> {
        let mut v = row_description();
        v.extend(data_row(&[Some(value)]));
        v.extend(msg(b'C', b"SELECT 1\0"));
        v.extend(ready());
        v
    }

    const TERMINATE: &[u8] = b"X\0\0\0\x04";

    fn check() -> PgCheck {
        PgCheck::new("maas_check", "postgres").expect("valid names")
    }

    /// Feeds `bytes` at once and byte by byte: both must give `want`. Returns the final
    /// output of the whole feed.
    fn run(check: &PgCheck, bytes: &[u8], want: Option<PgResult>) -> BytesMut {
        let mut x = Exchange::new(check);
        let startup = x.take_output();
        assert_eq!(&startup[4..8], &[0, 3, 0, 0], "protocol 3.0");
        let mut split = Exchange::new(check);
        split.take_output();
        let mut got = None;
        for b in bytes {
            if let Some(r) = split.received(std::slice::from_ref(b)) {
                assert!(got.is_none(), "a second result");
                got = Some(r);
            }
        }
        let whole = x.received(bytes);
        assert_eq!(whole, want, "whole");
        assert_eq!(got, want, "byte by byte");
        x.take_output()
    }

    #[test]
    fn startup_message_names_user_database_and_application() {
        let c = check();
        let mut x = Exchange::new(&c);
        let out = x.take_output();
        let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert_eq!(len, out.len());
        let body = &out[8..];
        assert_eq!(
            body,
            b"user\0maas_check\0database\0postgres\0application_name\0maas-vip-check\0\0"
        );
        assert!(x.take_output().is_empty());
        let d = PgCheck::new("u", "").expect("valid");
        assert_eq!(
            d.database(),
            "u",
            "database defaults to the user, as libpq's"
        );
        assert_eq!(PgCheck::new("", "d"), Err(PgCheckError::EmptyUser));
        assert_eq!(PgCheck::new("u\0", "d"), Err(PgCheckError::Nul("user")));
        assert_eq!(PgCheck::new("u", "d\0"), Err(PgCheckError::Nul("database")));
    }

    #[test]
    fn trust_and_in_hot_standby_settle_without_a_query() {
        let primary = check();
        let out = run(
            &primary,
            &startup(Some("off")),
            Some(PgResult::Up(Role::Primary)),
        );
        assert_eq!(&out[..], TERMINATE, "a clean Terminate and nothing else");
        run(
            &primary,
            &startup(Some("on")),
            Some(PgResult::WrongRole {
                role: Role::Standby,
                require: Require::Primary,
            }),
        );
        let standby = check().with_require(Require::Standby);
        run(
            &standby,
            &startup(Some("on")),
            Some(PgResult::Up(Role::Standby)),
        );
        run(
            &standby,
            &startup(Some("off")),
            Some(PgResult::WrongRole {
                role: Role::Primary,
                require: Require::Standby,
            }),
        );
        let any = check().with_require(Require::Any);
        run(
            &any,
            &startup(Some("on")),
            Some(PgResult::Up(Role::Standby)),
        );
        run(
            &any,
            &startup(Some("off")),
            Some(PgResult::Up(Role::Primary)),
        );
        run(
            &primary,
            &startup(Some("maybe")),
            Some(PgResult::NotPostgres(ProtocolError::Malformed(b'S'))),
        );
    }

    #[test]
    fn without_in_hot_standby_the_query_decides() {
        for (c, report) in [
            (check(), None),
            (check().with_always_query(true), Some("off")),
        ] {
            let mut x = Exchange::new(&c);
            x.take_output();
            assert_eq!(x.received(&startup(report)), None);
            let q = x.take_output();
            assert_eq!(q[0], b'Q');
            assert_eq!(&q[5..], b"SELECT pg_is_in_recovery()\0");
            // The query's answer wins over the startup report.
            assert_eq!(
                x.received(&answer(b"t")),
                Some(PgResult::WrongRole {
                    role: Role::Standby,
                    require: Require::Primary
                })
            );
            assert_eq!(&x.take_output()[..], TERMINATE);
        }
        let mut whole = startup(None);
        whole.extend(answer(b"f"));
        run(&check(), &whole, Some(PgResult::Up(Role::Primary)));
    }

    #[test]
    fn odd_answers_to_the_query_are_protocol_errors() {
        let bad = PgResult::NotPostgres(ProtocolError::BadAnswer);
        for cols in [
            vec![Some(&b"x"[..])],
            vec![None],
            vec![Some(&b"t"[..]), Some(&b"t"[..])],
            vec![],
        ] {
            let mut v = startup(None);
            v.extend(row_description());
            v.extend(data_row(&cols));
            let out = run(&check(), &v, Some(bad));
            assert_eq!(&out[..], TERMINATE);
        }
        let mut v = startup(None);
        v.extend(msg(b'C', b"SELECT 0\0"));
        v.extend(ready());
        run(&check(), &v, Some(bad));
        let mut v = startup(None);
        v.extend(msg(b'I', b""));
        run(&check(), &v, Some(bad));
    }

    #[test]
    fn an_error_in_the_query_waits_for_ready_then_terminates() {
        let mut v = startup(None);
        v.extend(error(
            "42883",
            "function pg_is_in_recovery() does not exist",
        ));
        v.extend(ready());
        let state = SqlState::parse(b"42883").expect("valid");
        let out = run(&check(), &v, Some(PgResult::ServerError(state)));
        assert_eq!(&out[..], TERMINATE);
        // A FATAL one: the server closes instead of sending ReadyForQuery.
        let c = check();
        let mut x = Exchange::new(&c);
        let mut v = startup(None);
        v.extend(error(
            "57P01",
            "terminating connection due to administrator command",
        ));
        assert_eq!(x.received(&v), None);
        assert_eq!(
            x.closed(),
            PgResult::ServerError(SqlState::parse(b"57P01").expect("valid"))
        );
    }

    #[test]
    fn md5_answers_with_the_hash_of_user_and_password() {
        let c = check().with_password(Password::new("s3cret"));
        let mut x = Exchange::new(&c);
        x.take_output();
        assert_eq!(x.received(&auth(5, &[1, 2, 3, 4])), None);
        let out = x.take_output();
        let want = md5_hash(b"maas_check", b"s3cret", [1, 2, 3, 4]);
        assert_eq!(out[0], b'p');
        assert_eq!(&out[5..], format!("{want}\0").as_bytes());
        assert!(!out.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(
            x.received(&startup(Some("off"))),
            Some(PgResult::Up(Role::Primary))
        );
    }

    #[test]
    fn refused_logins_are_auth_failures() {
        let c = check().with_password(Password::new("wrong"));
        let mut v = auth(5, &[9, 9, 9, 9]);
        v.extend(error(
            "28P01",
            "password authentication failed for user \"maas_check\"",
        ));
        let out = run(
            &c,
            &v,
            Some(PgResult::AuthFailed(AuthFailure::Rejected(
                SqlState::INVALID_PASSWORD,
            ))),
        );
        assert!(out.is_empty(), "no Terminate before login");
        let e = error("28000", "no pg_hba.conf entry for host \"127.0.0.1\"");
        run(
            &c,
            &e,
            Some(PgResult::AuthFailed(AuthFailure::Rejected(
                SqlState::INVALID_AUTHORIZATION,
            ))),
        );
        let mut x = Exchange::new(&c);
        x.received(&e);
        assert_eq!(
            x.server_message(),
            Some("no pg_hba.conf entry for host \"127.0.0.1\"")
        );
    }

    #[test]
    fn passwords_are_sent_only_hashed_and_only_when_there_is_one() {
        let none = check();
        run(
            &none,
            &auth(5, &[1, 2, 3, 4]),
            Some(PgResult::AuthFailed(AuthFailure::NoPassword)),
        );
        let sasl = auth(10, b"SCRAM-SHA-256\0\0");
        run(
            &none,
            &sasl,
            Some(PgResult::AuthFailed(AuthFailure::NoPassword)),
        );
        let with = check().with_password(Password::new("s3cret"));
        let out = run(
            &with,
            &auth(3, b""),
            Some(PgResult::AuthFailed(AuthFailure::Cleartext)),
        );
        assert!(out.is_empty(), "the cleartext password is not sent");
        for code in [2, 6, 7, 9, 13, 99] {
            run(
                &with,
                &auth(code, b""),
                Some(PgResult::AuthFailed(AuthFailure::Unsupported(code))),
            );
        }
        run(
            &with,
            &auth(10, b"SCRAM-SHA-256-PLUS\0\0"),
            Some(PgResult::AuthFailed(AuthFailure::NoSaslMechanism)),
        );
    }

    #[test]
    fn scram_checks_the_server_proof() {
        let c = check().with_password(Password::new("s3cret"));
        let mut x = Exchange::new(&c);
        x.take_output();
        assert_eq!(
            x.received(&auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")),
            None
        );
        let first = x.take_output();
        assert_eq!(first[0], b'p');
        let body = &first[5..];
        let (mech, rest) = body.split_at(b"SCRAM-SHA-256\0".len());
        assert_eq!(mech, b"SCRAM-SHA-256\0");
        let client_first = std::str::from_utf8(&rest[4..]).expect("ascii");
        let nonce = client_first
            .strip_prefix("n,,n=,r=")
            .expect("gs2 header n, no user");
        let server_first = format!("r={nonce}srv,s=c2FsdHNhbHQ=,i=4096");
        assert_eq!(x.received(&auth(11, server_first.as_bytes())), None);
        let client_final = x.take_output();
        assert!(
            client_final.windows(5).any(|w| w == b"c=biw"),
            "channel binding n,,"
        );
        assert!(!client_final.windows(6).any(|w| w == b"s3cret"));
        // A final message whose signature is not the one the password gives.
        let forged = auth(12, b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(
            x.received(&forged),
            Some(PgResult::AuthFailed(AuthFailure::ScramServer))
        );
        // A server that skips the final message is not believed either.
        let mut x = Exchange::new(&c);
        x.received(&auth(10, b"SCRAM-SHA-256\0\0"));
        assert_eq!(
            x.received(&auth(0, b"")),
            Some(PgResult::AuthFailed(AuthFailure::ScramServer))
        );
        // A server-first message whose nonce does not extend ours.
        let mut x = Exchange::new(&c);
        x.received(&auth(10, b"SCRAM-SHA-256\0\0"));
        assert_eq!(
            x.received(&auth(11, b"r=other,s=c2FsdA==,i=4096")),
            Some(PgResult::AuthFailed(AuthFailure::ScramServer))
        );
        // SASL continue without a SASL start.
        run(
            &c,
            &auth(11, b"r=x"),
            Some(PgResult::NotPostgres(ProtocolError::Unexpected(b'R'))),
        );
    }

    #[test]
    fn server_errors_before_login_are_not_auth_failures() {
        let v = error("57P03", "the database system is starting up");
        run(
            &check(),
            &v,
            Some(PgResult::ServerError(SqlState::CANNOT_CONNECT_NOW)),
        );
        let mut v = auth(0, b"");
        v.extend(error("3D000", "database \"nope\" does not exist"));
        let out = run(
            &check(),
            &v,
            Some(PgResult::ServerError(SqlState::INVALID_CATALOG_NAME)),
        );
        assert!(out.is_empty(), "the server ended the session: no Terminate");
        let no_code = msg(b'E', b"SFATAL\0Mno code\0\0");
        run(
            &check(),
            &no_code,
            Some(PgResult::NotPostgres(ProtocolError::Malformed(b'E'))),
        );
        let bad_code = msg(b'E', b"SFATAL\0Cabc\0\0");
        run(
            &check(),
            &bad_code,
            Some(PgResult::NotPostgres(ProtocolError::Malformed(b'E'))),
        );
    }

    #[test]
    fn other_protocols_are_not_postgres() {
        let http = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        run(
            &check(),
            http,
            Some(PgResult::NotPostgres(ProtocolError::Http)),
        );
        run(
            &check(),
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
            Some(PgResult::NotPostgres(ProtocolError::Unexpected(b'S'))),
        );
        // A TLS alert.
        run(
            &check(),
            &[0x15, 3, 1, 0, 2, 2, 40],
            Some(PgResult::NotPostgres(ProtocolError::Unexpected(0x15))),
        );
        let mut huge = vec![b'R'];
        huge.extend_from_slice(&(MAX_MESSAGE as u32 + 1).to_be_bytes());
        run(
            &check(),
            &huge,
            Some(PgResult::NotPostgres(ProtocolError::Length(
                MAX_MESSAGE as u32 + 1,
            ))),
        );
        run(
            &check(),
            &[b'R', 0, 0, 0, 3],
            Some(PgResult::NotPostgres(ProtocolError::Length(3))),
        );
        // A row before login.
        run(
            &check(),
            &data_row(&[Some(b"f")]),
            Some(PgResult::NotPostgres(ProtocolError::Unexpected(b'D'))),
        );
        // MD5 request with a short salt.
        run(
            &check(),
            &auth(5, &[1, 2]),
            Some(PgResult::NotPostgres(ProtocolError::Malformed(b'R'))),
        );
    }

    #[test]
    fn a_close_before_the_end_is_closed() {
        let c = check();
        let mut x = Exchange::new(&c);
        assert_eq!(x.received(&auth(0, b"")), None);
        assert_eq!(x.closed(), PgResult::Closed);
        // Nothing more after the end.
        assert_eq!(x.received(&startup(Some("off"))), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let c = check().with_password(Password::new("pw"));
        let pieces = [
            auth(0, b""),
            auth(5, &[1, 2, 3, 4]),
            auth(10, b"SCRAM-SHA-256\0\0"),
            auth(11, b"r=abc,s=c2FsdA==,i=1"),
            auth(12, b"v=AAAA"),
            param("in_hot_standby", "on"),
            ready(),
            row_description(),
            data_row(&[Some(b"t")]),
            error("28P01", "x"),
            msg(b'N', b"SNOTICE\0\0"),
        ];
        for _ in 0..5_000 {
            let mut x = Exchange::new(&c);
            x.take_output();
            let mut bytes = Vec::new();
            for _ in 0..rng.random_range(0..6) {
                let mut p = pieces[rng.random_range(0..pieces.len())].clone();
                if rng.random_bool(0.3) && !p.is_empty() {
                    let i = rng.random_range(0..p.len());
                    p[i] = rng.random();
                }
                bytes.extend(p);
            }
            let mut done = false;
            for chunk in bytes.chunks(rng.random_range(1..16)) {
                if x.received(chunk).is_some() {
                    done = true;
                }
                x.take_output();
            }
            if !done {
                let _ = x.closed();
            }
        }
    }

    #[test]
    fn results_read_as_the_other_checks_do() {
        assert!(PgResult::Up(Role::Primary).passed());
        assert!(!PgResult::WrongRole {
            role: Role::Standby,
            require: Require::Primary
        }
        .passed());
        assert_eq!(
            PgResult::WrongRole {
                role: Role::Standby,
                require: Require::Primary
            }
            .to_string(),
            "standby (in recovery)"
        );
        assert_eq!(PgResult::Up(Role::Primary).to_string(), "primary");
        assert_eq!(
            PgResult::AuthFailed(AuthFailure::Rejected(SqlState::INVALID_PASSWORD)).to_string(),
            "auth failed: rejected by the server (28P01 invalid_password)"
        );
        assert_eq!(
            PgResult::NotPostgres(ProtocolError::Unexpected(0x15)).to_string(),
            "not PostgreSQL: unexpected message type 0x15"
        );
        assert_eq!(PgResult::Refused.to_string(), "connection refused");
        assert_eq!(PgResult::Refused.code(), CheckResult::Refused.code());
        assert_eq!(PgResult::Timeout.code(), "response_timeout");
        assert!(PgResult::ConnectTimeout.is_unreachable());
        assert!(!PgResult::Timeout.is_unreachable());
        assert_eq!(PgResult::Up(Role::Standby).role(), Some(Role::Standby));
        assert_eq!(PgResult::Closed.role(), None);
        assert_eq!(
            PgResult::ServerError(SqlState::parse(b"XX000").expect("valid")).to_string(),
            "server error XX000"
        );
        for r in [Require::Primary, Require::Standby, Require::Any] {
            let parsed: Require =
                serde_json::from_value(serde_json::json!(r.as_str())).expect("parses");
            assert_eq!(parsed, r);
        }
    }

    #[test]
    fn passwords_do_not_print() {
        let p = Password::new("hunter2");
        let c = check().with_password(p.clone());
        for text in [
            format!("{p:?}"),
            format!("{p}"),
            format!("{c:?}"),
            format!("{c:#?}"),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        assert!(format!("{c:?}").contains("<redacted>"));
    }

    #[test]
    fn password_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("pw");
        for (content, want) in [
            (&b"s3cret\n"[..], Some(&b"s3cret"[..])),
            (b"s3cret\r\n", Some(b"s3cret")),
            (b"s3cret", Some(b"s3cret")),
            (b" spaces kept \n", Some(b" spaces kept ")),
            (b"\n", None),
            (b"", None),
            (b"secret1\nsecret2\n", None),
        ] {
            std::fs::write(&f, content).expect("write");
            let got = Password::from_file(&f);
            assert_eq!(got.as_ref().ok().map(|p| p.expose()), want, "{content:?}");
            if let Err(e) = got {
                let text = e.to_string();
                assert!(
                    text.starts_with(&format!("password file {}: ", f.display())),
                    "{text}"
                );
                assert!(!text.contains("secret"), "{text}");
            }
        }
        let missing = Password::from_file(&dir.path().join("nope")).expect_err("missing");
        assert!(
            matches!(missing.kind, PasswordFileErrorKind::Io(_)),
            "{missing}"
        );

        std::fs::write(&f, "pw\n").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let w = password_file_warning(&f).expect("stat").expect("a warning");
        assert!(w.contains("readable by every user (mode 0644)"), "{w}");
        for mode in [0o600, 0o640, 0o660] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).expect("chmod");
            assert_eq!(password_file_warning(&f).expect("stat"), None, "{mode:o}");
        }
    }
}
