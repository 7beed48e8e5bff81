//! The L7 proxy (`mode = "http"`): HTTP/1.1 requests balanced one by one.
//!
//! - Each request picks its server (a client's keep-alive connection does not pin one, except
//!   that `balance = "source"` maps every request of a client to the same server).
//! - Server connections are pooled per server and reused unless `http_server_close`.
//! - Bodies stream both ways; nothing is buffered whole. hyper serves the client; the server
//!   side is [`crate::upstream`], which runs in the same task (no hand-off per request).
//! - A request is resent to another server when it was never sent (refused connect, a pooled
//!   connection found closed) and, for idempotent methods without a body, when the server
//!   closed before any response byte. Never otherwise.
//! - After `101 Switching Protocols` (websocket) the two connections become a tunnel governed
//!   by `timeout_tunnel` alone. It runs in the client connection's task, so it keeps the
//!   connection's `maxconn` slot and counts in `current` until it ends, and it ends with an
//!   access-log line of its own (bytes both ways, how it ended).
//! - Requests that cannot be relayed faithfully are refused before any server sees them (and
//!   the client connection is closed): a head over [`MAX_REQUEST_HEAD`] (414 when the request
//!   line alone is, else 431), conflicting Host (400), a transfer coding other than chunked
//!   (501), CONNECT (501).
//! - The proxy's own answers: 503 when no server is available, 502 when a server fails or sends
//!   garbage (including a body that fails before anything of the response left), 504 when it
//!   does not answer within `timeout_server`. A server silent for `timeout_server` in the
//!   middle of a response body has the client connection cut (its status line is gone
//!   already), logged `server_timeout`; the access log then counts only the body bytes that
//!   were written to the client.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use healthcheck::{ProxyError, ServerState};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::attempts::Attempts;
use crate::frontend::{Frontend, FrontendSnapshot, Settings};
use crate::l4::{End, Idle};
use crate::listener;
use crate::upstream::{self, Codings, Conn, ReqFraming, UpBody};

/// Largest request head relayed: request line and header lines together, as HAProxy's default
/// `tune.bufsize` (16 KiB) allows. A longer request line is answered 414, longer headers 431.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// What hyper reads of a request head at most before it answers 431 on its own (and stops
/// reading): the bound on the memory a head can take, above [`MAX_REQUEST_HEAD`] so that the
/// proxy itself tells a long request line (414) from long headers (431).
const PARSE_LIMIT: usize = 64 * 1024;

/// Body bytes read ahead of a response head, at most, when they are already there: a body that
/// fails within them is answered 502 instead of a head followed by a cut.
const PREFETCH: usize = 64 * 1024;

/// Serves one client connection in http mode; a websocket tunnel that it turns into runs here
/// too, to its end. The snapshot is let go of before the tunnel starts: a tunnel may outlive
/// many reloads, and the server pools of its generation should not.
/// `worker`: the worker thread it runs on (its idle server connections are kept per worker).
pub async fn serve(
    fe: &Frontend,
    snap: Arc<FrontendSnapshot>,
    client: TcpStream,
    peer: SocketAddr,
    worker: usize,
) {
    // TCP_NODELAY is inherited from the listener (see `listener::bind`).
    let shared = Arc::new(Shared::default());
    let io = TokioIo::new(ClientIo::new(
        client,
        shared.clone(),
        snap.settings.timeout_client,
    ));
    let svc = service_fn(|req: Request<Incoming>| {
        let (snap, shared) = (&*snap, &shared);
        async move { Ok::<_, Infallible>(handle(fe, snap, req, peer, shared, worker).await) }
    });
    let mut builder = server_http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(snap.settings.timeout_client)
        .max_header_size(PARSE_LIMIT)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(io, svc).with_upgrades().await {
        if e.is_parse() {
            // A head hyper refused and answered itself (400, or 431 beyond PARSE_LIMIT): no
            // request reached `handle`, but the refusal is logged and counted as one.
            let (status, end) = if e.is_parse_too_large() {
                (
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    HttpEnd::TooLarge,
                )
            } else {
                (StatusCode::BAD_REQUEST, HttpEnd::BadRequest)
            };
            fe.counters.requests.fetch_add(1, Ordering::Relaxed);
            fe.counters.count_status(status.as_u16());
            info!(target: "access", client = %peer, frontend = %fe.name, method = "-",
                path = "-", status = status.as_u16(), server = "-", cause = %e, end = end.as_str(), "http");
        } else {
            debug!(client = %peer, frontend = %fe.name, cause = %e,
                "client connection ended with an error");
        }
    }
    drop(snap);
    let tunnel = shared.tunnel.lock().ok().and_then(|mut t| t.take());
    if let Some(t) = tunnel {
        t.run().await;
    }
}

/// What the service of one client connection shares with its socket and with [`serve`].
#[derive(Default)]
struct Shared {
    /// How many times hyper has emptied its write buffer into the socket (its flush reaching
    /// the socket's own `poll_flush`): body bytes handed over before that are on the wire.
    flushes: AtomicU64,
    /// The tunnel a `101` turned the connection into, to run once hyper lets go of it.
    tunnel: Mutex<Option<Tunnel>>,
    /// The client took nothing for `timeout_client`: its connection is being cut.
    write_timed_out: AtomicBool,
}

impl Shared {
    fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Keeps `tunnel` for [`serve`] to run once hyper lets go of the connection.
    fn park(&self, tunnel: Tunnel) {
        if let Ok(mut slot) = self.tunnel.lock() {
            *slot = Some(tunnel);
        }
    }
}

/// The client socket as hyper sees it: it tells [`Shared`] when hyper has flushed, and fails
/// a write that the client takes nothing of for `idle` (`timeout_client`). hyper has no such
/// limit, and while it waits to write it does not poll the response body, whose own timer
/// would not run: a client that stops reading would hold its connection and the server's for
/// good.
struct ClientIo {
    stream: TcpStream,
    shared: Arc<Shared>,
    idle: Duration,
    /// Armed when a write has to wait; disarmed by any progress.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ClientIo {
    fn new(stream: TcpStream, shared: Arc<Shared>, idle: Duration) -> ClientIo {
        ClientIo {
            stream,
            shared,
            idle,
            stall: None,
        }
    }

    /// Passes a write's result on, timing how long it has been waiting.
    fn watch(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if r.is_ready() {
            self.stall = None;
            return r;
        }
        let idle = self.idle;
        let timer = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if timer.as_mut().poll(cx).is_ready() {
            self.shared.write_timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of the response for timeout_client",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper calls this once its buffer is empty (and only then).
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        if let Poll::Ready(Ok(())) = r {
            self.shared.flushes.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// How a request ended: the access log's `end` field in http mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpEnd {
    /// The response was relayed whole.
    Done,
    /// `GET /` answered with `redirect_root`.
    Redirect,
    /// Refused: a head that cannot be parsed, or conflicting Host (400).
    BadRequest,
    /// Refused: a request line (414) or head (431) over [`MAX_REQUEST_HEAD`].
    TooLarge,
    /// Refused: CONNECT or a transfer coding other than chunked (501).
    NotImplemented,
    /// No server was available (503).
    NoServer,
    /// This host ran out of descriptors, buffers or local ports for the server connection (503).
    LocalShortage,
    /// Every connect attempt was refused or timed out (503).
    ConnectFailed,
    /// The server went down while the request waited and `on_down = "shutdown_sessions"` cut it.
    ServerDown,
    /// The server sent what is not a valid response.
    ServerGarbage,
    /// The server answered nothing for `timeout_server` (504, or a response cut short).
    ServerTimeout,
    /// The server connection failed (reset, closed early).
    ServerError,
    /// The client sent nothing of its request body, or took nothing of the response, for
    /// `timeout_client`.
    ClientTimeout,
    /// The client went away mid-request or mid-response.
    ClientAbort,
    /// A tunnel after `101 Switching Protocols` ended, as a tcp mode connection does.
    Tunnel(End),
}

impl HttpEnd {
    /// The access log's `end` value.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpEnd::Done => "done",
            HttpEnd::Redirect => "redirect",
            HttpEnd::BadRequest => "bad_request",
            HttpEnd::TooLarge => "too_large",
            HttpEnd::NotImplemented => "not_implemented",
            HttpEnd::NoServer => "no_server",
            HttpEnd::LocalShortage => "local_shortage",
            HttpEnd::ConnectFailed => "connect_failed",
            HttpEnd::ServerDown => "server_down",
            HttpEnd::ServerGarbage => "server_garbage",
            HttpEnd::ServerTimeout => "server_timeout",
            HttpEnd::ServerError => "server_error",
            HttpEnd::ClientTimeout => "client_timeout",
            HttpEnd::ClientAbort => "client_abort",
            HttpEnd::Tunnel(end) => end.as_str(),
        }
    }
}

/// What the access-log line of a request says.
struct Log {
    frontend: Arc<str>,
    client: SocketAddr,
    method: Method,
    uri: Uri,
    server: Option<Arc<ServerState>>,
    status: u16,
    start: Instant,
    connect: Duration,
    response: Duration,
    retries: u32,
    end: HttpEnd,
    /// Request body bytes sent to the server (for a tunnel: every byte from the client).
    bytes_in: u64,
}

impl Log {
    /// The line of `req` from `client`, before anything is known of how it ends.
    fn new(fe: &Frontend, req: &Request<Incoming>, client: SocketAddr) -> Log {
        Log {
            frontend: fe.name.clone(),
            client,
            method: req.method().clone(),
            uri: req.uri().clone(),
            server: None,
            status: 0,
            start: Instant::now(),
            connect: Duration::ZERO,
            response: Duration::ZERO,
            retries: 0,
            end: HttpEnd::Done,
            bytes_in: 0,
        }
    }

    fn emit(&self, bytes_out: u64) {
        let server = self.server.as_ref().map_or("-", |s| s.name.as_str());
        info!(target: "access", client = %self.client, frontend = %self.frontend,
            method = %self.method, path = %self.uri, status = self.status, server,
            connect_ms = ms(self.connect), response_ms = ms(self.response),
            total_ms = ms(self.start.elapsed()), bytes_in = self.bytes_in, bytes_out,
            retries = self.retries, end = self.end.as_str(), "http");
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Response body to the client: the server's streamed body or the proxy's own short one.
/// Counts bytes and writes the access-log line when the response ends (or is dropped).
pub struct ProxyBody {
    inner: Inner,
    /// Body bytes handed to hyper.
    handed: u64,
    /// Of those, the bytes known to be written to the client socket.
    sent: u64,
    /// hyper's flush count when the bytes not yet known to be written were handed over.
    unsent_since: Option<u64>,
    shared: Option<Arc<Shared>>,
    log: Option<Box<Log>>,
}

enum Inner {
    /// The server's body, after the frames read ahead of the head; whether its length was
    /// known from the head (else it goes chunked, as it came, even when read ahead whole).
    Stream(UpBody, Ahead, bool),
    Full(Option<Bytes>),
}

impl ProxyBody {
    fn full(text: &'static str, log: Log) -> ProxyBody {
        ProxyBody {
            inner: Inner::Full(Some(Bytes::from_static(text.as_bytes()))),
            handed: 0,
            sent: 0,
            unsent_since: None,
            shared: None,
            log: Some(Box::new(log)),
        }
    }

    /// `sized`: whether the head gave the body's length.
    fn stream(
        body: UpBody,
        ahead: Ahead,
        sized: bool,
        shared: &Arc<Shared>,
        log: Option<Box<Log>>,
    ) -> ProxyBody {
        ProxyBody {
            inner: Inner::Stream(body, ahead, sized),
            handed: 0,
            sent: 0,
            unsent_since: None,
            shared: Some(shared.clone()),
            log,
        }
    }

    /// Moves what hyper has flushed since the last hand-over to `sent`.
    fn confirm(&mut self) {
        if let (Some(mark), Some(shared)) = (self.unsent_since, &self.shared) {
            if shared.flushes() > mark {
                self.sent = self.handed;
                self.unsent_since = None;
            }
        }
    }

    /// Writes the access-log line. `end` overrides the log's end (a failure or an abort); then
    /// hyper drops what it still holds, and only the bytes that reached the socket count.
    fn finish(&mut self, end: Option<HttpEnd>) {
        self.confirm();
        let Some(mut log) = self.log.take() else {
            return;
        };
        let bytes = match end {
            None => self.handed,
            Some(_) => self.sent,
        };
        if let Some(server) = &log.server {
            server.counters.current.fetch_sub(1, Ordering::Relaxed);
            server
                .counters
                .bytes_from_server
                .fetch_add(bytes, Ordering::Relaxed);
        }
        if let Some(end) = end {
            log.end = end;
        }
        log.emit(bytes);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        this.confirm();
        let polled = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(body, ahead, _) => match ahead.pop() {
                Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                None => Pin::new(body).poll_frame(cx),
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.handed += d.len() as u64;
                    this.unsent_since = this.shared.as_ref().map(|s| s.flushes());
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(s) = this.log.as_ref().and_then(|l| l.server.clone()) {
                    s.observe_error(body_error(e));
                }
                this.finish(Some(body_failure(e)));
            }
            Poll::Ready(None) => this.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Stream(s, ahead, _) => ahead.is_empty() && s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Stream(s, ahead, sized) => {
                let ahead = ahead.len();
                let rest = s.size_hint();
                match rest.exact() {
                    Some(n) if *sized => SizeHint::with_exact(ahead + n),
                    _ => {
                        let mut h = SizeHint::new();
                        h.set_lower(ahead + rest.lower());
                        h
                    }
                }
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper drops a body that is empty from the start without polling it; any other
        // dropped before its end means the client went away mid-response.
        let end = if self.is_end_stream() {
            None
        } else if self
            .shared
            .as_ref()
            .is_some_and(|s| s.write_timed_out.load(Ordering::Relaxed))
        {
            Some(HttpEnd::ClientTimeout)
        } else {
            Some(HttpEnd::ClientAbort)
        };
        self.finish(end);
    }
}

/// What a response body that failed says of its server (passive ejection).
fn body_error(e: &io::Error) -> ProxyError {
    match e.kind() {
        io::ErrorKind::TimedOut => ProxyError::Timeout,
        io::ErrorKind::InvalidData => ProxyError::BadResponse,
        _ => ProxyError::Reset,
    }
}

/// The access log's `end` for a response body that failed.
fn body_failure(e: &io::Error) -> HttpEnd {
    match e.kind() {
        io::ErrorKind::TimedOut => HttpEnd::ServerTimeout,
        io::ErrorKind::InvalidData => HttpEnd::ServerGarbage,
        _ => HttpEnd::ServerError,
    }
}

/// Body frames read ahead of the response head, in order. The first is kept apart: it is
/// most often the only one, and then costs no allocation.
#[derive(Default)]
struct Ahead {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Ahead {
    fn push(&mut self, data: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(data);
        } else {
            self.rest.push_back(data);
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    /// Bytes held.
    fn len(&self) -> u64 {
        self.first
            .iter()
            .chain(&self.rest)
            .map(|b| b.len() as u64)
            .sum()
    }
}

/// Takes the body frames that are there already (buffered with the head, or readable without
/// waiting), up to [`PREFETCH`] bytes, so that a body failing within them is answered 502
/// before any of the response leaves.
fn read_ahead(body: &mut UpBody) -> io::Result<Ahead> {
    let mut ahead = Ahead::default();
    if body.is_end_stream() {
        return Ok(ahead);
    }
    // Polled without a waker that matters: hyper polls again (with its own) when it streams
    // the body, and tokio then registers that one.
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut total = 0;
    while total < PREFETCH {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    ahead.push(data);
                }
            }
            Poll::Ready(Some(Err(e))) => return Err(e),
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
    Ok(ahead)
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE) && upstream::has_token(h, header::CONNECTION, "upgrade")
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): the fixed set and every header named in
/// Connection, except those the message cannot do without here: Host, and Content-Length,
/// which frames the body (`Connection: Content-Length` must not turn a sized body into a
/// chunked one). Transfer-Encoding goes in any case; the next hop's framing is written anew.
/// With `upgrade`, Upgrade and `Connection: upgrade` are kept for the next hop.
fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    let mut named: Vec<HeaderName> = Vec::new();
    for v in h.get_all(header::CONNECTION) {
        for t in v.to_str().unwrap_or("").split(',') {
            let t = t.trim();
            if t.is_empty()
                || t.eq_ignore_ascii_case("close")
                || t.eq_ignore_ascii_case("keep-alive")
                || t.eq_ignore_ascii_case("upgrade")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(t.as_bytes()) {
                if name != header::HOST && name != header::CONTENT_LENGTH {
                    named.push(name);
                }
            }
        }
    }
    for name in named {
        h.remove(name);
    }
    let upgrade_value = if upgrade {
        h.remove(header::UPGRADE)
    } else {
        None
    };
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    if let Some(u) = upgrade_value {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Sets X-Forwarded-For to every value the request had, in order (over all its lines, as RFC
/// 9110 §5.3 combines them), then the client's address; and X-Forwarded-Proto.
///
/// An IPv6 client is written bare (`2001:db8::5`, no brackets, no port), as HAProxy's
/// `option forwardfor` writes it and nginx's realip module reads it; an IPv4 client of a
/// dual-stack listener as its IPv4 address. No RFC 7239 `Forwarded` header is sent.
fn add_forwarded(h: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_canonical();
    let xff = HeaderName::from_static("x-forwarded-for");
    let mut value = Vec::new();
    for v in h.get_all(&xff) {
        let v = v.as_bytes().trim_ascii();
        if !v.is_empty() {
            value.extend_from_slice(v);
            value.extend_from_slice(b", ");
        }
    }
    value.extend_from_slice(ip.to_string().as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&value) {
        h.insert(xff, v);
    }
    // This proxy terminates plain HTTP: the client spoke http, whatever it claims.
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn plain(status: StatusCode, text: &'static str, log: Log) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(text, log));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The proxy's own answer, counted and logged.
fn answer(
    fe: &Frontend,
    status: StatusCode,
    text: &'static str,
    mut log: Log,
) -> Response<ProxyBody> {
    log.status = status.as_u16();
    fe.counters.count_status(status.as_u16());
    plain(status, text, log)
}

/// Why a request is refused before any server sees it.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    status: StatusCode,
    text: &'static str,
    /// The access log's `end`.
    end: HttpEnd,
}

impl Refusal {
    const BAD_HOST: Refusal = Refusal {
        status: StatusCode::BAD_REQUEST,
        text: "400 Bad Request: conflicting Host\n",
        end: HttpEnd::BadRequest,
    };
    const URI_TOO_LONG: Refusal = Refusal {
        status: StatusCode::URI_TOO_LONG,
        text: "414 URI Too Long\n",
        end: HttpEnd::TooLarge,
    };
    const HEAD_TOO_LARGE: Refusal = Refusal {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        text: "431 Request Header Fields Too Large\n",
        end: HttpEnd::TooLarge,
    };
    const CODING: Refusal = Refusal {
        status: StatusCode::NOT_IMPLEMENTED,
        text: "501 Not Implemented: transfer coding other than chunked\n",
        end: HttpEnd::NotImplemented,
    };
    const CONNECT: Refusal = Refusal {
        status: StatusCode::NOT_IMPLEMENTED,
        text: "501 Not Implemented: CONNECT\n",
        end: HttpEnd::NotImplemented,
    };

    /// The answer, counted and logged; the client connection closes after it (what follows
    /// a refused head cannot be trusted to be a request).
    fn answer(self, fe: &Frontend, mut log: Log) -> Response<ProxyBody> {
        log.end = self.end;
        let mut r = answer(fe, self.status, self.text, log);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }
}

/// The length of `uri` as it came in the request line.
fn target_len(uri: &Uri) -> usize {
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(a)) => scheme.len() + 3 + a.as_str().len() + path,
        (None, Some(a)) => a.as_str().len() + path,
        _ => path,
    }
}

/// Checks what must hold before a request may go to a server, and makes Host single.
fn vet(req: &mut Request<Incoming>) -> Result<(), Refusal> {
    // RFC 9110 §9.3.6: a tunnel to wherever the client names; the regions take none.
    if req.method() == Method::CONNECT {
        return Err(Refusal::CONNECT);
    }
    let line = req.method().as_str().len() + 1 + target_len(req.uri()) + 11;
    if line > MAX_REQUEST_HEAD {
        return Err(Refusal::URI_TOO_LONG);
    }
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if line + fields + 2 > MAX_REQUEST_HEAD {
        return Err(Refusal::HEAD_TOO_LARGE);
    }
    // RFC 9112 §6.1: a coding this proxy cannot undo and redo must not be dropped on the way;
    // 501 as the RFC suggests (HAProxy answers 422).
    if upstream::transfer_codings(req.headers()) == Codings::Other {
        return Err(Refusal::CODING);
    }
    // RFC 9112 §3.2: two different Host lines are a 400. The same one twice is merged, as
    // HAProxy does.
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    let mut repeated = false;
    for other in hosts {
        if !host
            .as_ref()
            .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(other.as_bytes()))
        {
            return Err(Refusal::BAD_HOST);
        }
        repeated = true;
    }
    if repeated {
        if let Some(h) = &host {
            req.headers_mut().insert(header::HOST, h.clone());
        }
    }
    // RFC 9112 §3.2.2: an absolute-form target names the host; a Host that says otherwise
    // is a conflict (HAProxy answers 400 too). Without Host, the target's authority is it.
    if let (Some(scheme), Some(authority)) = (req.uri().scheme_str(), req.uri().authority()) {
        match &host {
            Some(h) if !same_authority(scheme, authority, h) => return Err(Refusal::BAD_HOST),
            Some(_) => {}
            None => {
                let value = match authority.port() {
                    Some(port) => format!("{}:{}", authority.host(), port),
                    None => authority.host().to_owned(),
                };
                let value = HeaderValue::from_str(&value).map_err(|_| Refusal::BAD_HOST)?;
                req.headers_mut().insert(header::HOST, value);
            }
        }
    }
    Ok(())
}

/// Whether a Host value names the same host and port as a URI's authority (names compared
/// case-insensitively, an absent port being the scheme's default).
fn same_authority(scheme: &str, authority: &Authority, host: &HeaderValue) -> bool {
    let Ok(host) = Authority::from_maybe_shared(Bytes::copy_from_slice(host.as_bytes())) else {
        return false;
    };
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    authority.host().eq_ignore_ascii_case(host.host())
        && authority.port_u16().unwrap_or(default) == host.port_u16().unwrap_or(default)
}

/// Serves one request: refused, redirected, or forwarded to a server, attempt after attempt
/// (as [`Attempts`] decides), until one answers or none is left to try.
async fn handle(
    fe: &Frontend,
    snap: &FrontendSnapshot,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    worker: usize,
) -> Response<ProxyBody> {
    let log = Log::new(fe, &req, peer);
    fe.counters.requests.fetch_add(1, Ordering::Relaxed);
    if let Err(refusal) = vet(&mut req) {
        return refusal.answer(fe, log);
    }
    if let Some(target) = redirect_target(&snap.settings, &req) {
        return redirect(fe, target, log);
    }
    let mut fwd = Forward::new(fe, snap, req, peer, worker, log);
    loop {
        match fwd.attempt().await {
            Ok(exchanged) => return fwd.respond(exchanged, shared),
            Err(Step::Again) => {}
            Err(Step::GiveUp(status, text)) => return answer(fe, status, text, fwd.log),
        }
    }
}

/// `redirect_root` when it applies to `req`: `GET /` or `HEAD /`.
fn redirect_target<'s>(s: &'s Settings, req: &Request<Incoming>) -> Option<&'s str> {
    let target = s.redirect_root.as_deref()?;
    let root = req.uri().path() == "/" && matches!(*req.method(), Method::GET | Method::HEAD);
    root.then_some(target)
}

/// `302 Found` to `target`, counted and logged.
fn redirect(fe: &Frontend, target: &str, mut log: Log) -> Response<ProxyBody> {
    log.end = HttpEnd::Redirect;
    let mut r = answer(fe, StatusCode::FOUND, "", log);
    if let Ok(v) = HeaderValue::from_str(target) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Where an attempt that got no response head leaves the request.
enum Step {
    /// Another attempt, on the server [`Attempts`] picks next.
    Again,
    /// No more attempts: the proxy's own answer, with the log saying why.
    GiveUp(StatusCode, &'static str),
}

/// A response head read from server `idx` on `conn`.
struct Exchanged {
    idx: usize,
    conn: Conn,
    head: upstream::Head,
    /// `on_down = "shutdown_sessions"`: the server's down signal, for the body or the tunnel
    /// to watch from here on.
    cut: Option<watch::Receiver<u64>>,
}

/// A request on its way to a server: its head encoded once for every attempt, its body until
/// an attempt sends it, the attempts so far and its access-log line.
struct Forward<'a> {
    fe: &'a Frontend,
    snap: &'a FrontendSnapshot,
    peer: SocketAddr,
    worker: usize,
    method: Method,
    /// The head as it goes to any server: hop-by-hop fields gone, X-Forwarded-* added with
    /// `forwardfor`.
    head: BytesMut,
    framing: ReqFraming,
    body: Option<Incoming>,
    /// Whether it may go again after it reached a server: idempotent and without a body.
    replayable: bool,
    /// The client asked for a protocol switch: never over a pooled connection, nor back into
    /// the pool.
    upgrade: bool,
    /// The client connection once hyper lets go of it, for the tunnel after a `101`.
    client_upgrade: Option<OnUpgrade>,
    attempts: Attempts,
    log: Log,
}

impl<'a> Forward<'a> {
    /// Makes `req`'s head ready for the servers.
    fn new(
        fe: &'a Frontend,
        snap: &'a FrontendSnapshot,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        worker: usize,
        log: Log,
    ) -> Forward<'a> {
        let s = &snap.settings;
        let upgrade = wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let h = req.headers_mut();
        strip_hop_by_hop(h, upgrade);
        if s.forwardfor {
            add_forwarded(h, peer);
        }
        if s.http_server_close && !upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let (parts, body) = req.into_parts();
        let has_body = !body.is_end_stream();
        let mut head = BytesMut::new();
        let framing = upstream::encode_request(
            &parts.method,
            &parts.uri,
            &parts.headers,
            has_body,
            &mut head,
        );
        Forward {
            fe,
            snap,
            peer,
            worker,
            replayable: idempotent(&parts.method) && !has_body,
            method: parts.method,
            head,
            framing,
            body: has_body.then_some(body),
            upgrade,
            client_upgrade,
            attempts: Attempts::new(s),
            log,
        }
    }

    /// Whether the server connection may come from the idle pool and go back to it.
    fn pooling(&self) -> bool {
        !self.snap.settings.http_server_close && !self.upgrade
    }

    /// One attempt: a server picked and connected to, the request sent, the response head
    /// read.
    async fn attempt(&mut self) -> Result<Exchanged, Step> {
        let (idx, conn) = self.connect().await?;
        self.exchange(idx, conn).await
    }

    /// Ends the attempts: the log's `retries` and `end`, and the answer.
    fn give_up(&mut self, end: HttpEnd, status: StatusCode, text: &'static str) -> Step {
        self.log.retries = self.attempts.retries();
        self.log.end = end;
        Step::GiveUp(status, text)
    }

    /// Picks a server and connects to it: an idle pooled connection, else a new one within
    /// `timeout_connect`.
    async fn connect(&mut self) -> Result<(usize, Conn), Step> {
        let snap = self.snap;
        // No server left after failed attempts is answered as none at all.
        let Ok(idx) = self.attempts.pick(snap, &self.fe.counters, self.peer.ip()) else {
            self.fe.counters.no_server.fetch_add(1, Ordering::Relaxed);
            return Err(self.give_up(
                HttpEnd::NoServer,
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: no region is available\n",
            ));
        };
        // The name lost its address since the pick: another server, not an attempt.
        let Some(address) = snap.servers.members()[idx].state.address() else {
            self.attempts.skip(idx);
            return Err(Step::Again);
        };
        let t = Instant::now();
        // Only a connection to the address the server has now: after its name moved, the
        // old region gets no more requests.
        let pooled = if self.pooling() {
            snap.idle_conns[idx].checkout(address, self.worker)
        } else {
            None
        };
        let conn = match pooled {
            Some(conn) => conn,
            None => match Conn::connect(address, snap.settings.timeout_connect).await {
                Ok(conn) => conn,
                Err(e) => return Err(self.connect_failed(idx, e).await),
            },
        };
        self.log.connect += t.elapsed();
        Ok((idx, conn))
    }

    /// A new connection to server `idx` failed.
    async fn connect_failed(&mut self, idx: usize, e: io::Error) -> Step {
        let snap = self.snap;
        // This host's shortage (descriptors, buffers, local ports), not the server's.
        // Waited out within `timeout_connect`, then answered 503.
        if listener::is_local_shortage(&e) {
            if let Some(pause) = self.attempts.shortage(snap.settings.timeout_connect) {
                listener::pause_for_shortage(&e, pause).await;
                return Step::Again;
            }
            self.fe
                .counters
                .local_shortage
                .fetch_add(1, Ordering::Relaxed);
            return self.give_up(
                HttpEnd::LocalShortage,
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: the proxy is out of resources\n",
            );
        }
        let server = &snap.servers.members()[idx].state;
        server.observe_error(ProxyError::from_connect(&e));
        if self.attempts.failed(idx) {
            return Step::Again;
        }
        self.fe
            .counters
            .connect_failed
            .fetch_add(1, Ordering::Relaxed);
        self.give_up(
            HttpEnd::ConnectFailed,
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: no region answered\n",
        )
    }

    /// Sends the request to server `idx` on `conn` and reads the response head within
    /// `timeout_server`.
    async fn exchange(&mut self, idx: usize, mut conn: Conn) -> Result<Exchanged, Step> {
        let snap = self.snap;
        let s = &snap.settings;
        let server = &snap.servers.members()[idx].state;
        let t = Instant::now();
        server.counters.total.fetch_add(1, Ordering::Relaxed);
        let mut cut = crate::l4::cut_signal(snap, server);
        let (head, body, framing, method) =
            (&self.head, &mut self.body, self.framing, &self.method);
        let exchange = async {
            let sent = conn
                .send(head, body, framing, s.timeout_client, s.timeout_server)
                .await;
            let exchanged = match sent {
                Ok(()) => tokio::time::timeout(s.timeout_server, conn.read_head(method))
                    .await
                    .unwrap_or(Err(upstream::Error::Timeout)),
                Err(e) => Err(e),
            };
            (conn.body_sent(), exchanged)
        };
        // `on_down = "shutdown_sessions"`: a server going down while the request waits for
        // its answer ends it (the connection with it).
        let exchanged = tokio::select! {
            r = exchange => Some(r),
            () = crate::l4::went_down(&mut cut) => None,
        };
        let Some((body_sent, exchanged)) = exchanged else {
            server.counters.sessions_cut.fetch_add(1, Ordering::Relaxed);
            self.log.response = t.elapsed();
            return Err(self.give_up(
                HttpEnd::ServerDown,
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: the server went down\n",
            ));
        };
        self.log.bytes_in = body_sent;
        server
            .counters
            .bytes_to_server
            .fetch_add(body_sent, Ordering::Relaxed);
        self.log.response = t.elapsed();
        match exchanged {
            Ok(head) => Ok(Exchanged {
                idx,
                conn,
                head,
                cut,
            }),
            Err(e) => Err(self.exchange_failed(idx, conn, e)),
        }
    }

    /// The exchange with server `idx` on `conn` failed with `error`.
    fn exchange_failed(&mut self, idx: usize, conn: Conn, error: upstream::Error) -> Step {
        let server = &self.snap.servers.members()[idx].state;
        let reused = conn.reused();
        drop(conn);
        debug!(client = %self.peer, frontend = %self.fe.name, server = %server.name,
            cause = %error, "request failed");
        match error {
            upstream::Error::Timeout => {
                server.observe_error(ProxyError::Timeout);
                let text = "504 Gateway Timeout\n";
                self.give_up(HttpEnd::ServerTimeout, StatusCode::GATEWAY_TIMEOUT, text)
            }
            upstream::Error::Client(e) => {
                // The client went away or fell silent mid-upload: nothing to blame the server
                // for.
                server.counters.total.fetch_sub(1, Ordering::Relaxed);
                if e.kind() == io::ErrorKind::TimedOut {
                    let text = "408 Request Timeout\n";
                    return self.give_up(HttpEnd::ClientTimeout, StatusCode::REQUEST_TIMEOUT, text);
                }
                let text = "400 Bad Request\n";
                self.give_up(HttpEnd::ClientAbort, StatusCode::BAD_REQUEST, text)
            }
            // The server closed a pooled connection as the request went out: the request
            // never reached it. Go again, same rules, not counted as an attempt.
            e if reused && self.replayable && e.closed_early() => {
                server.counters.total.fetch_sub(1, Ordering::Relaxed);
                if self.attempts.stale() {
                    return Step::Again;
                }
                // Too many in a row: logged as the closed connection it was.
                self.give_up(
                    HttpEnd::ServerError,
                    StatusCode::BAD_GATEWAY,
                    "502 Bad Gateway\n",
                )
            }
            error => {
                let garbage = matches!(error, upstream::Error::Garbage(_));
                server.observe_error(if garbage {
                    ProxyError::BadResponse
                } else {
                    ProxyError::Reset
                });
                // Closed before any response byte: an idempotent request without a body
                // may go again, to another server.
                if self
                    .attempts
                    .failed_after_send(idx, self.replayable && !garbage)
                {
                    return Step::Again;
                }
                let end = if garbage {
                    HttpEnd::ServerGarbage
                } else {
                    HttpEnd::ServerError
                };
                self.give_up(end, StatusCode::BAD_GATEWAY, "502 Bad Gateway\n")
            }
        }
    }

    /// Relays the response head, and the body as it comes, with the frames that are there
    /// already read ahead; after a `101`, leaves the tunnel it became to [`serve`].
    fn respond(mut self, ex: Exchanged, shared: &Arc<Shared>) -> Response<ProxyBody> {
        let (fe, snap) = (self.fe, self.snap);
        let Exchanged {
            idx,
            conn,
            head: h,
            mut cut,
        } = ex;
        let server = &snap.servers.members()[idx].state;
        self.log.retries = self.attempts.retries();
        let switching = h.status == StatusCode::SWITCHING_PROTOCOLS;
        if switching && self.client_upgrade.is_none() {
            // A protocol switch the client did not ask for cannot be relayed.
            server.observe_error(ProxyError::BadResponse);
            self.log.end = HttpEnd::ServerGarbage;
            return answer(fe, StatusCode::BAD_GATEWAY, "502 Bad Gateway\n", self.log);
        }
        let pool = self.pooling().then(|| snap.idle_conns[idx].clone());
        let timeout = snap.settings.timeout_server;
        let (mut up_body, switched) = UpBody::new(conn, &h, pool, self.worker, timeout);
        // The body watches the server, or else the tunnel it became does.
        if switched.is_none() {
            if let Some(cut) = cut.take() {
                up_body.cut_when_down(cut, server.clone());
            }
        }
        let sized = up_body.size_hint().exact().is_some();
        let ahead = match read_ahead(&mut up_body) {
            Ok(ahead) => ahead,
            Err(e) => {
                // Nothing of the response has left: the client can still be told.
                server.observe_error(body_error(&e));
                self.log.end = body_failure(&e);
                return answer(fe, StatusCode::BAD_GATEWAY, "502 Bad Gateway\n", self.log);
            }
        };
        server.observe_success();
        self.log.status = h.status.as_u16();
        fe.counters.count_status(self.log.status);
        let mut headers = h.headers;
        strip_hop_by_hop(&mut headers, switching);
        server.counters.current.fetch_add(1, Ordering::Relaxed);
        self.log.server = Some(server.clone());
        let log = self.log_keeper(switched, cut, shared);
        let mut r = Response::new(ProxyBody::stream(up_body, ahead, sized, shared, log));
        *r.status_mut() = h.status;
        *r.headers_mut() = headers;
        r
    }

    /// Who writes the access-log line and ends the server's `current`: after a `101` both
    /// sides asked for, the tunnel on the server connection `switched`, parked in `shared` for
    /// [`serve`] to run (the response itself, empty, logs nothing); else the response body
    /// (the log returned).
    fn log_keeper(
        self,
        switched: Option<Conn>,
        cut: Option<watch::Receiver<u64>>,
        shared: &Shared,
    ) -> Option<Box<Log>> {
        let log = Box::new(self.log);
        match (self.client_upgrade, switched) {
            (Some(client), Some(server)) => {
                shared.park(Tunnel {
                    client,
                    server,
                    log,
                    idle: self.snap.settings.timeout_tunnel,
                    cut,
                });
                None
            }
            _ => Some(log),
        }
    }
}

/// A websocket (or other `101`) tunnel, from the end of the exchange that made it to the end
/// of both connections.
struct Tunnel {
    /// The client side, once hyper has written the 101 and let go of the connection.
    client: OnUpgrade,
    /// The server side, with what it sent past the 101 still buffered.
    server: Conn,
    /// The upgrade request's access-log line, written when the tunnel ends.
    log: Box<Log>,
    /// `timeout_tunnel`.
    idle: Duration,
    /// `on_down = "shutdown_sessions"`: the server's down signal.
    cut: Option<watch::Receiver<u64>>,
}

impl Tunnel {
    /// Copies both ways with the tcp mode's loop, bounded by `idle` whatever either direction
    /// is doing, then logs; bytes read past the heads (by hyper on the client side, by the
    /// upstream client on the server side) go first.
    async fn run(self) {
        let Tunnel {
            client,
            server,
            mut log,
            idle,
            cut,
        } = self;
        let mut to_server = 0u64;
        let mut to_client = 0u64;
        let end = match client.await.map(|up| up.downcast::<TokioIo<ClientIo>>()) {
            Ok(Ok(parts)) => {
                let mut client = parts.io.into_inner().stream;
                let (mut server, early) = server.into_parts();
                let mut first = early_bytes(&mut server, &parts.read_buf, idle, false).await;
                if first.is_ok() {
                    to_server += parts.read_buf.len() as u64;
                    first = early_bytes(&mut client, &early, idle, true).await;
                }
                let end = match first {
                    Ok(()) => {
                        to_client += early.len() as u64;
                        let o = crate::l4::copy_bidirectional(
                            &client,
                            &server,
                            Idle::Tunnel(idle),
                            cut,
                        )
                        .await;
                        to_server += o.to_server;
                        to_client += o.to_client;
                        match o.end {
                            // One limit in a tunnel, whichever side was silent.
                            End::ClientTimeout | End::ServerTimeout => End::TunnelTimeout,
                            end => end,
                        }
                    }
                    Err(end) => end,
                };
                if let (End::ServerDown, Some(st)) = (end, &log.server) {
                    crate::l4::cut_both(&client, &server, st);
                } else if end == End::TunnelTimeout {
                    // As HAProxy on a timeout: reset rather than close, so that bytes queued
                    // toward a side that reads nothing do not keep its socket alive.
                    let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
                    let _ = SockRef::from(&server).set_linger(Some(Duration::ZERO));
                }
                end
            }
            // The client connection broke before hyper could hand it over (or is not the
            // socket `serve` gave hyper, which cannot be).
            Ok(Err(_)) | Err(_) => End::ClientError,
        };
        if let Some(server) = &log.server {
            server.counters.current.fetch_sub(1, Ordering::Relaxed);
            server
                .counters
                .bytes_to_server
                .fetch_add(to_server, Ordering::Relaxed);
            server
                .counters
                .bytes_from_server
                .fetch_add(to_client, Ordering::Relaxed);
            if end == End::ServerError {
                server.observe_error(ProxyError::Reset);
            }
        }
        log.end = HttpEnd::Tunnel(end);
        log.bytes_in += to_server;
        log.emit(to_client);
    }
}

/// Writes the bytes one side sent past its head to the other side (`to_client` says which)
/// before the copy starts, within `idle`.
async fn early_bytes(
    dst: &mut TcpStream,
    bytes: &[u8],
    idle: Duration,
    to_client: bool,
) -> Result<(), End> {
    if bytes.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(idle, dst.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) if to_client => Err(End::ClientError),
        Ok(Err(_)) => Err(End::ServerError),
        Err(_) => Err(End::TunnelTimeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_names_are_the_access_log_s() {
        let names = [
            (HttpEnd::Done, "done"),
            (HttpEnd::Redirect, "redirect"),
            (HttpEnd::BadRequest, "bad_request"),
            (HttpEnd::TooLarge, "too_large"),
            (HttpEnd::NotImplemented, "not_implemented"),
            (HttpEnd::NoServer, "no_server"),
            (HttpEnd::LocalShortage, "local_shortage"),
            (HttpEnd::ConnectFailed, "connect_failed"),
            (HttpEnd::ServerDown, "server_down"),
            (HttpEnd::ServerGarbage, "server_garbage"),
            (HttpEnd::ServerTimeout, "server_timeout"),
            (HttpEnd::ServerError, "server_error"),
            (HttpEnd::ClientTimeout, "client_timeout"),
            (HttpEnd::ClientAbort, "client_abort"),
            (HttpEnd::Tunnel(End::ClientClose), "client_close"),
            (HttpEnd::Tunnel(End::TunnelTimeout), "tunnel_timeout"),
        ];
        for (end, name) in names {
            assert_eq!(end.as_str(), name, "{end:?}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::HOST, HeaderValue::from_static("maas"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::HOST));
    }

    #[test]
    fn upgrade_headers_survive_for_websockets() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, SocketAddr::from(([10, 0, 0, 5], 4000)));
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"10.0.0.5"[..])
        );
        add_forwarded(&mut h, SocketAddr::from(([10, 0, 0, 6], 4000)));
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"10.0.0.5, 10.0.0.6"[..])
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
    }

    #[test]
    fn forwarded_for_ipv6_is_bare_and_v4_mapped_is_ipv4() {
        let v6: SocketAddr = "[2001:db8::5]:4000".parse().expect("v6");
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:4001".parse().expect("mapped");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("2001:db8::1"));
        add_forwarded(&mut h, v6);
        add_forwarded(&mut h, mapped);
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"2001:db8::1, 2001:db8::5, 10.0.0.5"[..])
        );
        assert!(h.get("forwarded").is_none());
    }
}
