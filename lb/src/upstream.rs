//! The http mode's side toward the servers: an HTTP/1.1 client that runs inside the task of
//! the client connection it serves.
//!
//! hyper's client hands every request to a connection task through a channel and the response
//! back through another; here the request is written and the response head read by the task
//! that serves the client, and the response body is read from the server socket by whoever
//! polls it (hyper's server side, same task). A finished exchange returns the connection to
//! its server's pool, with nothing buffered and the socket checked again before reuse.
//!
//! Framing follows RFC 9112 §6: no body after HEAD, 1xx, 204 and 304; chunked when the last
//! transfer coding is chunked; else Content-Length; else until the server closes (and the
//! connection is not reused). Informational responses other than 101 are skipped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a response head.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line or trailer line of a chunked body.
const MAX_LINE: usize = 4096;
/// Bytes asked of the kernel per read.
const READ_SIZE: usize = 16 * 1024;
/// Bytes asked of the kernel per read once a body has filled a whole read.
const BULK_READ_SIZE: usize = 256 * 1024;
/// Idle connections kept per server and worker.
const POOL_MAX_IDLE: usize = 256;
/// Pools per server, one per worker thread (indexed by the worker's number modulo this).
const POOL_SLOTS: usize = 16;

/// One connection to a server.
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read from the server and not yet consumed.
    buf: BytesMut,
    /// Whether it has carried a request before.
    reused: bool,
    /// Request body bytes written by the last [`Conn::send`], however it ended.
    body_sent: u64,
}

impl Conn {
    /// Opens a connection, bounded by `timeout`.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: BytesMut::new(),
            reused: false,
            body_sent: 0,
        })
    }

    /// Whether an idle connection can carry a request: the server has neither closed it nor
    /// sent anything unasked.
    fn usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Whether the connection carried a request before this one.
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Request body bytes the last [`Conn::send`] wrote (all of them, or as far as it got).
    pub(crate) fn body_sent(&self) -> u64 {
        self.body_sent
    }

    /// Reads more bytes into the buffer. `Ok(0)` is the server's end of stream.
    ///
    /// Reads go through `AsyncRead`, whose short reads clear the socket's cached readiness:
    /// after a response that drained the socket, [`Conn::usable`] costs no system call.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want / 2 {
            self.buf.reserve(want);
        }
        let read = self.stream.read_buf(&mut self.buf);
        std::pin::pin!(read).poll(cx)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx, READ_SIZE)).await
    }

    /// Sends a request: its head, then its body (taken out of `body`) as framed by `framing`.
    ///
    /// The head goes out with the body's first bytes, and each chunk of a chunked body with its
    /// size line and CRLF, in one vectored write each: a small POST is one segment, as the
    /// client sent it.
    ///
    /// An upload may take longer than any timeout; only silence counts, as in HAProxy: the
    /// client sending nothing for `client_idle`, or the server taking nothing for
    /// `server_idle`.
    pub(crate) async fn send(
        &mut self,
        head: &[u8],
        body: &mut Option<Incoming>,
        framing: ReqFraming,
        client_idle: Duration,
        server_idle: Duration,
    ) -> Result<(), Error> {
        self.body_sent = 0;
        let Some(mut incoming) = body.take() else {
            return self.write(&mut &head[..], server_idle).await;
        };
        let chunked = framing == ReqFraming::Chunked;
        // What is still to go before the next data: the head, until the first data goes.
        let mut head = head;
        loop {
            let next = std::future::poll_fn(|cx| Pin::new(&mut incoming).poll_frame(cx));
            let frame = match tokio::time::timeout(client_idle, next).await {
                Ok(Some(frame)) => frame.map_err(|e| Error::Client(io::Error::other(e)))?,
                Ok(None) => break,
                Err(_) => {
                    return Err(Error::Client(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing of its request body for timeout_client",
                    )))
                }
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not forwarded
            };
            if data.is_empty() {
                continue;
            }
            let size = if chunked {
                format!("{:x}\r\n", data.len())
            } else {
                String::new()
            };
            let end: &[u8] = if chunked { b"\r\n" } else { b"" };
            let len = data.len() as u64;
            let mut out = Buf::chain(head, size.as_bytes()).chain(data).chain(end);
            self.write(&mut out, server_idle).await?;
            self.body_sent += len;
            head = &[];
        }
        let last: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
        self.write(&mut Buf::chain(head, last), server_idle).await
    }

    /// Writes all of `out`, failing with [`Error::Timeout`] if the server takes nothing for
    /// `idle`. Most writes complete at once: only one that has to wait arms a timer.
    async fn write(&mut self, out: &mut impl Buf, idle: Duration) -> Result<(), Error> {
        while out.has_remaining() {
            let mut slices = [io::IoSlice::new(&[]); 16];
            let count = out.chunks_vectored(&mut slices);
            match self.stream.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout(idle, self.stream.writable()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(Error::Io(e)),
                        Err(_) => return Err(Error::Timeout),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads the response head, skipping informational responses other than 101.
    pub(crate) async fn read_head(&mut self, method: &Method) -> Result<Head, Error> {
        let mut received = false;
        loop {
            if let Some(head) = head_step(&mut self.buf, method, &mut received)? {
                return Ok(head);
            }
            match self.fill().await {
                Ok(0) => return Err(head_eof(received)),
                Ok(_) => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// The socket and the bytes already read past the response head (after a 101).
    pub(crate) fn into_parts(self) -> (TcpStream, Bytes) {
        (self.stream, self.buf.freeze())
    }
}

/// Takes the final response head off the front of `buf` once it is complete, skipping
/// informational responses other than 101; `Ok(None)` while more bytes are needed. `received`
/// records whether the server sent anything at all (see [`head_eof`]).
fn head_step(
    buf: &mut BytesMut,
    method: &Method,
    received: &mut bool,
) -> Result<Option<Head>, Error> {
    while !buf.is_empty() {
        *received = true;
        match parse_head(buf, method)? {
            Some(head)
                if head.status.is_informational()
                    && head.status != StatusCode::SWITCHING_PROTOCOLS => {}
            Some(head) => return Ok(Some(head)),
            None if buf.len() >= MAX_HEAD => return Err(Error::Garbage("response head too large")),
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// What the server's end of stream means before a complete head.
fn head_eof(received: bool) -> Error {
    if received {
        Error::Garbage("response head cut short")
    } else {
        Error::Closed
    }
}

/// Parses a complete head off the front of `buf`, or `None` if it is not complete.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    // Only the first MAX_HEAD bytes are looked at, however many were read: what lies beyond
    // cannot change the outcome (a head that does not end within them is too large), whether
    // it came in one read or in many.
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let len = match parsed.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Garbage("too many response headers"))
        }
        Err(_) => return Err(Error::Garbage("malformed response head")),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::Garbage("bad status code"))?;
    let http11 = parsed.version == Some(1);
    // Offsets of names and values, so that the head's bytes can be shared, not copied.
    let base = buf.as_ptr() as usize;
    let mut spans = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        spans.push((name, h.name.len(), value, h.value.len()));
    }
    let raw = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, name_len, value, value_len) in spans {
        let name = HeaderName::from_bytes(&raw[name..name + name_len])
            .map_err(|_| Error::Garbage("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(raw.slice(value..value + value_len))
            .map_err(|_| Error::Garbage("bad header value"))?;
        headers.append(name, value);
    }
    let framing = response_framing(method, status, &headers)?;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3): a stale length must
        // not frame the body relayed to the client.
        headers.remove(header::CONTENT_LENGTH);
    } else if let Framing::Length(n) = framing {
        // One plain value for the client, whatever spelling of it the server sent ("5, 5",
        // "05", or two lines, which hyper would refuse to write): the client frames the body
        // exactly as it is read here.
        let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
        let odd = values
            .next()
            .is_some_and(|v| v.as_bytes().contains(&b',') || v.as_bytes().starts_with(b"0"));
        if odd || values.next().is_some() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    let keep_alive = http11
        && framing != Framing::UntilClose
        && !has_token(&headers, header::CONNECTION, "close");
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// How a request's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReqFraming {
    /// No body, or one whose Content-Length is in the head.
    Plain,
    /// A body of unknown length: `Transfer-Encoding: chunked` is in the head.
    Chunked,
}

/// A request head in HTTP/1.1 form, ready to be written to any server. `headers` must already
/// be free of hop-by-hop fields. Returns how the body, if any, goes.
pub(crate) fn encode_request(
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    has_body: bool,
    out: &mut BytesMut,
) -> ReqFraming {
    let framing = if has_body && !headers.contains_key(header::CONTENT_LENGTH) {
        ReqFraming::Chunked
    } else {
        ReqFraming::Plain
    };
    let target = uri
        .path_and_query()
        .filter(|_| uri.scheme().is_none())
        .map(|pq| pq.as_str());
    let target_owned;
    let target = match target {
        Some(t) => t,
        None => {
            target_owned = uri.to_string();
            &target_owned
        }
    };
    let size = method.as_str().len()
        + target.len()
        + 14
        + headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
        + 32;
    out.reserve(size);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if framing == ReqFraming::Chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    }
    out.put_slice(b"\r\n");
    framing
}

/// Why an exchange with a server failed.
#[derive(Debug)]
pub(crate) enum Error {
    /// The server closed the connection before any byte of a response.
    Closed,
    /// Reading or writing the server connection failed.
    Io(io::Error),
    /// The server sent something that is not an HTTP/1.1 response.
    Garbage(&'static str),
    /// The client's request body failed (it went away mid-upload, or stalled).
    Client(io::Error),
    /// The server made no progress for `timeout_server`: it took nothing of the request, or
    /// sent no response head.
    Timeout,
}

impl Error {
    /// Whether the server had closed (or reset) the connection before the request reached
    /// it: on a pooled connection, the server's idle timeout meeting the request.
    pub(crate) fn closed_early(&self) -> bool {
        match self {
            Error::Closed => true,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            Error::Garbage(_) | Error::Client(_) | Error::Timeout => false,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Closed => f.write_str("server closed the connection before responding"),
            Error::Io(e) => write!(f, "server connection failed: {e}"),
            Error::Garbage(what) => write!(f, "invalid response from server: {what}"),
            Error::Client(e) => write!(f, "client request body failed: {e}"),
            Error::Timeout => f.write_str("server made no progress for timeout_server"),
        }
    }
}

/// A parsed response head.
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (or none left).
    Empty,
    /// This many bytes left.
    Length(u64),
    /// Chunked coding, in the given state.
    Chunked(Chunk),
    /// Whatever comes until the server closes.
    UntilClose,
    /// `101 Switching Protocols`: the connection is no longer HTTP.
    Upgrade,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many data bytes left in the current chunk.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// Expecting trailer lines or the final empty line.
    Trailer,
}

/// Whether a comma-separated header has `token` (case-insensitive) in any of its values.
pub(crate) fn has_token(h: &HeaderMap, name: HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The transfer codings a message declares (RFC 9112 §6.1), as framing sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codings {
    /// No Transfer-Encoding.
    None,
    /// `chunked`, once, and nothing else.
    Chunked,
    /// Any other coding, `chunked` more than once, or an empty list.
    Other,
}

/// The transfer codings of `h`, over all its Transfer-Encoding lines.
pub(crate) fn transfer_codings(h: &HeaderMap) -> Codings {
    let mut lines = h.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if lines.peek().is_none() {
        return Codings::None;
    }
    let mut chunked = 0;
    for line in lines {
        let Ok(line) = line.to_str() else {
            return Codings::Other;
        };
        for t in line.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !t.eq_ignore_ascii_case("chunked") {
                return Codings::Other;
            }
            chunked += 1;
        }
    }
    if chunked == 1 {
        Codings::Chunked
    } else {
        Codings::Other
    }
}

/// RFC 9112 §6.3, for a response to `method`.
fn response_framing(method: &Method, status: StatusCode, h: &HeaderMap) -> Result<Framing, Error> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Framing::Upgrade);
    }
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    match transfer_codings(h) {
        Codings::None => {}
        Codings::Chunked => return Ok(Framing::Chunked(Chunk::Size)),
        // Relaying the body without the coding would hand the client bytes it cannot read
        // (gzip taken for plain text), and this proxy decodes chunked only. HAProxy answers
        // 502 too.
        Codings::Other => return Err(Error::Garbage("transfer coding other than chunked")),
    }
    let mut length: Option<u64> = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = std::str::from_utf8(part)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Error::Garbage("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Garbage("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// Idle keep-alive connections to one server.
pub struct ServerPool {
    slots: [Mutex<Vec<Conn>>; POOL_SLOTS],
}

impl Default for ServerPool {
    fn default() -> Self {
        ServerPool {
            slots: std::array::from_fn(|_| Mutex::new(Vec::new())),
        }
    }
}

impl std::fmt::Debug for ServerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPool")
            .field("idle", &self.idle())
            .finish()
    }
}

impl ServerPool {
    fn slot(&self, worker: usize) -> &Mutex<Vec<Conn>> {
        &self.slots[worker % POOL_SLOTS]
    }

    /// Idle connections, all workers together.
    pub fn idle(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.lock().map(|v| v.len()).unwrap_or(0))
            .sum()
    }

    /// The most recently used idle connection to `addr` (the server's address now) that the
    /// server has not closed. Closed ones, and ones to an address the server no longer has,
    /// met on the way are dropped. `worker`: the worker thread asking (see [`POOL_SLOTS`]).
    pub(crate) fn checkout(&self, addr: SocketAddr, worker: usize) -> Option<Conn> {
        let mut idle = self.slot(worker).lock().ok()?;
        while let Some(conn) = idle.pop() {
            // getpeername(2) rather than a field: a connection stays small on the hot path.
            if conn.stream.peer_addr().is_ok_and(|p| p == addr) && conn.usable() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, mut conn: Conn, worker: usize) {
        conn.reused = true;
        if conn.buf.capacity() > READ_SIZE {
            // Do not keep a bulk body's buffer for an idle connection.
            conn.buf = BytesMut::new();
        }
        if let Ok(mut idle) = self.slot(worker).lock() {
            if idle.len() < POOL_MAX_IDLE {
                idle.push(conn);
            }
        }
    }
}

/// A response body read from the server connection, which goes back to `pool` (if any) once
/// the body has ended cleanly and the server allows it.
///
/// While it waits for the server, nothing arriving for `idle` (the frontend's `timeout_server`)
/// ends the body with an error, as HAProxy's `timeout server` does mid-response.
pub(crate) struct UpBody {
    conn: Option<Conn>,
    framing: Framing,
    pool: Option<Arc<ServerPool>>,
    /// The slot of `pool` the connection goes back to: its worker thread's (a byte, so that
    /// the body stays as small as it was).
    slot: u8,
    /// Bytes asked of the kernel per read: [`READ_SIZE`], or [`BULK_READ_SIZE`] once a read
    /// filled it (a `u32` so that `slot` fits beside it).
    read_size: u32,
    stall: Stall,
    /// `on_down = "shutdown_sessions"`: resolves when the server goes down, which ends the
    /// body with an error (and the connection with it).
    cut: Option<Box<Cut>>,
}

/// The down signal of a body's server, and the server to count the cut on.
struct Cut {
    down: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    server: Arc<healthcheck::ServerState>,
}

/// The inactivity watch of a response body. Its timer is armed the first time the body waits
/// (a small response read with its head never waits) and fires at most once per `idle` while
/// bytes keep coming: a stall is caught between `idle` and twice `idle` after the last byte.
struct Stall {
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether bytes came since the timer was last armed.
    progress: bool,
}

impl Stall {
    fn new(idle: Duration) -> Stall {
        Stall {
            idle,
            timer: None,
            progress: false,
        }
    }

    /// Called when a read must wait: `Ready` once the server has been silent too long.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let idle = self.idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        loop {
            ready!(timer.as_mut().poll(cx));
            if !std::mem::take(&mut self.progress) {
                return Poll::Ready(());
            }
            timer.as_mut().reset(tokio::time::Instant::now() + idle);
        }
    }
}

impl UpBody {
    /// The body that follows `head` on `conn`. After a 101 the body is empty and `conn` is
    /// handed back for the tunnel. `worker`: the worker thread whose slot of `pool` it goes
    /// back to.
    pub(crate) fn new(
        conn: Conn,
        head: &Head,
        pool: Option<Arc<ServerPool>>,
        worker: usize,
        idle: Duration,
    ) -> (UpBody, Option<Conn>) {
        let pool = pool.filter(|_| head.keep_alive);
        let slot = (worker % POOL_SLOTS) as u8;
        if head.framing == Framing::Upgrade {
            let body = UpBody {
                conn: None,
                framing: Framing::Empty,
                pool: None,
                slot,
                read_size: READ_SIZE as u32,
                stall: Stall::new(idle),
                cut: None,
            };
            return (body, Some(conn));
        }
        let mut body = UpBody {
            conn: Some(conn),
            framing: head.framing,
            pool,
            slot,
            read_size: READ_SIZE as u32,
            stall: Stall::new(idle),
            cut: None,
        };
        if body.framing == Framing::Empty {
            body.release();
        }
        (body, None)
    }

    /// Ends the body (and drops its connection) when `down` sees `server` go down.
    pub(crate) fn cut_when_down(
        &mut self,
        mut down: tokio::sync::watch::Receiver<u64>,
        server: Arc<healthcheck::ServerState>,
    ) {
        if self.conn.is_none() {
            return;
        }
        let down = Box::pin(async move {
            if down.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        });
        self.cut = Some(Box::new(Cut { down, server }));
    }

    /// The body has ended: the connection goes back to its pool if it is clean.
    fn release(&mut self) {
        self.framing = Framing::Empty;
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take()) {
            if conn.buf.is_empty() {
                pool.checkin(conn, usize::from(self.slot));
            }
        }
    }

    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if let Some(cut) = self.cut.as_mut() {
            if cut.down.as_mut().poll(cx).is_ready() {
                cut.server
                    .counters
                    .sessions_cut
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.cut = None;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the server went down (on_down = \"shutdown_sessions\")",
                )));
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let n = match conn.poll_fill(cx, self.read_size as usize) {
            Poll::Ready(r) => r?,
            Poll::Pending => {
                ready!(self.stall.poll_expired(cx));
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the server sent nothing for timeout_server in the middle of a response",
                )));
            }
        };
        self.stall.progress = true;
        if n >= self.read_size as usize && self.read_size < BULK_READ_SIZE as u32 {
            self.read_size = BULK_READ_SIZE as u32;
        }
        Poll::Ready(Ok(n))
    }

    /// Ends the body on a failure: the connection is dropped, never reused.
    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.framing = Framing::Empty;
        Poll::Ready(Some(Err(e)))
    }
}

/// What the body decoder made of the bytes buffered so far.
#[derive(Debug)]
enum Decoded {
    /// Body bytes. When they were the last, the framing is [`Framing::Empty`] now.
    Data(Bytes),
    /// The body has ended (the framing is [`Framing::Empty`] now).
    End,
    /// More bytes must be read first.
    More,
}

impl Framing {
    /// Takes the next piece of body off the front of `buf` (RFC 9112 §6.3 and §7.1), without
    /// I/O: the same bytes give the same pieces whichever reads they came in.
    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Decoded> {
        loop {
            match *self {
                Framing::Empty | Framing::Upgrade => {
                    *self = Framing::Empty;
                    return Ok(Decoded::End);
                }
                Framing::Length(left) => {
                    let Some((data, left)) = take_data(buf, left) else {
                        return Ok(Decoded::More);
                    };
                    *self = if left == 0 {
                        Framing::Empty
                    } else {
                        Framing::Length(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Framing::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    let digits = line[..]
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .filter(|s| !s.is_empty() && s.len() <= 16)
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or_else(|| invalid("bad chunk size"))?;
                    *self = Framing::Chunked(if size == 0 {
                        Chunk::Trailer
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let Some((data, left)) = take_data(buf, left) else {
                        return Ok(Decoded::More);
                    };
                    *self = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Decoded::Data(data));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailer) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    // Trailer fields are not forwarded; the empty line ends the body.
                    if line.is_empty() {
                        *self = Framing::Empty;
                        return Ok(Decoded::End);
                    }
                }
            }
        }
    }

    /// The server's end of stream, reached while [`Framing::decode`] wanted more: the end of a
    /// body that runs until the close, otherwise a body cut short.
    fn at_eof(&mut self) -> io::Result<()> {
        let until_close = *self == Framing::UntilClose;
        *self = Framing::Empty;
        if until_close {
            Ok(())
        } else {
            Err(cut_short())
        }
    }
}

/// Up to `left` bytes off the front of `buf` (none buffered: `None`), and how many are left
/// after them.
fn take_data(buf: &mut BytesMut, left: u64) -> Option<(Bytes, u64)> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
    Some((buf.split_to(n).freeze(), left - n as u64))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "server closed the connection before the end of the response body",
    )
}

/// Takes one CRLF- (or LF-) terminated line off the front of `buf`, without its ending. A
/// line longer than [`MAX_LINE`] is an error whether or not its end has been read.
fn take_line(buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i > MAX_LINE => Err(invalid("chunk line too long")),
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(invalid("chunk line too long")),
        None => Ok(None),
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => {
                    if this.framing == Framing::Empty {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(e) => return this.fail(e),
            }
            match ready!(this.fill(cx)) {
                Ok(0) => {
                    return match this.framing.at_eof() {
                        Ok(()) => {
                            this.conn = None;
                            Poll::Ready(None)
                        }
                        Err(e) => this.fail(e),
                    }
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Empty | Framing::Upgrade)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty | Framing::Upgrade => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// Sans-I/O access to the response decoder for the fuzz target `http_response` (`fuzz/`) and
/// the replay of its inputs (`tests/tests/fuzz_regressions.rs`), with the `fuzzing` feature.
/// Not an API of the proxy: it follows the decoder wherever it goes.
///
/// [`fuzzing::decode`] drives [`head_step`] and [`Framing::decode`] as [`Conn::read_head`] and
/// [`UpBody`] do, with the server's bytes handed over in reads of chosen sizes instead of by a
/// socket, and says where the response ended and whether its connection would be pooled;
/// [`fuzzing::run`] is the target: it checks the invariants on one input.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use bytes::BytesMut;
    use http::Method;

    use super::{head_eof, head_step, Decoded, Framing};

    /// A head as relayed: status, then each header's name and value in order.
    pub type RelayedHead = (u16, Vec<(String, Vec<u8>)>);

    /// What one response on a server connection came to.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Exchange {
        /// The final head's status and the headers relayed to the client, or why it was
        /// refused.
        pub head: Result<RelayedHead, String>,
        /// The body length the head announced, when Content-Length framed it.
        pub length: Option<u64>,
        /// A 101: what follows `consumed` belongs to the tunnel.
        pub upgrade: bool,
        /// The body bytes relayed, in order.
        pub body: Vec<u8>,
        /// Why the body failed, if it did.
        pub body_error: Option<String>,
        /// Bytes of the stream taken by this response (heads and body) when it ended.
        pub consumed: usize,
        /// Whether the connection would go back to its pool. The next response on it then
        /// starts at `consumed`.
        pub reusable: bool,
    }

    /// Decodes the response to `method` at the start of `stream`. The bytes arrive in reads of
    /// the sizes in `reads`, cycled (0 counts as 1; none: everything in one read); the end of
    /// `stream` is the server closing.
    pub fn decode(method: &Method, stream: &[u8], reads: &[usize]) -> Exchange {
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut turn = 0;
        let mut fill = |buf: &mut BytesMut| {
            let size = if reads.is_empty() {
                stream.len()
            } else {
                reads[turn % reads.len()].max(1)
            };
            turn += 1;
            let n = size.min(stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            n
        };
        let mut out = Exchange {
            head: Err(String::new()),
            length: None,
            upgrade: false,
            body: Vec::new(),
            body_error: None,
            consumed: 0,
            reusable: false,
        };
        let mut received = false;
        let head = loop {
            match head_step(&mut buf, method, &mut received) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(e) => {
                    out.head = Err(e.to_string());
                    out.consumed = fed - buf.len();
                    return out;
                }
            }
            if fill(&mut buf) == 0 {
                out.head = Err(head_eof(received).to_string());
                out.consumed = fed - buf.len();
                return out;
            }
        };
        out.head = Ok((
            head.status.as_u16(),
            head.headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
        ));
        if let Framing::Length(n) = head.framing {
            out.length = Some(n);
        }
        let mut framing = head.framing;
        if framing == Framing::Upgrade {
            out.upgrade = true;
            out.consumed = fed - buf.len();
            return out;
        }
        loop {
            match framing.decode(&mut buf) {
                Ok(Decoded::Data(data)) => {
                    out.body.extend_from_slice(&data);
                    if framing == Framing::Empty {
                        break;
                    }
                }
                Ok(Decoded::End) => break,
                Ok(Decoded::More) => {
                    if fill(&mut buf) == 0 {
                        if let Err(e) = framing.at_eof() {
                            out.body_error = Some(e.to_string());
                        }
                        // Until the close, or cut short: never pooled.
                        out.consumed = fed - buf.len();
                        return out;
                    }
                }
                Err(e) => {
                    out.body_error = Some(e.to_string());
                    out.consumed = fed - buf.len();
                    return out;
                }
            }
        }
        // As `UpBody::release`: pooled when the server allows it and nothing more was read.
        out.consumed = fed - buf.len();
        out.reusable = head.keep_alive && buf.is_empty();
        out
    }

    /// One fuzz input: a byte choosing the request method, one choosing how the stream is
    /// split into reads, then the server's byte stream (its end is the server closing).
    /// Panics if an invariant fails:
    /// - the outcome does not depend on how the stream was split into reads: read at once, in
    ///   pieces of the sizes the input chooses, or byte by byte, it gives the same head, body,
    ///   error and end;
    /// - a response judged reusable ends exactly where the stream read at once says it ends
    ///   (the runs agree on `consumed`) with nothing read past it: the pooled connection's
    ///   next response starts at its first byte;
    /// - a body framed by Content-Length that ended cleanly has exactly that many bytes, and
    ///   the head relayed to the client carries that length, once and plainly written; a head
    ///   with Transfer-Encoding relays no Content-Length;
    /// - a refused head or a failed body is never reusable.
    pub fn run(data: &[u8]) {
        let [sel, cut, stream @ ..] = data else {
            return;
        };
        let method = match sel & 3 {
            0 => Method::GET,
            1 => Method::HEAD,
            2 => Method::POST,
            _ => Method::OPTIONS,
        };
        let whole = decode(&method, stream, &[]);
        check(&whole);
        let pieces = [1 + usize::from(cut & 0x0f), 1 + usize::from(cut >> 4) * 97];
        let mut splits = vec![decode(&method, stream, &pieces)];
        if stream.len() <= 4096 {
            splits.push(decode(&method, stream, &[1]));
        }
        for split in &splits {
            check(split);
            // Reusability may differ: a read that ends exactly where the response ends
            // leaves nothing buffered, one that reads past it does not. All else must agree.
            let same = Exchange {
                reusable: whole.reusable,
                ..split.clone()
            };
            assert_eq!(
                whole, same,
                "the outcome depends on how the bytes were read"
            );
            if split.reusable {
                assert_eq!(split.consumed, whole.consumed);
                assert!(split.consumed <= stream.len());
            }
        }
    }

    fn check(e: &Exchange) {
        let Ok((_, headers)) = &e.head else {
            assert!(!e.reusable && e.body.is_empty(), "{e:?}");
            return;
        };
        let lengths: Vec<&[u8]> = headers
            .iter()
            .filter(|(n, _)| n == "content-length")
            .map(|(_, v)| &v[..])
            .collect();
        if headers.iter().any(|(n, _)| n == "transfer-encoding") {
            assert!(
                lengths.is_empty(),
                "Content-Length beside Transfer-Encoding: {e:?}"
            );
        }
        if let Some(n) = e.length {
            assert_eq!(
                lengths,
                [n.to_string().as_bytes()],
                "the relayed length is not the one that framed the body"
            );
            if e.body_error.is_none() {
                assert_eq!(
                    e.body.len() as u64,
                    n,
                    "body length is not its Content-Length"
                );
            }
        }
        if e.reusable {
            assert!(e.body_error.is_none() && !e.upgrade, "{e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    const SECOND: Duration = Duration::from_secs(1);
    use tokio::net::TcpListener;

    /// A server that reads one request head and answers with `pieces`, one write each, then
    /// keeps the connection open (or closes it with `close`).
    async fn server(pieces: Vec<&'static [u8]>, close: bool) -> SocketAddr {
        paced_server(pieces, close, Duration::from_millis(5)).await
    }

    /// [`server`] with `gap` between pieces.
    async fn paced_server(pieces: Vec<&'static [u8]>, close: bool, gap: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            for p in pieces {
                if s.write_all(p).await.is_err() {
                    return;
                }
                tokio::time::sleep(gap).await;
            }
            if !close {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        addr
    }

    /// Connects to `addr`, sends a body-less `method` request and reads the response head.
    async fn request(addr: SocketAddr, method: &Method) -> (Conn, Result<Head, Error>) {
        let mut conn = Conn::connect(addr, SECOND).await.expect("connect");
        let mut head = BytesMut::new();
        let uri = "/x".parse().expect("uri");
        let framing = encode_request(method, &uri, &HeaderMap::new(), false, &mut head);
        conn.send(&head, &mut None, framing, SECOND, SECOND)
            .await
            .expect("send");
        let h = conn.read_head(method).await;
        (conn, h)
    }

    async fn exchange(
        pieces: Vec<&'static [u8]>,
        close: bool,
        method: Method,
    ) -> (
        Result<Head, Error>,
        Option<(Result<Vec<u8>, io::Error>, usize)>,
    ) {
        let (conn, h) = request(server(pieces, close).await, &method).await;
        let h = match h {
            Ok(h) => h,
            Err(e) => return (Err(e), None),
        };
        let pool = Arc::new(ServerPool::default());
        let (body, _) = UpBody::new(conn, &h, Some(pool.clone()), 0, Duration::from_secs(5));
        let collected = body.collect().await.map(|c| c.to_bytes().to_vec());
        (Ok(h), Some((collected, pool.idle())))
    }

    #[tokio::test]
    async fn content_length_body_and_reuse() {
        let (h, body) = exchange(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhe",
                b"llo",
            ],
            false,
            Method::GET,
        )
        .await;
        let h = h.expect("head");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.headers.get("x-a").map(|v| v.as_bytes()), Some(&b"b"[..]));
        let (bytes, idle) = body.expect("body");
        assert_eq!(bytes.expect("bytes"), b"hello");
        assert_eq!(
            idle, 1,
            "a cleanly ended keep-alive response returns to the pool"
        );
    }

    #[tokio::test]
    async fn chunked_body_split_anywhere_is_decoded() {
        let (h, body) = exchange(
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n5",
                b";ext=1\r\nhel",
                b"lo\r",
                b"\n0\r\nTrailer: x\r\n",
                b"\r\n",
            ],
            false,
            Method::GET,
        )
        .await;
        let h = h.expect("head");
        assert!(
            !h.headers.contains_key(header::CONTENT_LENGTH),
            "Transfer-Encoding overrides Content-Length"
        );
        let (bytes, idle) = body.expect("body");
        assert_eq!(bytes.expect("bytes"), b"hello");
        assert_eq!(idle, 1);
    }

    #[tokio::test]
    async fn body_until_close_is_not_reused() {
        let (_, body) =
            exchange(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it"], true, Method::GET).await;
        let (bytes, idle) = body.expect("body");
        assert_eq!(bytes.expect("bytes"), b"all of it");
        assert_eq!(idle, 0);
    }

    #[tokio::test]
    async fn connection_close_and_http10_are_not_reused() {
        for first in [
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"[..],
            &b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"[..],
        ] {
            let (_, body) = exchange(vec![first], false, Method::GET).await;
            let (bytes, idle) = body.expect("body");
            assert_eq!(bytes.expect("bytes"), b"x");
            assert_eq!(idle, 0);
        }
    }

    #[tokio::test]
    async fn head_response_has_no_body_and_informational_is_skipped() {
        let (h, body) = exchange(
            vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"],
            false,
            Method::HEAD,
        )
        .await;
        assert_eq!(h.expect("head").status, StatusCode::OK);
        let (bytes, idle) = body.expect("body");
        assert!(bytes.expect("bytes").is_empty());
        assert_eq!(idle, 1);
    }

    #[tokio::test]
    async fn cut_short_body_is_an_error() {
        let (_, body) = exchange(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            true,
            Method::GET,
        )
        .await;
        let (bytes, idle) = body.expect("body");
        assert!(bytes.is_err());
        assert_eq!(idle, 0);
    }

    #[tokio::test]
    async fn garbage_and_silent_close_are_told_apart() {
        let (h, _) = exchange(vec![b"SSH-2.0-OpenSSH\r\n\r\n"], true, Method::GET).await;
        assert!(matches!(h, Err(Error::Garbage(_))));
        let (h, _) = exchange(vec![], true, Method::GET).await;
        assert!(matches!(h, Err(Error::Closed)));
        let (h, _) = exchange(vec![b"HTTP/1.1 200 OK\r\nContent-"], true, Method::GET).await;
        assert!(matches!(h, Err(Error::Garbage(_))));
        let (h, _) = exchange(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
            true,
            Method::GET,
        )
        .await;
        assert!(matches!(h, Err(Error::Garbage(_))));
        let (_, body) = exchange(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            true,
            Method::GET,
        )
        .await;
        assert!(body.expect("body").0.is_err());
    }

    #[tokio::test]
    async fn a_closed_idle_connection_is_not_checked_out() {
        let addr = server(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], true).await;
        let (conn, h) = request(addr, &Method::GET).await;
        let h = h.expect("head");
        let pool = Arc::new(ServerPool::default());
        let (_body, _) = UpBody::new(conn, &h, Some(pool.clone()), 0, Duration::from_secs(5));
        assert_eq!(pool.idle(), 1);
        // The server closes right after its response.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pool.checkout(addr, 0).is_none());
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn an_idle_connection_is_reused_only_to_the_same_address() {
        let addr = server(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], false).await;
        let (conn, h) = request(addr, &Method::GET).await;
        let h = h.expect("head");
        let pool = Arc::new(ServerPool::default());
        let (_body, _) = UpBody::new(conn, &h, Some(pool.clone()), 0, Duration::from_secs(5));
        assert_eq!(pool.idle(), 1);
        let conn = pool.checkout(addr, 0).expect("same address: reused");
        pool.checkin(conn, 0);
        // The server's host name now resolves elsewhere: the connection to the old address
        // is closed, not reused.
        let mut moved = addr;
        moved.set_port(addr.port().wrapping_add(1).max(1));
        assert!(pool.checkout(moved, 0).is_none());
        assert_eq!(pool.idle(), 0);
    }

    /// The body of a GET to a [`paced_server`], read with `idle` as `timeout_server`.
    async fn paced_body(
        pieces: Vec<&'static [u8]>,
        gap: Duration,
        idle: Duration,
    ) -> Result<Bytes, io::Error> {
        let (conn, h) = request(paced_server(pieces, false, gap).await, &Method::GET).await;
        let h = h.expect("head");
        let (body, _) = UpBody::new(conn, &h, None, 0, idle);
        body.collect().await.map(|c| c.to_bytes())
    }

    #[tokio::test]
    async fn a_server_that_stalls_mid_body_times_out() {
        let t = std::time::Instant::now();
        let got = paced_body(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            Duration::from_millis(5),
            Duration::from_millis(100),
        )
        .await;
        let e = got.expect_err("a stalled body is an error");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_but_steady_body_does_not_time_out() {
        // Ten pieces 25 ms apart: 250 ms in all, more than the inactivity timeout.
        let got = paced_body(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                b"a",
                b"b",
                b"c",
                b"d",
                b"e",
                b"f",
                b"g",
                b"h",
                b"i",
            ],
            Duration::from_millis(25),
            Duration::from_millis(150),
        )
        .await;
        assert_eq!(&got.expect("body")[..], b"abcdefghi");
    }

    #[tokio::test]
    async fn a_write_the_server_never_takes_stalls() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accepts and then reads nothing.
        let held = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let mut conn = Conn::connect(addr, SECOND).await.expect("connect");
        let big = vec![0u8; 64 << 20];
        let t = std::time::Instant::now();
        let got = conn.write(&mut &big[..], Duration::from_millis(200)).await;
        assert!(matches!(got, Err(Error::Timeout)), "{got:?}");
        assert!(t.elapsed() >= Duration::from_millis(200));
        drop(held);
    }

    #[test]
    fn request_heads_are_http11_with_framing() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("maas"));
        let mut out = BytesMut::new();
        let f = encode_request(
            &Method::POST,
            &"/a?b=c".parse().expect("uri"),
            &h,
            true,
            &mut out,
        );
        assert_eq!(f, ReqFraming::Chunked);
        assert_eq!(
            &out[..],
            b"POST /a?b=c HTTP/1.1\r\nhost: maas\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        out.clear();
        let f = encode_request(&Method::PUT, &"/".parse().expect("uri"), &h, true, &mut out);
        assert_eq!(f, ReqFraming::Plain);
        assert_eq!(
            &out[..],
            b"PUT / HTTP/1.1\r\nhost: maas\r\ncontent-length: 3\r\n\r\n"
        );
        out.clear();
        encode_request(
            &Method::GET,
            &"http://maas:5240/x".parse().expect("uri"),
            &HeaderMap::new(),
            false,
            &mut out,
        );
        assert_eq!(&out[..], b"GET http://maas:5240/x HTTP/1.1\r\n\r\n");
    }
}
