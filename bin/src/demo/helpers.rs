//! The two programs the demo runs inside its namespaces, as hidden subcommands of this binary:
//! a stand-in region (`maas-vip demo region`) and an HTTP client driven over stdin
//! (`maas-vip demo client`).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The response header in which a stand-in region names the address that connected to it:
/// the proxy (the host holding the VIP) that forwarded the request.
pub(super) const VIA_HEADER: &str = "x-demo-proxy";

/// A client gives up on a request after this long (connect included): long enough for the SYN
/// retransmissions (after 1, 3 and 7 s) that carry a connect across a takeover.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client helper prints for one URL.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Reply {
    /// The request's id, as given with its URL.
    #[serde(default)]
    pub(super) id: u64,
    /// From the start of the connect to the end of the answer (or the failure).
    #[serde(default)]
    pub(super) ms: f64,
    /// The HTTP status; absent when no response came.
    pub(super) status: Option<u16>,
    /// The response body.
    pub(super) body: String,
    /// [`VIA_HEADER`], if the response had it.
    pub(super) via: Option<String>,
    /// Why no response came.
    pub(super) error: Option<String>,
}

impl Reply {
    /// A 200 response.
    pub(super) fn ok(&self) -> bool {
        self.status == Some(200)
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `maas-vip demo region`: answers every request (any method, any path, the health check's
/// `/MAAS/api/2.0/version/` included) with `NAME\n` and [`VIA_HEADER`].
pub(super) fn region(name: &str, bind: SocketAddr) -> ExitCode {
    let served = runtime().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            let listener = TcpListener::bind(bind)
                .await
                .with_context(|| format!("binding {bind}"))?;
            let body = Bytes::from(format!("{name}\n"));
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait and go on.
                        eprintln!("{name}: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let body = body.clone();
                let via = HeaderValue::from_str(&peer.ip().to_string())
                    .unwrap_or(HeaderValue::from_static("unknown"));
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let mut r = Response::new(Full::new(body.clone()));
                        let h = r.headers_mut();
                        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                        h.insert(VIA_HEADER, via.clone());
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maas-vip demo region {name}: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `maas-vip demo client`: reads lines `ID URL` (`http://IP[:PORT]/PATH`) until EOF; fetches
/// each at once, without waiting for the ones before (a new connection, GET with `Connection:
/// close`), and prints a [`Reply`] as one JSON line when it ends, in the order they end.
pub(super) fn client() -> ExitCode {
    let done = runtime().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Reply>();
            let writer = tokio::spawn(async move {
                let mut out = tokio::io::stdout();
                while let Some(reply) = rx.recv().await {
                    let mut line = serde_json::to_string(&reply)?;
                    line.push('\n');
                    out.write_all(line.as_bytes()).await?;
                    out.flush().await?;
                }
                anyhow::Ok(())
            });
            while let Some(line) = lines.next_line().await? {
                let (id, url) = line.trim().split_once(' ').unwrap_or(("0", line.trim()));
                let id = id.parse().unwrap_or(0);
                let url = url.to_string();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let start = std::time::Instant::now();
                    let got = tokio::time::timeout(REQUEST_TIMEOUT, get(&url)).await;
                    let failed = |error: String| Reply {
                        id,
                        ms: 0.0,
                        status: None,
                        body: String::new(),
                        via: None,
                        error: Some(error),
                    };
                    let mut reply = match got {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => failed(format!("{e:#}")),
                        Err(_) => failed(format!("no answer within {REQUEST_TIMEOUT:?}")),
                    };
                    reply.id = id;
                    reply.ms = start.elapsed().as_secs_f64() * 1000.0;
                    let _ = tx.send(reply);
                });
            }
            drop(tx);
            writer.await??;
            anyhow::Ok(())
        })
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maas-vip demo client: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn get(url: &str) -> anyhow::Result<Reply> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    let host = uri.host().context("URL without a host")?;
    let ip: IpAddr = host
        .trim_matches(['[', ']'])
        .parse()
        .with_context(|| format!("{host} is not an IP address"))?;
    let addr = SocketAddr::new(ip, uri.port_u16().unwrap_or(80));
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connect to {addr}: timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let req = Request::get(path)
        .header(HOST, authority)
        .header(CONNECTION, "close")
        .body(Empty::new())?;
    let resp = sender.send_request(req).await.context("request")?;
    let status = resp.status().as_u16();
    let via = resp
        .headers()
        .get(VIA_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.into_body().collect().await.context("body")?.to_bytes();
    driver.abort();
    Ok(Reply {
        id: 0,
        ms: 0.0,
        status: Some(status),
        body: String::from_utf8_lossy(&body).into_owned(),
        via,
        error: None,
    })
}
