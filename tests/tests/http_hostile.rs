//! Hostile HTTP/1.1 input against http mode, as raw bytes over loopback sockets (issue 20,
//! section 6): what the region receives, what the client receives and what the access log says.
//!
//! The stand-in regions here are raw too: they record the bytes of each request as it reached
//! them and answer with canned bytes, so that nothing between the test and the proxy tidies
//! the input up. The same requests went through HAProxy 2.6 (see the README's "Hostile input"
//! table).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maas_vip_tests::access_log::{self, field};
use maas_vip_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a raw region received: one entry per request, its head and body bytes as they came.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// Reads one request (head, then a Content-Length or chunked body) from `s`, raw.
async fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut b = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&data, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return (!data.is_empty()).then_some(data);
        }
        data.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    loop {
        let body = &data[head_end..];
        let complete = match (length, chunked) {
            (_, true) => body.ends_with(b"0\r\n\r\n"),
            (Some(n), false) => body.len() >= n,
            (None, false) => true,
        };
        if complete {
            return Some(data);
        }
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return Some(data);
        }
        data.extend_from_slice(&b[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A raw region: records each request and answers `pieces` (one write each, `gap` apart), then
/// closes.
async fn raw_region(pieces: Vec<&'static [u8]>, gap: Duration) -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let rec = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let rec = rec.clone();
            let pieces = pieces.clone();
            tokio::spawn(async move {
                let Some(req) = read_request(&mut s).await else {
                    return;
                };
                rec.lock().expect("lock").push(req);
                for (i, p) in pieces.iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    if s.write_all(p).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A region that answers every request `200` with a two-byte body.
async fn ok_region() -> (SocketAddr, Seen) {
    raw_region(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        Duration::ZERO,
    )
    .await
}

/// Sends `request` on a new connection and reads until the proxy closes it (at most 5 s).
/// Returns the client's local address (to find its access-log line) and what came back.
async fn exchange(fe: SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(fe).await.expect("connect");
    let me = s.local_addr().expect("local").to_string();
    s.write_all(request).await.expect("send");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    (me, out)
}

/// The status code of a raw response (0 if there is none).
fn status_of(response: &[u8]) -> u16 {
    let line = response.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line)
        .split(' ')
        .nth(1)
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0)
}

/// The header lines (lowercased names) of a recorded request.
fn header_lines(req: &[u8]) -> Vec<String> {
    let end = find(req, b"\r\n\r\n").unwrap_or(req.len());
    String::from_utf8_lossy(&req[..end])
        .split("\r\n")
        .skip(1)
        .map(|l| match l.split_once(':') {
            Some((n, v)) => format!("{}:{}", n.to_ascii_lowercase(), v),
            None => l.to_string(),
        })
        .collect()
}

fn values(req: &[u8], name: &str) -> Vec<String> {
    let prefix = format!("{name}:");
    header_lines(req)
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
        .collect()
}

async fn frontend(region: SocketAddr) -> TestFrontend {
    access_log::capture();
    TestFrontend::start("mode = \"http\"", &[("r1", region)]).await
}

/// The one access-log line of the request from `client` to `fe`.
async fn log_line(fe: &TestFrontend, client: &str) -> String {
    let lines = access_log::wait_for(&fe.log_key(client), 1, Duration::from_secs(5)).await;
    assert_eq!(
        lines.len(),
        1,
        "one access-log line for {client}: {lines:?}"
    );
    lines[0].clone()
}

fn requests(seen: &Seen) -> Vec<Vec<u8>> {
    seen.lock().expect("lock").clone()
}

/// A `GET` through a frontend in front of a raw region that answers `pieces`, `gap` apart:
/// what the client got and the request's access-log line.
async fn get_through(pieces: Vec<&'static [u8]>, gap: Duration) -> (Vec<u8>, String) {
    let (region, _) = raw_region(pieces, gap).await;
    let fe = frontend(region).await;
    let (me, out) = exchange(
        fe.addr,
        b"GET /x HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n",
    )
    .await;
    (out, log_line(&fe, &me).await)
}

// 1. X-Forwarded-For

#[tokio::test]
async fn every_x_forwarded_for_value_is_kept_in_order_then_the_client() {
    let (region, seen) = ok_region().await;
    let fe = frontend(region).await;
    let (_, out) = exchange(
        fe.addr,
        b"GET /x HTTP/1.1\r\nHost: maas\r\nX-Forwarded-For: 6.6.6.6\r\n\
          X-Forwarded-For: 10.9.9.9, 10.9.9.10\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 200);
    let reqs = requests(&seen);
    assert_eq!(
        values(&reqs[0], "x-forwarded-for"),
        ["6.6.6.6, 10.9.9.9, 10.9.9.10, 127.0.0.1"],
        "{:?}",
        header_lines(&reqs[0])
    );
}

// 2. Conflicting Host

#[tokio::test]
async fn conflicting_host_is_400_and_reaches_no_region() {
    let (region, seen) = ok_region().await;
    let fe = frontend(region).await;
    for req in [
        &b"GET /x HTTP/1.1\r\nHost: maas\r\nHost: evil.example\r\nConnection: close\r\n\r\n"[..],
        b"GET http://evil.example/x HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n",
        b"GET http://maas:8080/x HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n",
    ] {
        let (me, out) = exchange(fe.addr, req).await;
        assert_eq!(status_of(&out), 400, "{}", String::from_utf8_lossy(&out));
        let line = log_line(&fe, &me).await;
        assert_eq!(field(&line, "status"), Some("400"), "{line}");
    }
    assert!(
        requests(&seen).is_empty(),
        "a region got a conflicting Host"
    );

    // The same Host twice is no conflict (HAProxy merges it too); an absolute-form URI that
    // agrees with Host (the default port spelt or not) goes through.
    for req in [
        &b"GET /x HTTP/1.1\r\nHost: maas\r\nHost: maas\r\nConnection: close\r\n\r\n"[..],
        b"GET http://MAAS/x HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n",
        b"GET http://maas:80/x HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n",
    ] {
        let (_, out) = exchange(fe.addr, req).await;
        assert_eq!(status_of(&out), 200, "{}", String::from_utf8_lossy(req));
    }
    for req in requests(&seen) {
        assert_eq!(values(&req, "host"), ["maas"], "{:?}", header_lines(&req));
    }
}

// 3. Headers named in Connection

#[tokio::test]
async fn every_header_named_in_connection_is_removed_but_host_and_framing() {
    let (region, seen) = ok_region().await;
    let fe = frontend(region).await;
    let (_, out) = exchange(
        fe.addr,
        b"GET /x HTTP/1.1\r\nHost: maas\r\nConnection: close, a, b, c\r\nConnection: d, X-Secret\r\n\
          A: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nX-Secret: s\r\nX-Kept: k\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 200);
    let (_, out) = exchange(
        fe.addr,
        b"GET /y HTTP/1.1\r\nHost: maas\r\nConnection: close, Host\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 200);
    let (_, out) = exchange(
        fe.addr,
        b"POST /z HTTP/1.1\r\nHost: maas\r\nConnection: close, Content-Length\r\n\
          Content-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(status_of(&out), 200);

    let reqs = requests(&seen);
    assert_eq!(reqs.len(), 3);
    let names: Vec<String> = header_lines(&reqs[0])
        .iter()
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
        .collect();
    for gone in ["a", "b", "c", "d", "x-secret", "connection"] {
        assert!(
            !names.iter().any(|n| n == gone),
            "{gone} forwarded: {names:?}"
        );
    }
    assert_eq!(values(&reqs[0], "x-kept"), ["k"]);
    assert_eq!(
        values(&reqs[1], "host"),
        ["maas"],
        "Connection: Host removed Host"
    );
    assert_eq!(values(&reqs[2], "content-length"), ["5"]);
    assert!(
        values(&reqs[2], "transfer-encoding").is_empty(),
        "Connection: Content-Length re-framed the body: {:?}",
        header_lines(&reqs[2])
    );
    assert!(reqs[2].ends_with(b"\r\n\r\nhello"));
}

// 4. Transfer codings other than chunked

#[tokio::test]
async fn a_response_with_a_transfer_coding_other_than_chunked_is_502() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let (out, line) = get_through(vec![response], Duration::ZERO).await;
        assert_eq!(
            status_of(&out),
            502,
            "{}: {}",
            String::from_utf8_lossy(response),
            String::from_utf8_lossy(&out)
        );
        assert_eq!(field(&line, "status"), Some("502"), "{line}");
    }
}

#[tokio::test]
async fn a_request_with_a_transfer_coding_other_than_chunked_is_refused() {
    let (region, seen) = ok_region().await;
    let fe = frontend(region).await;
    for req in [
        &b"POST /x HTTP/1.1\r\nHost: maas\r\nTransfer-Encoding: x, chunked\r\nConnection: close\r\n\r\n\
           5\r\nhello\r\n0\r\n\r\n"[..],
        b"POST /x HTTP/1.1\r\nHost: maas\r\nTransfer-Encoding: identity, chunked\r\n\
          Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: maas\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let (me, out) = exchange(fe.addr, req).await;
        assert_eq!(status_of(&out), 501, "{}", String::from_utf8_lossy(&out));
        let line = log_line(&fe, &me).await;
        assert_eq!(field(&line, "status"), Some("501"), "{line}");
    }
    assert!(
        requests(&seen).is_empty(),
        "a coding was dropped on the way"
    );
    // Plain chunked goes through, as chunked.
    let (_, out) = exchange(
        fe.addr,
        b"POST /x HTTP/1.1\r\nHost: maas\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 200);
    let reqs = requests(&seen);
    assert_eq!(values(&reqs[0], "transfer-encoding"), ["chunked"]);
}

// 5. A body that fails right after the head

/// The bytes after the head of a response, chunked coding undone.
fn body_of(response: &[u8]) -> Vec<u8> {
    let Some(i) = find(response, b"\r\n\r\n") else {
        return Vec::new();
    };
    let head = String::from_utf8_lossy(&response[..i]).to_ascii_lowercase();
    let mut rest = &response[i + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return rest.to_vec();
    }
    let mut out = Vec::new();
    while let Some(nl) = find(rest, b"\r\n") {
        let size = std::str::from_utf8(&rest[..nl])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size.filter(|&n| n > 0) else {
            break;
        };
        let data = &rest[nl + 2..];
        let take = size.min(data.len());
        out.extend_from_slice(&data[..take]);
        rest = &data[take..];
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
    }
    out
}

#[tokio::test]
async fn a_bad_chunk_size_right_after_the_head_is_502() {
    let (out, line) = get_through(
        vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"],
        Duration::ZERO,
    )
    .await;
    assert_eq!(status_of(&out), 502, "{}", String::from_utf8_lossy(&out));
    assert_eq!(field(&line, "status"), Some("502"), "{line}");
    assert_eq!(field(&line, "end"), Some("server_garbage"), "{line}");
}

#[tokio::test]
async fn a_body_cut_short_with_its_head_is_502_or_logged_as_sent() {
    let (out, line) = get_through(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
        Duration::ZERO,
    )
    .await;
    let status = status_of(&out);
    assert!(
        status == 502 || status == 200,
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        field(&line, "status"),
        Some(&status.to_string()[..]),
        "{line}"
    );
    if status == 200 {
        // The close came after the proxy had sent the head: the log says what left.
        let sent = body_of(&out).len().to_string();
        assert_eq!(field(&line, "bytes_out"), Some(&sent[..]), "{line}");
    }
}

#[tokio::test]
async fn a_body_that_fails_mid_stream_is_logged_with_what_the_client_got() {
    // The head first; later, one write with a good chunk and a bad chunk size after it.
    let (out, line) = get_through(
        vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"3\r\nabc\r\nzz\r\n",
        ],
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(status_of(&out), 200, "{}", String::from_utf8_lossy(&out));
    let got = body_of(&out).len().to_string();
    assert_eq!(
        field(&line, "bytes_out"),
        Some(&got[..]),
        "the client got {got} body bytes: {line}"
    );
    assert_eq!(field(&line, "end"), Some("server_garbage"), "{line}");
}

// 6. Request head size

#[tokio::test]
async fn request_heads_beyond_the_limit_are_431_and_uris_414() {
    let (region, seen) = ok_region().await;
    let fe = frontend(region).await;
    let big = |n: usize| {
        let mut r = b"GET /x HTTP/1.1\r\nHost: maas\r\nX-Big: ".to_vec();
        r.extend(vec![b'a'; n]);
        r.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        r
    };
    for n in [20_000, 420_000] {
        let (me, out) = exchange(fe.addr, &big(n)).await;
        assert_eq!(status_of(&out), 431, "{n}-byte header");
        let line = log_line(&fe, &me).await;
        assert_eq!(
            field(&line, "status"),
            Some("431"),
            "{n}-byte header: {line}"
        );
        assert_eq!(field(&line, "end"), Some("too_large"), "{line}");
    }
    // A head the parser refuses outright is logged too.
    let (me, out) = exchange(fe.addr, b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n").await;
    assert_eq!(status_of(&out), 400);
    let line = log_line(&fe, &me).await;
    assert_eq!(field(&line, "status"), Some("400"), "{line}");
    let mut uri = b"GET /x?".to_vec();
    uri.extend(vec![b'a'; 20_000]);
    uri.extend_from_slice(b" HTTP/1.1\r\nHost: maas\r\nConnection: close\r\n\r\n");
    let (me, out) = exchange(fe.addr, &uri).await;
    assert_eq!(status_of(&out), 414);
    let line = log_line(&fe, &me).await;
    assert_eq!(field(&line, "status"), Some("414"), "{line}");
    assert!(
        requests(&seen).is_empty(),
        "an oversized head was forwarded"
    );

    // 12 KB of headers is within the limit.
    let (_, out) = exchange(fe.addr, &big(12_000)).await;
    assert_eq!(status_of(&out), 200);
}

// 9. CONNECT

#[tokio::test]
async fn connect_is_answered_501_and_logged() {
    let (region, seen) = ok_region().await;
    let fe = frontend(region).await;
    let (me, out) = exchange(
        fe.addr,
        b"CONNECT maas:443 HTTP/1.1\r\nHost: maas:443\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 501, "{}", String::from_utf8_lossy(&out));
    let line = log_line(&fe, &me).await;
    assert_eq!(field(&line, "status"), Some("501"), "{line}");
    assert_eq!(field(&line, "method"), Some("CONNECT"), "{line}");
    assert!(requests(&seen).is_empty());
}
