//! The programs that the BGP namespace tests run inside their namespaces (tests/src/bgp.rs):
//!
//! - `mvlab host IFACE VIP PORT NAME DRAIN_MS`: a prototype of what maas-vip will do in BGP
//!   mode, built from the `announce` crate: a listener on PORT that answers NAME, the VIP
//!   interface IFACE with VIP on it, and the [`Announcer`] machine deciding. It prints `ready`
//!   once listening and announced; SIGUSR1 withdraws (an operator's word), SIGUSR2 releases;
//!   SIGTERM drains: withdraw, DRAIN_MS later close the listener and exit. A SIGKILL leaves
//!   the clean-up to the kernel, which is what the fate-sharing test checks.
//! - `mvlab serve ADDR NAME`: a stand-in region for the real daemon: a listener on ADDR that
//!   writes NAME to each connection and closes it. SIGKILL is its outage.
//! - `mvlab http ADDR NAME`: the same for HTTP clients (wrk): reads a request head, answers
//!   200 with NAME as the body and closes; a thread per connection.
//! - `mvlab fetch ADDR COUNT`: COUNT connections one after the other (each from a new source
//!   port), printing `{"names":{NAME:n,...},"errors":n,"error_kinds":{..},"failures":[..]}`,
//!   where each failure is `[start_ms, end_ms, kind]` in milliseconds since the Unix epoch
//!   (the test compares them with the moment the router changed its routes).
//! - `mvlab hammer ADDR MILLIS`: the same for MILLIS milliseconds, as fast as it can.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use announce::{Action, Announcer, HostPrefix, Timings, VipLink};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("host") if args.len() == 6 => host(&args[1..]),
        Some("serve") if args.len() == 3 => serve(&args[1], &args[2]),
        Some("http") if args.len() == 3 => serve_http(&args[1], &args[2]),
        Some("fetch") if args.len() == 3 => {
            parse(&args[2]).and_then(|n| connect_many(&args[1], |done, _| done < n))
        }
        Some("hammer") if args.len() == 3 => parse(&args[2]).and_then(|ms| {
            let end = Instant::now() + Duration::from_millis(ms);
            connect_many(&args[1], |_, now| now < end)
        }),
        _ => Err(
            "usage: mvlab host IFACE VIP PORT NAME DRAIN_MS | serve ADDR NAME | http ADDR NAME | fetch ADDR COUNT | hammer ADDR MILLIS"
                .into(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mvlab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

fn host(args: &[String]) -> Result<(), String> {
    let [iface, vip, port, name, drain_ms] = args else {
        return Err("host IFACE VIP PORT NAME DRAIN_MS".into());
    };
    let vip: HostPrefix = parse(vip)?;
    let port: u16 = parse(port)?;
    let drain = Duration::from_millis(parse(drain_ms)?);
    let name = name.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    rt.block_on(async move {
        use tokio::io::AsyncWriteExt;
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = signal(SignalKind::user_defined1()).map_err(|x| e(&x))?;
        let mut usr2 = signal(SignalKind::user_defined2()).map_err(|x| e(&x))?;
        let mut term = signal(SignalKind::terminate()).map_err(|x| e(&x))?;
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .map_err(|x| format!("bind :{port}: {x}"))?;
        let link = VipLink::create(iface, &[vip]).await.map_err(|x| e(&x))?;
        let timings = Timings {
            announce_delay: Duration::ZERO,
            drain_delay: drain,
        };
        let mut m = Announcer::new(timings, [], [], Instant::now());
        m.set_ready(Instant::now());
        loop {
            while let Some(a) = m.poll_action() {
                match a {
                    Action::Announce => link.announce().await.map_err(|x| e(&x))?,
                    Action::Withdraw => link.withdraw().await.map_err(|x| e(&x))?,
                    Action::CloseListeners => {
                        println!("listener closed, exiting");
                        return Ok(());
                    }
                }
                let st = m.status();
                if st.transitions == 1 && a == Action::Announce {
                    println!("ready {} index {}", link.name(), link.index());
                }
                let link_state = link.state().await.map_err(|x| e(&x))?;
                println!(
                    "{a:?}: {:?} ({}); link offered={} {link_state:?}",
                    st.state,
                    st.reason,
                    link_state.offered()
                );
            }
            let deadline = m.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                c = listener.accept() => {
                    if let Ok((mut s, _)) = c {
                        let n = name.clone();
                        tokio::spawn(async move {
                            let _ = s.write_all(n.as_bytes()).await;
                        });
                    }
                }
                _ = usr1.recv() => m.set_admin_withdrawn(true, Instant::now()),
                _ = usr2.recv() => m.set_admin_withdrawn(false, Instant::now()),
                _ = term.recv() => m.shutdown(Instant::now()),
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => m.handle_timeout(Instant::now()),
            }
        }
    })
}

fn serve(addr: &str, name: &str) -> Result<(), String> {
    use std::io::Write;
    let addr: SocketAddr = parse(addr)?;
    let l = std::net::TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("serving {name} on {addr}");
    for s in l.incoming() {
        match s {
            Ok(mut s) => {
                let _ = s.write_all(name.as_bytes());
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

fn serve_http(addr: &str, name: &str) -> Result<(), String> {
    use std::io::Write;
    let addr: SocketAddr = parse(addr)?;
    let l = std::net::TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    );
    let answer: &'static str = Box::leak(answer.into_boxed_str());
    println!("serving {name} on {addr} (http)");
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            // Read the request head (closing with it unread would reset the connection).
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(answer.as_bytes());
        });
    }
    Ok(())
}

/// Connects to `addr` again and again while `more(done, now)`, reading what the server
/// writes; prints the tally as JSON.
fn connect_many(addr: &str, mut more: impl FnMut(u64, Instant) -> bool) -> Result<(), String> {
    let addr: SocketAddr = parse(addr)?;
    let mut names: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures: Vec<(u128, u128, String)> = Vec::new();
    let unix_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    };
    let mut done = 0;
    while more(done, Instant::now()) {
        done += 1;
        let start = unix_ms();
        let got = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        });
        let kind = match got {
            Ok(n) if !n.is_empty() => {
                *names.entry(n).or_default() += 1;
                continue;
            }
            Ok(_) => "empty".to_string(),
            Err(x) => format!("{:?}", x.kind()),
        };
        *errors.entry(kind.clone()).or_default() += 1;
        failures.push((start, unix_ms(), kind));
    }
    println!(
        "{}",
        serde_json::json!({
            "names": names,
            "errors": errors.values().sum::<u64>(),
            "error_kinds": errors,
            "failures": failures,
        })
    );
    Ok(())
}
